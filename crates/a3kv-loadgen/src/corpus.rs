//! `Corpus`: the word stream document and question text is cut from. Either a real text (any
//! JSON file; every string in it is used, e.g. `data/PaulGrahamEssays.json`, which is
//! `{"text": "..."}`) or synthetic words drawn from a small English vocabulary. Tokens are
//! approximated by whitespace-separated words.

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::Rng;

use crate::LoadgenError;

/// The corpus used when `--corpus` is not given and the file exists (relative to the working
/// directory); `scripts/fetch-data.sh` puts it there.
pub const DEFAULT_CORPUS_PATH: &str = "data/PaulGrahamEssays.json";
/// File name of the default corpus inside `$A3KV_DATA_DIR` when that variable is set.
pub const DEFAULT_CORPUS_FILE: &str = "PaulGrahamEssays.json";

/// Number of words in a synthetic corpus: large enough that documents rarely share windows.
const SYNTHETIC_WORDS: usize = 200_000;

/// A small vocabulary for synthetic text; real text is preferred when available.
const VOCAB: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "a",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "had",
    "they",
    "you",
    "were",
    "their",
    "one",
    "all",
    "we",
    "can",
    "her",
    "has",
    "there",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "no",
    "startup",
    "company",
    "founders",
    "investors",
    "program",
    "language",
    "essay",
    "write",
    "people",
    "work",
    "idea",
    "ideas",
    "time",
    "money",
    "users",
    "product",
    "growth",
    "software",
    "hacker",
    "painters",
    "city",
    "school",
    "question",
    "answer",
    "problem",
    "solution",
    "reason",
    "market",
    "build",
    "think",
    "know",
    "make",
    "good",
    "great",
    "new",
    "old",
    "small",
    "large",
    "early",
    "late",
    "fast",
    "slow",
    "hard",
    "easy",
    "best",
    "worst",
    "year",
    "day",
    "world",
    "life",
    "way",
    "thing",
    "things",
    "kind",
    "part",
    "place",
    "case",
    "point",
    "fact",
    "group",
    "number",
    "system",
    "program",
    "process",
    "result",
    "change",
];

/// The text source: a stream of words.
#[derive(Debug, Clone)]
pub struct Corpus {
    words: Vec<String>,
    source: String,
}

impl Corpus {
    /// Loads every string in a JSON file and splits it into words.
    ///
    /// Errors: [`LoadgenError::CorpusRead`] if the file cannot be read,
    /// [`LoadgenError::CorpusFormat`] if it is not JSON or has no words.
    pub fn from_json_file(path: &Path) -> Result<Self, LoadgenError> {
        let bytes = std::fs::read(path).map_err(|source| LoadgenError::CorpusRead {
            path: path.to_path_buf(),
            source,
        })?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| LoadgenError::CorpusFormat {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let mut words = Vec::new();
        collect_words(&value, &mut words);
        if words.is_empty() {
            return Err(LoadgenError::CorpusFormat {
                path: path.to_path_buf(),
                message: "no words in any string of the file".into(),
            });
        }
        Ok(Self {
            words,
            source: path.display().to_string(),
        })
    }

    /// Synthetic words, deterministic in `rng`.
    pub fn synthetic<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let words = (0..SYNTHETIC_WORDS)
            .map(|_| VOCAB.choose(rng).copied().unwrap_or("word").to_string())
            .collect();
        Self {
            words,
            source: "synthetic".into(),
        }
    }

    /// Picks the source: `explicit` must load; otherwise [`DEFAULT_CORPUS_PATH`] (or
    /// `$A3KV_DATA_DIR/`[`DEFAULT_CORPUS_FILE`]) is used if it exists, else synthetic words;
    /// `force_synthetic` skips files. Reads the file (blocking).
    pub fn resolve<R: Rng + ?Sized>(
        explicit: Option<&Path>,
        force_synthetic: bool,
        rng: &mut R,
    ) -> Result<Self, LoadgenError> {
        if force_synthetic {
            return Ok(Self::synthetic(rng));
        }
        if let Some(p) = explicit {
            return Self::from_json_file(p);
        }
        // `scripts/fetch-data.sh` honours `A3KV_DATA_DIR`; so does the default here.
        let default = match std::env::var_os("A3KV_DATA_DIR") {
            Some(dir) => PathBuf::from(dir).join(DEFAULT_CORPUS_FILE),
            None => PathBuf::from(DEFAULT_CORPUS_PATH),
        };
        if default.is_file() {
            Self::from_json_file(&default)
        } else {
            Ok(Self::synthetic(rng))
        }
    }

    /// Where the words came from: a path or `"synthetic"`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// True when there are no words (never for a loaded corpus).
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// `n_words` consecutive words starting at `start`, wrapping around the end, joined by
    /// single spaces. Empty if the corpus is empty.
    pub fn window(&self, start: usize, n_words: usize) -> String {
        if self.words.is_empty() {
            return String::new();
        }
        let len = self.words.len();
        let mut out = String::with_capacity(n_words * 6);
        for i in 0..n_words {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(&self.words[(start + i) % len]);
        }
        out
    }

    /// `n_words` words, each drawn independently at random from the corpus.
    pub fn random_words<R: Rng + ?Sized>(&self, rng: &mut R, n_words: usize) -> String {
        let picked: Vec<&str> = (0..n_words)
            .filter_map(|_| self.words.choose(rng).map(String::as_str))
            .collect();
        picked.join(" ")
    }
}

fn collect_words(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.extend(s.split_whitespace().map(str::to_string)),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_words(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_words(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn loads_strings_from_any_json_shape() {
        let dir = std::env::temp_dir().join(format!("a3kv-loadgen-corpus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.json");
        std::fs::write(
            &p,
            r#"{"text": "How to  start\na startup", "n": 3, "x": ["Do things"]}"#,
        )
        .unwrap();
        let c = Corpus::from_json_file(&p).unwrap();
        assert_eq!(c.len(), 7);
        assert_eq!(c.window(5, 4), "Do things How to");
        std::fs::write(&p, "not json").unwrap();
        assert!(matches!(
            Corpus::from_json_file(&p),
            Err(LoadgenError::CorpusFormat { .. })
        ));
        std::fs::write(&p, r#"{"n": 1}"#).unwrap();
        assert!(matches!(
            Corpus::from_json_file(&p),
            Err(LoadgenError::CorpusFormat { .. })
        ));
        assert!(matches!(
            Corpus::from_json_file(&dir.join("missing.json")),
            Err(LoadgenError::CorpusRead { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn synthetic_is_deterministic() {
        let a = Corpus::synthetic(&mut ChaCha8Rng::seed_from_u64(1));
        let b = Corpus::synthetic(&mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(a.window(100, 50), b.window(100, 50));
        assert_eq!(a.window(0, 10).split(' ').count(), 10);
        assert_eq!(a.source(), "synthetic");
    }
}
