//! Fidelity of a fused-cache method to full prefill: KL(p_full ‖ p_method) of the first-token
//! softmaxes, computed in f64, and the greedy first token.

/// KL(p_full ‖ p_other) in nats, where p = softmax(logits), computed in f64 with log-sum-exp.
///
/// Returns NaN when the slices differ in length or are empty (the runner checks first).
/// Logits of -inf (masked tokens) are allowed: a token impossible under `full` contributes
/// nothing; one possible under `full` but impossible under `other` makes the result +inf.
pub fn kl_divergence(full_logits: &[f32], other_logits: &[f32]) -> f64 {
    if full_logits.len() != other_logits.len() || full_logits.is_empty() {
        return f64::NAN;
    }
    let log_z_full = log_sum_exp(full_logits);
    let log_z_other = log_sum_exp(other_logits);
    let mut kl = 0.0;
    for (&a, &b) in full_logits.iter().zip(other_logits) {
        let log_p = f64::from(a) - log_z_full;
        let p = log_p.exp();
        if p == 0.0 {
            continue;
        }
        let log_q = f64::from(b) - log_z_other;
        kl += p * (log_p - log_q);
    }
    // Rounding can leave a tiny negative value for identical distributions.
    kl.max(0.0)
}

fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits
        .iter()
        .map(|&x| f64::from(x))
        .fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    let sum: f64 = logits.iter().map(|&x| (f64::from(x) - max).exp()).sum();
    max + sum.ln()
}

/// Index of the largest logit (the first one on ties); `None` for an empty slice.
pub fn argmax(logits: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in logits.iter().enumerate() {
        if best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_hand_computed() {
        // p = softmax([0, ln 3]) = [1/4, 3/4]; q = softmax([0, 0]) = [1/2, 1/2].
        // KL = 1/4 ln(1/2) + 3/4 ln(3/2).
        let p = [0.0, 3f32.ln()];
        let q = [0.0, 0.0];
        let want = 0.25 * (0.5f64).ln() + 0.75 * (1.5f64).ln();
        assert!((kl_divergence(&p, &q) - want).abs() < 1e-7);
        // Not symmetric: KL(q‖p) = 1/2 ln 2 + 1/2 ln(2/3).
        let back = 0.5 * 2f64.ln() + 0.5 * (2.0f64 / 3.0).ln();
        assert!((kl_divergence(&q, &p) - back).abs() < 1e-7);
    }

    #[test]
    fn kl_edge_cases() {
        let a = [1.0, 2.0, 3.0];
        assert_eq!(kl_divergence(&a, &a), 0.0);
        // Shift invariance of softmax.
        assert!(kl_divergence(&a, &[11.0, 12.0, 13.0]) < 1e-12);
        // Large logits do not overflow.
        assert!(kl_divergence(&[1000.0, 0.0], &[0.0, 1000.0]).is_finite());
        assert!(kl_divergence(&a, &a[..2]).is_nan());
        assert!(kl_divergence(&[], &[]).is_nan());
        let masked = [0.0, f32::NEG_INFINITY];
        assert_eq!(kl_divergence(&masked, &[0.0, 0.0]), 2f64.ln());
        assert_eq!(kl_divergence(&[0.0, 0.0], &masked), f64::INFINITY);
    }

    #[test]
    fn argmax_first_on_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), Some(1));
        assert_eq!(argmax(&[]), None);
    }
}
