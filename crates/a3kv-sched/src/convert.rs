//! Conversion from fusion's tensor chunk cache ([`ChunkKv`], per layer pre-RoPE K and V
//! `[H_kv, n, d]`) to the store's candle-free [`ChunkKvData`] (`[L, 2, H_kv, n, d]` as `L`
//! layers of flat K and V in the store's [`KvDtype`], rounded once here). The way back is
//! test-only (the round-trip test below): served requests read stored layers through the
//! `LayerFeed`.

use std::sync::Arc;

use a3kv_fusion::ChunkKv;
use a3kv_model::{Model, Tensor};
use a3kv_store::{ChunkKvData, KvDtype, KvMeta, KvVec, LayerKv};

use crate::EngineError;

/// Flattens a chunk's tensors into store data of element type `dtype`. Errors on a
/// misshapen cache.
pub fn to_store(model: &Model, kv: &ChunkKv, dtype: KvDtype) -> Result<ChunkKvData, EngineError> {
    let c = model.config();
    let meta = KvMeta {
        fingerprint: model.fingerprint().0,
        dtype,
        n_layers: c.num_layers as u32,
        n_kv_heads: c.num_kv_heads as u32,
        head_dim: c.head_dim as u32,
        n_tokens: kv.len() as u32,
        token_ids: kv.token_ids.clone(),
    };
    let flat = |t: &Tensor| -> Result<KvVec, EngineError> {
        let t = t.flatten_all();
        let got = match dtype {
            KvDtype::F16 => t
                .and_then(|t| t.to_dtype(candle_core::DType::F16))
                .and_then(|t| t.to_vec1())
                .map(KvVec::F16),
            KvDtype::BF16 => t
                .and_then(|t| t.to_dtype(candle_core::DType::BF16))
                .and_then(|t| t.to_vec1())
                .map(KvVec::BF16),
            _ => t
                .and_then(|t| t.to_dtype(candle_core::DType::F32))
                .and_then(|t| t.to_vec1())
                .map(KvVec::F32),
        };
        got.map_err(|e| EngineError::Internal(format!("chunk to store: {e}")))
    };
    let mut layers = Vec::with_capacity(kv.keys.len());
    for (k, v) in kv.keys.iter().zip(&kv.values) {
        layers.push(Arc::new(LayerKv {
            k: flat(k)?,
            v: flat(v)?,
        }));
    }
    Ok(ChunkKvData { meta, layers })
}

/// The candle type of a store element type (what the request caches are kept in).
pub fn candle_dtype(dtype: KvDtype) -> candle_core::DType {
    match dtype {
        KvDtype::F16 => candle_core::DType::F16,
        KvDtype::BF16 => candle_core::DType::BF16,
        _ => candle_core::DType::F32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use a3kv_fusion::{precompute_chunk, ChunkId};
    use a3kv_model::{testing::tiny_model, Device, Family};

    /// One stored layer as tensors `[H_kv, n, d]` (K pre-RoPE, V).
    fn layer_tensors(
        meta: &KvMeta,
        layer: &LayerKv,
        device: &Device,
    ) -> Result<(Tensor, Tensor), EngineError> {
        let shape = (
            meta.n_kv_heads as usize,
            meta.n_tokens as usize,
            meta.head_dim as usize,
        );
        let t = |x: &KvVec| {
            Tensor::from_vec(x.to_f32_vec(), shape, device)
                .map_err(|e| EngineError::Internal(format!("stored layer shape: {e}")))
        };
        Ok((t(&layer.k)?, t(&layer.v)?))
    }

    /// Rebuilds fusion's chunk cache from store data, checking it fits `model`.
    fn from_store(model: &Model, data: &ChunkKvData) -> Result<Arc<ChunkKv>, EngineError> {
        let mut keys = Vec::with_capacity(data.layers.len());
        let mut values = Vec::with_capacity(data.layers.len());
        for l in &data.layers {
            let (k, v) = layer_tensors(&data.meta, l, model.device())?;
            keys.push(k.to_dtype(model.dtype()).map_err(model_err)?);
            values.push(v.to_dtype(model.dtype()).map_err(model_err)?);
        }
        let kv = ChunkKv {
            id: ChunkId::of(model.fingerprint(), &data.meta.token_ids),
            token_ids: data.meta.token_ids.clone(),
            keys,
            values,
        };
        kv.check(model)?;
        Ok(Arc::new(kv))
    }

    fn model_err(e: candle_core::Error) -> EngineError {
        EngineError::Internal(format!("tensor: {e}"))
    }

    #[test]
    fn round_trip_is_exact() {
        let m = tiny_model(Family::Llama, 1).unwrap();
        let kv = precompute_chunk(&m, &[3, 4, 5, 6], None).unwrap();
        let data = to_store(&m, &kv, KvDtype::F32).unwrap();
        data.validate(&m.fingerprint().0).unwrap();
        let back = from_store(&m, &data).unwrap();
        assert_eq!(back.id, kv.id);
        for (a, b) in kv
            .keys
            .iter()
            .zip(&back.keys)
            .chain(kv.values.iter().zip(&back.values))
        {
            let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
        }
    }

    /// 16-bit storage rounds each value once, to nearest: relative error within half a unit
    /// in the last place (2^-11 for f16, 2^-8 for bf16) of values this size.
    #[test]
    fn sixteen_bit_round_trip_rounds_once() {
        let m = tiny_model(Family::Llama, 1).unwrap();
        let kv = precompute_chunk(&m, &[3, 4, 5, 6], None).unwrap();
        for (dtype, ulp) in [
            (KvDtype::F16, 2f32.powi(-11)),
            (KvDtype::BF16, 2f32.powi(-8)),
        ] {
            let data = to_store(&m, &kv, dtype).unwrap();
            data.validate(&m.fingerprint().0).unwrap();
            assert_eq!(data.meta.dtype, dtype);
            assert_eq!(
                data.size_bytes(),
                to_store(&m, &kv, KvDtype::F32).unwrap().size_bytes() / 2 + 8
            );
            let back = from_store(&m, &data).unwrap();
            for (a, b) in kv
                .keys
                .iter()
                .zip(&back.keys)
                .chain(kv.values.iter().zip(&back.values))
            {
                let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
                let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
                for (x, y) in a.iter().zip(&b) {
                    assert!((x - y).abs() <= x.abs() * ulp + 1e-7, "{dtype}: {x} vs {y}");
                }
            }
        }
    }
}
