//! RULER variable tracking: `VAR A = 12345.`, `VAR B = VAR A.`, .. (one chain of four hops)
//! spread in order through a noise haystack; the answer is every variable in the chain.

use std::collections::BTreeMap;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::{distinct, noise_with_inserts, TaskCtx, TaskOutput};
use crate::error::EvalError;

/// Variables in the chain (the first holds the value, each next one copies the previous).
const CHAIN_LEN: usize = 5;

/// Generates one variable-tracking item.
pub(super) fn generate(ctx: &TaskCtx<'_>, rng: &mut ChaCha8Rng) -> Result<TaskOutput, EvalError> {
    let names: Vec<String> = distinct(CHAIN_LEN, rng, |r| {
        (0..5)
            .map(|_| char::from(r.gen_range(b'A'..=b'Z')))
            .collect()
    });
    let value: u32 = rng.gen_range(10_000..100_000);
    let statements: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, name)| match i {
            0 => format!("VAR {name} = {value}. "),
            _ => format!("VAR {name} = VAR {}. ", names[i - 1]),
        })
        .collect();
    let (segments, segment_tokens) = noise_with_inserts(ctx, &statements, rng)?;
    let mut tags = BTreeMap::new();
    tags.insert("value".into(), json!(value));
    Ok(TaskOutput {
        segments,
        segment_tokens,
        question: format!(
            "Find all variables that are assigned the value {value} in the text above, \
             directly or through other variables."
        ),
        answers: names,
        tags,
    })
}

#[cfg(test)]
mod tests {
    use super::super::super::text::whitespace_tokens;
    use super::super::RulerTask;
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn chain_is_in_order_and_complete() {
        let count = whitespace_tokens;
        let ctx = TaskCtx {
            length: 500,
            count: &count,
            task: RulerTask::VariableTracking,
        };
        let out = generate(&ctx, &mut ChaCha8Rng::seed_from_u64(9)).unwrap();
        let text = out.segments.concat();
        let value = out.tags["value"].as_u64().unwrap();
        assert_eq!(out.answers.len(), CHAIN_LEN);
        let first = text
            .find(&format!("VAR {} = {value}.", out.answers[0]))
            .unwrap();
        let mut previous = first;
        for pair in out.answers.windows(2) {
            let at = text
                .find(&format!("VAR {} = VAR {}.", pair[1], pair[0]))
                .unwrap();
            assert!(at > previous, "chain out of order");
            previous = at;
        }
    }
}
