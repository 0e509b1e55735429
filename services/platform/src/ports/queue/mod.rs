//! Queue port: Kafka (rdkafka) in production; embedded, an in-process log
//! kept durable in an append-only file log under the data folder.
//!
//! Both give the consumer the same contract: messages come in batches, in
//! order per key, and stay owed to the group until `commit` — a consumer
//! that stops before committing has its batch redelivered to the next one.
//! That is what lets the queued strategies write to the database first and
//! commit offsets only after the database commit.

mod kafka;
mod local;
mod log;

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use rdkafka::error::KafkaError;

pub use kafka::{KafkaQueue, LINGER_MS};
pub use local::LocalQueue;

#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("queue is full ({0} messages waiting)")]
    Full(usize),
    #[error("queue task failed: {0}")]
    Task(String),
    #[error("queue log {path}: {message}")]
    Log { path: String, message: String },
}

impl QueueError {
    /// Whether a failed send may still have stored the message (the broker
    /// may have written it and the answer was lost); otherwise it surely
    /// did not.
    pub fn maybe_delivered(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode as Code;
        match self {
            QueueError::Kafka(KafkaError::MessageProduction(code)) => matches!(
                code,
                Code::MessageTimedOut
                    | Code::RequestTimedOut
                    | Code::OperationTimedOut
                    | Code::Fatal
            ),
            QueueError::Kafka(KafkaError::Canceled) => true,
            _ => false,
        }
    }
}

/// How long the Kafka producer keeps trying to deliver one message before
/// its send fails (`message.timeout.ms`).
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// One delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

#[async_trait]
pub trait Producer: Send + Sync {
    /// Sends one message and returns once the broker has it (acks=all);
    /// the queue picks its partition from `key`.
    async fn send(&self, key: &str, payload: Vec<u8>) -> Result<(), QueueError>;

    /// [`Producer::send`] to partition `partition` (below the topic's
    /// count; see [`Queue::ensure_topic`]). The embedded queue has one
    /// partition per topic and ignores it.
    async fn send_to(&self, partition: i32, key: &str, payload: Vec<u8>) -> Result<(), QueueError> {
        let _ = partition;
        self.send(key, payload).await
    }

    /// Sends `records` together; one answer per record, in order, each
    /// as [`Producer::send_to`] would give it. Kafka hands them to the
    /// client at once (one produce request per partition's batch); the
    /// embedded queue appends them in one write.
    async fn send_many(&self, records: Vec<Record>) -> Vec<Result<(), QueueError>> {
        futures::future::join_all(
            records
                .into_iter()
                .map(|r| async move { self.send_to(r.partition, &r.key, r.payload).await }),
        )
        .await
    }
}

/// One message for [`Producer::send_many`].
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub key: String,
    pub payload: Vec<u8>,
    /// Message headers (name, value). Kafka sends them with the message;
    /// the embedded queue's log keeps key and payload only.
    pub headers: &'static [(&'static str, &'static str)],
}

#[async_trait]
pub trait Consumer: Send {
    /// Waits up to `wait` for the first message, then takes what is ready,
    /// up to `max`. An empty batch means nothing arrived in time.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Message>, QueueError>;

    /// Marks everything up to and including `batch` as done for the group.
    async fn commit(&mut self, batch: &[Message]) -> Result<(), QueueError>;
}

#[async_trait]
pub trait Queue: Send + Sync {
    /// Creates `topic` with `partitions` partitions if it does not exist
    /// yet; Kafka grows an existing topic that has fewer (and fails, naming
    /// both counts, when the broker refuses).
    async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<(), QueueError>;
    /// [`Queue::ensure_topic`] for a topic this process only writes, for
    /// readers elsewhere (the events topic): Kafka keeps it as the broker's
    /// retention says; the embedded queue, which no other process can read,
    /// keeps only the newest `keep` messages instead of all of them.
    async fn ensure_retained_topic(
        &self,
        topic: &str,
        partitions: i32,
        keep: usize,
    ) -> Result<(), QueueError> {
        let _ = keep;
        self.ensure_topic(topic, partitions).await
    }
    fn producer(&self, topic: &str) -> Result<Arc<dyn Producer>, QueueError>;
    async fn consumer(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>, QueueError>;
    /// Messages in `topic` not yet committed by `group`.
    async fn lag(&self, topic: &str, group: &str) -> Result<u64, QueueError>;
    /// Whether `topic` can be sent to now, for `/readyz`.
    async fn ping(&self, topic: &str) -> Result<(), QueueError>;
    /// The messages of `topic` that `group` has not committed, where the
    /// queue can list them cheaply: the local queue's replayed backlog after
    /// a restart. Kafka answers none (the broker keeps them; the counters
    /// that mark their requests pending are not lost with the process).
    async fn undelivered(&self, _topic: &str, _group: &str) -> Result<Vec<Message>, QueueError> {
        Ok(Vec::new())
    }
}

/// The highest offset per partition in `batch`.
fn last_offsets(batch: &[Message]) -> HashMap<i32, i64> {
    let mut last = HashMap::new();
    for m in batch {
        let e = last.entry(m.partition).or_insert(m.offset);
        *e = (*e).max(m.offset);
    }
    last
}
