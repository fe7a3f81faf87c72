//! `diffris score --pred DIR --format F --root R --split S`: scores any method's saved masks
//! (`NNNNNN.png`, one per sample in the split's order; foreground = value > 127) with the same
//! metric code as the runner, under either protocol.

use std::path::PathBuf;

use anyhow::Context;
use diffris_data::DatasetFormat;
use diffris_data::sample::open_image;
use diffris_data::transforms::resize_nearest;

use crate::commands::common::print_metrics;
use crate::metrics::{MetricAccumulator, Protocol};

/// Arguments of `diffris score`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScoreArgs {
    /// Directory of predicted masks `000000.png`, `000001.png`, ... in split order.
    #[arg(long)]
    pub pred: PathBuf,
    #[arg(long)]
    pub format: DatasetFormat,
    #[arg(long)]
    pub root: PathBuf,
    #[arg(long, default_value = "test")]
    pub split: String,
    /// lavt: at the prediction's size against the nearest-resized ground truth; cgformer: at the
    /// ground truth's size, the prediction resized with nearest neighbour.
    #[arg(long, value_enum, default_value_t = Protocol::Lavt)]
    pub protocol: Protocol,
}

/// Runs the command.
pub fn run(a: ScoreArgs) -> anyhow::Result<()> {
    let samples = a.format.read_split(&a.root, &a.split)?;
    let mut acc = MetricAccumulator::default();
    for (i, s) in samples.iter().enumerate() {
        let path = a.pred.join(format!("{i:06}.png"));
        let pred = open_image(&path)
            .with_context(|| format!("prediction for sample {i} ({})", s.id))?
            .into_luma8();
        let (pw, ph) = (pred.width() as usize, pred.height() as usize);
        let p: Vec<bool> = pred.pixels().map(|v| v.0[0] > 127).collect();
        let gt = s.load_mask()?;
        let (p, g) = match a.protocol {
            Protocol::Lavt => (p, resize_nearest(&gt.data, gt.height, gt.width, ph, pw)),
            Protocol::Cgformer => (resize_nearest(&p, ph, pw, gt.height, gt.width), gt.data),
        };
        acc.add_masks(&p, &g)
            .with_context(|| format!("sample {i} ({})", s.id))?;
    }
    let extra = std::fs::read_dir(&a.pred)?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".png"))
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|k| k >= samples.len())
        })
        .count();
    anyhow::ensure!(
        extra == 0,
        "{} holds {extra} more mask(s) than the {} samples of {}/{}",
        a.pred.display(),
        samples.len(),
        a.format.name(),
        a.split
    );
    println!("{} {} ({})", a.format.name(), a.split, a.protocol.label());
    print_metrics("predictions", &acc.summary());
    Ok(())
}
