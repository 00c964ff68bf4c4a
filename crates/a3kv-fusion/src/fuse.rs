//! The fused prefill (docs/design.md §2.4) for every method, as a sequence of steps
//! so a pipeline can interleave them with cache loading:
//! [`FusionRun::new`] → [`FusionRun::run_check`] (exact layers + check layer + selection,
//! needs no cached K) → [`FusionRun::run_layer`] for each later layer as its cached KV
//! arrives → [`FusionRun::finish`]. [`fused_prefill`] runs them all on in-memory chunks.

use std::sync::Arc;
use std::time::Instant;

use a3kv_model::{KvCache, LayerKv, Model, Tensor};

use crate::chunk::{precompute_chunk, ChunkKv};
use crate::evict::evict;
use crate::prompt::RagPrompt;
use crate::report::FusionReport;
use crate::select::{ScoreInput, StageInput};
use crate::selection::{
    auto_k, budget_k, chosen_ratio, chunk_starts, select_with_sinks, Budget, FusionParams, Method,
};

/// A second scoring stage waiting for its layer ([`crate::Selector::stage`]).
#[derive(Debug)]
struct PendingStage {
    /// The stage's layer.
    layer: usize,
    /// Rows to keep (the budget).
    k: usize,
    /// Sink rows (document-relative, ascending), kept first.
    sinks: Vec<usize>,
    /// The candidates' scores, once the stage layer's attention ran.
    scores: Option<Vec<f32>>,
}
use crate::{FusionError, Result};

/// The cached, not yet re-positioned KV of a whole prompt at one layer.
pub trait CachedLayers {
    /// Pre-RoPE keys and values `[H_kv, T, d]` of layer `l` over all prompt rows
    /// (question rows, which have no cache, may hold anything). The tensors are the
    /// caller's: fusion writes the recomputed rows into the values in place, so they must
    /// not share storage with a cache that outlives the call.
    fn layer(&self, l: usize) -> Result<(Tensor, Tensor)>;
}

/// Prefix + chunk caches of one prompt, in row order.
#[derive(Debug, Clone)]
pub struct PromptCache {
    /// Prefix KV (`None` for an empty prefix).
    pub prefix: Option<Arc<ChunkKv>>,
    /// One cache per chunk segment.
    pub chunks: Vec<Arc<ChunkKv>>,
    /// Question rows `Q` (filled with zeros).
    pub question_len: usize,
}

impl PromptCache {
    /// Checks the caches against the prompt's segments and the model.
    pub fn check(&self, model: &Model, prompt: &RagPrompt) -> Result<()> {
        let segs: Vec<_> = prompt.chunks().collect();
        if segs.len() != self.chunks.len() {
            return Err(FusionError::ChunkMismatch(format!(
                "{} chunk caches for {} chunks",
                self.chunks.len(),
                segs.len()
            )));
        }
        for (s, c) in segs.iter().zip(&self.chunks) {
            if c.token_ids != prompt.segment_ids(s) {
                return Err(FusionError::ChunkMismatch(format!(
                    "chunk {} holds other tokens than its segment",
                    c.id
                )));
            }
            c.check(model)?;
        }
        let p = prompt.prefix_len();
        match &self.prefix {
            Some(c) if c.token_ids != prompt.ids[..p] => {
                return Err(FusionError::ChunkMismatch("prefix cache differs".into()))
            }
            Some(c) => c.check(model)?,
            None if p > 0 => return Err(FusionError::ChunkMismatch("prefix cache missing".into())),
            None => {}
        }
        if self.question_len != prompt.question_len() {
            return Err(FusionError::ChunkMismatch("question length differs".into()));
        }
        Ok(())
    }
}

impl CachedLayers for PromptCache {
    fn layer(&self, l: usize) -> Result<(Tensor, Tensor)> {
        let parts = self.prefix.iter().chain(&self.chunks);
        let mut ks: Vec<Tensor> = Vec::new();
        let mut vs: Vec<Tensor> = Vec::new();
        for c in parts {
            ks.push(c.keys[l].clone());
            vs.push(c.values[l].clone());
        }
        let like = ks
            .first()
            .ok_or_else(|| FusionError::ChunkMismatch("no cached rows".into()))?;
        let (hkv, _, d) = like.dims3()?;
        let z = Tensor::zeros((hkv, self.question_len, d), like.dtype(), like.device())?;
        ks.push(z.clone());
        vs.push(z);
        Ok((Tensor::cat(&ks, 1)?, Tensor::cat(&vs, 1)?))
    }
}

/// Writes `src` `[H, |rows|, d]` over rows `rows` of `dst` `[H, T, d]` in place. `dst` must
/// be a tensor the caller owns (its storage is changed for every holder).
pub fn write_rows(dst: &Tensor, rows: &[u32], src: &Tensor) -> Result<()> {
    let (h, t, d) = dst.dims3()?;
    let (sh, r, sd) = src.dims3()?;
    if (sh, sd, r) != (h, d, rows.len()) || rows.iter().any(|&i| i as usize >= t) {
        return Err(FusionError::InvalidParameter(format!(
            "scatter {:?} rows into {:?}",
            src.dims(),
            dst.dims()
        )));
    }
    if r == 0 {
        return Ok(());
    }
    let idx = Tensor::from_slice(rows, (1, r, 1), dst.device())?
        .broadcast_as((h, r, d))?
        .contiguous()?;
    let src = src.to_dtype(dst.dtype())?.contiguous()?;
    Ok(dst.scatter_set(&idx, &src, 1)?)
}

/// Result of a fused prefill.
#[derive(Debug, Clone)]
pub struct FusedPrefill {
    /// Logits of the last prompt row `[V]` (f32).
    pub logits: Tensor,
    /// The fused KV cache (post-RoPE), ready for decoding.
    pub cache: KvCache,
    /// Accounting and timings.
    pub report: FusionReport,
}

/// A fused prefill in progress. It owns no model: every step takes the model, so a
/// scheduler can hold many runs between steps and batch their layers
/// ([`FusionRun::hidden`] → one q/k/v matmul → [`FusionRun::attend_layer`] per run → one
/// MLP matmul → [`FusionRun::end_layer`]).
#[derive(Debug)]
pub struct FusionRun {
    prompt: RagPrompt,
    params: FusionParams,
    positions: Vec<u32>,
    check_layer: usize,
    /// Selected rows `I` (global, ascending; question included).
    rows: Vec<u32>,
    /// Hidden states of rows `I` after the last finished layer.
    hidden: Option<Tensor>,
    layers: Vec<LayerKv>,
    question_q: Vec<Tensor>,
    fixed_selection: Option<Vec<usize>>,
    stage: Option<PendingStage>,
    /// Whether the selection ran a question pass ([`crate::select::question_pass`]).
    question_pass: bool,
    /// Layers the question pass already assembled and re-positioned (by layer; empty or
    /// `None` where it did not), taken by [`FusionRun::attend_layer`].
    prepared: Vec<Option<(Tensor, Tensor)>>,
    /// Candidates a second stage dropped (global rows) and the layers they ran after the
    /// check layer, for the cost floor.
    dropped: (Vec<u32>, usize),
    next_layer: usize,
    report: FusionReport,
    started: Instant,
}

impl FusionRun {
    /// Starts a run; validates the parameters. `full` is handled by [`fused_prefill`].
    pub fn new(model: &Model, prompt: RagPrompt, params: FusionParams) -> Result<Self> {
        params.validate(model.num_layers())?;
        model.check_context(0, prompt.len())?;
        if prompt.question_len() == 0 {
            return Err(FusionError::EmptyQuestion);
        }
        let t = prompt.len();
        Ok(Self {
            positions: (0..t as u32).collect(),
            check_layer: params.check_layer(),
            report: FusionReport {
                method: params.method.as_str().to_string(),
                hybrid_weight: params
                    .hybrid_weight
                    .filter(|_| params.method.selector().takes_hybrid_weight()),
                sink_tokens: params.sink_tokens,
                prompt_tokens: t,
                ..Default::default()
            },
            prompt,
            params,
            rows: Vec::new(),
            hidden: None,
            layers: Vec::new(),
            question_q: Vec::new(),
            fixed_selection: None,
            stage: None,
            question_pass: false,
            prepared: Vec::new(),
            dropped: (Vec::new(), 0),
            next_layer: 0,
            started: Instant::now(),
        })
    }

    /// Replaces the method's scores with a fixed set of document rows (document-relative),
    /// keeping its check layer: for baselines such as a random selection of equal size.
    pub fn set_fixed_selection(&mut self, doc_rows: Vec<usize>) {
        self.fixed_selection = Some(doc_rows);
    }

    /// The check layer: layers `< check` are exact, `check` selects.
    pub fn check_layer(&self) -> usize {
        self.check_layer
    }

    /// Selected rows (global positions, ascending), once [`FusionRun::run_check`] ran.
    pub fn rows(&self) -> &[u32] {
        &self.rows
    }

    fn question_rows(&self) -> Vec<u32> {
        (self.prompt.doc_range().end as u32..self.prompt.len() as u32).collect()
    }

    fn set_rows(&mut self, doc_rel: &[usize]) {
        let p = self.prompt.prefix_len() as u32;
        let mut rows: Vec<u32> = doc_rel.iter().map(|&j| p + j as u32).collect();
        rows.extend(self.question_rows());
        self.rows = rows;
    }

    /// Runs the exact layers `0..check` over all rows and the check layer's q/k/v, then
    /// selects rows `I` with the method's [`crate::Selector`]. `cached` is read only when
    /// the selector scores with the cached V of the check layer; methods that select from
    /// the prompt alone (check layer 0) read nothing and run every layer selectively.
    pub fn run_check(&mut self, model: &Model, cached: &dyn CachedLayers) -> Result<()> {
        let t0 = Instant::now();
        let c = self.check_layer;
        let selector = self.params.method.selector();
        if !selector.scores_at_check_layer() {
            let k = budget_k(self.params.budget, &self.prompt);
            let sel = selector.select_static(&self.prompt, &self.params, k);
            self.set_rows(&sel);
            let ids: Vec<u32> = self
                .rows
                .iter()
                .map(|&r| self.prompt.ids[r as usize])
                .collect();
            self.hidden = Some(model.embed(&ids)?);
            self.report.check_secs = t0.elapsed().as_secs_f64();
            return Ok(());
        }
        if c == 0 {
            return Err(FusionError::InvalidParameter(format!(
                "{} needs a check layer >= 1",
                self.params.method
            )));
        }
        let pos = self.positions.clone();
        let mut h = model.embed(&self.prompt.ids)?;
        for l in 0..c {
            let qkv = model.layer_qkv(l, &h)?;
            let q = model.rope().apply(&qkv.q, &pos)?;
            let k = model.rope().apply(&qkv.k, &pos)?;
            let a = model.layer_attention(l, &q, &pos, &k, &qkv.v, &pos)?;
            h = model.layer_mlp(l, &h, &a)?;
            self.push_question_q(&q)?;
            self.layers.push(model.cache_layer(k, qkv.v)?);
        }
        // Check layer: fresh q/k/v of every row (this layer's cache), then selection.
        let qkv = model.layer_qkv(c, &h)?;
        let k = model.rope().apply(&qkv.k, &pos)?;
        let q_rows_all = qkv.q;
        let n_doc = self.prompt.doc_range().len();
        let ts = Instant::now();
        let qr = self.question_rows();
        let q_question = model
            .rope()
            .apply(&q_rows_all.narrow(1, qr[0] as usize, qr.len())?, &qr)?;
        let (k_cached, v_cached) = if n_doc > 0 && selector.needs_cached_v(&self.params) {
            let (k_pre, v) = cached.layer(c)?;
            let k_cached = if selector.needs_cached_k(&self.params) {
                Some(model.rope().apply(&k_pre, &pos)?)
            } else {
                None
            };
            (k_cached, Some(v))
        } else {
            (None, None)
        };
        let relevance = selector
            .question_pass_relevance(&self.params)
            .filter(|_| n_doc > 0 && self.fixed_selection.is_none());
        let profile = if let Some(relevance) = relevance {
            self.question_pass = true;
            let pass = crate::select::question_pass(
                model,
                &self.prompt,
                &pos,
                cached,
                self.params.pooling_width,
                c,
                relevance,
            )?;
            self.prepared = pass.layers;
            Some(pass.relevance)
        } else {
            None
        };
        let (scores, mass) = if self.fixed_selection.is_some() {
            (Vec::new(), None)
        } else {
            selector.scores_and_mass(
                &ScoreInput {
                    prompt: &self.prompt,
                    q_question: &q_question,
                    k_fresh: &k,
                    v_fresh: &qkv.v,
                    v_cached: v_cached.as_ref(),
                    k_cached: k_cached.as_ref(),
                    question_profile: profile.as_deref(),
                },
                &self.params,
            )?
        };
        if self.fixed_selection.is_none() && scores.len() != n_doc {
            return Err(FusionError::InvalidParameter(format!(
                "{} scored {} rows of {n_doc} document rows",
                self.params.method,
                scores.len()
            )));
        }
        let k_budget = match self.params.budget {
            Budget::Auto(a) if self.fixed_selection.is_none() => {
                let k = auto_k(&a, mass.as_deref().unwrap_or(&scores), &self.prompt);
                self.report.recompute_ratio_chosen = Some(chosen_ratio(k, &self.prompt));
                k
            }
            b => budget_k(b, &self.prompt),
        };
        let sinks = chunk_starts(&self.prompt, self.params.sink_tokens);
        let stage = selector
            .stage(&self.params)
            .filter(|s| c + s.layers_after_check.max(1) < model.num_layers());
        let sel = match self.fixed_selection.take() {
            Some(mut rows) => {
                rows.retain(|&r| r < n_doc);
                rows.sort_unstable();
                rows.dedup();
                rows
            }
            None => match stage {
                Some(st) => {
                    // Candidates: a larger set, narrowed to `k_budget` at the stage layer.
                    let n_cand = ((k_budget as f64 * st.candidate_factor.max(1.0)).ceil() as usize)
                        .min(n_doc);
                    let cand = selector.select(&self.prompt, &scores, n_cand, &sinks);
                    if cand.len() > k_budget {
                        self.stage = Some(PendingStage {
                            layer: c + st.layers_after_check.max(1),
                            k: k_budget,
                            sinks: sinks.clone(),
                            scores: None,
                        });
                    }
                    cand
                }
                None => selector.select(&self.prompt, &scores, k_budget, &sinks),
            },
        };
        self.report.selection_secs = ts.elapsed().as_secs_f64();
        self.set_rows(&sel);
        // Rows I through the check layer, against every fresh key.
        let idx = Tensor::from_slice(&self.rows, self.rows.len(), model.device())?;
        let q_i = model
            .rope()
            .apply(&q_rows_all.index_select(&idx, 1)?, &self.rows)?;
        let a = model.layer_attention(c, &q_i, &self.rows, &k, &qkv.v, &pos)?;
        let h_i = h.index_select(&idx, 0)?;
        self.hidden = Some(model.layer_mlp(c, &h_i, &a)?);
        self.push_question_q(&q_question)?;
        self.layers.push(model.cache_layer(k, qkv.v)?);
        self.next_layer = c + 1;
        self.report.check_secs = t0.elapsed().as_secs_f64();
        Ok(())
    }

    fn push_question_q(&mut self, q_all_or_question: &Tensor) -> Result<()> {
        if matches!(self.params.eviction, Some(crate::Eviction::SnapKv { .. })) {
            let qn = self.prompt.question_len();
            let (_, n, _) = q_all_or_question.dims3()?;
            self.question_q
                .push(q_all_or_question.narrow(1, n - qn, qn)?.contiguous()?);
        }
        Ok(())
    }

    /// Runs the next selective layer with its cached KV: q/k/v of rows `I` at their true
    /// positions, scatter k/v over the re-positioned cache, attention of rows `I` over the
    /// fused cache, MLP. Errors if called out of order.
    pub fn run_layer(&mut self, model: &Model, l: usize, cached: &dyn CachedLayers) -> Result<()> {
        let ts = Instant::now();
        let h = self.hidden()?.clone();
        let qkv = model.layer_qkv(l, &h)?;
        let a = self.attend_layer(model, l, &qkv.q, &qkv.k, &qkv.v, cached)?;
        let h = model.layer_mlp(l, &h, &a)?;
        self.end_layer(h, ts.elapsed().as_secs_f64())
    }

    /// Hidden states `[|I|, hidden]` of rows `I` entering [`FusionRun::next_layer`] (after
    /// [`FusionRun::run_check`]).
    pub fn hidden(&self) -> Result<&Tensor> {
        self.hidden
            .as_ref()
            .ok_or_else(|| FusionError::InvalidParameter("run_check must run first".into()))
    }

    /// The per-request middle of selective layer `l`: given the layer's pre-RoPE q/k/v
    /// `[H, |I|, d]` of rows `I` (computed by the caller, possibly in one matmul with other
    /// requests' rows), re-positions the cached keys, writes the fresh k/v over their rows,
    /// keeps the fused layer, and returns the attention output of rows `I` (input of the
    /// layer's MLP). Errors if `l` is not [`FusionRun::next_layer`].
    pub fn attend_layer(
        &mut self,
        model: &Model,
        l: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        cached: &dyn CachedLayers,
    ) -> Result<Tensor> {
        self.hidden()?;
        if l != self.next_layer || l >= model.num_layers() {
            return Err(FusionError::InvalidParameter(format!(
                "layer {l} out of order (next is {})",
                self.next_layer
            )));
        }
        let tr = Instant::now();
        let stage_here = self.stage.as_ref().is_some_and(|s| s.layer == l);
        let prepared = self.prepared.get_mut(l).and_then(Option::take);
        let (k_f, v_cached) = match prepared {
            // The question pass's copy differs from the cache only on the question rows,
            // which are overwritten below (a stage reads cached rows first: not this copy).
            Some(kv) if !stage_here => kv,
            _ => {
                let (k_pre, v_cached) = cached.layer(l)?;
                // RoPE writes a new tensor: the fresh keys go into it in place.
                (model.rope().apply(&k_pre, &self.positions)?, v_cached)
            }
        };
        self.report.reposition_secs += tr.elapsed().as_secs_f64();
        let q = model.rope().apply(q, &self.rows)?;
        let k = model.rope().apply(k, &self.rows)?;
        write_rows(&k_f, &self.rows, &k)?;
        let v_cached_rows = if stage_here {
            let idx = Tensor::from_slice(&self.rows, self.rows.len(), v_cached.device())?;
            Some(v_cached.index_select(&idx, 1)?)
        } else {
            None
        };
        // The cached V is this call's own (the trait's contract): written in place, or
        // copied first when it is not contiguous.
        let v_f = if v_cached.is_contiguous() {
            v_cached
        } else {
            v_cached.contiguous()?
        };
        write_rows(&v_f, &self.rows, v)?;
        if let Some(v_cached_rows) = v_cached_rows {
            let scores = self.params.method.selector().stage_scores(
                &StageInput {
                    prompt: &self.prompt,
                    rows: &self.rows,
                    q_rows: &q,
                    k_fused: &k_f,
                    v_rows: v,
                    v_cached_rows: &v_cached_rows,
                },
                &self.params,
            )?;
            let n_cand = self.rows.len() - self.prompt.question_len();
            if scores.len() != n_cand {
                return Err(FusionError::InvalidParameter(format!(
                    "{} scored {} of {n_cand} candidates",
                    self.params.method,
                    scores.len()
                )));
            }
            if let Some(s) = self.stage.as_mut() {
                s.scores = Some(scores);
            }
        }
        let a = model.layer_attention(l, &q, &self.rows, &k_f, &v_f, &self.positions)?;
        self.push_question_q(&q)?;
        self.layers.push(model.cache_layer(k_f, v_f)?);
        Ok(a)
    }

    /// Ends the layer [`FusionRun::attend_layer`] ran: `hidden` is its MLP output for rows
    /// `I`; `secs` is this run's share of the layer's compute time (for the report).
    pub fn end_layer(&mut self, hidden: Tensor, secs: f64) -> Result<()> {
        if self.layers.len() != self.next_layer + 1 {
            return Err(FusionError::InvalidParameter(
                "end_layer without attend_layer".into(),
            ));
        }
        if hidden.dims().first() != Some(&self.rows.len()) {
            return Err(FusionError::InvalidParameter(format!(
                "end_layer: hidden {:?} for {} rows",
                hidden.dims(),
                self.rows.len()
            )));
        }
        self.hidden = Some(hidden);
        if self
            .stage
            .as_ref()
            .is_some_and(|s| s.layer == self.next_layer)
        {
            self.narrow_to_stage()?;
        }
        self.next_layer += 1;
        self.report.selective_secs += secs;
        Ok(())
    }

    /// Keeps the candidates the second stage ranks best (sinks first), up to its budget,
    /// with the question rows; the others keep their recomputed KV up to this layer.
    fn narrow_to_stage(&mut self) -> Result<()> {
        let Some(stage) = self.stage.take() else {
            return Ok(());
        };
        let scores = stage.scores.ok_or_else(|| {
            FusionError::InvalidParameter("second stage ended without scores".into())
        })?;
        let p = self.prompt.prefix_len() as u32;
        let n_cand = scores.len();
        // Sinks among the candidates, as candidate indices.
        let sinks: Vec<usize> = self.rows[..n_cand]
            .iter()
            .enumerate()
            .filter(|(_, &r)| stage.sinks.binary_search(&((r - p) as usize)).is_ok())
            .map(|(i, _)| i)
            .collect();
        let keep = select_with_sinks(&scores, stage.k, &sinks);
        let mut keep_idx: Vec<u32> = keep.iter().map(|&i| i as u32).collect();
        keep_idx.extend(n_cand as u32..self.rows.len() as u32);
        let dropped: Vec<u32> = (0..n_cand)
            .filter(|i| keep.binary_search(i).is_err())
            .map(|i| self.rows[i])
            .collect();
        self.dropped = (dropped, self.next_layer - self.check_layer);
        let hidden = self.hidden()?;
        let idx = Tensor::from_slice(&keep_idx, keep_idx.len(), hidden.device())?;
        self.hidden = Some(hidden.index_select(&idx, 0)?);
        self.rows = keep_idx.iter().map(|&i| self.rows[i as usize]).collect();
        Ok(())
    }

    /// The prompt being fused.
    pub fn prompt(&self) -> &RagPrompt {
        &self.prompt
    }

    /// Next layer [`FusionRun::run_layer`] expects.
    pub fn next_layer(&self) -> usize {
        self.next_layer
    }

    /// Logits of the last row, the fused cache (evicted if asked), and the report.
    pub fn finish(mut self, model: &Model, with_selection: bool) -> Result<FusedPrefill> {
        if self.next_layer != model.num_layers() {
            return Err(FusionError::InvalidParameter(format!(
                "finish after {} of {} layers",
                self.next_layer,
                model.num_layers()
            )));
        }
        let h = self
            .hidden
            .take()
            .ok_or_else(|| FusionError::InvalidParameter("no hidden state".into()))?;
        let last = h.narrow(0, h.dims()[0] - 1, 1)?;
        let logits = model.logits(&last)?.squeeze(0)?;
        let mut cache = KvCache::new(std::mem::take(&mut self.layers), self.positions.clone())?;
        if let Some(ev) = self.params.eviction {
            cache = evict(&cache, ev, &self.prompt, &self.question_q)?;
        }
        let recomputed = self.rows.len() - self.prompt.question_len();
        self.report.account(&self.prompt, recomputed);
        let scores = self.params.method.selector().scores_at_check_layer();
        let exact = if scores { self.check_layer } else { 0 };
        self.report.flop_floor =
            crate::cost::floor_share(model.config(), self.prompt.len(), exact, scores, &self.rows)
                + crate::cost::dropped_candidates_share(
                    model.config(),
                    self.prompt.len(),
                    &self.dropped.0,
                    self.dropped.1,
                );
        if self.question_pass {
            self.report.flop_floor += crate::cost::question_pass_share(
                model.config(),
                self.prompt.len(),
                self.prompt.prefix_len(),
                &self.question_rows(),
            );
        }
        if with_selection {
            self.report.selected_positions = Some(self.rows[..recomputed].to_vec());
        }
        self.report.total_secs = self.started.elapsed().as_secs_f64();
        Ok(FusedPrefill {
            logits,
            cache,
            report: self.report,
        })
    }
}

/// Full prefill of the prompt (the `full` method), reported in the same shape.
pub fn full_prefill(
    model: &Model,
    prompt: &RagPrompt,
    params: &FusionParams,
) -> Result<FusedPrefill> {
    let t0 = Instant::now();
    let out = model.prefill(&prompt.ids, 0, false)?;
    let mut cache = out.cache;
    if let Some(ev) = params.eviction {
        // Window queries for SnapKV: recompute question-row queries from the cache's view
        // is not possible without hidden states, so full + SnapKV falls back to streaming.
        let capacity = match ev {
            crate::Eviction::SnapKv { capacity, .. } | crate::Eviction::Streaming { capacity } => {
                capacity
            }
        };
        cache = evict(&cache, crate::Eviction::Streaming { capacity }, prompt, &[])?;
    }
    let t = prompt.len();
    Ok(FusedPrefill {
        logits: out.logits,
        cache,
        report: FusionReport {
            method: Method::Full.as_str().into(),
            prompt_tokens: t,
            fresh_tokens: t,
            recompute_ratio: 1.0,
            flop_floor: 1.0,
            total_secs: t0.elapsed().as_secs_f64(),
            ..Default::default()
        },
    })
}

/// Runs a whole fused prefill for `params.method` over in-memory caches. A missing prefix
/// cache is computed (it is exact at position 0).
pub fn fused_prefill(
    model: &Model,
    prompt: &RagPrompt,
    prefix: Option<Arc<ChunkKv>>,
    chunks: &[Arc<ChunkKv>],
    params: &FusionParams,
    with_selection: bool,
) -> Result<FusedPrefill> {
    if params.method.selector().is_full_prefill() {
        params.validate(model.num_layers())?;
        return full_prefill(model, prompt, params);
    }
    let p = prompt.prefix_len();
    if p == 0 && chunks.is_empty() {
        // Nothing is cached: the question alone is exactly a full prefill.
        let mut out = full_prefill(model, prompt, params)?;
        out.report.method = params.method.as_str().into();
        return Ok(out);
    }
    let prefix = match prefix {
        Some(c) => Some(c),
        None if p > 0 => Some(precompute_chunk(model, &prompt.ids[..p], None)?),
        None => None,
    };
    let cache = PromptCache {
        prefix,
        chunks: chunks.to_vec(),
        question_len: prompt.question_len(),
    };
    cache.check(model, prompt)?;
    let mut run = FusionRun::new(model, prompt.clone(), params.clone())?;
    run.run_check(model, &cache)?;
    while run.next_layer() < model.num_layers() {
        let l = run.next_layer();
        run.run_layer(model, l, &cache)?;
    }
    run.finish(model, with_selection)
}
