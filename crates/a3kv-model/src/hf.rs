//! Loading a model from an HF directory: `config.json`, `*.safetensors`, `tokenizer.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::{Family, ModelConfig, ModelError, Result};

#[derive(Deserialize)]
struct HfConfig {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rope_theta: Option<f64>,
    rms_norm_eps: Option<f64>,
    max_position_embeddings: Option<usize>,
    eos_token_id: Option<serde_json::Value>,
}

/// What an HF directory yields.
pub struct HfContents {
    /// Hyper-parameters.
    pub config: ModelConfig,
    /// Tensors by name.
    pub tensors: HashMap<String, Tensor>,
    /// `eos_token_id` from `config.json` / `generation_config.json` (one or several).
    pub eos_ids: Vec<u32>,
    /// The files read (for the fingerprint).
    pub files: Vec<PathBuf>,
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        serde_json::Value::Array(a) => a.iter().flat_map(ids).collect(),
        _ => Vec::new(),
    }
}

fn read_json(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| ModelError::Io {
        path: path.display().to_string(),
        source: e,
    })
}

/// Reads `config.json` and every `*.safetensors` in `dir`.
pub fn read_hf_dir(dir: &Path, device: &Device) -> Result<HfContents> {
    let cfg_path = dir.join("config.json");
    let text = read_json(&cfg_path)?;
    let hf: HfConfig = serde_json::from_str(&text).map_err(|e| ModelError::InvalidFile {
        path: cfg_path.display().to_string(),
        message: e.to_string(),
    })?;
    let family = Family::from_arch(&hf.model_type)
        .ok_or(ModelError::UnsupportedArchitecture(hf.model_type))?;
    let config = ModelConfig {
        family,
        vocab_size: hf.vocab_size,
        hidden_size: hf.hidden_size,
        intermediate_size: hf.intermediate_size,
        num_layers: hf.num_hidden_layers,
        num_heads: hf.num_attention_heads,
        num_kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
        head_dim: hf
            .head_dim
            .unwrap_or(hf.hidden_size / hf.num_attention_heads.max(1)),
        rope_theta: hf.rope_theta.unwrap_or(10000.0),
        rms_norm_eps: hf.rms_norm_eps.unwrap_or(1e-6),
        max_position: hf.max_position_embeddings.unwrap_or(4096),
        qkv_bias: family == Family::Qwen2,
        rope_interleaved: false,
    };
    config.validate()?;
    let mut eos_ids = hf.eos_token_id.as_ref().map(ids).unwrap_or_default();
    let gen = dir.join("generation_config.json");
    if gen.exists() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&read_json(&gen)?) {
            if let Some(e) = v.get("eos_token_id") {
                eos_ids.extend(ids(e));
            }
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ModelError::Io {
            path: dir.display().to_string(),
            source: e,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ModelError::Missing(format!(
            "*.safetensors in {}",
            dir.display()
        )));
    }
    let mut tensors = HashMap::new();
    for f in &files {
        let t = candle_core::safetensors::load(f, device).map_err(|e| ModelError::InvalidFile {
            path: f.display().to_string(),
            message: e.to_string(),
        })?;
        tensors.extend(t);
    }
    files.insert(0, cfg_path);
    Ok(HfContents {
        config,
        tensors,
        eos_ids,
        files,
    })
}
