//! Eviction after the fused prefill (docs/design.md §2.7): cap each head's decode cache at
//! `C` rows, by SnapKV (question rows as the observation window) or streaming
//! (prefix + most recent). Attention during prefill still saw the full fused cache.

use a3kv_model::{KvCache, LayerKv, Tensor};

use crate::a3::moving_average;
use crate::prompt::RagPrompt;
use crate::selection::top_k;
use crate::{Eviction, Result};

fn gather_rows(t: &Tensor, rows: &[u32]) -> Result<Tensor> {
    let idx = Tensor::from_slice(rows, rows.len(), t.device())?;
    Ok(t.index_select(&idx, 1)?.contiguous()?)
}

/// Applies `eviction` to `cache`. `question_q` holds, per layer, the RoPE'd queries of the
/// question rows `[H, Q, d]` (SnapKV's observation window); when it is empty SnapKV falls
/// back to streaming. A cache within capacity is returned unchanged.
pub fn evict(
    cache: &KvCache,
    eviction: Eviction,
    prompt: &RagPrompt,
    question_q: &[Tensor],
) -> Result<KvCache> {
    let t = cache.len();
    let (capacity, pooling) = match eviction {
        Eviction::SnapKv { capacity, pooling } => (capacity, Some(pooling)),
        Eviction::Streaming { capacity } => (capacity, None),
    };
    if t <= capacity {
        return Ok(cache.clone());
    }
    let w = prompt.question_len().min(t);
    let snap = pooling.filter(|_| question_q.len() == cache.layers.len() && capacity > w);
    let Some(pool) = snap else {
        // Streaming: prefix + most recent rows, the same for every head.
        let p = prompt.prefix_len().min(capacity);
        let mut rows: Vec<u32> = (0..p as u32).collect();
        rows.extend((t - (capacity - p)) as u32..t as u32);
        let mut layers = Vec::with_capacity(cache.layers.len());
        for l in &cache.layers {
            layers.push(LayerKv::new(
                gather_rows(&l.k()?, &rows)?,
                gather_rows(&l.v()?, &rows)?,
            )?);
        }
        let positions = rows.iter().map(|&r| cache.positions[r as usize]).collect();
        return Ok(KvCache::new(layers, positions)?);
    };
    let keep = capacity - w;
    let ctx = t - w;
    let window: Vec<u32> = (ctx as u32..t as u32).collect();
    let mut layers = Vec::with_capacity(cache.layers.len());
    let mut slot_pos = vec![0u32; capacity];
    for (l, lkv) in cache.layers.iter().enumerate() {
        let k = lkv.k()?;
        let v = lkv.v()?;
        let (hkv, _, d) = k.dims3()?;
        let q = &question_q[l];
        let (h, _, _) = q.dims3()?;
        let g = h / hkv;
        // Window queries over the context keys (all earlier than the window: no mask).
        let kc = k.narrow(1, 0, ctx)?.to_dtype(q.dtype())?; // a 16-bit cache is widened
        let qg = q.reshape((hkv, g * w, d))?;
        let scores = (qg.matmul(&kc.t()?)? / (d as f64).sqrt())?;
        let probs = candle_nn_softmax(&scores)?;
        let per_head: Vec<Vec<f32>> = probs
            .reshape((hkv, g * w, ctx))?
            .sum(1)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec2()?;
        let mut ks = Vec::with_capacity(hkv);
        let mut vs = Vec::with_capacity(hkv);
        for (hh, s) in per_head.iter().enumerate() {
            let pooled = moving_average(s, pool);
            let mut rows: Vec<u32> = top_k(&pooled, keep, &[])
                .into_iter()
                .map(|i| i as u32)
                .collect();
            rows.extend(&window);
            for (slot, &r) in rows.iter().enumerate() {
                slot_pos[slot] = slot_pos[slot].max(cache.positions[r as usize]);
            }
            ks.push(gather_rows(&k.narrow(0, hh, 1)?, &rows)?);
            vs.push(gather_rows(&v.narrow(0, hh, 1)?, &rows)?);
        }
        layers.push(LayerKv::new(Tensor::cat(&ks, 0)?, Tensor::cat(&vs, 0)?)?);
    }
    // Heads keep different rows; positions only mask, and every kept row precedes the next
    // decoded token, so the per-slot maximum keeps `key_pos <= query_pos` exact.
    Ok(KvCache::new(layers, slot_pos)?)
}

fn candle_nn_softmax(t: &Tensor) -> Result<Tensor> {
    let max = t.max_keepdim(candle_core::D::Minus1)?;
    let e = t.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(candle_core::D::Minus1)?;
    Ok(e.broadcast_div(&s)?)
}
