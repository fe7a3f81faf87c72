//! `diffris pretrain` end to end on a small caption set: a run stopped after its first segment
//! and resumed ends with the same weights and loss curve as one run straight through; every
//! segment's exported folder loads as SD weights, with the source's VAE and text encoder and a
//! UNet whose validation loss, computed here from the loaded folder, is the one the run recorded.

#![cfg(feature = "flex")] // runs on the CPU reference backend

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::backend::Flex;
use diffris_data::formats::captions::read_captions;
use diffris_experiments::diagnostics::step_probe::to_data;
use diffris_experiments::inputs::frozen::load_frozen;
use diffris_experiments::pretrain::data::{DenoiseSet, DrawSpec, Encoded};
use diffris_experiments::pretrain::job::held_out;
use diffris_experiments::pretrain::log::LossCurve;
use diffris_experiments::pretrain::validation_loss;
use diffris_model::sd::NoiseSchedule;

use crate::binary::succeeds;

const ABLATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ablations");

/// 4 steps of 4 samples in segments of 2, on 24 captioned scenes (4 held out).
fn args<'a>(out: &'a str, cache: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "--device",
        "flex",
        "pretrain",
        "--out",
        out,
        "--cache",
        cache,
        "--synth-images",
        "24",
        "--val-images",
        "4",
        "--steps",
        "4",
        "--every",
        "2",
        "--batch",
        "4",
    ];
    a.extend(extra);
    a
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Two runs of [`args`] with `extra` in `tmp`: `a/` straight through and `b/` stopped after its
/// first segment, then resumed; each of `files` must be the same in both. Returns `a/` and the
/// cache.
fn straight_and_resumed(tmp: &Path, extra: &[&str], files: &[&str]) -> (PathBuf, PathBuf) {
    let cache = tmp.join("cache");
    let (a, b) = (tmp.join("a"), tmp.join("b"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (a_s, b_s, cache_s) = (s(&a), s(&b), s(&cache));
    succeeds(&args(&a_s, &cache_s, extra), tmp);
    succeeds(
        &args(&b_s, &cache_s, &[extra, &["--stop-after", "1"]].concat()),
        tmp,
    );
    succeeds(&args(&b_s, &cache_s, &[extra, &["--resume"]].concat()), tmp);
    for file in files {
        assert!(read(&a.join(file)) == read(&b.join(file)), "{file} differs");
    }
    (a, cache)
}

#[test]
fn pretrain_resumes_exactly_and_its_exports_load_as_sd_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (a_s, b_s, cache_s) = (s(&a), s(&b), s(&cache));
    succeeds(&args(&a_s, &cache_s, &[]), tmp.path());
    succeeds(&args(&b_s, &cache_s, &["--stop-after", "1"]), tmp.path());
    assert!(b.join("steps-2").is_dir() && !b.join("steps-4").exists());
    let refused = diffris_experiments_refuses(&args(&b_s, &cache_s, &[]), tmp.path());
    assert!(refused.contains("--resume"), "{refused}");
    succeeds(&args(&b_s, &cache_s, &["--resume"]), tmp.path());
    for file in [
        "steps-4/unet/diffusion_pytorch_model.safetensors",
        "steps-2/unet/diffusion_pytorch_model.safetensors",
        "steps-0/unet/diffusion_pytorch_model.safetensors",
        "loss_curve.csv",
    ] {
        assert!(read(&a.join(file)) == read(&b.join(file)), "{file} differs");
    }
    let curve = LossCurve::read(&a.join("loss_curve.csv")).unwrap();
    assert_eq!(curve.train.len(), 4);
    // The scalars for TensorBoard: the loss curve's values at its steps, each step once after
    // the resume (its event file withdrew what the stopped process logged past step 2).
    let scalars = |dir: &Path| -> Vec<(String, i64, f64)> {
        let mut v: Vec<(String, i64, f64)> = std::fs::read_to_string(dir.join("scalars.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let j: serde_json::Value = serde_json::from_str(l).unwrap();
                let tag = j["tag"].as_str().unwrap().to_string();
                (
                    tag,
                    j["step"].as_i64().unwrap(),
                    j["value"].as_f64().unwrap(),
                )
            })
            .collect();
        v.sort_by(|x, y| (&x.0, x.1).cmp(&(&y.0, y.1)));
        v
    };
    let logged = scalars(&a);
    assert_eq!(
        logged,
        scalars(&b),
        "resumed and straight-through runs log alike"
    );
    let of = |tag: &str| -> Vec<(i64, f64)> {
        logged
            .iter()
            .filter(|x| x.0 == tag)
            .map(|x| (x.1, x.2))
            .collect()
    };
    let train: Vec<(i64, f64)> = (1..=4).map(|s| (s, curve.train[s as usize - 1])).collect();
    assert_eq!(of("pretrain/train_loss"), train);
    let valid: Vec<(i64, f64)> = curve.valid.iter().map(|&(s, v)| (s as i64, v)).collect();
    assert_eq!(of("pretrain/valid_loss"), valid);
    assert_eq!(of("pretrain/valid_empty_caption_loss").len(), 3);
    assert_eq!(of("pretrain/lr").len(), 4);
    assert_eq!(
        curve.valid.iter().map(|v| v.0).collect::<Vec<_>>(),
        [0, 2, 4]
    );

    // The export loads: the source's VAE and text encoder unchanged, a trained UNet.
    let device = Default::default();
    let source_dir = std::fs::read_dir(cache.join("sd-random"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    let (source, _) = load_frozen::<Flex>(&source_dir, None, &device).unwrap();
    let (trained, tokenizer) = load_frozen::<Flex>(&a.join("steps-4"), None, &device).unwrap();
    assert_eq!(to_data(&source.vae), to_data(&trained.vae));
    assert_eq!(
        to_data(&source.text_encoder),
        to_data(&trained.text_encoder)
    );
    assert_ne!(to_data(&source.unet), to_data(&trained.unet));
    let (start, _) = load_frozen::<Flex>(&a.join("steps-0"), None, &device).unwrap();
    assert_eq!(
        to_data(&source.unet),
        to_data(&start.unet),
        "steps-0: the start"
    );

    // The tiny profile reads it in place of its random weights; another architecture it
    // refuses (the `tiny` preset of `init-sd`, with 4 latent channels, not the profile's 32).
    let export = a.join("steps-4");
    let sd = format!("sd15={}", export.display());
    let plan = succeeds(
        &[
            "--device",
            "flex",
            "train",
            "cp_adapter",
            "--profile",
            "tiny",
            "--sd",
            &sd,
            "--ablations",
            ABLATIONS,
            "--cache",
            &cache_s,
            "--dry-run",
        ],
        tmp.path(),
    );
    assert!(plan.contains(&export.display().to_string()), "{plan}");
    let preset = tmp.path().join("preset");
    succeeds(
        &[
            "init-sd",
            "--arch",
            "tiny",
            "--out",
            preset.to_str().unwrap(),
        ],
        tmp.path(),
    );
    let other = format!("sd15={}", preset.display());
    let refused = diffris_experiments_refuses(
        &[
            "--device",
            "flex",
            "train",
            "cp_adapter",
            "--profile",
            "tiny",
            "--sd",
            &other,
            "--ablations",
            ABLATIONS,
            "--cache",
            &cache_s,
            "--dry-run",
        ],
        tmp.path(),
    );
    assert!(refused.contains("another architecture"), "{refused}");

    // Its validation loss, computed here from the loaded folder, is the recorded one.
    let config = std::fs::read_to_string(a.join("config.ron")).unwrap();
    assert!(config.contains("latent_scale: 5.06"), "{config}");
    let val = validation_set(&cache, &trained, &tokenizer);
    let here = validation_loss::<Flex>(&trained.unet, None, &val, 4, &device);
    let recorded = curve.valid[2].1;
    // The same passes on the same machine; only the encoding ran in other batches (8 here, 8
    // in the run), so the numbers agree to f32 rounding of the loss.
    assert!(
        (here - recorded).abs() <= 1e-6 * recorded,
        "{here} vs {recorded}"
    );
    let initial = validation_loss::<Flex>(&source.unet, None, &val, 4, &device);
    assert!(
        (initial - curve.valid[0].1).abs() <= 1e-6 * initial,
        "{initial} vs {}",
        curve.valid[0].1
    );
}

/// The validation samples of the runs of [`args`], encoded by `sd` (the run's frozen VAE and text
/// encoder: any export's).
fn validation_set(
    cache: &Path,
    sd: &diffris_model::sd::StableDiffusion<Flex>,
    tokenizer: &diffris_data::ClipTokenizer,
) -> Arc<DenoiseSet> {
    let root = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir() && p.to_string_lossy().contains("synthrs-captions"))
        .unwrap();
    let pairs = read_captions(&root).unwrap();
    let held = held_out(&pairs, 4, &root);
    let val_rows: Vec<usize> = (0..pairs.len()).filter(|&i| held[i]).collect();
    assert_eq!(val_rows.len(), 4);
    let bar = indicatif::ProgressBar::hidden();
    let device = Default::default();
    let encoded = Encoded::encode::<Flex>(&pairs, sd, tokenizer, 64, 8, &device, &bar)
        .unwrap()
        .select(&val_rows);
    Arc::new(DenoiseSet {
        data: encoded,
        draws: DrawSpec {
            seed: None,
            segment_len: 8,
            caption_dropout: 0.1,
            latent_scale: 5.06,
            sample_posterior: false,
            schedule: NoiseSchedule::sd(),
        },
    })
}

/// `--ema-decay`: the exports hold the weights' moving average, whose validation loss the curve
/// records (computed here again from the loaded folder); a resumed run continues the average
/// exactly (it is saved with the optimizer's state).
#[test]
fn pretrain_exports_the_weights_average_when_asked_and_resumes_it_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, cache) = straight_and_resumed(
        tmp.path(),
        &["--ema-decay", "0.5"],
        &[
            "steps-4/unet/diffusion_pytorch_model.safetensors",
            "steps-2/unet/diffusion_pytorch_model.safetensors",
            "loss_curve.csv",
        ],
    );
    let curve = LossCurve::read(&a.join("loss_curve.csv")).unwrap();
    let steps = |points: &[(usize, f64)]| points.iter().map(|p| p.0).collect::<Vec<_>>();
    assert_eq!(steps(&curve.valid_ema), [0, 2, 4]);
    assert_eq!(curve.valid_ema[0], curve.valid[0], "no step: the start");
    let device = Default::default();
    let (averaged, tokenizer) = load_frozen::<Flex>(&a.join("steps-4"), None, &device).unwrap();
    let val = validation_set(&cache, &averaged, &tokenizer);
    let here = validation_loss::<Flex>(&averaged.unet, None, &val, 4, &device);
    let (recorded, trained) = (curve.valid_ema[2].1, curve.valid[2].1);
    // As in the test above: the same passes, f32 rounding of the loss apart.
    assert!(
        (here - recorded).abs() <= 1e-6 * recorded,
        "{here} vs {recorded}"
    );
    assert!(
        (here - trained).abs() > 1e-4 * trained,
        "the export is the average, not the trained weights ({here} vs {trained})"
    );
}

/// `--stage vae`: the VAE trains as a KL autoencoder and a run resumed after its first segment
/// ends with the same weights and curve; the export holds the source's UNet and text encoder, a
/// trained encoder and decoder, and the latent factor measured again here; a `unet` run started
/// from it reads that factor, trains on posterior draws at the tiny size and carries the
/// decoder into its exports; the tiny profile reads it, its latents scaled by that factor.
#[test]
fn pretrain_trains_the_vae_then_the_unet_on_its_latents() {
    use diffris_experiments::pretrain::autoencoder::{Autoencoder, latent_scale};
    use diffris_experiments::pretrain::images::{ImageSet, read_images};
    use diffris_experiments::pretrain::segments::mean_loss;
    use diffris_model::sd::VaeDecoder;

    let tmp = tempfile::tempdir().unwrap();
    let (a, cache) = straight_and_resumed(
        tmp.path(),
        &["--stage", "vae"],
        &[
            "steps-4/vae/diffusion_pytorch_model.safetensors",
            "steps-4/vae/config.json",
            "loss_curve.csv",
        ],
    );
    let c = tmp.path().join("c");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (c_s, cache_s) = (s(&c), s(&cache));
    let device = Default::default();
    let source_dir = std::fs::read_dir(cache.join("sd-random"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    let (source, _) = load_frozen::<Flex>(&source_dir, None, &device).unwrap();
    let (trained, _) = load_frozen::<Flex>(&a.join("steps-4"), None, &device).unwrap();
    assert_eq!(to_data(&source.unet), to_data(&trained.unet));
    assert_eq!(
        to_data(&source.text_encoder),
        to_data(&trained.text_encoder)
    );
    assert_ne!(
        to_data(&source.vae),
        to_data(&trained.vae),
        "the VAE trained"
    );
    let decoder = VaeDecoder::<Flex>::load(&a.join("steps-4"), None, &device).unwrap();

    // The held-out images, as the run read them.
    let root = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir() && p.to_string_lossy().contains("synthrs-captions"))
        .unwrap();
    let pairs = read_captions(&root).unwrap();
    let held = held_out(&pairs, 4, &root);
    let paths: Vec<_> = (0..pairs.len())
        .filter(|&i| held[i])
        .map(|i| pairs[i].image.clone())
        .collect();
    let val = Arc::new(ImageSet {
        size: 64,
        pixels: read_images(&paths, 64, &indicatif::ProgressBar::hidden()).unwrap(),
        latent_dims: [32, 16, 16],
        seed: None,
        segment_len: 8,
    });
    let factor = latent_scale(&trained.vae, &val, 4, &device);
    let saved = trained.vae.config().scaling_factor;
    // The same computation on the same weights; the factor went through JSON.
    assert!(
        (saved - factor).abs() <= 1e-12 * factor,
        "{saved} vs {factor}"
    );
    let curve = LossCurve::read(&a.join("loss_curve.csv")).unwrap();
    let model = Autoencoder {
        encoder: trained.vae.clone(),
        decoder: decoder.clone(),
        kl_weight: 1e-6,
    };
    let here = mean_loss(&model, &val, 4, &device);
    let recorded = curve.valid[2].1;
    assert!(
        (here - recorded).abs() <= 1e-6 * recorded,
        "{here} vs {recorded}"
    );
    assert!(recorded < curve.valid[0].1, "the reconstruction improved");

    // The UNet's stage on the trained VAE's latents.
    let export = s(&a.join("steps-4"));
    succeeds(&args(&c_s, &cache_s, &["--sd", &export]), tmp.path());
    let config = std::fs::read_to_string(c.join("config.ron")).unwrap();
    for want in [
        "image_size: 64".to_string(),
        "sample_posterior: true".to_string(),
        format!("latent_scale: {saved}"),
    ] {
        assert!(config.contains(&want), "{want} in {config}");
    }
    let carried = VaeDecoder::<Flex>::load(&c.join("steps-4"), None, &device).unwrap();
    assert_eq!(to_data(&carried), to_data(&decoder));

    // `sample` draws from its captions: a grid of 2 captions by 3 images of 64 px; a stack
    // without a decoder is refused, saying how to get one.
    let grid = tmp.path().join("grid.png");
    let sample = |sd: &str| -> Vec<String> {
        [
            "--device",
            "flex",
            "sample",
            "--sd",
            sd,
            "--caption",
            "a red ship",
            "--caption",
            "a white building",
            "--per-caption",
            "3",
            "--steps",
            "2",
            "--out",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([s(&grid)])
        .collect()
    };
    let unet_export = s(&c.join("steps-4"));
    let printed = succeeds(
        &sample(&unet_export)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        tmp.path(),
    );
    assert!(printed.contains("row 2: a white building"), "{printed}");
    assert_eq!(image::image_dimensions(&grid).unwrap(), (192, 128));
    let refused = diffris_experiments_refuses(
        &sample(&s(&source_dir))
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        tmp.path(),
    );
    assert!(refused.contains("pretrain --stage vae"), "{refused}");

    // The tiny profile reads it with its latents scaled by the trained VAE's factor.
    let plan = succeeds(
        &[
            "--device",
            "flex",
            "train",
            "cp_adapter",
            "--profile",
            "tiny",
            "--sd",
            &format!("sd15={export}"),
            "--ablations",
            ABLATIONS,
            "--cache",
            &cache_s,
            "--dry-run",
        ],
        tmp.path(),
    );
    for want in [
        format!("latent_scale: {saved}"),
        "the trained VAE of `sd15`".to_string(),
    ] {
        assert!(plan.contains(&want), "{want} in {plan}");
    }
}

/// `--device flex,flex` (two workers, the code path of several GPUs) pre-trains to the very
/// bytes of one device running the same two passes per step, and a run resumes only on as many
/// devices as it started on.
#[test]
fn pretrain_on_two_devices_equals_one_with_the_same_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (one_s, two_s, cache_s) = (s(&one), s(&two), s(&cache));
    succeeds(&args(&one_s, &cache_s, &["--micro-batch", "2"]), tmp.path());
    // The same passes of 2 (and validation batches of 2) on one device or on two.
    let mut on_two = args(
        &two_s,
        &cache_s,
        &["--micro-batch", "2", "--stop-after", "1"],
    );
    on_two[1] = "flex,flex";
    succeeds(&on_two, tmp.path());
    let config = std::fs::read_to_string(two.join("config.ron")).unwrap();
    assert!(config.contains("devices: 2"), "{config}");
    let refused = diffris_experiments_refuses(
        &args(&two_s, &cache_s, &["--micro-batch", "2", "--resume"]),
        tmp.path(),
    );
    assert!(refused.contains("another configuration"), "{refused}");
    let mut resumed = args(&two_s, &cache_s, &["--micro-batch", "2", "--resume"]);
    resumed[1] = "flex,flex";
    succeeds(&resumed, tmp.path());
    for file in [
        "steps-4/unet/diffusion_pytorch_model.safetensors",
        "steps-2/unet/diffusion_pytorch_model.safetensors",
        "loss_curve.csv",
    ] {
        assert!(
            read(&one.join(file)) == read(&two.join(file)),
            "{file} differs"
        );
    }
}

/// `--train-text-encoder`: the text encoder trains with the UNet, resumes exactly, and the
/// export carries it (the VAE stays the source's).
#[test]
fn pretrain_trains_its_text_encoder_when_asked_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, _) = straight_and_resumed(
        tmp.path(),
        &["--train-text-encoder"],
        &[
            "steps-4/unet/diffusion_pytorch_model.safetensors",
            "steps-4/text_encoder/model.safetensors",
            "loss_curve.csv",
        ],
    );
    let config = std::fs::read_to_string(a.join("config.ron")).unwrap();
    assert!(config.contains("train_text_encoder: true"), "{config}");
    let device = Default::default();
    let (start, _) = load_frozen::<Flex>(&a.join("steps-0"), None, &device).unwrap();
    let (trained, _) = load_frozen::<Flex>(&a.join("steps-4"), None, &device).unwrap();
    assert_ne!(
        to_data(&start.text_encoder),
        to_data(&trained.text_encoder),
        "the text encoder trained"
    );
    assert_ne!(to_data(&start.unet), to_data(&trained.unet));
    assert_eq!(to_data(&start.vae), to_data(&trained.vae));
}

/// Runs `diffris ARGS`, which must fail; its output.
fn diffris_experiments_refuses(args: &[&str], cwd: &Path) -> String {
    let (ok, text) = crate::binary::outcome(crate::binary::diffris().args(args).current_dir(cwd));
    assert!(!ok, "diffris {args:?} succeeded:\n{text}");
    text
}
