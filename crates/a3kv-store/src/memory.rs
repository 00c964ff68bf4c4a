//! The memory tier: a byte-budgeted LRU of whole chunks with pins.
//!
//! Pinned entries (RAII leases or a sticky admin pin) are taken out of the LRU order, so
//! eviction only ever pops unpinned entries, oldest access first. An insert that cannot fit
//! without evicting pinned bytes is refused (reported as a value, never by exceeding the budget).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::data::ChunkKvData;
use a3kv_fusion::ChunkId;

/// One resident chunk.
#[derive(Debug)]
struct Entry {
    data: Arc<ChunkKvData>,
    size: u64,
    /// Last access tick; the key of this entry in `lru` while unpinned.
    tick: u64,
    /// Live RAII leases.
    leases: u32,
    /// Admin pin (until `unpin`).
    sticky: bool,
    /// Distinguishes this residency from a later one of the same id (for lease release).
    generation: u64,
}

impl Entry {
    fn pinned(&self) -> bool {
        self.leases > 0 || self.sticky
    }
}

/// Counters and gauges of the memory tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MemoryCounters {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub rejected: u64,
}

/// How a pin request went.
#[derive(Debug, Clone)]
pub(crate) enum PinResult {
    /// Pinned; the generation to pass to `release_lease`.
    Pinned(u64, Arc<ChunkKvData>),
    /// Not resident.
    Absent,
}

/// Byte-budgeted LRU. Not thread-safe by itself; the store wraps it in a mutex held only for
/// these O(log n) operations.
#[derive(Debug)]
pub(crate) struct MemoryTier {
    budget: u64,
    used: u64,
    pinned_bytes: u64,
    entries: HashMap<ChunkId, Entry>,
    /// Unpinned entries by last access tick (oldest first).
    lru: BTreeMap<u64, ChunkId>,
    tick: u64,
    next_generation: u64,
    counters: MemoryCounters,
}

impl MemoryTier {
    /// An empty tier with a byte budget.
    pub(crate) fn new(budget: u64) -> Self {
        Self {
            budget,
            used: 0,
            pinned_bytes: 0,
            entries: HashMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            next_generation: 0,
            counters: MemoryCounters::default(),
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Looks up and touches an entry, counting a hit, or a miss when `count_miss` (a re-check
    /// after a counted miss passes false).
    pub(crate) fn get(&mut self, id: &ChunkId, count_miss: bool) -> Option<Arc<ChunkKvData>> {
        let tick = self.next_tick();
        match self.entries.get_mut(id) {
            Some(e) => {
                if !e.pinned() {
                    self.lru.remove(&e.tick);
                    self.lru.insert(tick, *id);
                }
                e.tick = tick;
                self.counters.hits += 1;
                Some(e.data.clone())
            }
            None => {
                if count_miss {
                    self.counters.misses += 1;
                }
                None
            }
        }
    }

    /// Whether `id` is resident (no touch, no counting).
    pub(crate) fn contains(&self, id: &ChunkId) -> bool {
        self.entries.contains_key(id)
    }

    /// Inserts (or replaces) a chunk, evicting unpinned entries oldest-first to make room.
    /// Returns false, changing nothing, when it cannot fit (too large, or pinned bytes fill
    /// the budget). A replaced entry keeps its leases; `sticky` adds an admin pin.
    pub(crate) fn insert(&mut self, id: ChunkId, data: Arc<ChunkKvData>, sticky: bool) -> bool {
        let size = data.size_bytes();
        let (old_size, old_pinned) = self
            .entries
            .get(&id)
            .map_or((0, false), |e| (e.size, e.pinned()));
        // Bytes that may be freed: free space, all unpinned entries, and the replaced one.
        let evictable = self.used - self.pinned_bytes;
        let reclaim_old = if old_pinned { old_size } else { 0 };
        if size > self.budget - self.used + evictable + reclaim_old {
            self.counters.rejected += 1;
            return false;
        }
        let (leases, old_sticky) = match self.remove_entry(&id) {
            Some(e) => (e.leases, e.sticky),
            None => (0, false),
        };
        while self.used + size > self.budget {
            let Some((_, victim)) = self.lru.pop_first() else {
                break; // unreachable by the check above; never loop forever
            };
            if let Some(e) = self.entries.remove(&victim) {
                self.used -= e.size;
                self.counters.evictions += 1;
            }
        }
        let tick = self.next_tick();
        self.next_generation += 1;
        let e = Entry {
            data,
            size,
            tick,
            leases,
            sticky: sticky || old_sticky,
            generation: self.next_generation,
        };
        self.used += size;
        if e.pinned() {
            self.pinned_bytes += size;
        } else {
            self.lru.insert(tick, id);
        }
        self.entries.insert(id, e);
        true
    }

    /// Removes an entry and fixes the byte counts; returns it.
    fn remove_entry(&mut self, id: &ChunkId) -> Option<Entry> {
        let e = self.entries.remove(id)?;
        self.used -= e.size;
        if e.pinned() {
            self.pinned_bytes -= e.size;
        } else {
            self.lru.remove(&e.tick);
        }
        Some(e)
    }

    /// Drops an entry regardless of pins (outstanding leases become no-ops).
    pub(crate) fn remove(&mut self, id: &ChunkId) -> bool {
        self.remove_entry(id).is_some()
    }

    /// Adds an RAII lease to a resident entry.
    pub(crate) fn acquire_lease(&mut self, id: &ChunkId) -> PinResult {
        let Some(e) = self.entries.get_mut(id) else {
            return PinResult::Absent;
        };
        if !e.pinned() {
            self.lru.remove(&e.tick);
            self.pinned_bytes += e.size;
        }
        e.leases += 1;
        PinResult::Pinned(e.generation, e.data.clone())
    }

    /// Releases a lease taken on residency `generation` (a no-op if that entry is gone).
    pub(crate) fn release_lease(&mut self, id: &ChunkId, generation: u64) {
        if let Some(e) = self.entries.get_mut(id) {
            if e.generation == generation && e.leases > 0 {
                e.leases -= 1;
                Self::after_unpin(e, id, &mut self.lru, &mut self.pinned_bytes);
            }
        }
    }

    /// Clears the admin pin; returns whether the entry was resident.
    pub(crate) fn unpin_sticky(&mut self, id: &ChunkId) -> bool {
        match self.entries.get_mut(id) {
            Some(e) => {
                if e.sticky {
                    e.sticky = false;
                    Self::after_unpin(e, id, &mut self.lru, &mut self.pinned_bytes);
                }
                true
            }
            None => false,
        }
    }

    fn after_unpin(
        e: &mut Entry,
        id: &ChunkId,
        lru: &mut BTreeMap<u64, ChunkId>,
        pinned: &mut u64,
    ) {
        if !e.pinned() {
            *pinned -= e.size;
            lru.insert(e.tick, *id);
        }
    }

    /// Bytes that can still be made available for a new entry (free + evictable).
    pub(crate) fn available_bytes(&self) -> u64 {
        self.budget - self.pinned_bytes
    }

    /// Bytes resident.
    pub(crate) fn used_bytes(&self) -> u64 {
        self.used
    }

    /// Bytes pinned.
    pub(crate) fn pinned_bytes(&self) -> u64 {
        self.pinned_bytes
    }

    /// Entries resident.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The configured budget.
    pub(crate) fn budget(&self) -> u64 {
        self.budget
    }

    /// Counter snapshot.
    pub(crate) fn counters(&self) -> MemoryCounters {
        self.counters
    }

    /// Ids in eviction order (oldest unpinned first), for tests.
    #[cfg(test)]
    pub(crate) fn lru_order(&self) -> Vec<ChunkId> {
        self.lru.values().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tests::sample_chunk;
    use rand::{Rng, SeedableRng};

    fn chunk(tokens: u32) -> Arc<ChunkKvData> {
        Arc::new(sample_chunk([0; 32], 1, 1, tokens))
    }

    fn id(i: u8) -> ChunkId {
        ChunkId([i; 32])
    }

    #[test]
    fn lru_evicts_oldest_unpinned() {
        let c = chunk(4);
        let s = c.size_bytes();
        let mut m = MemoryTier::new(3 * s);
        for i in 0..3 {
            assert!(m.insert(id(i), c.clone(), false));
        }
        assert!(m.get(&id(0), true).is_some()); // 0 is now most recent
        assert!(m.insert(id(3), c.clone(), false));
        assert!(!m.contains(&id(1)), "1 was least recently used");
        assert_eq!(m.lru_order(), vec![id(2), id(0), id(3)]);
        assert_eq!(m.counters().evictions, 1);
        assert!(m.used_bytes() <= m.budget());
    }

    #[test]
    fn pins_block_eviction_and_full_is_refused() {
        let c = chunk(4);
        let s = c.size_bytes();
        let mut m = MemoryTier::new(2 * s);
        assert!(m.insert(id(0), c.clone(), true));
        let PinResult::Pinned(gen, _) = ({
            assert!(m.insert(id(1), c.clone(), false));
            m.acquire_lease(&id(1))
        }) else {
            panic!("resident")
        };
        assert!(!m.insert(id(2), c.clone(), false), "all bytes pinned");
        assert_eq!(m.counters().rejected, 1);
        assert!(m.contains(&id(0)) && m.contains(&id(1)));
        m.release_lease(&id(1), gen);
        assert!(m.insert(id(2), c.clone(), false));
        assert!(!m.contains(&id(1)));
        assert!(m.unpin_sticky(&id(0)));
        assert!(m.insert(id(3), c.clone(), false));
        assert!(!m.contains(&id(0)));
        assert!(
            !m.insert(id(4), chunk(100), false),
            "larger than the budget"
        );
    }

    #[test]
    fn stale_lease_release_is_a_noop() {
        let c = chunk(4);
        let mut m = MemoryTier::new(10 * c.size_bytes());
        m.insert(id(0), c.clone(), false);
        let PinResult::Pinned(gen, _) = m.acquire_lease(&id(0)) else {
            panic!()
        };
        assert!(m.remove(&id(0)));
        m.insert(id(0), c.clone(), false);
        m.acquire_lease(&id(0));
        m.release_lease(&id(0), gen); // old residency: must not unpin the new one
        assert_eq!(m.pinned_bytes(), c.size_bytes());
    }

    #[test]
    fn random_workload_respects_budget_and_accounting() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let sizes: Vec<Arc<ChunkKvData>> = (1..6).map(|t| chunk(t * 3)).collect();
        let budget = 4 * sizes[4].size_bytes();
        let mut m = MemoryTier::new(budget);
        let mut leases: Vec<(ChunkId, u64)> = Vec::new();
        for _ in 0..5000 {
            let k = id(rng.gen_range(0..20));
            match rng.gen_range(0..10) {
                0..=3 => {
                    let c = sizes[rng.gen_range(0..sizes.len())].clone();
                    m.insert(k, c, rng.gen_bool(0.05));
                }
                4..=5 => {
                    m.get(&k, true);
                }
                6 => {
                    if let PinResult::Pinned(g, _) = m.acquire_lease(&k) {
                        leases.push((k, g));
                    }
                }
                7 if !leases.is_empty() => {
                    let (k, g) = leases.swap_remove(rng.gen_range(0..leases.len()));
                    m.release_lease(&k, g);
                }
                8 => {
                    m.unpin_sticky(&k);
                }
                _ => {
                    m.remove(&k);
                }
            }
            assert!(m.used_bytes() <= budget);
            let sum: u64 = m.entries.values().map(|e| e.size).sum();
            let pinned: u64 = m
                .entries
                .values()
                .filter(|e| e.pinned())
                .map(|e| e.size)
                .sum();
            assert_eq!(sum, m.used_bytes());
            assert_eq!(pinned, m.pinned_bytes());
            assert_eq!(
                m.lru.len() + m.entries.values().filter(|e| e.pinned()).count(),
                m.len()
            );
        }
    }
}
