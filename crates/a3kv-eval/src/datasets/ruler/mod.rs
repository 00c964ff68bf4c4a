//! RULER-style synthetic tasks generated locally from a seed: needles (single, multi-key,
//! multi-query, multi-value), variable tracking, common- and frequent-word extraction.
//!
//! Each item has its own ChaCha8 stream derived from (seed, task, length, sample), so an item
//! does not depend on which other items were generated. Lengths are context tokens of the
//! model (documents only); the context is cut into documents of at most `doc_tokens` tokens at
//! sentence or line boundaries. All tasks are scored string-match-all.

mod niah;
mod vt;
mod words;

use std::collections::BTreeMap;

use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::text::{pack_documents, CountTokens};
use crate::error::EvalError;
use crate::item::EvalItem;
use crate::scoring::ScorerKind;

/// The RULER tasks this generator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RulerTask {
    /// One key, one value in a noise haystack.
    NiahSingle,
    /// Four keys with one value each; one is asked for.
    NiahMultiKey,
    /// Four keys with one value each; all four are asked for.
    NiahMultiQuery,
    /// One key with four values; all are asked for.
    NiahMultiValue,
    /// A chain of five variables assigned one value through each other; name them all.
    VariableTracking,
    /// A numbered word list; name the ten words that occur most often.
    CommonWords,
    /// A Zipf-distributed "coded" text; name the three most frequent coded words.
    FrequentWords,
}

impl RulerTask {
    /// Every task, in generation order.
    pub const ALL: [RulerTask; 7] = [
        RulerTask::NiahSingle,
        RulerTask::NiahMultiKey,
        RulerTask::NiahMultiQuery,
        RulerTask::NiahMultiValue,
        RulerTask::VariableTracking,
        RulerTask::CommonWords,
        RulerTask::FrequentWords,
    ];

    /// RULER's short name (`niah_single`, `vt`, `cwe`, `fwe`, ..), used in ids and tags.
    pub fn name(self) -> &'static str {
        match self {
            RulerTask::NiahSingle => "niah_single",
            RulerTask::NiahMultiKey => "niah_multikey",
            RulerTask::NiahMultiQuery => "niah_multiquery",
            RulerTask::NiahMultiValue => "niah_multivalue",
            RulerTask::VariableTracking => "vt",
            RulerTask::CommonWords => "cwe",
            RulerTask::FrequentWords => "fwe",
        }
    }

    /// The task called `name` (as [`RulerTask::name`] writes it), if any.
    pub fn from_name(name: &str) -> Option<RulerTask> {
        RulerTask::ALL.into_iter().find(|task| task.name() == name)
    }
}

/// What to generate. Items come out sample-major, then length, then task, so a `limit`
/// keeps every task represented.
#[derive(Debug, Clone, PartialEq)]
pub struct RulerConfig {
    /// Context lengths in model tokens.
    pub lengths_tokens: Vec<usize>,
    /// Items per (task, length).
    pub samples_per_task: usize,
    /// Tasks to generate.
    pub tasks: Vec<RulerTask>,
    /// Upper bound of a document's length in tokens.
    pub doc_tokens: usize,
}

impl Default for RulerConfig {
    fn default() -> Self {
        RulerConfig {
            lengths_tokens: vec![1024, 4096],
            samples_per_task: 5,
            tasks: RulerTask::ALL.to_vec(),
            doc_tokens: 512,
        }
    }
}

/// What a task generator returns before packing into documents.
struct TaskOutput {
    /// Context segments (sentences or lines) in order, and their token counts.
    segments: Vec<String>,
    segment_tokens: Vec<usize>,
    question: String,
    answers: Vec<String>,
    tags: BTreeMap<String, serde_json::Value>,
}

/// Shared inputs of one item's generator.
struct TaskCtx<'a> {
    length: usize,
    count: CountTokens<'a>,
    task: RulerTask,
}

impl TaskCtx<'_> {
    fn fail(&self, message: String) -> EvalError {
        EvalError::Generation {
            dataset: format!("ruler/{}", self.task.name()),
            message,
        }
    }
}

/// Generates up to `limit` items of `cfg` from `seed`.
///
/// Errors: `Generation` when a length is too small for a task's fixed parts.
pub fn generate(
    cfg: &RulerConfig,
    seed: u64,
    limit: Option<usize>,
    count_tokens: CountTokens<'_>,
) -> Result<Vec<EvalItem>, EvalError> {
    let limit = limit.unwrap_or(usize::MAX);
    let mut items = Vec::new();
    for sample_index in 0..cfg.samples_per_task {
        for &length in &cfg.lengths_tokens {
            for &task in &cfg.tasks {
                if items.len() >= limit {
                    return Ok(items);
                }
                let mut rng = item_rng(seed, task, length, sample_index);
                let ctx = TaskCtx {
                    length,
                    count: count_tokens,
                    task,
                };
                let out = match task {
                    RulerTask::VariableTracking => vt::generate(&ctx, &mut rng)?,
                    RulerTask::CommonWords => words::common_words(&ctx, &mut rng)?,
                    RulerTask::FrequentWords => words::frequent_words(&ctx, &mut rng)?,
                    _ => niah::generate(&ctx, &mut rng)?,
                };
                items.push(finish_item(&ctx, sample_index, cfg.doc_tokens, out));
            }
        }
    }
    Ok(items)
}

fn item_rng(seed: u64, task: RulerTask, length: usize, sample_index: usize) -> ChaCha8Rng {
    let task_index = RulerTask::ALL.iter().position(|&t| t == task).unwrap_or(0) as u64;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream((task_index << 56) ^ ((length as u64) << 20) ^ sample_index as u64);
    rng
}

fn finish_item(
    ctx: &TaskCtx<'_>,
    sample_index: usize,
    doc_tokens: usize,
    out: TaskOutput,
) -> EvalItem {
    let (documents, _) = pack_documents(&out.segments, &out.segment_tokens, doc_tokens);
    let context_tokens = (ctx.count)(&out.segments.concat());
    let mut tags = out.tags;
    tags.insert("task".into(), json!(format!("ruler/{}", ctx.task.name())));
    tags.insert("ruler_task".into(), json!(ctx.task.name()));
    tags.insert("context_tokens_target".into(), json!(ctx.length));
    tags.insert("context_tokens".into(), json!(context_tokens));
    EvalItem {
        id: format!(
            "ruler-{}-len{}-s{sample_index}",
            ctx.task.name(),
            ctx.length
        ),
        documents,
        question: out.question,
        answers: out.answers,
        scorer: ScorerKind::MatchAll,
        tags,
    }
}

/// RULER's noise haystack sentences.
const NOISE: [&str; 5] = [
    "The grass is green. ",
    "The sky is blue. ",
    "The sun is yellow. ",
    "Here we go. ",
    "There and back again. ",
];

/// Noise sentences filling `ctx.length` tokens together with `inserts`, which are placed at
/// random sentence boundaries in the order given.
///
/// Errors: `Generation` when the inserts alone do not fit.
fn noise_with_inserts(
    ctx: &TaskCtx<'_>,
    inserts: &[String],
    rng: &mut ChaCha8Rng,
) -> Result<(Vec<String>, Vec<usize>), EvalError> {
    let insert_tokens: Vec<usize> = inserts.iter().map(|s| (ctx.count)(s)).collect();
    let fixed: usize = insert_tokens.iter().sum();
    if fixed >= ctx.length {
        return Err(ctx.fail(format!(
            "length {} tokens cannot hold {fixed} tokens of needles",
            ctx.length
        )));
    }
    let noise_tokens: Vec<usize> = NOISE.iter().map(|s| (ctx.count)(s).max(1)).collect();
    let budget = ctx.length - fixed;
    let mut noise = Vec::new();
    let mut used = 0;
    for i in (0..NOISE.len()).cycle() {
        if used + noise_tokens[i] > budget {
            break;
        }
        used += noise_tokens[i];
        noise.push(i);
    }
    let mut positions: Vec<usize> = (0..inserts.len())
        .map(|_| rng.gen_range(0..=noise.len()))
        .collect();
    positions.sort_unstable();
    let mut segments = Vec::with_capacity(noise.len() + inserts.len());
    let mut tokens = Vec::with_capacity(noise.len() + inserts.len());
    let mut next_insert = 0;
    for slot in 0..=noise.len() {
        while next_insert < inserts.len() && positions[next_insert] == slot {
            segments.push(inserts[next_insert].clone());
            tokens.push(insert_tokens[next_insert]);
            next_insert += 1;
        }
        if let Some(&n) = noise.get(slot) {
            segments.push(NOISE[n].to_string());
            tokens.push(noise_tokens[n]);
        }
    }
    Ok((segments, tokens))
}

/// `n` distinct values drawn by `draw`.
fn distinct<T: PartialEq>(
    n: usize,
    rng: &mut ChaCha8Rng,
    draw: impl Fn(&mut ChaCha8Rng) -> T,
) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(n);
    while out.len() < n {
        let v = draw(rng);
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// `n` distinct indices below `len`, in random order (all of them when `n >= len`).
fn pick_indices(rng: &mut ChaCha8Rng, len: usize, n: usize) -> Vec<usize> {
    sample(rng, len, n.min(len)).into_vec()
}

#[cfg(test)]
mod tests {
    use super::super::text::whitespace_tokens;
    use super::*;

    fn small_cfg() -> RulerConfig {
        RulerConfig {
            lengths_tokens: vec![600, 2000],
            samples_per_task: 3,
            tasks: RulerTask::ALL.to_vec(),
            doc_tokens: 256,
        }
    }

    #[test]
    fn answers_are_in_the_context_and_lengths_fit() {
        let count = whitespace_tokens;
        let items = generate(&small_cfg(), 7, None, &count).unwrap();
        assert_eq!(items.len(), 3 * 2 * 7);
        for item in &items {
            let context = item.context_text();
            assert!(!item.answers.is_empty(), "{}", item.id);
            for answer in &item.answers {
                assert!(
                    context.contains(answer.as_str()),
                    "{}: {answer} missing",
                    item.id
                );
            }
            let target = item.tags["context_tokens_target"].as_u64().unwrap() as usize;
            let got = whitespace_tokens(&context);
            assert!(
                got <= target && got * 10 >= target * 8,
                "{}: {got} of {target}",
                item.id
            );
            assert!(item
                .documents
                .iter()
                .all(|d| whitespace_tokens(&d.text) <= 256));
            assert_eq!(item.scorer, ScorerKind::MatchAll);
        }
    }

    #[test]
    fn a_task_subset_gives_the_same_items_as_the_full_list() {
        let count = whitespace_tokens;
        let all = generate(&small_cfg(), 5, None, &count).unwrap();
        let subset_cfg = RulerConfig {
            tasks: vec![RulerTask::VariableTracking, RulerTask::NiahSingle],
            ..small_cfg()
        };
        let subset = generate(&subset_cfg, 5, None, &count).unwrap();
        assert_eq!(subset.len(), 3 * 2 * 2);
        for item in &subset {
            let twin = all.iter().find(|a| a.id == item.id).expect("same id");
            assert_eq!(item, twin);
        }
        assert_eq!(
            RulerTask::from_name("vt"),
            Some(RulerTask::VariableTracking)
        );
        assert_eq!(RulerTask::from_name("qa"), None);
    }

    #[test]
    fn same_seed_same_items_other_seed_other_items() {
        let count = whitespace_tokens;
        let a = generate(&small_cfg(), 1, None, &count).unwrap();
        let b = generate(&small_cfg(), 1, None, &count).unwrap();
        let c = generate(&small_cfg(), 2, None, &count).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // A limit takes a prefix, and keeps tasks mixed.
        let limited = generate(&small_cfg(), 1, Some(7), &count).unwrap();
        assert_eq!(limited[..], a[..7]);
        let tasks: std::collections::BTreeSet<_> = limited
            .iter()
            .map(|i| i.tags["ruler_task"].to_string())
            .collect();
        assert_eq!(tasks.len(), 7);
    }

    #[test]
    fn too_short_lengths_fail() {
        let count = whitespace_tokens;
        let cfg = RulerConfig {
            lengths_tokens: vec![10],
            ..small_cfg()
        };
        let err = generate(&cfg, 0, None, &count).unwrap_err();
        assert_eq!(err.kind(), "generation");
    }
}
