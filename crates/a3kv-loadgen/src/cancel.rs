//! Cancellation by design (`--cancel-fraction`): a share of requests is abandoned by the
//! client mid-flight, as users close tabs, so a server's cancellation path runs under load.
//! Which requests, and where each is cut, is a pure function of `(seed, index)`: half of the
//! chosen requests drop the connection right after their first content token, the other half
//! after a random delay from sending (often while still queued or in prefill). Such requests
//! are counted as `cancelled`, apart from failures.

use rand::Rng;
use serde::Serialize;

use crate::workload::rng_for;

/// RNG stream of the cancellation draws (independent of the request contents).
const STREAM_CANCEL: u64 = 5;

/// Where the client abandons one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CancelAt {
    /// Right after the first non-empty content delta arrives.
    FirstToken,
    /// This many seconds after sending, whatever has arrived by then.
    AfterSecs(f64),
}

/// Which requests are cancelled and where.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CancelPlan {
    /// Share of requests cancelled, in `[0, 1]`.
    pub fraction: f64,
    /// Upper bound of the delay of time-based cancellations, seconds.
    pub max_delay_secs: f64,
    /// The run's seed.
    pub seed: u64,
}

impl CancelPlan {
    /// No request is cancelled.
    pub fn none() -> Self {
        Self {
            fraction: 0.0,
            max_delay_secs: 0.0,
            seed: 0,
        }
    }

    /// Whether and where request `index` is cancelled.
    pub fn for_request(&self, index: usize) -> Option<CancelAt> {
        if self.fraction <= 0.0 {
            return None;
        }
        let mut rng = rng_for(self.seed, STREAM_CANCEL, index as u64);
        if rng.gen::<f64>() >= self.fraction {
            return None;
        }
        if rng.gen::<bool>() || self.max_delay_secs <= 0.0 {
            Some(CancelAt::FirstToken)
        } else {
            Some(CancelAt::AfterSecs(rng.gen_range(0.0..self.max_delay_secs)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_and_kinds_follow_the_seed() {
        let plan = CancelPlan {
            fraction: 0.3,
            max_delay_secs: 2.0,
            seed: 9,
        };
        let draws: Vec<Option<CancelAt>> = (0..4000).map(|i| plan.for_request(i)).collect();
        let cancelled = draws.iter().flatten().count() as f64 / draws.len() as f64;
        assert!((cancelled - 0.3).abs() < 0.03, "{cancelled}");
        let first = draws
            .iter()
            .flatten()
            .filter(|c| **c == CancelAt::FirstToken)
            .count();
        let timed: Vec<f64> = draws
            .iter()
            .flatten()
            .filter_map(|c| match c {
                CancelAt::AfterSecs(s) => Some(*s),
                CancelAt::FirstToken => None,
            })
            .collect();
        assert!(first > 400 && timed.len() > 400, "{first} {}", timed.len());
        assert!(timed.iter().all(|s| (0.0..2.0).contains(s)));
        // Pure in (seed, index); another seed picks other requests.
        assert_eq!(plan.for_request(17), plan.for_request(17));
        let other = CancelPlan { seed: 10, ..plan };
        assert!((0..200).any(|i| plan.for_request(i) != other.for_request(i)));
        assert!((0..1000).all(|i| CancelPlan::none().for_request(i).is_none()));
        let all = CancelPlan {
            fraction: 1.0,
            ..plan
        };
        assert!((0..1000).all(|i| all.for_request(i).is_some()));
    }
}
