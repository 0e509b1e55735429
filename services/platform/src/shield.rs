//! Running a request's critical section to completion.
//!
//! axum drops a handler's future when the client goes away. A future dropped
//! between "take units from the counters" and "persist or give them back"
//! would leak those units: never sold, never returned. Work that spans such
//! a pair runs in its own task, which finishes whatever happens to the
//! request that awaits it.

use std::future::Future;

/// Runs `work` in a task of its own and waits for it; dropping the returned
/// future does not stop `work`. A panic in `work` resumes in the caller.
pub async fn to_completion<F>(work: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match tokio::spawn(work).await {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("request task cancelled: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            atomic::{AtomicBool, Ordering},
            Arc,
        },
        time::Duration,
    };

    use super::*;

    #[tokio::test]
    async fn dropping_the_caller_does_not_stop_the_work() {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let caller = to_completion(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::SeqCst);
        });
        // The caller gives up after 5 ms, as a disconnecting client would.
        assert!(tokio::time::timeout(Duration::from_millis(5), caller)
            .await
            .is_err());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(done.load(Ordering::SeqCst), "the work ran to its end");
    }
}
