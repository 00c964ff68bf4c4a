//! Production shadow sampling (issue #16): a share of fused requests is also run as a full
//! prefill, off the critical path, and the first-token KL(full ‖ fused) and top-1 agreement
//! are recorded (`a3kv:fusion_shadow_kl`, `a3kv:fusion_shadow_agreement_total{agree}`). A
//! controller raises the default recompute ratio one step when the rolling mean KL passes
//! `max_kl`, and lowers it again when it recovers (docs/design.md §4.1b).
//!
//! - Sampling: every fused request whose prefill ends in the RecomputeBatcher is a candidate;
//!   a deterministic accumulator takes exactly `rate` of them (rate 0.01: every 100th).
//! - Off the critical path: the shadow prefill runs one layer per idle job of the compute
//!   pool (`ComputePool::spawn_idle`), which starts only while no real work is queued or
//!   running; at most `max_pending` shadows are in flight, a sample beyond that is dropped
//!   and counted (`a3kv:fusion_shadow_dropped_total{reason="queue_full"}`).
//! - The controller ([`ShadowController`]) is owned by one task fed by a channel; the step it
//!   sets is the only shared state (an atomic read by `prepare` when it applies the default).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use a3kv_fusion::{Budget, FusionParams};
use a3kv_model::Tensor;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::gate::kl;
use crate::metrics as m;
use crate::shared::Shared;
use crate::EngineError;

/// `[engine.fusion_shadow]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShadowConfig {
    /// Share of fused requests also run as a full prefill, `[0, 1]` (0 = off).
    pub rate: f64,
    /// Rolling mean first-token KL(full ‖ fused) above which the default ratio is raised.
    pub max_kl: f64,
    /// Shadow samples in the rolling mean; a decision needs a full window.
    pub window: usize,
    /// Shadow prefills in flight at most; a sample beyond is dropped (counted).
    pub max_pending: usize,
    /// How much one step adds to the default recompute ratio.
    pub ratio_step: f64,
    /// Steps above the configured default at most.
    pub max_steps: usize,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        Self {
            rate: 0.01,
            // The default hybrid's mean first-token KL on HotpotQA is 0.16 (README
            // "Quality"); a window of 20 has a standard error near 0.03, so 0.25 is
            // crossed only when fusion is clearly worse than measured.
            max_kl: 0.25,
            window: 20,
            max_pending: 2,
            ratio_step: 0.05,
            max_steps: 4,
        }
    }
}

impl ShadowConfig {
    /// Checks the ranges (the server names the keys; this guards the library edge).
    ///
    /// # Errors
    /// `InvalidRequest` naming the field.
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |m: String| {
            Err(EngineError::InvalidRequest(format!(
                "engine.fusion_shadow.{m}"
            )))
        };
        if !(0.0..=1.0).contains(&self.rate) {
            return bad(format!("rate {} must be in [0, 1]", self.rate));
        }
        if !(self.max_kl > 0.0 && self.max_kl.is_finite()) {
            return bad(format!("max_kl {} must be > 0", self.max_kl));
        }
        if self.window == 0 || self.max_pending == 0 {
            return bad("window and max_pending must be >= 1".into());
        }
        if !(self.ratio_step > 0.0 && self.ratio_step <= 1.0) {
            return bad(format!("ratio_step {} must be in (0, 1]", self.ratio_step));
        }
        Ok(())
    }
}

/// A change of the controller's step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepChange {
    /// Step before.
    pub from: usize,
    /// Step after.
    pub to: usize,
    /// The rolling mean KL that decided it.
    pub mean_kl: f64,
}

/// The step-up/step-down rule. Step `s` adds `s · ratio_step` to the default recompute
/// ratio ([`boosted`]). After `window` samples at the current step: a mean KL above
/// `max_kl` goes up one step (up to `max_steps`); a mean below `max_kl / 2` (hysteresis, so
/// one threshold does not flap) goes down one step (down to 0). Either change clears the
/// window, so the next decision uses samples measured at the new ratio only.
#[derive(Debug, Clone)]
pub struct ShadowController {
    window: usize,
    max_kl: f64,
    max_steps: usize,
    recent: VecDeque<f64>,
    step: usize,
}

/// Largest KL a sample counts as (a non-finite KL is a broken fusion: counted as this).
const KL_CAP: f64 = 100.0;

impl ShadowController {
    /// A controller at step 0.
    pub fn new(cfg: &ShadowConfig) -> Self {
        Self {
            window: cfg.window.max(1),
            max_kl: cfg.max_kl,
            max_steps: cfg.max_steps,
            recent: VecDeque::with_capacity(cfg.window.max(1)),
            step: 0,
        }
    }

    /// The current step (tests).
    #[cfg(test)]
    pub fn step(&self) -> usize {
        self.step
    }

    /// The mean of the samples in the window (`None` when empty).
    pub fn mean(&self) -> Option<f64> {
        (!self.recent.is_empty())
            .then(|| self.recent.iter().sum::<f64>() / self.recent.len() as f64)
    }

    /// Adds one shadow's KL; returns the step change it caused, if any.
    pub fn observe(&mut self, kl: f64) -> Option<StepChange> {
        let kl = if kl.is_finite() {
            kl.clamp(0.0, KL_CAP)
        } else {
            KL_CAP
        };
        if self.recent.len() == self.window {
            self.recent.pop_front();
        }
        self.recent.push_back(kl);
        if self.recent.len() < self.window {
            return None;
        }
        let mean_kl = self.mean()?;
        let from = self.step;
        if mean_kl > self.max_kl && self.step < self.max_steps {
            self.step += 1;
        } else if mean_kl < self.max_kl / 2.0 && self.step > 0 {
            self.step -= 1;
        } else {
            return None;
        }
        self.recent.clear();
        Some(StepChange {
            from,
            to: self.step,
            mean_kl,
        })
    }
}

/// `params` with its budget raised by `step · ratio_step`: a ratio grows (at most 1); an
/// adaptive budget's bounds grow (at most 1); a token budget is left as it is.
pub fn boosted(params: &FusionParams, step: usize, ratio_step: f64) -> FusionParams {
    let add = step as f64 * ratio_step;
    let mut p = params.clone();
    if step == 0 {
        return p;
    }
    p.budget = match p.budget {
        Budget::Ratio(r) => Budget::Ratio((r + add).min(1.0)),
        Budget::Auto(mut a) => {
            a.min_ratio = (a.min_ratio + add).min(1.0);
            a.max_ratio = (a.max_ratio + add).min(1.0);
            Budget::Auto(a)
        }
        b @ Budget::Tokens(_) => b,
    };
    p
}

/// What a finished shadow reports to the controller task.
#[derive(Debug, Clone, Copy)]
pub struct ShadowOutcome {
    /// First-token KL(full ‖ fused).
    pub kl: f64,
    /// Whether the two first tokens (argmax) agree.
    pub agree: bool,
}

/// The engine-wide shadow state: the sampler, the in-flight count, the step the
/// controller set, and the channel to the controller task.
#[derive(Debug)]
pub struct ShadowShared {
    /// Sampler accumulator, in units of 2^-32 requests.
    acc: AtomicU64,
    /// Shadows in flight.
    pending: AtomicUsize,
    /// The controller's current step (read when the default fusion is applied).
    step: AtomicUsize,
    /// To the controller task.
    results: mpsc::UnboundedSender<ShadowOutcome>,
}

impl ShadowShared {
    /// The shared state and the receiver the controller task reads.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<ShadowOutcome>) {
        let (results, rx) = mpsc::unbounded_channel();
        (
            Self {
                acc: AtomicU64::new(0),
                pending: AtomicUsize::new(0),
                step: AtomicUsize::new(0),
                results,
            },
            rx,
        )
    }

    /// The controller's current step.
    pub fn step(&self) -> usize {
        self.step.load(Ordering::Acquire)
    }

    /// Shadows in flight.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Whether this candidate is sampled: exactly `rate` of the candidates over time.
    fn sample(&self, rate: f64) -> bool {
        if rate <= 0.0 {
            return false;
        }
        // Rounded up, so that `n` candidates at `rate` give at least `floor(n · rate)`.
        let inc = (rate.min(1.0) * (1u64 << 32) as f64).ceil() as u64;
        let before = self.acc.fetch_add(inc, Ordering::AcqRel);
        (before.wrapping_add(inc) >> 32) != (before >> 32)
    }
}

/// The default fusion as the controller has it now (the configured default raised by the
/// current step).
pub fn default_params(shared: &Shared) -> FusionParams {
    boosted(
        &shared.cfg.default_fusion,
        shared.shadow.step(),
        shared.cfg.fusion_shadow.ratio_step,
    )
}

/// Frees a place among the shadows in flight when the shadow ends (or is dropped).
struct PendingSlot(Arc<Shared>);

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.0.shadow.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A full prefill of the prompt, one layer per idle job.
struct ShadowJob {
    slot: PendingSlot,
    ids: Vec<u32>,
    fused: Vec<f32>,
    hidden: Option<Tensor>,
    next_layer: usize,
    started: Instant,
}

impl ShadowJob {
    /// Runs one layer (the embedding with the first); `Some(logits)` after the last.
    fn advance(&mut self) -> Result<Option<Vec<f32>>, EngineError> {
        let model = &self.slot.0.model;
        let pos: Vec<u32> = (0..self.ids.len() as u32).collect();
        let h = match self.hidden.take() {
            Some(h) => h,
            None => model.embed(&self.ids)?,
        };
        // Exactly `Model::prefill`'s layer loop, cut per layer.
        let l = self.next_layer;
        let qkv = model.layer_qkv(l, &h)?;
        let q = model.rope().apply(&qkv.q, &pos)?;
        let k = model.rope().apply(&qkv.k, &pos)?;
        let a = model.layer_attention(l, &q, &pos, &k, &qkv.v, &pos)?;
        let h = model.layer_mlp(l, &h, &a)?;
        self.next_layer += 1;
        if self.next_layer < model.num_layers() {
            self.hidden = Some(h);
            return Ok(None);
        }
        let cerr = |e: candle_core::Error| EngineError::Internal(format!("shadow prefill: {e}"));
        let last = h.narrow(0, self.ids.len() - 1, 1).map_err(cerr)?;
        let logits = model.logits(&last)?.squeeze(0).map_err(cerr)?;
        Ok(Some(logits.to_vec1::<f32>().map_err(cerr)?))
    }

    /// Runs one layer, then queues the next as idle work or reports the result.
    fn step(mut self: Box<Self>) {
        match self.advance() {
            Ok(None) => {
                let shared = self.slot.0.clone();
                if shared.compute.spawn_idle(move || self.step()).is_err() {
                    // Shutting down: the shadow is only a measurement; drop it.
                }
            }
            Ok(Some(full)) => {
                let shared = &self.slot.0;
                let kl = kl(&full, &self.fused);
                let agree = argmax(&full) == argmax(&self.fused);
                tracing::debug!(
                    kl,
                    agree,
                    secs = self.started.elapsed().as_secs_f64(),
                    "shadow prefill done"
                );
                let _ = shared.shadow.results.send(ShadowOutcome { kl, agree });
            }
            Err(e) => {
                metrics::counter!(m::SHADOW_DROPPED, "reason" => "error").increment(1);
                tracing::warn!(error = %e, "shadow prefill failed; sample dropped");
            }
        }
    }
}

fn argmax(x: &[f32]) -> usize {
    x.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
        .0
}

/// At the end of a fused prefill: maybe sample this request for a shadow full prefill of
/// `ids` (the prompt), comparing with `fused_logits` (`[V]`). Never fails the request.
pub fn maybe_shadow(shared: &Arc<Shared>, ids: &[u32], fused_logits: &Tensor) {
    let cfg = &shared.cfg.fusion_shadow;
    if ids.is_empty() || !shared.shadow.sample(cfg.rate) {
        return;
    }
    let taken = shared
        .shadow
        .pending
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < cfg.max_pending).then_some(n + 1)
        })
        .is_ok();
    if !taken {
        metrics::counter!(m::SHADOW_DROPPED, "reason" => "queue_full").increment(1);
        return;
    }
    let slot = PendingSlot(shared.clone());
    let fused = match fused_logits.to_vec1::<f32>() {
        Ok(f) => f,
        Err(e) => {
            metrics::counter!(m::SHADOW_DROPPED, "reason" => "error").increment(1);
            tracing::warn!(error = %e, "shadow: cannot read the fused logits");
            return;
        }
    };
    let job = Box::new(ShadowJob {
        slot,
        ids: ids.to_vec(),
        fused,
        hidden: None,
        next_layer: 0,
        started: Instant::now(),
    });
    let _ = shared.compute.spawn_idle(move || job.step());
}

/// The controller task: records each shadow's metrics, feeds the controller, and publishes
/// its step. Ends when the engine (every sender) is gone.
pub async fn run_controller(
    shared: std::sync::Weak<Shared>,
    cfg: ShadowConfig,
    mut rx: mpsc::UnboundedReceiver<ShadowOutcome>,
) {
    let mut ctl = ShadowController::new(&cfg);
    metrics::gauge!(m::SHADOW_RATIO_STEP).set(0.0);
    while let Some(out) = rx.recv().await {
        metrics::histogram!(m::SHADOW_KL).record(out.kl);
        let agree = if out.agree { "true" } else { "false" };
        metrics::counter!(m::SHADOW_AGREEMENT, "agree" => agree).increment(1);
        let Some(change) = ctl.observe(out.kl) else {
            continue;
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.shadow.step.store(change.to, Ordering::Release);
        metrics::gauge!(m::SHADOW_RATIO_STEP).set(change.to as f64);
        let now = default_params(&shared).budget;
        if change.to > change.from {
            tracing::warn!(
                mean_kl = change.mean_kl,
                max_kl = cfg.max_kl,
                step = change.to,
                budget = ?now,
                "shadow KL above max_kl: default recompute ratio raised one step"
            );
        } else {
            tracing::info!(
                mean_kl = change.mean_kl,
                step = change.to,
                budget = ?now,
                "shadow KL recovered: default recompute ratio lowered one step"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use a3kv_fusion::AutoBudget;

    fn cfg(window: usize, max_kl: f64, max_steps: usize) -> ShadowConfig {
        ShadowConfig {
            window,
            max_kl,
            max_steps,
            ..ShadowConfig::default()
        }
    }

    #[test]
    fn the_controller_steps_up_on_a_high_mean_and_down_after_recovery() {
        let mut c = ShadowController::new(&cfg(4, 0.2, 2));
        // No decision before a full window.
        for _ in 0..3 {
            assert_eq!(c.observe(0.9), None);
        }
        // Mean (0.9·3 + 0.1)/4 = 0.7 > 0.2: up.
        let up = c.observe(0.1).expect("a step up");
        assert_eq!((up.from, up.to), (0, 1));
        assert!((up.mean_kl - 0.7).abs() < 1e-12);
        assert_eq!(c.step(), 1);
        // The window restarted: three more high samples decide nothing yet.
        for _ in 0..3 {
            assert_eq!(c.observe(0.5), None);
        }
        assert_eq!(c.observe(0.5).map(|s| s.to), Some(2));
        // Capped at max_steps.
        for _ in 0..8 {
            assert_eq!(c.observe(0.5), None);
        }
        assert_eq!(c.step(), 2);
        // Between max_kl/2 and max_kl: hold (hysteresis).
        for _ in 0..8 {
            assert_eq!(c.observe(0.15), None);
        }
        // The rolling window moves: once the mean of the last 4 is under 0.1, down.
        assert_eq!(c.observe(0.0), None); // 0.15·3/4 = 0.1125
        let down = c.observe(0.0).expect("a step down"); // 0.15·2/4 = 0.075
        assert_eq!((down.from, down.to), (2, 1));
        for _ in 0..3 {
            assert_eq!(c.observe(0.0), None);
        }
        assert_eq!(c.observe(0.0).map(|s| s.to), Some(0));
        // Never below 0.
        for _ in 0..8 {
            assert_eq!(c.observe(0.0), None);
        }
        // A NaN KL counts as a broken fusion.
        let mut c = ShadowController::new(&cfg(1, 0.2, 1));
        assert_eq!(c.observe(f64::NAN).map(|s| s.to), Some(1));
    }

    #[test]
    fn boosting_raises_ratios_and_auto_bounds_capped_at_one() {
        let base = FusionParams {
            budget: Budget::Ratio(0.15),
            ..FusionParams::default()
        };
        assert_eq!(boosted(&base, 0, 0.05), base);
        assert_eq!(boosted(&base, 2, 0.05).budget, Budget::Ratio(0.25));
        assert_eq!(boosted(&base, 40, 0.05).budget, Budget::Ratio(1.0));
        let auto = FusionParams {
            budget: Budget::Auto(AutoBudget {
                mass: 0.99,
                min_ratio: 0.05,
                max_ratio: 0.9,
            }),
            ..FusionParams::default()
        };
        match boosted(&auto, 1, 0.2).budget {
            Budget::Auto(a) => {
                assert!((a.min_ratio - 0.25).abs() < 1e-12);
                assert_eq!(a.max_ratio, 1.0);
                assert_eq!(a.mass, 0.99);
            }
            b => panic!("{b:?}"),
        }
        let tokens = FusionParams {
            budget: Budget::Tokens(64),
            ..FusionParams::default()
        };
        assert_eq!(boosted(&tokens, 3, 0.05).budget, Budget::Tokens(64));
    }

    #[test]
    fn the_sampler_takes_exactly_the_rate() {
        let (s, _rx) = ShadowShared::new();
        assert_eq!((0..1000).filter(|_| s.sample(0.01)).count(), 10);
        let (s, _rx) = ShadowShared::new();
        assert_eq!((0..50).filter(|_| s.sample(1.0)).count(), 50);
        let (s, _rx) = ShadowShared::new();
        assert_eq!((0..50).filter(|_| s.sample(0.0)).count(), 0);
        assert!(ShadowConfig::default().validate().is_ok());
        let bad = ShadowConfig {
            rate: 1.5,
            ..ShadowConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
