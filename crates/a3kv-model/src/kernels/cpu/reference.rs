//! Plain-Rust reference twin of the quantised matmul kernels: dequantise the weight row
//! ([`QMatrix::dequantize`]'s values) and take the f32 dot product with each activation row,
//! in index order. The SIMD kernels compute the same sums in another order.

use std::ops::Range;

use crate::quant::{QMatrix, QuantFormat, BLOCK};

/// Writes `out[(n - rows.start) · m + r] = Σ_j W[n, j] · x[r · cols + j]` for weight rows `n`
/// in `rows` and activation rows `r < m` (`x` is `[m, w.cols()]`).
pub fn qmatmul_rows(w: &QMatrix, x: &[f32], m: usize, rows: Range<usize>, out: &mut [f32]) {
    let cols = w.cols();
    let mut wrow = vec![0f32; cols];
    for (i, n) in rows.enumerate() {
        let (ws, wm) = (w.row_scales(n), w.row_mins(n));
        for (j, v) in wrow.iter_mut().enumerate() {
            let d = ws[j / BLOCK].to_f32();
            let q = w.code(n, j) as f32;
            *v = match w.format() {
                QuantFormat::Q4_1 => q.mul_add(d, wm[j / BLOCK].to_f32()),
                QuantFormat::Q8_0 => q * d,
            };
        }
        for r in 0..m {
            let xr = &x[r * cols..][..cols];
            out[i * m + r] = wrow.iter().zip(xr).map(|(a, b)| a * b).sum();
        }
    }
}
