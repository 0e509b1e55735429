//! Conformance suite of the queue port, run against the in-process queue,
//! librdkafka's mock cluster and a real Kafka-protocol broker (tansu).

use std::{collections::HashSet, sync::Arc, time::Duration};

use promo_platform::{
    ports::{KafkaQueue, LocalQueue, Queue, Record},
    testing,
};
use rdkafka::{
    mocking::MockCluster,
    producer::DefaultProducerContext,
    types::{RDKafkaApiKey, RDKafkaRespErr},
};

const WAIT: Duration = Duration::from_secs(10);

/// Polls until `n` messages arrived (or the wait runs out).
async fn take(
    c: &mut dyn promo_platform::ports::Consumer,
    n: usize,
) -> Vec<promo_platform::ports::Message> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.len() < n && tokio::time::Instant::now() < deadline {
        got.extend(c.poll(n - got.len(), WAIT).await.expect("poll"));
    }
    got
}

/// `create`: whether the backend supports creating topics (librdkafka's mock
/// cluster does not answer CreateTopics; its topics are made up front).
async fn suite(q: Arc<dyn Queue>, topic: &str, create: bool) {
    if create {
        q.ensure_topic(topic, 1).await.expect("topic");
        q.ensure_topic(topic, 1)
            .await
            .expect("creating twice is fine");
    }
    let group = testing::unique("group");
    let p = q.producer(topic).expect("producer");
    for i in 0..100 {
        p.send("k", format!("m{i}").into_bytes())
            .await
            .expect("send");
    }

    // First member takes 60 messages in order, commits the first 40, "crashes".
    let mut c1 = q.consumer(topic, &group).await.expect("consumer");
    let got = take(&mut *c1, 60).await;
    assert_eq!(got.len(), 60);
    let payloads: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8(m.payload.clone()).unwrap())
        .collect();
    assert_eq!(payloads[..3], ["m0", "m1", "m2"]);
    assert!(
        got.windows(2).all(|w| w[0].offset < w[1].offset),
        "in order"
    );
    assert!(got.iter().all(|m| m.key == b"k"));
    c1.commit(&got[..40]).await.expect("commit");
    drop(c1);

    wait_for_lag(&*q, topic, &group, 60).await;

    // The next member starts at the committed offset: 40..99 again, nothing lost.
    let mut c2 = q.consumer(topic, &group).await.expect("consumer");
    let rest = take(&mut *c2, 60).await;
    let rest_payloads: Vec<String> = rest
        .iter()
        .map(|m| String::from_utf8(m.payload.clone()).unwrap())
        .collect();
    assert_eq!(rest_payloads.first().map(String::as_str), Some("m40"));
    assert_eq!(rest_payloads.last().map(String::as_str), Some("m99"));
    assert_eq!(
        rest.iter().map(|m| m.offset).collect::<HashSet<_>>().len(),
        60
    );
    c2.commit(&rest).await.expect("commit");
    wait_for_lag(&*q, topic, &group, 0).await;

    // Sent together, in two groups: each acknowledged, stored in order.
    // (After the lag checks: tansu's high watermark moves by one for a
    // batch of many records.)
    for range in [100..110, 110..150] {
        let records = range
            .map(|i| Record {
                partition: 0,
                key: "k".into(),
                payload: format!("m{i}").into_bytes(),
                headers: &[],
            })
            .collect::<Vec<_>>();
        let n = records.len();
        let sent = p.send_many(records).await;
        assert_eq!(sent.len(), n);
        assert!(sent.iter().all(Result::is_ok), "{sent:?}");
    }
    let together = take(&mut *c2, 50).await;
    let payloads: Vec<String> = together
        .iter()
        .map(|m| String::from_utf8(m.payload.clone()).unwrap())
        .collect();
    let want: Vec<String> = (100..150).map(|i| format!("m{i}")).collect();
    assert_eq!(payloads, want);
    c2.commit(&together).await.expect("commit");

    // An empty poll returns within the wait.
    let started = std::time::Instant::now();
    assert!(c2
        .poll(10, Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
    assert!(started.elapsed() < Duration::from_secs(5));
}

async fn wait_for_lag(q: &dyn Queue, topic: &str, group: &str, want: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let lag = q.lag(topic, group).await.expect("lag");
        if lag == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lag stayed {lag}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn local_queue_in_memory_conforms() {
    suite(Arc::new(LocalQueue::in_memory(10_000)), "t", true).await;
}

#[tokio::test]
async fn durable_local_queue_conforms() {
    let dir = testing::TempDir::new();
    suite(Arc::new(LocalQueue::durable(&dir.0, 10_000)), "t", true).await;
}

#[tokio::test]
async fn durable_local_queue_with_fdatasync_conforms() {
    let dir = testing::TempDir::new();
    let q = LocalQueue::durable(&dir.0, 10_000).with_fdatasync(true);
    suite(Arc::new(q), "t", true).await;
}

/// Opens the durable queue in `dir` again, as a restarted process would.
/// The previous one lets go of the folder's lock once its
/// topic is dropped; wait for that.
async fn reopen(dir: &std::path::Path, topic: &str) -> LocalQueue {
    reopen_syncing(dir, topic, false).await
}

async fn reopen_syncing(dir: &std::path::Path, topic: &str, fdatasync: bool) -> LocalQueue {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let q = LocalQueue::durable(dir, 10_000)
            .with_segment_bytes(1024)
            .with_fdatasync(fdatasync);
        match q.ensure_topic(topic, 1).await {
            Ok(()) => return q,
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert!(e.to_string().contains("--data-dir"), "{e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("reopen: {e}"),
        }
    }
}

fn payloads(batch: &[promo_platform::ports::Message]) -> Vec<String> {
    batch
        .iter()
        .map(|m| String::from_utf8(m.payload.clone()).unwrap())
        .collect()
}

#[tokio::test]
async fn durable_queue_delivers_what_was_not_committed_after_a_restart() {
    delivers_what_was_not_committed_after_a_restart(false).await;
}

#[tokio::test]
async fn syncing_durable_queue_delivers_what_was_not_committed_after_a_restart() {
    delivers_what_was_not_committed_after_a_restart(true).await;
}

async fn delivers_what_was_not_committed_after_a_restart(fdatasync: bool) {
    let dir = testing::TempDir::new();
    {
        let q = reopen_syncing(&dir.0, "t", fdatasync).await;
        let p = q.producer("t").unwrap();
        for i in 0..100 {
            p.send("k", format!("m{i}").into_bytes()).await.unwrap();
        }
        let mut c = q.consumer("t", "g").await.unwrap();
        let got = take(&mut *c, 100).await;
        c.commit(&got[..40]).await.unwrap();
        // Many small segments: the ones wholly committed are gone.
        assert!(q.segment_count("t").unwrap() > 2);
    }
    // A second process cannot open the same folder while the first holds it.
    let q = reopen_syncing(&dir.0, "t", fdatasync).await;
    let second = LocalQueue::durable(&dir.0, 10);
    let err = second.ensure_topic("t", 1).await.expect_err("locked");
    assert!(err.to_string().contains("--data-dir"), "{err}");

    // What the restarted process can list before consuming: the 60 owed.
    let owed = q.undelivered("t", "g").await.unwrap();
    assert_eq!(owed.len(), 60);
    assert_eq!(owed[0].offset, 40);
    let mut c = q.consumer("t", "g").await.unwrap();
    let rest = take(&mut *c, 60).await;
    assert_eq!(payloads(&rest).first().map(String::as_str), Some("m40"));
    assert_eq!(payloads(&rest).last().map(String::as_str), Some("m99"));
    assert_eq!(rest[0].offset, 40);
    // New sends continue the offsets.
    q.producer("t")
        .unwrap()
        .send("k", b"m100".to_vec())
        .await
        .unwrap();
    let next = take(&mut *c, 1).await;
    assert_eq!((next[0].offset, payloads(&next)[0].as_str()), (100, "m100"));
    // Everything committed: only the segment being written stays.
    c.commit(&next).await.unwrap();
    assert_eq!(q.segment_count("t").unwrap(), 1);
    assert_eq!(q.lag("t", "g").await.unwrap(), 0);
}

#[tokio::test]
async fn durable_queue_cuts_off_a_torn_last_write() {
    let dir = testing::TempDir::new();
    {
        let q = LocalQueue::durable(&dir.0, 10_000);
        let p = q.producer("t").unwrap();
        for i in 0..3 {
            p.send("k", format!("m{i}").into_bytes()).await.unwrap();
        }
    }
    // A write the process died in the middle of (never acknowledged).
    let segment = dir.0.join("t").join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&segment).unwrap();
    let whole = bytes.len();
    bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3, 4, 0, 0]);
    std::fs::write(&segment, &bytes).unwrap();

    let q = reopen(&dir.0, "t").await;
    assert_eq!(std::fs::metadata(&segment).unwrap().len() as usize, whole);
    q.producer("t")
        .unwrap()
        .send("k", b"m3".to_vec())
        .await
        .unwrap();
    let mut c = q.consumer("t", "g").await.unwrap();
    let got = take(&mut *c, 4).await;
    assert_eq!(payloads(&got), ["m0", "m1", "m2", "m3"]);
    assert_eq!(
        got.iter().map(|m| m.offset).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
}

#[tokio::test]
async fn durable_queue_refuses_a_corrupt_closed_segment() {
    let dir = testing::TempDir::new();
    {
        let q = LocalQueue::durable(&dir.0, 10_000).with_segment_bytes(64);
        let p = q.producer("t").unwrap();
        for i in 0..10 {
            p.send("k", format!("m{i}").into_bytes()).await.unwrap();
        }
    }
    let first = dir.0.join("t").join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&first).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&first, &bytes).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = LocalQueue::durable(&dir.0, 10_000)
        .ensure_topic("t", 1)
        .await
        .expect_err("corrupt");
    assert!(err.to_string().contains("corrupt record"), "{err}");
}

#[tokio::test]
async fn local_queue_is_bounded() {
    let q = LocalQueue::in_memory(3);
    let p = q.producer("t").unwrap();
    for _ in 0..3 {
        p.send("k", vec![1]).await.unwrap();
    }
    assert!(p.send("k", vec![1]).await.is_err(), "full");
    let mut c = q.consumer("t", "g").await.unwrap();
    let b = c.poll(10, WAIT).await.unwrap();
    assert_eq!(b.len(), 3);
    c.commit(&b[..1]).await.unwrap();
    // Two sent together with room for one: neither is stored.
    let two = vec![
        Record {
            partition: 0,
            key: "k".into(),
            payload: vec![2],
            headers: &[],
        };
        2
    ];
    let sent = p.send_many(two).await;
    assert!(sent.iter().all(Result::is_err), "{sent:?}");
    let mut c = q.consumer("t", "g").await.unwrap();
    let b = c.poll(10, WAIT).await.unwrap();
    assert_eq!(b.len(), 2, "nothing of the refused pair was stored");
    c.commit(&b).await.unwrap();
    p.send("k", vec![1]).await.expect("room after commit");
}

/// A librdkafka mock cluster with topic `t` (one partition) and a queue on
/// it; the cluster must outlive the queue.
fn mock_topic() -> (MockCluster<'static, DefaultProducerContext>, KafkaQueue) {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic("t", 1, 1).expect("topic");
    let q = KafkaQueue::new(&mock.bootstrap_servers()).unwrap();
    (mock, q)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_queue_conforms_on_mock_cluster() {
    let (_mock, q) = mock_topic();
    suite(Arc::new(q), "t", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_producer_retries_broker_errors_without_duplicates() {
    let (mock, q) = mock_topic();
    let p = q.producer("t").unwrap();
    p.send("k", b"first".to_vec()).await.expect("send");
    // The broker refuses the next produce requests with a retriable error;
    // the idempotent producer retries and each message lands exactly once.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 3],
    );
    for i in 0..5 {
        p.send("k", format!("m{i}").into_bytes())
            .await
            .expect("send after retries");
    }
    let mut c = q.consumer("t", "g").await.unwrap();
    let got = take(&mut *c, 6).await;
    let payloads: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8(m.payload.clone()).unwrap())
        .collect();
    assert_eq!(payloads, ["first", "m0", "m1", "m2", "m3", "m4"]);
    assert!(
        c.poll(10, Duration::from_millis(500))
            .await
            .unwrap()
            .is_empty(),
        "no duplicates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_producer_reports_non_retriable_broker_errors() {
    let (mock, q) = mock_topic();
    let p = q.producer("t").unwrap();
    p.send("k", b"ok".to_vec()).await.expect("send");
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
    );
    let err = p.send("k", b"refused".to_vec()).await.expect_err("refused");
    assert!(err.to_string().contains("uthoriz"), "{err}");
}

/// `send_many` gives one answer per record, in the records' order: a
/// refused produce request fails every record in it, a fatal client error
/// fails the batch and replaces the producer, and what is sent afterwards
/// arrives in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_send_many_answers_every_record() {
    let (mock, q) = mock_topic();
    let p = q.producer("t").unwrap();
    let batch = |from: usize| {
        (from..from + 5)
            .map(|i| Record {
                partition: 0,
                key: "k".into(),
                payload: format!("m{i}").into_bytes(),
                headers: &[("h", "v")],
            })
            .collect::<Vec<_>>()
    };
    let ok = p.send_many(batch(0)).await;
    assert_eq!(ok.len(), 5);
    assert!(ok.iter().all(Result::is_ok), "{ok:?}");

    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 5],
    );
    let refused = p.send_many(batch(5)).await;
    assert_eq!(refused.len(), 5);
    for r in &refused {
        let e = r.as_ref().expect_err("refused");
        assert!(e.to_string().contains("uthoriz"), "{e}");
    }
    mock.clear_request_errors(RDKafkaApiKey::Produce);

    q.inject_fatal_error();
    let fatal = p.send_many(batch(10)).await;
    assert_eq!(fatal.len(), 5);
    assert!(
        fatal
            .iter()
            .all(|r| r.as_ref().is_err_and(|e| e.maybe_delivered())),
        "{fatal:?}"
    );
    assert_eq!(q.producer_generation(), 1, "replaced once");

    let after = p.send_many(batch(15)).await;
    assert!(after.iter().all(Result::is_ok), "{after:?}");
    let mut c = q.consumer("t", "g").await.unwrap();
    let got = take(&mut *c, 10).await;
    let payloads: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8(m.payload.clone()).unwrap())
        .collect();
    let want: Vec<String> = (0..5).chain(15..20).map(|i| format!("m{i}")).collect();
    assert_eq!(payloads, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_queue_conforms_on_tansu() {
    let topic = testing::unique("conformance");
    suite(Arc::new(testing::kafka()), &topic, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_producer_is_replaced_after_a_fatal_error() {
    let (_mock, q) = mock_topic();
    let p = q.producer("t").unwrap();
    p.send("k", b"before".to_vec()).await.expect("send");
    q.ping("t").await.expect("ready");

    // What a fenced producer sees after a broker restart: every send fails.
    q.inject_fatal_error();
    assert!(q.ping("t").await.is_err(), "readiness tells the truth");
    let err = p.send("k", b"lost".to_vec()).await.expect_err("fatal");
    assert!(
        err.maybe_delivered(),
        "the audit, not the sender, gives it back"
    );
    assert_eq!(q.producer_generation(), 1, "replaced once");

    p.send("k", b"after".to_vec())
        .await
        .expect("the new producer sends");
    q.ping("t").await.expect("ready again");
    let mut c = q.consumer("t", "g").await.unwrap();
    let got = take(&mut *c, 2).await;
    let payloads: Vec<&[u8]> = got.iter().map(|m| &m.payload[..]).collect();
    assert_eq!(payloads, [&b"before"[..], &b"after"[..]]);
}

/// Events name their partition (a promotion's buckets on distinct ones).
/// A topic smaller than configured is grown at start where the broker can
/// (Kafka); tansu cannot, and the error says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sends_to_the_named_partition_on_tansu() {
    let q = testing::kafka();
    let topic = testing::unique("partitions");
    q.ensure_topic(&topic, 4).await.expect("topic");
    q.ensure_topic(&topic, 4)
        .await
        .expect("as many as configured");
    q.ensure_topic(&topic, 2)
        .await
        .expect("more than configured");
    let err = q
        .ensure_topic(&topic, 6)
        .await
        .expect_err("tansu cannot grow it");
    let err = err.to_string();
    assert!(
        err.contains("has 4 partitions, 6 are configured") && err.contains("configure 4"),
        "{err}"
    );
    let p = q.producer(&topic).unwrap();
    for partition in [3, 0, 2, 1, 3] {
        p.send_to(partition, "k", format!("to-{partition}").into_bytes())
            .await
            .expect("send");
    }
    let mut c = q.consumer(&topic, &testing::unique("group")).await.unwrap();
    let got = take(&mut *c, 5).await;
    assert_eq!(got.len(), 5);
    for m in &got {
        let payload = String::from_utf8(m.payload.clone()).unwrap();
        assert_eq!(payload, format!("to-{}", m.partition));
    }
    let on_three = got.iter().filter(|m| m.partition == 3).count();
    assert_eq!(on_three, 2);
}

/// The events topic of the embedded queue: nobody in the process reads it,
/// so it keeps only its newest messages — sends never fill the queue, and
/// the older segments leave the disk — also across a restart.
#[tokio::test]
async fn a_retained_topic_keeps_only_its_newest_messages() {
    let dir = testing::TempDir::new();
    let open = || async {
        let q = LocalQueue::durable(&dir.0, 50).with_segment_bytes(1024);
        q.ensure_retained_topic("ev", 1, 20).await.unwrap();
        q
    };
    {
        let q = open().await;
        let p = q.producer("ev").unwrap();
        for i in 0..500 {
            p.send("k", format!("m{i}").into_bytes())
                .await
                .expect("never full: the capacity is 50");
        }
        // Offsets reach the disk at most every 200 ms: one more send after that.
        tokio::time::sleep(Duration::from_millis(250)).await;
        p.send("k", b"m500".to_vec()).await.unwrap();
        let mut c = q.consumer("ev", "reader").await.unwrap();
        let newest = take(&mut *c, 20).await;
        assert_eq!(newest[0].offset, 481);
        assert_eq!(payloads(&newest).last().map(String::as_str), Some("m500"));
        assert!(c.poll(10, WAIT).await.unwrap().is_empty(), "only 20 kept");
        assert!(
            q.segment_count("ev").unwrap() <= 3,
            "{} segments",
            q.segment_count("ev").unwrap()
        );
    }
    let q = reopen(&dir.0, "ev").await;
    let kept = q.undelivered("ev", "another").await.unwrap();
    assert!(!kept.is_empty() && kept.len() <= 20 && kept[0].offset >= 481);
    drop(q);
    // In memory alike.
    let q = LocalQueue::in_memory(5);
    q.ensure_retained_topic("ev", 1, 3).await.unwrap();
    let p = q.producer("ev").unwrap();
    for i in 0..100 {
        p.send("k", vec![i]).await.expect("never full");
    }
    assert_eq!(q.undelivered("ev", "g").await.unwrap().len(), 3);
}
