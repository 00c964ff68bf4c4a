//! [`Engine`]: the handle the server and CLI hold. `submit` does the cheap checks and the
//! waiting-queue bound synchronously (a full queue is an immediate `QueueFull`), then hands
//! the request to the Admission actor; everything else happens in the actor pipeline and
//! arrives on the request's event stream.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use a3kv_fusion::{ChunkId, RagParts};
use a3kv_model::LoadedModel;
use a3kv_store::{ChunkStore, PutOutcome, Tier};
use ractor::{Actor, ActorRef};
use tokio::sync::mpsc;

use crate::actors::admission::{AdmissionMsg, Submitted};
use crate::actors::supervisor::{Supervisor, SupervisorMsg};
use crate::compute::ComputePool;
use crate::gate::{self, GateReport};
use crate::metrics as m;
use crate::precompute::{store_chunk, Storing};
use crate::prepare::precheck;
use crate::request::{LoadCounters, QueueSlot, Responder, Trace};
use crate::shadow::ShadowShared;
use crate::shared::{Shared, Stage, StageNames};
use crate::{ChunkInfo, EngineConfig, EngineError, EngineEvent, GenerateRequest};

/// Timeout of every call into an actor.
const CALL_TIMEOUT_MS: u64 = 5_000;

/// The engine handle: cheap to clone, all clones drive the same pipeline.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    supervisor: ActorRef<SupervisorMsg>,
    gate: Option<GateReport>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model", &self.shared.model_name)
            .finish()
    }
}

impl Engine {
    /// Opens the chunk store, starts the compute pool and the supervised actors.
    ///
    /// # Errors
    /// `InvalidRequest` for a config out of range; `Internal` if the store or an actor
    /// cannot start.
    pub async fn start(cfg: EngineConfig, model: LoadedModel) -> Result<Engine, EngineError> {
        if cfg.max_running == 0 || cfg.chunk_tokens == 0 || cfg.max_batch_tokens == 0 {
            return Err(EngineError::InvalidRequest(
                "engine: max_running, chunk_tokens and max_batch_tokens must be >= 1".into(),
            ));
        }
        cfg.default_fusion
            .validate(model.model.num_layers())
            .map_err(|e| EngineError::InvalidRequest(format!("engine.default_fusion: {e}")))?;
        cfg.fusion_shadow.validate()?;
        let store = ChunkStore::open(&cfg.store, model.model.fingerprint().0).await?;
        let compute = ComputePool::new(cfg.compute_threads)?;
        let model_name = model
            .source
            .file_stem()
            .map_or_else(|| "a3kv".to_string(), |s| s.to_string_lossy().into_owned());
        let names = StageNames::fresh();
        let (shadow, shadow_rx) = ShadowShared::new();
        let kv_model = model
            .model
            .with_kv_dtype(crate::convert::candle_dtype(cfg.kv_dtype))?;
        let shared = Arc::new(Shared {
            cfg,
            model: kv_model,
            tok: model.tokenizer,
            model_name,
            store,
            compute,
            counters: Arc::new(LoadCounters::default()),
            names: names.clone(),
            corrupt_reported: Default::default(),
            remote_corrupt_reported: Default::default(),
            fusion_open: std::sync::atomic::AtomicBool::new(true),
            shadow,
        });
        tokio::spawn(crate::shadow::run_controller(
            Arc::downgrade(&shared),
            shared.cfg.fusion_shadow.clone(),
            shadow_rx,
        ));
        let gate = run_gate(&shared).await?;
        let (supervisor, _) =
            Actor::spawn(Some(names.supervisor()), Supervisor(shared.clone()), ())
                .await
                .map_err(|e| {
                    EngineError::Internal(format!("cannot start the engine actors: {e}"))
                })?;
        Ok(Engine {
            shared,
            supervisor,
            gate,
        })
    }

    /// What the start-up fusion gate found (`None` when it is disabled).
    pub fn gate_report(&self) -> Option<&GateReport> {
        self.gate.as_ref()
    }

    /// Submits a request; events arrive on the returned stream (dropping it cancels the
    /// request at its next step). Validation that needs tokenising (prompt length, unknown
    /// documents) fails as the stream's first event, `Failed(..)`.
    ///
    /// # Errors
    /// `QueueFull` when `max_waiting` requests wait; `ShuttingDown`; `InvalidRequest` /
    /// `TooManyDocuments` for input rejected without tokenising.
    pub fn submit(&self, req: GenerateRequest) -> Result<mpsc::Receiver<EngineEvent>, EngineError> {
        let s = &self.shared;
        let reject = |e: EngineError| {
            metrics::counter!(m::REQUESTS_REJECTED, "reason" => e.kind()).increment(1);
            Err(e)
        };
        if s.counters.shutting_down.load(Ordering::Acquire) {
            return reject(EngineError::ShuttingDown);
        }
        if let Err(e) = precheck(&s.cfg, &req) {
            return reject(e);
        }
        let Some(queue_slot) = QueueSlot::try_acquire(&s.counters, s.cfg.max_waiting) else {
            return reject(EngineError::QueueFull {
                retry_after_secs: 1,
            });
        };
        let (tx, rx) = mpsc::channel(req.max_tokens + 8);
        let sub = Box::new(Submitted {
            req,
            responder: Responder::new(tx),
            queue_slot,
            trace: Trace::new(),
        });
        match s.send(Stage::Admission, AdmissionMsg::Submit(sub)) {
            Ok(()) => Ok(rx),
            Err(Some(AdmissionMsg::Submit(sub))) => {
                let Submitted { responder, .. } = *sub;
                responder.fail(EngineError::Internal("admission is restarting".into()));
                reject(EngineError::ShuttingDown)
            }
            Err(_) => reject(EngineError::ShuttingDown),
        }
    }

    /// Precomputes and stores documents (split into chunks of `chunk_tokens`), pinned in
    /// memory if `pin`: a missing chunk is computed on the compute pool and written to every
    /// tier before this returns. A document's id is the given one or the content hash hex.
    ///
    /// # Errors
    /// `InvalidRequest` for an empty document; `Internal` for compute/store failures.
    pub async fn put_chunks(
        &self,
        texts: Vec<(Option<String>, String)>,
        pin: bool,
    ) -> Result<Vec<ChunkInfo>, EngineError> {
        let s = &self.shared;
        let mut out = Vec::with_capacity(texts.len());
        for (id, text) in texts {
            let s2 = s.clone();
            let chunks = s
                .compute
                .run(move || RagParts::document_chunks(&s2.tok, &text, s2.cfg.chunk_tokens))
                .await??;
            let fp = *s.model.fingerprint();
            let all: Vec<u32> = chunks.iter().flatten().copied().collect();
            let doc_id = id.unwrap_or_else(|| ChunkId::of(&fp, &all).to_hex());
            for ids in &chunks {
                let key = ChunkId::of(&fp, ids);
                let outcome = match s.store.get(&key).await? {
                    Some(_) if !pin => continue,
                    Some((d, _)) => s.store.put(key, d, pin).await?,
                    None => {
                        let stored = store_chunk(s, key, ids, Storing::Put { pin }).await?;
                        stored.written()?.1
                    }
                };
                if pin && !outcome.pinned {
                    return Err(EngineError::Internal(format!(
                        "document {doc_id}: the memory tier cannot pin it (budget full)"
                    )));
                }
            }
            // Persisted so the id resolves after a restart and on other replicas.
            s.store.put_document(&doc_id, &chunks).await?;
            let chunks = Arc::new(chunks);
            s.send(
                Stage::Admission,
                AdmissionMsg::RegisterDoc(doc_id.clone(), chunks, pin),
            )
            .map_err(|_| EngineError::Internal("admission is restarting".into()))?;
            out.push(self.get_chunk(&doc_id).await?);
        }
        Ok(out)
    }

    /// Precomputes the chunk with token ids `ids` (one piece of a document, as
    /// [`a3kv_fusion::RagParts::document_chunks`] cuts it) on the compute pool and writes it to
    /// every tier now, whether or not a tier holds it already: what `a3kv precompute` does for
    /// each chunk it found missing or corrupt. Returns the chunk's KV bytes and where it was
    /// written (a tier that refused it, full or unreachable, says `false`).
    ///
    /// # Errors
    /// `InvalidRequest` for no ids or ids outside the vocabulary; `Internal` for compute or
    /// store failures; `ShuttingDown`.
    pub async fn store_chunk(&self, ids: &[u32]) -> Result<(u64, PutOutcome), EngineError> {
        let s = &self.shared;
        let key = ChunkId::of(s.model.fingerprint(), ids);
        let stored = store_chunk(s, key, ids, Storing::Put { pin: false }).await?;
        let (data, outcome) = stored.written()?;
        Ok((data.size_bytes(), outcome))
    }

    async fn lookup(&self, id: &str) -> Result<Option<(Arc<Vec<Vec<u32>>>, bool)>, EngineError> {
        let a = self
            .shared
            .names
            .get::<AdmissionMsg>(Stage::Admission)
            .ok_or_else(|| EngineError::Internal("admission is restarting".into()))?;
        let known = ractor::call_t!(a, AdmissionMsg::LookupDoc, CALL_TIMEOUT_MS, id.to_string())
            .map_err(|e| EngineError::Internal(format!("admission: {e}")))?;
        if known.is_some() {
            return Ok(known);
        }
        // Stored by an earlier run or another replica: register it here too.
        let Some(chunks) = self.shared.store.get_document(id).await? else {
            return Ok(None);
        };
        let chunks = Arc::new(chunks);
        let _ = a.send_message(AdmissionMsg::RegisterDoc(
            id.to_string(),
            chunks.clone(),
            false,
        ));
        Ok(Some((chunks, false)))
    }

    /// What the store holds for a document (its id, or a chunk's content hash).
    ///
    /// # Errors
    /// `UnknownChunk` if no tier holds it.
    pub async fn get_chunk(&self, id: &str) -> Result<ChunkInfo, EngineError> {
        let s = &self.shared;
        let fp = *s.model.fingerprint();
        let (keys, pinned) = match self.lookup(id).await? {
            Some((chunks, pinned)) => (
                chunks
                    .iter()
                    .map(|c| ChunkId::of(&fp, c))
                    .collect::<Vec<_>>(),
                pinned,
            ),
            None => {
                let key: ChunkId = id
                    .parse()
                    .map_err(|_| EngineError::UnknownChunk(id.to_string()))?;
                (vec![key], false)
            }
        };
        let mut info = ChunkInfo {
            id: id.to_string(),
            tokens: 0,
            bytes: 0,
            tier: "memory".into(),
            pinned,
        };
        for key in keys {
            let tier = s.store.tier_of(&key);
            let Some((data, _)) = s.store.get(&key).await? else {
                return Err(EngineError::UnknownChunk(id.to_string()));
            };
            info.tokens += data.meta.n_tokens as usize;
            info.bytes += data.size_bytes();
            if tier == Some(Tier::Disk) {
                info.tier = "disk".into();
            }
        }
        Ok(info)
    }

    /// Removes a document's chunks from every tier; `false` if nothing was stored.
    ///
    /// # Errors
    /// `Internal` if a file cannot be deleted.
    pub async fn delete_chunk(&self, id: &str) -> Result<bool, EngineError> {
        let s = &self.shared;
        let fp = *s.model.fingerprint();
        let a = s
            .names
            .get::<AdmissionMsg>(Stage::Admission)
            .ok_or_else(|| EngineError::Internal("admission is restarting".into()))?;
        let registered =
            ractor::call_t!(a, AdmissionMsg::RemoveDoc, CALL_TIMEOUT_MS, id.to_string())
                .map_err(|e| EngineError::Internal(format!("admission: {e}")))?;
        let recorded = s.store.get_document(id).await?;
        s.store.remove_document(id).await?;
        let known = registered.or_else(|| recorded.map(Arc::new));
        let keys: Vec<ChunkId> = match &known {
            Some(chunks) => chunks.iter().map(|c| ChunkId::of(&fp, c)).collect(),
            None => match id.parse() {
                Ok(k) => vec![k],
                Err(_) => return Ok(false),
            },
        };
        let mut any = known.is_some();
        for k in keys {
            s.store.unpin(&k);
            any |= s.store.remove(&k).await?;
        }
        Ok(any)
    }

    /// The served model's name (its file stem).
    pub fn model_name(&self) -> String {
        self.shared.model_name.clone()
    }

    /// Whether the engine takes requests (started, not shutting down, pipeline up).
    pub fn is_ready(&self) -> bool {
        !self.shared.counters.shutting_down.load(Ordering::Acquire)
            && Stage::ALL
                .iter()
                .all(|s| ractor::registry::where_is(self.shared.names.name(*s)).is_some())
    }

    /// The shadow controller's step: the default recompute ratio is raised by
    /// `step · engine.fusion_shadow.ratio_step` (0 = as configured).
    pub fn shadow_step(&self) -> usize {
        self.shared.shadow.step()
    }

    /// Shadow prefills in flight (at most `engine.fusion_shadow.max_pending`).
    pub fn shadow_pending(&self) -> usize {
        self.shared.shadow.pending()
    }

    /// Requests in prefill or decode.
    pub fn running(&self) -> usize {
        self.shared.counters.running.load(Ordering::Acquire)
    }

    /// Requests waiting to run.
    pub fn waiting(&self) -> usize {
        self.shared.counters.waiting.load(Ordering::Acquire)
    }

    /// The chunk store (stats for the exporter, benches).
    pub fn store(&self) -> &ChunkStore {
        &self.shared.store
    }

    /// Test hook (unit tests only): makes `stage`'s actor panic on its next job.
    #[cfg(test)]
    pub(crate) fn inject_fault(&self, stage: Stage) {
        let _ = self
            .supervisor
            .send_message(SupervisorMsg::InjectFault(stage));
    }

    /// Stops intake, lets running and waiting requests finish until `deadline`, then stops
    /// the actors (requests still in flight fail with an error).
    pub async fn shutdown(&self, deadline: Duration) {
        let c = &self.shared.counters;
        c.shutting_down.store(true, Ordering::Release);
        let until = Instant::now() + deadline;
        while (c.running.load(Ordering::Acquire) > 0 || c.waiting.load(Ordering::Acquire) > 0)
            && Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = ractor::call_t!(self.supervisor, SupervisorMsg::Shutdown, CALL_TIMEOUT_MS);
        self.shared.store.flush().await;
    }
}

/// Runs the start-up fusion gate on the compute pool, closes fusion if it fails, and sets the
/// `a3kv:fusion_gate_state` gauge (1 passed, 0 failed: fused requests run as full prefill,
/// -1 disabled).
async fn run_gate(shared: &Arc<Shared>) -> Result<Option<GateReport>, EngineError> {
    if !shared.cfg.fusion_gate.enabled {
        metrics::gauge!(m::FUSION_GATE_STATE).set(-1.0);
        tracing::info!(
            "fusion gate disabled (engine.fusion_gate.enabled = false): fusion is served unchecked"
        );
        return Ok(None);
    }
    let s = shared.clone();
    let t0 = Instant::now();
    let report = shared
        .compute
        .run(move || {
            gate::run(
                &s.model,
                &s.tok,
                &s.cfg.default_fusion,
                s.cfg.chunk_tokens,
                &s.cfg.fusion_gate,
            )
        })
        .await?;
    shared.fusion_open.store(report.passed, Ordering::Release);
    metrics::gauge!(m::FUSION_GATE_STATE).set(if report.passed { 1.0 } else { 0.0 });
    if report.passed {
        tracing::info!(
            max_logit_diff = report.max_logit_diff,
            canary_kl = ?report.canary_kl,
            secs = t0.elapsed().as_secs_f64(),
            "fusion gate passed"
        );
    } else {
        tracing::error!(
            reason = report.reason.as_deref().unwrap_or("unknown"),
            max_logit_diff = report.max_logit_diff,
            canary_kl = ?report.canary_kl,
            "fusion gate FAILED: fused requests are served as full prefill on this model"
        );
    }
    Ok(Some(report))
}
