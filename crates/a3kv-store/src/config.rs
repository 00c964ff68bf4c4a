//! `StoreConfig`: tier budgets, the disk directory and the shared Redis tier, deserialised from the server config.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Configuration of a [`crate::ChunkStore`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Byte budget of the memory tier (K/V payload plus token ids of resident chunks).
    pub memory_budget_bytes: u64,
    /// Disk tier; `None` keeps chunks in memory only.
    #[serde(default)]
    pub disk: Option<DiskConfig>,
    /// Shared tier on Redis (below disk); `None` keeps chunks local to this process.
    #[serde(default)]
    pub remote: Option<RemoteConfig>,
}

/// Configuration of the disk tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// Root directory. Files live in `<dir>/<model fingerprint hex>/`, so models never share
    /// (or delete) each other's files; one store process owns that subdirectory (locked).
    pub dir: PathBuf,
    /// Byte budget for chunk files (whole files, headers included) of this model.
    pub budget_bytes: u64,
}

/// Configuration of the shared tier on Redis (`redis_tier.rs`). Every call is bounded by
/// `timeout_ms`; a failing Redis is skipped by a circuit breaker and never fails a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// `redis://host:port[/db]` (or `redis+unix:///path`); a password goes in the URL.
    pub url: String,
    /// Connect, read and write timeout of every Redis call, in milliseconds.
    #[serde(default = "RemoteConfig::default_timeout_ms")]
    pub timeout_ms: u64,
    /// Expiry of stored chunks in seconds (refreshed by every write); 0 keeps them until
    /// Redis evicts them (`maxmemory-policy`).
    #[serde(default)]
    pub ttl_secs: u64,
    /// Largest single value written (one layer, or the header); larger chunks stay local.
    #[serde(default = "RemoteConfig::default_max_value_bytes")]
    pub max_value_bytes: u64,
    /// How long a fleet-wide compute lease lasts if its holder dies (milliseconds).
    #[serde(default = "RemoteConfig::default_lease_ms")]
    pub lease_ms: u64,
    /// How long a replica waits for another's lease holder to publish a chunk before
    /// computing it itself (milliseconds).
    #[serde(default = "RemoteConfig::default_lease_wait_ms")]
    pub lease_wait_ms: u64,
    /// Consecutive failed calls that open the circuit breaker.
    #[serde(default = "RemoteConfig::default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long the breaker stays open before one probe call is let through (milliseconds).
    #[serde(default = "RemoteConfig::default_breaker_cooldown_ms")]
    pub breaker_cooldown_ms: u64,
    /// Idle connections kept for reuse.
    #[serde(default = "RemoteConfig::default_pool_size")]
    pub pool_size: u32,
}

impl RemoteConfig {
    fn default_timeout_ms() -> u64 {
        500
    }
    fn default_max_value_bytes() -> u64 {
        64 << 20
    }
    fn default_lease_ms() -> u64 {
        30_000
    }
    fn default_lease_wait_ms() -> u64 {
        15_000
    }
    fn default_breaker_failures() -> u32 {
        3
    }
    fn default_breaker_cooldown_ms() -> u64 {
        2_000
    }
    fn default_pool_size() -> u32 {
        8
    }

    /// A config for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout_ms: Self::default_timeout_ms(),
            ttl_secs: 0,
            max_value_bytes: Self::default_max_value_bytes(),
            lease_ms: Self::default_lease_ms(),
            lease_wait_ms: Self::default_lease_wait_ms(),
            breaker_failures: Self::default_breaker_failures(),
            breaker_cooldown_ms: Self::default_breaker_cooldown_ms(),
            pool_size: Self::default_pool_size(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deserialises_and_rejects_unknown_keys() {
        let cfg: StoreConfig = serde_json::from_str(
            r#"{"memory_budget_bytes": 1024, "disk": {"dir": "/tmp/x", "budget_bytes": 4096}}"#,
        )
        .unwrap();
        assert_eq!(cfg.memory_budget_bytes, 1024);
        assert_eq!(cfg.disk.as_ref().map(|d| d.budget_bytes), Some(4096));
        let mem_only: StoreConfig = serde_json::from_str(r#"{"memory_budget_bytes": 1}"#).unwrap();
        assert_eq!(mem_only.disk, None);
        assert!(serde_json::from_str::<StoreConfig>(r#"{"memory_budget": 1}"#).is_err());
        let remote: StoreConfig = serde_json::from_str(
            r#"{"memory_budget_bytes": 1, "remote": {"url": "redis://127.0.0.1:6379", "ttl_secs": 60}}"#,
        )
        .unwrap();
        let r = remote.remote.unwrap();
        assert_eq!((r.ttl_secs, r.timeout_ms), (60, 500));
        assert_eq!(
            RemoteConfig {
                ttl_secs: 60,
                ..RemoteConfig::new(r.url.clone())
            },
            r
        );
    }
}
