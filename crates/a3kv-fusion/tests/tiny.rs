//! Exact checks of the fused prefill on tiny random-weight models.

use a3kv_model::testing::max_abs_diff;
use std::sync::Arc;

use a3kv_fusion::a3::a3_scores;
use a3kv_fusion::select::v_deviation;
use a3kv_fusion::selection::select_with_sinks;
use a3kv_fusion::*;
use a3kv_model::testing::tiny_model;
use a3kv_model::{Family, Model, Tensor};

fn ids(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i * 7 + seed * 13 + 3) % 64)
        .collect()
}

fn setup(
    model: &Model,
    p: usize,
    chunk_lens: &[usize],
    q: usize,
) -> (RagPrompt, Vec<Arc<ChunkKv>>) {
    let chunks: Vec<Vec<u32>> = chunk_lens
        .iter()
        .enumerate()
        .map(|(i, &n)| ids(n, i as u32 + 1))
        .collect();
    let prompt = RagPrompt::from_ids(&ids(p, 0), &chunks, &ids(q, 99)).unwrap();
    let caches = chunks
        .iter()
        .map(|c| precompute_chunk(model, c, None).unwrap())
        .collect();
    (prompt, caches)
}

#[test]
fn every_method_at_full_budget_equals_full_prefill() {
    for family in [Family::Llama, Family::Qwen2] {
        let model = tiny_model(family, 1).unwrap();
        let (prompt, caches) = setup(&model, 5, &[17, 9, 30], 6);
        let full = fused_prefill(
            &model,
            &prompt,
            None,
            &caches,
            &FusionParams::method(Method::Full),
            false,
        )
        .unwrap();
        for method in [Method::A3, Method::CacheBlend] {
            let params = FusionParams {
                method,
                budget: Budget::Ratio(1.0),
                ..Default::default()
            };
            let fused = fused_prefill(&model, &prompt, None, &caches, &params, true).unwrap();
            assert!(
                max_abs_diff(&fused.logits, &full.logits) < 1e-4,
                "{method:?} logits"
            );
            for l in 0..model.num_layers() {
                let (a, b) = (&fused.cache.layers[l], &full.cache.layers[l]);
                assert!(max_abs_diff(&a.k().unwrap(), &b.k().unwrap()) < 1e-4);
                assert!(max_abs_diff(&a.v().unwrap(), &b.v().unwrap()) < 1e-4);
            }
            assert_eq!(fused.report.recomputed_tokens, 56);
            assert_eq!(fused.report.reused_tokens, 5);
            assert_eq!(fused.report.fresh_tokens, 6);
        }
    }
}

#[test]
fn reuse_of_a_single_chunk_without_prefix_equals_full_prefill() {
    let model = tiny_model(Family::Llama, 2).unwrap();
    let (prompt, caches) = setup(&model, 0, &[40], 7);
    let full = fused_prefill(
        &model,
        &prompt,
        None,
        &caches,
        &FusionParams::method(Method::Full),
        false,
    )
    .unwrap();
    let reuse = fused_prefill(
        &model,
        &prompt,
        None,
        &caches,
        &FusionParams::method(Method::Reuse),
        false,
    )
    .unwrap();
    assert!(max_abs_diff(&reuse.logits, &full.logits) < 1e-4);
    // With a prefix the chunk never attended to it: no longer exact.
    let (prompt, caches) = setup(&model, 6, &[40], 7);
    let full = fused_prefill(
        &model,
        &prompt,
        None,
        &caches,
        &FusionParams::method(Method::Full),
        false,
    )
    .unwrap();
    let reuse = fused_prefill(
        &model,
        &prompt,
        None,
        &caches,
        &FusionParams::method(Method::Reuse),
        false,
    )
    .unwrap();
    assert!(max_abs_diff(&reuse.logits, &full.logits) > 1e-3);
}

#[test]
fn planted_question_attention_is_selected_after_pooling() {
    // H = 2, H_kv = 1, d = 4; P = 2, 30 document rows, Q = 2.
    let (p, n_doc, q) = (2usize, 30usize, 2usize);
    let t = p + n_doc + q;
    let mut k = vec![0f32; t * 4];
    // Document row 20 (global 22) aligns with the question's queries.
    k[(p + 20) * 4] = 8.0;
    let k_all = Tensor::from_vec(k, (1, t, 4), &candle_core::Device::Cpu).unwrap();
    let qv = [1f32, 0.0, 0.0, 0.0].repeat(2 * q);
    let q_question = Tensor::from_vec(qv, (2, q, 4), &candle_core::Device::Cpu).unwrap();
    let scores = a3_scores(&q_question, &k_all, p, 5).unwrap();
    assert_eq!(scores.len(), n_doc);
    let sel = select_with_sinks(&scores, 5, &[]);
    assert_eq!(sel, vec![18, 19, 20, 21, 22]);
    // Without pooling, the planted row alone.
    let raw = a3_scores(&q_question, &k_all, p, 1).unwrap();
    assert_eq!(select_with_sinks(&raw, 1, &[]), vec![20]);
}

#[test]
fn planted_v_deviation_and_epic_starts_are_selected() {
    let dev = candle_core::Device::Cpu;
    let prompt = RagPrompt::from_ids(&[1, 1], &[vec![2; 6], vec![3; 4]], &[4, 4]).unwrap();
    let fresh = Tensor::zeros((2, 14, 3), candle_core::DType::F32, &dev).unwrap();
    let mut c = vec![0f32; 2 * 14 * 3];
    for (row, mag) in [(5usize, 3.0f32), (9, 2.0), (11, 1.0)] {
        c[row * 3] = mag; // head 0
        c[(14 + row) * 3 + 1] = mag; // head 1
    }
    let cached = Tensor::from_vec(c, (2, 14, 3), &dev).unwrap();
    let d = v_deviation(&fresh, &cached, &prompt).unwrap();
    assert_eq!(select_with_sinks(&d, 2, &[]), vec![3, 7]);
    // EPIC recomputes the first m tokens of each chunk.
    let model = tiny_model(Family::Llama, 3).unwrap();
    let (prompt, caches) = setup(&model, 3, &[10, 4, 8], 3);
    let params = FusionParams {
        method: Method::Epic,
        epic_tokens: 3,
        ..Default::default()
    };
    let out = fused_prefill(&model, &prompt, None, &caches, &params, true).unwrap();
    assert_eq!(
        out.report.selected_positions.unwrap(),
        vec![3, 4, 5, 13, 14, 15, 17, 18, 19]
    );
}

#[test]
fn edge_cases_are_defined() {
    let model = tiny_model(Family::Llama, 4).unwrap();
    let run = |p: usize, lens: &[usize], q: usize, params: FusionParams| {
        let (prompt, caches) = setup(&model, p, lens, q);
        fused_prefill(&model, &prompt, None, &caches, &params, true)
    };
    // No documents, with a prefix.
    let out = run(4, &[], 3, FusionParams::default()).unwrap();
    assert_eq!(out.report.recomputed_tokens, 0);
    // Question only.
    assert!(run(0, &[], 3, FusionParams::default()).is_ok());
    // One-token chunks.
    assert!(run(2, &[1, 1, 1], 2, FusionParams::default()).is_ok());
    // r = 0 still recomputes one document row.
    let r0 = FusionParams {
        budget: Budget::Ratio(0.0),
        ..Default::default()
    };
    assert_eq!(run(2, &[10], 2, r0).unwrap().report.recomputed_tokens, 1);
    // A token budget larger than the documents is clamped.
    let big = FusionParams {
        budget: Budget::Tokens(1000),
        ..Default::default()
    };
    assert_eq!(
        run(2, &[10, 5], 2, big).unwrap().report.recomputed_tokens,
        15
    );
    // A prompt longer than the context window is an error, not a panic.
    let err = run(2, &[300, 300], 2, FusionParams::default()).unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
    // An empty question is rejected.
    assert!(RagPrompt::from_ids(&[1], &[vec![2]], &[]).is_err());
    // A chunk cache that does not match its segment is rejected.
    let (prompt, mut caches) = setup(&model, 2, &[5, 6], 2);
    caches.swap(0, 1);
    assert!(fused_prefill(
        &model,
        &prompt,
        None,
        &caches,
        &FusionParams::default(),
        false
    )
    .is_err());
}

#[test]
fn eviction_caps_every_head_and_decoding_continues() {
    let model = tiny_model(Family::Llama, 5).unwrap();
    let (prompt, caches) = setup(&model, 4, &[40, 40], 5);
    for ev in [
        Eviction::SnapKv {
            capacity: 32,
            pooling: 5,
        },
        Eviction::Streaming { capacity: 32 },
    ] {
        let params = FusionParams {
            eviction: Some(ev),
            ..Default::default()
        };
        let mut out = fused_prefill(&model, &prompt, None, &caches, &params, false).unwrap();
        for l in &out.cache.layers {
            assert_eq!(l.k().unwrap().dims(), &[2, 32, 8]);
            assert_eq!(l.v().unwrap().dims(), &[2, 32, 8]);
        }
        let g = generate(
            &model,
            &mut out.cache,
            &out.logits,
            Default::default(),
            &[],
            4,
            |_| true,
        )
        .unwrap();
        assert_eq!(g.ids.len(), 4);
        assert_eq!(out.cache.len(), 32 + 3);
    }
}

#[test]
fn an_auto_budget_recomputes_the_k_its_rule_gives_and_equals_that_fixed_budget() {
    let model = tiny_model(Family::Llama, 7).unwrap();
    let (prompt, caches) = setup(&model, 5, &[30, 25], 6);
    let (t, q) = (prompt.len(), prompt.question_len());
    for (method, hybrid) in [
        (Method::A3, None),
        (Method::A3, Some(0.5)),
        (Method::CacheBlend, None),
    ] {
        for mass in [0.3, 0.9, 1.0] {
            let auto = AutoBudget {
                mass,
                min_ratio: 0.05,
                max_ratio: 0.6,
            };
            let params = FusionParams {
                method,
                hybrid_weight: hybrid,
                budget: Budget::Auto(auto),
                ..Default::default()
            };
            let out = fused_prefill(&model, &prompt, None, &caches, &params, true).unwrap();
            let k = out.report.recomputed_tokens;
            let chosen = out.report.recompute_ratio_chosen.expect("a chosen ratio");
            assert!((chosen - k as f64 / (t - q) as f64).abs() < 1e-12);
            assert!((0.05..=0.6).contains(&chosen), "{method} {mass}: {chosen}");
            // The same k as a fixed budget selects the same rows and gives the same logits.
            let fixed = FusionParams {
                budget: Budget::Tokens(k),
                ..params.clone()
            };
            let f = fused_prefill(&model, &prompt, None, &caches, &fixed, true).unwrap();
            assert_eq!(f.report.selected_positions, out.report.selected_positions);
            assert!(max_abs_diff(&f.logits, &out.logits) < 1e-6);
            assert!(f.report.recompute_ratio_chosen.is_none());
        }
    }
    // A larger mass never recomputes fewer rows.
    let k = |mass| {
        let params = FusionParams {
            budget: Budget::Auto(AutoBudget {
                mass,
                min_ratio: 0.0,
                max_ratio: 1.0,
            }),
            ..Default::default()
        };
        fused_prefill(&model, &prompt, None, &caches, &params, false)
            .unwrap()
            .report
            .recomputed_tokens
    };
    let ks: Vec<usize> = [0.1, 0.5, 0.9, 0.99, 1.0].into_iter().map(k).collect();
    assert!(ks.windows(2).all(|w| w[0] <= w[1]), "{ks:?}");
    // Methods that do not score report no chosen ratio.
    let reuse = FusionParams {
        budget: Budget::Auto(AutoBudget::default()),
        ..FusionParams::method(Method::Reuse)
    };
    let out = fused_prefill(&model, &prompt, None, &caches, &reuse, false).unwrap();
    assert!(out.report.recompute_ratio_chosen.is_none());
}
