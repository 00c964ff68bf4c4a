//! The exact product on the packed layout ([`crate::quant::PackedMatrix`]): dequantised
//! weights against f32 activations, as the row-major exact kernels (`avx512.rs`) compute it,
//! for prompt rows on CPUs that keep only the packed layout.
//!
//! Prompt passes (prefill, a fused prefill's question and recomputed rows, chunk precompute)
//! must not round their activations: a fused prefill at r = 1 equals a full prefill, and the
//! KV they store must not depend on how many rows a pass had. So the integer kernel
//! ([`super::q16`]) serves decode only, and prompt passes of few rows come here. Per block of
//! a group, each chunk of 16 rows × 2 values is widened, split into its two values (the low
//! and high halves of each 32-bit lane), converted and scaled in registers (`d·q + m` as one
//! FMA, as the twin does), then multiplied into up to 8 activation rows' sums of 16 rows each.
//! [`super::reference::qmatmul_rows`] on the row-major matrix is the twin.

#![allow(unsafe_op_in_unsafe_fn)]

use crate::quant::{PackedMatrix, QuantFormat, BLOCK, GROUP};

/// Same contract as [`super::q16::qmatmul_packed`] with f32 activations `x` (`m` rows of
/// `w.cols()`): `out[j · len + i]` for the rows of groups `groups`, exact products of the
/// dequantised weights (padding rows give 0).
///
/// Panics if `x` is not `m · w.cols()` long, `groups` is past `w`, or `out` is shorter than
/// `m · 16 · groups.len()`.
pub fn qmatmul_packed_exact(
    w: &PackedMatrix,
    x: &[f32],
    m: usize,
    groups: std::ops::Range<usize>,
    out: &mut [f32],
) {
    let len = groups.len() * GROUP;
    assert!(x.len() == m * w.cols() && groups.end <= w.groups() && out.len() >= m * len);
    #[cfg(target_arch = "x86_64")]
    if super::avx512::available() {
        // SAFETY: AVX-512 F/BW/VL checked; shapes above.
        return unsafe { avx512::qmatmul_packed_exact(w, x, m, groups, out) };
    }
    let cols = w.cols();
    for (i, g) in groups.clone().enumerate() {
        for r in 0..GROUP {
            let n = g * GROUP + r;
            for j in 0..m {
                out[j * len + i * GROUP + r] = if n < w.rows() {
                    (0..cols)
                        .map(|c| weight(w, n, c) * x[j * cols + c])
                        .sum::<f32>()
                } else {
                    0.0
                };
            }
        }
    }
}

/// Dequantised value `c` of row `n`, as the twin computes it.
fn weight(w: &PackedMatrix, n: usize, c: usize) -> f32 {
    let (g, r, b) = (n / GROUP, n % GROUP, c / BLOCK);
    let d = w.group_scales(g)[b * GROUP + r].to_f32();
    let q = w.code(n, c) as f32;
    match w.format() {
        QuantFormat::Q4_1 => q.mul_add(d, w.group_mins(g)[b * GROUP + r].to_f32()),
        QuantFormat::Q8_0 => q * d,
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use crate::quant::{PackedMatrix, QuantFormat, BLOCK, GROUP};

    /// Activation rows per tile at most.
    const MAX_TILE_ROWS: usize = 8;

    /// # Safety
    /// AVX-512 F/BW/VL present; shapes checked by the caller.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn qmatmul_packed_exact(
        w: &PackedMatrix,
        x: &[f32],
        m: usize,
        groups: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        let len = groups.len() * GROUP;
        let q4 = w.format() == QuantFormat::Q4_1;
        for g in groups.clone() {
            let mut j = 0;
            while j < m {
                let tm = (m - j).min(MAX_TILE_ROWS);
                let o = out[j * len + (g - groups.start) * GROUP..].as_mut_ptr();
                macro_rules! go {
                    ($($b:literal),*) => {
                        match (tm, q4) {
                            $(($b, true) => tile::<$b, true>(w, x, g, j, o, len),
                              ($b, false) => tile::<$b, false>(w, x, g, j, o, len),)*
                            _ => unreachable!("tile sizes are 1..=8"),
                        }
                    };
                }
                go!(1, 2, 3, 4, 5, 6, 7, 8);
                j += tm;
            }
        }
    }

    /// Group `g` against activation rows `j0..j0 + TM`: writes `out[(j − j0) · stride + r]`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn tile<const TM: usize, const Q4: bool>(
        w: &PackedMatrix,
        x: &[f32],
        g: usize,
        j0: usize,
        out: *mut f32,
        stride: usize,
    ) {
        let cols = w.cols();
        let wc = w.group_codes(g).as_ptr();
        let ws = w.group_scales(g).as_ptr() as *const i16;
        let wm = w.group_mins(g).as_ptr() as *const i16;
        let xr: [*const f32; TM] = std::array::from_fn(|j| x[(j0 + j) * cols..].as_ptr());
        let nibble = _mm512_set1_epi16(0x0F);
        let mut acc = [_mm512_setzero_ps(); TM];
        // The chunk's two values per row (16-bit halves of each 32-bit lane) as f32 weights
        // `d·q + m`, multiplied into every activation row at values `v` and `v + 1`.
        let mut mac = |words: __m512i, d: __m512, mn: __m512, v: usize| {
            let even = _mm512_srai_epi32::<16>(_mm512_slli_epi32::<16>(words));
            let odd = _mm512_srai_epi32::<16>(words);
            let (w0, w1) = if Q4 {
                (
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(even), d, mn),
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(odd), d, mn),
                )
            } else {
                (
                    _mm512_mul_ps(_mm512_cvtepi32_ps(even), d),
                    _mm512_mul_ps(_mm512_cvtepi32_ps(odd), d),
                )
            };
            for j in 0..TM {
                acc[j] = _mm512_fmadd_ps(w0, _mm512_set1_ps(*xr[j].add(v)), acc[j]);
                acc[j] = _mm512_fmadd_ps(w1, _mm512_set1_ps(*xr[j].add(v + 1)), acc[j]);
            }
        };
        for b in 0..w.blocks() {
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(ws.add(b * GROUP).cast()));
            if Q4 {
                let mn = _mm512_cvtph_ps(_mm256_loadu_si256(wm.add(b * GROUP).cast()));
                for c in 0..8 {
                    let p = wc.add(b * 256 + c * 32);
                    let raw = _mm512_cvtepu8_epi16(_mm256_loadu_si256(p.cast()));
                    mac(_mm512_and_si512(raw, nibble), d, mn, b * BLOCK + 2 * c);
                    mac(_mm512_srli_epi16::<4>(raw), d, mn, b * BLOCK + 16 + 2 * c);
                }
            } else {
                let zero = _mm512_setzero_ps();
                for k in 0..16 {
                    let p = wc.add(b * 512 + k * 32);
                    let words = _mm512_cvtepi8_epi16(_mm256_loadu_si256(p.cast()));
                    mac(words, d, zero, b * BLOCK + 2 * k);
                }
            }
        }
        for (j, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(out.add(j * stride), *a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::reference;
    use crate::quant::QMatrix;
    use crate::testing::pattern_values as data;

    /// Against the row-major twin: both formats, a padded last group, a group range not
    /// starting at 0, 1–17 activation rows.
    #[test]
    fn packed_exact_kernel_matches_the_twin() {
        for (rows, cols, format) in [
            (37, 576, QuantFormat::Q4_1),
            (21, 96, QuantFormat::Q4_1),
            (37, 576, QuantFormat::Q8_0),
            (48, 64, QuantFormat::Q8_0),
        ] {
            let w = QMatrix::quantize(format, rows, cols, &data(rows * cols, 9)).unwrap();
            let p = PackedMatrix::pack(&w);
            let wd = w.dequantize();
            for m in [1, 2, 5, 8, 9, 17] {
                let mut x = data(m * cols, 13 + m as u32);
                x[2] = 30.0; // an outlier channel
                let mut twin = vec![0f32; rows * m];
                reference::qmatmul_rows(&w, &x, m, 0..rows, &mut twin);
                for g0 in [0, 1] {
                    let groups = g0..p.groups();
                    let len = groups.len() * GROUP;
                    let mut got = vec![f32::NAN; m * len];
                    qmatmul_packed_exact(&p, &x, m, groups, &mut got);
                    for j in 0..m {
                        for i in 0..len {
                            let n = g0 * GROUP + i;
                            let v = got[j * len + i];
                            if n >= rows {
                                assert_eq!(v, 0.0, "padding row {n}");
                                continue;
                            }
                            let mag: f32 = (0..cols)
                                .map(|c| (wd[n * cols + c] * x[j * cols + c]).abs())
                                .sum::<f32>()
                                .max(1e-3);
                            let t = twin[n * m + j];
                            assert!(
                                (v - t).abs() <= 1e-5 * mag,
                                "{format:?} {rows}x{cols} m={m} row {n} act {j}: {v} vs {t}"
                            );
                        }
                    }
                }
            }
        }
    }
}
