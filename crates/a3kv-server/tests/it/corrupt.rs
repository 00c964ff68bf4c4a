//! Damaged chunk files never fail a request: after bytes are flipped in the header, in layer 0,
//! in a middle layer or at the last byte, or the file is truncated, a restarted server answers
//! the same request with 200 and the same text, recomputes the chunks, writes them back and
//! counts each bad file in `a3kv:chunk_corrupt_total{tier="disk"}`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use a3kv_store::DiskConfig;

use crate::common::{ask_eiffel, lock, metric_sum, model_path, scrape, test_config};

/// How a stored file is damaged.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// 64 bytes flipped inside the fixed header (fingerprint and chunk id).
    Header,
    /// 64 bytes flipped at the start of layer 0's data.
    Layer0,
    /// 64 bytes flipped in the middle layer's data.
    MiddleLayer,
    /// The file's last byte flipped (the last layer's V).
    LastByte,
    /// The file cut to half its length.
    Truncated,
}

fn damage(bytes: &[u8], how: Damage) -> Vec<u8> {
    let mut b = bytes.to_vec();
    // Layout (crates/a3kv-store/src/format.rs): data_offset u64 at byte 104, L u32 at 84.
    let data_offset = u64::from_le_bytes(b[104..112].try_into().expect("8 bytes")) as usize;
    let n_layers = u32::from_le_bytes(b[84..88].try_into().expect("4 bytes")) as usize;
    let layer_len = (b.len() - data_offset) / n_layers;
    let flip = |b: &mut Vec<u8>, at: usize| {
        for x in &mut b[at..at + 64] {
            *x ^= 0x5a;
        }
    };
    match how {
        Damage::Header => flip(&mut b, 20),
        Damage::Layer0 => flip(&mut b, data_offset + 8),
        Damage::MiddleLayer => flip(&mut b, data_offset + (n_layers / 2) * layer_len + 8),
        Damage::LastByte => {
            let last = b.len() - 1;
            b[last] ^= 0xff;
        }
        Damage::Truncated => b.truncate(b.len() / 2),
    }
    b
}

/// Every chunk file under the store directory.
fn chunk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.metadata().map(|m| m.len() > 4096).unwrap_or(false) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_chunk_files_are_recomputed_and_every_request_succeeds() {
    let Some(model) = model_path() else { return };
    let _g = lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = test_config(&model);
    cfg.engine.store.disk = Some(DiskConfig {
        dir: dir.path().to_path_buf(),
        budget_bytes: 1 << 30,
    });

    let h = a3kv_server::start(cfg.clone(), false)
        .await
        .expect("server starts");
    let expected = ask_eiffel(h.addr).await;
    h.shutdown();
    h.wait().await.expect("clean exit");
    let originals: Vec<(PathBuf, Vec<u8>)> = chunk_files(dir.path())
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).expect("read chunk file");
            (p, b)
        })
        .collect();
    assert!(
        originals.len() >= 3,
        "prefix and two documents stored: {originals:?}"
    );

    for how in [
        Damage::Header,
        Damage::Layer0,
        Damage::MiddleLayer,
        Damage::LastByte,
        Damage::Truncated,
    ] {
        for (p, b) in &originals {
            std::fs::write(p, damage(b, how)).expect("write damaged file");
        }
        let h = a3kv_server::start(cfg.clone(), false)
            .await
            .expect("server starts over damaged files");
        let before = metric_sum(
            &scrape(h.addr).await,
            "a3kv:chunk_corrupt_total",
            "tier=\"disk\"",
        );
        assert_eq!(ask_eiffel(h.addr).await, expected, "{how:?}: same answer");
        let after = metric_sum(
            &scrape(h.addr).await,
            "a3kv:chunk_corrupt_total",
            "tier=\"disk\"",
        );
        assert!(
            after - before >= originals.len() as f64,
            "{how:?}: each bad file counted ({before} -> {after})"
        );
        // The recomputed chunks replace the bad files (written behind the request).
        let t0 = Instant::now();
        loop {
            let intact = originals
                .iter()
                .all(|(p, b)| std::fs::metadata(p).map(|m| m.len()).ok() == Some(b.len() as u64));
            if intact {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{how:?}: the bad files were not rewritten"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        h.shutdown();
        h.wait().await.expect("clean exit");
    }

    // Intact again: a restarted server reads every chunk from disk, with no corruption.
    let h = a3kv_server::start(cfg, false).await.expect("server starts");
    let before = metric_sum(
        &scrape(h.addr).await,
        "a3kv:chunk_corrupt_total",
        "tier=\"disk\"",
    );
    assert_eq!(ask_eiffel(h.addr).await, expected);
    let m = scrape(h.addr).await;
    assert_eq!(
        metric_sum(&m, "a3kv:chunk_corrupt_total", "tier=\"disk\""),
        before
    );
    h.shutdown();
    h.wait().await.expect("clean exit");
}
