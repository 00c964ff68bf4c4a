//! Selection methods behind one seam: a [`Selector`] decides which document rows a fused
//! prefill recomputes, either from the prompt alone (`reuse`, `epic`) or from scores at its
//! check layer (`a3`, `cacheblend`). `full` is the method that recomputes everything.
//!
//! Adding a method is one new file here with a `Selector` and one line in [`REGISTRY`]; the
//! HTTP API, the configuration and the CLI find it by name (see [`Method`]).
//!
//! Beside the paper's methods: selections that mix A^3's question attention with
//! CacheBlend's deviation in other ways (issue #16, README "Quality"): `floor` (a per-chunk
//! minimum share), `product` (relevance × deviation), `window` (whole windows of rows) and
//! `progressive` (a larger candidate set narrowed at a deeper layer, [`Selector::stage`]);
//! the K-deviation family (`kvdev`, `kdev`, …); and `layerattn…` and `headattn…`, which
//! measure the question's relevance at every layer of a question-only pass over the reused
//! cache ([`Selector::question_pass_relevance`]); `headattn_union` merges that relevance's
//! top rows with the top of its mix with the V deviation.

mod a3;
mod cacheblend;
mod epic;
mod floor;
mod full;
pub mod hybrid;
mod kvdev;
mod layerattn;
mod product;
mod progressive;
mod rank;
mod reuse;
mod union;
mod window;

use a3kv_model::Tensor;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::prompt::RagPrompt;
use crate::selection::{select_with_sinks, FusionParams};
use crate::{FusionError, Result};

pub use cacheblend::v_deviation;
pub use layerattn::{question_pass, PassRelevance, QuestionPass};

/// What a scoring method sees at its check layer `c` (all rows computed exactly up to `c`).
#[derive(Debug)]
pub struct ScoreInput<'a> {
    /// The prompt being fused.
    pub prompt: &'a RagPrompt,
    /// RoPE'd queries of the question rows at layer `c`: `[H, Q, d]`.
    pub q_question: &'a Tensor,
    /// RoPE'd fresh keys of every row at layer `c`: `[H_kv, T, d]`.
    pub k_fresh: &'a Tensor,
    /// Fresh values of every row at layer `c`: `[H_kv, T, d]`.
    pub v_fresh: &'a Tensor,
    /// Cached values of every row at layer `c` (`[H_kv, T, d]`), present when the selector
    /// asked for them ([`Selector::needs_cached_v`]) and the prompt has document rows.
    pub v_cached: Option<&'a Tensor>,
    /// Cached keys of every row at layer `c`, re-positioned (RoPE at their positions in
    /// this prompt; `[H_kv, T, d]`), present when the selector asked for them
    /// ([`Selector::needs_cached_k`]) along with the cached V.
    pub k_cached: Option<&'a Tensor>,
    /// The question's attention over the document rows averaged over every layer of a
    /// question-only pass over the reused cache ([`question_pass`]), present when the
    /// selector asked for it ([`Selector::question_pass_relevance`]).
    pub question_profile: Option<&'a [f32]>,
}

/// What a second scoring stage ([`Selector::stage`]) sees at its layer `l` (after the check
/// layer): the candidates have been recomputed through layer `l − 1` and their layer-`l`
/// q/k/v computed.
#[derive(Debug)]
pub struct StageInput<'a> {
    /// The prompt being fused.
    pub prompt: &'a RagPrompt,
    /// Rows computed so far (global, ascending): the candidate document rows, then the
    /// question rows.
    pub rows: &'a [u32],
    /// RoPE'd queries of `rows` at layer `l`: `[H, |rows|, d]`.
    pub q_rows: &'a Tensor,
    /// RoPE'd keys of layer `l` over every row, fresh at `rows`, cached elsewhere:
    /// `[H_kv, T, d]`.
    pub k_fused: &'a Tensor,
    /// Fresh values of `rows` at layer `l`: `[H_kv, |rows|, d]`.
    pub v_rows: &'a Tensor,
    /// Cached values of `rows` at layer `l` (zeros for question rows): `[H_kv, |rows|, d]`.
    pub v_cached_rows: &'a Tensor,
}

/// A second scoring stage (progressive filtering): the check layer selects a larger
/// candidate set, every candidate is recomputed up to layer `check + layers_after_check`,
/// where [`Selector::stage_scores`] narrows them to the budget `k`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    /// The stage's layer, counted from the check layer (`>= 1`).
    pub layers_after_check: usize,
    /// Candidates selected at the check layer, as a multiple of `k` (`>= 1`).
    pub candidate_factor: f64,
}

/// A selection method.
pub trait Selector: Sync {
    /// Its name in requests, configuration files and reports.
    fn name(&self) -> &'static str;

    /// Whether this is full prefill (every row recomputed, no cache read).
    fn is_full_prefill(&self) -> bool {
        false
    }

    /// Whether rows are chosen from scores at a check layer `>= 1` ([`Selector::scores_and_mass`]);
    /// otherwise they are chosen from the prompt alone before layer 0
    /// ([`Selector::select_static`]).
    fn scores_at_check_layer(&self) -> bool;

    /// The check layer when the request does not set one.
    fn default_check_layer(&self) -> usize {
        usize::from(self.scores_at_check_layer())
    }

    /// Whether [`Selector::scores_and_mass`] reads the cached V of the check layer.
    fn needs_cached_v(&self, _params: &FusionParams) -> bool {
        false
    }

    /// Whether [`Selector::scores_and_mass`] also reads the cached K of the check layer (only asked
    /// when [`Selector::needs_cached_v`] is true).
    fn needs_cached_k(&self, _params: &FusionParams) -> bool {
        false
    }

    /// Whether the selector mixes a question relevance with a staleness and takes
    /// `hybrid_weight` as the relevance's share (`a3` with a weight, the `_vdev`/`_kdev`
    /// deep-relevance mixes); the others refuse the option.
    fn takes_hybrid_weight(&self) -> bool {
        false
    }

    /// Which attention the question pass measures, when [`Selector::scores_and_mass`] reads
    /// its layer-averaged relevance ([`ScoreInput::question_profile`]); `None`: no pass. With
    /// a pass the fused prefill reads every cached layer before it selects.
    fn question_pass_relevance(&self, _params: &FusionParams) -> Option<PassRelevance> {
        None
    }

    /// Document-relative rows to recompute (ascending) for a method that does not score;
    /// `k` is the budget of [`crate::budget_k`].
    fn select_static(&self, _prompt: &RagPrompt, _params: &FusionParams, _k: usize) -> Vec<usize> {
        Vec::new()
    }

    /// For a scoring method: one score per document row (higher = recompute first; the
    /// fused prefill takes the sink tokens, then the top of these scores, up to `k`) and,
    /// when it differs from them, the distribution whose mass an adaptive budget covers
    /// ([`crate::auto_k`]); `None` = the scores themselves. `a3` with a hybrid weight ranks
    /// by the hybrid but sizes the budget by the question's attention mass alone.
    fn scores_and_mass(
        &self,
        _input: &ScoreInput<'_>,
        _params: &FusionParams,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        Err(FusionError::InvalidParameter(format!(
            "{} does not score rows",
            self.name()
        )))
    }

    /// The document rows to recompute (document-relative, ascending), at most `k`, from
    /// [`Selector::scores_and_mass`]; `sinks` (ascending) are the chunk-start rows the request asked
    /// for. By default the sinks, then the top of the scores ([`select_with_sinks`]).
    fn select(&self, _prompt: &RagPrompt, scores: &[f32], k: usize, sinks: &[usize]) -> Vec<usize> {
        select_with_sinks(scores, k, sinks)
    }

    /// A second scoring stage, if the method has one (see [`Stage`]).
    fn stage(&self, _params: &FusionParams) -> Option<Stage> {
        None
    }

    /// One score per candidate document row (the document rows of `input.rows`, in order)
    /// at the stage's layer; the fused prefill keeps the sinks, then the top of these scores,
    /// up to `k`.
    fn stage_scores(&self, _input: &StageInput<'_>, _params: &FusionParams) -> Result<Vec<f32>> {
        Err(FusionError::InvalidParameter(format!(
            "{} has no second stage",
            self.name()
        )))
    }
}

/// Every selection method, `full` first. One line per method.
pub static REGISTRY: &[&dyn Selector] = &[
    &full::Full,
    &reuse::Reuse,
    &cacheblend::CacheBlend,
    &epic::Epic,
    &a3::A3,
    &floor::FLOOR,
    &product::PRODUCT,
    &window::WINDOW,
    &progressive::PROGRESSIVE,
    &rank::RANK,
    &kvdev::KVDEV,
    &kvdev::KDEV,
    &kvdev::HKDEV,
    &kvdev::HKVDEV,
    &layerattn::LAYERATTN,
    &layerattn::LAYERATTN_VDEV,
    &layerattn::LAYERATTN_KDEV,
    &layerattn::HEADATTN,
    &layerattn::HEADATTN_VDEV,
    &layerattn::HEADATTN_KDEV,
    &union::HEADATTN_UNION,
    &rank::HEADATTN_RANK,
];

/// A registered selection method, named as in [`REGISTRY`]. Serialised as its name.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method(&'static str);

// The built-in methods keep the spelling they had as enum variants, so call sites read
// `Method::CacheBlend` whether a method is built in or not.
#[allow(non_upper_case_globals)]
impl Method {
    /// Full prefill.
    pub const Full: Method = Method("full");
    /// Reuse every cached row; recompute the question only.
    pub const Reuse: Method = Method("reuse");
    /// CacheBlend: top-k by V deviation at the check layer.
    pub const CacheBlend: Method = Method("cacheblend");
    /// EPIC: the first `m` tokens of every chunk.
    pub const Epic: Method = Method("epic");
    /// A^3: top-k by question attention at the check layer.
    pub const A3: Method = Method("a3");

    /// Every registered method, `full` first.
    pub fn all() -> impl Iterator<Item = Method> {
        REGISTRY.iter().map(|s| Method(s.name()))
    }

    /// The registered names, comma-separated (for error messages and help texts).
    pub fn names() -> String {
        REGISTRY
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Stable name (`full`, `reuse`, `cacheblend`, `epic`, `a3`, ...).
    pub fn as_str(&self) -> &'static str {
        self.0
    }

    /// The method's selector.
    pub fn selector(&self) -> &'static dyn Selector {
        // Every `Method` comes from the registry (constructor and constants), so the lookup
        // cannot miss; full prefill is the safe answer if it ever did.
        REGISTRY
            .iter()
            .copied()
            .find(|s| s.name() == self.0)
            .unwrap_or(&full::Full)
    }

    /// The check layer of the method when the request sets none.
    pub fn default_check_layer(&self) -> usize {
        self.selector().default_check_layer()
    }
}

impl std::fmt::Debug for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::str::FromStr for Method {
    type Err = FusionError;
    fn from_str(s: &str) -> Result<Self> {
        REGISTRY
            .iter()
            .find(|m| m.name() == s)
            .map(|m| Method(m.name()))
            .ok_or_else(|| {
                FusionError::InvalidParameter(format!(
                    "unknown fusion method {s:?} (allowed: {})",
                    Method::names()
                ))
            })
    }
}

impl Serialize for Method {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks every scoring selector must pass on tiny random-weight models.
#[cfg(test)]
pub(crate) mod checks {
    use a3kv_model::testing::{max_abs_diff, tiny_model};
    use a3kv_model::Family;

    use super::Method;
    use crate::selection::{budget_k, chunk_starts, Budget, FusionParams};
    use crate::{fused_prefill, precompute_chunk, RagPrompt};

    /// `name` at `r = 1` equals a full prefill (logits and every layer's K/V, Llama and
    /// Qwen2 shapes); at `r = 0.3` (with and without a sink token per chunk) it recomputes
    /// exactly the budget's rows, all document rows, sinks included, and reports its name.
    pub fn scoring_selector_is_exact_at_full_budget_and_keeps_the_budget(name: &str) {
        let method: Method = name.parse().unwrap();
        for family in [Family::Llama, Family::Qwen2] {
            let model = tiny_model(family, 7).unwrap();
            let ids = |n: u32, seed: u32| -> Vec<u32> {
                (0..n).map(|i| (i * 7 + seed * 13 + 3) % 64).collect()
            };
            let chunks = vec![ids(17, 1), ids(9, 2), ids(30, 3), ids(12, 4)];
            let prompt = RagPrompt::from_ids(&ids(5, 0), &chunks, &ids(6, 99)).unwrap();
            let caches: Vec<_> = chunks
                .iter()
                .map(|c| precompute_chunk(&model, c, None).unwrap())
                .collect();
            let run =
                |p: &FusionParams| fused_prefill(&model, &prompt, None, &caches, p, true).unwrap();
            let full = run(&FusionParams::method(Method::Full));
            let all = run(&FusionParams {
                method,
                budget: Budget::Ratio(1.0),
                ..Default::default()
            });
            assert!(max_abs_diff(&all.logits, &full.logits) < 1e-4, "{name}");
            for (a, b) in all.cache.layers.iter().zip(&full.cache.layers) {
                assert!(
                    max_abs_diff(&a.k().unwrap(), &b.k().unwrap()) < 1e-4,
                    "{name}"
                );
                assert!(
                    max_abs_diff(&a.v().unwrap(), &b.v().unwrap()) < 1e-4,
                    "{name}"
                );
            }
            assert_eq!(all.report.recomputed_tokens, 68, "{name}");
            for sink in [0, 1] {
                let params = FusionParams {
                    method,
                    budget: Budget::Ratio(0.3),
                    sink_tokens: sink,
                    ..Default::default()
                };
                let out = run(&params);
                let k = budget_k(params.budget, &prompt);
                assert_eq!(out.report.method, name);
                assert_eq!(out.report.recomputed_tokens, k, "{name}");
                let sel = out.report.selected_positions.unwrap();
                let docs = prompt.doc_range();
                assert!(sel.iter().all(|&r| docs.contains(&(r as usize))), "{name}");
                for s in chunk_starts(&prompt, sink) {
                    assert!(sel.contains(&((docs.start + s) as u32)), "{name}: sink {s}");
                }
                assert!(out.report.flop_floor > 0.0 && out.report.flop_floor < 1.0);
                assert!(out
                    .logits
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .all(|x| x.is_finite()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let names: Vec<&str> = Method::all().map(|m| m.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "{names:?}");
        for m in Method::all() {
            assert_eq!(m.as_str().parse::<Method>().unwrap(), m);
            assert_eq!(m.selector().name(), m.as_str());
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<Method>(&json).unwrap(), m);
        }
        let e = "bogus".parse::<Method>().unwrap_err().to_string();
        assert!(e.contains("a3") && e.contains("cacheblend"), "{e}");
        assert!(serde_json::from_str::<Method>("\"bogus\"").is_err());
    }

    #[test]
    fn constants_are_registered() {
        for m in [
            Method::Full,
            Method::Reuse,
            Method::CacheBlend,
            Method::Epic,
            Method::A3,
        ] {
            assert!(Method::all().any(|r| r == m), "{m}");
        }
        assert!(Method::Full.selector().is_full_prefill());
        assert_eq!(Method::A3.default_check_layer(), 1);
        assert_eq!(Method::CacheBlend.default_check_layer(), 1);
        assert_eq!(Method::Epic.default_check_layer(), 0);
        assert_eq!(Method::Reuse.default_check_layer(), 0);
    }
}
