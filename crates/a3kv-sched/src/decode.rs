//! Continuous-batching decode: one step for many sequences at once
//! ([`Model::decode_batch`]: projections, output projection, MLP and LM head as one matmul
//! over all rows, so each weight is read once per step; attention per sequence over its own
//! cache), and a sequence's sampling, log-probabilities, stop-token, stop-string and length
//! handling.
//!
//! Reference twin: [`Model::decode_step`]; the test below asserts equal logits.

use std::sync::Arc;

use a3kv_fusion::FinishReason;
use a3kv_model::{
    token_logprobs, KvCache, Model, ModelTokenizer, Sampler, SamplingParams, Tensor, TextStreamer,
};

use crate::logprobs::logprobs_event;
use crate::{EngineError, Logprobs};

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
    /// A token to emit with its (possibly empty) text and, when asked, its log-probabilities.
    Token(u32, String, Option<Logprobs>),
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
    pending: Vec<(u32, String, Option<Logprobs>)>,
    /// Alternatives per token when log-probabilities are wanted.
    logprobs: Option<usize>,
    /// The token to feed at the next decode step.
    pub feed: Option<u32>,
    /// A copy of the first position's logits, kept when asked for
    /// ([`Seq::with_first_token_logits`]).
    first_logits: Option<Arc<[f32]>>,
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
            logprobs: None,
            feed: None,
            first_logits: None,
        })
    }

    /// Keeps a copy of the first position's logits `[V]` for the caller
    /// ([`Seq::take_first_token_logits`]); `false` (the default) copies nothing.
    pub fn with_first_token_logits(mut self, keep: bool) -> Self {
        if keep {
            self.first_logits = Some(Arc::from(self.logits.as_slice()));
        }
        self
    }

    /// The first position's logits, if kept (once).
    pub fn take_first_token_logits(&mut self) -> Option<Arc<[f32]>> {
        self.first_logits.take()
    }

    /// Reports each token's log-probability and its `top_n` most likely alternatives
    /// (`None` = no log-probabilities, the default).
    pub fn with_logprobs(mut self, top_n: Option<usize>) -> Self {
        self.logprobs = top_n;
        self
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
        let lp = match self.logprobs {
            Some(n) => Some(logprobs_event(tok, &token_logprobs(&self.logits, id, n)?)),
            None => None,
        };
        let text = self.streamer.push(tok, id)?;
        self.pending.push((id, text, lp));
        let joined: String = self.pending.iter().map(|p| p.1.as_str()).collect();
        if let Some(at) = self
            .stop
            .iter()
            .filter_map(|s| joined.find(s.as_str()))
            .min()
        {
            // Emit the text before the stop string, nothing after it.
            let mut covered = 0usize;
            for (id, t, lp) in std::mem::take(&mut self.pending) {
                if covered >= at {
                    break;
                }
                let keep = (at - covered).min(t.len());
                covered += t.len();
                out.push(StepOut::Token(
                    id,
                    t.get(..keep).unwrap_or("").to_string(),
                    lp,
                ));
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
        for (id, t, lp) in std::mem::take(&mut self.pending) {
            if covered + t.len() <= hold_from && keep.is_empty() {
                covered += t.len();
                out.push(StepOut::Token(id, t, lp));
                self.emitted += 1;
            } else {
                keep.push((id, t, lp));
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
        for (id, t, lp) in std::mem::take(&mut self.pending) {
            out.push(StepOut::Token(id, t, lp));
            self.emitted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use a3kv_model::tokenizer::{tokenizer_from_gguf, GgufTokenizerData};
    use a3kv_model::{testing::tiny_model, ChatTemplate, Family};

    /// A byte-level tokenizer over the tiny model's 64 ids: one character per token.
    fn tiny_tokenizer() -> ModelTokenizer {
        let tokens: Vec<String> = ('a'..='z')
            .chain('A'..='Z')
            .chain('0'..='9')
            .chain(['Ġ', '.'])
            .map(String::from)
            .collect();
        let data = GgufTokenizerData {
            model: "gpt2".into(),
            pre: "gpt2".into(),
            token_types: vec![1; tokens.len()],
            tokens,
            ..GgufTokenizerData::default()
        };
        let inner = tokenizer_from_gguf(&data).unwrap();
        ModelTokenizer::new(
            inner,
            ChatTemplate::ChatMl {
                default_system: None,
            },
            vec![],
        )
    }

    /// Logits `[64]` that make `target` the most likely token, its neighbours next.
    fn peaked(target: u32) -> Vec<f32> {
        (0..64u32)
            .map(|i| {
                if i == target {
                    4.0
                } else {
                    -0.25 * i.abs_diff(target) as f32
                }
            })
            .collect()
    }

    /// Greedy decoding driven by hand-made logits that spell `spell`; every output of every
    /// step (the cache is a real one; the logits stand in for decode steps).
    fn run(tok: &ModelTokenizer, spell: &str, stop: &[&str], top_n: Option<usize>) -> Vec<StepOut> {
        let model = tiny_model(Family::Qwen2, 9).unwrap();
        let cache = model.prefill(&[1, 2, 3], 0, false).unwrap().cache;
        let ids: Vec<u32> = tok.encode(spell).unwrap();
        let first = Tensor::new(peaked(ids[0]), &candle_core::Device::Cpu).unwrap();
        let stop = stop.iter().map(|s| s.to_string()).collect();
        let sampling = SamplingParams::default();
        let mut seq = Seq::new(cache, &first, sampling, vec![], stop, ids.len())
            .unwrap()
            .with_logprobs(top_n);
        let mut outs = Vec::new();
        for next in ids.iter().skip(1).chain([&0]) {
            let o = seq.advance(tok).unwrap();
            let done = o.iter().any(|x| matches!(x, StepOut::Done(_)));
            outs.extend(o);
            if done {
                break;
            }
            seq.set_logits(peaked(*next));
        }
        outs
    }

    fn tokens(outs: &[StepOut]) -> Vec<(u32, String, Option<Logprobs>)> {
        outs.iter()
            .filter_map(|o| match o {
                StepOut::Token(id, t, lp) => Some((*id, t.clone(), lp.clone())),
                StepOut::Done(_) => None,
            })
            .collect()
    }

    #[test]
    fn every_emitted_token_carries_its_logprobs_also_when_a_stop_string_cuts() {
        let tok = tiny_tokenizer();
        let spell = "the cat sat.";
        let full = tokens(&run(&tok, spell, &[], Some(3)));
        assert_eq!(full.len(), spell.len());
        let text: String = full.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(text, spell);
        for (id, text, lp) in &full {
            let lp = lp.as_ref().expect("logprobs asked for");
            assert_eq!(lp.chosen.token_id, *id);
            assert_eq!(&lp.chosen.token, text, "one character per token");
            assert_eq!(lp.chosen.bytes, text.as_bytes());
            assert_eq!(lp.top.len(), 3);
            // Greedy: the chosen token is the most likely one.
            assert_eq!(lp.top[0].token_id, *id);
            assert_eq!(lp.top[0].logprob, lp.chosen.logprob);
            assert!(lp.top[1].logprob < lp.chosen.logprob);
        }
        assert!(tokens(&run(&tok, spell, &[], None))
            .iter()
            .all(|t| t.2.is_none()));

        // "at" first ends in "cat": "the c" is emitted (the held-back "a" is dropped with
        // the stop string), each token with the same log-probabilities as without it.
        let cut = tokens(&run(&tok, spell, &["at"], Some(3)));
        let cut_text: String = cut.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(cut_text, "the c");
        assert_eq!(cut.len(), 5);
        for (c, f) in cut.iter().zip(&full) {
            assert_eq!(c.2, f.2);
        }
    }

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
