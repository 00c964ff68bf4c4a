//! The fused prefill of docs/design.md §2.4 cut at the pipeline's stage boundaries, with the
//! selective layers batched over many requests. The math is `a3kv_fusion::FusionRun`'s;
//! this file only feeds it cached layers as they stream in and batches its layers.
//!
//! [`check_phase`] (RelevanceScorer, one request): `FusionRun::run_check` — exact layers
//! `0..c` over all rows, the check layer's q/k/v and the method's selection `I`.
//! [`selective_batch`] (RecomputeBatcher): for each later layer, the q/k/v projections and
//! the MLP of the rows `I` of every request in the batch run as one matmul
//! (token-independent); `FusionRun::attend_layer` (RoPE, scatter of fresh k/v into the
//! request's re-positioned cached layer, attention) runs per request over its own fused
//! cache. [`finish`]: `FusionRun::finish` (logits of the last row, fused cache, report).
//!
//! The tests below assert that batched stages equal `a3kv_fusion::fused_prefill` for every
//! method.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Instant;

use a3kv_fusion::{CachedLayers, FusedPrefill, FusionError, FusionParams, FusionRun, RagPrompt};
use a3kv_model::{Model, Tensor};
use a3kv_store::LayerKv as StoredLayer;

use crate::EngineError;

/// A request between the check layer and the end of its fused prefill.
pub type Fusing = FusionRun;

/// Where a request's cached layers come from: a function returning layer `l` of every
/// cached part (prefix first, then chunks), blocking until it has arrived.
pub trait LayerSource {
    /// Layer `l` of each part, `[H_kv, n_i, d]` flat K (pre-RoPE) and V.
    fn layer(&mut self, l: usize) -> Result<Vec<Arc<StoredLayer>>, EngineError>;
}

fn ferr(e: candle_core::Error) -> EngineError {
    EngineError::from(FusionError::from(e))
}

/// Builds one layer's pre-RoPE K and V `[H_kv, T, d]` over all prompt rows from the stored
/// parts (question rows zero).
fn assemble(
    model: &Model,
    prompt: &RagPrompt,
    parts: &[Arc<StoredLayer>],
) -> Result<(Tensor, Tensor), EngineError> {
    let c = model.config();
    let (hkv, d, t) = (c.num_kv_heads, c.head_dim, prompt.len());
    let mut rows = 0usize;
    for p in parts {
        let n = p.k.len() / (hkv * d);
        if p.k.len() != hkv * n * d || p.v.len() != p.k.len() || rows + n > t {
            return Err(EngineError::Internal(
                "cached layer does not fit the prompt".into(),
            ));
        }
        rows += n;
    }
    if rows + prompt.question_len() != t {
        return Err(EngineError::Internal(format!(
            "cached parts cover {rows} rows, prompt expects {}",
            t - prompt.question_len()
        )));
    }
    // Written once, head by head (no zero fill first): each part's rows of the head (widened
    // to f32 when stored in 16 bits), then zeros for the question rows.
    let mut k = Vec::with_capacity(hkv * t * d);
    let mut v = Vec::with_capacity(hkv * t * d);
    for h in 0..hkv {
        for p in parts {
            let n = p.k.len() / (hkv * d);
            p.k.extend_f32(h * n * d..(h + 1) * n * d, &mut k);
            p.v.extend_f32(h * n * d..(h + 1) * n * d, &mut v);
        }
        k.resize((h + 1) * t * d, 0.0);
        v.resize((h + 1) * t * d, 0.0);
    }
    let dev = model.device();
    let mk = |x: Vec<f32>| {
        Tensor::from_vec(x, (hkv, t, d), dev)
            .and_then(|x| x.to_dtype(model.dtype()))
            .map_err(ferr)
    };
    Ok((mk(k)?, mk(v)?))
}

/// One layer's cache, already assembled, as fusion's [`CachedLayers`].
struct Assembled {
    layer: usize,
    k: Tensor,
    v: Tensor,
}

impl CachedLayers for Assembled {
    fn layer(&self, l: usize) -> a3kv_fusion::Result<(Tensor, Tensor)> {
        if l != self.layer {
            return Err(FusionError::InvalidParameter(format!(
                "layer {l} asked of layer {}'s cache",
                self.layer
            )));
        }
        Ok((self.k.clone(), self.v.clone()))
    }
}

/// A [`LayerSource`] as fusion's [`CachedLayers`] for the check phase; the source's own
/// error (a corrupt chunk, a lost loader) is kept so the request fails with it.
struct SourceLayers<'a> {
    model: &'a Model,
    prompt: RagPrompt,
    src: RefCell<&'a mut dyn LayerSource>,
    error: RefCell<Option<EngineError>>,
}

impl CachedLayers for SourceLayers<'_> {
    fn layer(&self, l: usize) -> a3kv_fusion::Result<(Tensor, Tensor)> {
        let got = self
            .src
            .borrow_mut()
            .layer(l)
            .and_then(|parts| assemble(self.model, &self.prompt, &parts));
        got.map_err(|e| {
            let msg = e.to_string();
            *self.error.borrow_mut() = Some(e);
            FusionError::ChunkMismatch(msg)
        })
    }
}

/// Exact layers `0..c`, the check layer's q/k/v and the selection (RelevanceScorer).
/// Methods with check layer 0 select statically and read no cache here; CacheBlend (and
/// the A^3 hybrid) read the cached V of the check layer from `src`.
pub fn check_phase(
    model: &Model,
    prompt: RagPrompt,
    params: FusionParams,
    src: &mut dyn LayerSource,
) -> Result<Fusing, EngineError> {
    let mut run = FusionRun::new(model, prompt.clone(), params)?;
    let cached = SourceLayers {
        model,
        prompt,
        src: RefCell::new(src),
        error: RefCell::new(None),
    };
    match run.run_check(model, &cached) {
        Ok(()) => Ok(run),
        Err(e) => Err(cached.error.into_inner().unwrap_or_else(|| e.into())),
    }
}

/// Runs every remaining layer of the requests in `batch` (RecomputeBatcher). Per layer the
/// rows `I` of all requests at that layer go through one q/k/v matmul and one MLP matmul.
/// A request whose cache fails (corrupt chunk, lost loader) is dropped from the batch with
/// its error in the returned vector; the others go on.
pub fn selective_batch(
    model: &Model,
    batch: &mut [(&mut Fusing, &mut dyn LayerSource)],
) -> Vec<Result<(), EngineError>> {
    let mut status: Vec<Result<(), EngineError>> = batch.iter().map(|_| Ok(())).collect();
    let first = batch.iter().map(|(f, _)| f.next_layer()).min().unwrap_or(0);
    for l in first..model.num_layers() {
        // Members at this layer whose cached layer arrived.
        let mut members = Vec::new();
        for (i, (f, src)) in batch.iter_mut().enumerate() {
            if status[i].is_err() || f.next_layer() != l {
                continue;
            }
            match src.layer(l) {
                Ok(parts) => members.push((i, parts)),
                Err(e) => status[i] = Err(e),
            }
        }
        if members.is_empty() {
            continue;
        }
        if let Err(e) = batch_layer(model, l, batch, members) {
            for (i, e) in e {
                status[i] = Err(e);
            }
        }
    }
    status
}

/// One selective layer over `members` (batch index, stored parts of layer `l`). On error,
/// returns the failed members with their errors.
fn batch_layer(
    model: &Model,
    l: usize,
    batch: &mut [(&mut Fusing, &mut dyn LayerSource)],
    members: Vec<(usize, Vec<Arc<StoredLayer>>)>,
) -> Result<(), Vec<(usize, EngineError)>> {
    let all_fail = |ids: &[usize], e: EngineError| -> Vec<(usize, EngineError)> {
        ids.iter().map(|&i| (i, e.clone())).collect()
    };
    let ids: Vec<usize> = members.iter().map(|(i, _)| *i).collect();
    let ts = Instant::now();
    let hidden: Vec<Tensor> = ids
        .iter()
        .map(|&i| batch[i].0.hidden().cloned())
        .collect::<Result<_, _>>()
        .map_err(|e| all_fail(&ids, e.into()))?;
    let h_all = Tensor::cat(&hidden, 0).map_err(|e| all_fail(&ids, ferr(e)))?;
    let qkv = model
        .layer_qkv(l, &h_all)
        .map_err(|e| all_fail(&ids, FusionError::from(e).into()))?;
    let mut attn = Vec::with_capacity(members.len());
    let mut off = 0usize;
    for (i, parts) in members {
        let f = &mut *batch[i].0;
        let n = f.rows().len();
        let mut one = || -> Result<Tensor, EngineError> {
            let (k, v) = assemble(model, f.prompt(), &parts)?;
            let cached = Assembled { layer: l, k, v };
            let q_i = qkv.q.narrow(1, off, n).map_err(ferr)?;
            let k_i = qkv.k.narrow(1, off, n).map_err(ferr)?;
            let v_i = qkv.v.narrow(1, off, n).map_err(ferr)?;
            Ok(f.attend_layer(model, l, &q_i, &k_i, &v_i, &cached)?)
        };
        attn.push(one().map_err(|e| all_fail(&ids, e))?);
        off += n;
    }
    let a_all = Tensor::cat(&attn, 0).map_err(|e| all_fail(&ids, ferr(e)))?;
    let h_new = model
        .layer_mlp(l, &h_all, &a_all)
        .map_err(|e| all_fail(&ids, FusionError::from(e).into()))?;
    let share = ts.elapsed().as_secs_f64() / ids.len() as f64;
    let mut off = 0usize;
    for &i in &ids {
        let f = &mut *batch[i].0;
        let n = f.rows().len();
        let h = h_new
            .narrow(0, off, n)
            .map_err(|e| all_fail(&ids, ferr(e)))?;
        f.end_layer(h, share)
            .map_err(|e| all_fail(&ids, e.into()))?;
        off += n;
    }
    Ok(())
}

/// Logits of the last row, the fused cache (evicted if asked) and the report.
pub fn finish(model: &Model, f: Fusing) -> Result<FusedPrefill, EngineError> {
    Ok(f.finish(model, false)?)
}

/// A [`LayerSource`] over stored chunk data already in memory (tests).
#[cfg(test)]
#[derive(Debug, Clone)]
pub struct InMemoryLayers(pub Vec<Arc<a3kv_store::ChunkKvData>>);

#[cfg(test)]
impl LayerSource for InMemoryLayers {
    fn layer(&mut self, l: usize) -> Result<Vec<Arc<StoredLayer>>, EngineError> {
        self.0
            .iter()
            .map(|c| {
                c.layers
                    .get(l)
                    .cloned()
                    .ok_or_else(|| EngineError::Internal(format!("stored chunk lacks layer {l}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use a3kv_fusion::{fused_prefill, precompute_chunk, Budget, Method};
    use a3kv_model::testing::max_abs_diff;
    use a3kv_model::{testing::tiny_model, Family};

    fn setup(model: &Model, seed: u32) -> (RagPrompt, Vec<Arc<a3kv_fusion::ChunkKv>>) {
        let prefix: Vec<u32> = (0..5).map(|i| (i * 7 + seed) % 64).collect();
        let chunks: Vec<Vec<u32>> = (0..3)
            .map(|c| {
                (0..(9 + c * 4))
                    .map(|i| (i * 13 + c * 5 + seed) % 64)
                    .collect()
            })
            .collect();
        let question: Vec<u32> = (0..4).map(|i| (i * 3 + 11 + seed) % 64).collect();
        let prompt = RagPrompt::from_ids(&prefix, &chunks, &question).unwrap();
        let kvs = std::iter::once(&prefix)
            .chain(&chunks)
            .map(|ids| precompute_chunk(model, ids, None).unwrap())
            .collect();
        (prompt, kvs)
    }

    /// The prompt's cached parts (prefix, chunks) as the engine stores them.
    fn stored(model: &Model, prompt: &RagPrompt) -> Vec<Arc<a3kv_store::ChunkKvData>> {
        prompt
            .segments
            .iter()
            .filter(|s| s.kind != a3kv_fusion::SegmentKind::Question)
            .map(|s| Arc::new(crate::precompute::chunk_data(model, prompt.segment_ids(s)).unwrap()))
            .collect()
    }

    #[test]
    fn batched_stages_match_fused_prefill_for_every_method() {
        for family in [Family::Llama, Family::Qwen2] {
            let model = tiny_model(family, 3).unwrap();
            // Every registered method but full prefill, the two-stage `progressive` (whose
            // row set narrows between batched layers) included.
            let methods: Vec<Method> = Method::all()
                .filter(|m| !m.selector().is_full_prefill())
                .collect();
            let mut fusing = Vec::new();
            let mut sources = Vec::new();
            let mut expected = Vec::new();
            for (i, m) in methods.into_iter().enumerate() {
                let (prompt, kvs) = setup(&model, i as u32);
                let mut params = FusionParams::method(m);
                params.budget = Budget::Ratio(0.3);
                params.epic_tokens = 2;
                let want = fused_prefill(
                    &model,
                    &prompt,
                    Some(kvs[0].clone()),
                    &kvs[1..],
                    &params,
                    false,
                )
                .unwrap();
                let mut src = InMemoryLayers(stored(&model, &prompt));
                fusing.push(check_phase(&model, prompt, params, &mut src).unwrap());
                sources.push(src);
                expected.push(want);
            }
            let mut batch: Vec<(&mut Fusing, &mut dyn LayerSource)> = fusing
                .iter_mut()
                .zip(sources.iter_mut())
                .map(|(f, s)| (f, s as &mut dyn LayerSource))
                .collect();
            for st in selective_batch(&model, &mut batch) {
                st.unwrap();
            }
            for (f, want) in fusing.into_iter().zip(expected) {
                let got = finish(&model, f).unwrap();
                assert!(max_abs_diff(&got.logits, &want.logits) < 1e-4);
                assert_eq!(got.report.recomputed_tokens, want.report.recomputed_tokens);
                assert_eq!(got.cache.len(), want.cache.len());
                for (a, b) in got.cache.layers.iter().zip(&want.cache.layers) {
                    assert!(max_abs_diff(&a.k().unwrap(), &b.k().unwrap()) < 1e-4);
                    assert!(max_abs_diff(&a.v().unwrap(), &b.v().unwrap()) < 1e-4);
                }
            }
        }
    }

    #[test]
    fn a_failing_source_fails_only_its_request() {
        struct Broken;
        impl LayerSource for Broken {
            fn layer(&mut self, _: usize) -> Result<Vec<Arc<StoredLayer>>, EngineError> {
                Err(EngineError::Internal("corrupt".into()))
            }
        }
        let model = tiny_model(Family::Llama, 4).unwrap();
        let (prompt, _) = setup(&model, 1);
        let mut good = InMemoryLayers(stored(&model, &prompt));
        let mut bad = Broken;
        let params = FusionParams::default();
        let mut f1 = check_phase(&model, prompt.clone(), params.clone(), &mut good).unwrap();
        let mut f2 = check_phase(&model, prompt, params, &mut good.clone()).unwrap();
        let mut batch: Vec<(&mut Fusing, &mut dyn LayerSource)> =
            vec![(&mut f1, &mut good), (&mut f2, &mut bad)];
        let st = selective_batch(&model, &mut batch);
        assert!(st[0].is_ok() && st[1].is_err());
        assert!(finish(&model, f1).is_ok());
    }
}
