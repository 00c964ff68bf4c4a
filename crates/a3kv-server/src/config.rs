//! The server configuration: one TOML document (`configs/default.toml` documents every key),
//! with precedence CLI flags > `A3KV_*` environment > file > defaults.
//!
//! One schema (`config_schema`, derived from the config types) drives all three layers: every
//! key, nested and optional ones included, can be set in the file, with `--set KEY=VALUE` and
//! with `A3KV_<KEY>` (dots become `_`). An unknown key or `A3KV_*` variable, a value of the
//! wrong type or out of range fails at start; every error names the key, the layer and the
//! allowed values.

use std::net::SocketAddr;

use a3kv_sched::metrics as metrics_names;
use a3kv_sched::EngineConfig;

pub use crate::config_load::{env_name, keys, load, to_toml, Source};
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// The whole server configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address `host:port`.
    pub listen: String,
    /// Which model to load and how.
    pub model: ModelSection,
    /// The engine (scheduler knobs, prompt/document/token limits, store tiers, fusion defaults).
    pub engine: EngineConfig,
    /// HTTP-level limits.
    pub limits: LimitsSection,
    /// Histogram buckets.
    pub metrics: MetricsSection,
    /// Graceful shutdown.
    pub shutdown: ShutdownSection,
    /// Logging.
    pub log: LogSection,
}

/// `[model]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// GGUF file or HF directory; empty = the default model
    /// `SmolLM2-135M-Instruct.Q4_1.gguf`, found by [`a3kv_model::find_default_model`]: the
    /// repository's `models/` (upwards from the working directory or the binary), then
    /// `$A3KV_HOME/models`, then the user data directory.
    pub path: String,
    /// Name served in `/v1/models` and accepted in `model`; empty = the engine's model name.
    pub name: String,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// `f32`, `f16` or `bf16`.
    pub dtype: String,
    /// Weights of the token-by-token path (decode, matmuls of few rows): `quantized` (the
    /// GGUF's blocks, on the CPU) or `f32` (the reference twin).
    pub decode_weights: String,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest request body in bytes (413 above).
    pub max_body_bytes: usize,
    /// Generation requests in flight at once over all clients (429 above).
    pub max_concurrent_requests: usize,
    /// Whole-request deadline in seconds (504 when it passes).
    pub request_timeout_secs: u64,
    /// `max_tokens` of a request that gives none.
    pub default_max_tokens: usize,
    /// `Retry-After` seconds sent with 429/503.
    pub retry_after_secs: u64,
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// Buckets (seconds) of every latency histogram; must include 2.0.
    pub latency_buckets_secs: Vec<f64>,
    /// Buckets of `a3kv:fusion_recompute_ratio`, in [0, 1].
    pub ratio_buckets: Vec<f64>,
    /// Buckets of the batch-size histograms (tokens or sequences per batch).
    pub size_buckets: Vec<f64>,
}

/// `[shutdown]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownSection {
    /// After SIGTERM/SIGINT, how long in-flight requests may run before they are cut.
    pub drain_secs: u64,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `text` or `json`.
    pub format: String,
    /// `tracing` filter directive, e.g. `info` or `a3kv_server=debug,info`.
    pub level: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8000".into(),
            model: ModelSection::default(),
            engine: EngineConfig::default(),
            limits: LimitsSection::default(),
            metrics: MetricsSection::default(),
            shutdown: ShutdownSection::default(),
            log: LogSection::default(),
        }
    }
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            path: String::new(),
            name: String::new(),
            device: "cpu".into(),
            dtype: "f32".into(),
            decode_weights: "quantized".into(),
        }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 << 20,
            max_concurrent_requests: 256,
            request_timeout_secs: 300,
            default_max_tokens: 256,
            retry_after_secs: 1,
        }
    }
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            latency_buckets_secs: metrics_names::LATENCY_BUCKETS_SECS.to_vec(),
            ratio_buckets: metrics_names::RATIO_BUCKETS.to_vec(),
            size_buckets: metrics_names::SIZE_BUCKETS.to_vec(),
        }
    }
}

impl Default for ShutdownSection {
    fn default() -> Self {
        Self { drain_secs: 30 }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

impl ServerConfig {
    /// The listen address (validated by [`load`]).
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| ConfigError::Invalid {
            key: "listen".into(),
            value: self.listen.clone(),
            allowed: "a socket address host:port, e.g. 127.0.0.1:8000".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_roundtrip() {
        let cfg = load(None, &[], &[]).unwrap();
        assert_eq!(cfg, ServerConfig::default());
        let text = to_toml(&cfg).unwrap();
        let back: ServerConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn precedence_cli_over_env_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\n[limits]\nmax_body_bytes = 5000\ndefault_max_tokens = 7\n",
        )
        .unwrap();
        let env = vec![
            ("A3KV_LIMITS_MAX_BODY_BYTES".to_string(), "6000".to_string()),
            ("A3KV_LISTEN".to_string(), "127.0.0.1:2".to_string()),
        ];
        let cli = vec![(
            "listen".to_string(),
            "127.0.0.1:3".to_string(),
            "--listen".to_string(),
        )];
        let cfg = load(Some(&path), &env, &cli).unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:3");
        assert_eq!(cfg.limits.max_body_bytes, 6000);
        assert_eq!(cfg.limits.default_max_tokens, 7);
        assert_eq!(cfg.limits.request_timeout_secs, 300);
    }

    #[test]
    fn unknown_and_mistyped_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[limits]\nmax_body_byte = 5\n").unwrap();
        let e = load(Some(&path), &[], &[]).unwrap_err().to_string();
        assert!(e.contains("limits.max_body_byte"), "{e}");
        std::fs::write(&path, "[engine]\nmax_running = \"many\"\n").unwrap();
        let e = load(Some(&path), &[], &[]).unwrap_err().to_string();
        assert!(e.contains("engine.max_running"), "{e}");
        let env = vec![("A3KV_ENGINE_MAX_RUNNING".to_string(), "x".to_string())];
        let e = load(None, &env, &[]).unwrap_err().to_string();
        assert!(e.contains("A3KV_ENGINE_MAX_RUNNING"), "{e}");
    }

    #[test]
    fn partial_fusion_and_optional_disk_tables_merge() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[engine.default_fusion]\nmethod = \"cacheblend\"\n[engine.store.disk]\ndir = \"/tmp/a3kv\"\nbudget_bytes = 10000000\n",
        )
        .unwrap();
        let cfg = load(Some(&path), &[], &[]).unwrap();
        assert_eq!(
            cfg.engine.default_fusion.method,
            a3kv_fusion::Method::CacheBlend
        );
        assert_eq!(
            cfg.engine.store.disk.map(|d| d.budget_bytes),
            Some(10_000_000)
        );
    }
}
