//! Admission coalescing: concurrent admissions of one pool share counters
//! steps and sends, and each caller gets its own answer — admitted only
//! with its event stored.

use std::{collections::HashSet, sync::Arc, time::Duration};

use prometheus::Histogram;
use promo_platform::{
    coalesce::{Admit, CoalesceError, Coalescer},
    ports::{Admission, Counters, LocalQueue, MemoryCounters, Queue, QueueError},
};

const TTL: Duration = Duration::from_secs(60);

fn sizes() -> Histogram {
    Histogram::with_opts(prometheus::HistogramOpts::new("sizes", "step sizes")).unwrap()
}

fn admit(pool: &str, user: &str, ticket: &str) -> Admit {
    Admit {
        pool: pool.into(),
        holder: user.into(),
        units: 1,
        limit: 1,
        ticket: ticket.into(),
        key: pool.into(),
        partition: 0,
        event: ticket.as_bytes().to_vec(),
    }
}

/// Everything in the topic so far (one group, no commit).
async fn stored(q: &LocalQueue, topic: &str) -> Vec<String> {
    let mut c = q.consumer(topic, "check").await.unwrap();
    let mut all = Vec::new();
    loop {
        let b = c.poll(1000, Duration::from_millis(100)).await.unwrap();
        if b.is_empty() {
            return all;
        }
        all.extend(b.into_iter().map(|m| String::from_utf8(m.payload).unwrap()));
    }
}

/// On one thread every caller queues before the lane runs: 400 admissions
/// (200 users twice, limit 1) over quota 100 take a handful of steps, admit
/// exactly 100 distinct users, and exactly the admitted requests' events
/// are stored.
#[tokio::test(flavor = "current_thread")]
async fn concurrent_admissions_share_steps_and_each_answer_follows_its_event() {
    let counters = Arc::new(MemoryCounters::new());
    counters.seed("p", 100, &[], "").await.unwrap();
    let q = LocalQueue::in_memory(10_000);
    let steps = sizes();
    let lanes = Arc::new(Coalescer::start(
        counters.clone(),
        q.producer("t").unwrap(),
        TTL,
        steps.clone(),
    ));
    let calls: Vec<_> = (0..400)
        .map(|i| {
            let lanes = lanes.clone();
            let ticket = format!("r{i}");
            let user = format!("u{}", i % 200);
            tokio::spawn(async move {
                let answer = lanes.admit(admit("p", &user, &ticket)).await;
                (user, ticket, answer)
            })
        })
        .collect();
    let (mut users, mut tickets) = (HashSet::new(), HashSet::new());
    for c in calls {
        let (user, ticket, answer) = c.await.unwrap();
        match answer.unwrap() {
            Admission::Admitted { .. } => {
                assert!(users.insert(user), "a user admitted twice");
                tickets.insert(ticket);
            }
            Admission::SoldOut | Admission::LimitReached => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(users.len(), 100);
    assert_eq!(counters.remaining("p").await.unwrap(), Some(0));
    assert_eq!(counters.in_flight("p").await.unwrap(), 100);
    let events: HashSet<String> = stored(&q, "t").await.into_iter().collect();
    assert_eq!(events, tickets, "exactly the admitted requests' events");
    assert_eq!(steps.get_sample_sum() as u64, 400);
    assert!(
        steps.get_sample_count() <= 8,
        "400 admissions took {} steps",
        steps.get_sample_count()
    );
}

/// Events the queue refuses (full) are not acknowledged, and their units
/// go back to the pool at once: nothing is counted that was not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsent_events_give_their_units_back() {
    let counters = Arc::new(MemoryCounters::new());
    counters.seed("p", 50, &[], "").await.unwrap();
    let q = LocalQueue::in_memory(5);
    let lanes = Arc::new(Coalescer::start(
        counters.clone(),
        q.producer("t").unwrap(),
        TTL,
        sizes(),
    ));
    let calls: Vec<_> = (0..40)
        .map(|i| {
            let lanes = lanes.clone();
            tokio::spawn(async move {
                let ticket = format!("r{i}");
                (
                    ticket.clone(),
                    lanes.admit(admit("p", &format!("u{i}"), &ticket)).await,
                )
            })
        })
        .collect();
    let mut acknowledged = HashSet::new();
    for c in calls {
        match c.await.unwrap() {
            (ticket, Ok(Admission::Admitted { .. })) => {
                acknowledged.insert(ticket);
            }
            (_, Err(CoalesceError::Queue(QueueError::Full(_)))) => {}
            (_, other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(acknowledged.len() <= 5);
    let events: HashSet<String> = stored(&q, "t").await.into_iter().collect();
    assert_eq!(events, acknowledged);
    let n = acknowledged.len() as i64;
    assert_eq!(counters.remaining("p").await.unwrap(), Some(50 - n));
    assert_eq!(counters.in_flight("p").await.unwrap(), n);
}

/// Different pools in one lane's batch are stepped separately; a missing
/// pool answers Missing and sends nothing.
#[tokio::test(flavor = "current_thread")]
async fn pools_are_stepped_apart_and_a_missing_one_sends_nothing() {
    let counters = Arc::new(MemoryCounters::new());
    counters.seed("a", 3, &[], "").await.unwrap();
    let q = LocalQueue::in_memory(100);
    let lanes = Arc::new(Coalescer::start(
        counters.clone(),
        q.producer("t").unwrap(),
        TTL,
        sizes(),
    ));
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let lanes = lanes.clone();
            let pool = if i % 2 == 0 { "a" } else { "gone" };
            tokio::spawn(async move {
                lanes
                    .admit(admit(pool, &format!("u{i}"), &format!("r{i}")))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut answers = Vec::new();
    for c in calls {
        answers.push(c.await.unwrap());
    }
    for (i, a) in answers.iter().enumerate() {
        if i % 2 == 1 {
            assert_eq!(*a, Admission::Missing);
        }
    }
    let admitted = answers
        .iter()
        .filter(|a| matches!(a, Admission::Admitted { .. }))
        .count();
    assert_eq!(admitted, 3);
    assert_eq!(stored(&q, "t").await.len(), 3);
}
