//! `StoreConfig`: tier budgets and the disk directory, deserialised from the server config.

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
    }
}
