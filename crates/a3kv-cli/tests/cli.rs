//! The real `a3kv` binary on the real default model.

use std::process::Command;

fn model_present() -> bool {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must fetch the model (scripts/fetch-model.sh)"
    );
    eprintln!("SKIP: model absent; run scripts/fetch-model.sh");
    false
}

fn a3kv() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_a3kv"));
    c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    c
}

#[test]
fn generate_answers_the_capital_of_france() {
    if !model_present() {
        return;
    }
    let out = a3kv()
        .args([
            "generate",
            "What is the capital of France?",
            "--max-tokens",
            "16",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("Paris"), "stdout: {stdout}");
    assert!(stderr.contains("time to first token"), "{stderr}");
}

#[test]
fn generate_with_documents_fuses_them() {
    if !model_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("doc.txt");
    std::fs::write(&doc, "The Zorblat festival is held every spring in the town of Quenby. It celebrates the town's founding.").unwrap();
    let out = a3kv()
        .args(["generate", "--documents"])
        .arg(&doc)
        .args([
            "--question",
            "Where is the Zorblat festival held?",
            "--max-tokens",
            "12",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("method a3"), "{stderr}");
    assert!(stderr.contains("time to first token"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
}

#[test]
fn bad_input_fails_with_a_clear_message() {
    let out = a3kv()
        .args(["generate", "hi", "--model", "/nonexistent.gguf"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.gguf"));
    if !model_present() {
        return;
    }
    let out = a3kv().args(["generate", "  "]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
    let out = a3kv()
        .args(["generate", "--question", "q", "--method", "bogus"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown fusion method"));
}

#[test]
fn eval_runs_every_method_on_five_hotpotqa_items_and_writes_json() {
    if !model_present() {
        return;
    }
    let data =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/hotpotqa.json");
    if !data.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must fetch the data (scripts/fetch-data.sh)"
        );
        eprintln!("SKIP: data absent; run scripts/fetch-data.sh");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("results.json");
    let out = a3kv()
        .args([
            "eval",
            "--dataset",
            "hotpotqa",
            "--limit",
            "5",
            "--max-tokens",
            "4",
            "--no-progress",
            "--out",
        ])
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 25, "5 items x 5 methods");
    assert!(runs.iter().all(|r| r["error"].is_null()), "{runs:?}");
    // Fidelity against full is recorded for every other method.
    assert!(runs
        .iter()
        .filter(|r| r["method_name"] != "full")
        .all(|r| r["kl_vs_full"].as_f64().is_some()));
    assert!(String::from_utf8_lossy(&out.stdout).contains("a3"));
}
