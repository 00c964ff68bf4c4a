//! What every stage reads: the config, the model and tokenizer, the chunk store, the
//! compute pool, the load counters and the stage names. Immutable (the counters are
//! atomics written only by the RAII slots), so sharing it needs no lock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use a3kv_model::{Model, ModelTokenizer};
use a3kv_store::ChunkStore;
use ractor::{registry::where_is, ActorRef};

use crate::compute::ComputePool;
use crate::request::LoadCounters;
use crate::EngineConfig;

/// Engine-wide read-only context.
#[derive(Debug)]
pub struct Shared {
    /// Configuration.
    pub cfg: EngineConfig,
    /// The transformer.
    pub model: Model,
    /// Its tokenizer.
    pub tok: ModelTokenizer,
    /// Model name reported by the API.
    pub model_name: String,
    /// Chunk store (clones share everything).
    pub store: ChunkStore,
    /// Where model math runs.
    pub compute: ComputePool,
    /// Waiting/running counts.
    pub counters: Arc<LoadCounters>,
    /// Registered names of this engine's actors.
    pub names: StageNames,
    /// Corrupt stored chunks already added to `a3kv:chunk_corrupt_total` (the store counts
    /// them; the exporter adds the difference).
    pub corrupt_reported: std::sync::atomic::AtomicU64,
    /// The same for the remote tier.
    pub remote_corrupt_reported: std::sync::atomic::AtomicU64,
    /// Whether fused requests run their own method: false after the start-up gate failed
    /// (they run as full prefill then).
    pub fusion_open: std::sync::atomic::AtomicBool,
    /// Production shadow sampling: sampler, shadows in flight, the controller's step.
    pub shadow: crate::shadow::ShadowShared,
}

/// The pipeline stages (actor kinds), also the `actor` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Admission: tokenise, validate, queue.
    Admission,
    /// ChunkLoader: fetch chunk KV layer by layer.
    Loader,
    /// RelevanceScorer: exact layers, check layer, selection.
    Scorer,
    /// RecomputeBatcher: batched selective layers.
    Batcher,
    /// Decoder: continuous batching.
    Decoder,
}

impl Stage {
    /// All stages in pipeline order.
    pub const ALL: [Stage; 5] = [
        Stage::Admission,
        Stage::Loader,
        Stage::Scorer,
        Stage::Batcher,
        Stage::Decoder,
    ];

    /// Stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Admission => "admission",
            Stage::Loader => "chunk_loader",
            Stage::Scorer => "relevance_scorer",
            Stage::Batcher => "recompute_batcher",
            Stage::Decoder => "decoder",
        }
    }
}

/// Actor names of one engine instance. Stages find each other by name at send time, so a
/// restarted actor is reached without re-wiring anyone.
#[derive(Debug, Clone)]
pub struct StageNames {
    prefix: String,
}

/// Engines in this process get distinct actor names (tests run several).
static ENGINE_SEQ: AtomicUsize = AtomicUsize::new(0);

impl StageNames {
    /// Names for a new engine instance.
    pub fn fresh() -> Self {
        Self {
            prefix: format!("a3kv-{}", ENGINE_SEQ.fetch_add(1, Ordering::Relaxed)),
        }
    }

    /// The registered name of `stage`.
    pub fn name(&self, stage: Stage) -> String {
        format!("{}-{}", self.prefix, stage.as_str())
    }

    /// The supervisor's name.
    pub fn supervisor(&self) -> String {
        format!("{}-supervisor", self.prefix)
    }

    /// The stage whose actor is called `name`.
    pub fn stage_of(&self, name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| self.name(*s) == name)
    }

    /// The running actor of `stage`, if any (none while it restarts).
    pub fn get<M: Send + 'static>(&self, stage: Stage) -> Option<ActorRef<M>> {
        where_is(self.name(stage)).map(ActorRef::from)
    }
}

impl Shared {
    /// Sends `msg` to `stage`. If the stage is not running (restarting after a failure, or
    /// stopped) the message comes back as `Err(Some(msg))`, or `Err(None)` when it was
    /// dropped on the way (a dropped job fails its request through its `Responder`).
    pub fn send<M: Send + 'static>(&self, stage: Stage, msg: M) -> Result<(), Option<M>> {
        match self.names.get::<M>(stage) {
            Some(a) => a.send_message(msg).map_err(|e| match e {
                ractor::MessagingErr::SendErr(m) => Some(m),
                _ => None,
            }),
            None => Err(Some(msg)),
        }
    }
}
