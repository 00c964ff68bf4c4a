//! `a3kv serve` command-line flags ([`ServeArgs`]) and the effective-config loader that
//! applies CLI > `A3KV_*` environment > file > defaults.

use std::path::PathBuf;

use crate::config::{self, ServerConfig};
use crate::error::ConfigError;

/// Flags of `a3kv serve`. Each named flag overrides one config key; `--set` overrides any.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file (every key is documented in configs/default.toml); without
    /// it the built-in defaults apply.
    #[arg(long, short = 'c', value_name = "FILE", env = "A3KV_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listen address host:port (key `listen`).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Model: GGUF file or HF directory (key `model.path`; default: the embedded default model).
    #[arg(long, value_name = "PATH")]
    pub model: Option<String>,
    /// Device: cpu, cuda or cuda:N (key `model.device`).
    #[arg(long)]
    pub device: Option<String>,
    /// Compute dtype: f32, f16 or bf16 (key `model.dtype`).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Log format: text or json (key `log.format`); text is plain (no colours) unless
    /// stderr is a terminal.
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// Log filter, e.g. info or a3kv_server=debug,info (key `log.level`).
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Override any key, e.g. `--set limits.max_body_bytes=1048576` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl ServeArgs {
    /// `(key, raw value, flag)` for every flag given, `--set` last.
    pub fn overrides(&self) -> Result<Vec<(String, String, String)>, ConfigError> {
        let named = [
            ("listen", &self.listen, "--listen"),
            ("model.path", &self.model, "--model"),
            ("model.device", &self.device, "--device"),
            ("model.dtype", &self.dtype, "--dtype"),
            ("log.format", &self.log_format, "--log-format"),
            ("log.level", &self.log_level, "--log-level"),
        ];
        let mut out: Vec<(String, String, String)> = named
            .iter()
            .filter_map(|(k, v, f)| {
                v.as_ref()
                    .map(|v| (k.to_string(), v.clone(), f.to_string()))
            })
            .collect();
        for s in &self.set {
            let (k, v) = s.split_once('=').ok_or_else(|| ConfigError::Parse {
                source_name: format!("command-line flag --set {s}"),
                reason: "expected KEY=VALUE, e.g. limits.max_body_bytes=1048576".into(),
            })?;
            out.push((
                k.trim().to_string(),
                v.trim().to_string(),
                format!("--set {s}"),
            ));
        }
        Ok(out)
    }

    /// The effective configuration from these flags, the process environment, the file
    /// and the defaults.
    pub fn load_config(&self) -> Result<ServerConfig, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("A3KV_"))
            .collect();
        config::load(self.config.as_deref(), &env, &self.overrides()?)
    }
}
