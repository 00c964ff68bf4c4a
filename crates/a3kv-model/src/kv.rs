//! Per-sequence KV cache: post-RoPE keys and values of every layer, in position order.
//!
//! The cache is owned by the request, never by the model (fusion builds it from stored
//! chunks, scatters recomputed rows into it, and decoding appends to it).

use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Tensor};
use half::{bf16, f16};

use crate::{ModelError, Result};

/// Writes `r` rows per head into a `[H_kv, cap, d]` cache buffer at row `at`, converting to
/// the buffer's element type as `Tensor::to_dtype` does (round to nearest even). Source row
/// `(h, i)` is `src[h · head_stride + i · d..][..d]`, so a sequence's rows can be read straight
/// out of a batch's `[H_kv, B, d]` tensor. One in-place op per buffer: a decode step appends
/// one row to every layer of every sequence, and per-row tensor ops (narrow, contiguous copy,
/// `slice_set`) cost ~2 µs each, 2 ms of a 16-sequence step.
struct WriteRows<'a> {
    src: &'a [f32],
    head_stride: usize,
    hkv: usize,
    r: usize,
    d: usize,
    at: usize,
}

impl WriteRows<'_> {
    fn copy<T: Copy>(&self, dst: &mut [T], start: usize, cap: usize, cvt: impl Fn(f32) -> T) {
        for h in 0..self.hkv {
            for i in 0..self.r {
                let from = &self.src[h * self.head_stride + i * self.d..][..self.d];
                let to = &mut dst[start + (h * cap + self.at + i) * self.d..][..self.d];
                for (t, &f) in to.iter_mut().zip(from) {
                    *t = cvt(f);
                }
            }
        }
    }
}

impl InplaceOp1 for WriteRows<'_> {
    fn name(&self) -> &'static str {
        "kv-write-rows"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let (hkv, cap, d) = layout.shape().dims3()?;
        if !layout.is_contiguous() || hkv != self.hkv || d != self.d || self.at + self.r > cap {
            candle_core::bail!(
                "kv write: {:?} rows {}..{}",
                layout.dims(),
                self.at,
                self.at + self.r
            );
        }
        let start = layout.start_offset();
        match storage {
            CpuStorage::F32(dst) => self.copy(dst, start, cap, |x| x),
            CpuStorage::F16(dst) => self.copy(dst, start, cap, f16::from_f32),
            CpuStorage::BF16(dst) => self.copy(dst, start, cap, bf16::from_f32),
            _ => {
                candle_core::bail!("kv write: a cache of another element type than f32, f16, bf16")
            }
        }
        Ok(())
    }
}

/// Keys and values of one layer: `k`, `v` are `[H_kv, len, d]` views into buffers that
/// grow geometrically, so appending a decode token is amortised O(1).
#[derive(Debug, Clone)]
pub struct LayerKv {
    k_buf: Tensor,
    v_buf: Tensor,
    len: usize,
}

impl LayerKv {
    /// Wraps keys `[H_kv, m, d]` (RoPE applied) and values `[H_kv, m, d]` of one element
    /// type (which the cache keeps: appended rows are converted to it).
    pub fn new(k: Tensor, v: Tensor) -> Result<Self> {
        if k.dims3()? != v.dims3()? || k.dtype() != v.dtype() {
            return Err(ModelError::BadArgument(format!(
                "kv: k {:?} and v {:?} differ",
                k.dims(),
                v.dims()
            )));
        }
        let len = k.dims3()?.1;
        Ok(Self {
            k_buf: k,
            v_buf: v,
            len,
        })
    }

    /// Number of cached rows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no rows are cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keys `[H_kv, len, d]`.
    pub fn k(&self) -> Result<Tensor> {
        Ok(self.k_buf.narrow(1, 0, self.len)?)
    }

    /// Values `[H_kv, len, d]`.
    pub fn v(&self) -> Result<Tensor> {
        Ok(self.v_buf.narrow(1, 0, self.len)?)
    }

    /// Appends rows `k`, `v` `[H_kv, r, d]`, converted to the cache's element type.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<()> {
        let (hkv, r, d) = k.dims3()?;
        let (bh, _, bd) = self.k_buf.dims3()?;
        if (bh, bd) != (hkv, d) || v.dims3()? != (hkv, r, d) {
            return Err(ModelError::BadArgument(format!(
                "kv append: k {:?}, v {:?} onto {:?}",
                k.dims(),
                v.dims(),
                self.k_buf.dims()
            )));
        }
        let rows = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
        };
        let (k, v) = (rows(k)?, rows(v)?);
        self.append_rows(&k, &v, r * d, r)
    }

    /// Appends `r` rows per head from f32 slices laid out as `[H_kv, ·, d]` with
    /// `head_stride` values between heads: row `(h, i)` of the keys is
    /// `k[h · head_stride + i · d..][..d]` (likewise `v`). With `head_stride = B · d` and the
    /// slices starting at `b · d`, this takes sequence `b`'s row of a batch's `[H_kv, B, d]`.
    /// Rows are converted to the cache's element type.
    pub fn append_rows(
        &mut self,
        k: &[f32],
        v: &[f32],
        head_stride: usize,
        r: usize,
    ) -> Result<()> {
        let (hkv, cap, d) = self.k_buf.dims3()?;
        let need = if hkv == 0 || r == 0 {
            0
        } else {
            (hkv - 1) * head_stride + r * d
        };
        if k.len() < need || v.len() < need || (hkv > 1 && head_stride < r * d) {
            return Err(ModelError::BadArgument(format!(
                "kv append: {} key and {} value values for {r} rows onto {:?} (head stride {head_stride})",
                k.len(),
                v.len(),
                self.k_buf.dims()
            )));
        }
        if self.len + r > cap {
            // A fresh buffer: never write into storage that other tensors may share.
            let new_cap = (2 * cap).max(self.len + r).max(16);
            let grow = |buf: &Tensor| -> Result<Tensor> {
                let nb = Tensor::zeros((hkv, new_cap, d), buf.dtype(), buf.device())?;
                nb.slice_set(&buf.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
                Ok(nb)
            };
            self.k_buf = grow(&self.k_buf)?;
            self.v_buf = grow(&self.v_buf)?;
        }
        for (buf, src) in [(&self.k_buf, k), (&self.v_buf, v)] {
            buf.inplace_op1(&WriteRows {
                src,
                head_stride,
                hkv,
                r,
                d,
                at: self.len,
            })?;
        }
        self.len += r;
        Ok(())
    }
}

/// A sequence's KV cache: one [`LayerKv`] per layer plus the position of each row.
/// Positions are used for masking only (`key_pos <= query_pos`).
#[derive(Debug, Clone)]
pub struct KvCache {
    /// Per layer keys/values.
    pub layers: Vec<LayerKv>,
    /// Global position of each cached row, non-decreasing.
    pub positions: Vec<u32>,
}

impl KvCache {
    /// Builds a cache, checking that every layer holds `positions.len()` rows.
    pub fn new(layers: Vec<LayerKv>, positions: Vec<u32>) -> Result<Self> {
        if layers.iter().any(|l| l.len() != positions.len()) {
            return Err(ModelError::BadArgument(
                "kv cache: layer lengths differ from positions".into(),
            ));
        }
        Ok(Self { layers, positions })
    }

    /// Number of cached rows.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Next position to decode at.
    pub fn next_position(&self) -> u32 {
        self.positions.last().map(|p| p + 1).unwrap_or(0)
    }

    /// Bytes held by the live rows (all layers, K and V).
    pub fn size_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| {
                let (h, _, d) = l.k_buf.dims3().unwrap_or((0, 0, 0));
                2 * h * l.len * d * l.k_buf.dtype().size_in_bytes()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn values(t: &Tensor) -> Vec<f32> {
        t.to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// The cache after appending `rows` one at a time with the tensor ops the in-place writer
    /// replaced: `to_dtype`, then `cat` (the reference twin of [`LayerKv::append_rows`]).
    fn reference(start: &Tensor, rows: &[Tensor]) -> Vec<f32> {
        let mut t = start.clone();
        for r in rows {
            t = Tensor::cat(&[&t, &r.to_dtype(start.dtype()).unwrap()], 1).unwrap();
        }
        values(&t)
    }

    #[test]
    fn batch_rows_append_as_the_tensor_path_in_every_cache_type() {
        let dev = Device::Cpu;
        let (hkv, d, batch) = (3, 8, 5);
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let k0 = Tensor::randn(0f32, 1.0, (hkv, 4, d), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let mut kv = LayerKv::new(k0.clone(), k0.clone()).unwrap();
            let mut want = Vec::new();
            // 40 steps: the buffer grows past its first capacities (16, 32, 64).
            for _ in 0..40 {
                // A batch's new rows [H_kv, B, d]; this cache is sequence 2.
                let step = Tensor::randn(0f32, 1.0, (hkv, batch, d), &dev).unwrap();
                let all: Vec<f32> = step.flatten_all().unwrap().to_vec1().unwrap();
                kv.append_rows(&all[2 * d..], &all[2 * d..], batch * d, 1)
                    .unwrap();
                want.push(step.narrow(1, 2, 1).unwrap().contiguous().unwrap());
            }
            assert_eq!(kv.len(), 44);
            let want = reference(&k0, &want);
            assert_eq!(values(&kv.k().unwrap()), want, "{dtype:?} keys");
            assert_eq!(values(&kv.v().unwrap()), want, "{dtype:?} values");
            // Tensor rows through `append` land the same way.
            let more = Tensor::randn(0f32, 1.0, (hkv, 2, d), &dev).unwrap();
            kv.append(&more, &more).unwrap();
            let k = values(&kv.k().unwrap());
            let tail = values(&more.to_dtype(dtype).unwrap());
            for h in 0..hkv {
                assert_eq!(k[(h * 46 + 44) * d..][..2 * d], tail[h * 2 * d..][..2 * d]);
            }
        }
    }

    #[test]
    fn short_or_mismatched_rows_are_errors() {
        let dev = Device::Cpu;
        let z = Tensor::zeros((2, 3, 4), DType::F32, &dev).unwrap();
        let mut kv = LayerKv::new(z.clone(), z).unwrap();
        // Two heads of one row need head_stride + 4 values.
        assert!(kv.append_rows(&[0.0; 7], &[0.0; 8], 4, 1).is_err());
        assert!(kv.append_rows(&[0.0; 8], &[0.0; 7], 4, 1).is_err());
        // Heads overlapping each other's rows.
        assert!(kv.append_rows(&[0.0; 16], &[0.0; 16], 4, 2).is_err());
        let bad = Tensor::zeros((2, 1, 5), DType::F32, &dev).unwrap();
        assert!(kv.append(&bad, &bad).is_err());
        assert_eq!(kv.len(), 3, "a rejected append leaves the cache as it was");
        kv.append_rows(&[1.0; 8], &[2.0; 8], 4, 1).unwrap();
        assert_eq!(kv.len(), 4);
    }
}
