//! Start-up recovery of the disk tier: rebuild the index from the directory, removing torn
//! temp files and bad chunk files, and report what was found.
//!
//! Each chunk file's header is validated (magic, version, header checksum, fingerprint, id,
//! layout, exact length): that catches torn and truncated writes without reading the data.
//! Layer checksums are checked on every read, so damage inside layer data is caught then.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{CorruptReason, StoreError};
use crate::format::{ChunkReader, ReadFailure};
use a3kv_fusion::ChunkId;

/// Extension of committed chunk files.
pub(crate) const CHUNK_EXT: &str = "a3kv";
/// Suffix of in-progress writes; such files are never read and are removed on start.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

/// What recovery found in the disk tier's directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Valid chunk files indexed.
    pub indexed: u64,
    /// Bytes of the indexed files.
    pub indexed_bytes: u64,
    /// Leftover temp files of interrupted writes, removed.
    pub temp_files_removed: u64,
    /// Chunk files that failed validation, removed, with the reason.
    pub bad_files: Vec<(PathBuf, CorruptReason)>,
    /// Files that are not ours (unexpected names), left alone.
    pub unknown_files: u64,
    /// Indexed files evicted at start because the budget is smaller than what was on disk.
    pub evicted_over_budget: u64,
}

/// A valid file found by the scan.
#[derive(Debug, Clone)]
pub(crate) struct FoundChunk {
    pub id: ChunkId,
    pub size: u64,
    pub modified: SystemTime,
}

/// Parses `<64 hex>.a3kv` into a chunk id.
pub(crate) fn parse_chunk_file_name(name: &str) -> Option<ChunkId> {
    let stem = name.strip_suffix(CHUNK_EXT)?.strip_suffix('.')?;
    stem.parse().ok()
}

/// Scans `root`, validating chunk headers. Bad files and temp files are deleted.
///
/// # Errors
/// [`StoreError::Io`] only if the directory itself cannot be listed.
pub(crate) fn scan(
    root: &Path,
    fingerprint: &[u8; 32],
) -> Result<(Vec<FoundChunk>, RecoveryReport), StoreError> {
    let mut report = RecoveryReport::default();
    let mut found = Vec::new();
    let dir = std::fs::read_dir(root).map_err(|e| StoreError::io(root, e))?;
    for entry in dir {
        let entry = entry.map_err(|e| StoreError::io(root, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if !is_file {
            continue;
        }
        if name.starts_with('.') && name.ends_with(TEMP_SUFFIX) {
            match std::fs::remove_file(&path) {
                Ok(()) => report.temp_files_removed += 1,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove temp file")
                }
            }
            continue;
        }
        let Some(id) = parse_chunk_file_name(&name) else {
            if name != crate::disk::LOCK_FILE {
                report.unknown_files += 1;
                tracing::warn!(path = %path.display(), "unexpected file in chunk store directory, ignored");
            }
            continue;
        };
        match ChunkReader::open(&path, &id, fingerprint) {
            Ok(reader) => {
                let modified = reader
                    .file()
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                found.push(FoundChunk {
                    id,
                    size: reader.header().file_len,
                    modified,
                });
            }
            Err(ReadFailure::Corrupt(reason)) => {
                tracing::warn!(path = %path.display(), reason = %reason, "bad chunk file removed at recovery");
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove bad chunk file");
                }
                report.bad_files.push((path, reason));
            }
            Err(ReadFailure::NotFound) => {}
            Err(ReadFailure::Io(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable chunk file skipped");
                report.unknown_files += 1;
            }
        }
    }
    Ok((found, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        let id = ChunkId([0xab; 32]);
        assert_eq!(parse_chunk_file_name(&format!("{id}.a3kv")), Some(id));
        assert_eq!(parse_chunk_file_name(&format!("{id}a3kv")), None);
        assert_eq!(parse_chunk_file_name("x.a3kv"), None);
        assert_eq!(parse_chunk_file_name(&format!("{id}.bin")), None);
    }
}
