//! The `logprobs` object of a choice, built token by token from the engine's [`Logprobs`]:
//! chat's `{"content": [{token, logprob, bytes, top_logprobs}]}` and the legacy
//! completions arrays `{tokens, token_logprobs, top_logprobs, text_offset}`, for a whole
//! response or for each streamed chunk.
//!
//! The values are log-probabilities of the model's raw distribution (log_softmax of the
//! logits before temperature and top-p; vLLM's default), see [`a3kv_model::TokenLogprobs`].

use a3kv_sched::{Logprobs, TokenLogprob};
use serde_json::{json, Map, Value};

use crate::reply::{Endpoint, ReplyMeta};

/// Most alternatives per token the legacy completions `logprobs` accepts (OpenAI's limit).
pub const MAX_COMPLETION_LOGPROBS: usize = 5;

/// What JSON carries for a probability of 0 (`-inf`; JSON has no infinities): OpenAI's and
/// vLLM's stand-in.
const MIN_LOGPROB: f32 = -9999.0;

fn finite(x: f32) -> f32 {
    if x.is_finite() {
        x
    } else {
        MIN_LOGPROB
    }
}

/// Chat's `{"token", "logprob", "bytes"}`.
fn chat_token(t: &TokenLogprob) -> Value {
    json!({"token": t.token, "logprob": finite(t.logprob), "bytes": t.bytes})
}

/// Accumulates the tokens of one choice and renders their `logprobs` object.
#[derive(Debug)]
pub struct LogprobsOut {
    endpoint: Endpoint,
    requested: bool,
    /// Characters of completion text before the next token (completions' `text_offset`).
    offset_chars: usize,
    /// Tokens since the last [`LogprobsOut::take`], each with its `text_offset`.
    pending: Vec<(usize, Logprobs)>,
}

impl LogprobsOut {
    /// An empty builder for a response; renders `null` when the request asked for none.
    pub fn new(meta: &ReplyMeta) -> Self {
        Self {
            endpoint: meta.endpoint,
            requested: meta.logprobs,
            offset_chars: 0,
            pending: Vec::new(),
        }
    }

    /// Adds a token: `text` is what it added to the completion text (may be empty), `lp`
    /// its log-probabilities (absent when not requested).
    pub fn push(&mut self, text: &str, lp: Option<Logprobs>) {
        if let Some(lp) = lp {
            self.pending.push((self.offset_chars, lp));
        }
        self.offset_chars += text.chars().count();
    }

    /// The `logprobs` value of the tokens added since the last call (`null` when the
    /// request asked for none).
    pub fn take(&mut self) -> Value {
        if !self.requested {
            return Value::Null;
        }
        let pending = std::mem::take(&mut self.pending);
        match self.endpoint {
            Endpoint::Chat => {
                let content: Vec<Value> = pending
                    .iter()
                    .map(|(_, lp)| {
                        let mut v = chat_token(&lp.chosen);
                        v["top_logprobs"] = lp.top.iter().map(chat_token).collect();
                        v
                    })
                    .collect();
                json!({ "content": content })
            }
            Endpoint::Completion => {
                let mut tokens = Vec::with_capacity(pending.len());
                let mut token_logprobs = Vec::with_capacity(pending.len());
                let mut top_logprobs = Vec::with_capacity(pending.len());
                let mut text_offset = Vec::with_capacity(pending.len());
                for (offset, lp) in &pending {
                    tokens.push(json!(lp.chosen.token));
                    token_logprobs.push(json!(finite(lp.chosen.logprob)));
                    // The alternatives plus the chosen token: up to n + 1 entries, as
                    // OpenAI documents. Tokens with the same text keep the likelier one.
                    let mut top = Map::new();
                    for t in lp.top.iter().chain(std::iter::once(&lp.chosen)) {
                        top.entry(t.token.clone())
                            .or_insert_with(|| json!(finite(t.logprob)));
                    }
                    top_logprobs.push(Value::Object(top));
                    text_offset.push(json!(offset));
                }
                json!({
                    "tokens": tokens,
                    "token_logprobs": token_logprobs,
                    "top_logprobs": top_logprobs,
                    "text_offset": text_offset,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tl(id: u32, token: &str, logprob: f32) -> TokenLogprob {
        TokenLogprob {
            token_id: id,
            token: token.into(),
            bytes: token.as_bytes().to_vec(),
            logprob,
        }
    }

    fn lp(chosen: TokenLogprob, top: Vec<TokenLogprob>) -> Logprobs {
        Logprobs { chosen, top }
    }

    fn meta(endpoint: Endpoint, logprobs: bool) -> ReplyMeta {
        ReplyMeta::new(endpoint, "r", "m").with_logprobs(logprobs)
    }

    #[test]
    fn chat_content_entries() {
        let mut b = LogprobsOut::new(&meta(Endpoint::Chat, true));
        assert_eq!(b.take(), json!({"content": []}));
        b.push(
            " Paris",
            Some(lp(
                tl(1, " Paris", -0.25),
                vec![tl(1, " Paris", -0.25), tl(2, " Lyon", -2.0)],
            )),
        );
        b.push("", Some(lp(tl(3, "\u{FFFD}", f32::NEG_INFINITY), vec![])));
        let v = b.take();
        let c = v["content"].as_array().unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0]["token"], " Paris");
        assert_eq!(c[0]["logprob"], -0.25);
        assert_eq!(c[0]["bytes"], json!(b" Paris".to_vec()));
        assert_eq!(c[0]["top_logprobs"][1]["token"], " Lyon");
        assert_eq!(c[0]["top_logprobs"][1]["logprob"], -2.0);
        assert_eq!(c[1]["logprob"], -9999.0);
        assert_eq!(c[1]["top_logprobs"], json!([]));
        // Taken tokens are not repeated.
        assert_eq!(b.take(), json!({"content": []}));
    }

    #[test]
    fn completion_arrays_and_offsets() {
        let mut b = LogprobsOut::new(&meta(Endpoint::Completion, true));
        b.push("é", Some(lp(tl(5, "é", -0.5), vec![tl(5, "é", -0.5)])));
        let first = b.take();
        assert_eq!(first["text_offset"], json!([0]));
        b.push(" b", Some(lp(tl(7, " b", -3.0), vec![tl(8, " c", -1.0)])));
        b.push("", Some(lp(tl(9, "x", -1.5), vec![])));
        let v = b.take();
        assert_eq!(v["tokens"], json!([" b", "x"]));
        assert_eq!(v["token_logprobs"], json!([-3.0, -1.5]));
        // The chosen token joins the top dict when it is not among the alternatives.
        assert_eq!(v["top_logprobs"][0], json!({" c": -1.0, " b": -3.0}));
        assert_eq!(v["top_logprobs"][1], json!({"x": -1.5}));
        // Offsets count characters of the text before each token.
        assert_eq!(v["text_offset"], json!([1, 3]));
    }

    #[test]
    fn not_requested_is_null() {
        for e in [Endpoint::Chat, Endpoint::Completion] {
            let mut b = LogprobsOut::new(&meta(e, false));
            b.push("a", None);
            assert_eq!(b.take(), Value::Null);
        }
    }
}
