//! Scores any method's saved masks (`NNNNNN.png`, one per sample in the split's order) with the
//! same metric code as the runner, under either protocol (`diffris score`).
//!
//! It exists to compare methods fairly, so it takes only what it can score without guessing:
//! 8-bit grayscale masks holding 0 (background) and 255 (foreground), at the network size for
//! the LAVT protocol and at each ground truth's size for CGFormer's. Anything else (another
//! size, 16-bit or colour images, other values) is an error naming the file, never a silently
//! resized or mis-thresholded mask.

use std::path::{Path, PathBuf};

use anyhow::Context;
use diffris_data::DatasetFormat;
use diffris_data::sample::open_image;
use diffris_data::transforms::resize_nearest;

use super::metrics::{MetricAccumulator, Metrics, Protocol};

/// What to score.
#[derive(Debug, Clone)]
pub struct Request {
    /// Directory of predicted masks `000000.png`, `000001.png`, ... in split order.
    pub pred: PathBuf,
    pub format: DatasetFormat,
    pub root: PathBuf,
    pub split: String,
    pub protocol: Protocol,
    /// The network's input size the masks were predicted at (needed by the lavt protocol).
    pub size: Option<(usize, usize)>,
}

/// A predicted mask: its size and foreground pixels, or why it cannot be scored.
pub fn read_prediction(path: &Path) -> anyhow::Result<(usize, usize, Vec<bool>)> {
    let image = open_image(path)?;
    let gray = match image {
        image::DynamicImage::ImageLuma8(g) => g,
        other => anyhow::bail!(
            "{}: a {:?} image; a predicted mask must be 8-bit grayscale, 0 for background and 255 \
             for foreground",
            path.display(),
            other.color()
        ),
    };
    if let Some(v) = gray.pixels().map(|p| p.0[0]).find(|&v| v != 0 && v != 255) {
        anyhow::bail!(
            "{}: holds the value {v}; a predicted mask holds only 0 (background) and 255 \
             (foreground)",
            path.display()
        );
    }
    let (w, h) = (gray.width() as usize, gray.height() as usize);
    Ok((h, w, gray.pixels().map(|p| p.0[0] == 255).collect()))
}

/// Scores the masks of `a.pred` against the split's ground truth.
pub fn run(a: &Request) -> anyhow::Result<Metrics> {
    let network = match (a.protocol, a.size) {
        (Protocol::Lavt, None) => anyhow::bail!(
            "the lavt protocol scores at the network's input size: pass --size (512 for the \
             paper profile, 64 for the tiny one), or use --protocol cgformer for masks at the \
             ground truth's size"
        ),
        (_, size) => size,
    };
    let samples = a.format.read_split(&a.root, &a.split)?;
    let mut acc = MetricAccumulator::default();
    for (i, s) in samples.iter().enumerate() {
        let path = a.pred.join(format!("{i:06}.png"));
        let (ph, pw, p) = read_prediction(&path)
            .with_context(|| format!("prediction for sample {i} ({})", s.id))?;
        let gt = s.load_mask()?;
        let expected = match a.protocol {
            Protocol::Lavt => network.expect("checked above"),
            Protocol::Cgformer => (gt.height, gt.width),
        };
        anyhow::ensure!(
            (ph, pw) == expected,
            "{}: the mask is {ph}x{pw}, the {} protocol scores sample {i} ({}) at {}x{}",
            path.display(),
            match a.protocol {
                Protocol::Lavt => "lavt",
                Protocol::Cgformer => "cgformer",
            },
            s.id,
            expected.0,
            expected.1
        );
        let g = match a.protocol {
            Protocol::Lavt => resize_nearest(&gt.data, gt.height, gt.width, ph, pw),
            Protocol::Cgformer => gt.data,
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
    Ok(acc.summary())
}
