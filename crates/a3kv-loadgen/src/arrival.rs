//! Arrival processes: when each request is sent.
//!
//! Open loop: inter-arrival gaps are drawn up front (Poisson = exponential gaps; gamma with
//! shape = burstiness, which keeps the mean rate and sets the coefficient of variation to
//! `1 / sqrt(burstiness)`, so burstiness < 1 is burstier than Poisson). Closed loop: a fixed
//! number of clients each send the next request as soon as their previous one ends.

use rand::Rng;
use rand_distr::{Distribution, Exp, Gamma};
use serde::Serialize;

use crate::LoadgenError;

/// How requests arrive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ArrivalProcess {
    /// Open loop, exponential gaps with mean `1 / rate_per_sec`.
    Poisson {
        /// Mean requests per second (> 0).
        rate_per_sec: f64,
    },
    /// Open loop, gamma gaps with shape `burstiness` and mean `1 / rate_per_sec`.
    Gamma {
        /// Mean requests per second (> 0).
        rate_per_sec: f64,
        /// Gamma shape (> 0); 1 is Poisson, < 1 burstier, > 1 smoother.
        burstiness: f64,
    },
    /// Closed loop: `concurrency` clients, each sending back to back.
    ClosedLoop {
        /// Number of requests in flight at all times (>= 1).
        concurrency: usize,
    },
}

impl ArrivalProcess {
    /// Checks the parameters; errors name the offending flag.
    pub fn validate(&self) -> Result<(), LoadgenError> {
        let bad = |m: String| Err(LoadgenError::InvalidArgs(m));
        match *self {
            Self::Poisson { rate_per_sec } | Self::Gamma { rate_per_sec, .. }
                if !(rate_per_sec.is_finite() && rate_per_sec > 0.0) =>
            {
                bad(format!(
                    "--rate must be a finite number > 0, got {rate_per_sec}"
                ))
            }
            Self::Gamma { burstiness, .. } if !(burstiness.is_finite() && burstiness > 0.0) => bad(
                format!("--burstiness must be a finite number > 0, got {burstiness}"),
            ),
            Self::ClosedLoop { concurrency: 0 } => bad("--concurrency must be >= 1".into()),
            _ => Ok(()),
        }
    }

    /// The mean rate for open-loop processes; `None` for closed loop.
    pub fn rate_per_sec(&self) -> Option<f64> {
        match *self {
            Self::Poisson { rate_per_sec } | Self::Gamma { rate_per_sec, .. } => Some(rate_per_sec),
            Self::ClosedLoop { .. } => None,
        }
    }

    /// The same process at another mean rate (closed loop is returned unchanged).
    pub fn with_rate(&self, rate_per_sec: f64) -> Self {
        match *self {
            Self::Poisson { .. } => Self::Poisson { rate_per_sec },
            Self::Gamma { burstiness, .. } => Self::Gamma {
                rate_per_sec,
                burstiness,
            },
            c @ Self::ClosedLoop { .. } => c,
        }
    }

    /// Send times in seconds from the start of the run, for open-loop processes.
    ///
    /// Stops at `max_count` arrivals or at the first arrival past `max_secs`, whichever comes
    /// first; at least one of the two must be `Some` (else an empty schedule is returned).
    /// Returns `None` for closed loop, whose send times depend on the server.
    /// Pure: the same `rng` state gives the same schedule.
    pub fn open_loop_offsets<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        max_count: Option<usize>,
        max_secs: Option<f64>,
    ) -> Option<Vec<f64>> {
        let gap: Box<dyn Fn(&mut R) -> f64> = match *self {
            Self::ClosedLoop { .. } => return None,
            Self::Poisson { rate_per_sec } => match Exp::new(rate_per_sec) {
                Ok(d) => Box::new(move |r: &mut R| d.sample(r)),
                Err(_) => return Some(Vec::new()),
            },
            Self::Gamma {
                rate_per_sec,
                burstiness,
            } => match Gamma::new(burstiness, 1.0 / (rate_per_sec * burstiness)) {
                Ok(d) => Box::new(move |r: &mut R| d.sample(r)),
                Err(_) => return Some(Vec::new()),
            },
        };
        if max_count.is_none() && max_secs.is_none() {
            return Some(Vec::new());
        }
        let mut out = Vec::new();
        let mut t = 0.0;
        loop {
            if max_count.is_some_and(|n| out.len() >= n) {
                break;
            }
            t += gap(rng);
            if max_secs.is_some_and(|d| t > d) {
                break;
            }
            out.push(t);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn gaps(p: ArrivalProcess, n: usize, seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let t = p.open_loop_offsets(&mut rng, Some(n), None).unwrap();
        assert_eq!(t.len(), n);
        let mut prev = 0.0;
        t.iter()
            .map(|&x| {
                let g = x - prev;
                prev = x;
                g
            })
            .collect()
    }

    fn mean_cv(g: &[f64]) -> (f64, f64) {
        let n = g.len() as f64;
        let mean = g.iter().sum::<f64>() / n;
        let var = g.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var.sqrt() / mean)
    }

    #[test]
    fn poisson_mean_rate_within_5_percent() {
        let rate = 8.0;
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let t = ArrivalProcess::Poisson { rate_per_sec: rate }
            .open_loop_offsets(&mut rng, Some(2000), None)
            .unwrap();
        let measured = t.len() as f64 / t[t.len() - 1];
        assert!(
            (measured / rate - 1.0).abs() < 0.05,
            "measured {measured}, want {rate}"
        );
        let (_, cv) = mean_cv(&gaps(
            ArrivalProcess::Poisson { rate_per_sec: rate },
            2000,
            42,
        ));
        assert!((cv - 1.0).abs() < 0.1, "poisson cv {cv}");
    }

    #[test]
    fn gamma_keeps_rate_and_bursty_has_higher_cv() {
        let rate = 8.0;
        let poisson = gaps(ArrivalProcess::Poisson { rate_per_sec: rate }, 2000, 42);
        let bursty = gaps(
            ArrivalProcess::Gamma {
                rate_per_sec: rate,
                burstiness: 0.25,
            },
            2000,
            42,
        );
        let smooth = gaps(
            ArrivalProcess::Gamma {
                rate_per_sec: rate,
                burstiness: 4.0,
            },
            2000,
            42,
        );
        let (pm, pcv) = mean_cv(&poisson);
        let (bm, bcv) = mean_cv(&bursty);
        let (_, scv) = mean_cv(&smooth);
        assert!(
            (1.0 / bm / rate - 1.0).abs() < 0.1,
            "gamma rate {}",
            1.0 / bm
        );
        assert!((1.0 / pm / rate - 1.0).abs() < 0.05);
        assert!(bcv > pcv * 1.5, "bursty cv {bcv} vs poisson {pcv}");
        assert!(scv < pcv, "smooth cv {scv} vs poisson {pcv}");
    }

    #[test]
    fn same_seed_same_schedule_and_duration_bound() {
        let p = ArrivalProcess::Gamma {
            rate_per_sec: 5.0,
            burstiness: 0.5,
        };
        let a = p.open_loop_offsets(&mut ChaCha8Rng::seed_from_u64(9), None, Some(10.0));
        let b = p.open_loop_offsets(&mut ChaCha8Rng::seed_from_u64(9), None, Some(10.0));
        assert_eq!(a, b);
        let a = a.unwrap();
        assert!(a.iter().all(|&t| t <= 10.0));
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
        let c = ArrivalProcess::ClosedLoop { concurrency: 2 };
        assert!(c
            .open_loop_offsets(&mut ChaCha8Rng::seed_from_u64(9), Some(3), None)
            .is_none());
    }

    #[test]
    fn validate_rejects_bad_values() {
        assert!(ArrivalProcess::Poisson { rate_per_sec: 0.0 }
            .validate()
            .is_err());
        assert!(ArrivalProcess::Gamma {
            rate_per_sec: 1.0,
            burstiness: 0.0
        }
        .validate()
        .is_err());
        assert!(ArrivalProcess::ClosedLoop { concurrency: 0 }
            .validate()
            .is_err());
        assert!(ArrivalProcess::Poisson { rate_per_sec: 2.0 }
            .validate()
            .is_ok());
    }
}
