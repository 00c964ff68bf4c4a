//! `PrefillJob`: the one data object that moves by value Admission → ChunkLoader →
//! RelevanceScorer → RecomputeBatcher → Decoder (house rule 2). Each stage fills its part;
//! the RAII fields (responder, running slot) fail and free the request wherever it is
//! dropped. [`LayerFeed`] is the job's incoming stream of cached layers from the loader.

use std::sync::Arc;
use std::time::Instant;

use a3kv_fusion::FusedPrefill;
use a3kv_store::LayerKv as StoredLayer;
use tokio::sync::mpsc;

use crate::prepare::ValidRequest;
use crate::request::{Responder, RunningSlot, Trace};
use crate::shared::{Shared, Stage};
use crate::steps::{Fusing, LayerSource};
use crate::EngineError;

/// What the loader sends a job about its cached layers.
#[derive(Debug)]
pub enum LayerMsg {
    /// Tier each part came from (prefix first), once all parts are located.
    Tiers(Vec<&'static str>),
    /// Layer `l` of every part, and when it arrived.
    Layer(usize, Vec<Arc<StoredLayer>>, Instant),
    /// Loading failed (corrupt chunk, store error); nothing follows.
    Failed(EngineError),
}

/// Sender half, held by the loader's streaming task.
pub type LayerTx = mpsc::UnboundedSender<LayerMsg>;

/// The receiving side of a job's cached layers. Read from compute threads only
/// (`blocking_recv`), never from a tokio worker.
#[derive(Debug)]
pub struct LayerFeed {
    rx: mpsc::UnboundedReceiver<LayerMsg>,
    got: Vec<Option<Vec<Arc<StoredLayer>>>>,
    /// Arrival time of each layer.
    pub arrived: Vec<Option<Instant>>,
    /// Tier of each part, once known.
    pub tiers: Vec<&'static str>,
    failed: Option<EngineError>,
}

impl LayerFeed {
    /// A feed for `layers` layers and its sender.
    pub fn channel(layers: usize) -> (LayerTx, Self) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            tx,
            Self {
                rx,
                got: vec![None; layers],
                arrived: vec![None; layers],
                tiers: Vec::new(),
                failed: None,
            },
        )
    }

    fn absorb(&mut self, msg: Option<LayerMsg>) {
        match msg {
            Some(LayerMsg::Tiers(t)) => self.tiers = t,
            Some(LayerMsg::Layer(l, parts, at)) if l < self.got.len() => {
                self.got[l] = Some(parts);
                self.arrived[l] = Some(at);
            }
            Some(LayerMsg::Layer(l, ..)) => {
                self.failed = Some(EngineError::Internal(format!("loader sent layer {l}")))
            }
            Some(LayerMsg::Failed(e)) => self.failed = Some(e),
            None => {
                self.failed = Some(EngineError::Internal(
                    "the chunk loader stopped before all layers arrived".into(),
                ))
            }
        }
    }

    /// Takes whatever already arrived without waiting (records arrival times).
    pub fn drain(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            self.absorb(Some(m));
        }
    }
}

impl LayerSource for LayerFeed {
    fn layer(&mut self, l: usize) -> Result<Vec<Arc<StoredLayer>>, EngineError> {
        loop {
            if let Some(Some(parts)) = self.got.get(l) {
                return Ok(parts.clone());
            }
            if let Some(e) = &self.failed {
                return Err(e.clone());
            }
            if l >= self.got.len() {
                return Err(EngineError::Internal(format!("no layer {l}")));
            }
            let msg = self.rx.blocking_recv();
            self.absorb(msg);
        }
    }
}

/// A running request on its way through the pipeline.
#[derive(Debug)]
pub struct PrefillJob {
    /// The validated request.
    pub req: ValidRequest,
    /// Its event stream.
    pub responder: Responder,
    /// Its place in the running set (freed on drop).
    #[allow(
        dead_code,
        reason = "held only for its Drop, which frees the running slot"
    )]
    pub slot: RunningSlot,
    /// Stage timestamps.
    pub trace: Trace,
    /// Cached layers arriving from the loader (fused plans with parts).
    pub feed: Option<LayerFeed>,
    /// State between the check layer and the end of the prefill.
    pub fusing: Option<Fusing>,
    /// The finished prefill: first logits, fused cache, report.
    pub prefilled: Option<FusedPrefill>,
    /// The fusion report, kept for the usage once the decoder owns the cache.
    pub report: Option<a3kv_fusion::FusionReport>,
    /// Whether the usage carries the fusion report (RAG prompts).
    pub report_fusion: bool,
    /// When it was admitted into the running set.
    pub admitted: Instant,
}

/// Sends `job` to `stage` wrapped by `wrap`. While the stage restarts after a failure
/// (not registered), retries for up to a second, then fails the request clearly.
pub fn forward<M: Send + 'static>(
    shared: &Arc<Shared>,
    stage: Stage,
    mut job: Box<PrefillJob>,
    wrap: fn(Box<PrefillJob>) -> M,
    unwrap: fn(M) -> Option<Box<PrefillJob>>,
) {
    job.responder.stage = stage.as_str();
    let Err(Some(msg)) = shared.send(stage, wrap(job)) else {
        return;
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut msg = msg;
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            match shared.send(stage, msg) {
                Err(Some(m)) => msg = m,
                _ => return,
            }
        }
        if let Some(job) = unwrap(msg) {
            let PrefillJob { responder, .. } = *job;
            responder.fail(EngineError::Internal(format!(
                "the {} stage is not running; retry the request",
                stage.as_str()
            )));
        }
    });
}
