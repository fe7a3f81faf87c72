//! Benchmark of the frozen SD-1.5 UNet (on the CPU backend by default; `--device` picks any
//! compiled-in one) at latent 64x64, context 77x768, batch `--batch` (1). Phases:
//!
//! - `forward`: the UNet's forward pass;
//! - `fwdbwd`: forward + backward to the context with frozen weights (what training does
//!   through the UNet);
//! - `train`: forward, a mean-squared error against a fixed random target, and backward to
//!   every weight of a trained UNet (what `diffris pretrain` and a `model.unet: trainable`
//!   run do; f32 only);
//! - `step`: one whole DiffRIS training step at the paper's settings (image 8x the latent
//!   side, 512x512 by default): frozen UNet, CP-adapter, PCMRD, loss, backward and AdamW, on an
//!   encoded batch (as training reads it from the cache);
//! - `profile`: the memory a training step's graph keeps, stage by stage (counted by the
//!   allocator, not RSS), one JSON line per stage before the usual line;
//! - `eval`: the paper's model predicting masks for an encoded batch (UNet without a graph,
//!   PCMRD): what validation and test run;
//! - `encode`: the frozen VAE encoder and CLIP text encoder on a batch of images (8x the latent
//!   side) and 77-token texts: what encoding a split runs.
//!
//! Run each phase in its own process so the peak RSS belongs to that phase:
//!
//! ```sh
//! cargo run --release -p diffris-experiments --bin bench_unet -- --phase forward
//! cargo run --release -p diffris-experiments --bin bench_unet -- --phase fwdbwd
//! cargo run --release -p diffris-experiments --bin bench_unet -- --phase train
//! cargo run --release -p diffris-experiments --bin bench_unet -- --phase step --batch 2
//! cargo run --release -p diffris-experiments --bin bench_unet -- --phase step --precision f16
//! python tools/bench_unet.py --phase forward     # the PyTorch reference, same machine
//! ```
//!
//! Prints one JSON line: phase, arch, seconds of every repeat and their median, peak RSS (MiB),
//! and `device_mib`: on the CPU backend, for `eval` and `encode`, the most the heap held during
//! the timed repeats above what it held before them (weights and inputs; other phases: the
//! heap's peak); on cubecl backends the memory their pool had reserved from the device after
//! the repeats (weights included); elsewhere `null`.

use std::time::Instant;

use burn::backend::Autodiff;
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::Int;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use burn::train::TrainStep;
use clap::Parser;
use diffris_experiments::commands::run_args::parse_precision;
use diffris_experiments::device::backend::{
    BackendJob, DeviceBackend, DeviceSpec, RunTarget, dispatch,
};
use diffris_experiments::inputs::split::EncodedBatch;
use diffris_experiments::training::Trainee;
use diffris_kernels::PoolOps;
use diffris_model::decoder::{Decoder, DecoderInput};
use diffris_model::diffris::{DiffRisConfig, DiffRisOutput};
use diffris_model::precision::{Precision, cast_module};
use diffris_model::sd::{SdConfig, UNetRequest};

#[derive(Parser)]
struct Args {
    /// forward, fwdbwd, train, step, profile, eval or encode.
    #[arg(long, default_value = "forward")]
    phase: String,
    /// sd15, tiny, or tiny_profile (the tiny profile's architecture: 32 latent channels, one
    /// head per level; what `diffris pretrain` trains by default at latent 16).
    #[arg(long, default_value = "sd15")]
    arch: String,
    /// Latent side.
    #[arg(long, default_value_t = 64)]
    latent: usize,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Timed repeats after one warm-up.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Device (as for `diffris --device`); default: the first compiled-in backend.
    #[arg(long)]
    device: Option<DeviceSpec>,
    /// Precision of the frozen UNet (and, for `step`/`profile`, of the whole frozen stack):
    /// f32, f16 or bf16.
    #[arg(long, default_value = "f32", value_parser = parse_precision)]
    precision: Precision,
}

/// Peak resident set size of this process (Linux `VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// One warm-up and `repeats` timed calls of `f`, each issued from the backend's compute pool
/// as the commands issue their steps (`PoolOps`).
fn time<B: PoolOps, F: FnMut() + Send>(repeats: usize, mut f: F) -> Vec<f64> {
    B::sd_on_pool(&mut f);
    (0..repeats)
        .map(|_| {
            let t = Instant::now();
            B::sd_on_pool(&mut f);
            t.elapsed().as_secs_f64()
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    diffris_experiments::device::allocator::retain_freed_memory();
    let args = Args::parse();
    let device = args.device.unwrap_or_else(DeviceSpec::default_compiled);
    let (n, (times, device_mib)) = dispatch(device, Bench { args: &args })??;
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "{{\"phase\":\"{}\",\"arch\":\"{}\",\"precision\":\"{}\",\"device\":\"{device}\",\"params\":{n},\"latent\":{},\"batch\":{},\"seconds\":{:?},\"median_s\":{:.3},\"peak_rss_mib\":{:.0},\"device_mib\":{}}}",
        args.phase,
        args.arch,
        args.precision,
        args.latent,
        args.batch,
        times,
        sorted[sorted.len() / 2],
        peak_rss_mib().unwrap_or(f64::NAN),
        device_mib.map_or("null".to_string(), |m| format!("{m:.0}"))
    );
    Ok(())
}

/// The benchmark on one backend: the parameter count and the timed repeats.
struct Bench<'a> {
    args: &'a Args,
}

impl BackendJob for Bench<'_> {
    type Output = anyhow::Result<(usize, (Vec<f64>, Option<f64>))>;

    fn run<B: DeviceBackend>(self, device: B::Device, target: RunTarget) -> Self::Output {
        let args = self.args;
        let arch = match args.arch.as_str() {
            "tiny_profile" => diffris_experiments::config::profile::tiny_arch(),
            name => SdConfig::preset(name)
                .ok_or_else(|| anyhow::anyhow!("unknown arch {name} (sd15, tiny, tiny_profile)"))?,
        };
        // The inference phases build their own models on the plain backend.
        let inference = match args.phase.as_str() {
            "eval" => Some(evaluation::<B>(&arch, args, &device)?),
            "encode" => Some(encoding::<B>(&arch, args, &device)?),
            _ => None,
        };
        if let Some((n, times)) = inference {
            return Ok((n, (times, device_mib(target.spec))));
        }
        type AB<B> = Autodiff<B>;
        AB::<B>::seed(&device, 0);
        let trained = args.phase == "train";
        anyhow::ensure!(
            !trained || args.precision == Precision::F32,
            "--phase train trains the UNet's weights in f32 only"
        );
        let unet = arch.unet.init::<AB<B>>(&device);
        let unet = cast_module(if trained { unet } else { unet.no_grad() }, args.precision);
        let n = unet.num_params(); // materialise the weights before timing
        let l = args.latent;
        let latent = Tensor::<AB<B>, 4>::random(
            [args.batch, arch.unet.in_channels, l, l],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let context = Tensor::<AB<B>, 3>::random(
            [args.batch, 77, arch.unet.cross_attention_dim],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let t = Tensor::<AB<B>, 1>::ones([args.batch], &device);
        let req = UNetRequest {
            sample: true,
            ..Default::default()
        };
        let times = match args.phase.as_str() {
            "forward" => {
                let inner = burn::module::AutodiffModule::valid(&unet);
                let (z, c, tt) = (latent.inner(), context.inner(), t.inner());
                time::<B, _>(args.repeats, || {
                    let out = inner
                        .forward(z.clone(), tt.clone(), c.clone(), req)
                        .sample
                        .unwrap();
                    let _ = out.sum().into_scalar();
                })
            }
            "fwdbwd" => time::<B, _>(args.repeats, || {
                let ctx = context.clone().require_grad();
                let out = unet
                    .forward(latent.clone(), t.clone(), ctx.clone(), req)
                    .sample
                    .unwrap();
                let grads = out.sum().backward();
                let g = ctx.grad(&grads).expect("gradient reaches the context");
                let _ = g.sum().into_scalar();
            }),
            "train" => {
                let target = Tensor::<AB<B>, 4>::random(
                    latent.dims(),
                    Distribution::Normal(0.0, 1.0),
                    &device,
                );
                time::<B, _>(args.repeats, || {
                    let out = unet
                        .forward(latent.clone(), t.clone(), context.clone(), req)
                        .sample
                        .unwrap();
                    let loss = (out - target.clone()).powi_scalar(2).mean();
                    // Every weight's gradient, taken out of the graph as an optimizer would.
                    drop(GradientsParams::from_grads(loss.backward(), &unet));
                })
            }
            "step" => {
                drop(unet);
                training_step::<B>(&arch, args, &device)?
            }
            "profile" => {
                drop(unet);
                stage_profile::<B>(&arch, args, &device)?
            }
            other => anyhow::bail!(
                "unknown phase {other} (forward, fwdbwd, train, step, profile, eval or encode)"
            ),
        };
        Ok((n, (times, device_mib(target.spec))))
    }
}

/// The device memory a phase used: on the CPU backend the heap's peak above what was live at
/// the last [`start_measuring`], on cubecl backends their pool's reservation.
fn device_mib(device: DeviceSpec) -> Option<f64> {
    use diffris_experiments::device::usage::{DeviceMemory, query};
    use std::sync::atomic::Ordering;
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    match query(device)? {
        DeviceMemory::Heap { peak, .. } => Some(mib(
            peak.saturating_sub(HEAP_BASE.load(Ordering::Relaxed) as u64)
        )),
        DeviceMemory::Pool { reserved, .. } => Some(mib(reserved)),
    }
}

/// Heap bytes live before the timed repeats of an inference phase.
static HEAP_BASE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Starts the heap measurement of [`device_mib`]: what is live now is the base.
fn start_measuring() {
    use diffris_experiments::device::allocator::{live_bytes, reset_peak};
    HEAP_BASE.store(live_bytes(), std::sync::atomic::Ordering::Relaxed);
    reset_peak();
}

/// Timed predictions (`--phase eval`): the paper's model around random frozen weights of
/// `arch` on the plain backend and one random encoded batch of `--batch` samples, logits to
/// probabilities as evaluation computes them.
fn evaluation<B: DeviceBackend>(
    arch: &SdConfig,
    args: &Args,
    device: &B::Device,
) -> anyhow::Result<(usize, Vec<f64>)> {
    use burn::module::AutodiffModule;
    let (trainee, batch) = paper_trainee::<B>(arch, args, device)?;
    let model = trainee.model.valid();
    drop(trainee);
    let n = model.num_params();
    let (latent, text, eos) = (batch.latent.inner(), batch.text.inner(), batch.eos.inner());
    drop(batch.mask);
    start_measuring();
    let times = time::<B, _>(args.repeats, || {
        let logits = model
            .forward_encoded(latent.clone(), text.clone(), eos.clone(), false)
            .logits;
        let _ = burn::tensor::activation::sigmoid(logits)
            .sum()
            .into_scalar();
    });
    Ok((n, times))
}

/// Timed encodings (`--phase encode`): the frozen VAE encoder and CLIP text encoder of random
/// weights of `arch` on `--batch` random images 8x the latent side and 77-token texts.
fn encoding<B: DeviceBackend>(
    arch: &SdConfig,
    args: &Args,
    device: &B::Device,
) -> anyhow::Result<(usize, Vec<f64>)> {
    use diffris_model::diffris::{encode_latent, encode_text};
    B::seed(device, 0);
    let sd = arch.init::<B>(device);
    let vae = cast_module(sd.vae, args.precision);
    let clip = cast_module(sd.text_encoder, args.precision);
    drop(sd.unet);
    let n = vae.num_params() + clip.num_params();
    let side = 8 * args.latent;
    let image = Tensor::<B, 4>::random(
        [args.batch, 3, side, side],
        Distribution::Uniform(-1.0, 1.0),
        device,
    );
    let ids = Tensor::<B, 2, Int>::random(
        [args.batch, 77],
        Distribution::Uniform(0.0, arch.clip.vocab_size as f64),
        device,
    );
    start_measuring();
    let times = time::<B, _>(args.repeats, || {
        let latent = encode_latent(&vae, image.clone(), 1.0);
        let text = encode_text(&clip, ids.clone());
        let _ = latent.sum().into_scalar();
        let _ = text.sum().into_scalar();
    });
    Ok((n, times))
}

/// Timed DiffRIS training steps (`--phase step`): the paper's model (`DiffRisConfig::default()`,
/// at an image 8x the latent side) around random frozen weights of `arch`, AdamW, one random
/// encoded batch of `--batch` samples; each repeat is one `TrainStep` and one optimizer step.
fn training_step<B: DeviceBackend>(
    arch: &SdConfig,
    args: &Args,
    device: &B::Device,
) -> anyhow::Result<Vec<f64>> {
    let (trainee, batch) = paper_trainee::<B>(arch, args, device)?;
    let mut trainee = Some(trainee);
    let mut optim = AdamWConfig::new()
        .with_weight_decay(0.01)
        .init::<Autodiff<B>, Trainee<Autodiff<B>>>();
    Ok(time::<B, _>(args.repeats, || {
        let model = trainee
            .take()
            .expect("the trainee is put back after each step");
        let output = TrainStep::step(&model, batch.clone());
        let _ = output.item.loss.clone().into_scalar();
        trainee = Some(optim.step(1e-5, model, output.grads));
    }))
}

/// The paper's model (`DiffRisConfig::default()` at an image 8x the latent side) around random
/// frozen weights of `arch`, and one random encoded batch of `--batch` samples.
#[allow(clippy::type_complexity)]
fn paper_trainee<B: DeviceBackend>(
    arch: &SdConfig,
    args: &Args,
    device: &B::Device,
) -> anyhow::Result<(Trainee<Autodiff<B>>, EncodedBatch<Autodiff<B>>)> {
    type AB<B> = Autodiff<B>;
    let config = DiffRisConfig {
        image_size: (8 * args.latent, 8 * args.latent),
        precision: args.precision,
        ..DiffRisConfig::default()
    };
    config.validate(arch)?;
    let trainee = Trainee {
        model: config.init(arch.init::<AB<B>>(device), device),
    };
    let (n, l) = (args.batch, args.latent);
    let normal = Distribution::Normal(0.0, 1.0);
    let batch = EncodedBatch::<AB<B>> {
        latent: Tensor::random([n, arch.unet.in_channels, l, l], normal, device),
        text: Tensor::random([n, 77, arch.clip.hidden_size], normal, device),
        eos: Tensor::<AB<B>, 1, Int>::from_ints(vec![8i64; n].as_slice(), device),
        mask: Tensor::random([n, 1, 8 * l, 8 * l], Distribution::Bernoulli(0.3), device),
        indices: (0..n).collect(),
        loss_weight: 1.0,
        ticket: None,
    };
    // Materialise the lazily initialised weights before anything is measured.
    let _ = trainee.model.unet().num_params() + trainee.model.num_params();
    Ok((trainee, batch))
}

/// What a training step's graph keeps alive, stage by stage (`--phase profile`): bytes counted
/// by the allocator above the weights and the batch, while the graph up to that stage is held.
/// Prints one JSON line per stage; returns the seconds of the whole measurement.
fn stage_profile<B: DeviceBackend>(
    arch: &SdConfig,
    args: &Args,
    device: &B::Device,
) -> anyhow::Result<Vec<f64>> {
    use diffris_experiments::device::allocator::{live_bytes, peak_bytes, reset_peak};
    let start = Instant::now();
    let (trainee, batch) = paper_trainee::<B>(arch, args, device)?;
    let model = &trainee.model;
    let mib = |bytes: usize| bytes as f64 / (1u64 << 20) as f64;
    let report = |stage: &str, kept: usize| {
        println!(
            "{{\"stage\":\"{stage}\",\"batch\":{},\"kept_mib\":{:.0}}}",
            args.batch,
            mib(kept)
        )
    };
    // Burn's autodiff keeps a graph until a backward pass consumes it (dropping its output does
    // not free it), so the stages are measured on one growing graph, cumulatively, as
    // `DiffRis::forward_encoded` chains them, and the graph ends in a backward pass.
    let base = live_bytes();
    report("weights and batch", base);
    let adapted = model.adapter.forward(batch.text.clone());
    report("CP-adapter", live_bytes() - base);
    let t = Tensor::full([args.batch], model.config.timestep, device);
    let maps = model.config.cross_attention_maps;
    let req = UNetRequest {
        sample: false,
        attention_maps: maps,
        attention_probs: false,
    };
    let out = model
        .unet()
        .forward(batch.latent.clone(), t, adapted.clone(), req);
    report("+ UNet taps", live_bytes() - base);
    let dec = model.decoder.forward(DecoderInput {
        features: &model.decoder_features(&out),
        text: &adapted,
        eos_index: &batch.eos,
        image_size: model.config.image_size,
        training: true,
    });
    drop(out);
    report("+ decoder", live_bytes() - base);
    let output = DiffRisOutput {
        logits: dec.logits,
        class_logits: dec.class_logits,
        hit_maps: dec.hit_maps,
        assignments: dec.assignments,
    };
    let loss = model.loss(&output, batch.mask.clone());
    drop(output);
    report("+ loss", live_bytes() - base);
    reset_peak();
    let grads = loss.backward();
    report("backward (peak)", peak_bytes() - base);
    drop(grads);
    if let Decoder::Pcmrd(pcmrd) = &model.decoder {
        // The mask head alone, on a tracked finest-level map of the decoder's width.
        let l = args.latent;
        let d = pcmrd.head.proj.weight.dims()[0];
        let normal = Distribution::Normal(0.0, 1.0);
        let v = Tensor::random([args.batch, d, l, l], normal, device).require_grad();
        let source = Tensor::random([args.batch, d], normal, device).require_grad();
        let before = live_bytes();
        let logits = pcmrd.head.forward(v, source, true);
        report("PCMRD mask head alone", live_bytes() - before);
        drop(logits.sum().backward());
    }
    Ok(vec![start.elapsed().as_secs_f64()])
}
