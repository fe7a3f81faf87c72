//! `diffris doctor`: can this device train DiffRIS, and does it compute what the CPU computes?
//!
//! For each decoder it runs the tiny training step of [`crate::diagnostics::step_probe`] on the chosen device
//! and on the flex CPU backend from the same weights and batch, compares loss and gradients
//! within the probe's tolerances, times the steps, reports the device's memory where its backend
//! says ([`crate::device::usage`]), and prints a verdict (exit status 1 when a decoder fails).
//! With `--precision bf16` or `f16` it also runs the step with the frozen stack in that
//! precision on the device and compares it with the device's f32 step ([`crate::diagnostics::half_step`]).
//! On CUDA it first prints the driver's CUDA version and the one the binary's bindings were
//! built for.

use burn::backend::Autodiff;

use crate::device::backend::{BackendJob, DeviceBackend, DeviceSpec, RunTarget, dispatch};
use crate::device::usage::{DeviceMemory, query};
use crate::diagnostics::half_step::{HalfDiff, HalfTolerance};
use crate::diagnostics::step_probe::{
    GRAD_REL_TOLERANCE, LATER_LOSS_REL_TOLERANCE, LOSS_REL_TOLERANCE, ProbeSpec, ProbeWeights,
    StepProbe, compare, probe, probe_decoders,
};
use diffris_model::precision::Precision;

/// Arguments of `diffris doctor`.
#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    /// Decoders to check (pcmrd, pcmrd-baseline, lmp, oad, camd); default: all of them.
    #[arg(long, value_delimiter = ',')]
    pub decoders: Vec<String>,
    /// Seed of the probe's weights.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Also check the step with the frozen stack in this precision (bf16 or f16) against the
    /// device's own f32 step.
    #[arg(long, value_parser = crate::commands::run_args::parse_precision)]
    pub precision: Option<Precision>,
}

/// One decoder's outcome on the device.
struct Row {
    name: &'static str,
    probe: StepProbe,
    /// The CPU reference, when this binary has the flex backend and the device is not flex.
    reference: Option<StepProbe>,
    /// The device's memory after its step (`None` where the backend does not say).
    memory: Option<DeviceMemory>,
    /// The half-precision step against the f32 step, with `--precision`.
    half: Option<HalfDiff>,
}

struct Doctor {
    args: DoctorArgs,
}

impl BackendJob for Doctor {
    type Output = anyhow::Result<Vec<Row>>;

    fn run<B: DeviceBackend>(self, device: B::Device, target: RunTarget) -> Self::Output {
        println!(
            "device {} ({}, {})",
            target.spec, target.backend_name, target.device_debug
        );
        #[cfg(feature = "cuda")]
        if let DeviceSpec::Cuda(_) = target.spec {
            use crate::device::backend::cuda_check::{bindings_version, driver_version};
            println!(
                "CUDA: driver supports {}; the bindings were built for {} (CUDARC_CUDA_VERSION                  at build time pins them)",
                driver_version().unwrap_or_else(|e| format!("? ({e})")),
                bindings_version()
            );
        }
        // What training runs' memory estimates are checked against (`--dry-run`).
        match crate::device::usage::capacity(target.spec) {
            Ok(Some(c)) => println!(
                "device memory: {:.1} GiB ({})",
                c.bytes / (1u64 << 30) as f64,
                c.what
            ),
            Err(e) => println!("device memory: {e:#}"),
            Ok(None) => println!(
                "device memory: not known for this backend (set {} to have runs checked \
                 against it)",
                crate::device::usage::DEVICE_MEMORY_VAR
            ),
        }
        let mut rows = vec![];
        for (name, decoder) in probe_decoders() {
            if !self.args.decoders.is_empty() && !self.args.decoders.iter().any(|d| d == name) {
                continue;
            }
            let spec = ProbeSpec::tiny(decoder);
            let reference = reference_probe(&spec, self.args.seed, target.spec)?;
            let weights = match &reference {
                Some((w, _)) => w.clone(),
                None => ProbeWeights::draw::<B>(&spec, self.args.seed, &device),
            };
            crate::device::allocator::reset_peak();
            let probe = probe::<Autodiff<B>>(&spec, &weights, &device)?;
            let memory = query(target.spec);
            let half = match self.args.precision.filter(|p| !p.is_f32()) {
                Some(precision) => {
                    let mut half = spec.clone();
                    half.model.precision = precision;
                    let p = crate::diagnostics::step_probe::probe::<Autodiff<B>>(
                        &half, &weights, &device,
                    )?;
                    Some(HalfDiff::new(&p, &probe))
                }
                None => None,
            };
            rows.push(Row {
                name,
                probe,
                reference: reference.map(|(_, p)| p),
                memory,
                half,
            });
        }
        Ok(rows)
    }
}

/// Weights drawn on flex and flex's own probe, unless the device is flex or flex is absent.
#[allow(unused_variables)]
fn reference_probe(
    spec: &ProbeSpec,
    seed: u64,
    device: DeviceSpec,
) -> anyhow::Result<Option<(ProbeWeights, StepProbe)>> {
    #[cfg(feature = "flex")]
    {
        if device != DeviceSpec::Flex {
            use burn::backend::Flex;
            let cpu = Default::default();
            let weights = ProbeWeights::draw::<Flex>(spec, seed, &cpu);
            let reference = probe::<Autodiff<Flex>>(spec, &weights, &cpu)?;
            return Ok(Some((weights, reference)));
        }
    }
    Ok(None)
}

/// Steady-state step time: the last step (the first one includes kernel compilation).
fn steady(p: &StepProbe) -> f64 {
    *p.step_seconds.last().unwrap_or(&f64::NAN)
}

/// Runs the command; fails when any decoder fails.
pub fn run(device: DeviceSpec, args: DoctorArgs) -> anyhow::Result<()> {
    let known: Vec<&str> = probe_decoders().iter().map(|d| d.0).collect();
    if let Some(bad) = args.decoders.iter().find(|d| !known.contains(&d.as_str())) {
        anyhow::bail!("no decoder named `{bad}`; known: {}", known.join(", "));
    }
    let precision = args.precision.filter(|p| !p.is_f32());
    let rows = dispatch(device, Doctor { args })??;
    println!(
        "tiny training step (batch 2, 64x64, frozen SD + CP-adapter + decoder + loss + AdamW); \
         tolerances: loss {LOSS_REL_TOLERANCE:.0e} relative (later steps \
         {LATER_LOSS_REL_TOLERANCE:.0e}), gradients {GRAD_REL_TOLERANCE:.0e} of each tensor's scale"
    );
    println!(
        "{:<15} {:>10} {:>11} {:>11} {:>10} {:>10} {:>9} {:>9}  verdict",
        "decoder", "loss", "loss rel", "grad rel", "first s", "step s", "flex s", "mem MiB"
    );
    let mut failed = vec![];
    for row in &rows {
        let p = &row.probe;
        let mut problems = vec![];
        if !p.losses.iter().all(|l| l.is_finite()) {
            problems.push("non-finite loss".to_string());
        }
        if !p.unmoved.is_empty() {
            problems.push(format!("{} parameter(s) not trained", p.unmoved.len()));
        }
        if !p.frozen_unchanged {
            problems.push("a frozen weight changed".to_string());
        }
        let (loss_rel, grad_rel, flex_s) = match &row.reference {
            Some(r) => {
                let d = compare(p, r);
                if !d.agrees() {
                    problems.push(format!(
                        "differs from flex (worst gradient: {})",
                        d.worst_grad.0
                    ));
                }
                let worst_loss = d.loss_rel.iter().cloned().fold(0f64, f64::max);
                (
                    format!("{worst_loss:.1e}"),
                    format!("{:.1e}", d.worst_grad.1),
                    format!("{:.3}", steady(r)),
                )
            }
            None => ("-".into(), "-".into(), "-".into()),
        };
        if let (Some(half), Some(precision)) = (&row.half, precision) {
            for problem in half.problems(HalfTolerance::of(precision)) {
                problems.push(format!("{precision}: {problem}"));
            }
        }
        let verdict = if problems.is_empty() {
            "ok".to_string()
        } else {
            failed.push(row.name);
            format!("FAIL: {}", problems.join("; "))
        };
        let memory = row.memory.map_or("-".into(), |m| format!("{:.1}", m.mib()));
        println!(
            "{:<15} {:>10.5} {:>11} {:>11} {:>10.3} {:>10.3} {:>9} {:>9}  {verdict}",
            row.name,
            p.losses[0],
            loss_rel,
            grad_rel,
            p.step_seconds[0],
            steady(p),
            flex_s,
            memory
        );
    }
    if let Some(precision) = precision {
        let tol = HalfTolerance::of(precision);
        println!(
            "{precision} step against the device's f32 step (bounds: losses {:.0e} relative, \
             gradient cosine of the adapter and of the decoder above {}):",
            tol.loss_rel, tol.min_cosine
        );
        for row in &rows {
            if let Some(h) = &row.half {
                let cosines: Vec<String> = h
                    .cosines
                    .iter()
                    .map(|(p, c)| format!("{p} {c:.4}"))
                    .collect();
                println!(
                    "  {:<15} losses {}  cosine {}",
                    row.name,
                    h.loss_rel
                        .iter()
                        .map(|r| format!("{r:.1e}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    cosines.join(", ")
                );
            }
        }
    }
    match rows.last().and_then(|r| r.memory) {
        Some(m @ DeviceMemory::Pool { in_use, .. }) => println!(
            "mem MiB: {} (of which {:.1} MiB held by live tensors after the last step)",
            m.meaning(),
            in_use as f64 / (1u64 << 20) as f64
        ),
        Some(m) => println!("mem MiB: {}", m.meaning()),
        None => println!("mem MiB: not reported by this backend"),
    }
    if rows.iter().all(|r| r.reference.is_none()) {
        println!(
            "(no comparison: the device is the CPU reference itself, or this binary lacks the \
             flex backend)"
        );
    }
    anyhow::ensure!(failed.is_empty(), "the device failed for {failed:?}");
    println!("verdict: {device} trains DiffRIS");
    Ok(())
}
