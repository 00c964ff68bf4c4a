//! The `a3kv` binary: one entry point, one subcommand per job.

mod commands;
mod common;

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
    Eval(commands::eval::EvalArgs),
    /// Benchmarks: `prefill` (vs candle-transformers), `fusion` (methods vs full).
    Bench(commands::bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Generate(a) => commands::generate::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Eval(a) => commands::eval::run(a),
    }
}
