//! The fusion parameters of a request — parsed and validated here for every front end (HTTP
//! `fusion` objects, CLI method specs, the configuration) — the budget `k` (fixed, or
//! adaptive: [`auto_k`]), and the row picking shared by the selection methods (top-k, chunk
//! starts, attention-sink tokens). The methods themselves are in [`crate::select`].

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
    /// `k` chosen per request from the score distribution ([`auto_k`]).
    Auto(AutoBudget),
}

/// An adaptive budget (`recompute_ratio: "auto"`): the smallest `k` whose top-`k` scores
/// hold `mass` of the total score mass (for `a3` the question's attention mass), kept within
/// `[min_ratio, max_ratio]` of `T−Q` (the units of a fixed ratio). docs/design.md §2.4.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoBudget {
    /// Share of the score mass the selection must cover, `(0, 1]`.
    pub mass: f64,
    /// Smallest ratio chosen, `[0, 1]`.
    pub min_ratio: f64,
    /// Largest ratio chosen, `[min_ratio, 1]`.
    pub max_ratio: f64,
}

impl Default for AutoBudget {
    fn default() -> Self {
        Self {
            mass: DEFAULT_AUTO_MASS,
            min_ratio: 0.05,
            max_ratio: 0.5,
        }
    }
}

/// Default share of the question's attention mass an adaptive budget covers. The mass is very
/// concentrated (on HotpotQA with SmolLM2, 99% of it often fits in 5% of the prompt);
/// 0.999 spends about what the fixed default (0.15) spends, at the same KL (README "Quality":
/// the KL-vs-recompute curve).
pub const DEFAULT_AUTO_MASS: f64 = 0.999;

impl AutoBudget {
    /// Checks the ranges; the error names the offending option.
    pub fn check(&self) -> Result<()> {
        let bad = |option: FusionOption, message: String| {
            Err(FusionError::InvalidOption {
                option: option.name(),
                message,
            })
        };
        if !(self.mass > 0.0 && self.mass <= 1.0) {
            return bad(
                FusionOption::AutoMass,
                format!("auto_mass {} must be in (0, 1]", self.mass),
            );
        }
        for (o, v) in [
            (FusionOption::AutoMinRatio, self.min_ratio),
            (FusionOption::AutoMaxRatio, self.max_ratio),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(o, format!("{} {v} must be in [0, 1]", o.name()));
            }
        }
        if self.min_ratio > self.max_ratio {
            return bad(
                FusionOption::AutoMaxRatio,
                format!(
                    "auto_max_ratio {} must not be below auto_min_ratio {}",
                    self.max_ratio, self.min_ratio
                ),
            );
        }
        Ok(())
    }
}

/// A value given to a [`FusionOption`]: a number, or `"auto"` (only `recompute_ratio`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptionValue {
    /// A number (JSON or the command line).
    Number(f64),
    /// `"auto"`: an adaptive budget.
    Auto,
}

impl From<f64> for OptionValue {
    fn from(x: f64) -> Self {
        OptionValue::Number(x)
    }
}

impl std::str::FromStr for OptionValue {
    type Err = std::num::ParseFloatError;
    /// `auto` or a number.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        if s == "auto" {
            Ok(OptionValue::Auto)
        } else {
            s.parse().map(OptionValue::Number)
        }
    }
}

impl std::fmt::Display for OptionValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OptionValue::Number(x) => write!(f, "{x}"),
            OptionValue::Auto => f.write_str("auto"),
        }
    }
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
    /// A^3: mix `w·a3 + (1−w)·cacheblend` of the normalised scores (`None` = pure A^3); the
    /// deep-relevance mixes: the relevance's share (`None` = one half).
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
        match self.budget {
            Budget::Ratio(r) if !(0.0..=1.0).contains(&r) || r.is_nan() => {
                return bad(format!("recompute ratio {r} must be in [0, 1]"));
            }
            Budget::Auto(a) => {
                if let Err(e) = a.check() {
                    return bad(e.to_string());
                }
            }
            _ => {}
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
    /// [`FusionParams::with_method`]), then the budget (`recompute_ratio` — a number or
    /// `"auto"` — or `recompute_tokens`), then every other named option, each with its range
    /// checked. This is the one parser behind HTTP's `fusion` object, the CLI's method specs
    /// and (through [`FusionParams::validate`]) the configuration.
    ///
    /// # Errors
    /// [`FusionError::InvalidOption`] naming the option: out of range, not a whole number
    /// where one is needed, `"auto"` for an option other than `recompute_ratio`, not
    /// applicable to the method (or `auto_*` without an adaptive budget), or a ratio and a
    /// token budget both.
    pub fn apply(
        &self,
        method: Option<Method>,
        options: &[(FusionOption, OptionValue)],
    ) -> Result<Self> {
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
        // The budget first: `auto_*` options refine an adaptive budget set in the same call.
        let is_budget = |o: &FusionOption| {
            matches!(
                o,
                FusionOption::RecomputeRatio | FusionOption::RecomputeTokens
            )
        };
        let ordered = options
            .iter()
            .filter(|(o, _)| is_budget(o))
            .chain(options.iter().filter(|(o, _)| !is_budget(o)));
        for &(opt, value) in ordered {
            p.set_option(opt, value)?;
        }
        if let Budget::Auto(a) = p.budget {
            a.check()?;
        }
        Ok(p)
    }

    /// Sets one option, checking its range (values come from JSON or the command line).
    fn set_option(&mut self, opt: FusionOption, value: OptionValue) -> Result<()> {
        let name = opt.name();
        let bad = |message: String| {
            Err(FusionError::InvalidOption {
                option: name,
                message,
            })
        };
        let value = match (opt, value) {
            (FusionOption::RecomputeRatio, OptionValue::Auto) => {
                // Keep the adaptive settings already in force (the configured default).
                let auto = match self.budget {
                    Budget::Auto(a) => a,
                    _ => AutoBudget::default(),
                };
                self.budget = Budget::Auto(auto);
                return Ok(());
            }
            (FusionOption::RecomputeRatio, OptionValue::Number(x)) => x,
            (_, OptionValue::Auto) => {
                return bad(format!(
                    "{name} must be a number (only recompute_ratio may be \"auto\")"
                ))
            }
            (_, OptionValue::Number(x)) => x,
        };
        let unit = |lo_open: bool| -> Result<f64> {
            let ok = if lo_open {
                value > 0.0 && value <= 1.0
            } else {
                (0.0..=1.0).contains(&value)
            };
            if ok {
                Ok(value)
            } else {
                let lo = if lo_open { "(0" } else { "[0" };
                Err(FusionError::InvalidOption {
                    option: name,
                    message: format!("{name} {value} must be in {lo}, 1]"),
                })
            }
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
                if !self.method.selector().takes_hybrid_weight() {
                    return bad(format!(
                        "{name} applies to a3 and the deep-relevance mixes (…_vdev, …_kdev of \
                         layerattn and headattn), not {}",
                        self.method
                    ));
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
            FusionOption::AutoMass => {
                let v = unit(true)?;
                auto_mut(&mut self.budget, name)?.mass = v;
            }
            FusionOption::AutoMinRatio => {
                let v = unit(false)?;
                auto_mut(&mut self.budget, name)?.min_ratio = v;
            }
            FusionOption::AutoMaxRatio => {
                let v = unit(false)?;
                auto_mut(&mut self.budget, name)?.max_ratio = v;
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

/// The adaptive budget an `auto_*` option refines.
fn auto_mut<'a>(budget: &'a mut Budget, name: &'static str) -> Result<&'a mut AutoBudget> {
    match budget {
        Budget::Auto(a) => Ok(a),
        _ => Err(FusionError::InvalidOption {
            option: name,
            message: format!("{name} applies with recompute_ratio \"auto\" only"),
        }),
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
    /// `a3` and the deep-relevance mixes: the relevance's share of the mixed score.
    HybridWeight,
    /// `epic` only: tokens recomputed at the start of every chunk.
    EpicTokens,
    /// `a3` only: width of the moving average over the scores.
    PoolingWidth,
    /// Layers before it are exact; rows are chosen at it (scoring methods).
    CheckLayer,
    /// Adaptive budget: share of the score mass to cover, `(0, 1]`.
    AutoMass,
    /// Adaptive budget: smallest ratio chosen.
    AutoMinRatio,
    /// Adaptive budget: largest ratio chosen.
    AutoMaxRatio,
}

impl FusionOption {
    /// Every option.
    pub const ALL: [FusionOption; 10] = [
        FusionOption::RecomputeRatio,
        FusionOption::RecomputeTokens,
        FusionOption::SinkTokens,
        FusionOption::HybridWeight,
        FusionOption::EpicTokens,
        FusionOption::PoolingWidth,
        FusionOption::CheckLayer,
        FusionOption::AutoMass,
        FusionOption::AutoMinRatio,
        FusionOption::AutoMaxRatio,
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
            FusionOption::AutoMass => "auto_mass",
            FusionOption::AutoMinRatio => "auto_min_ratio",
            FusionOption::AutoMaxRatio => "auto_max_ratio",
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
            FusionOption::AutoMass => "mass",
            FusionOption::AutoMinRatio => "rmin",
            FusionOption::AutoMaxRatio => "rmax",
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

/// The number of document rows to recompute for `prompt` under `budget`. For an adaptive
/// budget, which needs scores ([`auto_k`]), this is its upper bound: methods that select
/// from the prompt alone (`reuse`, `epic`) use it only to cap their sink tokens.
pub fn budget_k(budget: Budget, prompt: &RagPrompt) -> usize {
    let n_doc = prompt.doc_range().len();
    if n_doc == 0 {
        return 0;
    }
    let t_minus_q = prompt.len() - prompt.question_len();
    match budget {
        Budget::Ratio(r) => ((r * t_minus_q as f64).floor() as usize).max(1).min(n_doc),
        Budget::Tokens(n) => n.min(n_doc),
        Budget::Auto(a) => auto_bounds(&a, t_minus_q, n_doc).1,
    }
}

/// `[lo, hi]` rows of an adaptive budget over `T−Q = t_minus_q` rows with `n_doc ≥ 1`
/// document rows: `lo = ceil(min_ratio·(T−Q))`, `hi = floor(max_ratio·(T−Q))`, both at
/// least 1 and at most `n_doc`. So `k/(T−Q)` lies in `[min_ratio, max_ratio]` unless no
/// whole `k` does (bounds closer than `1/(T−Q)`: then `k = hi`), or the document rows or the
/// 1-row guard force it out.
fn auto_bounds(a: &AutoBudget, t_minus_q: usize, n_doc: usize) -> (usize, usize) {
    let tq = t_minus_q as f64;
    // The epsilon keeps ratios that are exact in decimal (0.1·250) from rounding up.
    let lo = ((a.min_ratio * tq - 1e-9).ceil().max(1.0) as usize).min(n_doc);
    let hi = ((a.max_ratio * tq + 1e-9).floor().max(1.0) as usize).min(n_doc);
    (lo.min(hi), hi)
}

/// The adaptive budget's `k` for `prompt`: the smallest `k` such that the `k` largest of
/// `mass_scores` (one non-negative score per document row; negative and non-finite scores
/// count as 0) sum to at least `a.mass` of their total, clamped to the bounds of
/// [`AutoBudget`]. Scores with no mass give the lower bound. 0 without document rows.
pub fn auto_k(a: &AutoBudget, mass_scores: &[f32], prompt: &RagPrompt) -> usize {
    let n_doc = prompt.doc_range().len();
    if n_doc == 0 {
        return 0;
    }
    let (lo, hi) = auto_bounds(a, prompt.len() - prompt.question_len(), n_doc);
    let mut s: Vec<f64> = mass_scores
        .iter()
        .map(|&x| {
            if x.is_finite() && x > 0.0 {
                f64::from(x)
            } else {
                0.0
            }
        })
        .collect();
    let total: f64 = s.iter().sum();
    if total <= 0.0 {
        return lo;
    }
    s.sort_unstable_by(|x, y| y.total_cmp(x));
    let target = a.mass * total;
    let mut covered = 0.0;
    let mut k = s.len();
    for (i, x) in s.iter().enumerate() {
        covered += x;
        // A relative slack so that mass = 1 is reached despite rounding in the sum.
        if covered >= target * (1.0 - 1e-12) {
            k = i + 1;
            break;
        }
    }
    k.clamp(lo, hi)
}

/// The ratio an adaptive budget chose: `k / (T−Q)`, in the units of a fixed
/// `recompute_ratio` (the ratio whose fixed budget recomputes the same `k` rows).
pub fn chosen_ratio(k: usize, prompt: &RagPrompt) -> f64 {
    let tq = prompt.len() - prompt.question_len();
    if tq == 0 {
        0.0
    } else {
        k as f64 / tq as f64
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

    /// Numbers as option values.
    fn num(o: &[(FusionOption, f64)]) -> Vec<(FusionOption, OptionValue)> {
        o.iter().map(|&(o, x)| (o, x.into())).collect()
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
            .apply(
                None,
                &num(&[(O::RecomputeTokens, 64.0), (O::SinkTokens, 1.0)]),
            )
            .unwrap();
        assert_eq!((p.budget, p.sink_tokens), (Budget::Tokens(64), 1));
        let err = |m: Option<Method>, o: &[(FusionOption, f64)]| match base
            .apply(m, &num(o))
            .unwrap_err()
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
        assert!(err(Some(Method::Epic), &[(O::HybridWeight, 0.5)]).contains("not epic"));
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
    fn auto_budget_is_parsed_with_its_bounds() {
        use FusionOption as O;
        use OptionValue::{Auto, Number};
        let base = FusionParams::default();
        // "auto" alone: the built-in adaptive settings.
        let p = base.apply(None, &[(O::RecomputeRatio, Auto)]).unwrap();
        assert_eq!(p.budget, Budget::Auto(AutoBudget::default()));
        // auto_* refine it, whatever their order among the options.
        let p = base
            .apply(
                None,
                &[
                    (O::AutoMass, Number(0.8)),
                    (O::AutoMaxRatio, Number(0.3)),
                    (O::RecomputeRatio, Auto),
                    (O::AutoMinRatio, Number(0.1)),
                ],
            )
            .unwrap();
        let want = AutoBudget {
            mass: 0.8,
            min_ratio: 0.1,
            max_ratio: 0.3,
        };
        assert_eq!(p.budget, Budget::Auto(want));
        // An adaptive default keeps its settings when a request says "auto" again, and
        // auto_* alone refine it.
        let q = p.apply(None, &[(O::RecomputeRatio, Auto)]).unwrap();
        assert_eq!(q.budget, Budget::Auto(want));
        let q = p.apply(None, &[(O::AutoMass, Number(0.9))]).unwrap();
        assert_eq!(q.budget, Budget::Auto(AutoBudget { mass: 0.9, ..want }));
        // A fixed ratio replaces it.
        let q = p.apply(None, &[(O::RecomputeRatio, Number(0.2))]).unwrap();
        assert_eq!(q.budget, Budget::Ratio(0.2));
        let err = |o: &[(FusionOption, OptionValue)]| match base.apply(None, o).unwrap_err() {
            FusionError::InvalidOption { option, message } => format!("{option}: {message}"),
            e => panic!("{e}"),
        };
        let auto = (O::RecomputeRatio, Auto);
        assert!(err(&[(O::AutoMass, Number(0.5))]).contains("with recompute_ratio \"auto\""));
        assert!(err(&[auto, (O::AutoMass, Number(0.0))]).starts_with("auto_mass"));
        assert!(err(&[auto, (O::AutoMass, Number(1.5))]).starts_with("auto_mass"));
        assert!(err(&[auto, (O::AutoMass, Number(f64::NAN))]).starts_with("auto_mass"));
        assert!(err(&[auto, (O::AutoMinRatio, Number(-0.1))]).starts_with("auto_min_ratio"));
        assert!(err(&[auto, (O::AutoMaxRatio, Number(2.0))]).starts_with("auto_max_ratio"));
        let e = err(&[
            auto,
            (O::AutoMinRatio, Number(0.6)),
            (O::AutoMaxRatio, Number(0.4)),
        ]);
        assert!(
            e.starts_with("auto_max_ratio") && e.contains("below"),
            "{e}"
        );
        assert!(err(&[(O::SinkTokens, Auto)]).contains("must be a number"));
        assert!(err(&[auto, (O::RecomputeTokens, Number(5.0))]).contains("not both"));
        assert_eq!("auto".parse::<OptionValue>().unwrap(), Auto);
        assert_eq!("0.25".parse::<OptionValue>().unwrap(), Number(0.25));
        assert!("x".parse::<OptionValue>().is_err());
        // `validate` (the configuration's check) refuses the same bounds.
        let bad = FusionParams {
            budget: Budget::Auto(AutoBudget {
                min_ratio: 0.6,
                max_ratio: 0.4,
                ..want
            }),
            ..Default::default()
        };
        assert!(bad.validate(30).is_err());
    }

    #[test]
    fn auto_k_is_the_smallest_k_covering_the_mass_within_bounds() {
        // P = 2, 10 document rows, Q = 3: T − Q = 12.
        let pr = prompt(2, &[6, 4], 3);
        let wide = |mass: f64| AutoBudget {
            mass,
            min_ratio: 0.0,
            max_ratio: 1.0,
        };
        // Scores sum to 10; sorted 4, 3, 1, 1, 1, 0, ...
        let s = [1.0, 0.0, 4.0, 0.0, 1.0, 0.0, 3.0, 0.0, 1.0, 0.0];
        assert_eq!(auto_k(&wide(0.4), &s, &pr), 1); // 4 >= 4
        assert_eq!(auto_k(&wide(0.41), &s, &pr), 2); // 4 < 4.1 <= 7
        assert_eq!(auto_k(&wide(0.7), &s, &pr), 2); // exactly 7
        assert_eq!(auto_k(&wide(0.75), &s, &pr), 3);
        assert_eq!(auto_k(&wide(1.0), &s, &pr), 5); // every row with mass, no more
                                                    // Bounds: ceil(0.25 · 12) = 3 rows at least, floor(0.34 · 12) = 4 at most.
        let b = |mass| AutoBudget {
            mass,
            min_ratio: 0.25,
            max_ratio: 0.34,
        };
        assert_eq!(auto_k(&b(0.4), &s, &pr), 3);
        assert_eq!(auto_k(&b(1.0), &s, &pr), 4);
        // No mass (all zero, negative or NaN): the lower bound.
        assert_eq!(auto_k(&b(0.5), &[0.0; 10], &pr), 3);
        assert_eq!(
            auto_k(
                &b(0.5),
                &[f32::NAN, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                &pr
            ),
            3
        );
        // Negative and NaN scores count as zero mass.
        let mut t = s;
        t[1] = -5.0;
        t[3] = f32::NAN;
        assert_eq!(auto_k(&wide(0.41), &t, &pr), 2);
        // The 1-row guard and the document clamp.
        assert_eq!(
            auto_k(
                &AutoBudget {
                    mass: 0.01,
                    min_ratio: 0.0,
                    max_ratio: 0.0
                },
                &s,
                &pr
            ),
            1
        );
        let all = AutoBudget {
            mass: 0.5,
            min_ratio: 1.0,
            max_ratio: 1.0,
        };
        assert_eq!(auto_k(&all, &s, &pr), 10);
        assert_eq!(budget_k(Budget::Auto(all), &pr), 10);
        assert_eq!(budget_k(Budget::Auto(b(0.5)), &pr), 4);
        assert_eq!(auto_k(&all, &[], &prompt(3, &[], 4)), 0);
        // The chosen ratio is k / (T − Q), inside the bounds.
        let k = auto_k(&b(0.4), &s, &pr);
        let r = chosen_ratio(k, &pr);
        assert!((r - 0.25).abs() < 1e-12 && (0.25..=0.34).contains(&r));
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
