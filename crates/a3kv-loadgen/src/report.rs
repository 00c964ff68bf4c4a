//! `LoadReport`: everything a run produced (settings echo, one `RunReport` per run, the
//! compare and sweep tables), its JSON file, and the plain-text tables printed at the end.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::arrival::ArrivalProcess;
use crate::compare::CompareReport;
use crate::config::{Mode, ValidConfig};
use crate::record::RequestRecord;
use crate::stats::{Distribution, RunSummary, Slo};
use crate::sweep::SweepReport;
use crate::trace::StopRule;
use crate::workload::WorkloadSpec;
use crate::LoadgenError;

/// The settings of the run, echoed into the report so results can be reproduced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    /// Chat-completions URL.
    pub endpoint: String,
    /// `model` field.
    pub model: String,
    /// Where document text came from (a path or `synthetic`).
    pub corpus_source: String,
    /// Workload knobs (seed included).
    pub workload: WorkloadSpec,
    /// Arrival process.
    pub arrival: ArrivalProcess,
    /// Stop rule.
    pub stop: StopRule,
    /// Warm-up excluded from the statistics, seconds.
    pub warmup_secs: f64,
    /// Drain grace after sending stops, seconds.
    pub drain_secs: f64,
    /// Per-request timeout, seconds.
    pub request_timeout_secs: f64,
    /// Documents inlined into the prompt.
    pub inline_documents: bool,
    /// `fusion.method` of a single run.
    pub fusion_method: Option<String>,
    /// `fusion.recompute_ratio`.
    pub recompute_ratio: Option<f64>,
    /// `--method-mix`: methods sent in turn.
    pub method_mix: Vec<String>,
    /// `--cancel-fraction` and the longest delay of time-based cancellations.
    pub cancel: crate::cancel::CancelPlan,
    /// `--route-header`: the header carrying the routing key, if any.
    pub route_header: Option<String>,
    /// Goodput SLO.
    pub slo: Slo,
    /// Sweep pass threshold.
    pub slo_attainment: f64,
    /// Single, compare or sweep.
    pub mode: Mode,
}

impl Settings {
    /// Echo of `cfg` with the corpus actually used.
    pub fn new(cfg: &ValidConfig, corpus_source: &str) -> Self {
        Self {
            endpoint: cfg.client.endpoint.clone(),
            model: cfg.client.model.clone(),
            corpus_source: corpus_source.to_string(),
            workload: cfg.workload.clone(),
            arrival: cfg.arrival,
            stop: cfg.stop,
            warmup_secs: cfg.plan.warmup_secs,
            drain_secs: cfg.plan.drain_secs,
            request_timeout_secs: cfg.client.request_timeout.as_secs_f64(),
            inline_documents: cfg.client.inline_documents,
            fusion_method: cfg.client.fusion_method.clone(),
            recompute_ratio: cfg.client.recompute_ratio,
            method_mix: cfg.client.method_mix.clone(),
            cancel: cfg.client.cancel,
            route_header: cfg.client.route_header.clone(),
            slo: cfg.slo,
            slo_attainment: cfg.slo_attainment,
            mode: cfg.mode.clone(),
        }
    }
}

/// One replay of a trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    /// Human label, e.g. `a3` or `a3 @ 4 req/s`.
    pub label: String,
    /// `fusion.method` sent, if any.
    pub fusion_method: Option<String>,
    /// Open-loop mean rate, requests per second.
    pub rate_per_sec: Option<f64>,
    /// The statistics.
    pub summary: RunSummary,
    /// Every request (with `--detailed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<RequestRecord>>,
}

/// Everything `run` produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    /// The settings.
    pub settings: Settings,
    /// `--precompute`: the pool stored before the runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precompute: Option<crate::precompute::PrecomputeReport>,
    /// One entry per run (one, one per method, or one per sweep point).
    pub runs: Vec<RunReport>,
    /// `--compare` ratios.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare: Option<CompareReport>,
    /// `--sweep-rate` table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepReport>,
}

impl LoadReport {
    /// Writes the report as pretty JSON. Errors: [`LoadgenError::Serialize`],
    /// [`LoadgenError::WriteReport`].
    pub fn write_json(&self, path: &Path) -> Result<(), LoadgenError> {
        let json = serde_json::to_vec_pretty(self)?;
        std::fs::write(path, json).map_err(|source| LoadgenError::WriteReport {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The plain-text tables: each run (a sweep prints only its Pareto table), then the
    /// compare table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(p) = &self.precompute {
            out.push_str(&format!(
                "precomputed {} pool documents through the chunk API in {:.1} s\n\n",
                p.documents, p.secs
            ));
        }
        if let Some(sweep) = &self.sweep {
            out.push_str(&sweep.render());
            return out;
        }
        for run in &self.runs {
            out.push_str(&render_run(run));
            out.push('\n');
        }
        if let Some(cmp) = &self.compare {
            out.push_str(&cmp.render());
        }
        out
    }
}

/// Prints [`LoadReport::render`] to stdout.
pub fn print_report(report: &LoadReport) {
    print!("{}", report.render());
}

/// One headline number of a run, in display units.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    /// Name with statistic, e.g. `TTFT p99`.
    pub name: String,
    /// Display unit: `ms`, `req/s`, `tok/s`, `%`, `count`.
    pub unit: &'static str,
    /// The value, `None` when not measured.
    pub value: Option<f64>,
}

/// The headline metrics of a run, in a fixed order (the rows of the compare table).
pub fn headline_metrics(s: &RunSummary) -> Vec<Metric> {
    let mut m = Vec::new();
    let lat = |m: &mut Vec<Metric>, name: &str, d: &Option<Distribution>, stats: &[&str]| {
        for &st in stats {
            let v = d.map(|d| match st {
                "mean" => d.mean,
                "p50" => d.p50,
                "p90" => d.p90,
                _ => d.p99,
            });
            m.push(Metric {
                name: format!("{name} {st}"),
                unit: "ms",
                value: v.map(|x| x * 1e3),
            });
        }
    };
    lat(&mut m, "TTFT", &s.ttft_secs, &["mean", "p50", "p90", "p99"]);
    lat(&mut m, "TPOT", &s.tpot_secs, &["mean", "p50", "p99"]);
    lat(&mut m, "ITL", &s.itl_secs, &["p50", "p99"]);
    lat(&mut m, "E2E", &s.e2e_secs, &["mean", "p50", "p99"]);
    let mut push = |name: &str, unit, value| {
        m.push(Metric {
            name: name.into(),
            unit,
            value,
        })
    };
    push("throughput", "req/s", Some(s.request_throughput));
    push(
        "output throughput",
        "tok/s",
        Some(s.output_token_throughput),
    );
    push("goodput", "req/s", s.goodput);
    push("SLO attainment", "%", s.slo_attainment.map(|a| a * 100.0));
    push("errors", "count", Some(s.failed as f64));
    m
}

/// Formats `v` with 3 significant-ish digits, `-` when absent.
pub(crate) fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if !x.is_finite() => "-".into(),
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
    }
}

/// The table of one run.
pub fn render_run(run: &RunReport) -> String {
    let s = &run.summary;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== {} ==",
        if run.label.is_empty() {
            "run"
        } else {
            &run.label
        }
    );
    let errors: Vec<String> = s.errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let _ = writeln!(
        out,
        "requests: {} sent, {} warm-up, {} measured, {} ok, {} cancelled, {} failed{}",
        s.sent,
        s.warmup_requests,
        s.measured,
        s.succeeded,
        s.cancelled,
        s.failed,
        if errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", errors.join(", "))
        }
    );
    let _ = writeln!(
        out,
        "window {:.2} s, throughput {} req/s, output {} tok/s, total {} tok/s",
        s.window_secs,
        fmt_num(Some(s.request_throughput)),
        fmt_num(Some(s.output_token_throughput)),
        fmt_num(Some(s.total_token_throughput)),
    );
    if let (Some(g), Some(a)) = (s.goodput, s.slo_attainment) {
        let _ = writeln!(
            out,
            "goodput {} req/s, SLO attainment {:.1}%",
            fmt_num(Some(g)),
            a * 100.0
        );
    }
    let _ = writeln!(
        out,
        "{:<14}{:>10}{:>10}{:>10}{:>10}{:>10}{:>8}",
        "latency (ms)", "mean", "p50", "p90", "p99", "max", "n"
    );
    for (name, d) in [
        ("TTFT", &s.ttft_secs),
        ("TPOT", &s.tpot_secs),
        ("ITL", &s.itl_secs),
        ("E2E", &s.e2e_secs),
    ] {
        let cell = |f: fn(&Distribution) -> f64| fmt_num(d.map(|d| f(&d) * 1e3));
        let _ = writeln!(
            out,
            "{:<14}{:>10}{:>10}{:>10}{:>10}{:>10}{:>8}",
            name,
            cell(|d| d.mean),
            cell(|d| d.p50),
            cell(|d| d.p90),
            cell(|d| d.p99),
            cell(|d| d.max),
            d.map_or(0, |d| d.count)
        );
    }
    if let Some(f) = &s.fusion {
        let _ = writeln!(
            out,
            "fusion: {} requests, reused {} tokens, recomputed {} tokens (ratio {:.3})",
            f.requests, f.reused_tokens, f.recomputed_tokens, f.recompute_ratio
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RequestErrorKind;

    fn summary() -> RunSummary {
        let recs = vec![
            RequestRecord {
                ttft_secs: Some(0.1),
                e2e_secs: 0.5,
                output_tokens: 5,
                ..Default::default()
            },
            RequestRecord {
                error: Some(RequestErrorKind::Http5xx),
                ..Default::default()
            },
        ];
        RunSummary::from_records(
            &recs,
            0.0,
            &Slo {
                ttft_secs: Some(1.0),
                tpot_secs: None,
            },
        )
    }

    #[test]
    fn headline_and_table() {
        let s = summary();
        let m = headline_metrics(&s);
        let ttft = m.iter().find(|m| m.name == "TTFT p50").unwrap();
        assert!((ttft.value.unwrap() - 100.0).abs() < 1e-9);
        assert_eq!(
            m.iter().find(|m| m.name == "errors").unwrap().value,
            Some(1.0)
        );
        let run = RunReport {
            label: "a3".into(),
            fusion_method: None,
            rate_per_sec: None,
            summary: s,
            records: None,
        };
        let t = render_run(&run);
        assert!(
            t.contains("== a3 ==") && t.contains("http_5xx: 1") && t.contains("TTFT"),
            "{t}"
        );
        assert!(t.contains("SLO attainment 50.0%"), "{t}");
        assert_eq!(fmt_num(None), "-");
        assert_eq!(fmt_num(Some(123.4)), "123");
        assert_eq!(fmt_num(Some(1.234)), "1.23");
    }
}
