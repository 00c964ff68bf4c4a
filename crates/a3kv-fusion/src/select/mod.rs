//! Selection methods behind one seam: a [`Selector`] decides which document rows a fused
//! prefill recomputes, either from the prompt alone (`reuse`, `epic`) or from scores at its
//! check layer (`a3`, `cacheblend`). `full` is the method that recomputes everything.
//!
//! Adding a method is one new file here with a `Selector` and one line in [`REGISTRY`]; the
//! HTTP API, the configuration and the CLI find it by name (see [`Method`]).

mod a3;
mod cacheblend;
mod epic;
mod full;
pub mod hybrid;
mod reuse;

use a3kv_model::Tensor;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::prompt::RagPrompt;
use crate::selection::FusionParams;
use crate::{FusionError, Result};

pub use cacheblend::v_deviation;

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
}

/// A selection method.
pub trait Selector: Sync {
    /// Its name in requests, configuration files and reports.
    fn name(&self) -> &'static str;

    /// Whether this is full prefill (every row recomputed, no cache read).
    fn is_full_prefill(&self) -> bool {
        false
    }

    /// Whether rows are chosen from scores at a check layer `>= 1` ([`Selector::scores`]);
    /// otherwise they are chosen from the prompt alone before layer 0
    /// ([`Selector::select_static`]).
    fn scores_at_check_layer(&self) -> bool;

    /// The check layer when the request does not set one.
    fn default_check_layer(&self) -> usize {
        usize::from(self.scores_at_check_layer())
    }

    /// Whether [`Selector::scores`] reads the cached V of the check layer.
    fn needs_cached_v(&self, _params: &FusionParams) -> bool {
        false
    }

    /// Document-relative rows to recompute (ascending) for a method that does not score;
    /// `k` is the budget of [`crate::budget_k`].
    fn select_static(&self, _prompt: &RagPrompt, _params: &FusionParams, _k: usize) -> Vec<usize> {
        Vec::new()
    }

    /// One score per document row (higher = recompute first) for a scoring method; the
    /// fused prefill takes the sink tokens, then the top of these scores, up to `k`.
    fn scores(&self, _input: &ScoreInput<'_>, _params: &FusionParams) -> Result<Vec<f32>> {
        Err(FusionError::InvalidParameter(format!(
            "{} does not score rows",
            self.name()
        )))
    }

    /// [`Selector::scores`] and, when it differs from them, the distribution whose mass an
    /// adaptive budget covers ([`crate::auto_k`]); `None` = the scores themselves. `a3`
    /// with a hybrid weight ranks by the hybrid but sizes the budget by the question's
    /// attention mass alone.
    fn scores_and_mass(
        &self,
        input: &ScoreInput<'_>,
        params: &FusionParams,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        Ok((self.scores(input, params)?, None))
    }
}

/// Every selection method, `full` first. One line per method.
pub static REGISTRY: &[&dyn Selector] = &[
    &full::Full,
    &reuse::Reuse,
    &cacheblend::CacheBlend,
    &epic::Epic,
    &a3::A3,
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
