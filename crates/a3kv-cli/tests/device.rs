//! `engine.device` through the real `a3kv serve` binary on this machine: `cuda:0` without a
//! CUDA driver (or in a build without the `cuda` feature) fails at start with a message that
//! names the key and what is missing, exit status non-zero; `auto` falls back to the CPU and
//! logs why; a malformed value is rejected naming the key.

mod common;

use common::a3kv;

#[test]
fn cuda_device_without_a_driver_fails_at_start_naming_the_key() {
    let out = a3kv()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--set",
            "engine.device=cuda:0",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("engine.device = \"cuda:0\""), "{stderr}");
    if a3kv_cuda::device::driver_library_present() {
        // A driver, but this test's binary is built without the `cuda` feature.
        assert!(stderr.contains("`cuda` feature"), "{stderr}");
    } else {
        assert!(
            stderr.contains("no CUDA driver on this machine"),
            "{stderr}"
        );
        assert!(stderr.contains("libcuda.so.1"), "{stderr}");
    }
    // The same through the environment.
    let out = a3kv()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("A3KV_ENGINE_DEVICE", "cuda:1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("engine.device = \"cuda:1\""));
    let out = a3kv()
        .args(["serve", "--set", "engine.device=gpu"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("engine.device") && stderr.contains("cuda:N"),
        "{stderr}"
    );
}

#[test]
fn auto_device_falls_back_to_the_cpu_with_a_log_line() {
    if a3kv_cuda::device::driver_library_present() {
        eprintln!("SKIP: a CUDA driver is present; the fallback is not taken here");
        return;
    }
    let mut child = a3kv()
        .args(["serve", "--listen", "127.0.0.1:0", "--log-level", "info"])
        .args(["--set", "engine.device=auto"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = line.contains("engine.device = auto: running on the CPU")
                    && line.contains("no CUDA driver");
                seen.push(line);
                if hit {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "no fallback line in:\n{}", seen.join("\n"));
    assert!(
        !seen.iter().any(|l| l.contains("engine.device = \"auto\"")),
        "auto must not fail: {seen:?}"
    );
}
