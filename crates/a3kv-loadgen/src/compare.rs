//! `--compare`: the same arrival trace replayed once per fusion method against the same server;
//! every headline metric is reported as a ratio to the first method.

use std::fmt::Write as _;

use serde::Serialize;

use crate::report::{fmt_num, headline_metrics, RunReport};
use crate::session::Session;
use crate::stats::RunSummary;
use crate::trace::Trace;
use crate::LoadgenError;

/// One metric across methods.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompareRow {
    /// Metric name, e.g. `TTFT p99`.
    pub metric: String,
    /// Display unit.
    pub unit: &'static str,
    /// Value per method, in `CompareReport::methods` order.
    pub values: Vec<Option<f64>>,
    /// Value / first method's value (`None` when either is missing or the base is 0).
    pub ratios: Vec<Option<f64>>,
}

/// The compare table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompareReport {
    /// Methods; the first is the baseline.
    pub methods: Vec<String>,
    /// One row per headline metric.
    pub rows: Vec<CompareRow>,
}

impl CompareReport {
    /// Builds the table from one summary per method (same order as `methods`).
    pub fn from_summaries(methods: Vec<String>, summaries: &[&RunSummary]) -> Self {
        let per_method: Vec<_> = summaries.iter().map(|s| headline_metrics(s)).collect();
        let rows = match per_method.first() {
            None => Vec::new(),
            Some(base) => base
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let values: Vec<Option<f64>> = per_method
                        .iter()
                        .map(|m| m.get(i).and_then(|x| x.value))
                        .collect();
                    let ratios = values.iter().map(|&v| ratio(v, b.value)).collect();
                    CompareRow {
                        metric: b.name.clone(),
                        unit: b.unit,
                        values,
                        ratios,
                    }
                })
                .collect(),
        };
        Self { methods, rows }
    }

    /// The table: values of the first method, then `value (ratio x)` for the others.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let base = self.methods.first().map_or("", String::as_str);
        let _ = writeln!(out, "== compare (ratios to {base}) ==");
        let _ = write!(out, "{:<26}", "metric");
        for m in &self.methods {
            let _ = write!(out, "{m:>20}");
        }
        out.push('\n');
        for row in &self.rows {
            let _ = write!(out, "{:<26}", format!("{} ({})", row.metric, row.unit));
            for (i, (v, r)) in row.values.iter().zip(&row.ratios).enumerate() {
                let cell = if i == 0 {
                    fmt_num(*v)
                } else {
                    format!("{} ({}x)", fmt_num(*v), fmt_num(*r))
                };
                let _ = write!(out, "{cell:>20}");
            }
            out.push('\n');
        }
        out
    }
}

fn ratio(v: Option<f64>, base: Option<f64>) -> Option<f64> {
    match (v, base) {
        (Some(v), Some(b)) if b != 0.0 && b.is_finite() && v.is_finite() => Some(v / b),
        _ => None,
    }
}

/// Replays `trace` once per method, in order, and builds the ratio table.
pub async fn run_compare(
    session: &Session,
    trace: &Trace,
    methods: &[String],
) -> Result<(Vec<RunReport>, CompareReport), LoadgenError> {
    let mut runs = Vec::with_capacity(methods.len());
    for m in methods {
        runs.push(session.run_once(trace, Some(m.clone()), m.clone()).await?);
    }
    let summaries: Vec<&RunSummary> = runs.iter().map(|r| &r.summary).collect();
    let report = CompareReport::from_summaries(methods.to_vec(), &summaries);
    Ok((runs, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RequestRecord;
    use crate::stats::Slo;

    fn summary(ttft: f64) -> RunSummary {
        let r = RequestRecord {
            ttft_secs: Some(ttft),
            e2e_secs: 1.0,
            output_tokens: 3,
            ..Default::default()
        };
        RunSummary::from_records(&[r], 0.0, &Slo::default())
    }

    #[test]
    fn ratios_to_first_method() {
        let (full, a3) = (summary(0.4), summary(0.1));
        let c = CompareReport::from_summaries(vec!["full".into(), "a3".into()], &[&full, &a3]);
        let row = c.rows.iter().find(|r| r.metric == "TTFT p50").unwrap();
        assert_eq!(row.ratios[0], Some(1.0));
        assert!((row.ratios[1].unwrap() - 0.25).abs() < 1e-12);
        let goodput = c.rows.iter().find(|r| r.metric == "goodput").unwrap();
        assert_eq!(goodput.ratios, vec![None, None], "no SLO, no goodput");
        let t = c.render();
        assert!(t.contains("ratios to full") && t.contains("(0.25x)"), "{t}");
    }
}
