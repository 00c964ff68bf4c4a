//! `a3kv bench`: speed measurements as ratios measured in one process.
//!
//! - `prefill`: our full prefill vs candle-transformers' `quantized_llama` (dequantised) on
//!   the same weights, tokens/s, achieved GFLOP/s vs the measured matmul rate, peak RSS.
//! - `fusion`: TTFT of every method at several context lengths (warm chunk cache), as
//!   ratios to `full`, with the fusion report's phase times; each request runs through the
//!   engine `a3kv serve` runs, so TTFT is the served one.
//! - `scheduler`: the actor pipeline under closed-loop load (see `a3kv_sched::bench`).
//! - `store`: the disk tier's chunk load vs a plain read (see `a3kv_store::bench`).
//! - `decode`: decode tokens/s, quantised vs f32, 1 and N sequences (see [`super::bench_decode`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use a3kv_fusion::{FusionParams, Method};
use a3kv_model::{Device, SamplingParams, Tensor};
use a3kv_sched::{DocumentRef, Engine, GenerateRequest, PromptSpec};
use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::common::{median, peak_rss_bytes};

/// Arguments of `a3kv bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

/// Which benchmark.
#[derive(Subcommand, Debug)]
pub enum BenchWhat {
    /// Full prefill tokens/s vs candle-transformers, same weights, same process.
    Prefill(PrefillArgs),
    /// TTFT per fusion method vs full, warm chunk cache, through the engine `a3kv serve` runs
    /// (TTFT = the served time to first token: submit to first token, scheduler included).
    Fusion(FusionArgs),
    /// The actor pipeline under closed-loop load: requests/s and TTFT p50/p99 per method,
    /// batching on/off and concurrency, plus cold (disk) vs warm (memory) TTFT.
    Scheduler(SchedulerArgs),
    /// Chunk store disk tier: loading a chunk (checksummed, layer by layer) vs a plain
    /// `read` of the same file, page cache cold and warm.
    Store(StoreArgs),
    /// Decode tokens/s: one sequence and batched (1/4/16), quantised weights vs f32, with
    /// llama.cpp's rates from a llama-bench JSONL (`--llamacpp`).
    Decode(super::bench_decode::DecodeArgs),
}

/// `a3kv bench store`. The default shape is SmolLM2-135M's (30 layers, 3 KV heads, d 64).
#[derive(Args, Debug)]
pub struct StoreArgs {
    /// Directory on the disk to measure (a temporary subdirectory is created and removed).
    #[arg(long, default_value_os_t = std::env::temp_dir().join("a3kv-store-bench"))]
    pub dir: PathBuf,
    /// Tokens in the chunk.
    #[arg(long, default_value_t = 512)]
    pub tokens: u32,
    /// Layers.
    #[arg(long, default_value_t = 30)]
    pub layers: u32,
    /// KV heads.
    #[arg(long, default_value_t = 3)]
    pub kv_heads: u32,
    /// Head dimension.
    #[arg(long, default_value_t = 64)]
    pub head_dim: u32,
    /// Timed repetitions (median reported).
    #[arg(long, default_value_t = 15)]
    pub iterations: u32,
}

/// `a3kv bench scheduler`.
#[derive(Args, Debug)]
pub struct SchedulerArgs {
    /// Model; default: the fetched SmolLM2.
    #[arg(long, env = "A3KV_MODEL")]
    pub model: Option<PathBuf>,
    /// Closed-loop concurrencies.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub concurrency: Vec<usize>,
    /// Requests per measured point.
    #[arg(long, default_value_t = 16)]
    pub requests: usize,
    /// Tokens generated per request.
    #[arg(long, default_value_t = 8)]
    pub max_tokens: usize,
    /// Methods compared (the first is the baseline).
    #[arg(long, value_delimiter = ',', default_value = "a3,full")]
    pub methods: Vec<String>,
    /// Recompute batching settings measured: `on`, `off` or both.
    #[arg(long, value_delimiter = ',', default_value = "on,off", value_parser = parse_on_off)]
    pub batching: Vec<bool>,
    /// Documents per request (context ≈ this × the document length).
    #[arg(long, default_value_t = 3)]
    pub docs_per_request: usize,
    /// Synthetic document pool size.
    #[arg(long, default_value_t = 8)]
    pub pool: usize,
    /// Sentences per synthetic document (≈ 15 tokens each; 34 ≈ one 512-token chunk).
    #[arg(long, default_value_t = 12)]
    pub doc_sentences: usize,
    /// Skip the cold (disk tier) point.
    #[arg(long)]
    pub no_cold: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

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
    /// Skip the candle-transformers reference.
    #[arg(long)]
    pub no_reference: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `a3kv bench fusion`.
#[derive(Args, Debug)]
pub struct FusionArgs {
    /// Model file (GGUF) or HF directory (key `model.path`); default: the fetched SmolLM2.
    #[arg(long, env = "A3KV_MODEL")]
    pub model: Option<PathBuf>,
    /// Server configuration (model options, store, engine settings); without it the built-in
    /// defaults apply. The prompt limit is raised to the model's context.
    #[arg(long, short = 'c', value_name = "FILE", env = "A3KV_CONFIG")]
    pub config: Option<PathBuf>,
    /// Override any configuration key, e.g. `--set engine.batch_wait_ms=0` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Context lengths in tokens.
    #[arg(long, value_delimiter = ',', default_value = "1024,2048,4096")]
    pub lengths: Vec<usize>,
    /// Chunk size in tokens (key `engine.chunk_tokens`, 512 built in).
    #[arg(long)]
    pub chunk_tokens: Option<usize>,
    /// Methods (the first is the baseline of the ratios).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "full,reuse,cacheblend,epic,a3"
    )]
    pub methods: Vec<String>,
    /// Recompute ratio.
    #[arg(long, default_value_t = 0.15)]
    pub ratio: f64,
    /// Runs per point (median reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Also time each method's `fused_prefill` alone on the same prompt (in-memory chunks,
    /// no scheduler), to show what the served path adds.
    #[arg(long)]
    pub direct: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs `a3kv bench`.
pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    match a.what {
        BenchWhat::Prefill(p) => prefill(p),
        BenchWhat::Fusion(f) => fusion(f),
        BenchWhat::Scheduler(s) => scheduler(s),
        BenchWhat::Store(s) => store(s),
        BenchWhat::Decode(d) => super::bench_decode::run(d),
    }
}

/// Deterministic prompt ids of length `n` from real text (repeated).
pub(crate) fn prompt_ids(tok: &a3kv_model::ModelTokenizer, n: usize) -> anyhow::Result<Vec<u32>> {
    let text = "Retrieval-augmented generation prepends retrieved passages to a question. \
        The same documents recur across requests, so their key-value caches can be computed \
        once and reused; only the tokens the question attends to need recomputation. ";
    let base = tok.encode(text)?;
    Ok(base.iter().cycle().take(n).copied().collect())
}

/// A document of at least `n` tokens (tokenised alone, as the engine does) from the text of
/// [`prompt_ids`]: decoding and re-encoding merges tokens across the repeats, so grow until
/// long enough (a few tokens over at most).
fn doc_text(tok: &a3kv_model::ModelTokenizer, n: usize) -> anyhow::Result<String> {
    let mut ids_wanted = n;
    loop {
        let text = tok.decode(&prompt_ids(tok, ids_wanted)?)?;
        let got = tok.encode(&text)?.len();
        if got >= n {
            return Ok(text);
        }
        ids_wanted += n - got;
    }
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

fn prefill(a: PrefillArgs) -> anyhow::Result<()> {
    let lm = crate::common::load(a.model.clone())?;
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
    let rss = peak_rss_bytes();
    if let Some(b) = rss {
        println!("peak RSS: {:.0} MiB", b as f64 / (1 << 20) as f64);
    }
    if let Some(p) = a.out {
        std::fs::write(
            &p,
            serde_json::to_string_pretty(&json!({"prefill": rows, "peak_rss_bytes": rss}))?,
        )?;
    }
    Ok(())
}

fn fusion(a: FusionArgs) -> anyhow::Result<()> {
    let methods: Vec<Method> = a
        .methods
        .iter()
        .map(|m| m.parse())
        .collect::<Result<_, _>>()?;
    let mut set = a.set.clone();
    if let Some(n) = a.chunk_tokens {
        set.push(format!("engine.chunk_tokens={n}"));
    }
    let mut cfg = crate::served::served_config(a.config.clone(), a.model.clone(), set)?;
    let lm = crate::served::served_model(&cfg)?;
    let tok = lm.tokenizer.clone();
    let direct_model = a.direct.then(|| lm.clone());
    let chunk_tokens = cfg.engine.chunk_tokens;
    // The command line is the operator: any length the model holds is allowed.
    cfg.engine.max_prompt_tokens = cfg
        .engine
        .max_prompt_tokens
        .max(lm.model.config().max_position);
    const QUESTION: &str = "Which documents describe how caches are reused, and why?";
    // The prompt's prefix and question rows, as the engine assembles them.
    let frame = a3kv_fusion::RagParts::assemble(
        &tok,
        None,
        a3kv_model::DEFAULT_RAG_INSTRUCTION,
        [],
        QUESTION,
        chunk_tokens,
    )?;
    let (prefix_len, question_len) = (frame.prefix.len(), frame.question.len());
    let rt = tokio::runtime::Runtime::new()?;
    let engine = rt
        .block_on(Engine::start(cfg.engine.clone(), lm))
        .context("starting the engine")?;
    let result = rt.block_on(async {
        let mut rows = Vec::new();
        println!(
            "{:>7} {:>11} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "tokens",
            "method",
            "TTFT s",
            "vs first",
            "floor",
            "recomp.",
            "repos. s",
            "check s",
            "select. s"
        );
        if a.direct {
            println!("(direct: fused_prefill alone on the same prompt, in-memory chunks)");
        }
        for &n in &a.lengths {
            let doc_tokens = n.saturating_sub(prefix_len + question_len).max(1);
            let doc = doc_text(&tok, doc_tokens)?;
            // Warm cache: the document's chunks stored, and the shared prefix by one cheap
            // request, before timing.
            engine.put_chunks(vec![(None, doc.clone())], false).await?;
            let request = |method: Method| GenerateRequest {
                request_id: format!("bench-fusion-{n}"),
                prompt: PromptSpec::Rag {
                    system: None,
                    documents: vec![DocumentRef::Text {
                        id: None,
                        text: doc.clone(),
                    }],
                    question: QUESTION.into(),
                },
                fusion: Some(FusionParams {
                    method,
                    budget: a3kv_fusion::Budget::Ratio(a.ratio),
                    ..Default::default()
                }),
                sampling: SamplingParams::default(),
                max_tokens: 1,
                stop: Vec::new(),
                logprobs: None,
                first_token_logits: false,
            };
            crate::served::serve_one(&engine, request(Method::Reuse)).await?;
            // `--direct`: the same prompt's caches, built once for every method.
            let direct_prompt = match &direct_model {
                Some(lm) => Some(DirectPrompt::build(lm, &doc, QUESTION, chunk_tokens)?),
                None => None,
            };
            let mut base = None;
            for &m in &methods {
                let mut t = Vec::new();
                let mut last = None;
                let mut tokens = 0;
                for _ in 0..a.runs.max(1) {
                    let served = crate::served::serve_one(&engine, request(m)).await?;
                    t.push(served.usage.ttft_secs);
                    tokens = served.usage.prompt_tokens;
                    last = served.usage.fusion;
                }
                let ttft = median(&t);
                let base_t = *base.get_or_insert(ttft);
                let r = last.unwrap_or_default();
                println!(
                    "{:>7} {:>11} {:>10.3} {:>7.3}x {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                    tokens,
                    m.as_str(),
                    ttft,
                    ttft / base_t,
                    r.flop_floor,
                    r.recompute_ratio,
                    r.reposition_secs,
                    r.check_secs,
                    r.selection_secs
                );
                let direct = match (&direct_model, &direct_prompt) {
                    (Some(lm), Some(dp)) => Some(dp.secs(lm, m, &a)?),
                    _ => None,
                };
                if let Some(d) = direct {
                    println!(
                        "{:>7} {:>11} {:>10.3}   engine / direct = {:.3}x",
                        "",
                        "direct",
                        d,
                        ttft / d
                    );
                }
                rows.push(
                    json!({"tokens": tokens, "method": m.as_str(), "ttft_secs": ttft,
                    "ratio_to_first": ttft / base_t, "direct_secs": direct, "report": r}),
                );
            }
        }
        anyhow::Ok(rows)
    });
    rt.block_on(engine.shutdown(Duration::from_secs(5)));
    let rows = result?;
    if let Some(p) = a.out {
        std::fs::write(&p, serde_json::to_string_pretty(&json!({"fusion": rows}))?)?;
    }
    Ok(())
}

/// The prompt the engine builds from a document and a question, with its prefix and chunk
/// caches precomputed in memory: what `--direct` runs `fused_prefill` on.
struct DirectPrompt {
    prompt: a3kv_fusion::RagPrompt,
    prefix: Option<std::sync::Arc<a3kv_fusion::ChunkKv>>,
    chunks: Vec<std::sync::Arc<a3kv_fusion::ChunkKv>>,
}

impl DirectPrompt {
    fn build(
        lm: &a3kv_model::LoadedModel,
        doc: &str,
        question: &str,
        chunk_tokens: usize,
    ) -> anyhow::Result<Self> {
        use a3kv_fusion::{precompute_chunk, RagParts};
        let parts = RagParts::build(
            &lm.tokenizer,
            None,
            a3kv_model::DEFAULT_RAG_INSTRUCTION,
            &[doc.to_string()],
            question,
            chunk_tokens,
        )?;
        Ok(Self {
            prompt: parts.prompt()?,
            prefix: Some(precompute_chunk(&lm.model, &parts.prefix, None)?),
            chunks: parts
                .chunks
                .iter()
                .map(|c| precompute_chunk(&lm.model, c, None))
                .collect::<Result<Vec<_>, _>>()?,
        })
    }

    /// Median seconds of `fused_prefill` alone for `method` (`a.runs` runs).
    fn secs(
        &self,
        lm: &a3kv_model::LoadedModel,
        method: Method,
        a: &FusionArgs,
    ) -> anyhow::Result<f64> {
        let params = FusionParams {
            method,
            budget: a3kv_fusion::Budget::Ratio(a.ratio),
            ..Default::default()
        };
        let mut t = Vec::new();
        for _ in 0..a.runs.max(1) {
            let t0 = Instant::now();
            a3kv_fusion::fused_prefill(
                &lm.model,
                &self.prompt,
                self.prefix.clone(),
                &self.chunks,
                &params,
                false,
            )?;
            t.push(t0.elapsed().as_secs_f64());
        }
        Ok(median(&t))
    }
}

/// `on` / `off` (also `true` / `false`) for `--batching`.
fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        other => Err(format!("expected on or off, got {other:?}")),
    }
}

fn scheduler(a: SchedulerArgs) -> anyhow::Result<()> {
    let lm = crate::common::load(a.model.clone())?;
    let methods: Vec<Method> = a
        .methods
        .iter()
        .map(|m| m.parse())
        .collect::<Result<_, _>>()?;
    if a.docs_per_request == 0 || a.pool == 0 || a.doc_sentences == 0 {
        anyhow::bail!("--docs-per-request, --pool and --doc-sentences must be >= 1");
    }
    let opts = a3kv_sched::bench::SchedulerBenchOptions {
        concurrency: a.concurrency.clone(),
        requests: a.requests,
        max_tokens: a.max_tokens,
        methods,
        batching: a.batching.clone(),
        docs_per_request: a.docs_per_request,
        documents: a3kv_sched::bench::synthetic_documents(a.pool, a.doc_sentences),
        cold: !a.no_cold,
        ..Default::default()
    };
    let report =
        tokio::runtime::Runtime::new()?.block_on(a3kv_sched::bench::bench_scheduler(lm, opts))?;
    println!("{report}");
    if let Some(p) = a.out {
        std::fs::write(&p, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

fn store(a: StoreArgs) -> anyhow::Result<()> {
    if a.tokens == 0 || a.layers == 0 || a.kv_heads == 0 || a.head_dim == 0 {
        anyhow::bail!("--tokens, --layers, --kv-heads and --head-dim must be >= 1");
    }
    let cfg = a3kv_store::bench::BenchConfig {
        dir: a.dir,
        n_layers: a.layers,
        n_kv_heads: a.kv_heads,
        head_dim: a.head_dim,
        n_tokens: a.tokens,
        iterations: a.iterations,
    };
    println!("{}", a3kv_store::bench::run(&cfg)?);
    Ok(())
}
