//! Each test sample's score of a finished run (`test_scores.csv`): what the table's intervals
//! are bootstrapped from ([`crate::eval::bootstrap`]). One line per sample in the split's order,
//! `index,sample,intersection,union` (pixel counts at the protocol's resolution; the sample is
//! the dataset's id of the referring expression). Written before the run is sealed and sealed
//! with it; read back, its metrics must be the run's `result.json` test metrics exactly.

use anyhow::Context;

use crate::config::RunDir;
use crate::eval::metrics::{MetricAccumulator, Metrics, SampleScore};
use crate::util::atomic_file::write_atomic;

/// A run's test scores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestScores {
    /// Each sample's id, in split order.
    pub samples: Vec<String>,
    /// Each sample's `(intersection, union)`.
    pub counts: Vec<(u64, u64)>,
}

impl TestScores {
    pub fn new(ids: impl IntoIterator<Item = String>, scores: &[SampleScore]) -> Self {
        Self {
            samples: ids.into_iter().collect(),
            counts: scores.iter().map(|s| (s.intersection, s.union)).collect(),
        }
    }

    /// The metrics of these samples (the runner's accumulator, in order).
    pub fn metrics(&self) -> Metrics {
        self.counts
            .iter()
            .copied()
            .collect::<MetricAccumulator>()
            .summary()
    }

    fn to_csv(&self) -> anyhow::Result<Vec<u8>> {
        let mut w = csv::Writer::from_writer(vec![]);
        w.write_record(["index", "sample", "intersection", "union"])?;
        for (k, (id, (i, u))) in self.samples.iter().zip(&self.counts).enumerate() {
            w.write_record([k.to_string(), id.clone(), i.to_string(), u.to_string()])?;
        }
        Ok(w.into_inner()?)
    }

    fn parse(bytes: &[u8], path: &std::path::Path) -> anyhow::Result<Self> {
        let mut r = csv::Reader::from_reader(bytes);
        let header = r
            .headers()
            .with_context(|| format!("reading {}", path.display()))?;
        anyhow::ensure!(
            header == vec!["index", "sample", "intersection", "union"],
            "{}: the header is {:?}, expected index,sample,intersection,union",
            path.display(),
            header
        );
        let mut scores = Self {
            samples: vec![],
            counts: vec![],
        };
        for (k, record) in r.records().enumerate() {
            let line = k + 2;
            let record = record.with_context(|| format!("{} line {line}", path.display()))?;
            let field = |f: usize| -> anyhow::Result<u64> {
                record[f].parse().with_context(|| {
                    format!(
                        "{} line {line}: `{}` is not a count",
                        path.display(),
                        &record[f]
                    )
                })
            };
            anyhow::ensure!(
                field(0)? == k as u64,
                "{} line {line}: index {}, expected {k}",
                path.display(),
                &record[0]
            );
            let (i, u) = (field(2)?, field(3)?);
            anyhow::ensure!(
                i <= u,
                "{} line {line}: intersection {i} exceeds union {u}",
                path.display()
            );
            scores.samples.push(record[1].to_string());
            scores.counts.push((i, u));
        }
        Ok(scores)
    }
}

impl RunDir {
    /// Writes `test_scores.csv` (atomically).
    pub fn write_test_scores(&self, scores: &TestScores) -> anyhow::Result<()> {
        write_atomic(&self.test_scores(), &scores.to_csv()?)
    }

    /// Reads `test_scores.csv`, checked against the run's test metrics `expected`; `None` for a
    /// run finished before runs wrote it.
    pub fn read_test_scores(&self, expected: &Metrics) -> anyhow::Result<Option<TestScores>> {
        let path = self.test_scores();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let scores = TestScores::parse(&bytes, &path)?;
        let got = scores.metrics();
        anyhow::ensure!(
            got.agrees_with(expected),
            "{} does not score what {} recorded ({} against {}): restore the run's files, or \
             train it again with --restart",
            path.display(),
            self.result().display(),
            got.line("its samples"),
            expected.line("result.json")
        );
        Ok(Some(scores))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finished run (batch_norm/passes_2 seed 0 of the tiny profile) whose result.json
    /// serde_json's default float parser reads back an ulp off its written mIoU: its own test
    /// scores must still agree with it, while one pixel more in one sample of the largest
    /// masks a file may hold (2^28 pixels) must not.
    #[test]
    fn metrics_read_back_from_json_agree_and_one_pixel_does_not() {
        let written = "31.575541898290442";
        let exact: f64 = written.parse().unwrap();
        let read: f64 = serde_json::from_str(written).unwrap();
        let m = |miou: f64| Metrics {
            samples: 200,
            oiou: 34.661572052401745,
            miou,
            precision: [27.0, 18.0, 8.0, 1.5, 0.0],
        };
        assert!(m(read).agrees_with(&m(exact)));
        let one_pixel = 100.0 / (200.0 * (1u64 << 28) as f64);
        assert!(!m(exact + one_pixel).agrees_with(&m(exact)));
        let mut fewer = m(exact);
        fewer.samples = 199;
        assert!(!fewer.agrees_with(&m(exact)));
    }

    #[test]
    fn scores_round_trip_and_a_file_that_disagrees_with_the_result_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::at(dir.path());
        let scores = TestScores {
            samples: vec!["12".into(), "a, \"quoted\" id".into(), "7".into()],
            counts: vec![(2, 4), (0, 0), (3, 3)],
        };
        assert_eq!(run.read_test_scores(&scores.metrics()).unwrap(), None);
        run.write_test_scores(&scores).unwrap();
        let text = std::fs::read_to_string(run.test_scores()).unwrap();
        assert_eq!(
            text,
            "index,sample,intersection,union\n0,12,2,4\n1,\"a, \"\"quoted\"\" id\",0,0\n2,7,3,3\n"
        );
        // I 5 of U 7 -> oIoU 71.43; IoUs 0.5, 0 (empty union), 1 -> mIoU 50.
        let m = scores.metrics();
        assert_eq!((m.miou, m.samples), (50.0, 3));
        assert!((m.oiou - 500.0 / 7.0).abs() < 1e-12);
        assert_eq!(run.read_test_scores(&m).unwrap(), Some(scores.clone()));
        let mut other = m.clone();
        other.miou = 51.0;
        let err = run.read_test_scores(&other).unwrap_err().to_string();
        assert!(err.contains("test_scores.csv does not score what"), "{err}");
        std::fs::write(
            run.test_scores(),
            "index,sample,intersection,union\n0,12,5,4\n",
        )
        .unwrap();
        let err = format!("{:#}", run.read_test_scores(&m).unwrap_err());
        assert!(
            err.contains("line 2: intersection 5 exceeds union 4"),
            "{err}"
        );
    }
}
