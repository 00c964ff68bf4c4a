//! The stored value: chunk KV meta (`KvMeta`), one layer's K/V (`LayerKv`) and a whole chunk
//! (`ChunkKvData`, shape `[L, 2, H_kv, n, d]` as `L` layers of K and V `[H_kv, n, d]`).

use std::sync::Arc;

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// Element type of stored K/V (`engine.kv_dtype`): f32, or f16/bf16 at half the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum KvDtype {
    /// 32-bit IEEE float, little-endian on disk.
    F32,
    /// 16-bit IEEE float (binary16), little-endian on disk.
    F16,
    /// bfloat16 (the top half of an f32), little-endian on disk.
    BF16,
}

impl KvDtype {
    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
        }
    }

    /// The configuration name: `f32`, `f16` or `bf16`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::BF16 => "bf16",
        }
    }

    /// On-disk code of the dtype.
    pub(crate) fn code(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::BF16 => 2,
        }
    }

    /// Dtype for an on-disk code, `None` for unknown codes.
    pub(crate) fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(Self::F32),
            1 => Some(Self::F16),
            2 => Some(Self::BF16),
            _ => None,
        }
    }
}

impl std::fmt::Display for KvDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for KvDtype {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "bf16" => Ok(Self::BF16),
            other => Err(StoreError::InvalidData(format!(
                "kv dtype {other:?}: expected \"f32\", \"f16\" or \"bf16\""
            ))),
        }
    }
}

/// The elements of one stored K or V tensor, in its [`KvDtype`].
#[derive(Debug, Clone, PartialEq)]
pub enum KvVec {
    /// f32 elements.
    F32(Vec<f32>),
    /// f16 elements.
    F16(Vec<f16>),
    /// bf16 elements.
    BF16(Vec<bf16>),
}

impl KvVec {
    /// `xs` rounded (to nearest even) to `dtype`.
    pub fn from_f32(dtype: KvDtype, xs: &[f32]) -> Self {
        match dtype {
            KvDtype::F32 => Self::F32(xs.to_vec()),
            KvDtype::F16 => {
                let mut out = vec![f16::ZERO; xs.len()];
                out.convert_from_f32_slice(xs);
                Self::F16(out)
            }
            KvDtype::BF16 => {
                let mut out = vec![bf16::ZERO; xs.len()];
                out.convert_from_f32_slice(xs);
                Self::BF16(out)
            }
        }
    }

    /// The element type.
    pub fn dtype(&self) -> KvDtype {
        match self {
            Self::F32(_) => KvDtype::F32,
            Self::F16(_) => KvDtype::F16,
            Self::BF16(_) => KvDtype::BF16,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Self::F32(x) => x.len(),
            Self::F16(x) => x.len(),
            Self::BF16(x) => x.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements' bytes in host order (little-endian on every platform a3kv builds for;
    /// the file writer swaps on big-endian hosts).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::F32(x) => bytemuck::cast_slice(x),
            Self::F16(x) => bytemuck::cast_slice(x),
            Self::BF16(x) => bytemuck::cast_slice(x),
        }
    }

    /// Elements `range` widened to f32 (exact), appended to `out`. Panics if `range` is out
    /// of bounds, like slice indexing.
    pub fn extend_f32(&self, range: std::ops::Range<usize>, out: &mut Vec<f32>) {
        match self {
            Self::F32(x) => out.extend_from_slice(&x[range]),
            Self::F16(x) => widen(&x[range], out),
            Self::BF16(x) => widen(&x[range], out),
        }
    }

    /// Every element widened to f32.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.len());
        self.extend_f32(0..self.len(), &mut out);
        out
    }
}

/// Appends `xs` widened to f32 (half's slice conversion: F16C/SIMD where the CPU has it).
fn widen<T>(xs: &[T], out: &mut Vec<f32>)
where
    [T]: HalfFloatSliceExt,
{
    let start = out.len();
    out.resize(start + xs.len(), 0.0);
    xs.convert_to_f32_slice(&mut out[start..]);
}

impl FromIterator<f32> for KvVec {
    fn from_iter<I: IntoIterator<Item = f32>>(iter: I) -> Self {
        Self::F32(iter.into_iter().collect())
    }
}

impl From<Vec<f32>> for KvVec {
    fn from(x: Vec<f32>) -> Self {
        Self::F32(x)
    }
}

/// Everything about a chunk's KV except the numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvMeta {
    /// Fingerprint of the model (weights, dtype, tokenizer) that computed the KV.
    pub fingerprint: [u8; 32],
    /// Element type.
    pub dtype: KvDtype,
    /// Number of layers `L`.
    pub n_layers: u32,
    /// Number of KV heads `H_kv`.
    pub n_kv_heads: u32,
    /// Head dimension `d`.
    pub head_dim: u32,
    /// Number of tokens `n`.
    pub n_tokens: u32,
    /// The chunk's token ids (`n_tokens` of them).
    pub token_ids: Vec<u32>,
}

impl KvMeta {
    /// Elements in one of K or V of one layer: `H_kv * n * d`, `None` on overflow.
    pub fn elems_per_tensor(&self) -> Option<usize> {
        usize::try_from(self.n_kv_heads)
            .ok()?
            .checked_mul(usize::try_from(self.n_tokens).ok()?)?
            .checked_mul(usize::try_from(self.head_dim).ok()?)
    }

    /// Bytes of K plus V of one layer, `None` on overflow.
    pub fn layer_bytes(&self) -> Option<u64> {
        let elems = u64::try_from(self.elems_per_tensor()?).ok()?;
        elems
            .checked_mul(2)?
            .checked_mul(self.dtype.size_bytes() as u64)
    }

    /// KV bytes per token over all layers: `L * 2 * H_kv * d * dtype_size`.
    pub fn kv_bytes_per_token(&self) -> u64 {
        u64::from(self.n_layers)
            * 2
            * u64::from(self.n_kv_heads)
            * u64::from(self.head_dim)
            * self.dtype.size_bytes() as u64
    }
}

/// One layer's cached K and V, both in the chunk's [`KvDtype`].
#[derive(Debug, Clone, PartialEq)]
pub struct LayerKv {
    /// Pre-RoPE keys `[H_kv, n, d]`, row-major.
    pub k: KvVec,
    /// Values `[H_kv, n, d]`, row-major.
    pub v: KvVec,
}

/// A chunk's full KV cache: `meta.n_layers` layers of [`LayerKv`].
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkKvData {
    /// Shape, model and tokens.
    pub meta: KvMeta,
    /// One entry per layer, layer 0 first.
    pub layers: Vec<Arc<LayerKv>>,
}

impl ChunkKvData {
    /// Bytes this chunk accounts for in a tier: K/V payload plus token ids.
    pub fn size_bytes(&self) -> u64 {
        let kv: usize = self.layers.iter().map(|l| l.k.len() + l.v.len()).sum();
        (kv as u64) * self.meta.dtype.size_bytes() as u64 + 4 * self.meta.token_ids.len() as u64
    }

    /// Checks that the layers match the meta and the meta matches `fingerprint`.
    ///
    /// # Errors
    /// [`StoreError::InvalidData`] naming the first mismatch.
    pub fn validate(&self, fingerprint: &[u8; 32]) -> Result<(), StoreError> {
        let m = &self.meta;
        if &m.fingerprint != fingerprint {
            return Err(StoreError::InvalidData(
                "meta.fingerprint differs from the store's model fingerprint".into(),
            ));
        }
        if m.token_ids.len() as u64 != u64::from(m.n_tokens) {
            return Err(StoreError::InvalidData(format!(
                "token_ids has {} entries, n_tokens is {}",
                m.token_ids.len(),
                m.n_tokens
            )));
        }
        if self.layers.len() as u64 != u64::from(m.n_layers) {
            return Err(StoreError::InvalidData(format!(
                "{} layers, meta.n_layers is {}",
                self.layers.len(),
                m.n_layers
            )));
        }
        let elems = m
            .elems_per_tensor()
            .ok_or_else(|| StoreError::InvalidData("H_kv * n * d overflows".into()))?;
        for (l, layer) in self.layers.iter().enumerate() {
            if layer.k.dtype() != m.dtype || layer.v.dtype() != m.dtype {
                return Err(StoreError::InvalidData(format!(
                    "layer {l}: k is {} and v {}, meta.dtype is {}",
                    layer.k.dtype(),
                    layer.v.dtype(),
                    m.dtype
                )));
            }
            if layer.k.len() != elems || layer.v.len() != elems {
                return Err(StoreError::InvalidData(format!(
                    "layer {l}: k has {} and v {} elements, expected [H_kv={}, n={}, d={}] = {elems}",
                    layer.k.len(),
                    layer.v.len(),
                    m.n_kv_heads,
                    m.n_tokens,
                    m.head_dim
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic test chunk: values depend on (seed, layer, index), including odd bit
    /// patterns (negative zero, subnormals, NaN payloads) so round trips are checked bit-exactly.
    pub(crate) fn sample_chunk(
        fingerprint: [u8; 32],
        seed: u32,
        n_layers: u32,
        n_tokens: u32,
    ) -> ChunkKvData {
        let (h, d) = (2u32, 8u32);
        let elems = (h * n_tokens * d) as usize;
        let layers = (0..n_layers)
            .map(|l| {
                let gen = |which: u32| -> Vec<f32> {
                    (0..elems as u32)
                        .map(|i| {
                            let x = seed
                                .wrapping_mul(2_654_435_761)
                                .wrapping_add(l * 7919 + which * 104_729 + i * 31);
                            match i % 17 {
                                0 => -0.0,
                                1 => f32::from_bits(1 + (x & 0xff)),
                                2 => f32::from_bits(0x7fc0_0001 | (x & 0xf0)),
                                _ => (x % 100_000) as f32 / 997.0 - 50.0,
                            }
                        })
                        .collect()
                };
                Arc::new(LayerKv {
                    k: gen(0).into(),
                    v: gen(1).into(),
                })
            })
            .collect();
        ChunkKvData {
            meta: KvMeta {
                fingerprint,
                dtype: KvDtype::F32,
                n_layers,
                n_kv_heads: h,
                head_dim: d,
                n_tokens,
                token_ids: (0..n_tokens).map(|t| t * 3 + seed).collect(),
            },
            layers,
        }
    }

    /// Bit-level equality (NaN payloads and signed zeros included).
    pub(crate) fn bit_equal(a: &ChunkKvData, b: &ChunkKvData) -> bool {
        a.meta == b.meta
            && a.layers.len() == b.layers.len()
            && a.layers
                .iter()
                .zip(&b.layers)
                .all(|(x, y)| x.k.as_bytes() == y.k.as_bytes() && x.v.as_bytes() == y.v.as_bytes())
    }

    #[test]
    fn validate_catches_shape_errors() {
        let fp = [7u8; 32];
        let mut c = sample_chunk(fp, 1, 3, 5);
        assert!(c.validate(&fp).is_ok());
        assert_eq!(c.validate(&[8u8; 32]).unwrap_err().kind(), "invalid_data");
        let l1 = Arc::make_mut(&mut c.layers[1]);
        l1.v = KvVec::from_f32(KvDtype::F32, &l1.v.to_f32_vec()[1..]);
        assert!(c.validate(&fp).is_err());
        let mut c = sample_chunk(fp, 1, 3, 5);
        c.meta.token_ids.pop();
        assert!(c.validate(&fp).is_err());
        let mut c = sample_chunk(fp, 1, 3, 5);
        c.layers.pop();
        assert!(c.validate(&fp).is_err());
    }

    #[test]
    fn sizes() {
        let c = sample_chunk([0; 32], 1, 3, 5);
        assert_eq!(c.size_bytes(), 3 * 2 * (2 * 5 * 8) * 4 + 5 * 4);
        assert_eq!(c.meta.layer_bytes(), Some(2 * 2 * 5 * 8 * 4));
        // SmolLM2-135M: 30 layers, 3 KV heads, d = 64, f32 -> 46,080 bytes per token.
        let m = KvMeta {
            n_layers: 30,
            n_kv_heads: 3,
            head_dim: 64,
            ..c.meta.clone()
        };
        assert_eq!(m.kv_bytes_per_token(), 46_080);
    }
}
