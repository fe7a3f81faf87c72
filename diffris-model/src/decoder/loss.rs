//! Training losses (the paper states none; `docs/DESIGN.md` says which and why): Dice + BCE on the mask logits plus the
//! auxiliary Dice of the referent token's hit maps (PCMRD), or class-weighted cross-entropy over
//! background/foreground (the comparison decoders, as in their papers).

use burn::tensor::Tensor;
use burn::tensor::activation::{log_softmax, sigmoid};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use diffris_kernels::SdBackend;
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, ensure};

/// Which loss trains the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// `Dice + BCE` on the foreground logit, plus the weighted hit-map Dice.
    DiceBce,
    /// Cross-entropy over (background, foreground) with class weights.
    WeightedCe,
}

/// Loss weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    pub kind: LossKind,
    /// Weights of the hit-map Dice of stages 1, 2, 3.
    pub aux_weights: Vec<f64>,
    /// Cross-entropy weights of background and foreground.
    pub class_weights: [f64; 2],
    /// With `weighted_ce`: the share `w` of RMSIN's Dice loss ([`class_dice`]) in the total,
    /// `(1 - w) wCE + w Dice`, as RMSIN's `loss/loss.py` (OAD: 0.1; 0, the default, is
    /// cross-entropy alone and is left out of a written config).
    #[serde(skip_serializing_if = "is_zero")]
    pub dice_weight: f64,
    /// The hit-map Dice reads `sigmoid(hit map)` instead of the hit map: CGFormer's code passes
    /// its straight-through assignments (0 or 1 forward) through the mask Dice, which applies a
    /// sigmoid first, so it compares 0.5 and 0.73 with the mask. Off (the Dice of the
    /// assignment itself) is left out of a written config.
    #[serde(skip_serializing_if = "is_false")]
    pub hit_map_sigmoid: bool,
}

fn is_zero(w: &f64) -> bool {
    *w == 0.0
}

fn is_false(v: &bool) -> bool {
    !*v
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            kind: LossKind::DiceBce,
            aux_weights: vec![0.001, 0.01, 0.1],
            class_weights: [0.9, 1.1],
            dice_weight: 0.0,
            hit_map_sigmoid: false,
        }
    }
}

impl LossConfig {
    /// Checks the weights; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, w) in self.aux_weights.iter().enumerate() {
            ensure(
                w.is_finite() && *w >= 0.0,
                &format!("aux_weights[{i}]"),
                || format!("{w} is not a weight (a number >= 0)"),
            )?;
        }
        for (i, w) in self.class_weights.iter().enumerate() {
            ensure(
                w.is_finite() && *w > 0.0,
                &format!("class_weights[{i}]"),
                || format!("{w} is not a positive weight"),
            )?;
        }
        let w = self.dice_weight;
        ensure((0.0..=1.0).contains(&w), "dice_weight", || {
            format!("{w} is not a share from 0 to 1")
        })?;
        ensure(
            w == 0.0 || self.kind == LossKind::WeightedCe,
            "dice_weight",
            || format!("{w} mixes Dice into weighted_ce only (dice_bce has its own Dice)"),
        )
    }
}

/// Dice loss per sample averaged over the batch: `1 - (2 sum(p t) + 1) / (sum p + sum t + 1)`.
///
/// # Shapes
/// `prob`, `target`: `[B, 1, H, W]` in [0, 1] -> scalar `[1]`.
pub fn dice<B: SdBackend>(prob: Tensor<B, 4>, target: Tensor<B, 4>) -> Tensor<B, 1> {
    let b = prob.dims()[0];
    let p = prob.reshape([b as i32, -1]);
    let t = target.reshape([b as i32, -1]);
    let inter = (p.clone() * t.clone()).sum_dim(1);
    let total = p.sum_dim(1) + t.sum_dim(1);
    let score = (inter.mul_scalar(2.0) + 1.0) / (total + 1.0);
    score.neg().add_scalar(1.0).mean()
}

/// Mean binary cross-entropy with logits (numerically stable form).
///
/// # Shapes
/// `logits`, `target`: `[B, 1, H, W]` -> scalar `[1]`.
pub fn bce_with_logits<B: SdBackend>(logits: Tensor<B, 4>, target: Tensor<B, 4>) -> Tensor<B, 1> {
    let softplus_neg_abs = logits.clone().abs().neg().exp().add_scalar(1.0).log();
    (logits.clone().clamp_min(0.0) - logits * target + softplus_neg_abs).mean()
}

/// Class-weighted cross-entropy over two classes (PyTorch's weighted mean: divided by the sum
/// of the weights of the targets).
///
/// # Shapes
/// `class_logits`: `[B, 2, H, W]`, `target`: `[B, 1, H, W]` in {0, 1} -> scalar `[1]`.
pub fn weighted_ce<B: SdBackend>(
    class_logits: Tensor<B, 4>,
    target: Tensor<B, 4>,
    weights: [f64; 2],
) -> Tensor<B, 1> {
    let logp = log_softmax(class_logits, 1);
    let lp_bg = logp.clone().narrow(1, 0, 1);
    let lp_fg = logp.narrow(1, 1, 1);
    let w = target
        .clone()
        .mul_scalar(weights[1] - weights[0])
        .add_scalar(weights[0]);
    let nll = (lp_fg * target.clone() + lp_bg * target.neg().add_scalar(1.0)).neg();
    (nll * w.clone()).sum() / w.sum()
}

/// RMSIN's Dice loss (`loss/loss.py`, `DiceLoss` with its defaults): the softmax
/// probabilities of both classes against the one-hot target, `1 - (2 sum(p t) + s) / (sum p +
/// sum t + s)` per sample and class with `s = 1e-6`, summed over samples and classes (not
/// averaged: RMSIN's `reduction="sum"`).
///
/// # Shapes
/// `class_logits`: `[B, 2, H, W]`, `target`: `[B, 1, H, W]` in {0, 1} -> scalar `[1]`.
pub fn class_dice<B: SdBackend>(class_logits: Tensor<B, 4>, target: Tensor<B, 4>) -> Tensor<B, 1> {
    const SMOOTH: f64 = 1e-6;
    let [b, c, _, _] = class_logits.dims();
    let p = burn::tensor::activation::softmax(class_logits, 1).reshape([b as i32, c as i32, -1]);
    let t = Tensor::cat(vec![target.clone().neg().add_scalar(1.0), target], 1)
        .reshape([b as i32, c as i32, -1]);
    let inter = (p.clone() * t.clone()).sum_dim(2);
    let total = p.sum_dim(2) + t.sum_dim(2);
    let score = (inter.mul_scalar(2.0) + SMOOTH) / (total + SMOOTH);
    score.neg().add_scalar(1.0).sum()
}

/// Nearest-neighbour downsampling of a mask to a hit map's size.
///
/// # Shapes
/// `[B, 1, H, W]` -> `[B, 1, h, w]`.
pub fn downsample_mask<B: SdBackend>(mask: Tensor<B, 4>, size: [usize; 2]) -> Tensor<B, 4> {
    interpolate(
        mask,
        size,
        InterpolateOptions::new(InterpolateMode::Nearest).with_align_corners(false),
    )
}

/// The training loss of one batch.
///
/// # Shapes
/// `logits`: `[B, 1, H, W]`; `class_logits`: `[B, 2, H, W]` when the decoder has them;
/// `hit_maps`: `[B, 1, h_s, w_s]` per stage; `target`: `[B, 1, H, W]` -> scalar `[1]`.
pub fn training_loss<B: SdBackend>(
    cfg: &LossConfig,
    logits: Tensor<B, 4>,
    class_logits: Option<Tensor<B, 4>>,
    hit_maps: &[Tensor<B, 4>],
    target: Tensor<B, 4>,
) -> Tensor<B, 1> {
    match (cfg.kind, class_logits) {
        (LossKind::WeightedCe, class_logits) => {
            // A single foreground logit l is the two-class pair (0, l).
            let cl = class_logits
                .unwrap_or_else(|| Tensor::cat(vec![logits.zeros_like(), logits.clone()], 1));
            let w = cfg.dice_weight;
            if w == 0.0 {
                return weighted_ce(cl, target, cfg.class_weights);
            }
            weighted_ce(cl.clone(), target.clone(), cfg.class_weights).mul_scalar(1.0 - w)
                + class_dice(cl, target).mul_scalar(w)
        }
        (LossKind::DiceBce, _) => {
            let mut loss = dice(sigmoid(logits.clone()), target.clone())
                + bce_with_logits(logits, target.clone());
            for (hit, &w) in hit_maps.iter().zip(&cfg.aux_weights) {
                let [_, _, h, wd] = hit.dims();
                let small = downsample_mask(target.clone(), [h, wd]);
                let hit = if cfg.hit_map_sigmoid {
                    sigmoid(hit.clone())
                } else {
                    hit.clone()
                };
                loss = loss + dice(hit, small).mul_scalar(w);
            }
            loss
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    fn t4(v: Vec<f32>, shape: [usize; 4]) -> Tensor<Flex, 4> {
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    fn scalar(t: Tensor<Flex, 1>) -> f64 {
        t.into_scalar() as f64
    }

    #[test]
    fn dice_by_hand() {
        // p = [1, 0.5, 0, 0], t = [1, 1, 0, 0]: inter 1.5, sums 1.5 + 2 -> 1 - 4/4.5.
        let p = t4(vec![1.0, 0.5, 0.0, 0.0], [1, 1, 2, 2]);
        let t = t4(vec![1.0, 1.0, 0.0, 0.0], [1, 1, 2, 2]);
        assert!((scalar(dice(p, t)) - (1.0 - 4.0 / 4.5)).abs() < 1e-6);
        // Empty prediction and target: (0 + 1) / (0 + 1) = 1 -> loss 0.
        let z = t4(vec![0.0; 4], [1, 1, 2, 2]);
        assert!(scalar(dice(z.clone(), z)).abs() < 1e-7);
    }

    #[test]
    fn bce_by_hand() {
        // x = 0: log 2 whatever the target; x = 2, t = 1: log(1 + e^-2); x = -1, t = 1: log(1 + e).
        let x = t4(vec![0.0, 2.0, -1.0, 0.0], [1, 1, 2, 2]);
        let t = t4(vec![1.0, 1.0, 1.0, 0.0], [1, 1, 2, 2]);
        let want =
            (2f64.ln() + (1.0 + (-2f64).exp()).ln() + (1.0 + 1f64.exp()).ln() + 2f64.ln()) / 4.0;
        assert!((scalar(bce_with_logits(x, t)) - want).abs() < 1e-6);
    }

    #[test]
    fn weighted_ce_by_hand() {
        // Pixel 1: logits (0, 0), target 1 -> nll ln 2, weight 1.1.
        // Pixel 2: logits (0, ln 3), target 0 -> p_bg = 1/4, nll ln 4, weight 0.9.
        let logits = t4(vec![0.0, 0.0, 0.0, 3f32.ln()], [1, 2, 1, 2]);
        let t = t4(vec![1.0, 0.0], [1, 1, 1, 2]);
        let want = (1.1 * 2f64.ln() + 0.9 * 4f64.ln()) / 2.0;
        assert!((scalar(weighted_ce(logits, t, [0.9, 1.1])) - want).abs() < 1e-6);
    }

    /// RMSIN's OAD loss, `0.9 wCE + 0.1 Dice`, by hand on two pixels: logits (0, 0) with target
    /// 1 and (0, ln 3) with target 0 (as `weighted_ce_by_hand`): foreground probabilities 1/2
    /// and 3/4, background 1/2 and 1/4. Foreground: intersection 1/2, sums 5/4 + 1; background:
    /// intersection 1/4, sums 3/4 + 1; the two Dice losses are summed.
    #[test]
    fn weighted_ce_with_a_dice_share_by_hand() {
        let logits = t4(vec![0.0, 0.0, 0.0, 3f32.ln()], [1, 2, 1, 2]);
        let t = t4(vec![1.0, 0.0], [1, 1, 1, 2]);
        let cfg = LossConfig {
            kind: LossKind::WeightedCe,
            dice_weight: 0.1,
            ..LossConfig::default()
        };
        let ce = (1.1 * 2f64.ln() + 0.9 * 4f64.ln()) / 2.0;
        let s = 1e-6;
        let dice = (1.0 - (1.0 + s) / (2.25 + s)) + (1.0 - (0.5 + s) / (1.75 + s));
        let got = scalar(training_loss(
            &cfg,
            t4(vec![0.0; 2], [1, 1, 1, 2]),
            Some(logits),
            &[],
            t,
        ));
        assert!((got - (0.9 * ce + 0.1 * dice)).abs() < 1e-6, "{got}");
        // A share outside [0, 1], or one given to dice_bce, is an error naming the field.
        let bad = LossConfig {
            dice_weight: 1.5,
            ..cfg.clone()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("dice_weight")
        );
        let bce = LossConfig {
            kind: LossKind::DiceBce,
            ..cfg
        };
        assert!(
            bce.validate()
                .unwrap_err()
                .to_string()
                .contains("weighted_ce only")
        );
    }

    /// What three all-zero 2x2 hit maps add to the loss of zero logits against an all-one 4x4
    /// mask.
    fn zero_hit_maps_add(cfg: &LossConfig) -> f64 {
        let logits = t4(vec![0.0; 16], [1, 1, 4, 4]);
        let target = t4(vec![1.0; 16], [1, 1, 4, 4]);
        let base = scalar(training_loss(
            cfg,
            logits.clone(),
            None,
            &[],
            target.clone(),
        ));
        let hit = t4(vec![0.0; 4], [1, 1, 2, 2]);
        let with = scalar(training_loss(
            cfg,
            logits,
            None,
            &[hit.clone(), hit.clone(), hit],
            target,
        ));
        with - base
    }

    /// An all-zero hit map against an all-one 2x2 mask: Dice = 1 - 1/5 per stage.
    #[test]
    fn auxiliary_dice_is_weighted_per_stage() {
        let added = zero_hit_maps_add(&LossConfig::default());
        let aux = (0.001 + 0.01 + 0.1) * (1.0 - 1.0 / 5.0);
        assert!((added - aux).abs() < 1e-6, "{added} vs {aux}");
    }

    /// CGFormer's reading: an all-zero hit map is `sigmoid(0) = 0.5` everywhere, so against an
    /// all-one 2x2 mask its Dice is `1 - (2 * 2 + 1) / (2 + 4 + 1) = 2/7` per stage.
    #[test]
    fn hit_map_dice_through_a_sigmoid_by_hand() {
        let added = zero_hit_maps_add(&LossConfig {
            hit_map_sigmoid: true,
            ..LossConfig::default()
        });
        let aux = (0.001 + 0.01 + 0.1) * (2.0 / 7.0);
        assert!((added - aux).abs() < 1e-6, "{added} vs {aux}");
    }
}
