//! Which rows to recompute: the methods' parameters, the budget `k`, and the selections
//! of the baselines (CacheBlend's V deviation, EPIC's chunk starts) and of the
//! composable options (attention-sink tokens, the A^3/CacheBlend hybrid score).
//! A^3's own score lives in [`crate::a3`].

use serde::{Deserialize, Serialize};

use crate::prompt::RagPrompt;
use crate::{FusionError, Result};

/// Fusion methods (docs/design.md §2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Full prefill, no cache.
    Full,
    /// Reuse every cached row; recompute the question only.
    Reuse,
    /// CacheBlend: top-k by V deviation at the check layer.
    CacheBlend,
    /// EPIC: first `m` tokens of every chunk.
    Epic,
    /// A^3: top-k by question attention at the check layer.
    A3,
}

impl Method {
    /// All methods, `full` first.
    pub const ALL: [Method; 5] = [
        Method::Full,
        Method::Reuse,
        Method::CacheBlend,
        Method::Epic,
        Method::A3,
    ];

    /// Stable name (`full`, `reuse`, `cacheblend`, `epic`, `a3`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Full => "full",
            Method::Reuse => "reuse",
            Method::CacheBlend => "cacheblend",
            Method::Epic => "epic",
            Method::A3 => "a3",
        }
    }

    /// The check layer of docs/design.md §2.6 (rows are chosen after it).
    pub fn default_check_layer(&self) -> usize {
        match self {
            Method::CacheBlend | Method::A3 => 1,
            _ => 0,
        }
    }
}

impl std::str::FromStr for Method {
    type Err = FusionError;
    fn from_str(s: &str) -> Result<Self> {
        Method::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                FusionError::InvalidParameter(format!(
                    "unknown fusion method {s:?} (full, reuse, cacheblend, epic, a3)"
                ))
            })
    }
}

/// How many document rows to recompute.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Budget {
    /// `k = min(max(floor(r·(T−Q)), 1), T−P−Q)`.
    Ratio(f64),
    /// `k = min(n, T−P−Q)`.
    Tokens(usize),
}

/// Eviction applied after the fused prefill (docs/design.md §2.7).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Eviction {
    /// SnapKV: question rows as the observation window, per-head scores pooled with
    /// `pooling`, keep the top `capacity − window` plus the window.
    SnapKv { capacity: usize, pooling: usize },
    /// Prefix + most recent rows.
    Streaming { capacity: usize },
}

/// Per-request fusion parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FusionParams {
    /// Method.
    pub method: Method,
    /// Recompute budget (default ratio 0.15).
    pub budget: Budget,
    /// Check layer; `None` = the method's default.
    pub check_layer: Option<usize>,
    /// Moving-average width of the A^3 score (default 5).
    pub pooling_width: usize,
    /// EPIC's `m` (default 16).
    pub epic_tokens: usize,
    /// Add the first `m` tokens of every chunk to the selection, out of the same budget.
    pub sink_tokens: usize,
    /// A^3 only: mix `w·a3 + (1−w)·cacheblend` of the normalised scores (`None` = pure A^3).
    pub hybrid_weight: Option<f32>,
    /// Optional eviction after prefill.
    pub eviction: Option<Eviction>,
}

impl Default for FusionParams {
    fn default() -> Self {
        Self {
            method: Method::A3,
            budget: Budget::Ratio(0.15),
            check_layer: None,
            pooling_width: 5,
            epic_tokens: 16,
            sink_tokens: 0,
            hybrid_weight: None,
            eviction: None,
        }
    }
}

impl FusionParams {
    /// Parameters for `method` with the defaults.
    pub fn method(method: Method) -> Self {
        Self {
            method,
            ..Self::default()
        }
    }

    /// Checks ranges against a model of `num_layers` layers.
    pub fn validate(&self, num_layers: usize) -> Result<()> {
        let bad = |m: String| Err(FusionError::InvalidParameter(m));
        if let Budget::Ratio(r) = self.budget {
            if !(0.0..=1.0).contains(&r) || r.is_nan() {
                return bad(format!("recompute ratio {r} must be in [0, 1]"));
            }
        }
        if self.check_layer() >= num_layers {
            return bad(format!(
                "check layer {} must be below the layer count {num_layers}",
                self.check_layer()
            ));
        }
        if self.pooling_width == 0 {
            return bad("pooling width must be >= 1".into());
        }
        if let Some(w) = self.hybrid_weight {
            if !(0.0..=1.0).contains(&w) {
                return bad(format!("hybrid weight {w} must be in [0, 1]"));
            }
        }
        match self.eviction {
            Some(Eviction::SnapKv { capacity, pooling }) if capacity == 0 || pooling == 0 => {
                bad("eviction capacity and pooling must be >= 1".into())
            }
            Some(Eviction::Streaming { capacity: 0 }) => {
                bad("eviction capacity must be >= 1".into())
            }
            _ => Ok(()),
        }
    }

    /// The effective check layer.
    pub fn check_layer(&self) -> usize {
        self.check_layer
            .unwrap_or_else(|| self.method.default_check_layer())
    }
}

/// The number of document rows to recompute for `prompt` under `budget`.
pub fn budget_k(budget: Budget, prompt: &RagPrompt) -> usize {
    let n_doc = prompt.doc_range().len();
    if n_doc == 0 {
        return 0;
    }
    let t_minus_q = prompt.len() - prompt.question_len();
    match budget {
        Budget::Ratio(r) => ((r * t_minus_q as f64).floor() as usize).max(1).min(n_doc),
        Budget::Tokens(n) => n.min(n_doc),
    }
}

/// Indices of the `k` largest scores, ties to the lower index, returned ascending.
/// Indices in `exclude` (sorted) are never picked.
pub fn top_k(scores: &[f32], k: usize, exclude: &[usize]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len())
        .filter(|i| exclude.binary_search(i).is_err())
        .collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

/// Document-relative indices of the first `m` tokens of every chunk, in order.
pub fn chunk_starts(prompt: &RagPrompt, m: usize) -> Vec<usize> {
    let p = prompt.prefix_len();
    prompt
        .chunks()
        .flat_map(|s| (s.start - p)..(s.start - p + m.min(s.len)))
        .collect()
}

/// CacheBlend's deviation `Σ (V_fresh − V_cached)²` over heads and dims, per document row.
/// `v_fresh`, `v_cached`: `[H_kv, T, d]`.
pub fn v_deviation(
    v_fresh: &a3kv_model::Tensor,
    v_cached: &a3kv_model::Tensor,
    prompt: &RagPrompt,
) -> Result<Vec<f32>> {
    let r = prompt.doc_range();
    let diff = (v_fresh.narrow(1, r.start, r.len())? - v_cached.narrow(1, r.start, r.len())?)?;
    Ok(diff
        .sqr()?
        .sum(2)?
        .sum(0)?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?)
}

/// Scales a non-negative score vector to sum 1 (all zeros stay zeros).
pub fn normalise(s: &[f32]) -> Vec<f32> {
    let total: f32 = s.iter().sum();
    if total > 0.0 {
        s.iter().map(|x| x / total).collect()
    } else {
        s.to_vec()
    }
}

/// Final selection of document rows (document-relative, ascending): sink tokens first
/// (capped at `k`), then the top of `scores` for the rest of the budget.
pub fn select_with_sinks(scores: &[f32], k: usize, sinks: &[usize]) -> Vec<usize> {
    let mut sinks: Vec<usize> = sinks.iter().copied().take(k).collect();
    sinks.sort_unstable();
    sinks.dedup();
    let rest = top_k(scores, k - sinks.len(), &sinks);
    let mut all = [sinks, rest].concat();
    all.sort_unstable();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(p: usize, chunks: &[usize], q: usize) -> RagPrompt {
        let cs: Vec<Vec<u32>> = chunks.iter().map(|&n| vec![5; n]).collect();
        RagPrompt::from_ids(&vec![1; p], &cs, &vec![2; q]).unwrap()
    }

    #[test]
    fn budget_follows_the_clamped_formula() {
        let pr = prompt(47, &[100, 100], 20);
        // floor(0.15 * 247) = 37
        assert_eq!(budget_k(Budget::Ratio(0.15), &pr), 37);
        // r = 1 is clamped to the document size.
        assert_eq!(budget_k(Budget::Ratio(1.0), &pr), 200);
        // r = 0 still recomputes one row when there are documents.
        assert_eq!(budget_k(Budget::Ratio(0.0), &pr), 1);
        assert_eq!(budget_k(Budget::Tokens(500), &pr), 200);
        assert_eq!(budget_k(Budget::Ratio(0.5), &prompt(3, &[], 4)), 0);
    }

    #[test]
    fn top_k_breaks_ties_to_lower_index() {
        assert_eq!(top_k(&[1.0, 3.0, 3.0, 2.0, 3.0], 2, &[]), vec![1, 2]);
        assert_eq!(top_k(&[1.0, 3.0, 3.0, 2.0, 3.0], 2, &[1]), vec![2, 4]);
        assert_eq!(
            select_with_sinks(&[0.0, 9.0, 0.0, 8.0], 3, &[0, 2]),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn chunk_starts_are_first_m_of_each_chunk() {
        let pr = prompt(2, &[3, 1, 5], 1);
        assert_eq!(chunk_starts(&pr, 2), vec![0, 1, 3, 4, 5]);
    }

    #[test]
    fn params_validate() {
        assert!(FusionParams::default().validate(30).is_ok());
        let bad = FusionParams {
            budget: Budget::Ratio(1.5),
            ..Default::default()
        };
        assert!(bad.validate(30).is_err());
        assert!("bogus".parse::<Method>().is_err());
        assert_eq!("a3".parse::<Method>().unwrap(), Method::A3);
        let deep = FusionParams {
            check_layer: Some(30),
            ..Default::default()
        };
        assert!(deep.validate(30).is_err());
    }
}
