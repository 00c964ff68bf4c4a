//! A^3 (arXiv 2511.17560): score document tokens by how much the *question* attends to
//! them at the check layer, smooth, and pick the top `k` to recompute.
//!
//! Exactly docs/design.md §2.5: post-RoPE q/k at true positions; heads concatenated
//! (query head `h` pairs with KV head `⌊h/g⌋`), scale `1/sqrt(H·d)`; softmax over the
//! document + question keys (prefix excluded), causal inside the question block, in f32;
//! summed over question rows; a `w`-wide zero-padded moving average over the whole
//! document region (across chunk boundaries); ties to the lower index.

use a3kv_model::Tensor;

use crate::Result;

/// Question-attention score of every document token, smoothed: a vector of `T-P-Q`.
///
/// `q_question`: `[H, Q, d]` RoPE'd queries of the question rows at the check layer;
/// `k_all`: `[H_kv, T, d]` RoPE'd keys of all rows at the check layer; `prefix_len` = `P`.
pub fn a3_scores(
    q_question: &Tensor,
    k_all: &Tensor,
    prefix_len: usize,
    pooling_width: usize,
) -> Result<Vec<f32>> {
    let (h, nq, d) = q_question.dims3()?;
    let (hkv, t, _) = k_all.dims3()?;
    let g = h / hkv;
    let n_doc = t - prefix_len - nq;
    // Σ_h q_h·k_{⌊h/g⌋} = Σ_j (Σ_{h in group j} q_h)·k_j: sum each group's queries once
    // instead of repeating K to every head.
    let qs = q_question
        .reshape((hkv, g, nq, d))?
        .sum(1)?
        .transpose(0, 1)?
        .reshape((nq, hkv * d))?;
    let ks = k_all
        .narrow(1, prefix_len, t - prefix_len)?
        .transpose(0, 1)?
        .reshape((t - prefix_len, hkv * d))?;
    let scale = 1.0 / ((h * d) as f64).sqrt();
    let logits: Vec<Vec<f32>> = (qs.matmul(&ks.t()?)? * scale)?
        .to_dtype(candle_core::DType::F32)?
        .to_vec2()?;
    let mut s = vec![0f32; n_doc];
    for (i, row) in logits.iter().enumerate() {
        // Question row i sees all document keys and question keys 0..=i.
        let visible = &row[..n_doc + i + 1];
        let max = visible.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let denom: f32 = visible.iter().map(|x| (x - max).exp()).sum();
        for (j, x) in row[..n_doc].iter().enumerate() {
            s[j] += (x - max).exp() / denom;
        }
    }
    Ok(moving_average(&s, pooling_width))
}

/// Zero-padded centred moving average of width `w` (always divided by `w`).
pub fn moving_average(s: &[f32], w: usize) -> Vec<f32> {
    if w <= 1 {
        return s.to_vec();
    }
    let left = (w - 1) / 2;
    (0..s.len())
        .map(|j| {
            let lo = j.saturating_sub(left);
            let hi = (j + w - left).min(s.len());
            s[lo..hi].iter().sum::<f32>() / w as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_average_is_zero_padded() {
        let s = [5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 10.0];
        let m = moving_average(&s, 5);
        assert_eq!(m, vec![1.0, 1.0, 1.0, 0.0, 2.0, 2.0, 2.0]);
        assert_eq!(moving_average(&s, 1), s.to_vec());
    }
}
