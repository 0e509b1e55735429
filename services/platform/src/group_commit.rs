//! Group commit: many requests, one transaction.
//!
//! V2's database step writes the same hot row (a campaign's `issued`, a
//! sale's `sold`) for every request, so one transaction per request queues
//! every request behind the previous commit. A [`GroupCommit`] hands the
//! requests to one task that decides whatever has queued up meanwhile in a
//! single transaction and answers each caller after that commit — an answer
//! still means "stored". Under light load a batch is one request (no added
//! wait: nothing lingers); under a crowd batches grow by themselves, as in
//! the database's own group commit.

use std::{
    collections::BTreeMap, fmt::Display, future::Future, panic::AssertUnwindSafe, pin::Pin,
    sync::Arc,
};

use futures::FutureExt;

use tokio::sync::{mpsc, oneshot};

/// Most requests one transaction decides by default: bounded by the
/// placeholders of one multi-row statement.
pub const MAX_BATCH: usize = 256;
/// Most requests waiting for a batch by default; more wait to be queued.
pub const QUEUE: usize = 4096;

type Job<I, O> = (I, oneshot::Sender<O>);
/// What runs one batch: inputs in, one output per input, in order.
pub type BatchFn<I, O> =
    Box<dyn Fn(Vec<I>) -> Pin<Box<dyn Future<Output = Vec<O>> + Send>> + Send + Sync>;

/// The queue in front of one batching task. Dropping it ends the task once
/// the queued batches are answered.
pub struct GroupCommit<I, O> {
    jobs: mpsc::Sender<Job<I, O>>,
}

/// The batching task is gone (it panicked or the service is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the group-commit task stopped")]
pub struct Stopped;

impl<I: Send + 'static, O: Send + 'static> GroupCommit<I, O> {
    /// Starts the task. `run` must return exactly one output per input.
    /// At most `max_batch` inputs go to one call; at most `queue` wait.
    pub fn start(max_batch: usize, queue: usize, run: BatchFn<I, O>) -> Self {
        let (jobs, mut rx) = mpsc::channel::<Job<I, O>>(queue.max(1));
        let max_batch = max_batch.max(1);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max_batch);
            while rx.recv_many(&mut batch, max_batch).await > 0 {
                let (inputs, replies): (Vec<I>, Vec<oneshot::Sender<O>>) = batch.drain(..).unzip();
                let n = inputs.len();
                // A panicking batch fails its own callers (their replies are
                // dropped), not every later one.
                match AssertUnwindSafe(run(inputs)).catch_unwind().await {
                    Ok(outputs) if outputs.len() == n => {
                        for (reply, out) in replies.into_iter().zip(outputs) {
                            // A caller that went away no longer needs its answer.
                            let _ = reply.send(out);
                        }
                    }
                    Ok(outputs) => {
                        tracing::error!(
                            inputs = n,
                            outputs = outputs.len(),
                            "a batch did not answer every input"
                        )
                    }
                    Err(_) => tracing::error!(inputs = n, "a batch panicked"),
                }
            }
        });
        Self { jobs }
    }

    /// Starts the task for batches run against `owner` (a service), held
    /// weakly: the owner holds the group commit, and dropping the owner must
    /// end the task rather than keep both alive. Once the owner is gone,
    /// `gone` answers.
    pub fn start_for<S, F, Fut>(
        owner: &Arc<S>,
        max_batch: usize,
        queue: usize,
        run: F,
        gone: fn() -> O,
    ) -> Self
    where
        S: Send + Sync + 'static,
        F: Fn(Arc<S>, Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        let owner = Arc::downgrade(owner);
        Self::start(
            max_batch,
            queue,
            Box::new(move |batch| match owner.upgrade() {
                Some(owner) => Box::pin(run(owner, batch)),
                None => Box::pin(std::future::ready(batch.iter().map(|_| gone()).collect())),
            }),
        )
    }

    /// Queues `input` and waits for its batch to be decided.
    pub async fn submit(&self, input: I) -> Result<O, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send((input, tx)).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }
}

/// The inputs of a batch by key (campaign, sale), keys in ascending order:
/// every batch writer locks rows in that order, so two cannot deadlock.
pub fn by_key<'a, I>(
    batch: &'a [I],
    key: impl Fn(&'a I) -> &'a str,
) -> BTreeMap<&'a str, Vec<usize>> {
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, input) in batch.iter().enumerate() {
        groups.entry(key(input)).or_default().push(i);
    }
    groups
}

/// One answer per input of a batch, filled group by group.
pub struct Answers<O>(Vec<Option<O>>);

impl<O> Answers<O> {
    pub fn new(inputs: usize) -> Self {
        Self((0..inputs).map(|_| None).collect())
    }

    pub fn set(&mut self, input: usize, answer: O) {
        self.0[input] = Some(answer);
    }

    /// The same answer (made afresh, errors are rarely `Clone`) for each of `inputs`.
    pub fn fill(&mut self, inputs: &[usize], answer: impl Fn() -> O) {
        for &i in inputs {
            self.set(i, answer());
        }
    }

    /// The answers in input order. Panics if one was never given.
    pub fn into_vec(self) -> Vec<O> {
        self.0
            .into_iter()
            .map(|a| a.expect("every input of the batch answered"))
            .collect()
    }
}

/// Decides a batch with `whole`; if that fails for good, each input with
/// `one`, so one bad input cannot fail the others.
pub async fn whole_or_one_by_one<'a, I, O, E, F>(
    batch: &'a [I],
    whole: impl Future<Output = Result<Vec<O>, E>>,
    one: impl Fn(&'a I) -> F,
) -> Vec<O>
where
    E: Display,
    F: Future<Output = O>,
{
    match whole.await {
        Ok(answers) => answers,
        Err(e) => {
            tracing::warn!(error = %e, inputs = batch.len(), "batch failed; deciding one by one");
            let mut answers = Vec::with_capacity(batch.len());
            for input in batch {
                answers.push(one(input).await);
            }
            answers
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    };

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_batches_and_each_gets_its_own_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let gc = Arc::new(GroupCommit::<u32, u32>::start(
            16,
            1024,
            Box::new(move |xs| {
                seen.lock().unwrap().push(xs.len());
                Box::pin(async move {
                    // A slow "transaction", so that callers queue up behind it.
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    xs.into_iter().map(|x| x * 10).collect()
                })
            }),
        ));
        let calls: Vec<_> = (0..100u32)
            .map(|i| {
                let gc = gc.clone();
                tokio::spawn(async move { (i, gc.submit(i).await.unwrap()) })
            })
            .collect();
        for c in calls {
            let (i, out) = c.await.unwrap();
            assert_eq!(out, i * 10);
        }
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 100);
        assert!(sizes.iter().all(|&n| n <= 16), "{sizes:?}");
        assert!(sizes.len() < 100, "no batching happened: {sizes:?}");
    }

    #[tokio::test]
    async fn batch_helpers_group_answer_and_fall_back() {
        let batch = ["b", "a", "b", "c"];
        let groups = by_key(&batch, |k| k);
        assert_eq!(
            groups.into_iter().collect::<Vec<_>>(),
            vec![("a", vec![1]), ("b", vec![0, 2]), ("c", vec![3])]
        );
        let mut answers = Answers::new(3);
        answers.fill(&[0, 2], || "x");
        answers.set(1, "y");
        assert_eq!(answers.into_vec(), vec!["x", "y", "x"]);
        let whole = async { Err::<Vec<String>, _>("conflict") };
        let one_by_one = whole_or_one_by_one(&batch, whole, |k| async move { k.to_uppercase() });
        assert_eq!(one_by_one.await, vec!["B", "A", "B", "C"]);
    }

    #[tokio::test]
    async fn a_lone_caller_is_not_kept_waiting_for_company() {
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let gc = GroupCommit::<u32, u32>::start(
            64,
            64,
            Box::new(move |xs| {
                r.fetch_add(1, Ordering::SeqCst);
                Box::pin(async move { xs })
            }),
        );
        let answer = tokio::time::timeout(std::time::Duration::from_secs(1), gc.submit(7)).await;
        assert_eq!(answer.unwrap().unwrap(), 7);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_panicking_batch_fails_its_callers_and_only_them() {
        let gc = GroupCommit::<u32, u32>::start(
            4,
            4,
            Box::new(|xs| {
                Box::pin(async move {
                    if xs.contains(&13) {
                        panic!("boom");
                    }
                    xs
                })
            }),
        );
        assert!(gc.submit(13).await.is_err());
        assert_eq!(gc.submit(1).await.unwrap(), 1);
    }
}
