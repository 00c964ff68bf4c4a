//! `--sweep-rate`: runs each rate (ascending) for each method and finds the highest rate whose
//! SLO attainment reaches `--slo-attainment` (a Pareto table of rate vs method). A method
//! stops at its first failing rate: load beyond a failing rate only fails harder.

use std::fmt::Write as _;

use serde::Serialize;

use crate::report::{fmt_num, RunReport};
use crate::session::Session;
use crate::stats::Slo;
use crate::trace::Trace;
use crate::LoadgenError;

/// One (method, rate) measurement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepPoint {
    /// Mean arrival rate, requests per second.
    pub rate_per_sec: f64,
    /// Fraction of measured requests meeting the SLO.
    pub slo_attainment: f64,
    /// Requests per second meeting the SLO.
    pub goodput: f64,
    /// p99 TTFT, milliseconds.
    pub ttft_p99_ms: Option<f64>,
    /// p99 TPOT, milliseconds.
    pub tpot_p99_ms: Option<f64>,
    /// Failed requests.
    pub errors: usize,
    /// `slo_attainment >= threshold`.
    pub passed: bool,
}

/// The sweep of one method.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepMethod {
    /// `fusion.method` sent (`None`: not sent).
    pub method: Option<String>,
    /// Points in ascending rate, up to and including the first failure.
    pub points: Vec<SweepPoint>,
    /// Highest passing rate, requests per second.
    pub best_rate_per_sec: Option<f64>,
    /// `best_rate_per_sec` / the first method's.
    pub best_rate_ratio: Option<f64>,
}

/// The Pareto table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepReport {
    /// Rates tried, ascending.
    pub rates: Vec<f64>,
    /// The SLO.
    pub slo: Slo,
    /// Pass threshold on attainment.
    pub slo_attainment: f64,
    /// One entry per method; the first is the baseline of the ratios.
    pub methods: Vec<SweepMethod>,
}

fn method_name(m: &Option<String>) -> &str {
    m.as_deref().unwrap_or("default")
}

impl SweepReport {
    /// Fills `best_rate_ratio` of every method relative to the first.
    fn set_ratios(&mut self) {
        let base = self.methods.first().and_then(|m| m.best_rate_per_sec);
        for m in &mut self.methods {
            m.best_rate_ratio = match (m.best_rate_per_sec, base) {
                (Some(r), Some(b)) if b > 0.0 => Some(r / b),
                _ => None,
            };
        }
    }

    /// The table: one row per rate, one column per method (attainment and pass/fail), then
    /// the best rate and its ratio to the first method.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let bound = |v: Option<f64>| {
            v.map_or("-".to_string(), |s| {
                format!("{} ms", fmt_num(Some(s * 1e3)))
            })
        };
        let _ = writeln!(
            out,
            "== sweep: TTFT <= {}, TPOT <= {}, attainment >= {:.1}% ==",
            bound(self.slo.ttft_secs),
            bound(self.slo.tpot_secs),
            self.slo_attainment * 100.0
        );
        let _ = write!(out, "{:<14}", "rate (req/s)");
        for m in &self.methods {
            let _ = write!(out, "{:>22}", method_name(&m.method));
        }
        out.push('\n');
        for &rate in &self.rates {
            let _ = write!(out, "{:<14}", fmt_num(Some(rate)));
            for m in &self.methods {
                let cell =
                    m.points
                        .iter()
                        .find(|p| p.rate_per_sec == rate)
                        .map_or("-".to_string(), |p| {
                            format!(
                                "{:.1}% p99 {} {}",
                                p.slo_attainment * 100.0,
                                fmt_num(p.ttft_p99_ms),
                                if p.passed { "ok" } else { "FAIL" }
                            )
                        });
                let _ = write!(out, "{cell:>22}");
            }
            out.push('\n');
        }
        let _ = write!(out, "{:<14}", "best rate");
        for m in &self.methods {
            let _ = write!(out, "{:>22}", fmt_num(m.best_rate_per_sec));
        }
        out.push('\n');
        let base = self.methods.first().map_or("", |m| method_name(&m.method));
        let _ = write!(out, "{:<14}", format!("vs {base}"));
        for m in &self.methods {
            let _ = write!(
                out,
                "{:>22}",
                m.best_rate_ratio
                    .map_or("-".to_string(), |r| format!("{r:.2}x"))
            );
        }
        out.push('\n');
        out
    }
}

/// Runs the sweep. Each point replays the trace of its rate generated from the same seed.
pub async fn run_sweep(
    session: &Session,
    rates: &[f64],
    methods: &[Option<String>],
) -> Result<(Vec<RunReport>, SweepReport), LoadgenError> {
    let cfg = &session.cfg;
    let mut runs = Vec::new();
    let mut report = SweepReport {
        rates: rates.to_vec(),
        slo: cfg.slo,
        slo_attainment: cfg.slo_attainment,
        methods: Vec::new(),
    };
    for method in methods {
        let mut points = Vec::new();
        for &rate in rates {
            let trace = Trace::generate(cfg.arrival.with_rate(rate), cfg.stop, cfg.workload.seed)?;
            let label = format!("{} @ {} req/s", method_name(method), fmt_num(Some(rate)));
            let run = session.run_once(&trace, method.clone(), label).await?;
            let s = &run.summary;
            let attainment = s.slo_attainment.unwrap_or(0.0);
            let passed = s.measured > 0 && attainment >= cfg.slo_attainment;
            points.push(SweepPoint {
                rate_per_sec: rate,
                slo_attainment: attainment,
                goodput: s.goodput.unwrap_or(0.0),
                ttft_p99_ms: s.ttft_secs.map(|d| d.p99 * 1e3),
                tpot_p99_ms: s.tpot_secs.map(|d| d.p99 * 1e3),
                errors: s.failed,
                passed,
            });
            runs.push(run);
            if !passed {
                break;
            }
        }
        let best = points
            .iter()
            .filter(|p| p.passed)
            .map(|p| p.rate_per_sec)
            .fold(None, |a: Option<f64>, r| Some(a.map_or(r, |a| a.max(r))));
        report.methods.push(SweepMethod {
            method: method.clone(),
            points,
            best_rate_per_sec: best,
            best_rate_ratio: None,
        });
    }
    report.set_ratios();
    Ok((runs, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(rate: f64, passed: bool) -> SweepPoint {
        SweepPoint {
            rate_per_sec: rate,
            slo_attainment: if passed { 1.0 } else { 0.5 },
            goodput: rate,
            ttft_p99_ms: Some(10.0),
            tpot_p99_ms: None,
            errors: 0,
            passed,
        }
    }

    #[test]
    fn ratios_and_table() {
        let mut r = SweepReport {
            rates: vec![1.0, 2.0, 4.0],
            slo: Slo {
                ttft_secs: Some(0.5),
                tpot_secs: None,
            },
            slo_attainment: 0.99,
            methods: vec![
                SweepMethod {
                    method: Some("full".into()),
                    points: vec![point(1.0, true), point(2.0, false)],
                    best_rate_per_sec: Some(1.0),
                    best_rate_ratio: None,
                },
                SweepMethod {
                    method: Some("a3".into()),
                    points: vec![point(1.0, true), point(2.0, true), point(4.0, true)],
                    best_rate_per_sec: Some(4.0),
                    best_rate_ratio: None,
                },
            ],
        };
        r.set_ratios();
        assert_eq!(r.methods[1].best_rate_ratio, Some(4.0));
        let t = r.render();
        assert!(
            t.contains("FAIL") && t.contains("4.00x") && t.contains("vs full"),
            "{t}"
        );
    }
}
