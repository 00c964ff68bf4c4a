//! `--route-header NAME`: a routing key on every request, for a gateway that hashes it to a
//! replica (HAProxy `balance hdr(NAME)` with `hash-type consistent`, `configs/gateway/`).
//!
//! The key is the id of the request's **first cited document** (the first entry of its
//! `documents`, in prompt order). Why that document: a replica keeps the chunks it computed
//! or loaded in its memory tier, so requests that cite the same document should meet on the
//! same replica. Documents are Zipf-popular and, unless `--shuffle-docs`, a request cites its
//! documents in pool order, most popular first; so the key is the request's most popular
//! document, and every request citing a popular document sticks to the replica holding its
//! chunks. The other documents of a request may live elsewhere; the fleet's shared chunk tier
//! covers those. A request citing no document carries no header (the gateway then balances
//! by least connections). The key is a pure function of the request's content: the same first
//! document always gives the same key, whatever the seed, run or client.

use reqwest::header::{HeaderName, HeaderValue};

use crate::workload::{RequestSpec, Workload};
use crate::LoadgenError;

/// The header name a gateway config in `configs/gateway/` hashes on.
pub const DEFAULT_ROUTE_HEADER: &str = "x-a3kv-route";

/// A validated routing header name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteHeader {
    name: HeaderName,
}

impl RouteHeader {
    /// Checks `name` is a valid HTTP header name (lower-cased, as HTTP/2 and HAProxy compare
    /// names case-insensitively). Errors: [`LoadgenError::InvalidArgs`] naming the flag.
    pub fn parse(name: &str) -> Result<Self, LoadgenError> {
        HeaderName::from_bytes(name.trim().as_bytes())
            .map(|name| Self { name })
            .map_err(|_| {
                LoadgenError::InvalidArgs(format!(
                    "--route-header {name:?} is not a valid HTTP header name"
                ))
            })
    }

    /// The header name.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// The header for request `spec`: `(name, first cited document's id)`, or `None` when
    /// it cites no document.
    pub fn header(
        &self,
        workload: &Workload,
        spec: &RequestSpec,
    ) -> Option<(HeaderName, HeaderValue)> {
        let key = route_key(workload, spec)?;
        // Document ids are `doc-` + hex, always a valid header value; anything else is skipped.
        let value = HeaderValue::from_str(key).ok()?;
        Some((self.name.clone(), value))
    }
}

/// The routing key of request `spec`: the id of its first cited document.
pub fn route_key<'w>(workload: &'w Workload, spec: &RequestSpec) -> Option<&'w str> {
    let first = *spec.docs.first()?;
    workload.doc(first).map(|d| d.id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::Corpus;
    use crate::dist::LengthDist;
    use crate::workload::{corpus_rng, WorkloadSpec};

    fn workload() -> Workload {
        let spec = WorkloadSpec {
            num_docs: 20,
            doc_words: LengthDist::Fixed { n: 5 },
            zipf_exponent: 1.0,
            docs_per_request: LengthDist::Uniform { lo: 1, hi: 4 },
            shuffle_docs: false,
            question_words: LengthDist::Fixed { n: 3 },
            output_tokens: LengthDist::Fixed { n: 7 },
            seed: 1,
        };
        Workload::new(spec, Corpus::synthetic(&mut corpus_rng(1))).unwrap()
    }

    #[test]
    fn key_is_the_first_cited_documents_id() {
        let w = workload();
        let route = RouteHeader::parse(DEFAULT_ROUTE_HEADER).unwrap();
        for i in 0..50 {
            let spec = w.request(i);
            let (name, value) = route.header(&w, &spec).unwrap();
            assert_eq!(name.as_str(), "x-a3kv-route");
            assert_eq!(value.to_str().unwrap(), w.doc(spec.docs[0]).unwrap().id);
        }
    }

    #[test]
    fn same_first_document_same_key_and_different_ones_differ() {
        let w = workload();
        let specs: Vec<RequestSpec> = (0..200).map(|i| w.request(i)).collect();
        let mut seen = std::collections::HashMap::new();
        for s in &specs {
            let key = route_key(&w, s).unwrap();
            if let Some(prev) = seen.insert(s.docs[0], key) {
                assert_eq!(prev, key, "first document {} gave two keys", s.docs[0]);
            }
        }
        assert!(
            seen.len() > 1,
            "Zipf over 20 documents has several first documents"
        );
        let keys: std::collections::HashSet<&str> = seen.values().copied().collect();
        assert_eq!(
            keys.len(),
            seen.len(),
            "different first documents, different keys"
        );
        // Same first document but different other documents: still the same key.
        let a = RequestSpec {
            docs: vec![3, 5],
            ..specs[0].clone()
        };
        let b = RequestSpec {
            docs: vec![3, 9, 11],
            ..specs[1].clone()
        };
        assert_eq!(route_key(&w, &a), route_key(&w, &b));
    }

    #[test]
    fn no_documents_no_key_and_bad_names_rejected() {
        let w = workload();
        let spec = RequestSpec {
            docs: vec![],
            ..w.request(0)
        };
        let route = RouteHeader::parse("x-a3kv-route").unwrap();
        assert_eq!(route.header(&w, &spec), None);
        assert!(RouteHeader::parse("bad header").is_err());
        assert!(RouteHeader::parse("").is_err());
        assert_eq!(
            RouteHeader::parse("X-Route").unwrap().name().as_str(),
            "x-route"
        );
    }
}
