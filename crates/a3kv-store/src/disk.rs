//! The disk tier ([`ChunkTier`] on local files): one file per chunk under `<dir>/<fingerprint hex>/`, an in-memory index
//! with a byte budget and LRU by access time, atomic writes, and corruption handling.
//!
//! Every method here blocks (file I/O); the store calls them on `spawn_blocking` threads.
//! Index changes that must agree with the directory (commit rename, eviction unlink, removal
//! of a corrupt file) happen under the index lock, so a concurrent writer's fresh file is never
//! deleted by a stale decision. Budget accounting includes in-progress temp files.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::config::DiskConfig;
use crate::data::{ChunkKvData, KvMeta, LayerKv};
use crate::error::{CorruptReason, StoreError};
use crate::format::{self, ChunkReader, ReadFailure};
use crate::recovery::{self, RecoveryReport, CHUNK_EXT, TEMP_SUFFIX};
use crate::stats::{Tier, TierStats};
use crate::tier::{ChunkTier, Found, TierReader, TierSnapshot};
use a3kv_fusion::chunk_id::{to_hex, ChunkId};

/// Subdirectory of small records (document chunk lists); recovery skips directories.
const RECORD_DIR: &str = "documents";

/// Name of the lock file that makes one store the owner of a directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// Counters of the disk tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DiskCounters {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub corrupt_files: u64,
    pub fingerprint_mismatches: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub rejected_writes: u64,
}

#[derive(Debug, Clone, Copy)]
struct DiskEntry {
    size: u64,
    tick: u64,
    generation: u64,
}

#[derive(Debug, Default)]
struct DiskIndex {
    entries: HashMap<ChunkId, DiskEntry>,
    /// Entries by last access tick, oldest first.
    lru: BTreeMap<u64, ChunkId>,
    tick: u64,
    next_generation: u64,
    /// Committed file bytes plus reservations of in-progress writes.
    used: u64,
    reserved: u64,
    counters: DiskCounters,
}

impl DiskIndex {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn touch(&mut self, id: &ChunkId) {
        let tick = self.next_tick();
        if let Some(e) = self.entries.get_mut(id) {
            self.lru.remove(&e.tick);
            e.tick = tick;
            self.lru.insert(tick, *id);
        }
    }

    fn insert(&mut self, id: ChunkId, size: u64) {
        let tick = self.next_tick();
        self.next_generation += 1;
        let e = DiskEntry {
            size,
            tick,
            generation: self.next_generation,
        };
        self.lru.insert(tick, id);
        self.entries.insert(id, e);
        self.used += size;
    }

    fn remove(&mut self, id: &ChunkId) -> Option<DiskEntry> {
        let e = self.entries.remove(id)?;
        self.lru.remove(&e.tick);
        self.used -= e.size;
        Some(e)
    }
}

/// An open chunk file plus the index generation it was opened under.
#[derive(Debug)]
pub(crate) struct OpenChunk {
    /// Header-validated reader.
    pub reader: ChunkReader,
    /// Index generation, for reporting a failure against the right file.
    pub generation: u64,
}

/// The disk tier of one model.
#[derive(Debug)]
pub(crate) struct DiskTier {
    root: PathBuf,
    fingerprint: [u8; 32],
    budget: u64,
    index: Mutex<DiskIndex>,
    temp_counter: AtomicU64,
    /// Held for the tier's lifetime: an exclusive lock on `<root>/LOCK`.
    _lock: File,
}

impl DiskTier {
    /// Opens (creating if needed) the tier's directory, takes its lock and recovers the index.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the directory cannot be created or listed, or another store holds
    /// its lock.
    pub(crate) fn open(
        cfg: &DiskConfig,
        fingerprint: [u8; 32],
    ) -> Result<(Self, RecoveryReport), StoreError> {
        let root = cfg.dir.join(to_hex(&fingerprint));
        std::fs::create_dir_all(&root).map_err(|e| StoreError::io(&root, e))?;
        let lock = lock_dir(&root)?;
        let (mut found, mut report) = recovery::scan(&root, &fingerprint)?;
        found.sort_by_key(|f| (f.modified, f.id));
        let mut index = DiskIndex::default();
        for f in &found {
            index.insert(f.id, f.size);
        }
        report.indexed = found.len() as u64;
        report.indexed_bytes = index.used;
        let tier = Self {
            root,
            fingerprint,
            budget: cfg.budget_bytes,
            index: Mutex::new(index),
            temp_counter: AtomicU64::new(0),
            _lock: lock,
        };
        {
            let mut idx = tier.lock();
            while idx.used > tier.budget {
                if !tier.evict_oldest(&mut idx) {
                    break;
                }
                report.evicted_over_budget += 1;
            }
        }
        // Each bad file was logged once where recovery found it.
        tracing::info!(
            dir = %tier.root.display(),
            indexed = report.indexed,
            bytes = report.indexed_bytes,
            bad = report.bad_files.len(),
            temp_removed = report.temp_files_removed,
            "chunk store disk tier recovered"
        );
        Ok((tier, report))
    }

    fn lock(&self) -> MutexGuard<'_, DiskIndex> {
        // A panic while holding the lock cannot leave the index half-updated in a way that
        // matters more than losing the cache, so poisoning is ignored.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Path of a chunk's file.
    pub(crate) fn path_for(&self, id: &ChunkId) -> PathBuf {
        self.root.join(format!("{id}.{CHUNK_EXT}"))
    }

    /// The tier's directory (`<dir>/<fingerprint hex>`).
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the index has `id` (no I/O).
    pub(crate) fn contains(&self, id: &ChunkId) -> bool {
        self.lock().entries.contains_key(id)
    }

    /// Marks `id` as just accessed (a memory hit keeps the disk copy warm too). Called from
    /// async code, so it never waits: if the index is busy the touch is skipped (LRU order is
    /// then approximate for that access).
    pub(crate) fn touch(&self, id: &ChunkId) {
        if let Ok(mut idx) = self.index.try_lock() {
            idx.touch(id);
        }
    }

    /// Opens `id`'s file with a validated header; `None` (counted as a miss) when absent or bad.
    pub(crate) fn open_chunk(&self, id: &ChunkId) -> Option<OpenChunk> {
        let path = self.path_for(id);
        let (opened, generation) = {
            let mut idx = self.lock();
            let Some(generation) = idx.entries.get(id).map(|e| e.generation) else {
                idx.counters.misses += 1;
                return None;
            };
            // Opened under the lock so the file matches `generation` (commits rename under
            // it); the header is read after releasing it.
            (File::open(&path), generation)
        };
        let reader = opened
            .map_err(format::read_err)
            .and_then(|file| ChunkReader::from_file(file, &path, id, &self.fingerprint));
        match reader {
            Ok(reader) => {
                // Persist the access time for LRU order across restarts; best effort.
                let _ = reader.file().set_modified(SystemTime::now());
                self.lock().touch(id);
                Some(OpenChunk { reader, generation })
            }
            Err(failure) => {
                self.reject(id, generation, failure);
                None
            }
        }
    }

    /// Reads and verifies a whole chunk; `None` (counted) when absent or bad.
    pub(crate) fn read(&self, id: &ChunkId) -> Option<ChunkKvData> {
        let open = self.open_chunk(id)?;
        match crate::load::read_all(&open.reader, crate::load::LOAD_THREADS) {
            Ok(data) => {
                self.lock().counters.hits += 1;
                Some(data)
            }
            Err(failure) => {
                self.reject(id, open.generation, failure);
                None
            }
        }
    }

    /// Counts a successful streamed read.
    pub(crate) fn count_hit(&self) {
        self.lock().counters.hits += 1;
    }

    /// Handles a failed read of `id` at index `generation`: counts it as a miss and, for a
    /// corrupt or missing file, drops the entry (and deletes a corrupt file) if the index still
    /// points at the same file.
    pub(crate) fn reject(&self, id: &ChunkId, generation: u64, failure: ReadFailure) {
        let path = self.path_for(id);
        let mut idx = self.lock();
        idx.counters.misses += 1;
        let same = idx
            .entries
            .get(id)
            .is_some_and(|e| e.generation == generation);
        match failure {
            ReadFailure::NotFound => {
                if same {
                    idx.remove(id);
                }
            }
            ReadFailure::Io(e) => {
                idx.counters.read_errors += 1;
                tracing::warn!(path = %path.display(), error = %e, "chunk file read error, treated as a miss");
            }
            ReadFailure::Corrupt(reason) => {
                if reason == CorruptReason::FingerprintMismatch {
                    idx.counters.fingerprint_mismatches += 1;
                } else {
                    idx.counters.corrupt_files += 1;
                }
                tracing::warn!(path = %path.display(), reason = %reason, "bad chunk file, treated as a miss and removed");
                if same {
                    idx.remove(id);
                    if let Err(e) = std::fs::remove_file(&path) {
                        tracing::warn!(path = %path.display(), error = %e, "cannot remove bad chunk file");
                    }
                }
            }
        }
    }

    /// Evicts the least recently accessed file; false when the index is empty.
    fn evict_oldest(&self, idx: &mut DiskIndex) -> bool {
        let Some((_, victim)) = idx.lru.pop_first() else {
            return false;
        };
        if let Some(e) = idx.entries.remove(&victim) {
            idx.used -= e.size;
            idx.counters.evictions += 1;
            let path = self.path_for(&victim);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove evicted chunk file");
            }
        }
        true
    }

    /// Writes a validated chunk atomically (temp file, fsync, rename, directory fsync),
    /// evicting old files to stay within the budget. Returns false (counted) when the chunk
    /// cannot fit, or when the write fails (logged); the old file, if any, is then intact.
    pub(crate) fn write(&self, id: &ChunkId, data: &ChunkKvData) -> bool {
        let Some(size) = format::file_len(&data.meta) else {
            self.lock().counters.rejected_writes += 1;
            return false;
        };
        if !self.reserve(size) {
            return false;
        }
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .root
            .join(format!(".{id}.{}.{n}{TEMP_SUFFIX}", std::process::id()));
        let result = write_temp(&tmp, id, data, size);
        let committed = result.and_then(|()| {
            let mut idx = self.lock();
            let path = self.path_for(id);
            std::fs::rename(&tmp, &path).map_err(|e| StoreError::io(&path, e))?;
            idx.reserved -= size;
            idx.used -= size;
            idx.remove(id);
            idx.insert(*id, size);
            Ok(())
        });
        match committed {
            Ok(()) => {
                if let Err(e) = sync_dir(&self.root) {
                    tracing::warn!(error = %e, "directory fsync failed; chunk may not survive a crash");
                }
                true
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                let mut idx = self.lock();
                idx.reserved -= size;
                idx.used -= size;
                idx.counters.write_errors += 1;
                tracing::warn!(error = %e, "chunk file write failed; chunk not stored on disk");
                false
            }
        }
    }

    /// Reserves `size` bytes, evicting oldest files; false (counted) if it cannot fit.
    fn reserve(&self, size: u64) -> bool {
        let mut idx = self.lock();
        // Committed bytes can be evicted; reservations of other writes cannot.
        if size > self.budget.saturating_sub(idx.reserved) {
            idx.counters.rejected_writes += 1;
            return false;
        }
        while idx.used + size > self.budget {
            if !self.evict_oldest(&mut idx) {
                break;
            }
        }
        if idx.used + size > self.budget {
            idx.counters.rejected_writes += 1;
            return false;
        }
        idx.used += size;
        idx.reserved += size;
        true
    }

    /// Deletes `id`'s file; returns whether it was indexed.
    pub(crate) fn remove(&self, id: &ChunkId) -> Result<bool, StoreError> {
        let mut idx = self.lock();
        if idx.remove(id).is_none() {
            return Ok(false);
        }
        let path = self.path_for(id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    /// Counter snapshot, bytes used (files + reservations) and file count.
    pub(crate) fn index_snapshot(&self) -> (DiskCounters, u64, u64) {
        let idx = self.lock();
        (idx.counters, idx.used, idx.entries.len() as u64)
    }

    /// Ids in eviction order (oldest first), for tests.
    #[cfg(test)]
    pub(crate) fn lru_order(&self) -> Vec<ChunkId> {
        self.lock().lru.values().copied().collect()
    }
}

/// Writes the chunk to a fresh temp file and fsyncs it.
/// A file opened through the [`ChunkTier`] interface.
struct DiskReader {
    tier: Arc<DiskTier>,
    id: ChunkId,
    open: OpenChunk,
}

impl TierReader for DiskReader {
    fn meta(&self) -> &KvMeta {
        &self.open.reader.header().meta
    }

    fn read_layer(&mut self, l: usize) -> Result<LayerKv, StoreError> {
        self.open.reader.read_layer(l).map_err(|failure| {
            let path = self.open.reader.path().to_path_buf();
            let err = match &failure {
                ReadFailure::Corrupt(reason) => StoreError::Corrupt {
                    path,
                    reason: reason.clone(),
                },
                ReadFailure::Io(e) => {
                    StoreError::io(path, std::io::Error::new(e.kind(), e.to_string()))
                }
                ReadFailure::NotFound => StoreError::io(path, std::io::ErrorKind::NotFound.into()),
            };
            self.tier.reject(&self.id, self.open.generation, failure);
            err
        })
    }

    fn finish(self: Box<Self>) {
        self.tier.count_hit();
    }
}

impl ChunkTier for DiskTier {
    fn tier(&self) -> Tier {
        Tier::Disk
    }

    fn contains(&self, id: &ChunkId) -> bool {
        DiskTier::contains(self, id)
    }

    fn touch(&self, id: &ChunkId) {
        DiskTier::touch(self, id);
    }

    fn open(self: Arc<Self>, id: &ChunkId) -> Found<Box<dyn TierReader>> {
        let Some(open) = self.open_chunk(id) else {
            return Found::Miss;
        };
        Found::Hit(Box::new(DiskReader {
            tier: self,
            id: *id,
            open,
        }))
    }

    fn read(self: Arc<Self>, id: &ChunkId) -> Found<ChunkKvData> {
        // Several threads per load (see `load.rs`), unlike the default layer-by-layer read.
        DiskTier::read(&self, id).map_or(Found::Miss, Found::Hit)
    }

    fn write(&self, id: &ChunkId, data: &ChunkKvData) -> bool {
        DiskTier::write(self, id, data)
    }

    fn remove(&self, id: &ChunkId) -> Result<bool, StoreError> {
        DiskTier::remove(self, id)
    }

    fn put_record(&self, key: &str, value: &[u8]) -> bool {
        let dir = self.root.join(RECORD_DIR);
        let path = dir.join(key);
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{key}.{}.{n}{TEMP_SUFFIX}", std::process::id()));
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| {
                let mut f = File::create(&tmp)?;
                std::io::Write::write_all(&mut f, value)?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &path));
        match written {
            Ok(()) => true,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(path = %path.display(), error = %e, "cannot write a document record");
                false
            }
        }
    }

    fn get_record(&self, key: &str) -> Found<Vec<u8>> {
        match std::fs::read(self.root.join(RECORD_DIR).join(key)) {
            Ok(b) => Found::Hit(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Found::Miss,
            Err(e) => {
                tracing::warn!(key, error = %e, "cannot read a document record");
                Found::Unavailable
            }
        }
    }

    fn remove_record(&self, key: &str) -> bool {
        std::fs::remove_file(self.root.join(RECORD_DIR).join(key)).is_ok()
    }

    fn snapshot(&self) -> TierSnapshot {
        let (c, used, n) = self.index_snapshot();
        TierSnapshot {
            stats: TierStats {
                hits: c.hits,
                misses: c.misses,
                evictions: c.evictions,
                bytes: used,
                entries: n,
                budget_bytes: self.budget,
            },
            corrupt: c.corrupt_files,
            fingerprint_mismatches: c.fingerprint_mismatches,
            read_errors: c.read_errors,
            write_errors: c.write_errors,
            rejected_writes: c.rejected_writes,
            ..TierSnapshot::default()
        }
    }
}

fn write_temp(tmp: &Path, id: &ChunkId, data: &ChunkKvData, size: u64) -> Result<(), StoreError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(|e| StoreError::io(tmp, e))?;
    let written = format::write_chunk(&file, id, data).map_err(|e| StoreError::io(tmp, e))?;
    if written != size {
        return Err(StoreError::InvalidData(format!(
            "wrote {written} bytes, layout says {size}"
        )));
    }
    file.sync_all().map_err(|e| StoreError::io(tmp, e))
}

/// Fsyncs a directory so a rename in it is durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io(dir, e))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Creates `<root>/LOCK` and takes an exclusive, non-blocking `flock` on it.
fn lock_dir(root: &Path) -> Result<File, StoreError> {
    let path = root.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::io(&path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock on a valid, owned file descriptor; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return Err(StoreError::io(
                &path,
                std::io::Error::new(
                    err.kind(),
                    format!("chunk store directory is in use by another store: {err}"),
                ),
            ));
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tests::{bit_equal, sample_chunk};
    use rand::{Rng, SeedableRng};

    const FP: [u8; 32] = [3u8; 32];

    fn cfg(dir: &Path, budget_bytes: u64) -> DiskConfig {
        DiskConfig {
            dir: dir.to_path_buf(),
            budget_bytes,
        }
    }

    fn id(i: u8) -> ChunkId {
        ChunkId([i; 32])
    }

    fn dir_bytes(root: &Path) -> u64 {
        std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }

    #[test]
    fn round_trip_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let data = sample_chunk(FP, 1, 3, 9);
        {
            let (t, report) = DiskTier::open(&cfg(dir.path(), 1 << 20), FP).unwrap();
            assert_eq!(report.indexed, 0);
            assert!(t.write(&id(1), &data));
            assert!(bit_equal(&t.read(&id(1)).unwrap(), &data));
            assert!(t.read(&id(2)).is_none());
            let (c, used, n) = t.index_snapshot();
            assert_eq!((c.hits, c.misses, n), (1, 1, 1));
            assert_eq!(used, format::file_len(&data.meta).unwrap());
        }
        let (t, report) = DiskTier::open(&cfg(dir.path(), 1 << 20), FP).unwrap();
        assert_eq!(report.indexed, 1);
        assert!(bit_equal(&t.read(&id(1)).unwrap(), &data));
        assert!(t.remove(&id(1)).unwrap());
        assert!(!t.path_for(&id(1)).exists());
        assert!(t.read(&id(1)).is_none());
    }

    #[test]
    fn second_store_on_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _a = DiskTier::open(&cfg(dir.path(), 1 << 20), FP).unwrap();
        let err = DiskTier::open(&cfg(dir.path(), 1 << 20), FP).unwrap_err();
        assert_eq!(err.kind(), "io");
        // Another model gets its own subdirectory and lock.
        assert!(DiskTier::open(&cfg(dir.path(), 1 << 20), [4u8; 32]).is_ok());
    }

    #[test]
    fn budget_and_lru_under_random_workload() {
        let dir = tempfile::tempdir().unwrap();
        let chunks: Vec<ChunkKvData> = (1..5).map(|t| sample_chunk(FP, t, 2, t * 5)).collect();
        let sizes: Vec<u64> = chunks
            .iter()
            .map(|c| format::file_len(&c.meta).unwrap())
            .collect();
        let budget = sizes[3] * 3 + sizes[0];
        let (t, _) = DiskTier::open(&cfg(dir.path(), budget), FP).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..300 {
            let k = id(rng.gen_range(0..12));
            match rng.gen_range(0..4) {
                0 | 1 => {
                    let c = &chunks[rng.gen_range(0..chunks.len())];
                    assert!(t.write(&k, c));
                }
                2 => {
                    t.read(&k);
                }
                _ => {
                    t.touch(&k);
                }
            }
            let (_, used, _) = t.index_snapshot();
            assert!(used <= budget);
            // What is really on disk (minus the lock file) matches the accounting.
            assert_eq!(dir_bytes(t.root()), used);
        }
        // LRU order: a touched entry moves to the back; the next write evicts the front.
        let order = t.lru_order();
        assert!(order.len() >= 2);
        t.touch(&order[0]);
        let mut after = order.clone();
        after.rotate_left(1);
        assert_eq!(t.lru_order(), after);
        let big = &chunks[3];
        while t.index_snapshot().1 + sizes[3] <= budget {
            assert!(t.write(&id(200), big)); // fill free space first
        }
        assert!(t.write(&id(201), big));
        assert!(
            !t.contains(&after[0]),
            "least recently used file evicted first"
        );
        let too_big = sample_chunk(FP, 9, 40, 200);
        assert!(!t.write(&id(202), &too_big));
        assert_eq!(t.index_snapshot().0.rejected_writes, 1);
    }

    #[test]
    fn recovery_removes_temp_and_bad_files_and_keeps_lru_by_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let data = sample_chunk(FP, 2, 2, 4);
        let root = {
            let (t, _) = DiskTier::open(&cfg(dir.path(), 1 << 20), FP).unwrap();
            for i in 0..3 {
                assert!(t.write(&id(i), &data));
            }
            let old = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
            for (i, secs) in [(0u8, 30u64), (1, 10), (2, 20)] {
                let f = File::options()
                    .write(true)
                    .open(t.path_for(&id(i)))
                    .unwrap();
                f.set_modified(old + std::time::Duration::from_secs(secs))
                    .unwrap();
            }
            t.root().to_path_buf()
        };
        std::fs::write(root.join(".x.1.2.tmp"), b"partial").unwrap();
        let bad = root.join(format!("{}.a3kv", id(9)));
        std::fs::write(&bad, b"A3KVCHNK garbage").unwrap();
        std::fs::write(root.join("notes.txt"), b"hi").unwrap();
        let (t, report) = DiskTier::open(&cfg(dir.path(), 1 << 20), FP).unwrap();
        assert_eq!(report.indexed, 3);
        assert_eq!(report.temp_files_removed, 1);
        assert_eq!(report.bad_files.len(), 1);
        assert_eq!(report.unknown_files, 1);
        assert!(!bad.exists());
        assert_eq!(t.lru_order(), vec![id(1), id(2), id(0)]);
        // Reopening with a smaller budget evicts oldest first.
        drop(t);
        let one = format::file_len(&data.meta).unwrap();
        let (t, report) = DiskTier::open(&cfg(dir.path(), one), FP).unwrap();
        assert_eq!(report.evicted_over_budget, 2);
        assert!(t.contains(&id(0)));
    }
}
