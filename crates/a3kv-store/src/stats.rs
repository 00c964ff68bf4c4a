//! Plain-data statistics of the store (`StoreStats`), and the small label enums `Tier` and
//! `Source` that metrics use.

/// A storage tier. Used as a metric label (`a3kv:chunk_cache_bytes{tier}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// In-process memory.
    Memory,
    /// Local disk files.
    Disk,
}

impl Tier {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Disk => "disk",
        }
    }
}

/// Where `get_or_compute` got a chunk from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// Memory tier hit.
    Memory,
    /// Disk tier hit (now promoted to memory when it fits).
    Disk,
    /// Not stored (or stored but bad): computed by the caller's closure.
    Computed,
}

impl Source {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Disk => "disk",
            Self::Computed => "computed",
        }
    }
}

impl From<Tier> for Source {
    fn from(t: Tier) -> Self {
        match t {
            Tier::Memory => Self::Memory,
            Tier::Disk => Self::Disk,
        }
    }
}

/// Counters and gauges of one tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierStats {
    /// Lookups answered by this tier.
    pub hits: u64,
    /// Lookups this tier could not answer (absent, or a bad file on disk).
    pub misses: u64,
    /// Entries evicted to respect the budget.
    pub evictions: u64,
    /// Bytes held now (disk: files plus in-progress writes).
    pub bytes: u64,
    /// Entries held now.
    pub entries: u64,
    /// The configured budget.
    pub budget_bytes: u64,
}

/// A snapshot of all store counters, for the metrics exporter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Memory tier.
    pub memory: TierStats,
    /// Pinned bytes in memory (never evicted).
    pub memory_pinned_bytes: u64,
    /// Inserts the memory tier refused (chunk larger than the evictable budget).
    pub memory_rejected: u64,
    /// Disk tier, if configured.
    pub disk: Option<TierStats>,
    /// Chunk files found corrupt (bad magic/version/checksum/length..), counted at read time
    /// and at recovery; each was removed and treated as a miss.
    pub corrupt_files: u64,
    /// Chunk files written by another model fingerprint; removed and treated as a miss.
    pub fingerprint_mismatches: u64,
    /// Disk read errors that were not corruption (treated as a miss, file kept).
    pub disk_read_errors: u64,
    /// Disk writes that failed (the chunk stays memory-only).
    pub disk_write_errors: u64,
    /// Disk writes skipped because the chunk cannot fit the disk budget.
    pub disk_rejected_writes: u64,
    /// Lookups that no tier answered.
    pub misses: u64,
    /// Compute closures run by `get_or_compute`.
    pub computations: u64,
    /// `get_or_compute` calls that waited on another call's in-flight load or computation.
    pub single_flight_waits: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(Tier::Memory.as_str(), "memory");
        assert_eq!(Tier::Disk.as_str(), "disk");
        assert_eq!(Source::from(Tier::Disk), Source::Disk);
        assert_eq!(Source::Computed.as_str(), "computed");
    }
}
