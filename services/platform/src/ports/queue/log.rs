//! The embedded queue's durable storage: one folder per topic with
//! append-only segment files of checksummed records, and the consumer
//! groups' committed offsets.
//!
//! A record is `[body length: u32][crc32 of body: u32][body]`, body =
//! `[offset: i64][key length: u16][key][payload]`, little-endian. A segment
//! is named for the offset of its first record (`00000000000000000000.log`)
//! and closed once it passes the segment size; a segment is deleted once
//! every group has committed past its last record.
//!
//! Recovery reads every segment. A record cut short or failing its checksum
//! at the end of the newest segment is a write that never completed — the
//! process died inside it (never acknowledged), or the machine lost power
//! before the write reached the disk (acknowledged only without
//! fdatasync: see `super::local`) — and is cut off; anywhere else it is
//! corruption and opening fails with the file and byte named.

use std::{
    collections::HashMap,
    fs::{self, File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use super::{Message, QueueError};

const HEADER: usize = 8;
const OFFSETS_FILE: &str = "offsets.json";

fn err(path: &Path, message: impl std::fmt::Display) -> QueueError {
    QueueError::Log {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

fn segment_name(base: i64) -> String {
    format!("{base:020}.log")
}

/// Appends one record for `(offset, key, payload)` to `buf`.
pub(super) fn encode(buf: &mut Vec<u8>, offset: i64, key: &[u8], payload: &[u8]) {
    let body_len = 8 + 2 + key.len() + payload.len();
    let start = buf.len();
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&(key.len() as u16).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(payload);
    let crc = crc32fast::hash(&buf[start + HEADER..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The records of one segment's bytes, and how many bytes of it are whole
/// records (less than `bytes.len()` when the tail is torn or corrupt).
fn decode(bytes: &[u8]) -> (Vec<Message>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= HEADER {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap_or_default());
        let body_at = at + HEADER;
        if len < 10 || bytes.len() - body_at < len {
            break;
        }
        let body = &bytes[body_at..body_at + len];
        if crc32fast::hash(body) != crc {
            break;
        }
        let offset = i64::from_le_bytes(body[..8].try_into().unwrap_or_default());
        let key_len = u16::from_le_bytes(body[8..10].try_into().unwrap_or_default()) as usize;
        if 10 + key_len > len {
            break;
        }
        out.push(Message {
            partition: 0,
            offset,
            key: body[10..10 + key_len].to_vec(),
            payload: body[10 + key_len..].to_vec(),
        });
        at = body_at + len;
    }
    (out, at)
}

/// What a topic folder held when it was opened.
pub(super) struct Recovered {
    /// Every record not yet committed by every group, in offset order.
    pub messages: Vec<Message>,
    /// Offset of the first of `messages` (or of the next record when empty).
    pub base: i64,
    pub committed: HashMap<String, i64>,
}

/// The segment being appended to; owned by whoever holds the topic's
/// write lock.
pub(super) struct Appender {
    file: Arc<File>,
    path: PathBuf,
    len: u64,
    next_offset: i64,
}

/// A topic's folder: its segments and committed offsets.
pub(super) struct DurableLog {
    dir: PathBuf,
    segment_bytes: u64,
    /// Base offsets of the segments, oldest first; the last is being written.
    segments: Mutex<Vec<i64>>,
    /// Held for the life of the log: one process per folder.
    _lock: File,
}

impl DurableLog {
    /// Opens (creating) the topic folder `dir` and recovers its records.
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
    ) -> Result<(DurableLog, Appender, Recovered), QueueError> {
        fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| err(&lock_path, e))?;
        lock.try_lock().map_err(|_| {
            err(
                dir,
                "another process holds this queue; give each process its own --data-dir",
            )
        })?;
        let mut bases: Vec<i64> = fs::read_dir(dir)
            .map_err(|e| err(dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".log")?
                    .parse::<i64>()
                    .ok()
            })
            .collect();
        bases.sort_unstable();
        if bases.is_empty() {
            bases.push(0);
            File::create(dir.join(segment_name(0))).map_err(|e| err(dir, e))?;
        }
        let committed = read_offsets(dir);
        let low = committed.values().copied().min();

        let mut messages = Vec::new();
        let mut next_offset = bases[0];
        let last = bases.len() - 1;
        let mut active_len = 0;
        for (i, base) in bases.iter().enumerate() {
            let path = dir.join(segment_name(*base));
            let bytes = fs::read(&path).map_err(|e| err(&path, e))?;
            let (records, whole) = decode(&bytes);
            if whole < bytes.len() {
                if i != last {
                    return Err(err(&path, format!("corrupt record at byte {whole}")));
                }
                tracing::warn!(path = %path.display(), at = whole, dropped = bytes.len() - whole,
                    "queue log: cutting off an incomplete last write (never acknowledged)");
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| err(&path, e))?;
                f.set_len(whole as u64).map_err(|e| err(&path, e))?;
                f.sync_all().map_err(|e| err(&path, e))?;
            }
            next_offset = next_offset.max(*base);
            for m in records {
                if m.offset != next_offset {
                    return Err(err(
                        &path,
                        format!("offset {} where {next_offset} was expected", m.offset),
                    ));
                }
                next_offset += 1;
                if low.is_none_or(|low| m.offset >= low) {
                    messages.push(m);
                }
            }
            if i == last {
                active_len = whole as u64;
            }
        }
        let active_path = dir.join(segment_name(bases[last]));
        let file = OpenOptions::new()
            .append(true)
            .open(&active_path)
            .map_err(|e| err(&active_path, e))?;
        let base = messages.first().map_or(next_offset, |m| m.offset);
        let log = DurableLog {
            dir: dir.to_path_buf(),
            segment_bytes,
            segments: Mutex::new(bases),
            _lock: lock,
        };
        let appender = Appender {
            file: Arc::new(file),
            path: active_path,
            len: active_len,
            next_offset,
        };
        Ok((
            log,
            appender,
            Recovered {
                messages,
                base,
                committed,
            },
        ))
    }

    /// Writes `records` (already encoded, `count` of them) into the OS
    /// cache, not yet durable: [`Appender::file`] then needs an fdatasync.
    /// Closes the segment first when it is full (making it durable). On
    /// error nothing of `records` is left in the file.
    pub fn write(&self, a: &mut Appender, records: &[u8], count: i64) -> Result<(), QueueError> {
        if a.len >= self.segment_bytes {
            self.roll(a)?;
        }
        let written = (&*a.file).write_all(records);
        if let Err(e) = written {
            // Leave no half-written record behind a later, good one.
            if let Err(te) = a.file.set_len(a.len) {
                tracing::error!(error = %te, "queue log: could not cut off a failed write");
            }
            return Err(err(&a.path, e));
        }
        a.len += records.len() as u64;
        a.next_offset += count;
        Ok(())
    }

    /// Closes the segment (durably: a sync of the current file may already
    /// have been taken without what was written since) and starts the next.
    fn roll(&self, a: &mut Appender) -> Result<(), QueueError> {
        a.file.sync_data().map_err(|e| err(&a.path, e))?;
        let path = self.dir.join(segment_name(a.next_offset));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| err(&path, e))?;
        // The new file's directory entry must survive a power cut too.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| err(&self.dir, e))?;
        self.lock_segments().push(a.next_offset);
        a.file = Arc::new(file);
        a.path = path;
        a.len = 0;
        Ok(())
    }

    fn lock_segments(&self) -> std::sync::MutexGuard<'_, Vec<i64>> {
        self.segments.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the groups' committed offsets and deletes the segments every
    /// group is done with. The offsets file is replaced whole (write, then
    /// rename); a lost or unreadable one only means redelivery from the
    /// oldest segment kept, which the consumer's idempotence absorbs.
    pub fn committed(&self, committed: &HashMap<String, i64>) -> Result<(), QueueError> {
        let mut segments = self.lock_segments();
        let tmp = self.dir.join("offsets.json.tmp");
        let json = serde_json::to_vec(committed).unwrap_or_default();
        fs::write(&tmp, json).map_err(|e| err(&tmp, e))?;
        fs::rename(&tmp, self.dir.join(OFFSETS_FILE)).map_err(|e| err(&tmp, e))?;
        let Some(low) = committed.values().copied().min() else {
            return Ok(());
        };
        while segments.len() > 1 && segments[1] <= low {
            let path = self.dir.join(segment_name(segments[0]));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(err(&path, e)),
            }
            segments.remove(0);
        }
        Ok(())
    }

    /// Number of segment files, for tests of the retention.
    pub fn segment_count(&self) -> usize {
        self.lock_segments().len()
    }
}

impl Appender {
    /// The segment being written, to make what was written durable
    /// (`sync_data`) without holding the write lock; a segment closed
    /// meanwhile was made durable when it was closed.
    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// The offset the next record gets.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
}

fn read_offsets(dir: &Path) -> HashMap<String, i64> {
    let path = dir.join(OFFSETS_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e,
                "queue log: unreadable committed offsets; redelivering from the oldest segment");
            HashMap::new()
        }),
        Err(_) => HashMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_tail_is_detected() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, b"k", b"one");
        encode(&mut buf, 8, b"", b"two");
        let whole = buf.len();
        encode(&mut buf, 9, b"k", b"three");
        let (all, n) = decode(&buf);
        assert_eq!(n, buf.len());
        assert_eq!(all.len(), 3);
        assert_eq!(
            (all[0].offset, &all[0].key[..], &all[0].payload[..]),
            (7, &b"k"[..], &b"one"[..])
        );
        assert_eq!((all[1].offset, &all[1].payload[..]), (8, &b"two"[..]));

        // Cut anywhere inside the last record: the first two survive.
        for cut in whole..buf.len() {
            let (got, n) = decode(&buf[..cut]);
            assert_eq!((got.len(), n), (2, whole), "cut at {cut}");
        }
        // A flipped bit in the last record fails its checksum.
        let mut bad = buf.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(decode(&bad).0.len(), 2);
    }
}
