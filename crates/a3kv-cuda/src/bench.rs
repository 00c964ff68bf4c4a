//! Kernel benchmarks for the device check, on random Llama-shaped activations (no weights:
//! the projections and MLP are not on the GPU path yet): per layer at `T` tokens, the RoPE
//! re-position of every cached key, the A^3 score + top-k, attention of the selected rows
//! (ratio `r`) and of all rows (the attention of a full prefill), gather/scatter, a pinned
//! host-to-device copy of one layer's KV, and a layer loop run cold (chunk KV copied through
//! the copy plan) and warm (resident). Wall-clock milliseconds around a synchronised stream,
//! median of `reps`.

use std::time::Instant;

use crate::backend::{CudaBackend, DeviceTensor};
use crate::copy_plan::{plan, ChunkCopy, PlanInput};
use crate::layout::{A3Shape, AttentionShape};
use crate::transfer::{execute, PinnedChunk, Staging};
use crate::{DeviceError, Result, StorageDtype};

/// A model's attention shape.
#[derive(Debug, Clone, Copy)]
pub struct ModelShape {
    /// Name in the report.
    pub name: &'static str,
    /// Layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// KV heads.
    pub kv_heads: usize,
    /// Head dim.
    pub head_dim: usize,
}

/// SmolLM2-135M and a Llama-2-7B-shaped model.
pub const SHAPES: [ModelShape; 2] = [
    ModelShape {
        name: "smollm2-135m",
        layers: 30,
        heads: 9,
        kv_heads: 3,
        head_dim: 64,
    },
    ModelShape {
        name: "llama-7b",
        layers: 32,
        heads: 32,
        kv_heads: 32,
        head_dim: 128,
    },
];

fn time_ms(be: &CudaBackend, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut ts = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        be.synchronize()?;
        let t0 = Instant::now();
        f()?;
        be.synchronize()?;
        ts.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    ts.sort_by(f64::total_cmp);
    Ok(ts[ts.len() / 2])
}

fn filled(be: &CudaBackend, dt: StorageDtype, n: usize, seed: u32) -> Result<DeviceTensor> {
    let xs: Vec<f32> = (0..n)
        .map(|i| {
            (((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 16_777_216.0)
                - 0.5
        })
        .collect();
    be.upload(dt, &xs)
}

/// Benchmarks `shape` at `tokens` tokens (question `question` rows, ratio `ratio`); returns
/// one JSON object.
pub fn bench_one(
    be: &CudaBackend,
    shape: &ModelShape,
    tokens: usize,
    dt: StorageDtype,
    ratio: f64,
    question: usize,
    reps: usize,
) -> Result<String> {
    let (h, kv, d, t) = (shape.heads, shape.kv_heads, shape.head_dim, tokens);
    let prefix = 32.min(t / 4);
    let n_doc = t - prefix - question;
    let k_sel = ((ratio * (t - question) as f64).floor() as usize).clamp(1, n_doc);
    let keys = filled(be, dt, kv * t * d, 1)?;
    let values = filled(be, dt, kv * t * d, 2)?;
    let pos: Vec<u32> = (0..t as u32).collect();
    let rope_ms = time_ms(be, reps, || {
        be.rope(&keys, kv, t, d, &pos, 10_000.0, false).map(drop)
    })?;
    let q_question = filled(be, dt, h * question * d, 3)?;
    let a3 = A3Shape {
        heads: h,
        kv_heads: kv,
        question,
        total: t,
        prefix,
        head_dim: d,
    };
    let mut selected = Vec::new();
    let a3_ms = time_ms(be, reps, || {
        let s = be.a3_scores(&q_question, &keys, &a3, 5)?;
        selected = be.top_k(&s, n_doc, k_sel)?;
        Ok(())
    })?;
    // Selected rows: the top-k document rows plus the question, at their true positions.
    let mut rows: Vec<u32> = selected.iter().map(|&j| j + prefix as u32).collect();
    rows.extend((t - question) as u32..t as u32);
    let n = rows.len();
    let q_sel = filled(be, dt, h * n * d, 4)?;
    let rows_d = be.upload_u32(&rows)?;
    let pos_d = be.upload_u32(&pos)?;
    let sel_shape = AttentionShape {
        heads: h,
        kv_heads: kv,
        rows: n,
        keys: t,
        head_dim: d,
    };
    let attn_sel_ms = time_ms(be, reps, || {
        be.attention(
            &q_sel, &rows_d, &keys, &values, &pos_d, &sel_shape, &rows, &pos,
        )
        .map(drop)
    })?;
    let q_all = filled(be, dt, h * t * d, 5)?;
    let full_shape = AttentionShape {
        rows: t,
        ..sel_shape
    };
    let attn_full_ms = time_ms(be, 1, || {
        be.attention(
            &q_all,
            &pos_d,
            &keys,
            &values,
            &pos_d,
            &full_shape,
            &pos,
            &pos,
        )
        .map(drop)
    })?;
    let fresh = filled(be, dt, kv * n * d, 6)?;
    let mut fused = filled(be, dt, kv * t * d, 7)?;
    let gs_ms = time_ms(be, reps, || {
        be.gather_rows(&keys, kv, t, d, &rows)?;
        be.scatter_rows(&fresh, &mut fused, kv, t, d, &rows)
    })?;
    // One layer of the prompt's KV (K and V) copied from pinned host memory.
    let chunk_tokens = 512usize;
    let n_chunks = t.div_ceil(chunk_tokens);
    let per_chunk = 2 * kv * chunk_tokens * d;
    let layers = shape.layers;
    let host_layer: Vec<Vec<u16>> = (0..layers).map(|_| vec![0x3c00u16; per_chunk]).collect();
    let pinned: Vec<PinnedChunk> = (0..n_chunks)
        .map(|_| PinnedChunk::new(be.context(), &host_layer))
        .collect::<Result<_>>()?;
    let pinned_refs: Vec<&PinnedChunk> = pinned.iter().collect();
    let copy_stream = be
        .context()
        .new_stream()
        .map_err(|e| DeviceError::Driver(format!("copy stream: {e}")))?;
    let loop_ms = |cold: bool| -> Result<f64> {
        let p = plan(&PlanInput {
            layers,
            first_needed: 2,
            chunks: vec![
                ChunkCopy {
                    layer_bytes: (per_chunk * 2) as u64,
                    resident: !cold,
                };
                n_chunks
            ],
            slots: 2,
        })?;
        let mut staging = Staging::for_plan(be.stream(), &p)?;
        time_ms(be, reps, || {
            execute(
                &copy_stream,
                be.stream(),
                &p,
                &pinned_refs,
                &mut staging,
                &mut |_, _| {
                    be.rope(&keys, kv, t, d, &pos, 10_000.0, false)?;
                    be.attention(
                        &q_sel, &rows_d, &keys, &values, &pos_d, &sel_shape, &rows, &pos,
                    )
                    .map(drop)
                },
            )
        })
    };
    let warm_ms = loop_ms(false)?;
    let cold_ms = loop_ms(true)?;
    let copy_bytes = n_chunks * per_chunk * 2;
    let h2d_ms = {
        let p = plan(&PlanInput {
            layers: 1,
            first_needed: 0,
            chunks: vec![
                ChunkCopy {
                    layer_bytes: (per_chunk * 2) as u64,
                    resident: false,
                };
                n_chunks
            ],
            slots: 1,
        })?;
        let mut staging = Staging::for_plan(be.stream(), &p)?;
        time_ms(be, reps, || {
            execute(
                &copy_stream,
                be.stream(),
                &p,
                &pinned_refs,
                &mut staging,
                &mut |_, _| Ok(()),
            )
        })?
    };
    // Attention-side cost of a fused prefill vs a full one (projections and MLP excluded):
    // fused = check-layer score + (L - 2) x (re-position + selected-row attention + scatter)
    // + 2 full layers; full = L x full attention.
    let fused_ms =
        a3_ms + 2.0 * attn_full_ms + (layers - 2) as f64 * (rope_ms + attn_sel_ms + gs_ms);
    let full_ms = layers as f64 * attn_full_ms;
    Ok(format!(
        "{{\"model\":\"{}\",\"dtype\":\"{dt}\",\"tokens\":{t},\"selected_rows\":{n},\"ratio\":{ratio},\
         \"rope_all_keys_ms\":{rope_ms:.4},\"a3_score_topk_ms\":{a3_ms:.4},\
         \"attention_selected_ms\":{attn_sel_ms:.4},\"attention_all_rows_ms\":{attn_full_ms:.4},\
         \"gather_scatter_ms\":{gs_ms:.4},\"h2d_one_layer_ms\":{h2d_ms:.4},\
         \"h2d_one_layer_gb_per_s\":{:.2},\"layer_loop_warm_ms\":{warm_ms:.4},\
         \"layer_loop_cold_ms\":{cold_ms:.4},\"cold_over_warm\":{:.4},\
         \"attention_only_fused_over_full\":{:.4}}}",
        shape.name,
        copy_bytes as f64 / (h2d_ms * 1e-3) / 1e9,
        cold_ms / warm_ms,
        fused_ms / full_ms
    ))
}
