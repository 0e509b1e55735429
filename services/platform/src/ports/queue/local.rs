//! The embedded queue: one partition per topic, consumed in this process,
//! with per-group committed offsets.
//!
//! Durable (the embedded default, [`LocalQueue::durable`]): a send writes
//! its record into the topic's segment file ([`super::log`]) itself, under
//! the topic's write lock, and returns once the write did — the record is
//! then in the operating system's cache and survives the process being
//! killed (kill -9, a panic, the OOM killer), not the machine losing power.
//! With [`LocalQueue::with_fdatasync`] a send also waits until the record is
//! on the disk itself (group commit): one sync thread per topic makes
//! everything written so far durable with one fdatasync — not holding the
//! write lock, so the next group is written meanwhile — then hands those
//! records to the consumers and answers their sends at once. After a crash
//! or restart the records not committed by every group are read back and
//! delivered again. In memory ([`LocalQueue::in_memory`], for tests that
//! need no disk): the same, without the file.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Condvar, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use async_trait::async_trait;
use tokio::sync::{watch, Notify};

use super::{
    last_offsets,
    log::{self, Appender, DurableLog},
    Consumer, Message, Producer, Queue, QueueError, Record,
};

/// Segment size of the durable log: a segment is deleted whole once every
/// group has committed past it, so this bounds the disk held by consumed
/// records.
pub const SEGMENT_BYTES: u64 = 64 << 20;

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
    /// A retained topic ([`Queue::ensure_retained_topic`]) keeps only its
    /// newest `keep` messages.
    keep: Option<usize>,
}

/// The group under which a retained topic's older messages count as
/// consumed: stored with the real groups' offsets, so the oldest segments
/// are deleted as they would be after a commit.
const RETENTION_GROUP: &str = "_retention";

impl Log {
    fn end(&self) -> i64 {
        self.base + self.messages.len() as i64
    }

    /// On a retained topic, counts all but the newest messages as consumed
    /// so that `incoming` more fit in `keep`.
    fn retain(&mut self, incoming: usize) {
        let Some(keep) = self.keep else {
            return;
        };
        let low = self.end() + incoming as i64 - keep as i64;
        let base = self.base;
        let at = self
            .committed
            .entry(RETENTION_GROUP.to_string())
            .or_insert(base);
        if low > *at {
            *at = low;
            self.trim();
        }
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

/// What the producers, consumers and the sync thread of a topic share.
struct Shared {
    log: Mutex<Log>,
    arrived: Notify,
    /// Sends written and not yet durable (they count against the capacity).
    writing: AtomicUsize,
    durable: Option<Durable>,
    /// When the committed offsets were last written to disk.
    offsets_written: Mutex<Option<std::time::Instant>>,
}

/// A durable topic's write side.
struct Durable {
    log: DurableLog,
    /// Sends wait for an fdatasync (else for the write only).
    fdatasync: bool,
    /// The write lock: the segment being written and what was written to it
    /// since the last sync.
    writer: Mutex<Writer>,
    /// Offsets below `upto` are durable; `failed` once a sync failed.
    synced: watch::Sender<Synced>,
    /// Wakes the sync thread.
    wake: (Mutex<Wake>, Condvar),
}

#[derive(Default)]
struct Wake {
    /// Records were written since the sync thread last looked.
    written: bool,
    /// The sync thread waits for `written` (else it is syncing and looks
    /// again when done: no wake-up needed, which spares a syscall per send).
    idle: bool,
    /// The topic was dropped.
    closed: bool,
}

struct Writer {
    appender: Appender,
    buf: Vec<u8>,
    /// Written, not yet durable; the consumers get them once they are.
    unsynced: Vec<Message>,
}

#[derive(Clone)]
struct Synced {
    upto: i64,
    failed: Option<Arc<str>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Critical sections are plain pushes, index moves and whole writes:
    // safe after a panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        locked(&self.log)
    }
}

struct Topic {
    shared: Arc<Shared>,
    /// The sync thread (durable topics); ended and joined on drop, so the
    /// folder's lock is free once the queue is dropped.
    sync_thread: Option<JoinHandle<()>>,
}

impl Drop for Topic {
    fn drop(&mut self) {
        if let Some(d) = &self.shared.durable {
            locked(&d.wake.0).closed = true;
            d.wake.1.notify_one();
        }
        if let Some(t) = self.sync_thread.take() {
            let _ = t.join();
        }
    }
}

/// The in-process queue; see the module documentation.
#[derive(Clone)]
pub struct LocalQueue {
    topics: Arc<Mutex<HashMap<String, Arc<Topic>>>>,
    capacity: usize,
    dir: Option<PathBuf>,
    segment_bytes: u64,
    fdatasync: bool,
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
            fdatasync: false,
        }
    }

    /// A queue kept durable under `dir` (one folder per topic), whose topics
    /// take new messages while fewer than `capacity` are uncommitted; see
    /// the module documentation for what a send waits for.
    pub fn durable(dir: impl Into<PathBuf>, capacity: usize) -> Self {
        Self {
            dir: Some(dir.into()),
            ..Self::in_memory(capacity)
        }
    }

    /// Sends also wait until their record is on the disk (fdatasync, one per
    /// group of sends): acknowledged messages then survive power loss too.
    pub fn with_fdatasync(mut self, on: bool) -> Self {
        self.fdatasync = on;
        self
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
            .map_or(0, |d| d.log.segment_count()))
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
                sync_thread: None,
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
                keep: None,
            }),
            arrived: Notify::new(),
            writing: AtomicUsize::new(0),
            durable: Some(Durable {
                log: durable,
                fdatasync: self.fdatasync,
                synced: watch::Sender::new(Synced {
                    upto: appender.next_offset(),
                    failed: None,
                }),
                writer: Mutex::new(Writer {
                    appender,
                    buf: Vec::new(),
                    unsynced: Vec::new(),
                }),
                wake: (Mutex::default(), Condvar::new()),
            }),
            offsets_written: Mutex::new(None),
        });
        let sync_thread = if self.fdatasync {
            let thread_shared = shared.clone();
            let t = std::thread::Builder::new()
                .name(format!("queue-{name}"))
                .spawn(move || sync_loop(&thread_shared))
                .map_err(|e| QueueError::Task(e.to_string()))?;
            Some(t)
        } else {
            None
        };
        Ok(Topic {
            shared,
            sync_thread,
        })
    }
}

/// The sync thread of a durable topic: whenever records were written, one
/// fdatasync for all of them, then they go to the consumers and their sends
/// are answered. Ends when the topic is dropped.
fn sync_loop(shared: &Shared) {
    let Some(d) = shared.durable.as_ref() else {
        return;
    };
    loop {
        {
            let mut wake = locked(&d.wake.0);
            while !wake.written && !wake.closed {
                wake.idle = true;
                wake = d.wake.1.wait(wake).unwrap_or_else(|p| p.into_inner());
            }
            wake.idle = false;
            if !wake.written {
                return;
            }
            wake.written = false;
        }
        let (file, upto, records) = {
            let mut w = locked(&d.writer);
            let records = std::mem::take(&mut w.unsynced);
            (w.appender.file(), w.appender.next_offset(), records)
        };
        if records.is_empty() {
            continue;
        }
        let n = records.len();
        match file.sync_data() {
            Ok(()) => {
                shared.lock().messages.extend(records);
                shared.writing.fetch_sub(n, Ordering::Relaxed);
                shared.arrived.notify_waiters();
                d.synced.send_modify(|s| s.upto = upto);
            }
            Err(e) => {
                // What the failed sync covered is in an unknown state: refuse
                // these sends and every later one (a restart recovers what
                // the file holds).
                tracing::error!(error = %e, count = n, "queue log sync failed; the queue refuses sends until restarted");
                shared.writing.fetch_sub(n, Ordering::Relaxed);
                let message: Arc<str> = format!("queue log sync failed: {e}").into();
                d.synced.send_modify(|s| s.failed = Some(message));
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
    /// Returns once the message is written to its segment (a durable topic;
    /// with fdatasync once it is on the disk) or in the log (in memory).
    async fn send(&self, key: &str, payload: Vec<u8>) -> Result<(), QueueError> {
        self.append(vec![(key.as_bytes().to_vec(), payload)]).await
    }

    /// All in one append: one lock, one write to the segment (and one
    /// fdatasync), all stored or none.
    async fn send_many(&self, records: Vec<Record>) -> Vec<Result<(), QueueError>> {
        let n = records.len();
        let appended = self
            .append(
                records
                    .into_iter()
                    .map(|r| (r.key.into_bytes(), r.payload))
                    .collect(),
            )
            .await;
        (0..n).map(|_| appended.clone()).collect()
    }
}

impl LocalProducer {
    /// Appends `records` (key, payload) to the topic, all or none; on a
    /// retained topic, the oldest messages go (and, on disk, the segments
    /// wholly older than the ones kept).
    async fn append(&self, records: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), QueueError> {
        let appended = self.append_records(records).await;
        if self.topic.shared.lock().keep.is_some() {
            save_offsets(&self.topic).await?;
        }
        appended
    }

    async fn append_records(&self, records: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), QueueError> {
        let n = records.len();
        if n == 0 {
            return Ok(());
        }
        let shared = &self.topic.shared;
        let d = {
            let mut log = shared.lock();
            log.retain(n);
            let waiting = log.messages.len() + shared.writing.load(Ordering::Relaxed);
            if waiting + n > self.capacity {
                log.trim();
                let waiting = log.messages.len() + shared.writing.load(Ordering::Relaxed);
                if waiting + n > self.capacity {
                    return Err(QueueError::Full(waiting));
                }
            }
            let Some(d) = shared.durable.as_ref() else {
                for (key, payload) in records {
                    let offset = log.end();
                    log.messages.push(Message {
                        partition: 0,
                        offset,
                        key,
                        payload,
                    });
                }
                drop(log);
                shared.arrived.notify_waiters();
                return Ok(());
            };
            shared.writing.fetch_add(n, Ordering::Relaxed);
            d
        };
        let last = {
            let mut guard = locked(&d.writer);
            let w = &mut *guard;
            let failed = d.synced.borrow().failed.clone();
            let first = w.appender.next_offset();
            w.buf.clear();
            for (i, (key, payload)) in records.iter().enumerate() {
                log::encode(&mut w.buf, first + i as i64, key, payload);
            }
            let written = match failed {
                Some(f) => Err(QueueError::Task(f.to_string())),
                None => d.log.write(&mut w.appender, &w.buf, n as i64),
            };
            if let Err(e) = written {
                shared.writing.fetch_sub(n, Ordering::Relaxed);
                return Err(e);
            }
            let messages = records
                .into_iter()
                .enumerate()
                .map(|(i, (key, payload))| Message {
                    partition: 0,
                    offset: first + i as i64,
                    key,
                    payload,
                });
            if !d.fdatasync {
                shared.lock().messages.extend(messages);
                shared.writing.fetch_sub(n, Ordering::Relaxed);
                drop(guard);
                shared.arrived.notify_waiters();
                return Ok(());
            }
            w.unsynced.extend(messages);
            first + n as i64 - 1
        };
        let idle = {
            let mut wake = locked(&d.wake.0);
            wake.written = true;
            wake.idle
        };
        if idle {
            d.wake.1.notify_one();
        }
        // `wait_for` looks at the current value first: a sync that finished
        // before this subscription is not missed.
        let mut synced = d.synced.subscribe();
        let state = synced
            .wait_for(|s| s.upto > last || s.failed.is_some())
            .await
            .map_err(|_| QueueError::Task("the queue's sync thread stopped".into()))?;
        match &state.failed {
            Some(f) if state.upto <= last => Err(QueueError::Task(f.to_string())),
            _ => Ok(()),
        }
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
        {
            let mut log = self.topic.shared.lock();
            let c = log.committed.entry(self.group.clone()).or_insert(0);
            *c = (*c).max(last + 1);
            log.trim();
        }
        save_offsets(&self.topic).await
    }
}

/// Writes the groups' committed offsets (a retained topic's trim point
/// among them) to a durable topic's folder, which deletes the segments every
/// group is past; at most every [`OFFSETS_EVERY`].
async fn save_offsets(topic: &Arc<Topic>) -> Result<(), QueueError> {
    if topic.shared.durable.is_none() {
        return Ok(());
    }
    let due = {
        let mut last = locked(&topic.shared.offsets_written);
        let due = last.is_none_or(|t| t.elapsed() >= OFFSETS_EVERY);
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    };
    if due {
        let committed = topic.shared.lock().committed.clone();
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || match &topic.shared.durable {
            Some(d) => d.log.committed(&committed),
            None => Ok(()),
        })
        .await
        .map_err(|e| QueueError::Task(e.to_string()))??;
    }
    Ok(())
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

    /// Keeps only the newest `keep` messages of `topic` (in memory and, but
    /// for the segment being written, on disk): nobody in this process
    /// reads it, and nobody else can.
    async fn ensure_retained_topic(
        &self,
        topic: &str,
        partitions: i32,
        keep: usize,
    ) -> Result<(), QueueError> {
        self.ensure_topic(topic, partitions).await?;
        let t = self.topic(topic)?;
        let mut log = t.shared.lock();
        log.keep = Some(keep.max(1));
        log.retain(0);
        Ok(())
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
