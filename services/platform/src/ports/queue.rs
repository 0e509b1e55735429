//! Queue port: Kafka (rdkafka) in production, an in-process log embedded.
//!
//! Both give the consumer the same contract: messages come in batches, in
//! order per key, and stay owed to the group until `commit` — a consumer
//! that stops before committing has its batch redelivered to the next one.
//! That is what lets the queued strategies write to the database first and
//! commit offsets only after the database commit.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, CommitMode, Consumer as _, StreamConsumer},
    error::KafkaError,
    producer::{FutureProducer, FutureRecord},
    types::RDKafkaErrorCode,
    util::Timeout,
    ClientConfig, Message as _, Offset, TopicPartitionList,
};
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("queue is full ({0} messages waiting)")]
    Full(usize),
    #[error("queue task failed: {0}")]
    Task(String),
}

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
    /// Sends one message and returns once the broker has it (acks=all).
    async fn send(&self, key: &str, payload: Vec<u8>) -> Result<(), QueueError>;
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
    /// Creates `topic` if it does not exist yet.
    async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<(), QueueError>;
    fn producer(&self, topic: &str) -> Result<Arc<dyn Producer>, QueueError>;
    async fn consumer(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>, QueueError>;
    /// Messages in `topic` not yet committed by `group`.
    async fn lag(&self, topic: &str, group: &str) -> Result<u64, QueueError>;
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

// ---------------------------------------------------------------- Kafka ----

/// Kafka through librdkafka. Producers are idempotent with acks=all, so a
/// retried send neither duplicates nor reorders a message.
#[derive(Clone)]
pub struct KafkaQueue {
    brokers: String,
    producer: FutureProducer,
    /// One client per consumer group for [`Queue::lag`], kept: a client
    /// made per call (every 2 s per service) started threads and a broker
    /// connection each time, on a worker thread, stalling requests.
    lag_clients: Arc<Mutex<HashMap<String, Arc<BaseConsumer>>>>,
}

impl KafkaQueue {
    pub fn new(brokers: &str) -> Result<Self, QueueError> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // A few milliseconds of linger turns a burst of admissions into
            // one produce request per partition.
            .set("linger.ms", "2")
            .set("message.timeout.ms", "10000")
            .create()?;
        Ok(Self {
            brokers: brokers.to_string(),
            producer,
            lag_clients: Arc::default(),
        })
    }

    fn config(&self, group: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000");
        c
    }
}

struct KafkaProducer {
    topic: String,
    producer: FutureProducer,
}

#[async_trait]
impl Producer for KafkaProducer {
    async fn send(&self, key: &str, payload: Vec<u8>) -> Result<(), QueueError> {
        self.producer
            .send(
                FutureRecord::to(&self.topic).key(key).payload(&payload),
                Timeout::After(Duration::from_secs(10)),
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| QueueError::Kafka(e))
    }
}

struct KafkaConsumer {
    topic: String,
    consumer: Arc<StreamConsumer>,
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Message>, QueueError> {
        let mut batch = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while batch.len() < max {
            // After the first message only what is already buffered is taken.
            let until = if batch.is_empty() {
                deadline
            } else {
                tokio::time::Instant::now() + Duration::from_millis(1)
            };
            match tokio::time::timeout_at(until, self.consumer.recv()).await {
                Err(_) => break,
                Ok(Err(e)) => {
                    if batch.is_empty() {
                        return Err(e.into());
                    }
                    break;
                }
                Ok(Ok(m)) => batch.push(Message {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec).unwrap_or_default(),
                    payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                }),
            }
        }
        Ok(batch)
    }

    async fn commit(&mut self, batch: &[Message]) -> Result<(), QueueError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in last_offsets(batch) {
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(o + 1))?;
        }
        let consumer = self.consumer.clone();
        // A synchronous commit blocks until the broker answers; keep it off
        // the async worker threads.
        tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|e| QueueError::Task(e.to_string()))??;
        Ok(())
    }
}

#[async_trait]
impl Queue for KafkaQueue {
    async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<(), QueueError> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()?;
        let results = admin
            .create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(KafkaError::AdminOp(code).into()),
            }
        }
        Ok(())
    }

    fn producer(&self, topic: &str) -> Result<Arc<dyn Producer>, QueueError> {
        Ok(Arc::new(KafkaProducer {
            topic: topic.to_string(),
            producer: self.producer.clone(),
        }))
    }

    async fn consumer(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>, QueueError> {
        let consumer: StreamConsumer = self.config(group).create()?;
        consumer.subscribe(&[topic])?;
        Ok(Box::new(KafkaConsumer {
            topic: topic.to_string(),
            consumer: Arc::new(consumer),
        }))
    }

    async fn lag(&self, topic: &str, group: &str) -> Result<u64, QueueError> {
        let config = self.config(group);
        let (clients, group) = (self.lag_clients.clone(), group.to_string());
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            let consumer = {
                let mut clients = clients.lock().unwrap_or_else(|p| p.into_inner());
                match clients.get(&group) {
                    Some(c) => c.clone(),
                    None => clients
                        .entry(group)
                        .or_insert(Arc::new(config.create()?))
                        .clone(),
                }
            };
            let timeout = Duration::from_secs(5);
            let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            let mut tpl = TopicPartitionList::new();
            for p in &partitions {
                tpl.add_partition(&topic, *p);
            }
            let committed = consumer.committed_offsets(tpl, timeout)?;
            let mut lag = 0u64;
            for p in partitions {
                let (low, high) = consumer.fetch_watermarks(&topic, p, timeout)?;
                let done = committed
                    .find_partition(&topic, p)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    })
                    .unwrap_or(low);
                lag += (high - done).max(0) as u64;
            }
            Ok::<_, QueueError>(lag)
        })
        .await
        .map_err(|e| QueueError::Task(e.to_string()))?
    }
}

// --------------------------------------------------------------- memory ----

#[derive(Default)]
struct Log {
    /// Offset of `messages[0]`; older messages were committed by every group.
    base: i64,
    messages: Vec<Message>,
    committed: HashMap<String, i64>,
}

impl Log {
    fn end(&self) -> i64 {
        self.base + self.messages.len() as i64
    }

    fn trim(&mut self) {
        let Some(low) = self.committed.values().copied().min() else {
            return;
        };
        let drop = (low - self.base).clamp(0, self.messages.len() as i64) as usize;
        if drop > 0 {
            self.messages.drain(..drop);
            self.base += drop as i64;
        }
    }
}

struct Topic {
    log: Mutex<Log>,
    arrived: Notify,
}

/// In-process queue: one partition per topic, bounded, with per-group
/// committed offsets. It lives as long as the process (the embedded default
/// trades durability of admitted-but-unpersisted requests for zero set-up).
#[derive(Clone)]
pub struct MemoryQueue {
    topics: Arc<Mutex<HashMap<String, Arc<Topic>>>>,
    capacity: usize,
}

impl MemoryQueue {
    /// A queue whose topics hold at most `capacity` uncommitted messages.
    pub fn new(capacity: usize) -> Self {
        Self {
            topics: Arc::default(),
            capacity,
        }
    }

    fn topic(&self, name: &str) -> Arc<Topic> {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        topics
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Topic {
                    log: Mutex::default(),
                    arrived: Notify::new(),
                })
            })
            .clone()
    }
}

fn lock_log(topic: &Topic) -> std::sync::MutexGuard<'_, Log> {
    // Critical sections are plain pushes and index moves: safe after a panic.
    topic.log.lock().unwrap_or_else(|p| p.into_inner())
}

struct MemoryProducer {
    topic: Arc<Topic>,
    capacity: usize,
}

#[async_trait]
impl Producer for MemoryProducer {
    async fn send(&self, key: &str, payload: Vec<u8>) -> Result<(), QueueError> {
        {
            let mut log = lock_log(&self.topic);
            if log.messages.len() >= self.capacity {
                log.trim();
                if log.messages.len() >= self.capacity {
                    return Err(QueueError::Full(log.messages.len()));
                }
            }
            let offset = log.end();
            log.messages.push(Message {
                partition: 0,
                offset,
                key: key.as_bytes().to_vec(),
                payload,
            });
        }
        self.topic.arrived.notify_waiters();
        Ok(())
    }
}

struct MemoryConsumer {
    topic: Arc<Topic>,
    group: String,
    position: i64,
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Message>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before looking, so a send between the look
            // and the wait is not missed.
            let arrived = self.topic.arrived.notified();
            {
                let log = lock_log(&self.topic);
                let from = (self.position.max(log.base) - log.base) as usize;
                if from < log.messages.len() {
                    let to = (from + max).min(log.messages.len());
                    let batch = log.messages[from..to].to_vec();
                    self.position = batch.last().map_or(self.position, |m| m.offset + 1);
                    return Ok(batch);
                }
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn commit(&mut self, batch: &[Message]) -> Result<(), QueueError> {
        if let Some(last) = last_offsets(batch).get(&0) {
            let mut log = lock_log(&self.topic);
            let c = log.committed.entry(self.group.clone()).or_insert(0);
            *c = (*c).max(last + 1);
            log.trim();
        }
        Ok(())
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn ensure_topic(&self, topic: &str, _partitions: i32) -> Result<(), QueueError> {
        self.topic(topic);
        Ok(())
    }

    fn producer(&self, topic: &str) -> Result<Arc<dyn Producer>, QueueError> {
        Ok(Arc::new(MemoryProducer {
            topic: self.topic(topic),
            capacity: self.capacity,
        }))
    }

    async fn consumer(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>, QueueError> {
        let topic = self.topic(topic);
        // A new member starts where the group committed: whatever an earlier
        // member took but did not commit is delivered again.
        let position = {
            let mut log = lock_log(&topic);
            let base = log.base;
            *log.committed.entry(group.to_string()).or_insert(base)
        };
        Ok(Box::new(MemoryConsumer {
            topic,
            group: group.to_string(),
            position,
        }))
    }

    async fn lag(&self, topic: &str, group: &str) -> Result<u64, QueueError> {
        let topic = self.topic(topic);
        let log = lock_log(&topic);
        let done = log.committed.get(group).copied().unwrap_or(log.base);
        Ok((log.end() - done).max(0) as u64)
    }
}
