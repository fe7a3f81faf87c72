//! A per-device memory estimate of a training run, printed by `--dry-run` so a user knows before
//! launching whether a batch, micro-batch and device fit.
//!
//! Weights and optimizer state are counted from the model's shapes (f32). Activations come from
//! one measured figure: a whole DiffRIS training step at the paper's settings (SD-1.5, 512x512,
//! CP-adapter, PCMRD, loss, backward, AdamW; `bench_unet --phase step`, the README's Speed
//! table) peaked at 9,123 MiB of resident memory on the CPU backend with one sample, 11,969 MiB
//! with two and 18,756 MiB with four: 3.14 GiB per sample from one to four, rounded up to 3.2
//! (2.78 from one to two, 3.31 from two to four; before GEGLU kept only its input: 9,088,
//! 12,244 and 19,577 MiB, 3.4 GiB per sample). Other input sizes scale it by their pixel count.
//! Other architectures have no measured figure. (Before the memory-efficient attention of
//! `diffris_model::ops`, the UNet's forward and backward alone held about 10.3 GiB per sample.)

use diffris_model::diffris::parameter_counts;
use diffris_model::ops::SdBackend;
use diffris_model::precision::Precision;
use diffris_model::sd::SdConfig;

use crate::profile::RunSpec;

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

const GIB: f64 = (1u64 << 30) as f64;

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
