//! Quantised weights for the token-by-token path (decode, and any matmul with few rows).
//!
//! Decode multiplies one row per sequence by every weight matrix, so its cost is reading the
//! weights: SmolLM2-135M's are 513 MB in f32 and 92 MB as the GGUF's Q4_1 + Q8_0 blocks.
//! [`QMatrix`] keeps a GGUF tensor's blocks bit for bit (re-laid out for SIMD), and
//! [`qmatmul`] multiplies f32 activations by it with the best exact kernel of
//! [`crate::kernels::cpu`], dequantising in registers, all rows of a batch in one pass over
//! the weights. On AVX-512 VNNI CPUs the model holds [`PackedMatrix`] instead (rows
//! interleaved in groups of 16): decode steps run [`qmatmul_packed`], integer dot products of
//! 16-bit activations ([`crate::kernels::cpu::q16`]), and prompt passes
//! [`qmatmul_packed_exact`] (f32 activations); [`DecodeMatrix`] is the one of the two layouts
//! a model keeps. (8-bit activations, llama.cpp's way, moved SmolLM2's first-token KL to ~1e-2
//! against f32.) Prefill keeps the f32 weights (many rows: a gemm wins there).

mod decode_matrix;
mod linear;
mod matrix;
mod packed;
mod weights;

pub use decode_matrix::DecodeMatrix;
pub use linear::{qmatmul, qmatmul_packed, qmatmul_packed_exact, qmatmul_with};
pub use matrix::{QMatrix, QuantFormat, BLOCK};
pub use packed::{PackedMatrix, GROUP};
pub use weights::{QuantLayerWeights, QuantWeights};
