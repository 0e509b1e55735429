//! The batch consumer loop shared by the queued (V3) strategies.
//!
//! poll a batch → persist it, one database transaction per partition, up to
//! `parallelism` partitions at once → commit offsets. Offsets are committed
//! only after every partition's database commit, so a crash in between
//! redelivers the batch; handlers must therefore be idempotent (request ids
//! are unique in the database). A partition's messages stay in order in its
//! transaction; a promotion's buckets sit on different partitions
//! ([`promo_contracts::partition_of`]), so one hot promotion is persisted
//! by several transactions at once.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::{
    metrics::Metrics,
    ports::{Consumer, Message, Queue},
};

/// A message on a V3 topic, as JSON.
pub trait Event: serde::Serialize + serde::de::DeserializeOwned {
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The request an event carries (a fence carries none).
    fn request_id(self) -> Option<String>;
}

/// The events of a batch, in order. A message that cannot be read can
/// never succeed: it is skipped rather than left to block its partition,
/// logged and counted as `promo_consumer_messages_total{outcome="invalid"}`.
pub fn decode_batch<E: Event>(batch: &[Message], metrics: &Metrics, service: &str) -> Vec<E> {
    batch
        .iter()
        .filter_map(|m| match E::decode(&m.payload) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::error!(error = %e, partition = m.partition, offset = m.offset, "undecodable event skipped");
                metrics
                    .consumer_messages
                    .with_label_values(&[service, "invalid"])
                    .inc();
                None
            }
        })
        .collect()
}

/// Why a batch could not be persisted: `reason` is a fixed label
/// (`database`, `counters`, …) for `promo_consumer_persist_failures_total`.
#[derive(Debug)]
pub struct PersistError {
    pub reason: &'static str,
    pub message: String,
}

impl std::fmt::Display for PersistError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// Persists one batch. Returning `Err` means nothing of the batch may be
/// assumed stored; it is retried.
#[async_trait]
pub trait BatchHandler: Send + Sync {
    async fn persist(&self, batch: &[Message]) -> Result<(), PersistError>;
}

/// Seconds since the Unix epoch: the consumer's heartbeat.
pub(crate) fn now_secs() -> i64 {
    crate::time::now_ms() / 1000
}

/// A consumer that has not gone round its loop for this long is reported
/// stalled by `/readyz` (a batch retrying against a database that is down
/// keeps beating: it is alive, waiting).
pub const STALLED_AFTER_SECONDS: i64 = 30;

#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub service: &'static str,
    pub topic: String,
    pub group: String,
    pub max_batch: usize,
    pub max_wait: Duration,
    /// Most partitions persisted at the same time.
    pub parallelism: usize,
}

/// Runs until `shutdown` is cancelled. A failed batch is retried with
/// backoff and never committed until it has been persisted.
pub async fn run(
    queue: Arc<dyn Queue>,
    handler: Arc<dyn BatchHandler>,
    options: ConsumerOptions,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut consumer: Option<Box<dyn Consumer>> = None;
    let mut backoff = Duration::from_millis(50);
    let lag_task = spawn_lag_gauge(
        queue.clone(),
        options.clone(),
        metrics.clone(),
        shutdown.clone(),
    );
    let heartbeat = metrics
        .consumer_heartbeat
        .with_label_values(&[options.service]);
    while !shutdown.is_cancelled() {
        heartbeat.set(now_secs());
        let c = match &mut consumer {
            Some(c) => c,
            None => match queue.consumer(&options.topic, &options.group).await {
                Ok(c) => consumer.insert(c),
                Err(e) => {
                    tracing::warn!(error = %e, topic = %options.topic, "cannot create consumer; retrying");
                    sleep_or_cancel(&shutdown, backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        let batch = tokio::select! {
            _ = shutdown.cancelled() => break,
            b = c.poll(options.max_batch, options.max_wait) => b,
        };
        let batch = match batch {
            Ok(b) if b.is_empty() => continue,
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "poll failed; retrying");
                sleep_or_cancel(&shutdown, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if !persist_partitions(&*handler, &batch, &options, &metrics, &shutdown).await {
            break; // shutting down with the batch uncommitted: it is redelivered.
        }
        if let Err(e) = c.commit(&batch).await {
            // The batch is stored; redelivery after this failure is harmless.
            tracing::warn!(error = %e, "offset commit failed; the batch may be redelivered");
        }
        backoff = Duration::from_millis(50);
    }
    lag_task.abort();
}

/// Persists `batch` one partition's messages at a time, up to
/// `options.parallelism` partitions concurrently, each retried until it is
/// stored. Returns whether all were (false only on shutdown).
pub async fn persist_partitions(
    handler: &dyn BatchHandler,
    batch: &[Message],
    options: &ConsumerOptions,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> bool {
    let first = batch.first().map(|m| m.partition);
    if batch.iter().all(|m| Some(m.partition) == first) {
        return persist_with_retry(handler, batch, options, metrics, shutdown).await;
    }
    futures::stream::iter(by_partition(batch))
        .map(|part| async move {
            persist_with_retry(handler, &part, options, metrics, shutdown).await
        })
        .buffer_unordered(options.parallelism.max(1))
        .fold(true, |all, ok| async move { all && ok })
        .await
}

/// `batch` split by partition, each part in the batch's order.
fn by_partition(batch: &[Message]) -> Vec<Vec<Message>> {
    let mut parts: std::collections::BTreeMap<i32, Vec<Message>> = Default::default();
    for m in batch {
        parts.entry(m.partition).or_default().push(m.clone());
    }
    parts.into_values().collect()
}

/// Persists one batch, retrying until it succeeds or shutdown. Returns
/// whether it succeeded.
pub async fn persist_with_retry(
    handler: &dyn BatchHandler,
    batch: &[Message],
    options: &ConsumerOptions,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> bool {
    let mut backoff = Duration::from_millis(50);
    let heartbeat = metrics
        .consumer_heartbeat
        .with_label_values(&[options.service]);
    loop {
        heartbeat.set(now_secs());
        let timer = metrics
            .consumer_persist_duration
            .with_label_values(&[options.service])
            .start_timer();
        match handler.persist(batch).await {
            Ok(()) => {
                timer.observe_duration();
                metrics
                    .consumer_batch_size
                    .with_label_values(&[options.service])
                    .observe(batch.len() as f64);
                return true;
            }
            Err(e) => {
                timer.stop_and_discard();
                metrics
                    .consumer_persist_failures
                    .with_label_values(&[options.service, e.reason])
                    .inc();
                tracing::warn!(error = %e, size = batch.len(), "persisting batch failed; retrying");
                if shutdown.is_cancelled() {
                    return false;
                }
                sleep_or_cancel(shutdown, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn spawn_lag_gauge(
    queue: Arc<dyn Queue>,
    options: ConsumerOptions,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let labels = [options.service];
        while !shutdown.is_cancelled() {
            match queue.lag(&options.topic, &options.group).await {
                Ok(lag) => metrics
                    .consumer_lag
                    .with_label_values(&labels)
                    .set(lag as i64),
                Err(e) => {
                    // No figure rather than a stale one: the series goes
                    // away until a read succeeds, and the failure is counted.
                    let _ = metrics.consumer_lag.remove_label_values(&labels);
                    metrics.consumer_lag_errors.with_label_values(&labels).inc();
                    tracing::warn!(error = %e, "consumer lag unavailable");
                }
            }
            sleep_or_cancel(&shutdown, Duration::from_secs(2)).await;
        }
    })
}

async fn sleep_or_cancel(shutdown: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {},
        _ = tokio::time::sleep(d) => {},
    }
}
