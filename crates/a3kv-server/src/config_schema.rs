//! The configuration schema: every key (dotted path) with its TOML kind, whether it is unset
//! by default, and its `A3KV_*` variable. It is derived from sample configurations in which
//! every optional value is set and every enum variant appears, so the file, `--set` and the
//! environment accept exactly the same keys, nested and optional ones included, and a field
//! added to a config struct is reachable by all three without editing a list.

use a3kv_fusion::{AutoBudget, Budget, Eviction};
use a3kv_store::{DiskConfig, RemoteConfig};
use toml::{Table, Value};

use crate::config::ServerConfig;
use crate::error::ConfigError;

/// `A3KV_*` variables that are not config keys but are read elsewhere; any other `A3KV_*`
/// variable must name a key.
pub const OTHER_ENV_VARS: [(&str, &str); 7] = [
    (
        "A3KV_MODEL",
        "alias of model.path (also the default model of every command)",
    ),
    ("A3KV_CONFIG", "the config file of `serve` and `precompute`"),
    ("A3KV_HOME", "where the default model is looked up"),
    ("A3KV_DATA_DIR", "data sets of eval and loadgen"),
    ("A3KV_MODELS_DIR", "scripts/fetch-model.sh"),
    ("A3KV_HEATMAP_OUT", "the eval heat map output"),
    ("A3KV_NVRTC_LIB", "the libnvrtc the CUDA backend loads"),
];

/// One configuration key.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// Dotted path, e.g. `engine.store.disk.dir`.
    pub path: String,
    /// A value of the key's TOML kind (from the samples); its type is what a layer must give.
    pub sample: Value,
    /// Unset by default (an optional value, a table that is absent, or an enum alternative).
    pub optional: bool,
}

impl Key {
    /// The key's environment variable.
    pub fn env(&self) -> String {
        env_name(&self.path)
    }
}

/// Every key, the tree they form, and the tables whose keys exclude each other.
#[derive(Debug, Clone)]
pub struct Schema {
    keys: Vec<Key>,
    tree: Table,
    one_of: Vec<String>,
    defaults: Table,
    sample: Table,
}

/// Environment variable of a dotted key: `limits.max_body_bytes` -> `A3KV_LIMITS_MAX_BODY_BYTES`.
pub fn env_name(key: &str) -> String {
    format!("A3KV_{}", key.replace('.', "_").to_uppercase())
}

/// Configurations in which every optional value is set and, across them, every variant of
/// every enum appears (add a variant or an optional field here when a type gains one). The
/// first two tell an enum's tables apart (their key sets are disjoint); the others only add
/// keys.
fn samples() -> [ServerConfig; 3] {
    let mut a = ServerConfig::default();
    a.engine.store.disk = Some(DiskConfig {
        dir: "/var/lib/a3kv/chunks".into(),
        budget_bytes: 1 << 30,
    });
    a.engine.store.remote = Some(RemoteConfig::new("redis://127.0.0.1:6379"));
    let f = &mut a.engine.default_fusion;
    f.budget = Budget::Ratio(0.15);
    f.check_layer = Some(1);
    f.hybrid_weight = Some(0.5);
    f.eviction = Some(Eviction::SnapKv {
        capacity: 1024,
        pooling: 5,
    });
    let mut b = a.clone();
    b.engine.default_fusion.budget = Budget::Tokens(256);
    b.engine.default_fusion.eviction = Some(Eviction::Streaming { capacity: 1024 });
    let mut c = a.clone();
    c.engine.default_fusion.budget = Budget::Auto(AutoBudget::default());
    [a, b, c]
}

fn to_table(cfg: &ServerConfig, what: &str) -> Result<Table, ConfigError> {
    match Value::try_from(cfg) {
        Ok(Value::Table(t)) => Ok(t),
        Ok(_) | Err(_) => Err(ConfigError::Parse {
            source_name: what.into(),
            reason: "does not serialise to a TOML table".into(),
        }),
    }
}

/// `prefix.k`, or `k` at the top.
pub fn join(prefix: &str, k: &str) -> String {
    if prefix.is_empty() {
        k.to_string()
    } else {
        format!("{prefix}.{k}")
    }
}

/// Leaf keys of `t` with their values, sorted by dotted path.
pub fn leaves(t: &Table, prefix: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (k, v) in t {
        let key = join(prefix, k);
        match v {
            Value::Table(sub) => out.extend(leaves(sub, &key)),
            other => out.push((key, other.clone())),
        }
    }
    out
}

/// The union of two trees (`a`'s value where both have a leaf).
fn union(a: &mut Table, b: &Table) {
    for (k, v) in b {
        match (a.get_mut(k), v) {
            (Some(Value::Table(x)), Value::Table(y)) => union(x, y),
            (Some(_), _) => {}
            (None, v) => {
                a.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Tables present in both samples with disjoint, non-empty key sets: an externally tagged
/// enum such as `budget = { ratio = .. }` / `{ tokens = .. }`.
fn exclusive_tables(a: &Table, b: &Table, prefix: &str, out: &mut Vec<String>) {
    for (k, va) in a {
        if let (Value::Table(x), Some(Value::Table(y))) = (va, b.get(k)) {
            let path = join(prefix, k);
            if !x.is_empty() && !y.is_empty() && x.keys().all(|k| !y.contains_key(k)) {
                out.push(path);
            } else {
                exclusive_tables(x, y, &path, out);
            }
        }
    }
}

/// The table at a dotted path.
pub fn table_at<'a>(t: &'a Table, path: &str) -> Option<&'a Table> {
    if path.is_empty() {
        return Some(t);
    }
    path.split('.')
        .try_fold(t, |t, k| t.get(k).and_then(Value::as_table))
}

impl Schema {
    /// Builds the schema from [`ServerConfig::default`] and the samples.
    pub fn new() -> Result<Self, ConfigError> {
        let defaults = to_table(&ServerConfig::default(), "the built-in defaults")?;
        let [a, b, c] = samples();
        let (a, b, c) = (
            to_table(&a, "the schema sample")?,
            to_table(&b, "the schema sample")?,
            to_table(&c, "the schema sample")?,
        );
        let mut tree = defaults.clone();
        union(&mut tree, &a);
        union(&mut tree, &b);
        union(&mut tree, &c);
        let mut one_of = Vec::new();
        exclusive_tables(&a, &b, "", &mut one_of);
        let default_leaves: Vec<String> = leaves(&defaults, "").into_iter().map(|l| l.0).collect();
        let keys = leaves(&tree, "")
            .into_iter()
            .map(|(path, sample)| Key {
                optional: !default_leaves.contains(&path),
                path,
                sample,
            })
            .collect();
        Ok(Self {
            keys,
            tree,
            one_of,
            defaults,
            sample: a,
        })
    }

    /// Every key, sorted by dotted path.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// The key at `path`.
    pub fn key(&self, path: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.path == path)
    }

    /// The key whose environment variable is `var`.
    pub fn key_of_env(&self, var: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.env() == var)
    }

    /// Whether `path` is a table of the configuration (the root is `""`).
    pub fn is_table(&self, path: &str) -> bool {
        table_at(&self.tree, path).is_some()
    }

    /// Whether the keys of the table at `path` exclude each other (an enum's variants).
    pub fn is_one_of(&self, path: &str) -> bool {
        self.one_of.iter().any(|p| p == path)
    }

    /// For a key inside an enum table: that table and the variant the key belongs to, e.g.
    /// `engine.default_fusion.budget.auto.mass` -> (`engine.default_fusion.budget`, `auto`),
    /// `engine.default_fusion.budget.ratio` -> (`engine.default_fusion.budget`, `ratio`).
    pub fn variant_of<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        let mut end = key.len();
        while let Some(i) = key[..end].rfind('.') {
            let (parent, rest) = (&key[..i], &key[i + 1..]);
            if self.is_one_of(parent) {
                let variant = rest.split('.').next().unwrap_or(rest);
                return Some((parent, variant));
            }
            end = i;
        }
        None
    }

    /// The built-in defaults as a TOML table (optional keys absent).
    pub fn defaults(&self) -> &Table {
        &self.defaults
    }

    /// A complete valid configuration (every optional set), to test one value alone.
    pub fn sample(&self) -> &Table {
        &self.sample
    }

    /// The keys under the table `prefix` (all keys for `""`), comma-separated, for errors.
    pub fn keys_under(&self, prefix: &str) -> String {
        let dotted = format!("{prefix}.");
        self.keys
            .iter()
            .filter(|k| prefix.is_empty() || k.path.starts_with(&dotted))
            .map(|k| k.path.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_and_nested_keys_are_in_the_schema() {
        let s = Schema::new().unwrap();
        for (path, optional) in [
            ("listen", false),
            ("engine.store.memory_budget_bytes", false),
            ("engine.store.disk.dir", true),
            ("engine.store.disk.budget_bytes", true),
            ("engine.store.remote.url", true),
            ("engine.store.remote.lease_wait_ms", true),
            ("engine.default_fusion.check_layer", true),
            ("engine.default_fusion.hybrid_weight", false),
            ("engine.default_fusion.budget.ratio", false),
            ("engine.default_fusion.budget.tokens", true),
            ("engine.default_fusion.budget.auto.mass", true),
            ("engine.default_fusion.budget.auto.min_ratio", true),
            ("engine.default_fusion.budget.auto.max_ratio", true),
            ("engine.default_fusion.eviction.kind", true),
            ("engine.default_fusion.eviction.capacity", true),
            ("engine.default_fusion.eviction.pooling", true),
            ("metrics.latency_buckets_secs", false),
        ] {
            let k = s.key(path).unwrap_or_else(|| panic!("{path} missing"));
            assert_eq!(k.optional, optional, "{path}");
        }
        assert_eq!(
            s.key_of_env("A3KV_ENGINE_STORE_DISK_BUDGET_BYTES")
                .map(|k| k.path.as_str()),
            Some("engine.store.disk.budget_bytes")
        );
        assert!(s.is_table("engine.store.disk") && !s.is_table("engine.store.disk.dir"));
        assert!(s.is_one_of("engine.default_fusion.budget"));
        assert!(!s.is_one_of("engine.default_fusion.eviction"));
        assert_eq!(
            s.variant_of("engine.default_fusion.budget.auto.mass"),
            Some(("engine.default_fusion.budget", "auto"))
        );
        assert_eq!(
            s.variant_of("engine.default_fusion.budget.ratio"),
            Some(("engine.default_fusion.budget", "ratio"))
        );
        assert_eq!(s.variant_of("engine.default_fusion.hybrid_weight"), None);
    }

    #[test]
    fn env_names_are_distinct_and_not_reserved() {
        let s = Schema::new().unwrap();
        let mut names: Vec<String> = s.keys().iter().map(Key::env).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "two keys share an environment variable");
        for (other, _) in OTHER_ENV_VARS {
            assert!(
                !names.iter().any(|v| v == other),
                "{other} is a key's variable"
            );
        }
    }

    #[test]
    fn samples_are_valid_configurations() {
        for s in samples() {
            let t = to_table(&s, "sample").unwrap();
            let back: ServerConfig = Value::Table(t).try_into().unwrap();
            assert_eq!(back, s);
            crate::config_check::validate(&s).unwrap();
        }
    }
}
