//! Evaluation of a trained model on a split with the metric code of [`crate::eval::metrics`], and the
//! trivial baselines a model must beat (all background, whole image, a random object).

use diffris_kernels::SdBackend;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::activation::sigmoid;
use diffris_data::{DatasetFormat, MaskSource, Sample};
use diffris_model::diffris::DiffRis;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::inputs::split::EncodedSplit;
use crate::util::progress::Heartbeat;
use diffris_data::transforms::resize_nearest;

use crate::eval::metrics::{
    MetricAccumulator, Metrics, PR_THRESHOLDS, Protocol, SampleScore, protocol_pair,
};

/// Foreground probabilities of every sample, `H*W` each at the network size, handed to `each`
/// (sample index, probabilities) batch by batch: nothing of the split is held.
pub fn predict_each<B: SdBackend>(
    model: &DiffRis<B>,
    data: &EncodedSplit,
    batch: usize,
    device: &B::Device,
    bar: &ProgressBar,
    mut heartbeat: Option<&mut Heartbeat>,
    mut each: impl FnMut(usize, &[f32]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let (h, w) = data.image_size;
    let indices: Vec<usize> = (0..data.len()).collect();
    bar.set_length(data.len() as u64);
    let mut done = 0;
    for chunk in indices.chunks(batch.max(1)) {
        let b = data.try_batch::<B>(chunk, device)?;
        // On the backend's compute pool (`PoolOps`): a batch's many small operations issued
        // from one of its threads.
        let probs: Vec<f32> = B::sd_on_pool(|| {
            let logits = model.forward_encoded(b.latent, b.text, b.eos, false).logits;
            sigmoid(logits).into_data().iter::<f32>().collect()
        });
        for (&i, p) in chunk.iter().zip(probs.chunks(h * w)) {
            each(i, p)?;
        }
        done += chunk.len();
        bar.inc(chunk.len() as u64);
        if let Some(h) = heartbeat.as_deref_mut() {
            h.beat(done as u64, data.len() as u64, String::new);
        }
    }
    Ok(())
}

/// Foreground probabilities of every sample, `H*W` each at the network size (all held: for
/// the commands that draw or save them).
pub fn predict<B: SdBackend>(
    model: &DiffRis<B>,
    data: &EncodedSplit,
    batch: usize,
    device: &B::Device,
    bar: &ProgressBar,
    heartbeat: Option<&mut Heartbeat>,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(data.len());
    predict_each(model, data, batch, device, bar, heartbeat, |_, p| {
        out.push(p.to_vec());
        Ok(())
    })?;
    Ok(out)
}

/// Scores a split's predictions sample by sample under a protocol (LAVT: against the cached
/// network-size masks; CGFormer: against each sample's original mask, read again from disk).
pub struct Scorer<'a> {
    data: &'a EncodedSplit,
    protocol: Protocol,
    acc: MetricAccumulator,
    each: Vec<SampleScore>,
}

impl<'a> Scorer<'a> {
    pub fn new(data: &'a EncodedSplit, protocol: Protocol) -> Self {
        Self {
            data,
            protocol,
            acc: MetricAccumulator::default(),
            each: Vec::with_capacity(data.len()),
        }
    }

    /// Scores sample `i`'s probabilities `p` (`H*W` at the network size).
    pub fn add(&mut self, i: usize, p: &[f32]) -> anyhow::Result<()> {
        let (h, w) = self.data.image_size;
        let s = match self.protocol {
            Protocol::Lavt => {
                let pred: Vec<bool> = p.iter().map(|&v| v > 0.5).collect();
                let gt: Vec<bool> = self.data.mask(i)?.iter().map(|&v| v > 0.5).collect();
                self.acc.add_masks(&pred, &gt)?
            }
            Protocol::Cgformer => {
                let gt = self.data.samples[i].load_mask()?;
                let (pred, gt) =
                    protocol_pair(p, (h, w), &gt.data, (gt.height, gt.width), self.protocol);
                self.acc.add_masks(&pred, &gt)?
            }
        };
        self.each.push(s);
        Ok(())
    }

    /// The split's metrics and each sample's score, in the order added.
    pub fn finish(self) -> (Metrics, Vec<SampleScore>) {
        (self.acc.summary(), self.each)
    }
}

/// Predicts and scores a split batch by batch (no sample's prediction is kept): its metrics
/// and each sample's score, in split order.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_split<B: SdBackend>(
    model: &DiffRis<B>,
    data: &EncodedSplit,
    protocol: Protocol,
    batch: usize,
    device: &B::Device,
    bar: &ProgressBar,
    heartbeat: Option<&mut Heartbeat>,
) -> anyhow::Result<(Metrics, Vec<SampleScore>)> {
    let mut scorer = Scorer::new(data, protocol);
    predict_each(model, data, batch, device, bar, heartbeat, |i, p| {
        scorer.add(i, p)
    })?;
    Ok(scorer.finish())
}

/// Scores predictions under a protocol (see [`Scorer`]).
pub fn score(
    probs: &[Vec<f32>],
    data: &EncodedSplit,
    protocol: Protocol,
) -> anyhow::Result<Metrics> {
    Ok(score_samples(probs, data, protocol)?.0)
}

/// [`score`] with each sample's score, in split order.
pub fn score_samples(
    probs: &[Vec<f32>],
    data: &EncodedSplit,
    protocol: Protocol,
) -> anyhow::Result<(Metrics, Vec<SampleScore>)> {
    let mut scorer = Scorer::new(data, protocol);
    for (i, p) in probs.iter().enumerate() {
        scorer.add(i, p)?;
    }
    Ok(scorer.finish())
}

/// One CSV line per sample: `index,image,expression,iou,intersection,union` (IoU in percent,
/// as the tables; text fields quoted, quotes doubled).
pub fn per_sample_csv(data: &EncodedSplit, scores: &[SampleScore]) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut out = String::from("index,image,expression,iou,intersection,union\n");
    for (i, (sample, s)) in data.samples.iter().zip(scores).enumerate() {
        out.push_str(&format!(
            "{i},{},{},{:.4},{},{}\n",
            quote(&sample.image.display().to_string()),
            quote(&sample.sentence),
            100.0 * s.iou,
            s.intersection,
            s.union
        ));
    }
    out
}

/// Scores of the trivial predictors on a split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baselines {
    /// Predict nothing.
    pub all_background: Metrics,
    /// Predict the whole image.
    pub whole_image: Metrics,
    /// Predict the mask of an object of the scene drawn uniformly (expected I and U; `None` when
    /// the format does not list every object of an image).
    pub random_object: Option<Metrics>,
}

/// The trivial baselines at the network size (LAVT protocol) of a split of the `format`
/// dataset at `root`.
pub fn baselines(
    data: &EncodedSplit,
    format: DatasetFormat,
    root: &Path,
) -> anyhow::Result<Baselines> {
    let (h, w) = data.image_size;
    let n = data.len();
    let mut empty = MetricAccumulator::default();
    let mut whole = MetricAccumulator::default();
    for i in 0..n {
        let gt = data.mask(i)?;
        let area = gt.iter().filter(|&&v| v > 0.5).count() as u64;
        empty.add_counts(0, area);
        whole.add_counts(area, (h * w) as u64);
    }
    Ok(Baselines {
        all_background: empty.summary(),
        whole_image: whole.summary(),
        random_object: match format.scene_objects(root)? {
            Some(scenes) => Some(random_object(data, &scenes)?),
            None => None,
        },
    })
}

/// Expected scores of picking a uniformly random object of the image: the mean over the
/// image's objects of `I` and `U` against the ground truth (every annotation of an image counts
/// as an object, whether or not an expression refers to it). `scenes` holds the objects of each
/// image, keyed by the image path the samples carry.
///
/// # Errors
/// When a sample's image has no objects in `scenes` (the sample's own object is one of them, so
/// the two disagree on where the image is).
pub fn random_object(
    data: &EncodedSplit,
    scenes: &HashMap<PathBuf, Vec<MaskSource>>,
) -> anyhow::Result<Metrics> {
    let (h, w) = data.image_size;
    let mut objects: HashMap<&std::path::Path, Vec<Vec<bool>>> = HashMap::new();
    let mut sum_i = 0f64;
    let mut sum_u = 0f64;
    let mut iou_sum = 0f64;
    let mut hits = [0f64; 5];
    for (i, s) in data.samples.iter().enumerate() {
        if !objects.contains_key(s.image.as_path()) {
            let sources = scenes
                .get(&s.image)
                .filter(|o| !o.is_empty())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "sample `{}`: the dataset lists no objects for its image {}",
                        s.id,
                        s.image.display()
                    )
                })?;
            let masks = sources
                .iter()
                .map(|m| {
                    let probe = Sample {
                        mask: m.clone(),
                        ..s.clone()
                    };
                    let mask = probe.load_mask()?;
                    Ok(resize_nearest(&mask.data, mask.height, mask.width, h, w))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            objects.insert(s.image.as_path(), masks);
        }
        let gt: Vec<bool> = data.mask(i)?.iter().map(|&v| v > 0.5).collect();
        let objs = &objects[s.image.as_path()];
        let k = objs.len().max(1) as f64;
        for obj in objs {
            let inter = obj.iter().zip(&gt).filter(|(a, b)| **a && **b).count() as f64;
            let union = obj.iter().zip(&gt).filter(|(a, b)| **a || **b).count() as f64;
            sum_i += inter / k;
            sum_u += union / k;
            let iou = if union > 0.0 { inter / union } else { 0.0 };
            iou_sum += iou / k;
            for (t, hit) in PR_THRESHOLDS.iter().zip(hits.iter_mut()) {
                *hit += (iou >= *t) as u8 as f64 / k;
            }
        }
    }
    let n = data.len().max(1) as f64;
    Ok(Metrics {
        samples: data.len() as u64,
        oiou: if sum_u > 0.0 {
            100.0 * sum_i / sum_u
        } else {
            0.0
        },
        miou: 100.0 * iou_sum / n,
        precision: hits.map(|h| 100.0 * h / n),
    })
}

#[cfg(test)]
mod tests {
    use diffris_data::sample::SegmentPart;

    use super::*;

    /// A 2x2 mask from COCO's column-major run lengths.
    fn coco(counts: &[u64]) -> MaskSource {
        MaskSource::Coco {
            height: 2,
            width: 2,
            parts: vec![SegmentPart::Counts(counts.to_vec())],
        }
    }

    fn sample(image: &str, mask: MaskSource) -> Sample {
        Sample {
            id: image.into(),
            image: PathBuf::from(image),
            mask,
            sentence: "the object".into(),
            category: None,
            origin: PathBuf::from("refs"),
        }
    }

    /// Image `a` has objects A (top-left pixel) and B (the left column); the sample refers to A.
    /// Image `b` has one object C (bottom-right pixel), which its sample refers to. By hand:
    /// image a: A scores I 1 / U 1, B scores I 1 / U 2, so the expected I is 1, U 1.5, IoU 0.75;
    /// image b: I 1, U 1, IoU 1. oIoU = (1 + 1) / (1.5 + 1) = 80; mIoU = (0.75 + 1) / 2 = 87.5;
    /// Pr@0.5 = (1 + 1) / 2 = 100 (both of a's objects pass 0.5); Pr@0.6..0.9 = (0.5 + 1) / 2
    /// = 75.
    #[test]
    fn random_object_is_the_expectation_over_each_scenes_objects() {
        let (a, b, c) = (coco(&[0, 1, 3]), coco(&[0, 2, 2]), coco(&[3, 1]));
        let data = EncodedSplit::from_vecs(
            vec![sample("a.jpg", a.clone()), sample("b.jpg", c.clone())],
            (2, 2),
            [1, 1, 1],
            [1, 1],
            &[0.0; 2],
            &[0.0; 2],
            vec![1, 1],
            // Row-major network-size ground truth: A, then C.
            &[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
        );
        let scenes: HashMap<PathBuf, Vec<MaskSource>> = [
            (PathBuf::from("a.jpg"), vec![a, b]),
            (PathBuf::from("b.jpg"), vec![c]),
        ]
        .into_iter()
        .collect();
        let m = random_object(&data, &scenes).unwrap();
        assert_eq!(m.samples, 2);
        assert!((m.oiou - 80.0).abs() < 1e-12, "{m:?}");
        assert!((m.miou - 87.5).abs() < 1e-12, "{m:?}");
        assert!((m.precision[0] - 100.0).abs() < 1e-12, "{m:?}");
        for p in &m.precision[1..] {
            assert!((p - 75.0).abs() < 1e-12, "{m:?}");
        }

        // A sample whose image the scene list does not know is an error, not a zero score.
        let mut lost = scenes.clone();
        lost.remove(&PathBuf::from("b.jpg"));
        let err = random_object(&data, &lost).unwrap_err().to_string();
        assert!(err.contains("b.jpg"), "{err}");
    }
}
