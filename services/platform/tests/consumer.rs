//! The consumer loop's own promises: a failed persist is retried and
//! counted by reason, never committed; a lag read that fails leaves no
//! stale figure behind; readiness reports a consumer that stopped.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use promo_platform::{
    consumer::{self, BatchHandler, ConsumerOptions, PersistError},
    metrics::Metrics,
    ports::{Consumer, LocalQueue, Message, Producer, Queue, QueueError},
};
use tokio_util::sync::CancellationToken;

/// Fails the first `failures` batches, then stores the messages it sees.
struct Flaky {
    failures: AtomicUsize,
    stored: std::sync::Mutex<Vec<Vec<u8>>>,
}

#[async_trait]
impl BatchHandler for Flaky {
    async fn persist(&self, batch: &[Message]) -> Result<(), PersistError> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(PersistError {
                reason: "database",
                message: "connection refused".into(),
            });
        }
        let mut stored = self.stored.lock().unwrap();
        stored.extend(batch.iter().map(|m| m.payload.clone()));
        Ok(())
    }
}

/// A queue whose lag cannot be read (the broker is away).
struct BlindLag(LocalQueue);

#[async_trait]
impl Queue for BlindLag {
    async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<(), QueueError> {
        self.0.ensure_topic(topic, partitions).await
    }
    fn producer(&self, topic: &str) -> Result<Arc<dyn Producer>, QueueError> {
        self.0.producer(topic)
    }
    async fn consumer(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>, QueueError> {
        self.0.consumer(topic, group).await
    }
    async fn lag(&self, _topic: &str, _group: &str) -> Result<u64, QueueError> {
        Err(QueueError::Task("broker unreachable".into()))
    }
    async fn ping(&self, topic: &str) -> Result<(), QueueError> {
        self.0.ping(topic).await
    }
}

fn options() -> ConsumerOptions {
    ConsumerOptions {
        service: "coupon",
        topic: "t".into(),
        group: "g".into(),
        max_batch: 100,
        max_wait: Duration::from_millis(10),
        parallelism: 1,
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn failed_persists_are_retried_counted_by_reason_and_not_committed() {
    let queue = Arc::new(LocalQueue::in_memory(1000));
    let handler = Arc::new(Flaky {
        failures: AtomicUsize::new(2),
        stored: Default::default(),
    });
    let metrics = Metrics::new();
    let p = queue.producer("t").unwrap();
    for i in 0..3 {
        p.send("k", vec![i]).await.unwrap();
    }
    let stop = CancellationToken::new();
    let task = tokio::spawn(consumer::run(
        queue.clone(),
        handler.clone(),
        options(),
        metrics.clone(),
        stop.clone(),
    ));
    eventually("stored after the retries", || {
        handler.stored.lock().unwrap().len() == 3
    })
    .await;
    let failures = metrics
        .consumer_persist_failures
        .with_label_values(&["coupon", "database"]);
    assert_eq!(failures.get(), 2);
    assert_eq!(*handler.stored.lock().unwrap(), [vec![0], vec![1], vec![2]]);
    eventually("committed", || {
        futures::executor::block_on(queue.lag("t", "g")).ok() == Some(0)
    })
    .await;
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_failed_lag_read_leaves_no_stale_figure() {
    let queue = Arc::new(BlindLag(LocalQueue::in_memory(1000)));
    let metrics = Metrics::new();
    // A figure from before the broker went away.
    metrics.consumer_lag.with_label_values(&["coupon"]).set(42);
    let stop = CancellationToken::new();
    let task = tokio::spawn(consumer::run(
        queue,
        Arc::new(Flaky {
            failures: AtomicUsize::new(0),
            stored: Default::default(),
        }),
        options(),
        metrics.clone(),
        stop.clone(),
    ));
    let errors = metrics.consumer_lag_errors.with_label_values(&["coupon"]);
    eventually("the failed read is counted", || errors.get() > 0).await;
    let text = metrics.render();
    assert!(
        !text.contains("promo_consumer_lag{"),
        "no stale lag figure:\n{text}"
    );
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn readiness_reports_a_consumer_that_does_not_run() {
    use promo_platform::http::health::Readiness;
    let metrics = Metrics::new();
    let app = Readiness::default()
        .consumer(metrics.clone(), "coupon")
        .router();
    let base = promo_platform::testing::serve(app, CancellationToken::new()).await;
    let status = || async {
        reqwest::get(format!("{base}/readyz"))
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(status().await, 503, "not started");
    let stop = CancellationToken::new();
    let task = tokio::spawn(consumer::run(
        Arc::new(LocalQueue::in_memory(10)),
        Arc::new(Flaky {
            failures: AtomicUsize::new(0),
            stored: Default::default(),
        }),
        options(),
        metrics.clone(),
        stop.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while status().await != 200 {
        assert!(tokio::time::Instant::now() < deadline, "ready once it runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    task.await.unwrap();
    // A heartbeat from long ago: stalled.
    metrics
        .consumer_heartbeat
        .with_label_values(&["coupon"])
        .set(1);
    assert_eq!(status().await, 503, "stalled");
}

/// Records what each persist call was given and how many ran at once.
#[derive(Default)]
struct Watching {
    running: AtomicUsize,
    most: AtomicUsize,
    calls: std::sync::Mutex<Vec<Vec<(i32, i64)>>>,
}

#[async_trait]
impl BatchHandler for Watching {
    async fn persist(&self, batch: &[Message]) -> Result<(), PersistError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.calls
            .lock()
            .unwrap()
            .push(batch.iter().map(|m| (m.partition, m.offset)).collect());
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn partitions_are_persisted_apart_in_order_and_at_most_parallelism_at_once() {
    // Four partitions' messages interleaved, as a poll returns them.
    let batch: Vec<Message> = (0..16)
        .map(|i| Message {
            partition: i % 4,
            offset: i64::from(i / 4),
            key: Vec::new(),
            payload: Vec::new(),
        })
        .collect();
    let handler = Watching::default();
    let options = ConsumerOptions {
        parallelism: 2,
        ..options()
    };
    let all = consumer::persist_partitions(
        &handler,
        &batch,
        &options,
        &Metrics::new(),
        &CancellationToken::new(),
    )
    .await;
    assert!(all);
    let mut calls = handler.calls.lock().unwrap().clone();
    calls.sort();
    assert_eq!(calls.len(), 4, "one transaction per partition");
    for (p, call) in calls.iter().enumerate() {
        let expected: Vec<(i32, i64)> = (0..4).map(|o| (p as i32, o)).collect();
        assert_eq!(*call, expected, "partition {p} whole and in order");
    }
    assert_eq!(
        handler.most.load(Ordering::SeqCst),
        2,
        "two at once, never more"
    );
}
