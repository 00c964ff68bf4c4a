//! Decoder: continuous batching. Each iteration samples the next token of every active
//! sequence, streams it out at once, then runs one batched decode step
//! (`decode::decode_batch`) for all sequences that go on. Sequences join between
//! iterations; finished and cancelled ones (client gone) leave, freeing their cache and
//! running slot.

use std::sync::Arc;
use std::time::Instant;

use a3kv_fusion::FinishReason;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::decode::{decode_batch, Seq, StepOut};
use crate::job::PrefillJob;
use crate::metrics as m;
use crate::shared::{Shared, Stage};
use crate::{EngineError, EngineEvent, Usage};

/// A sequence being decoded and the job it belongs to.
pub struct Active {
    seq: Seq,
    job: Box<PrefillJob>,
    first_token_at: Option<Instant>,
    last_token_at: Option<Instant>,
    done: bool,
}

/// Decoder's messages.
pub enum DecoderMsg {
    /// A prefilled job joins the running batch.
    Join(Box<PrefillJob>),
    /// An iteration finished.
    StepDone(Vec<Active>),
    /// Test hook (unit tests only): panic while handling the next job.
    #[cfg(test)]
    InjectFault,
}

impl DecoderMsg {
    /// The job inside, if exactly one.
    pub fn into_job(self) -> Option<Box<PrefillJob>> {
        match self {
            DecoderMsg::Join(j) => Some(j),
            _ => None,
        }
    }
}

/// Decoder's state: the running batch (absent while an iteration computes) and arrivals.
#[derive(Default)]
pub struct DecoderState {
    active: Vec<Active>,
    joining: Vec<Active>,
    stepping: bool,
    /// Set by `InjectFault`: the next job panics.
    #[cfg(test)]
    fault: bool,
}

/// The Decoder actor.
pub struct Decoder(pub Arc<Shared>);

impl Actor for Decoder {
    type Msg = DecoderMsg;
    type State = DecoderState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(DecoderState::default())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let shared = &self.0;
        match msg {
            #[cfg(test)]
            DecoderMsg::InjectFault => st.fault = true,
            DecoderMsg::Join(mut job) => {
                let Some(pre) = job.prefilled.take() else {
                    let PrefillJob { responder, .. } = *job;
                    responder.fail(EngineError::Internal(
                        "job reached the decoder unprefilled".into(),
                    ));
                    return Ok(());
                };
                let seq = Seq::new(
                    pre.cache,
                    &pre.logits,
                    job.req.sampling,
                    shared.tok.stop_ids().to_vec(),
                    job.req.stop.clone(),
                    job.req.max_tokens,
                )
                .map(|s| {
                    s.with_logprobs(job.req.logprobs)
                        .with_first_token_logits(job.req.first_token_logits)
                });
                job.report = Some(pre.report);
                match seq {
                    Ok(seq) => st.joining.push(Active {
                        seq,
                        job,
                        first_token_at: None,
                        last_token_at: None,
                        done: false,
                    }),
                    Err(e) => {
                        let PrefillJob { responder, .. } = *job;
                        responder.fail(e);
                    }
                }
                #[cfg(test)]
                if std::mem::take(&mut st.fault) {
                    panic!("injected fault in decoder");
                }
                if !st.stepping {
                    step(shared, st);
                }
            }
            DecoderMsg::StepDone(active) => {
                st.stepping = false;
                st.active = active.into_iter().filter(|a| !a.done).collect();
                step(shared, st);
            }
        }
        Ok(())
    }
}

/// Starts one iteration over all active sequences, if any.
fn step(shared: &Arc<Shared>, st: &mut DecoderState) {
    st.active.append(&mut st.joining);
    // Cancellation: a closed stream frees the sequence here, before any more work.
    st.active.retain(|a| !a.job.responder.is_closed());
    if st.active.is_empty() {
        return;
    }
    st.stepping = true;
    let batch = std::mem::take(&mut st.active);
    let s = shared.clone();
    let spawned = shared.compute.spawn(move || {
        let mut batch = batch;
        iterate(&s, &mut batch);
        // By name: a restarted decoder takes the running batch over.
        let _ = s.send(Stage::Decoder, DecoderMsg::StepDone(batch));
    });
    if spawned.is_err() {
        st.stepping = false;
    }
}

/// One iteration (compute thread): sample + emit for everyone, then one batched decode.
fn iterate(shared: &Shared, batch: &mut [Active]) {
    metrics::histogram!(m::DECODE_BATCH).record(batch.len() as f64);
    for a in batch.iter_mut() {
        match a.seq.advance(&shared.tok) {
            Ok(outs) => {
                for o in outs {
                    emit(a, o);
                }
            }
            Err(e) => fail(a, e),
        }
    }
    let mut go: Vec<&mut Active> = batch
        .iter_mut()
        .filter(|a| !a.done && a.seq.feed.is_some())
        .collect();
    if go.is_empty() {
        return;
    }
    let ids: Vec<u32> = go.iter().filter_map(|a| a.seq.feed).collect();
    let res = {
        let mut caches: Vec<&mut a3kv_model::KvCache> =
            go.iter_mut().map(|a| &mut a.seq.cache).collect();
        decode_batch(&shared.model, &mut caches, &ids)
    };
    match res {
        Ok(logits) => {
            for (a, l) in go.into_iter().zip(logits) {
                a.seq.set_logits(l);
            }
        }
        Err(e) => {
            for a in go {
                fail(a, e.clone());
            }
        }
    }
}

fn fail(a: &mut Active, e: EngineError) {
    a.done = true;
    let r = std::mem::replace(&mut a.job.responder, crate::request::Responder::closed());
    r.fail(e);
}

/// Sends one output of a sequence, recording TTFT/ITL at the send site.
fn emit(a: &mut Active, out: StepOut) {
    let now = Instant::now();
    match out {
        StepOut::Token(token_id, text, logprobs) => {
            if a.first_token_at.is_none() {
                a.first_token_at = Some(now);
                metrics::histogram!(m::TTFT).record(a.job.trace.at(now));
            } else if let Some(prev) = a.last_token_at {
                metrics::histogram!(m::ITL).record(now.duration_since(prev).as_secs_f64());
            }
            a.last_token_at = Some(now);
            metrics::counter!(m::GENERATION_TOKENS).increment(1);
            let ev = EngineEvent::Token {
                token_id,
                text,
                logprobs,
            };
            if !a.job.responder.send(ev) {
                a.done = true; // client gone
            }
        }
        StepOut::Done(reason) => {
            a.done = true;
            let reason = match reason {
                FinishReason::Stop => "stop",
                _ => "length",
            };
            let ttft = a
                .first_token_at
                .map_or(a.job.trace.secs(), |t| a.job.trace.at(t));
            metrics::counter!(m::REQUEST_SUCCESS, "finished_reason" => reason).increment(1);
            metrics::histogram!(m::E2E).record(a.job.trace.secs());
            if let Some(t) = a.first_token_at {
                metrics::histogram!(m::DECODE_TIME).record(now.duration_since(t).as_secs_f64());
            }
            let fusion = a.job.report_fusion.then(|| a.job.report.clone()).flatten();
            let usage = Usage {
                prompt_tokens: a.job.req.plan.prompt_tokens(),
                completion_tokens: a.seq.emitted,
                fusion,
                ttft_secs: ttft,
                trace: a.job.trace.rec.clone(),
                first_token_logits: a.seq.take_first_token_logits(),
            };
            let r = std::mem::replace(&mut a.job.responder, crate::request::Responder::closed());
            r.finish(EngineEvent::Finished {
                finish_reason: reason.to_string(),
                usage,
            });
        }
    }
}
