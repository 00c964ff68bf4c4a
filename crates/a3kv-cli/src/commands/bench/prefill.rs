//! `a3kv bench prefill`: full prefill tokens/s vs candle-transformers' `quantized_llama`
//! (dequantised) on the same weights in one process, the achieved GFLOP/s against the measured
//! f32 matmul rate, and peak RSS; with llama-bench JSONL (`--llamacpp`), llama.cpp's prefill
//! tokens/s per weight type at each length and our ratio to its best.

use std::path::PathBuf;
use std::time::Instant;

use a3kv_model::{Device, Tensor};
use anyhow::Context;
use clap::Args;
use serde_json::json;

use super::prompt_ids;
use crate::commands::llamacpp;
use crate::common::{median, peak_rss_bytes};

/// `a3kv bench prefill`.
#[derive(Args, Debug)]
pub struct PrefillArgs {
    /// Model (GGUF); default: the fetched SmolLM2.
    #[arg(long, env = "A3KV_MODEL")]
    pub model: Option<PathBuf>,
    /// Prompt lengths in tokens.
    #[arg(long, value_delimiter = ',', default_value = "512,2048,4096")]
    pub lengths: Vec<usize>,
    /// Runs per length (median reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Skip the candle-transformers reference (whose own weights also count in the peak RSS).
    #[arg(long)]
    pub no_reference: bool,
    /// Element type of the prefill's KV cache (key `engine.kv_dtype`): f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub kv_dtype: a3kv_store::KvDtype,
    /// llama-bench JSONL (as `shared/tools/llamacpp-anchor.sh` writes it, measured on this
    /// machine): prints llama.cpp's ppN tokens/s per weight type and our ratio to its best.
    #[arg(long)]
    pub llamacpp: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Measured f32 matmul rate (GFLOP/s) of a 1024×2048 · 2048×2048 product.
fn matmul_gflops() -> anyhow::Result<f64> {
    let a = Tensor::randn(0f32, 1.0, (1024, 2048), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 1.0, (2048, 2048), &Device::Cpu)?;
    let _ = a.matmul(&b)?;
    let mut t = Vec::new();
    for _ in 0..5 {
        let s = Instant::now();
        let _ = a.matmul(&b)?;
        t.push(s.elapsed().as_secs_f64());
    }
    Ok(2.0 * 1024.0 * 2048.0 * 2048.0 / median(&t) / 1e9)
}

/// Runs `a3kv bench prefill`.
pub fn run(a: PrefillArgs) -> anyhow::Result<()> {
    let llama_rows = match &a.llamacpp {
        Some(p) => Some(llamacpp::read_jsonl(p)?),
        None => None,
    };
    let mut lm = crate::common::load(a.model.clone())?;
    lm.model = lm
        .model
        .with_kv_dtype(a3kv_sched::kv_candle_dtype(a.kv_dtype))?;
    let cfg = lm.model.config().clone();
    let rate = matmul_gflops()?;
    println!("machine f32 matmul (1024x2048x2048): {rate:.1} GFLOP/s");
    let mut reference = if a.no_reference {
        None
    } else {
        // Dequantised weights, as ours: the comparison is of compute, not of formats.
        std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
        let mut f = std::fs::File::open(&lm.source)?;
        let ct = candle_core::quantized::gguf_file::Content::read(&mut f)
            .context("reference needs a GGUF model")?;
        Some(
            candle_transformers::models::quantized_llama::ModelWeights::from_gguf(
                ct,
                &mut f,
                &Device::Cpu,
            )?,
        )
    };
    println!(
        "{:>7} {:>12} {:>10} {:>14} {:>10} {:>8} {:>9}",
        "tokens", "a3kv tok/s", "GFLOP/s", "% of matmul", "ref tok/s", "ratio", "runs"
    );
    let mut rows = Vec::new();
    for &n in &a.lengths {
        let ids = prompt_ids(&lm.tokenizer, n)?;
        lm.model.check_context(0, n)?;
        let mut ours = Vec::new();
        for _ in 0..a.runs.max(1) {
            let s = Instant::now();
            let _ = lm.model.prefill(&ids, 0, false)?;
            ours.push(s.elapsed().as_secs_f64());
        }
        let ours_s = median(&ours);
        let flops = cfg.prefill_flops(n);
        let mut theirs_s = None;
        if let Some(r) = reference.as_mut() {
            let input = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
            let mut t = Vec::new();
            for _ in 0..a.runs.max(1) {
                r.clear_kv_cache();
                let s = Instant::now();
                let _ = r.forward(&input, 0)?;
                t.push(s.elapsed().as_secs_f64());
            }
            theirs_s = Some(median(&t));
        }
        let gflops = flops / ours_s / 1e9;
        println!(
            "{:>7} {:>12.1} {:>10.1} {:>13.1}% {:>10} {:>8} {:>9}",
            n,
            n as f64 / ours_s,
            gflops,
            100.0 * gflops / rate,
            theirs_s
                .map(|t| format!("{:.1}", n as f64 / t))
                .unwrap_or("-".into()),
            theirs_s
                .map(|t| format!("{:.2}x", t / ours_s))
                .unwrap_or("-".into()),
            a.runs
        );
        rows.push(
            json!({"tokens": n, "a3kv_secs": ours_s, "a3kv_tok_s": n as f64 / ours_s,
            "gflops": gflops, "matmul_gflops": rate, "reference_secs": theirs_s,
            "speedup": theirs_s.map(|t| t / ours_s)}),
        );
    }
    if let Some(llama) = &llama_rows {
        for r in &rows {
            let (n, ours) = (r["tokens"].as_u64().unwrap_or(0), r["a3kv_tok_s"].as_f64());
            let line = ours.and_then(|o| llamacpp::compare(llama, &format!("pp{n}"), o));
            match line {
                Some(line) => println!("{n:>7}: {line}"),
                None => println!("{n:>7}: llama.cpp: no pp{n} row in the file"),
            }
        }
    }
    let rss = peak_rss_bytes();
    if let Some(b) = rss {
        println!("peak RSS: {:.0} MiB", b as f64 / (1 << 20) as f64);
    }
    if let Some(p) = a.out {
        std::fs::write(
            &p,
            serde_json::to_string_pretty(&json!({"prefill": rows, "peak_rss_bytes": rss,
                "kv_dtype": a.kv_dtype.as_str()}))?,
        )?;
    }
    Ok(())
}
