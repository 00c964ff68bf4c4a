//! Plain-Rust reference twins of the kernels in `kernels/`, on f32 slices in the kernels'
//! layouts (row-major, `[heads, rows, d]`). Each twin is the slow, obvious version of its
//! kernel; the tests below check every twin against the engine's own CPU function
//! (`a3kv_model::Rope`, `a3kv_model::attention::causal_attention`, `a3kv_fusion::a3`,
//! `a3kv_fusion::selection::top_k`), and the GPU parity test checks each kernel against its
//! twin. So kernel ≈ twin ≈ engine.

use crate::layout::rope_inv_freq;

/// Twin of `rope_*`: rotates `x` `[heads, n, d]` so that row `r` sits at `pos[r]`
/// (`interleaved`: pairs `(2i, 2i+1)`, else `(i, i + d/2)`).
pub fn rope(
    x: &[f32],
    heads: usize,
    n: usize,
    d: usize,
    pos: &[u32],
    theta: f64,
    interleaved: bool,
) -> Vec<f32> {
    let inv = rope_inv_freq(d, theta);
    let half = d / 2;
    let mut y = x.to_vec();
    for h in 0..heads {
        for (r, &p) in pos.iter().enumerate().take(n) {
            let base = (h * n + r) * d;
            for (i, &f) in inv.iter().enumerate() {
                let angle = p as f32 * f;
                let (s, c) = (angle.sin(), angle.cos());
                let (a, b) = if interleaved {
                    (base + 2 * i, base + 2 * i + 1)
                } else {
                    (base + i, base + i + half)
                };
                y[a] = x[a] * c - x[b] * s;
                y[b] = x[a] * s + x[b] * c;
            }
        }
    }
    y
}

/// Twin of `gather_rows`: `dst[h, i] = src[h, idx[i]]`, `src` `[heads, m, d]`.
pub fn gather_rows(src: &[f32], heads: usize, m: usize, d: usize, idx: &[u32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(heads * idx.len() * d);
    for h in 0..heads {
        for &i in idx {
            let at = (h * m + i as usize) * d;
            out.extend_from_slice(&src[at..at + d]);
        }
    }
    out
}

/// Twin of `scatter_rows`: `dst[h, idx[i]] = src[h, i]`, `src` `[heads, n, d]`, `dst`
/// `[heads, m, d]` updated in place.
pub fn scatter_rows(src: &[f32], dst: &mut [f32], heads: usize, m: usize, d: usize, idx: &[u32]) {
    let n = idx.len();
    for h in 0..heads {
        for (i, &r) in idx.iter().enumerate() {
            let from = (h * n + i) * d;
            let to = (h * m + r as usize) * d;
            dst[to..to + d].copy_from_slice(&src[from..from + d]);
        }
    }
}

/// Twin of the A^3 score launches: `q` `[H, Q, d]`, `k` `[H_kv, T, d]`; returns the smoothed
/// score of every document row (`T - P - Q` values).
#[allow(clippy::too_many_arguments)]
pub fn a3_scores(
    q: &[f32],
    k: &[f32],
    heads: usize,
    kv_heads: usize,
    nq: usize,
    t: usize,
    prefix: usize,
    d: usize,
    width: usize,
) -> Vec<f32> {
    let g = heads / kv_heads;
    let ncols = t - prefix;
    let n_doc = ncols - nq;
    let scale = (1.0 / ((heads * d) as f64).sqrt()) as f32;
    let mut s = vec![0f32; n_doc];
    for i in 0..nq {
        let visible = n_doc + i + 1;
        let logits: Vec<f32> = (0..visible)
            .map(|j| {
                let mut dot = 0f32;
                for h in 0..heads {
                    let qr = &q[(h * nq + i) * d..][..d];
                    let kr = &k[((h / g) * t + prefix + j) * d..][..d];
                    dot += qr.iter().zip(kr).map(|(a, b)| a * b).sum::<f32>();
                }
                dot * scale
            })
            .collect();
        let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let denom: f32 = logits.iter().map(|x| (x - max).exp()).sum();
        for (sj, x) in s.iter_mut().zip(&logits[..n_doc]) {
            *sj += (x - max).exp() / denom;
        }
    }
    moving_average(&s, width)
}

/// Twin of `moving_average`: zero-padded, centred, always divided by `w`.
pub fn moving_average(s: &[f32], w: usize) -> Vec<f32> {
    if w <= 1 {
        return s.to_vec();
    }
    let left = (w - 1) / 2;
    (0..s.len())
        .map(|j| {
            s[j.saturating_sub(left)..(j + w - left).min(s.len())]
                .iter()
                .sum::<f32>()
                / w as f32
        })
        .collect()
}

/// Twin of `topk_rows`: indices of the `k` largest scores (`f32::total_cmp`), ties to the
/// lower index, ascending.
pub fn top_k(scores: &[f32], k: usize) -> Vec<u32> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx.sort_unstable();
    idx.into_iter().map(|i| i as u32).collect()
}

/// Twin of `attention_*`: `q` `[H, n, d]` at `q_pos`, `k`/`v` `[H_kv, m, d]` at
/// non-decreasing `k_pos`; row `i` sees keys with `k_pos <= q_pos[i]`. Returns `[n, H d]`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    q_pos: &[u32],
    k: &[f32],
    v: &[f32],
    k_pos: &[u32],
    heads: usize,
    kv_heads: usize,
    d: usize,
) -> Vec<f32> {
    let n = q_pos.len();
    let m = k_pos.len();
    let g = heads / kv_heads;
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    let mut out = vec![0f32; n * heads * d];
    for h in 0..heads {
        let kvh = h / g;
        for (i, &qp) in q_pos.iter().enumerate() {
            let qr = &q[(h * n + i) * d..][..d];
            let visible: Vec<usize> = (0..m).filter(|&j| k_pos[j] <= qp).collect();
            let logits: Vec<f32> = visible
                .iter()
                .map(|&j| {
                    qr.iter()
                        .zip(&k[(kvh * m + j) * d..][..d])
                        .map(|(a, b)| a * b)
                        .sum::<f32>()
                        * scale
                })
                .collect();
            let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let denom: f32 = logits.iter().map(|x| (x - max).exp()).sum();
            let o = &mut out[(i * heads + h) * d..][..d];
            for (&j, x) in visible.iter().zip(&logits) {
                let p = (x - max).exp() / denom;
                for (oe, ve) in o.iter_mut().zip(&v[(kvh * m + j) * d..][..d]) {
                    *oe += p * ve;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use a3kv_model::{Device, Tensor};
    use rand::{Rng, SeedableRng};

    fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
    }

    fn max_abs(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    fn tensor(x: &[f32], dims: (usize, usize, usize)) -> Tensor {
        Tensor::from_slice(x, dims, &Device::Cpu).unwrap()
    }

    #[test]
    fn rope_twin_matches_the_model_rope_in_both_layouts() {
        let (h, n, d) = (3, 7, 64);
        let x = rand_vec(h * n * d, 1);
        let pos = [0u32, 5, 6, 100, 511, 1000, 4095];
        for interleaved in [false, true] {
            let rope =
                a3kv_model::Rope::new(d, 100_000.0, 4096, interleaved, &Device::Cpu).unwrap();
            let want: Vec<f32> = rope
                .apply(&tensor(&x, (h, n, d)), &pos)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let got = rope_twin(&x, h, n, d, &pos, interleaved);
            assert!(
                max_abs(&got, &want) < 1e-5,
                "interleaved {interleaved}: {}",
                max_abs(&got, &want)
            );
        }
    }

    fn rope_twin(
        x: &[f32],
        h: usize,
        n: usize,
        d: usize,
        pos: &[u32],
        interleaved: bool,
    ) -> Vec<f32> {
        rope(x, h, n, d, pos, 100_000.0, interleaved)
    }

    #[test]
    fn gather_and_scatter_are_inverse_on_the_selected_rows() {
        let (h, m, d) = (2, 6, 4);
        let src = rand_vec(h * m * d, 2);
        let idx = [1u32, 4, 5];
        let g = gather_rows(&src, h, m, d, &idx);
        assert_eq!(&g[..d], &src[d..2 * d]);
        assert_eq!(&g[3 * d..4 * d], &src[(m + 1) * d..(m + 2) * d]);
        let mut dst = vec![0f32; h * m * d];
        scatter_rows(&g, &mut dst, h, m, d, &idx);
        assert_eq!(gather_rows(&dst, h, m, d, &idx), g);
        assert_eq!(&dst[..d], &[0.0; 4]);
    }

    #[test]
    fn a3_twin_matches_the_fusion_score_and_top_k() {
        let (heads, kv, d) = (6, 2, 32);
        let (p, nq, t) = (5, 4, 60);
        let q = rand_vec(heads * nq * d, 3);
        let k = rand_vec(kv * t * d, 4);
        let want =
            a3kv_fusion::a3::a3_scores(&tensor(&q, (heads, nq, d)), &tensor(&k, (kv, t, d)), p, 5)
                .unwrap();
        let got = a3_scores(&q, &k, heads, kv, nq, t, p, d, 5);
        assert!(max_abs(&got, &want) < 1e-5, "{}", max_abs(&got, &want));
        for kk in [0, 1, 7, want.len()] {
            let idx: Vec<u32> = a3kv_fusion::selection::top_k(&want, kk, &[])
                .into_iter()
                .map(|i| i as u32)
                .collect();
            assert_eq!(top_k(&want, kk), idx);
        }
        assert_eq!(
            moving_average(&[5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 10.0], 5),
            a3kv_fusion::a3::moving_average(&[5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 10.0], 5)
        );
        assert_eq!(top_k(&[1.0, 3.0, 3.0, 2.0, 3.0], 2), vec![1, 2]);
        assert_eq!(top_k(&[0.0, -0.0, 0.0], 1), vec![0]);
    }

    #[test]
    fn attention_twin_matches_the_model_attention_on_scattered_rows() {
        let (heads, kv, d) = (6, 2, 32);
        let m = 40;
        // Fused cache: positions 0..40; scattered rows at selected positions, out of order.
        let k_pos: Vec<u32> = (0..m as u32).collect();
        let q_pos = [3u32, 17, 18, 39, 0, 25];
        let n = q_pos.len();
        let q = rand_vec(heads * n * d, 5);
        let k = rand_vec(kv * m * d, 6);
        let v = rand_vec(kv * m * d, 7);
        let want: Vec<f32> = a3kv_model::attention::causal_attention(
            &tensor(&q, (heads, n, d)),
            &q_pos,
            &tensor(&k, (kv, m, d)),
            &tensor(&v, (kv, m, d)),
            &k_pos,
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
        let got = attention(&q, &q_pos, &k, &v, &k_pos, heads, kv, d);
        assert!(max_abs(&got, &want) < 1e-5, "{}", max_abs(&got, &want));
    }
}
