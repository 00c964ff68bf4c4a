//! Property and exhaustive mutation tests of the chunk file reader: valid files of small
//! random shapes and random bits are damaged (random bytes, byte flips, truncations, appended
//! junk, header fields rewritten with a recomputed header checksum) and read back whole
//! ([`read_all`], one and two threads) and layer by layer (fast path and reference twin).
//!
//! Oracle, from where the damage lands: a changed length or header byte fails the open; a
//! change only in the header's zero padding is invisible (the exact original data is read);
//! a change in layer `l` fails exactly layer `l`, every other layer reads back bit-exact.
//! Every failure is [`ReadFailure::Corrupt`]; nothing panics. Resealed headers (checksum
//! recomputed) have no such oracle: they must fail or give layers that match their checksums.
//!
//! `PROPTEST_CASES=N` overrides the case counts, `PROPTEST_RNG_SEED=N` fixes the seed.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use twox_hash::XxHash3_64 as Xxh3;

use crate::data::tests::bit_equal;
use crate::data::{ChunkKvData, KvDtype, KvMeta, KvVec, LayerKv};
use crate::format::{layer_checksum, write_chunk, ChunkReader, LayerEntry, ReadFailure};
use crate::load::read_all;
use a3kv_fusion::ChunkId;

const FP: [u8; 32] = [0x5a; 32];
const ID: ChunkId = ChunkId([0xc3; 32]);
/// Bytes before the token ids (`format.rs` layout).
const FIXED_LEN: usize = 120;

fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A chunk of a small random shape with random bit patterns (NaNs, infinities, subnormals).
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

/// How a valid file is damaged.
#[derive(Debug, Clone)]
enum Damage {
    /// The whole file replaced by random bytes.
    Random(Vec<u8>),
    /// Random bytes after a valid magic and version, so the header checks run further.
    RandomAfterMagic(Vec<u8>),
    /// Bytes XORed with non-zero masks.
    Flip(Vec<(Index, u8)>),
    /// Cut to a shorter length.
    Truncate(Index),
    /// Junk appended.
    Append(Vec<u8>),
    /// A stretch overwritten with random bytes.
    Overwrite(Index, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    let mask = 1u8..=255;
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..5000).prop_map(Damage::Random),
        1 => prop::collection::vec(any::<u8>(), 0..300).prop_map(Damage::RandomAfterMagic),
        4 => prop::collection::vec((any::<Index>(), mask), 1..6).prop_map(Damage::Flip),
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
        Damage::RandomAfterMagic(r) => {
            let mut out = good[..12].to_vec();
            out.extend_from_slice(r);
            return out;
        }
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

/// Writes `data` as a chunk file at `path` and returns its bytes and layer table.
fn write_good(
    path: &Path,
    data: &ChunkKvData,
) -> Result<(Vec<u8>, Vec<LayerEntry>), TestCaseError> {
    let f = File::create(path).map_err(|e| TestCaseError::fail(e.to_string()))?;
    write_chunk(&f, &ID, data).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let bytes = std::fs::read(path).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let r = ChunkReader::open(path, &ID, &FP).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    Ok((bytes, r.header().layers.clone()))
}

/// Where a byte of a valid file lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Region {
    /// Covered by the header checksum.
    Header,
    /// Zero padding between the header and the first layer.
    Padding,
    /// Layer `l`'s K and V.
    Layer(usize),
}

fn region(good: &[u8], table: &[LayerEntry], at: usize) -> Region {
    let hlen = u32::from_le_bytes([good[12], good[13], good[14], good[15]]) as usize;
    if at < hlen {
        return Region::Header;
    }
    table
        .iter()
        .position(|e| (e.offset as usize..(e.offset + e.len) as usize).contains(&at))
        .map_or(Region::Padding, Region::Layer)
}

fn corrupt<T: std::fmt::Debug>(r: Result<T, ReadFailure>, what: &str) -> Result<(), TestCaseError> {
    match r {
        Err(ReadFailure::Corrupt(_)) => Ok(()),
        other => Err(TestCaseError::fail(format!(
            "{what}: expected Corrupt, got {other:?}"
        ))),
    }
}

fn bits(l: &LayerKv) -> (Vec<u8>, Vec<u8>) {
    (l.k.as_bytes().to_vec(), l.v.as_bytes().to_vec())
}

/// Reads `bad` (a damaged copy of `good`, the file of `data`) every way and checks the oracle.
fn check_damaged(
    path: &Path,
    data: &ChunkKvData,
    good: &[u8],
    table: &[LayerEntry],
    bad: &[u8],
) -> Result<(), TestCaseError> {
    std::fs::write(path, bad).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let changed: Vec<Region> = if bad.len() != good.len() {
        vec![Region::Header]
    } else {
        (0..good.len())
            .filter(|&i| good[i] != bad[i])
            .map(|i| region(good, table, i))
            .collect()
    };
    let opened = ChunkReader::open(path, &ID, &FP);
    if changed.contains(&Region::Header) {
        return corrupt(opened, "open after header/length damage");
    }
    let reader =
        opened.map_err(|e| TestCaseError::fail(format!("open failed on intact header: {e:?}")))?;
    prop_assert_eq!(&reader.header().meta, &data.meta);
    let bad_layers: Vec<usize> = changed
        .iter()
        .filter_map(|r| match r {
            Region::Layer(l) => Some(*l),
            _ => None,
        })
        .collect();
    for l in 0..data.layers.len() {
        for (name, got) in [
            ("fast", reader.read_layer(l)),
            ("reference", reader.read_layer_reference(l)),
        ] {
            if bad_layers.contains(&l) {
                corrupt(got, &format!("{name} read of damaged layer {l}"))?;
            } else {
                let got = got.map_err(|e| {
                    TestCaseError::fail(format!("{name} read of intact layer {l}: {e:?}"))
                })?;
                prop_assert_eq!(bits(&got), bits(&data.layers[l]), "{} layer {}", name, l);
            }
        }
    }
    corrupt(
        reader.read_layer(data.layers.len()),
        "layer index past the end",
    )?;
    for threads in [1, 2] {
        let all = read_all(&reader, threads);
        if bad_layers.is_empty() {
            let all =
                all.map_err(|e| TestCaseError::fail(format!("read_all of an intact file: {e:?}")))?;
            prop_assert!(bit_equal(&all, data), "read_all returned different data");
        } else {
            corrupt(all, "read_all of a damaged file")?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(1500))]

    #[test]
    fn damaged_files_fail_or_read_back_exactly(data in chunk(), d in damage()) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let path = dir.path().join("c.a3kv");
        let (good, table) = write_good(&path, &data)?;
        let bad = apply(&good, &d);
        check_damaged(&path, &data, &good, &table, &bad)?;
    }
}

/// Header fields worth rewriting, as (offset, width in bytes).
fn header_field(good: &[u8]) -> Vec<(usize, usize)> {
    let n_tokens = u32::from_le_bytes([good[96], good[97], good[98], good[99]]) as usize;
    let n_layers = u32::from_le_bytes([good[84], good[85], good[86], good[87]]) as usize;
    let mut fields = vec![
        (12, 4),
        (80, 4),
        (84, 4),
        (88, 4),
        (92, 4),
        (96, 4),
        (100, 4),
        (104, 8),
        (112, 8),
    ];
    let table = FIXED_LEN + 4 * n_tokens;
    if n_tokens > 0 {
        fields.push((FIXED_LEN, 4));
    }
    for l in 0..n_layers {
        fields.extend([
            (table + 24 * l, 8),
            (table + 24 * l + 8, 8),
            (table + 24 * l + 16, 8),
        ]);
    }
    fields
}

proptest! {
    #![proptest_config(config(1500))]

    /// Header fields rewritten and the header checksum recomputed, as a buggy or hostile
    /// writer would: the layout checks must catch what the checksum no longer does, and
    /// whatever is returned must match its own checksums.
    #[test]
    fn resealed_headers_fail_or_return_checksummed_data(
        data in chunk(),
        edits in prop::collection::vec((any::<Index>(), prop_oneof![
            Just(0u64), Just(1), Just(u64::from(u32::MAX)), Just(u64::MAX), Just(4096),
            any::<u64>(), (-3i64..=3).prop_map(|d| d as u64),
        ], any::<bool>()), 1..4),
    ) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let path = dir.path().join("c.a3kv");
        let (good, _) = write_good(&path, &data)?;
        let hlen = u32::from_le_bytes([good[12], good[13], good[14], good[15]]) as usize;
        let fields = header_field(&good);
        let mut bad = good.clone();
        for (at, value, relative) in edits {
            let (off, width) = fields[at.index(fields.len())];
            let mut cur = [0u8; 8];
            cur[..width].copy_from_slice(&bad[off..off + width]);
            // Either an absolute value or a small step from the current one.
            let new = if relative {
                u64::from_le_bytes(cur).wrapping_add(value)
            } else {
                value
            };
            bad[off..off + width].copy_from_slice(&new.to_le_bytes()[..width]);
        }
        let sum = Xxh3::oneshot(&bad[..hlen - 8]);
        bad[hlen - 8..hlen].copy_from_slice(&sum.to_le_bytes());
        std::fs::write(&path, &bad).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let reader = match ChunkReader::open(&path, &ID, &FP) {
            Err(ReadFailure::Corrupt(_)) => return Ok(()),
            Err(other) => return Err(TestCaseError::fail(format!("not Corrupt: {other:?}"))),
            Ok(r) => r,
        };
        let h = reader.header();
        let elems = h.meta.elems_per_tensor().unwrap_or(usize::MAX);
        prop_assert_eq!(h.layers.len(), h.meta.n_layers as usize);
        let check = |l: usize, layer: &LayerKv| -> Result<(), TestCaseError> {
            prop_assert_eq!(layer.k.len(), elems);
            prop_assert_eq!(layer.v.len(), elems);
            prop_assert_eq!(layer_checksum(&layer.k, &layer.v), h.layers[l].checksum);
            Ok(())
        };
        for l in 0..h.layers.len() {
            match reader.read_layer(l) {
                Ok(layer) => check(l, &layer)?,
                other => corrupt(other, "resealed layer read")?,
            }
        }
        match read_all(&reader, 2) {
            Ok(all) => {
                prop_assert_eq!(all.layers.len(), h.layers.len());
                for (l, layer) in all.layers.iter().enumerate() {
                    check(l, layer)?;
                }
            }
            other => corrupt(other, "resealed read_all")?,
        }
    }
}

/// A small file for the exhaustive tests: 2 layers, 2 heads, 3 tokens, d = 2.
fn small() -> ChunkKvData {
    crate::data::tests::sample_chunk(FP, 4, 2, 3)
}

#[test]
fn every_truncation_and_every_appended_length_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.a3kv");
    let data = small();
    let (good, table) = write_good(&path, &data).unwrap();
    for len in 0..good.len() {
        check_damaged(&path, &data, &good, &table, &good[..len])
            .unwrap_or_else(|e| panic!("truncated to {len}: {e}"));
    }
    for extra in 1..=64 {
        let mut b = good.clone();
        b.resize(good.len() + extra, 0);
        check_damaged(&path, &data, &good, &table, &b)
            .unwrap_or_else(|e| panic!("{extra} bytes appended: {e}"));
    }
}

#[test]
fn every_single_byte_flip_fails_its_region_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.a3kv");
    let data = small();
    let (good, table) = write_good(&path, &data).unwrap();
    let mut padding = 0;
    for at in 0..good.len() {
        let mut b = good.clone();
        b[at] ^= 1 << (at % 8);
        if region(&good, &table, at) == Region::Padding {
            padding += 1;
        }
        check_damaged(&path, &data, &good, &table, &b)
            .unwrap_or_else(|e| panic!("byte {at} flipped: {e}"));
    }
    assert!(
        padding > 3000,
        "the small file's header is padded to 4096 bytes"
    );
}
