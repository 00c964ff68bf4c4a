//! `bench_scheduler` end to end on the real model with a tiny grid: every point measured,
//! every request counted, stage times in order, and the cold point compared with the warm one.

mod common;

use a3kv_fusion::Method;
use a3kv_sched::bench::{bench_scheduler, synthetic_documents, SchedulerBenchOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_grid_measures_every_point_and_the_cold_tier() {
    let Some(model) = common::model() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let opts = SchedulerBenchOptions {
        concurrency: vec![1, 2],
        requests: 3,
        docs_per_request: 2,
        documents: synthetic_documents(3, 2),
        max_tokens: 2,
        methods: vec![Method::A3, Method::Full],
        batching: vec![true],
        cold: true,
        engine: common::config(),
        disk_dir: Some(dir.path().to_path_buf()),
    };
    let report = bench_scheduler(model, opts).await.unwrap();
    let shape: Vec<(String, usize, String)> = report
        .points
        .iter()
        .map(|p| (p.method.clone(), p.concurrency, p.tier.clone()))
        .collect();
    let want = [
        ("a3", 1, "memory"),
        ("a3", 2, "memory"),
        ("full", 1, "memory"),
        ("full", 2, "memory"),
        ("a3", 1, "disk"),
    ];
    assert_eq!(
        shape,
        want.map(|(m, c, t)| (m.to_string(), c, t.to_string()))
    );
    for p in &report.points {
        assert_eq!(p.requests, 3, "{p:?}");
        assert!(p.throughput_rps > 0.0 && p.prompt_tokens > 20.0, "{p:?}");
        assert!(p.ttft_p50_secs <= p.ttft_p99_secs, "{p:?}");
        let s = &p.stages_p50_secs;
        let full = p.method == "full";
        // Medians keep each request's order (order statistics are monotone); `full` has no
        // separate check phase, its whole prefill is one step.
        assert!(s.admitted <= s.prefill_end, "{p:?}");
        assert!(full || s.check_end <= s.prefill_end, "{p:?}");
        assert!(s.prefill_end <= p.ttft_p99_secs + 1e-3, "{p:?}");
        assert_eq!(full, (p.recompute_ratio - 1.0).abs() < 1e-9, "{p:?}");
    }
    // The disk point wrote the disk tier (one folder per model, a file per stored chunk).
    let chunks: usize = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|model_dir| {
            std::fs::read_dir(model_dir.unwrap().path())
                .unwrap()
                .filter(|f| {
                    f.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|e| e == "a3kv")
                })
                .count()
        })
        .sum();
    assert!(chunks >= 3, "{chunks} chunk files");
    let r = report.cold_over_warm_ttft.expect("cold/warm ratio");
    assert!(r.is_finite() && r > 0.0, "{r}");
}
