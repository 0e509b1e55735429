//! A small time-bounded cache for values read on every hot-path request
//! (a campaign or a sale): a change is seen within the TTL.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

pub struct TtlCache<V> {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Arc<V>, Instant)>>,
}

impl<V> TtlCache<V> {
    pub fn new(ttl: Duration) -> Self {
        TtlCache {
            ttl,
            entries: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, (Arc<V>, Instant)>> {
        // Entries are whole values swapped in one insert: safe after a panic.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<Arc<V>> {
        let entries = self.lock();
        let (v, at) = entries.get(key)?;
        (at.elapsed() < self.ttl).then(|| v.clone())
    }

    pub fn insert(&self, key: &str, value: Arc<V>) {
        self.lock().insert(key.to_string(), (value, Instant::now()));
    }

    pub fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    /// The cached value, or `load`'s, cached from now on.
    pub async fn get_or_load<E, Fut>(&self, key: &str, load: Fut) -> Result<Arc<V>, E>
    where
        Fut: std::future::Future<Output = Result<V, E>>,
    {
        if let Some(v) = self.get(key) {
            return Ok(v);
        }
        let v = Arc::new(load.await?);
        self.insert(key, v.clone());
        Ok(v)
    }
}
