//! `a3kv bench`: speed measurements as ratios measured in one process, one file per bench.
//!
//! - `prefill` (`prefill.rs`): our full prefill vs candle-transformers' `quantized_llama`
//!   (dequantised) on the same weights, tokens/s, achieved GFLOP/s vs the measured matmul
//!   rate, peak RSS.
//! - `fusion` (`fusion.rs`): TTFT of every method at several context lengths (warm chunk
//!   cache), as ratios to `full`, with the fusion report's phase times; each request runs
//!   through the engine `a3kv serve` runs, so TTFT is the served one.
//! - `scheduler` (`scheduler.rs`): the actor pipeline under closed-loop load.
//! - `store` (`store.rs`): the chunk store's disk-tier chunk load vs a plain read.
//! - `decode` (`decode.rs`): decode tokens/s, quantised vs f32, 1 and N sequences.
//!
//! Each drives the libraries through their public API only (`a3kv_sched::Engine`,
//! `a3kv_store::ChunkStore`, the model's layer API).

mod decode;
mod fusion;
mod prefill;
mod scheduler;
mod store;

use clap::{Args, Subcommand};

/// Arguments of `a3kv bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

/// Which benchmark.
#[derive(Subcommand, Debug)]
pub enum BenchWhat {
    /// Full prefill tokens/s vs candle-transformers, same weights, same process.
    Prefill(prefill::PrefillArgs),
    /// TTFT per fusion method vs full, warm chunk cache, through the engine `a3kv serve` runs
    /// (TTFT = the served time to first token: submit to first token, scheduler included).
    Fusion(fusion::FusionArgs),
    /// The actor pipeline under closed-loop load: requests/s and TTFT p50/p99 per method,
    /// batching on/off and concurrency, plus cold (disk) vs warm (memory) TTFT.
    Scheduler(scheduler::SchedulerArgs),
    /// Chunk store disk tier: loading a chunk (checksummed, layer by layer) vs a plain
    /// `read` of the same file, page cache cold and warm.
    Store(store::StoreArgs),
    /// Decode tokens/s: one sequence and batched (1/4/16), quantised weights vs f32, with
    /// llama.cpp's rates from a llama-bench JSONL (`--llamacpp`).
    Decode(decode::DecodeArgs),
}

/// Runs `a3kv bench`.
pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    match a.what {
        BenchWhat::Prefill(p) => prefill::run(p),
        BenchWhat::Fusion(f) => fusion::run(f),
        BenchWhat::Scheduler(s) => scheduler::run(s),
        BenchWhat::Store(s) => store::run(s),
        BenchWhat::Decode(d) => decode::run(d),
    }
}

/// Deterministic prompt ids of length `n` from real text (repeated).
fn prompt_ids(tok: &a3kv_model::ModelTokenizer, n: usize) -> anyhow::Result<Vec<u32>> {
    let text = "Retrieval-augmented generation prepends retrieved passages to a question. \
        The same documents recur across requests, so their key-value caches can be computed \
        once and reused; only the tokens the question attends to need recomputation. ";
    let base = tok.encode(text)?;
    Ok(base.iter().cycle().take(n).copied().collect())
}
