//! The compute pool: dedicated OS threads that run all model math, so tensor work never
//! blocks a tokio worker (house rule 4).
//!
//! Work is a boxed closure; results travel back through whatever channel the closure
//! captures (an actor message, a oneshot). A panicking job is caught: its captured request
//! state is dropped (which fails the request through its `Responder`), the thread lives on.
//!
//! Two queues, strictly prioritised: real work ([`ComputePool::spawn`], FIFO) and idle work
//! ([`ComputePool::spawn_idle`], the production shadow prefills of `shadow.rs`). A thread
//! takes an idle job only when no real job is queued or running on any thread and none has
//! finished for [`IDLE_GRACE`] (so idle work never slips into the gaps between the decode
//! steps of a running request). Idle jobs are short (one layer of a shadow prefill), so a
//! real job that arrives while one runs finds a free thread or waits at most one layer.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::EngineError;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long the pool must have been free of real work before an idle job starts.
pub const IDLE_GRACE: Duration = Duration::from_millis(10);

/// The queues every thread reads (one lock; jobs are coarse, a layer or more).
#[derive(Default)]
struct Queues {
    real: VecDeque<Job>,
    idle: VecDeque<Job>,
    /// Real jobs running now.
    running_real: usize,
    /// Idle jobs running now.
    running_idle: usize,
    /// When the last real job finished (`None`: never).
    last_real_end: Option<Instant>,
    /// Set when the last pool handle is dropped: threads drain the real queue and exit.
    closed: bool,
}

struct Inner {
    q: Mutex<Queues>,
    cv: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Queues> {
        // A job never runs under the lock, so a poisoned lock only means a panic between
        // two field updates of a job that is already caught; the queues stay usable.
        self.q.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Closes the queues when the last pool handle goes (threads then exit).
struct Closer(Arc<Inner>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.cv.notify_all();
    }
}

/// A fixed pool of compute threads fed by a real-work FIFO and an idle-work FIFO. Cheap to
/// clone; the threads exit when every clone is gone.
#[derive(Clone)]
pub struct ComputePool {
    inner: Arc<Inner>,
    _closer: Arc<Closer>,
    threads: usize,
}

impl std::fmt::Debug for ComputePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputePool")
            .field("threads", &self.threads)
            .finish()
    }
}

enum Taken {
    Real(Job),
    Idle(Job),
}

/// Blocks until a job may run: real work first; idle work only when no real job is queued
/// or running and none ended within [`IDLE_GRACE`]. `None` when the pool is closed and no
/// real work is left.
fn take(inner: &Inner) -> Option<Taken> {
    let mut q = inner.lock();
    loop {
        if let Some(job) = q.real.pop_front() {
            q.running_real += 1;
            return Some(Taken::Real(job));
        }
        if q.closed {
            // Idle work is dropped at shutdown (a shadow is only a measurement).
            q.idle.clear();
            return None;
        }
        let mut wait = None;
        if q.running_real == 0 && !q.idle.is_empty() {
            let since = q.last_real_end.map_or(IDLE_GRACE, |t| t.elapsed());
            if since >= IDLE_GRACE {
                if let Some(job) = q.idle.pop_front() {
                    q.running_idle += 1;
                    return Some(Taken::Idle(job));
                }
            }
            wait = Some(IDLE_GRACE - since);
        }
        q = match wait {
            Some(d) => {
                inner
                    .cv
                    .wait_timeout(q, d)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            None => inner.cv.wait(q).unwrap_or_else(|p| p.into_inner()),
        };
    }
}

fn worker(inner: Arc<Inner>) {
    while let Some(taken) = take(&inner) {
        let (job, real) = match taken {
            Taken::Real(j) => (j, true),
            Taken::Idle(j) => (j, false),
        };
        if catch_unwind(AssertUnwindSafe(job)).is_err() {
            tracing::error!("compute job panicked; its request failed");
        }
        let mut q = inner.lock();
        if real {
            q.running_real -= 1;
            q.last_real_end = Some(Instant::now());
            if q.running_real == 0 && !q.idle.is_empty() {
                // Someone may start idle work once the grace has passed.
                inner.cv.notify_one();
            }
        } else {
            q.running_idle -= 1;
        }
    }
}

impl ComputePool {
    /// Starts `threads` threads (`0` = one per available core).
    pub fn new(threads: usize) -> Result<Self, EngineError> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let inner = Arc::new(Inner {
            q: Mutex::new(Queues::default()),
            cv: Condvar::new(),
        });
        for i in 0..threads {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name(format!("a3kv-compute-{i}"))
                .spawn(move || worker(inner))
                .map_err(|e| EngineError::Internal(format!("cannot start compute thread: {e}")))?;
        }
        Ok(Self {
            _closer: Arc::new(Closer(inner.clone())),
            inner,
            threads,
        })
    }

    /// Queues `f` as real work; fire and forget (the closure reports its own result).
    pub fn spawn(&self, f: impl FnOnce() + Send + 'static) -> Result<(), EngineError> {
        let mut q = self.inner.lock();
        if q.closed {
            return Err(EngineError::ShuttingDown);
        }
        q.real.push_back(Box::new(f));
        drop(q);
        self.inner.cv.notify_one();
        Ok(())
    }

    /// Queues `f` as idle work: it runs only while the pool has no real work (see the module
    /// doc). Unbounded here; the caller bounds what it queues.
    pub fn spawn_idle(&self, f: impl FnOnce() + Send + 'static) -> Result<(), EngineError> {
        let mut q = self.inner.lock();
        if q.closed {
            return Err(EngineError::ShuttingDown);
        }
        q.idle.push_back(Box::new(f));
        drop(q);
        self.inner.cv.notify_one();
        Ok(())
    }

    /// Real jobs queued or running, and idle jobs queued or running (tests).
    #[cfg(test)]
    pub fn load(&self) -> (usize, usize) {
        let q = self.inner.lock();
        (q.real.len() + q.running_real, q.idle.len() + q.running_idle)
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
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn runs_jobs_and_survives_panics() {
        let pool = ComputePool::new(1).unwrap();
        assert_eq!(pool.run(|| 2 + 2).await.unwrap(), 4);
        let r: Result<(), _> = pool.run(|| panic!("boom")).await;
        assert!(matches!(r, Err(EngineError::Internal(_))));
        assert_eq!(pool.run(|| "alive").await.unwrap(), "alive");
        // Idle work runs too, once the pool is free.
        let (tx, rx) = oneshot::channel();
        pool.spawn_idle(move || {
            let _ = tx.send(7);
        })
        .unwrap();
        assert_eq!(rx.await.unwrap(), 7);
    }

    /// The structural guarantee behind shadow prefills: an idle job never starts while a
    /// real job is queued or running, on any thread, and real work queued behind idle work
    /// still runs first.
    #[test]
    fn idle_work_never_starts_while_real_work_is_queued_or_running() {
        let pool = ComputePool::new(2).unwrap();
        let real_active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let violated = Arc::new(AtomicBool::new(false));
        let order = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        // A real job holds one thread until everything is queued.
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        {
            let (ra, o, d) = (real_active.clone(), order.clone(), done_tx.clone());
            pool.spawn(move || {
                ra.fetch_add(1, Ordering::SeqCst);
                let _ = go_rx.recv_timeout(Duration::from_secs(10));
                o.lock().unwrap().push("real-first".to_string());
                ra.fetch_sub(1, Ordering::SeqCst);
                let _ = d.send(());
            })
            .unwrap();
        }
        // Idle jobs queued before a burst of real jobs.
        for i in 0..6 {
            let (ra, v, o, d) = (
                real_active.clone(),
                violated.clone(),
                order.clone(),
                done_tx.clone(),
            );
            pool.spawn_idle(move || {
                if ra.load(Ordering::SeqCst) > 0 {
                    v.store(true, Ordering::SeqCst);
                }
                o.lock().unwrap().push(format!("idle{i}"));
                std::thread::sleep(Duration::from_millis(2));
                let _ = d.send(());
            })
            .unwrap();
        }
        std::thread::sleep(Duration::from_millis(30));
        for i in 0..8 {
            let (ra, o, d) = (real_active.clone(), order.clone(), done_tx.clone());
            pool.spawn(move || {
                ra.fetch_add(1, Ordering::SeqCst);
                o.lock().unwrap().push(format!("real{i}"));
                std::thread::sleep(Duration::from_millis(5));
                ra.fetch_sub(1, Ordering::SeqCst);
                let _ = d.send(());
            })
            .unwrap();
        }
        let _ = go_tx.send(());
        for _ in 0..15 {
            done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        assert!(
            !violated.load(Ordering::SeqCst),
            "an idle job overlapped real work"
        );
        let order = order.lock().unwrap().clone();
        let first_idle = order.iter().position(|s| s.starts_with("idle")).unwrap();
        assert_eq!(first_idle, 9, "every real job first: {order:?}");
        // The last job reported before its thread counted it finished.
        let t0 = Instant::now();
        while pool.load() != (0, 0) && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(pool.load(), (0, 0));
    }
}
