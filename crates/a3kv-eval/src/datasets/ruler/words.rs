//! RULER aggregation tasks over made-up words: common-word extraction (a numbered list where
//! ten words repeat more often than the rest) and frequent-word extraction (a "coded" text
//! drawn from a Zipf distribution). Words are pronounceable consonant-vowel strings, so no
//! word list has to be shipped (RULER uses English words for `cwe`).

use std::collections::{BTreeMap, HashMap};

use rand::distributions::WeightedIndex;
use rand::prelude::Distribution;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::{distinct, TaskCtx, TaskOutput};
use crate::error::EvalError;

/// Words asked for in `cwe`.
const NUM_COMMON: usize = 10;
/// Words asked for in `fwe`.
const NUM_FREQUENT: usize = 3;
/// Vocabulary size and Zipf exponent of `fwe` (RULER uses alpha 2).
const FWE_VOCAB: usize = 200;
const FWE_ALPHA: f64 = 2.0;
/// Coded words per line in `fwe`.
const FWE_LINE_WORDS: usize = 16;

fn pseudo_word(rng: &mut ChaCha8Rng) -> String {
    const CONSONANTS: &[u8] = b"bdfgklmnprstvz";
    const VOWELS: &[u8] = b"aeiou";
    let syllables = rng.gen_range(2..=3);
    let mut word = String::new();
    for _ in 0..syllables {
        word.push(char::from(CONSONANTS[rng.gen_range(0..CONSONANTS.len())]));
        word.push(char::from(VOWELS[rng.gen_range(0..VOWELS.len())]));
    }
    word
}

/// Common-word extraction: ten words occur `freq_common` times, the others `freq_rare`
/// times, shuffled into a numbered list filling the length.
pub(super) fn common_words(
    ctx: &TaskCtx<'_>,
    rng: &mut ChaCha8Rng,
) -> Result<TaskOutput, EvalError> {
    // RULER's frequencies at 4k+ tokens; shorter contexts get fewer repeats.
    let (mut freq_common, freq_rare) = if ctx.length >= 4096 { (30, 3) } else { (6, 1) };
    let common = distinct(NUM_COMMON, rng, pseudo_word);
    let word_tokens = |w: &str| (ctx.count)(&format!("{w}\n"));
    let number_tokens = |n: usize| (ctx.count)(&format!("{n}. "));
    let common_cost: usize = common.iter().map(|w| word_tokens(w)).sum();
    // The list must stay mostly filler, or the task becomes trivial.
    while freq_common > freq_rare + 1 && freq_common * common_cost * 2 > ctx.length {
        freq_common -= 1;
    }
    let mut entries: Vec<String> = Vec::new();
    let mut used = 0;
    for w in &common {
        for _ in 0..freq_common {
            used += number_tokens(entries.len() + 1) + word_tokens(w);
            entries.push(w.clone());
        }
    }
    if used > ctx.length {
        return Err(ctx.fail(format!(
            "length {} tokens cannot hold {NUM_COMMON} words {freq_common} times",
            ctx.length
        )));
    }
    let mut rare: Vec<String> = Vec::new();
    loop {
        let w = pseudo_word(rng);
        if common.contains(&w) || rare.contains(&w) {
            continue;
        }
        let cost: usize = (0..freq_rare)
            .map(|i| number_tokens(entries.len() + 1 + i) + word_tokens(&w))
            .sum();
        if used + cost > ctx.length {
            break;
        }
        used += cost;
        entries.extend(std::iter::repeat_n(w.clone(), freq_rare));
        rare.push(w);
    }
    entries.shuffle(rng);
    let segments: Vec<String> = entries
        .iter()
        .enumerate()
        .map(|(i, w)| format!("{}. {w}\n", i + 1))
        .collect();
    let segment_tokens = segments.iter().map(|s| (ctx.count)(s)).collect();
    let mut tags = BTreeMap::new();
    tags.insert("freq_common".into(), json!(freq_common));
    tags.insert("freq_rare".into(), json!(freq_rare));
    tags.insert("num_rare_words".into(), json!(rare.len()));
    Ok(TaskOutput {
        segments,
        segment_tokens,
        question: format!(
            "What are the {NUM_COMMON} most common words in the numbered list above? \
             Answer with the words only."
        ),
        answers: common,
        tags,
    })
}

/// Frequent-word extraction: coded words drawn from Zipf(alpha) over a random vocabulary until
/// the length is filled; the answer is the three most frequent words, made strictly more
/// frequent than the fourth.
pub(super) fn frequent_words(
    ctx: &TaskCtx<'_>,
    rng: &mut ChaCha8Rng,
) -> Result<TaskOutput, EvalError> {
    let vocab = distinct(FWE_VOCAB, rng, pseudo_word);
    let weights: Vec<f64> = (1..=FWE_VOCAB)
        .map(|rank| 1.0 / (rank as f64).powf(FWE_ALPHA))
        .collect();
    let zipf = WeightedIndex::new(&weights).map_err(|e| ctx.fail(e.to_string()))?;
    let cost: Vec<usize> = vocab
        .iter()
        .map(|w| (ctx.count)(&format!("{w} ")))
        .collect();
    let mut drawn: Vec<usize> = Vec::new();
    let mut used = 0;
    loop {
        let i = zipf.sample(rng);
        if used + cost[i] > ctx.length {
            break;
        }
        used += cost[i];
        drawn.push(i);
    }
    let mut counts: HashMap<usize, usize> = HashMap::new();
    for &i in &drawn {
        *counts.entry(i).or_default() += 1;
    }
    let mut ranked: Vec<(usize, usize)> = counts.into_iter().collect();
    // Most frequent first; ties by vocabulary index so the order is deterministic.
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    if ranked.len() <= NUM_FREQUENT {
        return Err(ctx.fail(format!(
            "length {} tokens is too short for {NUM_FREQUENT} distinct frequent words",
            ctx.length
        )));
    }
    let top: Vec<usize> = ranked[..NUM_FREQUENT].iter().map(|&(i, _)| i).collect();
    // Break ties at the cut: each top word as frequent as the fourth takes over one
    // occurrence of a word outside the top four (the length and the fourth's count stay).
    let fourth = ranked[NUM_FREQUENT].1;
    let keep: Vec<usize> = ranked[..=NUM_FREQUENT].iter().map(|&(i, _)| i).collect();
    for &(word, c) in &ranked[..NUM_FREQUENT] {
        if c == fourth {
            match drawn.iter().position(|i| !keep.contains(i)) {
                Some(pos) => drawn[pos] = word,
                None => drawn.push(word),
            }
        }
    }
    let segments: Vec<String> = drawn
        .chunks(FWE_LINE_WORDS)
        .map(|line| {
            let words: Vec<&str> = line.iter().map(|&i| vocab[i].as_str()).collect();
            format!("{}\n", words.join(" "))
        })
        .collect();
    let segment_tokens = segments.iter().map(|s| (ctx.count)(s)).collect();
    let mut tags = BTreeMap::new();
    tags.insert("alpha".into(), json!(FWE_ALPHA));
    tags.insert("words_drawn".into(), json!(drawn.len()));
    Ok(TaskOutput {
        segments,
        segment_tokens,
        question: format!(
            "What are the {NUM_FREQUENT} most frequently appearing coded words in the coded \
             text above? Answer with the words only."
        ),
        answers: top.iter().map(|&i| vocab[i].clone()).collect(),
        tags,
    })
}

#[cfg(test)]
mod tests {
    use super::super::super::text::whitespace_tokens;
    use super::super::RulerTask;
    use super::*;
    use rand::SeedableRng;

    fn word_counts(text: &str) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for w in text.split_whitespace().filter(|w| !w.ends_with('.')) {
            *counts.entry(w.to_string()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn common_words_are_the_most_common() {
        let count = whitespace_tokens;
        for length in [600, 5000] {
            let ctx = TaskCtx {
                length,
                count: &count,
                task: RulerTask::CommonWords,
            };
            let out = common_words(&ctx, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
            let counts = word_counts(&out.segments.concat());
            let freq_common = out.tags["freq_common"].as_u64().unwrap() as usize;
            let freq_rare = out.tags["freq_rare"].as_u64().unwrap() as usize;
            assert_eq!(out.answers.len(), NUM_COMMON);
            for w in &out.answers {
                assert_eq!(counts[w], freq_common, "{w}");
            }
            let rare: Vec<_> = counts
                .iter()
                .filter(|(w, _)| !out.answers.contains(w))
                .collect();
            assert!(rare.len() > NUM_COMMON, "mostly filler");
            assert!(rare.iter().all(|(_, &c)| c == freq_rare && c < freq_common));
            // Numbered from 1 in order.
            assert!(out.segments[0].starts_with("1. "));
        }
    }

    #[test]
    fn frequent_words_top_three_are_strict() {
        let count = whitespace_tokens;
        // Short texts make ties at the cut common, so the tie-breaking is exercised.
        for seed in 0..200 {
            let ctx = TaskCtx {
                length: if seed % 2 == 0 { 40 } else { 700 },
                count: &count,
                task: RulerTask::FrequentWords,
            };
            let out = frequent_words(&ctx, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap();
            let counts = word_counts(&out.segments.concat());
            let min_top = out.answers.iter().map(|w| counts[w]).min().unwrap();
            let max_rest = counts
                .iter()
                .filter(|(w, _)| !out.answers.contains(w))
                .map(|(_, &c)| c)
                .max()
                .unwrap();
            assert!(min_top > max_rest, "seed {seed}: {min_top} vs {max_rest}");
        }
    }
}
