//! AVX-512 kernel of the quantised matmul (Skylake-X and later, Zen 4/5).
//!
//! Per weight row and 32-value block: widen the codes to f32 (`vpmovzxbd`/`vpmovsxbd`,
//! `vcvtdq2ps`), dequantise in registers (`d·q + m`, one FMA), then one FMA per 16 values
//! for each of up to `MR` (8) activation rows. The weights are read and unpacked once for
//! all rows of a batch, which is what makes batched decode cheap; activations stay f32, so
//! the result is the f32 product of the dequantised weights up to summation order.

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use crate::quant::{QMatrix, QuantFormat, BLOCK};

/// Whether this CPU runs [`qmatmul_rows`].
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
}

/// Same contract as [`super::reference::qmatmul_rows`].
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL ([`available`]); `x` holds `m` rows of `w.cols()`.
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
                (true, 8..) => row::<8, true>(w, x, n, r, o),
                (true, 7) => row::<7, true>(w, x, n, r, o),
                (true, 6) => row::<6, true>(w, x, n, r, o),
                (true, 5) => row::<5, true>(w, x, n, r, o),
                (true, 4) => row::<4, true>(w, x, n, r, o),
                (true, 3) => row::<3, true>(w, x, n, r, o),
                (true, 2) => row::<2, true>(w, x, n, r, o),
                (true, _) => row::<1, true>(w, x, n, r, o),
                (false, 8..) => row::<8, false>(w, x, n, r, o),
                (false, 7) => row::<7, false>(w, x, n, r, o),
                (false, 6) => row::<6, false>(w, x, n, r, o),
                (false, 5) => row::<5, false>(w, x, n, r, o),
                (false, 4) => row::<4, false>(w, x, n, r, o),
                (false, 3) => row::<3, false>(w, x, n, r, o),
                (false, 2) => row::<2, false>(w, x, n, r, o),
                (false, _) => row::<1, false>(w, x, n, r, o),
            };
        }
    }
}

/// 16 codes (bytes) → f32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn widen<const Q4: bool>(c: __m128i) -> __m512 {
    if Q4 {
        _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(c))
    } else {
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c))
    }
}

/// 32 codes of one block (`lo`/`hi` 16 each) → its dequantised values `d·q + m` (Q4_1) or
/// `d·q` (Q8_0) as two f32 vectors.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn dequant<const Q4: bool>(lo: __m128i, hi: __m128i, d: __m512, m: __m512) -> [__m512; 2] {
    let (a, b) = (widen::<Q4>(lo), widen::<Q4>(hi));
    if Q4 {
        [_mm512_fmadd_ps(a, d, m), _mm512_fmadd_ps(b, d, m)]
    } else {
        [_mm512_mul_ps(a, d), _mm512_mul_ps(b, d)]
    }
}

/// Weight row `n` against activation rows `r0..r0 + MR`: writes `out[r0..r0 + MR]`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
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
    let ws = w.row_scales(n).as_ptr() as *const i16;
    let wm = w.row_mins(n).as_ptr() as *const i16;
    let xs: [*const f32; MR] = std::array::from_fn(|j| x[(r0 + j) * cols..][..cols].as_ptr());
    let mut acc = [_mm512_setzero_ps(); MR];
    let nibble = _mm256_set1_epi8(0x0F);
    let one = _mm512_set1_epi32(1);
    let mut g = 0;
    while g < real_blocks {
        let nb = (real_blocks - g).min(16);
        let k: __mmask16 = if nb == 16 { 0xFFFF } else { (1u16 << nb) - 1 };
        let dv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, ws.add(g)));
        let mv = if Q4 {
            _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, wm.add(g)))
        } else {
            _mm512_setzero_ps()
        };
        let mut idx = _mm512_setzero_si512();
        for p in 0..nb.div_ceil(2) {
            let b = g + 2 * p;
            // Codes of blocks b and b + 1 as two [lo, hi] halves of 16 bytes each.
            let halves: [[__m128i; 2]; 2] = if Q4 {
                let c = _mm256_loadu_si256(wc.add(b * BLOCK / 2) as *const __m256i);
                let (l, h) = (
                    _mm256_and_si256(c, nibble),
                    _mm256_and_si256(_mm256_srli_epi16(c, 4), nibble),
                );
                [
                    [_mm256_castsi256_si128(l), _mm256_extracti128_si256(l, 1)],
                    [_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1)],
                ]
            } else {
                let c0 = _mm256_loadu_si256(wc.add(b * BLOCK) as *const __m256i);
                let c1 = _mm256_loadu_si256(wc.add((b + 1) * BLOCK) as *const __m256i);
                [
                    [_mm256_castsi256_si128(c0), _mm256_extracti128_si256(c0, 1)],
                    [_mm256_castsi256_si128(c1), _mm256_extracti128_si256(c1, 1)],
                ]
            };
            // The second block of the last pair may be padding past `cols`.
            let in_pair = if b + 1 < real_blocks { 2 } else { 1 };
            for (h, [lo, hi]) in halves.into_iter().enumerate().take(in_pair) {
                let d = _mm512_permutexvar_ps(idx, dv);
                let m = _mm512_permutexvar_ps(idx, mv);
                idx = _mm512_add_epi32(idx, one);
                let [w0, w1] = dequant::<Q4>(lo, hi, d, m);
                let at = (b + h) * BLOCK;
                for j in 0..MR {
                    let x0 = _mm512_loadu_ps(xs[j].add(at));
                    let x1 = _mm512_loadu_ps(xs[j].add(at + 16));
                    acc[j] = _mm512_fmadd_ps(w1, x1, _mm512_fmadd_ps(w0, x0, acc[j]));
                }
            }
        }
        g += 16;
    }
    for j in 0..MR {
        out[r0 + j] = _mm512_reduce_add_ps(acc[j]);
    }
    MR
}
