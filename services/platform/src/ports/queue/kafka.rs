//! The queue port on Kafka, through librdkafka.

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

use super::{last_offsets, Consumer, Message, Producer, Queue, QueueError};

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
            .set(
                "message.timeout.ms",
                super::DELIVERY_TIMEOUT.as_millis().to_string(),
            )
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
                Timeout::After(super::DELIVERY_TIMEOUT),
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
