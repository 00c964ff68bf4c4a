//! Prints the disk-tier load benchmark (what `a3kv bench store` will show).
//!
//! `cargo run --release -p a3kv-store --example store_bench [DIR] [N_TOKENS]`

use a3kv_store::bench::{run, BenchConfig};

fn main() -> Result<(), a3kv_store::StoreError> {
    let mut args = std::env::args().skip(1);
    let mut cfg = BenchConfig::default();
    if let Some(dir) = args.next() {
        cfg.dir = dir.into();
    }
    if let Some(n) = args.next().and_then(|s| s.parse().ok()) {
        cfg.n_tokens = n;
    }
    println!("{}", run(&cfg)?);
    Ok(())
}
