//! Per-sequence KV cache: post-RoPE keys and values of every layer, in position order.
//!
//! The cache is owned by the request, never by the model (fusion builds it from stored
//! chunks, scatters recomputed rows into it, and decoding appends to it).

use candle_core::Tensor;

use crate::{ModelError, Result};

/// Keys and values of one layer: `k`, `v` are `[H_kv, len, d]` views into buffers that
/// grow geometrically, so appending a decode token is amortised O(1).
#[derive(Debug, Clone)]
pub struct LayerKv {
    k_buf: Tensor,
    v_buf: Tensor,
    len: usize,
}

impl LayerKv {
    /// Wraps keys `[H_kv, m, d]` (RoPE applied) and values `[H_kv, m, d]` of one element
    /// type (which the cache keeps: appended rows are converted to it).
    pub fn new(k: Tensor, v: Tensor) -> Result<Self> {
        if k.dims3()? != v.dims3()? || k.dtype() != v.dtype() {
            return Err(ModelError::BadArgument(format!(
                "kv: k {:?} and v {:?} differ",
                k.dims(),
                v.dims()
            )));
        }
        let len = k.dims3()?.1;
        Ok(Self {
            k_buf: k,
            v_buf: v,
            len,
        })
    }

    /// Number of cached rows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no rows are cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keys `[H_kv, len, d]`.
    pub fn k(&self) -> Result<Tensor> {
        Ok(self.k_buf.narrow(1, 0, self.len)?)
    }

    /// Values `[H_kv, len, d]`.
    pub fn v(&self) -> Result<Tensor> {
        Ok(self.v_buf.narrow(1, 0, self.len)?)
    }

    /// Appends rows `k`, `v` `[H_kv, r, d]`, converted to the cache's element type.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<()> {
        let (hkv, r, d) = k.dims3()?;
        let (bh, cap, bd) = self.k_buf.dims3()?;
        if (bh, bd) != (hkv, d) || v.dims3()? != (hkv, r, d) {
            return Err(ModelError::BadArgument(format!(
                "kv append: {:?} onto {:?}",
                k.dims(),
                self.k_buf.dims()
            )));
        }
        if self.len + r > cap {
            // A fresh buffer: never write into storage that other tensors may share.
            let new_cap = (2 * cap).max(self.len + r).max(16);
            let grow = |buf: &Tensor| -> Result<Tensor> {
                let nb = Tensor::zeros((hkv, new_cap, d), buf.dtype(), buf.device())?;
                nb.slice_set(&buf.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
                Ok(nb)
            };
            self.k_buf = grow(&self.k_buf)?;
            self.v_buf = grow(&self.v_buf)?;
        }
        let dt = self.k_buf.dtype();
        self.k_buf
            .slice_set(&k.to_dtype(dt)?.contiguous()?, 1, self.len)?;
        self.v_buf
            .slice_set(&v.to_dtype(dt)?.contiguous()?, 1, self.len)?;
        self.len += r;
        Ok(())
    }
}

/// A sequence's KV cache: one [`LayerKv`] per layer plus the position of each row.
/// Positions are used for masking only (`key_pos <= query_pos`).
#[derive(Debug, Clone)]
pub struct KvCache {
    /// Per layer keys/values.
    pub layers: Vec<LayerKv>,
    /// Global position of each cached row, non-decreasing.
    pub positions: Vec<u32>,
}

impl KvCache {
    /// Builds a cache, checking that every layer holds `positions.len()` rows.
    pub fn new(layers: Vec<LayerKv>, positions: Vec<u32>) -> Result<Self> {
        if layers.iter().any(|l| l.len() != positions.len()) {
            return Err(ModelError::BadArgument(
                "kv cache: layer lengths differ from positions".into(),
            ));
        }
        Ok(Self { layers, positions })
    }

    /// Number of cached rows.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Next position to decode at.
    pub fn next_position(&self) -> u32 {
        self.positions.last().map(|p| p + 1).unwrap_or(0)
    }

    /// Bytes held by the live rows (all layers, K and V).
    pub fn size_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| {
                let (h, _, d) = l.k_buf.dims3().unwrap_or((0, 0, 0));
                2 * h * l.len * d * l.k_buf.dtype().size_in_bytes()
            })
            .sum()
    }
}
