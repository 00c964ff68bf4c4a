//! The quantised product on integer dot products: Q4_1 or Q8_0 weights in groups of 16
//! interleaved rows ([`crate::quant::PackedMatrix`]) against activation rows quantised to
//! 16 bits per 32-value block.
//!
//! Each activation row is quantised once per product ([`ActQ16::quantize`]): per block, the
//! scale `dx = max|x| / 32767`, codes `round(x / dx)`, and the exact f32 sum `Σx`. A weight
//! block `w = dw·q + m` (Q8_0: `m = 0`) contributes `dw·dx·Σ q·qx + m·Σx`. The first sum is
//! exact in 32-bit integers: one AVX-512 VNNI `vpdpwssd` multiplies one broadcast activation
//! pair by the same two values of 16 weight rows, sixteen of them finish a block for 16 rows,
//! and the block's 16 scales apply as one vector, with no horizontal sums. Against the exact
//! kernels (`avx512.rs`: widen the codes to f32, look up their values, two FMAs per 32
//! weights and row) this measured 2.3x faster at one row, 1.8x at 4 and 1.5x at 16 on Q4_1,
//! and 1.7x on SmolLM2's Q8_0 LM head at one row (`a3kv bench decode --kernels`, one run).
//! The price is the activations' rounding, at most half a step of `max|x| / 32767` per value (16-bit codes: 8-bit ones,
//! llama.cpp's `Q8_1`, moved the first-token distribution of SmolLM2 by KL ≈ 1e-2 against the
//! f32 twin, its outlier channels coarsening every block they sit in).
//! [`qmatmul_rows_reference`] is the plain-Rust twin that computes the same integer sums on the
//! row-major layout. CPUs without VNNI keep the row-major layout and the exact kernels.

#![allow(unsafe_op_in_unsafe_fn)]

use crate::quant::{PackedMatrix, QMatrix, BLOCK, GROUP};

/// Whether this CPU runs [`qmatmul_rows`] (AVX-512 F/BW/VL with VNNI).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::avx512::available() && is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Activation rows quantised to 16 bits per block.
#[derive(Debug, Clone)]
pub struct ActQ16 {
    m: usize,
    /// Blocks per row (`cols / 32`).
    blocks: usize,
    /// Blocks per row padded to even (one code pair) and to the weights' padded blocks.
    padded: usize,
    /// `m × padded × 32` codes (zero in padding).
    codes: Vec<i16>,
    /// `m × padded` block scales `dx` (0 for padding and all-zero blocks).
    scales: Vec<f32>,
    /// `m × padded` exact block sums `Σx`.
    sums: Vec<f32>,
}

impl ActQ16 {
    /// Quantises `m` rows of `cols` values (`cols` a multiple of 32). Panics if `x` is not
    /// `m · cols` long or `cols` is not a multiple of 32 (callers size both from the matrix).
    pub fn quantize(x: &[f32], m: usize, cols: usize) -> Self {
        assert!(
            cols.is_multiple_of(BLOCK) && x.len() == m * cols,
            "ActQ16: bad shape"
        );
        let blocks = cols / BLOCK;
        let padded = blocks.div_ceil(2) * 2;
        let mut a = ActQ16 {
            m,
            blocks,
            padded,
            codes: vec![0; m * padded * BLOCK],
            scales: vec![0.0; m * padded],
            sums: vec![0.0; m * padded],
        };
        #[cfg(target_arch = "x86_64")]
        if available() {
            // SAFETY: AVX-512 F/BW checked; `x` holds `m · cols` values (asserted).
            unsafe { vnni::quantize_rows(x, &mut a) };
            return a;
        }
        a.quantize_rows_scalar(x);
        a
    }

    /// The plain-Rust quantiser (the AVX-512 one's twin: same scales and codes, block sums
    /// added in another order).
    fn quantize_rows_scalar(&mut self, x: &[f32]) {
        let (blocks, padded) = (self.blocks, self.padded);
        let cols = blocks * BLOCK;
        let a = self;
        for r in 0..a.m {
            for b in 0..blocks {
                let xs = &x[r * cols + b * BLOCK..][..BLOCK];
                let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
                let d = amax / 32767.0;
                let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
                let at = (r * padded + b) * BLOCK;
                for (c, &v) in a.codes[at..at + BLOCK].iter_mut().zip(xs) {
                    *c = round_to_i16(v * inv);
                }
                a.scales[r * padded + b] = d;
                a.sums[r * padded + b] = xs.iter().sum();
            }
        }
    }
}

/// `y` (|y| ≤ 32767) rounded to the nearest integer, ties to even: adding and subtracting
/// 1.5·2^23 leaves no fraction bits. Unlike `f32::round` (a libm call on baseline x86-64, a
/// few nanoseconds per value on the decode step's critical path) it vectorises.
#[inline(always)]
fn round_to_i16(y: f32) -> i16 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    ((y + MAGIC) - MAGIC).clamp(-32767.0, 32767.0) as i16
}

/// Plain-Rust twin of [`qmatmul_rows`]: for weight rows `n` in `rows` and activation rows
/// `r`, `out[(n - rows.start) · m + r] = Σ_b (dw_b · dx_b · Σ_i q_i · qx_i + m_b · Σx_b)`, the
/// integer sums exact, blocks added in order.
pub fn qmatmul_rows_reference(
    w: &QMatrix,
    x: &ActQ16,
    rows: std::ops::Range<usize>,
    out: &mut [f32],
) {
    let m = x.m;
    for (i, n) in rows.enumerate() {
        let ws = w.row_scales(n);
        let min = |b: usize| w.row_mins(n).get(b).map_or(0.0, |v| v.to_f32()); // Q8_0: none
        for r in 0..m {
            let mut total = 0f32;
            #[allow(clippy::needless_range_loop)] // `b` indexes four arrays and the codes
            for b in 0..x.blocks {
                let codes = &x.codes[(r * x.padded + b) * BLOCK..][..BLOCK];
                let dot: i32 = codes
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| w.code(n, b * BLOCK + i) * i32::from(c))
                    .sum();
                let s = x.scales[r * x.padded + b];
                total += ws[b].to_f32() * s * dot as f32 + min(b) * x.sums[r * x.padded + b];
            }
            out[i * m + r] = total;
        }
    }
}

/// `out[j · len + i] = x_j · w_nᵀ` for the rows `n` of `w`'s groups `groups` (`len` =
/// `16 · groups.len()`; `i = n − 16 · groups.start`, padding rows give 0): the integer sums
/// of [`qmatmul_rows_reference`] on the interleaved layout, 16 rows per `vpdpwssd` (module doc
/// of [`crate::quant::PackedMatrix`]). Without VNNI, the same sums in plain Rust.
///
/// Panics if `x` was quantised for other columns, `groups` is past `w`, or `out` is shorter
/// than `x.m · len`.
pub fn qmatmul_packed(
    w: &PackedMatrix,
    x: &ActQ16,
    groups: std::ops::Range<usize>,
    out: &mut [f32],
) {
    assert_eq!(
        x.blocks,
        w.blocks(),
        "q16 path: activations for other columns"
    );
    let len = groups.len() * GROUP;
    assert!(groups.end <= w.groups() && out.len() >= len * x.m);
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: the CPU features were checked; shapes above.
        return unsafe { vnni::qmatmul_packed(w, x, groups, out) };
    }
    for j in 0..x.m {
        for (i, g) in groups.clone().enumerate() {
            for r in 0..GROUP {
                let n = g * GROUP + r;
                out[j * len + i * GROUP + r] = if n < w.rows() {
                    packed_row_reference(w, x, n, j)
                } else {
                    0.0
                };
            }
        }
    }
}

/// Row `n` of `w` against activation row `j`, as [`qmatmul_rows_reference`] sums it.
fn packed_row_reference(w: &PackedMatrix, x: &ActQ16, n: usize, j: usize) -> f32 {
    let (g, r) = (n / GROUP, n % GROUP);
    let mut total = 0f32;
    for b in 0..x.blocks {
        let codes = &x.codes[(j * x.padded + b) * BLOCK..][..BLOCK];
        let dot: i32 = codes
            .iter()
            .enumerate()
            .map(|(i, &c)| w.code(n, b * BLOCK + i) * i32::from(c))
            .sum();
        let dw = w.group_scales(g)[b * GROUP + r].to_f32();
        let min = w
            .group_mins(g)
            .get(b * GROUP + r)
            .map_or(0.0, |v| v.to_f32());
        total += dw * x.scales[j * x.padded + b] * dot as f32 + min * x.sums[j * x.padded + b];
    }
    total
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::ActQ16;
    use crate::quant::{PackedMatrix, QuantFormat, BLOCK, GROUP};

    /// [`ActQ16::quantize`] on AVX-512: per block, `max|x|` as a vector maximum, the codes
    /// rounded to nearest even by `vcvtps2dq` (as `round_to_i16`) and narrowed with
    /// saturation, the sum as a vector sum.
    ///
    /// # Safety
    /// AVX-512 F/BW present; `x` holds `a.m · a.blocks · 32` values.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn quantize_rows(x: &[f32], a: &mut ActQ16) {
        let cols = a.blocks * BLOCK;
        let abs_mask = _mm512_set1_epi32(0x7FFF_FFFF);
        for r in 0..a.m {
            for b in 0..a.blocks {
                let p = x[r * cols + b * BLOCK..][..BLOCK].as_ptr();
                let (x0, x1) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
                let abs = |v: __m512| {
                    _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), abs_mask))
                };
                let amax = _mm512_reduce_max_ps(_mm512_max_ps(abs(x0), abs(x1)));
                let d = amax / 32767.0;
                let inv = _mm512_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
                let c0 = _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(x0, inv)));
                let c1 = _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(x1, inv)));
                let at = (r * a.padded + b) * BLOCK;
                let dst = a.codes[at..at + BLOCK].as_mut_ptr();
                _mm256_storeu_si256(dst.cast(), c0);
                _mm256_storeu_si256(dst.add(16).cast(), c1);
                a.scales[r * a.padded + b] = d;
                a.sums[r * a.padded + b] = _mm512_reduce_add_ps(_mm512_add_ps(x0, x1));
            }
        }
    }

    /// `acc + Σ pairs w·x` as one `vpdpwssd`, the activation pair `x` (two 16-bit codes as
    /// one 32-bit lane at `pair`) broadcast by the instruction itself (`{1to16}`). Inline
    /// assembly for two reasons: LLVM rewrites the intrinsic into `vpmaddwd` + `vpaddd` (it
    /// treats the dot product as an add it may reassociate and does not fuse back), and with
    /// a separate `vpbroadcastd` per product this loop ran at ~3.0 G products/s on Zen 4
    /// where the embedded broadcast reaches one a cycle (3.66 G; a loop of this shape alone,
    /// one core). Same integer result either way (wrapping 32-bit adds).
    ///
    /// # Safety
    /// `pair` points at 4 readable bytes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn dpwssd_bcast(acc: __m512i, w: __m512i, pair: *const i16) -> __m512i {
        let mut acc = acc;
        std::arch::asm!(
            "vpdpwssd {acc}, {w}, dword ptr [{pair}]{{1to16}}",
            acc = inout(zmm_reg) acc,
            w = in(zmm_reg) w,
            pair = in(reg) pair,
            options(pure, readonly, nostack, preserves_flags),
        );
        acc
    }

    /// Activation rows per tile at most (two groups × four rows: 8 integer and 8 f32
    /// accumulators and the unpacked weights fit the 32 registers; more rows would spill).
    const MAX_TILE_ROWS: usize = 4;

    /// # Safety
    /// AVX-512 F/BW/VL/VNNI present; shapes checked by the caller.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn qmatmul_packed(
        w: &PackedMatrix,
        x: &ActQ16,
        groups: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        let len = groups.len() * GROUP;
        let q4 = w.format() == QuantFormat::Q4_1;
        let mut g = groups.start;
        while g < groups.end {
            // Two groups at a time: each weight vector then feeds up to four products and
            // each activation pair two. With the broadcast outside the product (a
            // `vpbroadcastd` per product) a tile of one group and eight rows ran at 2.4 G
            // products/s and one of two groups and four rows at 3.0; with it embedded
            // ([`dpwssd_bcast`]) two × four runs at 3.66, one product a cycle, as do 4 × 4
            // and 2 × 8 (a loop of this shape alone, one core, Zen 4).
            let gn = (groups.end - g).min(2);
            let mut j = 0;
            while j < x.m {
                let tm = (x.m - j).min(MAX_TILE_ROWS);
                let o = out[j * len + (g - groups.start) * GROUP..].as_mut_ptr();
                macro_rules! go {
                    ($($a:literal $b:literal),*) => {
                        match (gn, tm, q4) {
                            $(($a, $b, true) => packed_tile::<$a, $b, true>(w, x, g, j, o, len),
                              ($a, $b, false) => packed_tile::<$a, $b, false>(w, x, g, j, o, len),)*
                            _ => unreachable!("tile sizes"),
                        }
                    };
                }
                go!(1 1, 1 2, 1 3, 1 4, 2 1, 2 2, 2 3, 2 4);
                j += tm;
            }
            g += gn;
        }
    }

    /// Groups `g0..g0 + GN` against activation rows `j0..j0 + TM`: writes
    /// `out[(j − j0) · stride + 16·gi + r]`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn packed_tile<const GN: usize, const TM: usize, const Q4: bool>(
        w: &PackedMatrix,
        x: &ActQ16,
        g0: usize,
        j0: usize,
        out: *mut f32,
        stride: usize,
    ) {
        let blocks = w.blocks();
        let wc: [*const u8; GN] = std::array::from_fn(|gi| w.group_codes(g0 + gi).as_ptr());
        let ws: [*const i16; GN] = std::array::from_fn(|gi| w.group_scales(g0 + gi).as_ptr() as _);
        let wm: [*const i16; GN] = std::array::from_fn(|gi| w.group_mins(g0 + gi).as_ptr() as _);
        let xq: [*const i16; TM] =
            std::array::from_fn(|j| x.codes[(j0 + j) * x.padded * BLOCK..].as_ptr());
        let xd: [*const f32; TM] =
            std::array::from_fn(|j| x.scales[(j0 + j) * x.padded..].as_ptr());
        let xs: [*const f32; TM] = std::array::from_fn(|j| x.sums[(j0 + j) * x.padded..].as_ptr());
        let nibble = _mm512_set1_epi16(0x0F);
        let mut acc = [[_mm512_setzero_ps(); TM]; GN];
        for b in 0..blocks {
            // Small tiles keep two integer sums per (group, activation row), even and odd pairs
            // (Q4_1: low and high nibbles), so no chain of sixteen dependent dot products; from
            // eight accumulators on, the chains are enough and the registers are not.
            let two = GN * TM <= 4;
            let mut s0 = [[_mm512_setzero_si512(); TM]; GN];
            let mut s1 = [[_mm512_setzero_si512(); TM]; GN];
            // The activation pair `2k, 2k + 1` of block `b` (one 32-bit lane to broadcast).
            let pair = |j: usize, k: usize| xq[j].add(b * BLOCK + 2 * k);
            if Q4 {
                for c in 0..8 {
                    for gi in 0..GN {
                        let p = wc[gi].add(b * 256 + c * 32);
                        let raw = _mm512_cvtepu8_epi16(_mm256_loadu_si256(p.cast()));
                        let lo = _mm512_and_si512(raw, nibble);
                        let hi = _mm512_srli_epi16::<4>(raw);
                        for j in 0..TM {
                            s0[gi][j] = dpwssd_bcast(s0[gi][j], lo, pair(j, c));
                            if two {
                                s1[gi][j] = dpwssd_bcast(s1[gi][j], hi, pair(j, c + 8));
                            } else {
                                s0[gi][j] = dpwssd_bcast(s0[gi][j], hi, pair(j, c + 8));
                            }
                        }
                    }
                }
            } else {
                for k in (0..16).step_by(2) {
                    for gi in 0..GN {
                        let p = wc[gi].add(b * 512 + k * 32);
                        let w0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(p.cast()));
                        let w1 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(p.add(32).cast()));
                        for j in 0..TM {
                            s0[gi][j] = dpwssd_bcast(s0[gi][j], w0, pair(j, k));
                            if two {
                                s1[gi][j] = dpwssd_bcast(s1[gi][j], w1, pair(j, k + 1));
                            } else {
                                s0[gi][j] = dpwssd_bcast(s0[gi][j], w1, pair(j, k + 1));
                            }
                        }
                    }
                }
            }
            // The block's 16 scales (and minimums) as vectors: dw·dx·Σ + m·Σx.
            for gi in 0..GN {
                let dw = _mm512_cvtph_ps(_mm256_loadu_si256(ws[gi].add(b * GROUP).cast()));
                let mn = if Q4 {
                    _mm512_cvtph_ps(_mm256_loadu_si256(wm[gi].add(b * GROUP).cast()))
                } else {
                    _mm512_setzero_ps()
                };
                for j in 0..TM {
                    let sum = if two {
                        _mm512_add_epi32(s0[gi][j], s1[gi][j])
                    } else {
                        s0[gi][j]
                    };
                    let dot = _mm512_cvtepi32_ps(sum);
                    let scale = _mm512_mul_ps(dw, _mm512_set1_ps(*xd[j].add(b)));
                    acc[gi][j] = _mm512_fmadd_ps(dot, scale, acc[gi][j]);
                    if Q4 {
                        acc[gi][j] = _mm512_fmadd_ps(mn, _mm512_set1_ps(*xs[j].add(b)), acc[gi][j]);
                    }
                }
            }
        }
        for (gi, row) in acc.iter().enumerate() {
            for (j, a) in row.iter().enumerate() {
                _mm512_storeu_ps(out.add(j * stride + gi * GROUP), *a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::QuantFormat;

    use crate::testing::pattern_values as data;

    #[test]
    fn rounding_is_to_nearest_even_over_the_code_range() {
        for y in [
            0.0f32, 0.5, 1.5, 2.5, -0.5, -1.5, 0.49999997, 32766.5, -32767.0, 12.3, -7.7,
        ] {
            assert_eq!(round_to_i16(y), y.round_ties_even() as i16, "{y}");
        }
    }

    /// The interleaved kernel against the row-major twin: same integer sums, f32 additions
    /// in another order; both formats, padded last groups, group ranges, 1–9 rows.
    #[test]
    fn packed_kernel_matches_the_twin() {
        for (rows, cols, format) in [
            (37, 576, QuantFormat::Q4_1),
            (64, 1536, QuantFormat::Q4_1),
            (21, 96, QuantFormat::Q4_1),
            (37, 576, QuantFormat::Q8_0),
            (48, 64, QuantFormat::Q8_0),
        ] {
            let w = QMatrix::quantize(format, rows, cols, &data(rows * cols, 5)).unwrap();
            let p = PackedMatrix::pack(&w);
            let wd = w.dequantize();
            for m in [1, 2, 3, 4, 5, 8, 9, 13] {
                let mut x = data(m * cols, 11 + m as u32);
                x[5] = -35.0; // an outlier channel
                if m > 1 {
                    x[cols..cols + BLOCK].fill(0.0); // an all-zero block
                }
                let a = ActQ16::quantize(&x, m, cols);
                let mut twin = vec![0f32; rows * m];
                qmatmul_rows_reference(&w, &a, 0..rows, &mut twin);
                // All groups, then from the second group on (a range not starting at 0).
                for g0 in [0, 1] {
                    let groups = g0..p.groups();
                    let len = groups.len() * GROUP;
                    let mut got = vec![f32::NAN; m * len];
                    qmatmul_packed(&p, &a, groups, &mut got);
                    for j in 0..m {
                        for i in 0..len {
                            let n = g0 * GROUP + i;
                            let g = got[j * len + i];
                            if n >= rows {
                                assert_eq!(g, 0.0, "padding row {n}");
                                continue;
                            }
                            let t = twin[n * m + j];
                            let mag: f32 = (0..cols)
                                .map(|c| (wd[n * cols + c] * x[j * cols + c]).abs())
                                .sum::<f32>()
                                .max(1e-3);
                            assert!(
                                (g - t).abs() <= 1e-5 * mag,
                                "{format:?} {rows}x{cols} m={m} row {n} act {j}: {g} vs {t}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The AVX-512 quantiser against the scalar one: same scales and codes (ties to even,
    /// the largest value at ±32767), sums within rounding.
    #[test]
    fn vector_quantiser_matches_the_scalar_one() {
        let cols = 96;
        let mut x = data(4 * cols, 21);
        x[7] = 1e-30; // tiny values in a block of ordinary ones
        x[cols..cols + BLOCK].fill(0.0); // an all-zero block
        x[2 * cols + 3] = -50.0; // a negative outlier
                                 // A value exactly half a step away from two codes.
        x[3 * cols] = 2.0;
        x[3 * cols + 1] = 2.0 * 0.5 / 32767.0;
        let fast = ActQ16::quantize(&x, 4, cols);
        let mut slow = fast.clone();
        slow.quantize_rows_scalar(&x);
        assert_eq!(fast.codes, slow.codes);
        assert_eq!(fast.scales, slow.scales);
        for (f, s) in fast.sums.iter().zip(&slow.sums) {
            assert!((f - s).abs() <= 1e-5 * s.abs().max(1.0), "{f} vs {s}");
        }
        assert_eq!(fast.codes[2 * fast.padded * BLOCK + 3], -32767);
    }

    /// The twin against the exact f32 product: they differ by the activations' rounding
    /// only (an outlier channel, an all-zero block; both formats).
    #[test]
    fn the_twin_is_within_the_activation_rounding_of_the_exact_product() {
        // 18 blocks (576: a 16-block group + a lone pair), 48 (1536), 30 (960), 2 (64).
        for (rows, cols, format) in [
            (37, 576, QuantFormat::Q4_1),
            (9, 1536, QuantFormat::Q4_1),
            (6, 960, QuantFormat::Q4_1),
            (5, 64, QuantFormat::Q4_1),
            (7, 576, QuantFormat::Q8_0),
        ] {
            let w = QMatrix::quantize(format, rows, cols, &data(rows * cols, 1)).unwrap();
            let wd = w.dequantize();
            for m in 1..=3 {
                let mut x = data(m * cols, 7 + m as u32);
                x[3] = 40.0; // an outlier channel, as real activations have
                if m > 1 {
                    x[cols..cols + BLOCK].fill(0.0); // an all-zero block
                }
                let a = ActQ16::quantize(&x, m, cols);
                let mut twin = vec![0f32; rows * m];
                qmatmul_rows_reference(&w, &a, 0..rows, &mut twin);
                for (i, t) in twin.iter().enumerate() {
                    let (n, r) = (i / m, i % m);
                    let mag: f32 = (0..cols)
                        .map(|j| (wd[n * cols + j] * x[r * cols + j]).abs())
                        .sum();
                    let exact: f32 = (0..cols).map(|j| wd[n * cols + j] * x[r * cols + j]).sum();
                    // Each activation moves by at most half a step of its block's scale.
                    let bound: f32 = (0..cols)
                        .map(|j| {
                            let b = j / BLOCK;
                            let amax = x[r * cols + b * BLOCK..][..BLOCK]
                                .iter()
                                .fold(0f32, |a, v| a.max(v.abs()));
                            wd[n * cols + j].abs() * amax / 65534.0
                        })
                        .sum();
                    assert!(
                        (t - exact).abs() <= bound * 1.01 + 1e-5 * mag,
                        "{format:?} {rows}x{cols} twin vs exact at {i}"
                    );
                }
            }
        }
    }
}
