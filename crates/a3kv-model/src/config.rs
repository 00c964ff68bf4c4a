//! Model hyper-parameters, read from GGUF metadata or an HF `config.json`.

use serde::{Deserialize, Serialize};

/// The transformer families a3kv runs. They share one code path and differ in
/// a few switches (q/k/v biases, RoPE layout, chat template).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Llama 2/3, SmolLM2.
    Llama,
    /// Mistral 7B-style (Llama layout, `[INST]` template).
    Mistral,
    /// Qwen2 / Qwen2.5 (q/k/v biases, ChatML).
    Qwen2,
}

impl Family {
    /// Parses an architecture name as found in GGUF `general.architecture`
    /// or HF `model_type`.
    pub fn from_arch(arch: &str) -> Option<Self> {
        match arch {
            "llama" => Some(Family::Llama),
            "mistral" => Some(Family::Mistral),
            "qwen2" => Some(Family::Qwen2),
            _ => None,
        }
    }

    /// Stable name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
        }
    }
}

/// Shapes and constants of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Architecture family.
    pub family: Family,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Hidden size `D`.
    pub hidden_size: usize,
    /// MLP inner size.
    pub intermediate_size: usize,
    /// Number of layers `L`.
    pub num_layers: usize,
    /// Query heads `H`.
    pub num_heads: usize,
    /// Key/value heads `H_kv`.
    pub num_kv_heads: usize,
    /// Head dimension `d`.
    pub head_dim: usize,
    /// RoPE base θ.
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Context window (positions `0..max_position`).
    pub max_position: usize,
    /// Whether q/k/v projections carry biases (Qwen2).
    pub qkv_bias: bool,
    /// RoPE on adjacent pairs `(2i, 2i+1)` (GGUF's permuted llama q/k rows) instead of
    /// halves `(i, i+d/2)` (HF layout).
    pub rope_interleaved: bool,
}

impl ModelConfig {
    /// Query heads per KV head, `g = H / H_kv`.
    pub fn group_size(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }

    /// Checks the internal consistency of the shapes.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::ModelError::BadArgument(m));
        if self.num_layers == 0 || self.num_heads == 0 || self.num_kv_heads == 0 {
            return bad("layers and heads must be non-zero".into());
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "{} query heads are not a multiple of {} KV heads",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) || self.head_dim == 0 {
            return bad(format!("head dim {} must be even", self.head_dim));
        }
        if self.vocab_size == 0 || self.hidden_size == 0 || self.max_position == 0 {
            return bad("vocab, hidden size and context must be non-zero".into());
        }
        Ok(())
    }

    /// Parameters of the transformer blocks plus the embedding (for FLOP counts).
    pub fn block_params(&self) -> usize {
        let d = self.hidden_size;
        let hd = self.head_dim;
        let attn = d * (self.num_heads * hd) * 2 + d * (self.num_kv_heads * hd) * 2;
        let mlp = 3 * d * self.intermediate_size;
        self.num_layers * (attn + mlp)
    }

    /// Analytic FLOPs of a full causal prefill of `t` tokens: `2·params·t` for the
    /// projections and MLPs, `4·H·d·(pos+1)` per query row per layer for attention,
    /// and the LM head on the last row only.
    pub fn prefill_flops(&self, t: usize) -> f64 {
        let t = t as f64;
        let proj = 2.0 * self.block_params() as f64 * t;
        let attn = self.num_layers as f64
            * 4.0
            * (self.num_heads * self.head_dim) as f64
            * (t * (t + 1.0) / 2.0);
        let head = 2.0 * (self.vocab_size * self.hidden_size) as f64;
        proj + attn + head
    }
}
