//! llama.cpp's side of a comparison: the JSONL that `llama-bench -o jsonl` writes (one object
//! per model and test, as `shared/tools/llamacpp-anchor.sh` collects it into
//! `llama-bench.jsonl`), reduced to tokens/s per weight type for one test.
//!
//! Fields read: `model_type` (`"llama ?B Q4_1"`, `"llama ?B F16"`, `"llama ?B all F32"`: the
//! last word is the weight type), `n_prompt` / `n_gen` (a prefill test `ppN` has `n_gen = 0`,
//! a decode test `tgN` has `n_prompt = 0`), `avg_ts` and `stddev_ts` (tokens/s), and
//! `n_threads` when present.

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

/// One llama-bench result row.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LlamaBenchRow {
    /// Architecture, size and weight type, e.g. `llama ?B Q4_1`.
    pub model_type: String,
    /// Prompt tokens of a prefill test (0 for decode).
    #[serde(default)]
    pub n_prompt: u64,
    /// Generated tokens of a decode test (0 for prefill).
    #[serde(default)]
    pub n_gen: u64,
    /// Mean tokens/s.
    pub avg_ts: f64,
    /// Standard deviation of tokens/s.
    #[serde(default)]
    pub stddev_ts: f64,
    /// Threads used.
    #[serde(default)]
    pub n_threads: Option<u64>,
}

impl LlamaBenchRow {
    /// Weight type: the last word of `model_type` (`Q4_1`, `F16`, `F32`).
    pub fn weight_type(&self) -> &str {
        self.model_type.split_whitespace().last().unwrap_or("?")
    }

    /// llama-bench's test name: `pp512`, `tg128`.
    pub fn test(&self) -> String {
        if self.n_gen == 0 {
            format!("pp{}", self.n_prompt)
        } else if self.n_prompt == 0 {
            format!("tg{}", self.n_gen)
        } else {
            format!("pp{}+tg{}", self.n_prompt, self.n_gen)
        }
    }
}

/// Parses llama-bench JSONL text (blank lines skipped). Errors name the line.
pub fn parse_jsonl(text: &str) -> anyhow::Result<Vec<LlamaBenchRow>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("llama-bench JSONL line {}", i + 1))
        })
        .collect()
}

/// Reads a llama-bench JSONL file. Errors name the file and line.
pub fn read_jsonl(path: &Path) -> anyhow::Result<Vec<LlamaBenchRow>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_jsonl(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Tokens/s of test `test` (e.g. `tg128`) per weight type, fastest first.
pub fn rates(rows: &[LlamaBenchRow], test: &str) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = rows
        .iter()
        .filter(|r| r.test() == test)
        .map(|r| (r.weight_type().to_string(), r.avg_ts))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

/// The comparison lines a bench prints: llama.cpp's tokens/s per weight type for `test`,
/// and `ours` as a ratio to the best of them. `None` if the file has no such test.
pub fn compare(rows: &[LlamaBenchRow], test: &str, ours: f64) -> Option<String> {
    let r = rates(rows, test);
    let (best_type, best) = r.first()?.clone();
    let each: Vec<String> = r.iter().map(|(t, v)| format!("{t} {v:.1}")).collect();
    Some(format!(
        "llama.cpp {test} tok/s: {}; a3kv {ours:.1} = {:.2}x llama.cpp's best ({best_type})",
        each.join(", "),
        ours / best
    ))
}

/// The decode test to compare with: `tg{tokens}` when the file has it, else its first
/// `tgN` (llama-bench's default is tg128).
pub fn decode_test(rows: &[LlamaBenchRow], tokens: usize) -> Option<String> {
    let want = format!("tg{tokens}");
    if rows.iter().any(|r| r.test() == want) {
        return Some(want);
    }
    rows.iter()
        .find(|r| r.n_prompt == 0 && r.n_gen > 0)
        .map(LlamaBenchRow::test)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows as llama-bench writes them (fields trimmed to a few of the real ones).
    const SAMPLE: &str = r#"{"build_commit": "abc1234", "cpu_info": "AMD EPYC", "model_filename": "SmolLM2-135M-Instruct.Q4_1.gguf", "model_type": "llama ?B Q4_1", "model_size": 98362432, "n_threads": 2, "type_k": "f16", "type_v": "f16", "n_prompt": 512, "n_gen": 0, "avg_ts": 171.3, "stddev_ts": 4.1, "samples_ts": [168.0, 171.0, 175.0]}
{"build_commit": "abc1234", "model_type": "llama ?B Q4_1", "n_threads": 2, "type_k": "f16", "n_prompt": 0, "n_gen": 128, "avg_ts": 74.5, "stddev_ts": 3.0}

{"build_commit": "abc1234", "model_type": "llama ?B F16", "n_threads": 2, "type_k": "f16", "n_prompt": 512, "n_gen": 0, "avg_ts": 498.0, "stddev_ts": 6.0}
{"build_commit": "abc1234", "model_type": "llama ?B F16", "n_threads": 2, "type_k": "f16", "n_prompt": 0, "n_gen": 128, "avg_ts": 51.0, "stddev_ts": 1.0}
{"build_commit": "abc1234", "model_type": "llama ?B all F32", "n_threads": 2, "type_k": "f16", "n_prompt": 0, "n_gen": 128, "avg_ts": 40.2, "stddev_ts": 0.5}
"#;

    #[test]
    fn llama_bench_jsonl_gives_rates_per_weight_type() {
        let rows = parse_jsonl(SAMPLE).unwrap();
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[4].weight_type(), "F32");
        assert_eq!(rows[0].test(), "pp512");
        assert_eq!(rows[1].test(), "tg128");
        assert_eq!(rows[1].n_threads, Some(2));
        let tg = rates(&rows, "tg128");
        let names: Vec<&str> = tg.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(names, ["Q4_1", "F16", "F32"]);
        assert_eq!(rates(&rows, "pp512")[0], ("F16".to_string(), 498.0));
        let line = compare(&rows, "tg128", 149.0).unwrap();
        assert!(line.contains("Q4_1 74.5, F16 51.0, F32 40.2"), "{line}");
        assert!(line.contains("2.00x llama.cpp's best (Q4_1)"), "{line}");
        assert!(compare(&rows, "tg256", 1.0).is_none());
        assert_eq!(decode_test(&rows, 128).as_deref(), Some("tg128"));
        assert_eq!(decode_test(&rows, 16).as_deref(), Some("tg128"));
        assert_eq!(decode_test(&rows[..1], 128), None);
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        let e = parse_jsonl("{\"model_type\": \"x F16\", \"avg_ts\": 1}\nnot json\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 2"), "{e:#}");
        assert!(parse_jsonl("{\"n_gen\": 128}").is_err());
    }
}
