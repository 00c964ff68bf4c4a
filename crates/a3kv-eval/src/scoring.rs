//! Scorers: SQuAD/HotpotQA token F1 and exact match, normalised substring, ROUGE-1 F and RULER's
//! string-match-all, plus `ScorerKind`, which picks the set used for an item.
//!
//! Every scorer takes the whole model output as the prediction and returns a value in [0, 1];
//! with several reference answers the best one counts (string-match-all requires all).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// Which scores an item gets; the first one listed is the item's primary score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScorerKind {
    /// Extractive QA (HotpotQA, JSONL): `f1` (primary), `exact_match`, `substring`.
    Qa,
    /// Needle in a haystack: `substring` (primary), `rouge1`.
    Needle,
    /// RULER: `string_match_all` (primary).
    MatchAll,
}

/// The scores of one output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// The primary score of the item's `ScorerKind`.
    pub primary: f64,
    /// Every score by name (`f1`, `exact_match`, `substring`, `rouge1`, `string_match_all`).
    pub all: BTreeMap<String, f64>,
}

impl ScorerKind {
    /// Name of the primary score.
    pub fn primary_name(self) -> &'static str {
        match self {
            ScorerKind::Qa => "f1",
            ScorerKind::Needle => "substring",
            ScorerKind::MatchAll => "string_match_all",
        }
    }

    /// Scores `output` against `answers`.
    pub fn score(self, output: &str, answers: &[String]) -> Scores {
        let mut all = BTreeMap::new();
        match self {
            ScorerKind::Qa => {
                all.insert("f1".into(), max_over(answers, |a| token_f1(output, a)));
                all.insert(
                    "exact_match".into(),
                    max_over(answers, |a| exact_match(output, a)),
                );
                all.insert(
                    "substring".into(),
                    max_over(answers, |a| substring_match(output, a)),
                );
            }
            ScorerKind::Needle => {
                all.insert(
                    "substring".into(),
                    max_over(answers, |a| substring_match(output, a)),
                );
                all.insert("rouge1".into(), max_over(answers, |a| rouge1_f(output, a)));
            }
            ScorerKind::MatchAll => {
                all.insert("string_match_all".into(), string_match_all(output, answers));
            }
        }
        let primary = all.get(self.primary_name()).copied().unwrap_or(0.0);
        Scores { primary, all }
    }
}

fn max_over(answers: &[String], f: impl Fn(&str) -> f64) -> f64 {
    answers.iter().map(|a| f(a)).fold(0.0, f64::max)
}

/// SQuAD/HotpotQA answer normalisation: lower-case, drop ASCII punctuation, drop the whole
/// words `a`, `an`, `the`, collapse whitespace.
pub fn normalize_answer(s: &str) -> String {
    let lowered: String = s
        .to_lowercase()
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    // Python's `re.sub(r'\b(a|an|the)\b', ' ', t)`: a maximal run of word characters equal to an
    // article is replaced by a space (so "the–end" loses "the" even without whitespace).
    let mut out = String::with_capacity(lowered.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if matches!(word.as_str(), "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in lowered.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Token F1 of HotpotQA's official `f1_score`, including its rule that a yes/no/noanswer on
/// either side scores 0 unless both normalise to the same string.
pub fn token_f1(prediction: &str, ground_truth: &str) -> f64 {
    let pred = normalize_answer(prediction);
    let truth = normalize_answer(ground_truth);
    let special = |s: &str| matches!(s, "yes" | "no" | "noanswer");
    if (special(&pred) || special(&truth)) && pred != truth {
        return 0.0;
    }
    let pred_tokens: Vec<&str> = pred.split_whitespace().collect();
    let truth_tokens: Vec<&str> = truth.split_whitespace().collect();
    let overlap = clipped_overlap(&pred_tokens, &truth_tokens);
    f_measure(overlap, pred_tokens.len(), truth_tokens.len())
}

/// 1.0 when prediction and ground truth normalise to the same string, else 0.0.
pub fn exact_match(prediction: &str, ground_truth: &str) -> f64 {
    f64::from(u8::from(
        normalize_answer(prediction) == normalize_answer(ground_truth),
    ))
}

/// 1.0 when the normalised answer occurs in the normalised prediction on word boundaries
/// (an empty answer never matches), else 0.0.
pub fn substring_match(prediction: &str, answer: &str) -> f64 {
    let answer = normalize_answer(answer);
    if answer.is_empty() {
        return 0.0;
    }
    let haystack = format!(" {} ", normalize_answer(prediction));
    f64::from(u8::from(haystack.contains(&format!(" {answer} "))))
}

/// ROUGE-1 F-measure (as `rouge_score` without stemming): lower-cased tokens of `[a-z0-9]`
/// runs, clipped unigram overlap, F = 2PR/(P+R).
pub fn rouge1_f(prediction: &str, reference: &str) -> f64 {
    let pred = rouge_tokens(prediction);
    let reference = rouge_tokens(reference);
    let pred: Vec<&str> = pred.iter().map(String::as_str).collect();
    let reference: Vec<&str> = reference.iter().map(String::as_str).collect();
    let overlap = clipped_overlap(&pred, &reference);
    f_measure(overlap, pred.len(), reference.len())
}

fn rouge_tokens(s: &str) -> Vec<String> {
    s.to_lowercase()
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// RULER's string-match-all: the fraction of `references` that occur (case-insensitively) in
/// the prediction. No references scores 0.
pub fn string_match_all(prediction: &str, references: &[String]) -> f64 {
    if references.is_empty() {
        return 0.0;
    }
    let pred = prediction.to_lowercase();
    let hits = references
        .iter()
        .filter(|r| pred.contains(&r.to_lowercase()))
        .count();
    hits as f64 / references.len() as f64
}

/// Token F1 between two free texts with the same normalisation but without the yes/no rule
/// (used for "answer F1 vs full").
pub fn text_f1(a: &str, b: &str) -> f64 {
    let a = normalize_answer(a);
    let b = normalize_answer(b);
    let a_tokens: Vec<&str> = a.split_whitespace().collect();
    let b_tokens: Vec<&str> = b.split_whitespace().collect();
    if a_tokens.is_empty() && b_tokens.is_empty() {
        return 1.0;
    }
    f_measure(
        clipped_overlap(&a_tokens, &b_tokens),
        a_tokens.len(),
        b_tokens.len(),
    )
}

fn clipped_overlap(a: &[&str], b: &[&str]) -> usize {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in b {
        *counts.entry(t).or_default() += 1;
    }
    let mut overlap = 0;
    for t in a {
        if let Some(c) = counts.get_mut(t) {
            if *c > 0 {
                *c -= 1;
                overlap += 1;
            }
        }
    }
    overlap
}

fn f_measure(overlap: usize, pred_len: usize, ref_len: usize) -> f64 {
    if overlap == 0 {
        return 0.0;
    }
    let precision = overlap as f64 / pred_len as f64;
    let recall = overlap as f64 / ref_len as f64;
    2.0 * precision * recall / (precision + recall)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn normalisation_matches_squad() {
        assert_eq!(
            normalize_answer("The  Quick, brown fox!"),
            "quick brown fox"
        );
        assert_eq!(normalize_answer("An apple a day"), "apple day");
        // Articles inside words stay; underscores are punctuation in Python's string module.
        assert_eq!(normalize_answer("theatre a_b"), "theatre ab");
        // Non-ASCII dash is not punctuation, but it is a word boundary for the article rule.
        assert_eq!(normalize_answer("the–end"), "–end");
    }

    #[test]
    fn f1_hand_computed() {
        // pred {barack, obama, was, president} vs truth {barack, obama}: overlap 2,
        // P = 2/4, R = 2/2, F1 = 2·0.5·1/1.5 = 2/3.
        assert!(close(
            token_f1("Barack Obama was president", "Barack Obama"),
            2.0 / 3.0
        ));
        // Clipping: pred "x x y" vs truth "x y y": overlap x1 + y1 = 2, P = R = 2/3, F1 = 2/3.
        assert!(close(token_f1("x x y", "x y y"), 2.0 / 3.0));
        assert!(close(token_f1("The Eiffel Tower.", "eiffel tower"), 1.0));
        assert_eq!(token_f1("completely different", "answer"), 0.0);
    }

    #[test]
    fn f1_yes_no_rule() {
        assert_eq!(token_f1("yes", "yes"), 1.0);
        assert_eq!(token_f1("Yes.", "yes"), 1.0);
        // Without the rule "yes it is" vs "yes" would score 0.5; the rule makes it 0.
        assert_eq!(token_f1("yes it is", "yes"), 0.0);
        assert_eq!(token_f1("no", "no way"), 0.0);
    }

    #[test]
    fn exact_and_substring() {
        assert_eq!(exact_match("The Beatles!", "beatles"), 1.0);
        assert_eq!(exact_match("Beatles band", "beatles"), 0.0);
        assert_eq!(
            substring_match("I think it was the Beatles.", "Beatles"),
            1.0
        );
        // Word boundaries: "art" is not inside "party".
        assert_eq!(substring_match("a party", "art"), 0.0);
        assert_eq!(substring_match("anything", ""), 0.0);
    }

    #[test]
    fn rouge1_hand_computed() {
        // pred tokens [eat, a, sandwich] vs ref [eat, a, sandwich, and, sit]: overlap 3,
        // P = 1, R = 3/5, F = 2·0.6/1.6 = 0.75.
        assert!(close(
            rouge1_f("Eat a sandwich!", "eat a sandwich and sit"),
            0.75
        ));
        assert_eq!(rouge1_f("", "x"), 0.0);
        assert!(close(rouge1_f("x-1", "X 1"), 1.0));
    }

    #[test]
    fn string_match_all_fraction() {
        let refs = vec!["1234567".to_string(), "Abc".to_string(), "zz".to_string()];
        assert!(close(
            string_match_all("numbers 1234567 and abc", &refs),
            2.0 / 3.0
        ));
        assert_eq!(string_match_all("nothing", &refs), 0.0);
        assert_eq!(string_match_all("x", &[]), 0.0);
    }

    #[test]
    fn score_sets_and_primary() {
        let answers = vec!["Paris".to_string(), "the city of Paris".to_string()];
        let s = ScorerKind::Qa.score("Paris", &answers);
        assert_eq!(s.primary, 1.0);
        assert_eq!(s.all["exact_match"], 1.0);
        let s = ScorerKind::Needle.score("eat a sandwich", &["eat a sandwich and sit".into()]);
        assert_eq!(s.primary, 0.0);
        // [eat, a, sandwich] vs [eat, a, sandwich, and, sit] = 0.75 as above.
        assert!(close(s.all["rouge1"], 0.75));
        let s = ScorerKind::MatchAll.score("a b", &["a".into(), "c".into()]);
        assert!(close(s.primary, 0.5));
    }

    #[test]
    fn text_f1_between_outputs() {
        assert_eq!(text_f1("", ""), 1.0);
        assert_eq!(text_f1("yes", "yes it is"), 0.5);
    }
}
