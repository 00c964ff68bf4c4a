//! Runs the scheduler benchmark (`a3kv bench scheduler` calls the same function) with a
//! size given on the command line: `cargo run --release -p a3kv-sched --example
//! bench_scheduler -- [requests] [docs_per_request] [concurrency,..]`.

use a3kv_model::{find_default_model, load_model, LoadOptions};
use a3kv_sched::bench::{bench_scheduler, SchedulerBenchOptions};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = find_default_model()?;
    let model = load_model(&path, &LoadOptions::default())?;
    let mut opts = SchedulerBenchOptions::default();
    if let Some(n) = args.first() {
        opts.requests = n.parse()?;
    }
    if let Some(n) = args.get(1) {
        opts.docs_per_request = n.parse()?;
    }
    if let Some(c) = args.get(2) {
        opts.concurrency = c.split(',').map(str::parse).collect::<Result<_, _>>()?;
    }
    let report = bench_scheduler(model, opts).await?;
    println!("{report}");
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
