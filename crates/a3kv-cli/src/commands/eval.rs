//! `a3kv eval`: quality and TTFT of each fusion method on a data set, with fidelity to full
//! prefill (KL of the first-token distribution, agreement), a table, JSON and heat-maps.
//!
//! Every method, `full` included, runs through the engine `a3kv serve` runs
//! (`a3kv_sched::Engine::submit`): the same prompt assembly, chunk store, fused prefill,
//! scheduler and batched decode. The first position's logits come back through the API's
//! evaluation hook (`GenerateRequest::first_token_logits`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use a3kv_eval::{
    load, render_needle_heatmap, run_eval, BackendError, BackendOutput, DatasetSpec, EvalBackend,
    EvalItem, EvalResults, MethodSpec, NeedleGrid, RunConfig,
};
use a3kv_fusion::{FusionParams, Method};
use a3kv_model::SamplingParams;
use a3kv_sched::{DocumentRef, Engine, GenerateRequest, PromptSpec};
use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;

/// Arguments of `a3kv eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model, configuration, overrides and chunk size, as the server reads them (engine
    /// limits on prompt length, new tokens and documents are then raised to what the data
    /// set needs).
    #[command(flatten)]
    pub served: crate::served::ServedArgs,
    /// Data set: hotpotqa, needle[:LEN,..[/DEPTHS]], ruler[:LEN,..[/PER_TASK][@TASK,..]]
    /// (e.g. `ruler:1024/10@vt` for variable tracking alone), jsonl:PATH.
    #[arg(long, default_value = "hotpotqa")]
    pub dataset: String,
    /// Methods, comma separated; each `name[:key=value;...]` with keys r (ratio),
    /// tokens (budget), sink (sink tokens), hybrid (the relevance's weight in a3 and the deep-relevance mixes), m (EPIC tokens).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "full,reuse,cacheblend,epic,a3"
    )]
    pub methods: Vec<String>,
    /// Default recompute ratio.
    #[arg(long, default_value_t = 0.15)]
    pub ratio: f64,
    /// Items to use (from the start / generated, after `--skip`).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Items to pass over first: with `--limit`, one shard of a longer run (join the shards'
    /// JSON with `--merge`).
    #[arg(long, default_value_t = 0)]
    pub skip: usize,
    /// Join results JSON files of one run's shards instead of running a model: prints the
    /// table over all items and writes `--out`.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["skip", "limit", "heatmap_dir"])]
    pub merge: Vec<PathBuf>,
    /// Seed for generated data sets.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tokens generated per answer (greedy).
    #[arg(long, default_value_t = 24)]
    pub max_tokens: usize,
    /// Data directory (scripts/fetch-data.sh fills it).
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Results JSON.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Directory for needle heat-maps (one PNG per method; needle data set only).
    #[arg(long)]
    pub heatmap_dir: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// The engine behind the harness: one [`Engine`] per run; each item's documents are stored
/// first (warm chunk cache), then every method is one greedy request.
struct EngineBackend {
    rt: tokio::runtime::Runtime,
    engine: Engine,
    params: HashMap<String, FusionParams>,
    /// The item whose documents are stored.
    stored_item: Option<String>,
    /// Whether the prompt prefix (shared by every item) is in the store.
    prefix_stored: bool,
}

impl EngineBackend {
    /// Stores `item`'s documents through the engine's chunk API, so the methods' TTFTs see
    /// warm chunks. Old items' chunks stay in the store's memory LRU (bounded by
    /// `engine.store.memory_budget_bytes`); the engine's document registry keeps only their
    /// token ids (4 bytes a token), and a configured disk or Redis tier a small record each.
    fn store_documents(&mut self, item: &EvalItem) -> Result<(), BackendError> {
        if self.stored_item.as_deref() == Some(item.id.as_str()) {
            return Ok(());
        }
        let texts: Vec<(Option<String>, String)> = item
            .documents
            .iter()
            .map(|d| (None, d.chunk_text()))
            .collect();
        if !texts.is_empty() {
            self.rt.block_on(self.engine.put_chunks(texts, false))?;
        }
        self.stored_item = Some(item.id.clone());
        if !self.prefix_stored && !item.documents.is_empty() {
            // The chunk API stores documents only; one reuse request (the cheapest fused
            // prefill) stores the prompt prefix every later request shares.
            self.request(item, FusionParams::method(Method::Reuse), 1, false)?;
            self.prefix_stored = true;
        }
        Ok(())
    }

    /// Submits one greedy RAG request for `item` and reads its events to the end.
    fn request(
        &self,
        item: &EvalItem,
        fusion: FusionParams,
        max_tokens: usize,
        first_token_logits: bool,
    ) -> Result<BackendOutput, BackendError> {
        let request = GenerateRequest {
            request_id: format!("eval-{}", item.id),
            prompt: PromptSpec::Rag {
                system: None,
                documents: item
                    .documents
                    .iter()
                    .map(|d| DocumentRef::Text {
                        id: None,
                        text: d.chunk_text(),
                    })
                    .collect(),
                question: item.question.clone(),
            },
            fusion: Some(fusion),
            sampling: SamplingParams::default(),
            max_tokens,
            stop: Vec::new(),
            logprobs: None,
            first_token_logits,
        };
        let served = self
            .rt
            .block_on(crate::served::serve_one(&self.engine, request))?;
        let report = served.usage.fusion.as_ref();
        let (reused_tokens, recomputed_tokens) =
            report.map_or((0, 0), |r| (r.reused_tokens, r.recomputed_tokens));
        let recompute_ratio = report.map(|r| r.recompute_ratio);
        let recompute_ratio_chosen = report.and_then(|r| r.recompute_ratio_chosen);
        let first_token_logits = match served.usage.first_token_logits {
            Some(l) => l.to_vec(),
            None if first_token_logits => {
                return Err("the engine returned no first-token logits".into())
            }
            None => Vec::new(),
        };
        Ok(BackendOutput {
            text: served.text,
            first_token_logits,
            output_ids: served.ids,
            ttft_secs: served.usage.ttft_secs,
            reused_tokens,
            recomputed_tokens,
            recompute_ratio,
            recompute_ratio_chosen,
        })
    }
}

impl EvalBackend for EngineBackend {
    fn run(
        &mut self,
        item: &EvalItem,
        method: &MethodSpec,
        max_tokens: usize,
    ) -> Result<BackendOutput, BackendError> {
        let params = self
            .params
            .get(&method.label())
            .cloned()
            .ok_or_else(|| format!("no parameters for {}", method.label()))?;
        self.store_documents(item)?;
        self.request(item, params, max_tokens, true)
    }
}

/// `a3kv eval --merge`: joins shard documents, prints the table, writes `--out`.
fn merge(a: &EvalArgs) -> anyhow::Result<()> {
    let parts = a
        .merge
        .iter()
        .map(|p| EvalResults::read_json(p))
        .collect::<Result<Vec<_>, _>>()?;
    let results = EvalResults::merge(parts)?;
    println!("{}", a3kv_eval::render_table(&results.summary));
    if let Some(p) = &a.out {
        results.write_json(p)?;
        eprintln!("[a3kv] merged results written to {}", p.display());
    }
    Ok(())
}

/// Runs `a3kv eval`.
pub fn run(a: EvalArgs) -> anyhow::Result<()> {
    if !a.merge.is_empty() {
        return merge(&a);
    }
    let mut cfg = a.served.config()?;
    let lm = crate::served::served_model(&cfg)?;
    let spec: DatasetSpec = a.dataset.parse()?;
    let tok = lm.tokenizer.clone();
    let count = move |s: &str| tok.encode(s).map(|v| v.len()).unwrap_or(0);
    let wanted = a.limit.map(|l| l.saturating_add(a.skip));
    let mut items = load(&spec, &a.data_dir, wanted, a.seed, &count)?;
    let available = items.len();
    items.drain(..a.skip.min(available));
    if items.is_empty() {
        bail!(
            "data set {} produced no items ({available} available, --skip {})",
            a.dataset,
            a.skip
        );
    }
    let mut specs = Vec::new();
    let mut params = HashMap::new();
    for m in &a.methods {
        let (s, p) = crate::method_spec::parse(m, a.ratio)?;
        p.validate(lm.model.num_layers())?;
        params.insert(s.label(), p);
        specs.push(s);
    }
    // The command line is the operator: the engine's request limits are raised to what the
    // data set needs, so no item fails on a server-side limit (the model's context still
    // applies).
    let e = &mut cfg.engine;
    e.max_new_tokens = e.max_new_tokens.max(a.max_tokens);
    e.max_prompt_tokens = e.max_prompt_tokens.max(lm.model.config().max_position);
    let most_documents = items.iter().map(|i| i.documents.len()).max().unwrap_or(0);
    e.max_documents = e.max_documents.max(most_documents);
    let model_record = json!({
        "source": lm.source.display().to_string(),
        "fingerprint": lm.model.fingerprint().to_hex(),
        "family": lm.model.config().family.as_str(),
        "dtype": lm.model.dtype().as_str(),
    });
    let rt = tokio::runtime::Runtime::new()?;
    let engine = rt
        .block_on(Engine::start(cfg.engine.clone(), lm))
        .context("starting the engine")?;
    let mut backend = EngineBackend {
        rt,
        engine,
        params,
        stored_item: None,
        prefix_stored: false,
    };
    let run_cfg = RunConfig {
        model: model_record,
        dataset: spec.to_string(),
        seed: a.seed,
        max_tokens: a.max_tokens,
        progress: !a.no_progress,
    };
    let results = run_eval(&mut backend, &items, &specs, &run_cfg);
    let EngineBackend { rt, engine, .. } = backend;
    rt.block_on(engine.shutdown(Duration::from_secs(5)));
    let results = results?;
    println!("{}", a3kv_eval::render_table(&results.summary));
    if let Some(p) = &a.out {
        results.write_json(p)?;
        eprintln!("[a3kv] results written to {}", p.display());
    }
    if let Some(dir) = &a.heatmap_dir {
        std::fs::create_dir_all(dir)?;
        for s in &specs {
            if let Some(grid) = NeedleGrid::from_runs(&results.runs, &s.label()) {
                // The method name, or the whole label where two specs share a name.
                let stem = if specs.iter().filter(|o| o.name == s.name).count() == 1 {
                    s.name.clone()
                } else {
                    s.label()
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || c == '.' {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect::<String>()
                        .trim_matches('_')
                        .to_string()
                };
                let path = dir.join(format!("needle-{stem}.png"));
                render_needle_heatmap(&grid, &format!("needle: {}", s.label()), &path)?;
                eprintln!("[a3kv] heat-map {}", path.display());
            }
        }
    }
    Ok(())
}
