//! ChunkLoader: per request, locates every cached part (prefix and chunks) in the store
//! tiers — computing a missing one through the store's single flight (`precompute`) —
//! and streams their layers, in order, into the job's [`LayerFeed`]. The job moves on to
//! the RelevanceScorer at once, so layers 0–1 compute while later layers still load.

use std::sync::Arc;
use std::time::Instant;

use a3kv_store::{ChunkKvData, LayerStream};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::job::{forward, LayerFeed, LayerMsg, LayerTx, PrefillJob};
use crate::metrics as m;
use crate::precompute::{store_chunk, Storing};
use crate::prepare::{Part, Plan};
use crate::shared::{Shared, Stage};
use crate::EngineError;

use super::scorer::ScorerMsg;

/// ChunkLoader's messages.
pub enum LoaderMsg {
    /// Start loading a job's parts and pass the job on.
    Load(Box<PrefillJob>),
    /// Test hook (unit tests only): panic while handling the next job.
    #[cfg(test)]
    InjectFault,
}

impl LoaderMsg {
    /// The job inside, if any.
    pub fn into_job(self) -> Option<Box<PrefillJob>> {
        match self {
            LoaderMsg::Load(j) => Some(j),
            #[cfg(test)]
            LoaderMsg::InjectFault => None,
        }
    }
}

/// ChunkLoader's state.
#[derive(Debug, Default)]
pub struct LoaderState {
    /// Set by `InjectFault`: the next job panics.
    #[cfg(test)]
    fault: bool,
}

/// The ChunkLoader actor.
pub struct ChunkLoader(pub Arc<Shared>);

impl Actor for ChunkLoader {
    type Msg = LoaderMsg;
    type State = LoaderState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(LoaderState::default())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        // Only the test build's fault hook keeps state here.
        #[cfg_attr(not(test), allow(unused_variables))] st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let shared = &self.0;
        match msg {
            #[cfg(test)]
            LoaderMsg::InjectFault => st.fault = true,
            LoaderMsg::Load(mut job) => {
                #[cfg(test)]
                if std::mem::take(&mut st.fault) {
                    panic!("injected fault in chunk loader");
                }
                if job.responder.is_closed() {
                    return Ok(()); // client gone: drop the job
                }
                let parts = match &job.req.plan {
                    Plan::Fused { parts, .. } => parts.clone(),
                    Plan::Plain { .. } => Vec::new(),
                };
                let (tx, feed) = LayerFeed::channel(shared.model.num_layers());
                job.feed = Some(feed);
                tokio::spawn(stream_parts(shared.clone(), parts, tx));
                forward(
                    shared,
                    Stage::Scorer,
                    job,
                    ScorerMsg::Score,
                    ScorerMsg::into_job,
                );
            }
        }
        Ok(())
    }
}

/// Where one part's layers come from.
enum Source {
    Stream(LayerStream, Instant),
    Data(Arc<ChunkKvData>),
}

/// Locates every part, then forwards layer `l` of all parts as soon as each has it.
async fn stream_parts(shared: Arc<Shared>, parts: Vec<Part>, tx: LayerTx) {
    if let Err(e) = stream_parts_inner(&shared, &parts, &tx).await {
        let _ = tx.send(LayerMsg::Failed(e));
    }
    let s = shared.store.stats();
    metrics::gauge!(m::CHUNK_CACHE_BYTES, "tier" => "memory").set(s.memory.bytes as f64);
    metrics::counter!(m::CHUNK_EVICTIONS, "tier" => "memory").absolute(s.memory.evictions);
    report_corrupt(
        &shared.corrupt_reported,
        "disk",
        s.corrupt_files + s.fingerprint_mismatches,
    );
    if let Some(d) = s.disk {
        metrics::gauge!(m::CHUNK_CACHE_BYTES, "tier" => "disk").set(d.stats.bytes as f64);
        metrics::counter!(m::CHUNK_EVICTIONS, "tier" => "disk").absolute(d.stats.evictions);
    }
    if let Some(r) = s.remote {
        report_corrupt(
            &shared.remote_corrupt_reported,
            "remote",
            r.corrupt + r.fingerprint_mismatches,
        );
    }
}

/// Adds this engine's new corrupt chunks since the last report to the counter (per-engine
/// deltas: several engines may share one process's recorder).
fn report_corrupt(reported: &std::sync::atomic::AtomicU64, tier: &'static str, total: u64) {
    let seen = reported.fetch_max(total, std::sync::atomic::Ordering::AcqRel);
    if total > seen {
        metrics::counter!(m::CHUNK_CORRUPT, "tier" => tier).increment(total - seen);
    }
}

/// Finds a part in the store or computes it (single flight; the result is stored).
/// `after_miss`: `stream_layers` already counted this lookup as a miss.
async fn load_or_compute(
    shared: &Arc<Shared>,
    part: &Part,
    after_miss: bool,
) -> Result<(Arc<ChunkKvData>, a3kv_store::Source), EngineError> {
    let how = Storing::Flight {
        counted: !after_miss,
    };
    let stored = store_chunk(shared, part.id, &part.ids, how).await?;
    Ok((stored.data, stored.source))
}

/// Replaces a streamed source that failed at layer `l` by the chunk loaded or recomputed
/// through the store, and returns its layer `l`.
async fn recover(
    shared: &Arc<Shared>,
    part: &Part,
    src: &mut Source,
    l: usize,
) -> Result<Arc<a3kv_store::LayerKv>, EngineError> {
    let (data, _) = load_or_compute(shared, part, false).await?;
    let layer = data
        .layers
        .get(l)
        .cloned()
        .ok_or_else(|| EngineError::Internal(format!("chunk {} lacks layer {l}", part.id)))?;
    *src = Source::Data(data);
    Ok(layer)
}

async fn stream_parts_inner(
    shared: &Arc<Shared>,
    parts: &[Part],
    tx: &LayerTx,
) -> Result<(), EngineError> {
    let store = &shared.store;
    // Open every stored part first (disk reads start at once), then compute the misses.
    let mut opened = Vec::with_capacity(parts.len());
    for p in parts {
        let t0 = Instant::now();
        // Lookups are counted per tier by the store (`a3kv:chunk_lookups_total{tier,result}`).
        let s = store.stream_layers(&p.id).await?;
        opened.push((s, t0));
    }
    let mut sources = Vec::with_capacity(parts.len());
    let mut tiers = Vec::with_capacity(parts.len());
    for (p, (s, t0)) in parts.iter().zip(opened) {
        match s {
            Some(s) => {
                tiers.push(s.tier.as_str());
                sources.push(Source::Stream(s, t0));
            }
            None => {
                let (data, src) = load_or_compute(shared, p, true).await?;
                metrics::histogram!(m::CHUNK_LOAD, "tier" => src.as_str())
                    .record(t0.elapsed().as_secs_f64());
                tiers.push(src.as_str());
                sources.push(Source::Data(data));
            }
        }
        if tx.is_closed() {
            return Ok(()); // the job is gone
        }
    }
    let _ = tx.send(LayerMsg::Tiers(tiers));
    for l in 0..shared.model.num_layers() {
        let mut layer = Vec::with_capacity(sources.len());
        for (src, part) in sources.iter_mut().zip(parts) {
            match src {
                Source::Data(d) => layer.push(d.layers.get(l).cloned().ok_or_else(|| {
                    EngineError::Internal(format!("chunk {} lacks layer {l}", part.id))
                })?),
                Source::Stream(s, t0) => match s.next().await {
                    Some(Ok((i, kv))) if i == l => {
                        if l + 1 == shared.model.num_layers() {
                            metrics::histogram!(m::CHUNK_LOAD, "tier" => s.tier.as_str())
                                .record(t0.elapsed().as_secs_f64());
                        }
                        layer.push(kv);
                    }
                    Some(Ok((i, _))) => {
                        return Err(EngineError::Internal(format!(
                            "chunk {} streamed layer {i} for {l}",
                            part.id
                        )))
                    }
                    // A layer that fails its check (or a stream cut short) is a miss, not
                    // a failed request: the layers already sent passed their checksums, the
                    // rest come from the recomputed chunk, which also replaces the bad file.
                    Some(Err(e)) => {
                        tracing::debug!(chunk = %part.id, layer = l, error = %e, "stored chunk unreadable mid-stream; recomputing it");
                        let data = recover(shared, part, src, l).await?;
                        layer.push(data);
                    }
                    None => {
                        tracing::debug!(chunk = %part.id, layer = l, "stored chunk stream ended early; recomputing it");
                        let data = recover(shared, part, src, l).await?;
                        layer.push(data);
                    }
                },
            }
        }
        if tx.send(LayerMsg::Layer(l, layer, Instant::now())).is_err() {
            return Ok(()); // cancelled: stop reading
        }
    }
    Ok(())
}
