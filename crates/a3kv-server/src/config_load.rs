//! Loading the configuration in layers: the serialised defaults, the file, `A3KV_*`
//! environment variables and CLI overrides are merged as TOML values; every key is checked
//! against the known tree, then the result is deserialised and range-checked.

use std::path::{Path, PathBuf};

use a3kv_sched::EngineConfig;
use toml::{Table, Value};

use crate::config::{
    LimitsSection, LogSection, MetricsSection, ModelSection, ServerConfig, ShutdownSection,
};
use crate::error::ConfigError;

/// Keys that are absent from the defaults (optional tables/values) but allowed; their
/// contents are checked by the owning type's deserialiser.
const OPTIONAL_KEYS: [&str; 4] = [
    "engine.store.disk",
    "engine.default_fusion.check_layer",
    "engine.default_fusion.hybrid_weight",
    "engine.default_fusion.eviction",
];

/// Where an override comes from (named in errors).
#[derive(Debug, Clone)]
pub enum Source {
    /// The config file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Cli(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "config file {}", p.display()),
            Source::Env(v) => write!(f, "environment variable {v}"),
            Source::Cli(flag) => write!(f, "command-line flag {flag}"),
        }
    }
}

/// Builds the effective configuration.
///
/// `file`: the TOML file, if any; `env`: the process environment (only `A3KV_*` keys that
/// name a config key are used; `A3KV_MODEL` is an alias of `model.path`); `cli`: `(key, raw
/// value, flag)` overrides. Errors name the key, the source and the allowed values.
pub fn load(
    file: Option<&Path>,
    env: &[(String, String)],
    cli: &[(String, String, String)],
) -> Result<ServerConfig, ConfigError> {
    let defaults = defaults_table()?;
    let mut merged = defaults.clone();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let table: Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            source_name: Source::File(path.to_path_buf()).to_string(),
            reason: e.to_string(),
        })?;
        check_keys(&defaults, &table, "", &Source::File(path.to_path_buf()))?;
        merge(&mut merged, table);
    }
    let leaves = leaf_keys(&defaults, "");
    check_env_names(&defaults, &leaves, env)?;
    for (key, kind) in &leaves {
        let var = env_name(key);
        let alias = (key == "model.path").then_some("A3KV_MODEL");
        for name in alias.into_iter().chain(std::iter::once(var.as_str())) {
            if let Some((_, raw)) = env.iter().find(|(k, _)| k == name) {
                let v = parse_raw(key, raw, kind, &Source::Env(name.to_string()))?;
                set_path(&mut merged, key, v);
            }
        }
    }
    for (key, raw, flag) in cli {
        let kind = leaves
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| ConfigError::UnknownKey {
                key: key.clone(),
                source_name: Source::Cli(flag.clone()).to_string(),
                known: leaves
                    .iter()
                    .map(|(k, _)| k.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let v = parse_raw(key, raw, &kind, &Source::Cli(flag.clone()))?;
        set_path(&mut merged, key, v);
    }
    let cfg: ServerConfig =
        Value::Table(merged.clone())
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Value {
                key: locate_error(&merged),
                reason: e.to_string().trim().to_string(),
            })?;
    crate::config_check::validate(&cfg)?;
    Ok(cfg)
}

/// The deepest known table whose value does not deserialise (for the error message).
fn locate_error(merged: &Table) -> String {
    fn fails<T: serde::de::DeserializeOwned>(t: &Table, key: &str) -> bool {
        let v = key
            .split('.')
            .try_fold(t, |t, k| t.get(k).and_then(Value::as_table));
        v.is_some_and(|v| Value::Table(v.clone()).try_into::<T>().is_err())
    }
    use a3kv_fusion::FusionParams;
    use a3kv_store::StoreConfig;
    type Check = fn(&Table, &str) -> bool;
    let checks: [(&str, Check); 8] = [
        ("engine.default_fusion", fails::<FusionParams>),
        ("engine.store", fails::<StoreConfig>),
        ("engine", fails::<EngineConfig>),
        ("model", fails::<ModelSection>),
        ("limits", fails::<LimitsSection>),
        ("metrics", fails::<MetricsSection>),
        ("shutdown", fails::<ShutdownSection>),
        ("log", fails::<LogSection>),
    ];
    checks
        .iter()
        .find(|(k, f)| f(merged, k))
        .map(|(k, _)| k.to_string())
        .unwrap_or_else(|| "(top level)".into())
}

/// The effective configuration as TOML (for `--print-config`).
pub fn to_toml(cfg: &ServerConfig) -> Result<String, ConfigError> {
    toml::to_string_pretty(cfg).map_err(|e| ConfigError::Parse {
        source_name: "the effective configuration".into(),
        reason: e.to_string(),
    })
}

/// An `A3KV_<SECTION>_…` variable that names no key is a typo: fail rather than ignore it.
fn check_env_names(
    defaults: &Table,
    leaves: &[(String, Value)],
    env: &[(String, String)],
) -> Result<(), ConfigError> {
    let sections: Vec<String> = defaults
        .iter()
        .filter(|(_, v)| v.is_table())
        .map(|(k, _)| format!("A3KV_{}_", k.to_uppercase()))
        .collect();
    let optional: Vec<String> = OPTIONAL_KEYS.iter().map(|k| env_name(k)).collect();
    for (name, _) in env {
        let in_section = sections.iter().any(|s| name.starts_with(s.as_str()));
        let known = leaves.iter().any(|(k, _)| env_name(k) == *name);
        if in_section && !known && !optional.iter().any(|o| name.starts_with(o.as_str())) {
            return Err(ConfigError::UnknownKey {
                key: name.clone(),
                source_name: Source::Env(name.clone()).to_string(),
                known: leaves
                    .iter()
                    .map(|(k, _)| env_name(k))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    Ok(())
}

/// Environment variable of a dotted key: `limits.max_body_bytes` -> `A3KV_LIMITS_MAX_BODY_BYTES`.
pub fn env_name(key: &str) -> String {
    format!("A3KV_{}", key.replace('.', "_").to_uppercase())
}

fn defaults_table() -> Result<Table, ConfigError> {
    match Value::try_from(ServerConfig::default()) {
        Ok(Value::Table(t)) => Ok(t),
        Ok(_) | Err(_) => Err(ConfigError::Parse {
            source_name: "the built-in defaults".into(),
            reason: "defaults do not serialise to a TOML table".into(),
        }),
    }
}

/// Rejects keys that the defaults do not have (except [`OPTIONAL_KEYS`]) and values whose
/// TOML type differs from the default's.
fn check_keys(known: &Table, given: &Table, prefix: &str, src: &Source) -> Result<(), ConfigError> {
    for (k, v) in given {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if OPTIONAL_KEYS.contains(&key.as_str()) {
            continue;
        }
        let Some(def) = known.get(k) else {
            let known_here: Vec<&str> = known.keys().map(String::as_str).collect();
            return Err(ConfigError::UnknownKey {
                key,
                source_name: src.to_string(),
                known: known_here.join(", "),
            });
        };
        match (def, v) {
            (Value::Table(d), Value::Table(g)) => check_keys(d, g, &key, src)?,
            (d, g) if same_kind(d, g) => {}
            (d, g) => {
                return Err(ConfigError::WrongType {
                    key,
                    source_name: src.to_string(),
                    expected: d.type_str(),
                    found: g.type_str().to_string(),
                })
            }
        }
    }
    Ok(())
}

fn same_kind(d: &Value, g: &Value) -> bool {
    matches!(
        (d, g),
        (Value::Float(_), Value::Integer(_)) | (Value::Integer(_), Value::Integer(_))
    ) || d.type_str() == g.type_str()
}

fn merge(base: &mut Table, over: Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (Some(Value::Float(_)), Value::Integer(i)) => {
                base.insert(k, Value::Float(i as f64));
            }
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn leaf_keys(t: &Table, prefix: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Table(sub) => out.extend(leaf_keys(sub, &key)),
            other => out.push((key, other.clone())),
        }
    }
    out
}

/// Parses a raw override as the type of the key's default (strings are taken verbatim).
fn parse_raw(key: &str, raw: &str, kind: &Value, src: &Source) -> Result<Value, ConfigError> {
    if let Value::String(_) = kind {
        return Ok(Value::String(raw.to_string()));
    }
    let parsed: Option<Value> = toml::from_str::<Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"));
    match parsed {
        Some(Value::Integer(i)) if matches!(kind, Value::Float(_)) => Ok(Value::Float(i as f64)),
        Some(v) if same_kind(kind, &v) => Ok(v),
        _ => Err(ConfigError::WrongType {
            key: key.to_string(),
            source_name: src.to_string(),
            expected: kind.type_str(),
            found: format!("{raw:?}"),
        }),
    }
}

fn set_path(t: &mut Table, key: &str, v: Value) {
    let mut parts = key.split('.').peekable();
    let mut cur = t;
    while let Some(p) = parts.next() {
        if parts.peek().is_none() {
            cur.insert(p.to_string(), v);
            return;
        }
        let next = cur
            .entry(p.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        if !next.is_table() {
            *next = Value::Table(Table::new());
        }
        match next {
            Value::Table(inner) => cur = inner,
            _ => return,
        }
    }
}
