//! The loss curve of a pre-training run: every optimizer step's training loss and the validation
//! loss after each segment, fed by a burn-train metric and kept in `loss_curve.csv` for resume.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use burn::train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry,
    SerializedEntry,
};
use serde::{Deserialize, Serialize};

use super::step::DenoiseStats;
use crate::records::tfevents::Scalar;
use crate::util::atomic_file::write_atomic;

/// The losses of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LossCurve {
    /// The training loss of every optimizer step (its batch's mean), in order.
    pub train: Vec<f64>,
    /// `(steps, loss)`: the validation loss after each segment.
    pub valid: Vec<(usize, f64)>,
    /// `(steps, loss)`: the same with every caption replaced by the empty one. How far it lies
    /// above `valid` is what the UNet reads from the captions.
    #[serde(default)]
    pub valid_empty_caption: Vec<(usize, f64)>,
    /// `(steps, loss)`: the validation loss of the weights' moving average (runs that keep one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub valid_ema: Vec<(usize, f64)>,
}

impl LossCurve {
    /// The curve of the CSV file `path` (see [`Self::write`]), or an empty one when there is
    /// none.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut curve = Self::default();
        for (k, line) in text.lines().enumerate().skip(1) {
            let bad = || anyhow::anyhow!("{} line {}: not `{HEADER}`", path.display(), k + 1);
            let cells: Vec<&str> = line.split(',').collect();
            let (step, train, valid, empty, ema) = match cells[..] {
                [step, train, valid, empty] => (step, train, valid, empty, ""),
                [step, train, valid, empty, ema] => (step, train, valid, empty, ema),
                _ => return Err(bad()),
            };
            let step: usize = step.parse().map_err(|_| bad())?;
            let number = |c: &str| -> anyhow::Result<Option<f64>> {
                if c.is_empty() {
                    Ok(None)
                } else {
                    c.parse().map(Some).map_err(|_| bad())
                }
            };
            if let Some(t) = number(train)? {
                if step != curve.train.len() + 1 {
                    return Err(bad());
                }
                curve.train.push(t);
            }
            if let Some(v) = number(valid)? {
                curve.valid.push((step, v));
            }
            if let Some(v) = number(empty)? {
                curve.valid_empty_caption.push((step, v));
            }
            if let Some(v) = number(ema)? {
                curve.valid_ema.push((step, v));
            }
        }
        Ok(curve)
    }

    /// Writes the curve as CSV, one row per step (`step,train,valid,valid_empty_caption`, and
    /// `valid_ema` for a run that keeps an average; the validation cells only after a segment,
    /// the row of step 0 only the starting weights' validation loss). Numbers are written in
    /// their shortest exact form and read back with Rust's own parser, so a resumed run
    /// continues from the very values it saved.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let averaged = !self.valid_ema.is_empty();
        let mut out = if averaged {
            format!("{HEADER},valid_ema\n")
        } else {
            format!("{HEADER}\n")
        };
        let map = |points: &[(usize, f64)]| -> std::collections::BTreeMap<usize, f64> {
            points.iter().copied().collect()
        };
        let (valid, empty, ema) = (
            map(&self.valid),
            map(&self.valid_empty_caption),
            map(&self.valid_ema),
        );
        let last = self
            .train
            .len()
            .max(valid.keys().next_back().copied().unwrap_or(0));
        for step in 0..=last {
            let train = step
                .checked_sub(1)
                .and_then(|i| self.train.get(i))
                .map_or(String::new(), |t| t.to_string());
            let v = valid.get(&step).map_or(String::new(), |v| v.to_string());
            let e = empty.get(&step).map_or(String::new(), |v| v.to_string());
            let a = ema.get(&step).map_or(String::new(), |v| v.to_string());
            if !(train.is_empty() && v.is_empty() && e.is_empty() && a.is_empty()) {
                out.push_str(&format!("{step},{train},{v},{e}"));
                if averaged {
                    out.push_str(&format!(",{a}"));
                }
                out.push('\n');
            }
        }
        write_atomic(path, out.as_bytes())
    }

    /// The curve's scalars for TensorBoard and `scalars.jsonl` at steps `from..=to`: the
    /// training loss and the (constant) learning rate of each optimizer step, and the
    /// validation losses (with and without captions, and of the average) where they were taken.
    pub fn scalars(&self, from: usize, to: usize, lr: f64, wall_time: f64) -> Vec<Scalar> {
        let at = |tag: &str, step: usize, value: f64| Scalar {
            wall_time,
            step: step as i64,
            tag: tag.into(),
            value,
        };
        let mut out = Vec::new();
        for step in from.max(1)..=to.min(self.train.len()) {
            out.push(at("pretrain/train_loss", step, self.train[step - 1]));
            out.push(at("pretrain/lr", step, lr));
        }
        let within = |(step, _): &&(usize, f64)| (from..=to).contains(step);
        for (tag, points) in [
            ("pretrain/valid_loss", &self.valid),
            (
                "pretrain/valid_empty_caption_loss",
                &self.valid_empty_caption,
            ),
            ("pretrain/valid_ema_loss", &self.valid_ema),
        ] {
            out.extend(
                points
                    .iter()
                    .filter(within)
                    .map(|&(step, v)| at(tag, step, v)),
            );
        }
        out
    }

    /// The curve up to `steps` optimizer steps (what a run resumed there has).
    pub fn truncate(&mut self, steps: usize) {
        self.train.truncate(steps);
        self.valid.retain(|(s, _)| *s <= steps);
        self.valid_empty_caption.retain(|(s, _)| *s <= steps);
        self.valid_ema.retain(|(s, _)| *s <= steps);
    }

    /// The mean training loss of steps `range`.
    pub fn train_mean(&self, range: std::ops::Range<usize>) -> Option<f64> {
        let part = self.train.get(range)?;
        (!part.is_empty()).then(|| part.iter().sum::<f64>() / part.len() as f64)
    }
}

/// The CSV header of a curve.
const HEADER: &str = "step,train,valid,valid_empty_caption";

#[derive(Default)]
struct State {
    curve: LossCurve,
    /// The weighted losses and weights of the step (training) or validation pass in progress.
    step: (f64, f64),
    valid: (f64, f64),
}

/// The curve shared between the metrics thread and the runner.
#[derive(Clone, Default)]
pub struct PretrainLog {
    inner: Arc<Mutex<State>>,
}

impl PretrainLog {
    pub fn new(curve: LossCurve) -> Self {
        Self {
            inner: Arc::new(Mutex::new(State {
                curve,
                ..State::default()
            })),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a training pass: its loss counts by its share of its optimizer batch, and the step
    /// ends when the shares reach 1.
    pub fn add_train(&self, s: DenoiseStats) {
        let mut st = self.state();
        st.step.0 += s.weight * s.loss;
        st.step.1 += s.weight;
        if st.step.1 >= 1.0 - 1e-9 {
            let loss = st.step.0 / st.step.1;
            st.curve.train.push(loss);
            st.step = (0.0, 0.0);
        }
    }

    /// Adds a validation pass (its weight: its share of the validation set).
    pub fn add_valid(&self, s: DenoiseStats) {
        let mut st = self.state();
        st.valid.0 += s.weight * s.loss;
        st.valid.1 += s.weight;
    }

    /// Records the validation loss with empty captions after `steps` steps.
    pub fn add_empty_caption(&self, steps: usize, loss: f64) {
        self.state().curve.valid_empty_caption.push((steps, loss));
    }

    /// Records the validation loss of the weights' average after `steps` steps.
    pub fn add_ema(&self, steps: usize, loss: f64) {
        self.state().curve.valid_ema.push((steps, loss));
    }

    /// Closes the validation after `steps` optimizer steps; returns its loss.
    pub fn finish_validation(&self, steps: usize) -> Option<f64> {
        let mut st = self.state();
        let (sum, weight) = std::mem::take(&mut st.valid);
        (weight > 0.0).then(|| {
            let loss = sum / weight;
            st.curve.valid.push((steps, loss));
            loss
        })
    }

    /// Optimizer steps recorded so far.
    pub fn steps(&self) -> usize {
        self.state().curve.train.len()
    }

    /// The mean training loss of the last `k` steps (NaN before the first).
    pub fn recent_train_mean(&self, k: usize) -> f64 {
        let st = self.state();
        let n = st.curve.train.len();
        st.curve
            .train_mean(n.saturating_sub(k)..n)
            .unwrap_or(f64::NAN)
    }

    pub fn curve(&self) -> LossCurve {
        self.state().curve.clone()
    }
}

/// The denoising loss as a burn-train metric; it feeds the [`PretrainLog`].
#[derive(Clone)]
pub struct DenoiseMetric {
    log: PretrainLog,
    train: bool,
    sum: (f64, f64),
    last: f64,
}

impl DenoiseMetric {
    pub fn train(log: PretrainLog) -> Self {
        Self {
            log,
            train: true,
            sum: (0.0, 0.0),
            last: 0.0,
        }
    }

    pub fn valid(log: PretrainLog) -> Self {
        Self {
            train: false,
            ..Self::train(log)
        }
    }

    fn current(&self) -> f64 {
        if self.sum.1 > 0.0 {
            self.sum.0 / self.sum.1
        } else {
            0.0
        }
    }
}

impl Metric for DenoiseMetric {
    type Input = DenoiseStats;

    fn name(&self) -> MetricName {
        Arc::new("Loss".to_string())
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: None,
            higher_is_better: false,
        }
        .into()
    }

    fn update(&mut self, s: &DenoiseStats, _meta: &MetricMetadata) -> SerializedEntry {
        if self.train {
            self.log.add_train(*s);
        } else {
            self.log.add_valid(*s);
        }
        self.sum.0 += s.weight * s.loss;
        self.sum.1 += s.weight;
        self.last = s.loss;
        SerializedEntry::new(
            format!("segment {:.5} - pass {:.5}", self.current(), s.loss),
            NumericEntry::Value(s.loss).serialize(),
        )
    }

    fn clear(&mut self) {
        self.sum = (0.0, 0.0);
    }
}

impl Numeric for DenoiseMetric {
    fn value(&self) -> NumericEntry {
        NumericEntry::Value(self.last)
    }

    fn running_value(&self) -> NumericEntry {
        NumericEntry::Value(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Passes of shares 3/8, 3/8, 2/8 make one step whose loss is their weighted mean; by
    /// hand (3 * 1 + 3 * 2 + 2 * 5) / 8 = 19/8.
    #[test]
    fn a_step_is_the_weighted_mean_of_its_passes() {
        let log = PretrainLog::default();
        for (loss, weight) in [(1.0, 0.375), (2.0, 0.375), (5.0, 0.25)] {
            log.add_train(DenoiseStats { loss, weight });
        }
        log.add_train(DenoiseStats {
            loss: 4.0,
            weight: 1.0,
        });
        assert_eq!(log.curve().train, vec![19.0 / 8.0, 4.0]);
        log.add_valid(DenoiseStats {
            loss: 1.0,
            weight: 0.75,
        });
        log.add_valid(DenoiseStats {
            loss: 3.0,
            weight: 0.25,
        });
        assert_eq!(log.finish_validation(2), Some(1.5));
        assert_eq!(log.finish_validation(3), None, "nothing validated since");
        let mut curve = log.curve();
        assert_eq!(curve.valid, vec![(2, 1.5)]);
        // The CSV reads back to the same values, bit for bit (values with long expansions).
        curve.train.push(0.1 + 0.2);
        curve.valid.push((3, 1.0999313592910767));
        curve.valid_empty_caption.push((0, 2.5));
        curve.valid_empty_caption.push((3, 1.2345678901234567));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss_curve.csv");
        curve.write(&path).unwrap();
        assert_eq!(LossCurve::read(&path).unwrap(), curve);
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .starts_with(&format!("{HEADER}\n"))
        );
        // With an average's losses: a fifth column, read back as written.
        curve.valid_ema.extend([(0, 2.5), (3, 0.30000000000000004)]);
        curve.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&format!("{HEADER},valid_ema\n")), "{text}");
        assert!(text.contains("\n2,4,1.5,,\n"), "{text}");
        assert_eq!(LossCurve::read(&path).unwrap(), curve);
        curve.truncate(1);
        assert_eq!((curve.train.len(), curve.valid.len()), (1, 0));
        assert_eq!(curve.valid_empty_caption, [(0, 2.5)]);
        assert_eq!(curve.valid_ema, [(0, 2.5)]);
    }

    /// A segment's scalars by hand: steps 3..=4 of a curve with validation at 0, 2 and 4 give
    /// the two steps' losses and rates and the validation point at step 4 only.
    #[test]
    fn a_segments_scalars() {
        let curve = LossCurve {
            train: vec![1.0, 0.9, 0.8, 0.7],
            valid: vec![(0, 1.5), (2, 1.2), (4, 1.1)],
            valid_empty_caption: vec![(0, 1.6), (2, 1.3), (4, 1.25)],
            valid_ema: vec![(0, 1.5), (2, 1.25), (4, 1.05)],
        };
        let got: Vec<(String, i64, f64)> = curve
            .scalars(3, 4, 1e-3, 7.0)
            .into_iter()
            .map(|s| (s.tag, s.step, s.value))
            .collect();
        let want = [
            ("pretrain/train_loss", 3, 0.8),
            ("pretrain/lr", 3, 1e-3),
            ("pretrain/train_loss", 4, 0.7),
            ("pretrain/lr", 4, 1e-3),
            ("pretrain/valid_loss", 4, 1.1),
            ("pretrain/valid_empty_caption_loss", 4, 1.25),
            ("pretrain/valid_ema_loss", 4, 1.05),
        ];
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.0.as_str(), g.1, g.2), w);
        }
        // The start: the validation points at step 0 and no training step.
        assert_eq!(curve.scalars(0, 0, 1e-3, 7.0).len(), 3);
    }
}
