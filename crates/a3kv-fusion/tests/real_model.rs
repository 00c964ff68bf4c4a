//! Fusion on the real model (SmolLM2-135M) and real data (HotpotQA dev): the item-level
//! numbers of `shared/REFERENCE-A3.md`, r = 1 exactness, and fidelity over 20 items.

use std::path::PathBuf;
use std::sync::Arc;

use a3kv_fusion::*;
use a3kv_model::{load_model, LoadOptions, LoadedModel, Tensor, DEFAULT_RAG_INSTRUCTION};
use rand::{seq::SliceRandom, SeedableRng};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Model and HotpotQA items, or `None` (with a note) when absent and `CI` is unset.
fn assets() -> Option<(LoadedModel, Vec<serde_json::Value>)> {
    let model = root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let data = root().join("data/hotpotqa.json");
    if !model.exists() || !data.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must fetch the model and data (scripts/fetch-model.sh, scripts/fetch-data.sh)"
        );
        eprintln!(
            "SKIP: model or data absent; run scripts/fetch-model.sh and scripts/fetch-data.sh"
        );
        return None;
    }
    let m = load_model(&model, &LoadOptions::default()).unwrap();
    let items: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(data).unwrap()).unwrap();
    Some((m, items))
}

struct Item {
    prompt: RagPrompt,
    prefix: Arc<ChunkKv>,
    chunks: Vec<Arc<ChunkKv>>,
}

fn build(m: &LoadedModel, item: &serde_json::Value) -> Item {
    let tok = &m.tokenizer;
    let prefix_ids = tok
        .encode(&tok.template().rag_prefix(None, DEFAULT_RAG_INSTRUCTION))
        .unwrap();
    let chunks: Vec<Vec<u32>> = item["context"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let title = c[0].as_str().unwrap();
            let text: String = c[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap())
                .collect();
            tok.encode(&format!("{title}: {}\n", text.trim())).unwrap()
        })
        .collect();
    let q = tok
        .encode(
            &tok.template()
                .rag_suffix(item["question"].as_str().unwrap()),
        )
        .unwrap();
    let prompt = RagPrompt::from_ids(&prefix_ids, &chunks, &q).unwrap();
    let prefix = precompute_chunk(&m.model, &prefix_ids, None).unwrap();
    let caches = chunks
        .iter()
        .map(|c| precompute_chunk(&m.model, c, None).unwrap())
        .collect();
    Item {
        prompt,
        prefix,
        chunks: caches,
    }
}

fn run(m: &LoadedModel, it: &Item, params: &FusionParams) -> FusedPrefill {
    fused_prefill(
        &m.model,
        &it.prompt,
        Some(it.prefix.clone()),
        &it.chunks,
        params,
        true,
    )
    .unwrap()
}

fn logits(t: &Tensor) -> Vec<f32> {
    t.to_vec1().unwrap()
}

/// KL(p_full || p_other) of the softmaxes, in f64.
fn kl(full: &[f32], other: &[f32]) -> f64 {
    let lsm = |x: &[f32]| {
        let m = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let z: f64 = x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln() + m;
        x.iter().map(|&v| v as f64 - z).collect::<Vec<f64>>()
    };
    let (a, b) = (lsm(full), lsm(other));
    a.iter().zip(&b).map(|(x, y)| x.exp() * (x - y)).sum()
}

fn ranges(s: &str) -> Vec<u32> {
    s.split(',')
        .flat_map(|r| match r.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().unwrap()..=b.parse().unwrap()).collect::<Vec<_>>(),
            None => vec![r.parse().unwrap()],
        })
        .collect()
}

#[test]
fn hotpotqa_item_0_matches_the_reference_run() {
    let Some((m, items)) = assets() else { return };
    let it = build(&m, &items[0]);
    assert_eq!(it.prompt.len(), 1282);
    assert_eq!(it.prompt.question_len(), 24);
    let lens: Vec<usize> = it.prompt.chunks().map(|s| s.len).collect();
    assert_eq!(lens, vec![101, 90, 126, 195, 46, 133, 130, 69, 158, 163]);
    assert_eq!(budget_k(Budget::Ratio(0.15), &it.prompt), 188);
    let want = [
        (Method::Full, 30.926f32),
        (Method::Reuse, 27.646),
        (Method::CacheBlend, 30.055),
        (Method::Epic, 29.713),
        (Method::A3, 27.673),
    ];
    let full = logits(&run(&m, &it, &FusionParams::method(Method::Full)).logits);
    for (method, logit) in want {
        let out = run(&m, &it, &FusionParams::method(method));
        let l = logits(&out.logits);
        assert_eq!(a3kv_model::argmax(&l), Some(5230), "{method:?} first token");
        assert!(
            (l[5230] - logit).abs() < 1e-2,
            "{method:?}: logit {} vs reference {logit}",
            l[5230]
        );
        eprintln!(
            "{:>10}: logit {:.3} KL {:.4}",
            method.as_str(),
            l[5230],
            kl(&full, &l)
        );
        if method == Method::A3 {
            let reference = ranges("120-124,144-148,175-179,282-286,300-304,340-344,360-364,467-471,516-520,564-568,601-605,643-647,787-791,810-814,896-900,933-937,964-966,969-973,988-992,1057-1058,1076-1080,1091-1095,1120,1124,1139-1143,1146,1154-1158,1163-1167,1175-1179,1190-1194,1200-1211,1213-1226,1228-1232,1234-1257");
            let ours = out.report.selected_positions.unwrap();
            let inter = ours.iter().filter(|p| reference.contains(p)).count();
            let union = ours.len() + reference.len() - inter;
            let jaccard = inter as f64 / union as f64;
            assert!(jaccard >= 0.97, "A^3 selection Jaccard {jaccard}");
        }
    }
}

#[test]
fn full_budget_a3_equals_full_prefill_on_the_real_model() {
    let Some((m, items)) = assets() else { return };
    let it = build(&m, &items[1]);
    let full = logits(&run(&m, &it, &FusionParams::method(Method::Full)).logits);
    let params = FusionParams {
        budget: Budget::Ratio(1.0),
        ..Default::default()
    };
    let a3 = logits(&run(&m, &it, &params).logits);
    let d = full
        .iter()
        .zip(&a3)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(d < 1e-3, "max |Δlogit| {d}");
}

#[test]
fn a3_is_closer_to_full_than_reuse_and_random_over_20_items() {
    let Some((m, items)) = assets() else { return };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (mut kl_a3, mut kl_reuse, mut kl_random) = (0.0, 0.0, 0.0);
    // The 20 shortest of the first 60 items keep the suite's time bounded on 2 cores.
    let n = 20;
    let len = |v: &serde_json::Value| v["context"].to_string().len();
    let mut pool: Vec<&serde_json::Value> = items.iter().take(60).collect();
    pool.sort_by_key(|v| len(v));
    for item in pool.into_iter().take(n) {
        let it = build(&m, item);
        let full = logits(&run(&m, &it, &FusionParams::method(Method::Full)).logits);
        let a3 = run(&m, &it, &FusionParams::method(Method::A3));
        kl_a3 += kl(&full, &logits(&a3.logits));
        kl_reuse += kl(
            &full,
            &logits(&run(&m, &it, &FusionParams::method(Method::Reuse)).logits),
        );
        // Random selection of the same size, same check layer.
        let k = budget_k(Budget::Ratio(0.15), &it.prompt);
        let mut rows: Vec<usize> = it
            .prompt
            .doc_range()
            .map(|r| r - it.prompt.prefix_len())
            .collect();
        rows.shuffle(&mut rng);
        rows.truncate(k);
        let cache = PromptCache {
            prefix: Some(it.prefix.clone()),
            chunks: it.chunks.clone(),
            question_len: it.prompt.question_len(),
        };
        let mut r = FusionRun::new(
            &m.model,
            it.prompt.clone(),
            FusionParams::method(Method::A3),
        )
        .unwrap();
        r.set_fixed_selection(rows);
        r.run_check(&m.model, &cache).unwrap();
        while r.next_layer() < m.model.num_layers() {
            let l = r.next_layer();
            r.run_layer(&m.model, l, &cache).unwrap();
        }
        kl_random += kl(&full, &logits(&r.finish(&m.model, false).unwrap().logits));
    }
    let nf = n as f64;
    let (a3, reuse, random) = (kl_a3 / nf, kl_reuse / nf, kl_random / nf);
    eprintln!("mean KL over {n} items: a3 {a3:.3} reuse {reuse:.3} random {random:.3}");
    assert!(a3 < reuse, "a3 {a3} vs reuse {reuse}");
    assert!(a3 < random, "a3 {a3} vs random {random}");
}
