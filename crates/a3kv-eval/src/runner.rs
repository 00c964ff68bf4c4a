//! The evaluation loop: items × methods through an `EvalBackend` (the real engine, or a fake
//! in tests), scoring each output and, when `full` is among the methods, measuring every other
//! method's fidelity to it on the same item.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::datasets::data_hash;
use crate::error::EvalError;
use crate::fidelity::{argmax, kl_divergence};
use crate::item::EvalItem;
use crate::method::MethodSpec;
use crate::report::{EvalResults, MethodRun};
use crate::scoring::text_f1;
use crate::summary::summarize;

/// A backend's error; it fails only the run it came from.
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

/// What the engine returns for one item and method.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BackendOutput {
    /// Decoded output text.
    pub text: String,
    /// Logits of the first generated position, `[vocab]` (empty if not available).
    pub first_token_logits: Vec<f32>,
    /// Generated token ids.
    pub output_ids: Vec<u32>,
    /// Time to first token, seconds.
    pub ttft_secs: f64,
    /// Prompt tokens whose cached KV was reused.
    pub reused_tokens: usize,
    /// Prompt tokens recomputed.
    pub recomputed_tokens: usize,
    /// Recomputed / document rows, as the engine reported it (`None` without a report).
    pub recompute_ratio: Option<f64>,
    /// The ratio an adaptive budget chose (`recompute_ratio: "auto"`), `k / (T−Q)`.
    pub recompute_ratio_chosen: Option<f64>,
}

/// The engine seen from the harness.
pub trait EvalBackend {
    /// Answers `item` with `method`, generating at most `max_tokens` tokens greedily.
    fn run(
        &mut self,
        item: &EvalItem,
        method: &MethodSpec,
        max_tokens: usize,
    ) -> Result<BackendOutput, BackendError>;
}

/// Settings of one evaluation that go into the results record.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// Model fingerprint (file name, sha256, architecture..).
    pub model: serde_json::Value,
    /// `DatasetSpec` as a string.
    pub dataset: String,
    /// Seed the items were made with.
    pub seed: u64,
    /// Generation limit per output.
    pub max_tokens: usize,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// Runs every method on every item (`full` first on each item, so the others can be compared
/// with it) and returns the per-run records with their summary. A backend error is recorded
/// in that run's `error` and the loop goes on.
///
/// Errors: only `Serialize`, when the items cannot be hashed.
pub fn run_eval<B: EvalBackend + ?Sized>(
    backend: &mut B,
    items: &[EvalItem],
    methods: &[MethodSpec],
    cfg: &RunConfig,
) -> Result<EvalResults, EvalError> {
    let hash = data_hash(items)?;
    let full_index = methods.iter().position(MethodSpec::is_full);
    let order: Vec<usize> = full_index
        .into_iter()
        .chain((0..methods.len()).filter(|&i| Some(i) != full_index))
        .collect();
    let bar = progress_bar(cfg.progress, (items.len() * methods.len()) as u64);
    let mut runs = Vec::with_capacity(items.len() * methods.len());
    for item in items {
        let mut full: Option<BackendOutput> = None;
        for &m in &order {
            let method = &methods[m];
            bar.set_message(format!("{} {}", item.id, method.label()));
            let result = backend.run(item, method, cfg.max_tokens);
            let reference = if method.is_full() {
                None
            } else {
                full.as_ref()
            };
            let record = make_record(item, method, &result, reference);
            if method.is_full() && Some(m) == full_index {
                full = result.ok();
            }
            runs.push(record);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(EvalResults {
        a3kv_eval_version: env!("CARGO_PKG_VERSION").into(),
        model: cfg.model.clone(),
        dataset: cfg.dataset.clone(),
        data_hash: hash,
        seed: cfg.seed,
        max_tokens: cfg.max_tokens,
        num_items: items.len(),
        methods: methods.to_vec(),
        summary: summarize(methods, &runs),
        runs,
    })
}

fn progress_bar(visible: bool, len: u64) -> ProgressBar {
    if !visible {
        return ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} eta {eta} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn make_record(
    item: &EvalItem,
    method: &MethodSpec,
    result: &Result<BackendOutput, BackendError>,
    full: Option<&BackendOutput>,
) -> MethodRun {
    let mut record = MethodRun {
        item_id: item.id.clone(),
        method: method.label(),
        method_name: method.name.clone(),
        method_params: method.params.clone(),
        output: String::new(),
        output_ids: Vec::new(),
        score: 0.0,
        scores: Default::default(),
        ttft_secs: 0.0,
        reused_tokens: 0,
        recomputed_tokens: 0,
        recompute_ratio: None,
        recompute_ratio_chosen: None,
        kl_vs_full: None,
        first_token_agrees: None,
        answer_matches_full: None,
        answer_f1_vs_full: None,
        error: None,
        tags: item.tags.clone(),
    };
    let out = match result {
        Ok(out) => out,
        Err(e) => {
            record.error = Some(e.to_string());
            return record;
        }
    };
    let scores = item.scorer.score(&out.text, &item.answers);
    record.score = scores.primary;
    record.scores = scores.all;
    record.output = out.text.clone();
    record.output_ids = out.output_ids.clone();
    record.ttft_secs = out.ttft_secs;
    record.reused_tokens = out.reused_tokens;
    record.recomputed_tokens = out.recomputed_tokens;
    record.recompute_ratio = out.recompute_ratio;
    record.recompute_ratio_chosen = out.recompute_ratio_chosen;
    if let Some(full) = full {
        let (a, b) = (&full.first_token_logits, &out.first_token_logits);
        if !a.is_empty() && a.len() == b.len() {
            record.kl_vs_full = Some(kl_divergence(a, b));
        }
        record.first_token_agrees = match (full.output_ids.first(), out.output_ids.first()) {
            (Some(x), Some(y)) => Some(x == y),
            _ if !a.is_empty() && a.len() == b.len() => Some(argmax(a) == argmax(b)),
            _ => None,
        };
        record.answer_matches_full = Some(full.text.trim() == out.text.trim());
        record.answer_f1_vs_full = Some(text_f1(&full.text, &out.text));
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::ScorerKind;
    use serde_json::json;
    use std::collections::BTreeMap;

    /// Answers from a table; `broken` fails; records the call order.
    struct Fake {
        calls: Vec<String>,
    }

    impl EvalBackend for Fake {
        fn run(
            &mut self,
            item: &EvalItem,
            method: &MethodSpec,
            _max_tokens: usize,
        ) -> Result<BackendOutput, BackendError> {
            self.calls.push(format!("{}/{}", item.id, method.name));
            let (text, logits, ids): (&str, Vec<f32>, Vec<u32>) = match method.name.as_str() {
                "full" => ("Paris", vec![0.0, 3f32.ln()], vec![7, 8]),
                "reuse" => ("London", vec![0.0, 0.0], vec![9]),
                "a3" => ("Paris", vec![1.0, 1.0 + 3f32.ln()], vec![7, 8]),
                _ => return Err("backend exploded".into()),
            };
            Ok(BackendOutput {
                text: text.into(),
                first_token_logits: logits,
                output_ids: ids,
                ttft_secs: 1.0,
                reused_tokens: 80,
                recomputed_tokens: 20,
                recompute_ratio: Some(0.2),
                recompute_ratio_chosen: None,
            })
        }
    }

    fn item(id: &str) -> EvalItem {
        EvalItem {
            id: id.into(),
            documents: vec![],
            question: "Capital of France?".into(),
            answers: vec!["Paris".into()],
            scorer: ScorerKind::Qa,
            tags: BTreeMap::from([("task".to_string(), json!("t"))]),
        }
    }

    #[test]
    fn full_runs_first_and_fidelity_is_measured() {
        let mut fake = Fake { calls: vec![] };
        let methods = vec![
            MethodSpec::plain("reuse"),
            MethodSpec::new("a3", json!({"recompute_ratio": 0.15})),
            MethodSpec::plain("full"),
            MethodSpec::plain("broken"),
        ];
        let cfg = RunConfig {
            model: json!("fake"),
            dataset: "jsonl:x".into(),
            seed: 0,
            max_tokens: 8,
            progress: false,
        };
        let items = vec![item("q1"), item("q2")];
        let results = run_eval(&mut fake, &items, &methods, &cfg).unwrap();
        assert_eq!(
            &fake.calls[..4],
            ["q1/full", "q1/reuse", "q1/a3", "q1/broken"]
        );
        assert_eq!(results.runs.len(), 8);
        let find = |m: &str| results.runs.iter().find(|r| r.method_name == m).unwrap();
        let full = find("full");
        assert_eq!(full.score, 1.0);
        assert_eq!(full.kl_vs_full, None);
        let reuse = find("reuse");
        assert_eq!(reuse.score, 0.0);
        // KL([1/4, 3/4] ‖ [1/2, 1/2]) as in fidelity's test.
        let want = 0.25 * 0.5f64.ln() + 0.75 * 1.5f64.ln();
        assert!((reuse.kl_vs_full.unwrap() - want).abs() < 1e-7);
        assert_eq!(reuse.first_token_agrees, Some(false));
        assert_eq!(reuse.answer_matches_full, Some(false));
        assert_eq!(reuse.answer_f1_vs_full, Some(0.0));
        let a3 = find("a3");
        assert_eq!(a3.method, "a3(recompute_ratio=0.15)");
        assert!(
            a3.kl_vs_full.unwrap() < 1e-6,
            "shifted logits, same softmax"
        );
        assert_eq!(a3.first_token_agrees, Some(true));
        assert_eq!(a3.tags["task"], "t");
        let broken = find("broken");
        assert_eq!(broken.error.as_deref(), Some("backend exploded"));
        // Summary follows the given method order.
        let labels: Vec<&str> = results.summary.iter().map(|s| s.method.as_str()).collect();
        assert_eq!(
            labels,
            ["reuse", "a3(recompute_ratio=0.15)", "full", "broken"]
        );
        assert_eq!(results.summary[3].errors, 2);
        assert_eq!(results.summary[1].first_token_agreement, Some(1.0));
        assert_eq!(results.data_hash, data_hash(&items).unwrap());
    }

    #[test]
    fn without_full_there_is_no_fidelity() {
        let mut fake = Fake { calls: vec![] };
        let cfg = RunConfig {
            model: json!(null),
            dataset: "d".into(),
            seed: 1,
            max_tokens: 4,
            progress: false,
        };
        let results = run_eval(&mut fake, &[item("q")], &[MethodSpec::plain("a3")], &cfg).unwrap();
        assert_eq!(results.runs[0].kl_vs_full, None);
        assert_eq!(results.summary[0].mean_kl_vs_full, None);
    }
}
