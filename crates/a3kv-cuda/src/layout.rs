//! Launch layouts: for each kernel in `kernels/`, the shape checks, grid and block sizes and
//! dynamic shared memory, computed on the host and unit-tested here. The kernels index with
//! these exact conventions (see each `.cu` file's header); [`crate::backend`] launches with
//! them.

use crate::{DeviceError, Result};

/// Threads per block of the element-wise kernels (RoPE, gather/scatter, scores).
pub const THREADS: u32 = 256;
/// At most this many blocks for a grid-stride kernel (each thread then loops).
pub const MAX_STRIDE_BLOCKS: u32 = 65_535;
/// Keys per warp of `a3_logits` (`A3_KEYS_PER_WARP` in `a3_score.cu`).
pub const A3_KEYS_PER_WARP: u32 = 8;
/// Threads of the single `topk_rows` block.
pub const TOPK_THREADS: u32 = 1024;
/// Warps per block of `attention_*` (`ATT_WARPS`).
pub const ATT_WARPS: u32 = 4;
/// Keys per shared-memory tile of `attention_*` (`ATT_TILE`).
pub const ATT_TILE: u32 = 32;
/// Largest head dim `attention_*` takes (its lanes hold `d / 32 <= 4` output dims).
pub const ATT_MAX_HEAD_DIM: usize = 128;
/// Dynamic shared memory available to a block without opting in (48 KiB on every GPU).
pub const DEFAULT_SHARED_BYTES: u32 = 48 * 1024;

/// One kernel launch: grid, block, dynamic shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    /// Blocks in x, y, z.
    pub grid: (u32, u32, u32),
    /// Threads in x, y, z.
    pub block: (u32, u32, u32),
    /// Dynamic shared memory per block, bytes.
    pub shared_bytes: u32,
}

fn bad(msg: String) -> DeviceError {
    DeviceError::BadArgument(msg)
}

fn to_u32(what: &str, x: usize) -> Result<u32> {
    u32::try_from(x).map_err(|_| bad(format!("{what} = {x} does not fit in u32")))
}

/// A grid-stride launch over `total` work items (at least one block).
pub fn grid_stride(total: u64) -> Launch {
    let blocks = total
        .div_ceil(u64::from(THREADS))
        .clamp(1, u64::from(MAX_STRIDE_BLOCKS));
    Launch {
        grid: (blocks as u32, 1, 1),
        block: (THREADS, 1, 1),
        shared_bytes: 0,
    }
}

/// `rope_*` over `x` `[heads, n, d]`: one item per rotated pair. `d` must be even.
pub fn rope_launch(heads: usize, n: usize, d: usize) -> Result<Launch> {
    if d == 0 || !d.is_multiple_of(2) {
        return Err(bad(format!("rope: head dim {d} must be even and > 0")));
    }
    to_u32("heads", heads)?;
    to_u32("rows", n)?;
    to_u32("head dim", d)?;
    Ok(grid_stride((heads * n * (d / 2)) as u64))
}

/// `inv_freq[i] = 1 / theta^(2i/d)` for `i < d/2`, computed in f64 and rounded to f32, as
/// `a3kv_model::Rope` builds its tables (so the kernel's angles equal the CPU's).
pub fn rope_inv_freq(d: usize, theta: f64) -> Vec<f32> {
    (0..d / 2)
        .map(|i| (1.0 / theta.powf(2.0 * i as f64 / d as f64)) as f32)
        .collect()
}

/// `gather_rows` / `scatter_rows` of `n` rows (of `d`) per head out of / into `m` rows.
/// Every index must be `< m`; scatter indices must also be distinct (no write races).
pub fn rows_launch(heads: usize, m: usize, idx: &[u32], d: usize, scatter: bool) -> Result<Launch> {
    to_u32("heads", heads)?;
    to_u32("rows", m)?;
    to_u32("head dim", d)?;
    if let Some(&bad_idx) = idx.iter().find(|&&i| i as usize >= m) {
        return Err(bad(format!("row index {bad_idx} out of {m} rows")));
    }
    if scatter {
        let mut sorted = idx.to_vec();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err(bad("scatter: row indices must be distinct".into()));
        }
    }
    Ok(grid_stride((heads * idx.len() * d) as u64))
}

/// Shape of the A^3 check-layer score (see `kernels/a3_score.cu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct A3Shape {
    /// Query heads `H`.
    pub heads: usize,
    /// KV heads `H_kv` (divides `H`).
    pub kv_heads: usize,
    /// Question rows `Q` (>= 1).
    pub question: usize,
    /// All rows `T`.
    pub total: usize,
    /// Prefix rows `P`.
    pub prefix: usize,
    /// Head dim `d`.
    pub head_dim: usize,
}

impl A3Shape {
    /// Keys in the softmax: documents then question, `T - P`.
    pub fn ncols(&self) -> usize {
        self.total - self.prefix
    }

    /// Document rows `T - P - Q`.
    pub fn n_doc(&self) -> usize {
        self.total - self.prefix - self.question
    }

    /// The score's scale `1 / sqrt(H d)`.
    pub fn scale(&self) -> f32 {
        (1.0 / ((self.heads * self.head_dim) as f64).sqrt()) as f32
    }

    /// Checks the shape; errors name the offending sizes.
    pub fn check(&self) -> Result<()> {
        let s = self;
        if s.kv_heads == 0 || s.heads == 0 || !s.heads.is_multiple_of(s.kv_heads) {
            return Err(bad(format!(
                "a3: {} heads over {} KV heads",
                s.heads, s.kv_heads
            )));
        }
        if s.question == 0 || s.prefix + s.question > s.total {
            return Err(bad(format!(
                "a3: prefix {} + question {} rows must be <= {} rows, question >= 1",
                s.prefix, s.question, s.total
            )));
        }
        if s.question > 65_535 {
            return Err(bad(format!(
                "a3: {} question rows (grid y max 65535)",
                s.question
            )));
        }
        if s.head_dim == 0 {
            return Err(bad("a3: head dim 0".into()));
        }
        to_u32("rows", s.total)?;
        let qs_bytes = s.kv_heads * s.head_dim * 4;
        if qs_bytes > DEFAULT_SHARED_BYTES as usize {
            return Err(bad(format!(
                "a3: H_kv * d = {} floats exceed shared memory",
                qs_bytes / 4
            )));
        }
        Ok(())
    }
}

/// The launches of one A^3 score, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct A3Launches {
    /// `a3_logits_*`: grid (key tiles, Q), shared `H_kv d` floats.
    pub logits: Launch,
    /// `a3_row_stats`: one block per question row.
    pub row_stats: Launch,
    /// `a3_column_scores`: one thread per document key.
    pub column_scores: Launch,
    /// `moving_average`: one thread per document key.
    pub moving_average: Launch,
    /// `topk_rows`: one block of [`TOPK_THREADS`].
    pub topk: Launch,
}

/// Launches of the A^3 score for `shape` (checked).
pub fn a3_launches(shape: &A3Shape) -> Result<A3Launches> {
    shape.check()?;
    let per_block = (THREADS / 32) * A3_KEYS_PER_WARP;
    let key_tiles = (shape.ncols() as u32).div_ceil(per_block).max(1);
    let per_doc = |n: usize| Launch {
        grid: ((n as u32).div_ceil(THREADS).max(1), 1, 1),
        block: (THREADS, 1, 1),
        shared_bytes: 0,
    };
    Ok(A3Launches {
        logits: Launch {
            grid: (key_tiles, shape.question as u32, 1),
            block: (THREADS, 1, 1),
            shared_bytes: (shape.kv_heads * shape.head_dim * 4) as u32,
        },
        row_stats: Launch {
            grid: (shape.question as u32, 1, 1),
            block: (THREADS, 1, 1),
            shared_bytes: 0,
        },
        column_scores: per_doc(shape.n_doc()),
        moving_average: per_doc(shape.n_doc()),
        topk: Launch {
            grid: (1, 1, 1),
            block: (TOPK_THREADS, 1, 1),
            shared_bytes: 0,
        },
    })
}

/// Shape of a masked attention call (see `kernels/attention.cu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// Query heads `H`.
    pub heads: usize,
    /// KV heads `H_kv` (divides `H`).
    pub kv_heads: usize,
    /// Query rows `n`.
    pub rows: usize,
    /// Keys `m` (the fused cache).
    pub keys: usize,
    /// Head dim `d`: a multiple of 32, at most [`ATT_MAX_HEAD_DIM`].
    pub head_dim: usize,
}

impl AttentionShape {
    /// The softmax scale `1 / sqrt(d)`.
    pub fn scale(&self) -> f32 {
        (1.0 / (self.head_dim as f64).sqrt()) as f32
    }
}

/// Dynamic shared memory of `attention_*` for head dim `d`: K and V tiles of
/// [`ATT_TILE`] rows padded to `d + 1` floats, plus one query row per warp.
pub fn attention_shared_bytes(d: usize) -> u32 {
    ((2 * ATT_TILE as usize * (d + 1) + ATT_WARPS as usize * d) * 4) as u32
}

/// Launch of `attention_*` for `shape`; checks the shape and the positions: `k_pos`
/// non-decreasing, every query position at or after the first key's.
pub fn attention_launch(shape: &AttentionShape, q_pos: &[u32], k_pos: &[u32]) -> Result<Launch> {
    let s = shape;
    if s.kv_heads == 0 || !s.heads.is_multiple_of(s.kv_heads) {
        return Err(bad(format!(
            "attention: {} heads over {} KV heads",
            s.heads, s.kv_heads
        )));
    }
    if s.head_dim == 0 || !s.head_dim.is_multiple_of(32) || s.head_dim > ATT_MAX_HEAD_DIM {
        return Err(bad(format!(
            "attention: head dim {} must be a multiple of 32, at most {ATT_MAX_HEAD_DIM}",
            s.head_dim
        )));
    }
    if q_pos.len() != s.rows || k_pos.len() != s.keys {
        return Err(bad(format!(
            "attention: {} query positions for {} rows, {} key positions for {} keys",
            q_pos.len(),
            s.rows,
            k_pos.len(),
            s.keys
        )));
    }
    if k_pos.windows(2).any(|w| w[0] > w[1]) {
        return Err(bad("attention: key positions must be non-decreasing".into()));
    }
    match (q_pos.iter().min(), k_pos.first()) {
        (Some(&q), Some(&k)) if q < k => {
            return Err(bad(format!(
                "attention: query at {q} sees no key (first key at {k})"
            )))
        }
        (Some(_), None) => return Err(bad("attention over no keys".into())),
        _ => {}
    }
    to_u32("keys", s.keys)?;
    let pairs = s.rows * (s.heads / s.kv_heads);
    let blocks = to_u32("blocks", pairs.div_ceil(ATT_WARPS as usize).max(1))?;
    Ok(Launch {
        grid: (blocks, to_u32("kv heads", s.kv_heads)?, 1),
        block: (ATT_WARPS * 32, 1, 1),
        shared_bytes: attention_shared_bytes(s.head_dim),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_stride_covers_the_work_and_caps_blocks() {
        assert_eq!(grid_stride(0).grid.0, 1);
        assert_eq!(grid_stride(256).grid.0, 1);
        assert_eq!(grid_stride(257).grid.0, 2);
        assert_eq!(grid_stride(u64::MAX / 2).grid.0, MAX_STRIDE_BLOCKS);
        // SmolLM2 keys at 32k tokens: 3 heads x 32768 rows x 32 pairs.
        let l = rope_launch(3, 32_768, 64).unwrap();
        assert_eq!(l.grid.0, (3 * 32_768 * 32u32).div_ceil(THREADS));
        assert!(rope_launch(3, 8, 63).is_err());
    }

    #[test]
    fn rope_inv_freq_matches_the_model_tables() {
        let f = rope_inv_freq(64, 100_000.0);
        assert_eq!(f.len(), 32);
        assert_eq!(f[0], 1.0);
        assert_eq!(f[1], (1.0 / 100_000f64.powf(2.0 / 64.0)) as f32);
    }

    #[test]
    fn rows_are_checked() {
        assert!(rows_launch(2, 10, &[0, 9], 64, true).is_ok());
        assert!(rows_launch(2, 10, &[10], 64, false).is_err());
        assert!(rows_launch(2, 10, &[3, 3], 64, true).is_err());
        assert!(rows_launch(2, 10, &[3, 3], 64, false).is_ok());
    }

    #[test]
    fn a3_layout_for_smollm2_and_7b() {
        let s = A3Shape {
            heads: 9,
            kv_heads: 3,
            question: 33,
            total: 16_384,
            prefix: 47,
            head_dim: 64,
        };
        let l = a3_launches(&s).unwrap();
        assert_eq!(l.logits.grid, ((16_384u32 - 47).div_ceil(64), 33, 1));
        assert_eq!(l.logits.shared_bytes, 3 * 64 * 4);
        assert_eq!(
            l.column_scores.grid.0,
            ((16_384u32 - 47 - 33).div_ceil(256))
        );
        assert_eq!(s.scale(), (1.0 / (576f64).sqrt()) as f32);
        // 7B (MHA, 32 x 128): the summed query row is 16 KiB of shared memory.
        let big = A3Shape {
            heads: 32,
            kv_heads: 32,
            head_dim: 128,
            ..s
        };
        assert_eq!(a3_launches(&big).unwrap().logits.shared_bytes, 16 * 1024);
        assert!(a3_launches(&A3Shape { question: 0, ..s }).is_err());
        assert!(a3_launches(&A3Shape { kv_heads: 2, ..s }).is_err());
        assert!(a3_launches(&A3Shape {
            prefix: 16_384,
            ..s
        })
        .is_err());
    }

    #[test]
    fn attention_layout_and_checks() {
        let s = AttentionShape {
            heads: 9,
            kv_heads: 3,
            rows: 10,
            keys: 100,
            head_dim: 64,
        };
        let q: Vec<u32> = (90..100).collect();
        let k: Vec<u32> = (0..100).collect();
        let l = attention_launch(&s, &q, &k).unwrap();
        // 10 rows x 3 heads per group = 30 pairs, 4 per block.
        assert_eq!(l.grid, (8, 3, 1));
        assert_eq!(l.block, (128, 1, 1));
        assert_eq!(l.shared_bytes, (2 * 32 * 65 + 4 * 64) * 4);
        assert!(attention_shared_bytes(128) <= DEFAULT_SHARED_BYTES);
        assert!(attention_launch(&AttentionShape { head_dim: 80, ..s }, &q, &k).is_err());
        assert!(attention_launch(&AttentionShape { head_dim: 256, ..s }, &q, &k).is_err());
        let mut unsorted = k.clone();
        unsorted.swap(3, 4);
        assert!(attention_launch(&s, &q, &unsorted).is_err());
        let late: Vec<u32> = (5..105).collect();
        let one = AttentionShape { rows: 1, ..s };
        assert!(attention_launch(&one, &[4], &late).is_err());
        assert!(attention_launch(&one, &[5], &late).is_ok());
        assert!(attention_launch(&s, &q[..3], &k).is_err());
    }
}
