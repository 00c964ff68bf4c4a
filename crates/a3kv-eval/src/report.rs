//! The results record: one `MethodRun` per (item, method), and `EvalResults`, the JSON document
//! a run writes (model fingerprint, dataset spec, data hash, seed, methods, runs, summary).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::EvalError;
use crate::method::MethodSpec;
use crate::summary::MethodSummary;

/// The outcome of one method on one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodRun {
    /// `EvalItem::id`.
    pub item_id: String,
    /// `MethodSpec::label()`: name plus parameters, unique per evaluated method.
    pub method: String,
    /// `MethodSpec::name`.
    pub method_name: String,
    /// `MethodSpec::params`.
    pub method_params: serde_json::Value,
    /// Decoded output text.
    pub output: String,
    /// Decoded output token ids.
    pub output_ids: Vec<u32>,
    /// The item scorer's primary score (0 when the run failed).
    pub score: f64,
    /// Every score of the item's scorer by name (empty when the run failed).
    pub scores: BTreeMap<String, f64>,
    /// Time to first token, seconds.
    pub ttft_secs: f64,
    /// Prompt tokens whose cached KV was reused.
    pub reused_tokens: usize,
    /// Prompt tokens recomputed (prefix, question and selected document tokens).
    pub recomputed_tokens: usize,
    /// Recomputed / document rows, as the engine reported it (absent in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recompute_ratio: Option<f64>,
    /// The ratio an adaptive budget (`recompute_ratio: "auto"`) chose, `k / (T−Q)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recompute_ratio_chosen: Option<f64>,
    /// KL(p_full ‖ p_method) of the first-token softmax; `None` for `full` itself or without a
    /// `full` run.
    pub kl_vs_full: Option<f64>,
    /// Whether the first generated token equals `full`'s.
    pub first_token_agrees: Option<bool>,
    /// Whether the whole output text equals `full`'s (surrounding whitespace ignored).
    pub answer_matches_full: Option<bool>,
    /// Token F1 between this output and `full`'s (SQuAD normalisation).
    pub answer_f1_vs_full: Option<f64>,
    /// The backend's error message when the run failed.
    pub error: Option<String>,
    /// The item's tags (needle depth and length, RULER task..), so reports stand alone.
    pub tags: BTreeMap<String, serde_json::Value>,
}

/// Everything one evaluation produced; serialised as the results JSON document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResults {
    /// Crate version that wrote the record.
    pub a3kv_eval_version: String,
    /// Model fingerprint supplied by the caller (file name, sha256, config..).
    pub model: serde_json::Value,
    /// `DatasetSpec` as a string.
    pub dataset: String,
    /// `data_hash` of the evaluated items.
    pub data_hash: String,
    /// Seed the items were generated with.
    pub seed: u64,
    /// Generation limit per output.
    pub max_tokens: usize,
    /// Number of items.
    pub num_items: usize,
    /// Methods in the order given.
    pub methods: Vec<MethodSpec>,
    /// Per-item, per-method outcomes, item-major.
    pub runs: Vec<MethodRun>,
    /// Aggregates per method, in the order of `methods`.
    pub summary: Vec<MethodSummary>,
}

impl EvalResults {
    /// Pretty JSON text of the document.
    pub fn to_json(&self) -> Result<String, EvalError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Writes the document to `path`, creating parent folders.
    ///
    /// Errors: `Io` when the file cannot be written.
    pub fn write_json(&self, path: &Path) -> Result<(), EvalError> {
        let io = |source| EvalError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(path, self.to_json()? + "\n").map_err(io)
    }

    /// Reads a document written by `write_json`.
    ///
    /// Errors: `Io` when unreadable, `Json` when not a results document.
    pub fn read_json(path: &Path) -> Result<Self, EvalError> {
        let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| EvalError::Json {
            path: path.to_path_buf(),
            source,
        })
    }
}

impl EvalResults {
    /// Joins the documents of a run split into shards (`a3kv eval --skip`): the same model,
    /// data set, seed, generation limit and methods; no (item, method) pair twice. Runs keep
    /// shard order, the summary is recomputed over all of them, and `data_hash` lists the
    /// shards' hashes joined by `+`.
    ///
    /// Errors: `Merge` naming the first field that differs, a repeated pair, or no input.
    pub fn merge(parts: Vec<EvalResults>) -> Result<EvalResults, EvalError> {
        let mut parts = parts.into_iter();
        let mut out = parts
            .next()
            .ok_or_else(|| EvalError::Merge("no results documents given".into()))?;
        let mut seen: std::collections::HashSet<(String, String)> = out
            .runs
            .iter()
            .map(|r| (r.item_id.clone(), r.method.clone()))
            .collect();
        for (i, p) in parts.enumerate() {
            let differs = |field: &str| {
                EvalError::Merge(format!(
                    "document {} has a different {field} than the first",
                    i + 2
                ))
            };
            if p.model != out.model {
                return Err(differs("model"));
            }
            if p.dataset != out.dataset {
                return Err(differs("dataset"));
            }
            if p.seed != out.seed {
                return Err(differs("seed"));
            }
            if p.max_tokens != out.max_tokens {
                return Err(differs("max_tokens"));
            }
            if p.methods != out.methods {
                return Err(differs("methods"));
            }
            for r in &p.runs {
                if !seen.insert((r.item_id.clone(), r.method.clone())) {
                    return Err(EvalError::Merge(format!(
                        "item {} with method {} appears twice",
                        r.item_id, r.method
                    )));
                }
            }
            out.data_hash = format!("{}+{}", out.data_hash, p.data_hash);
            out.num_items += p.num_items;
            out.runs.extend(p.runs);
        }
        out.summary = crate::summary::summarize(&out.methods, &out.runs);
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::summary::summarize;
    use serde_json::json;

    /// A small `MethodRun` for tests elsewhere in the crate.
    pub(crate) fn run(item: &str, method: &str, score: f64) -> MethodRun {
        MethodRun {
            item_id: item.into(),
            method: method.into(),
            method_name: method.into(),
            method_params: serde_json::Value::Null,
            output: "out".into(),
            output_ids: vec![1, 2],
            score,
            scores: BTreeMap::from([("f1".to_string(), score)]),
            ttft_secs: 0.5,
            reused_tokens: 90,
            recomputed_tokens: 10,
            recompute_ratio: None,
            recompute_ratio_chosen: None,
            kl_vs_full: None,
            first_token_agrees: None,
            answer_matches_full: None,
            answer_f1_vs_full: None,
            error: None,
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn json_round_trip_through_a_file() {
        let runs = vec![run("q1", "full", 1.0), run("q1", "reuse", 0.0)];
        let methods = vec![MethodSpec::plain("full"), MethodSpec::plain("reuse")];
        let results = EvalResults {
            a3kv_eval_version: env!("CARGO_PKG_VERSION").into(),
            model: json!({"file": "m.gguf"}),
            dataset: "hotpotqa".into(),
            data_hash: "ab".into(),
            seed: 3,
            max_tokens: 24,
            num_items: 1,
            summary: summarize(&methods, &runs),
            methods,
            runs,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/results.json");
        results.write_json(&path).unwrap();
        assert_eq!(EvalResults::read_json(&path).unwrap(), results);
        let value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(value["runs"][1]["method"], "reuse");
        assert_eq!(value["summary"][0]["mean_score"], 1.0);
    }

    fn doc(item: &str, score: f64) -> EvalResults {
        let runs = vec![run(item, "full", score), run(item, "reuse", 0.0)];
        let methods = vec![MethodSpec::plain("full"), MethodSpec::plain("reuse")];
        EvalResults {
            a3kv_eval_version: env!("CARGO_PKG_VERSION").into(),
            model: json!({"file": "m.gguf"}),
            dataset: "hotpotqa".into(),
            data_hash: format!("h{item}"),
            seed: 0,
            max_tokens: 16,
            num_items: 1,
            summary: summarize(&methods, &runs),
            methods,
            runs,
        }
    }

    #[test]
    fn merged_shards_summarise_all_their_runs() {
        let merged = EvalResults::merge(vec![doc("q1", 1.0), doc("q2", 0.0)]).unwrap();
        assert_eq!(merged.num_items, 2);
        assert_eq!(merged.runs.len(), 4);
        assert_eq!(merged.data_hash, "hq1+hq2");
        assert_eq!(merged.summary[0].mean_score, Some(0.5));
    }

    #[test]
    fn shards_that_differ_or_overlap_are_refused() {
        let mut other = doc("q2", 0.0);
        other.max_tokens = 24;
        let err = EvalResults::merge(vec![doc("q1", 1.0), other]).unwrap_err();
        assert!(err.to_string().contains("max_tokens"), "{err}");
        let err = EvalResults::merge(vec![doc("q1", 1.0), doc("q1", 1.0)]).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
        assert_eq!(EvalResults::merge(vec![]).unwrap_err().kind(), "merge");
    }
}
