//! Configuration: the shipped files load (default.toml equals the built-in defaults),
//! precedence CLI > env > file, every key documented in default.toml (optional ones
//! commented out) can be set through the file, `--set` and `A3KV_*`, and a bad key or value
//! fails start naming the key.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use a3kv_server::config::{env_name, keys, load, to_toml};
use a3kv_server::{ServeArgs, ServerConfig};
use toml::{Table, Value};

fn configs_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs"))
}

#[test]
fn shipped_configs_load_and_default_toml_documents_the_defaults() {
    let default =
        load(Some(&configs_dir().join("default.toml")), &[], &[]).expect("default.toml loads");
    assert_eq!(
        default,
        ServerConfig::default(),
        "configs/default.toml must state the built-in defaults"
    );
    for profile in ["low-latency.toml", "high-throughput.toml", "quality.toml"] {
        let cfg = load(Some(&configs_dir().join(profile)), &[], &[])
            .unwrap_or_else(|e| panic!("{profile}: {e}"));
        assert_ne!(cfg, default, "{profile} changes something");
        let text = std::fs::read_to_string(configs_dir().join(profile)).expect("read");
        assert!(
            text.starts_with('#'),
            "{profile} starts with a comment on what it trades"
        );
    }
    // Every key of the effective configuration appears in default.toml.
    let text = std::fs::read_to_string(configs_dir().join("default.toml")).expect("read");
    let printed = to_toml(&default).expect("print");
    for line in printed.lines() {
        if let Some((key, _)) = line.split_once(" = ") {
            assert!(
                text.contains(&format!("{key} = ")),
                "default.toml does not document `{key}`"
            );
        }
    }
}

#[test]
fn precedence_cli_over_env_over_file_over_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a3kv.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:7001\"\n[limits]\nmax_body_bytes = 5000\nretry_after_secs = 9\n[engine]\nmax_running = 3\n").expect("write");
    let args = ServeArgs {
        config: Some(path.clone()),
        listen: Some("127.0.0.1:7003".into()),
        set: vec!["engine.max_running=5".into()],
        ..ServeArgs::default()
    };
    let env = vec![
        ("A3KV_LISTEN".to_string(), "127.0.0.1:7002".to_string()),
        ("A3KV_LIMITS_MAX_BODY_BYTES".to_string(), "6000".to_string()),
        ("A3KV_ENGINE_MAX_RUNNING".to_string(), "4".to_string()),
    ];
    let cfg = load(Some(&path), &env, &args.overrides().expect("flags")).expect("loads");
    assert_eq!(cfg.listen, "127.0.0.1:7003", "CLI beats env and file");
    assert_eq!(cfg.engine.max_running, 5, "--set beats env and file");
    assert_eq!(cfg.limits.max_body_bytes, 6000, "env beats file");
    assert_eq!(cfg.limits.retry_after_secs, 9, "file beats defaults");
    assert_eq!(
        cfg.limits.request_timeout_secs, 300,
        "defaults fill the rest"
    );
    let printed = to_toml(&cfg).expect("print");
    assert!(printed.contains("listen = \"127.0.0.1:7003\""), "{printed}");
}

#[tokio::test]
async fn bad_key_or_value_fails_start_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    for (content, named) in [
        ("[limits]\nmax_body_bites = 10\n", "limits.max_body_bites"),
        ("[engine]\nmax_running = 0\n", "engine.max_running"),
        ("[engine]\nkv_dtype = \"f8\"\n", "engine.kv_dtype"),
        ("[engine.default_fusion]\nmethod = \"magic\"\n", "engine"),
        (
            "[metrics]\nlatency_buckets_secs = [0.1, 1.0]\n",
            "metrics.latency_buckets_secs",
        ),
        ("listen = 8000\n", "listen"),
    ] {
        std::fs::write(&path, content).expect("write");
        let args = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        let err = a3kv_server::serve(args)
            .await
            .expect_err("start must fail")
            .to_string();
        assert!(
            err.contains(named),
            "{content:?}: error {err:?} must name {named}"
        );
    }
    let args = ServeArgs {
        set: vec!["limits.max_concurrent_requests=0".into()],
        ..ServeArgs::default()
    };
    let err = a3kv_server::serve(args)
        .await
        .expect_err("start must fail")
        .to_string();
    assert!(
        err.contains("limits.max_concurrent_requests") && err.contains("1..="),
        "{err}"
    );
}

/// The keys documented in default.toml with their documented values: its assignments, and
/// the optional keys shown commented out (`# key = value` lines and `# [table]` headers).
/// Returns `(key, value, commented out)`.
fn documented_keys() -> Vec<(String, Value, bool)> {
    let text = std::fs::read_to_string(configs_dir().join("default.toml")).expect("read");
    let is_toml = |rest: &str| {
        let name = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
        };
        rest.strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .is_some_and(name)
            || rest.split_once(" = ").is_some_and(|(k, _)| name(k))
    };
    let all: String = text
        .lines()
        .map(|l| {
            l.strip_prefix('#')
                .map(str::trim_start)
                .filter(|r| is_toml(r))
                .unwrap_or(l)
        })
        .collect::<Vec<_>>()
        .join("\n");
    let all: Table = toml::from_str(&all).expect("default.toml with its optional keys uncommented");
    let plain: Table = toml::from_str(&text).expect("default.toml");
    let mut out = Vec::new();
    flatten(&all, "", &mut out);
    let mut set = Vec::new();
    flatten(&plain, "", &mut set);
    out.into_iter()
        .map(|(k, v)| {
            let optional = !set.iter().any(|(s, _)| *s == k);
            (k, v, optional)
        })
        .collect()
}

fn flatten(t: &Table, prefix: &str, out: &mut Vec<(String, Value)>) {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Table(sub) => flatten(sub, &key, out),
            other => out.push((key, other.clone())),
        }
    }
}

fn get<'a>(t: &'a Table, key: &str) -> Option<&'a Value> {
    let (parent, last) = key.rsplit_once('.').unwrap_or(("", key));
    let table = parent
        .split('.')
        .filter(|p| !p.is_empty())
        .try_fold(t, |t, p| t.get(p).and_then(Value::as_table))?;
    table.get(last)
}

fn put(t: &mut Table, key: &str, v: Value) {
    match key.split_once('.') {
        None => {
            t.insert(key.to_string(), v);
        }
        Some((head, rest)) => {
            let sub = t
                .entry(head.to_string())
                .or_insert_with(|| Value::Table(Table::new()));
            if let Value::Table(sub) = sub {
                put(sub, rest, v);
            }
        }
    }
}

/// A valid value other than the documented one.
fn changed(key: &str, v: &Value) -> Value {
    match v {
        Value::Integer(i) => Value::Integer(i + 1),
        Value::Float(x) => Value::Float(x / 2.0),
        Value::Boolean(b) => Value::Boolean(!b),
        Value::Array(a) => Value::Array(a[1..].to_vec()),
        Value::String(s) => Value::String(match key {
            "listen" => "127.0.0.1:9123".into(),
            "model.device" => "cuda:1".into(),
            "engine.device" => "cuda:1".into(),
            "engine.kv_dtype" => "bf16".into(),
            "model.dtype" => "bf16".into(),
            "model.decode_weights" => "f32".into(),
            "log.format" => "json".into(),
            "log.level" => "debug".into(),
            "engine.default_fusion.method" => "epic".into(),
            "engine.default_fusion.eviction.kind" => "streaming".into(),
            // Free-form values (paths, names).
            _ => format!("{s}/a3kv-test"),
        }),
        other => panic!("{key}: no changed value for {other}"),
    }
}

/// How a value is written on the command line or in the environment.
fn raw(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => (x - y).abs() < 1e-6,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

/// `(key, value)` set alone through `route` (`file`, `set`, `env`), with `companions` (the
/// other keys of an optional table, which is only valid whole) set the same way.
fn load_via(
    route: &str,
    dir: &Path,
    set: &[(String, Value)],
) -> Result<ServerConfig, a3kv_server::ConfigError> {
    match route {
        "file" => {
            let mut t = Table::new();
            for (k, v) in set {
                put(&mut t, k, v.clone());
            }
            let path = dir.join("keys.toml");
            std::fs::write(&path, toml::to_string(&t).expect("toml")).expect("write");
            load(Some(&path), &[], &[])
        }
        "set" => {
            let args = ServeArgs {
                set: set.iter().map(|(k, v)| format!("{k}={}", raw(v))).collect(),
                ..ServeArgs::default()
            };
            load(None, &[], &args.overrides().expect("flags"))
        }
        _ => {
            let env: Vec<(String, String)> =
                set.iter().map(|(k, v)| (env_name(k), raw(v))).collect();
            load(None, &env, &[])
        }
    }
}

/// The other documented keys of `key`'s table when that table is optional as a whole.
fn companions(documented: &[(String, Value, bool)], key: &str) -> Vec<(String, Value)> {
    let Some((parent, _)) = key.rsplit_once('.') else {
        return Vec::new();
    };
    let siblings: Vec<&(String, Value, bool)> = documented
        .iter()
        .filter(|(k, ..)| k.rsplit_once('.').map(|p| p.0) == Some(parent))
        .collect();
    if !siblings.iter().all(|(.., optional)| *optional) {
        return Vec::new();
    }
    siblings
        .into_iter()
        .filter(|(k, ..)| k != key)
        .map(|(k, v, _)| (k.clone(), v.clone()))
        .collect()
}

const ROUTES: [&str; 3] = ["file", "set", "env"];

#[test]
fn every_documented_key_is_set_by_the_file_by_set_and_by_env() {
    let documented = documented_keys();
    let schema = keys().expect("schema");
    let doc_names: BTreeSet<&str> = documented.iter().map(|(k, ..)| k.as_str()).collect();
    let schema_names: BTreeSet<&str> = schema.iter().map(|(k, ..)| k.as_str()).collect();
    assert_eq!(
        doc_names, schema_names,
        "configs/default.toml must document every key (optional ones commented out)"
    );
    for (key, env, optional) in &schema {
        let doc = documented
            .iter()
            .find(|(k, ..)| k == key)
            .expect("documented");
        assert_eq!(
            doc.2, *optional,
            "{key}: commented out in default.toml exactly when unset by default"
        );
        assert_eq!(*env, env_name(key));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut checked = 0;
    for (key, doc_value, _) in &documented {
        let value = changed(key, doc_value);
        assert!(!same(&value, doc_value), "{key}");
        let mut set = companions(&documented, key);
        set.push((key.clone(), value.clone()));
        for route in ROUTES {
            let cfg = load_via(route, dir.path(), &set)
                .unwrap_or_else(|e| panic!("{key} = {value} via {route}: {e}"));
            let printed: Table = toml::from_str(&to_toml(&cfg).expect("print")).expect("parse");
            let got = get(&printed, key);
            assert!(
                got.is_some_and(|g| same(g, &value)),
                "{key} = {value} via {route}: --print-config shows {got:?}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * schema.len());
}

#[test]
fn a_bad_value_or_unknown_key_fails_naming_it_by_every_route() {
    let documented = documented_keys();
    let dir = tempfile::tempdir().expect("tempdir");
    for (key, doc_value, _) in &documented {
        let mut set = companions(&documented, key);
        // A negative size or count (every integer key is unsigned), or a value of the wrong
        // type; a string key takes any text from env/--set, so only the file can mistype it.
        let (bad, routes): (Value, &[&str]) = match doc_value {
            Value::Integer(_) => (Value::Integer(-1), &ROUTES),
            Value::String(_) => (Value::Integer(5), &ROUTES[..1]),
            _ => (Value::String("x".into()), &ROUTES),
        };
        set.push((key.clone(), bad.clone()));
        for route in routes {
            let e = load_via(route, dir.path(), &set)
                .err()
                .unwrap_or_else(|| panic!("{key} = {bad} via {route} must fail"))
                .to_string();
            assert!(
                e.contains(&format!("`{key}`")),
                "{key} = {bad} via {route}: {e}"
            );
            if *route == "env" {
                assert!(e.contains(&env_name(key)), "{e}");
            }
        }
    }
    let unknown = "engine.store.disk.dri";
    for route in ROUTES {
        let e = load_via(
            route,
            dir.path(),
            &[(unknown.to_string(), Value::String("/x".into()))],
        )
        .expect_err("unknown key")
        .to_string();
        // Named as given, with the keys of its table.
        let (named, known) = if route == "env" {
            (env_name(unknown), env_name("engine.store.disk.dir"))
        } else {
            (unknown.to_string(), "engine.store.disk.dir".to_string())
        };
        assert!(e.contains(&named) && e.contains(&known), "{route}: {e}");
    }
}

#[tokio::test]
async fn a_disk_dir_that_cannot_be_created_fails_start_saying_why_once() {
    let Some(model) = crate::common::model_path() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").expect("write");
    let args = ServeArgs {
        model: Some(model.display().to_string()),
        listen: Some("127.0.0.1:0".into()),
        set: vec![
            format!("engine.store.disk.dir={}", file.join("chunks").display()),
            "engine.store.disk.budget_bytes=10000000".into(),
            "log.level=warn".into(),
        ],
        ..ServeArgs::default()
    };
    let err = a3kv_server::serve(args).await.expect_err("start must fail");
    // What `main` prints: the message, then the chain under "Caused by".
    let shown = format!("{err:?}");
    let detail = "a-file";
    assert!(shown.contains(detail), "{shown}");
    assert_eq!(
        shown.matches(detail).count(),
        1,
        "the cause is printed once: {shown}"
    );
}
