//! `a3kv precompute --docs FILE.jsonl`: fills the configured chunk store's disk tier (or its
//! Redis tier when there is no disk tier) ahead
//! of serving. Each line is `{"id"?: "...", "text": "..."}`; every document is tokenised
//! alone and split into chunks exactly as the server does, so a later request citing the
//! same text finds its chunks on disk. Chunks already stored are verified (every layer's
//! checksum; `--no-verify` trusts the index) and skipped, so re-running after an interruption
//! resumes where it stopped; a stored chunk that fails verification is recomputed and replaced.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use a3kv_fusion::{ChunkId, RagParts};
use a3kv_model::Fingerprint;
use a3kv_sched::Engine;
use a3kv_store::{DiskConfig, StoreConfig};
use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;

/// Disk budget used when `--store-dir` enables a disk tier the configuration lacks.
const DEFAULT_DISK_BUDGET_BYTES: u64 = 20 << 30;

/// Arguments of `a3kv precompute`.
#[derive(Args, Debug)]
pub struct PrecomputeArgs {
    /// Documents, one JSON object per line: `{"id": "optional", "text": "..."}`.
    #[arg(long, value_name = "FILE.jsonl")]
    pub docs: PathBuf,
    /// Server configuration (the store, model and chunk size are read from it).
    #[arg(long, short = 'c', value_name = "FILE", env = "A3KV_CONFIG")]
    pub config: Option<PathBuf>,
    /// Model (key `model.path`).
    #[arg(long, value_name = "PATH")]
    pub model: Option<String>,
    /// Disk tier directory (key `engine.store.disk.dir`); required when the configuration
    /// has no disk tier.
    #[arg(long, value_name = "DIR")]
    pub store_dir: Option<PathBuf>,
    /// Chunk size in tokens (key `engine.chunk_tokens`; must match the server's).
    #[arg(long)]
    pub chunk_tokens: Option<usize>,
    /// Override any configuration key, e.g. `--set engine.chunk_tokens=256` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Skip stored chunks without reading them back (by default each stored chunk is read and
    /// its header and per-layer checksums verified; a bad one is recomputed).
    #[arg(long)]
    pub no_verify: bool,
}

/// One line of the documents file.
#[derive(Debug, Deserialize)]
struct DocLine {
    id: Option<String>,
    text: String,
}

/// A document read from the file: where it was, and its chunks' token ids.
struct Doc {
    line: usize,
    chunks: Vec<Vec<u32>>,
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PrecomputeSummary {
    /// Documents in the file.
    pub documents: usize,
    /// Chunks over all documents (distinct by content).
    pub chunks: usize,
    /// Chunks computed and written by this run.
    pub computed: usize,
    /// Chunks already in the store and intact (skipped).
    pub skipped: usize,
    /// Stored chunks that failed verification (recomputed and replaced).
    pub corrupt: usize,
    /// Tokens of the computed chunks.
    pub computed_tokens: usize,
    /// KV bytes written (payload).
    pub bytes_written: u64,
}

/// Reads and validates the documents file; errors name the line.
fn read_docs(path: &Path) -> anyhow::Result<Vec<(usize, DocLine)>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("{}:{n}: reading", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let doc: DocLine = serde_json::from_str(&line).with_context(|| {
            format!(
                "{}:{n}: expected {{\"id\"?: string, \"text\": string}}",
                path.display()
            )
        })?;
        if doc.text.trim().is_empty() {
            bail!("{}:{n}: empty \"text\"", path.display());
        }
        out.push((n, doc));
    }
    if out.is_empty() {
        bail!("{}: no documents", path.display());
    }
    Ok(out)
}

/// Runs `a3kv precompute`.
pub fn run(a: PrecomputeArgs) -> anyhow::Result<()> {
    let mut set = a.set.clone();
    if let Some(n) = a.chunk_tokens {
        set.push(format!("engine.chunk_tokens={n}"));
    }
    let serve_args = a3kv_server::ServeArgs {
        config: a.config.clone(),
        model: a.model.clone(),
        set,
        ..Default::default()
    };
    let cfg = serve_args.load_config()?;
    let mut store_cfg: StoreConfig = cfg.engine.store.clone();
    if let Some(dir) = &a.store_dir {
        let budget_bytes = store_cfg
            .disk
            .as_ref()
            .map_or(DEFAULT_DISK_BUDGET_BYTES, |d| d.budget_bytes);
        store_cfg.disk = Some(DiskConfig {
            dir: dir.clone(),
            budget_bytes,
        });
    }
    // Where the chunks go: the disk tier (writing through to Redis when one is configured), or
    // the Redis tier alone.
    let target = match (&store_cfg.disk, &store_cfg.remote) {
        (Some(d), _) => d.dir.display().to_string(),
        (None, Some(r)) => r.url.clone(),
        (None, None) => bail!(
            "precompute fills the disk or Redis tier, and neither is configured: pass --store-dir DIR, \
             or set [engine.store.disk] dir or [engine.store.remote] url in the configuration"
        ),
    };
    let to_disk = store_cfg.disk.is_some();
    // Chunks go straight to disk: holding them in memory here would only cost RAM.
    store_cfg.memory_budget_bytes = 0;

    let docs = read_docs(&a.docs)?;
    let path = a3kv_server::model_path(&cfg)?;
    let opts = a3kv_server::load_options(&cfg)?;
    let lm = a3kv_model::load_model(&path, &opts)
        .with_context(|| format!("loading model {}", path.display()))?;
    let (fp, tok) = (*lm.model.fingerprint(), &lm.tokenizer);
    let chunk_tokens = cfg.engine.chunk_tokens;

    let docs: Vec<Doc> = docs
        .into_iter()
        .map(|(line, d)| {
            let chunks =
                RagParts::document_chunks(tok, &d.text, chunk_tokens).with_context(|| {
                    format!(
                        "{}:{line}{}",
                        a.docs.display(),
                        d.id.as_deref()
                            .map(|i| format!(" (id {i})"))
                            .unwrap_or_default()
                    )
                })?;
            Ok(Doc { line, chunks })
        })
        .collect::<anyhow::Result<_>>()?;

    // The engine `a3kv serve` runs computes and stores the chunks (its compute pool, its
    // store); no request is served, so the start-up fusion gate is skipped.
    let mut engine_cfg = cfg.engine.clone();
    engine_cfg.store = store_cfg;
    engine_cfg.fusion_gate.enabled = false;
    let rt = tokio::runtime::Runtime::new()?;
    let engine = rt
        .block_on(Engine::start(engine_cfg, lm))
        .with_context(|| format!("opening the chunk store in {target}"))?;
    let result = precompute(&rt, &engine, &a, &docs, &fp, &target, to_disk);
    rt.block_on(engine.shutdown(Duration::from_secs(5)));
    result
}

/// Verifies what is stored, then computes and stores what is missing, and prints the summary.
fn precompute(
    rt: &tokio::runtime::Runtime,
    engine: &Engine,
    a: &PrecomputeArgs,
    docs: &[Doc],
    fp: &Fingerprint,
    target: &str,
    to_disk: bool,
) -> anyhow::Result<()> {
    let store = engine.store();
    if let Some(r) = store.recovery_report() {
        if !r.bad_files.is_empty() {
            eprintln!(
                "[a3kv] store recovery: {} bad file(s) skipped",
                r.bad_files.len()
            );
        }
    }

    // Distinct chunks still missing, in file order.
    let mut seen = std::collections::HashSet::new();
    let mut summary = PrecomputeSummary {
        documents: docs.len(),
        ..Default::default()
    };
    let mut todo: Vec<(usize, &Vec<u32>, ChunkId)> = Vec::new();
    for d in docs {
        for ids in &d.chunks {
            let id = ChunkId::of(fp, ids);
            if !seen.insert(id) {
                continue;
            }
            summary.chunks += 1;
            // Only the disk tier has a local index; a Redis tier is asked (and verified).
            if to_disk && !store.contains(&id) {
                todo.push((d.line, ids, id));
            } else if (to_disk && a.no_verify) || rt.block_on(store.get(&id))?.is_some() {
                summary.skipped += 1;
            } else {
                // The store logged why, removed the file and counted it.
                summary.corrupt += 1;
                todo.push((d.line, ids, id));
            }
        }
    }
    let total_tokens: usize = todo.iter().map(|(_, ids, _)| ids.len()).sum();
    let bar = if a.no_progress {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total_tokens as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} tokens ({per_sec}, eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let t0 = Instant::now();
    for (line, ids, id) in todo {
        let (bytes, outcome) = rt
            .block_on(engine.store_chunk(ids))
            .with_context(|| format!("{}:{line}: computing a chunk", a.docs.display()))?;
        if !(if to_disk {
            outcome.disk
        } else {
            outcome.remote
        }) {
            bail!(
                "{}:{line}: writing chunk {} to {target} failed ({}); {} chunk(s) were stored before it",
                a.docs.display(),
                id.to_hex(),
                if to_disk {
                    "disk full or over the disk budget?"
                } else {
                    "Redis unreachable, or the chunk over engine.store.remote.max_value_bytes?"
                },
                summary.computed
            );
        }
        summary.computed += 1;
        summary.computed_tokens += ids.len();
        summary.bytes_written += bytes;
        bar.inc(ids.len() as u64);
        bar.set_message(format!("{} chunks", summary.computed));
    }
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "precomputed {} documents, {} chunks: {} computed ({} tokens, {:.1} MB), {} already stored",
        summary.documents,
        summary.chunks,
        summary.computed,
        summary.computed_tokens,
        summary.bytes_written as f64 / 1e6,
        summary.skipped
    );
    if summary.corrupt > 0 {
        println!(
            "{} stored chunk(s) failed verification and were recomputed",
            summary.corrupt
        );
    }
    if summary.computed > 0 {
        println!(
            "{:.1} s, {:.1} tokens/s; store: {} (model fingerprint {})",
            secs,
            summary.computed_tokens as f64 / secs.max(1e-9),
            target,
            fp
        );
    }
    Ok(())
}
