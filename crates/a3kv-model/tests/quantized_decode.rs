//! The quantised decode path against its f32 twin on the real model and real prompts:
//! 20 HotpotQA questions with two of their paragraphs, prefilled once in f32; then the
//! first token's logits (a decode step of the prompt's last token) and a 32-token greedy
//! continuation on each path. Targets (issue 14): first-token KL(f32 ‖ quantised) < 1e-3,
//! continuations identical on at least 18 of 20 prompts.

mod common;

use a3kv_model::{
    argmax, load_model, DecodeWeights, KvCache, LoadOptions, Model, Tensor, DEFAULT_RAG_INSTRUCTION,
};
use common::*;

fn kl(p_logits: &[f32], q_logits: &[f32]) -> f64 {
    let log_softmax = |l: &[f32]| -> Vec<f64> {
        let max = l.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x)) as f64;
        let lse = l.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln() + max;
        l.iter().map(|&x| x as f64 - lse).collect()
    };
    let (lp, lq) = (log_softmax(p_logits), log_softmax(q_logits));
    lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum()
}

fn vec(t: Tensor) -> Vec<f32> {
    t.to_vec1().unwrap()
}

/// Feeds `last` on `model` over `cache`, then 31 greedy tokens: the first logits and the
/// 32 greedy ids.
fn continue_greedy(model: &Model, mut cache: KvCache, last: u32) -> (Vec<f32>, Vec<u32>) {
    let first = vec(model.decode_step(last, &mut cache).unwrap());
    let mut ids = vec![argmax(&first).unwrap()];
    while ids.len() < 32 {
        let l = vec(model.decode_step(*ids.last().unwrap(), &mut cache).unwrap());
        ids.push(argmax(&l).unwrap());
    }
    (first, ids)
}

#[test]
fn quantized_decode_matches_the_f32_twin_on_20_hotpotqa_prompts() {
    let Some(path) = real_model_path() else {
        return;
    };
    let data = path.parent().unwrap().join("../data/hotpotqa.json");
    if !data.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must fetch the data (scripts/fetch-data.sh)"
        );
        eprintln!("SKIP: data absent; run scripts/fetch-data.sh");
        return;
    }
    let lm = load_model(&path, &LoadOptions::default()).unwrap();
    let quant = &lm.model;
    assert_eq!(quant.decode_weights(), DecodeWeights::Quantized);
    let f32_twin = quant.with_decode_weights(DecodeWeights::F32).unwrap();
    assert_ne!(quant.fingerprint(), f32_twin.fingerprint());
    let tok = &lm.tokenizer;
    let items: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(data).unwrap()).unwrap();
    let (mut same, mut kls) = (0, Vec::new());
    for item in items.iter().take(20) {
        let paragraphs: String = item["context"]
            .as_array()
            .unwrap()
            .iter()
            .take(2)
            .map(|c| {
                let text: String = c[1]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap())
                    .collect();
                format!("{}: {}\n", c[0].as_str().unwrap(), text.trim())
            })
            .collect();
        let prompt = format!(
            "{}{}{}",
            tok.template().rag_prefix(None, DEFAULT_RAG_INSTRUCTION),
            paragraphs,
            tok.template()
                .rag_suffix(item["question"].as_str().unwrap())
        );
        let ids = tok.encode(&prompt).unwrap();
        let (head, last) = ids.split_at(ids.len() - 1);
        // The prompt (bar its last token) in f32 on both sides: far more rows than the
        // quantised path takes.
        let cache = f32_twin.prefill(head, 0, false).unwrap().cache;
        let (lq, gq) = continue_greedy(quant, cache.clone(), last[0]);
        let (lf, gf) = continue_greedy(&f32_twin, cache, last[0]);
        let k = kl(&lf, &lq);
        eprintln!(
            "{} tokens: KL {k:.2e}, continuation {}",
            ids.len(),
            if gq == gf { "same" } else { "differs" }
        );
        kls.push(k);
        same += usize::from(gq == gf);
    }
    let max = kls.iter().copied().fold(0f64, f64::max);
    let mean = kls.iter().sum::<f64>() / kls.len() as f64;
    eprintln!("first-token KL mean {mean:.2e} max {max:.2e}; {same}/20 continuations identical");
    assert!(max < 1e-3, "first-token KL up to {max}");
    assert!(same >= 18, "only {same}/20 greedy continuations identical");
}
