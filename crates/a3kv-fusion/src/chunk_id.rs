//! `ChunkId`: the content address of one chunk's KV, and the one id type every crate uses
//! (the store names files, Redis keys and pins by it; docs/design.md §2.3).
//!
//! `sha256("a3kv-chunk-v1", model fingerprint, token count, token ids)`, so one text under
//! one model always has the same id and another model never shares it. Its 64-digit
//! lower-case hex form is the file name on disk and the id the chunk API reports.

use std::fmt;
use std::str::FromStr;

use a3kv_model::Fingerprint;
use sha2::{Digest, Sha256};

use crate::FusionError;

/// Content address of a chunk: `sha256(model fingerprint, token ids)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// The id of `ids` under the model `fingerprint`.
    pub fn of(fingerprint: &Fingerprint, ids: &[u32]) -> Self {
        let mut h = Sha256::new();
        h.update(b"a3kv-chunk-v1");
        h.update(fingerprint.0);
        h.update((ids.len() as u64).to_le_bytes());
        for id in ids {
            h.update(id.to_le_bytes());
        }
        ChunkId(h.finalize().into())
    }

    /// Wraps a 32-byte hash (ids read back from a file header or built by tests).
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Hex form (64 lower-case digits).
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }
}

/// Lower-case hex of 32 bytes (64 characters): a chunk id's printed form, and the store's
/// name for a model fingerprint's directory or key prefix.
pub fn to_hex(bytes: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({self})")
    }
}

impl FromStr for ChunkId {
    type Err = FusionError;

    /// Parses exactly 64 hex digits (either case).
    ///
    /// # Errors
    /// [`FusionError::ParseChunkId`] for a wrong length or a non-hex character.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || FusionError::ParseChunkId(s.chars().take(80).collect());
        let raw = s.as_bytes();
        if raw.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in raw.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or_else(bad)?;
            let lo = hex_val(pair[1]).ok_or_else(bad)?;
            out[i] = (hi << 4) | lo;
        }
        Ok(Self(out))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let mut b = [0u8; 32];
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i as u8).wrapping_mul(37).wrapping_add(3);
        }
        let id = ChunkId(b);
        let s = id.to_string();
        assert_eq!(s.len(), 64);
        assert!(s.starts_with("03284d"));
        assert_eq!(s, id.to_hex());
        assert_eq!(format!("{id:?}"), format!("ChunkId({s})"));
        assert_eq!(s.parse::<ChunkId>().unwrap(), id);
        assert_eq!(s.to_uppercase().parse::<ChunkId>().unwrap(), id);
    }

    #[test]
    fn rejects_bad_hex() {
        assert!("abc".parse::<ChunkId>().is_err());
        let bad = "g".repeat(64);
        let err = bad.parse::<ChunkId>().unwrap_err();
        assert_eq!(err.kind(), "parse_chunk_id");
        let multibyte = "é".repeat(32);
        assert!(multibyte.parse::<ChunkId>().is_err());
    }

    #[test]
    fn id_depends_on_model_and_tokens() {
        let a = Fingerprint([1; 32]);
        let b = Fingerprint([2; 32]);
        assert_eq!(ChunkId::of(&a, &[1, 2, 3]), ChunkId::of(&a, &[1, 2, 3]));
        assert_ne!(ChunkId::of(&a, &[1, 2, 3]), ChunkId::of(&b, &[1, 2, 3]));
        assert_ne!(ChunkId::of(&a, &[1, 2, 3]), ChunkId::of(&a, &[1, 2]));
        // Fingerprints print the same way (the store's directory names).
        assert_eq!(to_hex(&a.0), a.to_hex());
    }
}
