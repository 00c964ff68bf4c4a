//! Per-token log-probabilities as the engine reports them: the sampler's ids and values
//! ([`a3kv_model::TokenLogprobs`]) with each token's text and raw bytes.

use a3kv_model::{ModelTokenizer, TokenLogprobs};

use crate::{Logprobs, TokenLogprob};

/// One token with its text: the raw bytes from the tokenizer (empty for an id the
/// tokenizer lacks, e.g. padding rows of the output layer), the text their lossy UTF-8.
fn describe(tok: &ModelTokenizer, token_id: u32, logprob: f32) -> TokenLogprob {
    let bytes = tok.token_bytes(token_id).unwrap_or_default();
    TokenLogprob {
        token_id,
        token: String::from_utf8_lossy(&bytes).into_owned(),
        bytes,
        logprob,
    }
}

/// The event payload of a sampled token's log-probabilities.
pub fn logprobs_event(tok: &ModelTokenizer, lp: &TokenLogprobs) -> Logprobs {
    Logprobs {
        chosen: describe(tok, lp.token_id, lp.logprob),
        top: lp.top.iter().map(|&(id, x)| describe(tok, id, x)).collect(),
    }
}
