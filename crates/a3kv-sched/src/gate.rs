//! The start-up fusion correctness gate: before the engine serves fused requests it checks, on
//! the loaded model, that
//! 1. fusion with every document row recomputed (`recompute_ratio = 1`, the configured
//!    method) equals a full prefill: first-token logits within `max_logit_diff`
//!    (re-positioning cached keys with RoPE, the cache layout and the row scatter are right);
//! 2. on a small built-in canary set (short factual documents and questions shipped in this
//!    file) the configured default fusion keeps the first-token KL(full ‖ fused) at or under
//!    `max_kl` on every canary.
//!
//! If either fails, the engine logs why and serves every fused request as a full prefill
//! (`usage.fusion.method` says `full`), and the `a3kv:fusion_gate_state` gauge reads 0;
//! never a silently wrong answer (LMCache users met garbled output after re-RoPE on some
//! models with no way to see it: LMCache #4666).

use serde::{Deserialize, Serialize};

use a3kv_fusion::{fused_prefill, precompute_chunk, Budget, FusionParams, Method, RagParts};
use a3kv_model::{Model, ModelTokenizer, DEFAULT_RAG_INSTRUCTION};

/// `[engine.fusion_gate]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GateConfig {
    /// Run the gate at start-up (false: fusion is served unchecked, gauge -1).
    pub enabled: bool,
    /// Largest first-token KL(full ‖ default fusion) allowed on any canary.
    pub max_kl: f64,
    /// Largest |Δlogit| between fusion at ratio 1 and a full prefill.
    pub max_logit_diff: f64,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            // Measured on SmolLM2-135M (README): the default hybrid's canary KLs are well
            // under 0.5; a broken re-positioning gives KL of several nats.
            max_kl: 0.5,
            // Ratio 1 recomputes every row exactly; the rest is f32 summation order (the
            // real-model test holds 1e-3 on HotpotQA prompts).
            max_logit_diff: 1e-2,
        }
    }
}

/// What the gate measured and decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateReport {
    /// Fused requests are served with their own method.
    pub passed: bool,
    /// Largest |Δlogit| of fusion at ratio 1 against full prefill, over the canaries.
    pub max_logit_diff: f32,
    /// First-token KL(full ‖ default fusion) per canary.
    pub canary_kl: Vec<f64>,
    /// Why it failed, when it did.
    pub reason: Option<String>,
}

/// A canary: documents and a question about them.
struct Canary {
    documents: &'static [&'static str],
    question: &'static str,
}

/// Short factual documents; the questions need the documents' content.
const CANARIES: &[Canary] = &[
    Canary {
        documents: &[
            "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris. It was designed by the engineering company of Gustave Eiffel and completed in 1889 for the World's Fair.",
            "Mount Fuji is the highest mountain in Japan, at 3,776 metres. It is an active stratovolcano that last erupted in 1707 and stands on Honshu, south-west of Tokyo.",
        ],
        question: "In which year was the Eiffel Tower completed?",
    },
    Canary {
        documents: &[
            "The Amazon River in South America is the largest river by discharge volume of water in the world. It flows through Peru, Colombia and Brazil into the Atlantic Ocean.",
            "The Danube is the second-longest river in Europe. It rises in the Black Forest in Germany and flows through ten countries before emptying into the Black Sea.",
        ],
        question: "Into which sea does the Danube flow?",
    },
];

/// KL(p ‖ q) of two logit vectors (softmax of each), in nats.
pub(crate) fn kl(p_logits: &[f32], q_logits: &[f32]) -> f64 {
    let log_softmax = |l: &[f32]| -> Vec<f64> {
        let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = l.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln() + max;
        l.iter().map(|&x| x as f64 - lse).collect()
    };
    let (lp, lq) = (log_softmax(p_logits), log_softmax(q_logits));
    lp.iter()
        .zip(&lq)
        .map(|(a, b)| a.exp() * (a - b))
        .sum::<f64>()
        .max(0.0)
}

/// First-token logits of a full prefill, of `ratio_one` and of `default` on one canary; the
/// chunks are precomputed once and shared by the two fused runs.
fn canary_logits(
    model: &Model,
    parts: &RagParts,
    ratio_one: &FusionParams,
    default: &FusionParams,
) -> Result<[Vec<f32>; 3], String> {
    let s = |e: a3kv_fusion::FusionError| e.to_string();
    let prompt = parts.prompt().map_err(s)?;
    let prefix = precompute_chunk(model, &parts.prefix, None).map_err(s)?;
    let chunks = parts
        .chunks
        .iter()
        .map(|c| precompute_chunk(model, c, None))
        .collect::<Result<Vec<_>, _>>()
        .map_err(s)?;
    let run = |params: &FusionParams| -> Result<Vec<f32>, String> {
        let out = fused_prefill(model, &prompt, Some(prefix.clone()), &chunks, params, false)
            .map_err(s)?;
        out.logits.to_vec1::<f32>().map_err(|e| e.to_string())
    };
    Ok([
        run(&FusionParams::method(Method::Full))?,
        run(ratio_one)?,
        run(default)?,
    ])
}

/// Runs the gate for `default` (the engine's default fusion) on `model`.
pub fn run(
    model: &Model,
    tok: &ModelTokenizer,
    default: &FusionParams,
    chunk_tokens: usize,
    cfg: &GateConfig,
) -> GateReport {
    let mut report = GateReport {
        passed: true,
        max_logit_diff: 0.0,
        canary_kl: Vec::new(),
        reason: None,
    };
    let fused_method = if default.method.selector().is_full_prefill() {
        // The default serves full prefill; still check that the A^3 path would be exact.
        FusionParams::method(Method::A3)
    } else {
        default.clone()
    };
    let ratio_one = FusionParams {
        budget: Budget::Ratio(1.0),
        ..fused_method.clone()
    };
    let fail = |why: String, report: &mut GateReport| {
        report.passed = false;
        report.reason.get_or_insert(why);
    };
    for (i, c) in CANARIES.iter().enumerate() {
        let docs: Vec<String> = c.documents.iter().map(|d| d.to_string()).collect();
        let measured = RagParts::build(
            tok,
            None,
            DEFAULT_RAG_INSTRUCTION,
            &docs,
            c.question,
            chunk_tokens,
        )
        .map_err(|e| e.to_string())
        .and_then(|parts| canary_logits(model, &parts, &ratio_one, default));
        let [full, exact, fused] = match measured {
            Ok(m) => m,
            Err(e) => {
                fail(format!("canary {i}: {e}"), &mut report);
                continue;
            }
        };
        let diff = full
            .iter()
            .zip(&exact)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        report.max_logit_diff = report.max_logit_diff.max(diff);
        // NaN fails too.
        if f64::from(diff).is_nan() || f64::from(diff) > cfg.max_logit_diff {
            fail(
                format!(
                    "canary {i}: fusion at ratio 1 differs from full prefill by {diff:.3e} in a logit (max_logit_diff {:.1e}): cached keys are not re-positioned exactly on this model",
                    cfg.max_logit_diff
                ),
                &mut report,
            );
        }
        let k = kl(&full, &fused);
        report.canary_kl.push(k);
        if k.is_nan() || k > cfg.max_kl {
            fail(
                format!(
                    "canary {i}: first-token KL(full ‖ {}) = {k:.4} exceeds max_kl {}",
                    default.method.as_str(),
                    cfg.max_kl
                ),
                &mut report,
            );
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_is_zero_for_equal_and_positive_for_different_logits() {
        let a = [1.0f32, 2.0, 3.0];
        assert!(kl(&a, &a).abs() < 1e-12);
        assert!(kl(&a, &[3.0, 2.0, 1.0]) > 0.5);
        // Shifts do not change a softmax.
        assert!(kl(&a, &[11.0, 12.0, 13.0]).abs() < 1e-9);
    }
}
