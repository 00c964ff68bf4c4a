//! CPU kernels of the quantised matmul (`x · Wᵀ` with `W` a [`QMatrix`] dequantised in
//! registers, `x` f32): AVX-512, AVX2, and the plain-Rust [`reference`] twin. [`Isa::detect`]
//! picks the best one the CPU runs, once. Also: [`attention`] of a few query rows over a
//! cache, [`flash`] attention for prefill (query and key tiles, online softmax), the [`softmax_mass`] a row puts on leading keys, and [`on_pool`] to run a decode step on the rayon pool.

use std::ops::Range;
use std::sync::OnceLock;

use crate::quant::QMatrix;

pub mod attention;
#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
pub mod flash;
pub mod kv_elem;
pub mod packed_exact;
pub mod q16;
pub mod reference;
pub mod softmax_mass;

/// Runs `f` on a worker of the rayon pool (inline when already on one). A decode step is
/// many small parallel ops; from a foreign thread each would be a hand-off to the pool and
/// back, from a worker they are cheap.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// An instruction set a kernel is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 F/BW/VL.
    Avx512,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// Plain Rust (the reference twin).
    Scalar,
}

impl Isa {
    /// The fastest kernel this CPU runs (detected once).
    pub fn detect() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            Isa::all()
                .into_iter()
                .find(|i| i.available())
                .unwrap_or(Isa::Scalar)
        })
    }

    /// Every kernel, fastest first.
    pub fn all() -> [Isa; 3] {
        [Isa::Avx512, Isa::Avx2, Isa::Scalar]
    }

    /// Whether this CPU runs the kernel.
    pub fn available(&self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => avx512::available(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::available(),
            Isa::Scalar => true,
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Name for reports.
    pub fn as_str(&self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Scalar => "scalar",
        }
    }
}

/// Writes `out[(n - rows.start) · m + r] = Σ_j W[n, j] · x[r · cols + j]` for weight rows
/// `n` in `rows` and activation rows `r < m` (`x` is `[m, w.cols()]` row-major), with
/// `isa`'s kernel (the reference when `isa` is not [`Isa::available`]).
///
/// Panics if `x` is not `m · w.cols()` long, `rows` is past `w.rows()`, or `out` is shorter
/// than `rows.len() · m` (callers size these from the same matrix).
pub fn qmatmul_rows(
    isa: Isa,
    w: &QMatrix,
    x: &[f32],
    m: usize,
    rows: Range<usize>,
    out: &mut [f32],
) {
    assert_eq!(
        x.len(),
        m * w.cols(),
        "qmatmul: activations are not [m, cols]"
    );
    assert!(rows.end <= w.rows(), "qmatmul: rows past the matrix");
    assert!(out.len() >= rows.len() * m, "qmatmul: output too short");
    match isa {
        // SAFETY: `available` checked the CPU features each kernel is compiled for; the
        // shapes are checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if avx512::available() => unsafe { avx512::qmatmul_rows(w, x, m, rows, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if avx2::available() => unsafe { avx2::qmatmul_rows(w, x, m, rows, out) },
        _ => reference::qmatmul_rows(w, x, m, rows, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::QuantFormat;

    use crate::testing::pattern_values as data;

    #[test]
    fn every_kernel_matches_the_reference_twin() {
        // 18 blocks (the 576-wide SmolLM2 rows: one 16-block group + a 2-block tail),
        // 48 blocks (the 1536-wide down projection), and an odd count (a padded pair).
        for (rows, cols) in [(37, 576), (9, 1536), (5, 96)] {
            for format in [QuantFormat::Q4_1, QuantFormat::Q8_0] {
                let w = QMatrix::quantize(format, rows, cols, &data(rows * cols, 1)).unwrap();
                let wd = w.dequantize();
                for m in [1, 2, 3, 4, 7, 9, 16] {
                    let mut x = data(m * cols, 7 + m as u32);
                    x[3] = 40.0; // an outlier channel, as real activations have
                    let mut want = vec![0f32; rows * m];
                    reference::qmatmul_rows(&w, &x, m, 0..rows, &mut want);
                    for isa in Isa::all().into_iter().filter(|i| i.available()) {
                        // A sub-range of weight rows, as the parallel split hands out.
                        let mut got = vec![0f32; (rows - 1) * m];
                        qmatmul_rows(isa, &w, &x, m, 1..rows, &mut got);
                        for (i, (g, e)) in got.iter().zip(&want[m..]).enumerate() {
                            let (n, r) = (1 + i / m, i % m);
                            // f32 rounding of a sum in another order: relative to Σ|w·x|.
                            let mag: f32 = (0..cols)
                                .map(|j| (wd[n * cols + j] * x[r * cols + j]).abs())
                                .sum();
                            assert!(
                                (g - e).abs() <= 1e-5 * mag,
                                "{isa:?} {format:?} {rows}x{cols} m={m} at {i}: {g} vs {e}"
                            );
                        }
                    }
                }
            }
        }
    }
}
