//! `ChunkStore`: the two-tier chunk KV store (memory LRU over checksummed disk files) with
//! single-flight computation and layer-wise streaming reads.
//!
//! All disk I/O and all compute closures run on `spawn_blocking`; the async methods only take
//! short in-memory locks. A bad file is never an error for a lookup: the disk tier counts it,
//! logs it, removes it and reports a miss.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use crate::config::StoreConfig;
use crate::data::ChunkKvData;
use crate::disk::{DiskTier, OpenChunk};
use crate::error::{CorruptReason, StoreError};
use crate::format::ReadFailure;
use crate::id::ChunkId;
use crate::memory::{MemoryTier, PinResult};
use crate::pin::PinGuard;
use crate::recovery::RecoveryReport;
use crate::single_flight::{wait_for, FlightHandle, SingleFlight};
use crate::stats::{Source, StoreStats, Tier, TierStats};
use crate::stream::{LayerItem, LayerStream};

/// What a single-flight load or computation publishes to its waiters.
type FlightResult = Result<(Arc<ChunkKvData>, Source), StoreError>;

/// Where `put` stored a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    /// Resident in memory (false: larger than the budget not taken by pinned chunks).
    pub memory: bool,
    /// Written to disk (false: no disk tier, over the disk budget, or a write error).
    pub disk: bool,
    /// Pinned in memory as asked (false when `pin` was false or memory refused it).
    pub pinned: bool,
}

#[derive(Debug)]
struct Inner {
    fingerprint: [u8; 32],
    memory: Arc<Mutex<MemoryTier>>,
    disk: Option<Arc<DiskTier>>,
    flights: Arc<SingleFlight<ChunkId, FlightResult>>,
    recovery: Option<RecoveryReport>,
    misses: AtomicU64,
    computations: AtomicU64,
    waits: AtomicU64,
}

/// The chunk KV store. Cheap to clone (one `Arc`); clones share everything.
#[derive(Debug, Clone)]
pub struct ChunkStore {
    inner: Arc<Inner>,
}

impl ChunkStore {
    /// Opens a store for the model with `fingerprint`; with a disk tier, recovers its index
    /// from `<dir>/<fingerprint hex>/` (see [`ChunkStore::recovery_report`]).
    ///
    /// # Errors
    /// [`StoreError::Io`] if the disk directory cannot be created, listed or locked.
    pub async fn open(config: &StoreConfig, fingerprint: [u8; 32]) -> Result<Self, StoreError> {
        let (disk, recovery) = match config.disk.clone() {
            Some(cfg) => {
                let (tier, report) =
                    tokio::task::spawn_blocking(move || DiskTier::open(&cfg, fingerprint))
                        .await??;
                (Some(Arc::new(tier)), Some(report))
            }
            None => (None, None),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                fingerprint,
                memory: Arc::new(Mutex::new(MemoryTier::new(config.memory_budget_bytes))),
                disk,
                flights: Arc::new(SingleFlight::new()),
                recovery,
                misses: AtomicU64::new(0),
                computations: AtomicU64::new(0),
                waits: AtomicU64::new(0),
            }),
        })
    }

    fn mem(&self) -> MutexGuard<'_, MemoryTier> {
        self.inner.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The model fingerprint this store serves.
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.inner.fingerprint
    }

    /// What the disk tier's start-up recovery found (`None` without a disk tier).
    pub fn recovery_report(&self) -> Option<&RecoveryReport> {
        self.inner.recovery.as_ref()
    }

    /// Looks a chunk up in memory, then on disk (promoting a disk hit into memory).
    /// `Ok(None)` is a miss: absent, or present but corrupt or of another model.
    ///
    /// # Errors
    /// [`StoreError::Task`] if the blocking read task panicked.
    pub async fn get(&self, id: &ChunkId) -> Result<Option<(Arc<ChunkKvData>, Tier)>, StoreError> {
        if let Some(d) = self.memory_get(id, true) {
            return Ok(Some((d, Tier::Memory)));
        }
        match self.read_disk(*id).await? {
            Some(d) => Ok(Some((d, Tier::Disk))),
            None => {
                self.inner.misses.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
        }
    }

    /// Memory lookup; a hit also refreshes the disk copy's LRU position.
    fn memory_get(&self, id: &ChunkId, count_miss: bool) -> Option<Arc<ChunkKvData>> {
        let hit = self.mem().get(id, count_miss);
        if hit.is_some() {
            if let Some(disk) = &self.inner.disk {
                disk.touch(id);
            }
        }
        hit
    }

    /// Reads a chunk from disk on a blocking thread and promotes it into memory.
    async fn read_disk(&self, id: ChunkId) -> Result<Option<Arc<ChunkKvData>>, StoreError> {
        let Some(disk) = self.inner.disk.clone() else {
            return Ok(None);
        };
        let data = tokio::task::spawn_blocking(move || disk.read(&id)).await?;
        Ok(data.map(|d| {
            let d = Arc::new(d);
            self.mem().insert(id, d.clone(), false);
            d
        }))
    }

    /// Stores a chunk in memory (pinned until [`ChunkStore::unpin`] if `pin`) and on disk
    /// (atomically, durable when this returns `disk: true`).
    ///
    /// # Errors
    /// [`StoreError::InvalidData`] if `data` disagrees with its meta or with the store's model
    /// fingerprint; [`StoreError::Task`] if the write task panicked. Capacity and disk write
    /// failures are reported in the [`PutOutcome`], not as errors.
    pub async fn put(
        &self,
        id: ChunkId,
        data: impl Into<Arc<ChunkKvData>>,
        pin: bool,
    ) -> Result<PutOutcome, StoreError> {
        let data = data.into();
        data.validate(&self.inner.fingerprint)?;
        let memory = self.mem().insert(id, data.clone(), pin);
        let disk = match self.inner.disk.clone() {
            Some(disk) => tokio::task::spawn_blocking(move || disk.write(&id, &data)).await?,
            None => false,
        };
        Ok(PutOutcome {
            memory,
            disk,
            pinned: memory && pin,
        })
    }

    /// Returns the chunk from memory or disk, or runs `compute` (on a blocking thread) and
    /// stores its result. Concurrent calls for the same id share one load or computation.
    /// The computed chunk is in memory (if it fits) when this returns; its disk write finishes
    /// in the background (see [`ChunkStore::flush`]).
    ///
    /// # Errors
    /// [`StoreError::Compute`] if `compute` failed (every waiter of that flight gets it),
    /// [`StoreError::InvalidData`] if its result does not match its meta or this model,
    /// [`StoreError::Task`] if it panicked.
    pub async fn get_or_compute<F, E>(
        &self,
        id: ChunkId,
        compute: F,
    ) -> Result<(Arc<ChunkKvData>, Source), StoreError>
    where
        F: FnOnce() -> Result<ChunkKvData, E> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        if let Some(d) = self.memory_get(&id, true) {
            return Ok((d, Source::Memory));
        }
        let mut compute = Some(compute);
        loop {
            let (mut rx, leader) = self.inner.flights.join(id);
            match leader {
                Some(handle) => {
                    let Some(f) = compute.take() else {
                        return Err(StoreError::Task("chunk computation was abandoned".into()));
                    };
                    let store = self.clone();
                    // A task of its own: a cancelled caller does not cancel the shared work.
                    tokio::spawn(async move { store.run_flight(id, f, handle).await });
                }
                None => {
                    self.inner.waits.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Some(result) = wait_for(&mut rx).await {
                return result;
            }
            // The leader vanished without a result (panicked): try again, maybe as leader.
        }
    }

    /// The leader's work for one flight: load or compute, publish, then write to disk.
    async fn run_flight<F, E>(
        self,
        id: ChunkId,
        compute: F,
        handle: FlightHandle<ChunkId, FlightResult>,
    ) where
        F: FnOnce() -> Result<ChunkKvData, E> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let result = self.load_or_compute(id, compute).await;
        let to_write = match &result {
            Ok((d, Source::Computed)) => Some(d.clone()),
            _ => None,
        };
        handle.publish(result);
        if let (Some(data), Some(disk)) = (to_write, self.inner.disk.clone()) {
            // Failures are counted and logged by the disk tier; the chunk stays in memory.
            let _ = tokio::task::spawn_blocking(move || disk.write(&id, &data)).await;
        }
        drop(handle);
    }

    async fn load_or_compute<F, E>(&self, id: ChunkId, compute: F) -> FlightResult
    where
        F: FnOnce() -> Result<ChunkKvData, E> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        // Re-check: an earlier flight may have finished since the caller's memory miss.
        if let Some(d) = self.memory_get(&id, false) {
            return Ok((d, Source::Memory));
        }
        if let Some(d) = self.read_disk(id).await? {
            return Ok((d, Source::Disk));
        }
        self.inner.misses.fetch_add(1, Ordering::Relaxed);
        self.inner.computations.fetch_add(1, Ordering::Relaxed);
        let data = tokio::task::spawn_blocking(compute)
            .await?
            .map_err(|e| StoreError::Compute(Arc::new(e)))?;
        data.validate(&self.inner.fingerprint)?;
        let data = Arc::new(data);
        self.mem().insert(id, data.clone(), false);
        Ok((data, Source::Computed))
    }

    /// Streams a chunk's layers in order: from memory all at once, from disk one by one as
    /// each is read and verified (then the chunk is promoted to memory). `Ok(None)` is a miss.
    ///
    /// # Errors
    /// [`StoreError::Task`] if the header read task panicked. A layer found corrupt later
    /// arrives as an error item in the stream (see [`LayerStream`]).
    pub async fn stream_layers(&self, id: &ChunkId) -> Result<Option<LayerStream>, StoreError> {
        let id = *id;
        if let Some(d) = self.memory_get(&id, true) {
            let (tx, rx) = mpsc::channel(d.layers.len().max(1));
            for (l, layer) in d.layers.iter().enumerate() {
                // Capacity equals the layer count, so this never fails.
                let _ = tx.try_send(Ok((l, layer.clone())));
            }
            return Ok(Some(LayerStream::new(d.meta.clone(), Tier::Memory, rx)));
        }
        let Some(disk) = self.inner.disk.clone() else {
            self.inner.misses.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        };
        let opener = disk.clone();
        let Some(open) = tokio::task::spawn_blocking(move || opener.open_chunk(&id)).await? else {
            self.inner.misses.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        };
        let meta = open.reader.header().meta.clone();
        // Room for every layer: reading never waits on a slow consumer.
        let (tx, rx) = mpsc::channel(open.reader.header().layers.len().max(1));
        let memory = self.inner.memory.clone();
        tokio::task::spawn_blocking(move || stream_from_disk(&disk, &memory, id, open, tx));
        Ok(Some(LayerStream::new(meta, Tier::Disk, rx)))
    }

    /// Pins a chunk in memory for the guard's lifetime, loading it from disk if needed.
    /// `Ok(None)` if the chunk is in neither tier.
    ///
    /// # Errors
    /// [`StoreError::MemoryFull`] if it cannot be made resident because pinned chunks fill the
    /// memory budget; [`StoreError::Task`] if the read task panicked.
    pub async fn pin(&self, id: &ChunkId) -> Result<Option<PinGuard>, StoreError> {
        if let PinResult::Pinned(generation, data) = self.mem().acquire_lease(id) {
            return Ok(Some(self.guard(*id, generation, data)));
        }
        let Some(disk) = self.inner.disk.clone() else {
            return Ok(None);
        };
        let key = *id;
        let Some(data) = tokio::task::spawn_blocking(move || disk.read(&key)).await? else {
            return Ok(None);
        };
        let data = Arc::new(data);
        let mut m = self.mem();
        // Insert and lease under one lock so nothing evicts it in between.
        if !m.insert(*id, data.clone(), false) {
            return Err(StoreError::MemoryFull {
                needed_bytes: data.size_bytes(),
                available_bytes: m.available_bytes(),
            });
        }
        match m.acquire_lease(id) {
            PinResult::Pinned(generation, data) => {
                drop(m);
                Ok(Some(self.guard(*id, generation, data)))
            }
            PinResult::Absent => Err(StoreError::Task("pinned chunk vanished".into())),
        }
    }

    fn guard(&self, id: ChunkId, generation: u64, data: Arc<ChunkKvData>) -> PinGuard {
        PinGuard::new(self.inner.memory.clone(), id, generation, data)
    }

    /// Clears the pin set by `put(.., pin: true)`; returns whether the chunk is resident.
    /// RAII pins ([`PinGuard`]) are unaffected.
    pub fn unpin(&self, id: &ChunkId) -> bool {
        self.mem().unpin_sticky(id)
    }

    /// Removes a chunk from both tiers (its disk file is deleted); returns whether it existed.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the file cannot be deleted.
    pub async fn remove(&self, id: &ChunkId) -> Result<bool, StoreError> {
        let in_memory = self.mem().remove(id);
        let on_disk = match self.inner.disk.clone() {
            Some(disk) => {
                let key = *id;
                tokio::task::spawn_blocking(move || disk.remove(&key)).await??
            }
            None => false,
        };
        Ok(in_memory || on_disk)
    }

    /// Whether either tier holds the chunk (no I/O; a disk entry may still prove corrupt).
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.tier_of(id).is_some()
    }

    /// The fastest tier holding the chunk, if any (no I/O).
    pub fn tier_of(&self, id: &ChunkId) -> Option<Tier> {
        if self.mem().contains(id) {
            return Some(Tier::Memory);
        }
        match &self.inner.disk {
            Some(disk) if disk.contains(id) => Some(Tier::Disk),
            _ => None,
        }
    }

    /// Waits until every in-flight `get_or_compute` (including its background disk write)
    /// has finished.
    pub async fn flush(&self) {
        self.inner.flights.wait_idle().await;
    }

    /// A snapshot of all counters and gauges.
    pub fn stats(&self) -> StoreStats {
        let (memory, pinned, rejected) = {
            let m = self.mem();
            let c = m.counters();
            let t = TierStats {
                hits: c.hits,
                misses: c.misses,
                evictions: c.evictions,
                bytes: m.used_bytes(),
                entries: m.len() as u64,
                budget_bytes: m.budget(),
            };
            (t, m.pinned_bytes(), c.rejected)
        };
        let (recovered_bad, recovered_foreign) = self.inner.recovery.as_ref().map_or((0, 0), |r| {
            let foreign = r
                .bad_files
                .iter()
                .filter(|(_, why)| *why == CorruptReason::FingerprintMismatch)
                .count() as u64;
            (r.bad_files.len() as u64 - foreign, foreign)
        });
        let mut s = StoreStats {
            memory,
            memory_pinned_bytes: pinned,
            memory_rejected: rejected,
            corrupt_files: recovered_bad,
            fingerprint_mismatches: recovered_foreign,
            misses: self.inner.misses.load(Ordering::Relaxed),
            computations: self.inner.computations.load(Ordering::Relaxed),
            single_flight_waits: self.inner.waits.load(Ordering::Relaxed),
            ..StoreStats::default()
        };
        if let Some(disk) = &self.inner.disk {
            let (c, used, n) = disk.snapshot();
            s.disk = Some(TierStats {
                hits: c.hits,
                misses: c.misses,
                evictions: c.evictions,
                bytes: used,
                entries: n,
                budget_bytes: disk.budget(),
            });
            s.corrupt_files += c.corrupt_files;
            s.fingerprint_mismatches += c.fingerprint_mismatches;
            s.disk_read_errors = c.read_errors;
            s.disk_write_errors = c.write_errors;
            s.disk_rejected_writes = c.rejected_writes;
        }
        s
    }
}

/// Reads layers in order, sending each as soon as it is verified; on success promotes the
/// chunk into memory. Stops early (no promotion) if the receiver is gone.
fn stream_from_disk(
    disk: &DiskTier,
    memory: &Mutex<MemoryTier>,
    id: ChunkId,
    open: OpenChunk,
    tx: mpsc::Sender<LayerItem>,
) {
    let header = open.reader.header();
    let mut layers = Vec::with_capacity(header.layers.len());
    for l in 0..header.layers.len() {
        match open.reader.read_layer(l) {
            Ok(layer) => {
                let layer = Arc::new(layer);
                layers.push(layer.clone());
                if tx.blocking_send(Ok((l, layer))).is_err() {
                    return; // the consumer left
                }
            }
            Err(failure) => {
                let path = open.reader.path().to_path_buf();
                let err = match &failure {
                    ReadFailure::Corrupt(reason) => StoreError::Corrupt {
                        path,
                        reason: reason.clone(),
                    },
                    ReadFailure::Io(e) => {
                        StoreError::io(path, std::io::Error::new(e.kind(), e.to_string()))
                    }
                    ReadFailure::NotFound => {
                        StoreError::io(path, std::io::ErrorKind::NotFound.into())
                    }
                };
                disk.reject(&id, open.generation, failure);
                let _ = tx.blocking_send(Err(err));
                return;
            }
        }
    }
    disk.count_hit();
    let data = Arc::new(ChunkKvData {
        meta: header.meta.clone(),
        layers,
    });
    memory
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, data, false);
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
