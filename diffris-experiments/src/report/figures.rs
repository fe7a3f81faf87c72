//! The paper's qualitative figures (Figs. 5-7) drawn from runs' predictions: for the best, the
//! median and the worst sample of the first run (by its IoU), a row of image, ground truth and
//! each run's prediction with its IoU, as one PNG (`diffris figures`).

use std::path::Path;

use anyhow::Context;
use diffris_data::inspect::overlay;
use diffris_data::rle::BinaryMask;
use image::RgbImage;
use image::imageops::FilterType;
use plotters::prelude::*;

use crate::eval::metrics::SampleScore;
use crate::inputs::split::EncodedSplit;
use crate::util::png::save_png;

/// One run's predictions on the split.
pub struct Predicted {
    pub label: String,
    pub data: EncodedSplit,
    pub probs: Vec<Vec<f32>>,
    pub scores: Vec<SampleScore>,
}

/// The rows of the figure: (name, sample index) of the best, median and worst sample by
/// `scores` (ties go to the lower index; a split of fewer than three samples gives fewer rows).
pub fn pick_rows(scores: &[SampleScore]) -> Vec<(&'static str, usize)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].iou.total_cmp(&scores[a].iou).then(a.cmp(&b)));
    let mut rows = vec![];
    if let (Some(&best), Some(&worst)) = (order.first(), order.last()) {
        rows.push(("best", best));
        let median = order[order.len() / 2];
        if median != best && median != worst {
            rows.push(("median", median));
        }
        if worst != best {
            rows.push(("worst", worst));
        }
    }
    rows
}

/// Height of the title band above the panels and of the caption band under each row.
const BAND: u32 = 22;

/// Lays out the figure: a header of column titles, then per row the panels and a caption.
pub fn draw(
    runs: &[Predicted],
    rows: &[(&str, usize)],
    panel: u32,
    out: &Path,
) -> anyhow::Result<()> {
    let (h, w) = runs[0].data.image_size;
    let panel_h = (panel as usize * h / w).max(1) as u32;
    let cols = 2 + runs.len() as u32;
    let (width, height) = (cols * panel, BAND + rows.len() as u32 * (panel_h + BAND));
    let mut canvas = RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    let binary = |values: &[bool]| BinaryMask {
        height: h,
        width: w,
        data: values.to_vec(),
    };
    for (r, (_, i)) in rows.iter().enumerate() {
        let data = &runs[0].data;
        let sample = &data.samples[*i];
        let image = sample
            .load_image()
            .with_context(|| format!("reading the image of sample {i}"))?;
        let image = image::imageops::resize(&image, panel, panel_h, FilterType::Triangle);
        let gt: Vec<bool> = data.mask(*i)?.iter().map(|&v| v > 0.5).collect();
        let mut panels = vec![image.clone(), overlay(&image, &binary(&gt))];
        for run in runs {
            let pred: Vec<bool> = run.probs[*i].iter().map(|&p| p > 0.5).collect();
            panels.push(overlay(&image, &binary(&pred)));
        }
        let y = BAND + r as u32 * (panel_h + BAND);
        for (c, p) in panels.iter().enumerate() {
            image::imageops::replace(&mut canvas, p, (c as u32 * panel) as i64, y as i64);
        }
    }
    // Text on the composed pixels.
    let mut raw = canvas.into_raw();
    {
        crate::report::plots::register_font();
        let root = BitMapBackend::with_buffer(&mut raw, (width, height)).into_drawing_area();
        let font = ("sans-serif", 14).into_font().color(&BLACK);
        let err = |e| anyhow::anyhow!("drawing the figure: {e:?}");
        let mut titles = vec!["image".to_string(), "ground truth".to_string()];
        titles.extend(runs.iter().map(|r| r.label.clone()));
        let fit = |s: &str| -> String {
            let max = (panel as usize / 8).max(4);
            if s.chars().count() > max {
                format!("{}…", s.chars().take(max - 1).collect::<String>())
            } else {
                s.to_string()
            }
        };
        for (c, t) in titles.iter().enumerate() {
            root.draw(&Text::new(
                fit(t),
                ((c as u32 * panel + 4) as i32, 4),
                font.clone(),
            ))
            .map_err(err)?;
        }
        for (r, (name, i)) in rows.iter().enumerate() {
            let y = (BAND + r as u32 * (panel_h + BAND) + panel_h + 4) as i32;
            let sentence = &runs[0].data.samples[*i].sentence;
            let caption = format!("{name} (sample {i}): {sentence}");
            let max = (2 * panel as usize / 8).max(8);
            let caption: String = caption.chars().take(max).collect();
            root.draw(&Text::new(caption, (4, y), font.clone()))
                .map_err(err)?;
            for (k, run) in runs.iter().enumerate() {
                let x = ((2 + k as u32) * panel + 4) as i32;
                let iou = format!("IoU {:.2}", 100.0 * run.scores[*i].iou);
                root.draw(&Text::new(iou, (x, y), font.clone()))
                    .map_err(err)?;
            }
        }
        root.present().map_err(err)?;
    }
    let canvas = RgbImage::from_raw(width, height, raw).expect("the buffer keeps its size");
    save_png(out, canvas)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(iou: f64) -> SampleScore {
        SampleScore {
            intersection: 0,
            union: 0,
            iou,
        }
    }

    #[test]
    fn rows_are_best_median_and_worst() {
        let scores = [s(0.5), s(0.9), s(0.1), s(0.7), s(0.3)];
        assert_eq!(
            pick_rows(&scores),
            vec![("best", 1), ("median", 0), ("worst", 2)]
        );
        // Ties: the lower index first.
        assert_eq!(
            pick_rows(&[s(0.4), s(0.4)]),
            vec![("best", 0), ("worst", 1)]
        );
        assert_eq!(pick_rows(&[s(1.0)]), vec![("best", 0)]);
        assert!(pick_rows(&[]).is_empty());
    }
}
