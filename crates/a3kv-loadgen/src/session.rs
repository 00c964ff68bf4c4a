//! `Session`: what all runs of one `run` call share (validated config, the document pool), and
//! `run_once`, which replays one trace with one fusion method and summarises it.

use std::sync::Arc;

use crate::client::LoadClient;
use crate::config::ValidConfig;
use crate::report::RunReport;
use crate::runner::{execute, RunPlan};
use crate::stats::RunSummary;
use crate::trace::Trace;
use crate::workload::Workload;
use crate::LoadgenError;

/// Shared, read-only state of the runs of one invocation.
#[derive(Debug, Clone)]
pub struct Session {
    /// The validated configuration.
    pub cfg: ValidConfig,
    /// The document pool and request generator.
    pub workload: Arc<Workload>,
}

impl Session {
    /// Replays `trace` sending `fusion.method = method` (none if `None`) and summarises it.
    /// Errors only if the HTTP client cannot be built; request failures are in the summary.
    pub async fn run_once(
        &self,
        trace: &Trace,
        method: Option<String>,
        label: String,
    ) -> Result<RunReport, LoadgenError> {
        let mut client_cfg = self.cfg.client.clone();
        client_cfg.fusion_method = method.clone();
        let client = Arc::new(LoadClient::new(client_cfg)?);
        let plan = RunPlan {
            label: label.clone(),
            ..self.cfg.plan.clone()
        };
        let records = execute(trace, Arc::clone(&self.workload), client, &plan).await;
        let summary = RunSummary::from_records(&records, plan.warmup_secs, &self.cfg.slo);
        Ok(RunReport {
            label,
            fusion_method: method,
            rate_per_sec: trace.arrival.rate_per_sec(),
            summary,
            records: self.cfg.detailed.then_some(records),
        })
    }
}
