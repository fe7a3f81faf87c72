//! Comparison decoders of Table 5 without language input: LMP (LAVT's simple decoder, as VPD
//! uses it) and OAD (RMSIN's, whose second conv per stage is an adaptive rotated convolution).
//!
//! Three stages `cat(up(prev), F_next) -> Conv3x3-BN-ReLU x2` from F8 down to F64, then a 1x1
//! conv to two classes (background, foreground) at the finest tap's resolution.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::Tensor;
use diffris_kernels::SdBackend;
use serde::{Deserialize, Serialize};

use super::common::{ConvBnRelu, resize_bilinear, resize_bilinear_corners};
use super::rotated::RotatedConvBnRelu;
use super::{DecoderInput, DecoderOutput};

/// LMP / OAD sizes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LmpConfig {
    /// Hidden width of the three stages.
    pub hidden: usize,
    /// Maximum rotation of OAD's rotated convolutions, in degrees.
    pub max_angle_deg: f64,
    /// Rotated kernels OAD's convolutions mix per sample: RMSIN's released
    /// `lib/mask_predictor.py` uses 1 at every stage (the default); ARC's paper uses 4 (the
    /// `oad_4` variant of the Table 5 files; see `docs/DESIGN.md`).
    pub kernels: usize,
    /// Dropout probability in front of OAD's routing layers while training (RMSIN: 0.2).
    pub routing_dropout: f64,
}

impl Default for LmpConfig {
    fn default() -> Self {
        Self {
            hidden: 640,
            max_angle_deg: 40.0,
            kernels: 1,
            routing_dropout: 0.2,
        }
    }
}

/// The second conv of a stage: plain (LMP) or adaptively rotated (OAD).
// Built once per model; boxing would only add an indirection to every forward.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum SecondConv<B: SdBackend> {
    Plain(ConvBnRelu<B>),
    Rotated(RotatedConvBnRelu<B>),
}

/// One stage.
#[derive(Module, Debug)]
pub struct LmpStage<B: SdBackend> {
    pub first: ConvBnRelu<B>,
    pub second: SecondConv<B>,
}

/// LMP, or OAD when the stages use rotated convolutions.
#[derive(Module, Debug)]
pub struct Lmp<B: SdBackend> {
    pub stages: Vec<LmpStage<B>>,
    pub classifier: Conv2d<B>,
}

impl LmpConfig {
    /// Builds LMP (`rotated = false`) or OAD (`rotated = true`) for taps of `channels`.
    pub fn init<B: SdBackend>(
        &self,
        channels: &[usize],
        rotated: bool,
        device: &B::Device,
    ) -> Lmp<B> {
        let d = self.hidden;
        let stages = (0..3)
            .map(|s| {
                let coarse = if s == 0 { channels[3] } else { d };
                LmpStage {
                    first: ConvBnRelu::new(coarse + channels[2 - s], d, 3, device),
                    second: if rotated {
                        SecondConv::Rotated(RotatedConvBnRelu::new(
                            d,
                            d,
                            self.kernels,
                            self.max_angle_deg,
                            self.routing_dropout,
                            device,
                        ))
                    } else {
                        SecondConv::Plain(ConvBnRelu::new(d, d, 3, device))
                    },
                }
            })
            .collect();
        Lmp {
            stages,
            classifier: Conv2dConfig::new([d, 2], [1, 1]).init(device),
        }
    }
}

impl<B: SdBackend> Lmp<B> {
    /// # Shapes
    /// See [`DecoderInput`]; `class_logits` `[B, 2, H, W]`, `logits` = foreground minus
    /// background `[B, 1, H, W]`.
    pub fn forward(&self, input: DecoderInput<'_, B>) -> DecoderOutput<B> {
        let f = input.features;
        let mut x = f[3].clone();
        for (s, stage) in self.stages.iter().enumerate() {
            let skip = f[2 - s].clone();
            let [_, _, h, w] = skip.dims();
            let y = stage.first.forward(
                Tensor::cat(vec![resize_bilinear_corners(x, [h, w]), skip], 1),
                input.training,
            );
            x = match &stage.second {
                SecondConv::Plain(c) => c.forward(y, input.training),
                SecondConv::Rotated(c) => c.forward(y, input.training),
            };
        }
        let (h, w) = input.image_size;
        let class_logits = resize_bilinear(diffris_kernels::sd_conv2d(&self.classifier, x), [h, w]);
        let logits = class_logits.clone().narrow(1, 1, 1) - class_logits.clone().narrow(1, 0, 1);
        DecoderOutput {
            logits,
            class_logits: Some(class_logits),
            hit_maps: vec![],
            assignments: vec![],
        }
    }
}
