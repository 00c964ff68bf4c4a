//! `StoreError` (the crate's error enum) and `CorruptReason` (why a stored file was rejected).
//!
//! Corruption is not an error for `get`: it is counted, logged and turned into a miss. It only
//! surfaces as an error item of a layer stream whose later layer fails its checksum after
//! earlier layers were already handed out.

use std::path::PathBuf;
use std::sync::Arc;

/// Errors of the chunk store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed (not corruption: e.g. permission, no space).
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error (shared so the error is `Clone` for single-flight fan-out).
        source: Arc<std::io::Error>,
    },
    /// A stored file failed validation.
    #[error("corrupt chunk file {path}: {reason}")]
    Corrupt {
        /// The rejected file.
        path: PathBuf,
        /// What check failed.
        reason: CorruptReason,
    },
    /// Data handed to the store is inconsistent with its own meta or with the store's model.
    #[error("invalid chunk data: {0}")]
    InvalidData(String),
    /// The memory tier cannot hold a chunk that must be pinned (pinned bytes fill the budget).
    #[error("memory tier full: need {needed_bytes} bytes, {available_bytes} evictable or free")]
    MemoryFull {
        /// Size of the chunk.
        needed_bytes: u64,
        /// Free plus evictable bytes at the time.
        available_bytes: u64,
    },
    /// The caller's compute closure failed.
    #[error("chunk computation failed: {0}")]
    Compute(Arc<dyn std::error::Error + Send + Sync>),
    /// A blocking task panicked or was cancelled.
    #[error("store task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// Short stable label for metrics and status mapping.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::Corrupt { .. } => "corrupt",
            Self::InvalidData(_) => "invalid_data",
            Self::MemoryFull { .. } => "memory_full",
            Self::Compute(_) => "compute",
            Self::Task(_) => "task",
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source: Arc::new(source),
        }
    }
}

impl From<tokio::task::JoinError> for StoreError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::Task(e.to_string())
    }
}

/// Why a chunk file was rejected. Every variant means "never use this file".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorruptReason {
    /// The first 8 bytes are not the format magic.
    #[error("bad magic")]
    BadMagic,
    /// A format version this build does not read.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u32),
    /// The header bytes do not match their checksum.
    #[error("header checksum mismatch")]
    HeaderChecksum,
    /// The header is self-consistent by checksum but describes an impossible layout.
    #[error("invalid header: {0}")]
    InvalidHeader(&'static str),
    /// Written by another model (or another fingerprint of it).
    #[error("model fingerprint mismatch")]
    FingerprintMismatch,
    /// The file's embedded chunk id differs from its name.
    #[error("chunk id does not match file name")]
    ChunkIdMismatch,
    /// A dtype code this build does not read.
    #[error("unsupported dtype code {0}")]
    UnsupportedDtype(u32),
    /// The file is shorter or longer than its header says (torn write, truncation).
    #[error("file length {actual} != expected {expected}")]
    Length {
        /// Length recorded in the header.
        expected: u64,
        /// Length on disk.
        actual: u64,
    },
    /// Layer `layer`'s bytes do not match its checksum.
    #[error("layer {layer} checksum mismatch")]
    LayerChecksum {
        /// The failing layer index.
        layer: usize,
    },
    /// Reading the file hit end-of-file or another read error mid-way.
    #[error("read failed: {0}")]
    Read(String),
}

impl CorruptReason {
    /// Short stable label for logs and counters.
    pub fn label(&self) -> &'static str {
        match self {
            Self::BadMagic => "bad_magic",
            Self::UnsupportedVersion(_) => "version",
            Self::HeaderChecksum => "header_checksum",
            Self::InvalidHeader(_) => "invalid_header",
            Self::FingerprintMismatch => "fingerprint",
            Self::ChunkIdMismatch => "chunk_id",
            Self::UnsupportedDtype(_) => "dtype",
            Self::Length { .. } => "length",
            Self::LayerChecksum { .. } => "layer_checksum",
            Self::Read(_) => "read",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_stable() {
        let e = StoreError::io("/x", std::io::Error::other("boom"));
        assert_eq!(e.kind(), "io");
        assert!(e.to_string().contains("/x"));
        let c = StoreError::Corrupt {
            path: "/y".into(),
            reason: CorruptReason::LayerChecksum { layer: 3 },
        };
        assert_eq!(c.kind(), "corrupt");
        assert!(c.to_string().contains("layer 3"));
        assert_eq!(CorruptReason::FingerprintMismatch.label(), "fingerprint");
    }
}
