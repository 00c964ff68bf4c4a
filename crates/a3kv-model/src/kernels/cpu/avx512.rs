//! AVX-512 kernel of the quantised matmul (Skylake-X and later, Zen 4/5).
//!
//! A tile of up to 4 weight rows × 4 activation rows at a time: per 32-value block, widen
//! each weight row's codes (`vpmovzxbd`/`vpmovsxbd` straight from memory) and dequantise in
//! registers (Q4_1: a 16-entry table `d·q + m` and `vpermps`; Q8_0: convert, scale), then two FMAs
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
    let cols = w.cols();
    // More activation rows than one tile: dequantise each group of weight rows once into
    // f32 (L1-resident) and run an f32 micro-kernel over all activation rows, instead of
    // unpacking the codes again for every tile of activation rows.
    let mut scratch = if m > MR {
        vec![0f32; NR * cols]
    } else {
        Vec::new()
    };
    let mut n = rows.start;
    while n < rows.end {
        let nr = (rows.end - n).min(NR);
        let o = &mut out[(n - rows.start) * m..];
        if m > MR {
            for i in 0..nr {
                let dst = &mut scratch[i * cols..][..cols];
                if q4 {
                    dequant_row::<true>(w, n + i, dst)
                } else {
                    dequant_row::<false>(w, n + i, dst)
                }
            }
        }
        let mut r = 0;
        while r < m {
            let mr = (m - r).min(MR);
            macro_rules! go {
                ($($a:literal $b:literal),*) => {
                    match (m > MR, q4, nr, mr) {
                        $((true, _, $a, $b) => f32_tile::<$a, $b>(&scratch, cols, x, m, r, o),
                          (false, true, $a, $b) => tile::<$a, $b, true>(w, x, m, n, r, o),
                          (false, false, $a, $b) => tile::<$a, $b, false>(w, x, m, n, r, o),)*
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

/// The lane sums of four vectors, `[Σa0, Σa1, Σa2, Σa3]`: one transpose-and-add tree
/// instead of four separate horizontal sums.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn reduce4(a0: __m512, a1: __m512, a2: __m512, a3: __m512) -> __m128 {
    // Per 128-bit chunk: [a0 a1 a0 a1] and [a2 a3 a2 a3] partial sums...
    let s01 = _mm512_add_ps(_mm512_unpacklo_ps(a0, a1), _mm512_unpackhi_ps(a0, a1));
    let s23 = _mm512_add_ps(_mm512_unpacklo_ps(a2, a3), _mm512_unpackhi_ps(a2, a3));
    // ... then [a0 a1 a2 a3] per chunk ...
    let t = _mm512_add_ps(
        _mm512_shuffle_ps(s01, s23, 0b01_00_01_00),
        _mm512_shuffle_ps(s01, s23, 0b11_10_11_10),
    );
    // ... then the four chunks added.
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(t), 1));
    let h = _mm256_add_ps(_mm512_castps512_ps256(t), hi);
    _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1))
}

/// Writes the lane sums of `acc[i][j]` to `out[i · m + r0 + j]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn store_sums<const TN: usize, const TM: usize>(
    acc: &[[__m512; TM]; TN],
    m: usize,
    r0: usize,
    out: &mut [f32],
) {
    for i in 0..TN {
        let o = &mut out[i * m + r0..][..TM];
        if TM == 4 {
            let v = reduce4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
            _mm_storeu_ps(o.as_mut_ptr(), v);
        } else {
            for j in 0..TM {
                o[j] = _mm512_reduce_add_ps(acc[i][j]);
            }
        }
    }
}

/// Dequantises weight row `n` into `dst` (`w.cols()` values).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn dequant_row<const Q4: bool>(w: &QMatrix, n: usize, dst: &mut [f32]) {
    let (wc, ws, wm) = (
        w.row_codes(n).as_ptr(),
        w.row_scales(n).as_ptr() as *const i16,
        w.row_mins(n).as_ptr() as *const i16,
    );
    let nibble = _mm512_set1_epi32(0x0F);
    let iota = _mm512_set_ps(
        15.0, 14.0, 13.0, 12.0, 11.0, 10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0,
    );
    let out = dst.as_mut_ptr();
    let blocks = w.cols() / BLOCK;
    let (mut dbuf, mut mbuf) = ([0f32; 16], [0f32; 16]);
    for g in (0..blocks).step_by(16) {
        let nb = (blocks - g).min(16);
        let k: __mmask16 = if nb == 16 { 0xFFFF } else { (1u16 << nb) - 1 };
        _mm512_storeu_ps(
            dbuf.as_mut_ptr(),
            _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, ws.add(g))),
        );
        if Q4 {
            _mm512_storeu_ps(
                mbuf.as_mut_ptr(),
                _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, wm.add(g))),
            );
        }
        for bi in 0..nb {
            let b = g + bi;
            let d = _mm512_set1_ps(dbuf[bi]);
            let [w0, w1] = if Q4 {
                // The block's 16 possible values `d·q + m`, looked up by code.
                let lut = _mm512_fmadd_ps(iota, d, _mm512_set1_ps(mbuf[bi]));
                let p = wc.add((b & !1) * BLOCK / 2);
                let z0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i));
                let z1 = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.add(16) as *const __m128i));
                let (c0, c1) = if b & 1 == 0 {
                    (_mm512_and_si512(z0, nibble), _mm512_and_si512(z1, nibble))
                } else {
                    (_mm512_srli_epi32(z0, 4), _mm512_srli_epi32(z1, 4))
                };
                [
                    _mm512_permutexvar_ps(c0, lut),
                    _mm512_permutexvar_ps(c1, lut),
                ]
            } else {
                let p = wc.add(b * BLOCK);
                let c0 = _mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i));
                let c1 = _mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(16) as *const __m128i));
                [
                    _mm512_mul_ps(_mm512_cvtepi32_ps(c0), d),
                    _mm512_mul_ps(_mm512_cvtepi32_ps(c1), d),
                ]
            };
            _mm512_storeu_ps(out.add(b * BLOCK), w0);
            _mm512_storeu_ps(out.add(b * BLOCK + 16), w1);
        }
    }
}

/// Dequantised weight rows `wd` (`TN` rows of `cols`) against activation rows
/// `r0..r0 + TM`: writes `out[i · m + r0 + j]`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn f32_tile<const TN: usize, const TM: usize>(
    wd: &[f32],
    cols: usize,
    x: &[f32],
    m: usize,
    r0: usize,
    out: &mut [f32],
) {
    let ws: [*const f32; TN] = std::array::from_fn(|i| wd[i * cols..][..cols].as_ptr());
    let xs: [*const f32; TM] = std::array::from_fn(|j| x[(r0 + j) * cols..][..cols].as_ptr());
    let mut acc = [[_mm512_setzero_ps(); TM]; TN];
    // `cols` is a multiple of 32 (whole blocks).
    for at in (0..cols).step_by(16) {
        // A loop, not `array::from_fn`: a closure would not inherit the target features.
        let mut wv = [_mm512_setzero_ps(); TN];
        for i in 0..TN {
            wv[i] = _mm512_loadu_ps(ws[i].add(at));
        }
        for j in 0..TM {
            let xv = _mm512_loadu_ps(xs[j].add(at));
            for i in 0..TN {
                acc[i][j] = _mm512_fmadd_ps(wv[i], xv, acc[i][j]);
            }
        }
    }
    store_sums(&acc, m, r0, out);
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
    let iota = _mm512_set_ps(
        15.0, 14.0, 13.0, 12.0, 11.0, 10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0,
    );
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
                    // The block's 16 possible values `d·q + m`, looked up by code.
                    let lut = _mm512_fmadd_ps(iota, d, _mm512_set1_ps(mbuf[i][bi]));
                    [
                        _mm512_permutexvar_ps(c0, lut),
                        _mm512_permutexvar_ps(c1, lut),
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
    store_sums(&acc, m, r0, out);
}
