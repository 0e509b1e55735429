//! Phase, conditions and the next requeue, as pure functions of the spec,
//! what the service reports and the clock.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use promotion_crd::{Phase, PromotionSpec, PromotionStatus};

/// A promotion's figures as its service reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Figures {
    /// Quota (coupons) or stock (time sale) the service holds.
    pub limit: i64,
    /// Issued coupons or sold units, persisted.
    pub issued: i64,
    pub remaining: i64,
    pub pending: i64,
}

/// Counters are pre-warmed this long before a window opens: the operator
/// comes back at `startsAt − PREWARM` to make sure they exist.
pub const PREWARM: Duration = Duration::from_secs(120);
const ACTIVE_RESYNC: Duration = Duration::from_secs(15);
const IDLE_RESYNC: Duration = Duration::from_secs(300);
const MIN_REQUEUE: Duration = Duration::from_secs(5);

/// The phase of a valid promotion; `figures` is `None` until its service
/// has registered it.
pub fn phase(spec: &PromotionSpec, figures: Option<&Figures>, now: DateTime<Utc>) -> Phase {
    let Some(f) = figures else {
        return Phase::Pending;
    };
    if spec.paused {
        Phase::Paused
    } else if now >= spec.window.ends_at {
        Phase::Ended
    } else if f.remaining <= 0 {
        Phase::SoldOut
    } else if now < spec.window.starts_at {
        Phase::Scheduled
    } else {
        Phase::Active
    }
}

/// When to look again: shortly before the window opens (to pre-warm the
/// counters), often while active (status figures and scaling), rarely after.
pub fn requeue_after(spec: &PromotionSpec, phase: Phase, now: DateTime<Utc>) -> Duration {
    match phase {
        Phase::Active | Phase::Pending => ACTIVE_RESYNC,
        Phase::Scheduled => {
            let until_open = (spec.window.starts_at - now).to_std().unwrap_or_default();
            until_open
                .saturating_sub(PREWARM)
                .clamp(MIN_REQUEUE, IDLE_RESYNC)
        }
        // Paused and sold-out promotions may still drain a backlog.
        Phase::Paused | Phase::SoldOut => ACTIVE_RESYNC,
        Phase::Ended | Phase::Failed => IDLE_RESYNC,
    }
}

/// A Kubernetes `Time` (jiff) from a chrono instant.
pub fn time(t: DateTime<Utc>) -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::new(t.timestamp(), t.timestamp_subsec_nanos() as i32)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// A condition as the reconcile sees it this time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub type_: ConditionType,
    pub ok: bool,
    pub reason: Reason,
    pub message: String,
}

/// The condition types a Promotion's status carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionType {
    /// Registered and the service's figures read: the promotion is served.
    Ready,
    /// The service holds the current spec.
    Registered,
    /// The Redis counters exist (pre-warmed, or rebuilt by the service).
    CountersSeeded,
    /// The consumer Deployment runs the replicas the lag asks for.
    ConsumersScaled,
}

impl ConditionType {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Registered => "Registered",
            ConditionType::CountersSeeded => "CountersSeeded",
            ConditionType::ConsumersScaled => "ConsumersScaled",
        }
    }
}

/// Why a condition is what it is (also the reason of the Events sent with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Reconciled,
    InvalidSpec,
    NotRegistered,
    Registering,
    Registered,
    ServiceUnavailable,
    QuotaBelowIssued,
    NotQueued,
    Present,
    Prewarmed,
    Rebuilding,
    Seeding,
    Scaled,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Reconciled => "Reconciled",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::NotRegistered => "NotRegistered",
            Reason::Registering => "Registering",
            Reason::Registered => "Registered",
            Reason::ServiceUnavailable => "ServiceUnavailable",
            Reason::QuotaBelowIssued => "QuotaBelowIssued",
            Reason::NotQueued => "NotQueued",
            Reason::Present => "Present",
            Reason::Prewarmed => "Prewarmed",
            Reason::Rebuilding => "Rebuilding",
            Reason::Seeding => "Seeding",
            Reason::Scaled => "Scaled",
        }
    }
}

impl Observation {
    pub fn new(type_: ConditionType, ok: bool, reason: Reason, message: impl Into<String>) -> Self {
        Observation {
            type_,
            ok,
            reason,
            message: message.into(),
        }
    }
}

/// What the status of one reconcile is built from.
pub struct Inputs<'a> {
    pub phase: Phase,
    pub figures: Option<Figures>,
    pub uses_consumer: bool,
    pub group_lag: Option<i64>,
    /// Replicas the promotion's consumer Deployment was given.
    pub replicas: i32,
    pub drift: Option<i64>,
    pub buckets: u32,
    /// Left in the emptiest bucket's counters, when all were read.
    pub lowest_bucket: Option<i64>,
    pub observed: &'a [Observation],
    pub generation: Option<i64>,
    pub now: DateTime<Utc>,
}

/// The status a reconcile writes, from the previous one and what it saw:
/// figures from the service, consumer fields only for queued strategies,
/// conditions merged (see [`merge_conditions`]). Pure.
pub fn build(previous: &PromotionStatus, i: Inputs<'_>) -> PromotionStatus {
    PromotionStatus {
        phase: Some(i.phase),
        issued: i.figures.map(|f| f.issued),
        remaining: i.figures.map(|f| f.remaining),
        pending: i.figures.map(|f| f.pending),
        buckets: Some(i.buckets),
        lowest_bucket_remaining: if i.uses_consumer {
            i.lowest_bucket
        } else {
            None
        },
        consumer_lag: if i.uses_consumer { i.group_lag } else { None },
        consumer_replicas: i.uses_consumer.then_some(i.replicas),
        drift: i.drift,
        conditions: merge_conditions(&previous.conditions, i.observed, i.generation, i.now),
        observed_generation: i.generation,
    }
}

/// Merges this reconcile's observations into the previous conditions:
/// `lastTransitionTime` moves only when a condition's status flips;
/// conditions not observed this time are kept as they were.
pub fn merge_conditions(
    previous: &[Condition],
    observed: &[Observation],
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = previous.to_vec();
    for o in observed {
        let status = if o.ok { "True" } else { "False" }.to_string();
        let fresh = Condition {
            type_: o.type_.as_str().to_string(),
            status: status.clone(),
            reason: o.reason.as_str().to_string(),
            message: o.message.clone(),
            observed_generation: generation,
            last_transition_time: time(now),
        };
        match out.iter_mut().find(|c| c.type_ == o.type_.as_str()) {
            Some(c) if c.status == status => {
                let since = c.last_transition_time.clone();
                *c = Condition {
                    last_transition_time: since,
                    ..fresh
                };
            }
            Some(c) => *c = fresh,
            None => out.push(fresh),
        }
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_built_from_what_the_reconcile_saw() {
        let now = Utc::now();
        let figures = Figures {
            limit: 100,
            issued: 40,
            remaining: 55,
            pending: 5,
        };
        let observed = [Observation::new(
            ConditionType::Ready,
            true,
            Reason::Reconciled,
            "phase Active",
        )];
        let input = |uses_consumer| Inputs {
            phase: Phase::Active,
            figures: Some(figures),
            uses_consumer,
            group_lag: Some(7),
            replicas: 3,
            drift: Some(-2),
            buckets: 4,
            lowest_bucket: Some(9),
            observed: &observed,
            generation: Some(4),
            now,
        };
        let queued = build(&PromotionStatus::default(), input(true));
        assert_eq!(queued.phase, Some(Phase::Active));
        assert_eq!(
            (queued.issued, queued.remaining, queued.pending),
            (Some(40), Some(55), Some(5))
        );
        assert_eq!(
            (queued.consumer_lag, queued.consumer_replicas),
            (Some(7), Some(3))
        );
        assert_eq!(
            (queued.drift, queued.observed_generation),
            (Some(-2), Some(4))
        );
        assert_eq!(
            (queued.buckets, queued.lowest_bucket_remaining),
            (Some(4), Some(9))
        );
        assert_eq!(queued.conditions.len(), 1);
        assert_eq!(queued.conditions[0].type_, "Ready");
        assert_eq!(queued.conditions[0].reason, "Reconciled");
        let direct = build(&PromotionStatus::default(), input(false));
        assert_eq!(
            (direct.consumer_lag, direct.consumer_replicas),
            (None, None),
            "no consumer fields for V1/V2"
        );
        assert_eq!(
            (direct.buckets, direct.lowest_bucket_remaining),
            (Some(4), None),
            "no counters for V1/V2"
        );
    }
    use chrono::TimeZone;
    use promotion_crd::parse_manifests;

    fn spec() -> PromotionSpec {
        parse_manifests(
            r#"
apiVersion: promo.dev/v1alpha1
kind: Promotion
metadata: { name: p }
spec:
  type: Coupon
  window: { startsAt: "2026-11-27T00:00:00Z", endsAt: "2026-11-28T00:00:00Z" }
  coupon: { quota: 10, discount: { kind: Fixed, value: 5 } }
"#,
        )
        .unwrap()
        .remove(0)
        .spec
    }

    fn at(h: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, h, 0, 0).unwrap()
    }

    fn f(remaining: i64) -> Figures {
        Figures {
            limit: 10,
            issued: 10 - remaining,
            remaining,
            pending: 0,
        }
    }

    #[test]
    fn phase_table() {
        let s = spec();
        let mut paused = spec();
        paused.paused = true;
        let table = [
            (&s, None, at(12, 27), Phase::Pending),
            (&s, Some(f(10)), at(12, 26), Phase::Scheduled),
            (&s, Some(f(10)), at(0, 27), Phase::Active),
            (&s, Some(f(0)), at(1, 27), Phase::SoldOut),
            (&s, Some(f(3)), at(0, 28), Phase::Ended),
            (&s, Some(f(0)), at(0, 28), Phase::Ended),
            (&paused, Some(f(3)), at(1, 27), Phase::Paused),
        ];
        for (spec, figures, now, want) in table {
            assert_eq!(
                phase(spec, figures.as_ref(), now),
                want,
                "{figures:?} at {now}"
            );
        }
    }

    #[test]
    fn scheduled_promotions_come_back_before_the_window_opens() {
        let s = spec();
        let opens = s.window.starts_at;
        // Far ahead: the idle resync.
        assert_eq!(requeue_after(&s, Phase::Scheduled, at(0, 20)), IDLE_RESYNC);
        // Four minutes ahead: back at opens − PREWARM.
        let now = opens - chrono::Duration::minutes(4);
        assert_eq!(
            requeue_after(&s, Phase::Scheduled, now),
            Duration::from_secs(240) - PREWARM
        );
        // Inside the pre-warm period: soon.
        let now = opens - chrono::Duration::seconds(30);
        assert_eq!(requeue_after(&s, Phase::Scheduled, now), MIN_REQUEUE);
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let t0 = at(0, 1);
        let t1 = at(1, 1);
        let first = merge_conditions(
            &[],
            &[
                Observation::new(ConditionType::Ready, false, Reason::Registering, "waiting"),
                Observation::new(
                    ConditionType::Registered,
                    false,
                    Reason::ServiceUnavailable,
                    "x",
                ),
            ],
            Some(1),
            t0,
        );
        let second = merge_conditions(
            &first,
            &[
                Observation::new(
                    ConditionType::Ready,
                    false,
                    Reason::Seeding,
                    "still waiting",
                ),
                Observation::new(ConditionType::Registered, true, Reason::Registered, "ok"),
            ],
            Some(2),
            t1,
        );
        let ready = second.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.last_transition_time, time(t0), "status unchanged");
        assert_eq!(ready.reason, "Seeding");
        assert_eq!(ready.observed_generation, Some(2));
        let reg = second.iter().find(|c| c.type_ == "Registered").unwrap();
        assert_eq!(reg.last_transition_time, time(t1), "status flipped");
        // Not observed this time: kept.
        let third = merge_conditions(&second, &[], Some(3), at(2, 1));
        assert_eq!(third, second);
    }
}
