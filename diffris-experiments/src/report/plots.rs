//! Plots of an ablation (plotters, PNG): a bar chart of every variant (ours beside the paper's),
//! training curves (validation mIoU per epoch, training loss per iteration), and for SD-version
//! ablations a Fig. 8-style line plot.

use std::path::{Path, PathBuf};

use anyhow::Context;
use std::sync::Once;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::config::RunDir;
use crate::config::recipe::{AblationFile, Column, Figure};
use crate::report::curves::Curves;
use crate::report::runs::{Row, mean_std};
use crate::report::uncertainty::Uncertainty;
use crate::util::png::save_drawing;

const FONT: &[u8] = include_bytes!("../../assets/DejaVuSansMono.ttf");

pub(crate) fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font is valid; a failure here would only lose text, never data.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

type PlotResult<T> = anyhow::Result<T>;

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("{e:?}")
}

/// The series of the bar and line plots: name, column, whether it is the paper's number, colour.
const SERIES: [(&str, Column, bool, RGBColor); 4] = [
    ("mIoU (ours)", Column::Miou, false, RGBColor(31, 119, 180)),
    ("oIoU (ours)", Column::Oiou, false, RGBColor(255, 127, 14)),
    ("mIoU (paper)", Column::Miou, true, RGBColor(140, 190, 230)),
    ("oIoU (paper)", Column::Oiou, true, RGBColor(255, 200, 140)),
];

/// The value a series shows for a row: the paper's number, or our test mean over seeds (`None`
/// when the paper has no number or nothing ran).
fn series_value(row: &Row<'_>, col: Column, paper: bool) -> Option<f64> {
    if paper {
        col.paper(&row.variant.paper)
    } else {
        let vals: Vec<f64> = row.results.iter().map(|r| r.test.column(col)).collect();
        (!vals.is_empty()).then(|| mean_std(&vals).0)
    }
}

type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A line through `pts` with a dot at every point, and its legend entry.
fn marked_line(
    chart: &mut Chart<'_, '_>,
    pts: Vec<(f64, f64)>,
    label: &str,
    color: RGBAColor,
    dot: u32,
) -> PlotResult<()> {
    chart
        .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
        .map_err(err)?
        .label(label)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], color.stroke_width(2)));
    chart
        .draw_series(pts.into_iter().map(|p| Circle::new(p, dot, color.filled())))
        .map_err(err)?;
    Ok(())
}

fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>) -> PlotResult<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

/// Our test mean's 95% interval as a whisker at `x` (`None` where the row has none).
fn whisker(
    u: &Uncertainty,
    row: usize,
    col: Column,
    x: f64,
    v: f64,
) -> Option<ErrorBar<f64, f64, plotters::element::ErrorBarOrientV<f64, f64>>> {
    let i = u.interval(row, col)?;
    Some(ErrorBar::new_vertical(
        x,
        i.lo,
        v,
        i.hi,
        BLACK.stroke_width(1),
        6,
    ))
}

/// Grouped bars: per variant, our mean (with its 95% interval) and the paper's value for mIoU
/// and oIoU.
fn bars(file: &AblationFile, rows: &[Row<'_>], u: &Uncertainty, path: &Path) -> PlotResult<()> {
    save_drawing(path, (1000, 560), |buf| {
        let root = BitMapBackend::with_buffer(buf, (1000, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let n = rows.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(&file.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(70)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..n as f64, 0f64..100f64)
            .map_err(err)?;
        let labels: Vec<String> = rows.iter().map(|r| r.variant.label.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            // Ticks every half unit; only the group centres (i + 0.5) carry a label.
            .x_labels(2 * n + 1)
            .x_label_formatter(&|x| {
                if (x - x.floor() - 0.5).abs() > 1e-6 {
                    return String::new();
                }
                labels
                    .get(x.floor() as usize)
                    .map(|l| l.chars().take(30).collect())
                    .unwrap_or_default()
            })
            .y_desc("percent")
            .draw()
            .map_err(err)?;
        let width = 0.8 / SERIES.len() as f64;
        for (k, (name, col, paper, color)) in SERIES.into_iter().enumerate() {
            let rects: Vec<_> = rows
                .iter()
                .enumerate()
                .filter_map(|(i, row)| {
                    let v = series_value(row, col, paper)?;
                    let x0 = i as f64 + 0.1 + k as f64 * width;
                    Some(Rectangle::new(
                        [(x0, 0.0), (x0 + width * 0.9, v)],
                        color.filled(),
                    ))
                })
                .collect();
            chart
                .draw_series(rects)
                .map_err(err)?
                .label(name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
            if !paper {
                let whiskers = rows.iter().enumerate().filter_map(|(i, row)| {
                    let v = series_value(row, col, paper)?;
                    let x = i as f64 + 0.1 + (k as f64 + 0.45) * width;
                    whisker(u, i, col, x, v)
                });
                chart.draw_series(whiskers).map_err(err)?;
            }
        }
        legend(&mut chart)?;
        root.present().map_err(err)
    })
}

/// Validation mIoU per epoch and the smoothed training loss per iteration, one line per variant
/// (its first seed), against epochs elapsed.
fn curves(file: &AblationFile, rows: &[Row<'_>], results: &Path, path: &Path) -> PlotResult<()> {
    let runs: Vec<(String, Curves)> = rows
        .iter()
        .filter_map(|r| {
            let seed = r.results.first()?.seed;
            let dir = RunDir::new(results, &file.name, &r.variant.name, seed);
            Some((r.variant.label.clone(), Curves::read(&dir)))
        })
        .collect();
    let window = runs
        .iter()
        .map(|(_, c)| c.default_window())
        .max()
        .unwrap_or(1);
    let val: Vec<Vec<(f64, f64)>> = runs.iter().map(|(_, c)| c.validation_miou()).collect();
    let loss: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|(_, c)| c.training_loss(window, 400))
        .collect();
    let max_epoch = val
        .iter()
        .chain(&loss)
        .flat_map(|c| c.iter().map(|p| p.0))
        .fold(1.0, f64::max)
        .ceil();
    let max_loss = loss
        .iter()
        .flat_map(|c| c.iter().map(|p| p.1))
        .fold(1e-6, f64::max);
    save_drawing(path, (1000, 450), |buf| {
        let root = BitMapBackend::with_buffer(buf, (1000, 450)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (left, right) = root.split_horizontally(500);
        let loss_title = format!("training loss (mean of {window} iterations)");
        for (area, title, series, top) in [
            (&left, "validation mIoU", &val, 100.0),
            (&right, loss_title.as_str(), &loss, max_loss * 1.05),
        ] {
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(45)
                .build_cartesian_2d(0f64..max_epoch, 0f64..top)
                .map_err(err)?;
            // Whole epochs when there are several (at most 11 labels), tenths of one otherwise.
            let whole = max_epoch >= 2.0;
            chart
                .configure_mesh()
                .x_desc("epochs")
                .x_labels(if whole {
                    (max_epoch as usize).min(10) + 1
                } else {
                    11
                })
                .x_label_formatter(&|x| {
                    if !whole {
                        format!("{x:.1}")
                    } else if x.fract() == 0.0 {
                        format!("{x:.0}")
                    } else {
                        String::new()
                    }
                })
                .draw()
                .map_err(err)?;
            for (i, ((label, _), pts)) in runs.iter().zip(series.iter()).enumerate() {
                let color = Palette99::pick(i).to_rgba();
                // Dots on per-epoch points; a loss traced per iteration is a plain line.
                let dot = if pts.len() <= 50 { 3 } else { 0 };
                marked_line(&mut chart, pts.clone(), label, color, dot)?;
            }
            legend(&mut chart)?;
        }
        root.present().map_err(err)
    })
}

/// Fig. 8 style: mIoU and oIoU across the variants in order (ours and the paper's).
fn line(file: &AblationFile, rows: &[Row<'_>], u: &Uncertainty, path: &Path) -> PlotResult<()> {
    save_drawing(path, (800, 500), |buf| {
        let root = BitMapBackend::with_buffer(buf, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let n = rows.len();
        let labels: Vec<String> = rows.iter().map(|r| r.variant.label.clone()).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption(&file.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..100f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| labels.get(x.round() as usize).cloned().unwrap_or_default())
            .y_desc("percent")
            .draw()
            .map_err(err)?;
        for (name, col, paper, color) in SERIES {
            let pts: Vec<(f64, f64)> = rows
                .iter()
                .enumerate()
                .filter_map(|(i, r)| Some((i as f64, series_value(r, col, paper)?)))
                .collect();
            marked_line(&mut chart, pts.clone(), name, color.to_rgba(), 4)?;
            if !paper {
                let whiskers = pts
                    .iter()
                    .filter_map(|&(x, v)| whisker(u, x as usize, col, x, v));
                chart.draw_series(whiskers).map_err(err)?;
            }
        }
        legend(&mut chart)?;
        root.present().map_err(err)
    })
}

/// Writes every plot of an ablation into `dir`; returns their paths.
pub fn write_all(
    file: &AblationFile,
    rows: &[Row<'_>],
    u: &Uncertainty,
    results: &Path,
    dir: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    register_font();
    std::fs::create_dir_all(dir)?;
    let mut out = vec![dir.join("bars.png"), dir.join("curves.png")];
    let named = |p: &Path| format!("plotting {}", p.display());
    bars(file, rows, u, &out[0]).with_context(|| named(&out[0]))?;
    curves(file, rows, results, &out[1]).with_context(|| named(&out[1]))?;
    if file.figure == Figure::Line {
        let p = dir.join("line.png");
        line(file, rows, u, &p).with_context(|| named(&p))?;
        out.push(p);
    }
    Ok(out)
}
