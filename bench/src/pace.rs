//! The consumer's pace on V3 runs: stored and pending sampled during and
//! after the load, turned into rows/s while backlogged and alone.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::scenario::*;

/// The V3 consumer's pace, from the campaign's or sale's figures sampled
/// every 250 ms from the start of the load until nothing is pending.
#[derive(Debug, Serialize)]
pub(crate) struct Persistence {
    /// Rows stored per second while at least `BACKLOG` admissions waited —
    /// the consumer was never idle then, so this is its capacity. `None`
    /// when it never fell that far behind (it kept up with admission).
    pub(crate) backlogged_per_sec: Option<f64>,
    pub(crate) backlogged_seconds: f64,
    /// Rows stored per second from the start of the load until drained.
    pub(crate) overall_per_sec: f64,
    pub(crate) max_pending: i64,
    /// From the end of the load until nothing was pending.
    pub(crate) drain_seconds: f64,
    /// Rows stored per second after the load ended while at least `BACKLOG`
    /// still waited: the consumer's pace with the cores to itself. `None`
    /// unless at least `DRAIN_BACKLOG` waited when the load ended.
    pub(crate) drain_per_sec: Option<f64>,
}

/// Pending admissions from which the consumer counts as busy.
pub(crate) const BACKLOG: i64 = 1000;

/// Pending admissions at the end of the load from which its drain is timed.
pub(crate) const DRAIN_BACKLOG: i64 = 10_000;

/// Samples (seconds since start, stored, pending) every 250 ms until it
/// sees nothing pending after `load_done` is set.
pub(crate) async fn sample_figures(
    c: Arc<Client>,
    plan: Arc<Plan>,
    started: Instant,
    load_done: Arc<AtomicBool>,
) -> Vec<(f64, i64, i64)> {
    let (path, field) = plan.figures();
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        let done = load_done.load(Ordering::Relaxed);
        if let Ok((200, v)) = c.send(reqwest::Method::GET, &path, None, None).await {
            let (stored, pending) = (v[field].as_i64(), v["pending"].as_i64());
            if let (Some(stored), Some(pending)) = (stored, pending) {
                samples.push((started.elapsed().as_secs_f64(), stored, pending));
                if done && pending == 0 {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    samples
}

pub(crate) fn persistence(samples: &[(f64, i64, i64)], load_seconds: f64) -> Option<Persistence> {
    let last = samples.last()?;
    let pace = |busy: Vec<&(f64, i64, i64)>| match (busy.first(), busy.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => (Some((b.1 - a.1) as f64 / (b.0 - a.0)), b.0 - a.0),
        _ => (None, 0.0),
    };
    let (backlogged_per_sec, backlogged_seconds) =
        pace(samples.iter().filter(|s| s.2 >= BACKLOG).collect());
    let after: Vec<_> = samples.iter().filter(|s| s.0 >= load_seconds).collect();
    let (drain_per_sec, _) = match after.first() {
        // A backlog of a few batches drains in a sample or two: too short to time.
        Some(first) if first.2 >= DRAIN_BACKLOG => {
            pace(after.into_iter().filter(|s| s.2 >= BACKLOG).collect())
        }
        _ => (None, 0.0),
    };
    Some(Persistence {
        backlogged_per_sec,
        backlogged_seconds,
        overall_per_sec: last.1 as f64 / last.0.max(0.001),
        max_pending: samples.iter().map(|s| s.2).max().unwrap_or(0),
        drain_seconds: (last.0 - load_seconds).max(0.0),
        drain_per_sec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(crate) fn consumer_pace_while_backlogged_and_alone() {
        // (seconds, stored, pending): the load ends at 2.0 s.
        let samples = [
            (0.5, 500, 200),
            (1.0, 1_000, 2_000),
            (2.0, 3_000, 16_000),
            (2.5, 5_000, 14_000),
            (3.0, 8_000, 1_000),
            (3.25, 9_000, 0),
        ];
        let p = persistence(&samples, 2.0).unwrap();
        assert_eq!(p.backlogged_per_sec, Some(7_000.0 / 2.0));
        assert_eq!(p.backlogged_seconds, 2.0);
        assert_eq!(p.drain_per_sec, Some(5_000.0 / 1.0));
        assert_eq!(p.max_pending, 16_000);
        assert_eq!(p.drain_seconds, 1.25);
        assert_eq!(p.overall_per_sec, 9_000.0 / 3.25);
    }

    #[test]
    pub(crate) fn a_short_drain_is_not_timed() {
        let samples = [(1.0, 1_000, 5_000), (1.25, 4_000, 2_000), (1.5, 6_000, 0)];
        let p = persistence(&samples, 1.0).unwrap();
        assert_eq!(p.drain_per_sec, None, "5,000 pending is a batch or two");
        assert!(p.backlogged_per_sec.is_some());
    }

    #[test]
    pub(crate) fn no_pace_without_a_backlog() {
        let p = persistence(&[(0.5, 10, 5), (1.0, 20, 0)], 1.0).unwrap();
        assert_eq!(p.backlogged_per_sec, None);
        assert_eq!(p.drain_per_sec, None);
        assert!(persistence(&[], 1.0).is_none());
    }
}
