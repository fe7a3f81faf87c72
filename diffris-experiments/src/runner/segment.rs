//! `diffris segment` from its request to its files: one prediction of a finished run on an image
//! and a text of the user's, written as a binary mask and an overlay at the image's size.

use std::path::PathBuf;

use anyhow::Context;
use burn::data::dataloader::batcher::Batcher;
use burn::tensor::activation::sigmoid;
use diffris_data::batch::{RisBatch, RisBatcher};
use diffris_data::inspect::overlay;
use diffris_data::rle::BinaryMask;
use diffris_data::sample::open_image;
use diffris_data::transforms::resize_bilinear;
use image::GrayImage;

use crate::device::backend::{BackendJob, DeviceBackend, DeviceSpec, RunTarget, dispatch};
use crate::inputs::query::query_item;
use crate::records::reload::load_run;
use crate::util::cache::default_cache;
use crate::util::png::save_png;

/// What `diffris segment` was asked (its arguments).
pub struct Request {
    pub run: PathBuf,
    pub image: PathBuf,
    pub text: String,
    pub out: PathBuf,
    pub cache: Option<PathBuf>,
}

struct Segment(Request);

impl BackendJob for Segment {
    type Output = anyhow::Result<()>;

    fn run<B: DeviceBackend>(self, device: B::Device, _target: RunTarget) -> anyhow::Result<()> {
        let a = self.0;
        crate::util::atomic_file::check_writable_dir(&a.out)?;
        let cache = a.cache.clone().unwrap_or_else(default_cache);
        let run = load_run::<B>(&a.run, &cache, &device)?;
        let img = open_image(&a.image)?.into_rgb8();
        let (h, w) = run.spec.model.image_size;
        let item = query_item(&img, &a.text, &run.tokenizer, (h, w))?;
        let batch: RisBatch<B> = RisBatcher.batch(vec![item], &device);
        let logits = run
            .model
            .forward(batch.image, batch.ids, batch.eos_index, false)
            .logits;
        let probs: Vec<f32> = sigmoid(logits).into_data().iter::<f32>().collect();
        // Back to the image's own size, as CGFormer's protocol does.
        let (ih, iw) = (img.height() as usize, img.width() as usize);
        let full = resize_bilinear(&probs, h, w, ih, iw);
        let mask = BinaryMask {
            height: ih,
            width: iw,
            data: full.iter().map(|&p| p > 0.5).collect(),
        };
        std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
        let gray = GrayImage::from_fn(iw as u32, ih as u32, |x, y| {
            image::Luma([if mask.data[y as usize * iw + x as usize] {
                255
            } else {
                0
            }])
        });
        save_png(&a.out.join("mask.png"), gray)?;
        save_png(&a.out.join("overlay.png"), overlay(&img, &mask))?;
        println!(
            "\"{}\": {} foreground pixels of {}; wrote {} and {}",
            a.text,
            mask.area(),
            ih * iw,
            a.out.join("mask.png").display(),
            a.out.join("overlay.png").display()
        );
        Ok(())
    }
}

/// Runs `request` on `device`.
pub fn run(device: DeviceSpec, request: Request) -> anyhow::Result<()> {
    dispatch(device, Segment(request))?
}
