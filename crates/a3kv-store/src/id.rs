//! `ChunkId`: the 32-byte content hash that names a stored chunk.
//!
//! The caller computes it (a hash of model fingerprint and token ids, see docs/design.md
//! §2.3); the store only compares, prints and parses it. Its hex form is the on-disk file name.

use std::fmt;
use std::str::FromStr;

use crate::error::StoreError;

/// Identity of one chunk's KV: a 32-byte content hash chosen by the caller.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// Wraps a 32-byte hash.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Lower-case hex of 32 bytes (64 characters).
pub(crate) fn to_hex(bytes: &[u8; 32]) -> String {
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
        f.write_str(&to_hex(&self.0))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({self})")
    }
}

impl FromStr for ChunkId {
    type Err = StoreError;

    /// Parses exactly 64 hex digits (either case).
    ///
    /// # Errors
    /// [`StoreError::ParseChunkId`] for a wrong length or a non-hex character.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || StoreError::ParseChunkId(s.chars().take(80).collect());
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
}
