//! The fusion parameters of a request — parsed and validated here for every front end (HTTP
//! `fusion` objects, CLI method specs, the configuration) — the budget `k`, and the row
//! picking shared by the selection methods (top-k, chunk starts, attention-sink tokens).
//! The methods themselves are in [`crate::select`].

use serde::{Deserialize, Serialize};

use crate::prompt::RagPrompt;
pub use crate::select::Method;
use crate::{FusionError, Result};

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

    /// These parameters with `method`: naming another method starts from that method's
    /// defaults, keeping the budget and the eviction.
    pub fn with_method(&self, method: Method) -> Self {
        if method == self.method {
            return self.clone();
        }
        Self {
            budget: self.budget,
            eviction: self.eviction,
            ..Self::method(method)
        }
    }

    /// Applies a request's fusion settings on top of these defaults: the method first (see
    /// [`FusionParams::with_method`]), then each named option with its range checked. This
    /// is the one parser behind HTTP's `fusion` object and the CLI's method specs.
    ///
    /// # Errors
    /// [`FusionError::InvalidOption`] naming the option: out of range, not a whole number
    /// where one is needed, not applicable to the method, or a ratio and a token budget both.
    pub fn apply(&self, method: Option<Method>, options: &[(FusionOption, f64)]) -> Result<Self> {
        let mut p = match method {
            Some(m) => self.with_method(m),
            None => self.clone(),
        };
        let has = |o: FusionOption| options.iter().any(|(x, _)| *x == o);
        if has(FusionOption::RecomputeRatio) && has(FusionOption::RecomputeTokens) {
            return Err(FusionError::InvalidOption {
                option: FusionOption::RecomputeTokens.name(),
                message: "give recompute_ratio or recompute_tokens, not both".into(),
            });
        }
        for &(opt, value) in options {
            p.set_option(opt, value)?;
        }
        Ok(p)
    }

    /// Sets one option, checking its range (numbers come from JSON or the command line).
    fn set_option(&mut self, opt: FusionOption, value: f64) -> Result<()> {
        let name = opt.name();
        let bad = |message: String| {
            Err(FusionError::InvalidOption {
                option: name,
                message,
            })
        };
        let whole = |lo: f64, hi: f64| -> Result<usize> {
            if value.fract() != 0.0 || !(lo..=hi).contains(&value) {
                return Err(FusionError::InvalidOption {
                    option: name,
                    message: format!("{name} {value} must be a whole number in [{lo}, {hi}]"),
                });
            }
            Ok(value as usize)
        };
        match opt {
            FusionOption::RecomputeRatio => {
                if !(0.0..=1.0).contains(&value) {
                    return bad(format!("{name} {value} must be in [0, 1]"));
                }
                self.budget = Budget::Ratio(value);
            }
            FusionOption::RecomputeTokens => {
                self.budget = Budget::Tokens(whole(0.0, MAX_TOKEN_OPTION)?);
            }
            FusionOption::SinkTokens => self.sink_tokens = whole(0.0, MAX_SINK_TOKENS)?,
            FusionOption::EpicTokens => {
                if self.method != Method::Epic {
                    return bad(format!("{name} applies to epic only, not {}", self.method));
                }
                self.epic_tokens = whole(0.0, MAX_SINK_TOKENS)?;
            }
            FusionOption::HybridWeight => {
                if self.method != Method::A3 {
                    return bad(format!("{name} applies to a3 only, not {}", self.method));
                }
                if !(0.0..=1.0).contains(&value) {
                    return bad(format!("{name} {value} must be in [0, 1]"));
                }
                self.hybrid_weight = Some(value as f32);
            }
            FusionOption::PoolingWidth => {
                if self.method != Method::A3 {
                    return bad(format!("{name} applies to a3 only, not {}", self.method));
                }
                self.pooling_width = whole(1.0, MAX_POOLING_WIDTH)?;
            }
            FusionOption::CheckLayer => {
                if !self.method.selector().scores_at_check_layer() {
                    return bad(format!(
                        "{name} applies to methods that score rows, not {}",
                        self.method
                    ));
                }
                // Checked against the model's layer count by `validate`.
                self.check_layer = Some(whole(1.0, MAX_TOKEN_OPTION)?);
            }
        }
        Ok(())
    }
}

/// Upper bound of whole-number options without a tighter one (a budget beyond the prompt is
/// clamped to its document rows, so any `i64` a JSON client sends is accepted).
const MAX_TOKEN_OPTION: f64 = i64::MAX as f64;
/// Upper bound of per-chunk token counts (sink tokens, EPIC's `m`).
const MAX_SINK_TOKENS: f64 = 65_536.0;
/// Upper bound of the A^3 moving-average width.
const MAX_POOLING_WIDTH: f64 = 1024.0;

/// A fusion option that front ends set by name: HTTP's `fusion.<name>`, the configuration's
/// `engine.default_fusion`, and the CLI's method specs (`name:key=value`, where the short
/// names are accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FusionOption {
    /// Share of the prompt to recompute, `[0, 1]`.
    RecomputeRatio,
    /// A token budget instead of the ratio.
    RecomputeTokens,
    /// The first `m` tokens of every chunk join the selection, out of the same budget.
    SinkTokens,
    /// `a3` only: weight of A^3 in the A^3/CacheBlend hybrid score.
    HybridWeight,
    /// `epic` only: tokens recomputed at the start of every chunk.
    EpicTokens,
    /// `a3` only: width of the moving average over the scores.
    PoolingWidth,
    /// Layers before it are exact; rows are chosen at it (scoring methods).
    CheckLayer,
}

impl FusionOption {
    /// Every option.
    pub const ALL: [FusionOption; 7] = [
        FusionOption::RecomputeRatio,
        FusionOption::RecomputeTokens,
        FusionOption::SinkTokens,
        FusionOption::HybridWeight,
        FusionOption::EpicTokens,
        FusionOption::PoolingWidth,
        FusionOption::CheckLayer,
    ];

    /// Its name in HTTP and the configuration.
    pub fn name(&self) -> &'static str {
        match self {
            FusionOption::RecomputeRatio => "recompute_ratio",
            FusionOption::RecomputeTokens => "recompute_tokens",
            FusionOption::SinkTokens => "sink_tokens",
            FusionOption::HybridWeight => "hybrid_weight",
            FusionOption::EpicTokens => "epic_tokens",
            FusionOption::PoolingWidth => "pooling_width",
            FusionOption::CheckLayer => "check_layer",
        }
    }

    /// Its short name in CLI method specs.
    pub fn short_name(&self) -> &'static str {
        match self {
            FusionOption::RecomputeRatio => "r",
            FusionOption::RecomputeTokens => "tokens",
            FusionOption::SinkTokens => "sink",
            FusionOption::HybridWeight => "hybrid",
            FusionOption::EpicTokens => "m",
            FusionOption::PoolingWidth => "pool",
            FusionOption::CheckLayer => "check",
        }
    }

    /// The option called `name` (full or short).
    ///
    /// # Errors
    /// [`FusionError::InvalidParameter`] listing the options when none is called `name`.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|o| o.name() == name || o.short_name() == name)
            .ok_or_else(|| {
                FusionError::InvalidParameter(format!(
                    "unknown fusion option {name:?} (allowed: method, {})",
                    Self::ALL.map(|o| o.name()).join(", ")
                ))
            })
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
    fn options_are_parsed_once_for_every_front_end() {
        use FusionOption as O;
        let base = FusionParams {
            hybrid_weight: Some(0.5),
            ..Default::default()
        };
        // Another method starts from its own defaults, keeping the budget.
        let cb = base.apply(Some(Method::CacheBlend), &[]).unwrap();
        assert_eq!((cb.method, cb.hybrid_weight), (Method::CacheBlend, None));
        assert_eq!(cb.budget, base.budget);
        // The same method keeps everything.
        assert_eq!(base.apply(Some(Method::A3), &[]).unwrap(), base);
        let p = base
            .apply(None, &[(O::RecomputeTokens, 64.0), (O::SinkTokens, 1.0)])
            .unwrap();
        assert_eq!((p.budget, p.sink_tokens), (Budget::Tokens(64), 1));
        let err = |m: Option<Method>, o: &[(FusionOption, f64)]| match base.apply(m, o).unwrap_err()
        {
            FusionError::InvalidOption { option, message } => format!("{option}: {message}"),
            e => panic!("{e}"),
        };
        assert!(err(None, &[(O::RecomputeRatio, 1.5)]).starts_with("recompute_ratio"));
        assert!(
            err(None, &[(O::RecomputeRatio, 0.1), (O::RecomputeTokens, 5.0)]).contains("not both")
        );
        assert!(err(None, &[(O::SinkTokens, 1.5)]).contains("whole number"));
        assert!(err(None, &[(O::RecomputeTokens, -1.0)]).starts_with("recompute_tokens"));
        assert!(err(Some(Method::Epic), &[(O::HybridWeight, 0.5)]).contains("a3 only"));
        assert!(err(None, &[(O::EpicTokens, 4.0)]).contains("epic only"));
        assert!(err(Some(Method::Reuse), &[(O::CheckLayer, 2.0)]).starts_with("check_layer"));
        assert!(err(None, &[(O::RecomputeRatio, f64::NAN)]).starts_with("recompute_ratio"));
        for o in FusionOption::ALL {
            assert_eq!(FusionOption::from_name(o.name()).unwrap(), o);
            assert_eq!(FusionOption::from_name(o.short_name()).unwrap(), o);
        }
        assert!(FusionOption::from_name("bogus").is_err());
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
