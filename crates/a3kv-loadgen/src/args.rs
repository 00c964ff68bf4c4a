//! `LoadgenArgs`: the command-line knobs of `a3kv loadgen` (a `clap::Args` struct, so the
//! `a3kv` binary embeds it as a subcommand). Validation happens in [`crate::config`].

use std::path::PathBuf;

use clap::ValueEnum;

use crate::dist::LengthDist;

/// The arrival process, as chosen on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArrivalKind {
    /// Open loop, exponential gaps at `--rate`.
    Poisson,
    /// Open loop, gamma gaps at `--rate` with shape `--burstiness` (< 1 is burstier).
    Gamma,
    /// Closed loop: `--concurrency` clients sending back to back.
    Closed,
}

/// Synthetic RAG traffic against an OpenAI-compatible server (`POST /v1/chat/completions`,
/// streamed). Documents go through the a3kv `documents` extension unless `--inline-documents`.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct LoadgenArgs {
    /// Server base URL, e.g. http://127.0.0.1:8080 (http only).
    #[arg(long)]
    pub target: String,
    /// Path of the chat-completions endpoint, appended to --target.
    #[arg(long, default_value = "/v1/chat/completions")]
    pub endpoint: String,
    /// The `model` field of each request [default: the first model the server lists at
    /// `GET /v1/models`].
    #[arg(long)]
    pub model: Option<String>,

    /// Number of distinct documents in the pool.
    #[arg(long, default_value_t = 200)]
    pub num_docs: usize,
    /// Document length in words (≈ tokens): N, LO-HI (uniform) or normal:MEAN,STD.
    #[arg(long, default_value = "512")]
    pub doc_words: LengthDist,
    /// Zipf popularity exponent over the pool (0 = uniform; ~1 = typical skew).
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Documents per request: N or LO-HI (or normal:MEAN,STD).
    #[arg(long, default_value = "4")]
    pub docs_per_request: LengthDist,
    /// Shuffle document order within each request (default: pool order).
    #[arg(long)]
    pub shuffle_docs: bool,
    /// Question length in words: N, LO-HI or normal:MEAN,STD.
    #[arg(long, default_value = "24")]
    pub question_words: LengthDist,
    /// Output tokens (`max_tokens`) per request: N, LO-HI or normal:MEAN,STD.
    #[arg(long, default_value = "64")]
    pub output_tokens: LengthDist,
    /// Send `"ignore_eos": true` so outputs run to max_tokens (vLLM-style servers).
    #[arg(long)]
    pub ignore_eos: bool,
    /// JSON corpus; every string in it is used as text
    /// [default: data/PaulGrahamEssays.json ($A3KV_DATA_DIR/PaulGrahamEssays.json if set) when
    /// present, else synthetic words].
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Use synthetic words even if a corpus file is present.
    #[arg(long, conflicts_with = "corpus")]
    pub synthetic_text: bool,

    /// Arrival process.
    #[arg(long, value_enum, default_value_t = ArrivalKind::Poisson)]
    pub arrival: ArrivalKind,
    /// Mean request rate, requests per second (poisson, gamma).
    #[arg(long, default_value_t = 4.0)]
    pub rate: f64,
    /// Gamma shape: 1 = Poisson, < 1 burstier, > 1 smoother (gamma only).
    #[arg(long, default_value_t = 1.0)]
    pub burstiness: f64,
    /// Requests in flight (closed only).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Stop sending after this many seconds.
    #[arg(long)]
    pub duration_secs: Option<f64>,
    /// Stop after sending this many requests (warm-up included).
    #[arg(long)]
    pub num_requests: Option<usize>,
    /// Requests sent in the first this-many seconds are excluded from the statistics.
    #[arg(long, default_value_t = 0.0)]
    pub warmup_secs: f64,
    /// Seed: the same seed gives the same documents, requests and arrival times.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Fusion method sent as `fusion.method` (e.g. full, a3, cacheblend).
    #[arg(long)]
    pub fusion_method: Option<String>,
    /// Mix fusion methods within one run: request i sends the (i mod N)-th of these as
    /// `fusion.method` (e.g. a3,cacheblend,full).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub method_mix: Vec<String>,
    /// Recompute ratio sent as `fusion.recompute_ratio` (0..=1).
    #[arg(long)]
    pub recompute_ratio: Option<f64>,
    /// Before the run, store every pool document through the a3kv chunk API
    /// (`PUT /v1/chunks` on --target), so the measured requests find their chunks cached.
    #[arg(long, conflicts_with = "inline_documents")]
    pub precompute: bool,
    /// Put the documents into the prompt text (servers without the documents extension).
    #[arg(long)]
    pub inline_documents: bool,
    /// Send this header (e.g. x-a3kv-route) on every request with a routing key for a
    /// chunk-aware gateway: the id of the request's first cited document. Documents are
    /// Zipf-popular and cited most popular first (unless --shuffle-docs), so requests citing a
    /// popular document hash to the replica holding its chunks. Requests without documents
    /// carry no header. With --precompute, each document is stored through a PUT carrying its
    /// own id as the key, so it lands on the replica its requests route to.
    #[arg(long, value_name = "NAME")]
    pub route_header: Option<String>,

    /// Per-request timeout (connect + whole stream), seconds.
    #[arg(long, default_value_t = 60.0)]
    pub request_timeout_secs: f64,
    /// Share of requests the client abandons on purpose (0..=1), chosen by the seed: half
    /// right after their first token, half after a random delay below
    /// --cancel-max-delay-secs. Counted as `cancelled`, not as failures.
    #[arg(long, default_value_t = 0.0)]
    pub cancel_fraction: f64,
    /// Longest delay of the time-based cancellations, seconds.
    #[arg(long, default_value_t = 2.0)]
    pub cancel_max_delay_secs: f64,
    /// After sending stops, wait at most this long for in-flight requests, seconds.
    #[arg(long, default_value_t = 30.0)]
    pub drain_secs: f64,

    /// TTFT SLO for goodput: 500ms, 0.5s, or a bare number of milliseconds.
    #[arg(long, value_parser = parse_duration_secs)]
    pub slo_ttft: Option<f64>,
    /// TPOT SLO for goodput: 50ms, 0.05s, or a bare number of milliseconds.
    #[arg(long, value_parser = parse_duration_secs)]
    pub slo_tpot: Option<f64>,
    /// Fraction of requests that must meet the SLO for a --sweep-rate point to pass.
    #[arg(long, default_value_t = 0.99)]
    pub slo_attainment: f64,

    /// Replay the same trace once per fusion method; report each metric as a ratio to the
    /// first (e.g. full,a3,cacheblend).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub compare: Vec<String>,
    /// Run at each rate (req/s) and report the highest that meets the SLO per method.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub sweep_rate: Vec<f64>,

    /// Write the report as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Include every request's record in the JSON report.
    #[arg(long)]
    pub detailed: bool,
    /// Do not draw the progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// Parses `500ms`, `0.5s` or a bare number of milliseconds into seconds.
pub fn parse_duration_secs(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        (t, 1e-3)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v * scale),
        _ => Err(format!(
            "{s:?} is not a positive duration (500ms, 0.5s or milliseconds)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadgenArgs,
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_secs("500ms"), Ok(0.5));
        assert_eq!(parse_duration_secs("2s"), Ok(2.0));
        assert_eq!(parse_duration_secs("250"), Ok(0.25));
        assert!(parse_duration_secs("-1s").is_err());
        assert!(parse_duration_secs("fast").is_err());
    }

    #[test]
    fn parses_a_full_command_line() {
        let cli = Cli::try_parse_from([
            "x",
            "--target",
            "http://127.0.0.1:9",
            "--docs-per-request",
            "2-6",
            "--arrival",
            "gamma",
            "--burstiness",
            "0.5",
            "--compare",
            "full,a3,cacheblend",
            "--sweep-rate",
            "1,2,4",
            "--slo-ttft",
            "500ms",
            "--duration-secs",
            "10",
            "--shuffle-docs",
        ])
        .unwrap();
        let a = cli.args;
        assert_eq!(a.docs_per_request, LengthDist::Uniform { lo: 2, hi: 6 });
        assert_eq!(a.arrival, ArrivalKind::Gamma);
        assert_eq!(a.compare, vec!["full", "a3", "cacheblend"]);
        assert_eq!(a.sweep_rate, vec![1.0, 2.0, 4.0]);
        assert_eq!(a.slo_ttft, Some(0.5));
        assert!(a.shuffle_docs && !a.inline_documents);
        assert!(Cli::try_parse_from(["x"]).is_err(), "--target is required");
        assert!(Cli::try_parse_from(["x", "--target", "t", "--doc-words", "0"]).is_err());
    }
}
