//! Fused CPU kernels for the prefill hot spots, each with a plain-tensor reference twin
//! (tests compare them): a scaled, position-masked softmax over attention scores (one
//! parallel pass instead of scale + mask-add + softmax) and SwiGLU (`silu(gate) * up`
//! straight from the fused gate|up projection).

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use crate::Result;

/// Softmax over the last dim of scores `[B, n, m]` after scaling by `scale`, where query
/// row `i` (of `n`) sees key `j` iff `k_pos[j] <= q_pos[i]`; hidden keys get probability 0.
/// A custom op's input as one contiguous f32 slice; errors name the op.
pub(crate) fn contiguous_f32<'a>(
    op: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: f32 only");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: input must be contiguous");
    };
    Ok(&data[start..end])
}

struct MaskedSoftmax<'a> {
    q_pos: &'a [u32],
    k_pos: &'a [u32],
    scale: f32,
}

impl CustomOp1 for MaskedSoftmax<'_> {
    fn name(&self) -> &'static str {
        "a3kv-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let src = contiguous_f32("masked softmax", storage, layout)?;
        let (_b, n, m) = layout.shape().dims3()?;
        // Keys visible to each query row: a prefix, since key positions are sorted.
        let visible: Vec<usize> = self
            .q_pos
            .iter()
            .map(|&q| self.k_pos.partition_point(|&k| k <= q))
            .collect();
        let mut out = vec![0f32; src.len()];
        let scale = self.scale;
        out.par_chunks_mut(m)
            .zip(src.par_chunks(m))
            .enumerate()
            .for_each(|(r, (o, s))| {
                let v = visible[r % n];
                let s = &s[..v];
                let max = s.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x)) * scale;
                let mut sum = 0f32;
                for (oj, &x) in o[..v].iter_mut().zip(s) {
                    let e = (x * scale - max).exp();
                    *oj = e;
                    sum += e;
                }
                let inv = 1.0 / sum;
                for oj in &mut o[..v] {
                    *oj *= inv;
                }
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// Fused scaled, position-masked softmax of `scores` `[B, n, m]` (see the module doc).
/// Every query must see at least one key. Non-f32 inputs go through f32.
pub fn masked_softmax(scores: &Tensor, q_pos: &[u32], k_pos: &[u32], scale: f32) -> Result<Tensor> {
    let dtype = scores.dtype();
    let s = scores.to_dtype(DType::F32)?.contiguous()?;
    if !s.device().is_cpu() {
        return masked_softmax_reference(&s, q_pos, k_pos, scale)?
            .to_dtype(dtype)
            .map_err(Into::into);
    }
    let out = s.apply_op1_no_bwd(&MaskedSoftmax {
        q_pos,
        k_pos,
        scale,
    })?;
    Ok(out.to_dtype(dtype)?)
}

/// Reference twin of [`masked_softmax`]: scale, add a `-inf` mask, plain softmax.
pub fn masked_softmax_reference(
    scores: &Tensor,
    q_pos: &[u32],
    k_pos: &[u32],
    scale: f32,
) -> Result<Tensor> {
    let (_, n, m) = scores.dims3()?;
    let mut mask = vec![0f32; n * m];
    for (i, &q) in q_pos.iter().enumerate() {
        for (j, &k) in k_pos.iter().enumerate() {
            if k > q {
                mask[i * m + j] = f32::NEG_INFINITY;
            }
        }
    }
    let mask = Tensor::from_vec(mask, (1, n, m), scores.device())?;
    let s = (scores * scale as f64)?.broadcast_add(&mask)?;
    Ok(candle_nn::ops::softmax(&s, D::Minus1)?)
}

struct SwiGlu;

impl CustomOp1 for SwiGlu {
    fn name(&self) -> &'static str {
        "a3kv-swiglu"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let src = contiguous_f32("swiglu", storage, layout)?;
        let (n, two_i) = layout.shape().dims2()?;
        let i = two_i / 2;
        let mut out = vec![0f32; n * i];
        out.par_chunks_mut(i)
            .zip(src.par_chunks(two_i))
            .for_each(|(o, s)| {
                let (g, u) = s.split_at(i);
                swiglu_row(o, g, u);
            });
        Ok((CpuStorage::F32(out), Shape::from((n, i))))
    }
}

/// `o = silu(g) · u`, with the sigmoid from `e = e^{-|g|}` (an argument ≤ 0, which the flash
/// kernel's `exp2` polynomial covers: relative error ~2e-7): `1 / (1 + e)` for `g ≥ 0`,
/// `e / (1 + e)` below. Branch-free, so the loop vectorises, where `f32::exp` is a libm call
/// per value (~1.7% of a 512-token prefill in `perf`).
#[inline(always)]
fn swiglu_row_with<const FMA: bool>(o: &mut [f32], g: &[f32], u: &[f32]) {
    use crate::kernels::cpu::flash::{exp2, LOG2_E};
    for ((oj, &gj), &uj) in o.iter_mut().zip(g).zip(u) {
        let e = exp2::<FMA>(-gj.abs() * LOG2_E);
        let r = 1.0 / (1.0 + e);
        let sigmoid = if gj >= 0.0 { r } else { e * r };
        *oj = gj * sigmoid * uj;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn swiglu_row_avx512(o: &mut [f32], g: &[f32], u: &[f32]) {
    swiglu_row_with::<true>(o, g, u)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn swiglu_row_avx2(o: &mut [f32], g: &[f32], u: &[f32]) {
    swiglu_row_with::<true>(o, g, u)
}

/// [`swiglu_row_with`] in the widest copy this CPU runs.
fn swiglu_row(o: &mut [f32], g: &[f32], u: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::kernels::cpu::Isa;
        match Isa::detect() {
            // SAFETY: the CPU has the features of the copy it runs (detected).
            Isa::Avx512 => return unsafe { swiglu_row_avx512(o, g, u) },
            Isa::Avx2 => return unsafe { swiglu_row_avx2(o, g, u) },
            Isa::Scalar => {}
        }
    }
    swiglu_row_with::<false>(o, g, u)
}

/// `silu(x[:, :I]) * x[:, I:]` of the fused gate|up output `[n, 2I]` → `[n, I]`.
pub fn swiglu(gate_up: &Tensor) -> Result<Tensor> {
    if gate_up.dtype() != DType::F32 || !gate_up.device().is_cpu() {
        return swiglu_reference(gate_up);
    }
    Ok(gate_up.contiguous()?.apply_op1_no_bwd(&SwiGlu)?)
}

/// Reference twin of [`swiglu`].
pub fn swiglu_reference(gate_up: &Tensor) -> Result<Tensor> {
    let (_, two_i) = gate_up.dims2()?;
    let i = two_i / 2;
    Ok((gate_up.narrow(1, 0, i)?.silu()? * gate_up.narrow(1, i, i)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::max_abs_diff;
    use candle_core::Device;

    #[test]
    fn fused_kernels_match_their_reference_twins() {
        let dev = Device::Cpu;
        let s = Tensor::randn(0f32, 3.0, (4, 5, 9), &dev).unwrap();
        let q_pos = [3u32, 8, 5, 10, 4];
        let k_pos = [0u32, 1, 2, 3, 4, 5, 6, 7, 8];
        let a = masked_softmax(&s, &q_pos, &k_pos, 0.125).unwrap();
        let b = masked_softmax_reference(&s, &q_pos, &k_pos, 0.125).unwrap();
        assert!(max_abs_diff(&a, &b) < 1e-6);
        // Gates from -90 to 90 (both tails of the sigmoid), values of either sign.
        let mut v: Vec<f32> = (0..7 * 40).map(|i| (i as f32 - 140.0) * 0.65).collect();
        v.extend((0..7 * 40).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.3));
        let x = Tensor::from_vec(v, (7, 80), &dev).unwrap();
        let (a, b) = (swiglu(&x).unwrap(), swiglu_reference(&x).unwrap());
        // Relative, with a floor for the far negative tail (e^{-|g|} below f32's normal range).
        let rel = ((&a - &b).unwrap().abs().unwrap() / (b.abs().unwrap() + 1e-20).unwrap())
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(rel < 2e-6, "swiglu relative error {rel}");
    }
}
