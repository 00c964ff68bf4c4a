//! Production shadow sampling on the real model (`[engine.fusion_shadow]`): with rate 1
//! every fused request is also run as a full prefill at idle priority, its first-token KL and
//! top-1 agreement land in `a3kv:fusion_shadow_kl` / `a3kv:fusion_shadow_agreement_total`,
//! the KL is ~0 for fusion at ratio 1 (the shadow computes a real full prefill) and small but
//! positive at 0.15; the controller raises the default ratio when the KL passes `max_kl`; and
//! shadows on vs off leave the p99 latency of a short burst within a generous noise bound,
//! with every sampled shadow either finished or counted as dropped.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{base, client, lock, metric_sum, model_path, scrape, test_config};

const DOCS: [&str; 2] = [
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889 as the centrepiece of the 1889 World's Fair. Locally nicknamed La dame de fer, it was criticised by some of France's leading artists and intellectuals for its design, but it has become a global cultural icon of France and one of the most recognisable structures in the world.",
    "Mount Fuji is the highest mountain in Japan, at 3,776 metres. It is an active stratovolcano that last erupted from 1707 to 1708. The mountain is located on the island of Honshu, about 100 kilometres south-west of Tokyo, and can be seen from there on a clear day. Its exceptionally symmetrical cone, which is covered in snow for about five months of the year, is commonly used as a cultural icon of Japan.",
];

fn body(question: &str, fusion: Option<Value>, max_tokens: u32) -> Value {
    let mut b = json!({
        "messages": [{"role": "user", "content": question}],
        "documents": DOCS.iter().map(|t| json!({"text": t})).collect::<Vec<_>>(),
        "max_tokens": max_tokens,
        "temperature": 0,
    });
    if let Some(f) = fusion {
        b["fusion"] = f;
    }
    b
}

async fn ask(addr: SocketAddr, b: &Value) -> Value {
    let r = client()
        .post(format!("{}/v1/chat/completions", base(addr)))
        .json(b)
        .send()
        .await
        .expect("send");
    let status = r.status();
    let v: Value = r.json().await.expect("json");
    assert_eq!(status, 200, "{v}");
    v
}

/// `(count, sum)` of the shadow KL histogram and the agreement counters `(true, false)`.
async fn shadow_metrics(addr: SocketAddr) -> (f64, f64, f64, f64) {
    let t = scrape(addr).await;
    (
        metric_sum(&t, "a3kv:fusion_shadow_kl_count", ""),
        metric_sum(&t, "a3kv:fusion_shadow_kl_sum", ""),
        metric_sum(&t, "a3kv:fusion_shadow_agreement_total", "agree=\"true\""),
        metric_sum(&t, "a3kv:fusion_shadow_agreement_total", "agree=\"false\""),
    )
}

/// Waits (bounded) until the KL histogram counts `n` more shadows than `before`.
async fn wait_shadows(addr: SocketAddr, before: f64, n: f64) -> (f64, f64, f64, f64) {
    for _ in 0..1200 {
        let m = shadow_metrics(addr).await;
        if m.0 - before >= n {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{n} shadow prefills did not finish within 120 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadows_record_kl_and_agreement_and_the_controller_raises_the_default_ratio() {
    let Some(model) = model_path() else { return };
    let _g = lock().await;
    let mut cfg = test_config(&model);
    cfg.engine.fusion_shadow.rate = 1.0;
    // One sample decides; any real fusion error (> 1e-5 nats) raises the ratio one step.
    cfg.engine.fusion_shadow.window = 1;
    cfg.engine.fusion_shadow.max_kl = 1e-5;
    cfg.engine.fusion_shadow.max_steps = 1;
    cfg.engine.fusion_shadow.ratio_step = 0.1;
    let h = a3kv_server::start(cfg, false).await.expect("starts");
    let engine = h.state.engine.clone();

    // 1. Fusion at ratio 1 recomputes every row: the shadow's full prefill must agree (a
    //    KL of ~0 also shows the shadow is a real full prefill of the same prompt).
    let before = shadow_metrics(h.addr).await;
    let exact = json!({"method": "a3", "recompute_ratio": 1.0});
    ask(
        h.addr,
        &body("When was the Eiffel Tower built?", Some(exact), 1),
    )
    .await;
    let after = wait_shadows(h.addr, before.0, 1.0).await;
    let kl_exact = (after.1 - before.1) / (after.0 - before.0);
    assert!(kl_exact.abs() < 1e-4, "KL at ratio 1: {kl_exact}");
    assert_eq!(after.2 - before.2, 1.0, "the first tokens agree");
    assert_eq!(engine.shadow_step(), 0, "KL under max_kl / 2: no step");

    // 2. The default fusion (no `fusion` object; the A^3 hybrid at 0.15): a positive, sane
    //    KL, and the controller raises the default ratio one step.
    let q = "How high is Mount Fuji?";
    let first = ask(h.addr, &body(q, None, 1)).await;
    let after2 = wait_shadows(h.addr, after.0, 1.0).await;
    let kl = (after2.1 - after.1) / (after2.0 - after.0);
    assert!(kl > 1e-7 && kl < 2.0, "KL of the default fusion: {kl}");
    assert_eq!(
        (after2.2 - after.2) + (after2.3 - after.3),
        1.0,
        "one agreement sample"
    );
    for _ in 0..100 {
        if engine.shadow_step() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(engine.shadow_step(), 1, "KL {kl} > max_kl: one step up");
    assert_eq!(
        metric_sum(&scrape(h.addr).await, "a3kv:fusion_shadow_ratio_step", ""),
        1.0
    );
    // The same request now recomputes more rows (ratio 0.15 + 0.1); an explicit budget is
    // left alone.
    let second = ask(h.addr, &body(q, None, 1)).await;
    let rows = |v: &Value| {
        v["usage"]["fusion"]["recomputed_tokens"]
            .as_u64()
            .expect("rows")
    };
    assert!(
        rows(&second) > rows(&first),
        "{} rows before the step, {} after",
        rows(&first),
        rows(&second)
    );
    let explicit = json!({"recompute_ratio": 0.15});
    let third = ask(h.addr, &body(q, Some(explicit), 1)).await;
    assert_eq!(rows(&third), rows(&first));
    h.shutdown();
    h.wait().await.expect("clean exit");
}

/// One burst: `n` requests, `conc` at a time, one token each; the latencies (≈ TTFT).
async fn burst(addr: SocketAddr, round: usize, n: usize, conc: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for wave in 0..n.div_ceil(conc) {
        let tasks: Vec<_> = (0..conc.min(n - wave * conc))
            .map(|i| {
                let b = body(
                    &format!("Round {round}, question {wave}-{i}: where is the Eiffel Tower?"),
                    None,
                    1,
                );
                tokio::spawn(async move {
                    let t0 = Instant::now();
                    ask(addr, &b).await;
                    t0.elapsed().as_secs_f64()
                })
            })
            .collect();
        for t in tasks {
            out.push(t.await.expect("client"));
        }
    }
    out
}

fn p99(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadows_stay_off_the_critical_path_under_load() {
    let Some(model) = model_path() else { return };
    let _g = lock().await;
    let (n, conc) = (8, 4);
    let mut p99s = [Vec::new(), Vec::new()];
    let mut shadow_accounting = None;
    for (on, rate) in [(0, 0.0), (1, 1.0)] {
        let mut cfg = test_config(&model);
        cfg.engine.fusion_shadow.rate = rate;
        cfg.engine.fusion_shadow.max_pending = 2;
        let h = a3kv_server::start(cfg, false).await.expect("starts");
        // Warm: the documents' chunks are computed once, so rounds compare like with like.
        ask(h.addr, &body("Warm-up.", None, 1)).await;
        let t = scrape(h.addr).await;
        let dropped0 = metric_sum(&t, "a3kv:fusion_shadow_dropped_total", "queue_full");
        let kl0 = metric_sum(&t, "a3kv:fusion_shadow_kl_count", "");
        for round in 0..2 {
            let lat = burst(h.addr, round, n, conc).await;
            p99s[on].push(p99(&lat));
        }
        if rate > 0.0 {
            // Every sampled request (all 2·n of the rounds) either ran its shadow or was
            // dropped and counted: the queue is bounded.
            for _ in 0..1200 {
                if h.state.engine.shadow_pending() == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let t = scrape(h.addr).await;
            let dropped =
                metric_sum(&t, "a3kv:fusion_shadow_dropped_total", "queue_full") - dropped0;
            let done = metric_sum(&t, "a3kv:fusion_shadow_kl_count", "") - kl0;
            shadow_accounting = Some((done, dropped));
        }
        h.shutdown();
        h.wait().await.expect("clean exit");
    }
    let (done, dropped) = shadow_accounting.expect("shadow phase ran");
    eprintln!(
        "p99 latency of {n} one-token requests at concurrency {conc}: shadow off {:?} s, on {:?} s; shadows finished {done}, dropped {dropped}",
        p99s[0], p99s[1]
    );
    // Other servers in this process may add shadows of their own; ours are at least these.
    assert!(
        done + dropped >= (2 * n) as f64,
        "done {done} + dropped {dropped}"
    );
    assert!(done >= 1.0, "some shadows ran in the idle gaps");
    // Generous: this shares two cores with builds. Shadows only run while the compute pool
    // has no real work (the pool's unit test holds that exactly), so a real request waits
    // at most one shadow layer.
    let best_on = p99s[1].iter().copied().fold(f64::INFINITY, f64::min);
    let worst_off = p99s[0].iter().copied().fold(0.0, f64::max);
    assert!(
        best_on <= 2.0 * worst_off + 1.0,
        "p99 with shadows {:?} vs without {:?}",
        p99s[1],
        p99s[0]
    );
}
