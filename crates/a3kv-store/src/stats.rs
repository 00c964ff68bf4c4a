//! Plain-data statistics of the store (`StoreStats`), and the small label enums `Tier` and
//! `Source` that metrics use.

use crate::tier::TierSnapshot;

/// A storage tier. Used as a metric label (`a3kv:chunk_cache_bytes{tier}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// In-process memory.
    Memory,
    /// Local disk files.
    Disk,
    /// A store shared by a fleet (Redis).
    Remote,
}

impl Tier {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Disk => "disk",
            Self::Remote => "remote",
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
    /// Remote tier hit (now promoted to memory and written to disk).
    Remote,
    /// Not stored (or stored but bad): computed by the caller's closure.
    Computed,
}

impl Source {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Disk => "disk",
            Self::Remote => "remote",
            Self::Computed => "computed",
        }
    }
}

impl From<Tier> for Source {
    fn from(t: Tier) -> Self {
        match t {
            Tier::Memory => Self::Memory,
            Tier::Disk => Self::Disk,
            Tier::Remote => Self::Remote,
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
    pub disk: Option<TierSnapshot>,
    /// Remote (Redis) tier, if configured.
    pub remote: Option<TierSnapshot>,
    /// Chunk files found corrupt at disk recovery or read (bad magic/version/checksum/length..);
    /// each was removed and treated as a miss. (Remote corruption is in `remote`.)
    pub corrupt_files: u64,
    /// Chunk files written by another model fingerprint; removed and treated as a miss.
    pub fingerprint_mismatches: u64,
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
        assert_eq!(Source::from(Tier::Remote).as_str(), "remote");
        assert_eq!(Source::from(Tier::Disk), Source::Disk);
        assert_eq!(Source::Computed.as_str(), "computed");
    }
}
