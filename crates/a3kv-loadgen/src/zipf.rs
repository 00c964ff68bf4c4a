//! `ZipfSampler`: document popularity. Rank `k` (1-based) out of `n` is drawn with probability
//! proportional to `1 / k^s`; `s = 0` is uniform, larger `s` concentrates traffic on the few
//! most popular documents (the regime where a chunk cache pays off).

use rand::Rng;

use crate::LoadgenError;

/// Samples 0-based ranks `0..n` with Zipf weights `1 / (rank + 1)^exponent`.
///
/// Built once (an `O(n)` cumulative table), then each draw is a binary search.
#[derive(Debug, Clone)]
pub struct ZipfSampler {
    /// `cdf[i]` = P(rank <= i); the last entry is 1.
    cdf: Vec<f64>,
    exponent: f64,
}

impl ZipfSampler {
    /// A sampler over `n` ranks.
    ///
    /// Errors with [`LoadgenError::InvalidArgs`] when `n == 0` or `exponent` is negative or
    /// not finite.
    pub fn new(n: usize, exponent: f64) -> Result<Self, LoadgenError> {
        if n == 0 {
            return Err(LoadgenError::InvalidArgs("--num-docs must be >= 1".into()));
        }
        if !(exponent.is_finite() && exponent >= 0.0) {
            return Err(LoadgenError::InvalidArgs(format!(
                "--zipf must be a finite number >= 0, got {exponent}"
            )));
        }
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += (k as f64).powf(-exponent);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        if let Some(last) = cdf.last_mut() {
            *last = 1.0;
        }
        Ok(Self { cdf, exponent })
    }

    /// Number of ranks.
    pub fn len(&self) -> usize {
        self.cdf.len()
    }

    /// Always false: a sampler has at least one rank.
    pub fn is_empty(&self) -> bool {
        self.cdf.is_empty()
    }

    /// The exponent `s`.
    pub fn exponent(&self) -> f64 {
        self.exponent
    }

    /// Draws one 0-based rank (0 is the most popular).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let u: f64 = rng.gen();
        let i = self.cdf.partition_point(|&c| c <= u);
        i.min(self.cdf.len() - 1)
    }

    /// Draws `k` distinct ranks (`k` is clamped to `len()`), in draw order.
    ///
    /// Rejection sampling with a bounded number of tries; if popularity is so skewed that
    /// tries run out, the remaining slots are filled with the most popular unused ranks, so
    /// the call always terminates with exactly `min(k, len)` ranks.
    pub fn sample_distinct<R: Rng + ?Sized>(&self, rng: &mut R, k: usize) -> Vec<usize> {
        let k = k.min(self.len());
        let mut out: Vec<usize> = Vec::with_capacity(k);
        let mut tries = 0usize;
        let max_tries = 64 * k + 64;
        while out.len() < k && tries < max_tries {
            tries += 1;
            let r = self.sample(rng);
            if !out.contains(&r) {
                out.push(r);
            }
        }
        let mut next = 0usize;
        while out.len() < k {
            if !out.contains(&next) {
                out.push(next);
            }
            next += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn counts(n: usize, s: f64, draws: usize) -> Vec<usize> {
        let z = ZipfSampler::new(n, s).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut c = vec![0usize; n];
        for _ in 0..draws {
            c[z.sample(&mut rng)] += 1;
        }
        c
    }

    #[test]
    fn rank1_to_rank2_ratio_matches_exponent() {
        for s in [0.8, 1.0, 1.5] {
            let c = counts(100, s, 200_000);
            let ratio = c[0] as f64 / c[1] as f64;
            let want = 2f64.powf(s);
            assert!(
                (ratio / want - 1.0).abs() < 0.05,
                "s={s}: rank1/rank2 = {ratio}, want {want}"
            );
            // Rank 1 vs rank 4 as well: 4^s.
            let r14 = c[0] as f64 / c[3] as f64;
            assert!((r14 / 4f64.powf(s) - 1.0).abs() < 0.1, "s={s}: r14={r14}");
        }
    }

    #[test]
    fn exponent_zero_is_uniform() {
        let c = counts(10, 0.0, 100_000);
        for &x in &c {
            assert!((x as f64 / 10_000.0 - 1.0).abs() < 0.05, "{c:?}");
        }
    }

    #[test]
    fn distinct_draws_are_distinct_and_terminate() {
        let z = ZipfSampler::new(5, 20.0).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut v = z.sample_distinct(&mut rng, 5);
        v.sort_unstable();
        assert_eq!(v, vec![0, 1, 2, 3, 4]);
        assert_eq!(z.sample_distinct(&mut rng, 9).len(), 5);
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(ZipfSampler::new(0, 1.0).is_err());
        assert!(ZipfSampler::new(3, -1.0).is_err());
        assert!(ZipfSampler::new(3, f64::NAN).is_err());
    }
}
