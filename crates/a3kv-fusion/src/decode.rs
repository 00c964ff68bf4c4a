//! Decoding over a (fused) KV cache: sampling, stop tokens, max tokens, streaming callback.

use a3kv_model::{KvCache, Model, Sampler, SamplingParams, Tensor};
use serde::{Deserialize, Serialize};

use crate::Result;

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A stop token was produced (not included in the output).
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The callback asked to stop (client gone).
    Cancelled,
}

impl FinishReason {
    /// OpenAI-style name.
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// Generated tokens and why they ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// Output token ids (stop token excluded).
    pub ids: Vec<u32>,
    /// Why it ended.
    pub finish_reason: FinishReason,
}

/// Samples from `first_logits`, then decodes step by step over `cache` until a stop token,
/// `max_tokens`, or `on_token` returning `false`. `on_token` sees each kept token.
pub fn generate(
    model: &Model,
    cache: &mut KvCache,
    first_logits: &Tensor,
    sampling: SamplingParams,
    stop_ids: &[u32],
    max_tokens: usize,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Generation> {
    let mut sampler = Sampler::new(sampling)?;
    let mut ids = Vec::new();
    if max_tokens == 0 {
        return Ok(Generation {
            ids,
            finish_reason: FinishReason::Length,
        });
    }
    let mut logits: Vec<f32> = first_logits.to_vec1()?;
    loop {
        let id = sampler.sample(&logits)?;
        if stop_ids.contains(&id) {
            return Ok(Generation {
                ids,
                finish_reason: FinishReason::Stop,
            });
        }
        ids.push(id);
        if !on_token(id) {
            return Ok(Generation {
                ids,
                finish_reason: FinishReason::Cancelled,
            });
        }
        if ids.len() >= max_tokens {
            return Ok(Generation {
                ids,
                finish_reason: FinishReason::Length,
            });
        }
        logits = model.decode_step(id, cache)?.to_vec1()?;
    }
}
