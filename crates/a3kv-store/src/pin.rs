//! `PinGuard`: an RAII lease that keeps a chunk resident in the memory tier until dropped.

use std::sync::{Arc, Mutex};

use crate::data::ChunkKvData;
use crate::memory::MemoryTier;
use a3kv_fusion::ChunkId;

/// Keeps one chunk pinned in memory (never evicted) while alive; unpins on drop.
///
/// Removing the chunk from the store while a guard lives drops it from memory anyway; the
/// guard then still holds its data and its drop is a no-op.
#[derive(Debug)]
pub struct PinGuard {
    memory: Arc<Mutex<MemoryTier>>,
    id: ChunkId,
    generation: u64,
    data: Arc<ChunkKvData>,
}

impl PinGuard {
    pub(crate) fn new(
        memory: Arc<Mutex<MemoryTier>>,
        id: ChunkId,
        generation: u64,
        data: Arc<ChunkKvData>,
    ) -> Self {
        Self {
            memory,
            id,
            generation,
            data,
        }
    }

    /// The pinned chunk's id.
    pub fn id(&self) -> ChunkId {
        self.id
    }

    /// The pinned chunk's KV.
    pub fn data(&self) -> &Arc<ChunkKvData> {
        &self.data
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mut m = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        m.release_lease(&self.id, self.generation);
    }
}
