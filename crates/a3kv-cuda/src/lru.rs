//! Byte-budgeted LRU accounting of the device chunk tier (device memory in front of pinned
//! host memory): which chunks stay resident, which are evicted to make room. Pure
//! bookkeeping, generic over the key; [`crate::device_tier`] pairs it with the device
//! buffers. A pinned entry (its KV is in use by a running prefill) is never evicted.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// Why an insert did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// Larger than the whole budget.
    TooLarge {
        /// Its size.
        bytes: u64,
        /// The budget.
        budget_bytes: u64,
    },
    /// Room cannot be made: the pinned entries hold too much.
    Pinned {
        /// Bytes held by pinned entries.
        pinned_bytes: u64,
    },
}

#[derive(Debug)]
struct Entry {
    bytes: u64,
    pins: u32,
    tick: u64,
}

/// LRU over entries with byte sizes, within `budget_bytes`.
#[derive(Debug)]
pub struct ByteLru<K> {
    budget_bytes: u64,
    used_bytes: u64,
    tick: u64,
    entries: HashMap<K, Entry>,
    order: BTreeMap<u64, K>,
}

impl<K: Eq + Hash + Clone> ByteLru<K> {
    /// An empty LRU with `budget_bytes`.
    pub fn new(budget_bytes: u64) -> Self {
        Self {
            budget_bytes,
            used_bytes: 0,
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    /// Bytes held.
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes
    }

    /// The budget.
    pub fn budget_bytes(&self) -> u64 {
        self.budget_bytes
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `key` is held.
    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    fn bump(&mut self, key: &K) {
        if let Some(e) = self.entries.get_mut(key) {
            self.order.remove(&e.tick);
            self.tick += 1;
            e.tick = self.tick;
            self.order.insert(self.tick, key.clone());
        }
    }

    /// Marks `key` as just used; returns whether it is held.
    pub fn touch(&mut self, key: &K) -> bool {
        self.bump(key);
        self.contains(key)
    }

    /// Pins `key` (not evictable until unpinned as often); returns whether it is held.
    pub fn pin(&mut self, key: &K) -> bool {
        self.bump(key);
        self.entries.get_mut(key).map(|e| e.pins += 1).is_some()
    }

    /// Undoes one [`ByteLru::pin`].
    pub fn unpin(&mut self, key: &K) {
        if let Some(e) = self.entries.get_mut(key) {
            e.pins = e.pins.saturating_sub(1);
        }
    }

    /// Inserts `key` of `bytes` as most recent, evicting least recent unpinned entries as
    /// needed; returns the evicted keys (the caller frees their buffers). Re-inserting a held
    /// key replaces its size. Nothing changes when the insert is rejected.
    pub fn insert(&mut self, key: K, bytes: u64) -> Result<Vec<K>, Rejected> {
        if bytes > self.budget_bytes {
            return Err(Rejected::TooLarge {
                bytes,
                budget_bytes: self.budget_bytes,
            });
        }
        let old = self.entries.get(&key).map_or(0, |e| e.bytes);
        let need = (self.used_bytes - old + bytes).saturating_sub(self.budget_bytes);
        // Plan the evictions first, so a rejection leaves everything as it was.
        let mut victims = Vec::new();
        let mut freed = 0u64;
        for k in self.order.values() {
            if freed >= need {
                break;
            }
            if *k == key {
                continue;
            }
            let e = &self.entries[k];
            if e.pins == 0 {
                freed += e.bytes;
                victims.push(k.clone());
            }
        }
        if freed < need {
            let pinned_bytes = self
                .entries
                .values()
                .filter(|e| e.pins > 0)
                .map(|e| e.bytes)
                .sum();
            return Err(Rejected::Pinned { pinned_bytes });
        }
        for v in &victims {
            self.remove(v);
        }
        let pins = self.remove_entry(&key).map_or(0, |e| e.pins);
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.entries.insert(
            key,
            Entry {
                bytes,
                pins,
                tick: self.tick,
            },
        );
        self.used_bytes += bytes;
        Ok(victims)
    }

    fn remove_entry(&mut self, key: &K) -> Option<Entry> {
        let e = self.entries.remove(key)?;
        self.order.remove(&e.tick);
        self.used_bytes -= e.bytes;
        Some(e)
    }

    /// Removes `key`; returns its size if it was held.
    pub fn remove(&mut self, key: &K) -> Option<u64> {
        self.remove_entry(key).map(|e| e.bytes)
    }

    /// Keys from least to most recently used.
    pub fn keys_lru_first(&self) -> Vec<K> {
        self.order.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recent_first_within_the_budget() {
        let mut l = ByteLru::new(100);
        assert_eq!(l.insert("a", 40), Ok(vec![]));
        assert_eq!(l.insert("b", 40), Ok(vec![]));
        assert!(l.touch(&"a"));
        // 40 + 40 + 30 > 100: b is the least recent.
        assert_eq!(l.insert("c", 30), Ok(vec!["b"]));
        assert_eq!(l.used_bytes(), 70);
        assert_eq!(l.keys_lru_first(), vec!["a", "c"]);
        assert_eq!(
            l.insert("big", 101),
            Err(Rejected::TooLarge {
                bytes: 101,
                budget_bytes: 100
            })
        );
        // Re-inserting replaces the size and makes it most recent.
        assert_eq!(l.insert("a", 10), Ok(vec![]));
        assert_eq!((l.used_bytes(), l.keys_lru_first()), (40, vec!["c", "a"]));
        assert_eq!(l.remove(&"c"), Some(30));
        assert_eq!(l.remove(&"c"), None);
        assert!(!l.touch(&"zz"));
    }

    #[test]
    fn pinned_entries_are_never_evicted_and_a_rejection_changes_nothing() {
        let mut l = ByteLru::new(100);
        l.insert(1, 60).unwrap();
        l.insert(2, 30).unwrap();
        assert!(l.pin(&1));
        assert!(l.pin(&1));
        // Needs 50 free: only 2 (30 bytes) is evictable.
        assert_eq!(l.insert(3, 60), Err(Rejected::Pinned { pinned_bytes: 60 }));
        assert_eq!((l.len(), l.used_bytes()), (2, 90));
        assert_eq!(l.insert(3, 40), Ok(vec![2]));
        l.unpin(&1);
        assert_eq!(l.insert(4, 50), Err(Rejected::Pinned { pinned_bytes: 60 }));
        l.unpin(&1);
        assert_eq!(l.insert(4, 50), Ok(vec![1]));
        assert_eq!(l.used_bytes(), 90);
        assert!(!l.pin(&1));
    }
}
