//! The quantised twin of [`crate::ModelWeights`]: every projection as a [`QMatrix`] in
//! `[out, in]` layout, fused like the f32 ones (q|k|v, gate|up), plus the LM head.
//!
//! A matrix whose input width is not a multiple of 32 has no quantised form (`None`) and
//! always runs in f32.

use std::collections::HashMap;

use candle_core::{DType, Tensor};

use super::{DecodeMatrix, QMatrix, QuantFormat, BLOCK};
use crate::weights::ModelWeights;
use crate::{ModelConfig, ModelError, Result};

/// Quantised projections of one decoder layer.
#[derive(Debug, Clone)]
pub struct QuantLayerWeights {
    /// Fused q|k|v projection `[H·d + 2·H_kv·d, D]`.
    pub qkv_proj: Option<DecodeMatrix>,
    /// Output projection `[D, H·d]`.
    pub o_proj: Option<DecodeMatrix>,
    /// Fused gate|up projection `[2·I, D]`.
    pub gate_up_proj: Option<DecodeMatrix>,
    /// Down projection `[D, I]`.
    pub down_proj: Option<DecodeMatrix>,
}

/// One layer's matrices as loaded, row-major, before [`QuantWeights`] lays them out.
struct QuantLayers {
    qkv_proj: Option<QMatrix>,
    o_proj: Option<QMatrix>,
    gate_up_proj: Option<QMatrix>,
    down_proj: Option<QMatrix>,
}

/// Quantised projections of a whole model.
#[derive(Debug, Clone)]
pub struct QuantWeights {
    /// Decoder layers.
    pub layers: Vec<QuantLayerWeights>,
    /// LM head `[V, D]` (the embedding's blocks when tied).
    pub lm_head: Option<DecodeMatrix>,
}

fn take(
    map: &mut HashMap<String, QMatrix>,
    name: &str,
    rows: usize,
    cols: usize,
) -> Result<QMatrix> {
    let m = map
        .remove(name)
        .ok_or_else(|| ModelError::Missing(format!("quantised tensor {name}")))?;
    if (m.rows(), m.cols()) != (rows, cols) {
        return Err(ModelError::InvalidFile {
            path: name.to_string(),
            message: format!(
                "quantised shape [{}, {}], expected [{rows}, {cols}]",
                m.rows(),
                m.cols()
            ),
        });
    }
    Ok(m)
}

/// Stacks row blocks; if their formats differ, all are re-quantised to Q8_0 first.
fn fuse(parts: Vec<QMatrix>) -> Result<QMatrix> {
    let refs: Vec<&QMatrix> = parts.iter().collect();
    if parts.iter().all(|p| p.format() == parts[0].format()) {
        return QMatrix::concat_rows(&refs);
    }
    let q8: Vec<QMatrix> = parts
        .iter()
        .map(|p| QMatrix::quantize(QuantFormat::Q8_0, p.rows(), p.cols(), &p.dequantize()))
        .collect::<Result<_>>()?;
    QMatrix::concat_rows(&q8.iter().collect::<Vec<_>>())
}

impl QuantWeights {
    /// Builds from HF-named `[out, in]` quantised matrices (what the GGUF loader keeps).
    /// Matrices missing from `map` are an error, except those whose width is not a
    /// multiple of 32 (they stay f32). A missing `lm_head.weight` means tied embeddings.
    pub fn build(cfg: &ModelConfig, mut map: HashMap<String, QMatrix>) -> Result<Self> {
        let (d, hd, kvd, i) = (
            cfg.hidden_size,
            cfg.num_heads * cfg.head_dim,
            cfg.num_kv_heads * cfg.head_dim,
            cfg.intermediate_size,
        );
        let fits = |cols: usize| cols.is_multiple_of(BLOCK);
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let p = format!("model.layers.{l}");
            let mut get =
                |n: &str, rows: usize, cols: usize| take(&mut map, &format!("{p}.{n}"), rows, cols);
            let qkv_proj = if fits(d) {
                Some(fuse(vec![
                    get("self_attn.q_proj.weight", hd, d)?,
                    get("self_attn.k_proj.weight", kvd, d)?,
                    get("self_attn.v_proj.weight", kvd, d)?,
                ])?)
            } else {
                None
            };
            let gate_up_proj = if fits(d) {
                Some(fuse(vec![
                    get("mlp.gate_proj.weight", i, d)?,
                    get("mlp.up_proj.weight", i, d)?,
                ])?)
            } else {
                None
            };
            layers.push(QuantLayers {
                qkv_proj,
                o_proj: fits(hd)
                    .then(|| get("self_attn.o_proj.weight", d, hd))
                    .transpose()?,
                gate_up_proj,
                down_proj: fits(i)
                    .then(|| get("mlp.down_proj.weight", d, i))
                    .transpose()?,
            });
        }
        let lm_head = if !fits(d) {
            None
        } else if map.contains_key("lm_head.weight") {
            Some(take(&mut map, "lm_head.weight", cfg.vocab_size, d)?)
        } else {
            Some(take(
                &mut map,
                "model.embed_tokens.weight",
                cfg.vocab_size,
                d,
            )?)
        };
        Ok(Self::in_cpu_layout(layers, lm_head))
    }

    /// Every matrix in the layout of this CPU's fastest kernel ([`DecodeMatrix::for_this_cpu`]).
    fn in_cpu_layout(layers: Vec<QuantLayers>, lm_head: Option<QMatrix>) -> Self {
        let d = |m: Option<QMatrix>| m.map(DecodeMatrix::for_this_cpu);
        Self {
            layers: layers
                .into_iter()
                .map(|l| QuantLayerWeights {
                    qkv_proj: d(l.qkv_proj),
                    o_proj: d(l.o_proj),
                    gate_up_proj: d(l.gate_up_proj),
                    down_proj: d(l.down_proj),
                })
                .collect(),
            lm_head: d(lm_head),
        }
    }

    /// Quantises f32 weights to `format` (for checkpoints that carry no quantised blocks,
    /// and for tests on tiny models).
    pub fn from_f32(weights: &ModelWeights, format: QuantFormat) -> Result<Self> {
        // Transposed `[in, out]` compute layout → `[out, in]` rows.
        let q = |t_in_out: &Tensor| -> Result<Option<QMatrix>> {
            let (cols, rows) = t_in_out.dims2()?;
            if !cols.is_multiple_of(BLOCK) {
                return Ok(None);
            }
            let data: Vec<f32> = t_in_out
                .t()?
                .contiguous()?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1()?;
            Ok(Some(QMatrix::quantize(format, rows, cols, &data)?))
        };
        let layers = weights
            .layers
            .iter()
            .map(|l| {
                Ok(QuantLayers {
                    qkv_proj: q(&l.qkv_proj_t)?,
                    o_proj: q(&l.o_proj_t)?,
                    gate_up_proj: q(&l.gate_up_proj_t)?,
                    down_proj: q(&l.down_proj_t)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lm_head = weights.lm_head.as_ref().ok_or_else(|| {
            ModelError::BadArgument("the dense LM head was dropped: nothing to quantise".into())
        })?;
        Ok(Self::in_cpu_layout(layers, q(&lm_head.t()?)?))
    }

    /// Bytes one token's pass reads from the quantised matrices.
    pub fn size_bytes(&self) -> usize {
        let m = |q: &Option<DecodeMatrix>| q.as_ref().map_or(0, DecodeMatrix::size_bytes);
        self.layers
            .iter()
            .map(|l| m(&l.qkv_proj) + m(&l.o_proj) + m(&l.gate_up_proj) + m(&l.down_proj))
            .sum::<usize>()
            + m(&self.lm_head)
    }
}
