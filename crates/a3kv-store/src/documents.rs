//! Document records: `document id → its chunks' token ids`, kept in the lower tiers so a
//! document stored by id (`PUT /v1/chunks`, or an inline document given an id) can be cited by
//! id after a restart and by any replica of a fleet.
//!
//! A record is JSON `{"id": "...", "chunks": [[token ids], ...]}` under a key derived from the
//! id (128 bits of two seeded xxh3 hashes, hex), so any id string is a safe file name or Redis
//! key; the id inside is checked on read, so a hash collision reads as a miss.

use std::hash::Hasher;

use serde::{Deserialize, Serialize};
use twox_hash::XxHash3_64 as Xxh3;

/// The stored form of one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DocumentRecord {
    /// The document id as given.
    pub id: String,
    /// Token ids of each of its chunks, in order.
    pub chunks: Vec<Vec<u32>>,
}

/// The tier key of a document id.
pub(crate) fn record_key(id: &str) -> String {
    let hash = |seed: u64| {
        let mut h = Xxh3::with_seed(seed);
        h.write(id.as_bytes());
        h.finish()
    };
    format!("{:016x}{:016x}", hash(0x6133_6b76), hash(0x646f_6373))
}

/// Encodes a record.
pub(crate) fn encode(id: &str, chunks: &[Vec<u32>]) -> Vec<u8> {
    // Serialising plain strings and integers cannot fail.
    serde_json::to_vec(&DocumentRecord {
        id: id.to_string(),
        chunks: chunks.to_vec(),
    })
    .unwrap_or_default()
}

/// Decodes a record of `id`; `None` when it is damaged or belongs to another id.
pub(crate) fn decode(id: &str, bytes: &[u8]) -> Option<Vec<Vec<u32>>> {
    let r: DocumentRecord = serde_json::from_slice(bytes).ok()?;
    (r.id == id).then_some(r.chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_mismatch() {
        let chunks = vec![vec![1, 2, 3], vec![4]];
        let b = encode("doc/1 with spaces", &chunks);
        assert_eq!(decode("doc/1 with spaces", &b), Some(chunks));
        assert_eq!(decode("other", &b), None);
        assert_eq!(decode("x", b"not json"), None);
        let k = record_key("doc/1 with spaces");
        assert_eq!(k.len(), 32);
        assert!(k.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(k, record_key("doc/2 with spaces"));
    }
}
