//! Transformer weights in compute layout, built from HF-named tensors.
//!
//! Both loaders (GGUF and HF safetensors) produce a map of HF-style names
//! (`model.layers.3.self_attn.q_proj.weight`, shape `[out, in]`); [`ModelWeights::build`]
//! turns it into fused, transposed matrices so each projection is one contiguous matmul:
//! q|k|v in one `[D, H·d + 2·H_kv·d]` matrix, gate|up in one `[D, 2·I]` matrix. The
//! quantised twin for few-row matmuls ([`QuantWeights`]) is attached by the loader.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Tensor};

use crate::quant::QuantWeights;
use crate::{ModelConfig, ModelError, Result};

/// Weights of one decoder layer.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    /// Input RMSNorm weight `[D]`.
    pub input_layernorm: Tensor,
    /// Fused q|k|v projection, transposed: `[D, H·d + 2·H_kv·d]`.
    pub qkv_proj_t: Tensor,
    /// Fused q|k|v bias `[H·d + 2·H_kv·d]` (Qwen2 only).
    pub qkv_bias: Option<Tensor>,
    /// Output projection, transposed: `[H·d, D]`.
    pub o_proj_t: Tensor,
    /// Post-attention RMSNorm weight `[D]`.
    pub post_attention_layernorm: Tensor,
    /// Fused gate|up projection, transposed: `[D, 2·I]`.
    pub gate_up_proj_t: Tensor,
    /// Down projection, transposed: `[I, D]`.
    pub down_proj_t: Tensor,
}

/// All weights of a model.
#[derive(Debug, Clone)]
pub struct ModelWeights {
    /// Token embedding `[V, D]`; `None` once the quantised LM head serves lookups
    /// ([`ModelWeights::drop_dense_vocab`]).
    pub embed_tokens: Option<Tensor>,
    /// Decoder layers.
    pub layers: Vec<LayerWeights>,
    /// Final RMSNorm weight `[D]`.
    pub norm: Tensor,
    /// LM head `[V, D]` (the embedding when tied); `None` once the quantised one serves
    /// every product ([`ModelWeights::drop_dense_vocab`]).
    pub lm_head: Option<Tensor>,
    /// The LM head is the embedding (the checkpoint has no `lm_head.weight`).
    pub tied_embeddings: bool,
    /// Quantised projections for matmuls of few rows (decode), when loaded.
    pub quantized: Option<Arc<QuantWeights>>,
}

fn take(map: &mut HashMap<String, Tensor>, name: &str, dtype: DType) -> Result<Tensor> {
    let t = map
        .remove(name)
        .ok_or_else(|| ModelError::Missing(format!("tensor {name}")))?;
    Ok(t.to_dtype(dtype)?)
}

fn expect_dims(t: &Tensor, dims: &[usize], name: &str) -> Result<()> {
    if t.dims() != dims {
        return Err(ModelError::InvalidFile {
            path: name.to_string(),
            message: format!("shape {:?}, expected {:?}", t.dims(), dims),
        });
    }
    Ok(())
}

impl ModelWeights {
    /// Builds compute-layout weights from HF-named `[out, in]` tensors, converted to `dtype`.
    /// Errors name the first missing or mis-shaped tensor.
    pub fn build(
        cfg: &ModelConfig,
        mut map: HashMap<String, Tensor>,
        dtype: DType,
    ) -> Result<Self> {
        let (d, hd, kvd, i) = (
            cfg.hidden_size,
            cfg.num_heads * cfg.head_dim,
            cfg.num_kv_heads * cfg.head_dim,
            cfg.intermediate_size,
        );
        let embed_tokens = take(&mut map, "model.embed_tokens.weight", dtype)?;
        expect_dims(
            &embed_tokens,
            &[cfg.vocab_size, d],
            "model.embed_tokens.weight",
        )?;
        let (lm_head, tied_embeddings) = match map.remove("lm_head.weight") {
            Some(t) => (t.to_dtype(dtype)?, false),
            None => (embed_tokens.clone(), true),
        };
        expect_dims(&lm_head, &[cfg.vocab_size, d], "lm_head.weight")?;
        let norm = take(&mut map, "model.norm.weight", dtype)?;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let p = format!("model.layers.{l}");
            let mut get = |n: &str, dims: &[usize]| -> Result<Tensor> {
                let name = format!("{p}.{n}");
                let t = take(&mut map, &name, dtype)?;
                expect_dims(&t, dims, &name)?;
                Ok(t)
            };
            let q = get("self_attn.q_proj.weight", &[hd, d])?;
            let k = get("self_attn.k_proj.weight", &[kvd, d])?;
            let v = get("self_attn.v_proj.weight", &[kvd, d])?;
            let qkv_bias = if cfg.qkv_bias {
                let qb = get("self_attn.q_proj.bias", &[hd])?;
                let kb = get("self_attn.k_proj.bias", &[kvd])?;
                let vb = get("self_attn.v_proj.bias", &[kvd])?;
                Some(Tensor::cat(&[qb, kb, vb], 0)?)
            } else {
                None
            };
            let o = get("self_attn.o_proj.weight", &[d, hd])?;
            let gate = get("mlp.gate_proj.weight", &[i, d])?;
            let up = get("mlp.up_proj.weight", &[i, d])?;
            let down = get("mlp.down_proj.weight", &[d, i])?;
            layers.push(LayerWeights {
                input_layernorm: get("input_layernorm.weight", &[d])?,
                post_attention_layernorm: get("post_attention_layernorm.weight", &[d])?,
                qkv_proj_t: Tensor::cat(&[q, k, v], 0)?.t()?.contiguous()?,
                qkv_bias,
                o_proj_t: o.t()?.contiguous()?,
                gate_up_proj_t: Tensor::cat(&[gate, up], 0)?.t()?.contiguous()?,
                down_proj_t: down.t()?.contiguous()?,
            });
        }
        Ok(Self {
            embed_tokens: Some(embed_tokens),
            layers,
            norm,
            lm_head: Some(lm_head),
            tied_embeddings,
            quantized: None,
        })
    }

    /// Drops the dense copies of the vocabulary matrices that the quantised LM head can stand
    /// in for exactly: the LM head when its blocks are the file's own (exact products on
    /// them equal the dense ones up to summation order), and a tied embedding with it
    /// (lookups dequantise the row, bit for bit the dense row). On SmolLM2-135M that is
    /// 113 MB of f32, a tenth of a 4k-token prefill's peak memory.
    pub fn drop_dense_vocab(&mut self) {
        let exact = self
            .quantized
            .as_ref()
            .and_then(|q| q.lm_head.as_ref())
            .is_some_and(|h| h.file_blocks());
        if exact {
            self.lm_head = None;
            if self.tied_embeddings {
                self.embed_tokens = None;
            }
        }
    }
}
