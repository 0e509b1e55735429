//! Consumer scaling, KEDA-style, as pure functions.
//!
//! Each queued promotion asks for
//! `clamp(ceil(lag / lagPerReplica), minReplicas, min(maxReplicas, partitions, buckets))`
//! replicas of the consumer Deployment its events go through — its events
//! are keyed by bucket, so they reach at most `buckets` partitions and more
//! consumers than that would sit idle; the Deployment runs the sum over the
//! promotions sharing it, never more than the topic's partitions (a
//! consumer without a partition does nothing).
//!
//! A promotion's lag is its `pending` — admitted by the counters and not yet
//! persisted, i.e. its events still on the topic. The consumer group's lag
//! read from Kafka (committed offsets vs high watermarks) covers every
//! promotion together plus anything left by deleted ones; it keeps at least
//! one replica running while it is not zero, so no backlog is stranded.

use promotion_crd::{ConsumerScaling, Strategy};

/// What one promotion asks of its consumer Deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    pub lag: i64,
    pub bounds: ConsumerScaling,
    /// Its buckets: the most partitions its events reach.
    pub buckets: u32,
}

/// Replicas one promotion asks for.
pub fn replicas_for(d: &Demand, partitions: i32) -> i32 {
    let buckets = i32::try_from(d.buckets.max(1)).unwrap_or(i32::MAX);
    let upper = d.bounds.max_replicas.min(partitions).min(buckets).max(0);
    let lower = d.bounds.min_replicas.min(upper).max(0);
    let per = d.bounds.lag_per_replica.max(1);
    let lag = d.lag.max(0);
    let wanted = lag / per + i64::from(lag % per != 0);
    let wanted = i32::try_from(wanted).unwrap_or(i32::MAX);
    wanted.clamp(lower, upper)
}

/// Replicas of a consumer Deployment shared by `demands`, given the group's
/// lag as Kafka reports it (`None` when it could not be read).
pub fn deployment_replicas(demands: &[Demand], group_lag: Option<i64>, partitions: i32) -> i32 {
    let partitions = partitions.max(1);
    let sum: i64 = demands
        .iter()
        .map(|d| i64::from(replicas_for(d, partitions)))
        .sum();
    let sum = i32::try_from(sum.min(i64::from(partitions))).unwrap_or(partitions);
    if sum == 0 && group_lag.unwrap_or(0) > 0 {
        1
    } else {
        sum
    }
}

/// Only queued promotions put events on a topic.
pub fn uses_consumer(strategy: Strategy) -> bool {
    strategy == Strategy::Queued
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(lag: i64, min: i32, max: i32, per: i64) -> Demand {
        Demand {
            lag,
            buckets: 256,
            bounds: ConsumerScaling {
                min_replicas: min,
                max_replicas: max,
                lag_per_replica: per,
            },
        }
    }

    #[test]
    fn one_promotion_follows_the_formula() {
        // (lag, min, max, lagPerReplica, partitions) -> replicas
        let table = [
            ((0, 1, 8, 1000, 8), 1),      // idle: the minimum
            ((0, 0, 8, 1000, 8), 0),      // scale to zero allowed
            ((1, 0, 8, 1000, 8), 1),      // any lag needs a consumer
            ((1000, 1, 8, 1000, 8), 1),   // exactly one replica's worth
            ((1001, 1, 8, 1000, 8), 2),   // ceil
            ((7500, 1, 8, 1000, 8), 8),   // at max
            ((99_000, 1, 8, 1000, 8), 8), // clamped to max
            ((99_000, 1, 8, 1000, 4), 4), // clamped to partitions
            ((0, 6, 8, 1000, 4), 4),      // min above partitions: partitions win
            ((-5, 1, 8, 1000, 8), 1),     // nonsense lag counts as none
            ((i64::MAX, 1, 8, 1, 8), 8),  // no overflow
        ];
        for ((lag, min, max, per, parts), want) in table {
            assert_eq!(
                replicas_for(&d(lag, min, max, per), parts),
                want,
                "lag {lag} min {min} max {max} per {per} partitions {parts}"
            );
        }
    }

    #[test]
    fn a_promotion_asks_for_no_more_consumers_than_its_buckets() {
        let one = Demand {
            buckets: 1,
            ..d(99_000, 1, 8, 1000)
        };
        assert_eq!(replicas_for(&one, 8), 1, "one bucket: one partition");
        let four = Demand {
            buckets: 4,
            ..one.clone()
        };
        assert_eq!(replicas_for(&four, 8), 4);
        let sixteen = Demand { buckets: 16, ..one };
        assert_eq!(replicas_for(&sixteen, 8), 8, "then partitions bound it");
    }

    #[test]
    fn shared_deployments_sum_and_stop_at_partitions() {
        let a = d(2500, 1, 8, 1000); // 3
        let b = d(0, 1, 8, 1000); // 1
        assert_eq!(
            deployment_replicas(&[a.clone(), b.clone()], Some(2500), 8),
            4
        );
        assert_eq!(deployment_replicas(&[a.clone(), a.clone(), a], None, 8), 8);
        assert_eq!(deployment_replicas(&[b], None, 8), 1);
        assert_eq!(deployment_replicas(&[], None, 8), 0);
    }

    #[test]
    fn a_stranded_backlog_keeps_one_consumer() {
        assert_eq!(deployment_replicas(&[], Some(10), 8), 1);
        assert_eq!(deployment_replicas(&[d(0, 0, 8, 1000)], Some(3), 8), 1);
        assert_eq!(deployment_replicas(&[d(0, 0, 8, 1000)], Some(0), 8), 0);
    }
}
