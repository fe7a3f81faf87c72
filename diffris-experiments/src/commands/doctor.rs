//! `diffris doctor`: can this device train DiffRIS, and does it compute what the CPU computes?
//!
//! The check is [`crate::diagnostics::doctor`]: each decoder's tiny training step on the device
//! against flex, timed, with the device's memory; with `--precision bf16` or `f16` also the
//! half-precision step against the device's f32 step. On CUDA it first prints the driver's CUDA
//! version and the one the binary's bindings were built for. Exit status 1 when a decoder fails.

use crate::device::backend::DeviceSpec;
use crate::device::usage::DeviceMemory;
use crate::diagnostics::doctor::{Report, Request, run as check, steady};
use crate::diagnostics::half_step::HalfTolerance;
use crate::diagnostics::step_probe::{
    GRAD_REL_TOLERANCE, LATER_LOSS_REL_TOLERANCE, LOSS_REL_TOLERANCE,
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

/// Runs the command; fails when any decoder fails.
pub fn run(device: DeviceSpec, args: DoctorArgs) -> anyhow::Result<()> {
    let report = check(
        device,
        Request {
            decoders: args.decoders,
            seed: args.seed,
            precision: args.precision,
        },
    )?;
    print(&report);
    let failed = report.failed();
    anyhow::ensure!(failed.is_empty(), "the device failed for {failed:?}");
    println!("verdict: {device} trains DiffRIS");
    Ok(())
}

fn print(report: &Report) {
    for line in &report.device_lines {
        println!("{line}");
    }
    println!(
        "tiny training step (batch 2, 64x64, frozen SD + CP-adapter + decoder + loss + AdamW); \
         tolerances: loss {LOSS_REL_TOLERANCE:.0e} relative (later steps \
         {LATER_LOSS_REL_TOLERANCE:.0e}), gradients {GRAD_REL_TOLERANCE:.0e} of each tensor's scale"
    );
    println!(
        "{:<15} {:>10} {:>11} {:>11} {:>10} {:>10} {:>9} {:>9}  verdict",
        "decoder", "loss", "loss rel", "grad rel", "first s", "step s", "flex s", "mem MiB"
    );
    for row in &report.rows {
        let p = &row.probe;
        let (loss_rel, grad_rel, flex_s) = match &row.reference {
            Some((r, d)) => {
                let worst_loss = d.loss_rel.iter().cloned().fold(0f64, f64::max);
                (
                    format!("{worst_loss:.1e}"),
                    format!("{:.1e}", d.worst_grad.1),
                    format!("{:.3}", steady(r)),
                )
            }
            None => ("-".into(), "-".into(), "-".into()),
        };
        let verdict = if row.problems.is_empty() {
            "ok".to_string()
        } else {
            format!("FAIL: {}", row.problems.join("; "))
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
    if let Some(precision) = report.precision {
        let tol = HalfTolerance::of(precision);
        println!(
            "{precision} step against the device's f32 step (bounds: losses {:.0e} relative, \
             gradient cosine of the adapter and of the decoder above {}):",
            tol.loss_rel, tol.min_cosine
        );
        for row in &report.rows {
            if let Some(h) = &row.half {
                let cosines: Vec<String> = h
                    .cosines
                    .iter()
                    .map(|(p, c)| format!("{p} {c:.4}"))
                    .collect();
                let losses: Vec<String> = h.loss_rel.iter().map(|r| format!("{r:.1e}")).collect();
                println!(
                    "  {:<15} losses {}  cosine {}",
                    row.name,
                    losses.join(" "),
                    cosines.join(", ")
                );
            }
        }
    }
    match report.rows.last().and_then(|r| r.memory) {
        Some(m @ DeviceMemory::Pool { in_use, .. }) => println!(
            "mem MiB: {} (of which {:.1} MiB held by live tensors after the last step)",
            m.meaning(),
            in_use as f64 / (1u64 << 20) as f64
        ),
        Some(m) => println!("mem MiB: {}", m.meaning()),
        None => println!("mem MiB: not reported by this backend"),
    }
    if report.rows.iter().all(|r| r.reference.is_none()) {
        println!(
            "(no comparison: the device is the CPU reference itself, or this binary lacks the \
             flex backend)"
        );
    }
}
