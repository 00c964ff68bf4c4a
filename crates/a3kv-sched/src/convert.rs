//! Conversion from fusion's tensor chunk cache ([`ChunkKv`], per layer pre-RoPE K and V
//! `[H_kv, n, d]`) to the store's candle-free [`ChunkKvData`] (`[L, 2, H_kv, n, d]` as `L`
//! layers of flat f32 K and V). The way back is test-only (the round-trip test below):
//! served requests read stored layers through the `LayerFeed`.

use std::sync::Arc;

use a3kv_fusion::ChunkKv;
use a3kv_model::{Model, Tensor};
use a3kv_store::{ChunkKvData, KvDtype, KvMeta, LayerKv};

use crate::EngineError;

/// Flattens a chunk's tensors into store data. Errors on a non-f32 or misshapen cache.
pub fn to_store(model: &Model, kv: &ChunkKv) -> Result<ChunkKvData, EngineError> {
    let c = model.config();
    let meta = KvMeta {
        fingerprint: model.fingerprint().0,
        dtype: KvDtype::F32,
        n_layers: c.num_layers as u32,
        n_kv_heads: c.num_kv_heads as u32,
        head_dim: c.head_dim as u32,
        n_tokens: kv.len() as u32,
        token_ids: kv.token_ids.clone(),
    };
    let flat = |t: &Tensor| -> Result<Vec<f32>, EngineError> {
        t.to_dtype(candle_core::DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| EngineError::Internal(format!("chunk to store: {e}")))
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
        let t = |x: &[f32]| {
            Tensor::from_slice(x, shape, device)
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
        let data = to_store(&m, &kv).unwrap();
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
}
