//! Reconcile: the pipeline that makes a Promotion real.
//!
//! validate → desired objects (pure) → server-side apply → register with
//! the service's admin API → pre-warm counters → status and Events. Every
//! step is idempotent and level-triggered: re-running a reconcile on an
//! unchanged world changes nothing (the PUT is idempotent, the counters are
//! created only when missing, the service applies a quota change once
//! because its database remembers the quota it last had).

use std::{collections::HashMap, sync::Arc, sync::Mutex, time::Duration};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
use kube::{
    api::{Api, Patch, PatchParams},
    runtime::{
        controller::{Action, Controller},
        events::{Event, EventType, Recorder, Reporter},
        finalizer::{finalizer, Event as Finalizer},
        reflector::{ObjectRef, Store},
        watcher,
    },
    Client, Resource, ResourceExt,
};
use promo_platform::{
    buckets::Layout,
    ports::{counters::Counters, queue::Queue},
};
use promotion_crd::{Checked, Phase, Promotion, PromotionStatus, PromotionType, Strategy};
use serde_json::json;

use crate::{
    admin::Admin,
    desired::{self, ConsumerReplicas, Desired, MANAGER},
    metrics::Metrics,
    platform::{Component, PlatformConfig},
    scaling::{self, Demand},
    status::{self, ConditionType, Figures, Observation, Reason},
    Error, Result, Step,
};

pub const FINALIZER: &str = "promo.dev/cleanup";

/// What every reconcile needs.
pub struct Context {
    pub client: Client,
    pub platform: PlatformConfig,
    pub admin: Arc<dyn Admin>,
    /// The Redis counters the services use (pre-warming, cleanup).
    pub counters: Arc<dyn Counters>,
    /// Consumer-group lag; `None` when no broker is configured.
    pub lag: Option<Arc<dyn Queue>>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Every Promotion the controller sees (owners, shared consumers).
    pub store: Store<Promotion>,
    /// Consecutive failures per object, for the error policy's backoff.
    pub failures: Mutex<HashMap<ObjectRef<Promotion>, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        platform: PlatformConfig,
        admin: Arc<dyn Admin>,
        counters: Arc<dyn Counters>,
        lag: Option<Arc<dyn Queue>>,
        metrics: Arc<Metrics>,
        store: Store<Promotion>,
    ) -> Self {
        let recorder = Recorder::new(client.clone(), Reporter::from(MANAGER));
        Context {
            client,
            platform,
            admin,
            counters,
            lag,
            recorder,
            metrics,
            store,
            failures: Mutex::default(),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<Promotion>, u32>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The Redis pool of a promotion with one bucket (the services' naming).
pub fn pool(kind: PromotionType, name: &str) -> String {
    promo_contracts::pool_name(Component::api_for(kind).service(), name)
}

/// Where a promotion's counters live: one pool per bucket.
pub fn layout<'a>(kind: PromotionType, name: &'a str, buckets: u32) -> Layout<'a> {
    Layout::new(Component::api_for(kind).service(), name, buckets)
}

/// Entry point for the controller: finalizer handling around apply/cleanup.
pub async fn reconcile(p: Arc<Promotion>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciles.inc();
    let _timer = ctx.metrics.duration.start_timer();
    let ns = p.namespace().ok_or(Error::Missing("namespace"))?;
    let api: Api<Promotion> = Api::namespaced(ctx.client.clone(), &ns);
    let key = ObjectRef::from_obj(&*p);
    let result = finalizer(&api, FINALIZER, p, |event| async {
        match event {
            Finalizer::Apply(p) => Reconciler(&p).reconcile(&ctx).await,
            Finalizer::Cleanup(p) => Reconciler(&p).cleanup(&ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    });
    if result.is_ok() {
        ctx.failures().remove(&key);
    }
    result
}

/// Counts the failure by kind and retries with exponential backoff
/// (5 s, 10 s, 20 s … at most 5 min), so a broken dependency is not hammered
/// and a transient one is retried soon.
pub fn error_policy(p: Arc<Promotion>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .failures
        .with_label_values(&[error.metric_label()])
        .inc();
    let n = {
        let mut failures = ctx.failures();
        let n = failures.entry(ObjectRef::from_obj(&*p)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(n);
    tracing::warn!(promotion = %p.name_any(), %error, attempt = n, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

pub fn backoff(consecutive_failures: u32) -> Duration {
    let exp = consecutive_failures.saturating_sub(1).min(6);
    (Duration::from_secs(5) * 2u32.pow(exp)).min(Duration::from_secs(300))
}

/// A Promotion being reconciled (the type lives in the CRD crate, its
/// behaviour here).
struct Reconciler<'a>(&'a Promotion);

impl std::ops::Deref for Reconciler<'_> {
    type Target = Promotion;
    fn deref(&self) -> &Promotion {
        self.0
    }
}

impl Reconciler<'_> {
    fn object_ref_for_events(&self) -> k8s_openapi::api::core::v1::ObjectReference {
        self.object_ref(&())
    }

    async fn publish(
        &self,
        ctx: &Context,
        type_: EventType,
        reason: &str,
        note: String,
    ) -> Result<()> {
        ctx.recorder
            .publish(
                &Event {
                    type_,
                    reason: reason.into(),
                    note: Some(note),
                    action: "Reconcile".into(),
                    secondary: None,
                },
                &self.object_ref_for_events(),
            )
            .await?;
        Ok(())
    }

    async fn patch_status(&self, ctx: &Context, status: &PromotionStatus) -> Result<()> {
        let api: Api<Promotion> =
            Api::namespaced(ctx.client.clone(), &self.namespace().unwrap_or_default());
        let patch = json!({ "status": status });
        api.patch_status(
            &self.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        Ok(())
    }

    fn previous_status(&self) -> PromotionStatus {
        self.status.clone().unwrap_or_default()
    }

    /// The pipeline: validate → apply the workloads → register with the
    /// service → counters → scale → status. A failed step's error names it.
    async fn reconcile(&self, ctx: &Context) -> Result<Action> {
        let now = Utc::now();
        let checked = match self.validate() {
            Ok(c) => c,
            Err(invalid) => {
                return self
                    .fail(ctx, invalid.to_string(), now)
                    .await
                    .map_err(|e| e.in_step(Step::Validate))
            }
        };
        // A queued promotion's buckets each need a partition of their own
        // for their events to be persisted in parallel.
        if checked.spec.strategy == Strategy::Queued
            && i64::from(checked.spec.buckets) > i64::from(ctx.platform.partitions)
        {
            let why = format!(
                "spec.buckets {} exceeds the {} partitions of the platform's topics \
                 (platform.partitions in the chart); lower it or add partitions",
                checked.spec.buckets, ctx.platform.partitions
            );
            return self
                .fail(ctx, why, now)
                .await
                .map_err(|e| e.in_step(Step::Validate));
        }
        let ns = self.namespace().ok_or(Error::Missing("namespace"))?;
        let (replicas, lags) = self
            .apply_workloads(ctx, &ns)
            .await
            .map_err(|e| e.in_step(Step::Apply))?;
        let mut observed = Vec::new();
        let figures = self
            .register(ctx, &ns, &checked, &mut observed, now)
            .await
            .map_err(|e| e.in_step(Step::Register))?;
        let (seeded, lowest_bucket) = self
            .prewarm(ctx, &checked, figures.as_ref(), now)
            .await
            .map_err(|e| e.in_step(Step::Counters))?;
        observed.push(seeded);
        let scaled = Scaled::of(&checked, &replicas, &lags);
        observed.push(scaled.observation());
        let counters = Counted {
            scaled,
            lowest_bucket,
        };
        self.publish_status(ctx, &ns, &checked, figures, counters, observed, now)
            .await
            .map_err(|e| e.in_step(Step::Status))
    }

    /// Server-side applies the namespace's Deployments and Services, built
    /// from the platform configuration, its Promotions and the consumer
    /// lag; returns the consumer replicas set and the lags read.
    async fn apply_workloads(
        &self,
        ctx: &Context,
        ns: &str,
    ) -> Result<(ConsumerReplicas, HashMap<Component, Option<i64>>)> {
        let (replicas, lags) = consumer_replicas(ctx, ns).await;
        let owners = desired::owners(
            ctx.store
                .state()
                .iter()
                .filter(|p| p.namespace().as_deref() == Some(ns))
                .map(|p| p.as_ref())
                .chain(std::iter::once(self.0)),
        );
        for obj in desired::desired(&ctx.platform, ns, &owners, replicas) {
            apply(ctx, ns, &obj).await?;
        }
        Ok((replicas, lags))
    }

    /// Registers the spec with the service, unless that would lower the
    /// quota or stock below what is already issued or sold; records the
    /// `Registered` observation and returns the service's figures. An
    /// unreachable service is written to the status before the error
    /// returns, so `kubectl get` shows why.
    async fn register(
        &self,
        ctx: &Context,
        ns: &str,
        checked: &Checked,
        observed: &mut Vec<Observation>,
        now: DateTime<Utc>,
    ) -> Result<Option<Figures>> {
        let kind = checked.spec.kind;
        let name = checked.name.as_str();
        let before = match ctx.admin.figures(ns, kind, name).await {
            Ok(f) => f,
            Err(e) => {
                observed.push(Observation::new(
                    ConditionType::Registered,
                    false,
                    Reason::ServiceUnavailable,
                    e.to_string(),
                ));
                let mut st = self.previous_status();
                st.conditions =
                    status::merge_conditions(&st.conditions, observed, self.meta().generation, now);
                st.phase.get_or_insert(Phase::Pending);
                self.patch_status(ctx, &st).await?;
                return Err(e);
            }
        };
        let limit = checked.limit();
        match before {
            Some(f) if limit < f.issued + f.pending => {
                let message = format!(
                    "{} {limit} is below the {} already issued or in flight; the change is not applied",
                    if kind == PromotionType::Coupon { "quota" } else { "stock" },
                    f.issued + f.pending
                );
                if !self.has_condition_reason(ConditionType::Registered, Reason::QuotaBelowIssued) {
                    self.publish(
                        ctx,
                        EventType::Warning,
                        Reason::QuotaBelowIssued.as_str(),
                        message.clone(),
                    )
                    .await?;
                }
                observed.push(Observation::new(
                    ConditionType::Registered,
                    false,
                    Reason::QuotaBelowIssued,
                    message,
                ));
                Ok(Some(f))
            }
            before => {
                if before.is_none() || self.needs_registration(before.as_ref(), limit) {
                    ctx.admin.register(ns, &checked.admin_request()).await?;
                    if before.is_none() {
                        self.publish(
                            ctx,
                            EventType::Normal,
                            Reason::Registered.as_str(),
                            format!("registered with the {} service", kind_label(kind)),
                        )
                        .await?;
                    }
                }
                observed.push(Observation::new(
                    ConditionType::Registered,
                    true,
                    Reason::Registered,
                    "the service holds the current spec",
                ));
                ctx.admin.figures(ns, kind, name).await
            }
        }
    }

    /// Builds the status ([`status::build`]), announces a phase change and
    /// writes the status when it changed; the requeue follows the phase.
    #[allow(clippy::too_many_arguments)]
    async fn publish_status(
        &self,
        ctx: &Context,
        ns: &str,
        checked: &Checked,
        figures: Option<Figures>,
        counted: Counted,
        mut observed: Vec<Observation>,
        now: DateTime<Utc>,
    ) -> Result<Action> {
        let scaled = &counted.scaled;
        let phase = status::phase(&checked.spec, figures.as_ref(), now);
        let registered = observed
            .iter()
            .any(|o| o.type_ == ConditionType::Registered && o.ok);
        observed.push(Observation::new(
            ConditionType::Ready,
            registered && figures.is_some(),
            if registered {
                Reason::Reconciled
            } else {
                Reason::NotRegistered
            },
            format!("phase {phase:?}"),
        ));
        let drift = match (
            scaled.uses_consumer,
            figures,
            scaled.group_lag,
            self.alone_in_group(ctx, ns),
        ) {
            (true, Some(f), Some(lag), true) => Some(f.pending - lag),
            _ => None,
        };
        ctx.metrics
            .counter_drift
            .with_label_values(&[ns, checked.name.as_str()])
            .set(drift.unwrap_or(0));
        let previous = self.previous_status();
        let st = status::build(
            &previous,
            status::Inputs {
                phase,
                figures,
                uses_consumer: scaled.uses_consumer,
                group_lag: scaled.group_lag,
                replicas: scaled.replicas,
                drift,
                buckets: checked.spec.buckets,
                lowest_bucket: counted.lowest_bucket,
                observed: &observed,
                generation: self.meta().generation,
                now,
            },
        );
        if previous.phase != Some(phase) {
            let from = previous
                .phase
                .map(|p| format!("{p:?}"))
                .unwrap_or_else(|| "none".into());
            self.publish(
                ctx,
                EventType::Normal,
                "PhaseChanged",
                format!("{from} → {phase:?}"),
            )
            .await?;
        }
        if st != previous {
            self.patch_status(ctx, &st).await?;
        }
        Ok(Action::requeue(status::requeue_after(
            &checked.spec,
            phase,
            now,
        )))
    }

    /// An invalid spec: phase Failed with the reason, a Warning Event once
    /// per generation, and no retry until the spec changes.
    async fn fail(&self, ctx: &Context, reason: String, now: DateTime<Utc>) -> Result<Action> {
        let previous = self.previous_status();
        let generation = self.meta().generation;
        if previous.phase != Some(Phase::Failed) || previous.observed_generation != generation {
            self.publish(ctx, EventType::Warning, "InvalidSpec", reason.clone())
                .await?;
        }
        let st = PromotionStatus {
            phase: Some(Phase::Failed),
            conditions: status::merge_conditions(
                &previous.conditions,
                &[Observation::new(
                    ConditionType::Ready,
                    false,
                    Reason::InvalidSpec,
                    reason,
                )],
                generation,
                now,
            ),
            observed_generation: generation,
            ..previous.clone()
        };
        if st != previous {
            self.patch_status(ctx, &st).await?;
        }
        Ok(Action::await_change())
    }

    fn has_condition_reason(&self, type_: ConditionType, reason: Reason) -> bool {
        self.status.as_ref().is_some_and(|s| {
            s.observed_generation == self.meta().generation
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == type_.as_str() && c.reason == reason.as_str())
        })
    }

    /// Registration is needed when the spec changed since the last
    /// successful one or the service's limit differs from the spec's.
    fn needs_registration(&self, figures: Option<&Figures>, limit: i64) -> bool {
        let st = self.previous_status();
        figures.is_none_or(|f| f.limit != limit)
            || st.observed_generation != self.meta().generation
            || !st
                .conditions
                .iter()
                .any(|c| c.type_ == ConditionType::Registered.as_str() && c.status == "True")
    }

    fn alone_in_group(&self, ctx: &Context, ns: &str) -> bool {
        let kind = self.spec.kind;
        !ctx.store.state().iter().any(|p| {
            p.namespace().as_deref() == Some(ns)
                && p.name_any() != self.name_any()
                && p.spec.kind == kind
                && p.spec.strategy == Strategy::Queued
        })
    }

    /// Makes sure a queued promotion's counters exist before its window
    /// opens. Seeding is safe only while nothing can be in flight (before
    /// the window, nothing issued or pending): then remaining = limit −
    /// issued exactly. An existing pool is never touched. A pool lost
    /// during the window is rebuilt by the service itself, behind a fence
    /// on the queue, because only it can account for events in flight.
    /// Also returns what the emptiest bucket holds when every bucket's
    /// counters were there.
    async fn prewarm(
        &self,
        ctx: &Context,
        checked: &Checked,
        figures: Option<&Figures>,
        now: DateTime<Utc>,
    ) -> Result<(Observation, Option<i64>)> {
        if checked.spec.strategy != Strategy::Queued {
            let seeded = Observation::new(
                ConditionType::CountersSeeded,
                true,
                Reason::NotQueued,
                "V1/V2 decide in the database",
            );
            return Ok((seeded, None));
        }
        let layout = layout(checked.spec.kind, &checked.name, checked.spec.buckets);
        let mut present = Vec::new();
        for pool in layout.pools() {
            if let Some(left) = ctx.counters.remaining(&pool).await? {
                present.push(left);
            }
        }
        if present.len() == layout.buckets as usize {
            let lowest = present.iter().min().copied().unwrap_or(0);
            let seeded = Observation::new(
                ConditionType::CountersSeeded,
                true,
                Reason::Present,
                format!(
                    "{} left in the counters over {} bucket(s), the lowest bucket {lowest}",
                    present.iter().sum::<i64>(),
                    layout.buckets
                ),
            );
            return Ok((seeded, Some(lowest)));
        }
        let seeded = match figures {
            // Only a promotion with no pool at all: a partial set would be
            // re-derived by the service's rebuild, behind fences.
            Some(f)
                if now < checked.spec.window.starts_at
                    && f.issued == 0
                    && f.pending == 0
                    && present.is_empty() =>
            {
                let shares = promo_contracts::split(f.limit, layout.buckets);
                let mut created = false;
                for (pool, share) in layout.pools().iter().zip(shares) {
                    created |= ctx.counters.seed(pool, share, &[], "").await?;
                }
                if created {
                    let note = format!(
                        "pre-warmed {} bucket(s) of {} with {}",
                        layout.buckets, checked.name, f.limit
                    );
                    self.publish(ctx, EventType::Normal, "CountersSeeded", note)
                        .await?;
                }
                Observation::new(
                    ConditionType::CountersSeeded,
                    true,
                    Reason::Prewarmed,
                    format!("seeded with {}", f.limit),
                )
            }
            Some(_) => Observation::new(
                ConditionType::CountersSeeded,
                false,
                Reason::Rebuilding,
                "counters missing while the promotion may have requests in flight; \
                 the service rebuilds them from the database (503 meanwhile)",
            ),
            None => Observation::new(
                ConditionType::CountersSeeded,
                false,
                Reason::NotRegistered,
                "the service does not know the promotion yet",
            ),
        };
        Ok((seeded, None))
    }

    /// On delete: close the campaign or sale at the service (paused, window
    /// ended) and remove its counters, then let the finalizer go.
    async fn cleanup(&self, ctx: &Context) -> Result<Action> {
        let ns = self.namespace().ok_or(Error::Missing("namespace"))?;
        let kind = self.spec.kind;
        let name = self.name_any();
        if let Ok(checked) = self.validate() {
            if ctx.admin.figures(&ns, kind, &name).await?.is_some() {
                let mut request = checked.admin_request();
                let close_at = Utc::now()
                    .min(checked.spec.window.ends_at)
                    .max(checked.spec.window.starts_at + chrono::Duration::seconds(1));
                request.body["paused"] = json!(true);
                request.body["endsAt"] = json!(close_at.to_rfc3339());
                ctx.admin.register(&ns, &request).await?;
            }
        }
        for pool in layout(kind, &name, self.spec.buckets).pools() {
            ctx.counters.remove(&pool).await?;
        }
        self.publish(
            ctx,
            EventType::Normal,
            "Closed",
            format!("{} closed and its counters removed", name),
        )
        .await?;
        Ok(Action::await_change())
    }
}

fn kind_label(kind: PromotionType) -> &'static str {
    match kind {
        PromotionType::Coupon => "coupon",
        PromotionType::TimeSale => "time-sale",
    }
}

/// What the counters and scale steps saw of one promotion, for its status.
struct Counted {
    scaled: Scaled,
    /// Left in the emptiest bucket's counters, when every bucket's were read.
    lowest_bucket: Option<i64>,
}

/// The scale step's outcome for one promotion: whether its strategy uses
/// a consumer, the replicas its consumer Deployment was given, the group's
/// lag as read.
#[derive(Debug, Clone, Copy)]
struct Scaled {
    consumer: Component,
    uses_consumer: bool,
    replicas: i32,
    group_lag: Option<i64>,
}

impl Scaled {
    fn of(
        checked: &Checked,
        replicas: &ConsumerReplicas,
        lags: &HashMap<Component, Option<i64>>,
    ) -> Self {
        let consumer = Component::consumer_for(checked.spec.kind);
        Scaled {
            consumer,
            uses_consumer: scaling::uses_consumer(checked.spec.strategy),
            replicas: match consumer {
                Component::CouponConsumer => replicas.coupon,
                _ => replicas.timesale,
            },
            group_lag: lags.get(&consumer).copied().flatten(),
        }
    }

    fn observation(&self) -> Observation {
        Observation::new(
            ConditionType::ConsumersScaled,
            true,
            if self.uses_consumer {
                Reason::Scaled
            } else {
                Reason::NotQueued
            },
            format!("{} runs {} replicas", self.consumer.name(), self.replicas),
        )
    }
}

/// Replicas of both consumer Deployments of a namespace, from the queued
/// Promotions sharing each and the groups' lag.
async fn consumer_replicas(
    ctx: &Context,
    ns: &str,
) -> (ConsumerReplicas, HashMap<Component, Option<i64>>) {
    let promotions = ctx.store.state();
    let mut lags = HashMap::new();
    let mut out = ConsumerReplicas::default();
    for consumer in [Component::CouponConsumer, Component::TimesaleConsumer] {
        let demands: Vec<Demand> = promotions
            .iter()
            .filter(|p| {
                p.namespace().as_deref() == Some(ns)
                    && p.meta().deletion_timestamp.is_none()
                    && Component::consumer_for(p.spec.kind) == consumer
                    && scaling::uses_consumer(p.spec.strategy)
                    && p.validate().is_ok()
            })
            .map(|p| Demand {
                lag: p.status.as_ref().and_then(|s| s.pending).unwrap_or(0),
                bounds: p.spec.consumers.clone().unwrap_or_default(),
                buckets: p.spec.buckets,
            })
            .collect();
        let group_lag = match (&ctx.lag, ctx.platform.topics.for_consumer(consumer)) {
            (Some(q), Some(tg)) => match q.lag(&tg.topic, &tg.group).await {
                Ok(l) => Some(i64::try_from(l).unwrap_or(i64::MAX)),
                Err(e) => {
                    tracing::warn!(error = %e, group = %tg.group, "consumer lag unavailable; scaling on pending only");
                    None
                }
            },
            _ => None,
        };
        let n = scaling::deployment_replicas(&demands, group_lag, ctx.platform.partitions);
        ctx.metrics
            .consumer_replicas
            .with_label_values(&[ns, consumer.name()])
            .set(i64::from(n));
        if let Some(l) = group_lag {
            ctx.metrics
                .consumer_lag
                .with_label_values(&[ns, consumer.name()])
                .set(l);
        }
        lags.insert(consumer, group_lag);
        match consumer {
            Component::CouponConsumer => out.coupon = n,
            _ => out.timesale = n,
        }
    }
    (out, lags)
}

/// Server-side apply with the operator's field manager; `force` because the
/// operator owns these fields outright.
async fn apply(ctx: &Context, ns: &str, obj: &Desired) -> Result<()> {
    let params = PatchParams::apply(MANAGER).force();
    match obj {
        Desired::Deployment(d) => {
            let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
            api.patch(obj.name(), &params, &Patch::Apply(d)).await?;
        }
        Desired::Service(s) => {
            let api: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
            api.patch(obj.name(), &params, &Patch::Apply(s)).await?;
        }
    }
    Ok(())
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx_parts: RunParts,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let RunParts {
        client,
        platform,
        admin,
        counters,
        lag,
        metrics,
    } = ctx_parts;
    let promotions: Api<Promotion> = Api::all(client.clone());
    let deployments: Api<Deployment> = Api::all(client.clone());
    let controller = Controller::new(promotions, watcher::Config::default().any_semantic());
    let store = controller.store();
    let ctx = Arc::new(Context::new(
        client, platform, admin, counters, lag, metrics, store,
    ));
    controller
        // A managed Deployment changed by hand is put back by its owners.
        .watches(
            deployments,
            watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}")),
            |d: Deployment| {
                let ns = d.namespace();
                d.owner_references()
                    .iter()
                    .filter(|o| o.kind == "Promotion")
                    .map(|o| ObjectRef::new(&o.name).within(ns.as_deref().unwrap_or_default()))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "reconcile did not complete");
            }
        })
        .await;
}

/// What [`run`] builds its [`Context`] from.
pub struct RunParts {
    pub client: Client,
    pub platform: PlatformConfig,
    pub admin: Arc<dyn Admin>,
    pub counters: Arc<dyn Counters>,
    pub lag: Option<Arc<dyn Queue>>,
    pub metrics: Arc<Metrics>,
}
