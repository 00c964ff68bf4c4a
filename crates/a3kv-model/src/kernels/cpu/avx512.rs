//! AVX-512 kernel of the quantised matmul (Skylake-X and later, Zen 4/5).
//!
//! A tile of up to 4 weight rows × 4 activation rows at a time: per 32-value block, widen
//! each weight row's codes to f32 (`vpmovzxbd`/`vpmovsxbd` straight from memory,
//! `vcvtdq2ps`) and dequantise in registers (`d·q + m`, one FMA per 16 values), then two FMAs
//! per (weight row, activation row). The weights are read and unpacked once per 4
//! activation rows, the activations loaded once per 4 weight rows, so neither loads nor
//! unpacking dominate at any batch size. Activations stay f32: the result is the f32 product
//! of the dequantised weights up to summation order.

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use crate::quant::{QMatrix, QuantFormat, BLOCK};

/// Weight rows per tile.
const NR: usize = 4;
/// Activation rows per tile.
const MR: usize = 4;

/// Whether this CPU runs [`qmatmul_rows`].
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
}

/// Same contract as [`super::reference::qmatmul_rows`].
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL ([`available`]); `x` holds `m` rows of `w.cols()`,
/// `rows` are rows of `w`, and `out` holds `rows.len() · m` values.
pub unsafe fn qmatmul_rows(
    w: &QMatrix,
    x: &[f32],
    m: usize,
    rows: std::ops::Range<usize>,
    out: &mut [f32],
) {
    let q4 = w.format() == QuantFormat::Q4_1;
    let mut n = rows.start;
    while n < rows.end {
        let nr = (rows.end - n).min(NR);
        let o = &mut out[(n - rows.start) * m..];
        let mut r = 0;
        while r < m {
            let mr = (m - r).min(MR);
            macro_rules! go {
                ($($a:literal $b:literal),*) => {
                    match (q4, nr, mr) {
                        $((true, $a, $b) => tile::<$a, $b, true>(w, x, m, n, r, o),
                          (false, $a, $b) => tile::<$a, $b, false>(w, x, m, n, r, o),)*
                        _ => unreachable!("tile sizes are 1..=4"),
                    }
                };
            }
            go!(1 1, 1 2, 1 3, 1 4, 2 1, 2 2, 2 3, 2 4, 3 1, 3 2, 3 3, 3 4, 4 1, 4 2, 4 3, 4 4);
            r += mr;
        }
        n += nr;
    }
}

/// Weight rows `n0..n0 + TN` against activation rows `r0..r0 + TM`: writes
/// `out[i · m + r0 + j]` for `i < TN`, `j < TM`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn tile<const TN: usize, const TM: usize, const Q4: bool>(
    w: &QMatrix,
    x: &[f32],
    m: usize,
    n0: usize,
    r0: usize,
    out: &mut [f32],
) {
    let cols = w.cols();
    let real_blocks = cols / BLOCK;
    let wc: [*const u8; TN] = std::array::from_fn(|i| w.row_codes(n0 + i).as_ptr());
    let ws: [*const i16; TN] = std::array::from_fn(|i| w.row_scales(n0 + i).as_ptr() as _);
    let wm: [*const i16; TN] = std::array::from_fn(|i| w.row_mins(n0 + i).as_ptr() as _);
    let xs: [*const f32; TM] = std::array::from_fn(|j| x[(r0 + j) * cols..][..cols].as_ptr());
    let mut acc = [[_mm512_setzero_ps(); TM]; TN];
    let nibble = _mm512_set1_epi32(0x0F);
    // Block scales (and minimums) of a 16-block group as f32, read back by broadcast loads.
    let mut dbuf = [[0f32; 16]; TN];
    let mut mbuf = [[0f32; 16]; TN];
    let mut g = 0;
    while g < real_blocks {
        let nb = (real_blocks - g).min(16);
        let k: __mmask16 = if nb == 16 { 0xFFFF } else { (1u16 << nb) - 1 };
        for i in 0..TN {
            let dv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, ws[i].add(g)));
            _mm512_storeu_ps(dbuf[i].as_mut_ptr(), dv);
            if Q4 {
                let mv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, wm[i].add(g)));
                _mm512_storeu_ps(mbuf[i].as_mut_ptr(), mv);
            }
        }
        for bi in 0..nb {
            let b = g + bi;
            let mut wv = [[_mm512_setzero_ps(); 2]; TN];
            for i in 0..TN {
                let d = _mm512_set1_ps(dbuf[i][bi]);
                wv[i] = if Q4 {
                    // Pair layout: the 32 bytes of blocks (b & !1, b | 1) hold block b's
                    // codes in their low (even b) or high (odd b) nibbles, in order.
                    let p = wc[i].add((b & !1) * BLOCK / 2);
                    let z0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i));
                    let z1 = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.add(16) as *const __m128i));
                    let (c0, c1) = if b & 1 == 0 {
                        (_mm512_and_si512(z0, nibble), _mm512_and_si512(z1, nibble))
                    } else {
                        (_mm512_srli_epi32(z0, 4), _mm512_srli_epi32(z1, 4))
                    };
                    let mn = _mm512_set1_ps(mbuf[i][bi]);
                    [
                        _mm512_fmadd_ps(_mm512_cvtepi32_ps(c0), d, mn),
                        _mm512_fmadd_ps(_mm512_cvtepi32_ps(c1), d, mn),
                    ]
                } else {
                    let p = wc[i].add(b * BLOCK);
                    let c0 = _mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i));
                    let c1 = _mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(16) as *const __m128i));
                    [
                        _mm512_mul_ps(_mm512_cvtepi32_ps(c0), d),
                        _mm512_mul_ps(_mm512_cvtepi32_ps(c1), d),
                    ]
                };
            }
            let at = b * BLOCK;
            for j in 0..TM {
                let x0 = _mm512_loadu_ps(xs[j].add(at));
                let x1 = _mm512_loadu_ps(xs[j].add(at + 16));
                for i in 0..TN {
                    acc[i][j] =
                        _mm512_fmadd_ps(wv[i][1], x1, _mm512_fmadd_ps(wv[i][0], x0, acc[i][j]));
                }
            }
        }
        g += 16;
    }
    for i in 0..TN {
        for j in 0..TM {
            out[i * m + r0 + j] = _mm512_reduce_add_ps(acc[i][j]);
        }
    }
}
