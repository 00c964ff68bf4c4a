//! A quantised weight matrix `[rows, cols]` (rows = outputs, cols = inputs) in the layout the
//! CPU kernels read: per row, the 4- or 8-bit codes of its 32-value blocks, then the f16 block
//! scales (and, for Q4_1, the f16 block minimums) in separate arrays.
//!
//! Formats are GGML's, bit for bit, so a GGUF tensor keeps exactly the values its file holds:
//! - **Q4_1**: value = `d · q + m`, `q` in `0..16`. Codes of two consecutive blocks (64 values
//!   `v[0..64]`) are packed into 32 bytes as `v[i] | v[i + 32] << 4`, so one load + one shift
//!   yields the 64 codes in order.
//! - **Q8_0**: value = `d · q`, `q` in `-128..128`, stored as its two's-complement byte.
//!
//! Each row is padded with zero blocks to an even number of blocks (kernels step two blocks at a
//! time); padded blocks have zero scale, so they add nothing.

use half::f16;

use crate::{ModelError, Result};

/// Values per quantisation block.
pub const BLOCK: usize = 32;

/// The block formats the quantised path keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantFormat {
    /// GGML Q4_1: 4-bit codes, f16 scale and minimum per 32 values (20 bytes / 32 values).
    Q4_1,
    /// GGML Q8_0: 8-bit codes, f16 scale per 32 values (34 bytes / 32 values).
    Q8_0,
}

impl QuantFormat {
    /// GGML's name.
    pub fn as_str(&self) -> &'static str {
        match self {
            QuantFormat::Q4_1 => "q4_1",
            QuantFormat::Q8_0 => "q8_0",
        }
    }

    /// Bytes of one block in a GGUF file.
    pub fn ggml_block_bytes(&self) -> usize {
        match self {
            QuantFormat::Q4_1 => 20,
            QuantFormat::Q8_0 => 34,
        }
    }

    /// Code bytes per block in [`QMatrix`] (4-bit codes pack two per byte).
    pub fn code_bytes(&self) -> usize {
        match self {
            QuantFormat::Q4_1 => BLOCK / 2,
            QuantFormat::Q8_0 => BLOCK,
        }
    }
}

/// A quantised `[rows, cols]` matrix (see the module doc for the layout).
#[derive(Debug, Clone, PartialEq)]
pub struct QMatrix {
    format: QuantFormat,
    rows: usize,
    cols: usize,
    /// Blocks per row, padded to even.
    blocks: usize,
    /// Codes: `rows × blocks × code_bytes`.
    codes: Vec<u8>,
    /// f16 scales: `rows × blocks`.
    scales: Vec<f16>,
    /// f16 minimums (Q4_1 only; empty for Q8_0): `rows × blocks`.
    mins: Vec<f16>,
    /// Whether the blocks are a file's own ([`QMatrix::from_ggml`]), so their values are
    /// exactly the weights the f32 path reads; `false` when quantised here.
    file_blocks: bool,
}

fn bad(message: String) -> ModelError {
    ModelError::BadArgument(message)
}

impl QMatrix {
    fn empty(format: QuantFormat, rows: usize, cols: usize) -> Result<Self> {
        if cols == 0 || !cols.is_multiple_of(BLOCK) {
            return Err(bad(format!(
                "quantised matrix: {cols} columns is not a non-zero multiple of {BLOCK}"
            )));
        }
        let blocks = (cols / BLOCK).next_multiple_of(2);
        Ok(Self {
            format,
            rows,
            cols,
            blocks,
            codes: vec![0; rows * blocks * format.code_bytes()],
            scales: vec![f16::ZERO; rows * blocks],
            mins: match format {
                QuantFormat::Q4_1 => vec![f16::ZERO; rows * blocks],
                QuantFormat::Q8_0 => Vec::new(),
            },
            file_blocks: false,
        })
    }

    /// Builds from GGML blocks as stored in a GGUF file: `rows × cols / 32` blocks of
    /// `format`, row-major. Errors if `cols` is not a multiple of 32 or `data` has the wrong
    /// length.
    pub fn from_ggml(format: QuantFormat, rows: usize, cols: usize, data: &[u8]) -> Result<Self> {
        let mut m = Self::empty(format, rows, cols)?;
        let file_blocks = cols / BLOCK;
        let bb = format.ggml_block_bytes();
        if data.len() != rows * file_blocks * bb {
            return Err(bad(format!(
                "quantised matrix: {} bytes for {rows}x{cols} {}",
                data.len(),
                format.as_str()
            )));
        }
        for r in 0..rows {
            for b in 0..file_blocks {
                let blk = &data[(r * file_blocks + b) * bb..][..bb];
                let d = f16::from_le_bytes([blk[0], blk[1]]);
                match format {
                    QuantFormat::Q4_1 => {
                        let mn = f16::from_le_bytes([blk[2], blk[3]]);
                        // GGML: byte j holds value j (low nibble) and value j + 16 (high).
                        let mut q = [0u8; BLOCK];
                        for j in 0..BLOCK / 2 {
                            q[j] = blk[4 + j] & 0x0F;
                            q[j + BLOCK / 2] = blk[4 + j] >> 4;
                        }
                        m.set_block(r, b, d, mn, &q);
                    }
                    QuantFormat::Q8_0 => {
                        let mut q = [0u8; BLOCK];
                        q.copy_from_slice(&blk[2..]);
                        m.set_block(r, b, d, f16::ZERO, &q);
                    }
                }
            }
        }
        m.file_blocks = true;
        Ok(m)
    }

    /// Quantises a row-major f32 `[rows, cols]` matrix the way GGML's reference quantisers
    /// do (Q4_1: min/max per block; Q8_0: absmax / 127). Errors on a bad shape.
    pub fn quantize(format: QuantFormat, rows: usize, cols: usize, data: &[f32]) -> Result<Self> {
        let mut m = Self::empty(format, rows, cols)?;
        if data.len() != rows * cols {
            return Err(bad(format!(
                "quantise: {} values for {rows}x{cols}",
                data.len()
            )));
        }
        for r in 0..rows {
            for b in 0..cols / BLOCK {
                let x = &data[r * cols + b * BLOCK..][..BLOCK];
                let mut q = [0u8; BLOCK];
                match format {
                    QuantFormat::Q4_1 => {
                        let min = x.iter().copied().fold(f32::INFINITY, f32::min);
                        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let d = (max - min) / 15.0;
                        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                        for (o, &v) in q.iter_mut().zip(x) {
                            *o = ((v - min) * id + 0.5).clamp(0.0, 15.0) as u8;
                        }
                        m.set_block(r, b, f16::from_f32(d), f16::from_f32(min), &q);
                    }
                    QuantFormat::Q8_0 => {
                        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
                        let d = amax / 127.0;
                        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                        for (o, &v) in q.iter_mut().zip(x) {
                            *o = (v * id).round() as i8 as u8;
                        }
                        m.set_block(r, b, f16::from_f32(d), f16::ZERO, &q);
                    }
                }
            }
        }
        Ok(m)
    }

    /// Stores block `b` of row `r`: codes `q` (Q4_1: `0..16`; Q8_0: two's-complement bytes).
    fn set_block(&mut self, r: usize, b: usize, d: f16, mn: f16, q: &[u8; BLOCK]) {
        let i = r * self.blocks + b;
        self.scales[i] = d;
        match self.format {
            QuantFormat::Q4_1 => {
                self.mins[i] = mn;
                // Pair layout: byte j of the pair = v[j] | v[j + 32] << 4.
                let pair = &mut self.codes[(r * self.blocks + (b & !1)) * BLOCK / 2..][..BLOCK];
                let high = b & 1 == 1;
                for (j, &c) in q.iter().enumerate() {
                    if high {
                        pair[j] = (pair[j] & 0x0F) | (c << 4);
                    } else {
                        pair[j] = (pair[j] & 0xF0) | c;
                    }
                }
            }
            QuantFormat::Q8_0 => {
                self.codes[i * BLOCK..][..BLOCK].copy_from_slice(q);
            }
        }
    }

    /// The code of value `j` (`0..cols`) of row `r`: Q4_1 `0..16`, Q8_0 `-128..128`.
    pub fn code(&self, r: usize, j: usize) -> i32 {
        match self.format {
            QuantFormat::Q4_1 => {
                let (pair, within) = (j / (2 * BLOCK), j % (2 * BLOCK));
                let byte = self.codes[r * self.blocks * BLOCK / 2 + pair * BLOCK + within % BLOCK];
                if within < BLOCK {
                    (byte & 0x0F) as i32
                } else {
                    (byte >> 4) as i32
                }
            }
            QuantFormat::Q8_0 => self.codes[r * self.blocks * BLOCK + j] as i8 as i32,
        }
    }

    /// Stacks matrices with the same format and column count (fused q|k|v, gate|up).
    pub fn concat_rows(parts: &[&QMatrix]) -> Result<Self> {
        let first = parts
            .first()
            .ok_or_else(|| bad("concat of no matrices".into()))?;
        if parts
            .iter()
            .any(|p| p.format != first.format || p.cols != first.cols)
        {
            return Err(bad(
                "concat: quantised matrices differ in format or columns".into(),
            ));
        }
        let mut out = first.as_ref().clone();
        out.file_blocks = parts.iter().all(|p| p.file_blocks);
        for p in &parts[1..] {
            out.rows += p.rows;
            out.codes.extend_from_slice(&p.codes);
            out.scales.extend_from_slice(&p.scales);
            out.mins.extend_from_slice(&p.mins);
        }
        Ok(out)
    }

    /// Dequantised values, row-major `[rows, cols]` (the exact weights the kernels multiply).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols.max(1)).enumerate() {
            self.dequantize_row(r, row);
        }
        out
    }

    /// Dequantised values of row `r` into `out` (`cols` long).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        for (j, o) in out.iter_mut().enumerate().take(self.cols) {
            let i = r * self.blocks + j / BLOCK;
            *o = dequantize_value(
                self.format,
                self.code(r, j),
                self.scales[i],
                self.mins.get(i).copied(),
            );
        }
    }

    /// Block format.
    pub fn format(&self) -> QuantFormat {
        self.format
    }

    /// Whether the blocks are a file's own (so their values are the f32 path's weights),
    /// not quantised here from other values.
    pub fn file_blocks(&self) -> bool {
        self.file_blocks
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input columns (unpadded).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Blocks per row, padded to even.
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// Code bytes of row `r` (`blocks × code_bytes`).
    pub fn row_codes(&self, r: usize) -> &[u8] {
        let n = self.blocks * self.format.code_bytes();
        &self.codes[r * n..][..n]
    }

    /// Scales of row `r` (`blocks`).
    pub fn row_scales(&self, r: usize) -> &[f16] {
        &self.scales[r * self.blocks..][..self.blocks]
    }

    /// Minimums of row `r` (`blocks`; empty for Q8_0).
    pub fn row_mins(&self, r: usize) -> &[f16] {
        if self.mins.is_empty() {
            return &[];
        }
        &self.mins[r * self.blocks..][..self.blocks]
    }

    /// Bytes a matrix-vector product reads.
    pub fn size_bytes(&self) -> usize {
        self.codes.len() + 2 * (self.scales.len() + self.mins.len())
    }
}

/// One weight from its code, its block's scale and (Q4_1) minimum: the value both layouts'
/// dequantisers and the f32 path agree on bit for bit (`q·d` is exact in f32, so the fused
/// multiply-add rounds once, as `q·d + m` does).
pub(crate) fn dequantize_value(format: QuantFormat, q: i32, d: f16, m: Option<f16>) -> f32 {
    match format {
        QuantFormat::Q4_1 => (q as f32).mul_add(d.to_f32(), m.map_or(0.0, f16::to_f32)),
        QuantFormat::Q8_0 => d.to_f32() * q as f32,
    }
}

impl AsRef<QMatrix> for QMatrix {
    fn as_ref(&self) -> &QMatrix {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ggml_q4_1_block(d: f32, m: f32, q: &[u8; 32]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        b.extend_from_slice(&f16::from_f32(m).to_le_bytes());
        for j in 0..16 {
            b.push(q[j] | (q[j + 16] << 4));
        }
        b
    }

    #[test]
    fn ggml_blocks_decode_to_ggml_values() {
        // Two rows of three blocks (odd: one padded block per row).
        let mut data = Vec::new();
        let mut want = Vec::new();
        for r in 0..2 {
            for b in 0..3 {
                let q: [u8; 32] = std::array::from_fn(|j| ((j * 7 + b * 3 + r) % 16) as u8);
                let (d, m) = (0.5 + b as f32, -1.0 - r as f32);
                data.extend(ggml_q4_1_block(d, m, &q));
                want.extend(q.iter().map(|&c| d * c as f32 + m));
            }
        }
        let qm = QMatrix::from_ggml(QuantFormat::Q4_1, 2, 96, &data).unwrap();
        assert_eq!(qm.blocks(), 4);
        assert_eq!(qm.dequantize(), want);

        let mut data = Vec::new();
        let mut want = Vec::new();
        for b in 0..2 {
            data.extend_from_slice(&f16::from_f32(0.25).to_le_bytes());
            for j in 0..32 {
                let q = (j * 9 - 128 + b) as i8;
                data.push(q as u8);
                want.push(0.25 * q as f32);
            }
        }
        let qm = QMatrix::from_ggml(QuantFormat::Q8_0, 1, 64, &data).unwrap();
        assert_eq!(qm.dequantize(), want);
    }

    #[test]
    fn quantize_is_close_and_concat_stacks_rows() {
        let x: Vec<f32> = (0..3 * 64)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        for (f, tol) in [(QuantFormat::Q4_1, 0.5), (QuantFormat::Q8_0, 0.04)] {
            let q = QMatrix::quantize(f, 3, 64, &x).unwrap();
            let err = q
                .dequantize()
                .iter()
                .zip(&x)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < tol, "{f:?}: {err}");
            let a = QMatrix::quantize(f, 1, 64, &x[..64]).unwrap();
            let b = QMatrix::quantize(f, 2, 64, &x[64..]).unwrap();
            assert_eq!(QMatrix::concat_rows(&[&a, &b]).unwrap(), q);
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(QMatrix::quantize(QuantFormat::Q8_0, 1, 33, &[0.0; 33]).is_err());
        assert!(QMatrix::quantize(QuantFormat::Q8_0, 1, 32, &[0.0; 31]).is_err());
        assert!(QMatrix::from_ggml(QuantFormat::Q4_1, 1, 32, &[0; 19]).is_err());
        let a = QMatrix::quantize(QuantFormat::Q8_0, 1, 32, &[0.0; 32]).unwrap();
        let b = QMatrix::quantize(QuantFormat::Q4_1, 1, 32, &[0.0; 32]).unwrap();
        assert!(QMatrix::concat_rows(&[&a, &b]).is_err());
    }
}
