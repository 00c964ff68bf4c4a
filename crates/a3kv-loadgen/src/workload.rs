//! The synthetic RAG workload: a document pool cut from the corpus, Zipf popularity over it,
//! and per-request content (which documents, in what order, the question, the output length).
//!
//! Everything is a pure function of the seed: request `i` is generated from its own RNG
//! stream `(seed, i)`, so the same seed gives the same requests whatever the server does
//! (closed-loop runs may send more or fewer of them, never different ones).

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::corpus::Corpus;
use crate::dist::LengthDist;
use crate::zipf::ZipfSampler;
use crate::LoadgenError;

/// RNG stream ids, so each use of the seed draws from an independent stream.
const STREAM_CORPUS: u64 = 1;
const STREAM_POOL: u64 = 2;
const STREAM_REQUEST: u64 = 3;
/// Used by [`crate::trace`] for arrival times.
pub(crate) const STREAM_ARRIVAL: u64 = 4;

/// Derives an independent RNG for `(seed, stream, index)` (splitmix64 finaliser on the mix).
pub(crate) fn rng_for(seed: u64, stream: u64, index: u64) -> ChaCha8Rng {
    let mut z = seed
        ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ChaCha8Rng::seed_from_u64(z)
}

/// An RNG for choosing synthetic corpus words from the seed.
pub(crate) fn corpus_rng(seed: u64) -> ChaCha8Rng {
    rng_for(seed, STREAM_CORPUS, 0)
}

/// The knobs of the synthetic workload (validated by [`Workload::new`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadSpec {
    /// Number of distinct documents in the pool (>= 1).
    pub num_docs: usize,
    /// Document length in words (≈ tokens).
    pub doc_words: LengthDist,
    /// Zipf popularity exponent (>= 0; 0 = uniform).
    pub zipf_exponent: f64,
    /// Documents per request; the maximum must not exceed `num_docs`.
    pub docs_per_request: LengthDist,
    /// Shuffle document order within a request (else pool order, which is prefix-friendly).
    pub shuffle_docs: bool,
    /// Question length in words.
    pub question_words: LengthDist,
    /// `max_tokens` per request.
    pub output_tokens: LengthDist,
    /// Master seed.
    pub seed: u64,
}

/// One document of the pool.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Content-derived id (FNV-1a of the text), stable across runs with the same text.
    pub id: String,
    /// The text.
    pub text: String,
    /// Length in words.
    pub words: usize,
}

/// The content of one request, before it is turned into an HTTP body.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSpec {
    /// Position in the trace (0-based).
    pub index: usize,
    /// Pool indices of the documents, in prompt order.
    pub docs: Vec<usize>,
    /// The question text.
    pub question: String,
    /// `max_tokens` to ask for.
    pub max_tokens: u64,
}

/// The document pool plus the generator of request contents.
#[derive(Debug, Clone)]
pub struct Workload {
    spec: WorkloadSpec,
    corpus: Corpus,
    docs: Vec<Document>,
    zipf: ZipfSampler,
}

impl Workload {
    /// Builds the pool from `corpus`. Errors with [`LoadgenError::InvalidArgs`] when the pool is
    /// empty, the Zipf exponent is invalid, or a request could need more documents than the
    /// pool holds.
    pub fn new(spec: WorkloadSpec, corpus: Corpus) -> Result<Self, LoadgenError> {
        let zipf = ZipfSampler::new(spec.num_docs, spec.zipf_exponent)?;
        if let Some(max_k) = spec.docs_per_request.max() {
            if max_k > spec.num_docs as u64 {
                return Err(LoadgenError::InvalidArgs(format!(
                    "--docs-per-request can reach {max_k} but --num-docs is {}",
                    spec.num_docs
                )));
            }
        }
        if corpus.is_empty() {
            return Err(LoadgenError::InvalidArgs("the corpus has no words".into()));
        }
        let mut rng = rng_for(spec.seed, STREAM_POOL, 0);
        let docs = (0..spec.num_docs)
            .map(|_| {
                let words = spec.doc_words.sample(&mut rng) as usize;
                let start = rng.gen_range(0..corpus.len());
                let text = corpus.window(start, words);
                Document {
                    id: format!("doc-{:016x}", fnv1a(text.as_bytes())),
                    text,
                    words,
                }
            })
            .collect();
        Ok(Self {
            spec,
            corpus,
            docs,
            zipf,
        })
    }

    /// The spec this workload was built from.
    pub fn spec(&self) -> &WorkloadSpec {
        &self.spec
    }

    /// Where the text came from.
    pub fn corpus_source(&self) -> &str {
        self.corpus.source()
    }

    /// Document `i` of the pool (`None` past the end).
    pub fn doc(&self, i: usize) -> Option<&Document> {
        self.docs.get(i)
    }

    /// The whole pool, most popular first.
    pub fn docs(&self) -> &[Document] {
        &self.docs
    }

    /// The content of request `index`; pure in `(seed, index)`.
    pub fn request(&self, index: usize) -> RequestSpec {
        let mut rng = rng_for(self.spec.seed, STREAM_REQUEST, index as u64);
        let k = (self.spec.docs_per_request.sample(&mut rng) as usize).min(self.docs.len());
        let mut docs = self.zipf.sample_distinct(&mut rng, k);
        if self.spec.shuffle_docs {
            docs.shuffle(&mut rng);
        } else {
            docs.sort_unstable();
        }
        let q_words = self.spec.question_words.sample(&mut rng) as usize;
        let mut question = self.corpus.random_words(&mut rng, q_words);
        question.push('?');
        let max_tokens = self.spec.output_tokens.sample(&mut rng);
        RequestSpec {
            index,
            docs,
            question,
            max_tokens,
        }
    }
}

/// 64-bit FNV-1a, for content-derived document ids.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64) -> WorkloadSpec {
        WorkloadSpec {
            num_docs: 50,
            doc_words: LengthDist::Uniform { lo: 20, hi: 40 },
            zipf_exponent: 1.0,
            docs_per_request: LengthDist::Uniform { lo: 2, hi: 5 },
            shuffle_docs: false,
            question_words: LengthDist::Fixed { n: 8 },
            output_tokens: LengthDist::Fixed { n: 16 },
            seed,
        }
    }

    fn workload(seed: u64) -> Workload {
        Workload::new(spec(seed), Corpus::synthetic(&mut corpus_rng(seed))).unwrap()
    }

    #[test]
    fn same_seed_same_requests_different_seed_differs() {
        let (a, b, c) = (workload(5), workload(5), workload(6));
        assert_eq!(a.docs(), b.docs());
        for i in 0..20 {
            assert_eq!(a.request(i), b.request(i));
        }
        assert!((0..20).any(|i| a.request(i) != c.request(i)));
    }

    #[test]
    fn requests_respect_knobs() {
        let w = workload(1);
        for d in w.docs() {
            assert!((20..=40).contains(&d.words));
            assert_eq!(d.text.split(' ').count(), d.words);
        }
        for i in 0..200 {
            let r = w.request(i);
            assert!((2..=5).contains(&r.docs.len()));
            assert!(
                r.docs.windows(2).all(|p| p[0] < p[1]),
                "unshuffled docs are sorted"
            );
            assert_eq!(r.question.split(' ').count(), 8);
            assert!(r.question.ends_with('?'));
            assert_eq!(r.max_tokens, 16);
        }
    }

    #[test]
    fn shuffle_changes_order_sometimes() {
        let mut s = spec(1);
        s.shuffle_docs = true;
        let w = Workload::new(s, Corpus::synthetic(&mut corpus_rng(1))).unwrap();
        assert!((0..200).any(|i| w.request(i).docs.windows(2).any(|p| p[0] > p[1])));
    }

    #[test]
    fn rejects_more_docs_per_request_than_pool() {
        let mut s = spec(1);
        s.docs_per_request = LengthDist::Fixed { n: 51 };
        assert!(Workload::new(s, Corpus::synthetic(&mut corpus_rng(1))).is_err());
    }
}
