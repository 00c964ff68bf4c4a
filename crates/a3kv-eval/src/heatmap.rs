//! The needle-in-a-haystack heat map of one method: needle depth (rows, 0% on top) × context
//! length (columns), each cell the mean score, coloured red (0) → yellow → green (1) with a
//! colour bar, as in the NIAH figures. Drawn with plotters' bitmap backend; text uses an
//! embedded font (Ubuntu Light via `epaint_default_fonts`), so no system fonts are needed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use crate::error::EvalError;
use crate::report::MethodRun;

/// Font family name the embedded font is registered under.
const FONT: &str = "sans-serif";

/// Mean scores of one method on the needle grid.
#[derive(Debug, Clone, PartialEq)]
pub struct NeedleGrid {
    /// Method label the scores belong to.
    pub method: String,
    /// Context lengths (columns), ascending.
    pub lengths_tokens: Vec<usize>,
    /// Depths in percent (rows), ascending.
    pub depth_percents: Vec<f64>,
    /// `scores[depth][length]`: mean primary score of that cell, `None` when no run landed there.
    pub scores: Vec<Vec<Option<f64>>>,
}

impl NeedleGrid {
    /// Collects the successful runs of `method` (a `MethodSpec::label()`) that carry the needle
    /// tags `context_tokens_target` and `depth_percent`; `None` when there are none.
    pub fn from_runs(runs: &[MethodRun], method: &str) -> Option<NeedleGrid> {
        // Depths keyed in thousandths of a percent so equal f64 depths group together.
        let mut cells: BTreeMap<(usize, i64), (f64, usize)> = BTreeMap::new();
        for run in runs
            .iter()
            .filter(|r| r.method == method && r.error.is_none())
        {
            let length = run
                .tags
                .get("context_tokens_target")
                .and_then(|v| v.as_u64());
            let depth = run.tags.get("depth_percent").and_then(|v| v.as_f64());
            if let (Some(length), Some(depth)) = (length, depth) {
                let cell = cells
                    .entry((length as usize, (depth * 1000.0).round() as i64))
                    .or_default();
                cell.0 += run.score;
                cell.1 += 1;
            }
        }
        if cells.is_empty() {
            return None;
        }
        let mut lengths: Vec<usize> = cells.keys().map(|&(l, _)| l).collect();
        lengths.sort_unstable();
        lengths.dedup();
        let mut depth_keys: Vec<i64> = cells.keys().map(|&(_, d)| d).collect();
        depth_keys.sort_unstable();
        depth_keys.dedup();
        let scores = depth_keys
            .iter()
            .map(|&d| {
                lengths
                    .iter()
                    .map(|&l| cells.get(&(l, d)).map(|&(sum, n)| sum / n as f64))
                    .collect()
            })
            .collect();
        Some(NeedleGrid {
            method: method.to_string(),
            lengths_tokens: lengths,
            depth_percents: depth_keys.iter().map(|&d| d as f64 / 1000.0).collect(),
            scores,
        })
    }
}

/// Colour of a score in [0, 1]: #F0496E → #EBB839 → #0CD79F (the NIAH palette).
pub fn score_colour(score: f64) -> RGBColor {
    const STOPS: [(f64, [f64; 3]); 3] = [
        (0.0, [240.0, 73.0, 110.0]),
        (0.5, [235.0, 184.0, 57.0]),
        (1.0, [12.0, 215.0, 159.0]),
    ];
    let s = if score.is_nan() {
        0.0
    } else {
        score.clamp(0.0, 1.0)
    };
    let (lo, hi) = if s <= 0.5 {
        (STOPS[0], STOPS[1])
    } else {
        (STOPS[1], STOPS[2])
    };
    let t = (s - lo.0) / (hi.0 - lo.0);
    let mix = |i: usize| (lo.1[i] + (hi.1[i] - lo.1[i]) * t).round() as u8;
    RGBColor(mix(0), mix(1), mix(2))
}

fn ensure_font(path: &Path) -> Result<(), EvalError> {
    // plotters keeps ab_glyph fonts in its own process-wide table; register ours once.
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(EvalError::Plot {
            path: path.to_path_buf(),
            message: "the embedded font could not be loaded".into(),
        })
    }
}

/// Draws `grid` as a PNG at `path` (1000 × 620 pixels) titled `title`.
///
/// Errors: `Plot` when drawing or writing the file fails.
pub fn render_needle_heatmap(grid: &NeedleGrid, title: &str, path: &Path) -> Result<(), EvalError> {
    ensure_font(path)?;
    draw(grid, title, path).map_err(|message| EvalError::Plot {
        path: path.to_path_buf(),
        message,
    })
}

fn draw(grid: &NeedleGrid, title: &str, path: &Path) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let n_len = grid.lengths_tokens.len();
    let n_depth = grid.depth_percents.len();
    let root = BitMapBackend::new(path, (1000, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (main, bar_area) = root.split_horizontally(880);

    // Row 0 of the chart is at the bottom, so depth index d is drawn in row n_depth-1-d.
    let lengths = grid.lengths_tokens.clone();
    let depths = grid.depth_percents.clone();
    let x_label = move |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) => lengths.get(*i).map_or(String::new(), |l| l.to_string()),
        _ => String::new(),
    };
    let y_label = move |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(r) if *r < n_depth => format!("{:.0}", depths[n_depth - 1 - r]),
        _ => String::new(),
    };
    let mut chart = ChartBuilder::on(&main)
        .caption(title, (FONT, 26))
        .margin(16)
        .x_label_area_size(56)
        .y_label_area_size(72)
        .build_cartesian_2d(
            // A discrete range covers both ends: 0..n-1 is n segments.
            (0..n_len.saturating_sub(1)).into_segmented(),
            (0..n_depth.saturating_sub(1)).into_segmented(),
        )
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(n_len)
        .y_labels(n_depth)
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .x_desc("Context length (tokens)")
        .y_desc("Needle depth (%)")
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .draw()
        .map_err(|e| err(&e))?;

    let cell = |col: usize, row: usize| {
        [
            (SegmentValue::Exact(col), SegmentValue::Exact(row)),
            (SegmentValue::Exact(col + 1), SegmentValue::Exact(row + 1)),
        ]
    };
    let grey = RGBColor(225, 225, 225);
    for (d, row_scores) in grid.scores.iter().enumerate() {
        let row = n_depth - 1 - d;
        for (col, score) in row_scores.iter().enumerate() {
            let fill = score.map_or(grey, score_colour);
            chart
                .draw_series([
                    Rectangle::new(cell(col, row), fill.filled()),
                    Rectangle::new(cell(col, row), WHITE.stroke_width(1)),
                ])
                .map_err(|e| err(&e))?;
            if let Some(s) = score {
                let centre = (SegmentValue::CenterOf(col), SegmentValue::CenterOf(row));
                let style = TextStyle::from((FONT, 15).into_font())
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                chart
                    .draw_series([Text::new(format!("{s:.2}"), centre, style)])
                    .map_err(|e| err(&e))?;
            }
        }
    }

    // Colour bar: 100 bands from 0 (bottom) to 1 (top) with ticks.
    let mut bar = ChartBuilder::on(&bar_area)
        .margin_top(24)
        .margin_bottom(72)
        .margin_right(16)
        .y_label_area_size(44)
        .caption("score", (FONT, 16))
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)
        .map_err(|e| err(&e))?;
    bar.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(5)
        .y_label_formatter(&|v| format!("{v:.2}"))
        .label_style((FONT, 14))
        .draw()
        .map_err(|e| err(&e))?;
    bar.draw_series((0..100).map(|i| {
        let lo = f64::from(i) / 100.0;
        Rectangle::new(
            [(0.0, lo), (1.0, lo + 0.01)],
            score_colour(lo + 0.005).filled(),
        )
    }))
    .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::run;
    use serde_json::json;

    fn needle_runs() -> Vec<MethodRun> {
        let mut runs = Vec::new();
        for (li, length) in [512usize, 1024, 2048, 4096, 8000].iter().enumerate() {
            for di in 0..10 {
                let depth = f64::from(di) * 100.0 / 9.0;
                // Fails deep in long contexts, like a method losing the needle.
                let score = if li >= 3 && (3..7).contains(&di) {
                    0.0
                } else {
                    1.0
                };
                let mut r = run("x", "a3", score);
                r.tags.insert("context_tokens_target".into(), json!(length));
                r.tags.insert("depth_percent".into(), json!(depth));
                runs.push(r);
            }
        }
        runs
    }

    #[test]
    fn grid_collects_cells() {
        let mut runs = needle_runs();
        runs.push(run("y", "a3", 1.0)); // no needle tags: ignored
        let grid = NeedleGrid::from_runs(&runs, "a3").unwrap();
        assert_eq!(grid.lengths_tokens, vec![512, 1024, 2048, 4096, 8000]);
        assert_eq!(grid.depth_percents.len(), 10);
        assert_eq!(grid.scores[4][3], Some(0.0));
        assert_eq!(grid.scores[0][3], Some(1.0));
        assert!(NeedleGrid::from_runs(&runs, "reuse").is_none());
    }

    #[test]
    fn colours_run_red_to_green() {
        assert_eq!(score_colour(0.0), RGBColor(240, 73, 110));
        assert_eq!(score_colour(0.5), RGBColor(235, 184, 57));
        assert_eq!(score_colour(1.0), RGBColor(12, 215, 159));
        assert_eq!(score_colour(7.0), score_colour(1.0));
    }

    #[test]
    fn renders_a_png() {
        let mut runs = needle_runs();
        runs.pop(); // one empty cell, drawn grey
        let grid = NeedleGrid::from_runs(&runs, "a3").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = std::env::var_os("A3KV_HEATMAP_OUT")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| dir.path().join("needle.png"));
        render_needle_heatmap(&grid, "Needle in a haystack: a3", &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(bytes.len() > 10_000, "{} bytes", bytes.len());
    }
}
