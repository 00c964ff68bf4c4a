//! Server-sent events from a request's engine channel: one `data:` chunk per token, a
//! closing chunk with `finish_reason`, an optional usage chunk, then `data: [DONE]`.
//! Errors after the first token are sent as `data: {"error": …}` and end the stream.
//! Dropping the stream (client gone) drops the receiver, which cancels the request.

use std::convert::Infallible;

use a3kv_sched::EngineEvent;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::{self, Stream, StreamExt};
use serde_json::Value;

use crate::error::ApiError;
use crate::generate::Admitted;
use crate::logprobs::LogprobsOut;
use crate::reply::UsageOut;

struct State {
    a: Admitted,
    pending: Option<EngineEvent>,
    sent_first: bool,
    done: bool,
    timeout_secs: u64,
    logprobs: LogprobsOut,
}

fn data(v: &serde_json::Value) -> Event {
    Event::default().data(v.to_string())
}

/// The final event of a stream that failed (already logged and counted by `RequestEnd`).
fn error_event(e: &ApiError) -> Event {
    Event::default().data(serde_json::to_string(&e.body()).unwrap_or_default())
}

async fn step(mut s: State) -> Option<(Vec<Event>, State)> {
    if s.done {
        return None;
    }
    let ev = match s.pending.take() {
        Some(e) => Ok(e),
        None => s.a.next_event(s.timeout_secs).await,
    };
    let first = !s.sent_first;
    let out = match ev {
        Ok(EngineEvent::Token { text, logprobs, .. }) => {
            // A token without text still carries its log-probabilities.
            if text.is_empty() && !first && logprobs.is_none() {
                vec![]
            } else {
                s.sent_first = true;
                s.a.end.tokens_sent += 1;
                s.logprobs.push(&text, logprobs);
                let lp = s.logprobs.take();
                vec![data(&s.a.meta.chunk(&text, first, None, lp))]
            }
        }
        Ok(EngineEvent::Finished {
            finish_reason,
            usage,
        }) => {
            s.done = true;
            s.a.end.finished(&finish_reason, &usage);
            let closing = s.a.meta.chunk("", first, Some(&finish_reason), Value::Null);
            let mut v = vec![data(&closing)];
            if s.a.include_usage {
                v.push(data(&s.a.meta.usage_chunk(&UsageOut::from(&usage))));
            }
            v.push(Event::default().data("[DONE]"));
            v
        }
        Ok(EngineEvent::Failed(e)) => {
            s.done = true;
            let e = ApiError::from(e);
            s.a.end.failed(&e);
            vec![error_event(&e)]
        }
        Err(e) => {
            s.done = true;
            vec![error_event(&e)]
        }
    };
    Some((out, s))
}

/// The SSE response of an admitted request.
pub fn respond(
    a: Admitted,
    timeout_secs: u64,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let pending = Some(a.first.clone());
    let logprobs = LogprobsOut::new(&a.meta);
    let state = State {
        a,
        pending,
        sent_first: false,
        done: false,
        timeout_secs,
        logprobs,
    };
    let events = stream::unfold(state, step).flat_map(|v| stream::iter(v.into_iter().map(Ok)));
    Sse::new(events).keep_alive(KeepAlive::default())
}
