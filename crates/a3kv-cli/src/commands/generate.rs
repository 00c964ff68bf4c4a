//! `a3kv generate`: one request from the command line, streamed to stdout; time to first
//! token and tokens/s to stderr.

use std::io::Write;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Instant;

use a3kv_fusion::{fused_prefill, generate, precompute_chunk, Budget, FusionParams, RagParts};
use a3kv_model::{ChatMessage, SamplingParams, TextStreamer, DEFAULT_RAG_INSTRUCTION};
use a3kv_sched::EngineConfig;
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
        crate::method_spec::spec_of(&default_fusion(None))
    )
});

/// The engine's default fusion (what the server applies), with `--ratio` when given.
fn default_fusion(ratio: Option<f64>) -> FusionParams {
    let mut p = EngineConfig::default().default_fusion;
    if let Some(r) = ratio {
        p.budget = Budget::Ratio(r);
    }
    p
}

/// Arguments of `a3kv generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Model file (GGUF) or HF directory; default: the fetched SmolLM2-135M-Instruct.
    #[arg(long, env = "A3KV_MODEL")]
    pub model: Option<PathBuf>,
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
    /// Chunk size in tokens for long documents (as the server's `engine.chunk_tokens`).
    #[arg(long, default_value_t = EngineConfig::default().chunk_tokens)]
    pub chunk_tokens: usize,
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

/// Runs `a3kv generate`.
pub fn run(a: GenerateArgs) -> anyhow::Result<()> {
    let lm = crate::common::load(a.model.clone())?;
    let (model, tok) = (&lm.model, &lm.tokenizer);
    let sampling = SamplingParams {
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
    };
    sampling.validate()?;
    let t0 = Instant::now();
    let (logits, mut cache, label) = if let Some(q) = &a.question {
        let docs: Vec<String> = a
            .documents
            .iter()
            .map(|p| {
                std::fs::read_to_string(p)
                    .with_context(|| format!("reading document {}", p.display()))
            })
            .collect::<anyhow::Result<_>>()?;
        let params = match &a.method {
            Some(spec) => crate::method_spec::parse(spec, a.ratio.unwrap_or(0.15))?.1,
            None => default_fusion(a.ratio),
        };
        params.validate(model.num_layers())?;
        let method = crate::method_spec::spec_of(&params);
        let parts = RagParts::build(
            tok,
            a.system.as_deref(),
            DEFAULT_RAG_INSTRUCTION,
            &docs,
            q,
            a.chunk_tokens,
        )?;
        let prompt = parts.prompt()?;
        model.check_context(0, prompt.len())?;
        let tp = Instant::now();
        let prefix = (!parts.prefix.is_empty())
            .then(|| precompute_chunk(model, &parts.prefix, None))
            .transpose()?;
        let chunks = parts
            .chunks
            .iter()
            .map(|c| precompute_chunk(model, c, None))
            .collect::<Result<Vec<_>, _>>()?;
        eprintln!(
            "[a3kv] precomputed {} chunk(s) in {:.3}s (cached once, reused by later requests)",
            chunks.len(),
            tp.elapsed().as_secs_f64()
        );
        let tf = Instant::now();
        let out = fused_prefill(model, &prompt, prefix, &chunks, &params, false)?;
        eprintln!(
            "[a3kv] {} prompt tokens, method {}, recomputed {} / reused {} / fresh {} (ratio {:.3}), fused prefill {:.3}s",
            prompt.len(),
            method,
            out.report.recomputed_tokens,
            out.report.reused_tokens,
            out.report.fresh_tokens,
            out.report.recompute_ratio,
            tf.elapsed().as_secs_f64()
        );
        (out.logits, out.cache, "fused")
    } else {
        let Some(p) = &a.prompt else {
            bail!("give a prompt, or --question with --documents");
        };
        if p.trim().is_empty() {
            bail!("the prompt is empty");
        }
        let mut msgs: Vec<ChatMessage> = a
            .system
            .iter()
            .map(|s| ChatMessage {
                role: "system".into(),
                content: s.clone(),
            })
            .collect();
        msgs.push(ChatMessage {
            role: "user".into(),
            content: p.clone(),
        });
        let text = tok.template().render(&msgs, true);
        let ids = tok.encode(&text)?;
        let out = model.prefill(&ids, 0, false)?;
        eprintln!("[a3kv] {} prompt tokens", ids.len());
        (out.logits, out.cache, "prefill")
    };
    let mut first_at = None;
    let mut streamer = TextStreamer::default();
    let mut out = std::io::stdout().lock();
    let mut write_err = None;
    let gen = generate(
        model,
        &mut cache,
        &logits,
        sampling,
        tok.stop_ids(),
        a.max_tokens,
        |id| {
            first_at.get_or_insert_with(|| t0.elapsed().as_secs_f64());
            match streamer
                .push(tok, id)
                .map_err(anyhow::Error::from)
                .and_then(|s| {
                    out.write_all(s.as_bytes())?;
                    out.flush()?;
                    Ok(())
                }) {
                Ok(()) => true,
                Err(e) => {
                    write_err = Some(e);
                    false
                }
            }
        },
    )?;
    if let Some(e) = write_err {
        return Err(e.context("writing output"));
    }
    writeln!(out)?;
    let total = t0.elapsed().as_secs_f64();
    let ttft = first_at.unwrap_or(total);
    let n = gen.ids.len();
    let decode_tps = if n > 1 {
        (n - 1) as f64 / (total - ttft).max(1e-9)
    } else {
        0.0
    };
    eprintln!(
        "[a3kv] {label}: time to first token {ttft:.3}s, {n} tokens, {decode_tps:.1} tok/s decode, finish {}",
        gen.finish_reason.as_str()
    );
    Ok(())
}
