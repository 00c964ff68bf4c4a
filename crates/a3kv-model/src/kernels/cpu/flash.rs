//! Flash-style causal attention for prefill on the CPU: query rows in tiles, keys in tiles
//! of [`KEY_TILE`], an online (running max and sum) softmax, so the `[rows, keys]` score
//! matrix is never materialised — only a `[rows, KEY_TILE]` tile that stays in L1/L2.
//!
//! Each task takes [`ROW_TILE`] query rows and, per KV head, stacks the `g` query heads
//! that share it (GQA without repeating K/V). A key tile is multiplied only when some row
//! of the task sees one of its keys (`key_pos <= query_pos`), and rows that see none of it
//! are skipped, so a causal prefill does half the work and fusion's scattered rows skip
//! what their position masks out. Scores are computed in base 2 (queries pre-scaled by
//! `scale · log2 e`, a polynomial `exp2`), which gives the same softmax.
//!
//! The body is plain Rust over fixed-size arrays, compiled three times: under AVX-512,
//! under AVX2 + FMA (narrower register tiles), and for baseline x86-64 / other targets.
//! [`crate::attention::causal_attention_reference`] is its twin in the tests.

use candle_core::{CpuStorage, Storage, Tensor};
use rayon::prelude::*;

use super::Isa;
use crate::Result;

/// Query rows per task (per head; the task holds `g` times as many stacked rows).
pub const ROW_TILE: usize = 32;
/// Keys per tile: one score tile is `[g · ROW_TILE, KEY_TILE]`.
pub const KEY_TILE: usize = 64;

pub(crate) const LOG2_E: f32 = std::f32::consts::LOG2_E;

/// `a · b + c`, fused when the caller's target has FMA (`FMA` = true only inside the
/// `#[target_feature]` copies, where `mul_add` is one instruction and not a libm call).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Coefficients of [`exp2`]'s polynomial for `2^f`, highest degree first: Taylor
/// coefficients ln2^k / k! (on |f| <= 0.5 the tail is < 2e-7 relative). Shared with the
/// 16-lane copy in the decode attention kernel, which must give the same bits.
pub(crate) const EXP2_POLY: [f32; 7] = [
    1.540_353_1e-4,
    1.333_355_8e-3,
    9.618_129e-3,
    5.550_411e-2,
    2.402_265e-1,
    6.931_472e-1,
    1.0,
];

/// `2^x` for `x <= 0` (inputs below -126 give ~0), relative error ~2e-7: `x = n + f` with
/// `n` the nearest integer and `|f| <= 0.5`, a degree-6 polynomial for `2^f`, and `2^n`
/// built in the exponent bits. Branch-free and without saturating float→int casts, so a
/// loop over it vectorises.
#[inline(always)]
pub(crate) fn exp2<const FMA: bool>(x: f32) -> f32 {
    // 1.5 · 2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.max(-126.0);
    let t = x + ROUND;
    let n = t - ROUND;
    let f = x - n;
    let mut p = EXP2_POLY[0];
    for &c in &EXP2_POLY[1..] {
        p = madd::<FMA>(p, f, c);
    }
    // n in [-126, 0]: its two's complement sits in the low bits of t's pattern.
    let n_bits = t.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    p * scale
}

/// Maximum of `x` (no NaNs) in 16 independent lanes (a vectorisable reduction).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn lane_max(x: &[f32; KEY_TILE]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    for c in 0..KEY_TILE / 16 {
        for l in 0..16 {
            let v = x[c * 16 + l];
            acc[l] = if v > acc[l] { v } else { acc[l] };
        }
    }
    acc.iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a })
}

/// Sum of `x` in 16 independent lanes (a vectorisable reduction).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn lane_sum(x: &[f32; KEY_TILE]) -> f32 {
    let mut acc = [0f32; 16];
    for c in 0..KEY_TILE / 16 {
        for l in 0..16 {
            acc[l] += x[c * 16 + l];
        }
    }
    acc.iter().sum()
}

/// The inputs of one attention call, as slices (see [`flash_attention`]).
struct Inputs<'a> {
    /// `[H, n, D]` rows, contiguous.
    q: &'a [f32],
    /// Keys transposed per KV head: `[H_kv, D, m_pad]` (`m_pad` a multiple of KEY_TILE).
    kt: &'a [f32],
    /// `[H_kv, m, D]` rows, contiguous.
    v: &'a [f32],
    /// Keys each query row sees (a prefix: keys are position-sorted).
    visible: &'a [usize],
    heads: usize,
    kv_heads: usize,
    n: usize,
    m: usize,
    m_pad: usize,
    /// `scale · log2 e`.
    q_scale: f32,
}

/// Per-thread scratch of one task, reused across tasks.
#[derive(Default)]
struct Scratch {
    q: Vec<f32>,
    s: Vec<f32>,
    o: Vec<f32>,
    max: Vec<f32>,
    sum: Vec<f32>,
    alpha: Vec<f32>,
    vis: Vec<usize>,
}

/// Scores of `RB` stacked query rows (`q`: `RB · D` values) against keys
/// `j0..j0 + KEY_TILE` of the transposed keys `kt` (`D` rows of `stride`), written to
/// `s` (`RB` rows of KEY_TILE), `KW` keys at a time.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // indexed loops are the shape that vectorises
fn score_rows<const D: usize, const RB: usize, const KW: usize, const FMA: bool>(
    q: &[f32],
    kt: &[f32],
    stride: usize,
    j0: usize,
    s: &mut [f32],
) {
    let q = &q[..RB * D];
    let mut c = 0;
    while c < KEY_TILE {
        let mut acc = [[0f32; KW]; RB];
        for dd in 0..D {
            let krow = &kt[dd * stride + j0 + c..][..KW];
            for r in 0..RB {
                let qv = q[r * D + dd];
                for j in 0..KW {
                    acc[r][j] = madd::<FMA>(qv, krow[j], acc[r][j]);
                }
            }
        }
        for r in 0..RB {
            s[r * KEY_TILE + c..][..KW].copy_from_slice(&acc[r]);
        }
        c += KW;
    }
}

/// `o[r] = o[r] · alpha[r] + Σ_j p[r][j] · v[j]` for `RB` stacked rows over the first
/// `keys` (at most KEY_TILE) value rows of `v` (rows of `D`), `DW` dimensions at a time.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn accumulate_rows<const D: usize, const RB: usize, const DW: usize, const FMA: bool>(
    p: &[f32],
    v: &[f32],
    keys: usize,
    alpha: &[f32],
    o: &mut [f32],
) {
    let keys = keys.min(KEY_TILE);
    let (p, _) = p[..RB * KEY_TILE].as_chunks::<KEY_TILE>();
    let (v, _) = v[..keys * D].as_chunks::<D>();
    for c in 0..D / DW {
        let dc = c * DW;
        let mut acc = [[0f32; DW]; RB];
        for r in 0..RB {
            let a = alpha[r];
            for x in 0..DW {
                acc[r][x] = o[r * D + dc + x] * a;
            }
        }
        for (j, vr) in v.iter().enumerate() {
            let (vr, _) = vr.as_chunks::<DW>();
            let vr = &vr[c];
            for r in 0..RB {
                let pj = p[r][j & (KEY_TILE - 1)];
                for x in 0..DW {
                    acc[r][x] = madd::<FMA>(pj, vr[x], acc[r][x]);
                }
            }
        }
        for r in 0..RB {
            o[r * D + dc..][..DW].copy_from_slice(&acc[r]);
        }
    }
}

/// Online-softmax update of one stacked row for the key tile at `j0` (`s`: its KEY_TILE
/// scores, turned into probabilities in place; keys at or past `visible` get 0). Returns
/// the factor the row's running output must be scaled by.
#[inline(always)]
fn softmax_row<const FMA: bool>(
    s: &mut [f32],
    j0: usize,
    visible: usize,
    max: &mut f32,
    sum: &mut f32,
) -> f32 {
    let Some((s, _)) = s.split_first_chunk_mut::<KEY_TILE>() else {
        return 1.0;
    };
    if visible <= j0 {
        s.fill(0.0);
        return 1.0;
    }
    let lim = (visible - j0).min(KEY_TILE);
    s[lim..].fill(f32::NEG_INFINITY);
    let new_max = max.max(lane_max(s));
    let alpha = exp2::<FMA>(*max - new_max);
    // Masked keys: exp2 clamps -inf to 2^-126 · p; they are zeroed after.
    for x in s.iter_mut() {
        *x = exp2::<FMA>(*x - new_max);
    }
    s[lim..].fill(0.0);
    *sum = *sum * alpha + lane_sum(s);
    *max = new_max;
    alpha
}

/// One task: query rows `r0..r0 + br` of every head; writes their `[br, H · D]` output.
/// `RS`/`KW`: score register tile (stacked rows × keys); `RP`/`DW`: value-update register
/// tile (stacked rows × dimensions). `RS` and `RP` divide one another.
#[inline(always)]
fn tile<
    const D: usize,
    const RS: usize,
    const KW: usize,
    const RP: usize,
    const DW: usize,
    const FMA: bool,
>(
    inp: &Inputs,
    r0: usize,
    kv_heads: std::ops::Range<usize>,
    out: &mut [f32],
    sc: &mut Scratch,
) {
    const {
        assert!(
            KEY_TILE.is_multiple_of(KW),
            "score tiles must cover a key tile exactly"
        );
        assert!(
            RS.is_multiple_of(RP) || RP.is_multiple_of(RS),
            "register tiles must nest"
        );
        assert!(
            DW == D,
            "the value update covers every dimension in one pass"
        );
    }
    let br = ROW_TILE.min(inp.n - r0);
    let g = inp.heads / inp.kv_heads;
    let rows = g * br;
    // Stacked rows rounded up to the register tiles; padding rows see no key.
    let padded = rows.div_ceil(RS.max(RP)) * RS.max(RP);
    sc.q.clear();
    sc.q.resize(padded * D, 0.0);
    sc.s.resize(padded * KEY_TILE, 0.0);
    sc.o.resize(padded * D, 0.0);
    sc.vis.clear();
    sc.vis.resize(padded, 0);
    for kvh in kv_heads {
        for t in 0..g {
            let h = kvh * g + t;
            for i in 0..br {
                let src = &inp.q[(h * inp.n + r0 + i) * D..][..D];
                let dst = &mut sc.q[(t * br + i) * D..][..D];
                for (d, &x) in dst.iter_mut().zip(src) {
                    *d = x * inp.q_scale;
                }
                sc.vis[t * br + i] = inp.visible[r0 + i];
            }
        }
        let max_vis = sc.vis[..rows].iter().copied().max().unwrap_or(0);
        sc.o.fill(0.0);
        sc.max.clear();
        sc.max.resize(padded, f32::NEG_INFINITY);
        sc.sum.clear();
        sc.sum.resize(padded, 0.0);
        sc.alpha.resize(padded, 1.0);
        let kt = &inp.kt[kvh * D * inp.m_pad..][..D * inp.m_pad];
        let v = &inp.v[kvh * inp.m * D..][..inp.m * D];
        let mut j0 = 0;
        while j0 < max_vis {
            let keys = (max_vis - j0).min(KEY_TILE);
            let mut r = 0;
            while r < padded {
                // Register tiles whose rows all see none of this key tile are skipped.
                if sc.vis[r..r + RS].iter().any(|&x| x > j0) {
                    score_rows::<D, RS, KW, FMA>(
                        &sc.q[r * D..],
                        kt,
                        inp.m_pad,
                        j0,
                        &mut sc.s[r * KEY_TILE..],
                    );
                }
                r += RS;
            }
            for r in 0..padded {
                sc.alpha[r] = softmax_row::<FMA>(
                    &mut sc.s[r * KEY_TILE..],
                    j0,
                    sc.vis[r],
                    &mut sc.max[r],
                    &mut sc.sum[r],
                );
            }
            let mut r = 0;
            while r < padded {
                if sc.vis[r..r + RP].iter().any(|&x| x > j0) {
                    accumulate_rows::<D, RP, DW, FMA>(
                        &sc.s[r * KEY_TILE..],
                        &v[j0 * D..],
                        keys,
                        &sc.alpha[r..],
                        &mut sc.o[r * D..],
                    );
                }
                r += RP;
            }
            j0 += KEY_TILE;
        }
        let hd = inp.heads * D;
        for t in 0..g {
            let h = kvh * g + t;
            for i in 0..br {
                let st = t * br + i;
                let inv = 1.0 / sc.sum[st];
                let dst = &mut out[i * hd + h * D..][..D];
                for (d, &x) in dst.iter_mut().zip(&sc.o[st * D..][..D]) {
                    *d = x * inv;
                }
            }
        }
    }
}

macro_rules! isa_tiles {
    ($name:ident, $feat:literal, $d:literal, $rs:literal, $kw:literal, $rp:literal, $dw:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feat)]
        fn $name(
            inp: &Inputs,
            r0: usize,
            kv_heads: std::ops::Range<usize>,
            out: &mut [f32],
            sc: &mut Scratch,
        ) {
            tile::<$d, $rs, $kw, $rp, $dw, true>(inp, r0, kv_heads, out, sc)
        }
    };
}

// Register tiles: AVX-512 has 32 vector registers of 16 lanes, AVX2 16 of 8; each tile
// keeps 8-16 accumulators plus one step's operands in registers. The value update covers all
// `D` dimensions of its rows in one pass (`DW = D`): split passes did not vectorise. AVX2 at
// d = 64 uses (6, 16, 2, 64): 81 GFLOP/s on a 4k causal prefill (2 threads, Zen 4) against
// 52 for (4, 16, 2, 64) and 71 for (4, 16, 1, 64).
isa_tiles!(tile_avx512_d64, "avx512f", 64, 4, 64, 4, 64);
isa_tiles!(tile_avx512_d128, "avx512f", 128, 4, 64, 2, 128);
isa_tiles!(tile_avx2_d64, "avx2,fma", 64, 6, 16, 2, 64);
isa_tiles!(tile_avx2_d128, "avx2,fma", 128, 4, 16, 1, 128);

/// Runs one task (query rows from `r0`, the KV heads `kv_heads` and their query heads) with
/// `isa`'s copy (the plain one when `isa` is not available).
fn run_tile<const D: usize>(
    isa: Isa,
    inp: &Inputs,
    r0: usize,
    kv_heads: std::ops::Range<usize>,
    out: &mut [f32],
    sc: &mut Scratch,
) {
    #[cfg(target_arch = "x86_64")]
    if isa.available() {
        // SAFETY: the CPU has the features each copy is compiled for (checked just above).
        unsafe {
            match (isa, D) {
                (Isa::Avx512, 64) => return tile_avx512_d64(inp, r0, kv_heads, out, sc),
                (Isa::Avx512, 128) => return tile_avx512_d128(inp, r0, kv_heads, out, sc),
                (Isa::Avx2, 64) => return tile_avx2_d64(inp, r0, kv_heads, out, sc),
                (Isa::Avx2, 128) => return tile_avx2_d128(inp, r0, kv_heads, out, sc),
                _ => {}
            }
        }
    }
    let _ = isa;
    tile::<D, 2, 8, 1, D, false>(inp, r0, kv_heads, out, sc)
}

/// [`run_tile`] for the head size `d` (64 or 128, [`supported_head_dim`]).
fn run_tile_d(
    isa: Isa,
    d: usize,
    inp: &Inputs,
    r0: usize,
    kv_heads: std::ops::Range<usize>,
    out: &mut [f32],
    sc: &mut Scratch,
) {
    match d {
        64 => run_tile::<64>(isa, inp, r0, kv_heads, out, sc),
        _ => run_tile::<128>(isa, inp, r0, kv_heads, out, sc),
    }
}

/// Head dimensions with a compiled kernel.
pub fn supported_head_dim(d: usize) -> bool {
    d == 64 || d == 128
}

/// f32 CPU data of a contiguous tensor (a contiguous copy is made by the caller).
fn cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(data)) = &*storage else {
        return None;
    };
    let (start, end) = layout.contiguous_offsets()?;
    Some(f(&data[start..end]))
}

/// Attention of query rows `q` `[H, n, d]` (RoPE applied) over `k`/`v` `[H_kv, m, d]`,
/// row `i` seeing key `j` iff `k_pos[j] <= q_pos[i]`, scores scaled by `scale`: `[n, H·d]`.
/// The caller checked the shapes, that keys are position-sorted and that every query sees
/// a key (as [`crate::attention::causal_attention`] does). `None` when the tensors are not
/// f32 on the CPU or `d` has no kernel (the caller takes the general path).
pub fn flash_attention(
    q: &Tensor,
    q_pos: &[u32],
    k: &Tensor,
    v: &Tensor,
    k_pos: &[u32],
    scale: f32,
    isa: Isa,
) -> Result<Option<Tensor>> {
    let (h, n, d) = q.dims3()?;
    let (hkv, m, _) = k.dims3()?;
    if !q.device().is_cpu() || q.dtype() != candle_core::DType::F32 || !supported_head_dim(d) {
        return Ok(None);
    }
    if k.dtype() != q.dtype() || v.dtype() != q.dtype() {
        return Ok(None);
    }
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let m_pad = m.div_ceil(KEY_TILE) * KEY_TILE;
    // Keys transposed per KV head, so a score tile reads KEY_TILE consecutive keys per
    // dimension (padding keys are zero and never visible).
    let Some(kt) = cpu_f32(&k, |k| {
        let mut kt = vec![0f32; hkv * d * m_pad];
        kt.par_chunks_mut(d * m_pad)
            .enumerate()
            .for_each(|(kvh, dst)| {
                let src = &k[kvh * m * d..][..m * d];
                // Sixteen keys at a time: each destination line is written whole while the
                // sixteen source rows (4-8 KB) stay in L1, where a key at a time touched `d`
                // lines per key.
                for j0 in (0..m).step_by(16) {
                    let jn = (m - j0).min(16);
                    for x in 0..d {
                        let line = &mut dst[x * m_pad + j0..][..jn];
                        for (jj, y) in line.iter_mut().enumerate() {
                            *y = src[(j0 + jj) * d + x];
                        }
                    }
                }
            });
        kt
    }) else {
        return Ok(None);
    };
    let visible: Vec<usize> = q_pos
        .iter()
        .map(|&p| k_pos.partition_point(|&kp| kp <= p))
        .collect();
    let mut out = vec![0f32; n * h * d];
    let done = cpu_f32(&q, |qd| {
        cpu_f32(&v, |vd| {
            let inp = Inputs {
                q: qd,
                kt: &kt,
                v: vd,
                visible: &visible,
                heads: h,
                kv_heads: hkv,
                n,
                m,
                m_pad,
                q_scale: scale * LOG2_E,
            };
            let tiles = n.div_ceil(ROW_TILE);
            if tiles >= rayon::current_num_threads() || hkv == 1 {
                out.par_chunks_mut(ROW_TILE * h * d)
                    .enumerate()
                    .for_each_init(Scratch::default, |sc, (t, o)| {
                        run_tile_d(isa, d, &inp, t * ROW_TILE, 0..hkv, o, sc)
                    });
                return;
            }
            // Fewer row tiles than workers (a short query over a long cache, e.g. a question
            // pass): one task per row tile and KV head, each into its own rows, so every
            // worker has work; the heads' columns are then copied into place.
            let g = h / hkv;
            let parts: Vec<(usize, usize, Vec<f32>)> = (0..tiles * hkv)
                .into_par_iter()
                .map_init(Scratch::default, |sc, i| {
                    let (t, kvh) = (i / hkv, i % hkv);
                    let r0 = t * ROW_TILE;
                    let mut o = vec![0f32; ROW_TILE.min(n - r0) * h * d];
                    run_tile_d(isa, d, &inp, r0, kvh..kvh + 1, &mut o, sc);
                    (r0, kvh, o)
                })
                .collect();
            for (r0, kvh, o) in parts {
                let cols = kvh * g * d..(kvh + 1) * g * d;
                for (i, row) in o.chunks_exact(h * d).enumerate() {
                    out[(r0 + i) * h * d..][cols.clone()].copy_from_slice(&row[cols.clone()]);
                }
            }
        })
    })
    .flatten();
    if done.is_none() {
        return Ok(None);
    }
    Ok(Some(Tensor::from_vec(out, (n, h * d), q.device())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::causal_attention_reference;
    use crate::testing::max_abs_diff;
    use candle_core::Device;

    #[test]
    fn exp2_is_accurate_on_the_softmax_range() {
        for i in 0..=20_000 {
            let x = -(i as f32) * 0.005; // 0 .. -100
            let want = (x as f64).exp2();
            for got in [exp2::<false>(x), exp2::<true>(x)] {
                let rel = ((got as f64 - want) / want).abs();
                assert!(rel < 1e-6, "exp2({x}) = {got}, want {want}");
            }
        }
        assert!(exp2::<false>(f32::NEG_INFINITY) < 1e-37);
        assert!(exp2::<false>(-1e9) < 1e-37);
    }

    /// Every ISA this CPU runs, plus the plain copy, against the reference twin.
    fn check(h: usize, hkv: usize, d: usize, q_pos: &[u32], k_pos: &[u32], scale: f32) {
        let dev = Device::Cpu;
        let m = k_pos.len();
        let k = Tensor::randn(0f32, 1.0, (hkv, m, d), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (hkv, m, d), &dev).unwrap();
        // Spread queries: a few large scores test the running max.
        let q = (Tensor::randn(0f32, 1.0, (h, q_pos.len(), d), &dev).unwrap() * 3.0).unwrap();
        let want = causal_attention_reference(&q, q_pos, &k, &v, k_pos).unwrap();
        // The reference scales by 1/sqrt(d).
        assert!((scale - 1.0 / (d as f32).sqrt()).abs() < 1e-9);
        for isa in Isa::all() {
            if !isa.available() {
                continue;
            }
            let got = flash_attention(&q, q_pos, &k, &v, k_pos, scale, isa)
                .unwrap()
                .expect("f32 on the CPU has a kernel");
            assert_eq!(got.dims(), want.dims());
            let diff = max_abs_diff(&got, &want);
            assert!(diff < 2e-5, "{isa:?} d={d} n={}: {diff}", q_pos.len());
        }
    }

    #[test]
    fn causal_prefill_matches_the_reference() {
        // Rows and keys not multiples of the tiles; GQA of 3 and 2; both head sizes.
        let pos: Vec<u32> = (7..7 + 300).collect();
        check(9, 3, 64, &pos, &pos, 0.125);
        let pos: Vec<u32> = (0..97).collect();
        check(4, 2, 128, &pos, &pos, 1.0 / 128f32.sqrt());
    }

    #[test]
    fn scattered_unsorted_rows_match_the_reference() {
        let k_pos: Vec<u32> = (5..5 + 700).collect();
        let q_pos: Vec<u32> = (0..150u32).map(|i| 5 + (i * 7919) % 700).collect();
        check(6, 2, 64, &q_pos, &k_pos, 0.125);
        // A few rows (one task, most stacked rows padding) and repeated key positions.
        let k_pos: Vec<u32> = (0..130u32).map(|i| i / 2).collect();
        check(2, 1, 64, &[64, 3, 0, 17], &k_pos, 0.125);
    }

    /// A short query over a long cache (fewer row tiles than workers) runs one task per KV
    /// head and row tile: same bits as one task per row tile (a one-worker pool), and both
    /// match the reference.
    #[test]
    fn few_row_tiles_split_by_kv_head_give_the_same_bits() {
        let dev = Device::Cpu;
        let k_pos: Vec<u32> = (0..1500).collect();
        let q_pos: Vec<u32> = (1460..1500).collect(); // 40 rows: two row tiles
        let (h, hkv, d) = (9, 3, 64);
        let k = Tensor::randn(0f32, 1.0, (hkv, k_pos.len(), d), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (hkv, k_pos.len(), d), &dev).unwrap();
        let q = (Tensor::randn(0f32, 1.0, (h, q_pos.len(), d), &dev).unwrap() * 3.0).unwrap();
        let want = causal_attention_reference(&q, &q_pos, &k, &v, &k_pos).unwrap();
        let run = |threads: usize| {
            crate::testing::in_pool(threads, || {
                flash_attention(&q, &q_pos, &k, &v, &k_pos, 0.125, Isa::detect())
                    .unwrap()
                    .unwrap()
            })
        };
        let (one, many) = (run(1), run(4));
        assert!(max_abs_diff(&many, &want) < 2e-5);
        let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(bits(&one), bits(&many));
    }

    #[test]
    fn other_dtypes_and_head_sizes_take_the_general_path() {
        let dev = Device::Cpu;
        let q = Tensor::zeros((2, 3, 32), candle_core::DType::F32, &dev).unwrap();
        let k = Tensor::zeros((1, 3, 32), candle_core::DType::F32, &dev).unwrap();
        let r = flash_attention(&q, &[0, 1, 2], &k, &k, &[0, 1, 2], 0.1, Isa::Scalar).unwrap();
        assert!(r.is_none());
    }
}
