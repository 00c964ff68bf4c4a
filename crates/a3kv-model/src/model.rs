//! The transformer and its layer- and row-level API.
//!
//! Everything above this crate drives the model through these pieces: [`Model::embed`],
//! [`Model::layer_qkv`] (pre-RoPE q/k/v of chosen rows), [`Model::rope`] (rotate to any
//! global positions), [`Model::layer_attention`] (chosen query rows over a supplied K/V,
//! causal by true position), [`Model::layer_mlp`], and [`Model::logits`] on chosen rows.
//! [`Model::prefill`] and [`Model::decode_step`] are built from the same pieces.
//!
//! Every projection picks its weights by row count: a matmul of at most
//! [`QUANTIZED_MAX_ROWS`] rows (decode steps, small batches) multiplies the quantised blocks
//! when the model has them ([`crate::DecodeWeights`]), larger ones the f32 weights.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::attention::causal_attention;
use crate::kernels::cpu::attention::batched_decode_attention;
use crate::kv::{KvCache, LayerKv};
use crate::quant::{DecodeMatrix, QuantFormat, QuantLayerWeights, QuantWeights};
use crate::rope::Rope;
use crate::weights::ModelWeights;
use crate::{DecodeWeights, Fingerprint, FingerprintBuilder, ModelConfig, ModelError, Result};

/// Largest row count of a matmul that runs on the quantised weights. Up to here reading
/// 5.5x fewer bytes beats f32 gemm's higher compute rate: `a3kv bench decode --crossover`
/// (SmolLM2-135M, 2 AVX-512 cores) timed prefills of n rows 2.5-4.1x faster on the quantised
/// weights for n <= 24, 1.5-1.8x at 32-64, 1.4x at 96, 1.2x at 128; 64 keeps a margin, and
/// prefills of more rows stay on f32 gemm.
pub const QUANTIZED_MAX_ROWS: usize = 64;

/// Pre-RoPE projections of some rows at one layer.
#[derive(Debug, Clone)]
pub struct Qkv {
    /// Queries `[H, n, d]`, before RoPE.
    pub q: Tensor,
    /// Keys `[H_kv, n, d]`, before RoPE.
    pub k: Tensor,
    /// Values `[H_kv, n, d]`.
    pub v: Tensor,
}

/// Output of a prefill.
#[derive(Debug, Clone)]
pub struct PrefillOutput {
    /// Logits of the last row, `[V]`, f32.
    pub logits: Tensor,
    /// The sequence's KV cache (post-RoPE keys).
    pub cache: KvCache,
    /// Pre-RoPE keys per layer `[H_kv, n, d]`, when asked for (chunk precompute).
    pub pre_rope_keys: Option<Vec<Tensor>>,
}

/// A loaded transformer. Immutable: caches are passed in, never owned.
#[derive(Debug, Clone)]
pub struct Model {
    config: ModelConfig,
    weights: ModelWeights,
    rope: Rope,
    dtype: DType,
    device: Device,
    /// Identity of the weights as loaded (f32 path).
    base_fingerprint: Fingerprint,
    /// `base_fingerprint`, plus the quantised path when it is on.
    fingerprint: Fingerprint,
    /// Matmuls of at most this many rows use `weights.quantized` (0: never).
    quant_max_rows: usize,
    /// Element type of the request caches this model builds (math stays in `dtype`).
    kv_dtype: DType,
}

/// What a projection computes: prompt rows (prefill, fused passes, chunk precompute) get
/// exact products; decode steps may round their activations to 16 bits on the packed layout
/// (`DecodeMatrix`). Decode produces no stored KV, so chunk identity needs no mark of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Prompt,
    Decode,
}

/// The identity of a model whose matmuls of up to `max_rows` rows are quantised.
fn quantized_fingerprint(base: &Fingerprint, max_rows: usize) -> Fingerprint {
    if max_rows == 0 {
        return *base;
    }
    let mut fp = FingerprintBuilder::default();
    fp.bytes("weights", &base.0)
        .bytes("quantized_max_rows", &(max_rows as u64).to_le_bytes());
    fp.finish()
}

impl Model {
    /// Assembles a model from built weights. With quantised weights attached
    /// ([`ModelWeights::quantized`]) on the CPU, matmuls of up to [`QUANTIZED_MAX_ROWS`] rows
    /// use them.
    pub fn new(
        config: ModelConfig,
        weights: ModelWeights,
        dtype: DType,
        device: Device,
        fingerprint: Fingerprint,
    ) -> Result<Self> {
        config.validate()?;
        let rope = Rope::new(
            config.head_dim,
            config.rope_theta,
            config.max_position,
            config.rope_interleaved,
            &device,
        )?;
        let quant_max_rows = if weights.quantized.is_some() && device.is_cpu() {
            QUANTIZED_MAX_ROWS
        } else {
            0
        };
        Ok(Self {
            config,
            weights,
            rope,
            dtype,
            device,
            base_fingerprint: fingerprint,
            fingerprint: quantized_fingerprint(&fingerprint, quant_max_rows),
            quant_max_rows,
            kv_dtype: dtype,
        })
    }

    /// The same model keeping its request caches ([`KvCache`]) in `kv_dtype`: f16 or bf16
    /// halve their memory; keys and values are rounded once when stored, attention math stays
    /// in the compute dtype. Shares the weights. The fingerprint does not change (a chunk's
    /// cache is the same computation whatever type stores it). Errors on a type other than
    /// f32, f16 or bf16.
    pub fn with_kv_dtype(&self, kv_dtype: DType) -> Result<Model> {
        if !matches!(kv_dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(ModelError::BadArgument(format!(
                "kv dtype {kv_dtype:?}: f32, f16 or bf16"
            )));
        }
        let mut m = self.clone();
        m.kv_dtype = kv_dtype;
        Ok(m)
    }

    /// Element type of the request caches (see [`Model::with_kv_dtype`]).
    pub fn kv_dtype(&self) -> DType {
        self.kv_dtype
    }

    /// Keys and values `[H_kv, m, d]` as one cached layer in [`Model::kv_dtype`].
    pub fn cache_layer(&self, k: Tensor, v: Tensor) -> Result<LayerKv> {
        LayerKv::new(k.to_dtype(self.kv_dtype)?, v.to_dtype(self.kv_dtype)?)
    }

    /// Which weights the token-by-token path uses.
    pub fn decode_weights(&self) -> DecodeWeights {
        if self.quant_max_rows > 0 {
            DecodeWeights::Quantized
        } else {
            DecodeWeights::F32
        }
    }

    /// Largest matmul row count that runs on the quantised weights (0 when they are off).
    pub fn quantized_max_rows(&self) -> usize {
        self.quant_max_rows
    }

    /// The same model with matmuls of up to `max_rows` rows on the quantised weights (0:
    /// f32 everywhere). Shares the weights. Errors if `max_rows > 0` and the model has no
    /// quantised weights or is not on the CPU.
    pub fn with_quantized_max_rows(&self, max_rows: usize) -> Result<Model> {
        if max_rows > 0 && (self.weights.quantized.is_none() || !self.device.is_cpu()) {
            return Err(ModelError::BadArgument(
                "no quantised weights: load a GGUF on the CPU with decode weights \"quantized\""
                    .into(),
            ));
        }
        let mut m = self.clone();
        m.quant_max_rows = max_rows;
        m.fingerprint = quantized_fingerprint(&m.base_fingerprint, max_rows);
        Ok(m)
    }

    /// The same model with the token-by-token path on `mode`'s weights (the f32 twin of a
    /// quantised model, or back). Shares the weights; errors as
    /// [`Model::with_quantized_max_rows`].
    pub fn with_decode_weights(&self, mode: DecodeWeights) -> Result<Model> {
        self.with_quantized_max_rows(match mode {
            DecodeWeights::Quantized => QUANTIZED_MAX_ROWS,
            DecodeWeights::F32 => 0,
        })
    }

    /// The same model with quantised weights made from its f32 ones (`format` blocks), on
    /// for matmuls of up to [`QUANTIZED_MAX_ROWS`] rows: for checkpoints without quantised
    /// blocks and for tests. Errors off the CPU.
    pub fn with_quantized_weights(&self, format: QuantFormat) -> Result<Model> {
        let mut m = self.clone();
        m.weights.quantized = Some(Arc::new(QuantWeights::from_f32(&self.weights, format)?));
        m.base_fingerprint = {
            let mut fp = FingerprintBuilder::default();
            fp.bytes("weights", &self.base_fingerprint.0)
                .bytes("quantized_from_f32", format.as_str().as_bytes());
            fp.finish()
        };
        m.with_quantized_max_rows(QUANTIZED_MAX_ROWS)
    }

    /// The quantised projections of `layer`, when the quantised path is on.
    fn quant_layer(&self, layer: usize) -> Option<&QuantLayerWeights> {
        if self.quant_max_rows == 0 {
            return None;
        }
        self.weights.quantized.as_ref()?.layers.get(layer)
    }

    /// `x [n, in] · w_t [in, out]`, on `q` (`[out, in]`) when `n` is small enough: exact
    /// products for prompt rows, the decode kernel for decode steps. Without a dense `w_t`
    /// (dropped at load, [`ModelWeights::drop_dense_vocab`], only where `q` holds the file's
    /// own blocks) every other product runs exactly on `q`.
    fn project(
        &self,
        x: &Tensor,
        w_t: Option<&Tensor>,
        q: Option<&DecodeMatrix>,
        pass: Pass,
    ) -> Result<Tensor> {
        if let Some(q) = q {
            if x.dim(0)? <= self.quant_max_rows {
                match pass {
                    // Blocks quantised here (a GGUF type the kernels do not read, mixed fused
                    // formats) are other weights than the f32 path's: prompt rows on them would
                    // differ from a full prefill's, so prompts take them only from the file.
                    Pass::Prompt if q.file_blocks() => return q.matmul_exact(x),
                    Pass::Prompt => {}
                    Pass::Decode => return q.matmul_decode(x),
                }
            }
            if w_t.is_none() {
                return q.matmul_exact(x);
            }
        }
        match w_t {
            Some(w_t) => Ok(x.matmul(w_t)?),
            None => Err(ModelError::BadArgument(
                "projection with neither dense nor quantised weights".into(),
            )),
        }
    }

    /// Hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Compute dtype of weights, activations and KV.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Stable identity of weights + dtype + tokenizer.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.config.num_layers
    }

    /// RoPE tables (re-positioning of cached pre-RoPE keys goes through this).
    pub fn rope(&self) -> &Rope {
        &self.rope
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        if let Some(&id) = ids.iter().find(|&&i| i as usize >= self.config.vocab_size) {
            return Err(ModelError::TokenOutOfRange {
                id,
                vocab_size: self.config.vocab_size,
            });
        }
        Ok(())
    }

    fn check_layer(&self, layer: usize) -> Result<&crate::weights::LayerWeights> {
        self.weights.layers.get(layer).ok_or_else(|| {
            ModelError::BadArgument(format!(
                "layer {layer} out of range ({} layers)",
                self.config.num_layers
            ))
        })
    }

    /// Embeds token ids: `[n, D]`. Errors on an empty list or an id outside the vocabulary.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        self.check_ids(ids)?;
        if let Some(table) = &self.weights.embed_tokens {
            let idx = Tensor::from_slice(ids, ids.len(), &self.device)?;
            return Ok(table.index_select(&idx, 0)?);
        }
        // Tied table held only quantised (`ModelWeights::drop_dense_vocab`).
        let table = self.quantized_lm_head()?;
        let d = table.cols();
        let mut rows = vec![0f32; ids.len() * d];
        for (&id, row) in ids.iter().zip(rows.chunks_exact_mut(d)) {
            table.dequantize_row(id as usize, row);
        }
        Ok(Tensor::from_vec(rows, (ids.len(), d), &self.device)?.to_dtype(self.dtype)?)
    }

    /// Input norm and q/k/v projections of `hidden` `[n, D]` at `layer`; nothing is rotated.
    pub fn layer_qkv(&self, layer: usize, hidden: &Tensor) -> Result<Qkv> {
        self.qkv_in(Pass::Prompt, layer, hidden)
    }

    fn qkv_in(&self, pass: Pass, layer: usize, hidden: &Tensor) -> Result<Qkv> {
        let w = self.check_layer(layer)?;
        let c = &self.config;
        let (n, _) = hidden.dims2()?;
        let x = candle_nn::ops::rms_norm(hidden, &w.input_layernorm, c.rms_norm_eps as f32)?;
        let q = self.quant_layer(layer).and_then(|q| q.qkv_proj.as_ref());
        let mut qkv = self.project(&x, Some(&w.qkv_proj_t), q, pass)?;
        if let Some(b) = &w.qkv_bias {
            qkv = qkv.broadcast_add(b)?;
        }
        let (hd, kvd) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
        let split = |start: usize, len: usize, heads: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(1, start, len)?
                .reshape((n, heads, c.head_dim))?
                .transpose(0, 1)?
                .contiguous()?)
        };
        Ok(Qkv {
            q: split(0, hd, c.num_heads)?,
            k: split(hd, kvd, c.num_kv_heads)?,
            v: split(hd + kvd, kvd, c.num_kv_heads)?,
        })
    }

    /// Attention of query rows `q` `[H, n, d]` (rotated, at `q_pos`) over `k`/`v`
    /// `[H_kv, m, d]` (rotated keys at non-decreasing `k_pos`), causal by true position,
    /// then the output projection: returns `[n, D]` (the attention branch, not yet added
    /// to the residual).
    pub fn layer_attention(
        &self,
        layer: usize,
        q: &Tensor,
        q_pos: &[u32],
        k: &Tensor,
        v: &Tensor,
        k_pos: &[u32],
    ) -> Result<Tensor> {
        self.check_layer(layer)?;
        let a = causal_attention(q, q_pos, k, v, k_pos)?;
        self.layer_output(layer, &a)
    }

    /// The output projection of attention rows `attn` `[n, H·d]` (heads concatenated):
    /// `[n, D]`. Batched decode attends per sequence, then projects all rows at once.
    pub fn layer_output(&self, layer: usize, attn: &Tensor) -> Result<Tensor> {
        self.output_in(Pass::Prompt, layer, attn)
    }

    fn output_in(&self, pass: Pass, layer: usize, attn: &Tensor) -> Result<Tensor> {
        let w = self.check_layer(layer)?;
        let q = self.quant_layer(layer).and_then(|q| q.o_proj.as_ref());
        self.project(attn, Some(&w.o_proj_t), q, pass)
    }

    /// Residual add of the attention branch, then the MLP block with its residual:
    /// `h = hidden + attn; h + down(silu(gate(norm h)) * up(norm h))`. `[n, D]` in and out.
    pub fn layer_mlp(&self, layer: usize, hidden: &Tensor, attn: &Tensor) -> Result<Tensor> {
        self.mlp_in(Pass::Prompt, layer, hidden, attn)
    }

    fn mlp_in(&self, pass: Pass, layer: usize, hidden: &Tensor, attn: &Tensor) -> Result<Tensor> {
        let w = self.check_layer(layer)?;
        let c = &self.config;
        let h = (hidden + attn)?;
        let x = candle_nn::ops::rms_norm(&h, &w.post_attention_layernorm, c.rms_norm_eps as f32)?;
        let ql = self.quant_layer(layer);
        let gu = self.project(
            &x,
            Some(&w.gate_up_proj_t),
            ql.and_then(|q| q.gate_up_proj.as_ref()),
            pass,
        )?;
        let act = crate::cpu_ops::swiglu(&gu)?;
        let down = self.project(
            &act,
            Some(&w.down_proj_t),
            ql.and_then(|q| q.down_proj.as_ref()),
            pass,
        )?;
        Ok((h + down)?)
    }

    /// Final norm and LM head on `hidden` rows `[n, D]`: logits `[n, V]` in f32.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.logits_in(Pass::Prompt, hidden)
    }

    fn logits_in(&self, pass: Pass, hidden: &Tensor) -> Result<Tensor> {
        let x =
            candle_nn::ops::rms_norm(hidden, &self.weights.norm, self.config.rms_norm_eps as f32)?;
        let dense = self.weights.lm_head.as_ref().map(Tensor::t).transpose()?;
        // The quantised head serves small products when the quantised path is on, and every
        // product when it is the only copy.
        let q = match (self.quant_max_rows, &dense) {
            (0, Some(_)) => None,
            _ => self
                .weights
                .quantized
                .as_ref()
                .and_then(|q| q.lm_head.as_ref()),
        };
        let logits = self.project(&x, dense.as_ref(), q, pass)?;
        Ok(logits.to_dtype(DType::F32)?)
    }

    /// The quantised LM head, for a model whose dense one was dropped.
    fn quantized_lm_head(&self) -> Result<&DecodeMatrix> {
        self.weights
            .quantized
            .as_ref()
            .and_then(|q| q.lm_head.as_ref())
            .ok_or_else(|| {
                ModelError::BadArgument("model has neither a dense nor a quantised LM head".into())
            })
    }

    /// Checks that `n` tokens at `start_pos` fit the context window.
    pub fn check_context(&self, start_pos: usize, n: usize) -> Result<()> {
        if start_pos + n > self.config.max_position {
            return Err(ModelError::ContextOverflow {
                tokens: start_pos + n,
                limit: self.config.max_position,
            });
        }
        Ok(())
    }

    /// Full causal prefill of `ids` at positions `start_pos..`. With `keep_pre_rope` the
    /// pre-RoPE keys of every layer are returned too (what a chunk cache stores).
    pub fn prefill(
        &self,
        ids: &[u32],
        start_pos: u32,
        keep_pre_rope: bool,
    ) -> Result<PrefillOutput> {
        self.check_ids(ids)?;
        self.check_context(start_pos as usize, ids.len())?;
        let pos: Vec<u32> = (start_pos..start_pos + ids.len() as u32).collect();
        let mut h = self.embed(ids)?;
        let mut layers = Vec::with_capacity(self.num_layers());
        let mut pre = keep_pre_rope.then(Vec::new);
        for l in 0..self.num_layers() {
            let qkv = self.layer_qkv(l, &h)?;
            let q = self.rope.apply(&qkv.q, &pos)?;
            let k = self.rope.apply(&qkv.k, &pos)?;
            let a = self.layer_attention(l, &q, &pos, &k, &qkv.v, &pos)?;
            h = self.layer_mlp(l, &h, &a)?;
            if let Some(p) = pre.as_mut() {
                p.push(qkv.k);
            }
            layers.push(self.cache_layer(k, qkv.v)?);
        }
        let last = h.narrow(0, ids.len() - 1, 1)?;
        let logits = self.logits(&last)?.squeeze(0)?;
        Ok(PrefillOutput {
            logits,
            cache: KvCache::new(layers, pos)?,
            pre_rope_keys: pre,
        })
    }

    /// One decode step for many sequences: feeds `ids[b]` to `caches[b]` at its next
    /// position and returns the logits `[B, V]` (f32). Projections, MLP and LM head take all
    /// `B` rows at once (each weight read once per step); attention runs per (sequence,
    /// head) in parallel over each sequence's own cache. [`Model::decode_step`] is its
    /// one-sequence reference. Errors on an empty batch, mismatched lengths, an id outside
    /// the vocabulary, a cache of another layer count, or a full context.
    pub fn decode_batch(&self, ids: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        crate::kernels::cpu::on_pool(|| self.decode_batch_here(ids, caches))
    }

    fn decode_batch_here(&self, ids: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        self.check_ids(ids)?;
        if caches.len() != ids.len() {
            return Err(ModelError::BadArgument(format!(
                "decode batch: {} ids for {} caches",
                ids.len(),
                caches.len()
            )));
        }
        // Every check before any cache changes: a part that fails must not leave the other
        // parts' caches one row ahead.
        for c in caches.iter() {
            if c.layers.len() != self.num_layers() {
                return Err(ModelError::BadArgument(format!(
                    "cache has {} layers, model {}",
                    c.layers.len(),
                    self.num_layers()
                )));
            }
            self.check_context(c.next_position() as usize, 1)?;
        }
        let parts = batch_parts(ids.len(), rayon::current_num_threads());
        if parts == 1 {
            return self.decode_rows(ids, caches);
        }
        // Each worker steps its own share of the sequences through every layer: one join
        // per step instead of a hand-off per product and layer (at 16 rows a product is
        // ~0.1–0.3 ms, so waking the other worker for each cost a third of the second core).
        // Rows are independent in every op, so the logits are the same bits either way.
        let per = ids.len().div_ceil(parts);
        let logits = ids
            .par_chunks(per)
            .zip(caches.par_chunks_mut(per))
            .map(|(ids, caches)| self.decode_rows(ids, caches))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&logits, 0)?)
    }

    /// [`Model::decode_batch`]'s step for sequences already checked.
    fn decode_rows(&self, ids: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        let pos: Vec<u32> = caches.iter().map(|c| c.next_position()).collect();
        for (c, &p) in caches.iter_mut().zip(&pos) {
            c.positions.push(p);
        }
        let mut h = self.embed(ids)?;
        for l in 0..self.num_layers() {
            let qkv = self.qkv_in(Pass::Decode, l, &h)?;
            let q = self.rope.apply(&qkv.q, &pos)?;
            let k = self.rope.apply(&qkv.k, &pos)?;
            // Each sequence's new row straight out of the batch's [H_kv, B, d] (no per-row
            // tensor ops: they cost more than the copy).
            let rows = |t: &Tensor| -> Result<Vec<f32>> {
                Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
            };
            let (k_rows, v_rows) = (rows(&k)?, rows(&qkv.v)?);
            let d = self.config.head_dim;
            let mut kv = Vec::with_capacity(ids.len());
            for (b, c) in caches.iter_mut().enumerate() {
                let lkv = &mut c.layers[l];
                lkv.append_rows(&k_rows[b * d..], &v_rows[b * d..], ids.len() * d, 1)?;
                kv.push((lkv.k()?, lkv.v()?));
            }
            let k_pos: Vec<&[u32]> = caches.iter().map(|c| c.positions.as_slice()).collect();
            let a = match batched_decode_attention(&q, &pos, &kv, &k_pos)? {
                Some(a) => a,
                None => {
                    let rows = (0..ids.len())
                        .map(|b| {
                            let (kk, vv) = &kv[b];
                            causal_attention(&q.narrow(1, b, 1)?, &pos[b..b + 1], kk, vv, k_pos[b])
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Tensor::cat(&rows, 0)?
                }
            };
            let a = self.output_in(Pass::Decode, l, &a)?;
            h = self.mlp_in(Pass::Decode, l, &h, &a)?;
        }
        self.logits_in(Pass::Decode, &h)
    }

    /// One decode step: appends token `id` at the cache's next position, returns its
    /// logits `[V]` (f32).
    pub fn decode_step(&self, id: u32, cache: &mut KvCache) -> Result<Tensor> {
        crate::kernels::cpu::on_pool(|| self.decode_step_here(id, cache))
    }

    fn decode_step_here(&self, id: u32, cache: &mut KvCache) -> Result<Tensor> {
        self.check_ids(&[id])?;
        if cache.layers.len() != self.num_layers() {
            return Err(ModelError::BadArgument(format!(
                "cache has {} layers, model {}",
                cache.layers.len(),
                self.num_layers()
            )));
        }
        let p = cache.next_position();
        self.check_context(p as usize, 1)?;
        cache.positions.push(p);
        let pos = [p];
        let mut h = self.embed(&[id])?;
        for l in 0..self.num_layers() {
            let qkv = self.qkv_in(Pass::Decode, l, &h)?;
            let q = self.rope.apply(&qkv.q, &pos)?;
            let k = self.rope.apply(&qkv.k, &pos)?;
            let lkv = &mut cache.layers[l];
            lkv.append(&k, &qkv.v)?;
            let (kk, vv) = (lkv.k()?, lkv.v()?);
            let a = causal_attention(&q, &pos, &kk, &vv, &cache.positions)?;
            let a = self.output_in(Pass::Decode, l, &a)?;
            h = self.mlp_in(Pass::Decode, l, &h, &a)?;
        }
        Ok(self.logits_in(Pass::Decode, &h)?.squeeze(0)?)
    }
}

/// Sequences per worker below which a decode step is not split by sequence: a worker's
/// share runs the products on its own, and under this many rows the integer kernel's
/// register tile (8 activation rows) is too empty to be worth the second read of the weights.
const MIN_SEQS_PER_PART: usize = 4;

/// How many parts a decode step of `batch` sequences is split into on `threads` workers.
fn batch_parts(batch: usize, threads: usize) -> usize {
    (batch / MIN_SEQS_PER_PART).clamp(1, threads.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{max_abs_diff, tiny_model};
    use crate::Family;

    /// Request caches in f16/bf16: prefill and decode (one sequence and batched) keep their
    /// cache in the chosen type at half the bytes, and the logits stay close to the f32
    /// cache's (values are rounded once when stored; the math is f32).
    #[test]
    fn prompt_passes_on_weights_quantised_here_equal_the_f32_path() {
        // Quantised from the f32 weights, so other values: prompt rows (few enough for the
        // quantised path) must still compute on the f32 weights, bit for bit; decode takes
        // the quantised blocks.
        let f32_model = tiny_model(Family::Llama, 3).unwrap();
        let quant = f32_model.with_quantized_weights(QuantFormat::Q8_0).unwrap();
        let ids = [1u32, 2, 3, 4, 5];
        let a = f32_model.prefill(&ids, 0, false).unwrap();
        let b = quant.prefill(&ids, 0, false).unwrap();
        let (la, lb): (Vec<f32>, Vec<f32>) =
            (a.logits.to_vec1().unwrap(), b.logits.to_vec1().unwrap());
        assert_eq!(la, lb);
        let (mut ca, mut cb) = (a.cache, b.cache);
        let da: Vec<f32> = f32_model
            .decode_step(6, &mut ca)
            .unwrap()
            .to_vec1()
            .unwrap();
        let db: Vec<f32> = quant.decode_step(6, &mut cb).unwrap().to_vec1().unwrap();
        assert_ne!(da, db, "decode should run on the quantised blocks");
    }

    /// A step of many sequences split between workers ([`batch_parts`]) gives the same
    /// logits and caches, bit for bit, as the whole batch on one worker (rows are
    /// independent in every op, the integer kernel included).
    #[test]
    fn decode_batch_split_over_workers_equals_one_worker() {
        let model = tiny_model(Family::Llama, 5)
            .unwrap()
            .with_quantized_weights(QuantFormat::Q4_1)
            .unwrap();
        let prompts: Vec<Vec<u32>> = (0..9u32)
            .map(|s| (0..3 + s).map(|i| (i * 5 + s * 3) % 60).collect())
            .collect();
        let run = |threads: usize| {
            crate::testing::in_pool(threads, || {
                let mut caches: Vec<KvCache> = prompts
                    .iter()
                    .map(|p| model.prefill(p, 0, false).unwrap().cache)
                    .collect();
                let mut ids: Vec<u32> = (0..9u32).map(|s| s * 7 % 60).collect();
                let mut logits = Vec::new();
                for _ in 0..3 {
                    let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
                    let l: Vec<Vec<f32>> = model
                        .decode_batch(&ids, &mut refs)
                        .unwrap()
                        .to_vec2()
                        .unwrap();
                    ids = l
                        .iter()
                        .map(|r| crate::sampling::argmax(r).unwrap())
                        .collect();
                    logits.push(l);
                }
                let keys: Vec<Vec<f32>> = caches
                    .iter()
                    .map(|c| {
                        c.layers[2]
                            .k()
                            .unwrap()
                            .flatten_all()
                            .unwrap()
                            .to_vec1()
                            .unwrap()
                    })
                    .collect();
                (logits, keys)
            })
        };
        assert_eq!((batch_parts(9, 1), batch_parts(9, 2)), (1, 2));
        assert_eq!(run(1), run(2));
    }

    /// A batch with one cache that cannot take a step fails before any cache changes, on
    /// one worker or split.
    #[test]
    fn a_failing_decode_batch_leaves_every_cache_as_it_was() {
        let model = tiny_model(Family::Llama, 5).unwrap();
        let short: Vec<u32> = (0..4).collect();
        let full: Vec<u32> = (0..512).map(|i| i % 60).collect();
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut caches: Vec<KvCache> = (0..8)
                    .map(|s| {
                        let p = if s == 7 { &full } else { &short };
                        model.prefill(p, 0, false).unwrap().cache
                    })
                    .collect();
                let before: Vec<usize> = caches.iter().map(|c| c.positions.len()).collect();
                let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
                let err = model.decode_batch(&[1; 8], &mut refs).unwrap_err();
                assert!(matches!(err, ModelError::ContextOverflow { .. }), "{err}");
                let after: Vec<usize> = caches.iter().map(|c| c.positions.len()).collect();
                assert_eq!(before, after);
                assert_eq!(caches[0].layers[0].len(), 4);
            });
        }
    }

    #[test]
    fn sixteen_bit_request_caches_decode_close_to_f32() {
        let m32 = tiny_model(Family::Llama, 3).unwrap();
        let ids: Vec<u32> = (0..40).map(|i| (i * 7 + 3) % 60).collect();
        let run = |m: &Model| {
            let out = m.prefill(&ids, 0, false).unwrap();
            let mut cache = out.cache;
            let mut logits = vec![out.logits.clone()];
            for t in [5u32, 9, 11] {
                logits.push(m.decode_step(t, &mut cache).unwrap());
            }
            let mut other = cache.clone();
            let both = m
                .decode_batch(&[4, 4], &mut [&mut cache, &mut other])
                .unwrap();
            logits.push(both.narrow(0, 1, 1).unwrap().squeeze(0).unwrap());
            (logits, cache)
        };
        let (want, c32) = run(&m32);
        for (dt, tol) in [(DType::F16, 0.01f32), (DType::BF16, 0.08)] {
            let m = m32.with_kv_dtype(dt).unwrap();
            assert_eq!(m.fingerprint(), m32.fingerprint());
            let (got, c) = run(&m);
            assert_eq!(c.layers[0].k().unwrap().dtype(), dt);
            assert_eq!(c.size_bytes() * 2, c32.size_bytes());
            for (a, b) in want.iter().zip(&got) {
                let scale = a
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                let d = max_abs_diff(a, b);
                assert!(d <= tol * scale, "{dt:?}: {d} vs logits up to {scale}");
            }
        }
        assert!(m32.with_kv_dtype(DType::U8).is_err());
    }
}
