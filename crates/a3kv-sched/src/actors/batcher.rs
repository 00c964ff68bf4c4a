//! RecomputeBatcher: gathers scored requests and runs their selective layers together
//! (`steps::selective_batch`: one q/k/v and one MLP matmul per layer over the selected
//! rows of every request, attention per request). A batch launches when it holds
//! `max_batch_tokens` rows or `batch_wait_ms` after its first request arrived; one batch
//! runs at a time and requests arriving meanwhile form the next one.

use std::sync::Arc;
use std::time::Duration;

use a3kv_fusion::FusionReport;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::job::{forward, PrefillJob};
use crate::metrics as m;
use crate::prepare::Plan;
use crate::shadow::maybe_shadow;
use crate::shared::{Shared, Stage};
use crate::steps::{finish, selective_batch, Fusing, LayerSource};
use crate::EngineError;

use super::decoder::DecoderMsg;

/// RecomputeBatcher's messages.
pub enum BatcherMsg {
    /// A scored job.
    Add(Box<PrefillJob>),
    /// The wait is over: launch what is pending.
    Launch,
    /// A batch finished (each job prefilled, or with its error).
    Done(Vec<(Box<PrefillJob>, Result<(), EngineError>)>),
    /// Test hook (unit tests only): panic while handling the next job.
    #[cfg(test)]
    InjectFault,
}

impl BatcherMsg {
    /// The job inside, if exactly one.
    pub fn into_job(self) -> Option<Box<PrefillJob>> {
        match self {
            BatcherMsg::Add(j) => Some(j),
            _ => None,
        }
    }
}

/// RecomputeBatcher's state. Jobs stay boxed: they move between actor messages.
#[derive(Default)]
#[allow(clippy::vec_box)]
pub struct BatcherState {
    pending: Vec<Box<PrefillJob>>,
    busy: bool,
    timer_armed: bool,
    /// Set by `InjectFault`: the next job panics.
    #[cfg(test)]
    fault: bool,
}

/// The RecomputeBatcher actor.
pub struct RecomputeBatcher(pub Arc<Shared>);

fn rows(job: &PrefillJob) -> usize {
    job.fusing.as_ref().map_or(0, |f| f.rows().len())
}

impl Actor for RecomputeBatcher {
    type Msg = BatcherMsg;
    type State = BatcherState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(BatcherState::default())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let shared = &self.0;
        let cfg = &shared.cfg;
        match msg {
            #[cfg(test)]
            BatcherMsg::InjectFault => st.fault = true,
            BatcherMsg::Add(job) => {
                st.pending.push(job);
                #[cfg(test)]
                if std::mem::take(&mut st.fault) {
                    panic!("injected fault in recompute batcher");
                }
                let pending_rows: usize = st.pending.iter().map(|j| rows(j)).sum();
                if !cfg.batching || pending_rows >= cfg.max_batch_tokens || cfg.batch_wait_ms == 0 {
                    launch(shared, st);
                } else if !st.timer_armed {
                    st.timer_armed = true;
                    myself.send_after(Duration::from_millis(cfg.batch_wait_ms), || {
                        BatcherMsg::Launch
                    });
                }
            }
            BatcherMsg::Launch => {
                st.timer_armed = false;
                launch(shared, st);
            }
            BatcherMsg::Done(jobs) => {
                st.busy = false;
                for (job, res) in jobs {
                    match res {
                        Ok(()) => forward(
                            shared,
                            Stage::Decoder,
                            job,
                            DecoderMsg::Join,
                            DecoderMsg::into_job,
                        ),
                        Err(e) => {
                            let PrefillJob { responder, .. } = *job;
                            responder.fail(e);
                        }
                    }
                }
                launch(shared, st);
            }
        }
        Ok(())
    }
}

/// Takes up to `max_batch_tokens` rows of pending jobs (at least one job) onto the compute
/// pool, unless a batch is running.
fn launch(shared: &Arc<Shared>, st: &mut BatcherState) {
    st.pending.retain(|j| !j.responder.is_closed());
    if st.busy || st.pending.is_empty() {
        return;
    }
    let mut batch = Vec::new();
    let mut total = 0usize;
    while let Some(j) = st.pending.first() {
        let r = rows(j);
        let full = !shared.cfg.batching && !batch.is_empty();
        if full || (!batch.is_empty() && total + r > shared.cfg.max_batch_tokens) {
            break;
        }
        total += r;
        batch.push(st.pending.remove(0));
    }
    st.busy = true;
    let s = shared.clone();
    let spawned = shared.compute.spawn(move || {
        let done = run_batch(&s, batch, total);
        // By name: a restarted batcher still gets the result.
        let _ = s.send(Stage::Batcher, BatcherMsg::Done(done));
    });
    if spawned.is_err() {
        st.busy = false;
    }
}

/// The compute part: all selective layers of the batch, then each job's finish.
#[allow(clippy::vec_box)]
fn run_batch(
    shared: &Arc<Shared>,
    mut jobs: Vec<Box<PrefillJob>>,
    total_rows: usize,
) -> Vec<(Box<PrefillJob>, Result<(), EngineError>)> {
    let model = &shared.model;
    metrics::histogram!(m::BATCH_TOKENS).record(total_rows as f64);
    metrics::histogram!(m::BATCH_REQUESTS).record(jobs.len() as f64);
    let n = jobs.len();
    let mut taken: Vec<Option<(Fusing, crate::job::LayerFeed)>> = jobs
        .iter_mut()
        .map(|j| Some((j.fusing.take()?, j.feed.take()?)))
        .collect();
    let status = {
        let mut batch: Vec<(&mut Fusing, &mut dyn LayerSource)> = taken
            .iter_mut()
            .flatten()
            .map(|(f, feed)| (f, feed as &mut dyn LayerSource))
            .collect();
        selective_batch(model, &mut batch)
    };
    let mut status = status.into_iter();
    let mut out = Vec::with_capacity(n);
    for (mut job, t) in jobs.into_iter().zip(taken) {
        let res = match t {
            None => Err(EngineError::Internal(
                "job reached the batcher unscored".into(),
            )),
            Some((f, mut feed)) => {
                feed.drain();
                job.trace.rec.layer_loaded_secs = feed
                    .arrived
                    .iter()
                    .flatten()
                    .map(|t| job.trace.at(*t))
                    .collect();
                job.trace.rec.chunk_tiers = feed.tiers.iter().map(|s| s.to_string()).collect();
                job.trace.rec.batch_requests = n;
                match status.next().unwrap_or(Ok(())) {
                    Ok(()) => finish(model, f).map(|out| {
                        record_prefill(&mut job, &out.report);
                        if let Plan::Fused { prompt, .. } = &job.req.plan {
                            // Off the critical path: idle work of the compute pool.
                            maybe_shadow(shared, &prompt.ids, &out.logits);
                        }
                        job.prefilled = Some(out);
                    }),
                    Err(e) => Err(e),
                }
            }
        };
        out.push((job, res));
    }
    out
}

/// Records a finished prefill's metrics and trace (at the work site).
pub fn record_prefill(job: &mut PrefillJob, report: &FusionReport) {
    let secs = job.admitted.elapsed().as_secs_f64();
    job.trace.rec.prefill_end_secs = Some(job.trace.secs());
    metrics::histogram!(m::PREFILL_TIME).record(secs);
    if job.report_fusion {
        let method = crate::metrics::method_label(&report.method);
        metrics::histogram!(m::RECOMPUTE_RATIO, "method" => method).record(report.recompute_ratio);
        if let Some(r) = report.recompute_ratio_chosen {
            metrics::histogram!(m::RECOMPUTE_RATIO_CHOSEN, "method" => method).record(r);
        }
        metrics::counter!(m::FUSION_TOKENS, "kind" => "reused")
            .increment(report.reused_tokens as u64);
        metrics::counter!(m::FUSION_TOKENS, "kind" => "recomputed")
            .increment(report.recomputed_tokens as u64);
        metrics::counter!(m::FUSION_TOKENS, "kind" => "fresh")
            .increment(report.fresh_tokens as u64);
    }
}
