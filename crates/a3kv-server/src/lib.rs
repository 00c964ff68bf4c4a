//! a3kv-server: the HTTP front of the engine (axum).
//!
//! - OpenAI-compatible `POST /v1/chat/completions` and `POST /v1/completions` (SSE with
//!   `stream: true`), extended with RAG `documents` and `fusion`; `usage.fusion` reports what
//!   the fused prefill reused and recomputed.
//! - Chunk API `PUT /v1/chunks`, `GET|DELETE /v1/chunks/{id}`; `GET /v1/models`, `/health`,
//!   `/ready`, `/metrics` (Prometheus).
//! - Limits from the configuration answer with OpenAI error JSON (one table in
//!   [`error::ApiError::parts`]); graceful shutdown on SIGTERM/SIGINT.
//!
//! The server validates at the edge ([`openai`]) and sees only requests and token streams;
//! it never touches tensors. `a3kv serve` calls [`serve`].

pub mod args;
pub mod config;
mod config_check;
mod config_load;
mod config_schema;
#[cfg(test)]
mod edge_fuzz;
pub mod error;
mod extract;
mod generate;
mod logging;
pub mod logprobs;
pub mod metrics;
pub mod openai;
pub mod reply;
mod request_end;
pub mod request_id;
pub mod routes;
pub mod server;
mod sse;
pub mod state;

pub use args::ServeArgs;
pub use config::ServerConfig;
pub use error::{ApiError, ConfigError, ServeError};
pub use server::{load_options, model_path, start, ServerHandle};

/// `a3kv serve`: loads the effective configuration (CLI > `A3KV_*` env > file > defaults),
/// prints it with `--print-config`, else serves until SIGTERM/SIGINT and drains.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = args.load_config()?;
    if args.print_config {
        print!("{}", config::to_toml(&cfg)?);
        return Ok(());
    }
    logging::init(&cfg.log);
    let handle = server::start(cfg, true).await?;
    handle.wait().await?;
    Ok(())
}
