//! Aggregation of `MethodRun`s per method (mean scores, TTFT, recompute ratio, KL and agreement
//! with `full`) and the plain-text table printed to stdout.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::method::MethodSpec;
use crate::report::MethodRun;

/// Aggregates of one method over the successful runs (`None` where nothing was measured).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodSummary {
    /// `MethodSpec::label()`.
    pub method: String,
    /// `MethodSpec::params`.
    pub method_params: serde_json::Value,
    /// Runs of this method.
    pub runs: usize,
    /// Runs that failed (excluded from every mean).
    pub errors: usize,
    /// Mean primary score.
    pub mean_score: Option<f64>,
    /// Mean of each named score.
    pub mean_scores: BTreeMap<String, f64>,
    /// Mean time to first token, seconds.
    pub mean_ttft_secs: Option<f64>,
    /// Median time to first token, seconds.
    pub median_ttft_secs: Option<f64>,
    /// Mean TTFT divided by `full`'s mean TTFT.
    pub ttft_vs_full: Option<f64>,
    /// Mean reused prompt tokens per run.
    pub mean_reused_tokens: Option<f64>,
    /// Mean recomputed prompt tokens per run.
    pub mean_recomputed_tokens: Option<f64>,
    /// Σ recomputed / Σ (reused + recomputed).
    pub recompute_fraction: Option<f64>,
    /// Mean KL(full ‖ method) of the first token.
    pub mean_kl_vs_full: Option<f64>,
    /// Median KL(full ‖ method) of the first token.
    pub median_kl_vs_full: Option<f64>,
    /// Fraction of runs whose first token equals `full`'s.
    pub first_token_agreement: Option<f64>,
    /// Fraction of runs whose output equals `full`'s.
    pub answer_match_rate: Option<f64>,
    /// Mean token F1 between the output and `full`'s.
    pub mean_answer_f1_vs_full: Option<f64>,
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

fn rate(flags: impl Iterator<Item = bool>) -> Option<f64> {
    let flags: Vec<f64> = flags.map(|b| f64::from(u8::from(b))).collect();
    mean(&flags)
}

/// One summary per method, in the order of `methods`; runs are matched by label.
pub fn summarize(methods: &[MethodSpec], runs: &[MethodRun]) -> Vec<MethodSummary> {
    let mut out: Vec<MethodSummary> = methods.iter().map(|m| summarize_one(m, runs)).collect();
    let full_ttft = methods
        .iter()
        .zip(&out)
        .find(|(m, _)| m.is_full())
        .and_then(|(_, s)| s.mean_ttft_secs)
        .filter(|&t| t > 0.0);
    for s in &mut out {
        s.ttft_vs_full = full_ttft.zip(s.mean_ttft_secs).map(|(f, t)| t / f);
    }
    out
}

fn summarize_one(method: &MethodSpec, runs: &[MethodRun]) -> MethodSummary {
    let label = method.label();
    let all: Vec<&MethodRun> = runs.iter().filter(|r| r.method == label).collect();
    let ok: Vec<&MethodRun> = all.iter().copied().filter(|r| r.error.is_none()).collect();
    let collect = |f: &dyn Fn(&MethodRun) -> Option<f64>| -> Vec<f64> {
        ok.iter().filter_map(|r| f(r)).collect()
    };
    let mut score_sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for r in &ok {
        for (name, &v) in &r.scores {
            let e = score_sums.entry(name.clone()).or_default();
            e.0 += v;
            e.1 += 1;
        }
    }
    let reused: usize = ok.iter().map(|r| r.reused_tokens).sum();
    let recomputed: usize = ok.iter().map(|r| r.recomputed_tokens).sum();
    let kl = collect(&|r| r.kl_vs_full);
    let ttft = collect(&|r| Some(r.ttft_secs));
    MethodSummary {
        method: label,
        method_params: method.params.clone(),
        runs: all.len(),
        errors: all.len() - ok.len(),
        mean_score: mean(&collect(&|r| Some(r.score))),
        mean_scores: score_sums
            .into_iter()
            .map(|(k, (sum, n))| (k, sum / n as f64))
            .collect(),
        mean_ttft_secs: mean(&ttft),
        median_ttft_secs: median(&ttft),
        ttft_vs_full: None,
        mean_reused_tokens: mean(&collect(&|r| Some(r.reused_tokens as f64))),
        mean_recomputed_tokens: mean(&collect(&|r| Some(r.recomputed_tokens as f64))),
        recompute_fraction: (reused + recomputed > 0)
            .then(|| recomputed as f64 / (reused + recomputed) as f64),
        mean_kl_vs_full: mean(&kl),
        median_kl_vs_full: median(&kl),
        first_token_agreement: rate(ok.iter().filter_map(|r| r.first_token_agrees)),
        answer_match_rate: rate(ok.iter().filter_map(|r| r.answer_matches_full)),
        mean_answer_f1_vs_full: mean(&collect(&|r| r.answer_f1_vs_full)),
    }
}

/// A fixed-width text table of the summaries, one row per method, for stdout.
pub fn render_table(summaries: &[MethodSummary]) -> String {
    let score_names: Vec<String> = {
        let mut names: Vec<String> = summaries
            .iter()
            .flat_map(|s| s.mean_scores.keys().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    };
    let opt =
        |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", v * 100.0));
    let mut header: Vec<String> = ["method", "runs", "err", "score"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    header.extend(score_names.iter().cloned());
    header.extend(
        [
            "ttft_s",
            "x_full",
            "recomp",
            "kl_mean",
            "kl_med",
            "agree",
            "same",
            "f1_vs_full",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let mut rows = vec![header];
    for s in summaries {
        let mut row = vec![
            s.method.clone(),
            s.runs.to_string(),
            s.errors.to_string(),
            opt(s.mean_score, 3),
        ];
        row.extend(
            score_names
                .iter()
                .map(|n| opt(s.mean_scores.get(n).copied(), 3)),
        );
        row.extend([
            opt(s.mean_ttft_secs, 3),
            opt(s.ttft_vs_full, 3),
            pct(s.recompute_fraction),
            opt(s.mean_kl_vs_full, 4),
            opt(s.median_kl_vs_full, 4),
            pct(s.first_token_agreement),
            pct(s.answer_match_rate),
            opt(s.mean_answer_f1_vs_full, 3),
        ]);
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, &w))| {
                if c == 0 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::run;

    fn runs() -> Vec<MethodRun> {
        let mut r = vec![
            run("q1", "full", 1.0),
            run("q2", "full", 0.0),
            run("q1", "a3", 1.0),
            run("q2", "a3", 0.5),
            run("q3", "a3", 0.0),
        ];
        r[0].ttft_secs = 2.0;
        r[1].ttft_secs = 4.0;
        r[2].kl_vs_full = Some(0.1);
        r[2].first_token_agrees = Some(true);
        r[2].answer_matches_full = Some(true);
        r[2].answer_f1_vs_full = Some(1.0);
        r[3].kl_vs_full = Some(0.3);
        r[3].first_token_agrees = Some(false);
        r[3].answer_matches_full = Some(false);
        r[3].answer_f1_vs_full = Some(0.5);
        r[4].error = Some("boom".into());
        r
    }

    #[test]
    fn aggregates_hand_computed() {
        let methods = vec![MethodSpec::plain("full"), MethodSpec::plain("a3")];
        let s = summarize(&methods, &runs());
        assert_eq!(s.len(), 2);
        let (full, a3) = (&s[0], &s[1]);
        assert_eq!(full.mean_score, Some(0.5));
        assert_eq!(full.mean_ttft_secs, Some(3.0));
        assert_eq!(full.median_ttft_secs, Some(3.0));
        assert_eq!(full.mean_kl_vs_full, None);
        assert_eq!(full.ttft_vs_full, Some(1.0));
        // a3: q3 failed, so means are over q1 and q2.
        assert_eq!(a3.runs, 3);
        assert_eq!(a3.errors, 1);
        assert_eq!(a3.mean_score, Some(0.75));
        assert_eq!(a3.mean_scores["f1"], 0.75);
        assert!((a3.mean_kl_vs_full.unwrap() - 0.2).abs() < 1e-12);
        assert_eq!(a3.first_token_agreement, Some(0.5));
        assert_eq!(a3.answer_match_rate, Some(0.5));
        assert_eq!(a3.mean_answer_f1_vs_full, Some(0.75));
        // ttft 0.5 vs full's 3.0; 10 of 100 tokens recomputed.
        assert!((a3.ttft_vs_full.unwrap() - 0.5 / 3.0).abs() < 1e-12);
        assert!((a3.recompute_fraction.unwrap() - 0.1).abs() < 1e-12);
    }

    #[test]
    fn table_has_a_row_per_method() {
        let methods = vec![MethodSpec::plain("full"), MethodSpec::plain("a3")];
        let table = render_table(&summarize(&methods, &runs()));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("method"));
        assert!(lines[2].starts_with("a3"));
        assert!(lines[2].contains("0.2000"), "{table}");
        assert!(lines[2].contains("50.0%"), "{table}");
        assert!(lines[1].contains(" - "), "full has no KL: {table}");
    }

    #[test]
    fn median_even_and_odd() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
