//! Loading the configuration in layers: the serialised defaults, then the file, `A3KV_*`
//! environment variables and CLI overrides, each turned into key assignments that the
//! [`Schema`] checks (unknown key, wrong kind) before they are applied; the result is
//! deserialised (a value its type rejects is traced back to the key and layer that gave it)
//! and range-checked.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::config::ServerConfig;
use crate::config_schema::{join, leaves, table_at, Schema, OTHER_ENV_VARS};
use crate::error::ConfigError;

pub use crate::config_schema::env_name;

/// Where an override comes from (named in errors).
#[derive(Debug, Clone, PartialEq)]
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

/// One key set by one layer.
#[derive(Debug, Clone)]
struct Assignment {
    key: String,
    value: Value,
    source: Source,
}

/// Every key of the configuration: `(dotted key, environment variable, unset by default)`,
/// sorted. The file, `--set KEY=VALUE` and the variable all accept each of them.
pub fn keys() -> Result<Vec<(String, String, bool)>, ConfigError> {
    Ok(Schema::new()?
        .keys()
        .iter()
        .map(|k| (k.path.clone(), k.env(), k.optional))
        .collect())
}

/// Builds the effective configuration.
///
/// `file`: the TOML file, if any; `env`: `A3KV_*` variables of the process (each must name
/// a key, be `A3KV_MODEL`, an alias of `model.path`, or be one of the variables other parts
/// of a3kv read; other names are ignored); `cli`: `(key, raw value, flag)` overrides.
/// Errors name the key, the layer that gave it and the allowed values.
pub fn load(
    file: Option<&Path>,
    env: &[(String, String)],
    cli: &[(String, String, String)],
) -> Result<ServerConfig, ConfigError> {
    let schema = Schema::new()?;
    let mut merged = schema.defaults().clone();
    let mut applied: Vec<Assignment> = Vec::new();
    if let Some(path) = file {
        let (tables, layer) = file_layer(&schema, path)?;
        for t in tables {
            ensure_table(&mut merged, &t);
        }
        apply(&schema, &mut merged, &mut applied, layer)?;
    }
    let layer = env_layer(&schema, env)?;
    apply(&schema, &mut merged, &mut applied, layer)?;
    let layer = cli_layer(&schema, cli)?;
    apply(&schema, &mut merged, &mut applied, layer)?;
    let cfg: ServerConfig = Value::Table(merged.clone())
        .try_into()
        .map_err(|e: toml::de::Error| blame(&schema, &applied, &merged, &e))?;
    crate::config_check::validate(&cfg)?;
    Ok(cfg)
}

/// The effective configuration as TOML (for `--print-config`).
pub fn to_toml(cfg: &ServerConfig) -> Result<String, ConfigError> {
    toml::to_string_pretty(cfg).map_err(|e| ConfigError::Parse {
        source_name: "the effective configuration".into(),
        reason: e.to_string(),
    })
}

/// The file's tables (so an empty optional table still counts as given) and its keys.
fn file_layer(schema: &Schema, path: &Path) -> Result<(Vec<String>, Vec<Assignment>), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let src = Source::File(path.to_path_buf());
    let table: Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        source_name: src.to_string(),
        reason: e.to_string(),
    })?;
    check_file(schema, &table, "", &src)?;
    let mut tables = Vec::new();
    table_paths(&table, "", &mut tables);
    let layer = leaves(&table, "")
        .into_iter()
        .map(|(key, v)| Assignment {
            value: normalise(schema, &key, v),
            key,
            source: src.clone(),
        })
        .collect();
    Ok((tables, layer))
}

fn table_paths(t: &Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in t {
        if let Value::Table(sub) = v {
            let path = join(prefix, k);
            table_paths(sub, &path, out);
            out.push(path);
        }
    }
}

/// Rejects keys the schema does not have and values of another TOML kind.
fn check_file(
    schema: &Schema,
    given: &Table,
    prefix: &str,
    src: &Source,
) -> Result<(), ConfigError> {
    for (k, v) in given {
        let key = join(prefix, k);
        match (schema.key(&key), v) {
            (Some(spec), v) if same_kind(&spec.sample, v) => {}
            (Some(spec), v) => return Err(wrong_type(&key, src, spec.sample.type_str(), v)),
            (None, Value::Table(sub)) if schema.is_table(&key) => {
                check_file(schema, sub, &key, src)?
            }
            (None, v) if schema.is_table(&key) => return Err(wrong_type(&key, src, "table", v)),
            (None, _) => {
                return Err(ConfigError::UnknownKey {
                    key,
                    source_name: src.to_string(),
                    known: schema.keys_under(prefix),
                })
            }
        }
    }
    Ok(())
}

fn wrong_type(key: &str, src: &Source, expected: &'static str, found: &Value) -> ConfigError {
    ConfigError::WrongType {
        key: key.to_string(),
        source_name: src.to_string(),
        expected,
        found: format!("{} {found}", found.type_str()),
    }
}

/// The `A3KV_*` variables as assignments; one that names no key fails.
fn env_layer(schema: &Schema, env: &[(String, String)]) -> Result<Vec<Assignment>, ConfigError> {
    let mut layer = Vec::new();
    // The alias first, so that `A3KV_MODEL_PATH` wins when both are set.
    let alias = env.iter().filter(|(n, _)| n == "A3KV_MODEL");
    let rest = env.iter().filter(|(n, _)| n != "A3KV_MODEL");
    for (name, raw) in alias.chain(rest) {
        if !name.starts_with("A3KV_") {
            continue;
        }
        let key = if name == "A3KV_MODEL" {
            "model.path".to_string()
        } else if OTHER_ENV_VARS.iter().any(|(v, _)| v == name) {
            continue;
        } else if let Some(k) = schema.key_of_env(name) {
            k.path.clone()
        } else {
            return Err(ConfigError::UnknownKey {
                key: name.clone(),
                source_name: Source::Env(name.clone()).to_string(),
                known: env_known(schema, name),
            });
        };
        let src = Source::Env(name.clone());
        layer.push(Assignment {
            value: parse_raw(schema, &key, raw, &src)?,
            key,
            source: src,
        });
    }
    Ok(layer)
}

/// The variables of the deepest table whose variable prefix `name` has, and the others.
fn env_known(schema: &Schema, name: &str) -> String {
    let table = schema
        .keys()
        .iter()
        .flat_map(|k| {
            let parts: Vec<&str> = k.path.split('.').collect();
            (1..parts.len()).map(move |n| parts[..n].join("."))
        })
        .filter(|t| name.starts_with(&format!("{}_", env_name(t))))
        .max_by_key(String::len);
    let vars: Vec<String> = schema
        .keys()
        .iter()
        .filter(|k| {
            table
                .as_ref()
                .is_none_or(|t| k.path.starts_with(&format!("{t}.")))
        })
        .map(|k| k.env())
        .collect();
    let others: Vec<&str> = OTHER_ENV_VARS.iter().map(|(v, _)| *v).collect();
    format!(
        "{} (other A3KV_ variables read: {})",
        vars.join(", "),
        others.join(", ")
    )
}

/// The CLI overrides as assignments; an unknown key fails naming the keys of its table.
fn cli_layer(
    schema: &Schema,
    cli: &[(String, String, String)],
) -> Result<Vec<Assignment>, ConfigError> {
    let mut layer = Vec::new();
    for (key, raw, flag) in cli {
        let src = Source::Cli(flag.clone());
        if schema.key(key).is_none() {
            let parts: Vec<&str> = key.split('.').collect();
            let table = (0..parts.len())
                .rev()
                .map(|n| parts[..n].join("."))
                .find(|t| schema.is_table(t))
                .unwrap_or_default();
            return Err(ConfigError::UnknownKey {
                key: key.clone(),
                source_name: src.to_string(),
                known: schema.keys_under(&table),
            });
        }
        layer.push(Assignment {
            value: parse_raw(schema, key, raw, &src)?,
            key: key.clone(),
            source: src,
        });
    }
    Ok(layer)
}

/// Applies one layer; two keys of one enum table in the same layer (e.g. `budget.ratio` and
/// `budget.tokens`) contradict each other and fail.
fn apply(
    schema: &Schema,
    merged: &mut Table,
    applied: &mut Vec<Assignment>,
    layer: Vec<Assignment>,
) -> Result<(), ConfigError> {
    for (i, a) in layer.iter().enumerate() {
        let Some((parent, variant)) = schema.variant_of(&a.key) else {
            continue;
        };
        if let Some(b) = layer[..i].iter().find(|b| {
            b.key != a.key
                && schema
                    .variant_of(&b.key)
                    .is_some_and(|(p, v)| p == parent && v != variant)
        }) {
            return Err(ConfigError::Invalid {
                key: parent.to_string(),
                value: format!(
                    "both `{}` ({}) and `{}` ({})",
                    b.key, b.source, a.key, a.source
                ),
                allowed: format!("one of {}", schema.keys_under(parent)),
            });
        }
    }
    for a in layer {
        set_leaf(schema, merged, &a.key, a.value.clone());
        applied.push(a);
    }
    Ok(())
}

/// The error of a configuration that does not deserialise: the effective assignment whose
/// value, set alone in a complete valid configuration, fails too (a negative size, an unknown
/// variant); else the table the deserialiser names (e.g. a table missing a required key),
/// with the layers that set keys in it.
fn blame(
    schema: &Schema,
    applied: &[Assignment],
    merged: &Table,
    err: &toml::de::Error,
) -> ConfigError {
    let effective = applied
        .iter()
        .enumerate()
        .filter(|(i, a)| !applied[i + 1..].iter().any(|b| b.key == a.key))
        .map(|(_, a)| a);
    for a in effective {
        let mut t = schema.sample().clone();
        set_leaf(schema, &mut t, &a.key, a.value.clone());
        if let Err(e) = Value::Table(t).try_into::<ServerConfig>() {
            return ConfigError::Value {
                key: a.key.clone(),
                source_name: a.source.to_string(),
                reason: split_error(&e).0,
            };
        }
    }
    let (reason, path) = split_error(err);
    let key = path
        .filter(|p| table_at(merged, p).is_some())
        .unwrap_or_else(|| "(top level)".into());
    let inside = format!("{key}.");
    let mut sources: Vec<String> = applied
        .iter()
        .filter(|a| key == "(top level)" || a.key.starts_with(&inside))
        .map(|a| a.source.to_string())
        .collect();
    sources.dedup();
    ConfigError::Value {
        key,
        source_name: if sources.is_empty() {
            "the built-in defaults".into()
        } else {
            sources.join(" and ")
        },
        reason,
    }
}

/// A deserialiser message without its trailing "in `key.path`" line, and that path.
fn split_error(e: &toml::de::Error) -> (String, Option<String>) {
    let text = e.to_string();
    let mut path = None;
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            let p = l
                .trim()
                .strip_prefix("in `")
                .and_then(|r| r.strip_suffix('`'));
            if let Some(p) = p {
                path = Some(p.to_string());
            }
            p.is_none() && !l.trim().is_empty()
        })
        .collect();
    (lines.join(" "), path)
}

fn same_kind(d: &Value, g: &Value) -> bool {
    matches!(
        (d, g),
        (Value::Float(_), Value::Integer(_)) | (Value::Integer(_), Value::Integer(_))
    ) || d.type_str() == g.type_str()
}

/// An integer given for a float key becomes a float.
fn normalise(schema: &Schema, key: &str, v: Value) -> Value {
    match (schema.key(key).map(|k| &k.sample), v) {
        (Some(Value::Float(_)), Value::Integer(i)) => Value::Float(i as f64),
        (_, v) => v,
    }
}

/// Parses a raw override as the key's kind (strings are taken verbatim, anything else is a
/// TOML value: `8`, `0.5`, `true`, `[1.0, 2.0]`).
fn parse_raw(schema: &Schema, key: &str, raw: &str, src: &Source) -> Result<Value, ConfigError> {
    let Some(spec) = schema.key(key) else {
        return Err(ConfigError::UnknownKey {
            key: key.to_string(),
            source_name: src.to_string(),
            known: schema.keys_under(""),
        });
    };
    if let Value::String(_) = spec.sample {
        return Ok(Value::String(raw.to_string()));
    }
    let parsed: Option<Value> = toml::from_str::<Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"));
    match parsed {
        Some(v) if same_kind(&spec.sample, &v) => Ok(normalise(schema, key, v)),
        _ => Err(ConfigError::WrongType {
            key: key.to_string(),
            source_name: src.to_string(),
            expected: spec.sample.type_str(),
            found: format!("{raw:?}"),
        }),
    }
}

/// Sets a leaf, creating its tables; in an enum table the other variants' keys go (a
/// variant may be a table itself, e.g. `budget.auto.mass`).
fn set_leaf(schema: &Schema, t: &mut Table, key: &str, v: Value) {
    if let Some((enum_path, variant)) = schema.variant_of(key) {
        if let Some(table) = ensure_table(t, enum_path) {
            table.retain(|k, _| k == variant);
        }
    }
    let (parent, last) = key.rsplit_once('.').unwrap_or(("", key));
    if let Some(table) = ensure_table(t, parent) {
        table.insert(last.to_string(), v);
    }
}

/// The table at `path`, created (replacing a non-table) where missing.
fn ensure_table<'a>(t: &'a mut Table, path: &str) -> Option<&'a mut Table> {
    if path.is_empty() {
        return Some(t);
    }
    let (head, rest) = path.split_once('.').unwrap_or((path, ""));
    let next = t
        .entry(head.to_string())
        .or_insert_with(|| Value::Table(Table::new()));
    if !next.is_table() {
        *next = Value::Table(Table::new());
    }
    ensure_table(next.as_table_mut()?, rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use a3kv_fusion::{Budget, Eviction};

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn set(pairs: &[&str]) -> Vec<(String, String, String)> {
        pairs
            .iter()
            .filter_map(|s| s.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string(), format!("--set {k}={v}")))
            .collect()
    }

    #[test]
    fn disk_tier_from_env_and_from_set() {
        let vars = env(&[
            ("A3KV_ENGINE_STORE_DISK_DIR", "/tmp/a3kv-disk"),
            ("A3KV_ENGINE_STORE_DISK_BUDGET_BYTES", "10000000"),
        ]);
        let cfg = load(None, &vars, &[]).unwrap();
        let disk = cfg.engine.store.disk.unwrap();
        assert_eq!(
            (disk.dir.to_str(), disk.budget_bytes),
            (Some("/tmp/a3kv-disk"), 10_000_000)
        );
        let cli = set(&[
            "engine.store.disk.dir=/tmp/other",
            "engine.store.disk.budget_bytes=20000000",
        ]);
        let cfg = load(None, &vars, &cli).unwrap();
        let disk = cfg.engine.store.disk.unwrap();
        assert_eq!(
            (disk.dir.to_str(), disk.budget_bytes),
            (Some("/tmp/other"), 20_000_000)
        );
    }

    #[test]
    fn negative_budget_fails_naming_key_and_variable() {
        let vars = env(&[
            ("A3KV_ENGINE_STORE_DISK_DIR", "/tmp/a3kv-disk"),
            ("A3KV_ENGINE_STORE_DISK_BUDGET_BYTES", "-1"),
        ]);
        let e = load(None, &vars, &[]).unwrap_err().to_string();
        assert!(
            e.contains("`engine.store.disk.budget_bytes`")
                && e.contains("A3KV_ENGINE_STORE_DISK_BUDGET_BYTES")
                && e.contains("-1"),
            "{e}"
        );
        let e = load(None, &[], &set(&["engine.max_running=-3"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`engine.max_running`") && e.contains("--set"),
            "{e}"
        );
    }

    #[test]
    fn a3kv_variables_must_name_a_key_or_be_known_others() {
        let e = load(None, &env(&[("A3KV_ENGINE_STORE_DISK_DRI", "/x")]), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("A3KV_ENGINE_STORE_DISK_DRI") && e.contains("A3KV_ENGINE_STORE_DISK_DIR"),
            "{e}"
        );
        assert!(load(None, &env(&[("A3KV_LOGLEVEL", "debug")]), &[]).is_err());
        let vars = env(&[
            ("A3KV_HOME", "/nowhere"),
            ("A3KV_CONFIG", "ignored-here.toml"),
            ("A3KV_DATA_DIR", "/nowhere"),
            ("A3KV_MODEL", "/models/a.gguf"),
            ("PATH", "/bin"),
        ]);
        assert_eq!(load(None, &vars, &[]).unwrap().model.path, "/models/a.gguf");
        let mut both = vars.clone();
        both.insert(0, ("A3KV_MODEL_PATH".into(), "/models/b.gguf".into()));
        assert_eq!(
            load(None, &both, &[]).unwrap().model.path,
            "/models/b.gguf",
            "A3KV_MODEL_PATH beats its alias"
        );
    }

    #[test]
    fn optional_fusion_keys_from_every_layer() {
        let vars = env(&[
            ("A3KV_ENGINE_DEFAULT_FUSION_CHECK_LAYER", "3"),
            ("A3KV_ENGINE_DEFAULT_FUSION_EVICTION_KIND", "streaming"),
            ("A3KV_ENGINE_DEFAULT_FUSION_EVICTION_CAPACITY", "512"),
        ]);
        let cli = set(&[
            "engine.default_fusion.budget.tokens=64",
            "engine.default_fusion.hybrid_weight=1",
        ]);
        let f = load(None, &vars, &cli).unwrap().engine.default_fusion;
        assert_eq!(f.check_layer, Some(3));
        assert_eq!(f.eviction, Some(Eviction::Streaming { capacity: 512 }));
        assert_eq!(f.budget, Budget::Tokens(64), "tokens replaces the ratio");
        assert_eq!(f.hybrid_weight, Some(1.0));
        let e = load(
            None,
            &[],
            &set(&[
                "engine.default_fusion.budget.tokens=64",
                "engine.default_fusion.budget.ratio=0.2",
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("engine.default_fusion.budget"), "{e}");
        let e = load(
            None,
            &env(&[("A3KV_ENGINE_DEFAULT_FUSION_EVICTION_KIND", "lru")]),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`engine.default_fusion.eviction.kind`"), "{e}");
    }

    #[test]
    fn an_adaptive_budget_from_every_layer() {
        use a3kv_fusion::AutoBudget;
        let vars = env(&[("A3KV_ENGINE_DEFAULT_FUSION_BUDGET_AUTO_MAX_RATIO", "0.3")]);
        let cli = set(&["engine.default_fusion.budget.auto.mass=0.7"]);
        let f = load(None, &vars, &cli).unwrap().engine.default_fusion;
        let want = AutoBudget {
            mass: 0.7,
            max_ratio: 0.3,
            ..AutoBudget::default()
        };
        assert_eq!(f.budget, Budget::Auto(want), "auto replaces the ratio");
        // A later layer's ratio replaces it again.
        let cli = set(&["engine.default_fusion.budget.ratio=0.2"]);
        let f = load(None, &vars, &cli).unwrap().engine.default_fusion;
        assert_eq!(f.budget, Budget::Ratio(0.2));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[engine.default_fusion.budget.auto]\nmass = 0.6\nmin_ratio = 0.1\nmax_ratio = 0.4\n",
        )
        .unwrap();
        let f = load(Some(&path), &[], &[]).unwrap().engine.default_fusion;
        assert_eq!(
            f.budget,
            Budget::Auto(AutoBudget {
                mass: 0.6,
                min_ratio: 0.1,
                max_ratio: 0.4
            })
        );
        // One layer may not give two variants.
        let e = load(
            None,
            &[],
            &set(&[
                "engine.default_fusion.budget.auto.mass=0.7",
                "engine.default_fusion.budget.ratio=0.2",
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("engine.default_fusion.budget"), "{e}");
        for (key, bad) in [("mass", "0"), ("min_ratio", "1.5"), ("max_ratio", "-1")] {
            let e = load(
                None,
                &[],
                &set(&[&format!("engine.default_fusion.budget.auto.{key}={bad}")]),
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.contains(&format!("engine.default_fusion.budget.auto.{key}")),
                "{e}"
            );
        }
    }

    #[test]
    fn errors_name_the_key_type_and_keys_of_the_table() {
        let e = load(None, &env(&[("A3KV_ENGINE_MAX_RUNNING", "x")]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be an integer"), "{e}");
        let e = load(None, &[], &set(&["engine.store.disk.dri=/x"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("engine.store.disk.dri")
                && e.contains("engine.store.disk.budget_bytes, engine.store.disk.dir"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[engine.store.disk]\ndir = \"/tmp/x\"\n").unwrap();
        let e = load(Some(&path), &[], &[]).unwrap_err().to_string();
        assert!(
            e.contains("`engine.store.disk` in config file")
                && e.contains("missing field `budget_bytes`")
                && !e.contains('\n'),
            "{e}"
        );
        let e = load(
            None,
            &env(&[("A3KV_ENGINE_STORE_DISK_BUDGET_BYTES", "-1")]),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.ends_with("invalid value: integer `-1`, expected u64"),
            "one line, the key named once: {e}"
        );
        std::fs::write(&path, "[engine.default_fusion]\nbudget = 0.2\n").unwrap();
        let e = load(Some(&path), &[], &[]).unwrap_err().to_string();
        assert!(
            e.contains("engine.default_fusion.budget") && e.contains("must be a table"),
            "{e}"
        );
        std::fs::write(
            &path,
            "[engine.default_fusion.budget]\nratio = 0.2\ntokens = 5\n",
        )
        .unwrap();
        assert!(load(Some(&path), &[], &[]).is_err(), "ratio and tokens");
    }
}
