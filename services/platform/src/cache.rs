//! A small time-bounded cache for values read on every hot-path request
//! (a campaign or a sale): a change is seen within the TTL plus one load.
//!
//! Stale-while-revalidate: when an entry has expired, the first request
//! reloads it and the others keep using the last value meanwhile, instead of
//! all queueing on the database at once (with SQLite's single connection
//! that queue sat behind the consumer's batch transaction).

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

pub struct TtlCache<V> {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Arc<V>, Instant)>>,
    refreshing: Mutex<HashSet<String>>,
}

/// Ends a refresh however the loading future ends (also when dropped).
struct Refreshing<'a> {
    set: &'a Mutex<HashSet<String>>,
    key: String,
}

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

impl<V> TtlCache<V> {
    pub fn new(ttl: Duration) -> Self {
        TtlCache {
            ttl,
            entries: Mutex::default(),
            refreshing: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, (Arc<V>, Instant)>> {
        // Entries are whole values swapped in one insert: safe after a panic.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh entry only.
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

    /// The entry: fresh from the cache; or, when expired, the stale value
    /// while another request reloads it; otherwise loaded by this request.
    pub async fn get_or_load<E, F, Fut>(&self, key: &str, load: F) -> Result<Arc<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let stale = {
            let entries = self.lock();
            match entries.get(key) {
                Some((v, at)) if at.elapsed() < self.ttl => return Ok(v.clone()),
                Some((v, _)) => Some(v.clone()),
                None => None,
            }
        };
        let first = self
            .refreshing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string());
        if let (Some(v), false) = (&stale, first) {
            return Ok(v.clone());
        }
        let _guard = first.then(|| Refreshing {
            set: &self.refreshing,
            key: key.to_string(),
        });
        let value = Arc::new(load().await?);
        self.insert(key, value.clone());
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn one_request_reloads_the_others_use_the_stale_value() {
        let cache = Arc::new(TtlCache::<u32>::new(Duration::from_millis(20)));
        let loads = Arc::new(AtomicUsize::new(0));
        let load = |n: u32, loads: Arc<AtomicUsize>| async move {
            loads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, ()>(n)
        };
        assert_eq!(
            *cache
                .get_or_load("k", || load(1, loads.clone()))
                .await
                .unwrap(),
            1
        );
        tokio::time::sleep(Duration::from_millis(30)).await; // expired
        let slow = {
            let (cache, loads) = (cache.clone(), loads.clone());
            tokio::spawn(async move { *cache.get_or_load("k", || load(2, loads)).await.unwrap() })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        // While that reload runs, others get the stale value at once.
        let start = Instant::now();
        assert_eq!(
            *cache
                .get_or_load("k", || load(3, loads.clone()))
                .await
                .unwrap(),
            1
        );
        assert!(start.elapsed() < Duration::from_millis(30));
        assert_eq!(slow.await.unwrap(), 2);
        assert_eq!(
            loads.load(Ordering::SeqCst),
            2,
            "one reload, not one per request"
        );
        assert_eq!(
            *cache
                .get_or_load("k", || load(4, loads.clone()))
                .await
                .unwrap(),
            2
        );
    }
}
