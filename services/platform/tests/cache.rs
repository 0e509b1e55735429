//! Conformance suite of the versioned cache port, run against the
//! in-process cache and Redis.

use std::time::Duration;

use promo_platform::{
    ports::{MemoryCache, RedisCache, Versioned, VersionedCache},
    testing,
};

const TTL: Duration = Duration::from_secs(30);

async fn suite(c: &dyn VersionedCache) {
    assert_eq!(c.get("k").await.unwrap(), None);
    assert!(c.fill("k", 5, "balance=100", TTL).await.unwrap());
    assert_eq!(
        c.get("k").await.unwrap(),
        Some(Versioned {
            version: 5,
            value: Some("balance=100".into())
        })
    );
    // A write at version 6 invalidates; the reader that read version 5
    // before it cannot put its stale value back.
    c.invalidate("k", 6, TTL).await.unwrap();
    assert_eq!(
        c.get("k").await.unwrap(),
        Some(Versioned {
            version: 6,
            value: None
        })
    );
    assert!(
        !c.fill("k", 5, "balance=100", TTL).await.unwrap(),
        "stale fill refused"
    );
    assert!(
        c.fill("k", 6, "balance=50", TTL).await.unwrap(),
        "a read of the write's version fills"
    );
    assert!(
        !c.fill("k", 6, "balance=50", TTL).await.unwrap(),
        "and only once"
    );
    assert!(c.fill("k", 7, "balance=50", TTL).await.unwrap());
    // An older invalidation does not clobber a newer value.
    c.invalidate("k", 6, TTL).await.unwrap();
    assert_eq!(
        c.get("k").await.unwrap().unwrap().value.as_deref(),
        Some("balance=50")
    );
    // Values with separators survive.
    assert!(c.fill("j", 1, "a:b:{\"c\":1}", TTL).await.unwrap());
    assert_eq!(
        c.get("j").await.unwrap().unwrap().value.as_deref(),
        Some("a:b:{\"c\":1}")
    );
    // Entries expire.
    assert!(c
        .fill("short", 1, "v", Duration::from_millis(50))
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(c.get("short").await.unwrap(), None);
    assert!(
        c.fill("short", 1, "v", TTL).await.unwrap(),
        "an expired entry blocks nothing"
    );
}

#[tokio::test]
async fn memory_cache_conforms() {
    suite(&MemoryCache::new()).await;
}

#[tokio::test]
async fn redis_cache_conforms() {
    let counters = testing::fresh_redis("cache").await;
    suite(&RedisCache::new(&counters)).await;
}

#[tokio::test]
async fn redis_cluster_cache_conforms() {
    let counters = testing::fresh_redis_cluster("cache").await;
    suite(&RedisCache::new(&counters)).await;
}
