//! The table of an ablation: our numbers (mean ± std over seeds) beside the paper's, in the
//! paper's layout, as Markdown, CSV and LaTeX.

use crate::profile::ProfileName;
use crate::recipe::{AblationFile, Column};
use crate::report::rows::{Row, mean_std};

fn cell(values: &[f64]) -> String {
    match values.len() {
        0 => "–".into(),
        1 => format!("{:.2}", values[0]),
        _ => {
            let (m, s) = mean_std(values);
            format!("{m:.2} ± {s:.2}")
        }
    }
}

fn paper_cell(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.2}"))
}

/// Which split a table column shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitCol {
    Val,
    Test,
}

impl SplitCol {
    fn suffix(self) -> &'static str {
        match self {
            Self::Val => " val",
            Self::Test => "",
        }
    }
}

fn values(row: &Row<'_>, c: Column, split: SplitCol) -> Vec<f64> {
    row.results
        .iter()
        .map(|r| {
            c.of(if split == SplitCol::Val {
                &r.val
            } else {
                &r.test
            })
        })
        .collect()
}

fn paper_value(row: &Row<'_>, c: Column, split: SplitCol) -> Option<f64> {
    c.paper(if split == SplitCol::Val {
        &row.variant.paper_val
    } else {
        &row.variant.paper
    })
}

/// The (split, column) pairs of a table, in order.
fn table_columns(file: &AblationFile) -> Vec<(SplitCol, Column)> {
    let splits: &[SplitCol] = if file.report_val {
        &[SplitCol::Val, SplitCol::Test]
    } else {
        &[SplitCol::Test]
    };
    file.columns
        .iter()
        .flat_map(|&c| splits.iter().map(move |&s| (s, c)))
        .collect()
}

pub fn notes(file: &AblationFile, profile: Option<ProfileName>, rows: &[Row<'_>]) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(n) = &file.note {
        notes.push(n.clone());
    }
    if let Some(r) = rows.iter().flat_map(|r| r.results.first()).next() {
        notes.push(format!(
            "Ours: {}; test split; mean ± std over seeds where several ran.",
            r.protocol
        ));
    }
    if profile == Some(ProfileName::Paper) {
        notes.push(
            "Paper profile: the SD weights and dataset given by --sd/--data or setup.ron (each \
             run's config.ron names them)."
                .into(),
        );
    }
    if profile == Some(ProfileName::Tiny) {
        notes.push(
            "Tiny profile: a small model of the SD architecture with seeded random frozen weights \
             (each \"SD version\" is a different random weight set), trained briefly on SynthRS. \
             Our numbers show the pipeline works; they are not comparable with the paper's."
                .into(),
        );
    }
    if let Some(b) = rows
        .iter()
        .flat_map(|r| r.results.first())
        .next()
        .map(|r| &r.baselines)
    {
        let mut s = format!(
            "Trivial baselines on the same split: all background mIoU {:.2} / oIoU {:.2}; whole image {:.2} / {:.2}",
            b.all_background.miou, b.all_background.oiou, b.whole_image.miou, b.whole_image.oiou
        );
        if let Some(r) = &b.random_object {
            s.push_str(&format!(
                "; a random object of the scene {:.2} / {:.2}",
                r.miou, r.oiou
            ));
        }
        notes.push(s + ".");
    }
    let diverged: Vec<String> = rows
        .iter()
        .flat_map(|r| &r.diverged)
        .map(|d| format!("{} seed {} ({})", d.label, d.seed, d.diverged))
        .collect();
    if !diverged.is_empty() {
        notes.push(format!(
            "Diverged, left out of the means: {}.",
            diverged.join("; ")
        ));
    }
    notes
}

/// Our cell of a row: its seeds' numbers, or `diverged` when every run of it diverged.
fn our_cell(row: &Row<'_>, c: Column, split: SplitCol) -> String {
    if row.results.is_empty() && !row.diverged.is_empty() {
        return "diverged".into();
    }
    cell(&values(row, c, split))
}

/// The table as Markdown.
pub fn markdown(file: &AblationFile, rows: &[Row<'_>], notes: &[String]) -> String {
    let cols = table_columns(file);
    let mut out = format!("**{}**\n\n| # | Method |", file.title);
    for (s, c) in &cols {
        let h = format!("{}{}", c.header(), s.suffix());
        out.push_str(&format!(" {h} | {h} (paper) |"));
    }
    out.push_str("\n|---|---|");
    for _ in &cols {
        out.push_str("---:|---:|");
    }
    out.push('\n');
    for (i, row) in rows.iter().enumerate() {
        out.push_str(&format!("| {} | {} |", i + 1, row.variant.label));
        for &(s, c) in &cols {
            out.push_str(&format!(
                " {} | {} |",
                our_cell(row, c, s),
                paper_cell(paper_value(row, c, s))
            ));
        }
        out.push('\n');
    }
    for n in notes {
        out.push_str(&format!("\n{n}\n"));
    }
    out
}

/// The table as CSV (one line per variant; mean, std and paper value per column).
pub fn csv(file: &AblationFile, rows: &[Row<'_>]) -> String {
    let cols = table_columns(file);
    let mut out = String::from("variant,label,seeds");
    for (s, c) in &cols {
        let h = format!("{}{}", c.header(), s.suffix())
            .replace('@', "_at_")
            .replace(' ', "_");
        out.push_str(&format!(",{h}_mean,{h}_std,{h}_paper"));
    }
    out.push('\n');
    for row in rows {
        out.push_str(&format!(
            "{},\"{}\",{}",
            row.variant.name,
            row.variant.label.replace('"', "\"\""),
            row.results.len()
        ));
        for &(split, c) in &cols {
            let (m, s) = mean_std(&values(row, c, split));
            let p = paper_value(row, c, split).map_or(String::new(), |v| format!("{v:.2}"));
            let fmt = |x: f64| {
                if x.is_nan() {
                    String::new()
                } else {
                    format!("{x:.4}")
                }
            };
            out.push_str(&format!(",{},{},{p}", fmt(m), fmt(s)));
        }
        out.push('\n');
    }
    out
}

fn latex_escape(s: &str) -> String {
    s.replace('\\', "\\textbackslash{}")
        .replace('&', "\\&")
        .replace('%', "\\%")
        .replace('_', "\\_")
        .replace('#', "\\#")
}

/// The table as a LaTeX `table` environment.
pub fn latex(file: &AblationFile, rows: &[Row<'_>], notes: &[String]) -> String {
    let cols = table_columns(file);
    let align = "r".repeat(2 * cols.len());
    let mut out = format!(
        "\\begin{{table}}[t]\n\\centering\n\\caption{{{}}}\n\\begin{{tabular}}{{cl{align}}}\n\\toprule\n\\# & Method",
        latex_escape(&file.title)
    );
    for (s, c) in &cols {
        let h = format!("{}{}", c.header(), s.suffix());
        out.push_str(&format!(" & {h} & {h} (paper)"));
    }
    out.push_str(" \\\\\n\\midrule\n");
    for (i, row) in rows.iter().enumerate() {
        out.push_str(&format!("{} & {}", i + 1, latex_escape(&row.variant.label)));
        for &(s, c) in &cols {
            let ours = our_cell(row, c, s).replace('±', "$\\pm$");
            out.push_str(&format!(
                " & {ours} & {}",
                paper_cell(paper_value(row, c, s))
            ));
        }
        out.push_str(" \\\\\n");
    }
    out.push_str("\\bottomrule\n\\end{tabular}\n");
    for n in notes {
        out.push_str(&format!("% {}\n", n.replace('\n', " ")));
    }
    out.push_str("\\end{table}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::DivergedRun;
    use crate::training::divergence::Divergence;

    const FILE: &str = r#"(
        version: 2,
        name: "mini",
        title: "Mini",
        columns: [miou],
        base: (dataset: rrsisd),
        variants: [(name: "off", label: "no adapter", paper: (miou: 61.43))],
    )"#;

    #[test]
    fn a_variant_whose_runs_all_diverged_shows_diverged_and_the_profile_is_named() {
        let file = AblationFile::parse(FILE, std::path::Path::new("mini.ron")).unwrap();
        assert_eq!(file.variants.len(), 1);
        let rows = vec![Row {
            variant: &file.variants[0],
            results: vec![],
            diverged: vec![DivergedRun {
                ablation: "mini".into(),
                variant: "off".into(),
                label: "no adapter".into(),
                seed: 2,
                diverged: Divergence {
                    split: "train".into(),
                    epoch: 3,
                    pass: 7,
                    loss: "NaN".into(),
                },
                train_seconds: 1.0,
            }],
        }];
        let notes = notes(&file, Some(ProfileName::Paper), &rows);
        assert!(
            notes.iter().any(|n| n.starts_with("Paper profile")),
            "{notes:?}"
        );
        assert!(
            notes.contains(
                &"Diverged, left out of the means: no adapter seed 2 (the train loss is NaN at \
              epoch 3, pass 7)."
                    .to_string()
            )
        );
        let md = markdown(&file, &rows, &notes);
        assert!(md.contains("| 1 | no adapter | diverged | 61.43 |"), "{md}");
        // The CSV leaves our mean empty (no finished seed) and keeps the paper's number.
        assert!(csv(&file, &rows).ends_with("off,\"no adapter\",0,,,61.43\n"));
    }
}
