//! What the services and the operator must agree on, in one crate both
//! depend on (it depends only on the xxh3 hash): the services' names, how a
//! campaign's or sale's counters pools are named, which bucket a user
//! belongs to, and the defaults of the queued services' topics, consumer
//! groups and partitions. A deployment may
//! override topics and groups by flags (services) and the platform
//! configuration (operator) — these are the values both start from.

/// The counters pool of a campaign or sale: `<service>:<id>`. The services
/// (admission, rebuild, audit) and the operator (pre-warm, clean-up) name
/// pools through this alone.
pub fn pool_name(service: &str, id: &str) -> String {
    format!("{service}:{id}")
}

/// Most buckets a campaign or sale may have.
pub const MAX_BUCKETS: u32 = 256;

/// The bucket of `user_id` in a promotion with `buckets` buckets:
/// `xxh3_64(user_id as UTF-8, seed 0) mod buckets`. Every component — the
/// services' admission, their consumers, the operator, a client that wants
/// to know — computes it with exactly this function, so a user's counts
/// always live in one bucket.
pub fn bucket_of(user_id: &str, buckets: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(user_id.as_bytes()) % u64::from(buckets.max(1))) as u32
}

/// The key of bucket `bucket` of promotion `id` (its counters pool is
/// [`pool_name`] of it; V3 events of its users are keyed by it): with one
/// bucket the promotion's id itself, else `<id>#<bucket>`. Each bucket's
/// pool is one Redis Cluster hash slot (the pool name is the hash tag of
/// its keys), so different buckets spread over the cluster's masters.
pub fn bucket_key(id: &str, bucket: u32, buckets: u32) -> String {
    event_bucket_key(id, (buckets > 1).then_some(bucket))
}

/// [`bucket_key`] from what a V3 event carries: its bucket when the
/// promotion has several (`None` with one).
pub fn event_bucket_key(id: &str, bucket: Option<u32>) -> String {
    match bucket {
        Some(b) => format!("{id}#{b}"),
        None => id.to_string(),
    }
}

/// The topic partition that V3 events and fences of bucket `bucket` of
/// promotion `id` go to, on a topic of `partitions` partitions:
/// `(xxh3_64(id as UTF-8, seed 0) + bucket) mod partitions`. A promotion's
/// buckets take consecutive partitions from a start its id picks, so while
/// buckets ≤ partitions no two of its buckets share a partition (their
/// events are persisted in parallel), and different promotions start on
/// different partitions. One bucket's events all go to one partition, so
/// they stay in order behind its fences.
pub fn partition_of(id: &str, bucket: u32, partitions: u32) -> i32 {
    let n = u64::from(partitions.max(1));
    let start = xxhash_rust::xxh3::xxh3_64(id.as_bytes()) % n;
    ((start + u64::from(bucket) % n) % n) as i32
}

/// `total` units split over `buckets` buckets: the first `total mod
/// buckets` buckets get one more than the rest.
pub fn split(total: i64, buckets: u32) -> Vec<i64> {
    let n = i64::from(buckets.max(1));
    let (each, extra) = (total.div_euclid(n), total.rem_euclid(n));
    (0..n).map(|i| each + i64::from(i < extra)).collect()
}

/// The coupon service.
pub mod coupon {
    /// Its name: metric label, pool prefix, Kubernetes component.
    pub const SERVICE: &str = "coupon";
    /// Topic of V3 issue events.
    pub const TOPIC: &str = "promo.coupon.issue";
    /// Consumer group of the V3 consumer.
    pub const GROUP: &str = "coupon-consumer";
    /// Partitions of the topic when it is created.
    pub const PARTITIONS: i32 = 8;
}

/// The time-sale service.
pub mod timesale {
    /// Its name: metric label, pool prefix, Kubernetes component.
    pub const SERVICE: &str = "timesale";
    /// Topic of V3 order events.
    pub const TOPIC: &str = "promo.timesale.order";
    /// Consumer group of the V3 consumer.
    pub const GROUP: &str = "timesale-consumer";
    /// Partitions of the topic when it is created.
    pub const PARTITIONS: i32 = 8;
}

/// The point service.
pub mod point {
    /// Its name: metric label, Kubernetes component.
    pub const SERVICE: &str = "point";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from an independent implementation (Python's `xxhash`
    /// package, `xxh3_64_intdigest(s.encode(), seed=0)`), so the function is
    /// the published xxh3 and not merely self-consistent.
    #[test]
    fn buckets_follow_xxh3_64_seed_0() {
        assert_eq!(xxhash_rust::xxh3::xxh3_64(b""), 0x2d06800538d394c2);
        assert_eq!(xxhash_rust::xxh3::xxh3_64(b"user-1"), 0x7c7615c11438e5c9);
        assert_eq!(bucket_of("user-1", 16), 9);
        assert_eq!(bucket_of("u-42@shop.example", 16), 8);
        assert_eq!(bucket_of("u-42@shop.example", 256), 56);
        assert_eq!(bucket_of("ユーザー", 16), 15);
        assert_eq!(bucket_of("anyone", 1), 0);
    }

    #[test]
    fn one_bucket_is_the_promotion_itself() {
        assert_eq!(pool_name("coupon", &bucket_key("c", 0, 1)), "coupon:c");
        assert_eq!(pool_name("coupon", &bucket_key("c", 3, 16)), "coupon:c#3");
    }

    #[test]
    fn a_split_adds_up_and_differs_by_at_most_one() {
        for (total, buckets) in [(1000, 16), (5, 8), (0, 4), (7, 1), (255, 256)] {
            let parts = split(total, buckets);
            assert_eq!(parts.len(), buckets as usize);
            assert_eq!(parts.iter().sum::<i64>(), total);
            let (lo, hi) = (parts.iter().min().unwrap(), parts.iter().max().unwrap());
            assert!(hi - lo <= 1, "{parts:?}");
        }
    }

    #[test]
    fn a_promotions_buckets_take_distinct_partitions() {
        // xxh3_64("c-1") mod 8 picks the start; the buckets follow it round.
        let start = (xxhash_rust::xxh3::xxh3_64(b"c-1") % 8) as i32;
        assert_eq!(partition_of("c-1", 0, 8), start);
        let mut seen: Vec<i32> = (0..8).map(|b| partition_of("c-1", b, 8)).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..8).collect::<Vec<_>>());
        assert_eq!(
            partition_of("c-1", 8, 8),
            start,
            "bucket 8 wraps to bucket 0's"
        );
        assert_eq!(partition_of("anything", 5, 1), 0);
        assert_eq!(
            partition_of("anything", u32::MAX, 0),
            0,
            "no partitions reads as one"
        );
    }

    #[test]
    fn pools_are_named_service_colon_id() {
        assert_eq!(
            super::pool_name(super::coupon::SERVICE, "c-1"),
            "coupon:c-1"
        );
    }
}
