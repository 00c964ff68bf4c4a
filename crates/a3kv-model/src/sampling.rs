//! Next-token sampling: greedy, or temperature + top-p with a seeded RNG; and the
//! log-probabilities of a sampled token and its most likely alternatives.

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

/// Log-probabilities at one position: the chosen token's, and the `top_n` most likely.
///
/// They are log-probabilities of the model's own distribution, `log_softmax(logits)` of the
/// raw logits, before temperature and top-p (what vLLM reports by default, its
/// `raw_logprobs` mode): a token's logprob does not change with the sampling parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    /// The chosen (sampled) token.
    pub token_id: u32,
    /// Its log-probability (reported even when it is not among `top`).
    pub logprob: f32,
    /// `(token id, log-probability)` of the most likely tokens, by decreasing
    /// log-probability, ties to the lower id (so `top[0]` is the greedy token).
    pub top: Vec<(u32, f32)>,
}

/// `log(sum(exp(logits)))` around the maximum (no overflow): f32 `exp` (the cost over a
/// whole vocabulary), summed in f64; `None` when no logit is finite.
fn log_sum_exp(logits: &[f32]) -> Option<f64> {
    let max = logits
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return None;
    }
    let sum: f64 = logits
        .iter()
        .filter(|x| !x.is_nan())
        .map(|&x| f64::from((x - max).exp()))
        .sum();
    Some(f64::from(max) + sum.ln())
}

/// The whole `log_softmax` row of `logits` `[V]` (the reference [`token_logprobs`] is
/// checked against). Errors on an empty row or one with no finite logit.
pub fn log_softmax(logits: &[f32]) -> Result<Vec<f32>> {
    let lse = log_sum_exp(logits).ok_or(ModelError::EmptyInput)?;
    Ok(logits
        .iter()
        .map(|&x| (f64::from(x) - lse) as f32)
        .collect())
}

/// Log-probabilities of `chosen` and of the `top_n` most likely tokens under `logits` `[V]`.
/// One pass for the normaliser, one for the top `top_n` (a small sorted buffer), so the cost
/// is `O(V)` for the small `top_n` the API allows, without materialising the row.
///
/// Errors: an empty row or one with no finite logit ([`ModelError::EmptyInput`]), `chosen`
/// outside the row ([`ModelError::TokenOutOfRange`]).
pub fn token_logprobs(logits: &[f32], chosen: u32, top_n: usize) -> Result<TokenLogprobs> {
    let lse = log_sum_exp(logits).ok_or(ModelError::EmptyInput)?;
    let lp = |x: f32| (f64::from(x) - lse) as f32;
    let at = logits
        .get(chosen as usize)
        .copied()
        .ok_or(ModelError::TokenOutOfRange {
            id: chosen,
            vocab_size: logits.len(),
        })?;
    // Kept sorted by decreasing logit; a later equal logit goes after (ties to lower id).
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(top_n + 1);
    if top_n > 0 {
        for (i, &x) in logits.iter().enumerate() {
            if x.is_nan() || (top.len() == top_n && top.last().is_some_and(|l| x <= l.1)) {
                continue;
            }
            let pos = top.partition_point(|t| t.1 >= x);
            top.insert(pos, (i as u32, x));
            top.truncate(top_n);
        }
    }
    Ok(TokenLogprobs {
        token_id: chosen,
        logprob: lp(at),
        top: top.into_iter().map(|(i, x)| (i, lp(x))).collect(),
    })
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

    /// The fast top-N against the reference: the full log_softmax row sorted.
    fn reference_top(logits: &[f32], n: usize) -> Vec<(u32, f32)> {
        let row = log_softmax(logits).unwrap();
        let mut all: Vec<(u32, f32)> = row
            .iter()
            .enumerate()
            .map(|(i, &x)| (i as u32, x))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    fn random_logits(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.gen_range(-12.0f32..12.0)).collect()
    }

    #[test]
    fn log_softmax_is_a_distribution() {
        for seed in 0..4 {
            let logits = random_logits(5000, seed);
            let row = log_softmax(&logits).unwrap();
            let mass: f64 = row.iter().map(|&x| f64::from(x).exp()).sum();
            assert!((mass - 1.0).abs() < 1e-4, "seed {seed}: mass {mass}");
            assert!(row.iter().all(|&x| x <= 0.0));
        }
        // Large logits do not overflow; -inf entries get probability 0.
        let row = log_softmax(&[1000.0, 1000.0, f32::NEG_INFINITY]).unwrap();
        assert!((row[0] - (0.5f32).ln()).abs() < 1e-6, "{row:?}");
        assert_eq!(row[2], f32::NEG_INFINITY);
        assert!(log_softmax(&[]).is_err());
        assert!(log_softmax(&[f32::NEG_INFINITY, f32::NAN]).is_err());
    }

    #[test]
    fn token_logprobs_match_the_reference_row() {
        for (seed, n) in [(1u64, 0usize), (2, 1), (3, 5), (4, 20)] {
            let logits = random_logits(3000, seed);
            let row = log_softmax(&logits).unwrap();
            let mut s = Sampler::new(SamplingParams {
                temperature: 1.3,
                top_p: 0.9,
                seed,
            })
            .unwrap();
            let chosen = s.sample(&logits).unwrap();
            let got = token_logprobs(&logits, chosen, n).unwrap();
            assert_eq!(got.token_id, chosen);
            // The sampled token's logprob is the raw log_softmax at its id, whatever the
            // temperature and top-p of the sampler.
            assert!((got.logprob - row[chosen as usize]).abs() < 1e-6);
            let want = reference_top(&logits, n);
            assert_eq!(got.top.len(), n);
            for (g, w) in got.top.iter().zip(&want) {
                assert_eq!(g.0, w.0, "seed {seed}");
                assert!((g.1 - w.1).abs() < 1e-6, "seed {seed}: {g:?} vs {w:?}");
            }
            assert!(got.top.windows(2).all(|w| w[0].1 >= w[1].1), "sorted");
            if n > 0 {
                // Greedy decoding picks the top-1 alternative.
                assert_eq!(Some(got.top[0].0), argmax(&logits));
            }
        }
    }

    #[test]
    fn token_logprobs_edge_cases() {
        // Ties go to the lower id, as argmax does; top_n beyond the vocabulary gives all.
        let l = [2.0, 5.0, 5.0, f32::NAN, 1.0];
        let got = token_logprobs(&l, 4, 10).unwrap();
        let ids: Vec<u32> = got.top.iter().map(|t| t.0).collect();
        assert_eq!(ids, vec![1, 2, 0, 4]);
        assert_eq!(Some(ids[0]), argmax(&l));
        // The chosen token is reported even outside the top-N.
        let got = token_logprobs(&l, 4, 1).unwrap();
        assert_eq!(got.top.len(), 1);
        assert!(got.logprob < got.top[0].1);
        let mut greedy = Sampler::new(SamplingParams::default()).unwrap();
        let g = greedy.sample(&l).unwrap();
        assert_eq!(token_logprobs(&l, g, 1).unwrap().top[0].0, g);
        assert!(matches!(
            token_logprobs(&l, 5, 1),
            Err(ModelError::TokenOutOfRange {
                id: 5,
                vocab_size: 5
            })
        ));
        assert!(token_logprobs(&[], 0, 1).is_err());
    }
}
