//! Model fingerprint: a stable hash of weights + dtype + tokenizer, so a chunk cache
//! written with one model is never used with another.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::{ModelError, Result};

/// SHA-256 identity of a model as loaded (files, compute dtype, tokenizer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Hex form.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Short hex prefix for logs.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Incremental fingerprint builder.
pub struct FingerprintBuilder(Sha256);

impl Default for FingerprintBuilder {
    fn default() -> Self {
        let mut h = Sha256::new();
        h.update(b"a3kv-fingerprint-v1");
        Self(h)
    }
}

impl FingerprintBuilder {
    /// Adds a labelled byte string.
    pub fn bytes(&mut self, label: &str, data: &[u8]) -> &mut Self {
        self.0.update((label.len() as u64).to_le_bytes());
        self.0.update(label.as_bytes());
        self.0.update((data.len() as u64).to_le_bytes());
        self.0.update(data);
        self
    }

    /// Adds the whole content of a file.
    pub fn file(&mut self, path: &Path) -> Result<&mut Self> {
        let io = |e| ModelError::Io {
            path: path.display().to_string(),
            source: e,
        };
        let mut f = std::fs::File::open(path).map_err(io)?;
        self.0.update(
            path.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            self.0.update(&buf[..n]);
        }
        Ok(self)
    }

    /// Finishes.
    pub fn finish(self) -> Fingerprint {
        Fingerprint(self.0.finalize().into())
    }
}
