//! The backend ports. Each has a production and an embedded implementation,
//! chosen by configuration, and one conformance suite (in `tests/`) that runs
//! against both so they cannot drift apart.

pub mod cache;
pub mod counters;
pub mod queue;
#[cfg(feature = "service")]
pub mod sql;

pub use cache::{MemoryCache, RedisCache, Versioned, VersionedCache};
pub use counters::{
    Admission, Arrival, Ask, Counters, LockToken, MemoryCounters, Outgoing, RedisCounters, Released,
};
pub use queue::{Consumer, KafkaQueue, LocalQueue, Message, Producer, Queue, QueueError, Record};
#[cfg(feature = "service")]
pub use sql::{with_conflict_retry, Database, Dialect, LockConflict, Migration, SqlError};
