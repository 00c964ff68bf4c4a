//! `a3kv bench scheduler`: throughput and p50/p99 TTFT of the engine at several
//! concurrencies, recompute batching on vs off, `a3` vs `full`, and cold (disk tier) vs
//! warm (memory tier) chunk TTFT. The CLI calls [`bench_scheduler`] and prints the report.

use std::time::{Duration, Instant};

use a3kv_fusion::{FusionParams, Method};
use a3kv_model::{LoadedModel, SamplingParams};
use a3kv_store::{DiskConfig, StoreConfig};
use serde::{Deserialize, Serialize};

use crate::{
    DocumentRef, Engine, EngineConfig, EngineError, EngineEvent, GenerateRequest, PromptSpec,
};

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
pub async fn bench_scheduler(
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
async fn run_one(engine: &Engine, req: GenerateRequest) -> Result<crate::Usage, EngineError> {
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
