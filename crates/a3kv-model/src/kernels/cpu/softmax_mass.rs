//! The share of a softmax that falls on the leading keys of a row: what a query row's
//! attention puts on a range of keys (fusion's per-head relevance, issue #16). The
//! exponentials use the flash kernel's base-2 polynomial ([`super::flash::exp2`]) in a loop
//! the compiler vectorises, compiled once more for AVX-512 + FMA and picked at run time; a
//! libm call per key cost more than the rest of the question pass.

use super::flash::{exp2, LOG2_E};

/// Adds to `acc` the softmax of `logits` (every entry visible) over its first `acc.len()`
/// entries: `acc[j] += e^{x_j − max} / Σ_i e^{x_i − max}`. `scratch` holds the
/// exponentials between the two passes. `acc` must not be longer than `logits`.
pub fn add_leading_softmax(acc: &mut [f32], logits: &[f32], scratch: &mut Vec<f32>) {
    assert!(acc.len() <= logits.len(), "more accumulators than logits");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")
    {
        // SAFETY: the CPU has the features the copy is compiled for (checked just above).
        return unsafe { add_leading_softmax_avx512(acc, logits, scratch) };
    }
    add_leading_softmax_body::<false>(acc, logits, scratch)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn add_leading_softmax_avx512(acc: &mut [f32], logits: &[f32], scratch: &mut Vec<f32>) {
    add_leading_softmax_body::<true>(acc, logits, scratch)
}

#[inline(always)]
fn add_leading_softmax_body<const FMA: bool>(
    acc: &mut [f32],
    logits: &[f32],
    scratch: &mut Vec<f32>,
) {
    if logits.is_empty() {
        return;
    }
    // Sixteen running maxima: a reduction the compiler keeps in vector lanes.
    let mut lanes = [f32::NEG_INFINITY; 16];
    let mut blocks = logits.chunks_exact(16);
    for b in &mut blocks {
        for (m, &x) in lanes.iter_mut().zip(b) {
            *m = m.max(x);
        }
    }
    let max = blocks
        .remainder()
        .iter()
        .chain(&lanes)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let shift = max * LOG2_E;
    scratch.clear();
    scratch.extend(logits.iter().map(|&x| exp2::<FMA>(x * LOG2_E - shift)));
    let mut sums = [0f32; 16];
    let mut blocks = scratch.chunks_exact(16);
    for b in &mut blocks {
        for (s, &e) in sums.iter_mut().zip(b) {
            *s += e;
        }
    }
    let total: f32 = sums.iter().sum::<f32>() + blocks.remainder().iter().sum::<f32>();
    let inv = 1.0 / total;
    for (a, &e) in acc.iter_mut().zip(scratch.iter()) {
        *a += e * inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the softmax written out in f64 (the slow twin), over lengths around the
    /// 16-lane blocks, logits wide enough to underflow some terms.
    #[test]
    fn matches_a_softmax_in_f64() {
        let mut scratch = Vec::new();
        for n in [1usize, 7, 16, 17, 33, 300] {
            let logits: Vec<f32> = (0..n)
                .map(|i| ((i * 7919 % 97) as f32 - 48.0) * 0.9)
                .collect();
            let lead = n - n / 3;
            let max = logits
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, |m, x| m.max(x as f64));
            let denom: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
            let mut acc = vec![0.5f32; lead];
            add_leading_softmax(&mut acc, &logits, &mut scratch);
            for (j, a) in acc.iter().enumerate() {
                let want = 0.5 + (logits[j] as f64 - max).exp() / denom;
                assert!(
                    (*a as f64 - want).abs() <= 2e-6 * want.max(1e-3),
                    "n={n} j={j}: {a} vs {want}"
                );
            }
            // The plain copy gives the same as the one the CPU picked, within rounding.
            let mut plain = vec![0.5f32; lead];
            add_leading_softmax_body::<false>(&mut plain, &logits, &mut scratch);
            for (a, p) in acc.iter().zip(&plain) {
                assert!((a - p).abs() <= 1e-6, "{a} vs {p}");
            }
        }
    }
}
