//! The device check behind `diffris doctor`: for each decoder, the tiny training step of
//! [`super::step_probe`] on the chosen device and on the flex CPU backend from the same weights
//! and batch, compared within the probe's tolerances, timed, with the device's memory where its
//! backend says ([`crate::device::usage`]); with a half precision also that step against the
//! device's own f32 step ([`super::half_step`]). Each row carries its verdict; the command
//! prints the report.

use burn::backend::Autodiff;

use super::half_step::{HalfDiff, HalfTolerance};
use super::step_probe::{
    ProbeDiff, ProbeSpec, ProbeWeights, StepProbe, compare, probe, probe_decoders,
};
use crate::device::backend::{BackendJob, DeviceBackend, DeviceSpec, RunTarget, dispatch};
use crate::device::usage::{DeviceMemory, query};
use diffris_model::precision::Precision;

/// What to check.
#[derive(Debug, Clone)]
pub struct Request {
    /// Decoder names (as [`probe_decoders`] lists them); empty: all of them.
    pub decoders: Vec<String>,
    /// Seed of the probe's weights.
    pub seed: u64,
    /// A half precision to check against the device's f32 step (`None` or f32: no such check).
    pub precision: Option<Precision>,
}

/// One decoder's outcome on the device.
pub struct Row {
    pub name: &'static str,
    pub probe: StepProbe,
    /// The CPU reference, when this binary has the flex backend and the device is not flex,
    /// and the device's step against it.
    pub reference: Option<(StepProbe, ProbeDiff)>,
    /// The device's memory after its step (`None` where the backend does not say).
    pub memory: Option<DeviceMemory>,
    /// The half-precision step against the f32 step, with a half precision requested.
    pub half: Option<HalfDiff>,
    /// Why the device fails this decoder; empty: it passes.
    pub problems: Vec<String>,
}

/// The whole check: what was learnt of the device first, then one row per decoder.
pub struct Report {
    /// Lines about the device (its name, CUDA versions, memory capacity), in order.
    pub device_lines: Vec<String>,
    pub rows: Vec<Row>,
    /// The half precision checked, if any.
    pub precision: Option<Precision>,
}

impl Report {
    /// Names of the decoders the device fails.
    pub fn failed(&self) -> Vec<&'static str> {
        self.rows
            .iter()
            .filter(|r| !r.problems.is_empty())
            .map(|r| r.name)
            .collect()
    }
}

/// Runs the check on `device`; an unknown decoder name is an error naming the known ones.
pub fn run(device: DeviceSpec, request: Request) -> anyhow::Result<Report> {
    let known: Vec<&str> = probe_decoders().iter().map(|d| d.0).collect();
    if let Some(bad) = request
        .decoders
        .iter()
        .find(|d| !known.contains(&d.as_str()))
    {
        anyhow::bail!("no decoder named `{bad}`; known: {}", known.join(", "));
    }
    let precision = request.precision.filter(|p| !p.is_f32());
    let (device_lines, mut rows) = dispatch(device, Doctor(request))??;
    for row in &mut rows {
        row.problems = problems(row, precision);
    }
    Ok(Report {
        device_lines,
        rows,
        precision,
    })
}

/// Steady-state step time: the last step (the first one includes kernel compilation).
pub fn steady(p: &StepProbe) -> f64 {
    *p.step_seconds.last().unwrap_or(&f64::NAN)
}

/// Why a row fails: a non-finite loss, an untrained parameter, a frozen weight that moved, a
/// disagreement with flex, a half-precision step beyond its bounds.
fn problems(row: &Row, precision: Option<Precision>) -> Vec<String> {
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
    if let Some((_, d)) = &row.reference
        && !d.agrees()
    {
        problems.push(format!(
            "differs from flex (worst gradient: {})",
            d.worst_grad.0
        ));
    }
    if let (Some(half), Some(precision)) = (&row.half, precision) {
        for problem in half.problems(HalfTolerance::of(precision)) {
            problems.push(format!("{precision}: {problem}"));
        }
    }
    problems
}

struct Doctor(Request);

impl BackendJob for Doctor {
    type Output = anyhow::Result<(Vec<String>, Vec<Row>)>;

    fn run<B: DeviceBackend>(self, device: B::Device, target: RunTarget) -> Self::Output {
        let request = self.0;
        let mut lines = vec![format!(
            "device {} ({}, {})",
            target.spec, target.backend_name, target.device_debug
        )];
        #[cfg(feature = "cuda")]
        if let DeviceSpec::Cuda(_) = target.spec {
            use crate::device::backend::cuda_check::{bindings_version, driver_version};
            lines.push(format!(
                "CUDA: driver supports {}; the bindings were built for {} (CUDARC_CUDA_VERSION \
                 at build time pins them)",
                driver_version().unwrap_or_else(|e| format!("? ({e})")),
                bindings_version()
            ));
        }
        // What training runs' memory estimates are checked against (`--dry-run`).
        lines.push(match crate::device::usage::capacity(target.spec) {
            Ok(Some(c)) => format!(
                "device memory: {:.1} GiB ({})",
                c.bytes / (1u64 << 30) as f64,
                c.what
            ),
            Err(e) => format!("device memory: {e:#}"),
            Ok(None) => format!(
                "device memory: not known for this backend (set {} to have runs checked \
                 against it)",
                crate::device::usage::DEVICE_MEMORY_VAR
            ),
        });
        let mut rows = vec![];
        for (name, decoder) in probe_decoders() {
            if !request.decoders.is_empty() && !request.decoders.iter().any(|d| d == name) {
                continue;
            }
            let spec = ProbeSpec::tiny(decoder);
            let reference = reference_probe(&spec, request.seed, target.spec)?;
            let weights = match &reference {
                Some((w, _)) => w.clone(),
                None => ProbeWeights::draw::<B>(&spec, request.seed, &device),
            };
            crate::device::allocator::reset_peak();
            let probe = probe::<Autodiff<B>>(&spec, &weights, &device)?;
            let memory = query(target.spec);
            let half = match request.precision.filter(|p| !p.is_f32()) {
                Some(precision) => {
                    let mut half = spec.clone();
                    half.model.precision = precision;
                    let p = super::step_probe::probe::<Autodiff<B>>(&half, &weights, &device)?;
                    Some(HalfDiff::new(&p, &probe))
                }
                None => None,
            };
            let reference = reference.map(|(_, r)| {
                let diff = compare(&probe, &r);
                (r, diff)
            });
            rows.push(Row {
                name,
                probe,
                reference,
                memory,
                half,
                problems: vec![],
            });
        }
        Ok((lines, rows))
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
