//! `ValidConfig`: [`LoadgenArgs`] checked and turned into the typed pieces the run uses
//! (workload spec, arrival process, stop rule, client config, run plan, SLO, mode). Every
//! error names the flag at fault.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::args::{ArrivalKind, LoadgenArgs};
use crate::arrival::ArrivalProcess;
use crate::cancel::CancelPlan;
use crate::client::ClientConfig;
use crate::route::RouteHeader;
use crate::runner::RunPlan;
use crate::stats::Slo;
use crate::trace::StopRule;
use crate::workload::WorkloadSpec;
use crate::LoadgenError;

/// What the run does.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mode {
    /// One run.
    Single,
    /// The same trace once per method (`--compare`).
    Compare {
        /// Methods, the first is the baseline of the ratios.
        methods: Vec<String>,
    },
    /// Each rate per method (`--sweep-rate`), ascending.
    Sweep {
        /// Rates, requests per second, ascending.
        rates: Vec<f64>,
        /// Methods (`None`: no `fusion.method` sent); the first is the baseline.
        methods: Vec<Option<String>>,
    },
}

/// Validated configuration of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidConfig {
    /// Request shape; `fusion_method` is overridden per method in compare/sweep.
    pub client: ClientConfig,
    /// The workload knobs.
    pub workload: WorkloadSpec,
    /// The arrival process (the rate is overridden per point in a sweep).
    pub arrival: ArrivalProcess,
    /// When sending stops.
    pub stop: StopRule,
    /// Warm-up, drain and progress settings.
    pub plan: RunPlan,
    /// SLO for goodput.
    pub slo: Slo,
    /// Fraction of requests meeting the SLO for a sweep point to pass.
    pub slo_attainment: f64,
    /// Explicit corpus file.
    pub corpus: Option<PathBuf>,
    /// Force synthetic text.
    pub synthetic_text: bool,
    /// Single, compare or sweep.
    pub mode: Mode,
    /// JSON report path.
    pub out: Option<PathBuf>,
    /// Keep per-request records in the report.
    pub detailed: bool,
    /// `GET /v1/models` on the target, to find the model when `--model` is not given.
    pub models_url: String,
    /// `--precompute`: the chunk API URL the pool is stored through before the run.
    pub precompute_url: Option<String>,
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, LoadgenError> {
    Err(LoadgenError::InvalidArgs(msg.into()))
}

fn positive_secs(flag: &str, v: f64) -> Result<f64, LoadgenError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        invalid(format!("{flag} must be a finite number > 0, got {v}"))
    }
}

impl ValidConfig {
    /// Checks `args`. Errors: [`LoadgenError::InvalidArgs`] naming the flag.
    pub fn from_args(args: &LoadgenArgs) -> Result<Self, LoadgenError> {
        let request_timeout = positive_secs("--request-timeout-secs", args.request_timeout_secs)?;
        if !(args.drain_secs.is_finite() && args.drain_secs >= 0.0) {
            return invalid("--drain-secs must be a finite number >= 0");
        }
        if !(args.warmup_secs.is_finite() && args.warmup_secs >= 0.0) {
            return invalid("--warmup-secs must be a finite number >= 0");
        }
        if let Some(d) = args.duration_secs {
            positive_secs("--duration-secs", d)?;
            if args.warmup_secs >= d {
                return invalid("--warmup-secs must be shorter than --duration-secs");
            }
        }
        if let Some(r) = args.recompute_ratio {
            if !(0.0..=1.0).contains(&r) {
                return invalid(format!("--recompute-ratio must be in 0..=1, got {r}"));
            }
        }
        if !(0.0..=1.0).contains(&args.cancel_fraction) {
            return invalid(format!(
                "--cancel-fraction must be in 0..=1, got {}",
                args.cancel_fraction
            ));
        }
        if !(args.cancel_max_delay_secs.is_finite() && args.cancel_max_delay_secs >= 0.0) {
            return invalid("--cancel-max-delay-secs must be a finite number >= 0");
        }
        let method_mix = method_mix(args)?;
        if !(args.slo_attainment > 0.0 && args.slo_attainment <= 1.0) {
            return invalid("--slo-attainment must be in (0, 1]");
        }
        let target = args.target.trim_end_matches('/');
        if !target.starts_with("http://") {
            return invalid(format!(
                "--target must start with http://, got {:?}",
                args.target
            ));
        }
        let endpoint = format!("{target}/{}", args.endpoint.trim_start_matches('/'));
        let arrival = match args.arrival {
            ArrivalKind::Poisson => ArrivalProcess::Poisson {
                rate_per_sec: args.rate,
            },
            ArrivalKind::Gamma => ArrivalProcess::Gamma {
                rate_per_sec: args.rate,
                burstiness: args.burstiness,
            },
            ArrivalKind::Closed => ArrivalProcess::ClosedLoop {
                concurrency: args.concurrency,
            },
        };
        arrival.validate()?;
        let stop = StopRule {
            max_requests: args.num_requests,
            duration_secs: args.duration_secs,
        };
        stop.validate()?;
        let slo = Slo {
            ttft_secs: args.slo_ttft,
            tpot_secs: args.slo_tpot,
        };
        let mode = mode(args, &arrival, &slo)?;
        let precompute_url = args.precompute.then(|| format!("{target}/v1/chunks"));
        let route_header = match &args.route_header {
            Some(name) => Some(RouteHeader::parse(name)?.name().as_str().to_string()),
            None => None,
        };
        Ok(Self {
            precompute_url,
            models_url: format!("{target}/v1/models"),
            client: ClientConfig {
                endpoint,
                model: args.model.clone().unwrap_or_default(),
                request_timeout: Duration::from_secs_f64(request_timeout),
                inline_documents: args.inline_documents,
                fusion_method: args.fusion_method.clone(),
                recompute_ratio: args.recompute_ratio,
                ignore_eos: args.ignore_eos,
                method_mix,
                cancel: CancelPlan {
                    fraction: args.cancel_fraction,
                    max_delay_secs: args.cancel_max_delay_secs,
                    seed: args.seed,
                },
                route_header,
            },
            workload: WorkloadSpec {
                num_docs: args.num_docs,
                doc_words: args.doc_words,
                zipf_exponent: args.zipf,
                docs_per_request: args.docs_per_request,
                shuffle_docs: args.shuffle_docs,
                question_words: args.question_words,
                output_tokens: args.output_tokens,
                seed: args.seed,
            },
            arrival,
            stop,
            plan: RunPlan {
                warmup_secs: args.warmup_secs,
                drain_secs: args.drain_secs,
                show_progress: !args.no_progress,
                label: String::new(),
            },
            slo,
            slo_attainment: args.slo_attainment,
            corpus: args.corpus.clone(),
            synthetic_text: args.synthetic_text,
            mode,
            out: args.out.clone(),
            detailed: args.detailed,
        })
    }
}

/// `--method-mix`: trimmed names; it replaces `--fusion-method` and `--compare`.
fn method_mix(args: &LoadgenArgs) -> Result<Vec<String>, LoadgenError> {
    let mix: Vec<String> = args
        .method_mix
        .iter()
        .map(|m| m.trim().to_string())
        .collect();
    if mix.is_empty() {
        return Ok(mix);
    }
    if mix.iter().any(String::is_empty) {
        return invalid("--method-mix has an empty method name");
    }
    if args.fusion_method.is_some() || !args.compare.is_empty() || args.inline_documents {
        return invalid(
            "--method-mix conflicts with --fusion-method, --compare and --inline-documents",
        );
    }
    Ok(mix)
}

fn mode(args: &LoadgenArgs, arrival: &ArrivalProcess, slo: &Slo) -> Result<Mode, LoadgenError> {
    let methods: Vec<String> = args.compare.iter().map(|m| m.trim().to_string()).collect();
    if methods.iter().any(String::is_empty) {
        return invalid("--compare has an empty method name");
    }
    if !methods.is_empty() {
        if args.inline_documents {
            return invalid("--compare needs the documents extension; drop --inline-documents");
        }
        if args.fusion_method.is_some() {
            return invalid(
                "--compare and --fusion-method conflict: list the methods in --compare",
            );
        }
    }
    if args.sweep_rate.is_empty() {
        return Ok(if methods.is_empty() {
            Mode::Single
        } else {
            Mode::Compare { methods }
        });
    }
    if matches!(arrival, ArrivalProcess::ClosedLoop { .. }) {
        return invalid("--sweep-rate needs an open-loop --arrival (poisson or gamma)");
    }
    if !slo.is_set() {
        return invalid("--sweep-rate needs --slo-ttft and/or --slo-tpot");
    }
    let mut rates = args.sweep_rate.clone();
    for &r in &rates {
        positive_secs("--sweep-rate", r)?;
    }
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    let methods = if methods.is_empty() {
        vec![args.fusion_method.clone()]
    } else {
        methods.into_iter().map(Some).collect()
    };
    Ok(Mode::Sweep { rates, methods })
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

    fn parse(extra: &[&str]) -> Result<ValidConfig, LoadgenError> {
        let mut argv = vec![
            "x",
            "--target",
            "http://127.0.0.1:9/",
            "--duration-secs",
            "5",
        ];
        argv.extend_from_slice(extra);
        ValidConfig::from_args(&Cli::try_parse_from(argv).unwrap().args)
    }

    #[test]
    fn builds_endpoint_and_modes() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.client.endpoint, "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(c.mode, Mode::Single);
        let c = parse(&["--compare", "full,a3"]).unwrap();
        assert_eq!(
            c.mode,
            Mode::Compare {
                methods: vec!["full".into(), "a3".into()]
            }
        );
        let c = parse(&[
            "--sweep-rate",
            "4,1,2",
            "--slo-ttft",
            "1s",
            "--compare",
            "full,a3",
        ])
        .unwrap();
        match c.mode {
            Mode::Sweep { rates, methods } => {
                assert_eq!(rates, vec![1.0, 2.0, 4.0]);
                assert_eq!(methods.len(), 2);
            }
            m => panic!("{m:?}"),
        }
    }

    #[test]
    fn cancel_and_method_mix() {
        let c = parse(&[
            "--cancel-fraction",
            "0.25",
            "--method-mix",
            "a3, cacheblend,full",
            "--seed",
            "3",
        ])
        .unwrap();
        assert_eq!(c.client.method_mix, vec!["a3", "cacheblend", "full"]);
        assert_eq!(
            c.client.cancel,
            CancelPlan {
                fraction: 0.25,
                max_delay_secs: 2.0,
                seed: 3
            }
        );
        assert_eq!(parse(&[]).unwrap().client.cancel.fraction, 0.0);
    }

    #[test]
    fn route_header_is_validated_and_lower_cased() {
        assert_eq!(parse(&[]).unwrap().client.route_header, None);
        let c = parse(&["--route-header", "X-A3KV-Route"]).unwrap();
        assert_eq!(c.client.route_header.as_deref(), Some("x-a3kv-route"));
        let e = parse(&["--route-header", "no spaces"]).unwrap_err();
        assert!(e.to_string().contains("--route-header"), "{e}");
    }

    #[test]
    fn rejects_contradictions() {
        for bad in [
            &["--sweep-rate", "1,2"][..],
            &[
                "--sweep-rate",
                "1",
                "--slo-ttft",
                "1s",
                "--arrival",
                "closed",
            ],
            &["--sweep-rate", "0", "--slo-ttft", "1s"],
            &["--compare", "full,a3", "--inline-documents"],
            &["--compare", "full,a3", "--fusion-method", "a3"],
            &["--recompute-ratio", "1.5"],
            &["--warmup-secs", "9"],
            &["--request-timeout-secs", "0"],
            &["--rate", "0"],
            &["--arrival", "closed", "--concurrency", "0"],
            &["--cancel-fraction", "1.5"],
            &["--cancel-fraction", "0.2", "--cancel-max-delay-secs", "NaN"],
            &["--method-mix", "a3,full", "--fusion-method", "a3"],
            &["--method-mix", "a3,full", "--compare", "a3,full"],
            &["--method-mix", "a3,,full"],
        ] {
            let e = parse(bad).unwrap_err();
            assert!(matches!(e, LoadgenError::InvalidArgs(_)), "{bad:?}: {e}");
        }
        let no_stop = Cli::try_parse_from(["x", "--target", "http://h"])
            .unwrap()
            .args;
        assert!(ValidConfig::from_args(&no_stop).is_err());
        let https =
            Cli::try_parse_from(["x", "--target", "https://h", "--num-requests", "1"]).unwrap();
        assert!(ValidConfig::from_args(&https.args).is_err());
    }
}
