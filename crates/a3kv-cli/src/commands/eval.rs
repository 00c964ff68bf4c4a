//! `a3kv eval`: quality and TTFT of each fusion method on a data set, with fidelity to full
//! prefill (KL of the first-token distribution, agreement), a table, JSON and heat-maps.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use a3kv_eval::{
    load, render_needle_heatmap, run_eval, BackendError, BackendOutput, DatasetSpec, EvalBackend,
    EvalItem, EvalResults, MethodSpec, NeedleGrid, RunConfig,
};
use a3kv_fusion::{
    fused_prefill, generate, precompute_chunk, ChunkId, ChunkKv, FusionParams, RagParts,
};
use a3kv_model::{LoadedModel, SamplingParams, DEFAULT_RAG_INSTRUCTION};
use anyhow::bail;
use clap::Args;
use serde_json::json;

/// Arguments of `a3kv eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model; default: the fetched SmolLM2.
    #[arg(long, env = "A3KV_MODEL")]
    pub model: Option<PathBuf>,
    /// Data set: hotpotqa, needle[:LEN,..[/DEPTHS]], ruler[:LEN,..[/PER_TASK]], jsonl:PATH.
    #[arg(long, default_value = "hotpotqa")]
    pub dataset: String,
    /// Methods, comma separated; each `name[:key=value;...]` with keys r (ratio),
    /// tokens (budget), sink (sink tokens), hybrid (A^3 weight), m (EPIC tokens).
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
    /// Chunk size in tokens.
    #[arg(long, default_value_t = 512)]
    pub chunk_tokens: usize,
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

/// The real engine behind the harness: chunks precomputed once per item (warm cache), then
/// each method's fused prefill (timed: TTFT) and greedy decoding.
struct FusionBackend<'a> {
    lm: &'a LoadedModel,
    params: HashMap<String, FusionParams>,
    chunk_tokens: usize,
    cache: HashMap<ChunkId, Arc<ChunkKv>>,
    cache_item: String,
}

impl FusionBackend<'_> {
    fn cached(&mut self, ids: &[u32]) -> Result<Arc<ChunkKv>, BackendError> {
        let id = ChunkId::of(self.lm.model.fingerprint(), ids);
        if let Some(c) = self.cache.get(&id) {
            return Ok(c.clone());
        }
        let c = precompute_chunk(&self.lm.model, ids, None)?;
        self.cache.insert(id, c.clone());
        Ok(c)
    }
}

impl EvalBackend for FusionBackend<'_> {
    fn run(
        &mut self,
        item: &EvalItem,
        method: &MethodSpec,
        max_tokens: usize,
    ) -> Result<BackendOutput, BackendError> {
        if self.cache_item != item.id {
            // Chunks of one item are shared by its methods; keep memory bounded across items.
            self.cache.retain(|_, c| c.len() < 64);
            if self.cache.len() > 64 {
                self.cache.clear();
            }
            self.cache_item = item.id.clone();
        }
        let params = self
            .params
            .get(&method.label())
            .cloned()
            .ok_or_else(|| format!("no parameters for {}", method.label()))?;
        let tok = &self.lm.tokenizer;
        let docs: Vec<String> = item.documents.iter().map(|d| d.chunk_text()).collect();
        let parts = RagParts::build(
            tok,
            None,
            DEFAULT_RAG_INSTRUCTION,
            &docs,
            &item.question,
            self.chunk_tokens,
        )?;
        let prompt = parts.prompt()?;
        let prefix = if parts.prefix.is_empty() {
            None
        } else {
            Some(self.cached(&parts.prefix)?)
        };
        let chunks = parts
            .chunks
            .iter()
            .map(|c| self.cached(c))
            .collect::<Result<Vec<_>, _>>()?;
        let model = &self.lm.model;
        let t0 = Instant::now();
        let mut out = fused_prefill(model, &prompt, prefix, &chunks, &params, false)?;
        let ttft = t0.elapsed().as_secs_f64();
        let first: Vec<f32> = out.logits.to_vec1()?;
        let g = generate(
            model,
            &mut out.cache,
            &out.logits,
            SamplingParams::default(),
            tok.stop_ids(),
            max_tokens,
            |_| true,
        )?;
        Ok(BackendOutput {
            text: tok.decode(&g.ids)?,
            first_token_logits: first,
            output_ids: g.ids,
            ttft_secs: ttft,
            reused_tokens: out.report.reused_tokens,
            recomputed_tokens: out.report.recomputed_tokens,
        })
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
    let lm = crate::common::load(a.model.clone())?;
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
    let mut backend = FusionBackend {
        lm: &lm,
        params,
        chunk_tokens: a.chunk_tokens,
        cache: HashMap::new(),
        cache_item: String::new(),
    };
    let cfg = RunConfig {
        model: json!({
            "source": lm.source.display().to_string(),
            "fingerprint": lm.model.fingerprint().to_hex(),
            "family": lm.model.config().family.as_str(),
            "dtype": lm.model.dtype().as_str(),
        }),
        dataset: spec.to_string(),
        seed: a.seed,
        max_tokens: a.max_tokens,
        progress: !a.no_progress,
    };
    let results = run_eval(&mut backend, &items, &specs, &cfg)?;
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
