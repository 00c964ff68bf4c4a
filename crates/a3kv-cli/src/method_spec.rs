//! Method specs on the command line: `name[:key=value;...]` (e.g. `a3:hybrid=0.5;sink=1`,
//! `cacheblend:r=0.3`, `a3:tokens=200`) into fusion parameters, for `eval` and `generate`.
//! A spec starts from the named method's own defaults, so `a3` is the paper's plain A^3 in
//! both commands; [`spec_of`] writes parameters back as a spec (for `--help` and logs).

use a3kv_eval::MethodSpec;
use a3kv_fusion::{Budget, FusionOption, FusionParams, Method, OptionValue};
use anyhow::{bail, Context};
use serde_json::json;

/// Parses `name[:key=value;...]` into fusion parameters and the spec recorded in results.
/// Keys are fusion options by their full or short names (`r`, `tokens`, `sink`, `hybrid`,
/// `m`, `pool`, `check`); the fusion crate checks every value, as it does for HTTP.
pub fn parse(s: &str, ratio: f64) -> anyhow::Result<(MethodSpec, FusionParams)> {
    let (name, opts) = s.split_once(':').unwrap_or((s, ""));
    let method: Method = name.parse()?;
    let base = FusionParams {
        method,
        budget: Budget::Ratio(ratio),
        ..Default::default()
    };
    let mut options = Vec::new();
    for kv in opts.split(';').filter(|x| !x.is_empty()) {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("method option {kv:?} is not key=value");
        };
        let opt = FusionOption::from_name(k)?;
        let value: OptionValue = v
            .parse()
            .with_context(|| format!("method option {k}={v} (a number, or auto for r)"))?;
        options.push((opt, value));
    }
    let p = base
        .apply(None, &options)
        .with_context(|| format!("method spec {s:?}"))?;
    // The record names what differs from the method's defaults, by the options' full names.
    let mut rec = serde_json::Map::new();
    if !method.selector().is_full_prefill() {
        match p.budget {
            Budget::Ratio(r) => rec.insert("recompute_ratio".into(), json!(r)),
            Budget::Tokens(n) => rec.insert("recompute_tokens".into(), json!(n)),
            Budget::Auto(a) => {
                rec.insert("recompute_ratio".into(), json!("auto"));
                rec.insert("auto_mass".into(), json!(a.mass));
                rec.insert("auto_min_ratio".into(), json!(a.min_ratio));
                rec.insert("auto_max_ratio".into(), json!(a.max_ratio))
            }
        };
    }
    for (opt, value) in &options {
        let OptionValue::Number(value) = *value else {
            continue;
        };
        if !matches!(
            opt,
            FusionOption::RecomputeRatio
                | FusionOption::RecomputeTokens
                | FusionOption::AutoMass
                | FusionOption::AutoMinRatio
                | FusionOption::AutoMaxRatio
        ) {
            // Whole numbers as integers, as the engine's own parameters print them.
            let v = if value.fract() == 0.0 {
                json!(value as i64)
            } else {
                json!(value)
            };
            rec.insert(opt.name().into(), v);
        }
    }
    Ok((MethodSpec::new(name, serde_json::Value::Object(rec)), p))
}

/// The spec that [`parse`] (with the same budget ratio, or any ratio for a token budget)
/// turns into `p`; options equal to the method's defaults are left out. Keys the spec syntax
/// lacks (check layer, pooling width, eviction) are written as `key=value` notes in brackets.
pub fn spec_of(p: &FusionParams) -> String {
    let base = FusionParams::method(p.method);
    let mut opts = Vec::new();
    match p.budget {
        Budget::Ratio(r) if p.method != Method::Full => opts.push(format!("r={r}")),
        Budget::Tokens(n) if p.method != Method::Full => opts.push(format!("tokens={n}")),
        Budget::Auto(a) if p.method != Method::Full => {
            opts.push("r=auto".into());
            let d = a3kv_fusion::AutoBudget::default();
            if a.mass != d.mass {
                opts.push(format!("mass={}", a.mass));
            }
            if a.min_ratio != d.min_ratio {
                opts.push(format!("rmin={}", a.min_ratio));
            }
            if a.max_ratio != d.max_ratio {
                opts.push(format!("rmax={}", a.max_ratio));
            }
        }
        _ => {}
    }
    if p.sink_tokens != base.sink_tokens {
        opts.push(format!("sink={}", p.sink_tokens));
    }
    if let Some(w) = p.hybrid_weight {
        opts.push(format!("hybrid={w}"));
    }
    if p.epic_tokens != base.epic_tokens {
        opts.push(format!("m={}", p.epic_tokens));
    }
    let mut s = p.method.as_str().to_string();
    if !opts.is_empty() {
        s = format!("{s}:{}", opts.join(";"));
    }
    let mut notes = Vec::new();
    if let Some(l) = p.check_layer {
        notes.push(format!("check_layer={l}"));
    }
    if p.pooling_width != base.pooling_width {
        notes.push(format!("pooling_width={}", p.pooling_width));
    }
    if let Some(e) = p.eviction {
        notes.push(format!("eviction={e:?}"));
    }
    if !notes.is_empty() {
        s = format!("{s} [{}]", notes.join(", "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_default_round_trips_through_its_spec() {
        let d = a3kv_sched::EngineConfig::default().default_fusion;
        let spec = spec_of(&d);
        assert!(!spec.contains('['), "{spec}");
        let (_, back) = parse(&spec, 0.5).unwrap();
        assert_eq!(back, d, "{spec}");
        for p in [
            FusionParams::method(Method::Full),
            FusionParams {
                budget: Budget::Tokens(64),
                sink_tokens: 2,
                ..FusionParams::method(Method::CacheBlend)
            },
            FusionParams {
                epic_tokens: 8,
                ..FusionParams::method(Method::Epic)
            },
        ] {
            assert_eq!(parse(&spec_of(&p), 0.15).unwrap().1, p, "{}", spec_of(&p));
        }
    }

    #[test]
    fn options_set_the_parameters_and_the_record() {
        let (spec, p) = parse("a3:hybrid=0.5;sink=1", 0.15).unwrap();
        assert_eq!((p.method, p.sink_tokens), (Method::A3, 1));
        assert_eq!(p.hybrid_weight, Some(0.5));
        assert_eq!(p.budget, Budget::Ratio(0.15));
        assert_eq!(spec.params["sink_tokens"], 1);
        assert_eq!(spec.params["recompute_ratio"], 0.15);
        let (spec, p) = parse("cacheblend:tokens=64", 0.15).unwrap();
        assert_eq!(p.budget, Budget::Tokens(64));
        assert!(spec.params.get("recompute_ratio").is_none());
        assert_eq!(spec.params["recompute_tokens"], 64);
        let (_, p) = parse("full", 0.15).unwrap();
        assert_eq!(p.method, Method::Full);
        let (spec, p) = parse("a3:hybrid=0.5;r=auto;mass=0.7;rmax=0.3", 0.15).unwrap();
        let a = a3kv_fusion::AutoBudget {
            mass: 0.7,
            max_ratio: 0.3,
            ..Default::default()
        };
        assert_eq!(p.budget, Budget::Auto(a));
        assert_eq!(spec.params["recompute_ratio"], "auto");
        assert_eq!(spec.params["auto_mass"], 0.7);
        assert_eq!(parse(&spec_of(&p), 0.15).unwrap().1, p, "{}", spec_of(&p));
    }

    #[test]
    fn every_registered_method_is_a_spec() {
        // The issue #16 selectors are found by name like the paper's methods, with the
        // options every scoring method takes.
        for m in Method::all() {
            let (spec, p) = parse(m.as_str(), 0.15).unwrap();
            assert_eq!((p.method, spec.name.as_str()), (m, m.as_str()));
            assert_eq!(parse(&spec_of(&p), 0.15).unwrap().1, p, "{}", spec_of(&p));
        }
        for name in [
            "floor",
            "product",
            "window",
            "progressive",
            "rank",
            "kvdev",
            "kdev",
            "hkdev",
            "hkvdev",
        ] {
            let (_, p) = parse(&format!("{name}:sink=1;r=0.2"), 0.15).unwrap();
            assert_eq!((p.method.as_str(), p.sink_tokens), (name, 1));
            assert_eq!(p.budget, Budget::Ratio(0.2));
            assert!(
                parse(&format!("{name}:hybrid=0.5"), 0.15).is_err(),
                "{name}"
            );
        }
    }

    #[test]
    fn bad_options_are_refused() {
        for bad in [
            "magic",
            "a3:sink",
            "a3:sink=-1",
            "a3:tokens=1.5",
            "a3:x=1",
            "a3:r=abc",
            "a3:r=2",
            "epic:hybrid=0.5",
            "a3:r=0.1;tokens=5",
            "a3:mass=0.5",
            "a3:r=auto;mass=0",
            "a3:r=auto;rmin=0.6;rmax=0.5",
            "a3:sink=auto",
        ] {
            assert!(parse(bad, 0.15).is_err(), "{bad}");
        }
    }
}
