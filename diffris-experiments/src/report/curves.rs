//! The training curves of a run, read back from its directory: validation mIoU per epoch
//! (`metrics.csv`) and the training loss of every iteration (burn-train's
//! `train/epoch-N/Loss.log`, one `value,count` line per iteration), smoothed for plotting.

use crate::config::RunDir;
use crate::training::metric_files::epoch_file;

/// What a run directory holds for its curves, each file read once.
pub struct Curves {
    /// Rows of `metrics.csv` with all six columns
    /// (`epoch, train_loss, train_miou, val_loss, val_miou, val_oiou`).
    epochs: Vec<Vec<f64>>,
    /// The logged loss of every iteration, per epoch, from epoch 1 up to the first missing log.
    iterations: Vec<Vec<f64>>,
}

impl Curves {
    /// Reads `metrics.csv` and the iteration logs of `run` (missing files read as empty).
    pub fn read(run: &RunDir) -> Self {
        let text = std::fs::read_to_string(run.metrics_csv()).unwrap_or_default();
        let epochs = text
            .lines()
            .skip(1)
            .map(|l| {
                l.split(',')
                    .filter_map(|x| x.parse().ok())
                    .collect::<Vec<f64>>()
            })
            .filter(|f| f.len() == 6)
            .collect();
        let iterations = (1..)
            .map_while(|e| {
                let log = epoch_file(&run.train_logs(), e, "Loss");
                let text = std::fs::read_to_string(log).ok()?;
                Some(
                    text.lines()
                        .filter_map(|l| l.split(',').next()?.trim().parse().ok())
                        .collect::<Vec<f64>>(),
                )
            })
            .collect();
        Self { epochs, iterations }
    }

    /// `(epoch, validation mIoU)` at the end of every finished epoch.
    pub fn validation_miou(&self) -> Vec<(f64, f64)> {
        self.epochs.iter().map(|f| (f[0], f[4])).collect()
    }

    /// The smoothing window for the loss: a 40th of the iterations, at least one.
    pub fn default_window(&self) -> usize {
        (self.iterations.iter().map(Vec::len).sum::<usize>() / 40).max(1)
    }

    /// The training loss against epochs elapsed (iteration `i` of `n` in epoch `e` sits at
    /// `e - 1 + (i + 1) / n`), as a trailing moving mean over `window` iterations, at most
    /// `max_points` points. Without iteration logs, each epoch's mean loss at its end.
    pub fn training_loss(&self, window: usize, max_points: usize) -> Vec<(f64, f64)> {
        if self.iterations.is_empty() {
            return self.epochs.iter().map(|f| (f[0], f[1])).collect();
        }
        let total: usize = self.iterations.iter().map(Vec::len).sum();
        let window = window.max(1);
        let step = total.div_ceil(max_points.max(1)).max(1);
        let mut out = Vec::new();
        let (mut sum, mut recent) = (0.0, std::collections::VecDeque::new());
        let mut k = 0;
        for (e, losses) in self.iterations.iter().enumerate() {
            let n = losses.len() as f64;
            for (i, &v) in losses.iter().enumerate() {
                sum += v;
                recent.push_back(v);
                if recent.len() > window {
                    sum -= recent.pop_front().expect("non-empty");
                }
                k += 1;
                if k % step == 0 || k == total {
                    out.push((e as f64 + (i + 1) as f64 / n, sum / recent.len() as f64));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_dir() -> (tempfile::TempDir, RunDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::at(tmp.path());
        std::fs::write(
            dir.metrics_csv(),
            "epoch,train_loss,train_miou,val_loss,val_miou,val_oiou\n\
             1,2.5,10,1.5,20.5,21\n2,1.5,30,1.0,40.25,41\n",
        )
        .unwrap();
        for (e, lines) in [(1, "4.0,1\n2.0,1\n3.0,1\n1.0,1\n"), (2, "2.0,1\n0.0,1\n")] {
            let log = epoch_file(&dir.train_logs(), e, "Loss");
            std::fs::create_dir_all(log.parent().unwrap()).unwrap();
            std::fs::write(log, lines).unwrap();
        }
        (tmp, dir)
    }

    #[test]
    fn validation_points_sit_at_the_end_of_each_epoch() {
        let (_tmp, dir) = run_dir();
        assert_eq!(
            Curves::read(&dir).validation_miou(),
            vec![(1.0, 20.5), (2.0, 40.25)]
        );
    }

    #[test]
    fn iterations_are_spread_over_their_epoch_and_averaged_over_the_window() {
        let (_tmp, dir) = run_dir();
        // Epoch 1 has 4 iterations (x = 0.25 .. 1.0), epoch 2 has 2 (x = 1.5, 2.0); window 2:
        // 4, (4+2)/2, (2+3)/2, (3+1)/2, (1+2)/2, (2+0)/2.
        assert_eq!(
            Curves::read(&dir).training_loss(2, 100),
            vec![
                (0.25, 4.0),
                (0.5, 3.0),
                (0.75, 2.5),
                (1.0, 2.0),
                (1.5, 1.5),
                (2.0, 1.0)
            ]
        );
        // At most 3 points: every second one (the last always kept).
        assert_eq!(
            Curves::read(&dir).training_loss(1, 3),
            vec![(0.5, 2.0), (1.0, 1.0), (2.0, 0.0)]
        );
        assert_eq!(
            Curves::read(&dir).default_window(),
            1,
            "6 iterations / 40, at least one"
        );
    }

    #[test]
    fn without_iteration_logs_the_epoch_means_are_used() {
        let (_tmp, dir) = run_dir();
        std::fs::remove_dir_all(dir.train_logs()).unwrap();
        assert_eq!(
            Curves::read(&dir).training_loss(3, 100),
            vec![(1.0, 2.5), (2.0, 1.5)]
        );
    }
}
