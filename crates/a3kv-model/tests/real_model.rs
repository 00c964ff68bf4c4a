//! Tests on the real default model (SmolLM2-135M-Instruct GGUF): tokenizer ids against the
//! A^3 reference run, logits and greedy continuations against candle-transformers'
//! `quantized_llama` on the same file, and the layer API against one-shot prefill.

mod common;

use a3kv_model::{
    argmax, load_model, DecodeWeights, LoadOptions, LoadedModel, Tensor, DEFAULT_RAG_INSTRUCTION,
};
use candle_core::Device;
use candle_transformers::models::quantized_llama::ModelWeights as CandleLlama;
use common::*;

fn load() -> Option<LoadedModel> {
    let p = real_model_path()?;
    Some(load_model(&p, &LoadOptions::default()).expect("load"))
}

fn candle_reference(path: &std::path::Path) -> CandleLlama {
    // Dequantised weights, as our model uses.
    std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
    let mut f = std::fs::File::open(path).unwrap();
    let ct = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    CandleLlama::from_gguf(ct, &mut f, &Device::Cpu).unwrap()
}

#[test]
fn tokenizer_matches_reference_prefix_ids() {
    let Some(m) = load() else { return };
    let prefix = m
        .tokenizer
        .template()
        .rag_prefix(None, DEFAULT_RAG_INSTRUCTION);
    let ids = m.tokenizer.encode(&prefix).unwrap();
    let want: Vec<u32> = "1 9690 198 2683 359 253 5356 5646 11173 3365 3511 308 34519 28 7018 411 407 19712 8182 2 198 1 4093 198 21350 260 1962 1552 335 260 1836 14471 30 6906 1928 549 260 2988 284 536 441 3124 750 550 1924 30 1116"
        .split(' ')
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(ids, want);
    assert_eq!(
        m.tokenizer.decode(&ids[22..26]).unwrap(),
        "user\nAnswer the"
    );
    assert!(m.tokenizer.stop_ids().contains(&2));
    // Digits are split one by one (smollm pre-tokenizer).
    assert_eq!(m.tokenizer.encode("2024").unwrap().len(), 4);
}

#[test]
fn logits_and_greedy_continuations_match_candle_transformers() {
    let Some(m) = load() else { return };
    let mut reference = candle_reference(&m.source);
    let prompts = [
        format!("{LONG_TEXT}\nQuestion: How tall is the tower?\nAnswer:"),
        format!("<|im_start|>user\nSummarise this text.\n\n{LONG_TEXT}<|im_end|>\n<|im_start|>assistant\n"),
        format!("{}\n{}", &LONG_TEXT[400..], &LONG_TEXT[..900]),
    ];
    for prompt in &prompts {
        let ids = m.tokenizer.encode(prompt).unwrap();
        assert!(ids.len() >= 300, "prompt has {} tokens", ids.len());
        let ours = m.model.prefill(&ids, 0, false).unwrap();
        let ours_logits: Vec<f32> = ours.logits.to_vec1().unwrap();
        reference.clear_kv_cache();
        let input = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let theirs: Vec<f32> = reference
            .forward(&input, 0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        let scale = theirs.iter().fold(0f32, |a, x| a.max(x.abs()));
        let rel = max_abs_diff(&ours_logits, &theirs) / scale;
        assert!(rel <= 1e-3, "max relative logit error {rel}");

        // Greedy 32-token continuations.
        let mut cache = ours.cache;
        let mut a = vec![argmax(&ours_logits).unwrap()];
        let mut b = vec![argmax(&theirs).unwrap()];
        for step in 0..31 {
            let la: Vec<f32> = m
                .model
                .decode_step(*a.last().unwrap(), &mut cache)
                .unwrap()
                .to_vec1()
                .unwrap();
            a.push(argmax(&la).unwrap());
            let inp = Tensor::new(&[*b.last().unwrap()], &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let lb: Vec<f32> = reference
                .forward(&inp, ids.len() + step)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec1()
                .unwrap();
            b.push(argmax(&lb).unwrap());
        }
        assert_eq!(a, b, "greedy continuations differ");
    }
}

#[test]
fn prefill_in_pieces_equals_one_shot_on_real_model() {
    let Some(m) = load() else { return };
    let model = &m.model;
    let ids = m.tokenizer.encode(LONG_TEXT).unwrap();
    let full = model.prefill(&ids, 0, true).unwrap();
    // Second half of the rows against the full K/V: embed them, run each layer with the
    // first half's cached K/V plus their own fresh rows.
    let split = ids.len() / 2;
    let first = model.prefill(&ids[..split], 0, false).unwrap();
    let pos: Vec<u32> = (split as u32..ids.len() as u32).collect();
    let all_pos: Vec<u32> = (0..ids.len() as u32).collect();
    let mut h = model.embed(&ids[split..]).unwrap();
    for l in 0..model.num_layers() {
        let qkv = model.layer_qkv(l, &h).unwrap();
        let q = model.rope().apply(&qkv.q, &pos).unwrap();
        let k = model.rope().apply(&qkv.k, &pos).unwrap();
        let lkv = &first.cache.layers[l];
        let kk = Tensor::cat(&[lkv.k().unwrap(), k], 1).unwrap();
        let vv = Tensor::cat(&[lkv.v().unwrap(), qkv.v], 1).unwrap();
        let a = model
            .layer_attention(l, &q, &pos, &kk, &vv, &all_pos)
            .unwrap();
        h = model.layer_mlp(l, &h, &a).unwrap();
    }
    let last = h.narrow(0, h.dims()[0] - 1, 1).unwrap();
    let pieces: Vec<f32> = model
        .logits(&last)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    let one: Vec<f32> = full.logits.to_vec1().unwrap();
    assert!(
        max_abs_diff(&pieces, &one) < 1e-3,
        "{}",
        max_abs_diff(&pieces, &one)
    );
    // Pre-RoPE keys rotated to their positions equal the cached post-RoPE keys.
    let pre = &full.pre_rope_keys.unwrap()[7];
    let rot: Vec<f32> = model
        .rope()
        .apply(pre, &all_pos)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let cached: Vec<f32> = full.cache.layers[7]
        .k()
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(max_abs_diff(&rot, &cached) < 1e-5);
}

#[test]
fn token_bytes_spell_the_encoded_text() {
    let Some(m) = load() else { return };
    // Accents, CJK and an emoji: byte-level BPE splits some characters across tokens.
    let text = "Café au lait, 日本語の文章 and 🦀 crabs.\n";
    let ids = m.tokenizer.encode(text).unwrap();
    let bytes: Vec<u8> = ids
        .iter()
        .flat_map(|&id| m.tokenizer.token_bytes(id).expect("id in vocabulary"))
        .collect();
    assert_eq!(bytes, text.as_bytes());
    assert!(
        ids.iter()
            .any(|&id| std::str::from_utf8(&m.tokenizer.token_bytes(id).unwrap()).is_err()),
        "expected a token holding part of a character"
    );
    // Special tokens spell their own text; ids past the vocabulary have none.
    let end = m.tokenizer.token_to_id("<|im_end|>").expect("im_end");
    assert_eq!(m.tokenizer.token_bytes(end).unwrap(), b"<|im_end|>");
    assert_eq!(m.tokenizer.token_bytes(u32::MAX), None);
}

/// The default load holds the tied vocabulary table only quantised (the dense f32 copy is
/// dropped, `ModelWeights::drop_dense_vocab`): lookups must give the dense rows bit for bit
/// and a prefill the same logits as a load that keeps the dense table.
#[test]
fn quantised_vocabulary_table_stands_in_for_the_dense_one() {
    let Some(path) = real_model_path() else {
        return;
    };
    let quant = load_model(&path, &LoadOptions::default()).expect("load");
    let dense = load_model(
        &path,
        &LoadOptions {
            decode_weights: DecodeWeights::F32,
            ..LoadOptions::default()
        },
    )
    .expect("load dense");
    let ids = quant.tokenizer.encode(LONG_TEXT).unwrap();
    let rows = |m: &LoadedModel| -> Vec<f32> {
        m.model
            .embed(&ids)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    assert_eq!(rows(&quant), rows(&dense), "embedding rows differ");
    let logits = |m: &LoadedModel| -> Vec<f32> {
        m.model
            .prefill(&ids, 0, false)
            .unwrap()
            .logits
            .to_vec1()
            .unwrap()
    };
    let (q, d) = (logits(&quant), logits(&dense));
    assert_eq!(argmax(&q).unwrap(), argmax(&d).unwrap());
    assert!(max_abs_diff(&q, &d) < 1e-3, "{}", max_abs_diff(&q, &d));
}
