//! The token-by-token product on integer dot products: Q4_1 weights against one activation
//! row quantised to 16 bits per 32-value block (a decode step).
//!
//! Each activation row is quantised once per product ([`ActQ16::quantize`]): per block, the
//! scale `dx = max|x| / 32767`, codes `round(x / dx)`, and the exact f32 sum `Σx`. A weight
//! block `w = dw·q + m` contributes `dw·dx·Σ q·qx + m·Σx`. The first sum is exact in
//! 32-bit integers, thirty-two products per AVX-512 VNNI `vpdpwssd`: per 32 weights one
//! instruction where the exact kernel (`avx512.rs`) widens the codes to f32, looks up their
//! values and issues two FMAs. The price is the activations' rounding, at most half a step
//! of `max|x| / 32767` per value (16-bit codes: 8-bit ones, llama.cpp's `Q8_1`, moved the
//! first-token distribution of SmolLM2 by KL ≈ 1e-2 against the f32 twin, its outlier
//! channels coarsening every block they sit in). [`qmatmul_rows_reference`] is the plain-Rust
//! twin that computes the same integer sums. More rows (the exact kernels reuse each
//! dequantised weight for up to four activation rows, which this path cannot: measured slower
//! at four rows) and CPUs without VNNI take the exact kernels.

#![allow(unsafe_op_in_unsafe_fn)]

use crate::quant::{QMatrix, QuantFormat, BLOCK};

/// Activation rows at most the integer path takes (one sequence's decode step).
pub const MAX_ROWS: usize = 1;

/// Whether this CPU runs [`qmatmul_rows`] (AVX-512 F/BW/VL with VNNI).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::avx512::available() && is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the integer path takes `m` activation rows against `w` on this CPU.
pub fn takes(w: &QMatrix, m: usize) -> bool {
    // Q8_0 (SmolLM2's LM head) was tried on this path too and measured no faster than the
    // exact kernel (`a3kv bench decode --kernels`: 4.1 vs 3.9 ms for [1, 576] x [49152, 576]).
    w.format() == QuantFormat::Q4_1 && (1..=MAX_ROWS).contains(&m) && available()
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
        for r in 0..m {
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
        a
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
        let (ws, wm) = (w.row_scales(n), w.row_mins(n));
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
                total +=
                    ws[b].to_f32() * s * dot as f32 + wm[b].to_f32() * x.sums[r * x.padded + b];
            }
            out[i * m + r] = total;
        }
    }
}

/// Same contract as [`qmatmul_rows_reference`], on AVX-512 VNNI for up to four activation
/// rows; the twin otherwise.
///
/// Panics if `w` is not Q4_1, `x` was quantised for other columns, `rows` is past `w`, or `out` is shorter
/// than `rows.len() · x.rows()`.
pub fn qmatmul_rows(w: &QMatrix, x: &ActQ16, rows: std::ops::Range<usize>, out: &mut [f32]) {
    assert_eq!(w.format(), QuantFormat::Q4_1, "q16 path: Q4_1 weights only");
    assert_eq!(
        x.blocks * BLOCK,
        w.cols(),
        "q16 path: activations for other columns"
    );
    assert!(rows.end <= w.rows() && out.len() >= rows.len() * x.m);
    #[cfg(target_arch = "x86_64")]
    if available() && x.m <= 4 {
        // SAFETY: the CPU features were checked; shapes above.
        return unsafe { vnni::qmatmul_rows(w, x, rows, out) };
    }
    qmatmul_rows_reference(w, x, rows, out)
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::ActQ16;
    use crate::quant::{QMatrix, BLOCK};

    /// Weight rows per tile.
    const NR: usize = 4;

    /// # Safety
    /// AVX-512 F/BW/VL/VNNI present; shapes checked by the caller.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn qmatmul_rows(
        w: &QMatrix,
        x: &ActQ16,
        rows: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        let mut n = rows.start;
        while n < rows.end {
            let nr = (rows.end - n).min(NR);
            let o = &mut out[(n - rows.start) * x.m..];
            macro_rules! go {
                ($($a:literal $b:literal),*) => {
                    match (nr, x.m) {
                        $(($a, $b) => tile::<$a, $b>(w, x, n, o),)*
                        _ => unreachable!("tile sizes are 1..=4"),
                    }
                };
            }
            go!(1 1, 1 2, 1 3, 1 4, 2 1, 2 2, 2 3, 2 4, 3 1, 3 2, 3 3, 3 4, 4 1, 4 2, 4 3, 4 4);
            n += nr;
        }
    }

    /// Weight rows `n0..n0 + TN` against all `TM` activation rows: `out[i · TM + j]`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn tile<const TN: usize, const TM: usize>(
        w: &QMatrix,
        x: &ActQ16,
        n0: usize,
        out: &mut [f32],
    ) {
        let wc: [*const u8; TN] = std::array::from_fn(|i| w.row_codes(n0 + i).as_ptr());
        let ws: [*const i16; TN] = std::array::from_fn(|i| w.row_scales(n0 + i).as_ptr() as _);
        let wm: [*const i16; TN] = std::array::from_fn(|i| w.row_mins(n0 + i).as_ptr() as _);
        let xq: [*const i16; TM] =
            std::array::from_fn(|j| x.codes[j * x.padded * BLOCK..].as_ptr());
        let xd: [*const f32; TM] = std::array::from_fn(|j| x.scales[j * x.padded..].as_ptr());
        let xs: [*const f32; TM] = std::array::from_fn(|j| x.sums[j * x.padded..].as_ptr());
        let nibble = _mm512_set1_epi16(0x0F);
        let mut acc = [[_mm512_setzero_ps(); TM]; TN];
        let mut accm = [[_mm512_setzero_ps(); TM]; TN];
        let mut cbuf = [[[0f32; 16]; TM]; TN];
        let mut g = 0;
        while g < x.blocks {
            // A group of up to 16 blocks: the combined scales dw·dx per (weight, activation)
            // row, read back by broadcast, and the minimums' term.
            let nb = (x.blocks - g).min(16);
            let k: __mmask16 = if nb == 16 { 0xFFFF } else { (1u16 << nb) - 1 };
            for i in 0..TN {
                let dw = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, ws[i].add(g)));
                for j in 0..TM {
                    let dx = _mm512_maskz_loadu_ps(k, xd[j].add(g));
                    _mm512_storeu_ps(cbuf[i][j].as_mut_ptr(), _mm512_mul_ps(dw, dx));
                }
                let mw = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, wm[i].add(g)));
                for j in 0..TM {
                    let sx = _mm512_maskz_loadu_ps(k, xs[j].add(g));
                    accm[i][j] = _mm512_fmadd_ps(mw, sx, accm[i][j]);
                }
            }
            // Block pairs: 32 code bytes hold the pair's two blocks in their low and high
            // nibbles. An odd last block reads its pair's padding block, of zero codes and
            // zero activations.
            let mut b = g;
            while b < g + nb {
                let mut lo = [_mm512_setzero_si512(); TN];
                let mut hi = [_mm512_setzero_si512(); TN];
                for i in 0..TN {
                    let p = wc[i].add(b * 16);
                    let raw = _mm512_cvtepu8_epi16(_mm256_loadu_si256(p.cast()));
                    lo[i] = _mm512_and_si512(raw, nibble);
                    hi[i] = _mm512_srli_epi16::<4>(raw);
                }
                for j in 0..TM {
                    let x0 = _mm512_loadu_si512(xq[j].add(b * BLOCK).cast());
                    let x1 = _mm512_loadu_si512(xq[j].add(b * BLOCK + BLOCK).cast());
                    for i in 0..TN {
                        let z = _mm512_setzero_si512();
                        let d0 = _mm512_cvtepi32_ps(_mm512_dpwssd_epi32(z, lo[i], x0));
                        let d1 = _mm512_cvtepi32_ps(_mm512_dpwssd_epi32(z, hi[i], x1));
                        let c = &cbuf[i][j];
                        let s0 = _mm512_set1_ps(c[b - g]);
                        let s1 = _mm512_set1_ps(if b + 1 < g + nb { c[b + 1 - g] } else { 0.0 });
                        acc[i][j] = _mm512_fmadd_ps(d1, s1, _mm512_fmadd_ps(d0, s0, acc[i][j]));
                    }
                }
                b += 2;
            }
            g += 16;
        }
        for i in 0..TN {
            for j in 0..TM {
                out[i * TM + j] = _mm512_reduce_add_ps(_mm512_add_ps(acc[i][j], accm[i][j]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::pattern_values as data;

    #[test]
    fn rounding_is_to_nearest_even_over_the_code_range() {
        for y in [
            0.0f32, 0.5, 1.5, 2.5, -0.5, -1.5, 0.49999997, 32766.5, -32767.0, 12.3, -7.7,
        ] {
            assert_eq!(round_to_i16(y), y.round_ties_even() as i16, "{y}");
        }
    }

    /// The VNNI kernel against its twin (same integer sums, f32 additions in another order),
    /// and the twin against the exact f32 product (the activations' rounding only).
    #[test]
    fn vnni_matches_its_twin_and_the_twin_the_exact_product() {
        // 18 blocks (576: a 16-block group + a lone pair), 48 (1536), 30 (960), 2 (64).
        for (rows, cols, format) in [
            (37, 576, QuantFormat::Q4_1),
            (9, 1536, QuantFormat::Q4_1),
            (6, 960, QuantFormat::Q4_1),
            (5, 64, QuantFormat::Q4_1),
        ] {
            let w = QMatrix::quantize(format, rows, cols, &data(rows * cols, 1)).unwrap();
            let wd = w.dequantize();
            // The kernel takes up to four rows (the product sends it `MAX_ROWS`).
            for m in 1..=4 {
                let mut x = data(m * cols, 7 + m as u32);
                x[3] = 40.0; // an outlier channel, as real activations have
                if m > 1 {
                    x[cols..cols + BLOCK].fill(0.0); // an all-zero block
                }
                let a = ActQ16::quantize(&x, m, cols);
                let mut twin = vec![0f32; rows * m];
                qmatmul_rows_reference(&w, &a, 0..rows, &mut twin);
                let mut got = vec![0f32; (rows - 1) * m];
                qmatmul_rows(&w, &a, 1..rows, &mut got);
                for (i, (g, t)) in got.iter().zip(&twin[m..]).enumerate() {
                    let (n, r) = (1 + i / m, i % m);
                    let mag: f32 = (0..cols)
                        .map(|j| (wd[n * cols + j] * x[r * cols + j]).abs())
                        .sum();
                    assert!(
                        (g - t).abs() <= 1e-5 * mag,
                        "{rows}x{cols} m={m} at {i}: {g} vs {t}"
                    );
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
                        "twin vs exact at {i}"
                    );
                }
            }
        }
    }
}
