//! A small time-bounded cache for values read on every hot-path request
//! (a campaign or a sale): a change is seen within twice the TTL — the TTL,
//! plus at most one more while a reload runs.
//!
//! When an entry expires, one request reloads it and the others keep the
//! old value meanwhile. Without that, every request arriving in the reload's
//! time queued on the database behind it — on SQLite behind the V3
//! consumer's batch on the one connection: a p99 of tens of milliseconds
//! twice a second under load.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

struct Entry<V> {
    value: Arc<V>,
    at: Instant,
    /// A request is reloading it.
    reloading: bool,
}

pub struct TtlCache<V> {
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry<V>>>,
}

impl<V> TtlCache<V> {
    pub fn new(ttl: Duration) -> Self {
        TtlCache {
            ttl,
            entries: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry<V>>> {
        // Entries are whole values swapped in one insert: safe after a panic.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<Arc<V>> {
        let entries = self.lock();
        let e = entries.get(key)?;
        (e.at.elapsed() < self.ttl).then(|| e.value.clone())
    }

    pub fn insert(&self, key: &str, value: Arc<V>) {
        let entry = Entry {
            value,
            at: Instant::now(),
            reloading: false,
        };
        self.lock().insert(key.to_string(), entry);
    }

    pub fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    /// The cached value, or `load`'s, cached from now on. An expired entry
    /// another request is reloading is still answered, for one more TTL.
    pub async fn get_or_load<E, Fut>(&self, key: &str, load: Fut) -> Result<Arc<V>, E>
    where
        Fut: std::future::Future<Output = Result<V, E>>,
    {
        if let Some(e) = self.lock().get_mut(key) {
            let age = e.at.elapsed();
            if age < self.ttl || (e.reloading && age < self.ttl * 2) {
                return Ok(e.value.clone());
            }
            e.reloading = true;
        }
        match load.await {
            Ok(v) => {
                let v = Arc::new(v);
                self.insert(key, v.clone());
                Ok(v)
            }
            Err(err) => {
                if let Some(e) = self.lock().get_mut(key) {
                    e.reloading = false;
                }
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn value(v: u32) -> Result<u32, ()> {
        Ok(v)
    }

    #[tokio::test]
    async fn fresh_entries_are_served_and_expired_ones_reloaded() {
        let cache = TtlCache::new(Duration::from_millis(300));
        assert_eq!(*cache.get_or_load("k", value(1)).await.unwrap(), 1);
        assert_eq!(*cache.get_or_load("k", value(2)).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(310)).await;
        assert_eq!(cache.get("k"), None);
        assert_eq!(*cache.get_or_load("k", value(3)).await.unwrap(), 3);
        cache.remove("k");
        assert_eq!(*cache.get_or_load("k", value(4)).await.unwrap(), 4);
    }

    #[tokio::test]
    async fn one_request_reloads_while_the_others_keep_the_old_value() {
        // Generous times: the checks below hold while less than a TTL passes.
        let cache = Arc::new(TtlCache::new(Duration::from_millis(500)));
        cache.get_or_load("k", value(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(510)).await;

        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let reloader = {
            let cache = cache.clone();
            tokio::spawn(async move {
                let slow = async {
                    wait.await.ok();
                    Ok::<_, ()>(2)
                };
                *cache.get_or_load("k", slow).await.unwrap()
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Meanwhile: the old value, and `load` is not run.
        let during = cache
            .get_or_load::<(), _>("k", async { panic!("a second reload") })
            .await;
        assert_eq!(*during.unwrap(), 1);
        release.send(()).unwrap();
        assert_eq!(reloader.await.unwrap(), 2);
        assert_eq!(*cache.get_or_load("k", value(9)).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_stuck_reload_holds_the_old_value_one_ttl_at_most() {
        let cache = TtlCache::new(Duration::from_millis(300));
        cache.get_or_load("k", value(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(310)).await;
        // A reload that never finishes (its request went away).
        let stuck = cache.get_or_load("k", std::future::pending::<Result<u32, ()>>());
        assert!(tokio::time::timeout(Duration::from_millis(5), stuck)
            .await
            .is_err());
        assert_eq!(*cache.get_or_load("k", value(2)).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(*cache.get_or_load("k", value(3)).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn a_failed_reload_lets_the_next_request_try() {
        let cache = TtlCache::new(Duration::from_millis(30));
        cache.get_or_load("k", value(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(35)).await;
        assert!(cache.get_or_load("k", async { Err(()) }).await.is_err());
        assert_eq!(*cache.get_or_load("k", value(5)).await.unwrap(), 5);
    }
}
