//! The compute pool: dedicated OS threads that run all model math, so tensor work never
//! blocks a tokio worker (house rule 4).
//!
//! Work is a boxed closure; results travel back through whatever channel the closure
//! captures (an actor message, a oneshot). A panicking job is caught: its captured request
//! state is dropped (which fails the request through its `Responder`), the thread lives on.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crossbeam_channel::{unbounded, Sender};
use tokio::sync::oneshot;

use crate::EngineError;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed pool of compute threads fed by one FIFO queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ComputePool {
    tx: Sender<Job>,
}

impl ComputePool {
    /// Starts `threads` threads (`0` = one per available core).
    pub fn new(threads: usize) -> Result<Self, EngineError> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let (tx, rx) = unbounded::<Job>();
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("a3kv-compute-{i}"))
                .spawn(move || {
                    // Ends when every sender (every pool clone) is gone.
                    while let Ok(job) = rx.recv() {
                        if catch_unwind(AssertUnwindSafe(job)).is_err() {
                            tracing::error!("compute job panicked; its request failed");
                        }
                    }
                })
                .map_err(|e| EngineError::Internal(format!("cannot start compute thread: {e}")))?;
        }
        Ok(Self { tx })
    }

    /// Queues `f`; fire and forget (the closure reports its own result).
    pub fn spawn(&self, f: impl FnOnce() + Send + 'static) -> Result<(), EngineError> {
        self.tx
            .send(Box::new(f))
            .map_err(|_| EngineError::ShuttingDown)
    }

    /// Runs `f` on the pool and awaits its result; a panic becomes `Internal`.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.spawn(move || {
            let _ = tx.send(f());
        })?;
        rx.await
            .map_err(|_| EngineError::Internal("compute job panicked".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_survives_panics() {
        let pool = ComputePool::new(1).unwrap();
        assert_eq!(pool.run(|| 2 + 2).await.unwrap(), 4);
        let r: Result<(), _> = pool.run(|| panic!("boom")).await;
        assert!(matches!(r, Err(EngineError::Internal(_))));
        assert_eq!(pool.run(|| "alive").await.unwrap(), "alive");
    }
}
