//! The batches of a run's three phases on one device, chosen to fit its memory: the training
//! passes (`--micro-batch`, or `auto`), evaluation (validation during training and the final
//! validation and test) and encoding (the frozen VAE and CLIP over each split), each with its
//! estimated peak (`--dry-run` prints them).
//!
//! Evaluation and encoding keep no autodiff graph, so a sample costs them far less than a
//! training pass (figures below); they run at the training pass size where that fits, and at the
//! most samples that fit otherwise, never at a batch the plan cannot place. Without a measured
//! figure for the architecture (the tiny profile's) or a known device size, every phase runs at
//! the training pass size, as before the plan.

pub mod estimate;

use diffris_model::precision::Precision;
use diffris_model::sd::SdConfig;

use crate::config::run_spec::RunSpec;
use crate::device::backend::DeviceSpec;
use crate::device::usage::{Capacity, GIB};
use crate::plan::estimate::{MemoryEstimate, REST_OF_PROCESS};

/// What an inference phase holds at its peak above its weights and inputs, at 512x512: with
/// the first sample of a batch, and with each further one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InferenceFigure {
    pub first: f64,
    pub each_more: f64,
}

impl InferenceFigure {
    /// Bytes at `batch` samples.
    pub fn bytes(&self, batch: usize) -> f64 {
        self.first + self.each_more * batch.saturating_sub(1) as f64
    }

    /// The most samples whose bytes fit in `room` (0 when not even one does).
    pub fn largest_within(&self, room: f64) -> usize {
        if room < self.first {
            0
        } else {
            1 + ((room - self.first) / self.each_more).floor() as usize
        }
    }

    /// The figure for inputs `scale` times 512x512's pixel count.
    fn scaled(self, scale: f64) -> Self {
        Self {
            first: self.first * scale,
            each_more: self.each_more * scale,
        }
    }
}

const MIB: f64 = (1u64 << 20) as f64;

/// The paper's model predicting masks from an encoded batch (frozen SD-1.5 UNet without a
/// graph, PCMRD): `bench_unet --phase eval` on the CPU backend held 533 MiB above the weights
/// and the batch at batch 1 and 799 MiB at batch 2, in f32 and in bf16 alike (the peak is the
/// decoder's, which stays f32; the UNet's blocked attention holds less); 1,330 MiB at batch 4,
/// where these two figures predict 1,331.
pub const SD15_EVAL: InferenceFigure = InferenceFigure {
    first: 533.0 * MIB,
    each_more: 266.0 * MIB,
};

/// Encoding (SD-1.5's VAE encoder on the image, CLIP on 77 tokens) with the frozen stack in
/// f32: `bench_unet --phase encode` on the CPU backend held 645 MiB above the weights and the
/// inputs at batch 1 and 1,029 MiB at batch 2.
pub const SD15_ENCODE: InferenceFigure = InferenceFigure {
    first: 645.0 * MIB,
    each_more: 384.0 * MIB,
};

/// The same with the frozen stack in bf16 or f16: 523 MiB at batch 1 and 1,035 MiB at batch 2
/// (`--precision bf16`; the CPU backend computes bf16 through f32, whose temporaries it adds).
pub const SD15_HALF_ENCODE: InferenceFigure = InferenceFigure {
    first: 523.0 * MIB,
    each_more: 512.0 * MIB,
};

/// Encoding threads on a device whose kernels run off the CPU: one runs while the other
/// decodes and resizes its next images; more would only hold more batches on the device.
pub const ACCELERATOR_ENCODERS: usize = 2;

/// What one run may use of its device.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Budget {
    /// The device's memory, or this run's share of it when `--jobs` runs share the device.
    pub share: Option<Capacity>,
    /// Whether the device computes off the CPU (a GPU), which caps the encoding threads at
    /// [`ACCELERATOR_ENCODERS`].
    pub accelerator: bool,
}

impl Budget {
    /// The budget of one of `runs` runs sharing `device` of `capacity`.
    pub fn shared(capacity: Option<Capacity>, runs: usize, device: DeviceSpec) -> Self {
        Self {
            share: capacity.map(|c| Capacity {
                bytes: c.bytes / runs.max(1) as f64,
                what: c.what,
            }),
            accelerator: !matches!(device, DeviceSpec::Flex | DeviceSpec::TchCpu),
        }
    }
}

/// One inference phase: samples per batch, batches encoded at once (threads), and the
/// estimated peak of the device (`None` without a measured figure).
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    pub batch: usize,
    pub workers: usize,
    pub peak: Option<f64>,
}

/// The inference phases of a run on one device (the training pass is its [`MemoryEstimate`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub eval: Phase,
    pub encode: Phase,
}

/// The measured inference figures at `precision`: (evaluation, encoding) of SD-1.5 at 512x512.
fn sd15_inference(precision: Precision) -> (InferenceFigure, InferenceFigure) {
    if precision.is_f32() {
        (SD15_EVAL, SD15_ENCODE)
    } else {
        (SD15_EVAL, SD15_HALF_ENCODE)
    }
}

impl Plan {
    /// The plan of `spec` on each of `devices` devices like `device`, within `budget`, with up
    /// to `threads` encoding threads.
    pub fn of<B: diffris_kernels::SdBackend>(
        spec: &RunSpec,
        device: &B::Device,
        devices: usize,
        budget: &Budget,
        threads: usize,
    ) -> Self {
        Self::new(
            spec,
            &MemoryEstimate::of::<B>(spec, device, devices),
            budget,
            threads,
        )
    }

    /// The plan of `spec` on a device of `budget`, whose training estimate is `train`, with up
    /// to `threads` encoding threads.
    pub fn new(spec: &RunSpec, train: &MemoryEstimate, budget: &Budget, threads: usize) -> Self {
        let pass = spec.train.pass_size();
        let (h, w) = spec.model.image_size;
        let figures = (spec.sd_arch == SdConfig::sd15()).then(|| {
            let (eval, encode) = sd15_inference(spec.model.precision);
            let scale = (h * w) as f64 / (512.0 * 512.0);
            (eval.scaled(scale), encode.scaled(scale))
        });
        // The bytes of the budget left beside `fixed` bytes, and the samples of `figure` in one
        // batch that fit there.
        let left = |fixed: f64| Some(budget.share.as_ref()?.bytes - REST_OF_PROCESS - fixed);
        let room = |fixed: f64, figure: &InferenceFigure| Some(figure.largest_within(left(fixed)?));
        let weights = train.frozen + train.trained;
        let eval = match &figures {
            Some((figure, _)) => {
                let batch = room(weights, figure).map_or(pass, |n| pass.min(n.max(1)));
                Phase {
                    batch,
                    workers: 1,
                    peak: Some(weights + figure.bytes(batch)),
                }
            }
            None => Phase {
                batch: pass,
                workers: 1,
                peak: None,
            },
        };
        let threads = if budget.accelerator {
            threads.min(ACCELERATOR_ENCODERS)
        } else {
            threads
        }
        .max(1);
        let encode = match &figures {
            Some((_, figure)) => {
                // Each thread holds one batch at a time.
                let batch = room(train.frozen, figure).map_or(pass, |n| pass.min(n.max(1)));
                let workers = left(train.frozen).map_or(threads, |bytes| {
                    ((bytes / figure.bytes(batch)).floor() as usize).clamp(1, threads)
                });
                Phase {
                    batch,
                    workers,
                    peak: Some(train.frozen + workers as f64 * figure.bytes(batch)),
                }
            }
            None => Phase {
                batch: pass,
                workers: threads,
                peak: None,
            },
        };
        Self { eval, encode }
    }

    /// The `--dry-run` lines of the inference phases (evaluation, encoding), with their batches
    /// and estimated peaks; the training pass's is [`MemoryEstimate::describe`].
    pub fn describe(&self) -> [String; 2] {
        let gib = |b: Option<f64>| {
            b.map_or("no measured figure for this architecture".into(), |b| {
                format!("about {:.1} GiB", b / GIB)
            })
        };
        [
            format!(
                "evaluation: batches of {}, {} per device (weights, trained parameters with \
                 their optimizer state, one batch without a graph)",
                self.eval.batch,
                gib(self.eval.peak)
            ),
            format!(
                "encoding: {} thread(s), batches of {}, {} per device (frozen weights and the \
                 threads' batches)",
                self.encode.workers,
                self.encode.batch,
                gib(self.encode.peak)
            ),
        ]
    }
}

/// `--micro-batch auto`: the most samples per pass whose training estimate fits `budget` with
/// the rest of the process (at most the batch), or why there is none: no measured figure for
/// the architecture, no known device size, or not even one sample fitting, so the run is
/// refused before anything is encoded.
pub fn auto_micro_batch(
    spec: &RunSpec,
    train: &MemoryEstimate,
    budget: &Budget,
) -> anyhow::Result<usize> {
    let run = format!("{}/{} seed {}", spec.ablation, spec.variant, spec.seed);
    let Some(share) = &budget.share else {
        anyhow::bail!(
            "{run}: --micro-batch auto needs the device's memory size, which diffris cannot read \
             on this backend: set {}=GIB or give --micro-batch N",
            crate::device::usage::DEVICE_MEMORY_VAR
        );
    };
    let Some(n) = train.largest_pass_within(share.bytes - REST_OF_PROCESS) else {
        anyhow::bail!(
            "{run}: --micro-batch auto has no measured activation figure for this SD \
             architecture (only SD-1.x's): give --micro-batch N"
        );
    };
    anyhow::ensure!(
        n > 0,
        "{run} does not fit its device even one sample per pass: the frozen weights and trained \
         parameters alone take {:.1} GiB, and the rest of the process {:.1} GiB, of the {:.1} \
         GiB of {}",
        (train.frozen + train.trained) / GIB,
        REST_OF_PROCESS / GIB,
        share.bytes / GIB,
        share.what
    );
    Ok(n.min(spec.train.batch_size))
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::Flex;

    use super::*;

    fn budget(gib: f64, accelerator: bool) -> Budget {
        Budget {
            share: Some(Capacity {
                bytes: gib * GIB,
                what: "GPU memory".into(),
            }),
            accelerator,
        }
    }

    /// The paper's run (SD-1.5, 512 px, batch 32) with `micro` samples per pass.
    fn paper(micro: Option<usize>) -> (RunSpec, MemoryEstimate) {
        let mut spec = RunSpec::example();
        spec.train.micro_batch = micro;
        let train = MemoryEstimate::of::<Flex>(&spec, &Default::default(), 1);
        (spec, train)
    }

    #[test]
    fn auto_picks_the_largest_pass_that_fits_and_refuses_what_cannot() {
        let (spec, train) = paper(None);
        let weights = (train.frozen + train.trained) / GIB;
        // (24 - 3 - 4.8) / 3.2 = 5.06 samples per pass on a 24 GiB GPU; (80 - 3 - 4.8) / 3.2 =
        // 22.6 on an 80 GB one; a 141 GB one holds the whole batch of 32.
        assert!((weights - 4.78).abs() < 0.05, "{weights}");
        assert_eq!(
            auto_micro_batch(&spec, &train, &budget(24.0, true)).unwrap(),
            5
        );
        assert_eq!(
            auto_micro_batch(&spec, &train, &budget(80.0, true)).unwrap(),
            22
        );
        assert_eq!(
            auto_micro_batch(&spec, &train, &budget(141.0, true)).unwrap(),
            32
        );
        let refused = auto_micro_batch(&spec, &train, &budget(7.5, true)).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("does not fit its device even one sample per pass"),
            "{refused}"
        );
        let unknown = auto_micro_batch(&spec, &train, &Budget::default()).unwrap_err();
        assert!(
            unknown.to_string().contains("DIFFRIS_DEVICE_MEMORY_GIB"),
            "{unknown}"
        );
    }

    /// A made-up training estimate, for hand-computed plans: 3 GiB of frozen weights, 1 GiB of
    /// trained parameters with their optimizer state.
    fn made_up(spec: &RunSpec) -> MemoryEstimate {
        MemoryEstimate {
            frozen: 3.0 * GIB,
            trained: 1.0 * GIB,
            activations: Some(3.2 * GIB * spec.train.pass_size() as f64),
            pass_size: spec.train.pass_size(),
            precision: Precision::F32,
        }
    }

    #[test]
    fn inference_figures_by_hand() {
        // 533 MiB for the first sample, 266 for each further one.
        assert_eq!(SD15_EVAL.bytes(1), 533.0 * MIB);
        assert_eq!(SD15_EVAL.bytes(4), (533.0 + 3.0 * 266.0) * MIB);
        assert_eq!(SD15_EVAL.largest_within(532.0 * MIB), 0);
        assert_eq!(SD15_EVAL.largest_within(533.0 * MIB), 1);
        assert_eq!(SD15_EVAL.largest_within(1331.0 * MIB), 4);
        assert_eq!(SD15_EVAL.largest_within(1330.0 * MIB), 3);
    }

    #[test]
    fn evaluation_and_encoding_batches_fit_where_the_whole_batch_does_not() {
        // The whole batch of 32 in one pass, 12 GiB: evaluation has 12 - 3 (rest of the
        // process) - 4 (weights) = 5 GiB = 5,120 MiB, 1 + floor((5,120 - 533) / 266) = 18
        // samples; encoding 12 - 3 - 3 = 6 GiB = 6,144 MiB, 1 + floor((6,144 - 645) / 384) =
        // 15 samples, one thread (15 samples take 645 + 14 * 384 = 6,021 MiB).
        let (spec, _) = paper(None);
        let plan = Plan::new(&spec, &made_up(&spec), &budget(12.0, true), 16);
        assert_eq!(plan.eval.batch, 18);
        assert_eq!(
            plan.eval.peak,
            Some(4.0 * GIB + (533.0 + 17.0 * 266.0) * MIB)
        );
        assert_eq!((plan.encode.batch, plan.encode.workers), (15, 1));
        // Micro-batches of 4, 24 GiB: both at the pass size; encoding's 18 GiB hold
        // floor(18,432 / (645 + 3 * 384)) = 10 threads' batches, of which an accelerator takes
        // two, the CPU backend all ten (of its 16 threads).
        let (spec, _) = paper(Some(4));
        let gpu = Plan::new(&spec, &made_up(&spec), &budget(24.0, true), 16);
        assert_eq!(
            (gpu.eval.batch, gpu.encode.batch, gpu.encode.workers),
            (4, 4, 2)
        );
        let cpu = Plan::new(&spec, &made_up(&spec), &budget(24.0, false), 16);
        assert_eq!((cpu.encode.batch, cpu.encode.workers), (4, 10));
        assert_eq!(
            cpu.encode.peak,
            Some(3.0 * GIB + 10.0 * (645.0 + 3.0 * 384.0) * MIB)
        );
        // Unknown device size: the pass size, and every thread the device may use.
        let blind = Plan::new(&spec, &made_up(&spec), &Budget::default(), 16);
        assert_eq!(
            (blind.eval.batch, blind.encode.batch, blind.encode.workers),
            (4, 4, 16)
        );
        assert!(
            blind.eval.peak.is_some(),
            "the estimate itself needs no device size"
        );
    }

    #[test]
    fn without_a_figure_every_phase_runs_at_the_pass_size() {
        let (mut spec, _) = paper(Some(4));
        spec.sd_arch = SdConfig::tiny();
        let train = MemoryEstimate::of::<Flex>(&spec, &Default::default(), 1);
        let plan = Plan::new(&spec, &train, &budget(1.0, false), 2);
        assert_eq!(
            (plan.eval.batch, plan.encode.batch, plan.encode.workers),
            (4, 4, 2)
        );
        assert_eq!((plan.eval.peak, plan.encode.peak), (None, None));
        assert!(
            plan.describe()[0].contains("no measured figure"),
            "{:?}",
            plan.describe()
        );
    }
}
