//! `LengthDist`: a distribution of positive integers (document length in words, question
//! length, output tokens, documents per request), parsed from a short CLI spelling.
//!
//! Spellings: `512` (fixed), `256-1024` or `256..1024` (uniform, inclusive), `normal:512,128`
//! (normal with mean and standard deviation, rounded and clamped to at least 1).

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand_distr::{Distribution, Normal};
use serde::Serialize;

/// A distribution of positive integers; every sample is at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LengthDist {
    /// Always `n`.
    Fixed {
        /// The value.
        n: u64,
    },
    /// Uniform over `lo..=hi`.
    Uniform {
        /// Smallest value.
        lo: u64,
        /// Largest value.
        hi: u64,
    },
    /// Normal, rounded and clamped to `>= 1`.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation (>= 0).
        std: f64,
    },
}

impl LengthDist {
    /// Draws one value (>= 1).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        match *self {
            Self::Fixed { n } => n.max(1),
            Self::Uniform { lo, hi } => rng.gen_range(lo..=hi).max(1),
            Self::Normal { mean, std } => {
                // `std` is checked >= 0 and finite when parsed, so `Normal::new` cannot fail;
                // fall back to the mean rather than panic if a caller built a bad value.
                let x = Normal::new(mean, std).map_or(mean, |d| d.sample(rng));
                if x.is_finite() {
                    x.round().max(1.0) as u64
                } else {
                    1
                }
            }
        }
    }

    /// The largest value this distribution can produce, or `None` when unbounded (normal).
    pub fn max(&self) -> Option<u64> {
        match *self {
            Self::Fixed { n } => Some(n.max(1)),
            Self::Uniform { hi, .. } => Some(hi.max(1)),
            Self::Normal { .. } => None,
        }
    }

    /// The mean of the distribution before clamping.
    pub fn mean(&self) -> f64 {
        match *self {
            Self::Fixed { n } => n as f64,
            Self::Uniform { lo, hi } => (lo + hi) as f64 / 2.0,
            Self::Normal { mean, .. } => mean,
        }
    }
}

impl fmt::Display for LengthDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Fixed { n } => write!(f, "{n}"),
            Self::Uniform { lo, hi } => write!(f, "{lo}-{hi}"),
            Self::Normal { mean, std } => write!(f, "normal:{mean},{std}"),
        }
    }
}

/// Why a [`LengthDist`] spelling was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("bad length distribution {spelling:?}: {reason} (use N, LO-HI or normal:MEAN,STD)")]
pub struct ParseLengthDistError {
    spelling: String,
    reason: &'static str,
}

impl FromStr for LengthDist {
    type Err = ParseLengthDistError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseLengthDistError {
            spelling: s.to_string(),
            reason,
        };
        let t = s.trim();
        if let Some(rest) = t.strip_prefix("normal:") {
            let (m, d) = rest
                .split_once(',')
                .ok_or_else(|| err("normal needs MEAN,STD"))?;
            let mean: f64 = m.trim().parse().map_err(|_| err("mean is not a number"))?;
            let std: f64 = d.trim().parse().map_err(|_| err("std is not a number"))?;
            if !(mean.is_finite() && mean >= 1.0) {
                return Err(err("mean must be >= 1"));
            }
            if !(std.is_finite() && std >= 0.0) {
                return Err(err("std must be >= 0"));
            }
            return Ok(Self::Normal { mean, std });
        }
        let range = t.split_once("..").or_else(|| t.split_once('-'));
        if let Some((a, b)) = range {
            let lo: u64 = a.trim().parse().map_err(|_| err("LO is not an integer"))?;
            let hi: u64 = b.trim().parse().map_err(|_| err("HI is not an integer"))?;
            if lo == 0 || hi < lo {
                return Err(err("need 1 <= LO <= HI"));
            }
            return Ok(Self::Uniform { lo, hi });
        }
        let n: u64 = t.parse().map_err(|_| err("not an integer"))?;
        if n == 0 {
            return Err(err("must be >= 1"));
        }
        Ok(Self::Fixed { n })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn parses_all_spellings() {
        assert_eq!(
            "512".parse::<LengthDist>().unwrap(),
            LengthDist::Fixed { n: 512 }
        );
        assert_eq!(
            "2-6".parse::<LengthDist>().unwrap(),
            LengthDist::Uniform { lo: 2, hi: 6 }
        );
        assert_eq!(
            "2..6".parse::<LengthDist>().unwrap(),
            LengthDist::Uniform { lo: 2, hi: 6 }
        );
        assert_eq!(
            "normal:100,10".parse::<LengthDist>().unwrap(),
            LengthDist::Normal {
                mean: 100.0,
                std: 10.0
            }
        );
        for bad in ["0", "6-2", "x", "normal:5", "normal:5,-1", "-3", "0-4", ""] {
            assert!(
                bad.parse::<LengthDist>().is_err(),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["512", "2-6", "normal:100,10"] {
            let d: LengthDist = s.parse().unwrap();
            assert_eq!(d.to_string().parse::<LengthDist>().unwrap(), d);
        }
    }

    #[test]
    fn samples_stay_in_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let u = LengthDist::Uniform { lo: 3, hi: 5 };
        let n = LengthDist::Normal {
            mean: 2.0,
            std: 50.0,
        };
        for _ in 0..1000 {
            let x = u.sample(&mut rng);
            assert!((3..=5).contains(&x));
            assert!(n.sample(&mut rng) >= 1);
        }
        assert_eq!(LengthDist::Fixed { n: 7 }.sample(&mut rng), 7);
    }
}
