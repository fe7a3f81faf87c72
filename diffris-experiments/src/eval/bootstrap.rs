//! 95% intervals of a table's test numbers: a bootstrap over the test samples (paired: every
//! row is resampled at the same sample indices, so a row's difference from the first row keeps
//! what the rows share) and, where a row ran several seeds, over its seeds.
//!
//! One resample draws `n` sample indices with replacement (shared by all rows) and, per row with
//! `S > 1` seeds, `S` seed indices with replacement; a row's value is then the mean over its
//! drawn seeds of the metric each seed scores on the drawn samples, computed by the same
//! [`MetricAccumulator`] as the runner (so the resample that draws every index once reproduces
//! `result.json`). The interval is the nearest-rank 2.5th and 97.5th percentile of
//! [`RESAMPLES`] values; the generator is ChaCha8 from [`BOOTSTRAP_SEED`], so a table's intervals
//! are the same on every machine.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::metrics::{MetricAccumulator, Metrics};
use crate::config::recipe::Column;

/// Resamples per table: the percentile's own Monte Carlo error is then about a tenth of the
/// interval's half-width's first digit (the 2.5th percentile of 2,000 draws rests on 50).
pub const RESAMPLES: usize = 2000;
/// The generator's seed (fixed: the intervals are part of the table's byte identity).
pub const BOOTSTRAP_SEED: u64 = 0xB007_5EED;
/// The intervals' coverage.
pub const LEVEL: f64 = 0.95;

/// Each seed's per-sample `(intersection, union)`, all seeds over the same samples in the same
/// order.
pub type RowScores = Vec<Vec<(u64, u64)>>;

/// A closed interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

impl Interval {
    /// Whether zero lies outside it (a difference the resamples agree on in sign).
    pub fn excludes_zero(&self) -> bool {
        self.lo > 0.0 || self.hi < 0.0
    }
}

/// One row's intervals, per requested column.
#[derive(Clone, Debug, PartialEq)]
pub struct RowIntervals {
    pub value: Vec<Interval>,
    /// Of the row's value minus the first row's (`None` for the first row itself, or when the
    /// first row has no scores).
    pub diff: Option<Vec<Interval>>,
}

/// The intervals of each row (`None` where a row has no scores). Every scored row must hold
/// the same number of samples (the caller checks they are the same samples); an empty seed
/// list counts as unscored.
pub fn bootstrap(
    rows: &[Option<&RowScores>],
    columns: &[Column],
    resamples: usize,
    seed: u64,
) -> Vec<Option<RowIntervals>> {
    let Some(n) = rows.iter().find_map(|r| scored(r)).map(|s| s[0].len()) else {
        return vec![None; rows.len()];
    };
    assert!(
        rows.iter()
            .filter_map(|r| scored(r))
            .all(|s| s.iter().all(|seed| seed.len() == n)),
        "bootstrap rows over different numbers of samples"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // values[row][column][resample]
    let mut values: Vec<Vec<Vec<f64>>> = rows
        .iter()
        .map(|_| vec![Vec::with_capacity(resamples); columns.len()])
        .collect();
    let mut idx = vec![0usize; n];
    for _ in 0..resamples {
        for k in idx.iter_mut() {
            *k = rng.random_range(0..n);
        }
        for (r, row) in rows.iter().enumerate() {
            let Some(row) = scored(row) else { continue };
            let drawn: Vec<usize> = if row.len() == 1 {
                vec![0]
            } else {
                (0..row.len())
                    .map(|_| rng.random_range(0..row.len()))
                    .collect()
            };
            let mut per_seed: Vec<Option<Metrics>> = vec![None; row.len()];
            for &s in &drawn {
                if per_seed[s].is_none() {
                    per_seed[s] = Some(metrics_at(&row[s], &idx));
                }
            }
            for (c, &column) in columns.iter().enumerate() {
                let sum: f64 = drawn
                    .iter()
                    .map(|&s| per_seed[s].as_ref().expect("scored above").column(column))
                    .sum();
                values[r][c].push(sum / drawn.len() as f64);
            }
        }
    }
    let first = scored(&rows[0]).map(|_| &values[0]);
    rows.iter()
        .enumerate()
        .map(|(r, row)| {
            scored(row)?;
            let value = values[r].iter().map(|v| percentiles(v.clone())).collect();
            let diff = match first {
                Some(first) if r > 0 => Some(
                    values[r]
                        .iter()
                        .zip(first)
                        .map(|(v, f)| percentiles(v.iter().zip(f).map(|(a, b)| a - b).collect()))
                        .collect(),
                ),
                _ => None,
            };
            Some(RowIntervals { value, diff })
        })
        .collect()
}

/// The row, when it holds at least one seed with at least one sample.
fn scored<'r>(row: &Option<&'r RowScores>) -> Option<&'r RowScores> {
    row.filter(|s| !s.is_empty() && !s[0].is_empty())
}

/// The metrics of one seed's samples at `idx` (repeats counted as often as drawn).
fn metrics_at(scores: &[(u64, u64)], idx: &[usize]) -> Metrics {
    idx.iter()
        .map(|&i| scores[i])
        .collect::<MetricAccumulator>()
        .summary()
}

/// The nearest-rank percentiles of [`LEVEL`]'s two tails.
fn percentiles(mut v: Vec<f64>) -> Interval {
    v.sort_by(f64::total_cmp);
    let rank = |p: f64| ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    let tail = (1.0 - LEVEL) / 2.0;
    Interval {
        lo: v[rank(tail)],
        hi: v[rank(1.0 - tail)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_seed(counts: &[(u64, u64)]) -> RowScores {
        vec![counts.to_vec()]
    }

    /// The exact bootstrap distribution of the mean of `n` draws from `values`, by enumerating
    /// all `n^n` index tuples, and its nearest-rank percentile `p`: the smallest value whose
    /// cumulative probability reaches `p`, with the margin to the neighbouring jump.
    fn exact_percentile(values: &[f64], p: f64) -> (f64, f64) {
        let n = values.len();
        let mut means = vec![];
        for code in 0..n.pow(n as u32) {
            let (mut c, mut sum) = (code, 0.0);
            for _ in 0..n {
                sum += values[c % n];
                c /= n;
            }
            means.push(sum / n as f64);
        }
        means.sort_by(f64::total_cmp);
        let total = means.len() as f64;
        let k = ((p * total).ceil() as usize).max(1) - 1;
        let v = means[k];
        let below = means.iter().filter(|&&m| m < v - 1e-12).count() as f64 / total;
        let upto = means.iter().filter(|&&m| m <= v + 1e-12).count() as f64 / total;
        (v, (p - below).min(upto - p))
    }

    #[test]
    fn the_interval_of_one_seed_is_the_exact_bootstraps_percentiles() {
        // Four samples with IoU 0, 1/4, 1/2 and 1: the exact bootstrap distribution has 256
        // equally likely resamples, enumerated independently of the sampler.
        let counts = [(0, 3), (1, 4), (2, 4), (5, 5)];
        let ious: Vec<f64> = counts
            .iter()
            .map(|&(i, u)| 100.0 * i as f64 / u as f64)
            .collect();
        let (lo, lo_margin) = exact_percentile(&ious, 0.025);
        let (hi, hi_margin) = exact_percentile(&ious, 0.975);
        // With 20,000 resamples the empirical percentile's standard error is about 0.0011 in
        // probability; the exact jumps lie further from 2.5% and 97.5% than four of those.
        assert!(
            lo_margin > 0.0045 && hi_margin > 0.0045,
            "{lo_margin} {hi_margin}"
        );
        let rows = [Some(&one_seed(&counts))];
        let got = bootstrap(&rows, &[Column::Miou], 20_000, 1);
        let value = got[0].as_ref().unwrap().value[0];
        assert!(
            (value.lo - lo).abs() < 1e-9 && (value.hi - hi).abs() < 1e-9,
            "{value:?} vs {lo} {hi}"
        );
        assert!(got[0].as_ref().unwrap().diff.is_none());
    }

    #[test]
    fn several_seeds_add_the_seed_spread() {
        // One sample, two seeds scoring IoU 0.2 and 0.6: a resample draws seeds (a, a), (a, b),
        // (b, a) or (b, b), means 20, 40, 40, 60 with probability 1/4, 1/2, 1/4, so the 2.5th and
        // 97.5th percentiles are 20 and 60.
        let row: RowScores = vec![vec![(1, 5)], vec![(3, 5)]];
        let got = bootstrap(&[Some(&row)], &[Column::Miou, Column::Oiou], 2000, 3);
        let r = got[0].as_ref().unwrap();
        for v in &r.value {
            assert!(
                (v.lo - 20.0).abs() < 1e-9 && (v.hi - 60.0).abs() < 1e-9,
                "{v:?}"
            );
        }
    }

    #[test]
    fn pairing_keeps_a_uniform_gain_exact_and_equal_rows_show_no_difference() {
        // Row b beats row a by exactly 1/4 IoU on every sample: at the same resampled indices
        // the mIoU difference is 25 in every resample, however much the samples vary; an
        // unpaired comparison would see the rows' own spread (about +-20 here).
        let a = one_seed(&[(1, 4), (0, 4), (3, 4), (1, 4), (2, 4)]);
        let b = one_seed(&[(2, 4), (1, 4), (4, 4), (2, 4), (3, 4)]);
        let got = bootstrap(
            &[Some(&a), Some(&b), Some(&a), None],
            &[Column::Miou],
            2000,
            5,
        );
        let diff = got[1].as_ref().unwrap().diff.as_ref().unwrap()[0];
        assert!(
            (diff.lo - 25.0).abs() < 1e-9 && (diff.hi - 25.0).abs() < 1e-9,
            "{diff:?}"
        );
        assert!(diff.excludes_zero());
        let value = got[1].as_ref().unwrap().value[0];
        assert!(value.hi - value.lo > 20.0, "{value:?}");
        let same = got[2].as_ref().unwrap().diff.as_ref().unwrap()[0];
        assert_eq!((same.lo, same.hi), (0.0, 0.0));
        assert!(!same.excludes_zero());
        assert!(got[3].is_none());
    }

    #[test]
    fn every_column_is_the_runners_metric_on_the_resample() {
        // All samples equal: every resample is the same split, so each interval is the point
        // the accumulator gives for it (Pr@0.5 counts an IoU of exactly 0.5).
        let row = one_seed(&[(2, 4), (2, 4), (2, 4)]);
        let columns = [Column::Pr50, Column::Pr60, Column::Oiou, Column::Miou];
        let got = bootstrap(&[Some(&row)], &columns, 200, 9);
        let value = &got[0].as_ref().unwrap().value;
        let points: Vec<f64> = value.iter().map(|v| v.lo).collect();
        assert_eq!(points, [100.0, 0.0, 50.0, 50.0]);
        assert!(value.iter().all(|v| v.lo == v.hi));
    }

    #[test]
    fn no_scored_row_gives_no_interval_and_the_same_seed_gives_the_same_intervals() {
        assert_eq!(
            bootstrap(&[None, None], &[Column::Miou], 100, 0),
            vec![None, None]
        );
        let row = one_seed(&[(1, 4), (0, 4), (3, 4)]);
        let once = bootstrap(&[Some(&row)], &[Column::Miou], 500, 7);
        assert_eq!(once, bootstrap(&[Some(&row)], &[Column::Miou], 500, 7));
    }
}
