//! Configuration: the shipped files load (default.toml equals the built-in defaults),
//! precedence CLI > env > file, and a bad key fails start naming the key.

use std::path::PathBuf;

use a3kv_server::config::{load, to_toml};
use a3kv_server::{ServeArgs, ServerConfig};

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
