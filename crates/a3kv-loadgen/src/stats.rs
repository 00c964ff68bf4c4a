//! Statistics over request records: percentiles (linear interpolation, numpy's default),
//! latency distributions, throughput over the measured window, goodput against the SLOs, and
//! error counts by kind. Warm-up requests are excluded here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::record::RequestRecord;

/// Shortest window used for rates, so a run of one instant request does not divide by zero.
const MIN_WINDOW_SECS: f64 = 1e-6;

/// The `q`-quantile (`0..=1`) of ascending `sorted`, interpolating linearly; `NaN` if empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            let frac = pos - lo as f64;
            sorted[lo] + (sorted[hi] - sorted[lo]) * frac
        }
    }
}

/// Summary of one latency (seconds) or count distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// Number of samples.
    pub count: usize,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
}

impl Distribution {
    /// Summarises the finite values of `values`; `None` if there are none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Self {
            count: v.len(),
            mean: v.iter().sum::<f64>() / v.len() as f64,
            p50: percentile(&v, 0.5),
            p90: percentile(&v, 0.9),
            p99: percentile(&v, 0.99),
            max: v[v.len() - 1],
        })
    }
}

/// Service-level objectives; a request is "good" when it succeeded and meets every set bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    /// Bound on TTFT, seconds.
    pub ttft_secs: Option<f64>,
    /// Bound on TPOT, seconds (requests of fewer than two tokens have no TPOT and pass it).
    pub tpot_secs: Option<f64>,
}

impl Slo {
    /// True when at least one bound is set.
    pub fn is_set(&self) -> bool {
        self.ttft_secs.is_some() || self.tpot_secs.is_some()
    }

    /// Whether `r` succeeded within the bounds.
    pub fn met_by(&self, r: &RequestRecord) -> bool {
        if !r.ok() {
            return false;
        }
        let ttft_ok = match (self.ttft_secs, r.ttft_secs) {
            (None, _) => true,
            (Some(b), Some(t)) => t <= b,
            (Some(_), None) => false,
        };
        let tpot_ok = match (self.tpot_secs, r.tpot_secs()) {
            (Some(b), Some(t)) => t <= b,
            _ => true,
        };
        ttft_ok && tpot_ok
    }
}

/// Totals of the server's `usage.fusion` over the measured requests that reported it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FusionTotals {
    /// Requests that reported `usage.fusion`.
    pub requests: usize,
    /// Sum of reused document tokens.
    pub reused_tokens: u64,
    /// Sum of recomputed document tokens.
    pub recomputed_tokens: u64,
    /// recomputed / (reused + recomputed) over the sums.
    pub recompute_ratio: f64,
}

/// The statistics of one run (warm-up excluded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Requests sent, warm-up included.
    pub sent: usize,
    /// Requests sent during warm-up (excluded below).
    pub warmup_requests: usize,
    /// Requests measured (sent after warm-up).
    pub measured: usize,
    /// Measured requests that succeeded.
    pub succeeded: usize,
    /// Measured requests that failed (cancellations by design excluded).
    pub failed: usize,
    /// Measured requests the client abandoned on purpose (`--cancel-fraction`).
    #[serde(default)]
    pub cancelled: usize,
    /// Failures by kind label (`http_429`, `timeout`, ..).
    pub errors: BTreeMap<String, usize>,
    /// Measured window: from the end of warm-up to the last measured completion, seconds.
    pub window_secs: f64,
    /// Successful requests per second.
    pub request_throughput: f64,
    /// Output tokens of successful requests per second.
    pub output_token_throughput: f64,
    /// Prompt + output tokens of successful requests per second (prompt when reported).
    pub total_token_throughput: f64,
    /// Requests per second meeting the SLO; `None` without an SLO.
    pub goodput: Option<f64>,
    /// Fraction of measured requests meeting the SLO (failures count as misses).
    pub slo_attainment: Option<f64>,
    /// Time to first token, seconds.
    pub ttft_secs: Option<Distribution>,
    /// Time per output token after the first, seconds.
    pub tpot_secs: Option<Distribution>,
    /// Inter-token latency (gaps between content deltas), seconds.
    pub itl_secs: Option<Distribution>,
    /// End-to-end latency, seconds.
    pub e2e_secs: Option<Distribution>,
    /// Output tokens per successful request.
    pub output_tokens: Option<Distribution>,
    /// Sum of output tokens of successful requests.
    pub output_tokens_total: u64,
    /// Sum of reported prompt tokens of successful requests.
    pub prompt_tokens_total: u64,
    /// Fusion usage totals, when the server reports them.
    pub fusion: Option<FusionTotals>,
}

impl RunSummary {
    /// Summarises `records`; those flagged `warmup` are only counted. `measure_start_secs` is
    /// the end of warm-up (0 without warm-up), the start of the throughput window.
    pub fn from_records(records: &[RequestRecord], measure_start_secs: f64, slo: &Slo) -> Self {
        let measured: Vec<&RequestRecord> = records.iter().filter(|r| !r.warmup).collect();
        let ok: Vec<&RequestRecord> = measured.iter().copied().filter(|r| r.ok()).collect();
        let cancelled = measured.iter().filter(|r| r.cancelled()).count();
        let mut errors = BTreeMap::new();
        for r in measured.iter().filter(|r| !r.cancelled()) {
            if let Some(k) = r.error {
                *errors.entry(k.as_str().to_string()).or_insert(0) += 1;
            }
        }
        let end = measured
            .iter()
            .map(|r| r.sent_at_secs + r.e2e_secs)
            .fold(measure_start_secs, f64::max);
        let window_secs = (end - measure_start_secs).max(MIN_WINDOW_SECS);
        let output_tokens_total: u64 = ok.iter().map(|r| r.output_tokens).sum();
        let prompt_tokens_total: u64 = ok.iter().filter_map(|r| r.prompt_tokens).sum();
        let good = measured.iter().filter(|r| slo.met_by(r)).count();
        let slo_set = slo.is_set();
        let fusion = fusion_totals(&measured);
        Self {
            sent: records.len(),
            warmup_requests: records.len() - measured.len(),
            measured: measured.len(),
            succeeded: ok.len(),
            failed: measured.len() - ok.len() - cancelled,
            cancelled,
            errors,
            window_secs,
            request_throughput: ok.len() as f64 / window_secs,
            output_token_throughput: output_tokens_total as f64 / window_secs,
            total_token_throughput: (output_tokens_total + prompt_tokens_total) as f64
                / window_secs,
            goodput: slo_set.then(|| good as f64 / window_secs),
            // Cancelled requests were never meant to finish: not counted as misses.
            slo_attainment: (slo_set && measured.len() > cancelled)
                .then(|| good as f64 / (measured.len() - cancelled) as f64),
            ttft_secs: Distribution::of(ok.iter().filter_map(|r| r.ttft_secs)),
            tpot_secs: Distribution::of(ok.iter().filter_map(|r| r.tpot_secs())),
            itl_secs: Distribution::of(ok.iter().flat_map(|r| r.itl_secs.iter().copied())),
            e2e_secs: Distribution::of(ok.iter().map(|r| r.e2e_secs)),
            output_tokens: Distribution::of(ok.iter().map(|r| r.output_tokens as f64)),
            output_tokens_total,
            prompt_tokens_total,
            fusion,
        }
    }
}

fn fusion_totals(measured: &[&RequestRecord]) -> Option<FusionTotals> {
    let with: Vec<_> = measured.iter().filter_map(|r| r.fusion.as_ref()).collect();
    if with.is_empty() {
        return None;
    }
    let reused: u64 = with.iter().map(|f| f.reused_tokens).sum();
    let recomputed: u64 = with.iter().map(|f| f.recomputed_tokens).sum();
    let total = reused + recomputed;
    Some(FusionTotals {
        requests: with.len(),
        reused_tokens: reused,
        recomputed_tokens: recomputed,
        recompute_ratio: if total == 0 {
            0.0
        } else {
            recomputed as f64 / total as f64
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RequestErrorKind;

    #[test]
    fn percentiles_interpolate() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((percentile(&v, 0.5) - 50.5).abs() < 1e-12);
        assert!((percentile(&v, 0.99) - 99.01).abs() < 1e-9);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[3.0], 0.9), 3.0);
        assert!(percentile(&[], 0.5).is_nan());
        let d = Distribution::of([3.0, 1.0, f64::NAN, 2.0]).unwrap();
        assert_eq!((d.count, d.p50, d.max, d.mean), (3, 2.0, 3.0, 2.0));
    }

    fn rec(
        sent: f64,
        ttft: f64,
        e2e: f64,
        tokens: u64,
        err: Option<RequestErrorKind>,
    ) -> RequestRecord {
        RequestRecord {
            sent_at_secs: sent,
            ttft_secs: Some(ttft),
            e2e_secs: e2e,
            output_tokens: tokens,
            error: err,
            ..Default::default()
        }
    }

    #[test]
    fn summary_excludes_warmup_counts_errors_and_goodput() {
        let mut warm = rec(0.1, 5.0, 6.0, 10, None);
        warm.warmup = true;
        let records = vec![
            warm,
            rec(1.0, 0.1, 1.0, 10, None), // tpot 0.1
            rec(1.5, 0.5, 1.4, 10, None), // ttft misses 0.2
            rec(2.0, 0.1, 2.0, 2, None),  // tpot 1.9 misses 0.5
            rec(2.5, 0.0, 0.5, 0, Some(RequestErrorKind::Http429)),
            rec(3.0, 0.0, 1.0, 0, Some(RequestErrorKind::Timeout)),
        ];
        let slo = Slo {
            ttft_secs: Some(0.2),
            tpot_secs: Some(0.5),
        };
        let s = RunSummary::from_records(&records, 1.0, &slo);
        assert_eq!(
            (s.sent, s.warmup_requests, s.measured, s.succeeded, s.failed),
            (6, 1, 5, 3, 2)
        );
        assert_eq!(s.errors.get("http_429"), Some(&1));
        assert_eq!(s.errors.get("timeout"), Some(&1));
        assert!(
            (s.window_secs - 3.0).abs() < 1e-12,
            "window {}",
            s.window_secs
        );
        assert!((s.request_throughput - 1.0).abs() < 1e-12);
        assert!((s.goodput.unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert!((s.slo_attainment.unwrap() - 0.2).abs() < 1e-12);
        assert_eq!(s.ttft_secs.unwrap().count, 3);
        assert_eq!(s.output_tokens_total, 22);
        let none = RunSummary::from_records(&records, 1.0, &Slo::default());
        assert_eq!(none.cancelled, 0);
        // A cancellation by design is neither a success nor a failure nor an SLO miss.
        let mut with_cancel = records.clone();
        with_cancel.push(rec(3.5, 0.0, 0.2, 1, Some(RequestErrorKind::Cancelled)));
        let c = RunSummary::from_records(&with_cancel, 1.0, &slo);
        assert_eq!(
            (c.measured, c.succeeded, c.failed, c.cancelled),
            (6, 3, 2, 1)
        );
        assert_eq!(c.errors.get("cancelled"), None);
        assert!((c.slo_attainment.unwrap() - 0.2).abs() < 1e-12);
        assert_eq!((none.goodput, none.slo_attainment), (None, None));
    }
}
