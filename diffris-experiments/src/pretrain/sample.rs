//! `diffris sample`: images generated from captions by a stack with a VAE decoder, as
//! diffusers' `StableDiffusionPipeline` makes them with its DDIM scheduler: latents drawn from
//! the standard normal, `steps` deterministic DDIM steps (`eta = 0`, SD-1.x's leading spacing)
//! with classifier-free guidance (`eps = eps(empty) + g * (eps(caption) - eps(empty))`), then
//! decoded from the latents divided by the VAE's factor. The look of a pre-trained stack: what a
//! UNet that reads its captions draws from them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::tensor::{Tensor, TensorData};
use diffris_data::ClipTokenizer;
use diffris_kernels::SdBackend;
use diffris_model::sd::schedule::NoiseSchedule;
use diffris_model::sd::{StableDiffusion, UNetRequest, VaeDecoder};
use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::data::encode_captions;
use super::draws::{normals, sample_seed};
use crate::device::backend::{BackendJob, DeviceBackend, DeviceSpec, RunTarget, dispatch};
use crate::inputs::frozen::load_frozen;
use crate::util::png::save_png;

/// How images are sampled.
#[derive(Clone, Copy, Debug)]
pub struct Sampling {
    /// DDIM steps.
    pub steps: usize,
    /// The guidance scale `g` (1: the captions alone, no guidance).
    pub guidance: f64,
    /// The latents' factor (the VAE's `scaling_factor`).
    pub latent_scale: f64,
    /// Side of the square images.
    pub image_size: usize,
    pub seed: u64,
}

/// The starting latents of `n` images: image `k` draws its standard normal values from its own
/// stream, `(seed, k)`, so an image does not depend on how many are sampled with it.
///
/// # Shapes
/// -> `[n, C, h, w]` for `dims = [C, h, w]`.
pub fn start_latents<B: SdBackend>(
    n: usize,
    dims: [usize; 3],
    seed: u64,
    device: &B::Device,
) -> Tensor<B, 4> {
    let per: usize = dims.iter().product();
    let values: Vec<f32> = (0..n as u64)
        .flat_map(|k| normals(&mut ChaCha8Rng::seed_from_u64(sample_seed(seed, k)), per))
        .collect();
    let [c, h, w] = dims;
    Tensor::from_data(TensorData::new(values, [n, c, h, w]), device)
}

/// Denoises `latents` by DDIM with guidance: `context` holds each image's caption states,
/// `empty` the empty caption's (both `[n, T, D]`).
///
/// # Shapes
/// `latents`: `[n, C, h, w]` -> `[n, C, h, w]` (the sample at timestep 0, scaled).
pub fn denoise<B: SdBackend>(
    sd: &StableDiffusion<B>,
    mut latents: Tensor<B, 4>,
    context: Tensor<B, 3>,
    empty: Tensor<B, 3>,
    steps: usize,
    guidance: f64,
) -> Tensor<B, 4> {
    let schedule = NoiseSchedule::sd();
    let n = latents.dims()[0];
    let device = latents.device();
    // diffusers: one UNet pass over [empty; captions] per step.
    let both = Tensor::cat(vec![empty, context], 0);
    for t in schedule.ddim_timesteps(steps) {
        let timesteps =
            Tensor::<B, 1>::from_data(TensorData::new(vec![t as f32; 2 * n], [2 * n]), &device);
        let out = sd.unet.forward(
            Tensor::cat(vec![latents.clone(), latents.clone()], 0),
            timesteps,
            both.clone(),
            UNetRequest {
                sample: true,
                ..Default::default()
            },
        );
        let eps = out.sample.expect("the noise prediction was requested");
        let uncond = eps.clone().narrow(0, 0, n);
        let cond = eps.narrow(0, n, n);
        let eps = uncond.clone() + (cond - uncond).mul_scalar(guidance);
        latents = schedule.ddim_step(latents, eps, t, steps);
    }
    latents
}

/// Samples `per_caption` images of each caption: `[captions * per_caption, 3, S, S]` in about
/// [-1, 1], caption by caption.
pub fn sample_images<B: SdBackend>(
    sd: &StableDiffusion<B>,
    decoder: &VaeDecoder<B>,
    tokenizer: &ClipTokenizer,
    captions: &[String],
    per_caption: usize,
    s: Sampling,
    device: &B::Device,
) -> anyhow::Result<Tensor<B, 4>> {
    let c = sd.vae.config();
    let f = 1usize << c.block_out_channels.len().saturating_sub(1);
    anyhow::ensure!(
        s.image_size.is_multiple_of(f) && s.image_size > 0,
        "the image size {} is no multiple of the VAE's downsampling factor {f}",
        s.image_size
    );
    let side = s.image_size / f;
    let repeated: Vec<&str> = captions
        .iter()
        .flat_map(|c| std::iter::repeat_n(c.as_str(), per_caption))
        .collect();
    let n = repeated.len();
    let (context, _) = encode_captions(sd, tokenizer, &repeated, device)?;
    let (empty, _) = encode_captions(sd, tokenizer, &vec![""; n], device)?;
    let latents = start_latents::<B>(n, [c.latent_channels, side, side], s.seed, device);
    let latents = denoise(sd, latents, context, empty, s.steps, s.guidance);
    Ok(decoder.forward(latents.div_scalar(s.latent_scale)))
}

/// The images of `[N, 3, S, S]` in [-1, 1] as a grid of `columns` per row (values clamped,
/// mapped to 0..255).
pub fn grid<B: SdBackend>(images: Tensor<B, 4>, columns: usize) -> RgbImage {
    let [n, _, h, w] = images.dims();
    let values: Vec<f32> = images.clamp(-1.0, 1.0).into_data().iter::<f32>().collect();
    let columns = columns.max(1);
    let rows = n.div_ceil(columns);
    let mut canvas = RgbImage::new((columns * w) as u32, (rows * h) as u32);
    for k in 0..n {
        let (ox, oy) = ((k % columns) * w, (k / columns) * h);
        for y in 0..h {
            for x in 0..w {
                let at = |ch: usize| values[((k * 3 + ch) * h + y) * w + x];
                let px = |v: f32| ((v + 1.0) * 127.5).round() as u8;
                canvas.put_pixel(
                    (ox + x) as u32,
                    (oy + y) as u32,
                    image::Rgb([px(at(0)), px(at(1)), px(at(2))]),
                );
            }
        }
    }
    canvas
}

/// What `diffris sample` was asked.
pub struct Request {
    pub sd: PathBuf,
    pub captions: Vec<String>,
    pub per_caption: usize,
    pub steps: usize,
    pub guidance: f64,
    pub image_size: Option<usize>,
    pub seed: u64,
    pub out: PathBuf,
}

struct SampleJob(Request);

impl BackendJob for SampleJob {
    type Output = anyhow::Result<()>;

    fn run<B: DeviceBackend>(self, device: B::Device, _target: RunTarget) -> anyhow::Result<()> {
        let r = self.0;
        anyhow::ensure!(!r.captions.is_empty(), "give at least one --caption");
        let (sd, tokenizer) = load_frozen::<B>(&r.sd, None, &device)?;
        let decoder = read_decoder::<B>(&r.sd, &device)?;
        let tiny = crate::config::profile::is_tiny_arch(&sd.config());
        let sampling = Sampling {
            steps: r.steps,
            guidance: r.guidance,
            latent_scale: sd.vae.config().scaling_factor,
            image_size: r.image_size.unwrap_or(if tiny { 64 } else { 512 }),
            seed: r.seed,
        };
        let images = sample_images(
            &sd,
            &decoder,
            &tokenizer,
            &r.captions,
            r.per_caption,
            sampling,
            &device,
        )?;
        save_png(&r.out, grid(images, r.per_caption))?;
        println!(
            "{}: {} caption(s) by row, {} image(s) each ({} DDIM steps, guidance {}, seed {}):",
            r.out.display(),
            r.captions.len(),
            r.per_caption,
            r.steps,
            r.guidance,
            r.seed
        );
        for (k, c) in r.captions.iter().enumerate() {
            println!("  row {}: {c}", k + 1);
        }
        Ok(())
    }
}

/// The VAE decoder of the diffusers folder `path`, or an error saying how to get one.
fn read_decoder<B: SdBackend>(path: &Path, device: &B::Device) -> anyhow::Result<VaeDecoder<B>> {
    anyhow::ensure!(
        super::job::has_decoder(path),
        "{} has no VAE decoder (its vae/config.json names no up blocks): sampling decodes \
         latents; train one with `diffris pretrain --stage vae`, or use a released SD folder",
        path.display()
    );
    VaeDecoder::load(path, None, device)
        .with_context(|| format!("reading the VAE decoder of {}", path.display()))
}

/// Runs `request` on `device`.
pub fn run(device: DeviceSpec, request: Request) -> anyhow::Result<()> {
    dispatch(device, SampleJob(request))?
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn values<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
        t.into_data().iter::<f32>().collect()
    }

    /// Image `k`'s starting latents are its own: the same whether sampled alone or with others.
    #[test]
    fn each_image_draws_its_own_start() {
        let device = Default::default();
        let two = values(start_latents::<Flex>(2, [2, 2, 2], 5, &device));
        let three = values(start_latents::<Flex>(3, [2, 2, 2], 5, &device));
        assert_eq!(two[..], three[..16]);
        assert_ne!(three[..8], three[8..16]);
        assert_ne!(two, values(start_latents::<Flex>(2, [2, 2, 2], 6, &device)));
    }

    /// With guidance 1 the guided step is the captions' own: the loop equals DDIM steps taken
    /// here by hand on the conditional prediction alone.
    #[test]
    fn guidance_one_follows_the_captions_alone() {
        let dir = tempfile::tempdir().unwrap();
        let device = Default::default();
        let arch = crate::config::profile::tiny_arch();
        crate::inputs::frozen::write_random::<Flex>(&arch, 0, dir.path(), &device).unwrap();
        let (sd, tokenizer) = load_frozen::<Flex>(dir.path(), None, &device).unwrap();
        let captions = ["a red ship", "a small white building"];
        let (context, _) = encode_captions(&sd, &tokenizer, &captions, &device).unwrap();
        let (empty, _) = encode_captions(&sd, &tokenizer, &["", ""], &device).unwrap();
        let start = start_latents::<Flex>(2, [32, 4, 4], 1, &device);
        let got = values(denoise(&sd, start.clone(), context.clone(), empty, 3, 1.0));
        let schedule = NoiseSchedule::sd();
        let mut x = start;
        for t in schedule.ddim_timesteps(3) {
            let timesteps = Tensor::<Flex, 1>::from_data([t as f32, t as f32], &device);
            let request = UNetRequest {
                sample: true,
                ..Default::default()
            };
            let eps = sd
                .unet
                .forward(x.clone(), timesteps, context.clone(), request)
                .sample
                .unwrap();
            x = schedule.ddim_step(x, eps, t, 3);
        }
        let want = values(x);
        // `u + 1 * (c - u)` rounds apart from `c` by an ulp of the predictions (values of
        // order 1), and the UNet ran on twice the batch: 1e-4 absolute.
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-4, "{g} vs {w}");
        }
    }

    /// The grid by hand: three 2x2 images, two per row, -1 -> 0, 0 -> 128 (127.5 rounded), 1 ->
    /// 255, beyond clamped; the empty cell black.
    #[test]
    fn a_grid_places_images_by_row() {
        let device = Default::default();
        let mut v = vec![0.0f32; 3 * 3 * 4];
        v[0] = -1.0; // image 0, red, (0, 0)
        v[12 + 4 + 3] = 1.0; // image 1, green, (1, 1)
        v[24 + 8] = 2.0; // image 2, blue, (0, 0): clamped to 1
        let images = Tensor::<Flex, 4>::from_data(TensorData::new(v, [3, 3, 2, 2]), &device);
        let g = grid(images, 2);
        assert_eq!(g.dimensions(), (4, 4));
        assert_eq!(g.get_pixel(0, 0).0, [0, 128, 128]);
        assert_eq!(g.get_pixel(3, 1).0, [128, 255, 128]);
        assert_eq!(g.get_pixel(0, 2).0, [128, 128, 255]);
        assert_eq!(g.get_pixel(3, 3).0, [0, 0, 0]);
    }
}
