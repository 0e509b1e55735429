//! Reconcile scenarios against kube's tower-test mock API server: each
//! expected exchange is asserted by method, path and body, and a call that
//! never comes fails the test after a timeout. The services' admin API is
//! a recording fake; counters are in-process; consumer lag comes from
//! librdkafka's mock cluster.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use chrono::Utc;
use http::{Request, Response};
use kube::{
    client::Body,
    runtime::{controller::Action, reflector},
    Client,
};
use promo_platform::ports::{Counters, KafkaQueue, MemoryCounters, Queue};
use promotion_crd::{AdminRequest, Promotion, PromotionType};
use promotion_operator::{
    admin::Admin,
    controller::{self, pool, Context, FINALIZER},
    metrics::Metrics,
    platform::PlatformConfig,
    status::Figures,
    Error,
};
use rdkafka::mocking::MockCluster;
use serde_json::{json, Value};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const UID: &str = "0b5e1c9a-4c4e-4d1a-9a57-2f0c7e1a0001";

/// The services' admin APIs, in memory: remembers every PUT.
#[derive(Default)]
struct FakeAdmin {
    known: Mutex<HashMap<String, Figures>>,
    puts: Mutex<Vec<(String, Value)>>,
    down: std::sync::atomic::AtomicBool,
}

impl FakeAdmin {
    fn with(name: &str, f: Figures) -> Self {
        let a = FakeAdmin::default();
        a.known.lock().unwrap().insert(name.into(), f);
        a
    }
    fn puts(&self) -> Vec<(String, Value)> {
        self.puts.lock().unwrap().clone()
    }
    fn check_up(&self) -> promotion_operator::Result<()> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Admin {
                service: "coupon",
                message: "connection refused".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Admin for FakeAdmin {
    async fn figures(
        &self,
        _ns: &str,
        _kind: PromotionType,
        name: &str,
    ) -> promotion_operator::Result<Option<Figures>> {
        self.check_up()?;
        Ok(self.known.lock().unwrap().get(name).copied())
    }
    async fn register(&self, _ns: &str, r: &AdminRequest) -> promotion_operator::Result<()> {
        self.check_up()?;
        let name = r.path.rsplit('/').next().unwrap().to_string();
        let limit = r.body["quota"]
            .as_i64()
            .or(r.body["stock"].as_i64())
            .unwrap();
        let mut known = self.known.lock().unwrap();
        let f = known.entry(name).or_insert(Figures {
            limit,
            issued: 0,
            remaining: limit,
            pending: 0,
        });
        f.remaining += limit - f.limit;
        f.limit = limit;
        self.puts
            .lock()
            .unwrap()
            .push((r.path.clone(), r.body.clone()));
        Ok(())
    }
}

fn platform() -> PlatformConfig {
    PlatformConfig::from_yaml(
        r#"
images: { coupon: "reg/coupon:1", timesale: "reg/timesale:1", point: "reg/point:1" }
backendsSecret: promo-backends
partitions: 8
"#,
    )
    .unwrap()
}

/// A Promotion as the API server would hand it to the controller.
fn promotion(spec: Value, finalizer: bool, status: Option<Value>) -> Promotion {
    let mut obj = json!({
        "apiVersion": "promo.dev/v1alpha1",
        "kind": "Promotion",
        "metadata": {
            "name": "bf", "namespace": "shop", "uid": UID, "generation": 1,
            "resourceVersion": "7",
        },
        "spec": spec,
    });
    if finalizer {
        obj["metadata"]["finalizers"] = json!([FINALIZER]);
    }
    if let Some(s) = status {
        obj["status"] = s;
    }
    serde_json::from_value(obj).expect("a valid Promotion")
}

fn coupon_spec(strategy: &str, quota: i64, starts_in: chrono::Duration) -> Value {
    let start = Utc::now() + starts_in;
    json!({
        "type": "Coupon",
        "strategy": strategy,
        "window": { "startsAt": start.to_rfc3339(), "endsAt": (start + chrono::Duration::days(1)).to_rfc3339() },
        "coupon": { "quota": quota, "discount": { "kind": "Fixed", "value": 1000 } },
    })
}

struct Harness {
    ctx: Arc<Context>,
    api: Handle,
    admin: Arc<FakeAdmin>,
    counters: Arc<dyn Counters>,
    writer: reflector::store::Writer<Promotion>,
}

async fn harness(admin: FakeAdmin, lag: Option<Arc<dyn Queue>>) -> Harness {
    let (service, api) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let admin = Arc::new(admin);
    // In-process counters: the operator only calls the port, whose Redis
    // implementation has its own conformance suite (platform/tests/counters.rs).
    let counters: Arc<dyn Counters> = Arc::new(MemoryCounters::new());
    let (store, writer) = reflector::store();
    let ctx = Arc::new(Context::new(
        client,
        platform(),
        admin.clone(),
        counters.clone(),
        lag,
        Arc::new(Metrics::new()),
        store,
    ));
    Harness {
        ctx,
        api,
        admin,
        counters,
        writer,
    }
}

impl Harness {
    /// Puts `p` in the controller's cache, as its watch would.
    fn seen(&mut self, p: &Promotion) {
        self.writer
            .apply_watcher_event(&kube::runtime::watcher::Event::Apply(p.clone()));
    }

    fn reconcile(
        &self,
        p: Promotion,
    ) -> tokio::task::JoinHandle<promotion_operator::Result<Action>> {
        tokio::spawn(controller::reconcile(Arc::new(p), self.ctx.clone()))
    }

    /// The next API call: asserts method and path, answers `reply` (or the
    /// request body echoed), returns the query string and the body.
    async fn expect(&mut self, method: &str, path: &str, reply: Option<Value>) -> (String, Value) {
        let (req, send) = tokio::time::timeout(Duration::from_secs(10), self.api.next_request())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {method} {path}"))
            .expect("the client hung up");
        assert_eq!(req.method().as_str(), method, "method of {}", req.uri());
        assert_eq!(req.uri().path(), path);
        let query = req.uri().query().unwrap_or_default().to_string();
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let answer = reply.unwrap_or_else(|| body.clone());
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap(),
        );
        (query, body)
    }

    /// The eight server-side applies of a namespace's workloads; returns the
    /// applied objects by name.
    async fn expect_applies(&mut self) -> HashMap<String, Value> {
        let mut applied = HashMap::new();
        for (kind, name) in [
            ("deployments", "promo-coupon"),
            ("services", "promo-coupon"),
            ("deployments", "promo-coupon-consumer"),
            ("deployments", "promo-timesale"),
            ("services", "promo-timesale"),
            ("deployments", "promo-timesale-consumer"),
            ("deployments", "promo-point"),
            ("services", "promo-point"),
        ] {
            let group = if kind == "deployments" {
                "apis/apps/v1"
            } else {
                "api/v1"
            };
            let (query, body) = self
                .expect(
                    "PATCH",
                    &format!("/{group}/namespaces/shop/{kind}/{name}"),
                    None,
                )
                .await;
            assert!(query.contains("fieldManager=promotion-operator"), "{query}");
            assert!(query.contains("force=true"), "{query}");
            let owner = &body["metadata"]["ownerReferences"][0];
            assert_eq!(owner["uid"], UID, "{name} owned by the Promotion");
            assert_eq!(owner["kind"], "Promotion");
            applied.insert(format!("{kind}/{name}"), body);
        }
        applied
    }

    async fn expect_event(&mut self, reason: &str) -> Value {
        let (_, body) = self
            .expect(
                "POST",
                "/apis/events.k8s.io/v1/namespaces/shop/events",
                None,
            )
            .await;
        assert_eq!(body["reason"], reason, "event {body}");
        assert_eq!(body["regarding"]["name"], "bf");
        body
    }

    async fn expect_status(&mut self, p: &Promotion) -> Value {
        let (_, body) = self
            .expect(
                "PATCH",
                "/apis/promo.dev/v1alpha1/namespaces/shop/promotions/bf/status",
                Some(serde_json::to_value(p).unwrap()),
            )
            .await;
        body["status"].clone()
    }
}

async fn done(
    task: tokio::task::JoinHandle<promotion_operator::Result<Action>>,
) -> promotion_operator::Result<Action> {
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("reconcile finished")
        .expect("reconcile did not panic")
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

#[tokio::test]
async fn finalizer_is_added_before_anything_else() {
    let mut h = harness(FakeAdmin::default(), None).await;
    let p = promotion(
        coupon_spec("Queued", 100, chrono::Duration::hours(1)),
        false,
        None,
    );
    let task = h.reconcile(p.clone());
    let (_, patch) = h
        .expect(
            "PATCH",
            "/apis/promo.dev/v1alpha1/namespaces/shop/promotions/bf",
            Some(serde_json::to_value(&p).unwrap()),
        )
        .await;
    assert_eq!(
        patch,
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ])
    );
    assert_eq!(done(task).await.unwrap(), Action::await_change());
    assert!(h.admin.puts().is_empty(), "nothing registered yet");
}

#[tokio::test]
async fn a_new_promotion_gets_workloads_registration_counters_and_status() {
    let mut h = harness(FakeAdmin::default(), None).await;
    let p = promotion(
        coupon_spec("Queued", 100, chrono::Duration::hours(1)),
        true,
        None,
    );
    h.seen(&p);
    let task = h.reconcile(p.clone());

    let applied = h.expect_applies().await;
    let consumer = &applied["deployments/promo-coupon-consumer"];
    assert_eq!(
        consumer["spec"]["replicas"], 1,
        "minReplicas of the only queued promotion"
    );
    assert_eq!(
        consumer["spec"]["template"]["spec"]["containers"][0]["args"][0],
        "consume"
    );
    assert_eq!(
        applied["deployments/promo-timesale-consumer"]["spec"]["replicas"],
        0
    );
    assert_eq!(applied["deployments/promo-coupon"]["kind"], "Deployment");
    assert_eq!(applied["deployments/promo-coupon"]["apiVersion"], "apps/v1");

    h.expect_event("Registered").await;
    h.expect_event("CountersSeeded").await;
    h.expect_event("PhaseChanged").await;
    let status = h.expect_status(&p).await;
    let action = done(task).await.unwrap();

    assert_eq!(status["phase"], "Scheduled");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["issued"], 0);
    assert_eq!(status["remaining"], 100);
    assert_eq!(status["consumerReplicas"], 1);
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(condition(&status, "Registered")["status"], "True");
    let seeded = condition(&status, "CountersSeeded");
    assert_eq!(seeded["reason"], "Prewarmed");
    assert!(seeded["lastTransitionTime"].is_string());
    assert_eq!(condition(&status, "Ready")["observedGeneration"], 1);

    let puts = h.admin.puts();
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].0, "/admin/campaigns/bf");
    assert_eq!(puts[0].1["quota"], 100);
    assert_eq!(puts[0].1["strategy"], "QUEUED");
    assert_eq!(
        h.counters
            .remaining(&pool(PromotionType::Coupon, "bf"))
            .await
            .unwrap(),
        Some(100)
    );
    // Back before the window opens (1 h away, minus the pre-warm margin: capped at 5 min).
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));

    // Admissions happen (the counters move); reconciling again with the
    // status it wrote registers nothing and reseeds nothing; the status only
    // says the counters are now found present.
    h.counters
        .adjust(&pool(PromotionType::Coupon, "bf"), -7)
        .await
        .unwrap();
    let p2 = promotion(
        coupon_spec("Queued", 100, chrono::Duration::hours(1)),
        true,
        Some(status.clone()),
    );
    h.seen(&p2);
    let task = h.reconcile(p2.clone());
    h.expect_applies().await;
    let st2 = h.expect_status(&p2).await;
    assert_eq!(condition(&st2, "CountersSeeded")["reason"], "Present");
    assert_eq!(
        condition(&st2, "Ready")["lastTransitionTime"],
        condition(&status, "Ready")["lastTransitionTime"]
    );
    let again = done(task).await;
    assert!(again.is_ok(), "{again:?}");
    assert_eq!(h.admin.puts().len(), 1, "not registered twice");
    assert_eq!(
        h.counters
            .remaining(&pool(PromotionType::Coupon, "bf"))
            .await
            .unwrap(),
        Some(93),
        "a running campaign's counters are never reset"
    );
}

/// A queued promotion over 4 buckets: pre-warm splits the quota over every
/// bucket's pool; the status names the buckets and what the emptiest holds.
#[tokio::test]
async fn every_bucket_is_prewarmed_and_the_lowest_is_in_the_status() {
    let mut h = harness(FakeAdmin::default(), None).await;
    let mut spec = coupon_spec("Queued", 100, chrono::Duration::hours(1));
    spec["buckets"] = json!(4);
    let p = promotion(spec.clone(), true, None);
    h.seen(&p);
    let task = h.reconcile(p.clone());
    h.expect_applies().await;
    h.expect_event("Registered").await;
    let seeded = h.expect_event("CountersSeeded").await;
    assert!(seeded["note"].as_str().unwrap().contains("4 bucket(s)"));
    h.expect_event("PhaseChanged").await;
    let status = h.expect_status(&p).await;
    done(task).await.unwrap();
    assert_eq!(status["buckets"], 4);
    let bucket = |b| promo_contracts::pool_name("coupon", &promo_contracts::bucket_key("bf", b, 4));
    for b in 0..4 {
        assert_eq!(h.counters.remaining(&bucket(b)).await.unwrap(), Some(25));
    }

    // Bucket 2's users take 20; the next status says so.
    h.counters.adjust(&bucket(2), -20).await.unwrap();
    let p2 = promotion(spec, true, Some(status));
    h.seen(&p2);
    let task = h.reconcile(p2.clone());
    h.expect_applies().await;
    let st = h.expect_status(&p2).await;
    done(task).await.unwrap();
    assert_eq!(st["buckets"], 4);
    assert_eq!(st["lowestBucketRemaining"], 5);
    let present = condition(&st, "CountersSeeded");
    assert_eq!(present["reason"], "Present");
    assert!(present["message"].as_str().unwrap().contains("80 left"));
}

#[tokio::test]
async fn raising_the_quota_registers_the_new_quota_once() {
    let admin = FakeAdmin::with(
        "bf",
        Figures {
            limit: 100,
            issued: 40,
            remaining: 60,
            pending: 0,
        },
    );
    let mut h = harness(admin, None).await;
    let status = json!({"phase": "Active", "observedGeneration": 1,
        "conditions": [{"type": "Registered", "status": "True", "reason": "Registered", "message": "", "lastTransitionTime": "2026-11-01T00:00:00Z"}]});
    let mut p = promotion(
        coupon_spec("Database", 150, chrono::Duration::hours(-1)),
        true,
        Some(status),
    );
    p.metadata.generation = Some(2);
    h.seen(&p);
    let task = h.reconcile(p.clone());
    h.expect_applies().await;
    let st = h.expect_status(&p).await;
    done(task).await.unwrap();
    assert_eq!(h.admin.puts().len(), 1);
    assert_eq!(h.admin.puts()[0].1["quota"], 150);
    assert_eq!(st["remaining"], 110, "the difference was added");
    assert_eq!(st["observedGeneration"], 2);
    assert_eq!(
        condition(&st, "Registered")["lastTransitionTime"],
        "2026-11-01T00:00:00Z",
        "no flip, no new transition time"
    );
}

#[tokio::test]
async fn an_invalid_spec_fails_with_an_event_and_no_retry() {
    let mut h = harness(FakeAdmin::default(), None).await;
    // A TimeSale carrying a coupon block (the API server's CEL rule would
    // refuse it; the operator must not trust that it ran).
    let mut spec = coupon_spec("Queued", 100, chrono::Duration::hours(1));
    spec["type"] = json!("TimeSale");
    let p = promotion(spec, true, None);
    h.seen(&p);
    let task = h.reconcile(p.clone());
    let event = h.expect_event("InvalidSpec").await;
    assert_eq!(event["type"], "Warning");
    assert!(
        event["note"].as_str().unwrap().contains("timeSale"),
        "{event}"
    );
    let status = h.expect_status(&p).await;
    assert_eq!(done(task).await.unwrap(), Action::await_change());
    assert_eq!(status["phase"], "Failed");
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(h.admin.puts().is_empty());
}

/// A queued promotion with more buckets than the topics have partitions
/// is refused with a condition that says so, and registered nowhere.
#[tokio::test]
async fn more_buckets_than_partitions_is_refused() {
    let mut h = harness(FakeAdmin::default(), None).await;
    let mut spec = coupon_spec("Queued", 100, chrono::Duration::hours(1));
    spec["buckets"] = json!(h.ctx.platform.partitions + 1);
    let p = promotion(spec, true, None);
    h.seen(&p);
    let task = h.reconcile(p.clone());
    let event = h.expect_event("InvalidSpec").await;
    assert!(
        event["note"].as_str().unwrap().contains("partitions"),
        "{event}"
    );
    let status = h.expect_status(&p).await;
    assert_eq!(done(task).await.unwrap(), Action::await_change());
    assert_eq!(status["phase"], "Failed");
    let ready = condition(&status, "Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("InvalidSpec"))
    );
    assert!(ready["message"].as_str().unwrap().contains("spec.buckets"));
    assert!(h.admin.puts().is_empty());
}

#[tokio::test]
async fn lowering_the_quota_below_what_is_issued_is_refused() {
    let admin = FakeAdmin::with(
        "bf",
        Figures {
            limit: 100,
            issued: 50,
            remaining: 50,
            pending: 0,
        },
    );
    let mut h = harness(admin, None).await;
    let p = promotion(
        coupon_spec("Database", 10, chrono::Duration::hours(-1)),
        true,
        None,
    );
    h.seen(&p);
    let task = h.reconcile(p.clone());
    h.expect_applies().await;
    let event = h.expect_event("QuotaBelowIssued").await;
    assert_eq!(event["type"], "Warning");
    h.expect_event("PhaseChanged").await;
    let status = h.expect_status(&p).await;
    done(task).await.unwrap();
    let reg = condition(&status, "Registered");
    assert_eq!(reg["status"], "False");
    assert_eq!(reg["reason"], "QuotaBelowIssued");
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert_eq!(status["issued"], 50, "the service's figures, unchanged");
    assert!(h.admin.puts().is_empty(), "the spec is left unapplied");
}

#[tokio::test]
async fn delete_closes_the_campaign_removes_counters_then_the_finalizer() {
    let admin = FakeAdmin::with(
        "bf",
        Figures {
            limit: 100,
            issued: 3,
            remaining: 97,
            pending: 0,
        },
    );
    let mut h = harness(admin, None).await;
    let pool = pool(PromotionType::Coupon, "bf");
    h.counters.seed(&pool, 97, &[], "").await.unwrap();
    let mut p = promotion(
        coupon_spec("Queued", 100, chrono::Duration::hours(-1)),
        true,
        None,
    );
    p.metadata.deletion_timestamp = Some(promotion_operator::status::time(Utc::now()));
    let task = h.reconcile(p.clone());
    h.expect_event("Closed").await;
    let (_, patch) = h
        .expect(
            "PATCH",
            "/apis/promo.dev/v1alpha1/namespaces/shop/promotions/bf",
            Some(serde_json::to_value(&p).unwrap()),
        )
        .await;
    assert_eq!(
        patch,
        json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
            {"op": "remove", "path": "/metadata/finalizers/0"},
        ])
    );
    done(task).await.unwrap();
    let puts = h.admin.puts();
    assert_eq!(puts.len(), 1, "one closing PUT");
    assert_eq!(puts[0].1["paused"], true);
    let ends: chrono::DateTime<Utc> = puts[0].1["endsAt"].as_str().unwrap().parse().unwrap();
    assert!(ends <= Utc::now(), "window closed now");
    assert_eq!(
        h.counters.remaining(&pool).await.unwrap(),
        None,
        "keys removed"
    );
}

#[tokio::test]
async fn a_failing_service_is_reported_counted_and_retried_with_backoff() {
    let admin = FakeAdmin::default();
    admin.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut h = harness(admin, None).await;
    let p = promotion(
        coupon_spec("Queued", 100, chrono::Duration::hours(1)),
        true,
        None,
    );
    h.seen(&p);
    let task = h.reconcile(p.clone());
    h.expect_applies().await;
    let status = h.expect_status(&p).await;
    let err = done(task).await.unwrap_err();
    assert_eq!(err.metric_label(), "admin_api");
    let reg = condition(&status, "Registered");
    assert_eq!(reg["reason"], "ServiceUnavailable");
    assert_eq!(status["phase"], "Pending");

    let p = Arc::new(p);
    let first = controller::error_policy(p.clone(), &err, h.ctx.clone());
    let second = controller::error_policy(p, &err, h.ctx.clone());
    assert_eq!(first, Action::requeue(Duration::from_secs(5)));
    assert_eq!(second, Action::requeue(Duration::from_secs(10)));
    let failures = h
        .ctx
        .metrics
        .failures
        .with_label_values(&["admin_api"])
        .get();
    assert_eq!(failures, 2);
    assert!(h
        .ctx
        .metrics
        .render()
        .contains("promo_operator_reconcile_failures_total{reason=\"admin_api\"} 2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_scale_from_lag_summed_over_sharing_promotions() {
    // bf over 8 buckets: 2,500 pending at 1,000 per replica → 3.
    scale_shared_consumer(8, 3).await;
}

/// The same lag on a promotion with one bucket: its events reach one
/// partition, so it asks for one consumer, not three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_asks_for_no_more_consumers_than_its_buckets() {
    scale_shared_consumer(1, 1).await;
}

/// bf (over `buckets` buckets, 2,500 pending) shares the coupon consumer
/// with an idle queued promotion whose minimum is 2 (over 4 buckets): the
/// Deployment runs bf's `bf_wants` + 2.
async fn scale_shared_consumer(buckets: u32, bf_wants: i64) {
    let total = bf_wants + 2;
    // 2,500 events on the coupon topic that nobody consumed: the group's lag.
    let mock = MockCluster::new(1).expect("mock cluster");
    let topic = promo_contracts::coupon::TOPIC;
    mock.create_topic(topic, 8, 1).unwrap();
    let kafka = KafkaQueue::new(&mock.bootstrap_servers()).unwrap();
    let producer = kafka.producer(topic).unwrap();
    for i in 0..2500 {
        producer
            .send(&format!("k{}", i % 2), b"e".to_vec())
            .await
            .unwrap();
    }
    let admin = FakeAdmin::with(
        "bf",
        Figures {
            limit: 10_000,
            issued: 100,
            remaining: 7_400,
            pending: 2_500,
        },
    );
    let mut h = harness(admin, Some(Arc::new(kafka))).await;
    let mut spec = coupon_spec("Queued", 10_000, chrono::Duration::hours(-1));
    spec["consumers"] = json!({"minReplicas": 1, "maxReplicas": 6, "lagPerReplica": 1000});
    spec["buckets"] = json!(buckets);
    let status = json!({"pending": 2500});
    let p = promotion(spec, true, Some(status));
    let mut other = promotion(
        coupon_spec("Queued", 5, chrono::Duration::hours(-1)),
        true,
        None,
    );
    other.metadata.name = Some("other".into());
    other.metadata.uid = Some("0b5e1c9a-4c4e-4d1a-9a57-2f0c7e1a0002".into());
    other.spec.consumers = Some(promotion_crd::ConsumerScaling {
        min_replicas: 2,
        max_replicas: 4,
        lag_per_replica: 1000,
    });
    other.spec.buckets = 4;
    h.seen(&p);
    h.seen(&other);
    let task = h.reconcile(p.clone());
    let applied = h.expect_applies().await;
    assert_eq!(
        applied["deployments/promo-coupon-consumer"]["spec"]["replicas"],
        total
    );
    let owners = applied["deployments/promo-coupon"]["metadata"]["ownerReferences"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(owners, 2, "both Promotions own the shared workloads");
    // Registration already matches; counters missing mid-window → Rebuilding.
    h.expect_event("PhaseChanged").await;
    let st = h.expect_status(&p).await;
    done(task).await.unwrap();
    assert_eq!(st["consumerLag"], 2500, "read from Kafka");
    assert_eq!(st["consumerReplicas"], total);
    assert!(
        st.get("drift").is_none(),
        "drift only when alone in the group"
    );
    assert_eq!(condition(&st, "CountersSeeded")["reason"], "Rebuilding");
    assert_eq!(
        h.ctx
            .metrics
            .consumer_replicas
            .with_label_values(&["shop", "promo-coupon-consumer"])
            .get(),
        total
    );
}
