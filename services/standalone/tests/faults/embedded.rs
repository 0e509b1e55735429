//! The embedded default (`promo standalone`, SQLite + in-process counters +
//! the durable local queue) killed mid-storm.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use promo_platform::testing::TempDir;

use crate::harness::{self, assert_exact, storm, Kind, Proc, Row};

const LIMIT: i64 = 2000;
const KILL_AFTER_ACKS: usize = 700;
const CONCURRENCY: usize = 32;

fn promo() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_promo"))
}

fn args(dir: &TempDir, port: u16, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "standalone",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        &dir.0.join("data").display().to_string(),
        "--promotions",
        &dir.0.join("no-promotions").display().to_string(),
        // Retries of requests the kill left unanswered wait out this lease.
        "--coupon-idempotency-lease-seconds",
        "5",
        "--timesale-idempotency-lease-seconds",
        "5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// Storm → `signal` (KILL or TERM) after some acknowledgements → restart on
/// the same data → finish the storm → check.
async fn crash_mid_storm(kind: Kind, signal: &'static str, extra: &[&str]) {
    let dir = TempDir::new();
    let port = harness::free_port();
    let log = dir.0.join("promo.log");
    let client = harness::client();
    let mut first = Proc::start(&promo(), &args(&dir, port, extra), &[], port, &log);
    first.ready(&client, Duration::from_secs(30)).await;
    let (per_user, users) = match kind {
        Kind::Coupon => (1, 2 * LIMIT as usize),
        Kind::TimeSale => (3, LIMIT as usize),
    };
    kind.create(&client, &first.base, "fault", (LIMIT, per_user, 1))
        .await;

    let pid = first.pid();
    let sent = AtomicBool::new(false);
    let phase1 = storm(
        kind,
        &client,
        &first.base,
        "fault",
        (0..users).collect(),
        CONCURRENCY,
        |acked| {
            if acked >= KILL_AFTER_ACKS && !sent.swap(true, Ordering::Relaxed) {
                let _ = std::process::Command::new("kill")
                    .args([format!("-{signal}"), pid.to_string()])
                    .status();
            }
        },
    )
    .await;
    assert!(
        sent.load(Ordering::Relaxed),
        "the storm ended before the fault"
    );
    if signal == "TERM" {
        assert!(
            first.terminate(Duration::from_secs(30)),
            "no clean exit after SIGTERM"
        );
    } else {
        first.kill9();
    }

    let restarted = Instant::now();
    let mut second = Proc::start(&promo(), &args(&dir, port, extra), &[], port, &log);
    second.ready(&client, Duration::from_secs(60)).await;
    // An acknowledged request is never unknown, not even right after the
    // restart while its event waits in the replayed queue.
    let not_found = std::sync::atomic::AtomicUsize::new(0);
    harness::settle_counting(
        kind,
        &client,
        &second.base,
        &phase1.acks,
        Duration::from_secs(90),
        &not_found,
    )
    .await;
    let phase2 = storm(
        kind,
        &client,
        &second.base,
        "fault",
        phase1.unanswered.clone(),
        CONCURRENCY,
        |_| {},
    )
    .await;
    assert!(
        phase2.unanswered.is_empty(),
        "the restarted process stopped answering"
    );
    assert_eq!(
        phase1.duplicates + phase2.duplicates,
        0,
        "a retry with its Idempotency-Key was taken for a second request"
    );
    println!(
        "{} requests the fault left unanswered (or unsent) were sent again with their keys; \
         {} of them waited for the lease of a claim the fault left behind",
        phase1.unanswered.len(),
        phase2.waited_for_lease
    );
    let admits_again_after = phase2
        .first_ack
        .map_or(Duration::ZERO, |t| t.duration_since(restarted));
    let mut acks = phase1.acks;
    acks.extend(phase2.acks);
    let (granted, undecided) = harness::settle_counting(
        kind,
        &client,
        &second.base,
        &acks,
        Duration::from_secs(90),
        &not_found,
    )
    .await;
    let all_decided_after = restarted.elapsed();
    let (persisted, remaining, pending) = kind.figures(&client, &second.base, "fault").await;
    let row = Row {
        scenario: format!(
            "embedded {} {}{}",
            kind.label(),
            if signal == "KILL" {
                "kill -9"
            } else {
                "SIGTERM"
            },
            if extra.is_empty() {
                String::new()
            } else {
                format!(" {}", extra.join(" "))
            }
        ),
        acknowledged: acks.len(),
        lost: undecided.len(),
        persisted,
        limit: LIMIT,
        over_limit: granted.values().filter(|u| **u > per_user).count(),
        admits_again_after,
        all_decided_after,
    };
    Row::header();
    assert_exact(&row, remaining, pending, &undecided);
    assert_eq!(
        not_found.load(Ordering::Relaxed),
        0,
        "acknowledged requests read as unknown (404) after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite: scripts/faults.sh"]
async fn embedded_coupon_kill9() {
    crash_mid_storm(Kind::Coupon, "KILL", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite: scripts/faults.sh"]
async fn embedded_coupon_kill9_batch_of_one() {
    crash_mid_storm(Kind::Coupon, "KILL", &["--coupon-consumer-batch", "1"]).await;
}

/// The same with every answer waiting for the disk (fdatasync, SQLite
/// synchronous=FULL). A kill -9 cannot tell the two apart — only a power
/// cut could, which this machine cannot stage — but it proves the syncing
/// path keeps every promise the default keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite: scripts/faults.sh"]
async fn embedded_coupon_kill9_power_durability() {
    crash_mid_storm(Kind::Coupon, "KILL", &["--embedded-durability", "power"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite: scripts/faults.sh"]
async fn embedded_coupon_sigterm() {
    crash_mid_storm(Kind::Coupon, "TERM", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite: scripts/faults.sh"]
async fn embedded_timesale_kill9() {
    crash_mid_storm(Kind::TimeSale, "KILL", &[]).await;
}

/// Holds expiring while buyers confirm, the process killed mid-expiry
/// (`holds.rs`); the in-process counters are rebuilt on the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite: scripts/faults.sh"]
async fn embedded_timesale_holds_kill9() {
    let dir = TempDir::new();
    let port = harness::free_port();
    let log = dir.0.join("promo.log");
    let client = harness::client();
    crate::holds::holds_kill9(
        "embedded time-sale holds kill -9 mid-expiry",
        &client,
        || Proc::start(&promo(), &args(&dir, port, &[]), &[], port, &log),
    )
    .await;
}
