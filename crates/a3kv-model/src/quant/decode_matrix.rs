//! A quantised weight in the layout this CPU's fastest kernel reads: row-major blocks
//! ([`QMatrix`], the exact kernels of [`crate::kernels::cpu`]) or groups of 16 interleaved
//! rows ([`PackedMatrix`], integer dot products of 16-bit activations on AVX-512 VNNI).
//!
//! A model keeps one of the two per matrix, chosen once at load ([`DecodeMatrix::for_this_cpu`]),
//! so the weights are held once. Decode steps may round their activations to 16 bits
//! ([`DecodeMatrix::matmul_decode`]); prompt passes never do ([`DecodeMatrix::matmul_exact`]).

use candle_core::Tensor;

use super::{qmatmul, qmatmul_packed, qmatmul_packed_exact, PackedMatrix, QMatrix};
use crate::kernels::cpu::q16;
use crate::Result;

/// One quantised `[rows, cols]` weight matrix (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeMatrix {
    /// Row-major blocks: exact kernels (dequantised weights × f32 activations).
    Rows(QMatrix),
    /// Groups of 16 interleaved rows: the integer kernel.
    Packed(PackedMatrix),
}

impl DecodeMatrix {
    /// `w` in the layout of the fastest kernel this CPU runs: packed where AVX-512 VNNI
    /// is present (measured 1.5x–2.3x faster than the row-major kernels at 1–16 rows,
    /// `a3kv bench decode --kernels`), row-major otherwise.
    pub fn for_this_cpu(w: QMatrix) -> Self {
        if q16::available() {
            DecodeMatrix::Packed(PackedMatrix::pack(&w))
        } else {
            DecodeMatrix::Rows(w)
        }
    }

    /// `x [m, cols] · Wᵀ → [m, rows]` in `x`'s dtype for a decode step: on the packed layout
    /// integer dot products of 16-bit activations (first-token KL ~2e-7 against f32 on
    /// SmolLM2), else the exact kernel.
    pub fn matmul_decode(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            DecodeMatrix::Rows(w) => qmatmul(x, w),
            DecodeMatrix::Packed(w) => qmatmul_packed(x, w),
        }
    }

    /// `x [m, cols] · Wᵀ → [m, rows]` for prompt rows: exact f32 products of the dequantised
    /// weights on either layout, so what a prompt pass computes (and stores) does not depend
    /// on the CPU's layout or on the number of rows.
    pub fn matmul_exact(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            DecodeMatrix::Rows(w) => qmatmul(x, w),
            DecodeMatrix::Packed(w) => qmatmul_packed_exact(x, w),
        }
    }

    /// Whether the blocks are a file's own, so exact products on them equal the f32 path's
    /// ([`QMatrix::file_blocks`]).
    pub fn file_blocks(&self) -> bool {
        match self {
            DecodeMatrix::Rows(w) => w.file_blocks(),
            DecodeMatrix::Packed(w) => w.file_blocks(),
        }
    }

    /// Dequantised values of row `r` into `out` (`cols` long); the same on either layout.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        match self {
            DecodeMatrix::Rows(w) => w.dequantize_row(r, out),
            DecodeMatrix::Packed(w) => w.dequantize_row(r, out),
        }
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        match self {
            DecodeMatrix::Rows(w) => w.rows(),
            DecodeMatrix::Packed(w) => w.rows(),
        }
    }

    /// Input columns.
    pub fn cols(&self) -> usize {
        match self {
            DecodeMatrix::Rows(w) => w.cols(),
            DecodeMatrix::Packed(w) => w.cols(),
        }
    }

    /// Bytes a matrix-vector product reads.
    pub fn size_bytes(&self) -> usize {
        match self {
            DecodeMatrix::Rows(w) => w.size_bytes(),
            DecodeMatrix::Packed(w) => w.size_bytes(),
        }
    }
}
