//! `a3kv bench scheduler`: throughput and p50/p99 TTFT of the engine at several
//! concurrencies, recompute batching on vs off, `a3` vs `full`, and cold (disk tier) vs
//! warm (memory tier) chunk TTFT. Each point runs on a fresh [`Engine`], driven through its
//! public API (`put_chunks`, `submit`) as the server drives it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use a3kv_fusion::{FusionParams, Method};
use a3kv_model::{LoadedModel, SamplingParams};
use a3kv_sched::{
    DocumentRef, Engine, EngineConfig, EngineError, EngineEvent, GenerateRequest, PromptSpec, Usage,
};
use a3kv_store::{DiskConfig, StoreConfig};
use clap::Args;
use serde::{Deserialize, Serialize};

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

/// `on` / `off` (also `true` / `false`) for `--batching`.
fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        other => Err(format!("expected on or off, got {other:?}")),
    }
}

/// Runs `a3kv bench scheduler`.
pub fn run(a: SchedulerArgs) -> anyhow::Result<()> {
    let lm = crate::common::load(a.model.clone())?;
    let methods: Vec<Method> = a
        .methods
        .iter()
        .map(|m| m.parse())
        .collect::<Result<_, _>>()?;
    if a.docs_per_request == 0 || a.pool == 0 || a.doc_sentences == 0 {
        anyhow::bail!("--docs-per-request, --pool and --doc-sentences must be >= 1");
    }
    let opts = SchedulerBenchOptions {
        concurrency: a.concurrency.clone(),
        requests: a.requests,
        max_tokens: a.max_tokens,
        methods,
        batching: a.batching.clone(),
        docs_per_request: a.docs_per_request,
        documents: synthetic_documents(a.pool, a.doc_sentences),
        cold: !a.no_cold,
        ..Default::default()
    };
    let report = tokio::runtime::Runtime::new()?.block_on(bench_scheduler(lm, opts))?;
    println!("{report}");
    if let Some(p) = a.out {
        std::fs::write(&p, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

/// What to measure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchedulerBenchOptions {
    /// Closed-loop concurrencies (default 1, 4, 16).
    pub concurrency: Vec<usize>,
    /// Requests per measured point (default 16).
    pub requests: usize,
    /// Documents per request (default 3).
    pub docs_per_request: usize,
    /// Document pool (default: 8 synthetic documents of ~200 tokens).
    pub documents: Vec<String>,
    /// Tokens generated per request (default 8).
    pub max_tokens: usize,
    /// Methods compared (default a3, full).
    pub methods: Vec<Method>,
    /// Recompute batching settings measured (default on, then off).
    pub batching: Vec<bool>,
    /// Also measure the cold (disk tier) point (default true).
    pub cold: bool,
    /// Engine config the points start from.
    pub engine: EngineConfig,
    /// Directory for the cold (disk tier) point; `None` = a temporary directory under
    /// the system temp dir.
    pub disk_dir: Option<std::path::PathBuf>,
}

impl Default for SchedulerBenchOptions {
    fn default() -> Self {
        Self {
            concurrency: vec![1, 4, 16],
            requests: 16,
            docs_per_request: 3,
            documents: synthetic_documents(8, 12),
            max_tokens: 8,
            methods: vec![Method::A3, Method::Full],
            batching: vec![true, false],
            cold: true,
            engine: EngineConfig::default(),
            disk_dir: None,
        }
    }
}

/// Deterministic filler documents: `n` documents of `sentences` sentences each.
pub fn synthetic_documents(n: usize, sentences: usize) -> Vec<String> {
    const SUBJ: [&str; 6] = [
        "The river",
        "A committee",
        "The old library",
        "Her brother",
        "The northern valley",
        "A small company",
    ];
    const VERB: [&str; 5] = [
        "was founded in",
        "moved to",
        "was described in",
        "expanded during",
        "was rebuilt after",
    ];
    (0..n)
        .map(|d| {
            (0..sentences)
                .map(|s| {
                    let k = d * 31 + s * 7;
                    format!(
                        "{} {} {} (record {d}-{s}).",
                        SUBJ[k % 6],
                        VERB[(k / 6) % 5],
                        1700 + (k * 13) % 300
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// One measured point.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchPoint {
    /// Method.
    pub method: String,
    /// Recompute batching on.
    pub batching: bool,
    /// Closed-loop concurrency.
    pub concurrency: usize,
    /// `memory` (warm) or `disk` (cold).
    pub tier: String,
    /// Requests finished.
    pub requests: usize,
    /// Requests per second.
    pub throughput_rps: f64,
    /// Median TTFT.
    pub ttft_p50_secs: f64,
    /// 99th percentile TTFT.
    pub ttft_p99_secs: f64,
    /// Mean recompute ratio.
    pub recompute_ratio: f64,
    /// Mean prompt tokens per request (the context length measured).
    #[serde(default)]
    pub prompt_tokens: f64,
    /// Where TTFT goes, median seconds from submit: admitted into the running set, selection
    /// done (end of the check layer), fused cache ready.
    #[serde(default)]
    pub stages_p50_secs: StageTimes,
}

/// Median stage timestamps of a point's requests (seconds from submit).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StageTimes {
    /// Admitted into the running set (queueing before it).
    pub admitted: f64,
    /// Check layer and selection finished.
    pub check_end: f64,
    /// Every cached layer of every chunk arrived.
    pub last_layer_loaded: f64,
    /// Fused cache ready (first token follows).
    pub prefill_end: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchedulerBenchReport {
    /// Every point.
    pub points: Vec<BenchPoint>,
    /// Cold (disk) / warm (memory) median TTFT of the first method at concurrency 1.
    pub cold_over_warm_ttft: Option<f64>,
}

impl std::fmt::Display for SchedulerBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<6} {:<6} {:>4} {:<6} {:>7} {:>9} {:>10} {:>10} {:>7}",
            "method", "batch", "conc", "tier", "prompt", "req/s", "ttft p50", "ttft p99", "ratio"
        )?;
        for p in &self.points {
            writeln!(
                f,
                "{:<6} {:<6} {:>4} {:<6} {:>7.0} {:>9.2} {:>9.1}ms {:>9.1}ms {:>7.3}",
                p.method,
                if p.batching { "on" } else { "off" },
                p.concurrency,
                p.tier,
                p.prompt_tokens,
                p.throughput_rps,
                p.ttft_p50_secs * 1e3,
                p.ttft_p99_secs * 1e3,
                p.recompute_ratio
            )?;
        }
        if let Some(r) = self.cold_over_warm_ttft {
            writeln!(f, "cold/warm TTFT (c=1): {r:.2}x")?;
        }
        Ok(())
    }
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Runs every point (each on a fresh engine; chunks stored before measuring).
///
/// # Errors
/// The first engine start, store or request failure.
async fn bench_scheduler(
    model: LoadedModel,
    opts: SchedulerBenchOptions,
) -> Result<SchedulerBenchReport, EngineError> {
    if opts.documents.is_empty() || opts.docs_per_request == 0 {
        return Err(EngineError::InvalidRequest("bench needs documents".into()));
    }
    if opts.batching.is_empty() || opts.methods.is_empty() || opts.concurrency.is_empty() {
        return Err(EngineError::InvalidRequest(
            "bench needs at least one method, batching setting and concurrency".into(),
        ));
    }
    let mut points = Vec::new();
    for &method in &opts.methods {
        for &batching in &opts.batching {
            for &c in &opts.concurrency {
                let cfg = EngineConfig {
                    batching,
                    max_running: c.max(1),
                    max_waiting: opts.requests.max(1),
                    ..opts.engine.clone()
                };
                points.push(point(&model, &opts, cfg, method, c, "memory").await?);
            }
        }
    }
    if !opts.cold {
        return Ok(SchedulerBenchReport {
            points,
            cold_over_warm_ttft: None,
        });
    }
    let tmp;
    let dir = match &opts.disk_dir {
        Some(d) => d.clone(),
        None => {
            tmp = std::env::temp_dir().join(format!("a3kv-bench-{}", std::process::id()));
            tmp.clone()
        }
    };
    let method = opts.methods.first().copied().unwrap_or(Method::A3);
    let cfg = EngineConfig {
        store: StoreConfig {
            remote: None,
            memory_budget_bytes: 1,
            disk: Some(DiskConfig {
                dir: dir.clone(),
                budget_bytes: 8 << 30,
            }),
        },
        max_running: 1,
        max_waiting: opts.requests.max(1),
        ..opts.engine.clone()
    };
    let cold = point(&model, &opts, cfg, method, 1, "disk").await;
    if opts.disk_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let cold = cold?;
    let warm = points
        .iter()
        .find(|p| p.method == method.as_str() && p.concurrency == 1)
        .map(|p| p.ttft_p50_secs);
    let cold_over_warm_ttft = warm.filter(|w| *w > 0.0).map(|w| cold.ttft_p50_secs / w);
    points.push(cold);
    Ok(SchedulerBenchReport {
        points,
        cold_over_warm_ttft,
    })
}

async fn point(
    model: &LoadedModel,
    opts: &SchedulerBenchOptions,
    cfg: EngineConfig,
    method: Method,
    concurrency: usize,
    tier: &str,
) -> Result<BenchPoint, EngineError> {
    let batching = cfg.batching;
    let engine = Engine::start(cfg, model.clone()).await?;
    let docs: Vec<(Option<String>, String)> = opts
        .documents
        .iter()
        .enumerate()
        .map(|(i, d)| (Some(format!("bench-{i}")), d.clone()))
        .collect();
    engine.put_chunks(docs, false).await?;
    let n_docs = opts.documents.len();
    let make = |i: usize| GenerateRequest {
        request_id: format!("bench-{i}"),
        prompt: PromptSpec::Rag {
            system: None,
            documents: (0..opts.docs_per_request)
                .map(|j| DocumentRef::Id(format!("bench-{}", (i * 7 + j * 3) % n_docs)))
                .collect(),
            question: format!("What happened in record {}-{}?", i % n_docs, i % 5),
        },
        fusion: Some(FusionParams::method(method)),
        sampling: SamplingParams::default(),
        max_tokens: opts.max_tokens,
        stop: Vec::new(),
        logprobs: None,
        first_token_logits: false,
    };
    let t0 = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (engine, tx, next) = (engine.clone(), tx.clone(), next.clone());
        let reqs: Vec<GenerateRequest> = (0..opts.requests).map(make).collect();
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(req) = reqs.get(i).cloned() else {
                    break;
                };
                let res = run_one(&engine, req).await;
                if tx.send(res).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let mut ttft = Vec::new();
    let (mut ratio, mut prompt) = (0.0, 0usize);
    let mut stages: [Vec<f64>; 4] = Default::default();
    while let Some(r) = rx.recv().await {
        let usage = r?;
        let trace = &usage.trace;
        ttft.push(usage.ttft_secs);
        ratio += usage.fusion.as_ref().map_or(1.0, |f| f.recompute_ratio);
        prompt += usage.prompt_tokens;
        stages[0].push(trace.admitted_secs);
        stages[1].push(trace.check_end_secs.unwrap_or(0.0));
        stages[2].push(trace.layer_loaded_secs.iter().copied().fold(0.0, f64::max));
        stages[3].push(trace.prefill_end_secs.unwrap_or(0.0));
    }
    let [mut a, mut c, mut l, mut e] = stages;
    let stages_p50_secs = StageTimes {
        admitted: percentile(&mut a, 0.5),
        check_end: percentile(&mut c, 0.5),
        last_layer_loaded: percentile(&mut l, 0.5),
        prefill_end: percentile(&mut e, 0.5),
    };
    for w in workers {
        let _ = w.await;
    }
    let wall = t0.elapsed().as_secs_f64();
    engine.shutdown(Duration::from_secs(5)).await;
    let n = ttft.len();
    tracing::info!(
        method = method.as_str(),
        batching,
        concurrency,
        tier,
        requests = n,
        wall_secs = wall,
        "scheduler bench point done"
    );
    Ok(BenchPoint {
        method: method.as_str().into(),
        batching,
        concurrency,
        tier: tier.into(),
        requests: n,
        throughput_rps: n as f64 / wall.max(1e-9),
        ttft_p50_secs: percentile(&mut ttft, 0.5),
        ttft_p99_secs: percentile(&mut ttft, 0.99),
        recompute_ratio: if n > 0 { ratio / n as f64 } else { 0.0 },
        prompt_tokens: if n > 0 { prompt as f64 / n as f64 } else { 0.0 },
        stages_p50_secs,
    })
}

/// One request to its end: its usage (TTFT, prompt tokens, fusion report, stage trace).
async fn run_one(engine: &Engine, req: GenerateRequest) -> Result<Usage, EngineError> {
    let mut rx = engine.submit(req)?;
    while let Some(ev) = rx.recv().await {
        match ev {
            EngineEvent::Finished { usage, .. } => return Ok(usage),
            EngineEvent::Failed(e) => return Err(e),
            EngineEvent::Token { .. } => {}
        }
    }
    Err(EngineError::Internal("stream ended early".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `bench_scheduler` end to end on the real model with a tiny grid: every point measured,
    /// every request counted, stage times in order, and the cold point compared with the warm
    /// one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_grid_measures_every_point_and_the_cold_tier() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
        if !path.exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must fetch the model (scripts/fetch-model.sh)"
            );
            eprintln!("note: model absent, test skipped (run scripts/fetch-model.sh)");
            return;
        }
        let model = a3kv_model::load_model(&path, &a3kv_model::LoadOptions::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let opts = SchedulerBenchOptions {
            concurrency: vec![1, 2],
            requests: 3,
            docs_per_request: 2,
            documents: synthetic_documents(3, 2),
            max_tokens: 2,
            methods: vec![Method::A3, Method::Full],
            batching: vec![true],
            cold: true,
            engine: EngineConfig {
                compute_threads: 2,
                max_new_tokens: 256,
                batch_wait_ms: 5,
                ..EngineConfig::default()
            },
            disk_dir: Some(dir.path().to_path_buf()),
        };
        let report = bench_scheduler(model, opts).await.unwrap();
        let shape: Vec<(String, usize, String)> = report
            .points
            .iter()
            .map(|p| (p.method.clone(), p.concurrency, p.tier.clone()))
            .collect();
        let want = [
            ("a3", 1, "memory"),
            ("a3", 2, "memory"),
            ("full", 1, "memory"),
            ("full", 2, "memory"),
            ("a3", 1, "disk"),
        ];
        assert_eq!(
            shape,
            want.map(|(m, c, t)| (m.to_string(), c, t.to_string()))
        );
        for p in &report.points {
            assert_eq!(p.requests, 3, "{p:?}");
            assert!(p.throughput_rps > 0.0 && p.prompt_tokens > 20.0, "{p:?}");
            assert!(p.ttft_p50_secs <= p.ttft_p99_secs, "{p:?}");
            let s = &p.stages_p50_secs;
            let full = p.method == "full";
            // Medians keep each request's order (order statistics are monotone); `full` has no
            // separate check phase, its whole prefill is one step.
            assert!(s.admitted <= s.prefill_end, "{p:?}");
            assert!(full || s.check_end <= s.prefill_end, "{p:?}");
            assert!(s.prefill_end <= p.ttft_p99_secs + 1e-3, "{p:?}");
            assert_eq!(full, (p.recompute_ratio - 1.0).abs() < 1e-9, "{p:?}");
        }
        // The disk point wrote the disk tier (one folder per model, a file per stored chunk).
        let chunks: usize = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|model_dir| {
                std::fs::read_dir(model_dir.unwrap().path())
                    .unwrap()
                    .filter(|f| {
                        f.as_ref()
                            .unwrap()
                            .path()
                            .extension()
                            .is_some_and(|e| e == "a3kv")
                    })
                    .count()
            })
            .sum();
        assert!(chunks >= 3, "{chunks} chunk files");
        let r = report.cold_over_warm_ttft.expect("cold/warm ratio");
        assert!(r.is_finite() && r > 0.0, "{r}");
    }
}
