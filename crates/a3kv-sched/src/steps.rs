//! The fused prefill of DESIGN.md §1.2 cut at the pipeline's stage boundaries, with the
//! selective layers batched over many requests.
//!
//! [`check_phase`] (RelevanceScorer, one request): exact layers `0..c` over all rows, the
//! check layer's q/k/v and the method's selection `I`. [`selective_batch`]
//! (RecomputeBatcher): for each later layer, the q/k/v projections and the MLP of the rows
//! `I` of every request in the batch run as one matmul; RoPE, the scatter of fresh k/v
//! into each request's re-positioned cached layer and attention run per request over its
//! own fused cache. [`finish`]: logits of the last row, fused cache, report.
//!
//! Reference twin: `a3kv_fusion::fused_prefill` (same math, one request); the tests below
//! assert the two agree for every method, batched or not.

use std::sync::Arc;
use std::time::Instant;

use a3kv_fusion::a3::a3_scores;
use a3kv_fusion::evict::evict;
use a3kv_fusion::selection::{budget_k, chunk_starts, normalise, select_with_sinks, v_deviation};
use a3kv_fusion::{
    Eviction, FusedPrefill, FusionError, FusionParams, FusionReport, Method, RagPrompt,
};
use a3kv_model::{KvCache, LayerKv, Model, Tensor};
use a3kv_store::LayerKv as StoredLayer;

use crate::EngineError;

/// Where a request's cached layers come from: a function returning layer `l` of every
/// cached part (prefix first, then chunks), blocking until it has arrived.
pub trait LayerSource {
    /// Layer `l` of each part, `[H_kv, n_i, d]` flat K (pre-RoPE) and V.
    fn layer(&mut self, l: usize) -> Result<Vec<Arc<StoredLayer>>, EngineError>;
}

/// A request between the check layer and the end of its fused prefill.
#[derive(Debug)]
pub struct Fusing {
    prompt: RagPrompt,
    params: FusionParams,
    positions: Vec<u32>,
    /// Selected rows `I` (global, ascending, question included).
    rows: Vec<u32>,
    hidden: Tensor,
    layers: Vec<LayerKv>,
    question_q: Vec<Tensor>,
    next_layer: usize,
    report: FusionReport,
    started: Instant,
}

impl Fusing {
    /// Rows `I` this request recomputes per selective layer.
    pub fn rows(&self) -> &[u32] {
        &self.rows
    }

    /// Next layer to run.
    pub fn next_layer(&self) -> usize {
        self.next_layer
    }

    fn keep_question_q(&mut self, q: &Tensor) -> Result<(), EngineError> {
        if matches!(self.params.eviction, Some(Eviction::SnapKv { .. })) {
            let qn = self.prompt.question_len();
            let (_, n, _) = q.dims3().map_err(ferr)?;
            self.question_q.push(
                q.narrow(1, n - qn, qn)
                    .and_then(|t| t.contiguous())
                    .map_err(ferr)?,
            );
        }
        Ok(())
    }
}

fn ferr(e: candle_core::Error) -> EngineError {
    EngineError::from(FusionError::from(e))
}

/// Builds one layer's pre-RoPE K and V `[H_kv, T, d]` over all prompt rows from the stored
/// parts (question rows zero), with `fresh` rows (pre-RoPE k, v `[H_kv, r, d]`) written
/// over their cached rows.
fn assemble(
    model: &Model,
    prompt: &RagPrompt,
    parts: &[Arc<StoredLayer>],
    fresh: Option<(&[u32], &Tensor, &Tensor)>,
) -> Result<(Tensor, Tensor), EngineError> {
    let c = model.config();
    let (hkv, d, t) = (c.num_kv_heads, c.head_dim, prompt.len());
    let mut k = vec![0f32; hkv * t * d];
    let mut v = vec![0f32; hkv * t * d];
    let mut start = 0usize;
    for p in parts {
        let n = p.k.len() / (hkv * d);
        if p.k.len() != hkv * n * d || p.v.len() != p.k.len() || start + n > t {
            return Err(EngineError::Internal(
                "cached layer does not fit the prompt".into(),
            ));
        }
        for h in 0..hkv {
            let dst = (h * t + start) * d;
            k[dst..dst + n * d].copy_from_slice(&p.k[h * n * d..(h + 1) * n * d]);
            v[dst..dst + n * d].copy_from_slice(&p.v[h * n * d..(h + 1) * n * d]);
        }
        start += n;
    }
    if start + prompt.question_len() != t {
        return Err(EngineError::Internal(format!(
            "cached parts cover {start} rows, prompt expects {}",
            t - prompt.question_len()
        )));
    }
    if let Some((rows, fk, fv)) = fresh {
        let to_vec = |x: &Tensor| -> Result<Vec<f32>, EngineError> {
            x.to_dtype(candle_core::DType::F32)
                .and_then(|x| x.flatten_all())
                .and_then(|x| x.to_vec1::<f32>())
                .map_err(ferr)
        };
        let (fk, fv) = (to_vec(fk)?, to_vec(fv)?);
        let r = rows.len();
        for h in 0..hkv {
            for (j, &row) in rows.iter().enumerate() {
                let dst = (h * t + row as usize) * d;
                let src = (h * r + j) * d;
                k[dst..dst + d].copy_from_slice(&fk[src..src + d]);
                v[dst..dst + d].copy_from_slice(&fv[src..src + d]);
            }
        }
    }
    let dev = model.device();
    let mk = |x: Vec<f32>| {
        Tensor::from_vec(x, (hkv, t, d), dev)
            .and_then(|x| x.to_dtype(model.dtype()))
            .map_err(ferr)
    };
    Ok((mk(k)?, mk(v)?))
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
    params.validate(model.num_layers())?;
    model.check_context(0, prompt.len())?;
    if prompt.question_len() == 0 {
        return Err(FusionError::EmptyQuestion.into());
    }
    let started = Instant::now();
    let t = prompt.len();
    let c = params.check_layer();
    let mut f = Fusing {
        positions: (0..t as u32).collect(),
        report: FusionReport {
            method: params.method.as_str().to_string(),
            prompt_tokens: t,
            ..Default::default()
        },
        rows: Vec::new(),
        hidden: Tensor::zeros(1, model.dtype(), model.device()).map_err(ferr)?,
        layers: Vec::new(),
        question_q: Vec::new(),
        next_layer: 0,
        started,
        prompt,
        params,
    };
    let p = f.prompt.prefix_len() as u32;
    let question: Vec<u32> = (f.prompt.doc_range().end as u32..t as u32).collect();
    let set_rows = |f: &mut Fusing, doc_rel: &[usize]| {
        f.rows = doc_rel
            .iter()
            .map(|&j| p + j as u32)
            .chain(question.iter().copied())
            .collect();
    };
    let k_budget = budget_k(f.params.budget, &f.prompt);
    let is_scored = matches!(f.params.method, Method::A3 | Method::CacheBlend);
    if c == 0 || !is_scored {
        if is_scored {
            return Err(EngineError::InvalidRequest(format!(
                "{} needs a check layer >= 1",
                f.params.method.as_str()
            )));
        }
        let sel = match f.params.method {
            Method::Epic => chunk_starts(&f.prompt, f.params.epic_tokens),
            Method::Reuse => chunk_starts(&f.prompt, f.params.sink_tokens)
                .into_iter()
                .take(k_budget)
                .collect(),
            _ => Vec::new(),
        };
        set_rows(&mut f, &sel);
        let ids: Vec<u32> = f.rows.iter().map(|&r| f.prompt.ids[r as usize]).collect();
        f.hidden = model.embed(&ids)?;
        f.report.check_secs = started.elapsed().as_secs_f64();
        return Ok(f);
    }
    let pos = f.positions.clone();
    let rope = model.rope();
    let mut h = model.embed(&f.prompt.ids)?;
    for l in 0..c {
        let qkv = model.layer_qkv(l, &h)?;
        let q = rope.apply(&qkv.q, &pos)?;
        let k = rope.apply(&qkv.k, &pos)?;
        let a = model.layer_attention(l, &q, &pos, &k, &qkv.v, &pos)?;
        h = model.layer_mlp(l, &h, &a)?;
        f.keep_question_q(&q)?;
        f.layers.push(LayerKv::new(k, qkv.v)?);
    }
    let qkv = model.layer_qkv(c, &h)?;
    let k = rope.apply(&qkv.k, &pos)?;
    let n_doc = f.prompt.doc_range().len();
    let ts = Instant::now();
    let q0 = question[0] as usize;
    let q_question = rope.apply(
        &qkv.q.narrow(1, q0, question.len()).map_err(ferr)?,
        &question,
    )?;
    let cached_v = |src: &mut dyn LayerSource, f: &Fusing| -> Result<Tensor, EngineError> {
        let parts = src.layer(c)?;
        Ok(assemble(model, &f.prompt, &parts, None)?.1)
    };
    let scores = match f.params.method {
        Method::A3 => {
            let a3 = a3_scores(
                &q_question,
                &k,
                f.prompt.prefix_len(),
                f.params.pooling_width,
            )?;
            match f.params.hybrid_weight {
                Some(w) if n_doc > 0 => {
                    let dev = v_deviation(&qkv.v, &cached_v(src, &f)?, &f.prompt)?;
                    let (a, b) = (normalise(&a3), normalise(&dev));
                    a.iter()
                        .zip(&b)
                        .map(|(x, y)| w * x + (1.0 - w) * y)
                        .collect()
                }
                _ => a3,
            }
        }
        _ if n_doc > 0 => v_deviation(&qkv.v, &cached_v(src, &f)?, &f.prompt)?,
        _ => Vec::new(),
    };
    let sinks = chunk_starts(&f.prompt, f.params.sink_tokens);
    let sel = select_with_sinks(&scores, k_budget, &sinks);
    f.report.selection_secs = ts.elapsed().as_secs_f64();
    set_rows(&mut f, &sel);
    let idx = Tensor::from_slice(&f.rows, f.rows.len(), model.device()).map_err(ferr)?;
    let q_i = rope.apply(&qkv.q.index_select(&idx, 1).map_err(ferr)?, &f.rows)?;
    let a = model.layer_attention(c, &q_i, &f.rows, &k, &qkv.v, &pos)?;
    let h_i = h.index_select(&idx, 0).map_err(ferr)?;
    f.hidden = model.layer_mlp(c, &h_i, &a)?;
    f.keep_question_q(&q_question)?;
    f.layers.push(LayerKv::new(k, qkv.v)?);
    f.next_layer = c + 1;
    f.report.check_secs = started.elapsed().as_secs_f64();
    Ok(f)
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
    let first = batch.iter().map(|(f, _)| f.next_layer).min().unwrap_or(0);
    for l in first..model.num_layers() {
        // Members at this layer whose cached layer arrived.
        let mut members = Vec::new();
        for (i, (f, src)) in batch.iter_mut().enumerate() {
            if status[i].is_err() || f.next_layer != l {
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
        if let Err(e) = batch_layer(model, l, batch, &members) {
            for (i, _) in &members {
                status[*i] = Err(e.clone());
            }
        }
    }
    status
}

fn batch_layer(
    model: &Model,
    l: usize,
    batch: &mut [(&mut Fusing, &mut dyn LayerSource)],
    members: &[(usize, Vec<Arc<StoredLayer>>)],
) -> Result<(), EngineError> {
    let ts = Instant::now();
    let hidden: Vec<Tensor> = members
        .iter()
        .map(|(i, _)| batch[*i].0.hidden.clone())
        .collect();
    let h_all = Tensor::cat(&hidden, 0).map_err(ferr)?;
    let qkv = model.layer_qkv(l, &h_all)?;
    let mut attn = Vec::with_capacity(members.len());
    let mut off = 0usize;
    for (i, parts) in members {
        let f = &mut *batch[*i].0;
        let n = f.rows.len();
        let q = qkv.q.narrow(1, off, n).map_err(ferr)?;
        let k = qkv.k.narrow(1, off, n).map_err(ferr)?;
        let v = qkv.v.narrow(1, off, n).map_err(ferr)?;
        off += n;
        let tr = Instant::now();
        let (k_pre, v_f) = assemble(model, &f.prompt, parts, Some((&f.rows, &k, &v)))?;
        // RoPE is row-wise, so rotating after the scatter equals scattering rotated rows.
        let k_f = model.rope().apply(&k_pre, &f.positions)?;
        f.report.reposition_secs += tr.elapsed().as_secs_f64();
        let q = model.rope().apply(&q, &f.rows)?;
        attn.push(model.layer_attention(l, &q, &f.rows, &k_f, &v_f, &f.positions)?);
        f.keep_question_q(&q)?;
        f.layers.push(LayerKv::new(k_f, v_f)?);
        f.next_layer = l + 1;
    }
    let a_all = Tensor::cat(&attn, 0).map_err(ferr)?;
    let h_new = model.layer_mlp(l, &h_all, &a_all)?;
    let mut off = 0usize;
    let share = ts.elapsed().as_secs_f64() / members.len() as f64;
    for (i, _) in members {
        let f = &mut *batch[*i].0;
        let n = f.rows.len();
        f.hidden = h_new.narrow(0, off, n).map_err(ferr)?;
        off += n;
        f.report.selective_secs += share;
    }
    Ok(())
}

/// Logits of the last row, the fused cache (evicted if asked) and the report.
pub fn finish(model: &Model, mut f: Fusing) -> Result<FusedPrefill, EngineError> {
    if f.next_layer != model.num_layers() {
        return Err(EngineError::Internal(format!(
            "finish after {} of {} layers",
            f.next_layer,
            model.num_layers()
        )));
    }
    let n = f.hidden.dims()[0];
    let last = f.hidden.narrow(0, n - 1, 1).map_err(ferr)?;
    let logits = model.logits(&last)?.squeeze(0).map_err(ferr)?;
    let mut cache = KvCache::new(std::mem::take(&mut f.layers), f.positions.clone())?;
    if let Some(ev) = f.params.eviction {
        cache = evict(&cache, ev, &f.prompt, &f.question_q)?;
    }
    let recomputed = f.rows.len() - f.prompt.question_len();
    f.report.account(&f.prompt, recomputed);
    f.report.total_secs = f.started.elapsed().as_secs_f64();
    Ok(FusedPrefill {
        logits,
        cache,
        report: f.report,
    })
}

/// A [`LayerSource`] over stored chunk data already in memory (tests, benches, the
/// put-then-generate path).
#[derive(Debug, Clone)]
pub struct InMemoryLayers(pub Vec<Arc<a3kv_store::ChunkKvData>>);

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
    use a3kv_fusion::{fused_prefill, precompute_chunk, Budget};
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

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn batched_stages_match_fused_prefill_for_every_method() {
        for family in [Family::Llama, Family::Qwen2] {
            let model = tiny_model(family, 3).unwrap();
            let methods = [Method::A3, Method::CacheBlend, Method::Epic, Method::Reuse];
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
                let data = kvs
                    .iter()
                    .map(|k| Arc::new(crate::convert::to_store(&model, k).unwrap()))
                    .collect();
                let mut src = InMemoryLayers(data);
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
                assert!(max_diff(&got.logits, &want.logits) < 1e-4);
                assert_eq!(got.report.recomputed_tokens, want.report.recomputed_tokens);
                assert_eq!(got.cache.len(), want.cache.len());
                for (a, b) in got.cache.layers.iter().zip(&want.cache.layers) {
                    assert!(max_diff(&a.k().unwrap(), &b.k().unwrap()) < 1e-4);
                    assert!(max_diff(&a.v().unwrap(), &b.v().unwrap()) < 1e-4);
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
        let (prompt, kvs) = setup(&model, 1);
        let data: Vec<_> = kvs
            .iter()
            .map(|k| Arc::new(crate::convert::to_store(&model, k).unwrap()))
            .collect();
        let mut good = InMemoryLayers(data);
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
