//! AVX2 + FMA kernel of the quantised matmul (CPUs without AVX-512): the scheme of
//! [`super::avx512`] with 8-wide vectors. Per 32-value block: widen the codes to f32 in four
//! steps of 8, dequantise in registers (`d·q + m`), then four FMAs for each of up to `MR` (4)
//! activation rows.

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use crate::quant::{QMatrix, QuantFormat, BLOCK};

/// Whether this CPU runs [`qmatmul_rows`].
pub fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// Same contract as [`super::reference::qmatmul_rows`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C ([`available`]); `x` holds `m` rows of
/// `w.cols()`.
pub unsafe fn qmatmul_rows(
    w: &QMatrix,
    x: &[f32],
    m: usize,
    rows: std::ops::Range<usize>,
    out: &mut [f32],
) {
    let q4 = w.format() == QuantFormat::Q4_1;
    for (i, n) in rows.enumerate() {
        let o = &mut out[i * m..][..m];
        let mut r = 0;
        while r < m {
            r += match (q4, m - r) {
                (true, 4..) => row::<4, true>(w, x, n, r, o),
                (true, 3) => row::<3, true>(w, x, n, r, o),
                (true, 2) => row::<2, true>(w, x, n, r, o),
                (true, _) => row::<1, true>(w, x, n, r, o),
                (false, 4..) => row::<4, false>(w, x, n, r, o),
                (false, 3) => row::<3, false>(w, x, n, r, o),
                (false, 2) => row::<2, false>(w, x, n, r, o),
                (false, _) => row::<1, false>(w, x, n, r, o),
            };
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// 8 codes (the low 8 bytes of `c`) → f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn widen<const Q4: bool>(c: __m128i) -> __m256 {
    if Q4 {
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c))
    } else {
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c))
    }
}

/// Up to 8 f16 values from `src[at..]` (zero past its end) as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group(src: &[half::f16], at: usize) -> __m256 {
    let mut v = [0u16; 8];
    let n = src.len().saturating_sub(at).min(8);
    for (o, h) in v.iter_mut().zip(&src[at..at + n]) {
        *o = h.to_bits();
    }
    _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr() as *const __m128i))
}

/// Weight row `n` against activation rows `r0..r0 + MR`: writes `out[r0..r0 + MR]`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row<const MR: usize, const Q4: bool>(
    w: &QMatrix,
    x: &[f32],
    n: usize,
    r0: usize,
    out: &mut [f32],
) -> usize {
    let cols = w.cols();
    let real_blocks = cols / BLOCK;
    let wc = w.row_codes(n).as_ptr();
    let (ws, wm) = (w.row_scales(n), w.row_mins(n));
    let xs: [*const f32; MR] = std::array::from_fn(|j| x[(r0 + j) * cols..][..cols].as_ptr());
    let mut acc = [_mm256_setzero_ps(); MR];
    let nibble = _mm256_set1_epi8(0x0F);
    let mut g = 0;
    while g < real_blocks {
        let nb = (real_blocks - g).min(8);
        let dv = group(ws, g);
        let mv = if Q4 {
            group(wm, g)
        } else {
            _mm256_setzero_ps()
        };
        for bi in 0..nb {
            let b = g + bi;
            // The block's 32 codes as one ymm of bytes.
            let c = if Q4 {
                let pair = _mm256_loadu_si256(wc.add((b & !1) * BLOCK / 2) as *const __m256i);
                let pair = if b & 1 == 1 {
                    _mm256_srli_epi16(pair, 4)
                } else {
                    pair
                };
                _mm256_and_si256(pair, nibble)
            } else {
                _mm256_loadu_si256(wc.add(b * BLOCK) as *const __m256i)
            };
            let lane = _mm256_set1_epi32(bi as i32);
            let d = _mm256_permutevar8x32_ps(dv, lane);
            let m = _mm256_permutevar8x32_ps(mv, lane);
            let (lo, hi) = (_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
            let parts = [
                lo,
                _mm_unpackhi_epi64(lo, lo),
                hi,
                _mm_unpackhi_epi64(hi, hi),
            ];
            for (s, p) in parts.into_iter().enumerate() {
                let wv = if Q4 {
                    _mm256_fmadd_ps(widen::<true>(p), d, m)
                } else {
                    _mm256_mul_ps(widen::<false>(p), d)
                };
                for j in 0..MR {
                    let xv = _mm256_loadu_ps(xs[j].add(b * BLOCK + 8 * s));
                    acc[j] = _mm256_fmadd_ps(wv, xv, acc[j]);
                }
            }
        }
        g += 8;
    }
    for j in 0..MR {
        out[r0 + j] = hsum(acc[j]);
    }
    MR
}
