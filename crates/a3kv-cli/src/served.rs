//! What the subcommands that run the in-process [`Engine`] share (`generate`, `eval`,
//! `bench fusion`): the server configuration and model they load exactly as `a3kv serve`
//! does, and reading one request's events to its end. A front end builds requests and reads
//! events, nothing more (docs/design.md §9.5).

use std::path::PathBuf;

use a3kv_model::LoadedModel;
use a3kv_sched::{Engine, EngineError, EngineEvent, GenerateRequest, Usage};
use a3kv_server::{ServeArgs, ServerConfig};
use anyhow::Context;

/// The options every front end that runs the `Engine` in process shares (`generate`,
/// `eval`, `bench fusion`): the model, the server configuration and its overrides, the
/// chunk size.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServedArgs {
    /// Model file (GGUF) or HF directory (key `model.path`); default: the fetched
    /// SmolLM2-135M-Instruct.
    #[arg(long, env = "A3KV_MODEL")]
    pub model: Option<PathBuf>,
    /// Server configuration (model options, engine limits and settings, chunk store tiers,
    /// default fusion); without it the built-in defaults apply.
    #[arg(long, short = 'c', value_name = "FILE", env = "A3KV_CONFIG")]
    pub config: Option<PathBuf>,
    /// Override any configuration key, e.g. `--set engine.store.disk.dir=/tmp/chunks`
    /// (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Chunk size in tokens for long documents (key `engine.chunk_tokens`, 512 built in).
    #[arg(long)]
    pub chunk_tokens: Option<usize>,
}

impl ServedArgs {
    /// The server configuration these options name ([`served_config`], `--chunk-tokens`
    /// as the last override).
    ///
    /// # Errors
    /// A configuration error naming the key and its source.
    pub fn config(&self) -> anyhow::Result<ServerConfig> {
        let mut set = self.set.clone();
        if let Some(n) = self.chunk_tokens {
            set.push(format!("engine.chunk_tokens={n}"));
        }
        served_config(self.config.clone(), self.model.clone(), set)
    }
}

/// The server configuration: `-c FILE`, `A3KV_*`, then the `set` overrides (highest last),
/// with `model` as `model.path` when given.
///
/// # Errors
/// A configuration error naming the key and its source.
pub fn served_config(
    config: Option<PathBuf>,
    model: Option<PathBuf>,
    set: Vec<String>,
) -> anyhow::Result<ServerConfig> {
    let serve_args = ServeArgs {
        config,
        model: model.map(|p| p.display().to_string()),
        set,
        ..Default::default()
    };
    Ok(serve_args.load_config()?)
}

/// The model `cfg` names (or the default one), loaded with its options as the server does.
///
/// # Errors
/// The model not found or not loadable.
pub fn served_model(cfg: &ServerConfig) -> anyhow::Result<LoadedModel> {
    let path = a3kv_server::model_path(cfg)?;
    eprintln!("[a3kv] model {}", path.display());
    let opts = a3kv_server::load_options(cfg)?;
    a3kv_model::load_model(&path, &opts)
        .with_context(|| format!("loading model {}", path.display()))
}

/// One request's answer, read to its end.
#[derive(Debug, Clone)]
pub struct Served {
    /// Generated token ids, in order.
    pub ids: Vec<u32>,
    /// The text the engine emitted.
    pub text: String,
    /// Token accounting, TTFT, the fusion report (and first-token logits when asked).
    pub usage: Usage,
}

/// Submits `request` and reads its events until `Finished` or `Failed`.
///
/// # Errors
/// The engine's refusal or failure; `Internal` if the stream ends without either.
pub async fn serve_one(engine: &Engine, request: GenerateRequest) -> Result<Served, EngineError> {
    let mut rx = engine.submit(request)?;
    let (mut ids, mut text) = (Vec::new(), String::new());
    while let Some(ev) = rx.recv().await {
        match ev {
            EngineEvent::Token {
                token_id, text: t, ..
            } => {
                ids.push(token_id);
                text.push_str(&t);
            }
            EngineEvent::Finished { usage, .. } => return Ok(Served { ids, text, usage }),
            EngineEvent::Failed(e) => return Err(e),
        }
    }
    Err(EngineError::Internal(
        "the engine ended the request without finishing it".into(),
    ))
}
