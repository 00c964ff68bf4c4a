//! Tokenizer: `tokenizer.json` when present, otherwise built from GGUF metadata, plus the
//! model's chat template and stop tokens.

use std::path::Path;

use serde_json::{json, Value};
use tokenizers::{DecoderWrapper, Tokenizer};

use crate::chat::ChatTemplate;
use crate::{ModelError, Result};

/// Tokenizer data found in a GGUF file's metadata.
#[derive(Debug, Clone, Default)]
pub struct GgufTokenizerData {
    /// `tokenizer.ggml.model` (only `gpt2`, byte-level BPE, is supported).
    pub model: String,
    /// `tokenizer.ggml.pre`: pre-tokenizer flavour (`smollm`, `qwen2`, `llama-bpe`, ...).
    pub pre: String,
    /// Token strings by id.
    pub tokens: Vec<String>,
    /// BPE merges, `"a b"`.
    pub merges: Vec<String>,
    /// Token types by id (3 = control/special).
    pub token_types: Vec<i32>,
    /// End-of-sequence id.
    pub eos_token_id: Option<u32>,
    /// Jinja chat template, if present.
    pub chat_template: Option<String>,
}

const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn byte_level(use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

fn split(regex: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false})
}

/// Builds a `tokenizers::Tokenizer` equivalent to the model's `tokenizer.json` from GGUF
/// metadata (byte-level BPE; pre-tokenizer chosen by `tokenizer.ggml.pre`).
pub fn tokenizer_from_gguf(data: &GgufTokenizerData) -> Result<Tokenizer> {
    if data.model != "gpt2" {
        return Err(ModelError::Tokenizer(format!(
            "GGUF tokenizer model {:?} is not supported (only byte-level BPE, \"gpt2\")",
            data.model
        )));
    }
    let pre = match data.pre.as_str() {
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        "qwen2" => {
            json!({"type": "Sequence", "pretokenizers": [split(QWEN2_REGEX), byte_level(false)]})
        }
        "llama-bpe" | "llama3" => {
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_REGEX), byte_level(false)]})
        }
        _ => json!({"type": "Sequence", "pretokenizers": [split(GPT2_REGEX), byte_level(false)]}),
    };
    let vocab: serde_json::Map<String, Value> = data
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let added: Vec<Value> = data
        .token_types
        .iter()
        .enumerate()
        .filter(|(_, &ty)| ty == 3 || ty == 4)
        .filter_map(|(i, &ty)| {
            data.tokens.get(i).map(|t| {
                json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": ty == 3})
            })
        })
        .collect();
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": data.merges},
    });
    let text = serde_json::to_string(&spec).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    text.parse::<Tokenizer>()
        .map_err(|e| ModelError::Tokenizer(e.to_string()))
}

/// Loads `tokenizer.json`.
pub fn tokenizer_from_file(path: &Path) -> Result<Tokenizer> {
    Tokenizer::from_file(path)
        .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))
}

/// The model's tokenizer with its chat template and stop tokens.
#[derive(Clone)]
pub struct ModelTokenizer {
    inner: Tokenizer,
    template: ChatTemplate,
    stop_ids: Vec<u32>,
    vocab_size: usize,
    /// The decoder is byte-level BPE: token strings spell bytes (see [`crate::token_bytes`]).
    byte_level: bool,
}

impl std::fmt::Debug for ModelTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelTokenizer")
            .field("template", &self.template)
            .field("stop_ids", &self.stop_ids)
            .finish()
    }
}

impl ModelTokenizer {
    /// Wraps a tokenizer. `stop_ids` end generation.
    pub fn new(inner: Tokenizer, template: ChatTemplate, stop_ids: Vec<u32>) -> Self {
        let vocab_size = inner.get_vocab_size(true);
        let byte_level = match inner.get_decoder() {
            Some(DecoderWrapper::ByteLevel(_)) => true,
            Some(DecoderWrapper::Sequence(s)) => s
                .get_decoders()
                .iter()
                .any(|d| matches!(d, DecoderWrapper::ByteLevel(_))),
            _ => false,
        };
        Self {
            inner,
            template,
            stop_ids,
            vocab_size,
            byte_level,
        }
    }

    /// Encodes text (special-token strings such as `<|im_start|>` map to their ids).
    /// No BOS is added: callers that need one add it (see [`ChatTemplate`]).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decodes ids to text, skipping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    /// The text of one token id (special tokens included), if it exists.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The raw bytes one token id stands for (special tokens: their text), `None` for an id
    /// outside the vocabulary. Byte-level vocabularies give the exact bytes, also for a token
    /// that holds part of a multi-byte character; others give the UTF-8 of the token decoded
    /// alone.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        if self.byte_level {
            return self
                .inner
                .id_to_token(id)
                .map(|t| crate::token_bytes::byte_level_bytes(&t));
        }
        self.inner.id_to_token(id)?;
        self.inner.decode(&[id], false).ok().map(String::into_bytes)
    }

    /// Id of a token string.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Tokens that end generation.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// The chat template.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Bytes that identify this tokenizer (for the model fingerprint).
    pub fn identity_bytes(&self) -> Vec<u8> {
        self.inner
            .to_string(false)
            .map(|s| s.into_bytes())
            .unwrap_or_default()
    }
}

/// Streams decoded text token by token without splitting multi-byte characters:
/// each call returns only the newly completed text.
#[derive(Debug, Default)]
pub struct TextStreamer {
    ids: Vec<u32>,
    emitted: usize,
}

impl TextStreamer {
    /// Adds a token and returns the text it completes (possibly empty).
    pub fn push(&mut self, tok: &ModelTokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = tok.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let new = text.get(self.emitted..).unwrap_or("").to_string();
        self.emitted = text.len();
        Ok(new)
    }
}
