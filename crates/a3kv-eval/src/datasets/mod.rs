//! Datasets: `DatasetSpec` (parsed from `hotpotqa`, `needle[:LEN,..]`, `ruler[:LEN,..]`,
//! `jsonl:PATH`), `load`, which turns a spec into `EvalItem`s, and `data_hash`, which
//! fingerprints the items for the results record.

pub mod hotpotqa;
pub mod jsonl;
pub mod needle;
pub mod ruler;
pub mod text;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::error::EvalError;
use crate::item::EvalItem;
pub use needle::NeedleConfig;
pub use ruler::{RulerConfig, RulerTask};
pub use text::CountTokens;

/// Which data set to evaluate on.
#[derive(Debug, Clone, PartialEq)]
pub enum DatasetSpec {
    /// HotpotQA dev distractor (`data_dir/hotpotqa.json`), in file order.
    HotpotQa,
    /// Needle in a haystack over `data_dir/PaulGrahamEssays.json`.
    Needle(NeedleConfig),
    /// RULER tasks generated from the seed (needs no data files).
    Ruler(RulerConfig),
    /// A JSONL file (path relative to the working directory, not to `data_dir`).
    Jsonl(PathBuf),
}

fn parse_lengths(spec: &str, list: &str) -> Result<Vec<usize>, EvalError> {
    let invalid = |message: String| EvalError::InvalidSpec {
        spec: spec.to_string(),
        message,
    };
    let lengths = list
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| invalid(format!("{s:?} is not a positive token count")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(lengths)
}

impl FromStr for DatasetSpec {
    type Err = EvalError;

    /// Parses `hotpotqa`, `needle`, `needle:512,1024`, `needle:512,1024/5` (5 depths), `ruler:1024/2` (2 items per task), `ruler`, `ruler:1024,4096`,
    /// `ruler:1024/10@vt,niah_single` (only those tasks; each item is the one the full task
    /// list generates for the same seed, length and sample index) or
    /// `jsonl:PATH`. Errors: `UnknownDataset` for other names, `InvalidSpec` for bad lengths
    /// or an empty path.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, arg) = match s.split_once(':') {
            Some((name, arg)) => (name, Some(arg)),
            None => (s, None),
        };
        match (name, arg) {
            ("hotpotqa", None) => Ok(DatasetSpec::HotpotQa),
            ("needle", None) => Ok(DatasetSpec::Needle(NeedleConfig::default())),
            ("needle", Some(arg)) => {
                // `LEN,../DEPTHS`: DEPTHS evenly spaced depths from 0% to 100% (default 10).
                let (list, depths) = split_count(s, arg, "depth count", 2)?;
                let mut cfg = NeedleConfig {
                    lengths_tokens: parse_lengths(s, list)?,
                    ..NeedleConfig::default()
                };
                if let Some(n) = depths {
                    cfg.depth_percents =
                        (0..n).map(|i| i as f64 * 100.0 / (n - 1) as f64).collect();
                }
                Ok(DatasetSpec::Needle(cfg))
            }
            ("ruler", None) => Ok(DatasetSpec::Ruler(RulerConfig::default())),
            ("ruler", Some(arg)) => {
                // `LEN,../N@TASK,..`: N items per (task, length) (default 5), only TASKs.
                let (arg, tasks) = match arg.split_once('@') {
                    Some((arg, tasks)) => (arg, Some(parse_ruler_tasks(s, tasks)?)),
                    None => (arg, None),
                };
                let (list, samples) = split_count(s, arg, "samples per task", 1)?;
                let mut cfg = RulerConfig {
                    lengths_tokens: parse_lengths(s, list)?,
                    ..RulerConfig::default()
                };
                if let Some(tasks) = tasks {
                    cfg.tasks = tasks;
                }
                if let Some(n) = samples {
                    cfg.samples_per_task = n;
                }
                Ok(DatasetSpec::Ruler(cfg))
            }
            ("jsonl", Some(path)) if !path.is_empty() => Ok(DatasetSpec::Jsonl(path.into())),
            ("jsonl", _) => Err(EvalError::InvalidSpec {
                spec: s.to_string(),
                message: "expected jsonl:PATH".into(),
            }),
            ("hotpotqa", Some(_)) => Err(EvalError::InvalidSpec {
                spec: s.to_string(),
                message: "hotpotqa takes no parameters".into(),
            }),
            _ => Err(EvalError::UnknownDataset(s.to_string())),
        }
    }
}

/// Parses a comma-separated list of RULER task names (at least one, no repeats).
fn parse_ruler_tasks(spec: &str, list: &str) -> Result<Vec<RulerTask>, EvalError> {
    let mut tasks = Vec::new();
    for name in list.split(',').map(str::trim) {
        let Some(task) = RulerTask::from_name(name) else {
            let known: Vec<&str> = RulerTask::ALL.iter().map(|t| t.name()).collect();
            return Err(EvalError::InvalidSpec {
                spec: spec.to_string(),
                message: format!("unknown RULER task {name:?}; known: {}", known.join(", ")),
            });
        };
        if tasks.contains(&task) {
            return Err(EvalError::InvalidSpec {
                spec: spec.to_string(),
                message: format!("RULER task {name:?} named twice"),
            });
        }
        tasks.push(task);
    }
    Ok(tasks)
}

/// Splits `LIST/N` into the list and `N` (at least `min`); `LIST` alone gives `None`.
fn split_count<'a>(
    spec: &str,
    arg: &'a str,
    what: &str,
    min: usize,
) -> Result<(&'a str, Option<usize>), EvalError> {
    let Some((list, n)) = arg.split_once('/') else {
        return Ok((arg, None));
    };
    match n.trim().parse::<usize>() {
        Ok(v) if v >= min => Ok((list, Some(v))),
        _ => Err(EvalError::InvalidSpec {
            spec: spec.to_string(),
            message: format!("{what} {n:?}: expected an integer >= {min}"),
        }),
    }
}

impl fmt::Display for DatasetSpec {
    /// The canonical spec string (parses back to an equal spec for the default configs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        match self {
            DatasetSpec::HotpotQa => write!(f, "hotpotqa"),
            DatasetSpec::Needle(cfg) => {
                write!(f, "needle:{}", join(&cfg.lengths_tokens))?;
                if cfg.depth_percents != NeedleConfig::default().depth_percents {
                    write!(f, "/{}", cfg.depth_percents.len())?;
                }
                Ok(())
            }
            DatasetSpec::Ruler(cfg) => {
                write!(f, "ruler:{}", join(&cfg.lengths_tokens))?;
                if cfg.samples_per_task != RulerConfig::default().samples_per_task {
                    write!(f, "/{}", cfg.samples_per_task)?;
                }
                if cfg.tasks != RulerTask::ALL {
                    let names: Vec<&str> = cfg.tasks.iter().map(|t| t.name()).collect();
                    write!(f, "@{}", names.join(","))?;
                }
                Ok(())
            }
            DatasetSpec::Jsonl(path) => write!(f, "jsonl:{}", path.display()),
        }
    }
}

/// Loads or generates the items of `spec`: at most `limit` of them, the same ones for the
/// same seed and data. `count_tokens` measures text in the model's tokens (needle and RULER
/// lengths are in those tokens).
///
/// Errors: `DataMissing` (run `scripts/fetch-data.sh`) when a data file is absent, `Json`,
/// `JsonlLine`, `MissingAnswers` for malformed data, `Generation` for impossible settings.
pub fn load(
    spec: &DatasetSpec,
    data_dir: &Path,
    limit: Option<usize>,
    seed: u64,
    count_tokens: CountTokens<'_>,
) -> Result<Vec<EvalItem>, EvalError> {
    let mut items = match spec {
        DatasetSpec::HotpotQa => hotpotqa::load(data_dir, limit)?,
        DatasetSpec::Needle(cfg) => needle::load(data_dir, cfg, count_tokens)?,
        DatasetSpec::Ruler(cfg) => ruler::generate(cfg, seed, limit, count_tokens)?,
        DatasetSpec::Jsonl(path) => jsonl::load(path, limit)?,
    };
    if let Some(limit) = limit {
        items.truncate(limit);
    }
    Ok(items)
}

/// Hex SHA-256 over the items' canonical JSON, one item per line, in order: equal hashes mean
/// the same questions, documents, answers, scorers and tags.
pub fn data_hash(items: &[EvalItem]) -> Result<String, EvalError> {
    let mut hasher = Sha256::new();
    for item in items {
        hasher.update(serde_json::to_vec(item)?);
        hasher.update(b"\n");
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::text::whitespace_tokens;
    use super::*;

    #[test]
    fn specs_parse_and_print() {
        assert_eq!(
            "hotpotqa".parse::<DatasetSpec>().unwrap(),
            DatasetSpec::HotpotQa
        );
        let needle: DatasetSpec = "needle:512, 1024".parse().unwrap();
        match &needle {
            DatasetSpec::Needle(cfg) => assert_eq!(cfg.lengths_tokens, vec![512, 1024]),
            other => panic!("{other:?}"),
        }
        assert_eq!(needle.to_string(), "needle:512,1024");
        let five: DatasetSpec = "needle:512/5".parse().unwrap();
        match &five {
            DatasetSpec::Needle(cfg) => {
                assert_eq!(cfg.depth_percents, vec![0.0, 25.0, 50.0, 75.0, 100.0]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(five.to_string(), "needle:512/5");
        assert!("needle:512/1".parse::<DatasetSpec>().is_err());
        assert!("needle:512/x".parse::<DatasetSpec>().is_err());
        let two: DatasetSpec = "ruler:1024/2".parse().unwrap();
        match &two {
            DatasetSpec::Ruler(cfg) => assert_eq!(cfg.samples_per_task, 2),
            other => panic!("{other:?}"),
        }
        assert_eq!(two.to_string(), "ruler:1024/2");
        assert!("ruler:1024/0".parse::<DatasetSpec>().is_err());
        let vt: DatasetSpec = "ruler:1024/10@vt,niah_single".parse().unwrap();
        match &vt {
            DatasetSpec::Ruler(cfg) => {
                assert_eq!(cfg.samples_per_task, 10);
                assert_eq!(
                    cfg.tasks,
                    vec![RulerTask::VariableTracking, RulerTask::NiahSingle]
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(vt.to_string(), "ruler:1024/10@vt,niah_single");
        assert_eq!(
            "ruler:1024@cwe".parse::<DatasetSpec>().unwrap().to_string(),
            "ruler:1024@cwe"
        );
        for bad in ["ruler:1024/2@", "ruler:1024/2@vt,vt", "ruler:1024@qa"] {
            let err = bad.parse::<DatasetSpec>().unwrap_err();
            assert_eq!(err.kind(), "invalid_spec", "{bad}");
        }
        assert!("ruler:1024@qa"
            .parse::<DatasetSpec>()
            .unwrap_err()
            .to_string()
            .contains("niah_single"));
        let ruler: DatasetSpec = "ruler".parse().unwrap();
        assert_eq!(ruler.to_string().parse::<DatasetSpec>().unwrap(), ruler);
        assert_eq!(
            "jsonl:a/b.jsonl".parse::<DatasetSpec>().unwrap(),
            DatasetSpec::Jsonl("a/b.jsonl".into())
        );
    }

    #[test]
    fn bad_specs_have_clear_errors() {
        let err = "squadv3".parse::<DatasetSpec>().unwrap_err();
        assert_eq!(err.kind(), "unknown_dataset");
        assert!(err.to_string().contains("hotpotqa"), "{err}");
        assert_eq!(
            "jsonl:".parse::<DatasetSpec>().unwrap_err().kind(),
            "invalid_spec"
        );
        assert_eq!(
            "jsonl".parse::<DatasetSpec>().unwrap_err().kind(),
            "invalid_spec"
        );
        let err = "needle:512,x".parse::<DatasetSpec>().unwrap_err();
        assert!(err.to_string().contains("\"x\""), "{err}");
        assert!("ruler:0".parse::<DatasetSpec>().is_err());
    }

    #[test]
    fn load_is_deterministic_and_hash_tracks_content() {
        let dir = tempfile::tempdir().unwrap();
        let count = whitespace_tokens;
        let spec: DatasetSpec = "ruler:400".parse().unwrap();
        let a = load(&spec, dir.path(), Some(9), 11, &count).unwrap();
        let b = load(&spec, dir.path(), Some(9), 11, &count).unwrap();
        assert_eq!(a.len(), 9);
        assert_eq!(a, b);
        assert_eq!(data_hash(&a).unwrap(), data_hash(&b).unwrap());
        assert_eq!(data_hash(&a).unwrap().len(), 64);
        let c = load(&spec, dir.path(), Some(9), 12, &count).unwrap();
        assert_ne!(data_hash(&a).unwrap(), data_hash(&c).unwrap());
        // The hash of nothing is SHA-256 of the empty string.
        assert_eq!(
            data_hash(&[]).unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn missing_data_points_at_the_fetch_script() {
        let dir = tempfile::tempdir().unwrap();
        let count = whitespace_tokens;
        for spec in ["hotpotqa", "needle"] {
            let err = load(&spec.parse().unwrap(), dir.path(), None, 0, &count).unwrap_err();
            assert!(err.to_string().contains("scripts/fetch-data.sh"), "{err}");
        }
    }
}
