//! RelevanceScorer: per request, on the compute pool, the exact layers and the check layer
//! with the method's selection (`steps::check_phase`) while the loader still streams later
//! layers; plain and `full` prompts get their whole prefill here. Scored jobs go to the
//! RecomputeBatcher, fully prefilled ones straight to the Decoder.

use std::sync::Arc;

use a3kv_fusion::{full_prefill, FusionParams, Method, RagPrompt};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::job::{forward, PrefillJob};
use crate::metrics as m;
use crate::prepare::Plan;
use crate::shared::{Shared, Stage};
use crate::steps::check_phase;
use crate::EngineError;

use super::batcher::BatcherMsg;
use super::decoder::DecoderMsg;

/// RelevanceScorer's messages.
pub enum ScorerMsg {
    /// Score (or fully prefill) a job.
    Score(Box<PrefillJob>),
    /// The compute pool finished a job.
    Scored(Box<PrefillJob>, Result<(), EngineError>),
    /// Test hook (unit tests only): panic while handling the next job.
    #[cfg(test)]
    InjectFault,
}

impl ScorerMsg {
    /// The job inside, if any.
    pub fn into_job(self) -> Option<Box<PrefillJob>> {
        match self {
            ScorerMsg::Score(j) | ScorerMsg::Scored(j, _) => Some(j),
            #[cfg(test)]
            ScorerMsg::InjectFault => None,
        }
    }
}

/// RelevanceScorer's state.
#[derive(Debug, Default)]
pub struct ScorerState {
    /// Set by `InjectFault`: the next job panics.
    #[cfg(test)]
    fault: bool,
}

/// The RelevanceScorer actor.
pub struct RelevanceScorer(pub Arc<Shared>);

impl Actor for RelevanceScorer {
    type Msg = ScorerMsg;
    type State = ScorerState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(ScorerState::default())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        // Only the test build's fault hook keeps state here.
        #[cfg_attr(not(test), allow(unused_variables))] st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let shared = &self.0;
        match msg {
            #[cfg(test)]
            ScorerMsg::InjectFault => st.fault = true,
            ScorerMsg::Score(job) => {
                #[cfg(test)]
                if std::mem::take(&mut st.fault) {
                    panic!("injected fault in relevance scorer");
                }
                if job.responder.is_closed() {
                    return Ok(());
                }
                let s = shared.clone();
                let spawned = shared.compute.spawn(move || {
                    let mut job = job;
                    let res = score(&s, &mut job);
                    // By name: a restarted scorer still gets the result.
                    let _ = s.send(Stage::Scorer, ScorerMsg::Scored(job, res));
                });
                if let Err(e) = spawned {
                    tracing::error!("compute pool: {e}");
                }
            }
            ScorerMsg::Scored(job, Err(e)) => {
                let PrefillJob { responder, .. } = *job;
                responder.fail(e);
            }
            ScorerMsg::Scored(job, Ok(())) => {
                if job.prefilled.is_some() {
                    forward(
                        shared,
                        Stage::Decoder,
                        job,
                        DecoderMsg::Join,
                        DecoderMsg::into_job,
                    );
                } else {
                    forward(
                        shared,
                        Stage::Batcher,
                        job,
                        BatcherMsg::Add,
                        BatcherMsg::into_job,
                    );
                }
            }
        }
        Ok(())
    }
}

/// The compute part (runs on a compute thread).
fn score(shared: &Shared, job: &mut PrefillJob) -> Result<(), EngineError> {
    let model = &shared.model;
    job.trace.rec.check_start_secs = Some(job.trace.secs());
    let (prompt, params, cached) = match &job.req.plan {
        Plan::Plain { ids } => (
            RagPrompt::from_ids(&[], &[], ids)?,
            FusionParams::method(Method::Full),
            false,
        ),
        Plan::Fused {
            prompt,
            params,
            parts,
        } => (
            prompt.clone(),
            params.clone(),
            params.method != Method::Full && !parts.is_empty(),
        ),
    };
    if cached {
        let feed = job
            .feed
            .as_mut()
            .ok_or_else(|| EngineError::Internal("job reached the scorer without a feed".into()))?;
        let f = check_phase(model, prompt, params, feed)?;
        let secs = job.trace.secs() - job.trace.rec.check_start_secs.unwrap_or(0.0);
        metrics::histogram!(m::SELECTION_TIME).record(secs);
        job.fusing = Some(f);
    } else {
        let out = full_prefill(model, &prompt, &params)?;
        crate::actors::batcher::record_prefill(job, &out.report);
        job.prefilled = Some(out);
    }
    job.trace.rec.check_end_secs = Some(job.trace.secs());
    Ok(())
}
