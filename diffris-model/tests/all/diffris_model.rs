//! The assembled model: only the adapter and the decoder train, the frozen SD weights stay
//! bit-identical, the adapter learns through the UNet, every Table 4 adapter row and decoder
//! variant trains at two input sizes.

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use burn_store::ModuleSnapshot;
use diffris_model::adapter::CpAdapterConfig;
use diffris_model::decoder::{CamdConfig, DecoderConfig, LmpConfig, PcmrdConfig};
use diffris_model::diffris::{DiffRis, DiffRisConfig, UnetMode};
use diffris_model::sd::SdConfig;

type AB = Autodiff<Flex>;

fn values<B: Backend, M: Module<B>>(m: &M) -> Vec<(String, Vec<f32>)> {
    m.collect(None, None, false)
        .into_iter()
        .map(|s| {
            (
                s.full_path(),
                s.to_data().unwrap().convert::<f32>().to_vec().unwrap(),
            )
        })
        .collect()
}

fn small(decoder: DecoderConfig, adapter: CpAdapterConfig, size: usize) -> DiffRisConfig {
    DiffRisConfig {
        image_size: (size, size),
        adapter: CpAdapterConfig {
            heads: 4,
            ffn_dim: 64,
            ..adapter
        },
        decoder,
        ..DiffRisConfig::default()
    }
}

fn model(cfg: &DiffRisConfig) -> DiffRis<AB> {
    let device = Default::default();
    AB::seed(&device, 4);
    let sd = SdConfig::tiny().init::<AB>(&device);
    cfg.init(sd, &device)
}

/// Image, ids, end-token index and mask of a random batch of two.
type Batch = (
    Tensor<AB, 4>,
    Tensor<AB, 2, Int>,
    Tensor<AB, 1, Int>,
    Tensor<AB, 4>,
);

fn batch(size: usize) -> Batch {
    let device = Default::default();
    let image = Tensor::random(
        [2, 3, size, size],
        Distribution::Uniform(-1.0, 1.0),
        &device,
    );
    let mut ids = vec![49407i64; 2 * 77];
    for (i, id) in [49406, 518, 736, 6449, 2307, 49407].iter().enumerate() {
        ids[i] = *id;
        ids[77 + i] = *id;
    }
    let ids = Tensor::from_data(TensorData::new(ids, [2, 77]), &device);
    let eos = Tensor::from_data(TensorData::new(vec![5i64, 5], [2]), &device);
    let mask = Tensor::<AB, 4>::random([2, 1, size, size], Distribution::Bernoulli(0.3), &device);
    (image, ids, eos, mask)
}

#[test]
fn one_adamw_step_changes_only_the_trainable_parameters() {
    let _rng = crate::burn_rng();
    // LMP reads no text, so the adapter can only get its gradient through the UNet.
    let cfg = small(
        DecoderConfig::Lmp(LmpConfig {
            hidden: 32,
            ..LmpConfig::default()
        }),
        CpAdapterConfig::default(),
        64,
    );
    let model = model(&cfg);
    let frozen_before = [
        values(model.unet()),
        values(&model.vae),
        values(&model.text_encoder),
    ];
    let trainable_before = values(&model);
    assert!(!trainable_before.is_empty());

    let (image, ids, eos, mask) = batch(64);
    let out = model.forward(image, ids, eos, true);
    let loss = model.loss(&out, mask);
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let gamma = model.adapter.gamma.as_ref().unwrap();
    let g = grads
        .get::<Flex, 1>(gamma.id)
        .expect("the adapter's gamma has a gradient");
    assert!(g.abs().sum().into_scalar() > 0.0, "through the frozen UNet");

    let mut optim = AdamWConfig::new().with_weight_decay(0.01).init();
    let model = optim.step(1e-3, model, grads);

    let frozen_after = [
        values(model.unet()),
        values(&model.vae),
        values(&model.text_encoder),
    ];
    assert!(
        frozen_before == frozen_after,
        "every frozen weight is bit-identical"
    );
    for ((path, before), (_, after)) in trainable_before.iter().zip(values(&model)) {
        if path.contains("running_") {
            continue; // BatchNorm statistics are buffers, not parameters.
        }
        assert_ne!(before, &after, "trainable `{path}` did not change");
    }
}

/// VPD's recipe (`unet: trainable`): the UNet's parameters join the trained ones and move in
/// one AdamW step, all but the noise-prediction head that DiffRIS's pass never runs
/// (`conv_norm_out`, `conv_out`); the VAE and CLIP stay bit-identical. Under the default the
/// UNet is no parameter at all.
#[test]
fn a_trainable_unet_trains_with_the_adapter_and_decoder() {
    let _rng = crate::burn_rng();
    let lmp = || {
        DecoderConfig::Lmp(LmpConfig {
            hidden: 32,
            ..LmpConfig::default()
        })
    };
    let frozen = model(&small(lmp(), CpAdapterConfig::default(), 64));
    let count = |m: &DiffRis<AB>| values(m).len();
    let parts = |m: &DiffRis<AB>| values(&m.adapter).len() + values(&m.decoder).len();
    assert_eq!(
        count(&frozen),
        parts(&frozen),
        "frozen: adapter and decoder only"
    );
    let cfg = DiffRisConfig {
        unet: UnetMode::Trainable,
        ..small(lmp(), CpAdapterConfig::default(), 64)
    };
    let model = model(&cfg);
    let unet_before = values(model.unet());
    assert_eq!(count(&model), parts(&model) + unet_before.len());
    let frozen_before = [values(&model.vae), values(&model.text_encoder)];

    let (image, ids, eos, mask) = batch(64);
    let out = model.forward(image, ids, eos, true);
    let loss = model.loss(&out, mask);
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let mut optim = AdamWConfig::new().with_weight_decay(0.01).init();
    let model = optim.step(1e-3, model, grads);

    assert!(frozen_before == [values(&model.vae), values(&model.text_encoder)]);
    let mut unchanged = vec![];
    for ((path, before), (_, after)) in unet_before.iter().zip(values(model.unet())) {
        if before == &after {
            unchanged.push(path.clone());
        }
    }
    assert_eq!(
        unchanged,
        [
            "conv_norm_out.gamma",
            "conv_norm_out.beta",
            "conv_out.weight",
            "conv_out.bias"
        ],
        "every UNet parameter on the feature path trains"
    );
}

#[test]
fn every_adapter_row_and_decoder_trains_at_two_sizes() {
    let _rng = crate::burn_rng();
    let pcmrd = PcmrdConfig {
        hidden: 32,
        ..PcmrdConfig::default()
    };
    let full = CpAdapterConfig::default();
    let rows = [
        CpAdapterConfig {
            enabled: false,
            ..full.clone()
        },
        CpAdapterConfig {
            object_reasoning: false,
            domain_adjustment: false,
            ..full.clone()
        },
        CpAdapterConfig {
            domain_adjustment: false,
            ..full.clone()
        },
        full.clone(),
    ];
    let decoders = [
        DecoderConfig::Pcmrd(PcmrdConfig {
            multi_scale: false,
            query_tokens: false,
            ..pcmrd.clone()
        }),
        DecoderConfig::Pcmrd(PcmrdConfig {
            query_tokens: false,
            ..pcmrd.clone()
        }),
        DecoderConfig::Pcmrd(PcmrdConfig {
            hard_assignment: false,
            ..pcmrd.clone()
        }),
        DecoderConfig::Pcmrd(pcmrd.clone()),
        DecoderConfig::Lmp(LmpConfig {
            hidden: 32,
            ..LmpConfig::default()
        }),
        DecoderConfig::Oad(LmpConfig {
            hidden: 32,
            ..LmpConfig::default()
        }),
        DecoderConfig::Camd(CamdConfig {
            hidden: 32,
            layers: 1,
            heads: 4,
            attn_dim: 64,
            ffn_dim: 64,
            ..CamdConfig::default()
        }),
    ];
    let variants = rows
        .iter()
        .map(|a| (a.clone(), DecoderConfig::Pcmrd(pcmrd.clone())))
        .chain(decoders.iter().map(|d| (full.clone(), d.clone())));
    for (adapter, decoder) in variants {
        let cfg = small(decoder.clone(), adapter.clone(), 64);
        let model = model(&cfg);
        for size in [64, 128] {
            let (image, ids, eos, mask) = batch(size);
            let mut config = model.config.clone();
            config.image_size = (size, size);
            let m = DiffRis {
                config,
                ..model.clone()
            };
            let out = m.forward(image, ids, eos, true);
            assert_eq!(out.logits.dims(), [2, 1, size, size]);
            let loss = m.loss(&out, mask);
            let value: f32 = loss.clone().into_scalar();
            assert!(value.is_finite(), "{decoder:?} / {adapter:?}: loss {value}");
            let grads = GradientsParams::from_grads(loss.backward(), &m);
            assert!(!grads.is_empty(), "{decoder:?}: something trains");
        }
    }
}

#[test]
fn sd15_parameter_counts_match_the_published_sizes() {
    let _rng = crate::burn_rng();
    use diffris_model::diffris::parameter_counts;
    let counts = parameter_counts::<Flex>(
        &DiffRisConfig::default(),
        &SdConfig::sd15(),
        &Default::default(),
    );
    let get = |n: &str| counts.iter().find(|c| c.name == n).unwrap().count;
    // Known SD-1.5 sizes: UNet 859,520,964; CLIP ViT-L/14 text tower 123,060,480 (its
    // token-position buffer is not a parameter). The VAE encoder + quant_conv is 34,163,664 of
    // the 83,653,863 of the whole autoencoder (summed from the recorded diffusers key list).
    assert_eq!(get("UNet"), 859_520_964);
    assert_eq!(get("CLIP text encoder"), 123_060_480);
    assert_eq!(get("VAE encoder"), 34_163_664);
    assert!(get("CP-adapter") > 0 && get("decoder") > 0);
    assert!(
        counts
            .iter()
            .filter(|c| c.trainable)
            .all(|c| c.name == "CP-adapter" || c.name == "decoder")
    );
}

/// `decoder_text`: by default the decoder reads the adapted text `L'` the UNet reads; with
/// `clip` it reads CLIP's `L` while the UNet still reads `L'` (checked against the two-text
/// pass with the texts given by hand), and the outputs differ.
#[test]
fn the_decoder_reads_the_adapted_text_or_clips_as_configured() {
    use diffris_model::diffris::DecoderText;
    let _rng = crate::burn_rng();
    // A gate of 1 (not VPD's 1e-4) so that L' is far from L; no dropout (under autodiff Burn
    // drops in every pass, so two passes would differ by their masks).
    let cfg = small(
        DecoderConfig::Pcmrd(PcmrdConfig::default()),
        CpAdapterConfig {
            gamma_init: 1.0,
            dropout: 0.0,
            ..CpAdapterConfig::default()
        },
        64,
    );
    let (image, ids, eos, _) = batch(64);
    let values = |t: Tensor<AB, 4>| t.into_data().to_vec::<f32>().unwrap();
    let mut outputs = Vec::new();
    for text_read in [DecoderText::Adapted, DecoderText::Clip] {
        let cfg = DiffRisConfig {
            decoder_text: text_read,
            ..cfg.clone()
        };
        let m = model(&cfg);
        let latent = m.encode_image(image.clone());
        let text = m.encode_text(ids.clone());
        let adapted = m.adapter.forward(text.clone());
        let got = m
            .forward_encoded(latent.clone(), text.clone(), eos.clone(), false)
            .logits;
        let decoder_text = match text_read {
            DecoderText::Adapted => adapted.clone(),
            DecoderText::Clip => text,
        };
        let by_hand = m
            .forward_texts(latent, adapted, decoder_text, eos.clone(), false, false)
            .0
            .logits;
        assert_eq!(values(got.clone()), values(by_hand), "{text_read:?}");
        outputs.push(values(got));
    }
    assert_ne!(outputs[0], outputs[1], "L and L' differ, so do the masks");
}
