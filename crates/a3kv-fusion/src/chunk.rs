//! Chunk KV: a document chunk's pre-RoPE keys and values at every layer, computed once
//! alone at local positions `0..n` and reused at any offset.

use std::sync::Arc;

use a3kv_model::{Model, Tensor};

use crate::{ChunkId, FusionError, Result};

/// A chunk's cached KV: per layer, pre-RoPE keys `[H_kv, n, d]` and values `[H_kv, n, d]`
/// (logically `[L, 2, H_kv, n, d]`).
#[derive(Debug, Clone)]
pub struct ChunkKv {
    /// Content address.
    pub id: ChunkId,
    /// The chunk's token ids.
    pub token_ids: Vec<u32>,
    /// Pre-RoPE keys per layer.
    pub keys: Vec<Tensor>,
    /// Values per layer.
    pub values: Vec<Tensor>,
}

impl ChunkKv {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.token_ids.len()
    }

    /// Whether the chunk has no tokens.
    pub fn is_empty(&self) -> bool {
        self.token_ids.is_empty()
    }

    /// Bytes of K and V over all layers.
    pub fn size_bytes(&self) -> usize {
        self.keys
            .iter()
            .chain(&self.values)
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }

    /// Checks that the cache fits `model` and has `n` rows at every layer.
    pub fn check(&self, model: &Model) -> Result<()> {
        let c = model.config();
        let n = self.len();
        if self.keys.len() != c.num_layers || self.values.len() != c.num_layers {
            return Err(FusionError::ChunkMismatch(format!(
                "chunk {} has {} layers, model {}",
                self.id,
                self.keys.len(),
                c.num_layers
            )));
        }
        for t in self.keys.iter().chain(&self.values) {
            if t.dims() != [c.num_kv_heads, n, c.head_dim] {
                return Err(FusionError::ChunkMismatch(format!(
                    "chunk {} layer shape {:?}, expected {:?}",
                    self.id,
                    t.dims(),
                    [c.num_kv_heads, n, c.head_dim]
                )));
            }
        }
        Ok(())
    }
}

/// Runs the chunk alone at local positions `0..n` and keeps every layer's pre-RoPE K and
/// V. For models that use a BOS token, pass it as `bos`: it is prepended for the pass and
/// its row dropped. Errors on an empty chunk or ids outside the vocabulary.
pub fn precompute_chunk(model: &Model, ids: &[u32], bos: Option<u32>) -> Result<Arc<ChunkKv>> {
    if ids.is_empty() {
        return Err(FusionError::InvalidParameter("empty chunk".into()));
    }
    let (run_ids, skip) = match bos {
        Some(b) => ([&[b], ids].concat(), 1),
        None => (ids.to_vec(), 0),
    };
    // Values come from the prefill's cache: keep it in the compute type (a 16-bit request
    // cache would round them here; the store rounds once, by its own setting).
    let out = model
        .with_kv_dtype(model.dtype())?
        .prefill(&run_ids, 0, true)?;
    let pre = out
        .pre_rope_keys
        .ok_or_else(|| FusionError::InvalidParameter("prefill kept no keys".into()))?;
    let mut keys = Vec::with_capacity(pre.len());
    let mut values = Vec::with_capacity(pre.len());
    for (k, lkv) in pre.into_iter().zip(&out.cache.layers) {
        keys.push(k.narrow(1, skip, ids.len())?.contiguous()?);
        values.push(lkv.v()?.narrow(1, skip, ids.len())?.contiguous()?);
    }
    Ok(Arc::new(ChunkKv {
        id: ChunkId::of(model.fingerprint(), ids),
        token_ids: ids.to_vec(),
        keys,
        values,
    }))
}
