//! A per-device memory estimate of a training run, printed by `--dry-run` so a user knows before
//! launching whether a batch, micro-batch and device fit.
//!
//! Weights and optimizer state are counted from the model's shapes (f32). Activations come from
//! one measured figure: a whole DiffRIS training step at the paper's settings (SD-1.5, 512x512,
//! CP-adapter, PCMRD, loss, backward, AdamW; `bench_unet --phase step`, docs/BENCHMARKS.md's Speed
//! table) peaked at 9,123 MiB of resident memory on the CPU backend with one sample, 11,969 MiB
//! with two and 18,756 MiB with four: 3.14 GiB per sample from one to four, rounded up to 3.2
//! (2.78 from one to two, 3.31 from two to four; before GEGLU kept only its input: 9,088,
//! 12,244 and 19,577 MiB, 3.4 GiB per sample). Other input sizes scale it by their pixel count.
//! Other architectures have no measured figure. (Before the memory-efficient attention of
//! `diffris_kernels`, the UNet's forward and backward alone held about 10.3 GiB per sample.)

use diffris_kernels::SdBackend;
use diffris_model::diffris::parameter_counts;
use diffris_model::precision::Precision;
use diffris_model::sd::SdConfig;

use crate::config::run_spec::RunSpec;
use crate::device::usage::{Capacity, GIB};

/// Activation bytes per 512x512 sample of a DiffRIS training step with the frozen SD-1.5 UNet on
/// the CPU backend (see the module docs for the measurement).
pub const SD15_ACTIVATIONS_PER_SAMPLE: f64 = 3.2 * GIB;

/// The same with the frozen stack in f16 or bf16 (`model.precision`): `bench_unet --phase
/// step --precision f16` peaked at 7,042 MiB with one sample and 8,926 MiB with two, 1.84 GiB
/// for the second sample (f32: 3.1 GiB from one to two). The decoder, at f32, keeps the same
/// 0.9 GiB per sample at either precision.
pub const SD15_HALF_ACTIVATIONS_PER_SAMPLE: f64 = 1.84 * GIB;

/// The measured activation bytes per 512x512 sample at `precision`.
pub fn sd15_activations_per_sample(precision: Precision) -> f64 {
    if precision.is_f32() {
        SD15_ACTIVATIONS_PER_SAMPLE
    } else {
        SD15_HALF_ACTIVATIONS_PER_SAMPLE
    }
}

/// What a training process holds at its peak besides the estimate's three parts (encoded
/// splits, loaders, the allocator's slack), kept free when a run is checked against its
/// device: the paper recipe at 512 px with micro-batch 4 on the CPU backend peaked at 20.3 GiB
/// RSS (`/usr/bin/time`, 64 + 4 + 4 encoded samples, at an earlier revision whose `--dry-run`
/// estimated 18.3 GiB; this revision estimates the same run at 17.6): 2.0 to 2.7 GiB over,
/// rounded up.
pub const REST_OF_PROCESS: f64 = 3.0 * GIB;

/// The parts of a run's peak memory on one device, in bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryEstimate {
    /// The frozen SD stack's weights.
    pub frozen: f64,
    /// Trained parameters with their gradients and AdamW's two moments (4 copies).
    pub trained: f64,
    /// Activations of one pass (`None` where no figure is measured for the architecture).
    pub activations: Option<f64>,
    /// Samples per pass.
    pub pass_size: usize,
    /// The frozen stack's precision (what the activation figure was measured at).
    pub precision: Precision,
}

impl MemoryEstimate {
    /// What a run of `spec` holds at its peak on each of `devices` devices (every device keeps
    /// the frozen stack, the trained parameters with their gradients and runs passes of its
    /// share of each batch; the optimizer's moments live on the first, counted on each).
    pub fn of<B: SdBackend>(spec: &RunSpec, device: &B::Device, devices: usize) -> Self {
        let counts = parameter_counts::<B>(&spec.model, &spec.sd_arch, device);
        // Trained parameters are f32; the frozen stack is stored at the model's precision.
        let bytes = |trainable: bool| -> f64 {
            let per = if trainable {
                4.0
            } else {
                spec.model.precision.bytes() as f64
            };
            counts
                .iter()
                .filter(|c| c.trainable == trainable)
                .map(|c| c.count as f64 * per)
                .sum()
        };
        let (h, w) = spec.model.image_size;
        let pass_size = crate::training::loader::largest_pass(
            spec.train.batch_size,
            spec.train.pass_size(),
            devices,
        );
        let activations = (spec.sd_arch == SdConfig::sd15()).then(|| {
            sd15_activations_per_sample(spec.model.precision) * pass_size as f64 * (h * w) as f64
                / (512.0 * 512.0)
        });
        Self {
            frozen: bytes(false),
            trained: 4.0 * bytes(true),
            activations,
            pass_size,
            precision: spec.model.precision,
        }
    }

    /// The total, when every part is known.
    pub fn total(&self) -> Option<f64> {
        self.activations.map(|a| a + self.frozen + self.trained)
    }

    /// One line for `--dry-run`.
    pub fn describe(&self) -> String {
        let gib = |b: f64| {
            if b < 0.1 * GIB {
                format!("{:.1} MiB", b / (1u64 << 20) as f64)
            } else {
                format!("{:.1} GiB", b / GIB)
            }
        };
        let parts = format!(
            "{} frozen weights + {} trained parameters with gradients and AdamW state",
            gib(self.frozen),
            gib(self.trained)
        );
        match (self.activations, self.total()) {
            (Some(a), Some(t)) => format!(
                "about {} per device: {parts} + {} of activations ({} sample(s) per pass, \
                 {:.2} GiB per 512x512 sample at {} measured on the CPU backend)",
                gib(t),
                gib(a),
                self.pass_size,
                sd15_activations_per_sample(self.precision) / GIB,
                self.precision
            ),
            _ => format!(
                "{parts}, plus activations (no measured figure for this architecture; \
                 {} sample(s) per pass)",
                self.pass_size
            ),
        }
    }
}

/// Whether a run's estimate fits its device, and the line that says so.
#[derive(Clone, Debug, PartialEq)]
pub struct Fit {
    pub fits: bool,
    pub line: String,
}

impl MemoryEstimate {
    /// The most samples per pass whose estimate fits in `bytes` (0 when the weights alone do
    /// not fit); `None` without an activation figure.
    pub fn largest_pass_within(&self, bytes: f64) -> Option<usize> {
        let per_sample = self.activations? / self.pass_size.max(1) as f64;
        let room = bytes - self.frozen - self.trained;
        Some(if room <= 0.0 {
            0
        } else {
            (room / per_sample).floor() as usize
        })
    }

    /// Whether `runs` runs of this estimate at once (`--jobs`, all on the same device), each
    /// with [`REST_OF_PROCESS`] besides, fit `capacity`, with advice when they do not: the
    /// `--micro-batch` that fits. `None` without an activation figure.
    pub fn fit(&self, capacity: &Capacity, runs: usize) -> Option<Fit> {
        let need = self.total()? + REST_OF_PROCESS;
        let runs = runs.max(1);
        let share = capacity.bytes / runs as f64;
        let gib = |b: f64| format!("{:.1} GiB", b / GIB);
        let each = if runs > 1 {
            format!("{runs} runs at once, each about {}", gib(need))
        } else {
            format!("about {}", gib(need))
        };
        let of = format!(
            "{each} with the rest of the process, {} the {} of {}",
            if need <= share { "within" } else { "more than" },
            gib(capacity.bytes),
            capacity.what
        );
        if need <= share {
            return Some(Fit {
                fits: true,
                line: format!("fits: {of}"),
            });
        }
        let advice = match self.largest_pass_within(share - REST_OF_PROCESS)? {
            0 => format!(
                "not even one sample per pass fits: the frozen weights and trained parameters \
                 alone take {}{}",
                gib(self.frozen + self.trained),
                if runs > 1 { "; try --jobs 1" } else { "" }
            ),
            n => format!(
                "--micro-batch {n} fits{}",
                if runs > 1 { " (or fewer --jobs)" } else { "" }
            ),
        };
        Some(Fit {
            fits: false,
            line: format!("does not fit: {of}; {advice}"),
        })
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::Flex;

    use super::*;

    fn spec(micro_batch: Option<usize>) -> RunSpec {
        let mut spec = RunSpec::example();
        spec.train.micro_batch = micro_batch;
        spec
    }

    #[test]
    fn the_paper_setting_needs_its_micro_batches() {
        let device = Default::default();
        let whole = MemoryEstimate::of::<Flex>(&spec(None), &device, 1);
        let four = MemoryEstimate::of::<Flex>(&spec(Some(4)), &device, 1);
        // SD-1.5's frozen UNet, VAE encoder and CLIP text encoder: 859.5M + 34.2M + 123.1M
        // parameters in f32, about 3.8 GiB.
        assert!(
            (whole.frozen / GIB - 3.79).abs() < 0.05,
            "{}",
            whole.frozen / GIB
        );
        // Activations scale with the samples per pass: 32 samples' worth against 4.
        let per_sample = SD15_ACTIVATIONS_PER_SAMPLE;
        assert!((whole.activations.unwrap() - 32.0 * per_sample).abs() < 1.0);
        assert!((four.activations.unwrap() - 4.0 * per_sample).abs() < 1.0);
        assert_eq!(whole.trained, four.trained);
        assert!(
            four.describe().contains("4 sample(s) per pass"),
            "{}",
            four.describe()
        );
    }

    #[test]
    fn half_precision_halves_the_frozen_weights_and_uses_its_own_activation_figure() {
        let device = Default::default();
        let full = MemoryEstimate::of::<Flex>(&spec(Some(4)), &device, 1);
        let mut half_spec = spec(Some(4));
        half_spec.model.precision = Precision::Bf16;
        let half = MemoryEstimate::of::<Flex>(&half_spec, &device, 1);
        assert!(
            (half.frozen * 2.0 - full.frozen).abs() < 1.0,
            "2 bytes per weight, not 4"
        );
        assert_eq!(half.trained, full.trained, "trained parameters stay f32");
        assert!((half.activations.unwrap() / GIB - 4.0 * 1.84).abs() < 1e-9);
        assert!(half.describe().contains("at bf16"), "{}", half.describe());
    }

    /// Hand-computed: frozen 3 GiB + trained 1 GiB + 4 samples of 2 GiB = 12 GiB, and 3 GiB
    /// for the rest of the process.
    fn made_up() -> MemoryEstimate {
        MemoryEstimate {
            frozen: 3.0 * GIB,
            trained: 1.0 * GIB,
            activations: Some(8.0 * GIB),
            pass_size: 4,
            precision: Precision::F32,
        }
    }

    #[test]
    fn a_run_that_does_not_fit_is_told_the_micro_batch_that_does() {
        let e = made_up();
        let ram = |gib: f64| Capacity {
            bytes: gib * GIB,
            what: "RAM available".into(),
        };
        // 12 + 3 GiB in 16: fits.
        let fit = e.fit(&ram(16.0), 1).unwrap();
        assert!(fit.fits, "{fit:?}");
        assert_eq!(
            fit.line,
            "fits: about 15.0 GiB with the rest of the process, within the 16.0 GiB of RAM \
             available"
        );
        // In 12 GiB: (12 - 3 - 4) / 2 = 2.5, so 2 samples per pass.
        assert_eq!(e.largest_pass_within(9.0 * GIB), Some(2));
        let fit = e.fit(&ram(12.0), 1).unwrap();
        assert!(!fit.fits);
        assert_eq!(
            fit.line,
            "does not fit: about 15.0 GiB with the rest of the process, more than the 12.0 GiB \
             of RAM available; --micro-batch 2 fits"
        );
        // Two runs at once in 18 GiB: 9 each, (9 - 3 - 4) / 2 = 1 sample per pass.
        let fit = e.fit(&ram(18.0), 2).unwrap();
        assert!(!fit.fits);
        assert!(
            fit.line
                .starts_with("does not fit: 2 runs at once, each about 15.0 GiB with the rest")
                && fit.line.ends_with("--micro-batch 1 fits (or fewer --jobs)"),
            "{}",
            fit.line
        );
        // The weights (4 GiB) and the rest (3) exceed 6.5 GiB.
        let fit = e.fit(&ram(6.5), 1).unwrap();
        assert!(
            fit.line.ends_with(
                "not even one sample per pass fits: the frozen weights and trained parameters \
                 alone take 4.0 GiB"
            ),
            "{}",
            fit.line
        );
        // Without an activation figure nothing is said.
        let unknown = MemoryEstimate {
            activations: None,
            ..made_up()
        };
        assert_eq!(unknown.fit(&ram(1.0), 1), None);
    }

    #[test]
    fn on_eight_devices_each_holds_its_share_of_the_batch() {
        let device = Default::default();
        // Batch 32 on 8 GPUs: 4 samples per pass on each, with or without a micro-batch of 4.
        for micro in [None, Some(4)] {
            let eight = MemoryEstimate::of::<Flex>(&spec(micro), &device, 8);
            assert_eq!(eight.pass_size, 4, "{micro:?}");
            assert!((eight.activations.unwrap() - 4.0 * SD15_ACTIVATIONS_PER_SAMPLE).abs() < 1.0);
        }
        // Micro-batch 2 on 8 GPUs: two passes of 2 on each.
        assert_eq!(
            MemoryEstimate::of::<Flex>(&spec(Some(2)), &device, 8).pass_size,
            2
        );
        // Micro-batch 3 on 2 GPUs: ceil(32 / 6) = 6 passes each, 32 in 12 parts: at most 3.
        assert_eq!(
            MemoryEstimate::of::<Flex>(&spec(Some(3)), &device, 2).pass_size,
            3
        );
    }
}
