//! The queue port on Kafka, through librdkafka.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use async_trait::async_trait;
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, CommitMode, Consumer as _, StreamConsumer},
    error::KafkaError,
    message::{Header, OwnedHeaders},
    producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _},
    types::RDKafkaErrorCode,
    ClientConfig, Message as _, Offset, TopicPartitionList,
};

use super::{last_offsets, Consumer, Message, Producer, Queue, QueueError, Record};

/// Kafka through librdkafka. Producers are idempotent with acks=all, so a
/// retried send neither duplicates nor reorders a message.
#[derive(Clone)]
pub struct KafkaQueue {
    brokers: String,
    producer: Arc<SharedProducer>,
    /// One client per consumer group for [`Queue::lag`], kept: a client
    /// made per call (every 2 s per service) started threads and a broker
    /// connection each time, on a worker thread, stalling requests.
    lag_clients: Arc<Mutex<HashMap<String, Arc<BaseConsumer>>>>,
}

/// The process's one producer, replaced when it hits a fatal error: an
/// idempotent producer that fails fatally (a fenced epoch, a sequence gap
/// after a broker lost data) refuses every later send until re-created.
struct SharedProducer {
    config: ClientConfig,
    /// (generation, producer): a replacement happens once per failed generation.
    current: RwLock<(u64, FutureProducer)>,
}

impl SharedProducer {
    fn get(&self) -> (u64, FutureProducer) {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces generation `failed` unless another caller already did.
    fn replace(&self, failed: u64) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if current.0 != failed {
            return;
        }
        match self.config.create::<FutureProducer>() {
            Ok(p) => {
                tracing::warn!(
                    generation = failed + 1,
                    "kafka producer replaced after a fatal error"
                );
                *current = (failed + 1, p);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot re-create the kafka producer; retried on the next send")
            }
        }
    }
}

/// Default of `--kafka-linger-ms`: a few milliseconds turn a burst of
/// admissions sent one by one into one produce request per partition.
pub const LINGER_MS: u64 = 2;

impl KafkaQueue {
    /// A client of `brokers` whose producer lingers [`LINGER_MS`].
    pub fn new(brokers: &str) -> Result<Self, QueueError> {
        Self::with_linger(brokers, LINGER_MS)
    }

    /// A client of `brokers` whose producer waits up to `linger_ms` for
    /// more messages before it sends a produce request.
    pub fn with_linger(brokers: &str, linger_ms: u64) -> Result<Self, QueueError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", linger_ms.to_string())
            .set(
                "message.timeout.ms",
                super::DELIVERY_TIMEOUT.as_millis().to_string(),
            );
        let producer: FutureProducer = config.create()?;
        Ok(Self {
            brokers: brokers.to_string(),
            producer: Arc::new(SharedProducer {
                config,
                current: RwLock::new((0, producer)),
            }),
            lag_clients: Arc::default(),
        })
    }

    /// Makes the current producer fail fatally, as a broker-side fencing
    /// would (tests of the replacement).
    #[doc(hidden)]
    pub fn inject_fatal_error(&self) {
        let (_, p) = self.producer.get();
        let reason = std::ffi::CString::new("injected by a test").unwrap_or_default();
        // SAFETY: the client pointer is valid while `p` lives; librdkafka's
        // test hook only records the error and fails the client.
        unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                p.client().native_ptr(),
                rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED,
                reason.as_ptr(),
            );
        }
    }

    /// Which producer generation sends now (0 until one was replaced).
    pub fn producer_generation(&self) -> u64 {
        self.producer.get().0
    }

    /// How many partitions `topic` has, from the broker's metadata.
    async fn partition_count(&self, topic: &str) -> Result<i32, QueueError> {
        let (_, producer) = self.producer.get();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(10))?;
            Ok(metadata
                .topics()
                .first()
                .map_or(0, |t| t.partitions().len() as i32))
        })
        .await
        .map_err(|e| QueueError::Task(e.to_string()))?
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
    shared: Arc<SharedProducer>,
}

#[async_trait]
impl Producer for KafkaProducer {
    async fn send(&self, key: &str, payload: Vec<u8>) -> Result<(), QueueError> {
        self.deliver(None, key, &payload, &[]).await
    }

    async fn send_to(&self, partition: i32, key: &str, payload: Vec<u8>) -> Result<(), QueueError> {
        self.deliver(Some(partition), key, &payload, &[]).await
    }

    /// Each record with its headers, handed to the client in order, then
    /// the acknowledgements awaited in order ([`KafkaProducer::enqueue`]).
    async fn send_many(&self, records: Vec<Record>) -> Vec<Result<(), QueueError>> {
        let (generation, producer) = self.shared.get();
        let mut queued = Vec::with_capacity(records.len());
        for r in &records {
            queued.push(
                self.enqueue(&producer, Some(r.partition), &r.key, &r.payload, r.headers)
                    .await,
            );
        }
        let mut answers = Vec::with_capacity(queued.len());
        for q in queued {
            answers.push(self.answer(generation, &producer, q).await);
        }
        answers
    }
}

impl KafkaProducer {
    async fn deliver(
        &self,
        partition: Option<i32>,
        key: &str,
        payload: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<(), QueueError> {
        let (generation, producer) = self.shared.get();
        let queued = self
            .enqueue(&producer, partition, key, payload, headers)
            .await;
        self.answer(generation, &producer, queued).await
    }

    /// Hands one message to the client without waiting for the broker: the
    /// client sends it after every message handed over before it to the
    /// same partition (so one caller's messages keep their order there).
    /// While the client's queue is full, waits and retries, up to the
    /// delivery timeout.
    async fn enqueue(
        &self,
        producer: &FutureProducer,
        partition: Option<i32>,
        key: &str,
        payload: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<DeliveryFuture, KafkaError> {
        let started = std::time::Instant::now();
        let mut record = FutureRecord::to(&self.topic).key(key).payload(payload);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if !headers.is_empty() {
            let owned = headers
                .iter()
                .fold(OwnedHeaders::new(), |h, (name, value)| {
                    h.insert(Header {
                        key: name,
                        value: Some(value.as_bytes()),
                    })
                });
            record = record.headers(owned);
        }
        loop {
            match producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if started.elapsed() < super::DELIVERY_TIMEOUT =>
                {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// The caller's answer for one enqueued message, once the broker has
    /// acknowledged (or refused) it; a fatal error of the client replaces
    /// it (once per generation).
    async fn answer(
        &self,
        generation: u64,
        producer: &FutureProducer,
        queued: Result<DeliveryFuture, KafkaError>,
    ) -> Result<(), QueueError> {
        let delivered = match queued {
            Ok(delivery) => delivery.await.map_err(|_| KafkaError::Canceled),
            Err(e) => Err(e),
        };
        let e = match delivered {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err((e, _))) | Err(e) => e,
        };
        if let Some((code, reason)) = producer.client().fatal_error() {
            tracing::error!(?code, reason, "kafka producer failed fatally");
            self.shared.replace(generation);
        }
        Err(QueueError::Kafka(e))
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
        let mut existed = false;
        for r in results {
            match r {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => existed = true,
                Err((_, code)) => return Err(KafkaError::AdminOp(code).into()),
            }
        }
        if !existed {
            return Ok(());
        }
        // Events name their partition (one per bucket): an older, smaller
        // topic is grown rather than sent to partitions it lacks.
        let have = self.partition_count(topic).await?;
        if have >= partitions {
            return Ok(());
        }
        let refused = |why: String| {
            QueueError::Task(format!(
                "topic {topic} has {have} partitions, {partitions} are configured, and \
                 growing it failed ({why}): grow it by hand or configure {have}"
            ))
        };
        let grown = admin
            .create_partitions(
                &[NewPartitions::new(topic, partitions as usize)],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .map_err(|e| refused(e.to_string()))?;
        for r in grown {
            if let Err((_, code)) = r {
                return Err(refused(format!("{code:?}")));
            }
        }
        tracing::info!(topic, from = have, to = partitions, "topic grown");
        Ok(())
    }

    fn producer(&self, topic: &str) -> Result<Arc<dyn Producer>, QueueError> {
        Ok(Arc::new(KafkaProducer {
            topic: topic.to_string(),
            shared: self.producer.clone(),
        }))
    }

    async fn ping(&self, topic: &str) -> Result<(), QueueError> {
        let (_, producer) = self.producer.get();
        if let Some((code, reason)) = producer.client().fatal_error() {
            return Err(QueueError::Task(format!(
                "producer failed fatally ({code:?}: {reason}); it is replaced on the next send"
            )));
        }
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_millis(1500))?;
            match metadata.topics().first().and_then(|t| t.error()) {
                None => Ok(()),
                Some(e) => Err(QueueError::Task(format!(
                    "topic {topic}: {:?}",
                    RDKafkaErrorCode::from(e)
                ))),
            }
        })
        .await
        .map_err(|e| QueueError::Task(e.to_string()))?
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
