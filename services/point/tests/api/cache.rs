//! The cache-aside balance: a write followed by a read never returns the
//! old balance, also while other readers race to fill the cache; repeated
//! reads are hits; with Redis stopped, reads and writes are still served.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use futures::future::join_all;
use point_service::Settings;
use promo_platform::ports::{RedisCache, RedisCounters};

use crate::helpers::{spawn_app, spawn_app_with, Backend};

async fn a_write_is_never_followed_by_the_old_balance(backend: Backend) {
    let app = Arc::new(spawn_app(backend).await);
    assert_eq!(app.earn("u", 100).await.status, 200);
    let stop = Arc::new(AtomicBool::new(false));
    // Readers keep missing and filling while the writer writes.
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    app.balance("u").await;
                }
            })
        })
        .collect();
    for i in 1..=60 {
        let a = app.earn("u", 1).await;
        assert_eq!(a.status, 200);
        let written = a.body["balance"].as_i64().unwrap();
        assert_eq!(written, 100 + i);
        assert_eq!(app.balance("u").await, written, "read after write #{i}");
    }
    stop.store(true, Ordering::Relaxed);
    join_all(readers).await;
    let hits_before = app
        .svc
        .metrics
        .cache_reads
        .with_label_values(&["point", "hit"])
        .get();
    assert_eq!(app.balance("u").await, 160);
    assert_eq!(app.balance("u").await, 160);
    let hits = app
        .svc
        .metrics
        .cache_reads
        .with_label_values(&["point", "hit"])
        .get();
    assert!(
        hits > hits_before,
        "unchanged balances are served from the cache"
    );
}

/// A Redis of this test's own, which it can stop.
struct PrivateRedis {
    child: Child,
    url: String,
}

impl PrivateRedis {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (scripts/infra.sh installs it)");
        PrivateRedis {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn reads_survive_a_redis_outage(backend: Backend) {
    let mut redis = PrivateRedis::start();
    let counters = {
        let mut tries = 0;
        loop {
            match RedisCounters::connect(&redis.url, "outage:").await {
                Ok(c) => break c,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("private redis did not start: {e}"),
            }
        }
    };
    let cache = Arc::new(RedisCache::new(&counters));
    let app = spawn_app_with(backend, Settings::default(), Some(cache)).await;
    assert_eq!(app.earn("u", 40).await.status, 200);
    assert_eq!(app.balance("u").await, 40);
    assert_eq!(app.balance("u").await, 40, "a hit");
    redis.stop();
    assert_eq!(app.balance("u").await, 40, "served from the database");
    assert_eq!(
        app.earn("u", 2).await.status,
        200,
        "writes never needed the cache"
    );
    assert_eq!(app.balance("u").await, 42);
    let errors = app
        .svc
        .metrics
        .cache_reads
        .with_label_values(&["point", "error"])
        .get();
    assert!(errors >= 2, "the outage is counted");
}

promo_platform::on_both_backends!(
    a_write_is_never_followed_by_the_old_balance,
    reads_survive_a_redis_outage
);
