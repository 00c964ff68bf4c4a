//! Precompute-and-store: the one way a chunk's KV enters the store. [`store_chunk`] computes a
//! chunk (`precompute_chunk`, then `to_store` into the store's layout) and stores it, for the
//! ChunkLoader (a request's missing part), `Engine::put_chunks` and `a3kv precompute` (through
//! `Engine::store_chunk`) alike, so every caller stores the same bytes under the same id.
//!
//! Where the computation runs depends on who may wait for it (docs/design.md §5.7):
//! - [`Storing::Flight`] (a request's part) runs inside the store's single flight on a
//!   blocking thread, never on the compute pool: the prefill that waits for this part's layers
//!   holds a compute thread while it waits (the scorer reads its `LayerFeed` there), so a
//!   flight queued behind it on the pool could wait forever.
//! - [`Storing::Put`] (storing ahead of requests) runs on the compute pool, where nothing
//!   waits for it but its caller, and writes every tier before it returns.

use std::sync::Arc;

use a3kv_fusion::{precompute_chunk, ChunkId};
use a3kv_model::Model;
use a3kv_store::{ChunkKvData, KvDtype, PutOutcome, Source};

use crate::convert::to_store;
use crate::shared::Shared;
use crate::EngineError;

/// How [`store_chunk`] stores a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storing {
    /// A request's part: from the store if any tier holds it, else computed once for every
    /// concurrent caller (fleet-wide where a shared tier grants leases) and put in memory, the
    /// lower tiers written in the background. `counted`: this lookup is not yet in
    /// `a3kv:chunk_lookups_total` (false after a `stream_layers` miss, which counted it).
    Flight {
        /// Whether the store should count this lookup.
        counted: bool,
    },
    /// Ahead of requests: computed now (the caller found it missing) and written to every tier
    /// before returning, pinned in memory if `pin`.
    Put {
        /// Pin in memory until unpinned.
        pin: bool,
    },
}

/// What [`store_chunk`] did.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The chunk as stored.
    pub data: Arc<ChunkKvData>,
    /// Where it came from (`Computed` when this call or its flight computed it).
    pub source: Source,
    /// Where [`Storing::Put`] wrote it (`None` for a flight, whose writes are in the
    /// background).
    pub put: Option<PutOutcome>,
}

impl Stored {
    /// The chunk and where [`Storing::Put`] wrote it.
    ///
    /// # Errors
    /// `Internal` for a flight's result, which has no such outcome.
    pub fn written(self) -> Result<(Arc<ChunkKvData>, PutOutcome), EngineError> {
        let outcome = self.put.ok_or_else(|| {
            EngineError::Internal("a chunk stored by a flight has no put outcome".into())
        })?;
        Ok((self.data, outcome))
    }
}

/// Precompute-and-store of the chunk `id` with token ids `ids` (see [`Storing`]).
///
/// # Errors
/// `Internal` (or the fusion error's mapping) when computing fails, `ShuttingDown` when the
/// compute pool is closed, store errors (invalid data, a panicked task).
pub async fn store_chunk(
    shared: &Shared,
    id: ChunkId,
    ids: &[u32],
    how: Storing,
) -> Result<Stored, EngineError> {
    let model = shared.model.clone();
    let ids = ids.to_vec();
    let dtype = shared.cfg.kv_dtype;
    let compute = move || compute(&model, &ids, dtype);
    match how {
        Storing::Flight { counted } => {
            let store = &shared.store;
            let (data, source) = if counted {
                store.get_or_compute(id, compute).await?
            } else {
                store.compute_missing(id, compute).await?
            };
            Ok(Stored {
                data,
                source,
                put: None,
            })
        }
        Storing::Put { pin } => {
            let data = Arc::new(shared.compute.run(compute).await??);
            let outcome = shared.store.put(id, data.clone(), pin).await?;
            Ok(Stored {
                data,
                source: Source::Computed,
                put: Some(outcome),
            })
        }
    }
}

/// A chunk's KV in the store's layout: its causal prefill alone (pre-RoPE keys, values),
/// flattened into elements of `dtype` (`engine.kv_dtype`). Blocking model math.
fn compute(model: &Model, ids: &[u32], dtype: KvDtype) -> Result<ChunkKvData, EngineError> {
    let kv = precompute_chunk(model, ids, None)?;
    to_store(model, &kv, dtype)
}

/// [`compute`] in f32, for the crate's tests (stored chunks built as the engine builds them).
#[cfg(test)]
pub fn chunk_data(model: &Model, ids: &[u32]) -> Result<ChunkKvData, EngineError> {
    compute(model, ids, KvDtype::F32)
}
