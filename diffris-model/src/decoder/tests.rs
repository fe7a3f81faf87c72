use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor, TensorData};

use super::oaqil::{assignment, gumbel_noise};
use super::*;

type B = Flex;
type AB = Autodiff<Flex>;

/// Tap channels of a small UNet (finest first), text width 32.
const CHANNELS: [usize; 4] = [32, 64 + 77, 64 + 77, 64];

fn features<Bk: Backend>(latent: usize, device: &Bk::Device) -> Vec<Tensor<Bk, 4>> {
    CHANNELS
        .iter()
        .enumerate()
        .map(|(k, &c)| {
            let s = latent >> k;
            Tensor::random([2, c, s, s], Distribution::Normal(0.0, 1.0), device)
        })
        .collect()
}

fn text<Bk: Backend>(device: &Bk::Device) -> (Tensor<Bk, 3>, Tensor<Bk, 1, Int>) {
    let t = Tensor::random([2, 77, 32], Distribution::Normal(0.0, 1.0), device);
    let eos = Tensor::from_data(TensorData::new(vec![5i64, 12], [2]), device);
    (t, eos)
}

/// The decoder's output on the features `f` and text `(t, eos)` for an image of `size`.
fn decode<Bk: diffris_kernels::SdBackend>(
    dec: &Pcmrd<Bk>,
    f: &[Tensor<Bk, 4>],
    (t, eos): (&Tensor<Bk, 3>, &Tensor<Bk, 1, Int>),
    size: usize,
    training: bool,
) -> DecoderOutput<Bk> {
    dec.forward(DecoderInput {
        features: f,
        text: t,
        eos_index: eos,
        image_size: (size, size),
        training,
    })
}

fn small_pcmrd() -> PcmrdConfig {
    PcmrdConfig {
        hidden: 32,
        ..PcmrdConfig::default()
    }
}

#[test]
fn hard_assignment_is_one_hot_forward_with_the_soft_gradient() {
    let device = Default::default();
    AB::seed(&device, 1);
    let scores = Tensor::<AB, 3>::random([2, 3, 10], Distribution::Normal(0.0, 1.0), &device);
    let noise = gumbel_noise::<AB>([2, 3, 10], &device);
    let tau = Tensor::<AB, 1>::from_floats([0.7], &device);
    let weights = Tensor::<AB, 3>::random([2, 3, 10], Distribution::Normal(0.0, 1.0), &device);

    let s_hard = scores.clone().require_grad();
    let hard = assignment(s_hard.clone(), tau.clone(), Some(noise.clone()), true);
    let values: Vec<f32> = hard.clone().into_data().to_vec().unwrap();
    for b in 0..2 {
        for p in 0..10 {
            let column: Vec<f32> = (0..3).map(|n| values[(b * 3 + n) * 10 + p]).collect();
            let ones = column.iter().filter(|v| (**v - 1.0).abs() < 1e-6).count();
            let zeros = column.iter().filter(|v| v.abs() < 1e-6).count();
            assert_eq!((ones, zeros), (1, 2), "pixel {p} of sample {b}: {column:?}");
        }
    }
    let g_hard = s_hard
        .grad(&(hard * weights.clone()).sum().backward())
        .unwrap();

    let s_soft = scores.require_grad();
    let soft = assignment(s_soft.clone(), tau, Some(noise), false);
    let g_soft = s_soft.grad(&(soft * weights).sum().backward()).unwrap();
    let diff: f32 = (g_hard - g_soft).abs().max().into_scalar();
    assert!(
        diff < 1e-6,
        "straight-through gradient differs from the soft one by {diff}"
    );
}

#[test]
fn eval_has_no_noise_and_training_has() {
    let device = Default::default();
    B::seed(&device, 2);
    let dec = small_pcmrd().init::<B>(&CHANNELS, 32, (16, 16), &device);
    let f = features::<B>(16, &device);
    let (t, eos) = text::<B>(&device);
    let run = |training| {
        let out = dec.forward(DecoderInput {
            features: &f,
            text: &t,
            eos_index: &eos,
            image_size: (64, 64),
            training,
        });
        out.logits.into_data().to_vec::<f32>().unwrap()
    };
    assert_eq!(run(false), run(false), "two eval runs are identical");
    // With Gumbel noise the hard assignment (and so the logits) changes between runs.
    let dec_ad = small_pcmrd().init::<AB>(&CHANNELS, 32, (16, 16), &device);
    let fa = features::<AB>(16, &device);
    let (ta, ea) = text::<AB>(&device);
    let hits = |training| {
        let out = dec_ad.forward(DecoderInput {
            features: &fa,
            text: &ta,
            eos_index: &ea,
            image_size: (64, 64),
            training,
        });
        out.hit_maps[2].clone().into_data().to_vec::<f32>().unwrap()
    };
    assert_ne!(hits(true), hits(true), "training draws fresh noise");
}

/// The paper calls tau "a learnable coefficient": under the default parametrisation a few
/// optimizer steps move every stage's tau; under CGFormer's clamp (kept as an option) they
/// cannot, since `exp(min(tau_p, 0))` passes no gradient at `tau_p = 1`.
#[test]
fn the_temperature_learns_and_cgformers_clamp_keeps_it_at_one() {
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};
    let device = Default::default();
    for (temperature, learns) in [
        (Temperature::Learned, true),
        (Temperature::ClampedCgformer, false),
    ] {
        AB::seed(&device, 4);
        let cfg = PcmrdConfig {
            temperature,
            ..small_pcmrd()
        };
        let mut dec = cfg.init::<AB>(&CHANNELS, 32, (16, 16), &device);
        let taus = |dec: &Pcmrd<AB>| -> Vec<f32> {
            dec.temperatures()
                .into_iter()
                .map(|t| t.into_scalar())
                .collect()
        };
        assert_eq!(
            taus(&dec),
            vec![1.0; 3],
            "{temperature:?}: tau starts at tau_init"
        );
        let f = features::<AB>(16, &device);
        let (t, eos) = text::<AB>(&device);
        let mut optim = AdamConfig::new().init::<AB, Pcmrd<AB>>();
        for _ in 0..3 {
            let out = dec.forward(DecoderInput {
                features: &f,
                text: &t,
                eos_index: &eos,
                image_size: (64, 64),
                training: true,
            });
            let loss = out.logits.powf_scalar(2.0).mean();
            let grads = GradientsParams::from_grads(loss.backward(), &dec);
            dec = optim.step(1e-2, dec, grads);
        }
        for (stage, tau) in taus(&dec).into_iter().enumerate() {
            // Adam moves a parameter with a non-zero gradient (by up to the learning rate per
            // step; less when the gradient is far below its epsilon or flips sign, which the
            // random inputs can cause: they come from the process-wide RNG, which the tests
            // running beside this one draw from too) and leaves one without a gradient
            // exactly where it is.
            assert_eq!(
                tau != 1.0,
                learns,
                "{temperature:?}, stage {stage}: tau {tau}"
            );
        }
    }
}

#[test]
fn positional_embeddings_follow_the_input_size() {
    let device = Default::default();
    // Built for a 16x16 finest tap, fed 32x32 (a larger input) and 8x8 (a smaller one).
    let dec = small_pcmrd().init::<B>(&CHANNELS, 32, (16, 16), &device);
    for latent in [32, 8] {
        let f = features::<B>(latent, &device);
        let (t, eos) = text::<B>(&device);
        let image = latent * 8;
        let out = dec.forward(DecoderInput {
            features: &f,
            text: &t,
            eos_index: &eos,
            image_size: (image, image),
            training: false,
        });
        assert_eq!(out.logits.dims(), [2, 1, image, image]);
        let sizes: Vec<[usize; 4]> = out.hit_maps.iter().map(|h| h.dims()).collect();
        assert_eq!(
            sizes,
            vec![
                [2, 1, latent / 4, latent / 4],
                [2, 1, latent / 2, latent / 2],
                [2, 1, latent, latent]
            ]
        );
    }
    // At the nominal size the embedding is used as learnt, without resampling.
    let layer = match &dec.layers[..] {
        [first, ..] => first,
        [] => unreachable!("full PCMRD has layers"),
    };
    let pe: Vec<f32> = layer.positional(4, 4).into_data().to_vec().unwrap();
    let raw: Vec<f32> = layer.pos_embed.val().into_data().to_vec().unwrap();
    assert_eq!(pe, raw);
}

/// Table 6 rows and the Table 5 decoders, all at small widths.
fn every_decoder() -> Vec<(&'static str, DecoderConfig)> {
    let full = small_pcmrd();
    vec![
        (
            "pcmrd baseline",
            DecoderConfig::Pcmrd(PcmrdConfig {
                multi_scale: false,
                query_tokens: false,
                hard_assignment: false,
                ..full.clone()
            }),
        ),
        (
            "pcmrd +multi-scale",
            DecoderConfig::Pcmrd(PcmrdConfig {
                query_tokens: false,
                hard_assignment: false,
                ..full.clone()
            }),
        ),
        (
            "pcmrd +tokens (soft)",
            DecoderConfig::Pcmrd(PcmrdConfig {
                hard_assignment: false,
                ..full.clone()
            }),
        ),
        ("pcmrd full", DecoderConfig::Pcmrd(full)),
        (
            "lmp",
            DecoderConfig::Lmp(LmpConfig {
                hidden: 32,
                ..LmpConfig::default()
            }),
        ),
        (
            "oad",
            DecoderConfig::Oad(LmpConfig {
                hidden: 32,
                ..LmpConfig::default()
            }),
        ),
        (
            "camd",
            DecoderConfig::Camd(CamdConfig {
                hidden: 32,
                layers: 2,
                heads: 4,
                attn_dim: 128,
                ffn_dim: 64,
                ..CamdConfig::default()
            }),
        ),
    ]
}

#[test]
fn every_decoder_runs_forward_and_backward_on_two_sizes() {
    let device = Default::default();
    for (name, cfg) in every_decoder() {
        let dec = cfg.init::<AB>(&CHANNELS, 32, (8, 8), &device);
        for latent in [8, 16] {
            let f: Vec<Tensor<AB, 4>> = features::<AB>(latent, &device)
                .into_iter()
                .map(|t| t.require_grad())
                .collect();
            let (t, eos) = text::<AB>(&device);
            let image = latent * 8;
            let out = dec.forward(DecoderInput {
                features: &f,
                text: &t,
                eos_index: &eos,
                image_size: (image, image),
                training: true,
            });
            assert_eq!(out.logits.dims(), [2, 1, image, image], "{name}");
            let grads = out.logits.sum().backward();
            let g: f32 = f[0]
                .grad(&grads)
                .expect("gradient reaches F64")
                .abs()
                .sum()
                .into_scalar();
            assert!(g > 0.0, "{name} at latent {latent}");
        }
    }
}

/// The sine encoding by hand: width 8 (4 channels per axis; divisors 1, 1, 100, 100), on a 2x3
/// grid. Row 1 of 2 sits at `p = pi` (`2 pi * 1/2`), column 3 of 3 at `p = 2 pi`.
#[test]
fn the_sine_position_embedding_matches_a_hand_computed_grid() {
    use super::common::sine_position_embedding;
    use std::f64::consts::PI;
    let device = Default::default();
    let pe: Vec<f32> = sine_position_embedding::<B>(2, 3, 8, &device)
        .into_data()
        .to_vec()
        .unwrap();
    assert_eq!(pe.len(), 6 * 8);
    let axis = |p: f64| [p.sin(), p.cos(), (p / 100.0).sin(), (p / 100.0).cos()];
    // (row 1, column 3) is position 2 of the row-major order.
    let expected: Vec<f64> = [axis(PI), axis(2.0 * PI)].concat();
    for (k, (&got, want)) in pe[2 * 8..3 * 8].iter().zip(expected).enumerate() {
        // The 1e-6 in the normaliser moves p by about 6e-6 at most.
        assert!(
            (got as f64 - want).abs() < 1e-5,
            "channel {k}: {got} vs {want}"
        );
    }
    // Every position is encoded differently.
    for a in 0..6 {
        for b in a + 1..6 {
            assert_ne!(pe[a * 8..(a + 1) * 8], pe[b * 8..(b + 1) * 8], "{a} vs {b}");
        }
    }
}

/// With the positions, CAMD knows where its visual tokens are. On constant feature maps every
/// visual token of a level is the same, so without positions attention, merge and FPN give the
/// same value at every interior pixel (only the 3x3 convolution's zero padding marks the
/// border); with them the interior varies.
#[test]
fn camd_sees_where_its_tokens_are() {
    let device = Default::default();
    B::seed(&device, 6);
    let cfg = CamdConfig {
        hidden: 32,
        layers: 1,
        prompts: 2,
        heads: 4,
        attn_dim: 128,
        ffn_dim: 64,
    };
    let dec = cfg.init::<B>(&CHANNELS, 32, &device);
    let f: Vec<Tensor<B, 4>> = CHANNELS
        .iter()
        .enumerate()
        .map(|(k, &c)| {
            let s = 16 >> k;
            Tensor::<B, 4>::ones([2, c, s, s], &device).mul_scalar(0.3 * (k + 1) as f64)
        })
        .collect();
    let (t, eos) = text::<B>(&device);
    let logits = dec
        .forward(DecoderInput {
            features: &f,
            text: &t,
            eos_index: &eos,
            image_size: (16, 16),
            training: false,
        })
        .logits;
    let interior = logits.slice([0..1, 0..1, 2..14, 2..14]);
    let spread: f32 = (interior.clone().max() - interior.min()).into_scalar();
    assert!(
        spread > 1e-4,
        "the interior is uniform ({spread}): no positions"
    );
}

/// CAMD reads no word after the end token: the language self-attention and the vision-from-
/// language attention mask the padding, and the sentence token sits at the end token. Changing
/// every padding state leaves the logits as they were.
#[test]
fn camd_ignores_the_states_after_the_end_token() {
    let device = Default::default();
    B::seed(&device, 8);
    let cfg = CamdConfig {
        hidden: 32,
        layers: 2,
        prompts: 3,
        heads: 4,
        attn_dim: 128,
        ffn_dim: 64,
    };
    let dec = cfg.init::<B>(&CHANNELS, 32, &device);
    let f = features::<B>(8, &device);
    let (t, eos) = text::<B>(&device);
    // Sample 0 ends at 5, sample 1 at 12: new states from position 13 on for both (and from 6
    // on for sample 0).
    let noise = Tensor::<B, 3>::random([2, 77, 32], Distribution::Normal(0.0, 3.0), &device);
    let keep: Vec<f32> = (0..2)
        .flat_map(|s| {
            let end = [5, 12][s];
            (0..77).flat_map(move |p| [if p <= end { 1.0 } else { 0.0 }; 32])
        })
        .collect();
    let keep = Tensor::<B, 3>::from_data(TensorData::new(keep, [2, 77, 32]), &device);
    let padded_differently = t.clone() * keep.clone() + noise * (keep.neg().add_scalar(1.0));
    let run = |text: &Tensor<B, 3>| {
        dec.forward(DecoderInput {
            features: &f,
            text,
            eos_index: &eos,
            image_size: (64, 64),
            training: false,
        })
        .logits
    };
    let (a, b) = (run(&t), run(&padded_differently));
    let scale: f32 = a.clone().abs().max().into_scalar();
    let diff: f32 = (a - b).abs().max().into_scalar();
    // Masked keys get -1e4 before the softmax (Burn's `min_float`), so their weight is exactly 0
    // in f32; what remains is the rounding of summing the same numbers.
    assert!(diff <= 1e-5 * scale.max(1.0), "{diff} of {scale}");
}

/// Table 6's baseline reads the tap `baseline_level` names and no other: changing any other tap
/// leaves its logits as they were.
#[test]
fn the_pcmrd_baseline_reads_the_tap_it_names() {
    let device = Default::default();
    let f = features::<B>(16, &device);
    let (t, eos) = text::<B>(&device);
    for level in [0usize, 3] {
        let dec = PcmrdConfig {
            multi_scale: false,
            query_tokens: false,
            hard_assignment: false,
            baseline_level: level,
            ..small_pcmrd()
        }
        .init::<B>(&CHANNELS, 32, (16, 16), &device);
        let run = |f: &[Tensor<B, 4>]| -> Vec<f32> {
            dec.forward(DecoderInput {
                features: f,
                text: &t,
                eos_index: &eos,
                image_size: (64, 64),
                training: false,
            })
            .logits
            .into_data()
            .to_vec()
            .unwrap()
        };
        let base = run(&f);
        for k in 0..4 {
            let mut g = f.clone();
            g[k] = g[k].clone().mul_scalar(2.0).add_scalar(1.0);
            assert_eq!(run(&g) != base, k == level, "level {level}, tap {k}");
        }
    }
    let bad = DecoderConfig::Pcmrd(PcmrdConfig {
        baseline_level: 4,
        ..small_pcmrd()
    });
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("baseline_level")
    );
}

/// Gumbel noise at evaluation (CGFormer's code) makes two evaluation passes differ; without it
/// they are identical (`eval_has_no_noise_and_training_has`).
#[test]
fn gumbel_at_eval_draws_noise_at_evaluation() {
    let device = Default::default();
    B::seed(&device, 5);
    let dec = PcmrdConfig {
        gumbel_at_eval: true,
        ..small_pcmrd()
    }
    .init::<B>(&CHANNELS, 32, (16, 16), &device);
    let f = features::<B>(16, &device);
    let (t, eos) = text::<B>(&device);
    let hits = || {
        let out = decode(&dec, &f, (&t, &eos), 64, false);
        out.hit_maps[2].clone().into_data().to_vec::<f32>().unwrap()
    };
    assert_ne!(hits(), hits(), "evaluation draws fresh noise");
}

/// A Gumbel-free decoder's training passes differ only through its dropout.
#[test]
fn oaqil_dropout_acts_in_training_only() {
    let device = Default::default();
    let f = features::<B>(16, &device);
    let (t, eos) = text::<B>(&device);
    for (p, differs) in [(0.0, false), (0.1, true)] {
        B::seed(&device, 6);
        let dec = PcmrdConfig {
            gumbel_noise: false,
            oaqil: OaqilLayout {
                dropout: p,
                ..OaqilLayout::default()
            },
            ..small_pcmrd()
        }
        .init::<B>(&CHANNELS, 32, (16, 16), &device);
        let run = |training| {
            let out = decode(&dec, &f, (&t, &eos), 64, training);
            out.logits.into_data().to_vec::<f32>().unwrap()
        };
        assert_eq!(run(true) != run(true), differs, "dropout {p} in training");
        assert_eq!(run(false), run(false), "dropout {p} at evaluation");
    }
}

/// CGFormer's code: no text read at stage 1 and one grouping attention for stages 2 and 3, so
/// the decoder has exactly one `TextRead` and one `Grouping` fewer, counted by hand at D = 32
/// with text width 32; and the two stages share their temperature.
#[test]
fn cgformer_layout_drops_stage_one_text_and_shares_the_last_grouping() {
    let device = Default::default();
    let d = 32;
    let ln = 2 * d;
    let mlp = (d * 2 * d + 2 * d) + (2 * d * d + d);
    let grouping = 2 * ln + 4 * (d * d + d) + ln + mlp + 1;
    // norm_query, norm_text (text width 32), q/k/v without bias, out with bias, norm, MLP.
    let text_read = ln + ln + 3 * d * d + (d * d + d) + ln + mlp;
    let ours = small_pcmrd().init::<B>(&CHANNELS, 32, (16, 16), &device);
    let theirs = PcmrdConfig {
        oaqil: OaqilLayout::cgformer_code(),
        ..small_pcmrd()
    }
    .init::<B>(&CHANNELS, 32, (16, 16), &device);
    assert_eq!(
        ours.num_params() - theirs.num_params(),
        grouping + text_read
    );
    assert!(theirs.layers[0].text.is_none() && theirs.layers[1].text.is_some());
    assert!(theirs.layers[1].grouping.is_some() && theirs.layers[2].grouping.is_none());
    assert_eq!(theirs.temperatures().len(), 3);
    let f = features::<B>(16, &device);
    let (t, eos) = text::<B>(&device);
    let out = decode(&theirs, &f, (&t, &eos), 64, false);
    assert_eq!(out.hit_maps.len(), 3);
    assert_eq!(out.logits.dims(), [2, 1, 64, 64]);
}

/// Under `referent_late` only the last token reads the text: other texts change the referent's
/// state after the read and leave every other token's as it was.
#[test]
fn only_the_referent_reads_the_text_in_cgformers_layout() {
    let device = Default::default();
    let layout = OaqilLayout {
        text_reading: TextReading::ReferentLate,
        ..OaqilLayout::default()
    };
    let dec = PcmrdConfig {
        tokens: 3,
        oaqil: layout,
        ..small_pcmrd()
    }
    .init::<B>(&CHANNELS, 32, (16, 16), &device);
    let layer = &dec.layers[1];
    let read = layer.text.as_ref().unwrap();
    let queries = Tensor::<B, 3>::random([2, 3, 32], Distribution::Normal(0.0, 1.0), &device);
    let (t1, eos) = text::<B>(&device);
    let (t2, _) = text::<B>(&device);
    let after = |t: &Tensor<B, 3>| {
        layer
            .read_text(read, queries.clone(), t.clone(), eos.clone(), false)
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    };
    let (a, b) = (after(&t1), after(&t2));
    for sample in 0..2 {
        for token in 0..3 {
            let row = |v: &[f32]| v[(sample * 3 + token) * 32..][..32].to_vec();
            assert_eq!(
                row(&a) != row(&b),
                token == 2,
                "sample {sample}, token {token}"
            );
        }
    }
}

/// Initial spreads: the query tokens' standard deviation and the positional embeddings' (CGFormer:
/// `1 / sqrt(D)`), measured on enough values for a 5% bound (relative standard error of a
/// sample std of n normals is about `1 / sqrt(2 n)`: under 2% here).
#[test]
fn token_and_positional_initial_spreads() {
    let device = Default::default();
    let std = |v: Vec<f32>| {
        let n = v.len() as f64;
        let mean = v.iter().map(|x| *x as f64).sum::<f64>() / n;
        (v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
    };
    let dec = PcmrdConfig {
        tokens: 64,
        oaqil: OaqilLayout {
            token_std: 0.02,
            pos_init: PositionalInit::InverseSqrtWidth,
            ..OaqilLayout::default()
        },
        ..small_pcmrd()
    }
    .init::<B>(&CHANNELS, 32, (16, 16), &device);
    let tokens = std(dec
        .queries
        .as_ref()
        .unwrap()
        .val()
        .into_data()
        .to_vec()
        .unwrap());
    assert!((tokens / 0.02 - 1.0).abs() < 0.05, "token std {tokens}");
    // Stage 3's embedding: 16 x 16 positions of width 32.
    let pe = std(dec.layers[2].pos_embed.val().into_data().to_vec().unwrap());
    let expected = 1.0 / 32f64.sqrt();
    assert!(
        (pe / expected - 1.0).abs() < 0.05,
        "positional std {pe} vs {expected}"
    );
}

/// The logits' resize with aligned corners keeps the mask head's corner values; with half-pixel
/// centres a 2x downsizing averages a 2x2 block at the corner instead. The head's own
/// upsamplings change its output when their corner alignment changes. Every variant carries
/// the first decoder's weights (its record), so only the switches differ.
#[test]
fn align_corners_switches_of_the_mask_head_and_the_logits() {
    let device = Default::default();
    let f = features::<B>(16, &device);
    let (t, eos) = text::<B>(&device);
    let build = |head: bool, logits: bool| {
        PcmrdConfig {
            head_align_corners: head,
            logits_align_corners: logits,
            ..small_pcmrd()
        }
        .init::<B>(&CHANNELS, 32, (16, 16), &device)
    };
    let logits = |dec: &Pcmrd<B>, size: usize| {
        decode(dec, &f, (&t, &eos), size, false)
            .logits
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    };
    // The head's output is 64 x 64 (4x the finest tap); resized to 32 x 32.
    let dec = build(true, true);
    let like = |head, logits| build(head, logits).load_record(dec.clone().into_record());
    let full = logits(&dec, 64);
    let half = logits(&dec, 32);
    for sample in 0..2 {
        let (f0, h0) = (sample * 64 * 64, sample * 32 * 32);
        assert_eq!(half[h0], full[f0], "top-left corner kept");
        assert_eq!(
            half[h0 + 32 * 32 - 1],
            full[f0 + 64 * 64 - 1],
            "bottom-right kept"
        );
    }
    assert_eq!(
        logits(&like(true, false), 64),
        full,
        "no resize at the head's size"
    );
    let half = logits(&like(true, false), 32);
    let block = (full[0] + full[1] + full[64] + full[65]) / 4.0;
    assert!(
        (half[0] - block).abs() < 1e-5,
        "{} vs the 2x2 mean {block}",
        half[0]
    );
    assert_ne!(
        logits(&like(false, false), 64),
        full,
        "the head's upsampling alignment"
    );
}
