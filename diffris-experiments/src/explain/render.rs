//! Drawing an [`Explanation`]: heat maps over the image, token assignments, the attribution
//! bar charts, and the contact sheet that holds them all (`explain.png`), with the plotting
//! conventions of the tables' plots (the same embedded font, PNGs written atomically).

use std::path::{Path, PathBuf};

use diffris_data::inspect::overlay;
use diffris_data::rle::BinaryMask;
use diffris_data::transforms::resize_bilinear;
use image::imageops::FilterType;
use image::{Rgb, RgbImage};
use plotters::prelude::*;

use super::{Explanation, Map};
use crate::util::png::save_png;

/// Anchors of a perceptually ordered dark-to-bright colour map (viridis' end and quarter
/// points), interpolated linearly.
const SEQUENTIAL: [[f32; 3]; 5] = [
    [68.0, 1.0, 84.0],
    [59.0, 82.0, 139.0],
    [33.0, 145.0, 140.0],
    [94.0, 201.0, 98.0],
    [253.0, 231.0, 37.0],
];

/// Colour of `v` in [0, 1] on the sequential map (clamped).
pub fn sequential(v: f32) -> [u8; 3] {
    let v = if v.is_finite() {
        v.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = v * (SEQUENTIAL.len() - 1) as f32;
    let i = (x.floor() as usize).min(SEQUENTIAL.len() - 2);
    let f = x - i as f32;
    let (a, b) = (SEQUENTIAL[i], SEQUENTIAL[i + 1]);
    [0, 1, 2].map(|c| (a[c] + f * (b[c] - a[c])).round() as u8)
}

/// Colour of `v` in [-1, 1] on a blue-white-red map (clamped): blue where the adapter lowered
/// the attention, red where it raised it.
pub fn diverging(v: f32) -> [u8; 3] {
    let v = if v.is_finite() {
        v.clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let toward = |target: [f32; 3], t: f32| {
        [0, 1, 2].map(|c| (255.0 + t * (target[c] - 255.0)).round() as u8)
    };
    if v >= 0.0 {
        toward([200.0, 30.0, 30.0], v)
    } else {
        toward([30.0, 60.0, 200.0], -v)
    }
}

/// Colours of the query tokens in the assignment panels; the referent (the last token) is
/// always red.
const TOKEN_COLOURS: [[u8; 3]; 4] = [
    [40, 110, 220],
    [40, 170, 90],
    [230, 150, 30],
    [150, 60, 190],
];
const REFERENT: [u8; 3] = [230, 30, 30];

fn token_colour(t: usize, n: usize) -> [u8; 3] {
    if t + 1 == n {
        REFERENT
    } else {
        TOKEN_COLOURS[t % TOKEN_COLOURS.len()]
    }
}

/// `map` resized bilinearly to the image, each value through `colour`, blended over the image
/// (55 % colour).
pub fn heat_overlay(image: &RgbImage, map: &Map, colour: impl Fn(f32) -> [u8; 3]) -> RgbImage {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let up = resize_bilinear(&map.values, map.height, map.width, h, w);
    let mut out = image.clone();
    for (p, v) in out.pixels_mut().zip(up) {
        let c = colour(v);
        p.0 = [0, 1, 2].map(|k| ((p.0[k] as f32) * 0.45 + (c[k] as f32) * 0.55).round() as u8);
    }
    out
}

/// Each pixel tinted by the token it goes to (nearest-neighbour upsampling: an assignment
/// has no in-between values).
pub fn assignment_overlay(image: &RgbImage, hard: &[usize], map: &Map, tokens: usize) -> RgbImage {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let up = diffris_data::transforms::resize_nearest(hard, map.height, map.width, h, w);
    let mut out = image.clone();
    for (p, t) in out.pixels_mut().zip(up) {
        let c = token_colour(t, tokens);
        p.0 = [0, 1, 2].map(|k| ((p.0[k] as f32) * 0.45 + (c[k] as f32) * 0.55).round() as u8);
    }
    out
}

/// One panel of the contact sheet and the PNG it is also saved as.
pub struct Panel {
    pub image: RgbImage,
    pub caption: String,
    pub file: PathBuf,
}

/// A titled row of panels.
pub struct Row {
    pub title: String,
    pub panels: Vec<Panel>,
}

/// Filesystem-safe form of a word.
fn slug(word: &str) -> String {
    let s: String = word
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { '_' })
        .collect();
    if s.is_empty() { "_".into() } else { s }
}

fn max_of<'a>(maps: impl Iterator<Item = &'a Map>, f: impl Fn(f32) -> f32) -> f32 {
    maps.flat_map(|m| m.values.iter().map(|&v| f(v)))
        .fold(0.0f32, f32::max)
        .max(1e-12)
}

/// The rows of the sheet: inputs and prediction; per UNet level the word maps from the adapted
/// states, from the CLIP states and their difference (each row on one scale, its maximum, so
/// words compare within a row); per PCMRD stage the hard assignment and each token's soft
/// probability. `image` is the input at the network size.
pub fn rows(e: &Explanation, image: &RgbImage, panel: u32) -> Vec<Row> {
    let [h, w] = e.image_size;
    let panel_h = ((panel as usize * h / w).max(1)) as u32;
    let base = image::imageops::resize(image, panel, panel_h, FilterType::Triangle);
    let mask = |m: &[bool]| BinaryMask {
        height: h,
        width: w,
        data: m.to_vec(),
    };
    let mut inputs = vec![
        Panel {
            image: base.clone(),
            caption: "image".into(),
            file: "image.png".into(),
        },
        Panel {
            image: overlay(&base, &mask(&e.prediction)),
            caption: format!("prediction ({} px)", e.foreground_pixels),
            file: "prediction.png".into(),
        },
    ];
    if let Some(gt) = &e.ground_truth {
        inputs.push(Panel {
            image: overlay(&base, &mask(gt)),
            caption: match e.ground_truth_iou {
                Some(iou) => format!("ground truth (IoU {:.1})", 100.0 * iou),
                None => "ground truth".into(),
            },
            file: "ground_truth.png".into(),
        });
    }
    let mut rows = vec![Row {
        title: format!("\"{}\" ({})", e.expression, e.decoder),
        panels: inputs,
    }];
    for l in &e.levels {
        let [lh, lw] = [l.adapted[0].height, l.adapted[0].width];
        let scale = max_of(l.adapted.iter().chain(&l.clip), |v| v);
        let diff: Vec<Map> = l
            .adapted
            .iter()
            .zip(&l.clip)
            .map(|(a, c)| Map {
                height: a.height,
                width: a.width,
                values: a.values.iter().zip(&c.values).map(|(x, y)| x - y).collect(),
            })
            .collect();
        let diff_scale = max_of(diff.iter(), f32::abs);
        let kinds: [(&str, &str, &[Map]); 3] = [
            ("adapted", "adapted states", &l.adapted),
            ("clip", "CLIP states (no adapter)", &l.clip),
            ("difference", "adapted - CLIP", &diff),
        ];
        for (kind, name, maps) in kinds {
            let (title_scale, colour): (f32, Box<dyn Fn(f32) -> [u8; 3]>) = if kind == "difference"
            {
                (diff_scale, Box::new(move |v| diverging(v / diff_scale)))
            } else {
                (scale, Box::new(move |v| sequential(v / scale)))
            };
            let panels = maps
                .iter()
                .zip(&e.words)
                .enumerate()
                .map(|(k, (m, word))| Panel {
                    image: heat_overlay(&base, m, &colour),
                    caption: word.word.clone(),
                    file: PathBuf::from("cross_attention").join(format!(
                        "level{}-{kind}-{k:02}-{}.png",
                        l.level,
                        slug(&word.word)
                    )),
                })
                .collect();
            rows.push(Row {
                title: format!(
                    "cross-attention, UNet level {} ({lh}x{lw}), {name}; scale {}{:.2e}",
                    l.level,
                    if kind == "difference" { "+-" } else { "0-" },
                    title_scale
                ),
                panels,
            });
        }
    }
    for (s, stage) in e.assignments.iter().enumerate() {
        let n = stage.tokens.len();
        let first = &stage.tokens[0];
        let hard = stage.hard();
        let mut panels = vec![Panel {
            image: assignment_overlay(&base, &hard, first, n),
            caption: "hard (red: referent)".into(),
            file: PathBuf::from("assignments").join(format!("stage{s}-hard.png")),
        }];
        for (t, m) in stage.tokens.iter().enumerate() {
            let referent = t + 1 == n;
            panels.push(Panel {
                image: heat_overlay(&base, m, sequential),
                caption: if referent {
                    format!("token {t} (referent)")
                } else {
                    format!("token {t}")
                },
                file: PathBuf::from("assignments").join(format!(
                    "stage{s}-token{t}{}.png",
                    if referent { "-referent" } else { "" }
                )),
            });
        }
        rows.push(Row {
            title: format!(
                "PCMRD stage {} ({}x{}): query-token assignment; soft probabilities 0-1",
                s + 1,
                first.height,
                first.width
            ),
            panels,
        });
    }
    rows
}

/// Height of a row's title band and of the caption band under its panels.
const BAND: u32 = 20;

/// Writes every panel as its own PNG under `out`, the attribution chart, and the contact
/// sheet `explain.png`; returns the files written.
pub fn write_all(
    e: &Explanation,
    image: &RgbImage,
    panel: u32,
    out: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let rows = rows(e, image, panel);
    let mut written = vec![];
    for row in &rows {
        for p in &row.panels {
            let path = out.join(&p.file);
            save_png(&path, p.image.clone())?;
            written.push(path);
        }
    }
    let chart = attribution_chart(e)?;
    let chart_path = out.join("attributions.png");
    save_png(&chart_path, chart.clone())?;
    written.push(chart_path);
    let sheet = contact_sheet(&rows, &chart, panel)?;
    let sheet_path = out.join("explain.png");
    save_png(&sheet_path, sheet)?;
    written.push(sheet_path);
    Ok(written)
}

/// Size of the attribution chart.
const CHART: (u32, u32) = (760, 420);

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing: {e:?}")
}

/// Two bar charts over the words: integrated-gradient attribution (share of the total
/// absolute attribution, signed) and deletion effect (1 - IoU of the mask without the word).
pub fn attribution_chart(e: &Explanation) -> anyhow::Result<RgbImage> {
    crate::report::plots::register_font();
    let (width, height) = CHART;
    let mut raw = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut raw, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, bottom) = root.split_vertically(height / 2);
        let n = e.words.len().max(1);
        let labels: Vec<String> = e.words.iter().map(|w| w.word.clone()).collect();
        let norm: f64 = e
            .words
            .iter()
            .map(|w| w.attribution.abs())
            .sum::<f64>()
            .max(1e-12);
        let ig: Vec<f64> = e.words.iter().map(|w| w.attribution / norm).collect();
        let del: Vec<f64> = e.words.iter().map(|w| 1.0 - w.deletion_iou).collect();
        let lo = ig.iter().copied().fold(0.0f64, f64::min).min(-0.05);
        let hi = ig.iter().copied().fold(0.0f64, f64::max).max(0.05);
        let panels = [
            (
                &top,
                format!(
                    "integrated gradients (share of sum |a|; completeness gap {:.1}%)",
                    100.0 * e.attribution.completeness_gap
                ),
                ig,
                (lo * 1.1, hi * 1.1),
                RGBColor(31, 119, 180),
            ),
            (
                &bottom,
                "word deleted: 1 - IoU against the full expression's mask".to_string(),
                del,
                (0.0, 1.0),
                RGBColor(255, 127, 14),
            ),
        ];
        for (area, caption, values, (y0, y1), colour) in panels {
            let mut chart = ChartBuilder::on(area)
                .caption(caption, ("sans-serif", 14))
                .margin(8)
                .x_label_area_size(28)
                .y_label_area_size(48)
                .build_cartesian_2d(0f64..n as f64, y0..y1)
                .map_err(err)?;
            let labels = labels.clone();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(2 * n + 1)
                .x_label_formatter(&move |x| {
                    if (x - x.floor() - 0.5).abs() > 1e-6 {
                        return String::new();
                    }
                    labels
                        .get(x.floor() as usize)
                        .map(|l| l.chars().take(12).collect())
                        .unwrap_or_default()
                })
                .draw()
                .map_err(err)?;
            chart
                .draw_series(values.iter().enumerate().map(|(i, &v)| {
                    let (a, b) = if v >= 0.0 { (0.0, v) } else { (v, 0.0) };
                    Rectangle::new(
                        [(i as f64 + 0.15, a), (i as f64 + 0.85, b)],
                        colour.filled(),
                    )
                }))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(RgbImage::from_raw(width, height, raw).expect("the buffer keeps its size"))
}

/// Lays the rows out one under another (a title band, the panels, a caption band), then the
/// attribution chart.
pub fn contact_sheet(rows: &[Row], chart: &RgbImage, panel: u32) -> anyhow::Result<RgbImage> {
    let panel_h = rows
        .iter()
        .flat_map(|r| r.panels.first())
        .map(|p| p.image.height())
        .max()
        .unwrap_or(panel);
    let cols = rows.iter().map(|r| r.panels.len()).max().unwrap_or(1) as u32;
    let width = (cols * panel).max(chart.width());
    let row_h = BAND + panel_h + BAND;
    let height = rows.len() as u32 * row_h + chart.height();
    let mut canvas = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    for (r, row) in rows.iter().enumerate() {
        let y = r as u32 * row_h + BAND;
        for (c, p) in row.panels.iter().enumerate() {
            image::imageops::replace(&mut canvas, &p.image, (c as u32 * panel) as i64, y as i64);
        }
    }
    image::imageops::replace(&mut canvas, chart, 0, (rows.len() as u32 * row_h) as i64);
    let mut raw = canvas.into_raw();
    {
        crate::report::plots::register_font();
        let root = BitMapBackend::with_buffer(&mut raw, (width, height)).into_drawing_area();
        let font = ("sans-serif", 13).into_font().color(&BLACK);
        let max_chars = |px: u32| (px as usize / 7).max(4);
        let fit = |s: &str, px: u32| -> String {
            let max = max_chars(px);
            if s.chars().count() > max {
                format!("{}…", s.chars().take(max - 1).collect::<String>())
            } else {
                s.to_string()
            }
        };
        for (r, row) in rows.iter().enumerate() {
            let y = (r as u32 * row_h) as i32;
            root.draw(&Text::new(fit(&row.title, width), (4, y + 3), font.clone()))
                .map_err(err)?;
            for (c, p) in row.panels.iter().enumerate() {
                let x = (c as u32 * panel + 3) as i32;
                let yc = y + (BAND + panel_h) as i32 + 3;
                root.draw(&Text::new(fit(&p.caption, panel), (x, yc), font.clone()))
                    .map_err(err)?;
            }
        }
        root.present().map_err(err)?;
    }
    Ok(RgbImage::from_raw(width, height, raw).expect("the buffer keeps its size"))
}

/// `word,first_token,end_token,attribution,deletion_iou,deleted_text`, one line a word.
pub fn attribution_csv(e: &Explanation) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut out =
        String::from("word,first_token,end_token,attribution,deletion_iou,deleted_text\n");
    for w in &e.words {
        out.push_str(&format!(
            "{},{},{},{:.6},{:.6},{}\n",
            quote(&w.word),
            w.tokens[0],
            w.tokens[1],
            w.attribution,
            w.deletion_iou,
            quote(&w.deleted_text)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_maps_run_from_their_ends_and_clamp() {
        assert_eq!(sequential(0.0), [68, 1, 84]);
        assert_eq!(sequential(1.0), [253, 231, 37]);
        assert_eq!(sequential(2.0), sequential(1.0));
        assert_eq!(sequential(f32::NAN), sequential(0.0));
        // Brightness grows along the map.
        let luma = |c: [u8; 3]| 0.3 * c[0] as f32 + 0.59 * c[1] as f32 + 0.11 * c[2] as f32;
        let steps: Vec<f32> = (0..=10)
            .map(|i| luma(sequential(i as f32 / 10.0)))
            .collect();
        assert!(steps.windows(2).all(|p| p[1] > p[0]), "{steps:?}");
        assert_eq!(diverging(0.0), [255, 255, 255]);
        assert_eq!(diverging(1.0), [200, 30, 30]);
        assert_eq!(diverging(-5.0), [30, 60, 200]);
    }

    #[test]
    fn heat_overlay_blends_the_upsampled_map() {
        let image = RgbImage::from_pixel(4, 4, Rgb([100, 100, 100]));
        // A 2x2 map: only the top-left cell is hot; upsampled to 4x4 with half-pixel centres,
        // the top-left pixel keeps the full value and the bottom-right none.
        let map = Map {
            height: 2,
            width: 2,
            values: vec![1.0, 0.0, 0.0, 0.0],
        };
        let out = heat_overlay(&image, &map, sequential);
        let blend =
            |c: [u8; 3]| [0, 1, 2].map(|k| (100.0 * 0.45 + c[k] as f32 * 0.55).round() as u8);
        assert_eq!(out.get_pixel(0, 0).0, blend(sequential(1.0)));
        assert_eq!(out.get_pixel(3, 3).0, blend(sequential(0.0)));
    }

    #[test]
    fn slugs_are_safe_file_names() {
        assert_eq!(slug("roof"), "roof");
        assert_eq!(slug(","), "_");
        assert_eq!(slug("a/b"), "a_b");
        assert_eq!(slug(""), "_");
    }
}
