//! Admission coalescing: concurrent V3 admissions of one bucket become one
//! counters step, and their events one send.
//!
//! Each request hands its admission (pool, holder, units, limit, ticket)
//! and its event to a lane, chosen by its pool so that one bucket's
//! requests always meet in the same lane. A lane's task takes whatever
//! queued while its previous step ran, admits each pool's share in one
//! [`Counters::admit_many`] call (one Redis script call; the pools of one
//! batch at the same time), and hands the admitted events to the producer
//! together ([`Producer::send_many`]) in a task of their own, so the lane
//! goes on to its next batch while the broker acknowledges. Each caller is
//! answered after its own event is acknowledged; a refused admission at
//! once. Nothing lingers: a request that finds its lane idle is a batch of
//! one, so coalescing adds no wait under light load.
//!
//! An event that cannot be sent is handled as in [`admission::publish`]:
//! its ticket goes back to the pool at once when the queue says it surely
//! was not stored, else the audit decides.

use std::{sync::Arc, time::Duration};

use futures::future::join_all;
use prometheus::Histogram;
use tokio::sync::{mpsc, oneshot};

use crate::{
    admission,
    group_commit::by_key,
    ports::{counters::CountersError, Admission, Ask, Counters, Producer, QueueError, Record},
};

/// Lanes per service process: one hot bucket has one lane to itself unless
/// another pool hashes onto it; a fixed number, whatever the promotions.
pub const LANES: u32 = 16;
/// Most admissions one counters step takes (one script call's arguments).
pub const MAX_BATCH: usize = 128;
/// Most admissions waiting per lane; more wait to be queued.
const QUEUE: usize = 4096;

/// One V3 admission and the event it sends when admitted.
#[derive(Debug)]
pub struct Admit {
    pub pool: String,
    pub holder: String,
    pub units: i64,
    pub limit: i64,
    pub ticket: String,
    /// Message key and partition of the event.
    pub key: String,
    pub partition: i32,
    pub event: Vec<u8>,
}

/// Why a coalesced admission failed.
#[derive(Debug, thiserror::Error)]
pub enum CoalesceError {
    #[error(transparent)]
    Counters(#[from] CountersError),
    /// Admitted, but the event was not sent (see [`admission::publish`]).
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The lane's task is gone (the service is stopping).
    #[error("the admission lane stopped")]
    Stopped,
}

type Reply = oneshot::Sender<Result<Admission, CoalesceError>>;
type Job = (Admit, Reply);

/// The lanes of one service process. Dropping it ends their tasks once
/// what they hold is answered.
pub struct Coalescer {
    lanes: Vec<mpsc::Sender<Job>>,
}

impl Coalescer {
    /// Starts [`LANES`] lanes admitting through `counters` (tickets pending
    /// for `ticket_ttl`) and sending through `producer`.
    /// Each step's size is observed in `sizes`.
    pub fn start(
        counters: Arc<dyn Counters>,
        producer: Arc<dyn Producer>,
        ticket_ttl: Duration,
        sizes: Histogram,
    ) -> Self {
        let lanes = (0..LANES)
            .map(|_| {
                let (tx, rx) = mpsc::channel(QUEUE);
                let lane = Lane {
                    counters: counters.clone(),
                    producer: producer.clone(),
                    ticket_ttl,
                    sizes: sizes.clone(),
                };
                tokio::spawn(lane.run(rx));
                tx
            })
            .collect();
        Self { lanes }
    }

    /// Admits `a` with whatever else its lane gathers; answers once the
    /// event of an admitted request is acknowledged.
    pub async fn admit(&self, a: Admit) -> Result<Admission, CoalesceError> {
        let lane = &self.lanes[promo_contracts::bucket_of(&a.pool, LANES) as usize];
        let (tx, rx) = oneshot::channel();
        lane.send((a, tx))
            .await
            .map_err(|_| CoalesceError::Stopped)?;
        rx.await.map_err(|_| CoalesceError::Stopped)?
    }
}

struct Lane {
    counters: Arc<dyn Counters>,
    producer: Arc<dyn Producer>,
    ticket_ttl: Duration,
    sizes: Histogram,
}

impl Lane {
    async fn run(self, mut rx: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            // The next batch gets its room up front (growing it would move the jobs).
            let jobs = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
            let answers = self.admit_all(&jobs).await;
            let mut sending = Vec::new();
            for ((admit, reply), answer) in jobs.into_iter().zip(answers) {
                match answer {
                    Ok(a @ Admission::Admitted { .. }) => sending.push((admit, reply, a)),
                    other => {
                        // A caller that went away no longer needs its answer.
                        let _ = reply.send(other.map_err(CoalesceError::from));
                    }
                }
            }
            if !sending.is_empty() {
                tokio::spawn(send_all(
                    self.counters.clone(),
                    self.producer.clone(),
                    sending,
                ));
            }
        }
    }

    /// One counters step per pool of the batch, all at once; one answer per job.
    async fn admit_all(&self, jobs: &[Job]) -> Vec<Result<Admission, CountersError>> {
        let groups = by_key(jobs, |(a, _)| a.pool.as_str());
        let steps = groups.iter().map(|(pool, members)| async move {
            let asks: Vec<Ask<'_>> = members
                .iter()
                .map(|&i| {
                    let a = &jobs[i].0;
                    Ask {
                        holder: &a.holder,
                        units: a.units,
                        limit: a.limit,
                        ticket: &a.ticket,
                    }
                })
                .collect();
            self.sizes.observe(asks.len() as f64);
            let step = self.counters.admit_many(pool, &asks, self.ticket_ttl).await;
            (members, step)
        });
        let mut answers: Vec<Option<Result<Admission, CountersError>>> =
            jobs.iter().map(|_| None).collect();
        for (members, step) in join_all(steps).await {
            match step {
                Ok(found) => {
                    for (&i, a) in members.iter().zip(found) {
                        answers[i] = Some(Ok(a));
                    }
                }
                Err(e) => {
                    let e = Arc::new(e);
                    for &i in members {
                        answers[i] = Some(Err(CountersError::Shared(e.clone())));
                    }
                }
            }
        }
        answers
            .into_iter()
            .map(|a| a.expect("every job's pool had its step"))
            .collect()
    }
}

/// Sends the admitted jobs' events together, then answers each caller.
async fn send_all(
    counters: Arc<dyn Counters>,
    producer: Arc<dyn Producer>,
    mut sending: Vec<(Admit, Reply, Admission)>,
) {
    let records = sending
        .iter_mut()
        .map(|(a, ..)| Record {
            partition: a.partition,
            key: std::mem::take(&mut a.key),
            payload: std::mem::take(&mut a.event),
            headers: &[],
        })
        .collect();
    let sent = producer.send_many(records).await;
    for ((admit, reply, answer), result) in sending.into_iter().zip(sent) {
        let answer = match result {
            Ok(()) => Ok(answer),
            Err(e) => {
                admission::unsent(&*counters, &admit.pool, &admit.ticket, &e).await;
                Err(CoalesceError::Queue(e))
            }
        };
        let _ = reply.send(answer);
    }
}
