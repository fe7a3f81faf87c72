//! The table of an ablation: our numbers (mean ± std over seeds, and on the test split the 95%
//! interval of [`Uncertainty`] with a mark where a row differs from row 1) beside the paper's,
//! in the paper's layout, as Markdown, CSV and LaTeX. The other methods the paper compares (the
//! file's `reported` rows) come first, with the paper's numbers only and a dagger.

use crate::config::recipe::{AblationFile, Column, Encoders, PaperNumbers, Reported};
use crate::config::run_spec::ProfileName;
use crate::report::runs::{Row, mean_std};
use crate::report::uncertainty::Uncertainty;

/// The marker of a row reported in the paper and not run here.
const REPORTED: &str = "†";

/// One line of a table: a method the paper reports, or one of our variants (numbered from 1).
enum Line<'r, 'a> {
    Reported(&'r Reported),
    Ours(usize, &'r Row<'a>),
}

impl Line<'_, '_> {
    fn number(&self) -> String {
        match self {
            Self::Reported(_) => String::new(),
            Self::Ours(i, _) => i.to_string(),
        }
    }

    fn label(&self) -> String {
        match self {
            Self::Reported(r) => format!("{} {REPORTED}", r.label),
            Self::Ours(_, row) => row.variant.label.clone(),
        }
    }

    fn encoders(&self) -> Option<&Encoders> {
        match self {
            Self::Reported(r) => r.encoders.as_ref(),
            Self::Ours(_, row) => row.variant.encoders.as_ref(),
        }
    }

    fn paper(&self, split: SplitCol) -> &PaperNumbers {
        let (test, val) = match self {
            Self::Reported(r) => (&r.paper, &r.paper_val),
            Self::Ours(_, row) => (&row.variant.paper, &row.variant.paper_val),
        };
        if split == SplitCol::Val { val } else { test }
    }

    /// Our cell (`–` for a reported row).
    fn ours(&self, c: Column, split: SplitCol, u: &Uncertainty) -> String {
        match self {
            Self::Reported(_) => "–".into(),
            Self::Ours(i, row) => our_cell(row, c, split, u, i - 1),
        }
    }
}

/// The reported rows, then ours.
fn lines<'r, 'a>(file: &'r AblationFile, rows: &'r [Row<'a>]) -> Vec<Line<'r, 'a>> {
    file.reported
        .iter()
        .map(Line::Reported)
        .chain(rows.iter().enumerate().map(|(i, r)| Line::Ours(i + 1, r)))
        .collect()
}

/// Whether the table prints the encoder columns (some row names its encoders).
fn has_encoders(lines: &[Line<'_, '_>]) -> bool {
    lines.iter().any(|l| l.encoders().is_some())
}

fn encoder_cells(line: &Line<'_, '_>) -> [String; 2] {
    line.encoders().map_or(["–".into(), "–".into()], |e| {
        [e.visual.clone(), e.text.clone()]
    })
}

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
            if split == SplitCol::Val {
                r.val.column(c)
            } else {
                r.test.column(c)
            }
        })
        .collect()
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

/// Under the tiny profile with weights folders given (`--sd NAME=DIR`, such as `diffris
/// pretrain`'s exports): the tiny profile's note says which versions read which folder instead
/// of calling every version random.
pub fn tiny_weights_note(
    notes: &mut [String],
    weights: &std::collections::BTreeMap<String, std::path::PathBuf>,
) {
    let given: Vec<String> = weights
        .iter()
        .map(|(name, path)| format!("{name} = {}", path.display()))
        .collect();
    if let Some(n) = notes.iter_mut().find(|n| n.starts_with("Tiny profile:")) {
        *n = format!(
            "Tiny profile: a small model of the SD architecture, trained briefly on SynthRS, on \
             frozen weights read from folders of that architecture ({}; any other version \
             seeded random weights). Not comparable with the paper's numbers.",
            given.join(", ")
        );
    }
}

pub fn notes(
    file: &AblationFile,
    profile: Option<ProfileName>,
    rows: &[Row<'_>],
    u: &Uncertainty,
) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(n) = &file.note {
        notes.push(n.clone());
    }
    if !file.reported.is_empty() {
        notes.push(format!(
            "{REPORTED} Reported in the paper, not run by diffris: the paper's numbers only."
        ));
    }
    if let Some(r) = rows.iter().flat_map(|r| r.results.first()).next() {
        notes.push(format!(
            "Ours: {}; test split; mean ± std over seeds where several ran.",
            r.protocol
        ));
    }
    notes.extend(u.notes());
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
    for row in rows {
        if let Some(how) = row.mixed_training() {
            notes.push(format!(
                "{}: its seeds were trained differently, which alone can change their numbers \
                 ({how}); --restart the odd ones on one build and one device set.",
                row.variant.label
            ));
        }
    }
    notes
}

/// Our cell of row `index` (0-based among ours): its seeds' numbers, on the test split with
/// their interval and mark, or `diverged` when every run of it diverged.
fn our_cell(row: &Row<'_>, c: Column, split: SplitCol, u: &Uncertainty, index: usize) -> String {
    if row.results.is_empty() && !row.diverged.is_empty() {
        return "diverged".into();
    }
    let numbers = cell(&values(row, c, split));
    match u.interval(index, c).filter(|_| split == SplitCol::Test) {
        Some(i) => format!("{numbers} [{:.2}, {:.2}]{}", i.lo, i.hi, u.mark(index, c)),
        None => numbers,
    }
}

/// The table as Markdown.
pub fn markdown(
    file: &AblationFile,
    rows: &[Row<'_>],
    notes: &[String],
    u: &Uncertainty,
) -> String {
    let cols = table_columns(file);
    let lines = lines(file, rows);
    let encoders = has_encoders(&lines);
    let mut out = format!("**{}**\n\n| # | Method |", file.title);
    if encoders {
        out.push_str(" Visual encoder | Text encoder |");
    }
    for (s, c) in &cols {
        let h = format!("{}{}", c.header(), s.suffix());
        out.push_str(&format!(" {h} | {h} (paper) |"));
    }
    out.push_str("\n|---|---|");
    if encoders {
        out.push_str("---|---|");
    }
    for _ in &cols {
        out.push_str("---:|---:|");
    }
    out.push('\n');
    for line in &lines {
        out.push_str(&format!("| {} | {} |", line.number(), line.label()));
        if encoders {
            let [v, t] = encoder_cells(line);
            out.push_str(&format!(" {v} | {t} |"));
        }
        for &(s, c) in &cols {
            out.push_str(&format!(
                " {} | {} |",
                line.ours(c, s, u),
                paper_cell(c.paper(line.paper(s)))
            ));
        }
        out.push('\n');
    }
    for n in notes {
        out.push_str(&format!("\n{n}\n"));
    }
    out
}

/// A CSV field, quoted.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The table as CSV: one line per row, the finished and the diverged seeds (left out of the
/// means), then per column the mean, std, the 95% interval of the mean (`lo`, `hi`) and of the
/// difference from row 1 (`diff_lo`, `diff_hi`; test columns only) and the paper's value. A
/// reported row has an empty variant and seed counts and no numbers of ours.
pub fn csv(file: &AblationFile, rows: &[Row<'_>], u: &Uncertainty) -> String {
    let cols = table_columns(file);
    let lines = lines(file, rows);
    let encoders = has_encoders(&lines);
    let mut out = String::from("variant,label,seeds,diverged");
    if encoders {
        out.push_str(",visual_encoder,text_encoder");
    }
    for (s, c) in &cols {
        let h = format!("{}{}", c.header(), s.suffix())
            .replace('@', "_at_")
            .replace(' ', "_");
        out.push_str(&format!(
            ",{h}_mean,{h}_std,{h}_lo,{h}_hi,{h}_diff_lo,{h}_diff_hi,{h}_paper"
        ));
    }
    out.push('\n');
    for line in &lines {
        let (variant, label, seeds, diverged) = match line {
            Line::Reported(r) => (String::new(), &r.label, String::new(), String::new()),
            Line::Ours(_, row) => (
                row.variant.name.clone(),
                &row.variant.label,
                row.results.len().to_string(),
                row.diverged.len().to_string(),
            ),
        };
        out.push_str(&format!("{variant},{},{seeds},{diverged}", quoted(label)));
        if encoders {
            let [v, t] = encoder_cells(line);
            out.push_str(&format!(",{},{}", quoted(&v), quoted(&t)));
        }
        for &(split, c) in &cols {
            let (m, s) = match line {
                Line::Reported(_) => (f64::NAN, f64::NAN),
                Line::Ours(_, row) => mean_std(&values(row, c, split)),
            };
            let (interval, diff) = match line {
                Line::Ours(i, _) if split == SplitCol::Test => {
                    (u.interval(i - 1, c), u.diff(i - 1, c))
                }
                _ => (None, None),
            };
            let p = c
                .paper(line.paper(split))
                .map_or(String::new(), |v| format!("{v:.2}"));
            let fmt = |x: f64| {
                if x.is_nan() {
                    String::new()
                } else {
                    format!("{x:.4}")
                }
            };
            let bounds = |i: Option<crate::eval::bootstrap::Interval>| {
                i.map_or([f64::NAN; 2], |i| [i.lo, i.hi]).map(fmt).join(",")
            };
            out.push_str(&format!(
                ",{},{},{},{},{p}",
                fmt(m),
                fmt(s),
                bounds(interval),
                bounds(diff)
            ));
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
pub fn latex(file: &AblationFile, rows: &[Row<'_>], notes: &[String], u: &Uncertainty) -> String {
    let cols = table_columns(file);
    let lines = lines(file, rows);
    let encoders = has_encoders(&lines);
    let align = "r".repeat(2 * cols.len());
    let enc_align = if encoders { "ll" } else { "" };
    let mut out = format!(
        "\\begin{{table}}[t]\n\\centering\n\\caption{{{}}}\n\\begin{{tabular}}{{cl{enc_align}{align}}}\n\\toprule\n\\# & Method",
        latex_escape(&file.title)
    );
    if encoders {
        out.push_str(" & Visual encoder & Text encoder");
    }
    for (s, c) in &cols {
        let h = format!("{}{}", c.header(), s.suffix());
        out.push_str(&format!(" & {h} & {h} (paper)"));
    }
    out.push_str(" \\\\\n\\midrule\n");
    for line in &lines {
        let label = latex_escape(&line.label()).replace(REPORTED, "$^\\dagger$");
        out.push_str(&format!("{} & {label}", line.number()));
        if encoders {
            let [v, t] = encoder_cells(line);
            out.push_str(&format!(" & {} & {}", latex_escape(&v), latex_escape(&t)));
        }
        for &(s, c) in &cols {
            let ours = line
                .ours(c, s, u)
                .replace('±', "$\\pm$")
                .replace('↑', "$\\uparrow$")
                .replace('↓', "$\\downarrow$");
            out.push_str(&format!(
                " & {ours} & {}",
                paper_cell(c.paper(line.paper(s)))
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
    use crate::eval::evaluate::Baselines;
    use crate::records::{DivergedRun, RunResult, TestScores};
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
            trained_as: vec![],
            variant: &file.variants[0],
            results: vec![],
            scores: vec![],
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
        let u = Uncertainty::none();
        let notes = notes(&file, Some(ProfileName::Paper), &rows, &u);
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
        let md = markdown(&file, &rows, &notes, &u);
        assert!(md.contains("| 1 | no adapter | diverged | 61.43 |"), "{md}");
        // The CSV counts the diverged seed, leaves our mean empty (no finished seed) and keeps
        // the paper's number.
        assert!(csv(&file, &rows, &u).ends_with("off,\"no adapter\",0,1,,,,,,,61.43\n"));
    }

    const WITH_REPORTED: &str = r#"(
        version: 2,
        name: "t1",
        title: "T1",
        columns: [pr50, miou],
        report_val: true,
        variants: [(
            name: "ours",
            label: "DiffRIS (ours)",
            encoders: (visual: "Stable Diffusion", text: "CLIP"),
            paper_val: (precision: [73.45], miou: 63.64),
            paper: (precision: [71.79], miou: 62.19),
        )],
        reported: [(
            label: "RRN [39]",
            encoders: (visual: "ResNet-101", text: "LSTM"),
            paper_val: (precision: [51.09], miou: 46.06),
            paper: (precision: [51.07], miou: 45.64),
        )],
    )"#;

    #[test]
    fn reported_rows_come_first_with_the_papers_numbers_only_and_a_dagger() {
        let file = AblationFile::parse(WITH_REPORTED, std::path::Path::new("t1.ron")).unwrap();
        let rows = vec![Row {
            trained_as: vec![],
            variant: &file.variants[0],
            results: vec![],
            scores: vec![],
            diverged: vec![],
        }];
        let u = Uncertainty::none();
        let notes = notes(&file, None, &rows, &u);
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("† Reported in the paper"))
        );
        let md = markdown(&file, &rows, &notes, &u);
        let body: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(
            body,
            [
                "| # | Method | Visual encoder | Text encoder | Pr@0.5 val | Pr@0.5 val (paper) | \
                 Pr@0.5 | Pr@0.5 (paper) | mIoU val | mIoU val (paper) | mIoU | mIoU (paper) |",
                "|  | RRN [39] † | ResNet-101 | LSTM | – | 51.09 | – | 51.07 | – | 46.06 | – | \
                 45.64 |",
                "| 1 | DiffRIS (ours) | Stable Diffusion | CLIP | – | 73.45 | – | 71.79 | – | \
                 63.64 | – | 62.19 |",
            ]
        );
        let csv = csv(&file, &rows, &u);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "variant,label,seeds,diverged,visual_encoder,text_encoder,\
             Pr_at_0.5_val_mean,Pr_at_0.5_val_std,Pr_at_0.5_val_lo,Pr_at_0.5_val_hi,\
             Pr_at_0.5_val_diff_lo,Pr_at_0.5_val_diff_hi,Pr_at_0.5_val_paper,\
             Pr_at_0.5_mean,Pr_at_0.5_std,Pr_at_0.5_lo,Pr_at_0.5_hi,\
             Pr_at_0.5_diff_lo,Pr_at_0.5_diff_hi,Pr_at_0.5_paper,\
             mIoU_val_mean,mIoU_val_std,mIoU_val_lo,mIoU_val_hi,\
             mIoU_val_diff_lo,mIoU_val_diff_hi,mIoU_val_paper,\
             mIoU_mean,mIoU_std,mIoU_lo,mIoU_hi,mIoU_diff_lo,mIoU_diff_hi,mIoU_paper"
        );
        assert_eq!(
            lines[1],
            ",\"RRN [39]\",,,\"ResNet-101\",\"LSTM\",,,,,,,51.09,,,,,,,51.07,,,,,,,46.06,,,,,,,45.64"
        );
        assert!(
            lines[2].starts_with("ours,\"DiffRIS (ours)\",0,0,"),
            "{}",
            lines[2]
        );
        let tex = latex(&file, &rows, &notes, &u);
        assert!(tex.contains("\\begin{tabular}{clllrrrrrrrr}"), "{tex}");
        assert!(
            tex.contains(" & RRN [39] $^\\dagger$ & ResNet-101 & LSTM & – & 51.09"),
            "{tex}"
        );
    }

    const TWO: &str = r#"(
        version: 2,
        name: "two",
        title: "Two",
        columns: [miou],
        base: (dataset: rrsisd),
        variants: [
            (name: "a", label: "row a", paper: (miou: 61.43)),
            (name: "b", label: "row b", paper: (miou: 62.19)),
            (name: "c", label: "row c"),
        ],
    )"#;

    fn finished(variant: &str, scores: &TestScores) -> RunResult {
        let test = scores.metrics();
        RunResult {
            ablation: "two".into(),
            variant: variant.into(),
            label: variant.into(),
            seed: 0,
            best_epoch: 1,
            val: test.clone(),
            baselines: Baselines {
                all_background: test.clone(),
                whole_image: test.clone(),
                random_object: None,
            },
            test,
            train_seconds: 1.0,
            protocol: "LAVT protocol".into(),
            files: Default::default(),
        }
    }

    #[test]
    fn test_cells_carry_their_interval_and_a_row_that_beats_row_1_on_every_resample_is_marked() {
        let file = AblationFile::parse(TWO, std::path::Path::new("two.ron")).unwrap();
        let ids: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        // Row b gains exactly 1/4 IoU on every sample (mIoU 30 -> 55); row c has no scores.
        let a = TestScores {
            samples: ids.clone(),
            counts: vec![(1, 4), (0, 4), (3, 4), (1, 4), (1, 4)],
        };
        let b = TestScores {
            samples: ids,
            counts: vec![(2, 4), (1, 4), (4, 4), (2, 4), (2, 4)],
        };
        let row = |v: usize, scores: Option<&TestScores>| Row {
            variant: &file.variants[v],
            results: vec![finished(&file.variants[v].name, scores.unwrap_or(&a))],
            scores: vec![scores.cloned()],
            diverged: vec![],
            trained_as: vec![],
        };
        let rows = vec![row(0, Some(&a)), row(1, Some(&b)), row(2, None)];
        let u = Uncertainty::of(&file, &rows);
        assert_eq!(u.samples, 5);
        let notes = notes(&file, None, &rows, &u);
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("[lo, hi]: the 95% interval")),
            "{notes:?}"
        );
        assert!(
            notes.contains(
                &"row c: no interval; a run of it finished before runs recorded each test \
                  sample's score."
                    .to_string()
            ),
            "{notes:?}"
        );
        // One seed per row: the intervals say so.
        assert!(
            notes
                .iter()
                .any(|n| n
                    .starts_with("A row of one seed has an interval over the test samples only")),
            "{notes:?}"
        );
        let md = markdown(&file, &rows, &notes, &u);
        let body: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
        let (ia, ib) = (
            u.interval(0, Column::Miou).unwrap(),
            u.interval(1, Column::Miou).unwrap(),
        );
        assert!(ia.lo <= 30.0 && 30.0 <= ia.hi && ia.lo < ia.hi, "{ia:?}");
        assert_eq!(
            body[1],
            format!("| 1 | row a | 30.00 [{:.2}, {:.2}] | 61.43 |", ia.lo, ia.hi)
        );
        assert_eq!(
            body[2],
            format!(
                "| 2 | row b | 55.00 [{:.2}, {:.2}] ↑ | 62.19 |",
                ib.lo, ib.hi
            )
        );
        assert_eq!(body[3], "| 3 | row c | 30.00 | – |");
        // The paired difference is exactly +25 in every resample.
        let csv = csv(&file, &rows, &u);
        let b_line = csv.lines().find(|l| l.starts_with("b,")).unwrap();
        assert_eq!(
            b_line,
            format!(
                "b,\"row b\",1,0,55.0000,0.0000,{:.4},{:.4},25.0000,25.0000,62.19",
                ib.lo, ib.hi
            )
        );
        assert!(
            csv.lines()
                .any(|l| l == "c,\"row c\",1,0,30.0000,0.0000,,,,,"),
            "{csv}"
        );
        let tex = latex(&file, &rows, &notes, &u);
        assert!(tex.contains("] $\\uparrow$ & 62.19"), "{tex}");
    }

    #[test]
    fn more_than_five_precision_values_is_an_error_naming_the_row() {
        let text = WITH_REPORTED.replace(
            "paper: (precision: [51.07]",
            "paper: (precision: [1, 2, 3, 4, 5, 6]",
        );
        let err = AblationFile::parse(&text, std::path::Path::new("t1.ron"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("RRN [39]") && err.contains("6 precision"),
            "{err}"
        );
    }
}
