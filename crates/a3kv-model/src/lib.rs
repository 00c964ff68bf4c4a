//! a3kv model core: Llama-family transformers (Llama, Mistral, Qwen2) on candle with a
//! layer- and row-level API.
//!
//! Fusion drives the model layer by layer over chosen rows of a KV cache that was partly
//! computed elsewhere and re-positioned, so the model never owns a cache: see
//! [`Model`] for the API and [`KvCache`] for the per-sequence cache. Pure compute: no
//! async and no I/O except weight loading.

pub mod attention;
pub mod chat;
pub mod config;
pub mod cpu_ops;
pub mod error;
pub mod fingerprint;
pub mod gguf;
pub mod hf;
pub mod kernels;
pub mod kv;
pub mod load;
pub mod locate;
pub mod model;
pub mod quant;
pub mod rope;
pub mod sampling;
pub mod testing;
pub mod token_bytes;
pub mod tokenizer;
pub mod weights;

pub use chat::{ChatMessage, ChatTemplate, DEFAULT_RAG_INSTRUCTION};
pub use config::{Family, ModelConfig};
pub use error::{ModelError, Result};
pub use fingerprint::{Fingerprint, FingerprintBuilder};
pub use kv::{KvCache, LayerKv};
pub use load::{load_model, DecodeWeights, LoadOptions, LoadedModel};
pub use locate::{
    default_model_path, find_default_model, SearchEnv, DEFAULT_MODEL_FILE, MISSING_MODEL_HINT,
};
pub use model::{Model, PrefillOutput, Qkv};
pub use rope::Rope;
pub use sampling::{argmax, log_softmax, token_logprobs, Sampler, SamplingParams, TokenLogprobs};
pub use tokenizer::{ModelTokenizer, TextStreamer};
pub use weights::ModelWeights;

pub use candle_core::{DType, Device, Tensor};
