//! `diffris explain`: what a trained model reads from one image and expression.
//!
//! [`compute`] runs the model and gathers, as plain numbers: the UNet's per-word cross-attention
//! maps (from the adapted states and from the raw CLIP states), PCMRD's token assignments per
//! stage, integrated-gradient word attributions and word-deletion IoUs. [`render`] draws them;
//! [`Explanation`] is also what `explain.json` holds.

pub mod compute;
pub mod flow;
pub mod render;

use serde::Serialize;

/// A single-channel map at its own resolution, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Map {
    pub height: usize,
    pub width: usize,
    pub values: Vec<f32>,
}

impl Map {
    /// The value at row `y`, column `x`.
    pub fn at(&self, y: usize, x: usize) -> f32 {
        self.values[y * self.width + x]
    }
}

/// One word of the expression with what each analysis found for it.
#[derive(Clone, Debug, Serialize)]
pub struct WordReport {
    pub word: String,
    /// Positions in the 77-token context (start token = 0).
    pub tokens: [usize; 2],
    /// Integrated-gradient attribution: summed over the word's tokens.
    pub attribution: f64,
    /// The expression without this word.
    pub deleted_text: String,
    /// IoU of the mask predicted without the word against the mask predicted with it.
    pub deletion_iou: f64,
    /// Per UNet level with cross-attention: the word's mean attention probability over the
    /// level's pixels, from the adapted states and from the raw CLIP states.
    pub attention_adapted: Vec<f64>,
    pub attention_clip: Vec<f64>,
}

/// The cross-attention maps of one UNet level, one per word.
#[derive(Clone, Debug)]
pub struct LevelMaps {
    /// UNet level (0 = finest).
    pub level: usize,
    pub adapted: Vec<Map>,
    pub clip: Vec<Map>,
}

/// One PCMRD stage's soft assignment of pixels to query tokens.
#[derive(Clone, Debug)]
pub struct StageAssignment {
    /// One map per query token (the last is the referent); each pixel's values sum to 1.
    pub tokens: Vec<Map>,
}

impl StageAssignment {
    /// The token each pixel goes to (the largest probability; the first on a tie), which is
    /// the model's hard assignment at inference (no Gumbel noise).
    pub fn hard(&self) -> Vec<usize> {
        let first = &self.tokens[0];
        (0..first.values.len())
            .map(|p| {
                let mut best = 0;
                for (t, m) in self.tokens.iter().enumerate() {
                    if m.values[p] > self.tokens[best].values[p] {
                        best = t;
                    }
                }
                best
            })
            .collect()
    }
}

/// Statistics of a stage for `explain.json`.
#[derive(Clone, Debug, Serialize)]
pub struct StageReport {
    pub stage: usize,
    pub size: [usize; 2],
    /// Share of pixels each token takes under the hard assignment (the last: the referent).
    pub hard_share: Vec<f64>,
    /// Each token's mean soft probability.
    pub mean_probability: Vec<f64>,
}

/// The integrated-gradient summary for `explain.json`.
#[derive(Clone, Debug, Serialize)]
pub struct AttributionReport {
    /// What is attributed: the logit sum over the predicted mask, or over the whole image when
    /// nothing is predicted.
    pub target: String,
    /// The baseline: each word's states replaced by padding states, the rest kept.
    pub baseline: String,
    pub steps: usize,
    pub value: f64,
    pub baseline_value: f64,
    /// Sum of the word attributions (`value - baseline_value` by completeness).
    pub total: f64,
    /// `|total - (value - baseline_value)| / |value - baseline_value|`.
    pub completeness_gap: f64,
}

/// Everything `explain` found, with the inputs it found it for.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    pub run: String,
    pub decoder: String,
    /// Where the input came from: an image path, or a split and index.
    pub source: String,
    pub expression: String,
    /// Network input size `(H, W)`: every map is drawn over the image at this size.
    pub image_size: [usize; 2],
    pub foreground_pixels: usize,
    /// IoU of the prediction against the ground truth, when the input has one.
    pub ground_truth_iou: Option<f64>,
    pub words: Vec<WordReport>,
    /// UNet levels with cross-attention maps, finest first, and their sizes.
    pub attention_levels: Vec<(usize, [usize; 2])>,
    pub attribution: AttributionReport,
    pub stages: Vec<StageReport>,
    /// Why a part was not computed for this model (panels that do not apply).
    pub skipped: Vec<String>,
    /// Notes on reading the results (e.g. a disabled adapter).
    pub notes: Vec<String>,
    #[serde(skip)]
    pub prediction: Vec<bool>,
    #[serde(skip)]
    pub ground_truth: Option<Vec<bool>>,
    #[serde(skip)]
    pub levels: Vec<LevelMaps>,
    #[serde(skip)]
    pub assignments: Vec<StageAssignment>,
}

/// `|a and b| / |a or b|`, 1 when both are empty.
pub fn iou(a: &[bool], b: &[bool]) -> f64 {
    let (mut i, mut u) = (0usize, 0usize);
    for (&x, &y) in a.iter().zip(b) {
        i += (x && y) as usize;
        u += (x || y) as usize;
    }
    if u == 0 { 1.0 } else { i as f64 / u as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_hand_made_masks() {
        let a = [true, true, false, false];
        let b = [true, false, true, false];
        assert_eq!(iou(&a, &b), 1.0 / 3.0);
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&[false; 3], &[false; 3]), 1.0);
        assert_eq!(iou(&[true, false], &[false, true]), 0.0);
    }

    #[test]
    fn hard_assignment_takes_the_largest_probability() {
        let map = |v: Vec<f32>| Map {
            height: 1,
            width: v.len(),
            values: v,
        };
        let stage = StageAssignment {
            tokens: vec![map(vec![0.7, 0.2, 0.5]), map(vec![0.3, 0.8, 0.5])],
        };
        assert_eq!(stage.hard(), vec![0, 1, 0], "a tie goes to the first token");
    }
}
