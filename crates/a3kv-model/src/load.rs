//! Entry point for loading a model + tokenizer from a GGUF file or an HF directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};

use crate::chat::ChatTemplate;
use crate::fingerprint::FingerprintBuilder;
use crate::quant::QuantWeights;
use crate::tokenizer::{tokenizer_from_file, tokenizer_from_gguf, ModelTokenizer};
use crate::weights::ModelWeights;
use crate::{Model, ModelError, Result};

/// Which weights the token-by-token path (decode, and any matmul of at most
/// [`crate::model::QUANTIZED_MAX_ROWS`] rows) multiplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecodeWeights {
    /// A GGUF's quantised blocks (Q4_1 and Q8_0 as stored, other types re-quantised to
    /// Q8_0) on the CPU; f32 for larger matmuls. Checkpoints without quantised blocks (HF
    /// directories) and other devices run f32.
    #[default]
    Quantized,
    /// f32 for every matmul (the reference twin of the quantised path).
    F32,
}

impl DecodeWeights {
    /// Config name: `quantized` or `f32`.
    pub fn as_str(&self) -> &'static str {
        match self {
            DecodeWeights::Quantized => "quantized",
            DecodeWeights::F32 => "f32",
        }
    }
}

impl std::str::FromStr for DecodeWeights {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "quantized" => Ok(DecodeWeights::Quantized),
            "f32" => Ok(DecodeWeights::F32),
            other => Err(ModelError::BadArgument(format!(
                "decode weights {other:?}: expected \"quantized\" or \"f32\""
            ))),
        }
    }
}

/// How to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Compute dtype (f32 on CPU; f16/bf16 optional).
    pub dtype: DType,
    /// Device.
    pub device: Device,
    /// Weights of the token-by-token path.
    pub decode_weights: DecodeWeights,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            device: Device::Cpu,
            decode_weights: DecodeWeights::default(),
        }
    }
}

/// A model and its tokenizer.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    /// The transformer.
    pub model: Model,
    /// Its tokenizer, chat template and stop tokens.
    pub tokenizer: ModelTokenizer,
    /// Where it was loaded from.
    pub source: PathBuf,
}

/// Loads a GGUF file (`*.gguf`) or an HF directory (`config.json` + `*.safetensors`
/// [+ `tokenizer.json`]). Errors name the path and the problem.
pub fn load_model(path: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    if !path.exists() {
        return Err(ModelError::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        });
    }
    let mut fp = FingerprintBuilder::default();
    fp.bytes("dtype", opts.dtype.as_str().as_bytes());
    let keep_quantized = opts.decode_weights == DecodeWeights::Quantized && opts.device.is_cpu();
    let (config, tensors, quantized, tokenizer) = if path.is_dir() {
        let hf = crate::hf::read_hf_dir(path, &opts.device)?;
        for f in &hf.files {
            fp.file(f)?;
        }
        let tok_path = path.join("tokenizer.json");
        let tok = tokenizer_from_file(&tok_path)?;
        let jinja = std::fs::read_to_string(path.join("tokenizer_config.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| {
                v.get("chat_template")
                    .and_then(|t| t.as_str().map(String::from))
            });
        let template = ChatTemplate::detect(jinja.as_deref(), hf.config.family);
        let mut stops = hf.eos_ids.clone();
        for s in ["<|im_end|>", "<|eot_id|>", "<|endoftext|>", "</s>"] {
            if let Some(id) = tok.token_to_id(s) {
                stops.push(id);
            }
        }
        stops.sort_unstable();
        stops.dedup();
        let mt = ModelTokenizer::new(tok, template, stops);
        (hf.config, hf.tensors, None, mt)
    } else {
        let g = crate::gguf::read_gguf(path, &opts.device, keep_quantized)?;
        fp.file(path)?;
        let tok = if let Some(p) = path
            .parent()
            .map(|d| d.join("tokenizer.json"))
            .filter(|p| p.exists())
        {
            tokenizer_from_file(&p)?
        } else {
            tokenizer_from_gguf(&g.tokenizer)?
        };
        let template = ChatTemplate::detect(g.tokenizer.chat_template.as_deref(), g.config.family);
        let mut stops: Vec<u32> = g.tokenizer.eos_token_id.into_iter().collect();
        let stop_text: &[&str] = match template {
            ChatTemplate::ChatMl { .. } => &["<|im_end|>", "<|endoftext|>"],
            ChatTemplate::Llama3 => &["<|eot_id|>", "<|end_of_text|>"],
            ChatTemplate::Mistral => &["</s>"],
        };
        for s in stop_text {
            if let Some(id) = tok.token_to_id(s) {
                stops.push(id);
            }
        }
        stops.sort_unstable();
        stops.dedup();
        let quantized = if keep_quantized {
            Some(Arc::new(QuantWeights::build(&g.config, g.quantized)?))
        } else {
            None
        };
        (
            g.config,
            g.tensors,
            quantized,
            ModelTokenizer::new(tok, template, stops),
        )
    };
    fp.bytes("tokenizer", &tokenizer.identity_bytes());
    let mut weights = ModelWeights::build(&config, tensors, opts.dtype)?;
    weights.quantized = quantized;
    weights.drop_dense_vocab();
    let model = Model::new(
        config,
        weights,
        opts.dtype,
        opts.device.clone(),
        fp.finish(),
    )?;
    Ok(LoadedModel {
        model,
        tokenizer,
        source: path.to_path_buf(),
    })
}
