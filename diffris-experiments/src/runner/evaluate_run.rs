//! `diffris eval` from its request to its output: a finished run evaluated on a split with either
//! protocol, each sample's score written to the run's `per_sample-SPLIT-PROTOCOL.csv`, and
//! optionally its predicted masks.

use std::path::PathBuf;

use image::GrayImage;

use crate::config::RunDir;
use crate::config::recipe::set::{FieldSet, apply_sets};
use crate::device::backend::{BackendJob, DeviceBackend, DeviceSpec, RunTarget, dispatch};
use crate::eval::evaluate::{baselines, per_sample_csv, score_samples};
use crate::eval::metrics::Protocol;
use crate::records::reload::load_run_with;
use crate::runner::predict::predict_split;
use crate::util::atomic_file::write_atomic;
use crate::util::cache::default_cache;
use crate::util::cache::fnv1a;
use crate::util::png::save_png;

/// What `diffris eval` was asked (its arguments).
pub struct Request {
    pub run: PathBuf,
    pub split: Option<String>,
    pub protocol: Option<Protocol>,
    pub save_masks: Option<PathBuf>,
    pub cache: Option<PathBuf>,
    pub limit: Option<usize>,
    /// `--set model.PATH=VALUE`: model fields changed for this evaluation.
    pub sets: Vec<FieldSet>,
}

/// `sets` as fields of the model config: each must start with `model.`.
fn model_sets(sets: &[FieldSet]) -> anyhow::Result<Vec<FieldSet>> {
    sets.iter()
        .map(|s| match s.path.split_first() {
            Some((first, rest)) if first == "model" && !rest.is_empty() => Ok(FieldSet {
                path: rest.to_vec(),
                value: s.value.clone(),
            }),
            _ => anyhow::bail!(
                "{s}: eval changes the run's model fields only (`model.…`); the split and the \
                 protocol have their own flags (--split, --protocol)"
            ),
        })
        .collect()
}

/// The file stem suffix of an evaluation under `sets` (empty without): a digest of the
/// settings as written, so that each set of settings has its own scores file.
fn sets_suffix(sets: &[FieldSet]) -> String {
    if sets.is_empty() {
        return String::new();
    }
    let text: Vec<String> = sets.iter().map(ToString::to_string).collect();
    format!("-set-{:016x}", fnv1a(text.join("\n").into_bytes()))
}

struct Eval(Request);

impl BackendJob for Eval {
    type Output = anyhow::Result<()>;

    fn run<B: DeviceBackend>(self, device: B::Device, target: RunTarget) -> anyhow::Result<()> {
        let a = self.0;
        let cache = a.cache.clone().unwrap_or_else(default_cache);
        // Where the per-sample scores and the masks go, checked before the evaluation.
        if a.run.is_dir() {
            crate::util::atomic_file::check_writable_dir(&a.run)?;
        }
        if let Some(dir) = &a.save_masks {
            crate::util::atomic_file::check_writable_dir(dir)?;
        }
        let model_sets = model_sets(&a.sets)?;
        let run = load_run_with::<B>(&a.run, &cache, &device, |m| {
            *m = apply_sets(m, &model_sets)?;
            Ok(())
        })?;
        let spec = &run.spec;
        let split = a.split.clone().unwrap_or_else(|| spec.test_split.clone());
        let protocol = a.protocol.unwrap_or(spec.protocol);
        let (data, probs) = predict_split(
            &run,
            &split,
            a.limit.or(spec.limit_eval),
            &cache,
            &device,
            &target,
        )?;
        let (m, each) = score_samples(&probs, &data, protocol)?;
        let suffix = sets_suffix(&a.sets);
        let csv_path =
            RunDir::at(&a.run).per_sample_csv(&split, &format!("{}{suffix}", protocol.name()));
        if !a.sets.is_empty() {
            let listed: Vec<String> = a.sets.iter().map(|s| format!("{s}\n")).collect();
            write_atomic(&csv_path.with_extension("set"), listed.concat().as_bytes())?;
            for s in &a.sets {
                println!("{s}");
            }
        }
        write_atomic(&csv_path, per_sample_csv(&data, &each).as_bytes())?;
        println!(
            "{} / {} / {split} ({})",
            spec.ablation,
            spec.variant,
            protocol.label()
        );
        println!("{}", m.line("DiffRIS"));
        println!("per-sample scores: {}", csv_path.display());
        let b = baselines(&data, spec.dataset, &spec.data_root)?;
        println!("{}", b.all_background.line("all background"));
        println!("{}", b.whole_image.line("whole image"));
        if let Some(r) = &b.random_object {
            println!("{}", r.line("random object"));
        }
        if let Some(dir) = &a.save_masks {
            std::fs::create_dir_all(dir)?;
            let (h, w) = spec.model.image_size;
            for (i, p) in probs.iter().enumerate() {
                let img = GrayImage::from_fn(w as u32, h as u32, |x, y| {
                    image::Luma([if p[y as usize * w + x as usize] > 0.5 {
                        255
                    } else {
                        0
                    }])
                });
                save_png(&dir.join(format!("{i:06}.png")), img)?;
            }
            println!("saved {} masks to {}", probs.len(), dir.display());
        }
        Ok(())
    }
}

/// Runs `request` on `device`.
pub fn run(device: DeviceSpec, request: Request) -> anyhow::Result<()> {
    dispatch(device, Eval(request))?
}
