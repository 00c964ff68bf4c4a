//! The arithmetic floor of a fused prefill: its multiply-adds as a share of a full
//! prefill's over the same prompt, from the rows it actually recomputed. What a perfect
//! implementation of the same selection would cost; `a3kv bench fusion` prints it next to
//! the measured time ratio so the distance to it is visible.
//!
//! Counted: the q/k/v, output and MLP projections of every computed row, and causal
//! attention (`QKᵀ` and `PV`) of each computed row over the keys at or before its
//! position. Not counted (the same in both, or small): embeddings, norms, the LM head of
//! the last row, RoPE, and the selection scores (the question's rows against the
//! document keys at the check layer).

use a3kv_model::ModelConfig;

/// Multiply-adds of one layer's projections for one row: `(q/k/v, output + MLP)`.
fn row_macs(c: &ModelConfig) -> (f64, f64) {
    let (d, hd, kvd) = (
        c.hidden_size as f64,
        (c.num_heads * c.head_dim) as f64,
        (c.num_kv_heads * c.head_dim) as f64,
    );
    let qkv = d * (hd + 2.0 * kvd);
    let rest = hd * d + 3.0 * d * c.intermediate_size as f64;
    (qkv, rest)
}

/// Multiply-adds of attention for a row at position `p` (sees keys `0..=p`).
fn attention_macs(c: &ModelConfig, p: u32) -> f64 {
    2.0 * (c.num_heads * c.head_dim) as f64 * (p as f64 + 1.0)
}

/// Multiply-adds of a full prefill of `t` rows at positions `0..t`.
pub fn full_macs(c: &ModelConfig, t: usize) -> f64 {
    let (qkv, rest) = row_macs(c);
    let attn: f64 = (0..t as u32).map(|p| attention_macs(c, p)).sum();
    c.num_layers as f64 * (t as f64 * (qkv + rest) + attn)
}

/// Multiply-adds of a fused prefill of `t` rows that runs layers `0..exact` over every
/// row, computes the q/k/v of every row at layer `exact` when `scores` (the check layer),
/// and from there the rows at positions `rows` only.
pub fn fused_macs(c: &ModelConfig, t: usize, exact: usize, scores: bool, rows: &[u32]) -> f64 {
    let (qkv, rest) = row_macs(c);
    let exact = exact.min(c.num_layers);
    let per_full_layer =
        t as f64 * (qkv + rest) + (0..t as u32).map(|p| attention_macs(c, p)).sum::<f64>();
    let rows_attn: f64 = rows.iter().map(|&p| attention_macs(c, p)).sum();
    let n = rows.len() as f64;
    let selective = (c.num_layers - exact) as f64 * (n * (qkv + rest) + rows_attn);
    // The check layer's q/k/v of the rows not selected (the selected ones are counted above).
    let check = if scores && exact < c.num_layers {
        (t as f64 - n).max(0.0) * qkv
    } else {
        0.0
    };
    exact as f64 * per_full_layer + selective + check
}

/// [`fused_macs`] as a share of [`full_macs`] (1 for an empty prompt).
pub fn floor_share(c: &ModelConfig, t: usize, exact: usize, scores: bool, rows: &[u32]) -> f64 {
    let full = full_macs(c, t);
    if full <= 0.0 {
        return 1.0;
    }
    fused_macs(c, t, exact, scores, rows) / full
}

/// The extra multiply-adds of a second selection stage ([`crate::Selector::stage`]) as a
/// share of a full prefill of `t` rows: candidates at positions `rows` that were dropped
/// after running the check layer's attention and MLP and `layers_after_check` further
/// layers in full ([`fused_macs`] counts only the rows kept; their check-layer q/k/v is
/// counted there already).
pub fn dropped_candidates_share(
    c: &ModelConfig,
    t: usize,
    rows: &[u32],
    layers_after_check: usize,
) -> f64 {
    let full = full_macs(c, t);
    if full <= 0.0 || rows.is_empty() {
        return 0.0;
    }
    let (qkv, rest) = row_macs(c);
    let n = rows.len() as f64;
    let attn: f64 = rows.iter().map(|&p| attention_macs(c, p)).sum();
    let per_layer = n * (qkv + rest) + attn;
    ((layers_after_check as f64 + 1.0) * per_layer - n * qkv) / full
}

/// The multiply-adds of a question pass ([`crate::select::question_pass`]) as a share of a
/// full prefill of `t` rows: the question rows at positions `question` through every layer
/// (projections and causal attention), and at each layer their scores against the keys
/// after the prefix of `prefix` rows (`QKᵀ` once more, summed over the query heads).
pub fn question_pass_share(c: &ModelConfig, t: usize, prefix: usize, question: &[u32]) -> f64 {
    let full = full_macs(c, t);
    if full <= 0.0 || question.is_empty() {
        return 0.0;
    }
    let (qkv, rest) = row_macs(c);
    let n = question.len() as f64;
    let attn: f64 = question.iter().map(|&p| attention_macs(c, p)).sum();
    let scores = n * (c.num_heads * c.head_dim) as f64 * t.saturating_sub(prefix) as f64;
    c.num_layers as f64 * (n * (qkv + rest) + attn + scores) / full
}

#[cfg(test)]
mod tests {
    use super::*;
    use a3kv_model::testing::tiny_config;
    use a3kv_model::Family;

    #[test]
    fn a_question_pass_costs_about_its_share_of_rows() {
        let c = tiny_config(Family::Llama);
        let q: Vec<u32> = (270..300).collect();
        // 30 of 300 rows, late ones (their attention costs more), plus the scores.
        let share = question_pass_share(&c, 300, 10, &q);
        assert!(share > 0.1 && share < 0.3, "{share}");
        assert_eq!(question_pass_share(&c, 300, 10, &[]), 0.0);
    }

    #[test]
    fn every_row_at_every_layer_is_a_full_prefill() {
        let c = tiny_config(Family::Llama);
        let all: Vec<u32> = (0..300).collect();
        assert!((floor_share(&c, 300, 0, false, &all) - 1.0).abs() < 1e-12);
        assert!((floor_share(&c, 300, 1, true, &all) - 1.0).abs() < 1e-12);
        assert!((floor_share(&c, 300, c.num_layers, true, &[]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn late_rows_cost_more_attention_than_early_ones_and_the_share_grows_with_rows() {
        let c = tiny_config(Family::Llama);
        let early: Vec<u32> = (0..30).collect();
        let late: Vec<u32> = (270..300).collect();
        let (e, l) = (
            floor_share(&c, 300, 1, true, &early),
            floor_share(&c, 300, 1, true, &late),
        );
        assert!(e < l, "{e} {l}");
        let more: Vec<u32> = (0..300).step_by(2).collect();
        assert!(floor_share(&c, 300, 1, true, &more) > l);
        // Hand count for one layer of nothing but the check: layer 0 exact, 0 rows after.
        let want = (full_macs(&c, 300) / c.num_layers as f64 + 300.0 * row_macs(&c).0)
            / full_macs(&c, 300);
        assert!((floor_share(&c, 300, 1, true, &[]) - want).abs() < 1e-12);
    }

    #[test]
    fn dropped_candidates_cost_what_their_extra_layers_cost() {
        let c = tiny_config(Family::Llama);
        let kept: Vec<u32> = (100..130).collect();
        let dropped: Vec<u32> = (130..160).collect();
        assert_eq!(dropped_candidates_share(&c, 300, &[], 1), 0.0);
        // Dropped rows that ran every layer from the check layer on cost as much as rows kept.
        let all: Vec<u32> = (100..160).collect();
        let layers = c.num_layers - 2; // check layer 1, stage at the last layer
        let both = floor_share(&c, 300, 1, true, &kept)
            + dropped_candidates_share(&c, 300, &dropped, layers);
        assert!((both - floor_share(&c, 300, 1, true, &all)).abs() < 1e-12);
        assert!(dropped_candidates_share(&c, 300, &dropped, 1) > 0.0);
    }
}
