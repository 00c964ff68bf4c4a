//! The real `a3kv` binary on the real default model.

mod common;

use common::{a3kv, http, metric, model_present};
use std::process::Command;

/// Runs `cmd` and fails the test with its stderr unless it succeeds.
fn succeed(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
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
    // No --method: the engine's default fusion, the one the server applies (the hybrid).
    let default = a3kv_sched::EngineConfig::default().default_fusion;
    let w = default
        .hybrid_weight
        .expect("the engine default is the A^3 hybrid");
    assert!(
        stderr.contains(&format!("method {}:", default.method.as_str()))
            && stderr.contains(&format!("hybrid={w}")),
        "{stderr}"
    );
    assert!(stderr.contains("time to first token"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
    // A named method starts from its own defaults: `a3` is the paper's plain A^3.
    let out = a3kv()
        .args(["generate", "--method", "a3", "--documents"])
        .arg(&doc)
        .args(["--question", "Where is it held?", "--max-tokens", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("method a3:r=0.15,") && !stderr.contains("hybrid"),
        "{stderr}"
    );
}

#[test]
fn generate_runs_the_engine_and_reuses_chunks_stored_by_an_earlier_run() {
    if !model_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("doc.txt");
    std::fs::write(
        &doc,
        "The Zorblat festival is held every spring in the town of Quenby.",
    )
    .unwrap();
    let store = dir.path().join("chunks");
    let run = || {
        let out = a3kv()
            .args(["generate", "--documents"])
            .arg(&doc)
            .args(["--question", "Where is the Zorblat festival held?"])
            .args(["--max-tokens", "6", "--set"])
            .arg(format!("engine.store.disk.dir={}", store.display()))
            .args(["--set", "engine.store.disk.budget_bytes=1000000000"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stderr}");
        (String::from_utf8_lossy(&out.stdout).to_string(), stderr)
    };
    // The prompt's prefix and the document: computed by the first run, stored on disk ...
    let (first, stderr) = run();
    assert!(stderr.contains("[a3kv] chunks: 2 (computed 2)"), "{stderr}");
    // ... and read back by the second, with the same answer.
    let (second, stderr) = run();
    assert!(stderr.contains("[a3kv] chunks: 2 (disk 2)"), "{stderr}");
    assert_eq!(first, second);
}

/// The `a3kv` binary hard-linked (or copied) into a fresh directory outside the repository,
/// so neither the working directory nor the binary's location leads to the repo's `models/`.
/// Returns the directory (kept alive by the guard) and the binary's path in it.
fn binary_outside_the_repo() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap();
    assert!(
        !dir.path().starts_with(&repo),
        "the temp dir {} must lie outside the repository",
        dir.path().display()
    );
    let exe = dir.path().join("a3kv");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_a3kv"), &exe).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_a3kv"), &exe).unwrap();
    }
    (dir, exe)
}

/// `exe` run in `cwd` (also its `HOME`) with `XDG_DATA_HOME = xdg` and `A3KV_HOME` only if given.
fn outside(
    exe: &std::path::Path,
    cwd: &std::path::Path,
    a3kv_home: Option<&std::path::Path>,
    xdg: &std::path::Path,
) -> Command {
    let mut c = Command::new(exe);
    c.current_dir(cwd)
        .env_remove("A3KV_MODEL")
        .env_remove("A3KV_HOME")
        .env("HOME", cwd)
        .env("XDG_DATA_HOME", xdg);
    if let Some(h) = a3kv_home {
        c.env("A3KV_HOME", h);
    }
    c
}

#[test]
fn missing_default_model_names_every_place_searched() {
    let (dir, exe) = binary_outside_the_repo();
    let (home, xdg) = (dir.path().join("a3kv-home"), dir.path().join("xdg"));
    let out = outside(&exe, dir.path(), Some(&home), &xdg)
        .args(["generate", "hi"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // The process sees its directories with symlinks resolved.
    let real_dir = dir.path().canonicalize().unwrap();
    for want in [
        "default model SmolLM2-135M-Instruct.Q4_1.gguf not found".to_string(),
        format!("{} or a parent (working directory)", real_dir.display()),
        format!(
            "{} or a parent (the binary's directory)",
            real_dir.display()
        ),
        format!("{} ($A3KV_HOME/models)", home.join("models").display()),
        format!(
            "{} (user data directory)",
            xdg.join("a3kv/models").display()
        ),
        "scripts/fetch-model.sh --user".to_string(),
    ] {
        assert!(stderr.contains(&want), "{want:?} missing from: {stderr}");
    }
}

#[test]
fn default_model_is_found_from_a3kv_home_and_the_user_data_dir_outside_the_repo() {
    if !model_present() {
        return;
    }
    let real = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf")
        .canonicalize()
        .unwrap();
    let (dir, exe) = binary_outside_the_repo();
    let link = |models: &std::path::Path| {
        std::fs::create_dir_all(models).unwrap();
        let p = models.join("SmolLM2-135M-Instruct.Q4_1.gguf");
        std::os::unix::fs::symlink(&real, &p).unwrap();
        p
    };
    let run = |home: Option<&std::path::Path>, xdg: &std::path::Path| {
        let out = outside(&exe, dir.path(), home, xdg)
            .args([
                "generate",
                "What is the capital of France?",
                "--max-tokens",
                "1",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stderr}");
        stderr
    };
    // The user data directory alone.
    let xdg = dir.path().join("xdg");
    let in_user_dir = link(&xdg.join("a3kv/models"));
    let stderr = run(None, &xdg);
    assert!(
        stderr.contains(&format!("[a3kv] model {}", in_user_dir.display())),
        "{stderr}"
    );
    // $A3KV_HOME/models comes before the user data directory.
    let home = dir.path().join("a3kv-home");
    let in_home = link(&home.join("models"));
    let stderr = run(Some(&home), &xdg);
    assert!(
        stderr.contains(&format!("[a3kv] model {}", in_home.display())),
        "{stderr}"
    );
    assert!(stderr.contains("time to first token"), "{stderr}");
}

#[test]
fn server_text_logs_written_to_a_file_carry_no_colour_codes() {
    if !model_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let child = a3kv()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "text",
            "--log-level",
            "info",
        ])
        .stdout(std::fs::File::create(dir.path().join("serve.out")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let server = Server(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("listening") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `listening` line within 60 s: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    drop(server);
    assert!(text.contains("model loaded"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escape in a log file: {text:?}"
    );
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
fn serve_print_config_takes_every_key_from_env_and_set_and_rejects_bad_ones() {
    // Printing the configuration loads no model.
    let out = succeed(
        a3kv()
            .args(["serve", "--print-config"])
            .args(["--set", "engine.default_fusion.check_layer=2"])
            .env("A3KV_ENGINE_STORE_DISK_DIR", "/tmp/a3kv-print-config")
            .env("A3KV_ENGINE_STORE_DISK_BUDGET_BYTES", "10000000"),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "[engine.store.disk]",
        "dir = \"/tmp/a3kv-print-config\"",
        "budget_bytes = 10000000",
        "check_layer = 2",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }
    for (var, value, named) in [
        (
            "A3KV_ENGINE_STORE_DISK_BUDGET_BYTES",
            "-1",
            "engine.store.disk.budget_bytes",
        ),
        (
            "A3KV_ENGINE_STORE_DISK_DRI",
            "/tmp/x",
            "A3KV_ENGINE_STORE_DISK_DIR",
        ),
    ] {
        let out = a3kv()
            .args(["serve", "--print-config"])
            .env(var, value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{var}={value} must fail");
        assert!(
            err.contains(var) && err.contains(named),
            "{var}={value}: {err}"
        );
    }
}

#[test]
fn eval_shards_of_five_hotpotqa_items_run_every_method_and_merge_into_one_json() {
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
    // Two shards (items 0..3 and 3..5) joined with --merge: the same as one run of 5 items.
    let dir = tempfile::tempdir().unwrap();
    let shard = |skip: &str, limit: &str| {
        let path = dir.path().join(format!("shard{skip}.json"));
        succeed(
            a3kv()
                .args([
                    "eval",
                    "--dataset",
                    "hotpotqa",
                    "--skip",
                    skip,
                    "--limit",
                    limit,
                    "--max-tokens",
                    "4",
                    "--no-progress",
                    "--out",
                ])
                .arg(&path),
        );
        path
    };
    let (first, second) = (shard("0", "3"), shard("3", "2"));
    let out_path = dir.path().join("results.json");
    let out = succeed(
        a3kv()
            .arg("eval")
            .arg("--merge")
            .arg(format!("{},{}", first.display(), second.display()))
            .arg("--out")
            .arg(&out_path),
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 25, "5 items x 5 methods");
    assert_eq!(v["num_items"], 5);
    let data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&data).unwrap()).unwrap();
    let ids: Vec<&str> = runs
        .iter()
        .step_by(5)
        .map(|r| r["item_id"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = (0..5).map(|i| data[i]["_id"].as_str().unwrap()).collect();
    assert_eq!(ids, want, "shards cover items 0..5 in order");
    assert!(runs.iter().all(|r| r["error"].is_null()), "{runs:?}");
    // Fidelity against full is recorded for every other method.
    assert!(runs
        .iter()
        .filter(|r| r["method_name"] != "full")
        .all(|r| r["kl_vs_full"].as_f64().is_some()));
    assert!(String::from_utf8_lossy(&out.stdout).contains("a3"));
    // A shard merged with itself is refused.
    let out = a3kv()
        .arg("eval")
        .arg("--merge")
        .arg(format!("{},{}", first.display(), first.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("appears twice"));
}

/// Kills the server when the test ends, however it ends.
struct Server(std::process::Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `a3kv serve -c cfg` (which must listen on 127.0.0.1:0) and returns it with the
/// address it logged.
fn serve(cfg: &std::path::Path) -> (Server, String) {
    let mut child = a3kv()
        .args(["serve", "--log-format", "json", "--log-level", "info", "-c"])
        .arg(cfg)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let server = Server(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["fields"]["message"] == "listening" {
                    let _ = tx.send(v["fields"]["addr"].as_str().unwrap_or("").to_string());
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("server logs its address");
    (server, addr)
}

#[test]
fn precompute_fills_the_disk_tier_that_the_server_then_hits() {
    if !model_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let docs = dir.path().join("docs.jsonl");
    let long = "Quenby is a market town on the river Wend. ".repeat(12);
    let texts = [
        "The Zorblat festival is held every spring in the town of Quenby.".to_string(),
        long,
    ];
    let lines: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| serde_json::json!({"id": format!("d{i}"), "text": t}).to_string())
        .collect();
    std::fs::write(&docs, lines.join("\n") + "\n").unwrap();
    let precompute = || {
        a3kv()
            .args(["precompute", "--no-progress", "--chunk-tokens", "64"])
            .arg("--docs")
            .arg(&docs)
            .arg("--store-dir")
            .arg(&store)
            .output()
            .unwrap()
    };
    let out = precompute();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The long document spans several 64-token chunks.
    let n_chunks: usize = stdout
        .split("documents, ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("summary: {stdout}"));
    assert!(n_chunks >= 3, "{stdout}");
    assert!(stdout.contains(&format!("{n_chunks} computed")), "{stdout}");
    let files: usize = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|d| {
            std::fs::read_dir(d.path())
                .unwrap()
                .flatten()
                .filter(|f| f.path().extension().is_some_and(|x| x == "a3kv"))
                .count()
        })
        .sum();
    assert_eq!(files, n_chunks, "one file per chunk");

    // Resumable: a second run computes nothing.
    let again = precompute();
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success());
    assert!(
        stdout.contains(&format!(
            "0 computed (0 tokens, 0.0 MB), {n_chunks} already stored"
        )),
        "{stdout}"
    );

    // A stored file with a flipped byte is found, recomputed and replaced.
    let victim = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .map(|f| f.path())
        .find(|p| p.extension().is_some_and(|x| x == "a3kv"))
        .expect("a chunk file");
    let mut bytes = std::fs::read(&victim).unwrap();
    let original = bytes.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();
    let repaired = precompute();
    let stdout = String::from_utf8_lossy(&repaired.stdout);
    assert!(repaired.status.success());
    assert!(
        stdout.contains("1 computed")
            && stdout.contains(&format!("{} already stored", n_chunks - 1))
            && stdout.contains("1 stored chunk(s) failed verification"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(&victim).unwrap().len(),
        original.len(),
        "the bad file is replaced"
    );
    // --no-verify trusts the index (and finds nothing to do now).
    let trusted = a3kv()
        .args([
            "precompute",
            "--no-progress",
            "--no-verify",
            "--chunk-tokens",
            "64",
        ])
        .arg("--docs")
        .arg(&docs)
        .arg("--store-dir")
        .arg(&store)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&trusted.stdout).contains(&format!("{n_chunks} already stored"))
    );

    // A bad line is named.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"ok\"}\n{\"id\": \"x\"}\n").unwrap();
    let out = a3kv()
        .args(["precompute", "--no-progress", "--docs"])
        .arg(&bad)
        .arg("--store-dir")
        .arg(&store)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("bad.jsonl:2") && stderr.contains("text"),
        "{stderr}"
    );

    // The server, on the same store, serves both documents from disk: no chunk computed.
    let cfg = dir.path().join("serve.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\n[engine]\nchunk_tokens = 64\n\
             [engine.store.disk]\ndir = {:?}\nbudget_bytes = 1073741824\n",
            store.display().to_string()
        ),
    )
    .unwrap();
    let (server, addr) = serve(&cfg);
    let body = serde_json::json!({
        "messages": [{"role": "user", "content": "Where is the Zorblat festival held?"}],
        "documents": texts.iter().map(|t| serde_json::json!({"text": t})).collect::<Vec<_>>(),
        "max_tokens": 4,
        "temperature": 0
    })
    .to_string();
    let (status, reply) = http(&addr, "POST", "/v1/chat/completions", Some(&body));
    assert_eq!(status, 200, "{reply}");
    let (_, metrics) = http(&addr, "GET", "/metrics", None);
    // One lookup per tier consulted: every part misses memory (a fresh server), then the
    // documents' chunks hit the disk tier.
    let lookups = |label: &str| metric(&metrics, "a3kv:chunk_lookups_total", label);
    assert_eq!(
        lookups("tier=\"disk\",result=\"hit\"") as usize,
        n_chunks,
        "{metrics}"
    );
    // The one disk miss is the prompt prefix (system prompt + instruction), computed once.
    assert_eq!(lookups("tier=\"disk\",result=\"miss\""), 1.0, "{metrics}");
    assert_eq!(
        lookups("tier=\"memory\",result=\"miss\"") as usize,
        n_chunks + 1,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "a3kv:chunk_load_seconds_count", "tier=\"disk\"") as usize,
        n_chunks,
        "{metrics}"
    );
    drop(server);
}

#[test]
fn loadgen_against_a_real_server_for_20_seconds_counts_what_the_server_counts() {
    if !model_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("serve.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\n").unwrap();
    let (server, addr) = serve(&cfg);
    let success = |m: &str| metric(m, "a3kv:request_success_total", "");
    let (_, before) = http(&addr, "GET", "/metrics", None);
    let out_path = dir.path().join("load.json");
    let t0 = std::time::Instant::now();
    let out = a3kv()
        .args([
            "loadgen",
            "--target",
            &format!("http://{addr}"),
            "--arrival",
            "closed",
            "--concurrency",
            "2",
            "--duration-secs",
            "20",
            "--drain-secs",
            "30",
            "--num-docs",
            "8",
            "--doc-words",
            "60-120",
            "--docs-per-request",
            "2",
            "--output-tokens",
            "4",
            "--fusion-method",
            "a3",
            "--precompute",
            "--no-progress",
            "--out",
        ])
        .arg(&out_path)
        .output()
        .unwrap();
    let elapsed = t0.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, after) = http(&addr, "GET", "/metrics", None);
    drop(server);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    assert_eq!(v["precompute"]["documents"], 8, "{v}");
    let s = &v["runs"][0]["summary"];
    let sent = s["sent"].as_u64().unwrap();
    assert!(
        sent >= 4,
        "a 20 s closed loop sends more than a few requests: {s}"
    );
    assert_eq!(s["failed"], 0, "{s}");
    assert_eq!(s["succeeded"].as_u64(), Some(sent), "{s}");
    assert_eq!(
        (success(&after) - success(&before)) as u64,
        sent,
        "server's a3kv:request_success_total delta vs loadgen's count"
    );
    // Bounded: 20 s of sending plus at most the drain.
    assert!(elapsed < 20.0 + 30.0 + 15.0, "took {elapsed:.1} s");
}

#[test]
fn bench_decode_measures_both_weight_sets_and_compares_with_llama_cpp() {
    if !model_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("llama-bench.jsonl");
    std::fs::write(
        &jsonl,
        concat!(
            r#"{"model_type": "llama ?B Q4_1", "n_prompt": 0, "n_gen": 128, "avg_ts": 5.0, "stddev_ts": 0.1}"#,
            "\n",
            r#"{"model_type": "llama ?B F16", "n_prompt": 0, "n_gen": 128, "avg_ts": 2.5, "stddev_ts": 0.1}"#,
            "\n"
        ),
    )
    .unwrap();
    let json = dir.path().join("decode.json");
    let out = succeed(a3kv().args([
        "bench",
        "decode",
        "--tokens",
        "4",
        "--prompt-tokens",
        "8",
        "--sequences",
        "1,3",
        "--runs",
        "1",
        "--kv-dtype",
        "f16",
        "--llamacpp",
        jsonl.to_str().unwrap(),
        "--out",
        json.to_str().unwrap(),
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("CPU flags:"), "{stdout}");
    assert!(stdout.contains("KV cache: f16"), "{stdout}");
    assert!(
        stdout.contains("one sequence: quantized / f32 ="),
        "{stdout}"
    );
    assert!(
        stdout.contains("llama.cpp tg128 tok/s: Q4_1 5.0, F16 2.5;"),
        "{stdout}"
    );
    assert!(stdout.contains("llama.cpp's best (Q4_1)"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["kv_dtype"], "f16");
    let rows = v["decode"].as_array().unwrap();
    // Per weight set: decode_step, then decode_batch at 1 and 3 sequences.
    assert_eq!(rows.len(), 6);
    for r in rows {
        let rate = r["tok_s"]
            .as_f64()
            .or(r["aggregate_tok_s"].as_f64())
            .unwrap();
        assert!(rate > 0.0, "{r}");
    }
    assert!(rows
        .iter()
        .any(|r| r["weights"] == "f32" && r["sequences"] == 3));
}
