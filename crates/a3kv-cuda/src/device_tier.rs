//! The device chunk tier: chunk KV held in device memory in front of pinned host memory,
//! evicted least-recently-used within a byte budget ([`crate::lru::ByteLru`]). A hit skips
//! the host-to-device copy of that chunk (the copy plan marks it resident). Not a
//! `a3kv_store::ChunkTier`: those are tiers *below* host memory that hand back host bytes;
//! this one sits above it and hands back device buffers.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream};

use crate::lru::{ByteLru, Rejected};
use crate::{DeviceError, Result};

/// Chunk KV buffers on one device, LRU within a byte budget.
pub struct DeviceChunkTier<K> {
    stream: Arc<CudaStream>,
    lru: ByteLru<K>,
    buffers: HashMap<K, CudaSlice<u16>>,
}

impl<K: Eq + Hash + Clone> DeviceChunkTier<K> {
    /// An empty tier of `budget_bytes` whose copies run on `stream`.
    pub fn new(stream: Arc<CudaStream>, budget_bytes: u64) -> Self {
        Self {
            stream,
            lru: ByteLru::new(budget_bytes),
            buffers: HashMap::new(),
        }
    }

    /// The buffer of `key` if resident (marked as just used).
    pub fn get(&mut self, key: &K) -> Option<&CudaSlice<u16>> {
        self.lru.touch(key);
        self.buffers.get(key)
    }

    /// Uploads `host` as `key`, evicting least recent unpinned chunks; returns false (nothing
    /// changed) when it does not fit beside the pinned ones or exceeds the budget.
    pub fn insert(&mut self, key: K, host: &[u16]) -> Result<bool> {
        match self.lru.insert(key.clone(), (host.len() * 2) as u64) {
            Ok(evicted) => {
                for k in evicted {
                    self.buffers.remove(&k);
                }
                let buf = self
                    .stream
                    .clone_htod(host)
                    .map_err(|e| DeviceError::Driver(format!("device tier upload: {e}")))?;
                self.buffers.insert(key, buf);
                Ok(true)
            }
            Err(Rejected::TooLarge { .. } | Rejected::Pinned { .. }) => Ok(false),
        }
    }

    /// Pins `key` while a prefill reads it; returns whether it is resident.
    pub fn pin(&mut self, key: &K) -> bool {
        self.lru.pin(key)
    }

    /// Undoes one [`DeviceChunkTier::pin`].
    pub fn unpin(&mut self, key: &K) {
        self.lru.unpin(key);
    }

    /// Bytes resident.
    pub fn used_bytes(&self) -> u64 {
        self.lru.used_bytes()
    }
}
