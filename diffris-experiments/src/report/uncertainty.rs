//! The 95% intervals a table prints beside its test numbers ([`crate::eval::bootstrap`]), from
//! each row's `test_scores.csv`, and which rows could not have one and why.

use crate::config::recipe::{AblationFile, Column};
use crate::eval::bootstrap::{
    BOOTSTRAP_SEED, Interval, RESAMPLES, RowIntervals, RowScores, bootstrap,
};
use crate::report::runs::Row;

/// The intervals of one table's test columns, per row of ours.
#[derive(Clone, Debug, Default)]
pub struct Uncertainty {
    columns: Vec<Column>,
    rows: Vec<Option<RowIntervals>>,
    /// The number of test samples resampled (0: no row has intervals).
    pub samples: usize,
    /// Rows without intervals although they have finished runs, with the reason.
    pub missing: Vec<(String, &'static str)>,
    /// Whether some row with intervals ran one seed only.
    pub single_seed: bool,
}

impl Uncertainty {
    /// No intervals (a table of runs without scores).
    pub fn none() -> Self {
        Self::default()
    }

    /// Bootstraps the file's test columns over the rows' scores. A row has intervals when every
    /// finished seed of it has its scores and they cover the same samples as the other rows'.
    pub fn of(file: &AblationFile, rows: &[Row<'_>]) -> Self {
        let mut missing = vec![];
        let mut reference: Option<&[String]> = None;
        let scores: Vec<Option<RowScores>> = rows
            .iter()
            .map(|row| {
                if row.results.is_empty() {
                    return None;
                }
                let Some(all) = row
                    .scores
                    .iter()
                    .map(Option::as_ref)
                    .collect::<Option<Vec<_>>>()
                else {
                    missing.push((
                        row.variant.label.clone(),
                        "a run of it finished before runs recorded each test sample's score",
                    ));
                    return None;
                };
                let ids = &all[0].samples;
                if all.iter().any(|s| &s.samples != ids)
                    || reference.is_some_and(|r| r != ids.as_slice())
                {
                    missing.push((
                        row.variant.label.clone(),
                        "its runs scored other test samples than the table's other runs",
                    ));
                    return None;
                }
                reference.get_or_insert(ids);
                Some(all.iter().map(|s| s.counts.clone()).collect())
            })
            .collect();
        let single_seed = scores.iter().flatten().any(|s| s.len() == 1);
        let columns = file.columns.clone();
        let refs: Vec<Option<&RowScores>> = scores.iter().map(Option::as_ref).collect();
        Self {
            rows: bootstrap(&refs, &columns, RESAMPLES, BOOTSTRAP_SEED),
            samples: reference.map_or(0, <[String]>::len),
            columns,
            missing,
            single_seed,
        }
    }

    fn column(&self, c: Column) -> Option<usize> {
        self.columns.iter().position(|&k| k == c)
    }

    /// The interval of row `row`'s (0-based among ours) mean in column `c`.
    pub fn interval(&self, row: usize, c: Column) -> Option<Interval> {
        Some(self.rows.get(row)?.as_ref()?.value[self.column(c)?])
    }

    /// The interval of row `row`'s difference from the first row in column `c`.
    pub fn diff(&self, row: usize, c: Column) -> Option<Interval> {
        Some(self.rows.get(row)?.as_ref()?.diff.as_ref()?[self.column(c)?])
    }

    /// `↑` or `↓` when the row's difference from the first row lies above or below zero.
    pub fn mark(&self, row: usize, c: Column) -> &'static str {
        match self.diff(row, c) {
            Some(d) if d.lo > 0.0 => " ↑",
            Some(d) if d.hi < 0.0 => " ↓",
            _ => "",
        }
    }

    /// The notes that explain the intervals and the rows without them.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = vec![];
        if self.rows.iter().any(Option::is_some) {
            notes.push(format!(
                "[lo, hi]: the 95% interval of our test mean, from a bootstrap over the {} test \
                 samples ({RESAMPLES} resamples; every row resampled at the same samples) and over \
                 the seeds where several ran. ↑ / ↓: the row's difference from row 1 has a 95% \
                 interval (from the same resamples) above / below zero.",
                self.samples
            ));
        }
        if self.single_seed {
            notes.push(
                "A row of one seed has an interval over the test samples only: it says how well \
                 the test set measures that trained model, not how much training it again with \
                 another seed would move it (run more seeds, --seeds, for that)."
                    .into(),
            );
        }
        for (label, why) in &self.missing {
            notes.push(format!("{label}: no interval; {why}."));
        }
        notes
    }
}
