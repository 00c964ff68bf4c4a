//! `Trace`: when requests are sent and when sending stops. Generated up front, purely from the
//! seed, separately from sending; `--compare` replays one trace once per method.

use serde::Serialize;

use crate::arrival::ArrivalProcess;
use crate::workload::{rng_for, STREAM_ARRIVAL};
use crate::LoadgenError;

/// Upper bound on planned open-loop arrivals, so a typo in `--rate` cannot exhaust memory.
const MAX_PLANNED_ARRIVALS: f64 = 10_000_000.0;

/// When sending stops: after `max_requests` requests or `duration_secs` seconds, whichever
/// comes first (at least one is set).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StopRule {
    /// Stop after this many requests have been sent.
    pub max_requests: Option<usize>,
    /// Stop sending this many seconds after the start.
    pub duration_secs: Option<f64>,
}

impl StopRule {
    /// Checks that at least one bound is set and that the bounds are sane.
    pub fn validate(&self) -> Result<(), LoadgenError> {
        if self.max_requests.is_none() && self.duration_secs.is_none() {
            return Err(LoadgenError::InvalidArgs(
                "give --duration-secs or --num-requests (or both)".into(),
            ));
        }
        if self.max_requests == Some(0) {
            return Err(LoadgenError::InvalidArgs(
                "--num-requests must be >= 1".into(),
            ));
        }
        if let Some(d) = self.duration_secs {
            if !(d.is_finite() && d > 0.0) {
                return Err(LoadgenError::InvalidArgs(format!(
                    "--duration-secs must be a finite number > 0, got {d}"
                )));
            }
        }
        Ok(())
    }
}

/// The arrival side of a run: the process, the stop rule, and for open loop the planned send
/// times (seconds from the start, ascending).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    /// The arrival process.
    pub arrival: ArrivalProcess,
    /// When sending stops.
    pub stop: StopRule,
    /// Planned send times for open loop; `None` for closed loop.
    #[serde(skip)]
    pub send_offsets_secs: Option<Vec<f64>>,
}

impl Trace {
    /// Generates the trace for `seed`. Errors with [`LoadgenError::InvalidArgs`] on invalid
    /// arrival parameters or stop rule, or when more than 10 million arrivals would be planned.
    pub fn generate(
        arrival: ArrivalProcess,
        stop: StopRule,
        seed: u64,
    ) -> Result<Self, LoadgenError> {
        arrival.validate()?;
        stop.validate()?;
        if let (Some(rate), None, Some(d)) = (
            arrival.rate_per_sec(),
            stop.max_requests,
            stop.duration_secs,
        ) {
            if rate * d > MAX_PLANNED_ARRIVALS {
                return Err(LoadgenError::InvalidArgs(format!(
                    "--rate {rate} x --duration-secs {d} plans more than {MAX_PLANNED_ARRIVALS} requests"
                )));
            }
        }
        let mut rng = rng_for(seed, STREAM_ARRIVAL, 0);
        let send_offsets_secs =
            arrival.open_loop_offsets(&mut rng, stop.max_requests, stop.duration_secs);
        Ok(Self {
            arrival,
            stop,
            send_offsets_secs,
        })
    }

    /// Number of requests that will be sent, when known in advance (open loop, or closed loop
    /// with a request count and no duration).
    pub fn planned_requests(&self) -> Option<usize> {
        match &self.send_offsets_secs {
            Some(v) => Some(v.len()),
            None if self.stop.duration_secs.is_none() => self.stop.max_requests,
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_trace() {
        let a = ArrivalProcess::Poisson { rate_per_sec: 10.0 };
        let stop = StopRule {
            max_requests: None,
            duration_secs: Some(5.0),
        };
        let t1 = Trace::generate(a, stop, 1).unwrap();
        let t2 = Trace::generate(a, stop, 1).unwrap();
        let t3 = Trace::generate(a, stop, 2).unwrap();
        assert_eq!(t1, t2);
        assert_ne!(t1.send_offsets_secs, t3.send_offsets_secs);
        assert_eq!(
            t1.planned_requests(),
            t1.send_offsets_secs.as_ref().map(Vec::len)
        );
    }

    #[test]
    fn closed_loop_and_validation() {
        let c = ArrivalProcess::ClosedLoop { concurrency: 3 };
        let t = Trace::generate(
            c,
            StopRule {
                max_requests: Some(7),
                duration_secs: None,
            },
            0,
        )
        .unwrap();
        assert_eq!(t.planned_requests(), Some(7));
        let none = StopRule {
            max_requests: None,
            duration_secs: None,
        };
        assert!(Trace::generate(c, none, 0).is_err());
        let huge = StopRule {
            max_requests: None,
            duration_secs: Some(1e9),
        };
        assert!(Trace::generate(ArrivalProcess::Poisson { rate_per_sec: 1.0 }, huge, 0).is_err());
    }
}
