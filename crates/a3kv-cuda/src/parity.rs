//! Kernel parity: runs every kernel on the device and its CPU twin ([`crate::reference`]) on
//! the same inputs (random, fixed seed, already rounded to the storage dtype so both sides
//! see identical values) and reports the largest absolute error against a bound per kernel
//! and dtype. Used by the `gpu_parity` test (when a driver is present) and by
//! `a3kv-device-check parity` (scripts/device-check.sh).

use rand::{Rng, SeedableRng};

use crate::backend::CudaBackend;
use crate::layout::{A3Shape, AttentionShape};
use crate::reference;
use crate::{Result, StorageDtype};

/// One kernel's parity result.
#[derive(Debug, Clone, PartialEq)]
pub struct ParityResult {
    /// Kernel (and case).
    pub kernel: String,
    /// Storage dtype.
    pub dtype: StorageDtype,
    /// Largest |device − twin|.
    pub max_abs_err: f32,
    /// The bound it must stay within.
    pub bound: f32,
}

impl ParityResult {
    /// Whether the error is within the bound.
    pub fn passed(&self) -> bool {
        self.max_abs_err <= self.bound
    }

    /// One JSON object.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"kernel\":\"{}\",\"dtype\":\"{}\",\"max_abs_err\":{:e},\"bound\":{:e},\"passed\":{}}}",
            self.kernel,
            self.dtype,
            self.max_abs_err,
            self.bound,
            self.passed()
        )
    }
}

fn rand_vec(n: usize, seed: u64, dt: StorageDtype) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let xs: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    dt.round(&xs)
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn max_mag(a: &[f32]) -> f32 {
    a.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

/// Runs every kernel against its twin, for both dtypes, on small Llama-shaped cases (GQA
/// 9/3 heads of 64 as SmolLM2, and 8/2 heads of 128 as Llama-3-8B).
pub fn run_all(be: &CudaBackend) -> Result<Vec<ParityResult>> {
    let mut out = Vec::new();
    for dt in StorageDtype::ALL {
        for &(heads, kv, d) in &[(9usize, 3usize, 64usize), (8, 2, 128)] {
            let tag = format!("h{heads}/{kv}xd{d}");
            let (prefix, q_rows, t) = (7usize, 5usize, 300usize);
            // RoPE of cached keys at a chunk offset, both layouts.
            for interleaved in [false, true] {
                let x = rand_vec(kv * t * d, 1, dt);
                let pos: Vec<u32> = (0..t as u32).map(|i| 1000 + 3 * i).collect();
                let dev = be.rope(&be.upload(dt, &x)?, kv, t, d, &pos, 100_000.0, interleaved)?;
                let want = reference::rope(&x, kv, t, d, &pos, 100_000.0, interleaved);
                let got = be.download(&dev)?;
                out.push(ParityResult {
                    kernel: format!("rope[{tag},interleaved={interleaved}]"),
                    dtype: dt,
                    max_abs_err: max_abs(&got, &want),
                    bound: 2.0 * dt.epsilon() * max_mag(&want) + 1e-5,
                });
            }
            // Gather then scatter of selected rows: exact copies.
            let src = rand_vec(kv * t * d, 2, dt);
            let idx: Vec<u32> = (0..t as u32).filter(|i| i % 7 == 3).collect();
            let g = be.gather_rows(&be.upload(dt, &src)?, kv, t, d, &idx)?;
            let mut dst = be.upload(dt, &vec![0.0; kv * t * d])?;
            be.scatter_rows(&g, &mut dst, kv, t, d, &idx)?;
            let want_g = reference::gather_rows(&src, kv, t, d, &idx);
            let mut want_s = vec![0.0; kv * t * d];
            reference::scatter_rows(&want_g, &mut want_s, kv, t, d, &idx);
            out.push(ParityResult {
                kernel: format!("gather_scatter[{tag}]"),
                dtype: dt,
                max_abs_err: max_abs(&be.download(&g)?, &want_g)
                    .max(max_abs(&be.download(&dst)?, &want_s)),
                bound: 0.0,
            });
            // A^3 score (f32 math on dtype inputs) and top-k.
            let q = rand_vec(heads * q_rows * d, 3, dt);
            let k = rand_vec(kv * t * d, 4, dt);
            let shape = A3Shape {
                heads,
                kv_heads: kv,
                question: q_rows,
                total: t,
                prefix,
                head_dim: d,
            };
            let scores = be.a3_scores(&be.upload(dt, &q)?, &be.upload(dt, &k)?, &shape, 5)?;
            let want = reference::a3_scores(&q, &k, heads, kv, q_rows, t, prefix, d, 5);
            let got = be.download_f32(&scores)?;
            out.push(ParityResult {
                kernel: format!("a3_score[{tag}]"),
                dtype: dt,
                max_abs_err: max_abs(&got[..want.len()], &want),
                bound: 1e-4 * max_mag(&want).max(1e-3),
            });
            // Top-k on identical scores must give the identical set (ties included).
            let n = want.len();
            let mut tied = want.clone();
            for j in (0..n).step_by(11) {
                tied[j] = 0.5; // many exact ties
            }
            let dev_scores = be.upload_f32(&tied)?;
            let mut mismatches = 0usize;
            for kk in [1, n / 7, n / 2, n] {
                let got = be.top_k(&dev_scores, n, kk)?;
                if got != reference::top_k(&tied, kk) {
                    mismatches += 1;
                }
            }
            out.push(ParityResult {
                kernel: format!("topk_rows[{tag}] (mismatched k values)"),
                dtype: dt,
                max_abs_err: mismatches as f32,
                bound: 0.0,
            });
            // Attention of scattered rows over the fused cache.
            let m = t;
            let k_pos: Vec<u32> = (0..m as u32).collect();
            let q_pos: Vec<u32> = (0..m as u32)
                .filter(|i| i % 9 == 0 || *i >= (m - q_rows) as u32)
                .collect();
            let n = q_pos.len();
            let q = rand_vec(heads * n * d, 5, dt);
            let kk = rand_vec(kv * m * d, 6, dt);
            let v = rand_vec(kv * m * d, 7, dt);
            let ashape = AttentionShape {
                heads,
                kv_heads: kv,
                rows: n,
                keys: m,
                head_dim: d,
            };
            let dev = be.attention(
                &be.upload(dt, &q)?,
                &be.upload_u32(&q_pos)?,
                &be.upload(dt, &kk)?,
                &be.upload(dt, &v)?,
                &be.upload_u32(&k_pos)?,
                &ashape,
                &q_pos,
                &k_pos,
            )?;
            let want = reference::attention(&q, &q_pos, &kk, &v, &k_pos, heads, kv, d);
            out.push(ParityResult {
                kernel: format!("attention[{tag}]"),
                dtype: dt,
                max_abs_err: max_abs(&be.download(&dev)?, &want),
                bound: 2.0 * dt.epsilon() * max_mag(&want) + 1e-4,
            });
        }
    }
    be.synchronize()?;
    Ok(out)
}
