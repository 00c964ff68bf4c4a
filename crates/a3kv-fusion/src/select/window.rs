//! `window`: recompute whole windows of neighbouring rows instead of single rows. Each chunk
//! is cut into aligned windows of 5 rows (the width A^3 smooths over by default; windows
//! never cross a chunk boundary); a window's score is the mean of the
//! hybrid score (A^3 + CacheBlend, equal mix) over its rows; whole windows are taken best
//! first while they fit, and the last rows of the budget go to the best single rows.

use super::hybrid::equal_mix_with_mass;
use super::{ScoreInput, Selector};
use crate::prompt::RagPrompt;
use crate::selection::{top_k, FusionParams};
use crate::Result;

/// Windows of rows.
pub struct Window {
    name: &'static str,
}

/// The registered window selection.
pub static WINDOW: Window = Window { name: "window" };

impl Selector for Window {
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
        select_windows(prompt, scores, k, sinks, DEFAULT_WIDTH)
    }
}

/// Window width: the A^3 default pooling width.
const DEFAULT_WIDTH: usize = 5;

/// Sinks first (capped at `k`), then whole aligned windows of `width` rows per chunk by
/// mean score while they fit, then the best single rows up to `k`. Document-relative,
/// ascending.
pub fn select_windows(
    prompt: &RagPrompt,
    scores: &[f32],
    k: usize,
    sinks: &[usize],
    width: usize,
) -> Vec<usize> {
    let n_doc = scores.len();
    let k = k.min(n_doc);
    let width = width.max(1);
    let mut taken = vec![false; n_doc];
    let mut count = 0usize;
    for &s in sinks.iter().filter(|&&s| s < n_doc) {
        if count == k {
            break;
        }
        if !taken[s] {
            taken[s] = true;
            count += 1;
        }
    }
    let p = prompt.prefix_len();
    let mut windows: Vec<(usize, usize, f32)> = Vec::new();
    for seg in prompt.chunks() {
        let (lo, hi) = (seg.start - p, (seg.start - p + seg.len).min(n_doc));
        let mut a = lo;
        while a < hi {
            let b = (a + width).min(hi);
            let mean = scores[a..b].iter().sum::<f32>() / (b - a) as f32;
            windows.push((a, b, mean));
            a = b;
        }
    }
    windows.sort_by(|x, y| y.2.total_cmp(&x.2).then(x.0.cmp(&y.0)));
    for (a, b, _) in windows {
        let new = (a..b).filter(|&r| !taken[r]).count();
        if new == 0 {
            continue;
        }
        if count + new > k {
            break;
        }
        for t in &mut taken[a..b] {
            *t = true;
        }
        count += new;
    }
    let mut chosen: Vec<usize> = (0..n_doc).filter(|&r| taken[r]).collect();
    let rest = top_k(scores, k - count, &chosen);
    chosen.extend(rest);
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(chunks: &[usize]) -> RagPrompt {
        let cs: Vec<Vec<u32>> = chunks.iter().map(|&n| vec![5; n]).collect();
        RagPrompt::from_ids(&[1], &cs, &[2]).unwrap()
    }

    #[test]
    fn whole_windows_are_taken_best_first_within_chunks() {
        // Chunks of 6 and 4 rows; width 3: windows [0,3) [3,6) [6,9) [9,10).
        let pr = prompt(&[6, 4]);
        let s = [0.0, 0.0, 9.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 0.0];
        // Window means 3, 1, 2, 0: k = 6 takes [0,3) and [6,9).
        assert_eq!(select_windows(&pr, &s, 6, &[], 3), vec![0, 1, 2, 6, 7, 8]);
        // k = 4: one window, then the best single row left (a 2.0, the lowest index).
        assert_eq!(select_windows(&pr, &s, 4, &[], 3), vec![0, 1, 2, 6]);
        // Sinks first; a window holding a sink costs only its new rows.
        assert_eq!(select_windows(&pr, &s, 4, &[0, 6], 3), vec![0, 1, 2, 6]);
        assert_eq!(select_windows(&pr, &s, 1, &[0, 6], 3), vec![0]);
        assert_eq!(select_windows(&pr, &s, 50, &[], 3).len(), 10);
    }

    #[test]
    fn on_a_tiny_model_it_is_exact_at_full_budget_and_keeps_the_budget() {
        super::super::checks::scoring_selector_is_exact_at_full_budget_and_keeps_the_budget(
            "window",
        );
    }
}
