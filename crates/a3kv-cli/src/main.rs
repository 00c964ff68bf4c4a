//! The `a3kv` binary: one entry point, one subcommand per job.

mod commands;
mod common;
mod malloc_arenas;
mod method_spec;
mod served;

use std::io::IsTerminal;

use clap::{Parser, Subcommand};

/// a3kv: a RAG serving engine that reuses precomputed document KV caches and recomputes
/// only the tokens the question attends to (A^3).
#[derive(Parser)]
#[command(name = "a3kv", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one request from the command line and stream the answer.
    Generate(commands::generate::GenerateArgs),
    /// Quality, fidelity to full prefill and TTFT of each method on a data set.
    ///
    /// Every method, `full` included, runs through the engine `a3kv serve` runs (one
    /// in-process `Engine`, configured like the server: `-c`, `--set`, `A3KV_*`). Each item's
    /// documents are stored through the engine first, so TTFT is measured with a warm chunk
    /// cache; it is the served time to first token (submit to first token: admission,
    /// scheduling, chunk loads from the store and the fused prefill), as the server reports
    /// it.
    Eval(commands::eval::EvalArgs),
    /// Fill the chunk store's disk tier from a JSONL file of documents (resumable).
    Precompute(commands::precompute::PrecomputeArgs),
    /// Benchmarks: `prefill` (vs candle-transformers), `fusion` (methods vs full),
    /// `scheduler` (the actor pipeline under load), `store` (disk tier load), `decode`
    /// (tokens/s, quantised vs f32, batched).
    Bench(commands::bench::BenchArgs),
    /// The HTTP server: OpenAI-compatible completions with RAG documents and fusion, the
    /// chunk API, /health, /ready and /metrics (see configs/default.toml).
    Serve(a3kv_server::ServeArgs),
    /// Synthetic RAG traffic against a running OpenAI-compatible server (loopback only in tests).
    Loadgen(Box<a3kv_loadgen::LoadgenArgs>),
}

fn main() -> anyhow::Result<()> {
    // Before any thread starts: arenas are created as threads first contend for one.
    let arenas = malloc_arenas::cap();
    let cli = Cli::parse();
    // `serve` installs its own subscriber (the `log.format` / `log.level` config keys).
    if !matches!(cli.command, Command::Serve(_)) {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
    if let Some(n) = arenas {
        tracing::debug!(arenas = n, "glibc malloc arenas capped");
    }
    match cli.command {
        Command::Serve(a) => {
            let rt = tokio::runtime::Runtime::new()?;
            let r = rt.block_on(a3kv_server::serve(a));
            // The server has drained: do not wait on blocking reads or computations of
            // requests that were cut at the drain deadline.
            rt.shutdown_timeout(std::time::Duration::from_millis(100));
            r
        }
        Command::Loadgen(a) => {
            let report = tokio::runtime::Runtime::new()?.block_on(a3kv_loadgen::run(*a))?;
            a3kv_loadgen::print_report(&report);
            Ok(())
        }
        Command::Generate(a) => commands::generate::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Precompute(a) => commands::precompute::run(a),
    }
}
