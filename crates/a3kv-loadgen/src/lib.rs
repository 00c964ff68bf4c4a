//! a3kv-loadgen: synthetic RAG traffic against any OpenAI-compatible streaming server.
//!
//! A pool of documents (real text from a JSON corpus or synthetic words) is cited by requests
//! with Zipf popularity; requests arrive open-loop (Poisson or gamma) or closed-loop; each is a
//! streamed `POST /v1/chat/completions` with the documents in the a3kv `documents` extension
//! (or inlined). TTFT, TPOT, ITL, E2E, throughput, goodput and errors by kind are reported as a
//! table and JSON. `--compare` replays the same trace per fusion method; `--sweep-rate` finds
//! the highest rate meeting the SLO per method. `--route-header` puts a routing key (the first
//! cited document's id, [`route`]) on every request for a chunk-aware gateway.
//!
//! The trace is a pure function of the seed (`workload`, `arrival`, `trace`); sending lives in
//! `client` and `runner`; numbers in `stats`, `report`, `compare`, `sweep`.
//!
//! ```no_run
//! # async fn demo(args: a3kv_loadgen::LoadgenArgs) -> Result<(), a3kv_loadgen::LoadgenError> {
//! let report = a3kv_loadgen::run(args).await?;
//! a3kv_loadgen::print_report(&report);
//! # Ok(()) }
//! ```

pub mod args;
pub mod arrival;
pub mod cancel;
pub mod client;
pub mod compare;
pub mod config;
pub mod corpus;
pub mod dist;
pub mod error;
pub mod precompute;
pub mod record;
pub mod report;
pub mod route;
pub mod runner;
pub mod session;
pub mod sse;
pub mod stats;
pub mod sweep;
pub mod trace;
pub mod workload;
pub mod zipf;

use std::sync::Arc;

pub use args::{ArrivalKind, LoadgenArgs};
pub use arrival::ArrivalProcess;
pub use cancel::{CancelAt, CancelPlan};
pub use compare::CompareReport;
pub use config::{Mode, ValidConfig};
pub use dist::LengthDist;
pub use error::LoadgenError;
pub use record::{RequestErrorKind, RequestRecord};
pub use report::{print_report, LoadReport, RunReport};
pub use route::{route_key, RouteHeader, DEFAULT_ROUTE_HEADER};
pub use stats::{Distribution, RunSummary, Slo};
pub use sweep::SweepReport;
pub use trace::{StopRule, Trace};
pub use workload::{Workload, WorkloadSpec};
pub use zipf::ZipfSampler;

use corpus::Corpus;
use session::Session;

/// Runs the load described by `args` and returns the report; writes it to `--out` if given.
/// Draws a progress bar on stderr (unless `--no-progress` or stderr is not a terminal); does
/// not print the tables: call [`print_report`].
///
/// Bounded in time: every request has `--request-timeout-secs`, and each replay ends at most
/// `--drain-secs` after sending stops.
///
/// Errors: [`LoadgenError::InvalidArgs`] (bad or contradictory flags), corpus errors,
/// [`LoadgenError::HttpClient`], and report-writing errors. Failed requests are not errors:
/// they are counted in the report.
pub async fn run(args: LoadgenArgs) -> Result<LoadReport, LoadgenError> {
    let mut cfg = ValidConfig::from_args(&args)?;
    if cfg.client.model.is_empty() {
        cfg.client.model = discover_model(&cfg.models_url, cfg.client.request_timeout).await?;
    }
    let seed = cfg.workload.seed;
    let (corpus_path, synthetic) = (cfg.corpus.clone(), cfg.synthetic_text);
    // Reading and splitting a corpus file is blocking work: keep it off the runtime workers.
    let corpus = tokio::task::spawn_blocking(move || {
        Corpus::resolve(
            corpus_path.as_deref(),
            synthetic,
            &mut workload::corpus_rng(seed),
        )
    })
    .await
    .map_err(|e| LoadgenError::InvalidArgs(format!("corpus loader failed: {e}")))??;
    let workload = Arc::new(Workload::new(cfg.workload.clone(), corpus)?);
    let settings = report::Settings::new(&cfg, workload.corpus_source());
    let route = cfg
        .client
        .route_header
        .as_deref()
        .map(RouteHeader::parse)
        .transpose()?;
    let precompute = match &cfg.precompute_url {
        Some(url) => Some(
            precompute::precompute_pool(url, &workload, cfg.client.request_timeout, route.as_ref())
                .await?,
        ),
        None => None,
    };
    let session = Session {
        cfg: cfg.clone(),
        workload,
    };

    let (runs, compare, sweep) = match &cfg.mode {
        Mode::Single => {
            let trace = Trace::generate(cfg.arrival, cfg.stop, seed)?;
            let method = cfg.client.fusion_method.clone();
            let label = if cfg.client.method_mix.is_empty() {
                method.clone().unwrap_or_default()
            } else {
                format!("mix {}", cfg.client.method_mix.join(","))
            };
            (
                vec![session.run_once(&trace, method, label).await?],
                None,
                None,
            )
        }
        Mode::Compare { methods } => {
            let trace = Trace::generate(cfg.arrival, cfg.stop, seed)?;
            let (runs, table) = compare::run_compare(&session, &trace, methods).await?;
            (runs, Some(table), None)
        }
        Mode::Sweep { rates, methods } => {
            let (runs, table) = sweep::run_sweep(&session, rates, methods).await?;
            (runs, None, Some(table))
        }
    };
    let report = LoadReport {
        settings,
        precompute,
        runs,
        compare,
        sweep,
    };
    if let Some(path) = &cfg.out {
        report.write_json(path)?;
    }
    Ok(report)
}

/// The first model id the server lists (OpenAI `GET /v1/models`).
async fn discover_model(url: &str, timeout: std::time::Duration) -> Result<String, LoadgenError> {
    let fail = |message: String| LoadgenError::ModelDiscovery {
        url: url.to_string(),
        message,
    };
    let http = reqwest::Client::builder().timeout(timeout).build()?;
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(fail(format!("HTTP {status}")));
    }
    let v: serde_json::Value = resp.json().await.map_err(|e| fail(e.to_string()))?;
    v["data"][0]["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| fail("no model listed (expected {\"data\": [{\"id\": ..}]})".into()))
}
