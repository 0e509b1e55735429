//! Conformance suite of the counters + locks port, run against Redis, a
//! Redis Cluster and the in-process implementation.

use std::{collections::HashSet, sync::Arc, time::Duration};

use promo_platform::{
    buckets::{self, Layout},
    ports::{Admission, Arrival, Ask, Counters, MemoryCounters, Outgoing, Released},
    testing,
};

async fn suite(c: Arc<dyn Counters>) {
    admission_rules(&*c).await;
    batched_admissions(&*c).await;
    concurrent_admissions_never_oversell(c.clone()).await;
    seed_only_once_and_adjust(&*c).await;
    releases_once(&*c).await;
    tickets(&*c).await;
    in_flight(&*c).await;
    locks(&*c).await;
    transfers(&*c).await;
    buckets_sell_out_exactly(c.clone(), 16, |u| u).await;
    // Every arrival in 2 of the 16 buckets: the other 14 give their units.
    buckets_sell_out_exactly(c.clone(), 16, |u| u % 2).await;
    c.ping().await.expect("ping");
}

/// A transfer's steps: out of one pool (in flight there), into another
/// (once), then forgotten — or cancelled by the audit first, refused on
/// arrival and given back. Never both.
async fn transfers(c: &dyn Counters) {
    let ttl = Duration::from_secs(60);
    c.seed("from", 10, &[], "g1").await.unwrap();
    c.seed("to", 0, &[], "g1").await.unwrap();
    // At least what is asked, up to half of what the donor has.
    assert_eq!(
        c.take_out("from", "x1", 2).await.unwrap(),
        Outgoing {
            units: 5,
            generation: "g1".into(),
            moving: 5,
        }
    );
    assert_eq!(c.remaining("from").await.unwrap(), Some(5));
    assert_eq!(c.in_flight("from").await.unwrap(), 5, "on its way");
    assert_eq!(
        c.take_in("to", "x1", 5, "g1", ttl).await.unwrap(),
        Arrival::Received
    );
    assert_eq!(
        c.take_in("to", "x1", 5, "g1", ttl).await.unwrap(),
        Arrival::Received,
        "a repeated arrival adds nothing"
    );
    assert_eq!(c.remaining("to").await.unwrap(), Some(5));
    assert!(
        c.cancel_in("to", "x1", ttl).await.unwrap(),
        "arrived: the audit keeps it"
    );
    c.clear_tickets("from", &["x1"]).await.unwrap();
    assert_eq!(c.in_flight("from").await.unwrap(), 0);

    // Cancelled before it arrived: refused on arrival, given back.
    assert_eq!(c.take_out("from", "x2", 1).await.unwrap().units, 3);
    assert!(!c.cancel_in("to", "x2", ttl).await.unwrap());
    assert_eq!(
        c.take_in("to", "x2", 3, "g1", ttl).await.unwrap(),
        Arrival::Cancelled
    );
    assert!(c.release_ticket("from", "x2").await.unwrap());
    assert!(
        !c.release_ticket("from", "x2").await.unwrap(),
        "given back once"
    );
    assert_eq!(c.remaining("from").await.unwrap(), Some(5));
    assert_eq!(c.remaining("to").await.unwrap(), Some(5));

    // A pool seeded again since (another generation), or missing, refuses.
    let out = c.take_out("from", "x3", 1).await.unwrap();
    assert_eq!(
        c.take_in("to", "x3", out.units, "g0", ttl).await.unwrap(),
        Arrival::Refused
    );
    assert_eq!(
        c.take_in("gone", "x3", out.units, "g1", ttl).await.unwrap(),
        Arrival::Refused
    );
    assert!(c.release_ticket("from", "x3").await.unwrap());
    assert_eq!(c.remaining("from").await.unwrap(), Some(5));

    // An emptied donor says what of its own is still on its way.
    c.seed("dry", 2, &[], "g1").await.unwrap();
    assert_eq!(c.take_out("dry", "d1", 2).await.unwrap().units, 2);
    let out = c.take_out("dry", "d2", 1).await.unwrap();
    assert_eq!((out.units, out.moving), (0, 2));
    c.clear_tickets("dry", &["d1"]).await.unwrap();
    assert_eq!(
        c.take_out("dry", "d3", 1).await.unwrap().moving,
        0,
        "settled"
    );

    // An empty or missing donor gives nothing.
    c.seed("empty", 0, &[], "").await.unwrap();
    assert_eq!(c.take_out("empty", "x4", 1).await.unwrap().units, 0);
    assert_eq!(c.take_out("nowhere", "x5", 1).await.unwrap().units, 0);
}

/// 400 holders × 2 concurrent admissions (1–3 units, limit 3) against a
/// quota of 300 over `buckets` buckets, with `home` choosing which holders
/// arrive: exactly the quota is taken, nobody beyond their limit, and every
/// transfer settled — also when all arrivals fall in a few buckets.
async fn buckets_sell_out_exactly(c: Arc<dyn Counters>, buckets: u32, home: fn(u32) -> u32) {
    let id = format!("sell-out-{}", uuid::Uuid::new_v4().simple());
    let layout = Layout::new("test", &id, buckets);
    for (pool, share) in layout
        .pools()
        .iter()
        .zip(promo_contracts::split(300, buckets))
    {
        c.seed(pool, share, &[], "").await.unwrap();
    }
    // Holders named so that their bucket is `home(i)`.
    let mut holders = Vec::new();
    let mut n = 0u32;
    while holders.len() < 400 {
        let name = format!("h{n}");
        if layout.home(&name) == home(holders.len() as u32) % buckets {
            holders.push(name);
        }
        n += 1;
    }
    let mut tasks = Vec::new();
    for (i, h) in holders.iter().enumerate() {
        for copy in 0..2 {
            let (c, h, id) = (c.clone(), h.clone(), id.clone());
            let units = 1 + ((i + copy) % 3) as i64;
            tasks.push(tokio::spawn(async move {
                let layout = Layout::new("test", &id, buckets);
                let (answer, _) = buckets::take(
                    &*c,
                    &layout,
                    &h,
                    units,
                    3,
                    None,
                    &buckets::Refills::default(),
                )
                .await
                .unwrap();
                (h, units, answer)
            }));
        }
    }
    let mut taken = 0;
    let mut per_holder = std::collections::HashMap::<String, i64>::new();
    let mut sold_out_with_units_left = HashSet::new();
    for t in tasks {
        let (h, units, answer) = t.await.unwrap();
        match answer {
            Admission::Admitted { .. } => {
                taken += units;
                *per_holder.entry(h).or_default() += units;
            }
            Admission::SoldOut => {
                sold_out_with_units_left.insert(units);
            }
            Admission::LimitReached => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut left = 0;
    let mut in_flight = 0;
    let mut per_bucket = Vec::new();
    for pool in layout.pools() {
        per_bucket.push(c.remaining(&pool).await.unwrap().unwrap());
        left += c.remaining(&pool).await.unwrap().unwrap();
        in_flight += c.in_flight(&pool).await.unwrap();
    }
    assert_eq!(in_flight, 0, "every transfer settled");
    assert_eq!(taken + left, 300, "no unit made or lost");
    assert!(
        per_holder.values().all(|u| *u <= 3),
        "per-holder limits hold"
    );
    // Demand (about 1,600 units) is far above the quota: whatever is left
    // is less than the smallest request refused as sold out.
    let smallest_refused = sold_out_with_units_left
        .iter()
        .min()
        .copied()
        .unwrap_or(i64::MAX);
    assert!(
        left < smallest_refused,
        "{buckets} buckets: {left} left ({per_bucket:?}), yet {smallest_refused} unit(s) refused; taken {taken}"
    );
    for pool in layout.pools() {
        c.remove(&pool).await.unwrap();
    }
}

async fn admission_rules(c: &dyn Counters) {
    let pool = "rules";
    assert_eq!(
        c.admit(pool, "u1", 1, 1, None).await.unwrap(),
        Admission::Missing
    );
    assert_eq!(c.remaining(pool).await.unwrap(), None);
    assert!(c.seed(pool, 3, &[], "").await.unwrap());
    assert_eq!(
        c.admit(pool, "u1", 1, 2, None).await.unwrap(),
        Admission::Admitted { remaining: 2 }
    );
    assert_eq!(
        c.admit(pool, "u1", 1, 2, None).await.unwrap(),
        Admission::Admitted { remaining: 1 }
    );
    // At the limit: refused even though units remain.
    assert_eq!(
        c.admit(pool, "u1", 1, 2, None).await.unwrap(),
        Admission::LimitReached
    );
    // Asking more than remains takes nothing (no partial fill).
    assert_eq!(
        c.admit(pool, "u2", 2, 5, None).await.unwrap(),
        Admission::SoldOut
    );
    assert_eq!(c.remaining(pool).await.unwrap(), Some(1));
    // Release returns units to the pool and frees the holder's limit.
    c.release(pool, "u1", 1).await.unwrap();
    assert_eq!(c.remaining(pool).await.unwrap(), Some(2));
    assert_eq!(
        c.admit(pool, "u1", 1, 2, None).await.unwrap(),
        Admission::Admitted { remaining: 1 }
    );
    c.remove(pool).await.unwrap();
    assert_eq!(
        c.admit(pool, "u3", 1, 1, None).await.unwrap(),
        Admission::Missing
    );
    // Releasing into a missing pool does not resurrect it.
    c.release(pool, "u1", 1).await.unwrap();
    assert_eq!(c.remaining(pool).await.unwrap(), None);
}

/// `admit_many` answers each ask exactly as `admit` one after another
/// would (same answers, same pool afterwards), marks the admitted tickets
/// pending and in flight so they can be given back, and answers Missing to
/// all for a missing pool.
async fn batched_admissions(c: &dyn Counters) {
    let ttl = Duration::from_secs(60);
    let missing = [Ask {
        holder: "u",
        units: 1,
        limit: 1,
        ticket: "b-missing",
    }];
    assert_eq!(
        c.admit_many("batch-none", &missing, ttl).await.unwrap(),
        vec![Admission::Missing]
    );
    assert!(!c.ticket_pending("b-missing").await.unwrap());
    assert!(c
        .admit_many("batch-none", &[], ttl)
        .await
        .unwrap()
        .is_empty());

    // A fixed mix: 23 holders, 1–3 units, limits 1–4, a ticket repeated
    // now and then (in one batch and across batches), until sold out.
    let holders: Vec<String> = (0..23).map(|i| format!("h{i}")).collect();
    let tickets: Vec<String> = (0..60)
        .map(|i| format!("t{}", if i % 11 == 10 { i - 3 } else { i }))
        .collect();
    let asks: Vec<(usize, i64, i64, usize)> = (0..60)
        .map(|i| (i * 7 % 23, (i % 3 + 1) as i64, (i % 4 + 1) as i64, i))
        .collect();
    for pool in ["batch-one", "batch-many"] {
        c.seed(pool, 40, &[("h0".to_string(), 1)], "")
            .await
            .unwrap();
    }
    let mut one_by_one = Vec::new();
    for &(h, units, limit, t) in &asks {
        let ticket = format!("one-{}", tickets[t]);
        one_by_one.push(
            c.admit("batch-one", &holders[h], units, limit, Some((&ticket, ttl)))
                .await
                .unwrap(),
        );
    }
    let batch_tickets: Vec<String> = tickets.iter().map(|t| format!("many-{t}")).collect();
    let mut batched = Vec::new();
    let mut rest = &asks[..];
    for size in [1, 7, 2, 30, 20] {
        let (now, later) = rest.split_at(size.min(rest.len()));
        let group: Vec<Ask<'_>> = now
            .iter()
            .map(|&(h, units, limit, t)| Ask {
                holder: &holders[h],
                units,
                limit,
                ticket: &batch_tickets[t],
            })
            .collect();
        batched.extend(c.admit_many("batch-many", &group, ttl).await.unwrap());
        rest = later;
    }
    assert!(rest.is_empty());
    assert_eq!(batched, one_by_one);
    assert!(batched.contains(&Admission::InFlight));
    assert!(batched.contains(&Admission::LimitReached));
    assert!(batched.contains(&Admission::SoldOut));
    for pool in ["batch-one", "batch-many"] {
        assert_eq!(c.remaining(pool).await.unwrap(), Some(0), "{pool}");
    }
    assert_eq!(
        c.in_flight("batch-many").await.unwrap(),
        c.in_flight("batch-one").await.unwrap()
    );
    // Every ticket a batch admitted is marked pending; a ticket only ever
    // refused is not.
    let admitted: std::collections::BTreeSet<&str> = asks
        .iter()
        .zip(&batched)
        .filter(|(_, a)| matches!(a, Admission::Admitted { .. }))
        .map(|(&(.., t), _)| batch_tickets[t].as_str())
        .collect();
    for &(.., t) in &asks {
        let ticket = batch_tickets[t].as_str();
        assert_eq!(
            c.ticket_pending(ticket).await.unwrap(),
            admitted.contains(ticket),
            "{ticket}"
        );
    }
    // An admitted ticket is pending and can be given back once, to its holder.
    let (i, _) = batched
        .iter()
        .enumerate()
        .find(|(_, a)| matches!(a, Admission::Admitted { .. }))
        .unwrap();
    let (h, units, limit, t) = asks[i];
    assert!(c.ticket_pending(&batch_tickets[t]).await.unwrap());
    assert!(c
        .release_ticket("batch-many", &batch_tickets[t])
        .await
        .unwrap());
    assert!(!c
        .release_ticket("batch-many", &batch_tickets[t])
        .await
        .unwrap());
    assert_eq!(c.remaining("batch-many").await.unwrap(), Some(units));
    let again = [Ask {
        holder: &holders[h],
        units,
        limit,
        ticket: "many-again",
    }];
    assert_eq!(
        c.admit_many("batch-many", &again, ttl).await.unwrap(),
        vec![Admission::Admitted { remaining: 0 }]
    );
    for pool in ["batch-one", "batch-many"] {
        c.remove(pool).await.unwrap();
    }
}

async fn concurrent_admissions_never_oversell(c: Arc<dyn Counters>) {
    let pool = "race";
    c.seed(pool, 50, &[], "").await.unwrap();
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let c = c.clone();
            // 200 users, each trying twice with a limit of one.
            tokio::spawn(async move { c.admit(pool, &format!("u{}", i % 200), 1, 1, None).await })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        if let Admission::Admitted { .. } = t.await.unwrap().unwrap() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 50);
    assert_eq!(c.remaining(pool).await.unwrap(), Some(0));
}

/// `release_once` gives one key's units back once, whoever asks and however
/// often; other keys still release; a missing pool takes nothing.
async fn releases_once(c: &dyn Counters) {
    let pool = "restock";
    let ttl = Duration::from_secs(60);
    assert!(c.seed(pool, 0, &[("u".to_string(), 3)], "").await.unwrap());
    let answers = [
        c.release_once(pool, "u", 2, "order-1", ttl).await.unwrap(),
        c.release_once(pool, "u", 2, "order-1", ttl).await.unwrap(),
        c.release_once(pool, "u", 2, "order-1", ttl).await.unwrap(),
    ];
    assert_eq!(answers, [Released::Now, Released::Before, Released::Before]);
    assert_eq!(c.remaining(pool).await.unwrap(), Some(2));
    // The holder's count went down by those 2 only: 1 + 2 fits a limit of 3.
    assert_eq!(
        c.admit(pool, "u", 2, 3, None).await.unwrap(),
        Admission::Admitted { remaining: 0 }
    );
    let once = |key| c.release_once(pool, "u", 1, key, ttl);
    assert_eq!(once("order-2").await.unwrap(), Released::Now);
    assert_eq!(once("order-2").await.unwrap(), Released::Before);
    assert_eq!(c.remaining(pool).await.unwrap(), Some(1));
    // A missing pool takes nothing and remembers nothing: once it exists,
    // the same key gives its units.
    let missing = c.release_once("restock-later", "u", 1, "order-3", ttl);
    assert_eq!(missing.await.unwrap(), Released::Missing);
    assert_eq!(c.remaining("restock-later").await.unwrap(), None);
    assert!(c.seed("restock-later", 0, &[], "").await.unwrap());
    let later = c.release_once("restock-later", "u", 1, "order-3", ttl);
    assert_eq!(later.await.unwrap(), Released::Now);
    assert_eq!(c.remaining("restock-later").await.unwrap(), Some(1));
}

async fn seed_only_once_and_adjust(c: &dyn Counters) {
    let pool = "seeded";
    let holders = vec![("a".to_string(), 2), ("b".to_string(), 1)];
    assert!(c.seed(pool, 10, &holders, "").await.unwrap());
    // A second seed never resets a running pool.
    assert!(!c.seed(pool, 99, &[], "").await.unwrap());
    assert_eq!(c.remaining(pool).await.unwrap(), Some(10));
    // Seeded holder counts are enforced.
    assert_eq!(
        c.admit(pool, "a", 1, 2, None).await.unwrap(),
        Admission::LimitReached
    );
    assert_eq!(
        c.admit(pool, "b", 1, 2, None).await.unwrap(),
        Admission::Admitted { remaining: 9 }
    );
    assert_eq!(c.adjust(pool, 5).await.unwrap(), Some(14));
    assert_eq!(c.adjust("nope", 5).await.unwrap(), None);
    // Many holders go through the chunked staging path.
    let many: Vec<(String, i64)> = (0..2500).map(|i| (format!("h{i}"), 1)).collect();
    assert!(c.seed("big", 1, &many, "").await.unwrap());
    assert_eq!(
        c.admit("big", "h2499", 1, 1, None).await.unwrap(),
        Admission::LimitReached
    );
    assert_eq!(
        c.admit("big", "new", 1, 1, None).await.unwrap(),
        Admission::Admitted { remaining: 0 }
    );
}

async fn tickets(c: &dyn Counters) {
    c.seed("tix", 5, &[], "").await.unwrap();
    assert!(!c.ticket_pending("t1").await.unwrap());
    c.admit("tix", "u", 1, 1, Some(("t1", Duration::from_millis(300))))
        .await
        .unwrap();
    assert!(c.ticket_pending("t1").await.unwrap());
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(!c.ticket_pending("t1").await.unwrap(), "ticket expires");
    // A refused admission marks nothing.
    assert_eq!(
        c.admit(
            "tix",
            "u",
            1,
            1,
            Some(("t1-refused", Duration::from_secs(60)))
        )
        .await
        .unwrap(),
        Admission::LimitReached
    );
    assert!(!c.ticket_pending("t1-refused").await.unwrap());

    // Decided requests are unmarked at once; others stay pending.
    let long = Duration::from_secs(60);
    for t in ["t2", "t3", "t4"] {
        c.admit("tix", t, 1, 1, Some((t, long))).await.unwrap();
    }
    c.clear_tickets("tix", &["t2", "t4", "never-marked"])
        .await
        .unwrap();
    assert!(!c.ticket_pending("t2").await.unwrap());
    assert!(c.ticket_pending("t3").await.unwrap());
    assert!(!c.ticket_pending("t4").await.unwrap());
    c.clear_tickets("tix", &[]).await.unwrap();
    // A ticket named twice in one clear leaves in flight once.
    let flying = c.in_flight("tix").await.unwrap();
    c.clear_tickets("tix", &["t3", "t3"]).await.unwrap();
    assert!(!c.ticket_pending("t3").await.unwrap());
    assert_eq!(c.in_flight("tix").await.unwrap(), flying - 1);

    // Marked pending without an admission (a replayed queue's requests).
    c.mark_pending(&["r1", "r2"], long).await.unwrap();
    assert!(c.ticket_pending("r1").await.unwrap());
    assert!(c.ticket_pending("r2").await.unwrap());
    assert_eq!(c.remaining("tix").await.unwrap(), Some(1), "nothing taken");
    c.clear_tickets("tix", &["r1"]).await.unwrap();
    assert!(!c.ticket_pending("r1").await.unwrap());

    // A ticket in flight is admitted once: another step with it (a retry
    // of the same request) takes nothing until it is given back.
    c.seed("again", 5, &[], "").await.unwrap();
    let a1 = Some(("a1", long));
    assert_eq!(
        c.admit("again", "u", 1, 3, a1).await.unwrap(),
        Admission::Admitted { remaining: 4 }
    );
    assert_eq!(
        c.admit("again", "u", 1, 3, a1).await.unwrap(),
        Admission::InFlight
    );
    assert_eq!(
        c.remaining("again").await.unwrap(),
        Some(4),
        "nothing taken twice"
    );
    assert!(c.release_ticket("again", "a1").await.unwrap());
    assert!(
        !c.ticket_pending("a1").await.unwrap(),
        "a given-back ticket is not pending"
    );
    assert_eq!(
        c.admit("again", "u", 1, 3, a1).await.unwrap(),
        Admission::Admitted { remaining: 4 }
    );
    assert!(c.ticket_pending("a1").await.unwrap());
}

/// Tickets in flight: listed by age, given back at most once, forgotten
/// without giving back when decided, and gone with their pool.
async fn in_flight(c: &dyn Counters) {
    let long = Duration::from_secs(60);
    c.seed("fly", 10, &[], "").await.unwrap();
    let admitted = |left| Admission::Admitted { remaining: left };
    assert_eq!(
        c.admit("fly", "a", 2, 5, Some(("f1", long))).await.unwrap(),
        admitted(8)
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        c.admit("fly", "b", 3, 5, Some(("f2", long))).await.unwrap(),
        admitted(5)
    );
    assert_eq!(c.admit("fly", "b", 1, 5, None).await.unwrap(), admitted(4));
    assert_eq!(
        c.in_flight("fly").await.unwrap(),
        5,
        "units of tickets only"
    );

    let old = |age: u64, limit| c.in_flight_older_than("fly", Duration::from_millis(age), limit);
    assert!(old(5_000, 10).await.unwrap().is_empty(), "nothing that old");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(old(200, 10).await.unwrap(), ["f1", "f2"], "oldest first");
    assert_eq!(old(200, 1).await.unwrap(), ["f1"]);

    // Given back once: units to the pool, the holder's count down, ticket gone.
    assert!(c.release_ticket("fly", "f1").await.unwrap());
    assert!(!c.release_ticket("fly", "f1").await.unwrap(), "only once");
    assert_eq!(c.remaining("fly").await.unwrap(), Some(6));
    assert_eq!(c.in_flight("fly").await.unwrap(), 3);
    assert!(!c.ticket_pending("f1").await.unwrap());
    assert_eq!(
        c.admit("fly", "a", 5, 5, None).await.unwrap(),
        admitted(1),
        "a holds nothing now"
    );

    // Decided: forgotten, not given back (b keeps its 4 units).
    c.clear_tickets("fly", &["f2"]).await.unwrap();
    assert_eq!(c.in_flight("fly").await.unwrap(), 0);
    assert!(!c.release_ticket("fly", "f2").await.unwrap());
    assert_eq!(c.remaining("fly").await.unwrap(), Some(1));
    assert_eq!(
        c.admit("fly", "b", 2, 5, None).await.unwrap(),
        Admission::LimitReached
    );
    assert!(old(0, 10).await.unwrap().is_empty());

    // A removed pool takes its tickets with it; a reseeded one starts clean.
    c.admit("fly", "c", 1, 5, Some(("f3", long))).await.unwrap();
    c.remove("fly").await.unwrap();
    assert_eq!(c.in_flight("fly").await.unwrap(), 0);
    assert!(c.seed("fly", 3, &[], "").await.unwrap());
    assert!(old(0, 10).await.unwrap().is_empty());
    assert!(!c.release_ticket("fly", "f3").await.unwrap());
    assert_eq!(c.remaining("fly").await.unwrap(), Some(3));
}

async fn locks(c: &dyn Counters) {
    let ttl = Duration::from_millis(300);
    let t1 = c.try_lock("L", ttl).await.unwrap().expect("free lock");
    assert!(c.try_lock("L", ttl).await.unwrap().is_none(), "held");
    let forged = promo_platform::ports::LockToken {
        key: t1.key.clone(),
        token: "not-mine".into(),
    };
    assert!(!c.unlock(&forged).await.unwrap(), "only the owner releases");
    assert!(c.unlock(&t1).await.unwrap());
    let t2 = c.try_lock("L", ttl).await.unwrap().expect("free again");
    tokio::time::sleep(Duration::from_millis(450)).await;
    let t3 = c
        .try_lock("L", ttl)
        .await
        .unwrap()
        .expect("expired lock is free");
    assert!(
        !c.unlock(&t2).await.unwrap(),
        "an expired owner cannot release the new owner's lock"
    );
    assert!(c.unlock(&t3).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_counters_conform() {
    suite(Arc::new(MemoryCounters::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_counters_conform() {
    let c = testing::fresh_redis("conformance").await;
    suite(Arc::new(c.clone())).await;
    pending_marks_expire(&c).await;
    testing::flush_redis_prefix(&c).await;
}

/// A batch's pending marks carry the lifetime asked for, whether the step
/// set them (one server) or the commands after it (a cluster).
async fn pending_marks_expire(c: &promo_platform::ports::RedisCounters) {
    let ttl = Duration::from_secs(60);
    c.seed("marks", 5, &[], "").await.unwrap();
    let asks = [("m1", "h1"), ("m2", "h2")].map(|(ticket, holder)| Ask {
        holder,
        units: 1,
        limit: 1,
        ticket,
    });
    let answers = c.admit_many("marks", &asks, ttl).await.unwrap();
    assert!(answers
        .iter()
        .all(|a| matches!(a, Admission::Admitted { .. })));
    let mut conn = c.connection();
    for ticket in ["m1", "m2"] {
        let left: i64 = redis::cmd("PTTL")
            .arg(format!("{}ticket:{ticket}", c.prefix()))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(left > 50_000 && left <= 60_000, "{ticket}: {left} ms");
    }
    c.remove("marks").await.unwrap();
}

/// The same suite on a 3-master Redis Cluster (`just infra-up` starts one):
/// every script's keys share one slot, so none fails with CROSSSLOT.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cluster_counters_conform() {
    let c = testing::fresh_redis_cluster("conformance").await;
    assert!(c.is_cluster());
    suite(Arc::new(c.clone())).await;
    pending_marks_expire(&c).await;
    testing::flush_redis_prefix(&c).await;
}
