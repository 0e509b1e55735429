//! The embedded queue: one partition per topic, consumed in this process,
//! with per-group committed offsets.
//!
//! Durable (the embedded default, [`LocalQueue::durable`]): a send returns
//! only once its record is on disk ([`super::log`]); one writer thread per
//! topic appends whatever sends queued meanwhile in one write and one
//! fdatasync (group commit), then hands the records to the consumers. After
//! a crash or restart the records not committed by every group are read
//! back and delivered again. In memory ([`LocalQueue::in_memory`], for
//! tests that need no disk): the same, without the file.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Arc, Mutex,
    },
    time::Duration,
};

use async_trait::async_trait;
use tokio::sync::{oneshot, Notify};

use super::{
    last_offsets,
    log::{self, Appender, DurableLog},
    Consumer, Message, Producer, Queue, QueueError,
};

/// Segment size of the durable log: a segment is deleted whole once every
/// group has committed past it, so this bounds the disk held by consumed
/// records.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// Sends the writer thread takes into one write + fdatasync at most.
const MAX_GROUP: usize = 8192;

/// Committed offsets reach the disk at most this often (a commit in memory
/// is immediate). Offsets a crash loses only mean that many messages
/// delivered again, which the consumer's idempotence absorbs; writing them
/// on every batch cost a file write and rename per batch.
const OFFSETS_EVERY: Duration = Duration::from_millis(200);

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

/// What the producers, consumers and the writer thread of a topic share.
struct Shared {
    log: Mutex<Log>,
    arrived: Notify,
    /// Sends handed to the writer thread and not yet answered (they count
    /// against the capacity).
    writing: AtomicUsize,
    durable: Option<DurableLog>,
    /// When the committed offsets were last written to disk.
    offsets_written: Mutex<Option<std::time::Instant>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        // Critical sections are plain pushes and index moves: safe after a panic.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Append {
    key: Vec<u8>,
    payload: Vec<u8>,
    done: oneshot::Sender<Result<(), QueueError>>,
}

struct Topic {
    shared: Arc<Shared>,
    /// To the writer thread (durable topics); dropping it ends the thread.
    writer: Option<mpsc::Sender<Append>>,
}

/// The in-process queue; see the module documentation.
#[derive(Clone)]
pub struct LocalQueue {
    topics: Arc<Mutex<HashMap<String, Arc<Topic>>>>,
    capacity: usize,
    dir: Option<PathBuf>,
    segment_bytes: u64,
}

impl LocalQueue {
    /// A queue kept in memory only, whose topics hold at most `capacity`
    /// uncommitted messages.
    pub fn in_memory(capacity: usize) -> Self {
        Self {
            topics: Arc::default(),
            capacity,
            dir: None,
            segment_bytes: SEGMENT_BYTES,
        }
    }

    /// A queue kept durable under `dir` (one folder per topic), whose topics
    /// take new messages while fewer than `capacity` are uncommitted.
    pub fn durable(dir: impl Into<PathBuf>, capacity: usize) -> Self {
        Self {
            dir: Some(dir.into()),
            ..Self::in_memory(capacity)
        }
    }

    /// Closes segments at `bytes` instead of [`SEGMENT_BYTES`] (tests of retention).
    pub fn with_segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }

    /// Number of segment files `topic` keeps on disk (0 in memory).
    pub fn segment_count(&self, topic: &str) -> Result<usize, QueueError> {
        let t = self.topic(topic)?;
        Ok(t.shared
            .durable
            .as_ref()
            .map_or(0, DurableLog::segment_count))
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, QueueError> {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = topics.get(name) {
            return Ok(t.clone());
        }
        let topic = Arc::new(match &self.dir {
            None => Topic {
                shared: Arc::new(Shared {
                    log: Mutex::default(),
                    arrived: Notify::new(),
                    writing: AtomicUsize::new(0),
                    durable: None,
                    offsets_written: Mutex::new(None),
                }),
                writer: None,
            },
            Some(dir) => self.open_durable(dir, name)?,
        });
        topics.insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    fn open_durable(&self, dir: &std::path::Path, name: &str) -> Result<Topic, QueueError> {
        let safe = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !safe || name.starts_with('.') {
            return Err(QueueError::Log {
                path: dir.display().to_string(),
                message: format!("topic name {name:?} is not a safe folder name"),
            });
        }
        let (durable, appender, recovered) = DurableLog::open(&dir.join(name), self.segment_bytes)?;
        if !recovered.messages.is_empty() {
            tracing::info!(
                topic = name,
                messages = recovered.messages.len(),
                "queue: delivering again what was not committed before the last stop"
            );
        }
        let shared = Arc::new(Shared {
            log: Mutex::new(Log {
                base: recovered.base,
                messages: recovered.messages,
                committed: recovered.committed,
            }),
            arrived: Notify::new(),
            writing: AtomicUsize::new(0),
            durable: Some(durable),
            offsets_written: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("queue-{name}"))
            .spawn(move || write_loop(&thread_shared, appender, rx))
            .map_err(|e| QueueError::Task(e.to_string()))?;
        Ok(Topic {
            shared,
            writer: Some(tx),
        })
    }
}

/// The writer thread of a durable topic: group commit. Ends when the topic
/// is dropped (its sender closes).
fn write_loop(shared: &Shared, mut appender: Appender, rx: mpsc::Receiver<Append>) {
    let Some(durable) = shared.durable.as_ref() else {
        return;
    };
    let mut buf = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(a) => group.push(a),
                Err(_) => break,
            }
        }
        buf.clear();
        let start = appender.next_offset;
        for (i, a) in group.iter().enumerate() {
            log::encode(&mut buf, start + i as i64, &a.key, &a.payload);
        }
        let written = durable.append(&mut appender, &buf, group.len() as i64);
        let n = group.len();
        match written {
            Ok(()) => {
                let mut answers = Vec::with_capacity(n);
                {
                    let mut log = shared.lock();
                    for (i, a) in group.into_iter().enumerate() {
                        log.messages.push(Message {
                            partition: 0,
                            offset: start + i as i64,
                            key: a.key,
                            payload: a.payload,
                        });
                        answers.push(a.done);
                    }
                }
                shared.writing.fetch_sub(n, Ordering::Relaxed);
                shared.arrived.notify_waiters();
                for done in answers {
                    let _ = done.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, count = n, "queue log write failed; the sends are refused");
                shared.writing.fetch_sub(n, Ordering::Relaxed);
                let message = e.to_string();
                for a in group {
                    let _ = a.done.send(Err(QueueError::Task(message.clone())));
                }
            }
        }
    }
}

struct LocalProducer {
    topic: Arc<Topic>,
    capacity: usize,
}

#[async_trait]
impl Producer for LocalProducer {
    /// Returns once the message is durable on disk (a durable topic) or in
    /// the log (in memory).
    async fn send(&self, key: &str, payload: Vec<u8>) -> Result<(), QueueError> {
        let shared = &self.topic.shared;
        {
            let mut log = shared.lock();
            let waiting = log.messages.len() + shared.writing.load(Ordering::Relaxed);
            if waiting >= self.capacity {
                log.trim();
                let waiting = log.messages.len() + shared.writing.load(Ordering::Relaxed);
                if waiting >= self.capacity {
                    return Err(QueueError::Full(waiting));
                }
            }
            if self.topic.writer.is_none() {
                let offset = log.end();
                log.messages.push(Message {
                    partition: 0,
                    offset,
                    key: key.as_bytes().to_vec(),
                    payload,
                });
                drop(log);
                shared.arrived.notify_waiters();
                return Ok(());
            }
            shared.writing.fetch_add(1, Ordering::Relaxed);
        }
        let (done, answer) = oneshot::channel();
        let sent = self.topic.writer.as_ref().map(|w| {
            w.send(Append {
                key: key.as_bytes().to_vec(),
                payload,
                done,
            })
        });
        if !matches!(sent, Some(Ok(()))) {
            shared.writing.fetch_sub(1, Ordering::Relaxed);
            return Err(QueueError::Task("the queue's writer thread stopped".into()));
        }
        answer
            .await
            .map_err(|_| QueueError::Task("the queue's writer thread stopped".into()))?
    }
}

struct LocalConsumer {
    topic: Arc<Topic>,
    group: String,
    position: i64,
}

#[async_trait]
impl Consumer for LocalConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Message>, QueueError> {
        let shared = &self.topic.shared;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before looking, so a send between the look
            // and the wait is not missed.
            let arrived = shared.arrived.notified();
            {
                let log = shared.lock();
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
        let Some(last) = last_offsets(batch).get(&0).copied() else {
            return Ok(());
        };
        let committed = {
            let mut log = self.topic.shared.lock();
            let c = log.committed.entry(self.group.clone()).or_insert(0);
            *c = (*c).max(last + 1);
            log.trim();
            log.committed.clone()
        };
        let due = {
            let mut last = self
                .topic
                .shared
                .offsets_written
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= OFFSETS_EVERY);
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        };
        if due && self.topic.shared.durable.is_some() {
            let topic = self.topic.clone();
            tokio::task::spawn_blocking(move || match &topic.shared.durable {
                Some(d) => d.committed(&committed),
                None => Ok(()),
            })
            .await
            .map_err(|e| QueueError::Task(e.to_string()))??;
        }
        Ok(())
    }
}

#[async_trait]
impl Queue for LocalQueue {
    async fn ensure_topic(&self, topic: &str, _partitions: i32) -> Result<(), QueueError> {
        let this = self.clone();
        let topic = topic.to_string();
        // Opening a durable topic reads its segments back: not on a worker thread.
        tokio::task::spawn_blocking(move || this.topic(&topic).map(|_| ()))
            .await
            .map_err(|e| QueueError::Task(e.to_string()))?
    }

    fn producer(&self, topic: &str) -> Result<Arc<dyn Producer>, QueueError> {
        Ok(Arc::new(LocalProducer {
            topic: self.topic(topic)?,
            capacity: self.capacity,
        }))
    }

    async fn consumer(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>, QueueError> {
        let topic = self.topic(topic)?;
        // A new member starts where the group committed: whatever an earlier
        // member took but did not commit is delivered again.
        let position = {
            let mut log = topic.shared.lock();
            let base = log.base;
            *log.committed.entry(group.to_string()).or_insert(base)
        };
        Ok(Box::new(LocalConsumer {
            topic,
            group: group.to_string(),
            position,
        }))
    }

    async fn ping(&self, topic: &str) -> Result<(), QueueError> {
        self.topic(topic).map(|_| ())
    }

    async fn undelivered(&self, topic: &str, group: &str) -> Result<Vec<Message>, QueueError> {
        let topic = self.topic(topic)?;
        let log = topic.shared.lock();
        let from = log.committed.get(group).copied().unwrap_or(log.base);
        let skip = (from - log.base).clamp(0, log.messages.len() as i64) as usize;
        Ok(log.messages[skip..].to_vec())
    }

    async fn lag(&self, topic: &str, group: &str) -> Result<u64, QueueError> {
        let topic = self.topic(topic)?;
        let log = topic.shared.lock();
        let done = log.committed.get(group).copied().unwrap_or(log.base);
        Ok((log.end() - done).max(0) as u64)
    }
}
