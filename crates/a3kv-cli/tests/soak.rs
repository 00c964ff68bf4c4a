//! The CI-length soak: `scripts/soak.sh` with `SOAK_SECS=60` against this build's `a3kv`
//! binary and the real default model (mixed methods, cancellations, a disk tier), which must
//! pass every check (RSS and fd growth, no failed request, counters agree) and write its
//! summary.

mod common;

use common::model_present;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound on the whole script: 60 s of load plus start-up, priming and drain.
const LIMIT: Duration = Duration::from_secs(900);

#[test]
fn soak_script_passes_for_60_seconds() {
    if !model_present() {
        return;
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = tempfile::tempdir().unwrap();
    let mut child = Command::new("bash")
        .arg("scripts/soak.sh")
        .current_dir(root)
        .env("SOAK_SECS", "60")
        .env("SOAK_OUT", out.path())
        .env("A3KV", env!("CARGO_BIN_EXE_a3kv"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("soak.sh ran past {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    let summary = std::fs::read_to_string(out.path().join("summary.json")).unwrap_or_default();
    println!("{summary}");
    assert!(status.success(), "soak.sh failed: {stdout}\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(&summary).expect("summary.json");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["requests"]["failed"], 0, "{v}");
    assert!(v["requests"]["succeeded"].as_u64() > Some(0), "{v}");
    assert!(
        v["samples"].as_u64() >= Some(10),
        "RSS sampled all along: {v}"
    );
}
