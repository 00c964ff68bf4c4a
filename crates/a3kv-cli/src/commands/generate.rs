//! `a3kv generate`: one request from the command line through the same engine `a3kv serve`
//! runs (`a3kv_sched::Engine`: prompt assembly, chunk store tiers, fusion, batched decode,
//! stop handling), streamed to stdout; time to first token, the fusion report and tokens/s
//! to stderr. It reads the server configuration (`-c`, `--set`, `A3KV_*`), so a configured
//! disk or Redis tier makes chunks computed here reusable by later runs and by servers.

use std::io::Write;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use a3kv_fusion::{Budget, FusionParams};
use a3kv_model::{ChatMessage, SamplingParams};
use a3kv_sched::{DocumentRef, Engine, EngineConfig, EngineEvent, GenerateRequest, PromptSpec};
use anyhow::{bail, Context};
use clap::Args;

/// `--method`'s long help, naming the default the engine actually has.
static METHOD_HELP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "Fusion method for document prompts: full, reuse, cacheblend, epic or a3, with options \
         as in `eval`: `name[:key=value;...]`, keys r (ratio), tokens (budget), sink (sink \
         tokens), hybrid (A^3 weight), m (EPIC tokens). A named method starts from its own \
         defaults, so `a3` is the paper's plain A^3.\n\n\
         Default: the engine's default fusion (`engine.default_fusion`, the one `a3kv serve` \
         applies to requests without `fusion`): {}",
        crate::method_spec::spec_of(&EngineConfig::default().default_fusion)
    )
});

/// Arguments of `a3kv generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Model, configuration, overrides and chunk size, as the server reads them.
    #[command(flatten)]
    pub served: crate::served::ServedArgs,
    /// A plain chat prompt (one user message).
    #[arg(conflicts_with_all = ["question", "documents"])]
    pub prompt: Option<String>,
    /// System prompt (default: the model's).
    #[arg(long)]
    pub system: Option<String>,
    /// Document files (plain text), each fused from its own cached chunks.
    #[arg(long, num_args = 1..)]
    pub documents: Vec<PathBuf>,
    /// The question about the documents.
    #[arg(long)]
    pub question: Option<String>,
    /// Fusion method for document prompts: full, reuse, cacheblend, epic, a3, with options
    /// as in `eval` (`a3:hybrid=0.5`, `a3:sink=1`, `a3:tokens=200`, `epic:m=16`); a named
    /// method starts from its own defaults (`a3` is the paper's plain A^3). Default: the
    /// engine's `engine.default_fusion`, the one `a3kv serve` applies.
    #[arg(long, value_name = "SPEC", long_help = METHOD_HELP.as_str())]
    pub method: Option<String>,
    /// Recompute ratio r in [0, 1] (default: the method's budget, 0.15 built in).
    #[arg(long)]
    pub ratio: Option<f64>,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// RNG seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Maximum new tokens.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
}

/// The fusion parameters `--method`/`--ratio` ask for; `None` = the engine's default.
fn requested_fusion(
    a: &GenerateArgs,
    default: &FusionParams,
) -> anyhow::Result<Option<FusionParams>> {
    Ok(match (&a.method, a.ratio) {
        (Some(spec), r) => Some(crate::method_spec::parse(spec, r.unwrap_or(0.15))?.1),
        (None, Some(r)) => Some(FusionParams {
            budget: Budget::Ratio(r),
            ..default.clone()
        }),
        (None, None) => None,
    })
}

/// The prompt: a chat turn, or documents and a question.
fn prompt_spec(a: &GenerateArgs) -> anyhow::Result<PromptSpec> {
    if let Some(q) = &a.question {
        let documents = a
            .documents
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading document {}", p.display()))?;
                Ok(DocumentRef::Text { id: None, text })
            })
            .collect::<anyhow::Result<_>>()?;
        return Ok(PromptSpec::Rag {
            system: a.system.clone(),
            documents,
            question: q.clone(),
        });
    }
    let Some(p) = &a.prompt else {
        bail!("give a prompt, or --question with --documents");
    };
    if p.trim().is_empty() {
        bail!("the prompt is empty");
    }
    let mut messages: Vec<ChatMessage> = a
        .system
        .iter()
        .map(|s| ChatMessage {
            role: "system".into(),
            content: s.clone(),
        })
        .collect();
    messages.push(ChatMessage {
        role: "user".into(),
        content: p.clone(),
    });
    Ok(PromptSpec::Chat { messages })
}

/// Runs `a3kv generate`.
pub fn run(a: GenerateArgs) -> anyhow::Result<()> {
    let sampling = SamplingParams {
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
    };
    sampling.validate()?;
    let prompt = prompt_spec(&a)?;
    let mut cfg = a.served.config()?;
    // The command line is the operator: its --max-tokens is the limit.
    cfg.engine.max_new_tokens = cfg.engine.max_new_tokens.max(a.max_tokens);
    let fusion = requested_fusion(&a, &cfg.engine.default_fusion)?;
    let lm = crate::served::served_model(&cfg)?;
    if let Some(f) = &fusion {
        f.validate(lm.model.num_layers())?;
    }
    let method = crate::method_spec::spec_of(fusion.as_ref().unwrap_or(&cfg.engine.default_fusion));
    let is_rag = matches!(prompt, PromptSpec::Rag { .. });
    let request = GenerateRequest {
        request_id: "cli".into(),
        prompt,
        fusion,
        sampling,
        max_tokens: a.max_tokens,
        stop: Vec::new(),
        logprobs: None,
        first_token_logits: false,
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let engine = Engine::start(cfg.engine.clone(), lm)
            .await
            .context("starting the engine")?;
        let result = stream(&engine, request, is_rag, &method).await;
        engine.shutdown(Duration::from_secs(5)).await;
        result
    })
}

/// "3 (computed 1, disk 2)": where the prompt's chunks (prefix included) came from.
fn chunk_sources(tiers: &[String]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for t in tiers {
        match counts.iter_mut().find(|(name, _)| name == t) {
            Some((_, n)) => *n += 1,
            None => counts.push((t, 1)),
        }
    }
    let parts: Vec<String> = counts.iter().map(|(t, n)| format!("{t} {n}")).collect();
    format!("{} ({})", tiers.len(), parts.join(", "))
}

/// Submits the request and writes its tokens to stdout as they come.
async fn stream(
    engine: &Engine,
    request: GenerateRequest,
    is_rag: bool,
    method: &str,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut rx = engine.submit(request)?;
    let mut out = std::io::stdout().lock();
    let mut first_at = None;
    let mut n = 0usize;
    while let Some(ev) = rx.recv().await {
        match ev {
            EngineEvent::Token { text, .. } => {
                first_at.get_or_insert_with(|| t0.elapsed().as_secs_f64());
                n += 1;
                out.write_all(text.as_bytes())
                    .and_then(|()| out.flush())
                    .context("writing output")?;
            }
            EngineEvent::Failed(e) => return Err(e.into()),
            EngineEvent::Finished {
                finish_reason,
                usage,
            } => {
                writeln!(out)?;
                let total = t0.elapsed().as_secs_f64();
                let ttft = first_at.unwrap_or(usage.ttft_secs);
                let decode_tps = if n > 1 {
                    (n - 1) as f64 / (total - ttft).max(1e-9)
                } else {
                    0.0
                };
                if let Some(r) = usage.fusion.filter(|_| is_rag) {
                    eprintln!(
                        "[a3kv] {} prompt tokens, method {method}, recomputed {} / reused {} / fresh {} (ratio {:.3}), fused prefill {:.3}s",
                        usage.prompt_tokens,
                        r.recomputed_tokens,
                        r.reused_tokens,
                        r.fresh_tokens,
                        r.recompute_ratio,
                        r.total_secs
                    );
                } else {
                    eprintln!("[a3kv] {} prompt tokens", usage.prompt_tokens);
                }
                if is_rag {
                    eprintln!("[a3kv] chunks: {}", chunk_sources(&usage.trace.chunk_tiers));
                }
                let label = if is_rag { "fused" } else { "prefill" };
                eprintln!(
                    "[a3kv] {label}: time to first token {ttft:.3}s, {n} tokens, {decode_tps:.1} tok/s decode, finish {finish_reason}"
                );
                return Ok(());
            }
        }
    }
    bail!("the engine ended the request without finishing it")
}
