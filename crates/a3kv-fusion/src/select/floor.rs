//! `floor`: the A^3/CacheBlend hybrid (equal mix) with a per-chunk floor against
//! "crowding out": half of the budget is shared out over the chunks in proportion to their
//! length, each chunk's share going to its own best rows; the other half goes to the best
//! rows anywhere. So no chunk is left with its whole cache stale because a few salient
//! chunks hold the top of the scores.

use super::hybrid::equal_mix_with_mass;
use super::{ScoreInput, Selector};
use crate::prompt::RagPrompt;
use crate::selection::{top_k, FusionParams};
use crate::Result;

/// A per-chunk floor over the hybrid score.
pub struct Floor {
    name: &'static str,
    /// Share of the budget reserved for the per-chunk floors, `[0, 1]`.
    reserved: f64,
}

/// Half the budget as floors: a rule, not a fit (each chunk gets at least half its
/// proportional share).
pub static FLOOR: Floor = Floor {
    name: "floor",
    reserved: 0.5,
};

impl Selector for Floor {
    fn name(&self) -> &'static str {
        self.name
    }

    fn scores_at_check_layer(&self) -> bool {
        true
    }

    fn needs_cached_v(&self, _params: &FusionParams) -> bool {
        true
    }

    fn scores_and_mass(
        &self,
        input: &ScoreInput<'_>,
        params: &FusionParams,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        equal_mix_with_mass(input, params)
    }

    fn select(&self, prompt: &RagPrompt, scores: &[f32], k: usize, sinks: &[usize]) -> Vec<usize> {
        select_with_floors(prompt, scores, k, sinks, self.reserved)
    }
}

/// Sinks first (capped at `k`); then each chunk of `n_c` rows gets its best
/// `⌊reserved·k·n_c/n_doc⌋` rows (its sinks counted); then the best rows anywhere up to `k`.
/// Document-relative, ascending.
pub fn select_with_floors(
    prompt: &RagPrompt,
    scores: &[f32],
    k: usize,
    sinks: &[usize],
    reserved: f64,
) -> Vec<usize> {
    let n_doc = scores.len();
    let k = k.min(n_doc);
    let mut chosen: Vec<usize> = sinks
        .iter()
        .copied()
        .filter(|&s| s < n_doc)
        .take(k)
        .collect();
    chosen.sort_unstable();
    chosen.dedup();
    if n_doc == 0 {
        return chosen;
    }
    let p = prompt.prefix_len();
    let floor_rows = reserved * k as f64;
    for seg in prompt.chunks() {
        let (lo, hi) = (seg.start - p, (seg.start - p + seg.len).min(n_doc));
        let want = (floor_rows * seg.len as f64 / n_doc as f64).floor() as usize;
        let have = chosen.iter().filter(|&&r| (lo..hi).contains(&r)).count();
        let room = k - chosen.len();
        let take = want.saturating_sub(have).min(room);
        if take == 0 {
            continue;
        }
        let local: Vec<usize> = chosen
            .iter()
            .filter(|&&r| (lo..hi).contains(&r))
            .map(|&r| r - lo)
            .collect();
        let picks = top_k(&scores[lo..hi], take, &local);
        chosen.extend(picks.into_iter().map(|r| r + lo));
        chosen.sort_unstable();
    }
    let rest = top_k(scores, k - chosen.len(), &chosen);
    chosen.extend(rest);
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(chunks: &[usize]) -> RagPrompt {
        let cs: Vec<Vec<u32>> = chunks.iter().map(|&n| vec![5; n]).collect();
        RagPrompt::from_ids(&[1, 1], &cs, &[2, 2]).unwrap()
    }

    #[test]
    fn every_chunk_gets_its_floor_and_the_rest_goes_to_the_top() {
        // Two chunks of 10; the first holds every high score.
        let pr = prompt(&[10, 10]);
        let scores: Vec<f32> = (0..20)
            .map(|i| {
                if i < 10 {
                    10.0 + i as f32
                } else {
                    i as f32 * 0.1
                }
            })
            .collect();
        // k = 8, half reserved: 2 rows per chunk at least, then the global top 4.
        let sel = select_with_floors(&pr, &scores, 8, &[], 0.5);
        assert_eq!(sel.len(), 8);
        assert_eq!(sel.iter().filter(|&&r| r >= 10).count(), 2, "{sel:?}");
        assert!(sel.contains(&19) && sel.contains(&18), "{sel:?}");
        // Without floors it is the plain top-k.
        assert_eq!(
            select_with_floors(&pr, &scores, 8, &[], 0.0),
            top_k(&scores, 8, &[])
        );
        // Sinks come first and count towards their chunk's floor.
        let sel = select_with_floors(&pr, &scores, 8, &[0, 10], 0.5);
        assert!(sel.contains(&0) && sel.contains(&10), "{sel:?}");
        assert_eq!(sel.iter().filter(|&&r| r >= 10).count(), 2, "{sel:?}");
        // The budget is never exceeded, even when sinks fill it.
        assert_eq!(select_with_floors(&pr, &scores, 1, &[0, 10], 0.5), vec![0]);
        assert_eq!(select_with_floors(&pr, &scores, 40, &[], 0.5).len(), 20);
    }

    #[test]
    fn on_a_tiny_model_it_is_exact_at_full_budget_and_keeps_the_budget() {
        super::super::checks::scoring_selector_is_exact_at_full_budget_and_keeps_the_budget(
            "floor",
        );
    }
}
