//! A DiffRIS training step (frozen tiny SD, CP-adapter, each decoder, loss, AdamW) on every
//! backend compiled into this test, against the flex backend from the same weights and batch.
//!
//! In the default build only flex runs: a copy of the weights must reproduce the reference step
//! bit for bit. `.ci/run` also builds this test with `--features wgpu` (Burn's cubecl kernels, the
//! ones the `cuda` backend runs, on a software Vulkan adapter), and `--features tch` adds libtorch.

#![cfg(feature = "flex")]

use burn::backend::{Autodiff, Flex};
use diffris_experiments::diagnostics::half_step::{HalfDiff, HalfTolerance};
use diffris_experiments::diagnostics::step_probe::{
    ProbeSpec, ProbeWeights, StepProbe, probe, probe_decoders,
};

/// The invariants of any step: finite losses, a gradient for every trained parameter, every
/// trained parameter moved, the frozen stack untouched.
fn check_step(name: &str, p: &StepProbe) {
    assert!(
        p.losses.iter().all(|l| l.is_finite()),
        "{name}: {:?}",
        p.losses
    );
    assert!(!p.grads.is_empty(), "{name}: no gradients");
    assert!(p.unmoved.is_empty(), "{name}: not trained: {:?}", p.unmoved);
    assert!(p.frozen_unchanged, "{name}: a frozen weight changed");
}

#[test]
fn copied_weights_reproduce_the_flex_step_exactly() {
    let _rng = crate::burn_rng();
    for (name, decoder) in probe_decoders() {
        let spec = ProbeSpec::tiny(decoder);
        let device = Default::default();
        let weights = ProbeWeights::draw::<Flex>(&spec, 7, &device);
        let a = probe::<Autodiff<Flex>>(&spec, &weights, &device).unwrap();
        check_step(name, &a);
        let b = probe::<Autodiff<Flex>>(&spec, &weights, &device).unwrap();
        assert_eq!(a.losses, b.losses, "{name}");
        assert!(a.grads == b.grads, "{name}: gradients differ between runs");
        // The second step sees the same batch after an AdamW update: its loss is lower.
        assert!(a.losses[1] < a.losses[0], "{name}: {:?}", a.losses);
    }
}

/// Every decoder's step on backend `B` against flex, within the tolerances of
/// `diffris_experiments::diagnostics::step_probe` (measured margins are in docs/GUIDE.md).
#[cfg(any(feature = "wgpu", feature = "tch"))]
fn against_flex<B: diffris_kernels::SdAutodiffBackend>(device: &B::Device, backend: &str) {
    use diffris_experiments::diagnostics::step_probe::{
        STAGE_REL_TOLERANCE, compare, compare_stages, forward_stages,
    };
    for (name, decoder) in probe_decoders() {
        let spec = ProbeSpec::tiny(decoder);
        let weights = ProbeWeights::draw::<Flex>(&spec, 7, &Default::default());
        // The forward pass stage by stage first: a failure names the first stage that differs.
        let stages = compare_stages(
            &forward_stages::<B::InnerBackend>(&spec, &weights, device).unwrap(),
            &forward_stages::<Flex>(&spec, &weights, &Default::default()).unwrap(),
        );
        for (stage, rel) in &stages {
            eprintln!("{backend} vs flex, {name} forward, {stage}: {rel:.2e} of its scale");
            assert!(
                *rel < STAGE_REL_TOLERANCE,
                "{name} on {backend}: {stage} differs from flex ({rel:.2e} of its scale)"
            );
        }
        let reference = probe::<Autodiff<Flex>>(&spec, &weights, &Default::default()).unwrap();
        let got = probe::<B>(&spec, &weights, device).unwrap();
        check_step(&format!("{name} on {backend}"), &got);
        let diff = compare(&got, &reference);
        let loss_rel: Vec<String> = diff.loss_rel.iter().map(|r| format!("{r:.2e}")).collect();
        eprintln!(
            "{backend} vs flex, {name}: loss rel {loss_rel:?}, worst gradient {} at {:.2e} of its \
             scale; step s {:.3?} (flex {:.3?})",
            diff.worst_grad.0, diff.worst_grad.1, got.step_seconds, reference.step_seconds
        );
        assert!(
            diff.agrees(),
            "{name} on {backend}: {diff:?} (losses {:?} vs {:?})",
            got.losses,
            reference.losses
        );
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_step_matches_flex() {
    let _rng = crate::burn_rng();
    against_flex::<Autodiff<burn::backend::Wgpu>>(
        &burn::backend::wgpu::WgpuDevice::DefaultDevice,
        "wgpu",
    );
}

#[cfg(feature = "tch")]
#[test]
fn tch_step_matches_flex() {
    let _rng = crate::burn_rng();
    against_flex::<Autodiff<burn::backend::LibTorch>>(
        &burn::backend::libtorch::LibTorchDevice::Cpu,
        "tch",
    );
}

/// `diffris doctor` on `device` for two decoders: exit status 0, a row with verdict `ok` per
/// decoder, and the closing verdict; an unknown decoder is an error that lists the known ones.
fn doctor_passes(device: &str) {
    let run = |decoders: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_diffris"))
            .args(["--device", device, "doctor", "--decoders", decoders])
            .env_remove("DIFFRIS_DEVICE_MEMORY_GIB")
            .output()
            .unwrap()
    };
    let o = run("lmp,pcmrd-baseline");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for name in ["lmp", "pcmrd-baseline"] {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{stdout}"));
        assert!(row.trim_end().ends_with("ok"), "{row}");
        // The device's memory (the column before the verdict): a tiny step's weights,
        // gradients and activations, more than 1 MiB and less than this machine's 24 GiB.
        let cells: Vec<&str> = row.split_whitespace().collect();
        let mib: f64 = cells[cells.len() - 2].parse().unwrap_or(f64::NAN);
        assert!(
            mib > 1.0 && mib < 24.0 * 1024.0,
            "memory {mib} MiB in {row}"
        );
    }
    assert!(stdout.contains("mem MiB: "), "{stdout}");
    // The size runs are checked against: the RAM available on the CPU backend.
    let size = stdout
        .lines()
        .find(|l| l.starts_with("device memory: "))
        .unwrap_or_else(|| panic!("no device memory line:\n{stdout}"));
    if device == "flex" {
        assert!(size.ends_with(" GiB (RAM available)"), "{size}");
    }
    assert!(
        stdout.contains(&format!("verdict: {device} trains DiffRIS")),
        "{stdout}"
    );
    let o = run("nope");
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("known: pcmrd, pcmrd-baseline, lmp, oad, camd"),
        "{stderr}"
    );
}

/// `diffris info` names each compiled backend's kernels (in a wgpu build, cubecl's untuned ones,
/// and the backend that runs is the plain cubecl one).
#[test]
fn info_names_each_backends_kernels() {
    let _rng = crate::burn_rng();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_diffris"))
        .args(["--device", "flex", "info"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}");
    let kernels = stdout
        .lines()
        .find(|l| l.starts_with("kernels "))
        .unwrap_or_else(|| panic!("no kernels line:\n{stdout}"));
    assert!(
        kernels.contains("flex: Burn's flex with diffris's CPU kernels"),
        "{kernels}"
    );
    #[cfg(feature = "wgpu")]
    {
        use burn::tensor::backend::Backend;
        assert!(
            kernels.contains("wgpu: cubecl's untuned defaults"),
            "{kernels}"
        );
        let device = burn::backend::wgpu::WgpuDevice::DefaultDevice;
        let name = <burn::backend::Wgpu as Backend>::name(&device);
        assert!(!name.starts_with("fusion<"), "{name}");
    }
}

#[test]
fn doctor_on_flex() {
    let _rng = crate::burn_rng();
    doctor_passes("flex");
}

/// `doctor --precision bf16` adds the bf16 step against the device's f32 step: a line per
/// decoder with its two losses' differences and the adapter's and decoder's gradient cosines
/// (within `half_step`'s bounds, or the verdict fails).
#[test]
fn doctor_checks_half_precision() {
    let _rng = crate::burn_rng();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_diffris"))
        .args(["--device", "flex", "doctor", "--decoders", "lmp"])
        .args(["--precision", "bf16"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.contains("bf16 step against the device's f32 step (bounds: losses 1e-2"),
        "{stdout}"
    );
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("lmp ") && l.contains("cosine"))
        .unwrap_or_else(|| panic!("no bf16 line for lmp:\n{stdout}"));
    let cosines: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.trim_end_matches(',').parse().ok())
        .filter(|c: &f64| *c > 0.5)
        .collect();
    assert_eq!(cosines.len(), 2, "{line}");
    assert!(
        cosines.iter().all(|&c| c > 0.9 && c <= 1.0 + 1e-9),
        "{line}"
    );
}

#[cfg(feature = "wgpu")]
#[test]
fn doctor_on_wgpu_against_flex() {
    let _rng = crate::burn_rng();
    doctor_passes("wgpu");
}

/// Steps with the frozen stack in half precision on backend `B` against its f32 step, from the
/// same weights (drawn in f32) and batch, for every decoder: the step's invariants hold, and the
/// losses and gradient directions stay within `diffris_experiments::diagnostics::half_step`'s tolerances of
/// f32's (`f16` overrides those of f16). The frozen stack's parity with PyTorch's own half
/// precision is `diffris-model`'s `tests/half_precision.rs`; this checks the boundaries (casts
/// into and out of the frozen stack, the adapter's gradient through it, the f32 decoder).
fn half_steps_stay_close_to_f32<B: diffris_kernels::SdAutodiffBackend>(
    device: &B::Device,
    backend: &str,
    precisions: &[diffris_model::precision::Precision],
    f16: Option<HalfTolerance>,
) {
    use diffris_model::precision::Precision;
    for (name, decoder) in probe_decoders() {
        let spec = ProbeSpec::tiny(decoder);
        let weights = ProbeWeights::draw::<Flex>(&spec, 7, &Default::default());
        // The f32 step on the same backend: what changes is the precision only.
        let reference = probe::<B>(&spec, &weights, device).unwrap();
        for &precision in precisions {
            let tol = match (precision, f16) {
                (Precision::F16, Some(t)) => t,
                _ => HalfTolerance::of(precision),
            };
            let mut half = spec.clone();
            half.model.precision = precision;
            let p = probe::<B>(&half, &weights, device).unwrap();
            let label = format!("{name} {precision} on {backend}");
            check_step(&label, &p);
            let diff = HalfDiff::new(&p, &reference);
            eprintln!("{label}: {diff:?}");
            let problems = diff.problems(tol);
            assert!(problems.is_empty(), "{label}: {problems:?}");
        }
    }
}

#[test]
fn half_precision_steps_stay_close_to_f32() {
    let _rng = crate::burn_rng();
    use diffris_model::precision::Precision;
    half_steps_stay_close_to_f32::<Autodiff<Flex>>(
        &Default::default(),
        "flex",
        &[Precision::F16, Precision::Bf16],
        None,
    );
}

/// WGSL has f16 (where the adapter offers it) but no bf16. cubecl's f16 arithmetic lands
/// further from its f32 than flex's on lavapipe (measured worst over the decoders: loss 3.7e-3
/// relative, gradient cosine 0.964), so the f16 bounds here are bf16's on flex.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_f16_step_stays_close_to_f32() {
    let _rng = crate::burn_rng();
    half_steps_stay_close_to_f32::<Autodiff<burn::backend::Wgpu>>(
        &burn::backend::wgpu::WgpuDevice::DefaultDevice,
        "wgpu",
        &[diffris_model::precision::Precision::F16],
        Some(HalfTolerance {
            loss_rel: 1e-2,
            min_cosine: 0.9,
        }),
    );
}
