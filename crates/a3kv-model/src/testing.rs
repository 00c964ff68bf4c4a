//! Tiny random-weight models for fast exact checks (fused == full prefill, layer API
//! pieces == one shot) and for writing test checkpoints.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::{Family, FingerprintBuilder, Model, ModelConfig, ModelWeights, Result};

/// A small config: 3 layers, 4 query heads over 2 KV heads, head dim 8, vocab 64.
pub fn tiny_config(family: Family) -> ModelConfig {
    ModelConfig {
        family,
        vocab_size: 64,
        hidden_size: 32,
        intermediate_size: 48,
        num_layers: 3,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 8,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        max_position: 512,
        qkv_bias: family == Family::Qwen2,
        rope_interleaved: false,
    }
}

/// HF-named random tensors for `cfg` (deterministic in `seed`).
pub fn random_tensors(cfg: &ModelConfig, seed: u64) -> Result<HashMap<String, Tensor>> {
    let dev = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(seed);
    let (d, hd, kvd, i) = (
        cfg.hidden_size,
        cfg.num_heads * cfg.head_dim,
        cfg.num_kv_heads * cfg.head_dim,
        cfg.intermediate_size,
    );
    let mut m = HashMap::new();
    let mut r = |name: String, shape: &[usize], std: f32| -> Result<()> {
        let n: usize = shape.iter().product();
        // Box-Muller normals from a seeded RNG (the CPU device cannot be seeded).
        let data: Vec<f32> = (0..n)
            .map(|_| {
                let (u1, u2): (f32, f32) = (rng.gen_range(1e-7..1.0), rng.gen());
                std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
            })
            .collect();
        let t = Tensor::from_vec(data, shape, &dev)?;
        m.insert(name, t);
        Ok(())
    };
    r(
        "model.embed_tokens.weight".into(),
        &[cfg.vocab_size, d],
        1.0,
    )?;
    for l in 0..cfg.num_layers {
        let p = format!("model.layers.{l}");
        r(format!("{p}.self_attn.q_proj.weight"), &[hd, d], 0.3)?;
        r(format!("{p}.self_attn.k_proj.weight"), &[kvd, d], 0.3)?;
        r(format!("{p}.self_attn.v_proj.weight"), &[kvd, d], 0.3)?;
        if cfg.qkv_bias {
            r(format!("{p}.self_attn.q_proj.bias"), &[hd], 0.1)?;
            r(format!("{p}.self_attn.k_proj.bias"), &[kvd], 0.1)?;
            r(format!("{p}.self_attn.v_proj.bias"), &[kvd], 0.1)?;
        }
        r(format!("{p}.self_attn.o_proj.weight"), &[d, hd], 0.2)?;
        r(format!("{p}.mlp.gate_proj.weight"), &[i, d], 0.2)?;
        r(format!("{p}.mlp.up_proj.weight"), &[i, d], 0.2)?;
        r(format!("{p}.mlp.down_proj.weight"), &[d, i], 0.2)?;
        r(format!("{p}.input_layernorm.weight"), &[d], 0.1)?;
        r(format!("{p}.post_attention_layernorm.weight"), &[d], 0.1)?;
    }
    r("model.norm.weight".into(), &[d], 0.1)?;
    // Norm weights around 1.
    for (name, t) in m.iter_mut() {
        if name.ends_with("norm.weight") {
            *t = (t.clone() + 1.0)?;
        }
    }
    Ok(m)
}

/// A tiny random model of `family`.
pub fn tiny_model(family: Family, seed: u64) -> Result<Model> {
    let cfg = tiny_config(family);
    let w = ModelWeights::build(&cfg, random_tensors(&cfg, seed)?, DType::F32)?;
    let mut fp = FingerprintBuilder::default();
    fp.bytes("tiny", &seed.to_le_bytes());
    Model::new(cfg, w, DType::F32, Device::Cpu, fp.finish())
}

/// Largest absolute element-wise difference of two tensors of one shape: the tolerance
/// check of the kernel-vs-twin and path-vs-path tests. Panics when the tensors cannot be
/// subtracted (a test helper; nothing from input reaches it).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_dtype(DType::F32))
        .and_then(|d| d.to_scalar::<f32>())
        .unwrap_or_else(|e| panic!("max_abs_diff of {:?} and {:?}: {e}", a.dims(), b.dims()))
}

/// `n` deterministic values in [-1, 1] spread over 2,001 levels (seeded by `seed`): kernel
/// test inputs that need no RNG.
pub fn pattern_values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u32)
                .wrapping_mul(2654435761)
                .wrapping_add(seed.wrapping_mul(40503));
            ((h >> 8) % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// Runs `f` in a rayon pool of `threads` workers (to compare a kernel's split across
/// workers with its one-worker run).
pub fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a rayon pool")
        .install(f)
}
