//! Per-request RAII pieces that travel with a job through the pipeline:
//! [`Responder`] (the event stream; a request dropped anywhere without an answer fails with
//! a clear error), [`QueueSlot`] and [`RunningSlot`] (waiting/running counts and gauges,
//! released in `Drop`, so cancellation and actor failures free them), and [`Trace`]
//! (timestamps of the request's stages).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::metrics as m;
use crate::{EngineError, EngineEvent};

/// Engine-wide load counters, read by [`crate::Engine::running`]/[`crate::Engine::waiting`]
/// and written only through the RAII slots.
#[derive(Debug, Default)]
pub struct LoadCounters {
    /// Requests queued (submitted, not yet running).
    pub waiting: AtomicUsize,
    /// Requests in prefill or decode.
    pub running: AtomicUsize,
    /// Set once shutdown starts: no new requests.
    pub shutting_down: AtomicBool,
}

/// A place in the waiting queue; frees it (and updates the gauge) on drop.
#[derive(Debug)]
pub struct QueueSlot {
    counters: Arc<LoadCounters>,
}

impl QueueSlot {
    /// Takes a slot if fewer than `max` are taken.
    pub fn try_acquire(counters: &Arc<LoadCounters>, max: usize) -> Option<Self> {
        let ok = counters
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w < max).then_some(w + 1)
            })
            .is_ok();
        ok.then(|| {
            metrics::gauge!(m::WAITING).set(counters.waiting.load(Ordering::Acquire) as f64);
            Self {
                counters: counters.clone(),
            }
        })
    }
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        let now = self.counters.waiting.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!(m::WAITING).set(now as f64);
    }
}

/// A place in the running set; on drop it frees the place and tells Admission (through
/// `on_release`) so the next waiting request can start.
pub struct RunningSlot {
    counters: Arc<LoadCounters>,
    on_release: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for RunningSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunningSlot")
    }
}

impl RunningSlot {
    /// Counts one more running request.
    pub fn acquire(counters: &Arc<LoadCounters>, on_release: Box<dyn Fn() + Send + Sync>) -> Self {
        let now = counters.running.fetch_add(1, Ordering::AcqRel) + 1;
        metrics::gauge!(m::RUNNING).set(now as f64);
        Self {
            counters: counters.clone(),
            on_release,
        }
    }
}

impl Drop for RunningSlot {
    fn drop(&mut self) {
        let now = self.counters.running.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!(m::RUNNING).set(now as f64);
        (self.on_release)();
    }
}

/// Seconds from submit of each stage of one request (what the overlap test asserts on).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestTrace {
    /// Admitted into the running set.
    pub admitted_secs: f64,
    /// Exact layers / check layer compute started (RelevanceScorer).
    pub check_start_secs: Option<f64>,
    /// Check layer and selection finished.
    pub check_end_secs: Option<f64>,
    /// Each cached layer's arrival (all chunks of the prompt), by layer.
    pub layer_loaded_secs: Vec<f64>,
    /// Tier each chunk came from (`memory`, `disk`, `computed`), prefix first.
    pub chunk_tiers: Vec<String>,
    /// Requests in this request's recompute batch.
    pub batch_requests: usize,
    /// Fused cache ready.
    pub prefill_end_secs: Option<f64>,
}

/// The request's clock and trace.
#[derive(Debug, Clone)]
pub struct Trace {
    /// When `submit` accepted it.
    pub submitted: Instant,
    /// Recorded stage times.
    pub rec: RequestTrace,
}

impl Trace {
    /// A trace starting now.
    pub fn new() -> Self {
        Self {
            submitted: Instant::now(),
            rec: RequestTrace::default(),
        }
    }

    /// Seconds since submit.
    pub fn secs(&self) -> f64 {
        self.submitted.elapsed().as_secs_f64()
    }

    /// Seconds from submit to `t`.
    pub fn at(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.submitted).as_secs_f64()
    }
}

impl Default for Trace {
    fn default() -> Self {
        Self::new()
    }
}

/// The request's event stream. Dropped without [`Responder::finish`] or
/// [`Responder::fail`] (a stage failed and lost the job), it sends
/// `Failed(Internal("... in <stage>"))` unless the receiver is already gone (a cancelled
/// request, which its front end counts).
#[derive(Debug)]
pub struct Responder {
    tx: Option<mpsc::Sender<EngineEvent>>,
    /// The stage holding the job (for the error of a lost job).
    pub stage: &'static str,
}

impl Responder {
    /// Wraps the sender.
    pub fn new(tx: mpsc::Sender<EngineEvent>) -> Self {
        Self {
            tx: Some(tx),
            stage: "admission",
        }
    }

    /// A responder that sends nothing (what is left after `finish`/`fail`).
    pub fn closed() -> Self {
        Self {
            tx: None,
            stage: "done",
        }
    }

    /// Whether the client went away (receiver dropped).
    pub fn is_closed(&self) -> bool {
        self.tx.as_ref().is_none_or(|t| t.is_closed())
    }

    /// Sends an event; `false` if the client is gone. The channel is sized for a whole
    /// response, so a slow client never blocks the engine.
    pub fn send(&self, ev: EngineEvent) -> bool {
        self.tx.as_ref().is_some_and(|t| t.try_send(ev).is_ok())
    }

    /// Ends the stream with `Finished`.
    pub fn finish(mut self, ev: EngineEvent) {
        self.send(ev);
        self.tx = None;
    }

    /// Ends the stream with `Failed(e)` and counts the failure.
    pub fn fail(mut self, e: EngineError) {
        metrics::counter!(m::REQUEST_FAILURE, "err" => e.kind()).increment(1);
        self.send(EngineEvent::Failed(e));
        self.tx = None;
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            if tx.is_closed() {
                // The front end dropped the stream (client gone, timeout, drain deadline):
                // it knows why, and counts and logs the end itself.
                return;
            }
            let e = EngineError::Internal(format!(
                "request aborted: the {} stage failed (it was restarted; retry the request)",
                self.stage
            ));
            metrics::counter!(m::REQUEST_FAILURE, "err" => e.kind()).increment(1);
            let _ = tx.try_send(EngineEvent::Failed(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_and_release() {
        let c = Arc::new(LoadCounters::default());
        let a = QueueSlot::try_acquire(&c, 1).unwrap();
        assert!(QueueSlot::try_acquire(&c, 1).is_none());
        drop(a);
        assert_eq!(c.waiting.load(Ordering::Acquire), 0);
        let released = Arc::new(AtomicUsize::new(0));
        let r2 = released.clone();
        let s = RunningSlot::acquire(
            &c,
            Box::new(move || {
                r2.fetch_add(1, Ordering::AcqRel);
            }),
        );
        assert_eq!(c.running.load(Ordering::Acquire), 1);
        drop(s);
        assert_eq!(c.running.load(Ordering::Acquire), 0);
        assert_eq!(released.load(Ordering::Acquire), 1);
    }

    #[test]
    fn dropped_responder_fails_the_request() {
        let (tx, mut rx) = mpsc::channel(4);
        let mut r = Responder::new(tx);
        r.stage = "decoder";
        drop(r);
        match rx.try_recv() {
            Ok(EngineEvent::Failed(EngineError::Internal(m))) => assert!(m.contains("decoder")),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
