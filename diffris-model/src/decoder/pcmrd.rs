//! The progressive cross-modal reasoning decoder (PCMRD, paper section 3.4, Table 6), after
//! CGFormer's decoder adapted to UNet features (`docs/DESIGN.md`, section 3).
//!
//! Three stages fuse two feature levels each (`F8+F16`, `+F32`, `+F64`); after each fusion the
//! object-aware query interaction layer (OAQIL) lets `N` learnable query tokens read the text,
//! then groups the fused pixels into the tokens with a Gumbel-normalised, straight-through hard
//! assignment. The last token is the referent; its embedding becomes the kernel of a dynamic
//! 1x1 convolution over the upsampled features. Table 6's rows are switches of [`PcmrdConfig`].

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Int, Tensor};
use diffris_kernels::SdBackend;
use serde::{Deserialize, Serialize};

use super::common::{ConvBnRelu, Fusion, gather_tokens, resize_bilinear, resize_bilinear_corners};
use super::oaqil::{Grouping, Oaqil, OaqilConfig, OaqilLayout, Temperature, TextReading};

/// PCMRD switches and sizes; the defaults are the full decoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PcmrdConfig {
    /// Hidden width `D`.
    pub hidden: usize,
    /// Number of query tokens `N` (the last is the referent).
    pub tokens: usize,
    /// Table 6 row 2: three progressive fusion stages (off: one tap through a 1x1 conv).
    pub multi_scale: bool,
    /// Table 6 row 1: the tap the baseline reads when `multi_scale` is off, finest first:
    /// 0 = F64 (default; the paper's "directly extracts visual features" names none), 1 = F32,
    /// 2 = F16, 3 = F8. Left out of a serialised config at 0.
    #[serde(skip_serializing_if = "is_finest")]
    pub baseline_level: usize,
    /// Table 6 row 3: query tokens with OAQIL (off: the kernel comes from the sentence state).
    pub query_tokens: bool,
    /// Table 6 row 4: straight-through hard assignment (off: soft assignment).
    pub hard_assignment: bool,
    /// Gumbel noise on the grouping logits while training.
    pub gumbel_noise: bool,
    /// Gumbel noise at evaluation too (CGFormer's code samples it in every forward; then a
    /// run's test numbers depend on the random stream, which the seed fixes). Left out of a
    /// serialised config when off.
    #[serde(skip_serializing_if = "is_false")]
    pub gumbel_at_eval: bool,
    /// Each stage's initial temperature (see [`Temperature`] for how it is held).
    pub tau_init: f64,
    /// How the temperature is parametrised: learned (the paper's "learnable coefficient"), or
    /// CGFormer's clamp, under which it does not learn.
    pub temperature: Temperature,
    /// The OAQILs' layout where the paper is open (see [`OaqilLayout`]; left out of a
    /// serialised config at its defaults).
    #[serde(skip_serializing_if = "OaqilLayout::is_default")]
    pub oaqil: OaqilLayout,
    /// The mask head's two 2x upsamplings with aligned corners (on); CGFormer's `DProjector`
    /// uses `nn.Upsample(scale_factor=2, mode='bilinear')`, whose corners are not aligned.
    /// Left out of a serialised config when on.
    #[serde(skip_serializing_if = "is_true")]
    pub head_align_corners: bool,
    /// The logits' resize to the input size with aligned corners; off here (half-pixel
    /// centres, as the UNet's own resamplings), on in CGFormer's `segmenter.py`. Left out of
    /// a serialised config when off.
    #[serde(skip_serializing_if = "is_false")]
    pub logits_align_corners: bool,
}

fn is_finest(level: &usize) -> bool {
    *level == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn is_true(v: &bool) -> bool {
    *v
}

impl Default for PcmrdConfig {
    fn default() -> Self {
        Self {
            hidden: 512,
            tokens: 2,
            multi_scale: true,
            baseline_level: 0,
            query_tokens: true,
            hard_assignment: true,
            gumbel_noise: true,
            gumbel_at_eval: false,
            tau_init: 1.0,
            temperature: Temperature::Learned,
            oaqil: OaqilLayout::default(),
            head_align_corners: true,
            logits_align_corners: false,
        }
    }
}

/// What the UNet hands to a decoder.
#[derive(Clone, Copy, Debug)]
pub struct DecoderInput<'a, B: SdBackend> {
    /// Feature taps, finest first: `F64, F32, F16, F8` (with attention maps concatenated).
    pub features: &'a [Tensor<B, 4>],
    /// The adapted text states `L'`, `[B, T, D_text]`.
    pub text: &'a Tensor<B, 3>,
    /// Index of the first end token per sample, `[B]`.
    pub eos_index: &'a Tensor<B, 1, Int>,
    /// The input image size `(H, W)`; logits come out at this size.
    pub image_size: (usize, usize),
    /// Training mode: Gumbel noise on.
    pub training: bool,
}

/// Logits and the referent token's hit maps.
#[derive(Clone, Debug)]
pub struct DecoderOutput<B: SdBackend> {
    /// `[B, 1, H, W]` foreground logits at the input size.
    pub logits: Tensor<B, 4>,
    /// `[B, 2, H, W]` (background, foreground) logits, for decoders that produce two classes.
    pub class_logits: Option<Tensor<B, 4>>,
    /// Per stage `[B, 1, h_s, w_s]`: the referent token's (hard or soft) assignment.
    pub hit_maps: Vec<Tensor<B, 4>>,
    /// Per stage `[B, N, h_s, w_s]`, detached: every query token's soft assignment (the
    /// temperature-scaled softmax over tokens, before any straight-through rounding), for
    /// inspection (`diffris explain`). Empty for decoders without query tokens.
    pub assignments: Vec<Tensor<B, 4>>,
}

/// The dynamic-convolution mask head (CGFormer's DProjector).
#[derive(Module, Debug)]
pub struct MaskHead<B: SdBackend> {
    pub up1: ConvBnRelu<B>,
    pub up2: ConvBnRelu<B>,
    pub proj: burn::nn::conv::Conv2d<B>,
    /// `kernel source -> D + 1` (weights and bias of the dynamic 1x1 conv).
    pub kernel: Linear<B>,
    /// The upsamplings align corners.
    #[module(skip)]
    align_corners: bool,
}

impl<B: SdBackend> MaskHead<B> {
    fn new(hidden: usize, kernel_source: usize, align_corners: bool, device: &B::Device) -> Self {
        Self {
            up1: ConvBnRelu::new(hidden, hidden, 3, device),
            up2: ConvBnRelu::new(hidden, hidden, 3, device),
            proj: burn::nn::conv::Conv2dConfig::new([hidden, hidden], [1, 1]).init(device),
            kernel: LinearConfig::new(kernel_source, hidden + 1).init(device),
            align_corners,
        }
    }

    /// A 2x bilinear upsampling, with aligned corners or half-pixel centres.
    fn up(&self, x: Tensor<B, 4>, size: [usize; 2]) -> Tensor<B, 4> {
        if self.align_corners {
            resize_bilinear_corners(x, size)
        } else {
            resize_bilinear(x, size)
        }
    }

    /// `training`: batch statistics in the BatchNorms under autodiff.
    ///
    /// # Shapes
    /// `v`: `[B, D, h, w]`, `source`: `[B, S]` -> logits `[B, 1, 4h, 4w]`.
    pub fn forward(&self, v: Tensor<B, 4>, source: Tensor<B, 2>, training: bool) -> Tensor<B, 4> {
        let [b, d, h, w] = v.dims();
        let x = self.up1.forward(self.up(v, [2 * h, 2 * w]), training);
        let x = self.up2.forward(self.up(x, [4 * h, 4 * w]), training);
        let x = diffris_kernels::sd_conv2d(&self.proj, x);
        // Reshape the contiguous kernel first, then narrow: Burn 0.21's cubecl backends (wgpu,
        // cuda) give a narrowed `[B, 1]` view the wrong batch stride when it is reshaped to more
        // dimensions (burn-std's `split_strides` skips size-1 dimensions of the old shape), so
        // `k.narrow(1, d, 1).reshape([b, 1, 1, 1])` read other samples' values there. The two
        // orders are the same values on every correct backend.
        let k = self.kernel.forward(source).reshape([b, d + 1, 1, 1]);
        let weight = k.clone().narrow(1, 0, d);
        let bias = k.narrow(1, d, 1);
        (x * weight).sum_dim(1) + bias
    }
}

/// The PCMRD (or one of its Table 6 ablations).
#[derive(Module, Debug)]
pub struct Pcmrd<B: SdBackend> {
    /// Row 1: `Conv1x1-BN-ReLU(tap -> D)` on the tap `baseline_level` names.
    pub single: Option<ConvBnRelu<B>>,
    /// The tap `single` reads (0 = F64).
    #[module(skip)]
    single_level: usize,
    /// Rows 2-4: the three fusion stages (deepest first).
    pub fusions: Vec<Fusion<B>>,
    /// Rows 3-4: the initial query tokens `[N, D]`.
    pub queries: Option<Param<Tensor<B, 2>>>,
    /// Rows 3-4: one OAQIL per stage.
    pub layers: Vec<Oaqil<B>>,
    pub head: MaskHead<B>,
    hidden: usize,
    /// The logits' resize to the input size aligns corners.
    #[module(skip)]
    logits_align_corners: bool,
}

impl PcmrdConfig {
    /// Builds the decoder for taps of `channels` (finest first) and text states of width
    /// `text_dim`; `latent` is the finest tap's nominal size, from which the positional
    /// embeddings are sized.
    pub fn init<B: SdBackend>(
        &self,
        channels: &[usize],
        text_dim: usize,
        latent: (usize, usize),
        device: &B::Device,
    ) -> Pcmrd<B> {
        let d = self.hidden;
        let use_tokens = self.multi_scale && self.query_tokens;
        let fusions = if self.multi_scale {
            // Stage s fuses the previous output (or F8) with level 2 - s.
            (0..3)
                .map(|s| {
                    let coarse = if s == 0 { channels[3] } else { d };
                    Fusion::new(coarse + channels[2 - s], d, device)
                })
                .collect()
        } else {
            vec![]
        };
        let layers = if use_tokens {
            (0..3)
                .map(|s| {
                    let level = 2 - s;
                    let pe = (latent.0 >> level, latent.1 >> level);
                    OaqilConfig {
                        hidden: d,
                        text_dim,
                        pe_size: pe,
                        hard: self.hard_assignment,
                        gumbel: self.gumbel_noise,
                        gumbel_at_eval: self.gumbel_at_eval,
                        tau_init: self.tau_init,
                        temperature: self.temperature,
                        reads_text: s > 0 || self.oaqil.text_reading == TextReading::EveryToken,
                        own_grouping: s < 2 || !self.oaqil.shared_grouping,
                        layout: self.oaqil.clone(),
                    }
                    .init(device)
                })
                .collect()
        } else {
            vec![]
        };
        Pcmrd {
            single: (!self.multi_scale)
                .then(|| ConvBnRelu::new(channels[self.baseline_level], d, 1, device)),
            single_level: self.baseline_level,
            fusions,
            queries: use_tokens.then(|| {
                Initializer::Normal {
                    mean: 0.0,
                    std: self.oaqil.token_std,
                }
                .init([self.tokens, d], device)
            }),
            layers,
            head: MaskHead::new(
                d,
                if use_tokens { d } else { text_dim },
                self.head_align_corners,
                device,
            ),
            hidden: d,
            logits_align_corners: self.logits_align_corners,
        }
    }
}

impl<B: SdBackend> Pcmrd<B> {
    /// Each stage's grouping attention: its own, or the last earlier stage's it borrows.
    fn groupings(&self) -> Vec<&Grouping<B>> {
        let mut last = None;
        self.layers
            .iter()
            .map(|layer| {
                let g = layer
                    .grouping
                    .as_ref()
                    .or(last)
                    .expect("the first stage has its own grouping attention");
                last = Some(g);
                g
            })
            .collect()
    }

    /// Each stage's temperature `tau`, `[1]` (a shared grouping attention's twice).
    pub fn temperatures(&self) -> Vec<Tensor<B, 1>> {
        self.groupings().iter().map(|g| g.temperature()).collect()
    }

    /// # Shapes
    /// See [`DecoderInput`]; logits `[B, 1, H, W]`, hit maps `[B, 1, h_s, w_s]` (rows 3-4).
    pub fn forward(&self, input: DecoderInput<'_, B>) -> DecoderOutput<B> {
        let f = input.features;
        let mut hit_maps = Vec::new();
        let mut assignments = Vec::new();
        let (v, source) = if let Some(single) = &self.single {
            (
                single.forward(f[self.single_level].clone(), input.training),
                gather_tokens(input.text.clone(), input.eos_index.clone()),
            )
        } else {
            let batch = f[0].dims()[0];
            let mut queries = self.queries.as_ref().map(|q| {
                let [n, d] = q.dims();
                q.val().reshape([1, n, d]).expand([batch, n, d])
            });
            let groupings = self.groupings();
            let mut v = f[3].clone();
            for (s, fusion) in self.fusions.iter().enumerate() {
                let skip = f[2 - s].clone();
                let [_, _, h, w] = skip.dims();
                v = fusion.forward(
                    Tensor::cat(vec![resize_bilinear_corners(v, [h, w]), skip], 1),
                    input.training,
                );
                if let (Some(layer), Some(q)) = (self.layers.get(s), queries.take()) {
                    let (q, hit, probs) = layer.forward(
                        groupings[s],
                        q,
                        v.clone(),
                        input.text.clone(),
                        input.eos_index.clone(),
                        input.training,
                    );
                    hit_maps.push(hit);
                    assignments.push(probs);
                    queries = Some(q);
                }
            }
            let source = match queries {
                Some(q) => {
                    let [b, n, d] = q.dims();
                    q.narrow(1, n - 1, 1).reshape([b, d])
                }
                None => gather_tokens(input.text.clone(), input.eos_index.clone()),
            };
            (v, source)
        };
        debug_assert_eq!(v.dims()[1], self.hidden);
        let logits = self.head.forward(v, source, input.training);
        let (h, w) = input.image_size;
        let logits = if self.logits_align_corners {
            resize_bilinear_corners(logits, [h, w])
        } else {
            resize_bilinear(logits, [h, w])
        };
        DecoderOutput {
            logits,
            class_logits: None,
            hit_maps,
            assignments,
        }
    }
}
