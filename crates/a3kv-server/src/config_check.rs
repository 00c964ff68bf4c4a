//! Range checks of the effective configuration; every error names the key and the allowed
//! range.

use a3kv_fusion::Budget;

use crate::config::ServerConfig;
use crate::error::ConfigError;

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<(), ConfigError> {
    if v < lo || v > hi {
        return Err(ConfigError::Invalid {
            key: key.into(),
            value: v.to_string(),
            allowed: format!("{lo}..={hi}"),
        });
    }
    Ok(())
}

fn one_of(key: &str, v: &str, allowed: &[&str]) -> Result<(), ConfigError> {
    if allowed.contains(&v) {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        key: key.into(),
        value: format!("{v:?}"),
        allowed: format!("one of {}", allowed.join(", ")),
    })
}

fn buckets(key: &str, b: &[f64], lo: f64, hi: f64, must: Option<f64>) -> Result<(), ConfigError> {
    let bad = |why: &str| ConfigError::Invalid {
        key: key.into(),
        value: format!("{b:?}"),
        allowed: why.into(),
    };
    if b.is_empty() || b.len() > 64 {
        return Err(bad("1 to 64 bucket bounds"));
    }
    if b.iter().any(|x| !x.is_finite() || *x < lo || *x > hi) {
        return Err(bad(&format!("finite bounds in [{lo}, {hi}]")));
    }
    if b.windows(2).any(|w| w[0] >= w[1]) {
        return Err(bad("strictly increasing bounds"));
    }
    if let Some(m) = must {
        if !b.contains(&m) {
            return Err(bad(&format!("bounds including {m}")));
        }
    }
    Ok(())
}

/// Checks every range of `cfg`.
pub fn validate(cfg: &ServerConfig) -> Result<(), ConfigError> {
    cfg.listen_addr()?;
    let m = &cfg.model;
    if !(m.device == "cpu"
        || m.device == "cuda"
        || m.device
            .strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<usize>().is_ok()))
    {
        return Err(ConfigError::Invalid {
            key: "model.device".into(),
            value: format!("{:?}", m.device),
            allowed: "cpu, cuda or cuda:N".into(),
        });
    }
    one_of("model.dtype", &m.dtype, &["f32", "f16", "bf16"])?;
    one_of(
        "model.decode_weights",
        &m.decode_weights,
        &["quantized", "f32"],
    )?;
    let e = &cfg.engine;
    if e.device.parse::<a3kv_cuda::DeviceRequest>().is_err() {
        return Err(ConfigError::Invalid {
            key: "engine.device".into(),
            value: format!("{:?}", e.device),
            allowed: "cpu, auto, cuda or cuda:N".into(),
        });
    }
    range("engine.max_waiting", e.max_waiting, 1, 1_000_000)?;
    range("engine.max_running", e.max_running, 1, 4096)?;
    range("engine.max_batch_tokens", e.max_batch_tokens, 1, 1 << 20)?;
    range("engine.batch_wait_ms", e.batch_wait_ms, 0, 10_000)?;
    range("engine.max_prompt_tokens", e.max_prompt_tokens, 1, 1 << 20)?;
    range("engine.max_new_tokens", e.max_new_tokens, 1, 1 << 20)?;
    range("engine.max_documents", e.max_documents, 1, 4096)?;
    range("engine.chunk_tokens", e.chunk_tokens, 1, 1 << 20)?;
    range("engine.compute_threads", e.compute_threads, 0, 1024)?;
    range(
        "engine.store.memory_budget_bytes",
        e.store.memory_budget_bytes,
        1 << 20,
        1 << 50,
    )?;
    if let Some(d) = &e.store.disk {
        range(
            "engine.store.disk.budget_bytes",
            d.budget_bytes,
            1 << 20,
            1 << 50,
        )?;
    }
    let g = &e.fusion_gate;
    for (key, v) in [
        ("engine.fusion_gate.max_kl", g.max_kl),
        ("engine.fusion_gate.max_logit_diff", g.max_logit_diff),
    ] {
        if !v.is_finite() {
            return Err(ConfigError::Invalid {
                key: key.into(),
                value: v.to_string(),
                allowed: "0.0..=100.0".into(),
            });
        }
        range(key, v, 0.0, 100.0)?;
    }
    let sh = &e.fusion_shadow;
    for (key, v, lo, hi) in [
        ("engine.fusion_shadow.rate", sh.rate, 0.0, 1.0),
        ("engine.fusion_shadow.max_kl", sh.max_kl, 1e-6, 100.0),
        ("engine.fusion_shadow.ratio_step", sh.ratio_step, 1e-6, 1.0),
    ] {
        if !v.is_finite() {
            return Err(ConfigError::Invalid {
                key: key.into(),
                value: v.to_string(),
                allowed: format!("{lo}..={hi}"),
            });
        }
        range(key, v, lo, hi)?;
    }
    range("engine.fusion_shadow.window", sh.window, 1, 100_000)?;
    range("engine.fusion_shadow.max_pending", sh.max_pending, 1, 1024)?;
    range("engine.fusion_shadow.max_steps", sh.max_steps, 0, 100)?;
    if let Some(r) = &e.store.remote {
        let scheme = r.url.split("://").next().unwrap_or_default();
        one_of(
            "engine.store.remote.url (scheme)",
            scheme,
            &["redis", "rediss", "redis+unix", "unix"],
        )?;
        range("engine.store.remote.timeout_ms", r.timeout_ms, 1, 600_000)?;
        range("engine.store.remote.ttl_secs", r.ttl_secs, 0, 1 << 40)?;
        range(
            "engine.store.remote.max_value_bytes",
            r.max_value_bytes,
            1 << 10,
            512 << 20,
        )?;
        range("engine.store.remote.lease_ms", r.lease_ms, 1, 3_600_000)?;
        range(
            "engine.store.remote.lease_wait_ms",
            r.lease_wait_ms,
            0,
            3_600_000,
        )?;
        range(
            "engine.store.remote.breaker_failures",
            r.breaker_failures,
            1,
            1_000_000,
        )?;
        range(
            "engine.store.remote.breaker_cooldown_ms",
            r.breaker_cooldown_ms,
            1,
            3_600_000,
        )?;
        range("engine.store.remote.pool_size", r.pool_size, 0, 1024)?;
    }
    let f = &e.default_fusion;
    match f.budget {
        Budget::Ratio(r) if !(0.0..=1.0).contains(&r) => {
            return Err(ConfigError::Invalid {
                key: "engine.default_fusion.budget.ratio".into(),
                value: r.to_string(),
                allowed: "0.0..=1.0".into(),
            })
        }
        Budget::Auto(a) => {
            if let Err(a3kv_fusion::FusionError::InvalidOption { option, message }) = a.check() {
                // auto_mass -> engine.default_fusion.budget.auto.mass, ...
                let field = option.trim_start_matches("auto_");
                let value = match field {
                    "mass" => a.mass,
                    "min_ratio" => a.min_ratio,
                    _ => a.max_ratio,
                };
                return Err(ConfigError::Invalid {
                    key: format!("engine.default_fusion.budget.auto.{field}"),
                    value: value.to_string(),
                    allowed: message,
                });
            }
        }
        _ => {}
    }
    range(
        "engine.default_fusion.pooling_width",
        f.pooling_width,
        1,
        1024,
    )?;
    range(
        "engine.default_fusion.epic_tokens",
        f.epic_tokens,
        0,
        1 << 20,
    )?;
    range(
        "engine.default_fusion.sink_tokens",
        f.sink_tokens,
        0,
        1 << 20,
    )?;
    if let Some(w) = f.hybrid_weight {
        range("engine.default_fusion.hybrid_weight", w, 0.0, 1.0)?;
    }
    let l = &cfg.limits;
    range("limits.max_body_bytes", l.max_body_bytes, 1024, 1 << 30)?;
    range(
        "limits.max_concurrent_requests",
        l.max_concurrent_requests,
        1,
        1_000_000,
    )?;
    range(
        "limits.request_timeout_secs",
        l.request_timeout_secs,
        1,
        86_400,
    )?;
    range(
        "limits.default_max_tokens",
        l.default_max_tokens,
        1,
        e.max_new_tokens,
    )?;
    range("limits.retry_after_secs", l.retry_after_secs, 1, 3600)?;
    buckets(
        "metrics.latency_buckets_secs",
        &cfg.metrics.latency_buckets_secs,
        1e-6,
        1e6,
        Some(2.0),
    )?;
    buckets(
        "metrics.ratio_buckets",
        &cfg.metrics.ratio_buckets,
        0.0,
        1.0,
        None,
    )?;
    buckets(
        "metrics.size_buckets",
        &cfg.metrics.size_buckets,
        0.0,
        1e9,
        None,
    )?;
    range("shutdown.drain_secs", cfg.shutdown.drain_secs, 0, 3600)?;
    one_of("log.format", &cfg.log.format, &["text", "json"])?;
    if tracing_subscriber::EnvFilter::try_new(&cfg.log.level).is_err() {
        return Err(ConfigError::Invalid {
            key: "log.level".into(),
            value: format!("{:?}", cfg.log.level),
            allowed: "a tracing filter such as info, debug or a3kv_server=debug,info".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_names_key_and_range() {
        let mut c = ServerConfig::default();
        c.limits.max_concurrent_requests = 0;
        let e = validate(&c).unwrap_err().to_string();
        assert!(
            e.contains("limits.max_concurrent_requests") && e.contains("1..=1000000"),
            "{e}"
        );
        let mut c = ServerConfig::default();
        c.metrics.latency_buckets_secs = vec![0.1, 1.0];
        let e = validate(&c).unwrap_err().to_string();
        assert!(
            e.contains("metrics.latency_buckets_secs") && e.contains("2"),
            "{e}"
        );
        let mut c = ServerConfig::default();
        c.log.format = "xml".into();
        assert!(validate(&c).unwrap_err().to_string().contains("log.format"));
    }
}
