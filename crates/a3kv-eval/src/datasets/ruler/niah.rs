//! RULER needle tasks: "One of the special magic numbers for {key} is: {value}." sentences
//! in a noise haystack; keys are adjective-noun pairs, values 7-digit numbers.

use std::collections::BTreeMap;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::{distinct, noise_with_inserts, pick_indices, RulerTask, TaskCtx, TaskOutput};
use crate::error::EvalError;

const ADJECTIVES: [&str; 32] = [
    "amber", "brave", "calm", "dusty", "eager", "fancy", "gentle", "hollow", "icy", "jolly",
    "keen", "lively", "misty", "noble", "odd", "proud", "quiet", "rapid", "silent", "tidy",
    "upbeat", "vivid", "wary", "young", "zesty", "bold", "crisp", "damp", "faint", "grand",
    "humble", "lucky",
];

const NOUNS: [&str; 32] = [
    "anteater", "badger", "canyon", "dolphin", "engine", "falcon", "garden", "harbor", "island",
    "jaguar", "kettle", "lantern", "meadow", "nebula", "orchard", "pelican", "quarry", "river",
    "saddle", "tunnel", "umbrella", "valley", "walrus", "yacht", "zebra", "beacon", "compass",
    "drum", "ember", "forest", "glacier", "hammer",
];

/// Generates one needle item; the variant comes from `ctx.task`.
pub(super) fn generate(ctx: &TaskCtx<'_>, rng: &mut ChaCha8Rng) -> Result<TaskOutput, EvalError> {
    // (keys in the haystack, values per key, keys asked for)
    let (num_keys, num_values, num_queries) = match ctx.task {
        RulerTask::NiahMultiKey => (4, 1, 1),
        RulerTask::NiahMultiQuery => (4, 1, 4),
        RulerTask::NiahMultiValue => (1, 4, 1),
        _ => (1, 1, 1),
    };
    let keys: Vec<String> = pick_indices(rng, ADJECTIVES.len() * NOUNS.len(), num_keys)
        .into_iter()
        .map(|i| format!("{}-{}", ADJECTIVES[i / NOUNS.len()], NOUNS[i % NOUNS.len()]))
        .collect();
    let values: Vec<u32> = distinct(num_keys * num_values, rng, |r| {
        r.gen_range(1_000_000..10_000_000)
    });
    let mut needles: Vec<(usize, String)> = Vec::new();
    for (k, key) in keys.iter().enumerate() {
        for v in 0..num_values {
            let value = values[k * num_values + v];
            needles.push((
                k,
                format!("One of the special magic numbers for {key} is: {value}. "),
            ));
        }
    }
    // Needles appear in random order; the haystack keeps that order.
    let order = pick_indices(rng, needles.len(), needles.len());
    let inserts: Vec<String> = order.iter().map(|&i| needles[i].1.clone()).collect();
    let (segments, segment_tokens) = noise_with_inserts(ctx, &inserts, rng)?;

    let queried = &keys[..num_queries];
    let answers: Vec<String> = (0..num_queries)
        .flat_map(|k| (0..num_values).map(move |v| (k, v)))
        .map(|(k, v)| values[k * num_values + v].to_string())
        .collect();
    let question = match (num_queries, num_values) {
        (1, 1) => format!(
            "What is the special magic number for {} mentioned in the provided text?",
            queried[0]
        ),
        (1, _) => format!(
            "What are all the special magic numbers for {} mentioned in the provided text?",
            queried[0]
        ),
        _ => format!(
            "What are all the special magic numbers for {} mentioned in the provided text?",
            list_with_and(queried)
        ),
    };
    let mut tags = BTreeMap::new();
    tags.insert("keys".into(), json!(keys));
    Ok(TaskOutput {
        segments,
        segment_tokens,
        question,
        answers,
        tags,
    })
}

/// "a, b, c, and d"; "a and b"; "a".
fn list_with_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [a, b] => format!("{a} and {b}"),
        [init @ .., last] => format!("{}, and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::text::whitespace_tokens;
    use super::*;
    use rand::SeedableRng;

    fn run(task: RulerTask) -> TaskOutput {
        let count = whitespace_tokens;
        let ctx = TaskCtx {
            length: 800,
            count: &count,
            task,
        };
        generate(&ctx, &mut ChaCha8Rng::seed_from_u64(3)).unwrap()
    }

    #[test]
    fn variants_have_the_right_needles_and_answers() {
        let single = run(RulerTask::NiahSingle);
        assert_eq!(single.answers.len(), 1);
        let text = single.segments.concat();
        assert_eq!(text.matches("special magic numbers for").count(), 1);

        let multikey = run(RulerTask::NiahMultiKey);
        assert_eq!(multikey.answers.len(), 1);
        assert_eq!(
            multikey.segments.concat().matches("special magic").count(),
            4
        );
        // The asked key's needle carries the answer.
        let key = multikey.tags["keys"][0].as_str().unwrap().to_string();
        assert!(multikey.question.contains(&key));
        let needle = format!("for {key} is: {}.", multikey.answers[0]);
        assert!(multikey.segments.concat().contains(&needle));

        let multiquery = run(RulerTask::NiahMultiQuery);
        assert_eq!(multiquery.answers.len(), 4);
        assert!(multiquery.question.contains(", and "));

        let multivalue = run(RulerTask::NiahMultiValue);
        assert_eq!(multivalue.answers.len(), 4);
        let key = multivalue.tags["keys"][0].as_str().unwrap();
        for value in &multivalue.answers {
            let needle = format!("for {key} is: {value}.");
            assert!(multivalue.segments.concat().contains(&needle));
        }
    }

    #[test]
    fn list_joining() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(list_with_and(&s(&["a"])), "a");
        assert_eq!(list_with_and(&s(&["a", "b"])), "a and b");
        assert_eq!(list_with_and(&s(&["a", "b", "c"])), "a, b, and c");
    }
}
