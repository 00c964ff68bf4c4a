//! Attention of chosen query rows over a supplied K/V, causal by *true position*.
//!
//! Rows need not be contiguous: fusion recomputes scattered rows against a fused cache,
//! so the mask is `key_pos <= query_pos`, never an index triangle. Queries are processed
//! in blocks; each block only multiplies against the key prefix its furthest row can see
//! (keys are in position order), which halves the work of a causal prefill and bounds the
//! score buffer. Blocks end early when their rows are spread out (fusion's scattered rows),
//! so that few of the multiplied keys are masked. GQA is handled without repeating K/V: the
//! `g` query heads of one KV head are stacked into one matmul. A few query rows
//! (decode) take a kernel that walks the cache in place instead.

use candle_core::{Tensor, D};

use crate::cpu_ops::masked_softmax;
use crate::kernels::cpu::attention::few_rows_attention;
use crate::kernels::cpu::flash::flash_attention;
use crate::kernels::cpu::Isa;
use crate::{ModelError, Result};

/// Query rows per block at most: bounds the `[H, rows, keys]` score buffer.
pub const ATTENTION_BLOCK_ROWS: usize = 256;
/// A block is never cut below this many rows (smaller matmuls lose more than they save).
const MIN_BLOCK_ROWS: usize = 32;
/// A block multiplies each of its rows against every key its furthest row sees; it ends
/// before a row that would make the masked products exceed this share of the visible ones.
const MAX_MASKED_SHARE: usize = 8; // 1/8

/// The next block of query rows from `start`: `(rows, keys)` — it takes rows
/// `start..start + rows` and multiplies them against keys `0..keys`.
fn next_block(q_pos: &[u32], k_pos: &[u32], start: usize) -> (usize, usize) {
    let visible = |i: usize| k_pos.partition_point(|&p| p <= q_pos[i]);
    let (mut nb, mut max_vis, mut sum_vis) = (0usize, 0usize, 0usize);
    while start + nb < q_pos.len() && nb < ATTENTION_BLOCK_ROWS {
        let v = visible(start + nb);
        let (mx, sum) = (max_vis.max(v), sum_vis + v);
        let masked = mx * (nb + 1) - sum;
        if nb >= MIN_BLOCK_ROWS && masked * MAX_MASKED_SHARE > sum {
            break;
        }
        (nb, max_vis, sum_vis) = (nb + 1, mx, sum);
    }
    (nb, max_vis)
}

/// Up to this many query rows (decode steps) attend through
/// [`crate::kernels::cpu::attention::few_rows_attention`], straight over the cache.
pub const FEW_ROWS: usize = 16;

fn check_shapes(q: &Tensor, q_pos: &[u32], k: &Tensor, v: &Tensor, k_pos: &[u32]) -> Result<()> {
    let (h, n, d) = q.dims3()?;
    let (hkv, m, dk) = k.dims3()?;
    if v.dims3()? != (hkv, m, dk) || dk != d || !h.is_multiple_of(hkv) {
        return Err(ModelError::BadArgument(format!(
            "attention shapes q {:?} k {:?} v {:?}",
            q.dims(),
            k.dims(),
            v.dims()
        )));
    }
    if q_pos.len() != n || k_pos.len() != m {
        return Err(ModelError::BadArgument(format!(
            "attention: {} query positions for {n} rows, {} key positions for {m} keys",
            q_pos.len(),
            k_pos.len()
        )));
    }
    if k_pos.windows(2).any(|w| w[0] > w[1]) {
        return Err(ModelError::BadArgument(
            "attention: key positions must be non-decreasing".into(),
        ));
    }
    if let (Some(&qmin), Some(&kmin)) = (q_pos.iter().min(), k_pos.first()) {
        if qmin < kmin {
            return Err(ModelError::BadArgument(format!(
                "attention: query at position {qmin} sees no key (first key at {kmin})"
            )));
        }
    } else if n > 0 {
        return Err(ModelError::BadArgument("attention over no keys".into()));
    }
    Ok(())
}

/// Softmax attention of `q` over `k`/`v` where query row `i` sees key `j` iff
/// `k_pos[j] <= q_pos[i]`.
///
/// Shapes: `q` `[H, n, d]` (RoPE applied), `k`/`v` `[H_kv, m, d]` (keys RoPE'd),
/// `k_pos` non-decreasing. Returns `[n, H·d]` (heads concatenated, before `o_proj`).
/// Errors on inconsistent shapes, unsorted keys, or a query that sees no key.
pub fn causal_attention(
    q: &Tensor,
    q_pos: &[u32],
    k: &Tensor,
    v: &Tensor,
    k_pos: &[u32],
) -> Result<Tensor> {
    check_shapes(q, q_pos, k, v, k_pos)?;
    let (_, n, d) = q.dims3()?;
    if n <= FEW_ROWS {
        if let Some(out) = few_rows_attention(q, q_pos, k, v, k_pos)? {
            return Ok(out);
        }
    }
    // A cache kept in another type (16-bit KV) is widened to the compute type here; the
    // few-rows kernel above reads it as stored.
    let (k, v) = if k.dtype() != q.dtype() || v.dtype() != q.dtype() {
        (&k.to_dtype(q.dtype())?, &v.to_dtype(q.dtype())?)
    } else {
        (k, v)
    };
    let scale = 1.0 / (d as f64).sqrt();
    if let Some(out) = flash_attention(q, q_pos, k, v, k_pos, scale as f32, Isa::detect())? {
        return Ok(out);
    }
    blocked_attention(q, q_pos, k, v, k_pos)
}

/// The general path of [`causal_attention`] (other devices, dtypes and head sizes):
/// blocks of query rows, each multiplied against the key prefix its furthest row sees,
/// with a materialised score block and the fused masked softmax. Inputs already checked.
fn blocked_attention(
    q: &Tensor,
    q_pos: &[u32],
    k: &Tensor,
    v: &Tensor,
    k_pos: &[u32],
) -> Result<Tensor> {
    let (h, n, d) = q.dims3()?;
    let scale = 1.0 / (d as f64).sqrt();
    let (hkv, _m, _) = k.dims3()?;
    let g = h / hkv;
    let mut outs = Vec::with_capacity(n.div_ceil(ATTENTION_BLOCK_ROWS));
    let mut start = 0;
    while start < n {
        // Keys are sorted: the block sees a prefix of them.
        let (nb, mb) = next_block(q_pos, k_pos, start);
        let pos_b = &q_pos[start..start + nb];
        let qb = q
            .narrow(1, start, nb)?
            .contiguous()?
            .reshape((hkv, g * nb, d))?;
        let kb = k.narrow(1, 0, mb)?;
        let vb = v.narrow(1, 0, mb)?;
        let scores = qb.matmul(&kb.t()?)?;
        let probs = masked_softmax(
            &scores.reshape((hkv * g, nb, mb))?,
            pos_b,
            &k_pos[..mb],
            scale as f32,
        )?
        .reshape((hkv, g * nb, mb))?;
        let out = probs.matmul(&vb)?; // [hkv, g*nb, d]
        let out = out
            .reshape((h, nb, d))?
            .transpose(0, 1)?
            .reshape((nb, h * d))?;
        outs.push(out);
        start += nb;
    }
    if outs.len() == 1 {
        return Ok(outs.remove(0));
    }
    Ok(Tensor::cat(&outs, 0)?)
}

/// Reference twin of [`causal_attention`]: repeats K/V to every query head, builds the
/// whole `[n, m]` mask, and uses the plain softmax. Slow; used by tests.
pub fn causal_attention_reference(
    q: &Tensor,
    q_pos: &[u32],
    k: &Tensor,
    v: &Tensor,
    k_pos: &[u32],
) -> Result<Tensor> {
    check_shapes(q, q_pos, k, v, k_pos)?;
    let (h, n, d) = q.dims3()?;
    let (hkv, m, _) = k.dims3()?;
    let g = h / hkv;
    let rep = |t: &Tensor| -> Result<Tensor> {
        Ok(t.unsqueeze(1)?
            .expand((hkv, g, m, d))?
            .reshape((h, m, d))?
            .contiguous()?)
    };
    let (k, v) = (rep(k)?, rep(v)?);
    let scores = (q.contiguous()?.matmul(&k.t()?)? / (d as f64).sqrt())?;
    let mut mask = vec![0f32; n * m];
    for (i, &qp) in q_pos.iter().enumerate() {
        for (j, &kp) in k_pos.iter().enumerate() {
            if kp > qp {
                mask[i * m + j] = f32::NEG_INFINITY;
            }
        }
    }
    let mask = Tensor::from_vec(mask, (1, n, m), q.device())?;
    let scores = scores.broadcast_add(&mask)?;
    let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
    Ok(probs.matmul(&v)?.transpose(0, 1)?.reshape((n, h * d))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::max_abs_diff;
    use candle_core::Device;

    #[test]
    fn blocked_matches_reference_on_scattered_rows() {
        let dev = Device::Cpu;
        let (h, hkv, d, m) = (6, 2, 16, 600);
        let k = Tensor::randn(0f32, 1.0, (hkv, m, d), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (hkv, m, d), &dev).unwrap();
        let k_pos: Vec<u32> = (0..m as u32).map(|i| i + 5).collect();
        // Scattered, unsorted query rows across several blocks.
        let q_pos: Vec<u32> = (0..300u32).map(|i| 5 + (i * 7919) % 600).collect();
        let q = Tensor::randn(0f32, 1.0, (h, q_pos.len(), d), &dev).unwrap();
        let a = causal_attention(&q, &q_pos, &k, &v, &k_pos).unwrap();
        let b = causal_attention_reference(&q, &q_pos, &k, &v, &k_pos).unwrap();
        assert_eq!(a.dims(), &[300, h * d]);
        assert!(max_abs_diff(&a, &b) < 1e-4, "{}", max_abs_diff(&a, &b));
    }

    #[test]
    fn blocks_of_spread_rows_end_early_and_contiguous_rows_fill_up() {
        let k_pos: Vec<u32> = (0..4096).collect();
        // Contiguous rows late in a long prompt: full blocks.
        let late: Vec<u32> = (2048..2048 + 600).collect();
        assert_eq!(
            next_block(&late, &k_pos, 0),
            (ATTENTION_BLOCK_ROWS, 2048 + 256)
        );
        // Every 7th position from 0: blocks are cut so that little is masked.
        let spread: Vec<u32> = (0..4096).step_by(7).collect();
        let mut start = 0;
        while start < spread.len() {
            let (nb, mb) = next_block(&spread, &k_pos, start);
            assert!(nb >= MIN_BLOCK_ROWS.min(spread.len() - start));
            assert_eq!(
                mb as u32,
                spread[start + nb - 1] + 1,
                "keys up to the furthest row"
            );
            let visible: usize = spread[start..start + nb]
                .iter()
                .map(|&p| p as usize + 1)
                .sum();
            if nb > MIN_BLOCK_ROWS {
                assert!((mb * nb - visible) * MAX_MASKED_SHARE <= visible);
            }
            start += nb;
        }
        // The last rows of a request: never an empty block.
        assert_eq!(next_block(&[5, 9], &k_pos, 1), (1, 10));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let dev = Device::Cpu;
        let q = Tensor::zeros((2, 1, 4), candle_core::DType::F32, &dev).unwrap();
        let k = Tensor::zeros((1, 2, 4), candle_core::DType::F32, &dev).unwrap();
        // Query before every key.
        assert!(causal_attention(&q, &[0], &k, &k, &[3, 4]).is_err());
        // Unsorted keys.
        assert!(causal_attention(&q, &[9], &k, &k, &[4, 3]).is_err());
        // Wrong position count.
        assert!(causal_attention(&q, &[9, 9], &k, &k, &[3, 4]).is_err());
    }
}
