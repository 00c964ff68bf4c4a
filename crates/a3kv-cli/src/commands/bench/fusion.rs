//! `a3kv bench fusion`: TTFT of every method at several context lengths with a warm chunk
//! cache, as ratios to the first method, beside each method's arithmetic floor and the fusion
//! report's phase times. Every request runs through the engine `a3kv serve` runs, so TTFT is
//! the served one; `--direct` also times `fused_prefill` alone on the same prompt.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use a3kv_fusion::{FusionParams, Method};
use a3kv_model::SamplingParams;
use a3kv_sched::{DocumentRef, Engine, GenerateRequest, PromptSpec};
use anyhow::Context;
use clap::Args;
use serde_json::json;

use super::prompt_ids;
use crate::common::median;

/// `a3kv bench fusion`.
#[derive(Args, Debug)]
pub struct FusionArgs {
    /// Model, configuration, overrides and chunk size, as the server reads them (the prompt
    /// limit is then raised to the model's context).
    #[command(flatten)]
    pub served: crate::served::ServedArgs,
    /// Context lengths in tokens.
    #[arg(long, value_delimiter = ',', default_value = "1024,2048,4096")]
    pub lengths: Vec<usize>,
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

/// Runs `a3kv bench fusion`.
pub fn run(a: FusionArgs) -> anyhow::Result<()> {
    let methods: Vec<Method> = a
        .methods
        .iter()
        .map(|m| m.parse())
        .collect::<Result<_, _>>()?;
    let mut cfg = a.served.config()?;
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
