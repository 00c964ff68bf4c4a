//! Loading a model from a GGUF file: every tensor dequantised to f32 (prefill), and on
//! request the 2-D weights kept as quantised blocks too (decode): Q4_1 and Q8_0 bit for bit,
//! other types re-quantised to Q8_0.
//!
//! GGUF names tensors llama.cpp-style (`blk.3.attn_q.weight`); they are renamed to HF
//! names for [`crate::ModelWeights::build`]. llama.cpp permutes llama/mistral q/k rows for
//! its adjacent-pair RoPE, so those models run with interleaved RoPE (as candle-transformers'
//! `quantized_llama` does); qwen2 GGUFs are not permuted.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::quant::{QMatrix, QuantFormat, BLOCK};
use crate::tokenizer::GgufTokenizerData;
use crate::{Family, ModelConfig, ModelError, Result};

fn invalid(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::InvalidFile {
        path: path.display().to_string(),
        message: message.into(),
    }
}

fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, leaf) = rest.split_once('.')?;
    let mapped = match leaf {
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_q.bias" => "self_attn.q_proj.bias",
        "attn_k.bias" => "self_attn.k_proj.bias",
        "attn_v.bias" => "self_attn.v_proj.bias",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{mapped}"))
}

/// What a GGUF file yields: config, HF-named f32 tensors, tokenizer metadata.
pub struct GgufContents {
    /// Hyper-parameters.
    pub config: ModelConfig,
    /// Dequantised tensors by HF name.
    pub tensors: HashMap<String, Tensor>,
    /// Quantised `[out, in]` matrices by HF name (2-D weights whose width is a multiple of
    /// 32), when asked for.
    pub quantized: HashMap<String, QMatrix>,
    /// Tokenizer metadata.
    pub tokenizer: GgufTokenizerData,
}

/// The quantised form of a GGUF tensor: its own blocks for Q4_1/Q8_0, else its dequantised
/// values `t` re-quantised to Q8_0; `None` for 1-D tensors and widths that are not a
/// multiple of 32.
fn quantized_matrix(q: &QTensor, t: &Tensor) -> candle_core::Result<Option<QMatrix>> {
    let Ok((rows, cols)) = q.shape().dims2() else {
        return Ok(None);
    };
    if !cols.is_multiple_of(BLOCK) {
        return Ok(None);
    }
    let err = |e: crate::ModelError| candle_core::Error::Msg(e.to_string());
    let m = match q.dtype() {
        GgmlDType::Q4_1 => QMatrix::from_ggml(QuantFormat::Q4_1, rows, cols, &q.data()?),
        GgmlDType::Q8_0 => QMatrix::from_ggml(QuantFormat::Q8_0, rows, cols, &q.data()?),
        _ => {
            let v: Vec<f32> = t
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1()?;
            QMatrix::quantize(QuantFormat::Q8_0, rows, cols, &v)
        }
    };
    m.map(Some).map_err(err)
}

/// Reads and dequantises a GGUF file; with `keep_quantized` also keeps the quantised blocks
/// ([`GgufContents::quantized`]). Errors name the file and what is wrong (not GGUF,
/// truncated, unsupported architecture, missing key or tensor).
pub fn read_gguf(path: &Path, device: &Device, keep_quantized: bool) -> Result<GgufContents> {
    let file = File::open(path).map_err(|e| ModelError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    let mut reader = BufReader::new(file);
    let ct =
        Content::read(&mut reader).map_err(|e| invalid(path, format!("not a GGUF file: {e}")))?;
    let md = &ct.metadata;
    let get = |k: &str| {
        md.get(k)
            .ok_or_else(|| ModelError::Missing(format!("metadata {k}")))
    };
    let arch = get("general.architecture")?
        .to_string()
        .map_err(|e| invalid(path, e.to_string()))?
        .clone();
    let family =
        Family::from_arch(&arch).ok_or(ModelError::UnsupportedArchitecture(arch.clone()))?;
    let u = |k: &str| -> Result<usize> {
        let v = get(&format!("{arch}.{k}"))?;
        v.to_u32()
            .map(|x| x as usize)
            .or_else(|_| v.to_u64().map(|x| x as usize))
            .map_err(|e| invalid(path, format!("{arch}.{k}: {e}")))
    };
    let f = |k: &str, default: f64| -> f64 {
        md.get(&format!("{arch}.{k}"))
            .and_then(|v| v.to_f32().ok())
            .map(|x| x as f64)
            .unwrap_or(default)
    };
    let strings = |k: &str| -> Result<Vec<String>> {
        match md.get(k) {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.to_string()
                        .cloned()
                        .map_err(|e| invalid(path, e.to_string()))
                })
                .collect(),
            Some(_) => Err(invalid(path, format!("{k} is not an array"))),
            None => Ok(Vec::new()),
        }
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let hidden = u("embedding_length")?;
    let heads = u("attention.head_count")?;
    let head_dim = u("attention.key_length").unwrap_or(hidden / heads.max(1));
    let config = ModelConfig {
        family,
        vocab_size: tokens.len(),
        hidden_size: hidden,
        intermediate_size: u("feed_forward_length")?,
        num_layers: u("block_count")?,
        num_heads: heads,
        num_kv_heads: u("attention.head_count_kv").unwrap_or(heads),
        head_dim,
        rope_theta: f("rope.freq_base", 10000.0),
        rms_norm_eps: f("attention.layer_norm_rms_epsilon", 1e-5),
        max_position: u("context_length")?,
        qkv_bias: ct.tensor_infos.contains_key("blk.0.attn_q.bias"),
        rope_interleaved: family != Family::Qwen2,
    };
    config.validate()?;
    let token_types = match md.get("tokenizer.ggml.token_type") {
        Some(Value::Array(a)) => a.iter().map(|v| v.to_i32().unwrap_or(1)).collect(),
        _ => Vec::new(),
    };
    let tokenizer = GgufTokenizerData {
        model: md
            .get("tokenizer.ggml.model")
            .and_then(|v| v.to_string().ok().cloned())
            .unwrap_or_default(),
        pre: md
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok().cloned())
            .unwrap_or_default(),
        tokens,
        merges: strings("tokenizer.ggml.merges")?,
        token_types,
        eos_token_id: md
            .get("tokenizer.ggml.eos_token_id")
            .and_then(|v| v.to_u32().ok()),
        chat_template: md
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok().cloned()),
    };
    let mut tensors = HashMap::new();
    let mut quantized = HashMap::new();
    let mut names: Vec<&String> = ct.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let Some(hf) = hf_name(name) else { continue };
        let q = ct
            .tensor(&mut reader, name, device)
            .map_err(|e| invalid(path, format!("tensor {name}: {e}")))?;
        let t = q
            .dequantize(device)
            .map_err(|e| invalid(path, format!("tensor {name}: {e}")))?;
        if keep_quantized {
            if let Some(m) = quantized_matrix(&q, &t)
                .map_err(|e| invalid(path, format!("tensor {name}: {e}")))?
            {
                quantized.insert(hf.clone(), m);
            }
        }
        tensors.insert(hf, t);
    }
    Ok(GgufContents {
        config,
        tensors,
        quantized,
        tokenizer,
    })
}
