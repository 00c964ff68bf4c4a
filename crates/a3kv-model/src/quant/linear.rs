//! `x · Wᵀ` for a quantised `W` on candle tensors: split `W`'s rows over the rayon pool, run
//! the kernel on all rows of `x` at once, and hand back `[m, rows]`.
//!
//! ```
//! use a3kv_model::quant::{qmatmul, QMatrix, QuantFormat};
//! use a3kv_model::{Device, Tensor};
//! let w = QMatrix::quantize(QuantFormat::Q8_0, 3, 64, &[0.5; 192]).unwrap(); // W [3, 64]
//! let x = Tensor::ones((2, 64), a3kv_model::DType::F32, &Device::Cpu).unwrap(); // x [2, 64]
//! let y = qmatmul(&x, &w).unwrap(); // y [2, 3]
//! assert_eq!(y.dims(), &[2, 3]);
//! // Q8_0 keeps its block scale in f16: 64 · 0.5 comes back as 31.998.
//! assert!((y.to_vec2::<f32>().unwrap()[1][2] - 32.0).abs() < 1e-2);
//! ```

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{PackedMatrix, QMatrix, GROUP};
use crate::cpu_ops::contiguous_f32;
use crate::kernels::cpu::{packed_exact, q16, qmatmul_rows, Isa};
use crate::{ModelError, Result};

/// Below this many multiply-adds a product runs on the calling thread: waking the pool
/// costs more than it saves (measured with `a3kv bench decode --kernels`).
pub const PARALLEL_MIN_MACS: usize = 1 << 16;

/// Weight rows per parallel task, at least (keeps a task's weights a few KB).
const MIN_ROWS_PER_TASK: usize = 16;

/// The output `[m, rows]` shared by the tasks of one product; each task writes the columns
/// of its own weight rows only.
struct SharedOut {
    ptr: *mut f32,
    rows: usize,
    m: usize,
}

// SAFETY: tasks write disjoint elements (their own columns), and the buffer outlives them.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Writes `src` to output row `r`, columns `first..first + src.len()`.
    fn store_row_part(&self, r: usize, first: usize, src: &[f32]) {
        assert!(
            r < self.m && first + src.len() <= self.rows,
            "qmatmul: past the output"
        );
        // SAFETY: in bounds (checked above) and this task's own columns.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr(),
                self.ptr.add(r * self.rows + first),
                src.len(),
            )
        };
    }

    /// Writes weight rows `start..start + len` from the kernel's `[len, m]` order.
    fn store(&self, start: usize, local: &[f32]) {
        let len = local.len() / self.m;
        assert!(start + len <= self.rows, "qmatmul: columns past the output");
        for r in 0..self.m {
            for n in 0..len {
                // SAFETY: in bounds (checked above: r < m, start + n < rows) and this
                // task's own columns.
                unsafe { *self.ptr.add(r * self.rows + start + n) = local[n * self.m + r] };
            }
        }
    }
}

/// `out [m, w.rows()] = x [m, w.cols()] · Wᵀ`, row-major, with `isa`'s exact kernel.
fn product(isa: Isa, w: &QMatrix, x: &[f32], m: usize) -> Result<Vec<f32>> {
    if x.len() != m * w.cols() {
        return Err(ModelError::BadArgument(format!(
            "qmatmul: {} activations for [{m}, {}]",
            x.len(),
            w.cols()
        )));
    }
    Ok(split(w, m, |r, o| qmatmul_rows(isa, w, x, m, r, o)))
}

/// Runs `kernel(weight rows, out [len, m])` over `w`'s rows, split over the rayon pool when
/// the product is large enough, and returns `[m, w.rows()]`.
fn split(
    w: &QMatrix,
    m: usize,
    kernel: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync,
) -> Vec<f32> {
    let rows = w.rows();
    let mut out = vec![0f32; rows * m];
    let threads = rayon::current_num_threads();
    if m == 1 {
        // The kernel's [rows, 1] order is the output's.
        if threads > 1 && rows * w.cols() >= PARALLEL_MIN_MACS {
            let per_task = rows.div_ceil(4 * threads).max(MIN_ROWS_PER_TASK);
            out.par_chunks_mut(per_task).enumerate().for_each(|(t, o)| {
                let start = t * per_task;
                kernel(start..start + o.len(), o)
            });
        } else {
            kernel(0..rows, &mut out);
        }
        return out;
    }
    let shared = SharedOut {
        ptr: out.as_mut_ptr(),
        rows,
        m,
    };
    let task = |start: usize, end: usize| {
        // The kernel writes weight-row-major [len, m]; the output is [m, rows].
        let mut local = vec![0f32; (end - start) * m];
        kernel(start..end, &mut local);
        shared.store(start, &local);
    };
    if threads > 1 && rows * w.cols() * m >= PARALLEL_MIN_MACS {
        // A few tasks per thread: an even split when one core is busy with something else.
        let per_task = rows.div_ceil(4 * threads).max(MIN_ROWS_PER_TASK);
        (0..rows.div_ceil(per_task))
            .into_par_iter()
            .for_each(|t| task(t * per_task, ((t + 1) * per_task).min(rows)));
    } else {
        task(0, rows);
    }
    out
}

/// `x [m, w.cols()] · Wᵀ` on the interleaved layout, groups of 16 rows split over the rayon
/// pool: integer dot products of 16-bit activations (quantised once, [`q16::qmatmul_packed`])
/// when `integer`, else exact f32 products ([`qmatmul_packed_exact`](crate::kernels::cpu::packed_exact::qmatmul_packed_exact)).
fn packed_product(w: &PackedMatrix, x: &[f32], m: usize, integer: bool) -> Result<Vec<f32>> {
    if x.len() != m * w.cols() {
        return Err(ModelError::BadArgument(format!(
            "qmatmul: {} activations for [{m}, {}]",
            x.len(),
            w.cols()
        )));
    }
    let acts = integer.then(|| q16::ActQ16::quantize(x, m, w.cols()));
    let kernel = |groups: std::ops::Range<usize>, out: &mut [f32]| match &acts {
        Some(acts) => q16::qmatmul_packed(w, acts, groups, out),
        None => packed_exact::qmatmul_packed_exact(w, x, m, groups, out),
    };
    let (rows, groups) = (w.rows(), w.groups());
    let threads = rayon::current_num_threads();
    let per_task = groups.div_ceil(4 * threads).max(1);
    let parallel = threads > 1 && rows * w.cols() * m >= PARALLEL_MIN_MACS;
    if m == 1 {
        // The kernel's [1, 16·groups] is the output, padded to whole groups.
        let mut out = vec![0f32; groups * GROUP];
        if parallel {
            out.par_chunks_mut(per_task * GROUP)
                .enumerate()
                .for_each(|(t, o)| {
                    let start = t * per_task;
                    kernel(start..start + o.len() / GROUP, o)
                });
        } else {
            kernel(0..groups, &mut out);
        }
        out.truncate(rows);
        return Ok(out);
    }
    let mut out = vec![0f32; m * rows];
    let shared = SharedOut {
        ptr: out.as_mut_ptr(),
        rows,
        m,
    };
    let task = |start: usize, end: usize| {
        let len = (end - start) * GROUP;
        let mut local = vec![0f32; m * len];
        kernel(start..end, &mut local);
        let first = start * GROUP;
        let keep = len.min(rows - first);
        for j in 0..m {
            shared.store_row_part(j, first, &local[j * len..][..keep]);
        }
    };
    if parallel {
        (0..groups.div_ceil(per_task))
            .into_par_iter()
            .for_each(|t| task(t * per_task, ((t + 1) * per_task).min(groups)));
    } else {
        task(0, groups);
    }
    Ok(out)
}

/// `x · Wᵀ` on the interleaved layout: integer dot products of 16-bit activations, 16
/// weight rows per instruction ([`q16::qmatmul_packed`]; plain Rust without AVX-512 VNNI).
/// Decode only: the activations' rounding is its price. Errors as [`qmatmul`].
pub fn qmatmul_packed(x: &Tensor, w: &PackedMatrix) -> Result<Tensor> {
    apply(x, w.rows(), w.cols(), &QMatMul(Kernel::Packed(w, true)))
}

/// `x · Wᵀ` on the interleaved layout with exact f32 products of the dequantised weights
/// ([`packed_exact`]), as [`qmatmul`] computes them on the row-major layout. Errors as
/// [`qmatmul`].
pub fn qmatmul_packed_exact(x: &Tensor, w: &PackedMatrix) -> Result<Tensor> {
    apply(x, w.rows(), w.cols(), &QMatMul(Kernel::Packed(w, false)))
}

/// Checks `x` against a `[rows, cols]` matrix, runs `op` on it in f32 and hands the result
/// back in `x`'s dtype.
fn apply(x: &Tensor, rows: usize, cols: usize, op: &impl CustomOp1) -> Result<Tensor> {
    let (_, k) = x.dims2()?;
    if k != cols {
        return Err(ModelError::BadArgument(format!(
            "qmatmul: x {:?} by a [{rows}, {cols}] matrix",
            x.dims(),
        )));
    }
    if !x.device().is_cpu() {
        return Err(ModelError::BadArgument(
            "qmatmul: quantised weights run on the CPU only".into(),
        ));
    }
    let dtype = x.dtype();
    let y = x.to_dtype(DType::F32)?.contiguous()?.apply_op1_no_bwd(op)?;
    Ok(y.to_dtype(dtype)?)
}

/// The weights of a product and the kernel that reads them.
#[derive(Clone, Copy)]
enum Kernel<'a> {
    /// Row-major blocks, an exact kernel.
    Exact(&'a QMatrix, Isa),
    /// Interleaved rows: the integer kernel when `true`, else the exact one.
    Packed(&'a PackedMatrix, bool),
}

struct QMatMul<'a>(Kernel<'a>);

impl CustomOp1 for QMatMul<'_> {
    fn name(&self) -> &'static str {
        "a3kv-qmatmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32("qmatmul", storage, layout)?;
        let (m, _) = layout.shape().dims2()?;
        let (out, rows) = match self.0 {
            Kernel::Exact(w, isa) => (product(isa, w, x, m), w.rows()),
            Kernel::Packed(w, integer) => (packed_product(w, x, m, integer), w.rows()),
        };
        let out = out.map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok((CpuStorage::F32(out), Shape::from((m, rows))))
    }
}

/// `x · Wᵀ`: `x` `[m, w.cols()]` (any float dtype, CPU) → `[m, w.rows()]` in `x`'s dtype,
/// with the fastest exact kernel this CPU runs (the dequantised weights times f32
/// activations). Errors on a shape mismatch or a non-CPU tensor.
pub fn qmatmul(x: &Tensor, w: &QMatrix) -> Result<Tensor> {
    qmatmul_with(x, w, Isa::detect())
}

/// `x · Wᵀ` with a chosen exact kernel (the reference twin when `isa` is not available).
pub fn qmatmul_with(x: &Tensor, w: &QMatrix, isa: Isa) -> Result<Tensor> {
    apply(x, w.rows(), w.cols(), &QMatMul(Kernel::Exact(w, isa)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::QuantFormat;
    use candle_core::Device;

    #[test]
    fn tensor_product_matches_dequantised_matmul() {
        let (rows, cols) = (300, 128);
        let wf: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0) - 0.5)
            .collect();
        let w = QMatrix::quantize(QuantFormat::Q4_1, rows, cols, &wf).unwrap();
        let wd = Tensor::from_vec(w.dequantize(), (rows, cols), &Device::Cpu).unwrap();
        // 9 rows × 300 × 128 is past PARALLEL_MIN_MACS: the split path runs too.
        for m in [1, 9] {
            let x = Tensor::randn(0f32, 1.0, (m, cols), &Device::Cpu).unwrap();
            let got = qmatmul_with(&x, &w, Isa::detect()).unwrap();
            let want = x.matmul(&wd.t().unwrap()).unwrap();
            assert_eq!(got.dims(), &[m, rows]);
            let err = (got - &want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let scale = want
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(err < 1e-5 * scale, "{err} vs scale {scale}");
        }
        let bad = Tensor::zeros((1, 64), DType::F32, &Device::Cpu).unwrap();
        assert!(qmatmul(&bad, &w).is_err());
    }

    /// The interleaved product (the split over groups, padding rows cut off) within the
    /// activations' rounding of the exact product (≤ 1/65534 of each block's largest value).
    #[test]
    fn packed_product_is_within_the_activation_rounding() {
        let (rows, cols) = (300, 576);
        let wf: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0) - 0.5)
            .collect();
        let w = QMatrix::quantize(QuantFormat::Q4_1, rows, cols, &wf).unwrap();
        let p = PackedMatrix::pack(&w);
        for m in [1, 3, 17] {
            let x = Tensor::randn(0f32, 1.0, (m, cols), &Device::Cpu).unwrap();
            let got: Vec<Vec<f32>> = qmatmul_packed(&x, &p).unwrap().to_vec2().unwrap();
            let exact: Vec<Vec<f32>> = qmatmul_with(&x, &w, Isa::Scalar)
                .unwrap()
                .to_vec2()
                .unwrap();
            let xs: Vec<Vec<f32>> = x.to_vec2().unwrap();
            let wd = w.dequantize();
            for r in 0..m {
                for n in 0..rows {
                    let bound: f32 = (0..cols)
                        .map(|j| {
                            let b = j / 32;
                            let amax = xs[r][b * 32..][..32]
                                .iter()
                                .fold(0f32, |a, v| a.max(v.abs()));
                            wd[n * cols + j].abs() * amax / 65534.0 + 1e-6
                        })
                        .sum();
                    assert!((got[r][n] - exact[r][n]).abs() <= bound, "row {r}, out {n}");
                }
            }
        }
    }
}
