//! Damaged chunk files through the public store API: a chunk of random small shape and random
//! bits is stored on disk by one [`ChunkStore`], its file is damaged (random bytes, flips,
//! truncation, appended junk, overwritten stretches), and fresh stores read it with `get`
//! and `stream_layers`.
//!
//! Oracle from the documented layout (`format.rs`: header through its checksum, zero padding
//! to 4096, then the layers): a length or header change is a miss (the file is removed at
//! recovery and counted); a change only in the padding reads back the exact data; a change in
//! layer `l` makes `get` a miss and the stream yield layers `0..l` exactly, then one
//! `StoreError::Corrupt`, then end. Never a panic, never data that differs from what was put.
//!
//! `PROPTEST_CASES=N` overrides the case count, `PROPTEST_RNG_SEED=N` fixes the seed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use a3kv_store::{
    ChunkId, ChunkKvData, ChunkStore, DiskConfig, KvDtype, KvMeta, KvVec, LayerKv, StoreConfig,
    StoreError, Tier,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

const FP: [u8; 32] = [0x77; 32];

fn fail(e: impl std::fmt::Debug) -> TestCaseError {
    TestCaseError::fail(format!("{e:?}"))
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(400);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn store_config(dir: &Path) -> StoreConfig {
    StoreConfig {
        remote: None,
        memory_budget_bytes: 1 << 30,
        disk: Some(DiskConfig {
            dir: dir.to_path_buf(),
            budget_bytes: 1 << 30,
        }),
    }
}

fn chunk() -> impl Strategy<Value = ChunkKvData> {
    (0u32..5, 1u32..4, 1u32..9, 0u32..13, 0u32..3).prop_flat_map(
        |(layers, heads, dim, tokens, code)| {
            let elems = (heads * dim * tokens) as usize;
            // Every element type, random bit patterns of each.
            let dtype = [KvDtype::F32, KvDtype::F16, KvDtype::BF16][code as usize];
            let tensor =
                prop::collection::vec(any::<u32>(), elems).prop_map(move |bits| match dtype {
                    KvDtype::F16 => KvVec::F16(
                        bits.iter()
                            .map(|&b| half::f16::from_bits(b as u16))
                            .collect(),
                    ),
                    KvDtype::BF16 => KvVec::BF16(
                        bits.iter()
                            .map(|&b| half::bf16::from_bits(b as u16))
                            .collect(),
                    ),
                    _ => KvVec::F32(bits.iter().map(|&b| f32::from_bits(b)).collect()),
                });
            let layer = (tensor.clone(), tensor).prop_map(|(k, v)| Arc::new(LayerKv { k, v }));
            (
                prop::collection::vec(layer, layers as usize),
                prop::collection::vec(any::<u32>(), tokens as usize),
            )
                .prop_map(move |(layers_kv, token_ids)| ChunkKvData {
                    meta: KvMeta {
                        fingerprint: FP,
                        dtype,
                        n_layers: layers,
                        n_kv_heads: heads,
                        head_dim: dim,
                        n_tokens: tokens,
                        token_ids,
                    },
                    layers: layers_kv,
                })
        },
    )
}

#[derive(Debug, Clone)]
enum Damage {
    Random(Vec<u8>),
    Flip(Vec<(Index, u8)>),
    Truncate(Index),
    Append(Vec<u8>),
    Overwrite(Index, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..5000).prop_map(Damage::Random),
        4 => prop::collection::vec((any::<Index>(), 1u8..=255), 1..6).prop_map(Damage::Flip),
        2 => any::<Index>().prop_map(Damage::Truncate),
        1 => prop::collection::vec(any::<u8>(), 1..64).prop_map(Damage::Append),
        2 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(i, b)| Damage::Overwrite(i, b)),
    ]
}

fn apply(good: &[u8], d: &Damage) -> Vec<u8> {
    let mut b = good.to_vec();
    match d {
        Damage::Random(r) => return r.clone(),
        Damage::Flip(flips) => {
            for (at, mask) in flips {
                let i = at.index(b.len());
                b[i] ^= mask;
            }
        }
        Damage::Truncate(at) => b.truncate(at.index(b.len())),
        Damage::Append(junk) => b.extend_from_slice(junk),
        Damage::Overwrite(at, bytes) => {
            let start = at.index(b.len());
            for (i, x) in bytes.iter().enumerate() {
                if let Some(slot) = b.get_mut(start + i) {
                    *slot = *x;
                }
            }
        }
    }
    b
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

/// What the damage touched, from the documented layout of the good file.
#[derive(Debug, PartialEq)]
enum Touched {
    /// Nothing, or only the zero padding after the header.
    Nothing,
    /// The length or a header byte.
    Header,
    /// The lowest damaged layer.
    Layer(usize),
}

fn touched(good: &[u8], bad: &[u8], layer_bytes: usize) -> Touched {
    if good.len() != bad.len() {
        return Touched::Header;
    }
    let hlen = u32_at(good, 12);
    let data_offset = u64::from_le_bytes(good[104..112].try_into().unwrap_or([0; 8])) as usize;
    let first = (0..good.len()).find(|&i| good[i] != bad[i] && !(hlen..data_offset).contains(&i));
    match first {
        None => Touched::Nothing,
        Some(i) if i < hlen => Touched::Header,
        Some(i) => Touched::Layer((i - data_offset) / layer_bytes.max(1)),
    }
}

fn bits(l: &LayerKv) -> (Vec<u8>, Vec<u8>) {
    (l.k.as_bytes().to_vec(), l.v.as_bytes().to_vec())
}

fn same(a: &ChunkKvData, b: &ChunkKvData) -> bool {
    a.meta == b.meta
        && a.layers.len() == b.layers.len()
        && a.layers
            .iter()
            .zip(&b.layers)
            .all(|(x, y)| bits(x) == bits(y))
}

/// The one chunk file under `dir`.
fn chunk_file(dir: &Path) -> Result<PathBuf, TestCaseError> {
    for sub in std::fs::read_dir(dir).map_err(fail)? {
        let sub = sub.map_err(fail)?.path();
        if !sub.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&sub).map_err(fail)? {
            let p = f.map_err(fail)?.path();
            if p.extension().is_some_and(|x| x == "a3kv") {
                return Ok(p);
            }
        }
    }
    Err(TestCaseError::fail("no chunk file written"))
}

/// Puts `data` into a store on `dir` (disk tier) and returns its file.
async fn store_file(dir: &Path, id: ChunkId, data: &ChunkKvData) -> Result<PathBuf, TestCaseError> {
    let store = ChunkStore::open(&store_config(dir), FP)
        .await
        .map_err(fail)?;
    let outcome = store.put(id, data.clone(), false).await.map_err(fail)?;
    prop_assert!(outcome.disk, "written to disk");
    chunk_file(dir)
}

/// A store on `dir` after its file was replaced by `bad`: `Ok(None)` and the file removed and
/// counted, or the exact data.
async fn check_get(
    dir: &Path,
    path: &Path,
    id: ChunkId,
    data: &ChunkKvData,
    bad: &[u8],
    t: &Touched,
) -> Result<(), TestCaseError> {
    std::fs::write(path, bad).map_err(fail)?;
    let store = ChunkStore::open(&store_config(dir), FP)
        .await
        .map_err(fail)?;
    let got = store.get(&id).await.map_err(fail)?;
    match (t, got) {
        (Touched::Nothing, Some((d, tier))) => {
            prop_assert_eq!(tier, Tier::Disk);
            prop_assert!(same(&d, data), "get returned different data");
        }
        (Touched::Header | Touched::Layer(_), None) => {
            let s = store.stats();
            prop_assert!(s.corrupt_files + s.fingerprint_mismatches >= 1, "{s:?}");
            prop_assert!(!path.exists(), "a bad file is removed");
        }
        (t, got) => {
            return Err(TestCaseError::fail(format!(
                "damage {t:?} but get returned {:?}",
                got.map(|g| g.1)
            )))
        }
    }
    Ok(())
}

/// A fresh store on `dir` streams the damaged file: exact layers up to the damage, then one
/// `Corrupt` error, then the end.
async fn check_stream(
    dir: &Path,
    path: &Path,
    id: ChunkId,
    data: &ChunkKvData,
    bad: &[u8],
    t: &Touched,
) -> Result<(), TestCaseError> {
    std::fs::write(path, bad).map_err(fail)?;
    let store = ChunkStore::open(&store_config(dir), FP)
        .await
        .map_err(fail)?;
    let stream = store.stream_layers(&id).await.map_err(fail)?;
    let Some(mut stream) = stream else {
        prop_assert_eq!(t, &Touched::Header, "stream missed an intact header");
        prop_assert!(!path.exists(), "a bad file is removed");
        return Ok(());
    };
    prop_assert_ne!(t, &Touched::Header, "stream opened a damaged header");
    prop_assert_eq!(&stream.meta, &data.meta);
    let stop = match t {
        Touched::Layer(l) => *l,
        _ => data.layers.len(),
    };
    for l in 0..stop {
        match stream.next().await {
            Some(Ok((i, layer))) => {
                prop_assert_eq!(i, l);
                prop_assert_eq!(bits(&layer), bits(&data.layers[l]), "layer {}", l);
            }
            other => return Err(TestCaseError::fail(format!("layer {l}: {other:?}"))),
        }
    }
    if stop < data.layers.len() {
        match stream.next().await {
            Some(Err(StoreError::Corrupt { .. })) => {}
            other => {
                return Err(TestCaseError::fail(format!(
                    "damaged layer {stop}: {other:?}"
                )))
            }
        }
    }
    prop_assert!(stream.next().await.is_none(), "the stream ends");
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn damaged_files_are_misses_or_the_exact_data(data in chunk(), d in damage(), id in any::<[u8; 32]>()) {
        let rt = tokio::runtime::Runtime::new().map_err(fail)?;
        rt.block_on(async {
            let id = ChunkId::new(id);
            let layer_bytes = data.meta.layer_bytes().unwrap_or(0) as usize;
            let (a, b) = (tempfile::tempdir().map_err(fail)?, tempfile::tempdir().map_err(fail)?);
            let path_a = store_file(a.path(), id, &data).await?;
            let path_b = store_file(b.path(), id, &data).await?;
            let good = std::fs::read(&path_a).map_err(fail)?;
            let bad = apply(&good, &d);
            let t = touched(&good, &bad, layer_bytes);
            check_stream(a.path(), &path_a, id, &data, &bad, &t).await?;
            check_get(b.path(), &path_b, id, &data, &bad, &t).await
        })?;
    }
}
