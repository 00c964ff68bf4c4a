//! `ChunkTier`: the extension point for storage below the memory tier (one file per
//! implementation: `disk.rs` local files, `redis_tier.rs` a Redis shared by a fleet).
//!
//! The memory tier is not a `ChunkTier`: it is synchronous, holds `Arc`s and pins, and every
//! lookup starts there. Lower tiers are searched in order (fastest first); a hit is promoted
//! into memory and written back into the faster lower tiers. Every method here may block
//! (file or network I/O): the store calls them on `spawn_blocking` threads only.
//!
//! A tier never fails a lookup: absent, corrupt, of another model, unreachable or timed out
//! are all misses, counted in its [`TierSnapshot`]. A layer that turns out bad after earlier
//! layers were handed out is the one error a reader reports (the stream's consumer recovers).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::data::{ChunkKvData, KvMeta, LayerKv};
use crate::error::StoreError;
use crate::stats::{Tier, TierStats};
use a3kv_fusion::ChunkId;

/// A storage tier below memory.
pub trait ChunkTier: Send + Sync + fmt::Debug {
    /// Which tier this is (metric label, lookup source).
    fn tier(&self) -> Tier;

    /// Whether the tier is known to hold `id`, without I/O (a local index). Tiers that cannot
    /// know without a round trip answer `false`.
    fn contains(&self, _id: &ChunkId) -> bool {
        false
    }

    /// Marks `id` as just used (a memory hit keeps lower copies warm). Must not block long.
    fn touch(&self, _id: &ChunkId) {}

    /// Opens `id` for a layer-by-layer read with its header verified (counted by the tier).
    fn open(self: Arc<Self>, id: &ChunkId) -> Found<Box<dyn TierReader>>;

    /// Reads and verifies a whole chunk.
    fn read(self: Arc<Self>, id: &ChunkId) -> Found<ChunkKvData> {
        match self.open(id) {
            Found::Hit(reader) => read_all(reader).map_or(Found::Miss, Found::Hit),
            Found::Miss => Found::Miss,
            Found::Unavailable => Found::Unavailable,
        }
    }

    /// Stores a validated chunk; returns whether it is now held (false: over budget, too large
    /// for the tier, or a write error — counted and logged by the tier, never fatal).
    fn write(&self, id: &ChunkId, data: &ChunkKvData) -> bool;

    /// Deletes `id`; returns whether it existed.
    ///
    /// # Errors
    /// [`StoreError::Io`] if a local file cannot be deleted (a remote tier logs and counts).
    fn remove(&self, id: &ChunkId) -> Result<bool, StoreError>;

    /// Counters and gauges.
    fn snapshot(&self) -> TierSnapshot;

    /// Stores a small named record (a document's chunk list, `documents.rs`); returns whether
    /// it is now held. Tiers without records keep none.
    fn put_record(&self, _key: &str, _value: &[u8]) -> bool {
        false
    }

    /// Reads a record written by [`ChunkTier::put_record`].
    fn get_record(&self, _key: &str) -> Found<Vec<u8>> {
        Found::Miss
    }

    /// Deletes a record; returns whether it existed.
    fn remove_record(&self, _key: &str) -> bool {
        false
    }

    /// Asks for the right to compute `id` for every process sharing this tier (a fleet-wide
    /// single flight). Local tiers have nothing to coordinate: [`Lease::NotShared`].
    fn lease(&self, _id: &ChunkId) -> Lease {
        Lease::NotShared
    }

    /// Gives up a lease taken with [`ChunkTier::lease`] (after the chunk was written).
    fn release(&self, _id: &ChunkId) {}

    /// After [`Lease::HeldElsewhere`]: waits up to the tier's lease wait for the holder to
    /// publish `id`, then opens it; not a hit when it did not appear in time (compute locally).
    fn wait_and_open(self: Arc<Self>, _id: &ChunkId) -> Found<Box<dyn TierReader>> {
        Found::Miss
    }
}

/// The outcome of a lookup in one tier (the `result` label of `a3kv:chunk_lookups_total`).
#[derive(Debug)]
pub enum Found<T> {
    /// Present and verified (so far: a reader verifies each layer as it reads it).
    Hit(T),
    /// Absent, or present but corrupt or of another model (then removed).
    Miss,
    /// The tier could not be asked: unreachable, timed out, circuit breaker open.
    Unavailable,
}

impl<T> Found<T> {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Hit(_) => "hit",
            Self::Miss => "miss",
            Self::Unavailable => "error",
        }
    }

    /// The value of a hit.
    pub fn hit(self) -> Option<T> {
        match self {
            Self::Hit(t) => Some(t),
            Self::Miss | Self::Unavailable => None,
        }
    }
}

/// The answer to [`ChunkTier::lease`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// The tier is private to this process: compute.
    NotShared,
    /// This process holds the lease: compute, write, then release.
    Granted,
    /// Another process is computing it: wait for its value (bounded), else compute.
    HeldElsewhere,
    /// The tier could not be asked (down, timed out, breaker open): compute.
    Unavailable,
}

/// One open chunk in a lower tier, read layer by layer in order.
pub trait TierReader: Send {
    /// The chunk's shape, model and tokens (from the verified header).
    fn meta(&self) -> &KvMeta;

    /// Reads layer `l` and verifies it. On error the reader has already counted it and
    /// dropped the stored copy (for corruption), so the caller only recovers.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] (checksum, size) or [`StoreError::Io`] (read failed).
    fn read_layer(&mut self, l: usize) -> Result<LayerKv, StoreError>;

    /// Counts a fully read chunk as a hit.
    fn finish(self: Box<Self>);
}

/// Reads every layer of an open chunk; `None` (already counted by the reader) on failure.
pub(crate) fn read_all(mut reader: Box<dyn TierReader>) -> Option<ChunkKvData> {
    let meta = reader.meta().clone();
    let mut layers = Vec::with_capacity(meta.n_layers as usize);
    for l in 0..meta.n_layers as usize {
        layers.push(Arc::new(reader.read_layer(l).ok()?));
    }
    reader.finish();
    Some(ChunkKvData { meta, layers })
}

/// Counters and gauges of one lower tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierSnapshot {
    /// Hits, misses, evictions, bytes, entries, budget (remote: bytes written by this process).
    pub stats: TierStats,
    /// Stored chunks found corrupt (bad checksum, size, header), removed, treated as misses.
    pub corrupt: u64,
    /// Stored chunks of another model fingerprint.
    pub fingerprint_mismatches: u64,
    /// Reads that failed for a reason other than corruption (I/O, network, timeout).
    pub read_errors: u64,
    /// Writes that failed.
    pub write_errors: u64,
    /// Writes skipped because the chunk cannot fit (budget, value size cap).
    pub rejected_writes: u64,
    /// Calls not made because the tier's circuit breaker was open.
    pub skipped_calls: u64,
    /// Whether the circuit breaker is open now (calls are skipped until a probe succeeds).
    pub breaker_open: bool,
    /// Waits on another process's lease that ended with the value published.
    pub lease_waits_hit: u64,
    /// Waits on another process's lease that timed out (computed locally).
    pub lease_waits_timeout: u64,
}

/// A duration from milliseconds in config, at least 1 ms.
pub(crate) fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms.max(1))
}
