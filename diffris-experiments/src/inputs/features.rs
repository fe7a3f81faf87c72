//! `diffris features` from its request to its file: the frozen SD stack run on one image and
//! expression, and what it sees (token ids, CLIP states, VAE latent, every UNet tap,
//! cross-attention maps) written to a safetensors file.

use std::path::PathBuf;

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::Tensor;
use diffris_data::batch::{RisBatch, RisBatcher};
use diffris_data::sample::open_image;
use diffris_model::sd::UNetRequest;

use crate::device::backend::{BackendJob, DeviceBackend, DeviceSpec, RunTarget, dispatch};
use crate::inputs::frozen::load_frozen_preset;
use crate::inputs::query::query_item;
use crate::util::atomic_file::TensorFile;
use crate::util::build_info::GIT_REVISION;

/// What `diffris features` was asked (its arguments).
pub struct Request {
    pub sd: PathBuf,
    pub arch: Option<String>,
    pub image: PathBuf,
    pub text: String,
    pub out: PathBuf,
    pub size: Option<usize>,
    pub timestep: f64,
    pub latent_scale: f64,
}

/// Rounds an image side to the nearest multiple of 64 (at least 64).
pub fn round_to_64(side: u32) -> usize {
    ((side as f64 / 64.0).round() as usize).max(1) * 64
}

struct Features(Request);

impl BackendJob for Features {
    type Output = anyhow::Result<()>;

    fn run<B: DeviceBackend>(self, device: B::Device, target: RunTarget) -> anyhow::Result<()> {
        let a = self.0;
        crate::util::atomic_file::check_writable_file(&a.out)?;
        let (sd, tokenizer) = load_frozen_preset::<B>(&a.sd, a.arch.as_deref(), &device)?;
        let img = open_image(&a.image)?.into_rgb8();
        let (h, w) = match a.size {
            Some(s) if s % 64 == 0 && s > 0 => (s, s),
            Some(s) => anyhow::bail!("--size {s} is not a positive multiple of 64"),
            None => (round_to_64(img.height()), round_to_64(img.width())),
        };
        let item = query_item(&img, &a.text, &tokenizer, (h, w))?;
        let (ids_i64, eos_index): (Vec<i64>, usize) =
            (item.ids.iter().map(|&i| i as i64).collect(), item.eos_index);
        let batch: RisBatch<B> = RisBatcher.batch(vec![item], &device);
        let (image, ids) = (batch.image, batch.ids);

        let text = sd.text_encoder.forward(ids);
        let mean = sd.vae.forward(image);
        let latent = mean.clone().mul_scalar(a.latent_scale);
        let t = Tensor::<B, 1>::from_floats([a.timestep as f32], &device);
        let out = sd.unet.forward(
            latent.clone(),
            t,
            text.clone(),
            UNetRequest {
                sample: true,
                attention_maps: true,
                attention_probs: true,
            },
        );

        let mut file = TensorFile::default();
        file.ints("token_ids", vec![1, ids_i64.len()], &ids_i64);
        file.ints("eos_index", vec![1], &[eos_index as i64]);
        file.float("clip.last_hidden_state", text);
        file.float("vae.posterior_mean", mean);
        file.float("vae.latent_scaled", latent);
        for (k, tap) in out.taps.iter().enumerate() {
            file.float(&format!("unet.tap.{k}"), tap.clone());
        }
        for (k, map) in out.attention_maps.iter().enumerate() {
            if let Some(m) = map {
                file.float(&format!("unet.xattn.level{k}"), m.clone());
            }
        }
        for (path, probs) in out.attention_probs {
            file.float(&format!("unet.attnprobs.{path}"), probs);
        }
        if let Some(s) = out.sample {
            file.float("unet.out", s);
        }
        file.meta("text", a.text.clone());
        file.meta("image", a.image.display().to_string());
        file.meta("input_size", format!("{h}x{w}"));
        file.meta("timestep", a.timestep.to_string());
        file.meta("latent_scale", a.latent_scale.to_string());
        file.meta("sd", a.sd.display().to_string());
        file.meta("device", target.spec.to_string());
        file.meta("git_revision", GIT_REVISION);
        file.meta(
            "taps",
            "unet.tap.k is level k (finest first): the state of up block n-1-k after its layer \
             layers_per_block-1 (LDM output_blocks.3(n-1-k)+1), level 0 the last up block's output",
        );
        file.write(&a.out)?;
        println!(
            "wrote {} tensors ({}x{} input, {} tokens) to {}",
            file.names().count(),
            h,
            w,
            eos_index - 1,
            a.out.display()
        );
        Ok(())
    }
}

/// Runs `request` on `device`.
pub fn run(device: DeviceSpec, request: Request) -> anyhow::Result<()> {
    dispatch(device, Features(request))?
}
