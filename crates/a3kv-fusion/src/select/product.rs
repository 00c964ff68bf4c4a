//! `product`: question relevance × deviation. A row whose cached V is stale matters to the
//! answer in proportion to how much the question reads it, so the score is the product
//! `a3 · dev` of A^3's question attention and CacheBlend's deviation (each scaled to sum 1),
//! instead of their sum: a row needs both to rank high.

use super::hybrid::a3_and_deviation;
use super::{ScoreInput, Selector};
use crate::selection::{normalise, FusionParams};
use crate::Result;

/// Relevance × deviation.
pub struct Product {
    name: &'static str,
}

/// The registered product selection.
pub static PRODUCT: Product = Product { name: "product" };

impl Selector for Product {
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
        let (a3, dev) = a3_and_deviation(input, params)?;
        Ok((product_scores(&a3, &dev), Some(a3)))
    }
}

/// `a·b` of the two scores, each scaled to sum 1 (same length).
pub fn product_scores(a3: &[f32], deviation: &[f32]) -> Vec<f32> {
    let (a, b) = (normalise(a3), normalise(deviation));
    a.iter().zip(&b).map(|(x, y)| x * y).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::top_k;

    #[test]
    fn a_row_needs_both_relevance_and_deviation() {
        // Row 0: relevant, not stale; row 1: stale, irrelevant; row 2: both, moderately.
        let a3 = [0.7, 0.0, 0.3];
        let dev = [0.0, 10.0, 2.0];
        let s = product_scores(&a3, &dev);
        assert_eq!(top_k(&s, 1, &[]), vec![2]);
        // A sum would pick row 0 or 1 first.
        let sum = super::super::hybrid::hybrid_scores(&a3, &dev, 0.5);
        assert_ne!(top_k(&sum, 1, &[]), vec![2]);
        assert_eq!(product_scores(&[0.0, 0.0], &[1.0, 2.0]), vec![0.0, 0.0]);
    }

    #[test]
    fn on_a_tiny_model_it_is_exact_at_full_budget_and_keeps_the_budget() {
        super::super::checks::scoring_selector_is_exact_at_full_budget_and_keeps_the_budget(
            "product",
        );
    }
}
