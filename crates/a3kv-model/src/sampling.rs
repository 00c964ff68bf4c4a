//! Next-token sampling: greedy, or temperature + top-p with a seeded RNG.

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::{ModelError, Result};

/// Sampling parameters. `temperature == 0` means greedy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Softmax temperature; 0 = greedy argmax.
    pub temperature: f32,
    /// Nucleus mass in (0, 1].
    pub top_p: f32,
    /// RNG seed.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(ModelError::BadArgument(format!(
                "temperature {} must be >= 0",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(ModelError::BadArgument(format!(
                "top_p {} must be in (0, 1]",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// Index of the largest logit (ties to the lower index); `None` for an empty slice.
pub fn argmax(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in logits.iter().enumerate() {
        if best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    best.map(|(i, _)| i as u32)
}

/// A stateful sampler (owns its RNG).
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    /// New sampler; errors on out-of-range parameters.
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        Ok(Self {
            params,
            rng: StdRng::seed_from_u64(params.seed),
        })
    }

    /// Picks the next token from `logits` `[V]`.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32> {
        if self.params.temperature == 0.0 {
            return argmax(logits).ok_or(ModelError::EmptyInput);
        }
        let t = self.params.temperature;
        let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &x)| (i as u32, ((x - max) / t).exp()))
            .collect();
        let total: f32 = probs.iter().map(|p| p.1).sum();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut kept = Vec::new();
        let mut mass = 0.0;
        for (i, p) in probs {
            kept.push((i, p / total));
            mass += p / total;
            if mass >= self.params.top_p {
                break;
            }
        }
        let r: f32 = self.rng.gen::<f32>() * mass;
        let mut acc = 0.0;
        for &(i, p) in &kept {
            acc += p;
            if acc >= r {
                return Ok(i);
            }
        }
        kept.last().map(|k| k.0).ok_or(ModelError::EmptyInput)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_seeded_sampling() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), Some(1));
        let mut s = Sampler::new(SamplingParams::default()).unwrap();
        assert_eq!(s.sample(&[0.0, 5.0, 1.0]).unwrap(), 1);
        let p = SamplingParams {
            temperature: 1.0,
            top_p: 0.9,
            seed: 7,
        };
        let a: Vec<u32> = {
            let mut s = Sampler::new(p).unwrap();
            (0..20)
                .map(|_| s.sample(&[1.0, 1.0, 1.0, -9.0]).unwrap())
                .collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(p).unwrap();
            (0..20)
                .map(|_| s.sample(&[1.0, 1.0, 1.0, -9.0]).unwrap())
                .collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().all(|&i| i < 3), "top-p must cut the tail");
        assert!(Sampler::new(SamplingParams { top_p: 0.0, ..p }).is_err());
        assert!(Sampler::new(SamplingParams {
            temperature: -1.0,
            ..p
        })
        .is_err());
    }
}
