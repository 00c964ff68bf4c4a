//! Helpers shared by the subcommands: model resolution, timing statistics.

use std::path::PathBuf;

use a3kv_model::{find_default_model, load_model, LoadOptions, LoadedModel, MISSING_MODEL_HINT};
use anyhow::{bail, Context};

/// Loads `--model`, or the default model (the error names every place searched).
pub fn load(model: Option<PathBuf>) -> anyhow::Result<LoadedModel> {
    let path = match model {
        Some(p) => p,
        None => find_default_model()?,
    };
    eprintln!("[a3kv] model {}", path.display());
    if !path.exists() {
        bail!(
            "model {} does not exist; {MISSING_MODEL_HINT}",
            path.display()
        );
    }
    load_model(&path, &LoadOptions::default())
        .with_context(|| format!("loading model {}", path.display()))
}

/// Median of a non-empty sample (0 for an empty one).
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Peak resident memory of this process in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
