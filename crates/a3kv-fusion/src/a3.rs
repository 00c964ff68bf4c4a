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
    let ScoreShape {
        heads: h,
        question: nq,
        head_dim: d,
        kv_heads: hkv,
        rows: t,
        doc_rows: n_doc,
    } = ScoreShape::of(q_question, k_all, prefix_len)?;
    let g = h / hkv;
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
        add_document_softmax(&mut s, &row[..n_doc + i + 1]);
    }
    Ok(moving_average(&s, pooling_width))
}

/// The sizes a question-attention score works with.
pub(crate) struct ScoreShape {
    /// Query heads `H`.
    pub heads: usize,
    /// Question rows `Q`.
    pub question: usize,
    /// Head size `d`.
    pub head_dim: usize,
    /// KV heads `H_kv`.
    pub kv_heads: usize,
    /// Rows of the prompt `T`.
    pub rows: usize,
    /// Document rows `T − P − Q`.
    pub doc_rows: usize,
}

impl ScoreShape {
    /// The sizes of queries `[H, Q, d]` against keys `[H_kv, T, d]` after a prefix of
    /// `prefix_len` rows.
    pub(crate) fn of(q_question: &Tensor, k_all: &Tensor, prefix_len: usize) -> Result<Self> {
        let (heads, question, head_dim) = q_question.dims3()?;
        let (kv_heads, rows, _) = k_all.dims3()?;
        Ok(Self {
            heads,
            question,
            head_dim,
            kv_heads,
            rows,
            doc_rows: rows - prefix_len - question,
        })
    }
}

/// Adds to `s` (one entry per document row) the softmax of one question row's `visible`
/// logits (the document keys first, then the question keys it sees) over the document keys.
/// libm's `exp`, not the vectorised `softmax_mass` kernel the per-head scores use: A^3's
/// scores stay bit for bit what every published A^3 number was measured with, and one row
/// per question token costs little.
pub(crate) fn add_document_softmax(s: &mut [f32], visible: &[f32]) {
    let max = visible.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let denom: f32 = visible.iter().map(|x| (x - max).exp()).sum();
    for (acc, x) in s.iter_mut().zip(visible) {
        *acc += (x - max).exp() / denom;
    }
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
