//! a3kv-store: the chunk KV store.
//!
//! A chunk's KV (`[L, 2, H_kv, n, d]`, pre-RoPE keys) is computed once and served to every
//! request citing it, across restarts and across a fleet. [`ChunkStore`] keeps it in tiers:
//! - memory: a byte-budgeted LRU of `Arc<ChunkKvData>` with pins ([`PinGuard`], RAII);
//! - below it, [`ChunkTier`]s searched in order (one file per implementation):
//!   - disk (`disk.rs`): one file per chunk in `<dir>/<model fingerprint hex>/<chunk id
//!     hex>.a3kv`, written atomically (temp file, fsync, rename, dir fsync), with a header
//!     checksum and one xxh3 checksum per layer (layout in `format.rs`), a byte budget with
//!     LRU by access time, and recovery of the index on start ([`RecoveryReport`]);
//!   - remote (`redis_tier.rs`): a Redis shared by every replica, per-layer values with the
//!     same checksums, a fleet-wide single flight by lease, timeouts and a circuit breaker.
//!
//! A lower-tier hit is promoted to memory and written into the faster lower tiers; memory
//! eviction keeps the lower copies. A bad file (torn,
//! truncated, flipped bits, wrong magic/version, another model's fingerprint) is counted,
//! logged, deleted and treated as a miss, never used. [`ChunkStore::get_or_compute`] is
//! single-flight; [`ChunkStore::stream_layers`] yields layers in order as each is verified.
//!
//! ```
//! use std::sync::Arc;
//! use a3kv_store::{ChunkId, ChunkKvData, ChunkStore, KvDtype, KvMeta, LayerKv, StoreConfig, Tier};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let fingerprint = [7u8; 32];
//! let cfg = StoreConfig { memory_budget_bytes: 1 << 20, disk: None, remote: None };
//! let store = ChunkStore::open(&cfg, fingerprint).await?;
//! // One layer, H_kv = 1, n = 2 tokens, d = 2: K and V are [1, 2, 2].
//! let meta = KvMeta { fingerprint, dtype: KvDtype::F32, n_layers: 1, n_kv_heads: 1,
//!                     head_dim: 2, n_tokens: 2, token_ids: vec![10, 11] };
//! let layer = Arc::new(LayerKv { k: vec![1.0, 2.0, 3.0, 4.0].into(), v: vec![5.0, 6.0, 7.0, 8.0].into() });
//! let id = ChunkId::new([1u8; 32]);
//! store.put(id, ChunkKvData { meta, layers: vec![layer] }, false).await?;
//! let (data, tier) = store.get(&id).await?.expect("just stored");
//! assert_eq!((data.layers[0].v.to_f32_vec()[3], tier), (8.0, Tier::Memory));
//! # Ok::<(), a3kv_store::StoreError>(())
//! # }).unwrap();
//! ```

mod config;
mod data;
mod disk;
mod documents;
mod error;
mod format;
#[cfg(test)]
mod format_fuzz;
mod load;
mod memory;
mod pin;
mod recovery;
mod redis_tier;
mod single_flight;
mod stats;
mod store;
mod stream;
mod tier;

/// The id the store is keyed by: fusion's content address, re-exported for the store's users.
pub use a3kv_fusion::ChunkId;
pub use config::{DiskConfig, RemoteConfig, StoreConfig};
pub use data::{ChunkKvData, KvDtype, KvMeta, KvVec, LayerKv};
pub use error::{CorruptReason, StoreError};
pub use pin::PinGuard;
pub use recovery::RecoveryReport;
pub use redis_tier::{REMOTE_BREAKER_OPEN, REMOTE_ERRORS, REMOTE_GET_SECONDS, REMOTE_PUT_SECONDS};
pub use stats::{Source, StoreStats, Tier, TierStats};
pub use store::{ChunkStore, PutOutcome, CHUNK_LOOKUPS};
pub use stream::{LayerItem, LayerStream};
pub use tier::{ChunkTier, Found, Lease, TierReader, TierSnapshot};
