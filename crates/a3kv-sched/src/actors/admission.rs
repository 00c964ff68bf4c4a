//! Admission: tokenises and validates each request off the tokio workers, resolves its
//! documents (the document registry lives here), keeps the bounded waiting queue and
//! starts requests while fewer than `max_running` run. The queue bound itself is enforced
//! synchronously in `Engine::submit` through `QueueSlot`s, so a full queue is an
//! immediate rejection.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use a3kv_fusion::Method;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::job::{forward, PrefillJob};
use crate::metrics as m;
use crate::prepare::{lookup_unregistered, prepare, DocRegistry, Plan, ValidRequest};
use crate::request::{QueueSlot, Responder, RunningSlot, Trace};
use crate::shared::{Shared, Stage};
use crate::{EngineError, GenerateRequest};

use super::loader::LoaderMsg;
use super::scorer::ScorerMsg;

/// A submitted request before validation.
#[derive(Debug)]
pub struct Submitted {
    /// The raw request.
    pub req: GenerateRequest,
    /// Its stream.
    pub responder: Responder,
    /// Its place in the waiting queue.
    pub queue_slot: QueueSlot,
    /// Its clock.
    pub trace: Trace,
}

/// A document's chunks (token ids) and whether it is pinned.
pub type DocLookup = Option<(Arc<Vec<Vec<u32>>>, bool)>;

/// A validated request waiting to run.
#[derive(Debug)]
struct Waiting {
    valid: ValidRequest,
    responder: Responder,
    queue_slot: QueueSlot,
    trace: Trace,
}

/// Admission's messages.
pub enum AdmissionMsg {
    /// A new request from `Engine::submit`.
    Submit(Box<Submitted>),
    /// Its validation finished.
    Prepared(Box<Submitted>, Box<Result<ValidRequest, EngineError>>),
    /// A running request ended (its `RunningSlot` dropped).
    Released,
    /// Records a stored document's chunks (`pinned` marks it pinned).
    RegisterDoc(String, Arc<Vec<Vec<u32>>>, bool),
    /// A document's chunks and whether it is pinned.
    LookupDoc(String, RpcReplyPort<DocLookup>),
    /// Forgets a document; replies with its chunks if it was known.
    RemoveDoc(String, RpcReplyPort<Option<Arc<Vec<Vec<u32>>>>>),
    /// Test hook (unit tests only): panic while handling the next request.
    #[cfg(test)]
    InjectFault,
}

/// Admission's state.
pub struct AdmissionState {
    registry: DocRegistry,
    pinned: HashSet<String>,
    waiting: VecDeque<Waiting>,
    /// Set by `InjectFault`: the next request panics.
    #[cfg(test)]
    fault: bool,
}

/// The Admission actor (`self` holds the read-only engine context).
pub struct Admission(pub Arc<Shared>);

impl Actor for Admission {
    type Msg = AdmissionMsg;
    type State = AdmissionState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(AdmissionState {
            registry: DocRegistry::new(),
            pinned: HashSet::new(),
            waiting: VecDeque::new(),
            #[cfg(test)]
            fault: false,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let shared = self.0.clone();
        match msg {
            AdmissionMsg::Submit(sub) => {
                #[cfg(test)]
                if std::mem::take(&mut st.fault) {
                    panic!("injected fault in admission");
                }
                // Only the entries this request cites travel with it.
                let snapshot: DocRegistry = match &sub.req.prompt {
                    crate::PromptSpec::Rag { documents, .. } => documents
                        .iter()
                        .filter_map(|d| match d {
                            crate::DocumentRef::Id(id) => {
                                st.registry.get(id).map(|c| (id.clone(), c.clone()))
                            }
                            crate::DocumentRef::Text { .. } => None,
                        })
                        .collect(),
                    _ => DocRegistry::new(),
                };
                tokio::spawn(async move {
                    let res = match lookup_unregistered(&shared.store, &sub.req, &snapshot).await {
                        Ok(docs) => {
                            // Ids resolved from the store's document records (or as chunk
                            // ids) join the registry, so later requests skip the lookup.
                            for (id, chunks) in &docs {
                                if !snapshot.contains_key(id) {
                                    let _ = shared.send(
                                        Stage::Admission,
                                        AdmissionMsg::RegisterDoc(
                                            id.clone(),
                                            chunks.clone(),
                                            false,
                                        ),
                                    );
                                }
                            }
                            let s2 = shared.clone();
                            let req = sub.req.clone();
                            shared
                                .compute
                                .run(move || prepare(&s2, req, &docs))
                                .await
                                .and_then(|r| r)
                        }
                        Err(e) => Err(e),
                    };
                    // By name: a restarted Admission still gets it.
                    let _ = shared
                        .clone()
                        .send(Stage::Admission, AdmissionMsg::Prepared(sub, Box::new(res)));
                });
            }
            AdmissionMsg::Prepared(sub, res) => {
                let Submitted {
                    responder,
                    queue_slot,
                    trace,
                    ..
                } = *sub;
                match *res {
                    Ok(valid) => {
                        for (id, chunks) in &valid.new_docs {
                            st.registry.insert(id.clone(), chunks.clone());
                            // Persisted in the background (restarts, other replicas).
                            let (store, id, chunks) =
                                (shared.store.clone(), id.clone(), chunks.clone());
                            tokio::spawn(async move {
                                if let Err(e) = store.put_document(&id, &chunks).await {
                                    tracing::warn!(document = %id, error = %e, "cannot persist a document record");
                                }
                            });
                        }
                        st.waiting.push_back(Waiting {
                            valid,
                            responder,
                            queue_slot,
                            trace,
                        });
                    }
                    Err(e) => {
                        metrics::counter!(m::REQUESTS_REJECTED, "reason" => e.kind()).increment(1);
                        responder.fail(e);
                    }
                }
                start_waiting(&shared, st);
            }
            AdmissionMsg::Released => start_waiting(&shared, st),
            AdmissionMsg::RegisterDoc(id, chunks, pinned) => {
                if pinned {
                    st.pinned.insert(id.clone());
                }
                st.registry.insert(id, chunks);
            }
            AdmissionMsg::LookupDoc(id, reply) => {
                let found = st
                    .registry
                    .get(&id)
                    .map(|c| (c.clone(), st.pinned.contains(&id)));
                let _ = reply.send(found);
            }
            AdmissionMsg::RemoveDoc(id, reply) => {
                st.pinned.remove(&id);
                let _ = reply.send(st.registry.remove(&id));
            }
            #[cfg(test)]
            AdmissionMsg::InjectFault => st.fault = true,
        }
        Ok(())
    }
}

/// Starts waiting requests while the running set has room.
fn start_waiting(shared: &Arc<Shared>, st: &mut AdmissionState) {
    let max = shared.cfg.max_running.max(1);
    while shared.counters.running.load(Ordering::Acquire) < max {
        let Some(w) = st.waiting.pop_front() else {
            break;
        };
        if w.responder.is_closed() {
            continue; // client gone while queued
        }
        let Waiting {
            valid,
            responder,
            queue_slot,
            trace,
        } = w;
        drop(queue_slot);
        // By name: a restarted Admission still hears about releases.
        let name = shared.names.name(Stage::Admission);
        let slot = RunningSlot::acquire(
            &shared.counters,
            Box::new(move || {
                if let Some(cell) = ractor::registry::where_is(name.clone()) {
                    let _ = cell.send_message(AdmissionMsg::Released);
                }
            }),
        );
        let mut trace = trace;
        trace.rec.admitted_secs = trace.secs();
        metrics::histogram!(m::QUEUE_TIME).record(trace.rec.admitted_secs);
        metrics::counter!(m::PROMPT_TOKENS).increment(valid.plan.prompt_tokens() as u64);
        let (direct, report_fusion) = match &valid.plan {
            Plan::Plain { .. } => (true, false),
            Plan::Fused { params, parts, .. } => {
                (params.method == Method::Full || parts.is_empty(), true)
            }
        };
        let job = Box::new(PrefillJob {
            req: valid,
            responder,
            slot,
            trace,
            feed: None,
            fusing: None,
            prefilled: None,
            report: None,
            report_fusion,
            admitted: Instant::now(),
        });
        if direct {
            forward(
                shared,
                Stage::Scorer,
                job,
                ScorerMsg::Score,
                ScorerMsg::into_job,
            );
        } else {
            forward(
                shared,
                Stage::Loader,
                job,
                LoaderMsg::Load,
                LoaderMsg::into_job,
            );
        }
    }
}
