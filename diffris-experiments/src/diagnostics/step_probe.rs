//! One DiffRIS training step on any backend, from weights and a batch that do not depend on the
//! backend: how a backend is checked against the CPU reference (the cross-backend test in
//! `tests/all/backend_step.rs`).
//!
//! The step is the one burn-train runs (`Trainee`'s [`TrainStep`], then AdamW), preceded by the
//! frozen VAE and CLIP encoding of the batch (forward only, as the cache does). Weights are drawn
//! once on a reference backend and copied tensor by tensor into the probed backend's modules; the
//! batch is a fixed pattern. Both runs therefore compute the same function, and their losses and
//! gradients differ only by floating-point rounding. Random draws inside the step (the adapter's
//! dropout, OAD's routing dropout, PCMRD's Gumbel noise) come from each backend's own generator
//! and would differ, so [`ProbeSpec::tiny`] turns them off.

use diffris_kernels::{SdAutodiffBackend, SdBackend};
use std::collections::BTreeMap;
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{Int, Tensor, TensorData};
use burn::train::TrainStep;
use burn_store::{ModuleSnapshot, TensorSnapshot};
use diffris_data::ClipTokenizer;
use diffris_model::decoder::{CamdConfig, DecoderConfig, LmpConfig, PcmrdConfig};
use diffris_model::diffris::DiffRisConfig;
use diffris_model::sd::SdConfig;

use crate::config::profile::tiny_arch;
use crate::inputs::split::EncodedBatch;
use crate::training::Trainee;

/// The expressions of the probe batch (cycled when the batch is larger).
const EXPRESSIONS: [&str; 2] = [
    "the large red building on the left",
    "a small vehicle next to the road",
];

/// What one probe trains.
#[derive(Clone, Debug)]
pub struct ProbeSpec {
    pub model: DiffRisConfig,
    pub sd: SdConfig,
    pub batch: usize,
    pub lr: f64,
    pub weight_decay: f32,
    /// Optimizer steps (each on the same batch).
    pub steps: usize,
}

impl ProbeSpec {
    /// The tiny profile's architecture (64 px, 32 latent channels, VAE downsampling by 4) with
    /// `decoder`, a batch of 2, the tiny profile's lr and weight decay, two steps; no dropout
    /// (adapter, OAD's routing) and no Gumbel noise (see the module docs).
    pub fn tiny(decoder: DecoderConfig) -> Self {
        let mut model = DiffRisConfig {
            image_size: (64, 64),
            decoder,
            ..DiffRisConfig::default()
        };
        model.adapter.heads = 4;
        model.adapter.ffn_dim = 64;
        model.adapter.dropout = 0.0;
        match &mut model.decoder {
            DecoderConfig::Pcmrd(p) => p.gumbel_noise = false,
            DecoderConfig::Oad(o) => o.routing_dropout = 0.0,
            DecoderConfig::Lmp(_) | DecoderConfig::Camd(_) => {}
        }
        Self {
            model,
            sd: tiny_arch(),
            batch: 2,
            lr: 1e-3,
            weight_decay: 0.01,
            steps: 2,
        }
    }
}

/// Relative difference of the first step's loss a backend may show against the CPU reference:
/// the loss is a mean of values of order 1, and f32 kernels that sum in another order differ by a
/// few ulps per layer (measured on lavapipe: at most 3e-7).
pub const LOSS_REL_TOLERANCE: f64 = 1e-4;

/// The same for the losses after an update: the update carries the gradient differences below,
/// and PCMRD's hard assignment is an argmax, so a pixel whose two best tokens are within rounding
/// of each other can switch token (measured on lavapipe: up to 7e-4 for the full PCMRD).
pub const LATER_LOSS_REL_TOLERANCE: f64 = 1e-2;

/// Gradient difference a backend may show, relative to the gradient's scale: the largest
/// gradient of the same tensor, but at least [`GRAD_SCALE_FLOOR`] of the largest gradient of any
/// parameter. The adapter's gradients pass back through the whole frozen UNet (and start at a
/// scale of 1e-4, the adapter's gamma), where they are small remainders of large sums of both
/// signs, ordered differently on each backend and even between runs on wgpu (its autotuner picks
/// kernels per run): measured on lavapipe, up to 0.76% (the adapter's `gamma`, full PCMRD), with
/// run-to-run changes of the same order; decoder gradients agree to 5e-3 and better. A missing or
/// wrong backward shows as errors of order 1 (a strided-reshape bug in Burn's cubecl kernels
/// gave 173%).
pub const GRAD_REL_TOLERANCE: f64 = 2e-2;

/// Some gradients are zero in exact arithmetic and pure rounding noise in f32 (the key bias of an
/// attention: softmax ignores a shift shared by all keys), so their own largest value is no
/// scale to compare them on; they are compared on this fraction of the largest gradient instead.
pub const GRAD_SCALE_FLOOR: f64 = 1e-2;

/// Table 5's decoders and Table 6's first row (PCMRD without multi-scale fusion and tokens), at
/// the tiny profile's widths.
pub fn probe_decoders() -> Vec<(&'static str, DecoderConfig)> {
    let pcmrd = PcmrdConfig {
        hidden: 16,
        ..PcmrdConfig::default()
    };
    let lmp = LmpConfig {
        hidden: 16,
        ..LmpConfig::default()
    };
    vec![
        ("pcmrd", DecoderConfig::Pcmrd(pcmrd.clone())),
        (
            "pcmrd-baseline",
            DecoderConfig::Pcmrd(PcmrdConfig {
                multi_scale: false,
                query_tokens: false,
                hard_assignment: false,
                ..pcmrd
            }),
        ),
        ("lmp", DecoderConfig::Lmp(lmp.clone())),
        ("oad", DecoderConfig::Oad(lmp)),
        (
            "camd",
            DecoderConfig::Camd(CamdConfig {
                hidden: 16,
                layers: 2,
                heads: 2,
                attn_dim: 64,
                ffn_dim: 64,
                ..CamdConfig::default()
            }),
        ),
    ]
}

/// Weights of every component as plain data, keyed by module path.
#[derive(Clone, Debug)]
pub struct ProbeWeights {
    unet: Vec<(String, TensorData)>,
    vae: Vec<(String, TensorData)>,
    text_encoder: Vec<(String, TensorData)>,
    trainee: Vec<(String, TensorData)>,
}

/// Every tensor of `module` (parameters and buffers) by path.
pub fn to_data<B: SdBackend, M: ModuleSnapshot<B>>(module: &M) -> Vec<(String, TensorData)> {
    module
        .collect(None, None, false)
        .into_iter()
        .map(|s| {
            let data = s.to_data().expect("an in-memory tensor reads back");
            (s.full_path(), data)
        })
        .collect()
}

fn apply<B: SdBackend, M: ModuleSnapshot<B>>(
    module: &mut M,
    weights: &[(String, TensorData)],
    what: &str,
) -> anyhow::Result<()> {
    let snapshots = weights
        .iter()
        .map(|(path, data)| {
            let stack = path.split('.').map(str::to_string).collect();
            TensorSnapshot::from_data(data.clone(), stack, vec![], Default::default())
        })
        .collect();
    let result = module.apply(snapshots, None, None, false);
    anyhow::ensure!(
        result.errors.is_empty() && result.missing.is_empty() && result.unused.is_empty(),
        "copying the {what} weights: {} error(s), missing {:?}, unused {:?}",
        result.errors.len(),
        result.missing,
        result.unused
    );
    Ok(())
}

/// Held while weights are drawn from (or modules initialised with) a backend's random generator
/// here. Burn 0.21's backends keep one generator per process, so a seeded draw that another
/// thread's draws interleave with (tests run in parallel threads) gets other weights: the
/// comparisons of a probe against its reference stay valid, but tolerances measured on the
/// seed's weights do not (seen as a flaky half-precision test beside the tch test).
static DRAWS: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl ProbeWeights {
    /// Seeded weights of the frozen stack and of the trained modules, drawn on backend `R`.
    pub fn draw<R: SdBackend>(spec: &ProbeSpec, seed: u64, device: &R::Device) -> Self {
        let _draws = DRAWS.lock().unwrap_or_else(|e| e.into_inner());
        R::seed(device, seed);
        let sd = spec.sd.init::<R>(device);
        let (unet, vae, text_encoder) = (
            to_data(&sd.unet),
            to_data(&sd.vae),
            to_data(&sd.text_encoder),
        );
        let trainee = Trainee {
            model: spec.model.init(sd, device),
        };
        Self {
            unet,
            vae,
            text_encoder,
            trainee: to_data(&trainee),
        }
    }

    /// The model of `spec` on backend `B` holding exactly these weights.
    pub fn build<B: SdBackend>(
        &self,
        spec: &ProbeSpec,
        device: &B::Device,
    ) -> anyhow::Result<Trainee<B>> {
        // Initialising draws from the generator before the weights are replaced.
        let _draws = DRAWS.lock().unwrap_or_else(|e| e.into_inner());
        let mut sd = spec.sd.init::<B>(device);
        apply(&mut sd.unet, &self.unet, "UNet")?;
        apply(&mut sd.vae, &self.vae, "VAE")?;
        apply(&mut sd.text_encoder, &self.text_encoder, "text encoder")?;
        let mut trainee = Trainee {
            model: spec.model.init(sd, device),
        };
        apply(&mut trainee, &self.trainee, "trained")?;
        Ok(trainee)
    }
}

/// The probe batch as plain data: images `[N, 3, H, W]` in [-1, 1] (smooth stripes, different
/// per sample and channel), token ids `[N, 77]`, end-token indices `[N]` and rectangular masks
/// `[N, 1, H, W]`.
fn batch_data(spec: &ProbeSpec) -> anyhow::Result<[TensorData; 4]> {
    let (h, w) = spec.model.image_size;
    let n = spec.batch;
    let mut image = Vec::with_capacity(n * 3 * h * w);
    let mut mask = Vec::with_capacity(n * h * w);
    for s in 0..n {
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let v = (0.21 * x as f32 + 0.13 * y as f32 * (1 + s) as f32 + c as f32).sin();
                    image.push(0.9 * v);
                }
            }
        }
        for y in 0..h {
            for x in 0..w {
                let inside = y >= h / 4 && y < h / 2 + s * h / 8 && x >= w / 8 && x < w / 2;
                mask.push(if inside { 1f32 } else { 0.0 });
            }
        }
    }
    let tokenizer = ClipTokenizer::embedded()?;
    let (mut ids, mut eos) = (vec![], vec![]);
    for s in 0..n {
        let t = tokenizer.encode(EXPRESSIONS[s % EXPRESSIONS.len()])?;
        ids.extend(t.ids.iter().map(|&i| i as i64));
        eos.push(t.eos_index as i64);
    }
    let len = ids.len() / n;
    Ok([
        TensorData::new(image, [n, 3, h, w]),
        TensorData::new(ids, [n, len]),
        TensorData::new(eos, [n]),
        TensorData::new(mask, [n, 1, h, w]),
    ])
}

/// What one probe measured.
#[derive(Clone, Debug)]
pub struct StepProbe {
    /// The loss of each step (before its update).
    pub losses: Vec<f64>,
    /// Gradients of the first step, by parameter path (parameters without one are absent).
    pub grads: BTreeMap<String, Vec<f32>>,
    /// Trained parameters (not BatchNorm statistics) that the steps left unchanged.
    pub unmoved: Vec<String>,
    /// Whether every frozen weight is bit-identical after the steps.
    pub frozen_unchanged: bool,
    /// Wall time of each step (encoding, forward, backward, optimizer; the first includes
    /// kernel compilation on cubecl backends).
    pub step_seconds: Vec<f64>,
}

/// Collects the gradient of every float parameter by module path.
struct GradsByPath<'a> {
    grads: &'a GradientsParams,
    path: Vec<String>,
    out: BTreeMap<String, Vec<f32>>,
}

impl<B: SdAutodiffBackend> ModuleVisitor<B> for GradsByPath<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let values = g
                .into_data()
                .convert::<f32>()
                .to_vec()
                .expect("f32 gradient");
            self.out.insert(self.path.join("."), values);
        }
    }
}

/// The gradient of every float parameter of `trainee` in `grads`, by module path.
pub fn grads_by_path<B: SdAutodiffBackend>(
    trainee: &Trainee<B>,
    grads: &GradientsParams,
) -> BTreeMap<String, Vec<f32>> {
    let mut visitor = GradsByPath {
        grads,
        path: vec![],
        out: BTreeMap::new(),
    };
    trainee.visit(&mut visitor);
    visitor.out
}

fn frozen_values<B: SdBackend>(t: &Trainee<B>) -> Vec<(String, TensorData)> {
    let m = &t.model;
    [to_data(m.unet()), to_data(&m.vae), to_data(&m.text_encoder)].concat()
}

/// Runs `spec.steps` training steps on `device` from `weights`.
pub fn probe<B: SdAutodiffBackend>(
    spec: &ProbeSpec,
    weights: &ProbeWeights,
    device: &B::Device,
) -> anyhow::Result<StepProbe> {
    let mut trainee = weights.build::<B>(spec, device)?;
    let frozen_before = frozen_values(&trainee);
    let trained_before = to_data(&trainee);
    let [image, ids, eos, mask] = batch_data(spec)?;
    let mut optim = AdamWConfig::new()
        .with_weight_decay(spec.weight_decay)
        .init::<B, Trainee<B>>();
    let mut out = StepProbe {
        losses: vec![],
        grads: BTreeMap::new(),
        unmoved: vec![],
        frozen_unchanged: false,
        step_seconds: vec![],
    };
    for step in 0..spec.steps {
        let start = Instant::now();
        // The frozen encoders (forward only, detached), as when the cache is filled.
        let latent = trainee
            .model
            .encode_image(Tensor::from_data(image.clone(), device))
            .into_data();
        let text = trainee
            .model
            .encode_text(Tensor::<B, 2, Int>::from_data(ids.clone(), device))
            .into_data();
        let batch = EncodedBatch::<B> {
            latent: Tensor::from_data(latent, device),
            text: Tensor::from_data(text, device),
            eos: Tensor::from_data(eos.clone(), device),
            mask: Tensor::from_data(mask.clone(), device),
            indices: (0..spec.batch).collect(),
            loss_weight: 1.0,
            ticket: None,
        };
        let output = TrainStep::step(&trainee, batch);
        out.losses
            .push(output.item.loss.into_data().iter::<f64>().next().unwrap());
        if step == 0 {
            out.grads = grads_by_path(&trainee, &output.grads);
        }
        trainee = optim.step(spec.lr, trainee, output.grads);
        B::sync(device).map_err(|e| anyhow::anyhow!("device: {e:?}"))?;
        out.step_seconds.push(start.elapsed().as_secs_f64());
    }
    out.frozen_unchanged = frozen_values(&trainee) == frozen_before;
    out.unmoved = trained_before
        .iter()
        .zip(to_data(&trainee))
        .filter(|((path, before), (_, after))| !path.contains("running_") && before == after)
        .map(|((path, _), _)| path.clone())
        .collect();
    Ok(out)
}

/// How far a probe is from the reference probe.
#[derive(Clone, Debug)]
pub struct ProbeDiff {
    /// `|loss - loss_ref| / |loss_ref|` of each step.
    pub loss_rel: Vec<f64>,
    /// The worst gradient tensor: its path and `max |g - g_ref|` over its scale (see
    /// [`GRAD_REL_TOLERANCE`]).
    pub worst_grad: (String, f64),
    /// Parameters with a gradient on one side only.
    pub grad_paths_differ: Vec<String>,
}

/// `max |x|`.
fn max_abs(x: &[f32]) -> f64 {
    x.iter().fold(0f32, |m, v| m.max(v.abs())) as f64
}

/// `max |a - b|` over the common length.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) as f64
}

/// Compares `probe` with `reference`.
pub fn compare(probe: &StepProbe, reference: &StepProbe) -> ProbeDiff {
    let loss_rel = probe
        .losses
        .iter()
        .zip(&reference.losses)
        .map(|(a, b)| (a - b).abs() / b.abs().max(f64::MIN_POSITIVE))
        .collect();
    let global = reference
        .grads
        .values()
        .map(|g| max_abs(g))
        .fold(0f64, f64::max);
    let mut worst = (String::new(), 0f64);
    let mut differ = vec![];
    for (path, want) in &reference.grads {
        let Some(got) = probe.grads.get(path) else {
            differ.push(path.clone());
            continue;
        };
        let scale = max_abs(want).max(GRAD_SCALE_FLOOR * global);
        let err = max_abs_diff(got, want);
        let rel = if got.len() != want.len() {
            f64::INFINITY
        } else if scale > 0.0 {
            err / scale
        } else if err > 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
        if rel >= worst.1 {
            worst = (path.clone(), rel);
        }
    }
    differ.extend(
        probe
            .grads
            .keys()
            .filter(|p| !reference.grads.contains_key(*p))
            .cloned(),
    );
    ProbeDiff {
        loss_rel,
        worst_grad: worst,
        grad_paths_differ: differ,
    }
}

impl ProbeDiff {
    /// Whether the probe agrees with the reference within [`LOSS_REL_TOLERANCE`] (first step),
    /// [`LATER_LOSS_REL_TOLERANCE`] (later steps) and [`GRAD_REL_TOLERANCE`], with gradients for
    /// the same parameters.
    pub fn agrees(&self) -> bool {
        self.grad_paths_differ.is_empty()
            && self
                .loss_rel
                .first()
                .is_some_and(|&r| r < LOSS_REL_TOLERANCE)
            && self.loss_rel[1..]
                .iter()
                .all(|&r| r < LATER_LOSS_REL_TOLERANCE)
            && self.worst_grad.1 < GRAD_REL_TOLERANCE
    }
}

/// The forward pass of the probe batch in stages (training mode, no update): the VAE latent,
/// the CLIP states, the adapted context, every UNet feature the decoder reads, the logits and
/// the loss, in that order. Comparing them between backends finds the first stage that differs.
pub fn forward_stages<B: SdBackend>(
    spec: &ProbeSpec,
    weights: &ProbeWeights,
    device: &B::Device,
) -> anyhow::Result<Vec<(String, TensorData)>> {
    let trainee = weights.build::<B>(spec, device)?;
    let m = &trainee.model;
    let [image, ids, eos, mask] = batch_data(spec)?;
    let latent = m.encode_image(Tensor::from_data(image, device));
    let text = m.encode_text(Tensor::<B, 2, Int>::from_data(ids, device));
    let adapted = m.adapter.forward(text.clone());
    let mut stages = vec![
        ("vae latent".to_string(), latent.clone().into_data()),
        ("clip states".to_string(), text.clone().into_data()),
        ("adapted context".to_string(), adapted.clone().into_data()),
    ];
    let b = spec.batch;
    let unet = m.unet().forward(
        latent.clone(),
        Tensor::full([b], m.config.timestep, device),
        adapted,
        diffris_model::sd::UNetRequest {
            sample: false,
            attention_maps: m.config.cross_attention_maps,
            attention_probs: false,
        },
    );
    for (k, tap) in unet.taps.iter().enumerate() {
        stages.push((format!("unet tap {k}"), tap.clone().into_data()));
    }
    let eos = Tensor::<B, 1, Int>::from_data(eos, device);
    let out = m.forward_encoded(latent, text, eos, true);
    stages.push(("logits".to_string(), out.logits.clone().into_data()));
    let loss = m.loss(&out, Tensor::from_data(mask, device));
    stages.push(("loss".to_string(), loss.into_data()));
    Ok(stages)
}

/// How far each forward stage of a backend may be from the CPU reference, relative to the
/// stage's largest value: the tolerance the frozen stack's diffusers parity tests use (f32 sums
/// in another order through up to a few dozen layers).
pub const STAGE_REL_TOLERANCE: f64 = 1e-4;

/// Per stage of [`forward_stages`]: its name and `max |x - x_ref| / max |x_ref|`.
pub fn compare_stages(
    stages: &[(String, TensorData)],
    reference: &[(String, TensorData)],
) -> Vec<(String, f64)> {
    stages
        .iter()
        .zip(reference)
        .map(|((name, got), (_, want))| {
            let got: Vec<f32> = got.to_vec().expect("f32 stage");
            let want: Vec<f32> = want.to_vec().expect("f32 stage");
            let scale = max_abs(&want);
            let err = max_abs_diff(&got, &want);
            let rel = if got.len() != want.len() {
                f64::INFINITY
            } else {
                err / scale.max(f64::MIN_POSITIVE)
            };
            (name.clone(), rel)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(losses: &[f64], grads: &[(&str, &[f32])]) -> StepProbe {
        StepProbe {
            losses: losses.to_vec(),
            grads: grads
                .iter()
                .map(|(p, g)| (p.to_string(), g.to_vec()))
                .collect(),
            unmoved: vec![],
            frozen_unchanged: true,
            step_seconds: vec![],
        }
    }

    #[test]
    fn gradients_are_compared_on_their_scale_with_a_floor() {
        let reference = step(&[2.0, 1.0], &[("a", &[1.0, -2.0]), ("b", &[1e-6])]);
        // a: |(-1.99) - (-2)| / 2 = 5e-3. b: its own scale 1e-6 is below the floor
        // 1e-2 * 2 = 0.02, so 1e-6 / 0.02 = 5e-5 (on its own scale it would be 100%).
        let probe = step(&[2.0001, 1.005], &[("a", &[1.0, -1.99]), ("b", &[2e-6])]);
        let d = compare(&probe, &reference);
        assert_eq!(d.worst_grad.0, "a");
        assert!((d.worst_grad.1 - 5e-3).abs() < 1e-6, "{d:?}");
        assert!((d.loss_rel[0] - 5e-5).abs() < 1e-9 && (d.loss_rel[1] - 5e-3).abs() < 1e-9);
        assert!(d.grad_paths_differ.is_empty());
        // First loss within 1e-4, second within 1e-2, gradients within 2e-2.
        assert!(d.agrees());
        let worse_first = step(&[2.001, 1.0], &[("a", &[1.0, -2.0]), ("b", &[1e-6])]);
        assert!(!compare(&worse_first, &reference).agrees());
        let missing = step(&[2.0, 1.0], &[("a", &[1.0, -2.0])]);
        let d = compare(&missing, &reference);
        assert_eq!(d.grad_paths_differ, vec!["b".to_string()]);
        assert!(!d.agrees());
    }

    #[test]
    fn stages_are_compared_on_their_largest_value() {
        let r = vec![("x".to_string(), TensorData::new(vec![4f32, -2.0], [2]))];
        let g = vec![("x".to_string(), TensorData::new(vec![4f32, -2.004], [2]))];
        let rel = compare_stages(&g, &r);
        assert_eq!(rel[0].0, "x");
        assert!((rel[0].1 - 1e-3).abs() < 1e-6, "{rel:?}");
    }
}
