//! Tests of `ChunkStore`: bit-exact round trips through each tier, layer-wise streaming,
//! corruption (read time and recovery), crash safety, budgets, pins and single-flight.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};

use super::*;
use crate::config::DiskConfig;
use crate::data::tests::{bit_equal, sample_chunk};
use crate::data::LayerKv;
use crate::error::CorruptReason;
use crate::format::{self, ChunkReader};
use a3kv_fusion::chunk_id::to_hex;

const FP: [u8; 32] = [0x11; 32];

fn cid(i: u8) -> ChunkId {
    ChunkId([i; 32])
}

async fn open(dir: &Path, memory_budget_bytes: u64, disk_budget: Option<u64>) -> ChunkStore {
    let cfg = StoreConfig {
        remote: None,
        memory_budget_bytes,
        disk: disk_budget.map(|budget_bytes| DiskConfig {
            dir: dir.to_path_buf(),
            budget_bytes,
        }),
    };
    ChunkStore::open(&cfg, FP).await.unwrap()
}

fn file_of(dir: &Path, id: &ChunkId) -> PathBuf {
    dir.join(to_hex(&FP)).join(format!("{id}.a3kv"))
}

#[derive(Debug, thiserror::Error)]
#[error("test compute failure")]
struct Boom;

fn computer(
    data: ChunkKvData,
    runs: &Arc<AtomicUsize>,
) -> impl FnOnce() -> Result<ChunkKvData, Boom> + Send + 'static {
    let runs = runs.clone();
    move || {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok(data)
    }
}

#[tokio::test]
async fn round_trip_memory_tier() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 1 << 20, None).await;
    let data = sample_chunk(FP, 1, 3, 6);
    let out = s.put(cid(1), data.clone(), false).await.unwrap();
    assert_eq!((out.memory, out.disk, out.pinned), (true, false, false));
    let (got, tier) = s.get(&cid(1)).await.unwrap().unwrap();
    assert_eq!(tier, Tier::Memory);
    assert!(bit_equal(&got, &data));
    assert!(s.get(&cid(2)).await.unwrap().is_none());
    let st = s.stats();
    assert_eq!((st.memory.hits, st.memory.misses, st.misses), (1, 1, 1));
    assert_eq!(st.memory.bytes, data.size_bytes());
    assert!(st.disk.is_none());
}

#[tokio::test]
async fn round_trip_disk_tier_and_promotion() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample_chunk(FP, 2, 4, 9);
    {
        // Memory budget 0: the chunk can only live on disk.
        let s = open(dir.path(), 0, Some(1 << 20)).await;
        let out = s.put(cid(1), data.clone(), false).await.unwrap();
        assert_eq!((out.memory, out.disk), (false, true));
        // The documented layout: `<disk dir>/<fingerprint hex>/<chunk id hex>.a3kv`.
        let file = s.disk_dir().unwrap().join(format!("{}.a3kv", cid(1)));
        assert_eq!(file, file_of(dir.path(), &cid(1)));
        assert!(file.is_file());
        let (got, tier) = s.get(&cid(1)).await.unwrap().unwrap();
        assert_eq!(tier, Tier::Disk);
        assert!(bit_equal(&got, &data));
    }
    // After a restart: served from disk, then promoted to memory.
    let s = open(dir.path(), 1 << 20, Some(1 << 20)).await;
    assert_eq!(s.recovery_report().unwrap().indexed, 1);
    assert_eq!(s.tier_of(&cid(1)), Some(Tier::Disk));
    let (got, tier) = s.get(&cid(1)).await.unwrap().unwrap();
    assert_eq!(tier, Tier::Disk);
    assert!(bit_equal(&got, &data));
    let (got, tier) = s.get(&cid(1)).await.unwrap().unwrap();
    assert_eq!(tier, Tier::Memory);
    assert!(bit_equal(&got, &data));
    // Removal drops both copies.
    assert!(s.remove(&cid(1)).await.unwrap());
    assert!(!file_of(dir.path(), &cid(1)).exists());
    assert!(s.get(&cid(1)).await.unwrap().is_none());
    assert!(!s.remove(&cid(1)).await.unwrap());
}

async fn collect(stream: &mut LayerStream) -> Vec<Result<(usize, Arc<LayerKv>), StoreError>> {
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        out.push(item);
    }
    out
}

#[tokio::test]
async fn stream_layers_in_order_from_each_tier() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample_chunk(FP, 3, 5, 7);
    let s = open(dir.path(), 0, Some(1 << 20)).await;
    s.put(cid(1), data.clone(), false).await.unwrap();
    for want_tier in [Tier::Disk, Tier::Memory] {
        let s = if want_tier == Tier::Memory {
            drop(s.clone());
            let m = open(dir.path().join("m").as_path(), 1 << 20, None).await;
            m.put(cid(1), data.clone(), false).await.unwrap();
            m
        } else {
            s.clone()
        };
        let mut st = s.stream_layers(&cid(1)).await.unwrap().unwrap();
        assert_eq!(st.tier, want_tier);
        assert_eq!(st.meta, data.meta);
        let items = collect(&mut st).await;
        assert_eq!(items.len(), 5);
        for (l, item) in items.into_iter().enumerate() {
            let (idx, layer) = item.unwrap();
            assert_eq!(idx, l);
            let one = |x: &LayerKv| (x.k.as_bytes().to_vec(), x.v.as_bytes().to_vec());
            assert_eq!(one(&layer), one(&data.layers[l]));
        }
    }
    assert!(s.stream_layers(&cid(9)).await.unwrap().is_none());
}

#[tokio::test]
async fn stream_from_disk_promotes_to_memory() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample_chunk(FP, 3, 3, 4);
    {
        let s = open(dir.path(), 0, Some(1 << 20)).await;
        s.put(cid(1), data.clone(), false).await.unwrap();
    }
    let s = open(dir.path(), 1 << 20, Some(1 << 20)).await;
    let mut st = s.stream_layers(&cid(1)).await.unwrap().unwrap();
    assert_eq!(st.tier, Tier::Disk);
    assert!(collect(&mut st).await.iter().all(|r| r.is_ok()));
    // The reading task promotes after its last send; give it a moment.
    for _ in 0..100 {
        if s.tier_of(&cid(1)) == Some(Tier::Memory) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(s.tier_of(&cid(1)), Some(Tier::Memory));
}

/// Ways to damage a stored file; each must be detected.
#[derive(Debug, Clone, Copy)]
enum Damage {
    FlipLayerByte(usize),
    Truncate,
    WrongMagic,
    WrongVersion,
    WrongFingerprint,
}

fn damage(path: &Path, id: &ChunkId, data: &ChunkKvData, how: Damage) {
    let mut bytes = std::fs::read(path).unwrap();
    match how {
        Damage::FlipLayerByte(l) => {
            let r = ChunkReader::open(path, id, &FP).unwrap();
            let e = r.header().layers[l];
            bytes[(e.offset + e.len / 2) as usize] ^= 0x01;
        }
        Damage::Truncate => bytes.truncate(bytes.len() - 100),
        Damage::WrongMagic => bytes[3] ^= 0xff,
        Damage::WrongVersion => bytes[8..12].copy_from_slice(&7u32.to_le_bytes()),
        Damage::WrongFingerprint => {
            let mut other = data.clone();
            other.meta.fingerprint = [0x22; 32];
            let tmp = path.with_extension("other");
            let f = std::fs::File::create(&tmp).unwrap();
            format::write_chunk(&f, id, &other).unwrap();
            bytes = std::fs::read(&tmp).unwrap();
            std::fs::remove_file(&tmp).unwrap();
        }
    }
    std::fs::write(path, &bytes).unwrap();
}

const ALL_DAMAGE: [Damage; 6] = [
    Damage::FlipLayerByte(0),
    Damage::FlipLayerByte(2),
    Damage::Truncate,
    Damage::WrongMagic,
    Damage::WrongVersion,
    Damage::WrongFingerprint,
];

#[tokio::test]
async fn corruption_at_read_time_is_a_counted_miss_then_recomputed() {
    for how in ALL_DAMAGE {
        let dir = tempfile::tempdir().unwrap();
        let data = sample_chunk(FP, 4, 4, 6);
        let s = open(dir.path(), 0, Some(1 << 20)).await;
        s.put(cid(1), data.clone(), false).await.unwrap();
        let path = file_of(dir.path(), &cid(1));
        damage(&path, &cid(1), &data, how);
        assert!(
            s.get(&cid(1)).await.unwrap().is_none(),
            "{how:?}: used a bad file"
        );
        let st = s.stats();
        let flagged = st.corrupt_files + st.fingerprint_mismatches;
        assert_eq!(flagged, 1, "{how:?}: not counted");
        if matches!(how, Damage::WrongFingerprint) {
            assert_eq!(st.fingerprint_mismatches, 1);
        }
        assert!(!path.exists(), "{how:?}: bad file not removed");
        assert!(!s.contains(&cid(1)));
        // Recompute gives the right data and rewrites a good file.
        let runs = Arc::new(AtomicUsize::new(0));
        let (got, src) = s
            .get_or_compute(cid(1), computer(data.clone(), &runs))
            .await
            .unwrap();
        assert_eq!(src, Source::Computed);
        assert!(bit_equal(&got, &data));
        s.flush().await;
        let (got, tier) = s.get(&cid(1)).await.unwrap().unwrap();
        assert_eq!(tier, Tier::Disk);
        assert!(bit_equal(&got, &data));
    }
}

#[tokio::test]
async fn corruption_found_at_recovery_is_reported_and_removed() {
    for how in ALL_DAMAGE {
        let dir = tempfile::tempdir().unwrap();
        let data = sample_chunk(FP, 5, 4, 6);
        {
            let s = open(dir.path(), 0, Some(1 << 20)).await;
            s.put(cid(1), data.clone(), false).await.unwrap();
            s.put(cid(2), data.clone(), false).await.unwrap();
        }
        let path = file_of(dir.path(), &cid(1));
        damage(&path, &cid(1), &data, how);
        let s = open(dir.path(), 1 << 20, Some(1 << 20)).await;
        let report = s.recovery_report().unwrap().clone();
        // Layer data is verified on read, headers and lengths at recovery.
        let header_level = !matches!(how, Damage::FlipLayerByte(_));
        assert_eq!(report.bad_files.len(), usize::from(header_level), "{how:?}");
        assert_eq!(report.indexed, 2 - u64::from(header_level));
        if matches!(how, Damage::WrongFingerprint) {
            assert_eq!(report.bad_files[0].1, CorruptReason::FingerprintMismatch);
        }
        assert!(s.get(&cid(1)).await.unwrap().is_none(), "{how:?}");
        assert!(!path.exists());
        let st = s.stats();
        assert_eq!(st.corrupt_files + st.fingerprint_mismatches, 1, "{how:?}");
        let (good, _) = s.get(&cid(2)).await.unwrap().unwrap();
        assert!(bit_equal(&good, &data));
    }
}

#[tokio::test]
async fn corrupt_layer_mid_stream_yields_prefix_then_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample_chunk(FP, 6, 5, 6);
    let s = open(dir.path(), 0, Some(1 << 20)).await;
    s.put(cid(1), data.clone(), false).await.unwrap();
    let path = file_of(dir.path(), &cid(1));
    damage(&path, &cid(1), &data, Damage::FlipLayerByte(3));
    let mut st = s.stream_layers(&cid(1)).await.unwrap().unwrap();
    let items = collect(&mut st).await;
    assert_eq!(items.len(), 4);
    for (l, item) in items[..3].iter().enumerate() {
        assert_eq!(item.as_ref().unwrap().0, l);
    }
    match &items[3] {
        Err(StoreError::Corrupt { reason, .. }) => {
            assert_eq!(reason, &CorruptReason::LayerChecksum { layer: 3 })
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert!(!path.exists());
    assert_eq!(s.stats().corrupt_files, 1);
    assert!(s.stream_layers(&cid(1)).await.unwrap().is_none());
}

#[tokio::test]
async fn killed_write_leaves_no_readable_corrupt_entry() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample_chunk(FP, 7, 4, 6);
    {
        let s = open(dir.path(), 0, Some(1 << 20)).await;
        s.put(cid(1), data.clone(), false).await.unwrap();
    }
    let good = std::fs::read(file_of(dir.path(), &cid(1))).unwrap();
    let root = dir.path().join(to_hex(&FP));
    // A writer killed before rename: temp files of any length, never read.
    let tmp = root.join(format!(".{}.999.0.tmp", cid(2)));
    std::fs::write(&tmp, &good[..good.len() / 2]).unwrap();
    // A non-atomic writer killed mid-way: partial final files at several cut points.
    let cuts = [0, 7, 119, 4096, 4097, good.len() / 2, good.len() - 1];
    for (i, cut) in cuts.iter().enumerate() {
        let id = cid(10 + i as u8);
        let mut bytes = good.clone();
        bytes[48..80].copy_from_slice(id.as_bytes()); // header names this id ...
        bytes.truncate(*cut); // ... but the file is torn
        std::fs::write(file_of(dir.path(), &id), &bytes).unwrap();
    }
    let s = open(dir.path(), 1 << 20, Some(1 << 20)).await;
    let report = s.recovery_report().unwrap();
    assert_eq!(report.temp_files_removed, 1);
    assert_eq!(report.bad_files.len(), cuts.len());
    assert_eq!(report.indexed, 1);
    assert!(!tmp.exists());
    for i in 0..cuts.len() {
        let id = cid(10 + i as u8);
        assert!(s.get(&id).await.unwrap().is_none());
        assert!(!file_of(dir.path(), &id).exists());
    }
    assert!(s.get(&cid(2)).await.unwrap().is_none());
    let (got, _) = s.get(&cid(1)).await.unwrap().unwrap();
    assert!(bit_equal(&got, &data));
}

fn dir_bytes(root: &Path) -> u64 {
    std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[tokio::test]
async fn budgets_hold_under_random_workload() {
    let dir = tempfile::tempdir().unwrap();
    let chunks: Vec<ChunkKvData> = (1..6).map(|t| sample_chunk(FP, t, 3, t * 4)).collect();
    let mem_budget = chunks[4].size_bytes() * 3;
    let disk_budget = format::file_len(&chunks[4].meta).unwrap() * 6;
    let s = open(dir.path(), mem_budget, Some(disk_budget)).await;
    let root = dir.path().join(to_hex(&FP));
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut guards = Vec::new();
    for step in 0..400 {
        let id = cid(rng.gen_range(0..16));
        match rng.gen_range(0..10) {
            0..=2 => {
                let c = chunks[rng.gen_range(0..chunks.len())].clone();
                s.put(id, c, rng.gen_bool(0.05)).await.unwrap();
            }
            3..=5 => {
                if let Some((got, _)) = s.get(&id).await.unwrap() {
                    assert!(chunks.iter().any(|c| bit_equal(c, &got)));
                }
            }
            6 => match s.pin(&id).await {
                Ok(Some(g)) => guards.push(g),
                Ok(None) => {}
                Err(e) => assert_eq!(e.kind(), "memory_full"),
            },
            7 if !guards.is_empty() => {
                guards.swap_remove(rng.gen_range(0..guards.len()));
            }
            8 => {
                s.unpin(&id);
            }
            _ => {
                s.remove(&id).await.unwrap();
            }
        }
        let st = s.stats();
        assert!(
            st.memory.bytes <= mem_budget,
            "step {step}: memory over budget"
        );
        let disk = st.disk.unwrap();
        assert!(
            disk.stats.bytes <= disk_budget,
            "step {step}: disk over budget"
        );
        assert!(
            dir_bytes(&root) <= disk_budget,
            "step {step}: files over budget"
        );
    }
    assert!(s.stats().memory.evictions > 0 && s.stats().disk.unwrap().stats.evictions > 0);
}

#[tokio::test]
async fn memory_lru_eviction_keeps_disk_copy() {
    let dir = tempfile::tempdir().unwrap();
    let c = sample_chunk(FP, 8, 2, 4);
    let s = open(dir.path(), c.size_bytes() * 3, Some(1 << 20)).await;
    for i in 0..3 {
        s.put(cid(i), c.clone(), false).await.unwrap();
    }
    s.get(&cid(0)).await.unwrap(); // 1 becomes least recently used
    s.put(cid(3), c.clone(), false).await.unwrap();
    assert_eq!(s.tier_of(&cid(1)), Some(Tier::Disk));
    for i in [0, 2, 3] {
        assert_eq!(s.tier_of(&cid(i)), Some(Tier::Memory));
    }
    assert_eq!(s.stats().memory.evictions, 1);
    let (got, tier) = s.get(&cid(1)).await.unwrap().unwrap();
    assert_eq!(tier, Tier::Disk);
    assert!(bit_equal(&got, &c));
}

#[tokio::test]
async fn pins_keep_chunks_resident() {
    let dir = tempfile::tempdir().unwrap();
    let c = sample_chunk(FP, 9, 2, 4);
    let s = open(dir.path(), c.size_bytes() * 2, Some(1 << 20)).await;
    s.put(cid(0), c.clone(), true).await.unwrap(); // sticky pin
    s.put(cid(1), c.clone(), false).await.unwrap();
    let guard = s.pin(&cid(1)).await.unwrap().unwrap();
    assert!(bit_equal(guard.data(), &c));
    let out = s.put(cid(2), c.clone(), false).await.unwrap();
    assert_eq!(
        (out.memory, out.disk),
        (false, true),
        "memory is all pinned"
    );
    // Pinning a disk-only chunk when memory is all pinned reports "full".
    assert_eq!(s.pin(&cid(2)).await.unwrap_err().kind(), "memory_full");
    assert_eq!(s.stats().memory_pinned_bytes, 2 * c.size_bytes());
    drop(guard);
    let g2 = s.pin(&cid(2)).await.unwrap().unwrap(); // evicts 1, the only unpinned one
    assert_eq!(s.tier_of(&cid(1)), Some(Tier::Disk));
    assert!(s.unpin(&cid(0)));
    drop(g2);
    assert_eq!(s.stats().memory_pinned_bytes, 0);
    assert!(s.pin(&cid(77)).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_flight_sixteen_gets_one_computation() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 1 << 20, Some(1 << 20)).await;
    let data = sample_chunk(FP, 10, 3, 8);
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Barrier::new(16));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (s, runs, gate, data) = (s.clone(), runs.clone(), gate.clone(), data.clone());
            tokio::spawn(async move {
                gate.wait().await;
                s.get_or_compute(cid(1), move || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(100));
                    Ok::<_, Boom>(data)
                })
                .await
            })
        })
        .collect();
    let mut sources = Vec::new();
    for t in tasks {
        let (got, src) = t.await.unwrap().unwrap();
        assert!(bit_equal(&got, &data));
        sources.push(src);
    }
    // The leader reports the computation; the 15 waiters got its chunk from memory.
    assert_eq!(
        sources.iter().filter(|s| **s == Source::Computed).count(),
        1,
        "{sources:?}"
    );
    assert!(sources
        .iter()
        .all(|s| matches!(s, Source::Computed | Source::Memory)));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(s.stats().computations, 1);
    s.flush().await;
    assert!(file_of(dir.path(), &cid(1)).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_flight_disk_load_reads_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample_chunk(FP, 11, 3, 8);
    {
        let s = open(dir.path(), 0, Some(1 << 20)).await;
        s.put(cid(1), data.clone(), false).await.unwrap();
    }
    let s = open(dir.path(), 1 << 20, Some(1 << 20)).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (s, f) = (s.clone(), computer(data.clone(), &runs));
            tokio::spawn(async move { s.get_or_compute(cid(1), f).await })
        })
        .collect();
    for t in tasks {
        let (got, src) = t.await.unwrap().unwrap();
        assert!(bit_equal(&got, &data));
        assert_ne!(src, Source::Computed);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert_eq!(s.stats().disk.unwrap().stats.hits, 1);
}

#[tokio::test]
async fn compute_errors_and_bad_results_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 1 << 20, None).await;
    let err = s
        .get_or_compute(cid(1), || Err::<ChunkKvData, _>(Boom))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "compute");
    let other_model = sample_chunk([0x99; 32], 1, 2, 3);
    let err = s
        .get_or_compute(cid(1), move || Ok::<_, Boom>(other_model))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "invalid_data");
    let err = s
        .put(cid(1), sample_chunk([0x99; 32], 1, 2, 3), false)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "invalid_data");
    assert!(!s.contains(&cid(1)));
    // A panicking computation fails its callers without poisoning the store.
    let err = s
        .get_or_compute(cid(2), || -> Result<ChunkKvData, Boom> {
            panic!("compute bug")
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "task");
    let data = sample_chunk(FP, 1, 2, 3);
    let runs = Arc::new(AtomicUsize::new(0));
    let (_, src) = s
        .get_or_compute(cid(2), computer(data, &runs))
        .await
        .unwrap();
    assert_eq!(src, Source::Computed);
}
