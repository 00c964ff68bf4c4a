//! `a3kv bench decode`: decode tokens/s of the quantised path and its f32 twin in one
//! process — one sequence through `Model::decode_step`, and N sequences through the batched
//! step the Decoder actor runs (`Model::decode_batch`) — with llama.cpp's
//! tokens/s from a llama-bench JSONL beside them.
//!
//! `--crossover` times prefills of a few rows on both weight sets (where quantised stops
//! paying: `a3kv_model::model::QUANTIZED_MAX_ROWS`); `--kernels` times one matmul per kernel
//! and thread count (`a3kv_model::quant::PARALLEL_MIN_MACS`).

use std::path::PathBuf;
use std::time::Instant;

use a3kv_model::kernels::cpu::{q16, Isa};
use a3kv_model::quant::{
    qmatmul_packed, qmatmul_packed_exact, qmatmul_with, PackedMatrix, QMatrix, QuantFormat,
};
use a3kv_model::{argmax, DecodeWeights, Device, KvCache, Model, Tensor};
use anyhow::bail;
use clap::Args;
use serde_json::json;

use super::prompt_ids;
use crate::commands::llamacpp;
use crate::common::median;

/// `a3kv bench decode`.
#[derive(Args, Debug)]
pub struct DecodeArgs {
    /// Model; default: the fetched SmolLM2.
    #[arg(long, env = "A3KV_MODEL")]
    pub model: Option<PathBuf>,
    /// Tokens decoded per sequence (llama-bench's tg128 decodes 128).
    #[arg(long, default_value_t = 128)]
    pub tokens: usize,
    /// Prompt tokens prefilled before decoding starts.
    #[arg(long, default_value_t = 64)]
    pub prompt_tokens: usize,
    /// Concurrent sequences of the batched measurements.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub sequences: Vec<usize>,
    /// Runs per point (median reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Element type of the sequences' KV caches (key `engine.kv_dtype`): f32, f16 or bf16.
    /// Decode attention reads every cached row each step, so at many sequences the cache's
    /// bytes count.
    #[arg(long, default_value = "f32")]
    pub kv_dtype: a3kv_store::KvDtype,
    /// Weights measured: quantized, f32 or both (the ratio needs both).
    #[arg(long, value_delimiter = ',', default_value = "quantized,f32")]
    pub weights: Vec<String>,
    /// llama-bench JSONL (as `shared/tools/llamacpp-anchor.sh` writes it, measured on this
    /// machine): prints llama.cpp's tg tokens/s per weight type and our ratio to its best.
    #[arg(long)]
    pub llamacpp: Option<PathBuf>,
    /// Also time prefills of a few rows on both weight sets (the quantised row threshold).
    #[arg(long)]
    pub crossover: bool,
    /// Also time single matmuls per kernel and thread count.
    #[arg(long)]
    pub kernels: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The kernel the model's quantised products run on this CPU: the packed integer one
/// (`DecodeMatrix::for_this_cpu`) or the best exact one.
fn quantized_kernel() -> &'static str {
    if q16::available() {
        "q16_packed"
    } else {
        Isa::detect().as_str()
    }
}

/// The CPU's SIMD flags that matter to the kernels, from `/proc/cpuinfo`.
fn cpu_flags() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    let want = [
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx_vnni",
        "avx512_bf16",
    ];
    let have: Vec<&str> = want
        .into_iter()
        .filter(|w| flags.split_whitespace().any(|f| f == *w))
        .collect();
    have.join(" ")
}

/// A prompt per sequence: the same text, rotated so sequences differ.
fn prompts(
    tok: &a3kv_model::ModelTokenizer,
    n: usize,
    len: usize,
) -> anyhow::Result<Vec<Vec<u32>>> {
    let base = prompt_ids(tok, len + 64)?;
    Ok((0..n)
        .map(|s| base[(s * 3) % 64..][..len].to_vec())
        .collect())
}

/// Seconds to decode `tokens` greedy tokens after `prompt`, one `decode_step` at a time.
fn time_single(model: &Model, prompt: &[u32], tokens: usize) -> anyhow::Result<f64> {
    let out = model.prefill(prompt, 0, false)?;
    let mut cache = out.cache;
    let mut id = argmax(&out.logits.to_vec1::<f32>()?).unwrap_or(0);
    let start = Instant::now();
    for _ in 0..tokens {
        let l: Vec<f32> = model.decode_step(id, &mut cache)?.to_vec1()?;
        id = argmax(&l).unwrap_or(0);
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Seconds to decode `tokens` greedy tokens for every prompt at once (batched steps).
fn time_batched(model: &Model, prompts: &[Vec<u32>], tokens: usize) -> anyhow::Result<f64> {
    let mut caches: Vec<KvCache> = Vec::new();
    let mut ids = Vec::new();
    for p in prompts {
        let out = model.prefill(p, 0, false)?;
        ids.push(argmax(&out.logits.to_vec1::<f32>()?).unwrap_or(0));
        caches.push(out.cache);
    }
    let start = Instant::now();
    for _ in 0..tokens {
        let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
        // The step the Decoder actor runs (`a3kv-sched`'s `decode_batch` wraps this call).
        let logits = model.decode_batch(&ids, &mut refs)?.to_vec2::<f32>()?;
        ids = logits.iter().map(|l| argmax(l).unwrap_or(0)).collect();
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Runs `a3kv bench decode`.
pub fn run(a: DecodeArgs) -> anyhow::Result<()> {
    if a.tokens == 0 || a.prompt_tokens == 0 || a.sequences.contains(&0) {
        bail!("--tokens, --prompt-tokens and --sequences must be >= 1");
    }
    let mut lm = crate::common::load(a.model.clone())?;
    lm.model = lm
        .model
        .with_kv_dtype(a3kv_sched::kv_candle_dtype(a.kv_dtype))?;
    let rows = match &a.llamacpp {
        Some(p) => Some(llamacpp::read_jsonl(p)?),
        None => None,
    };
    println!(
        "CPU flags: {}; quantised kernel: {}; rayon threads: {}; KV cache: {}",
        cpu_flags(),
        quantized_kernel(),
        rayon::current_num_threads(),
        a.kv_dtype.as_str()
    );
    let mut models = Vec::new();
    for w in &a.weights {
        let mode: DecodeWeights = w.parse()?;
        models.push((mode, lm.model.with_decode_weights(mode)?));
    }
    let runs = a.runs.max(1);
    let most = a.sequences.iter().copied().max().unwrap_or(1);
    let ps = prompts(&lm.tokenizer, most, a.prompt_tokens)?;
    lm.model.check_context(0, a.prompt_tokens + a.tokens)?;
    println!(
        "{:>10} {:>22} {:>10} {:>16} {:>9}",
        "weights", "sequences", "tok/s/seq", "aggregate tok/s", "vs 1 seq"
    );
    println!("(\"vs 1 seq\": aggregate tok/s over one sequence's decode_step tok/s, same weights)");
    let mut results = Vec::new();
    let mut single = std::collections::HashMap::new();
    for (mode, model) in &models {
        let t: Vec<f64> = (0..runs)
            .map(|_| time_single(model, &ps[0], a.tokens))
            .collect::<anyhow::Result<_>>()?;
        let one = a.tokens as f64 / median(&t);
        single.insert(mode.as_str(), one);
        println!(
            "{:>10} {:>22} {:>10.1} {:>16.1} {:>9}",
            mode.as_str(),
            "1 (decode_step)",
            one,
            one,
            "-"
        );
        results.push(
            json!({"weights": mode.as_str(), "sequences": 1, "path": "decode_step",
            "tok_s": one, "runs": t}),
        );
        for &n in &a.sequences {
            let t: Vec<f64> = (0..runs)
                .map(|_| time_batched(model, &ps[..n], a.tokens))
                .collect::<anyhow::Result<_>>()?;
            let agg = (n * a.tokens) as f64 / median(&t);
            println!(
                "{:>10} {:>22} {:>10.1} {:>16.1} {:>8.2}x",
                mode.as_str(),
                format!("{n} (decode_batch)"),
                agg / n as f64,
                agg,
                agg / one
            );
            results.push(
                json!({"weights": mode.as_str(), "sequences": n, "path": "decode_batch",
                "aggregate_tok_s": agg, "runs": t}),
            );
        }
    }
    if let (Some(q), Some(f)) = (single.get("quantized"), single.get("f32")) {
        println!("one sequence: quantized / f32 = {:.2}x", q / f);
    }
    if let (Some(rows), Some(&ours)) = (&rows, single.values().copied().reduce(f64::max).as_ref()) {
        match llamacpp::decode_test(rows, a.tokens).and_then(|t| llamacpp::compare(rows, &t, ours))
        {
            Some(line) => println!("{line}"),
            None => println!("llama.cpp: no decode (tgN) rows in the file"),
        }
    }
    let crossover = if a.crossover {
        Some(crossover(&lm.model, &lm.tokenizer, runs)?)
    } else {
        None
    };
    let kernels = if a.kernels {
        Some(kernels(runs)?)
    } else {
        None
    };
    if let Some(p) = a.out {
        std::fs::write(
            &p,
            serde_json::to_string_pretty(&json!({"cpu_flags": cpu_flags(),
                "kernel": quantized_kernel(), "kv_dtype": a.kv_dtype.as_str(), "tokens": a.tokens,
                "prompt_tokens": a.prompt_tokens, "decode": results,
                "crossover": crossover, "kernels": kernels}))?,
        )?;
    }
    Ok(())
}

/// Prefill of `n` rows on f32 vs quantised weights, for small `n`.
fn crossover(
    model: &Model,
    tok: &a3kv_model::ModelTokenizer,
    runs: usize,
) -> anyhow::Result<serde_json::Value> {
    let f32_twin = model.with_decode_weights(DecodeWeights::F32)?;
    let quant = model.with_quantized_max_rows(usize::MAX)?;
    let ids = prompt_ids(tok, 128)?;
    println!("\nprefill of n rows (ms): f32 vs quantised weights");
    println!(
        "{:>5} {:>10} {:>10} {:>8}",
        "rows", "f32", "quantised", "ratio"
    );
    let mut out = Vec::new();
    for n in [1usize, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128] {
        let time = |m: &Model| -> anyhow::Result<f64> {
            let mut t = Vec::new();
            for _ in 0..runs.max(1) {
                let s = Instant::now();
                m.prefill(&ids[..n], 0, false)?;
                t.push(s.elapsed().as_secs_f64());
            }
            Ok(median(&t))
        };
        let (f, q) = (time(&f32_twin)?, time(&quant)?);
        println!("{n:>5} {:>10.2} {:>10.2} {:>7.2}x", 1e3 * f, 1e3 * q, f / q);
        out.push(json!({"rows": n, "f32_secs": f, "quantized_secs": q}));
    }
    Ok(json!(out))
}

/// One `[m, 576] · [3072, 576]ᵀ` (SmolLM2's gate|up) and `[m, 576] · [49152, 576]ᵀ` (its LM
/// head) per kernel, on the pool and on one thread, against f32 matmul.
fn kernels(runs: usize) -> anyhow::Result<serde_json::Value> {
    let pool1 = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let mut out = Vec::new();
    println!("\nmatmul (µs, fastest run): kernel × threads, f32 gemm for scale");
    println!(
        "{:>14} {:>4} {:>12} {:>10} {:>10}",
        "shape", "rows", "kernel", "pool", "1 thread"
    );
    for (name, n, format) in [
        ("gate_up q4_1", 3072usize, QuantFormat::Q4_1),
        ("lm_head q8_0", 49152, QuantFormat::Q8_0),
    ] {
        let k = 576;
        let wf: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 2003) as f32 / 2003.0) - 0.5)
            .collect();
        let w = QMatrix::quantize(format, n, k, &wf)?;
        let packed = PackedMatrix::pack(&w);
        let wt = Tensor::from_vec(wf, (n, k), &Device::Cpu)?
            .t()?
            .contiguous()?;
        for m in [1usize, 4, 16] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
            // The fastest of many runs: on a shared machine the minimum is the least
            // disturbed figure for a piece this short.
            let time = |f: &dyn Fn() -> anyhow::Result<()>| -> anyhow::Result<f64> {
                f()?;
                let mut best = f64::INFINITY;
                for _ in 0..(10 * runs).max(20) {
                    let s = Instant::now();
                    f()?;
                    best = best.min(s.elapsed().as_secs_f64());
                }
                Ok(1e6 * best)
            };
            // Times one kernel on the pool and on one thread; prints and records its row.
            let mut row =
                |label: &str, key: &str, run: &(dyn Fn() -> anyhow::Result<()> + Sync)| {
                    let pool = time(run)?;
                    let one = pool1.install(|| time(run))?;
                    println!("{name:>14} {m:>4} {label:>12} {pool:>10.1} {one:>10.1}");
                    out.push(json!({"shape": name, "rows": m, "kernel": key,
                    "pool_us": pool, "one_thread_us": one}));
                    anyhow::Ok(())
                };
            for isa in Isa::all().into_iter().filter(|i| i.available()) {
                row(isa.as_str(), isa.as_str(), &|| {
                    qmatmul_with(&x, &w, isa)?;
                    Ok(())
                })?;
            }
            if q16::available() {
                // The interleaved layout: 16 weight rows per integer dot product (decode),
                // and with f32 activations (prompt rows).
                row("q16 packed", "q16_packed", &|| {
                    qmatmul_packed(&x, &packed)?;
                    Ok(())
                })?;
                row("packed exact", "packed_exact", &|| {
                    qmatmul_packed_exact(&x, &packed)?;
                    Ok(())
                })?;
            }
            row("f32 gemm", "f32", &|| {
                x.matmul(&wt)?;
                Ok(())
            })?;
        }
    }
    Ok(json!(out))
}
