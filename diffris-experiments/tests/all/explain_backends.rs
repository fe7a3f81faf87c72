//! `explain`'s analyses for every decoder, from the same weights on every backend compiled into
//! this test: the panels that apply are there and those that do not are skipped with a reason,
//! the word scores add up to the reported total, and another backend (wgpu under `.ci/run`)
//! finds what flex finds.

#![cfg(feature = "flex")]

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use diffris_data::ClipTokenizer;
use diffris_data::batch::prepare_query;
use diffris_experiments::diagnostics::step_probe::{ProbeSpec, ProbeWeights, probe_decoders};
use diffris_experiments::explain::Explanation;
use diffris_experiments::explain::compute::{Query, Settings, explain};
use diffris_kernels::SdAutodiffBackend;

const TEXT: &str = "the large red-roofed building";

/// A 64 px image of smooth stripes.
fn image() -> image::RgbImage {
    image::RgbImage::from_fn(64, 64, |x, y| {
        let v = |k: f32| ((0.2 * x as f32 + 0.1 * k * y as f32).sin() * 100.0 + 128.0) as u8;
        image::Rgb([v(1.0), v(2.0), v(3.0)])
    })
}

fn run<B: SdAutodiffBackend>(
    spec: &ProbeSpec,
    weights: &ProbeWeights,
    device: &B::Device,
) -> Explanation {
    let model = weights.build::<B>(spec, device).unwrap().model.no_grad();
    let tokenizer = ClipTokenizer::embedded().unwrap();
    let (h, w) = spec.model.image_size;
    let query = Query {
        item: prepare_query(&image(), TEXT, &tokenizer, h, w).unwrap(),
        text: TEXT.into(),
        source: "stripes".into(),
    };
    let settings = Settings { steps: 8, batch: 4 };
    explain(&model, &tokenizer, &query, settings, "test".into(), device).unwrap()
}

#[test]
fn every_decoder_gets_its_panels_or_a_reason() {
    let _rng = crate::burn_rng();
    for (name, decoder) in probe_decoders() {
        let spec = ProbeSpec::tiny(decoder);
        let weights = ProbeWeights::draw::<Flex>(&spec, 7, &Default::default());
        let e = run::<Autodiff<Flex>>(&spec, &weights, &Default::default());
        let words: Vec<&str> = e.words.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(
            words,
            ["the", "large", "red", "-", "roofed", "building"],
            "{name}"
        );
        let sum: f64 = e.words.iter().map(|w| w.attribution).sum();
        assert!(
            (sum - e.attribution.total).abs() <= 1e-9 * sum.abs().max(1.0),
            "{name}"
        );
        assert!(e.attribution.completeness_gap.is_finite(), "{name}");
        assert_eq!(
            e.levels.len(),
            3,
            "{name}: three UNet levels with cross-attention"
        );
        for l in &e.levels {
            assert_eq!((l.adapted.len(), l.clip.len()), (6, 6), "{name}");
        }
        if name == "pcmrd" {
            assert_eq!(e.assignments.len(), 3, "{name}");
            assert!(e.skipped.is_empty(), "{name}: {:?}", e.skipped);
            for stage in &e.assignments {
                // Each pixel's token probabilities sum to one.
                let n = stage.tokens[0].values.len();
                for p in (0..n).step_by(7) {
                    let s: f32 = stage.tokens.iter().map(|m| m.values[p]).sum();
                    assert!((s - 1.0).abs() < 1e-5, "{name}: {s}");
                }
            }
        } else {
            assert!(e.assignments.is_empty(), "{name}");
            assert!(
                e.skipped.iter().any(|s| s.contains("has no query tokens")),
                "{name}: {:?}",
                e.skipped
            );
        }
    }
}

/// `explain` on backend `B` against flex from the same weights: the same prediction (up to a
/// few boundary pixels), word attributions within 5 % of the largest one, the same cross-
/// attention masses within 1e-6. Measured on lavapipe: no pixel differed; attributions within
/// 1.4e-2 (LMP; the gradients through the UNet are small remainders of large sums, see
/// `step_probe::GRAD_REL_TOLERANCE`) and 1.8e-3 (PCMRD); attention masses within 6e-9.
#[cfg(feature = "wgpu")]
fn against_flex<B: SdAutodiffBackend>(device: &B::Device, backend: &str) {
    for (name, decoder) in probe_decoders() {
        let spec = ProbeSpec::tiny(decoder);
        let weights = ProbeWeights::draw::<Flex>(&spec, 7, &Default::default());
        let reference = run::<Autodiff<Flex>>(&spec, &weights, &Default::default());
        let got = run::<B>(&spec, &weights, device);
        let differ = got
            .prediction
            .iter()
            .zip(&reference.prediction)
            .filter(|(a, b)| a != b)
            .count();
        let scale = reference
            .words
            .iter()
            .map(|w| w.attribution.abs())
            .fold(0.0f64, f64::max)
            .max(1e-12);
        let worst = got
            .words
            .iter()
            .zip(&reference.words)
            .map(|(a, b)| (a.attribution - b.attribution).abs() / scale)
            .fold(0.0f64, f64::max);
        let attention = got
            .words
            .iter()
            .zip(&reference.words)
            .flat_map(|(a, b)| {
                a.attention_adapted
                    .iter()
                    .zip(&b.attention_adapted)
                    .map(|(x, y)| (x - y).abs())
            })
            .fold(0.0f64, f64::max);
        eprintln!(
            "{backend} vs flex, {name}: {differ} prediction pixels differ, worst attribution \
             {worst:.2e} of the largest, worst attention mass {attention:.2e}"
        );
        assert!(differ <= 8, "{name} on {backend}: {differ} pixels differ");
        assert!(
            worst < 0.05,
            "{name} on {backend}: attribution off by {worst:.3}"
        );
        assert!(
            attention < 1e-6,
            "{name} on {backend}: attention off by {attention:.2e}"
        );
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_explains_what_flex_explains() {
    let _rng = crate::burn_rng();
    against_flex::<Autodiff<burn::backend::Wgpu>>(
        &burn::backend::wgpu::WgpuDevice::DefaultDevice,
        "wgpu",
    );
}
