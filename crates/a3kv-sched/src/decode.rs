//! Continuous-batching decode: one step for many sequences at once
//! ([`Model::decode_batch`]: projections, output projection, MLP and LM head as one matmul
//! over all rows, so each weight is read once per step; attention per sequence over its own
//! cache), and a sequence's sampling, stop-token, stop-string and length handling.
//!
//! Reference twin: [`Model::decode_step`]; the test below asserts equal logits.

use a3kv_fusion::FinishReason;
use a3kv_model::{KvCache, Model, ModelTokenizer, Sampler, SamplingParams, Tensor, TextStreamer};

use crate::EngineError;

fn terr(e: candle_core::Error) -> EngineError {
    EngineError::Internal(format!("decode: {e}"))
}

/// Feeds `ids[b]` to sequence `b` at its next position; returns each sequence's logits
/// `[V]`. All caches must belong to `model`. The math is [`Model::decode_batch`].
pub fn decode_batch(
    model: &Model,
    caches: &mut [&mut KvCache],
    ids: &[u32],
) -> Result<Vec<Vec<f32>>, EngineError> {
    if caches.len() != ids.len() || ids.is_empty() {
        return Err(EngineError::Internal(
            "decode batch: ids and caches differ".into(),
        ));
    }
    let logits = model.decode_batch(ids, caches)?;
    logits.to_vec2::<f32>().map_err(terr)
}

/// What one step produced for a sequence.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOut {
    /// A token to emit with its (possibly empty) text.
    Token(u32, String),
    /// The sequence ended.
    Done(FinishReason),
}

/// A decoding sequence: its fused cache, sampler and output state.
#[derive(Debug)]
pub struct Seq {
    /// The KV cache (fused prompt + generated tokens).
    pub cache: KvCache,
    sampler: Sampler,
    logits: Vec<f32>,
    stop_ids: Vec<u32>,
    stop: Vec<String>,
    max_tokens: usize,
    /// Tokens sampled so far (stop token excluded).
    pub generated: usize,
    /// Tokens emitted so far.
    pub emitted: usize,
    streamer: TextStreamer,
    /// Tokens held back because their text may begin a stop string.
    pending: Vec<(u32, String)>,
    /// The token to feed at the next decode step.
    pub feed: Option<u32>,
}

impl Seq {
    /// A sequence whose next token is sampled from `first_logits` `[V]`.
    pub fn new(
        cache: KvCache,
        first_logits: &Tensor,
        sampling: SamplingParams,
        stop_ids: Vec<u32>,
        stop: Vec<String>,
        max_tokens: usize,
    ) -> Result<Self, EngineError> {
        Ok(Self {
            cache,
            sampler: Sampler::new(sampling)
                .map_err(|e| EngineError::InvalidRequest(e.to_string()))?,
            logits: first_logits.to_vec1::<f32>().map_err(terr)?,
            stop_ids,
            stop,
            max_tokens,
            generated: 0,
            emitted: 0,
            streamer: TextStreamer::default(),
            pending: Vec::new(),
            feed: None,
        })
    }

    /// Sets the logits of the next token (after a decode step).
    pub fn set_logits(&mut self, logits: Vec<f32>) {
        self.logits = logits;
    }

    /// Samples the next token from the current logits and returns what to emit; sets
    /// [`Seq::feed`] when the sequence goes on.
    pub fn advance(&mut self, tok: &ModelTokenizer) -> Result<Vec<StepOut>, EngineError> {
        self.feed = None;
        let mut out = Vec::new();
        if self.max_tokens == 0 {
            out.push(StepOut::Done(FinishReason::Length));
            return Ok(out);
        }
        let id = self.sampler.sample(&self.logits)?;
        if self.stop_ids.contains(&id) {
            self.flush(&mut out);
            out.push(StepOut::Done(FinishReason::Stop));
            return Ok(out);
        }
        self.generated += 1;
        let text = self.streamer.push(tok, id)?;
        self.pending.push((id, text));
        let joined: String = self.pending.iter().map(|p| p.1.as_str()).collect();
        if let Some(at) = self
            .stop
            .iter()
            .filter_map(|s| joined.find(s.as_str()))
            .min()
        {
            // Emit the text before the stop string, nothing after it.
            let mut covered = 0usize;
            for (id, t) in std::mem::take(&mut self.pending) {
                if covered >= at {
                    break;
                }
                let keep = (at - covered).min(t.len());
                covered += t.len();
                out.push(StepOut::Token(id, t.get(..keep).unwrap_or("").to_string()));
                self.emitted += 1;
            }
            out.push(StepOut::Done(FinishReason::Stop));
            return Ok(out);
        }
        // Hold back the tokens whose text may start a stop string.
        let hold_from = self
            .stop
            .iter()
            .flat_map(|s| {
                (1..s.len().min(joined.len()) + 1)
                    .filter(|&n| joined.is_char_boundary(joined.len() - n))
                    .filter(|&n| s.is_char_boundary(n))
                    .filter(|&n| joined.ends_with(&s[..n]))
                    .map(|n| joined.len() - n)
            })
            .min()
            .unwrap_or(joined.len());
        let mut covered = 0usize;
        let mut keep = Vec::new();
        for (id, t) in std::mem::take(&mut self.pending) {
            if covered + t.len() <= hold_from && keep.is_empty() {
                covered += t.len();
                out.push(StepOut::Token(id, t));
                self.emitted += 1;
            } else {
                keep.push((id, t));
            }
        }
        self.pending = keep;
        if self.generated >= self.max_tokens {
            self.flush(&mut out);
            out.push(StepOut::Done(FinishReason::Length));
        } else {
            self.feed = Some(id);
        }
        Ok(out)
    }

    fn flush(&mut self, out: &mut Vec<StepOut>) {
        for (id, t) in std::mem::take(&mut self.pending) {
            out.push(StepOut::Token(id, t));
            self.emitted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use a3kv_model::{testing::tiny_model, Family};

    #[test]
    fn batched_decode_matches_decode_step() {
        let f32_model = tiny_model(Family::Qwen2, 9).unwrap();
        // The quantised path too: its rows must not depend on the batch they run in.
        let quant = f32_model
            .with_quantized_weights(a3kv_model::quant::QuantFormat::Q8_0)
            .unwrap();
        for model in [f32_model, quant] {
            check_batched_against_single(&model);
        }
    }

    fn check_batched_against_single(model: &Model) {
        let prompts: [&[u32]; 3] = [&[1, 2, 3], &[4, 5, 6, 7, 8, 9, 10], &[11]];
        let mut a: Vec<KvCache> = prompts
            .iter()
            .map(|p| model.prefill(p, 0, false).unwrap().cache)
            .collect();
        let mut b = a.clone();
        let mut ids = vec![5u32, 6, 7];
        for _ in 0..4 {
            let mut refs: Vec<&mut KvCache> = a.iter_mut().collect();
            let got = decode_batch(model, &mut refs, &ids).unwrap();
            for (i, c) in b.iter_mut().enumerate() {
                let want: Vec<f32> = model.decode_step(ids[i], c).unwrap().to_vec1().unwrap();
                let d = got[i]
                    .iter()
                    .zip(&want)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                assert!(d < 1e-4, "seq {i}: {d}");
            }
            ids = got.iter().map(|l| a3kv_model::argmax(l).unwrap()).collect();
        }
    }
}
