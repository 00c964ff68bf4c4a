//! A quantised matrix with its rows interleaved in groups of 16, the layout of the integer
//! decode kernel ([`crate::kernels::cpu::q16::qmatmul_packed`]).
//!
//! The row-major layout ([`QMatrix`]) makes a kernel reduce each 32-value block of each row
//! to one number: widen, multiply, then a horizontal sum or a per-block conversion and scale.
//! Here one 512-bit register holds the same two consecutive values of **16 rows**, so one
//! `vpdpwssd` against one broadcast activation pair advances 16 row sums at once; sixteen of
//! them finish a block for 16 rows with no horizontal work, and the block's 16 scales apply
//! as one vector (llama.cpp repacks its weights the same way, `block_q4_0x8`).
//!
//! Per group of 16 rows `g` and block `b`, `group_block_codes(g, b)` holds:
//! - **Q4_1**: 8 chunks of 32 bytes; chunk `c`, byte `2r + e` = code of value `32b + 2c + e`
//!   of row `16g + r` (low nibble) and of value `32b + 2c + 16 + e` (high nibble);
//! - **Q8_0**: 16 chunks of 32 bytes; chunk `k`, byte `2r + e` = code of value `32b + 2k + e`.
//!
//! and `group_block_scales(g, b)` (`group_block_mins` for Q4_1) the 16 rows' f16 values.
//! Rows past the matrix (the last group's padding) have zero codes and zero scales.

use half::f16;

use super::matrix::dequantize_value;
use super::{QMatrix, QuantFormat, BLOCK};

/// Rows per group.
pub const GROUP: usize = 16;

/// A quantised `[rows, cols]` matrix in groups of 16 interleaved rows (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct PackedMatrix {
    format: QuantFormat,
    rows: usize,
    cols: usize,
    /// Blocks per row (`cols / 32`, not padded).
    blocks: usize,
    /// `groups × blocks × group_code_bytes`.
    codes: Vec<u8>,
    /// `groups × blocks × 16`.
    scales: Vec<f16>,
    /// `groups × blocks × 16` (Q4_1 only; empty for Q8_0).
    mins: Vec<f16>,
    /// As [`QMatrix::file_blocks`].
    file_blocks: bool,
}

impl PackedMatrix {
    /// Code bytes of one (group, block): 16 rows × 32 codes.
    fn group_code_bytes(format: QuantFormat) -> usize {
        GROUP * format.code_bytes()
    }

    /// Re-lays out `w`'s blocks (the values are `w`'s, bit for bit).
    pub fn pack(w: &QMatrix) -> Self {
        let (format, rows, cols) = (w.format(), w.rows(), w.cols());
        let blocks = cols / BLOCK;
        let groups = rows.div_ceil(GROUP);
        let gcb = Self::group_code_bytes(format);
        let mut p = PackedMatrix {
            format,
            rows,
            cols,
            blocks,
            codes: vec![0; groups * blocks * gcb],
            scales: vec![f16::ZERO; groups * blocks * GROUP],
            mins: match format {
                QuantFormat::Q4_1 => vec![f16::ZERO; groups * blocks * GROUP],
                QuantFormat::Q8_0 => Vec::new(),
            },
            file_blocks: w.file_blocks(),
        };
        for n in 0..rows {
            let (g, r) = (n / GROUP, n % GROUP);
            let (ws, wm) = (w.row_scales(n), w.row_mins(n));
            for b in 0..blocks {
                let gb = g * blocks + b;
                p.scales[gb * GROUP + r] = ws[b];
                if format == QuantFormat::Q4_1 {
                    p.mins[gb * GROUP + r] = wm[b];
                }
                let dst = &mut p.codes[gb * gcb..][..gcb];
                for e in 0..2 {
                    match format {
                        QuantFormat::Q4_1 => {
                            for c in 0..8 {
                                let lo = w.code(n, b * BLOCK + 2 * c + e) as u8;
                                let hi = w.code(n, b * BLOCK + 2 * c + 16 + e) as u8;
                                dst[c * 32 + 2 * r + e] = lo | (hi << 4);
                            }
                        }
                        QuantFormat::Q8_0 => {
                            for k in 0..16 {
                                dst[k * 32 + 2 * r + e] = w.code(n, b * BLOCK + 2 * k + e) as u8;
                            }
                        }
                    }
                }
            }
        }
        p
    }

    /// Block format.
    pub fn format(&self) -> QuantFormat {
        self.format
    }

    /// As [`QMatrix::file_blocks`].
    pub fn file_blocks(&self) -> bool {
        self.file_blocks
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Blocks per row.
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// Groups of 16 rows (the last one padded).
    pub fn groups(&self) -> usize {
        self.rows.div_ceil(GROUP)
    }

    /// The codes of group `g`, all blocks in order (`blocks × 256` bytes for Q4_1, `× 512`
    /// for Q8_0).
    pub fn group_codes(&self, g: usize) -> &[u8] {
        let n = self.blocks * Self::group_code_bytes(self.format);
        &self.codes[g * n..][..n]
    }

    /// The 16 rows' scales of group `g`, block by block (`blocks × 16`).
    pub fn group_scales(&self, g: usize) -> &[f16] {
        &self.scales[g * self.blocks * GROUP..][..self.blocks * GROUP]
    }

    /// The 16 rows' minimums of group `g`, block by block (Q4_1; empty for Q8_0).
    pub fn group_mins(&self, g: usize) -> &[f16] {
        if self.mins.is_empty() {
            return &[];
        }
        &self.mins[g * self.blocks * GROUP..][..self.blocks * GROUP]
    }

    /// The code of value `j` of row `n` (as [`QMatrix::code`]), read from the packed layout.
    pub fn code(&self, n: usize, j: usize) -> i32 {
        let (g, r, b, i) = (n / GROUP, n % GROUP, j / BLOCK, j % BLOCK);
        let gcb = Self::group_code_bytes(self.format);
        let chunk = &self.codes[(g * self.blocks + b) * gcb..][..gcb];
        match self.format {
            QuantFormat::Q4_1 => {
                let (c, e, high) = ((i % 16) / 2, i % 2, i >= 16);
                let byte = chunk[c * 32 + 2 * r + e];
                i32::from(if high { byte >> 4 } else { byte & 0x0F })
            }
            QuantFormat::Q8_0 => i32::from(chunk[(i / 2) * 32 + 2 * r + i % 2] as i8),
        }
    }

    /// Dequantised values of row `n` into `out` (`cols` long), as
    /// [`QMatrix::dequantize_row`] gives them for the same row.
    pub fn dequantize_row(&self, n: usize, out: &mut [f32]) {
        let (g, r) = (n / GROUP, n % GROUP);
        for (j, o) in out.iter_mut().enumerate().take(self.cols) {
            let i = (g * self.blocks + j / BLOCK) * GROUP + r;
            *o = dequantize_value(
                self.format,
                self.code(n, j),
                self.scales[i],
                self.mins.get(i).copied(),
            );
        }
    }

    /// Bytes a matrix-vector product reads.
    pub fn size_bytes(&self) -> usize {
        self.codes.len() + 2 * (self.scales.len() + self.mins.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pattern_values as data;

    #[test]
    fn packing_keeps_every_code_scale_and_minimum() {
        // 37 rows: two full groups and a padded one; 18 blocks (576) and 3 (96).
        for format in [QuantFormat::Q4_1, QuantFormat::Q8_0] {
            for (rows, cols) in [(37, 576), (16, 96), (5, 32)] {
                let w = QMatrix::quantize(format, rows, cols, &data(rows * cols, 3)).unwrap();
                let p = PackedMatrix::pack(&w);
                assert_eq!((p.rows(), p.cols(), p.format()), (rows, cols, format));
                let dense = w.dequantize();
                let mut row = vec![f32::NAN; cols];
                for n in 0..rows {
                    p.dequantize_row(n, &mut row);
                    assert_eq!(row, dense[n * cols..][..cols], "{format:?} row {n}");
                }
                for n in 0..rows {
                    for j in 0..cols {
                        assert_eq!(p.code(n, j), w.code(n, j), "{format:?} row {n} value {j}");
                    }
                    let (g, r) = (n / GROUP, n % GROUP);
                    for b in 0..cols / BLOCK {
                        assert_eq!(p.group_scales(g)[b * GROUP + r], w.row_scales(n)[b]);
                        if format == QuantFormat::Q4_1 {
                            assert_eq!(p.group_mins(g)[b * GROUP + r], w.row_mins(n)[b]);
                        }
                    }
                }
                // The last group's padding rows are zero.
                let last = p.groups() - 1;
                for r in rows % GROUP..if rows % GROUP == 0 { 0 } else { GROUP } {
                    for b in 0..cols / BLOCK {
                        assert_eq!(p.group_scales(last)[b * GROUP + r], f16::ZERO);
                    }
                }
            }
        }
    }
}
