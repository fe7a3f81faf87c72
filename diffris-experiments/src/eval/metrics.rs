//! RRSIS metrics: oIoU, mIoU and Pr@{0.5..0.9} over (prediction, ground truth) binary masks,
//! with the LAVT/RMSIN protocol (the paper's tables) or CGFormer's original-resolution variant.
//!
//! Per sample `I = |P and G|`, `U = |P or G|`, `iou = I / U`, or 0 when `U == 0` (the sample still
//! counts). oIoU = 100 sum(I) / sum(U); mIoU = 100 mean(iou); Pr@t = 100 share of `iou >= t`.
//!
//! The accumulator is exact and order-free, so evaluation can be split across workers and merged:
//! counts are integers, thresholds are compared in integers (`10 I >= 5 U`), and per-sample IoUs
//! are summed in 64.64 fixed point (each rounded down by at most 2^-64).

use diffris_data::transforms::{resize_bilinear, resize_nearest};
use serde::{Deserialize, Serialize};

pub use crate::config::recipe::{Column, Protocol};

/// The Pr@X thresholds of the paper's tables.
pub const PR_THRESHOLDS: [f64; 5] = [0.5, 0.6, 0.7, 0.8, 0.9];
const PR_TENTHS: [u128; 5] = [5, 6, 7, 8, 9];
const FIXED_ONE: u128 = 1 << 64;

/// The score of one sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleScore {
    pub intersection: u64,
    pub union: u64,
    /// `I / U`, or 0 when the union is empty.
    pub iou: f64,
}

/// A mask pair of unequal sizes.
#[derive(Debug, thiserror::Error)]
#[error("prediction has {pred} pixels but ground truth has {gt}")]
pub struct MaskSizeMismatch {
    pub pred: usize,
    pub gt: usize,
}

/// Accumulates sample scores; see the module docs for the exactness guarantees.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricAccumulator {
    intersection: u64,
    union: u64,
    iou_fixed: u128,
    hits: [u64; 5],
    samples: u64,
}

/// The metrics of a split, in percent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub samples: u64,
    pub oiou: f64,
    pub miou: f64,
    /// Pr@0.5, Pr@0.6, Pr@0.7, Pr@0.8, Pr@0.9.
    pub precision: [f64; 5],
}

impl Metrics {
    /// The same metrics up to the last bits of a float read back from JSON (serde_json's
    /// default parser may be an ulp off the value written): equal sample counts and every
    /// value within 1e-12 of the other's size. The metrics come from integer pixel counts, so
    /// any different count moves a value by far more (one pixel of a 2^28-pixel mask among 200
    /// samples moves mIoU by 1.9e-9 percent).
    pub fn agrees_with(&self, other: &Self) -> bool {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0);
        self.samples == other.samples
            && close(self.oiou, other.oiou)
            && close(self.miou, other.miou)
            && self
                .precision
                .iter()
                .zip(&other.precision)
                .all(|(&a, &b)| close(a, b))
    }

    /// One line with every metric, named as the tables name them.
    pub fn line(&self, name: &str) -> String {
        let pr: Vec<String> = PR_THRESHOLDS
            .iter()
            .zip(self.precision)
            .map(|(t, p)| format!("Pr@{t} {p:.2}"))
            .collect();
        format!(
            "{name:<22} mIoU {:6.2}  oIoU {:6.2}  {}  ({} samples)",
            self.miou,
            self.oiou,
            pr.join("  "),
            self.samples
        )
    }

    /// The value of a table column.
    pub fn column(&self, c: Column) -> f64 {
        match c {
            Column::Pr50 => self.precision[0],
            Column::Pr60 => self.precision[1],
            Column::Pr70 => self.precision[2],
            Column::Pr80 => self.precision[3],
            Column::Pr90 => self.precision[4],
            Column::Oiou => self.oiou,
            Column::Miou => self.miou,
        }
    }
}

impl MetricAccumulator {
    /// Scores one sample from its masks.
    pub fn add_masks(
        &mut self,
        pred: &[bool],
        gt: &[bool],
    ) -> Result<SampleScore, MaskSizeMismatch> {
        if pred.len() != gt.len() {
            return Err(MaskSizeMismatch {
                pred: pred.len(),
                gt: gt.len(),
            });
        }
        let (mut i, mut u) = (0u64, 0u64);
        for (&p, &g) in pred.iter().zip(gt) {
            i += (p && g) as u64;
            u += (p || g) as u64;
        }
        Ok(self.add_counts(i, u))
    }

    /// Scores one sample from its intersection and union pixel counts.
    ///
    /// # Panics
    /// When `intersection > union`, which no pair of masks can produce.
    pub fn add_counts(&mut self, intersection: u64, union: u64) -> SampleScore {
        assert!(
            intersection <= union,
            "intersection {intersection} > union {union}"
        );
        self.intersection += intersection;
        self.union += union;
        self.samples += 1;
        let iou = if union == 0 {
            0.0
        } else {
            self.iou_fixed += (intersection as u128 * FIXED_ONE) / union as u128;
            intersection as f64 / union as f64
        };
        if union > 0 {
            for (hit, tenths) in self.hits.iter_mut().zip(PR_TENTHS) {
                *hit += (10 * intersection as u128 >= tenths * union as u128) as u64;
            }
        }
        SampleScore {
            intersection,
            union,
            iou,
        }
    }

    /// Adds every sample of `other` (the result equals scoring all samples in one accumulator).
    pub fn merge(&mut self, other: &Self) {
        self.intersection += other.intersection;
        self.union += other.union;
        self.iou_fixed += other.iou_fixed;
        self.samples += other.samples;
        for (a, b) in self.hits.iter_mut().zip(other.hits) {
            *a += b;
        }
    }

    /// Union pixels summed over the samples.
    pub fn union(&self) -> u64 {
        self.union
    }

    /// Number of samples scored.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The metrics so far (all zero before the first sample).
    pub fn summary(&self) -> Metrics {
        let pct = |num: f64, den: f64| if den == 0.0 { 0.0 } else { 100.0 * num / den };
        let n = self.samples as f64;
        Metrics {
            samples: self.samples,
            oiou: pct(self.intersection as f64, self.union as f64),
            miou: pct(self.iou_fixed as f64 / FIXED_ONE as f64, n),
            precision: self.hits.map(|h| pct(h as f64, n)),
        }
    }
}

/// Scores samples from their `(intersection, union)` counts, in order.
impl FromIterator<(u64, u64)> for MetricAccumulator {
    fn from_iter<I: IntoIterator<Item = (u64, u64)>>(counts: I) -> Self {
        let mut acc = Self::default();
        for (intersection, union) in counts {
            acc.add_counts(intersection, union);
        }
        acc
    }
}

/// The (prediction, ground truth) mask pair one sample is scored on under `protocol`.
///
/// # Shapes
/// `prob`: foreground probabilities at the network size, `net_h * net_w`, row-major;
/// `gt`: the ground truth at its original size, `gt_h * gt_w`. Both returned masks have the
/// network size (LAVT) or the ground-truth size (CGFormer).
pub fn protocol_pair(
    prob: &[f32],
    (net_h, net_w): (usize, usize),
    gt: &[bool],
    (gt_h, gt_w): (usize, usize),
    protocol: Protocol,
) -> (Vec<bool>, Vec<bool>) {
    match protocol {
        Protocol::Lavt => (
            prob.iter().map(|&p| p > 0.5).collect(),
            resize_nearest(gt, gt_h, gt_w, net_h, net_w),
        ),
        Protocol::Cgformer => (
            resize_bilinear(prob, net_h, net_w, gt_h, gt_w)
                .into_iter()
                .map(|p| p > 0.5)
                .collect(),
            gt.to_vec(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mask(bits: &str) -> Vec<bool> {
        bits.chars().map(|c| c == '1').collect()
    }

    #[test]
    fn empty_prediction_and_ground_truth_count_as_iou_zero() {
        let mut acc = MetricAccumulator::default();
        let s = acc.add_masks(&mask("0000"), &mask("0000")).unwrap();
        assert_eq!((s.intersection, s.union, s.iou), (0, 0, 0.0));
        let m = acc.summary();
        assert_eq!(m.samples, 1);
        assert_eq!((m.oiou, m.miou), (0.0, 0.0));
        assert_eq!(m.precision, [0.0; 5]);
        // A perfect sample next to it: mIoU halves, oIoU is unaffected by the empty one.
        acc.add_masks(&mask("1100"), &mask("1100")).unwrap();
        let m = acc.summary();
        assert_eq!((m.oiou, m.miou), (100.0, 50.0));
        assert_eq!(m.precision, [50.0; 5]);
    }

    #[test]
    fn iou_exactly_one_half_counts_for_pr_05_only() {
        let mut acc = MetricAccumulator::default();
        let s = acc.add_masks(&mask("1100"), &mask("1000")).unwrap();
        assert_eq!(s.iou, 0.5);
        assert_eq!(acc.summary().precision, [100.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn hand_computed_split() {
        // Sample a: I=2, U=4 (0.5). Sample b: I=3, U=3 (1.0). Sample c: I=0, U=2 (0.0).
        // Sample d: I=7, U=10 (0.7, exactly on the Pr@0.7 boundary).
        let mut acc = MetricAccumulator::default();
        for (i, u) in [(2, 4), (3, 3), (0, 2), (7, 10)] {
            acc.add_counts(i, u);
        }
        let m = acc.summary();
        assert_eq!(m.samples, 4);
        assert!((m.oiou - 100.0 * 12.0 / 19.0).abs() < 1e-12);
        assert!((m.miou - 100.0 * 2.2 / 4.0).abs() < 1e-12);
        assert_eq!(m.precision, [75.0, 50.0, 50.0, 25.0, 25.0]);
    }

    #[test]
    fn several_sentences_of_one_ref_are_several_samples() {
        // One object, two expressions: both predictions are scored against the same mask.
        let gt = mask("0110");
        let mut acc = MetricAccumulator::default();
        acc.add_masks(&mask("0110"), &gt).unwrap();
        acc.add_masks(&mask("0100"), &gt).unwrap();
        let m = acc.summary();
        assert_eq!(m.samples, 2);
        assert!((m.miou - 75.0).abs() < 1e-12);
        assert!((m.oiou - 100.0 * 3.0 / 4.0).abs() < 1e-12);
    }

    #[test]
    fn size_mismatch_is_an_error() {
        let err = MetricAccumulator::default()
            .add_masks(&mask("1"), &mask("11"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "prediction has 1 pixels but ground truth has 2"
        );
    }

    #[test]
    fn protocols_resize_the_right_side() {
        // 2x2 prediction; 4x4 ground truth whose top-left 2x2 block is foreground.
        let prob = [0.9, 0.1, 0.2, 0.3];
        let gt = mask("1100110000000000");
        let (p, g) = protocol_pair(&prob, (2, 2), &gt, (4, 4), Protocol::Lavt);
        assert_eq!((p, g), (mask("1000"), mask("1000")));
        let (p, g) = protocol_pair(&prob, (2, 2), &gt, (4, 4), Protocol::Cgformer);
        assert_eq!(g, gt);
        // Bilinear from 0.9 at the top-left centre: pixel (0,0) and (0,1) stay above 0.5,
        // pixel (1,1) is 0.9*9/16 + (0.1+0.2)*3/16 + 0.3/16 = 0.58125.
        assert!(p[0] && p[1] && p[4] && p[5]);
        assert_eq!(p.iter().filter(|&&b| b).count(), 4);
    }

    fn naive(pairs: &[(Vec<bool>, Vec<bool>)]) -> Metrics {
        let mut ious = Vec::new();
        let (mut si, mut su) = (0usize, 0usize);
        for (p, g) in pairs {
            let i = p.iter().zip(g).filter(|(a, b)| **a && **b).count();
            let u = p.iter().zip(g).filter(|(a, b)| **a || **b).count();
            si += i;
            su += u;
            ious.push(if u == 0 { 0.0 } else { i as f64 / u as f64 });
        }
        let n = ious.len() as f64;
        let share = |t: f64| 100.0 * ious.iter().filter(|&&x| x >= t - 1e-12).count() as f64 / n;
        Metrics {
            samples: ious.len() as u64,
            oiou: if su == 0 {
                0.0
            } else {
                100.0 * si as f64 / su as f64
            },
            miou: 100.0 * ious.iter().sum::<f64>() / n,
            precision: PR_THRESHOLDS.map(share),
        }
    }

    fn pairs_strategy() -> impl Strategy<Value = Vec<(Vec<bool>, Vec<bool>)>> {
        (1usize..40).prop_flat_map(|len| {
            prop::collection::vec(
                (
                    prop::collection::vec(any::<bool>(), len),
                    prop::collection::vec(prop::bool::weighted(0.3), len),
                ),
                1..30,
            )
        })
    }

    proptest! {
        #[test]
        fn equals_naive_recomputation(pairs in pairs_strategy()) {
            let mut acc = MetricAccumulator::default();
            for (p, g) in &pairs {
                acc.add_masks(p, g).unwrap();
            }
            let got = acc.summary();
            let want = naive(&pairs);
            prop_assert_eq!(got.samples, want.samples);
            // Fixed-point IoU sums lose at most 2^-64 a sample; f64 sums lose ~1e-16 relative.
            prop_assert!((got.miou - want.miou).abs() < 1e-9);
            prop_assert!((got.oiou - want.oiou).abs() < 1e-9);
            prop_assert_eq!(got.precision, want.precision);
        }

        #[test]
        fn merging_equals_one_accumulator(pairs in pairs_strategy(), cut in 0usize..30) {
            let cut = cut.min(pairs.len());
            let mut whole = MetricAccumulator::default();
            let (mut left, mut right) = (MetricAccumulator::default(), MetricAccumulator::default());
            for (k, (p, g)) in pairs.iter().enumerate() {
                whole.add_masks(p, g).unwrap();
                if k < cut { left.add_masks(p, g).unwrap(); } else { right.add_masks(p, g).unwrap(); }
            }
            right.merge(&left);
            prop_assert_eq!(&right, &whole);
            prop_assert_eq!(right.summary(), whole.summary());
        }
    }
}
