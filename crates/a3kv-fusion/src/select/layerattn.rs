//! `layerattn`, `layerattn_vdev`, `layerattn_kdev`, `headattn`, `headattn_vdev` and
//! `headattn_kdev`: the
//! question's relevance measured at every layer instead of the check layer alone (ProphetKV's
//! "layer-wise attention", issue #16). Before the check layer scores, the question rows run
//! alone through every layer over the reused cache (what `reuse` computes: the cached rows
//! re-positioned, the question recomputed), and at each layer the question's attention over
//! the document rows is measured; the per-layer distributions (each scaled to sum 1) are
//! averaged. At layer 1 of a small model the question's attention is a weak signal (README
//! "Quality"); deeper layers attend to what the answer needs. The pass costs the question's
//! rows through every layer (a few percent of a prefill) and reads every cached layer before
//! the selection, so the loader's transfer cannot overlap the check layer for these methods.
//!
//! `layerattn…` measure the attention as A^3 does at its check layer ([`PassRelevance::Summed`]:
//! the query heads of a KV head summed, one softmax over the concatenated heads);
//! `headattn…` take each query head's own attention, as the layer computes it
//! ([`PassRelevance::PerHead`]), summed over the heads: a head that reads a row sharply
//! counts fully even where the summed query blurs it. `layerattn` and `headattn` rank by the
//! average alone;
//! `_vdev` mixes it equally with CacheBlend's V deviation (the hybrid with deep relevance),
//! `_kdev` with the K deviation (`kdev` with deep relevance); `hybrid_weight` sets the
//! relevance's share of the mix instead of one half.

use a3kv_model::kernels::cpu::softmax_mass::add_leading_softmax;
use a3kv_model::{Model, Tensor};

use super::cacheblend::v_deviation;
use super::hybrid::{hybrid_scores, EQUAL_MIX};
use super::kvdev::row_deviation;
use super::{ScoreInput, Selector};
use crate::a3::{a3_scores, moving_average, ScoreShape};
use crate::fuse::{write_rows, CachedLayers};
use crate::prompt::RagPrompt;
use crate::selection::{normalise, FusionParams};
use crate::{FusionError, Result};

/// Which staleness the deep relevance is mixed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Staleness {
    /// None: relevance alone.
    None,
    /// CacheBlend's V deviation at the check layer.
    Value,
    /// The K deviation at the check layer (as `kdev`).
    Key,
}

/// Which attention the question pass measures at each layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassRelevance {
    /// A^3's score (docs/design.md §2.5): each KV head's query heads summed, one softmax over
    /// the concatenated heads at scale `1/sqrt(H·d)`.
    Summed,
    /// Each query head's own softmax at scale `1/sqrt(d)` (what the layer attends with),
    /// summed over the heads and the question rows.
    PerHead,
}

/// Deep relevance, alone or mixed with a staleness.
pub struct LayerAttn {
    name: &'static str,
    staleness: Staleness,
    relevance: PassRelevance,
}

/// `layerattn`: the layer-averaged question attention alone.
pub static LAYERATTN: LayerAttn = LayerAttn {
    name: "layerattn",
    staleness: Staleness::None,
    relevance: PassRelevance::Summed,
};

/// `layerattn_vdev`: equal mix with the V deviation.
pub static LAYERATTN_VDEV: LayerAttn = LayerAttn {
    name: "layerattn_vdev",
    staleness: Staleness::Value,
    relevance: PassRelevance::Summed,
};

/// `layerattn_kdev`: equal mix with the K deviation.
pub static LAYERATTN_KDEV: LayerAttn = LayerAttn {
    name: "layerattn_kdev",
    staleness: Staleness::Key,
    relevance: PassRelevance::Summed,
};

/// `headattn`: `layerattn` with each head's own attention.
pub static HEADATTN: LayerAttn = LayerAttn {
    name: "headattn",
    staleness: Staleness::None,
    relevance: PassRelevance::PerHead,
};

/// `headattn_vdev`: `layerattn_vdev` with each head's own attention.
pub static HEADATTN_VDEV: LayerAttn = LayerAttn {
    name: "headattn_vdev",
    staleness: Staleness::Value,
    relevance: PassRelevance::PerHead,
};

/// `headattn_kdev`: `layerattn_kdev` with each head's own attention.
pub static HEADATTN_KDEV: LayerAttn = LayerAttn {
    name: "headattn_kdev",
    staleness: Staleness::Key,
    relevance: PassRelevance::PerHead,
};

impl Selector for LayerAttn {
    fn name(&self) -> &'static str {
        self.name
    }

    fn scores_at_check_layer(&self) -> bool {
        true
    }

    fn takes_hybrid_weight(&self) -> bool {
        self.staleness != Staleness::None
    }

    fn needs_cached_v(&self, _params: &FusionParams) -> bool {
        self.staleness != Staleness::None
    }

    fn needs_cached_k(&self, _params: &FusionParams) -> bool {
        self.staleness == Staleness::Key
    }

    fn question_pass_relevance(&self, _params: &FusionParams) -> Option<PassRelevance> {
        Some(self.relevance)
    }

    fn scores_and_mass(
        &self,
        input: &ScoreInput<'_>,
        params: &FusionParams,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let relevance = input
            .question_profile
            .ok_or_else(|| {
                FusionError::InvalidParameter(format!(
                    "{} ran without its question pass",
                    self.name
                ))
            })?
            .to_vec();
        let staleness = match (self.staleness, input.v_cached, input.k_cached) {
            (Staleness::Value, Some(v_cached), _) => {
                v_deviation(input.v_fresh, v_cached, input.prompt)?
            }
            (Staleness::Key, _, Some(k_cached)) => {
                row_deviation(input.k_fresh, k_cached, input.prompt.doc_range())?
            }
            _ => return Ok((relevance.clone(), Some(relevance))),
        };
        Ok((
            hybrid_scores(
                &relevance,
                &staleness,
                params.hybrid_weight.unwrap_or(EQUAL_MIX),
            ),
            Some(relevance),
        ))
    }
}

/// What [`question_pass`] found: the relevance, and the layers it re-positioned.
#[derive(Debug)]
pub struct QuestionPass {
    /// Per document row, the mean over layers of the question's attention at that layer
    /// (A^3's score, smoothed, each layer's scaled to sum 1).
    pub relevance: Vec<f32>,
    /// Per layer, the cached keys re-positioned (RoPE at `positions`) and the cached values,
    /// `[H_kv, T, d]` each, owned, with the question rows holding this pass's K/V; `None`
    /// for layers up to `keep_after` and when the cache is not in the compute type. The
    /// selective layers write their fresh rows (the question's among them) over these
    /// instead of assembling and re-positioning the layer a second time.
    pub layers: Vec<Option<(Tensor, Tensor)>>,
}

/// The question rows alone through every layer over the reused cache (`cached`, re-positioned
/// to `positions`), measuring the question's attention over the document rows at each layer
/// as `relevance` says (see [`QuestionPass`]). The layers after `keep_after` are handed back for the selective
/// layers. Empty when the prompt has no document rows.
pub fn question_pass(
    model: &Model,
    prompt: &RagPrompt,
    positions: &[u32],
    cached: &dyn CachedLayers,
    pooling_width: usize,
    keep_after: usize,
    relevance: PassRelevance,
) -> Result<QuestionPass> {
    let n_doc = prompt.doc_range().len();
    let mut layers_out: Vec<Option<(Tensor, Tensor)>> = vec![None; model.num_layers()];
    if n_doc == 0 {
        return Ok(QuestionPass {
            relevance: Vec::new(),
            layers: layers_out,
        });
    }
    let t = prompt.len();
    let qn = prompt.question_len();
    let q_rows: Vec<u32> = positions[t - qn..].to_vec();
    let q_idx: Vec<u32> = ((t - qn) as u32..t as u32).collect();
    let mut h = model.embed(&prompt.ids[t - qn..])?;
    let mut mean = vec![0f32; n_doc];
    let layers = model.num_layers();
    for (l, kept) in layers_out.iter_mut().enumerate() {
        let (k_pre, v) = cached.layer(l)?;
        let dtype = model.dtype();
        // Kept for the selective layers only when they would have built the same tensors.
        let same_type = k_pre.dtype() == dtype && v.dtype() == dtype;
        // Owned, in the compute type: the question's fresh rows are written over them.
        let k_all = model.rope().apply(&k_pre.to_dtype(dtype)?, positions)?;
        let v = v.to_dtype(dtype)?.contiguous()?;
        let qkv = model.layer_qkv(l, &h)?;
        let q = model.rope().apply(&qkv.q, &q_rows)?;
        let k = model.rope().apply(&qkv.k, &q_rows)?;
        write_rows(&k_all, &q_idx, &k)?;
        write_rows(&v, &q_idx, &qkv.v)?;
        let scores = normalise(&match relevance {
            PassRelevance::Summed => a3_scores(&q, &k_all, prompt.prefix_len(), pooling_width)?,
            PassRelevance::PerHead => {
                per_head_scores(&q, &k_all, prompt.prefix_len(), pooling_width)?
            }
        });
        for (m, s) in mean.iter_mut().zip(&scores) {
            *m += s / layers as f32;
        }
        if l + 1 < layers {
            let a = model.layer_attention(l, &q, &q_rows, &k_all, &v, positions)?;
            h = model.layer_mlp(l, &h, &a)?;
        }
        if l > keep_after && same_type {
            *kept = Some((k_all, v));
        }
    }
    Ok(QuestionPass {
        relevance: mean,
        layers: layers_out,
    })
}

/// Per-head question attention over the document rows, smoothed: for every query head `h`
/// (paired with KV head `⌊h/g⌋`) and question row `i`, the softmax of `q·k/sqrt(d)` over
/// the document keys and the question keys `0..=i` (the prefix excluded, as in A^3's score),
/// summed over heads and rows, then the `w`-wide moving average of [`a3_scores`].
///
/// `q_question`: `[H, Q, d]`, `k_all`: `[H_kv, T, d]`, both RoPE'd.
pub fn per_head_scores(
    q_question: &Tensor,
    k_all: &Tensor,
    prefix_len: usize,
    pooling_width: usize,
) -> Result<Vec<f32>> {
    let shape = ScoreShape::of(q_question, k_all, prefix_len)?;
    let (nq, d, hkv, n_doc) = (
        shape.question,
        shape.head_dim,
        shape.kv_heads,
        shape.doc_rows,
    );
    let (g, t) = (shape.heads / hkv, shape.rows);
    let f32_ = a3kv_model::DType::F32;
    // Query heads of one KV head stacked as rows: one matmul per KV head.
    let q = q_question.to_dtype(f32_)?.reshape((hkv, g * nq, d))?;
    let k = k_all
        .to_dtype(f32_)?
        .narrow(1, prefix_len, t - prefix_len)?
        .transpose(1, 2)?
        .contiguous()?;
    // `[H_kv, g·Q, T − P]` in one buffer: one row of keys per query head and question row.
    let logits = (q.matmul(&k)? * (1.0 / (d as f64).sqrt()))?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut s = vec![0f32; n_doc];
    let mut scratch = Vec::new();
    for (r, row) in logits.chunks_exact(t - prefix_len).enumerate() {
        // Row r is question row r % Q (of query head r / Q, within its KV head's block).
        add_leading_softmax(&mut s, &row[..n_doc + r % nq + 1], &mut scratch);
    }
    Ok(moving_average(&s, pooling_width))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fused_prefill, precompute_chunk, FusionParams, Method};
    use a3kv_model::testing::tiny_model;
    use a3kv_model::Family;

    /// `per_head_scores` against its slow twin: every head's softmax written out in f64.
    #[test]
    fn per_head_scores_match_a_loop_over_heads_rows_and_keys() {
        let dev = a3kv_model::Device::Cpu;
        let (h, hkv, d, t, prefix, nq) = (6usize, 2usize, 8usize, 23usize, 3usize, 4usize);
        let q = (Tensor::randn(0f32, 1.0, (h, nq, d), &dev).unwrap() * 2.0).unwrap();
        let k = Tensor::randn(0f32, 1.0, (hkv, t, d), &dev).unwrap();
        let qv: Vec<Vec<Vec<f32>>> = q.to_vec3().unwrap();
        let kv: Vec<Vec<Vec<f32>>> = k.to_vec3().unwrap();
        let n_doc = t - prefix - nq;
        let mut want = vec![0f64; n_doc];
        for (head, rows) in qv.iter().enumerate() {
            let keys = &kv[head / (h / hkv)];
            for (i, qi) in rows.iter().enumerate() {
                let logits: Vec<f64> = (prefix..prefix + n_doc + i + 1)
                    .map(|j| {
                        let dot: f64 = qi.iter().zip(&keys[j]).map(|(a, b)| (a * b) as f64).sum();
                        dot / (d as f64).sqrt()
                    })
                    .collect();
                let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let denom: f64 = logits.iter().map(|x| (x - max).exp()).sum();
                for (j, w) in want.iter_mut().enumerate() {
                    *w += (logits[j] - max).exp() / denom;
                }
            }
        }
        let got = per_head_scores(&q, &k, prefix, 1).unwrap();
        assert_eq!(got.len(), n_doc);
        for (g, w) in got.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-5, "{g} vs {w}");
        }
        let want_f32: Vec<f32> = want.iter().map(|&x| x as f32).collect();
        let smoothed = per_head_scores(&q, &k, prefix, 5).unwrap();
        for (g, w) in smoothed.iter().zip(moving_average(&want_f32, 5)) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
    }

    /// The pass's relevance is a distribution over the document rows, and every variant
    /// runs through a fused prefill (one through the check layer, the rest selective).
    #[test]
    fn every_variant_fuses_and_the_relevance_sums_to_one() {
        let model = tiny_model(Family::Llama, 11).unwrap();
        let chunks: Vec<Vec<u32>> = vec![(1..20).collect(), (20..41).collect()];
        let prompt = RagPrompt::from_ids(&[3, 4, 5], &chunks, &[7, 8, 9, 10]).unwrap();
        let cached: Vec<_> = chunks
            .iter()
            .map(|c| precompute_chunk(&model, c, None).unwrap())
            .collect();
        let prefix = precompute_chunk(&model, &[3, 4, 5], None).unwrap();
        let cache = crate::fuse::PromptCache {
            prefix: Some(prefix.clone()),
            chunks: cached.clone(),
            question_len: 4,
        };
        let positions: Vec<u32> = (0..prompt.len() as u32).collect();
        let pass = question_pass(
            &model,
            &prompt,
            &positions,
            &cache,
            5,
            1,
            PassRelevance::Summed,
        )
        .unwrap();
        assert!(pass.layers[..=1].iter().all(Option::is_none));
        assert!(pass.layers[2..].iter().all(Option::is_some));
        let per_head = question_pass(
            &model,
            &prompt,
            &positions,
            &cache,
            5,
            1,
            PassRelevance::PerHead,
        )
        .unwrap()
        .relevance;
        for rel in [&pass.relevance, &per_head] {
            assert_eq!(rel.len(), prompt.doc_range().len());
            assert!(
                (rel.iter().sum::<f32>() - 1.0).abs() < 1e-4,
                "{}",
                rel.iter().sum::<f32>()
            );
        }
        assert_ne!(pass.relevance, per_head);
        let run = |name: &str| {
            let params = FusionParams {
                method: name.parse::<Method>().unwrap(),
                ..FusionParams::default()
            };
            fused_prefill(
                &model,
                &prompt,
                Some(prefix.clone()),
                &cached,
                &params,
                true,
            )
            .unwrap()
        };
        let kdev_floor = run("kdev").report.flop_floor;
        // The selective layers take the pass's re-positioned layers instead of building
        // them again: the same logits, bit for bit, as a run over the same rows that builds
        // every layer from the cache.
        let fused = run("layerattn_kdev");
        let p = prompt.prefix_len() as u32;
        let rows: Vec<usize> = fused
            .report
            .selected_positions
            .clone()
            .unwrap()
            .iter()
            .map(|&r| (r - p) as usize)
            .collect();
        let params = FusionParams {
            method: "kdev".parse::<Method>().unwrap(),
            ..FusionParams::default()
        };
        let mut again = crate::FusionRun::new(&model, prompt.clone(), params).unwrap();
        again.set_fixed_selection(rows);
        again.run_check(&model, &cache).unwrap();
        while again.next_layer() < model.num_layers() {
            let l = again.next_layer();
            again.run_layer(&model, l, &cache).unwrap();
        }
        let again = again.finish(&model, false).unwrap();
        let (a, b): (Vec<f32>, Vec<f32>) = (
            fused.logits.to_vec1().unwrap(),
            again.logits.to_vec1().unwrap(),
        );
        assert_eq!(a, b);
        for name in [
            "layerattn",
            "layerattn_vdev",
            "layerattn_kdev",
            "headattn",
            "headattn_vdev",
            "headattn_kdev",
        ] {
            let out = run(name);
            // The budget's document rows beside the question's four.
            assert!(out.report.recomputed_tokens > 4, "{name} selected nothing");
            // The same budget as kdev, plus the question pass.
            assert!(
                out.report.flop_floor > kdev_floor,
                "{name}: pass not costed"
            );
        }
    }

    /// Every variant is exact at r = 1 and keeps its budget, sinks included.
    #[test]
    fn every_variant_is_exact_at_full_budget() {
        for name in [
            "layerattn",
            "layerattn_vdev",
            "layerattn_kdev",
            "headattn",
            "headattn_vdev",
            "headattn_kdev",
        ] {
            crate::select::checks::scoring_selector_is_exact_at_full_budget_and_keeps_the_budget(
                name,
            );
        }
    }

    /// `hybrid_weight` is the relevance's share of a mix: 1 ranks by the relevance alone
    /// (the rows `headattn` picks), 0.5 is the default, and only the mixes take it.
    #[test]
    fn the_hybrid_weight_is_the_relevance_share() {
        let model = tiny_model(Family::Qwen2, 5).unwrap();
        let chunks: Vec<Vec<u32>> = vec![(1..30).collect(), (30..61).collect()];
        let prompt = RagPrompt::from_ids(&[3, 4, 5], &chunks, &[7, 8, 9, 10, 11]).unwrap();
        let cached: Vec<_> = chunks
            .iter()
            .map(|c| precompute_chunk(&model, c, None).unwrap())
            .collect();
        let rows = |name: &str, w: Option<f32>| {
            let params = FusionParams {
                method: name.parse::<Method>().unwrap(),
                hybrid_weight: w,
                budget: crate::Budget::Ratio(0.2),
                ..FusionParams::default()
            };
            let out = fused_prefill(&model, &prompt, None, &cached, &params, true).unwrap();
            assert_eq!(out.report.hybrid_weight, w, "{name}");
            out.report.selected_positions.unwrap()
        };
        for (mix, alone) in [
            ("headattn_kdev", "headattn"),
            ("layerattn_vdev", "layerattn"),
        ] {
            assert_eq!(rows(mix, Some(1.0)), rows(alone, None), "{mix}");
            assert_eq!(rows(mix, Some(0.5)), rows(mix, None), "{mix}");
        }
        let takes = |name: &str| {
            name.parse::<Method>()
                .unwrap()
                .selector()
                .takes_hybrid_weight()
        };
        assert!(takes("a3") && takes("headattn_vdev") && takes("layerattn_kdev"));
        assert!(!takes("headattn") && !takes("layerattn") && !takes("cacheblend"));
    }
}
