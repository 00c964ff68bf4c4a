//! Supervisor: the root actor. Spawns the five pipeline stages linked to itself, and when
//! one fails (a panic or an error in a handler) restarts it under the same name. The jobs
//! the failed actor held are dropped with its state, and each fails its own request
//! through its `Responder`; every other request goes on.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::metrics as m;
use crate::shared::{Shared, Stage};

use super::admission::Admission;
use super::batcher::RecomputeBatcher;
use super::decoder::Decoder;
use super::loader::ChunkLoader;
use super::scorer::RelevanceScorer;
#[cfg(test)]
use super::{
    admission::AdmissionMsg, batcher::BatcherMsg, decoder::DecoderMsg, loader::LoaderMsg,
    scorer::ScorerMsg,
};

/// Supervisor's messages.
pub enum SupervisorMsg {
    /// Stop restarting, stop every stage, then reply.
    Shutdown(RpcReplyPort<()>),
    /// Test hook (unit tests only): make `stage` panic on its next job.
    #[cfg(test)]
    InjectFault(Stage),
}

/// Supervisor's state.
#[derive(Debug, Default)]
pub struct SupervisorState {
    stopping: bool,
}

/// The Supervisor actor.
pub struct Supervisor(pub Arc<Shared>);

/// Spawns `stage` linked to `sup` under its registered name.
async fn spawn_stage(
    shared: &Arc<Shared>,
    stage: Stage,
    sup: ActorCell,
) -> Result<(), ActorProcessingErr> {
    let name = Some(shared.names.name(stage));
    let s = shared.clone();
    match stage {
        Stage::Admission => Actor::spawn_linked(name, Admission(s), (), sup)
            .await
            .map(|_| ())?,
        Stage::Loader => Actor::spawn_linked(name, ChunkLoader(s), (), sup)
            .await
            .map(|_| ())?,
        Stage::Scorer => Actor::spawn_linked(name, RelevanceScorer(s), (), sup)
            .await
            .map(|_| ())?,
        Stage::Batcher => Actor::spawn_linked(name, RecomputeBatcher(s), (), sup)
            .await
            .map(|_| ())?,
        Stage::Decoder => Actor::spawn_linked(name, Decoder(s), (), sup)
            .await
            .map(|_| ())?,
    }
    Ok(())
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        for stage in Stage::ALL {
            spawn_stage(&self.0, stage, myself.get_cell()).await?;
        }
        Ok(SupervisorState::default())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Shutdown(reply) => {
                st.stopping = true;
                myself
                    .stop_children_and_wait(None, Some(Duration::from_secs(5)))
                    .await;
                let _ = reply.send(());
                myself.stop(None);
            }
            #[cfg(test)]
            SupervisorMsg::InjectFault(stage) => {
                let shared = &self.0;
                let _ = match stage {
                    Stage::Admission => shared
                        .send(stage, AdmissionMsg::InjectFault)
                        .map_err(|_| ()),
                    Stage::Loader => shared.send(stage, LoaderMsg::InjectFault).map_err(|_| ()),
                    Stage::Scorer => shared.send(stage, ScorerMsg::InjectFault).map_err(|_| ()),
                    Stage::Batcher => shared.send(stage, BatcherMsg::InjectFault).map_err(|_| ()),
                    Stage::Decoder => shared.send(stage, DecoderMsg::InjectFault).map_err(|_| ()),
                };
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        if st.stopping {
            return Ok(());
        }
        let Some(stage) = cell.get_name().and_then(|n| self.0.names.stage_of(&n)) else {
            return Ok(());
        };
        tracing::error!(actor = stage.as_str(), "actor stopped ({why}); restarting");
        metrics::counter!(m::ACTOR_RESTARTS, "actor" => stage.as_str()).increment(1);
        // The name is released as the old actor exits; retry briefly if it is still held.
        let mut last = None;
        for attempt in 0..50u64 {
            match spawn_stage(&self.0, stage, myself.get_cell()).await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(2 * (attempt + 1))).await;
        }
        Err(last.unwrap_or_else(|| "restart failed".into()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use a3kv_fusion::Method;

    use crate::shared::Stage;
    use crate::test_common::*;
    use crate::{Engine, EngineError};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_actor_fault_fails_only_its_request_and_the_actor_restarts() {
        let Some(m) = model() else { return };
        let engine = Engine::start(config(), m).await.unwrap();
        for stage in [Stage::Scorer, Stage::Batcher, Stage::Loader, Stage::Decoder] {
            engine.inject_fault(stage);
            tokio::time::sleep(Duration::from_millis(20)).await;
            let bad = engine
                .submit(rag("bad", &[1], "Where?", Method::A3, 3))
                .unwrap();
            match collect(bad, Duration::from_secs(60)).await.finish {
                Err(EngineError::Internal(msg)) => {
                    assert!(msg.contains(stage.as_str()), "{msg}")
                }
                other => panic!("{stage:?}: expected a failure, got {other:?}"),
            }
            // The failure reaches the client while the actor is still unwinding; let the
            // supervisor finish the restart.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let good = engine
                .submit(rag("good", &[1], "Where?", Method::A3, 3))
                .unwrap();
            let out = collect(good, Duration::from_secs(60)).await;
            assert!(out.finish.is_ok(), "{stage:?}: {:?}", out.finish);
            assert!(engine.is_ready());
        }
        assert!(wait_until(Duration::from_secs(5), || engine.running() == 0).await);
        engine.shutdown(Duration::from_secs(5)).await;
    }
}
