//! A training step with the frozen stack in half precision against the f32 step on the same
//! backend, from the same weights (drawn in f32) and batch ([`crate::diagnostics::step_probe`]): the first
//! loss, the loss after one AdamW update and the direction of the whole gradient of the adapter
//! and of the decoder, within tolerances measured on the CPU backend. `diffris doctor
//! --precision` and the backends' tests check a device with it.
//!
//! Single parameters are not compared: the tiny decoders' BatchNorm over a few 2x2 or 4x4 maps
//! amplifies input changes, so a parameter's gradient moves by up to 0.2 of its scale under
//! f16's 1e-3 changes of the taps (and by 1e-3 between two f32 backends); the whole gradient's
//! direction is the well-conditioned measure.

use diffris_model::precision::Precision;

use crate::diagnostics::step_probe::StepProbe;

/// The trained parts whose gradient directions are compared.
pub const PARTS: [&str; 2] = ["model.adapter", "model.decoder"];

/// How far a half-precision step may be from f32's: the relative difference of each loss, and
/// the least cosine between the gradients of each part.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HalfTolerance {
    pub loss_rel: f64,
    pub min_cosine: f64,
}

impl HalfTolerance {
    /// Measured worst over the decoders on flex, f16 / bf16: first loss 3.8e-4 / 3.9e-3
    /// relative, second loss 2.3e-3 / 3.7e-3 (the f16 worst is OAD's since it mixes RMSIN's
    /// single rotated kernel and rotates as ARC does; before that the worst was 9.2e-4); gradient
    /// cosine 0.991 / 0.913 (adapter), 0.990 / 0.940 (decoder). The loss bounds leave about 2x
    /// margin, the cosine bounds 2x on f16's `1 - cosine` and 1.15x on bf16's. A control with
    /// the adapter's path through the UNet cut (its output detached before the UNet) gave an
    /// adapter cosine of 0.858 for PCMRD: below both.
    pub fn of(precision: Precision) -> Self {
        match precision {
            Precision::Bf16 => Self {
                loss_rel: 1e-2,
                min_cosine: 0.9,
            },
            _ => Self {
                loss_rel: 5e-3,
                min_cosine: 0.98,
            },
        }
    }
}

/// A half-precision step against the f32 step.
#[derive(Clone, Debug, PartialEq)]
pub struct HalfDiff {
    /// `|loss - loss_f32| / |loss_f32|` of each step.
    pub loss_rel: Vec<f64>,
    /// The gradient cosine of each of [`PARTS`].
    pub cosines: Vec<(&'static str, f64)>,
    /// Whether the same parameters got gradients.
    pub same_parameters: bool,
}

impl HalfDiff {
    /// Compares the half-precision step `half` with the f32 step `f32_step`.
    pub fn new(half: &StepProbe, f32_step: &StepProbe) -> Self {
        Self {
            loss_rel: half
                .losses
                .iter()
                .zip(&f32_step.losses)
                .map(|(a, b)| (a - b).abs() / b.abs().max(f64::MIN_POSITIVE))
                .collect(),
            cosines: PARTS
                .iter()
                .map(|part| (*part, gradient_cosine(half, f32_step, part)))
                .collect(),
            same_parameters: half.grads.keys().eq(f32_step.grads.keys()),
        }
    }

    /// What is outside `tol` (empty: the step agrees).
    pub fn problems(&self, tol: HalfTolerance) -> Vec<String> {
        let mut out = vec![];
        if !self.same_parameters {
            out.push("other parameters got gradients".to_string());
        }
        // NaN counts as outside (`is_some_and(..)` is false for it, as for a value too large).
        let within = |r: f64, bound: f64| r.partial_cmp(&bound).is_some_and(|o| o.is_lt());
        if let Some(r) = self.loss_rel.iter().find(|r| !within(**r, tol.loss_rel)) {
            out.push(format!(
                "loss {r:.1e} from f32's (bound {:.0e})",
                tol.loss_rel
            ));
        }
        for (part, c) in &self.cosines {
            if !within(tol.min_cosine, *c) {
                out.push(format!(
                    "{part} gradient cosine {c:.4} (bound {})",
                    tol.min_cosine
                ));
            }
        }
        out
    }
}

/// The cosine of the angle between two steps' gradients of the trained parameters under
/// `prefix`, laid end to end.
pub fn gradient_cosine(a: &StepProbe, b: &StepProbe, prefix: &str) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (path, ga) in a.grads.iter().filter(|(p, _)| p.starts_with(prefix)) {
        let Some(gb) = b.grads.get(path) else {
            continue;
        };
        for (x, y) in ga.iter().zip(gb) {
            let (x, y) = (*x as f64, *y as f64);
            dot += x * y;
            na += x * x;
            nb += y * y;
        }
    }
    dot / (na.sqrt() * nb.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(losses: [f64; 2], adapter: [f32; 2], decoder: [f32; 2]) -> StepProbe {
        StepProbe {
            losses: losses.to_vec(),
            grads: [
                ("model.adapter.w".to_string(), adapter.to_vec()),
                ("model.decoder.w".to_string(), decoder.to_vec()),
            ]
            .into(),
            unmoved: vec![],
            frozen_unchanged: true,
            step_seconds: vec![],
        }
    }

    /// Hand-computed: losses 1.0 and 0.5 against 1.001 and 0.5 (1e-3 and 0 relative); the
    /// adapter's gradient (1, 1) against (1, 0), cosine 1/sqrt(2); the decoder's identical.
    #[test]
    fn losses_and_gradient_directions_against_hand_computed_values() {
        let f32_step = probe([1.0, 0.5], [1.0, 0.0], [3.0, 4.0]);
        let half = probe([1.001, 0.5], [1.0, 1.0], [3.0, 4.0]);
        let d = HalfDiff::new(&half, &f32_step);
        assert!((d.loss_rel[0] - 1e-3).abs() < 1e-12 && d.loss_rel[1] == 0.0);
        assert!((d.cosines[0].1 - 0.5f64.sqrt()).abs() < 1e-12);
        assert!((d.cosines[1].1 - 1.0).abs() < 1e-12);
        // bf16's bounds take the losses (1e-3 < 1e-2) but not the adapter's 0.707 < 0.9.
        let problems = d.problems(HalfTolerance::of(Precision::Bf16));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("model.adapter gradient cosine 0.7071"));
        // f16's bounds take the loss too (1e-3 < 2e-3): again only the adapter's cosine.
        assert_eq!(d.problems(HalfTolerance::of(Precision::F16)).len(), 1);
        let same = HalfDiff::new(&f32_step, &f32_step);
        assert!(same.problems(HalfTolerance::of(Precision::F16)).is_empty());
    }
}
