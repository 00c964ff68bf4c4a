//! `ChunkStore`: the tiered chunk KV store (a memory LRU over [`ChunkTier`]s: checksummed
//! disk files, then a Redis shared by a fleet) with single-flight computation — fleet-wide
//! when a shared tier grants leases — and layer-wise streaming reads.
//!
//! All tier I/O and all compute closures run on `spawn_blocking`; the async methods only take
//! short in-memory locks. A bad or unreachable value is never an error for a lookup: the tier
//! counts it, logs it, removes it and reports a miss. A hit in a lower tier is promoted into
//! memory and written back into the faster lower tiers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use crate::config::StoreConfig;
use crate::data::ChunkKvData;
use crate::disk::DiskTier;
use crate::error::{CorruptReason, StoreError};
use crate::memory::{MemoryTier, PinResult};
use crate::pin::PinGuard;
use crate::recovery::RecoveryReport;
use crate::redis_tier::RedisTier;
use crate::single_flight::{wait_for, FlightHandle, SingleFlight};
use crate::stats::{Source, StoreStats, Tier, TierStats};
use crate::stream::{LayerItem, LayerStream};
use crate::tier::{ChunkTier, Found, Lease, TierReader};
use a3kv_fusion::ChunkId;

/// `a3kv:chunk_lookups_total{tier, result}`: one per tier consulted (`result` = hit | miss |
/// error, the last for a tier that could not be asked).
pub const CHUNK_LOOKUPS: &str = "a3kv:chunk_lookups_total";

fn count_lookup(tier: Tier, result: &'static str) {
    metrics::counter!(CHUNK_LOOKUPS, "tier" => tier.as_str(), "result" => result).increment(1);
}

/// Lower tiers, fastest first.
type Tiers = Arc<[Arc<dyn ChunkTier>]>;

/// What a single-flight load or computation publishes to its waiters.
type FlightResult = Result<(Arc<ChunkKvData>, Source), StoreError>;

/// Where `put` stored a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    /// Resident in memory (false: larger than the budget not taken by pinned chunks).
    pub memory: bool,
    /// Written to disk (false: no disk tier, over the disk budget, or a write error).
    pub disk: bool,
    /// Written to the remote tier (false: none configured, unreachable, or over its cap).
    pub remote: bool,
    /// Pinned in memory as asked (false when `pin` was false or memory refused it).
    pub pinned: bool,
}

#[derive(Debug)]
struct Inner {
    fingerprint: [u8; 32],
    memory: Arc<Mutex<MemoryTier>>,
    tiers: Tiers,
    flights: Arc<SingleFlight<ChunkId, FlightResult>>,
    recovery: Option<RecoveryReport>,
    disk_dir: Option<PathBuf>,
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
    /// from `<dir>/<fingerprint hex>/` (see [`ChunkStore::recovery_report`]); with a remote
    /// tier, connects lazily (Redis need not be up yet).
    ///
    /// # Errors
    /// [`StoreError::Io`] if the disk directory cannot be created, listed or locked;
    /// [`StoreError::InvalidData`] if the remote URL is invalid.
    pub async fn open(config: &StoreConfig, fingerprint: [u8; 32]) -> Result<Self, StoreError> {
        let mut tiers: Vec<Arc<dyn ChunkTier>> = Vec::new();
        let mut disk_dir = None;
        let recovery = match config.disk.clone() {
            Some(cfg) => {
                let (tier, report) =
                    tokio::task::spawn_blocking(move || DiskTier::open(&cfg, fingerprint))
                        .await??;
                disk_dir = Some(tier.root().to_path_buf());
                tiers.push(Arc::new(tier));
                Some(report)
            }
            None => None,
        };
        if let Some(cfg) = &config.remote {
            tiers.push(Arc::new(RedisTier::new(cfg, fingerprint)?));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                fingerprint,
                memory: Arc::new(Mutex::new(MemoryTier::new(config.memory_budget_bytes))),
                tiers: tiers.into(),
                flights: Arc::new(SingleFlight::new()),
                recovery,
                disk_dir,
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

    /// The disk tier's directory for this model, `<disk dir>/<fingerprint hex>`, where each
    /// chunk is the file `<chunk id hex>.a3kv` (`None` without a disk tier).
    pub fn disk_dir(&self) -> Option<&Path> {
        self.inner.disk_dir.as_deref()
    }

    /// What the disk tier's start-up recovery found (`None` without a disk tier).
    pub fn recovery_report(&self) -> Option<&RecoveryReport> {
        self.inner.recovery.as_ref()
    }

    /// Looks a chunk up in memory, then in each lower tier (promoting a hit into memory and
    /// the faster lower tiers). `Ok(None)` is a miss: absent, or present but corrupt, of
    /// another model, or unreachable.
    ///
    /// # Errors
    /// [`StoreError::Task`] if the blocking read task panicked.
    pub async fn get(&self, id: &ChunkId) -> Result<Option<(Arc<ChunkKvData>, Tier)>, StoreError> {
        if let Some(d) = self.memory_get(id, true) {
            return Ok(Some((d, Tier::Memory)));
        }
        match self.read_lower(*id, true).await? {
            Some(hit) => Ok(Some(hit)),
            None => {
                self.inner.misses.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
        }
    }

    /// Memory lookup; a hit also refreshes the lower copies' LRU positions.
    fn memory_get(&self, id: &ChunkId, count_miss: bool) -> Option<Arc<ChunkKvData>> {
        let hit = self.mem().get(id, count_miss);
        if hit.is_some() || count_miss {
            count_lookup(Tier::Memory, if hit.is_some() { "hit" } else { "miss" });
        }
        if hit.is_some() {
            for t in self.inner.tiers.iter() {
                t.touch(id);
            }
        }
        hit
    }

    /// Reads a chunk from the first lower tier that has it (on a blocking thread), promotes it
    /// into memory and writes it back into the faster lower tiers.
    async fn read_lower(
        &self,
        id: ChunkId,
        count: bool,
    ) -> Result<Option<(Arc<ChunkKvData>, Tier)>, StoreError> {
        if self.inner.tiers.is_empty() {
            return Ok(None);
        }
        let tiers = self.inner.tiers.clone();
        let found = tokio::task::spawn_blocking(move || {
            for (i, t) in tiers.iter().enumerate() {
                let got = t.clone().read(&id);
                if count {
                    count_lookup(t.tier(), got.label());
                }
                if let Found::Hit(d) = got {
                    let d = Arc::new(d);
                    write_back(&tiers[..i], &id, &d);
                    return Some((d, t.tier()));
                }
            }
            None
        })
        .await?;
        Ok(found.map(|(d, tier)| {
            self.mem().insert(id, d.clone(), false);
            (d, tier)
        }))
    }

    /// Stores a chunk in memory (pinned until [`ChunkStore::unpin`] if `pin`), on disk
    /// (atomically, durable when this returns `disk: true`) and in the remote tier.
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
        let tiers = self.inner.tiers.clone();
        let written = tokio::task::spawn_blocking(move || {
            tiers
                .iter()
                .map(|t| (t.tier(), t.write(&id, &data)))
                .collect::<Vec<_>>()
        })
        .await?;
        let wrote = |tier| written.iter().any(|&(t, ok)| t == tier && ok);
        Ok(PutOutcome {
            memory,
            disk: wrote(Tier::Disk),
            remote: wrote(Tier::Remote),
            pinned: memory && pin,
        })
    }

    /// Returns the chunk from memory or a lower tier, or runs `compute` (on a blocking thread)
    /// and stores its result. Concurrent calls for the same id share one load or computation.
    /// The computed chunk is in memory (if it fits) when this returns; its lower-tier writes
    /// finish in the background (see [`ChunkStore::flush`]).
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
        self.get_or_compute_counted(id, compute, true).await
    }

    /// [`ChunkStore::get_or_compute`] for a chunk whose lookup was already counted as a miss
    /// by [`ChunkStore::stream_layers`]: the same single flight and re-checks, without
    /// counting the same lookup twice in `a3kv:chunk_lookups_total`.
    ///
    /// # Errors
    /// As [`ChunkStore::get_or_compute`].
    pub async fn compute_missing<F, E>(
        &self,
        id: ChunkId,
        compute: F,
    ) -> Result<(Arc<ChunkKvData>, Source), StoreError>
    where
        F: FnOnce() -> Result<ChunkKvData, E> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        self.get_or_compute_counted(id, compute, false).await
    }

    async fn get_or_compute_counted<F, E>(
        &self,
        id: ChunkId,
        compute: F,
        count: bool,
    ) -> Result<(Arc<ChunkKvData>, Source), StoreError>
    where
        F: FnOnce() -> Result<ChunkKvData, E> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        if let Some(d) = self.memory_get(&id, count) {
            return Ok((d, Source::Memory));
        }
        let mut compute = Some(compute);
        loop {
            let (mut rx, leader) = self.inner.flights.join(id);
            let led = leader.is_some();
            match leader {
                Some(handle) => {
                    let Some(f) = compute.take() else {
                        return Err(StoreError::Task("chunk computation was abandoned".into()));
                    };
                    let store = self.clone();
                    // A task of its own: a cancelled caller does not cancel the shared work.
                    tokio::spawn(async move { store.run_flight(id, f, handle, count).await });
                }
                None => {
                    self.inner.waits.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Some(result) = wait_for(&mut rx).await {
                // A waiter got the leader's chunk from memory: `Computed` is the leader's, so
                // each computation is reported once.
                return result.map(|(d, src)| match src {
                    Source::Computed if !led => (d, Source::Memory),
                    other => (d, other),
                });
            }
            // The leader vanished without a result (panicked): try again, maybe as leader.
        }
    }

    /// The leader's work for one flight: load or compute, publish, then write the chunk into
    /// the lower tiers that lack it and release any fleet lease.
    async fn run_flight<F, E>(
        self,
        id: ChunkId,
        compute: F,
        handle: FlightHandle<ChunkId, FlightResult>,
        count: bool,
    ) where
        F: FnOnce() -> Result<ChunkKvData, E> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let (result, leased) = self.load_or_compute(id, compute, count).await;
        let to_write = match &result {
            Ok((d, Source::Computed)) => Some(d.clone()),
            _ => None,
        };
        handle.publish(result);
        let tiers = self.inner.tiers.clone();
        if to_write.is_some() || !leased.is_empty() {
            // Failures are counted and logged by each tier; the chunk stays in memory.
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(data) = to_write {
                    write_back(&tiers, &id, &data);
                }
                for t in leased {
                    t.release(&id);
                }
            })
            .await;
        }
        drop(handle);
    }

    /// Memory, then the lower tiers, then (holding a fleet lease where a shared tier grants
    /// one, or after waiting for another replica's) the computation. Returns the tiers whose
    /// lease this process holds, to release once the chunk is written.
    async fn load_or_compute<F, E>(
        &self,
        id: ChunkId,
        compute: F,
        count: bool,
    ) -> (FlightResult, Vec<Arc<dyn ChunkTier>>)
    where
        F: FnOnce() -> Result<ChunkKvData, E> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        // Re-check: an earlier flight may have finished since the caller's memory miss.
        if let Some(d) = self.memory_get(&id, false) {
            return (Ok((d, Source::Memory)), Vec::new());
        }
        match self.read_lower(id, count).await {
            Ok(Some((d, tier))) => return (Ok((d, tier.into())), Vec::new()),
            Ok(None) => {}
            Err(e) => return (Err(e), Vec::new()),
        }
        let leased = match self.lease_or_wait(id).await {
            Ok(Ok(hit)) => return (Ok(hit), Vec::new()),
            Ok(Err(leased)) => leased,
            Err(e) => return (Err(e), Vec::new()),
        };
        self.inner.misses.fetch_add(1, Ordering::Relaxed);
        self.inner.computations.fetch_add(1, Ordering::Relaxed);
        let computed = async {
            let data = tokio::task::spawn_blocking(compute)
                .await?
                .map_err(|e| StoreError::Compute(Arc::new(e)))?;
            data.validate(&self.inner.fingerprint)?;
            let data = Arc::new(data);
            self.mem().insert(id, data.clone(), false);
            Ok((data, Source::Computed))
        }
        .await;
        (computed, leased)
    }

    /// Asks each shared tier for the right to compute `id`. Where another replica holds it,
    /// waits (bounded) for its value: `Ok(Ok(hit))`. Otherwise `Ok(Err(leased))`: compute,
    /// then release the leases taken.
    async fn lease_or_wait(
        &self,
        id: ChunkId,
    ) -> Result<Result<(Arc<ChunkKvData>, Source), Vec<Arc<dyn ChunkTier>>>, StoreError> {
        let tiers = self.inner.tiers.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let mut leased = Vec::new();
            for (i, t) in tiers.iter().enumerate() {
                match t.lease(&id) {
                    Lease::Granted => leased.push(t.clone()),
                    Lease::HeldElsewhere => {
                        if let Some(d) = t
                            .clone()
                            .wait_and_open(&id)
                            .hit()
                            .and_then(crate::tier::read_all)
                        {
                            for l in &leased {
                                l.release(&id);
                            }
                            let d = Arc::new(d);
                            write_back(&tiers[..i], &id, &d);
                            return Ok((d, Source::from(t.tier())));
                        }
                    }
                    Lease::NotShared | Lease::Unavailable => {}
                }
            }
            Err(leased)
        })
        .await?;
        Ok(outcome.map(|(d, src)| {
            self.mem().insert(id, d.clone(), false);
            (d, src)
        }))
    }

    /// Streams a chunk's layers in order: from memory all at once, from a lower tier one by
    /// one as each is read and verified (then the chunk is promoted to memory and written back
    /// into the faster lower tiers). `Ok(None)` is a miss.
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
        let tiers = self.inner.tiers.clone();
        let opened = tokio::task::spawn_blocking(move || {
            for (i, t) in tiers.iter().enumerate() {
                let reader = t.clone().open(&id);
                count_lookup(t.tier(), reader.label());
                if let Found::Hit(reader) = reader {
                    return Some((i, reader));
                }
            }
            None
        })
        .await?;
        let Some((i, reader)) = opened else {
            self.inner.misses.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        };
        let meta = reader.meta().clone();
        let tier = self.inner.tiers[i].tier();
        // Room for every layer: reading never waits on a slow consumer.
        let (tx, rx) = mpsc::channel((meta.n_layers as usize).max(1));
        let memory = self.inner.memory.clone();
        let faster = self.inner.tiers[..i].to_vec();
        tokio::task::spawn_blocking(move || stream_from_tier(reader, &memory, &faster, id, tx));
        Ok(Some(LayerStream::new(meta, tier, rx)))
    }

    /// Pins a chunk in memory for the guard's lifetime, loading it from a lower tier if needed.
    /// `Ok(None)` if the chunk is in neither tier.
    ///
    /// # Errors
    /// [`StoreError::MemoryFull`] if it cannot be made resident because pinned chunks fill the
    /// memory budget; [`StoreError::Task`] if the read task panicked.
    pub async fn pin(&self, id: &ChunkId) -> Result<Option<PinGuard>, StoreError> {
        if let PinResult::Pinned(generation, data) = self.mem().acquire_lease(id) {
            return Ok(Some(self.guard(*id, generation, data)));
        }
        let Some((data, _)) = self.read_lower(*id, true).await? else {
            return Ok(None);
        };
        let mut m = self.mem();
        // (Re-)insert and lease under one lock so nothing evicts it in between.
        if !m.contains(id) && !m.insert(*id, data.clone(), false) {
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

    /// Removes a chunk from every tier (its disk file and remote keys are deleted); returns
    /// whether it existed.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the file cannot be deleted.
    pub async fn remove(&self, id: &ChunkId) -> Result<bool, StoreError> {
        let in_memory = self.mem().remove(id);
        let tiers = self.inner.tiers.clone();
        let key = *id;
        let lower = tokio::task::spawn_blocking(move || {
            let mut any = false;
            for t in tiers.iter() {
                any |= t.remove(&key)?;
            }
            Ok::<bool, StoreError>(any)
        })
        .await??;
        Ok(in_memory || lower)
    }

    /// Records `document id → its chunks' token ids` in every lower tier (so the id can be
    /// cited after a restart and by other replicas); returns whether any tier holds it.
    ///
    /// # Errors
    /// [`StoreError::Task`] if the write task panicked.
    pub async fn put_document(&self, id: &str, chunks: &[Vec<u32>]) -> Result<bool, StoreError> {
        let tiers = self.inner.tiers.clone();
        let (key, value) = (
            crate::documents::record_key(id),
            crate::documents::encode(id, chunks),
        );
        Ok(tokio::task::spawn_blocking(move || {
            // Every tier, not the first that succeeds.
            let mut any = false;
            for t in tiers.iter() {
                any |= t.put_record(&key, &value);
            }
            any
        })
        .await?)
    }

    /// A document's chunks' token ids from the first lower tier holding its record (written
    /// back into the faster tiers); `None` when no tier has it.
    ///
    /// # Errors
    /// [`StoreError::Task`] if the read task panicked.
    pub async fn get_document(&self, id: &str) -> Result<Option<Vec<Vec<u32>>>, StoreError> {
        let tiers = self.inner.tiers.clone();
        let id = id.to_string();
        Ok(tokio::task::spawn_blocking(move || {
            let key = crate::documents::record_key(&id);
            for (i, t) in tiers.iter().enumerate() {
                let Found::Hit(bytes) = t.get_record(&key) else {
                    continue;
                };
                if let Some(chunks) = crate::documents::decode(&id, &bytes) {
                    for faster in &tiers[..i] {
                        faster.put_record(&key, &bytes);
                    }
                    return Some(chunks);
                }
                tracing::warn!(document = %id, tier = t.tier().as_str(), "unreadable document record ignored");
            }
            None
        })
        .await?)
    }

    /// Deletes a document's record from every lower tier; returns whether any held it.
    ///
    /// # Errors
    /// [`StoreError::Task`] if the task panicked.
    pub async fn remove_document(&self, id: &str) -> Result<bool, StoreError> {
        let tiers = self.inner.tiers.clone();
        let key = crate::documents::record_key(id);
        Ok(tokio::task::spawn_blocking(move || {
            let mut any = false;
            for t in tiers.iter() {
                any |= t.remove_record(&key);
            }
            any
        })
        .await?)
    }

    /// Whether a tier is known to hold the chunk (no I/O; a disk entry may still prove
    /// corrupt; the remote tier is not asked).
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.tier_of(id).is_some()
    }

    /// The fastest tier holding the chunk, if any (no I/O).
    pub fn tier_of(&self, id: &ChunkId) -> Option<Tier> {
        if self.mem().contains(id) {
            return Some(Tier::Memory);
        }
        self.inner
            .tiers
            .iter()
            .find(|t| t.contains(id))
            .map(|t| t.tier())
    }

    /// Waits until every in-flight `get_or_compute` (including its background tier writes)
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
        for t in self.inner.tiers.iter() {
            let snap = t.snapshot();
            match t.tier() {
                Tier::Disk => {
                    s.corrupt_files += snap.corrupt;
                    s.fingerprint_mismatches += snap.fingerprint_mismatches;
                    s.disk = Some(snap);
                }
                Tier::Remote => s.remote = Some(snap),
                Tier::Memory => {}
            }
        }
        s
    }
}

/// Writes a chunk into each of `tiers` (blocking; each tier counts and logs its failures).
fn write_back(tiers: &[Arc<dyn ChunkTier>], id: &ChunkId, data: &ChunkKvData) {
    for t in tiers {
        t.write(id, data);
    }
}

/// Reads layers in order, sending each as soon as it is verified; on success promotes the
/// chunk into memory and writes it into the faster lower tiers. Stops early (no promotion) if
/// the receiver is gone or a layer fails (the reader counted and dropped the bad copy).
fn stream_from_tier(
    mut reader: Box<dyn TierReader>,
    memory: &Mutex<MemoryTier>,
    faster: &[Arc<dyn ChunkTier>],
    id: ChunkId,
    tx: mpsc::Sender<LayerItem>,
) {
    let meta = reader.meta().clone();
    let mut layers = Vec::with_capacity(meta.n_layers as usize);
    for l in 0..meta.n_layers as usize {
        match reader.read_layer(l) {
            Ok(layer) => {
                let layer = Arc::new(layer);
                layers.push(layer.clone());
                if tx.blocking_send(Ok((l, layer))).is_err() {
                    return; // the consumer left
                }
            }
            Err(err) => {
                let _ = tx.blocking_send(Err(err));
                return;
            }
        }
    }
    reader.finish();
    drop(tx);
    let data = Arc::new(ChunkKvData { meta, layers });
    memory
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, data.clone(), false);
    write_back(faster, &id, &data);
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
