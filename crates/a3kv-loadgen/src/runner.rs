//! `execute`: replays one [`Trace`] against the server. Open loop sends at the planned times
//! whatever the server does; closed loop keeps `concurrency` requests in flight. Sending stops
//! at the trace's stop rule; in-flight requests then get `drain_secs` to finish, after which
//! they are aborted and recorded as `aborted`, so a run always ends on time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::{sleep_until, Instant};

use crate::arrival::ArrivalProcess;
use crate::client::LoadClient;
use crate::record::{RequestErrorKind, RequestRecord};
use crate::trace::Trace;
use crate::workload::Workload;

/// How one run is executed (apart from the trace).
#[derive(Debug, Clone, PartialEq)]
pub struct RunPlan {
    /// Requests sent before this many seconds are flagged `warmup`.
    pub warmup_secs: f64,
    /// Grace period for in-flight requests after sending stops.
    pub drain_secs: f64,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub show_progress: bool,
    /// Prefix of the progress bar, e.g. the method name.
    pub label: String,
}

/// The in-flight requests: task id -> (trace index, send time in seconds).
type InFlight = HashMap<Id, (usize, f64)>;

struct Runner {
    workload: Arc<Workload>,
    client: Arc<LoadClient>,
    start: Instant,
    warmup_secs: f64,
    tasks: JoinSet<RequestRecord>,
    in_flight: InFlight,
    records: Vec<RequestRecord>,
    bar: ProgressBar,
    errors: usize,
}

impl Runner {
    fn spawn(&mut self, index: usize) {
        let sent_at = self.start.elapsed().as_secs_f64();
        let (workload, client) = (Arc::clone(&self.workload), Arc::clone(&self.client));
        let handle = self.tasks.spawn(async move {
            let spec = workload.request(index);
            client.send(&workload, &spec, sent_at).await
        });
        self.in_flight.insert(handle.id(), (index, sent_at));
    }

    fn finish(&mut self, joined: Result<(Id, RequestRecord), JoinError>) {
        let record = match joined {
            Ok((id, record)) => {
                self.in_flight.remove(&id);
                record
            }
            // A panicked or cancelled task: record it rather than lose it.
            Err(e) => {
                let (index, sent_at) = self.in_flight.remove(&e.id()).unwrap_or((usize::MAX, 0.0));
                aborted(index, sent_at, self.start)
            }
        };
        self.push(record);
    }

    fn push(&mut self, mut record: RequestRecord) {
        record.warmup = record.sent_at_secs < self.warmup_secs;
        if !record.ok() {
            self.errors += 1;
        }
        self.records.push(record);
        self.bar.inc(1);
        self.bar.set_message(format!(
            "errors {}  in flight {}",
            self.errors,
            self.in_flight.len()
        ));
    }
}

fn aborted(index: usize, sent_at_secs: f64, start: Instant) -> RequestRecord {
    RequestRecord {
        index,
        sent_at_secs,
        error: Some(RequestErrorKind::Aborted),
        e2e_secs: (start.elapsed().as_secs_f64() - sent_at_secs).max(0.0),
        ..RequestRecord::default()
    }
}

fn progress_bar(trace: &Trace, plan: &RunPlan) -> ProgressBar {
    if !plan.show_progress {
        return ProgressBar::hidden();
    }
    let (bar, template) = match trace.planned_requests() {
        Some(n) => (
            ProgressBar::new(n as u64),
            "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{prefix} [{elapsed_precise}] {spinner} {pos} done {msg}",
        ),
    };
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(plan.label.clone());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Runs `trace` and returns one record per request sent, in completion order.
///
/// Bounded in time: sending stops at the stop rule (closed loop stops sending at
/// `duration_secs` or `max_requests`), then at most `drain_secs` more.
pub async fn execute(
    trace: &Trace,
    workload: Arc<Workload>,
    client: Arc<LoadClient>,
    plan: &RunPlan,
) -> Vec<RequestRecord> {
    let start = Instant::now();
    let mut r = Runner {
        workload,
        client,
        start,
        warmup_secs: plan.warmup_secs,
        tasks: JoinSet::new(),
        in_flight: HashMap::new(),
        records: Vec::new(),
        bar: progress_bar(trace, plan),
        errors: 0,
    };
    let max_requests = trace.stop.max_requests.unwrap_or(usize::MAX);
    let stop_at = trace
        .stop
        .duration_secs
        .map(|d| start + Duration::from_secs_f64(d));
    let mut next = 0usize;
    match (&trace.arrival, trace.send_offsets_secs.as_deref()) {
        (ArrivalProcess::ClosedLoop { concurrency }, _) => loop {
            let time_left = stop_at.is_none_or(|s| Instant::now() < s);
            while time_left && next < max_requests && r.in_flight.len() < *concurrency {
                r.spawn(next);
                next += 1;
            }
            if !time_left || next >= max_requests {
                break;
            }
            let stop = stop_at.unwrap_or_else(|| start + Duration::from_secs(365 * 24 * 3600));
            tokio::select! {
                Some(joined) = r.tasks.join_next_with_id() => r.finish(joined),
                _ = sleep_until(stop) => {}
            }
        },
        (_, offsets) => {
            let offsets = offsets.unwrap_or(&[]);
            while next < offsets.len().min(max_requests) {
                let at = start + Duration::from_secs_f64(offsets[next]);
                tokio::select! {
                    biased;
                    _ = sleep_until(at) => {
                        r.spawn(next);
                        next += 1;
                    }
                    Some(joined) = r.tasks.join_next_with_id(), if !r.tasks.is_empty() => r.finish(joined),
                }
            }
        }
    }
    // Drain: in-flight requests get `drain_secs`, then are aborted.
    let deadline = Instant::now() + Duration::from_secs_f64(plan.drain_secs.max(0.0));
    loop {
        tokio::select! {
            joined = r.tasks.join_next_with_id() => match joined {
                Some(joined) => r.finish(joined),
                None => break,
            },
            _ = sleep_until(deadline) => {
                r.tasks.abort_all();
                let left: Vec<(usize, f64)> = r.in_flight.drain().map(|(_, v)| v).collect();
                for (index, sent_at) in left {
                    r.push(aborted(index, sent_at, start));
                }
                // Aborted tasks end at their next await point; do not wait on them.
                r.tasks.detach_all();
                break;
            }
        }
    }
    r.bar.finish_and_clear();
    r.records
}
