//! CAMD, the comparison decoder after CARIS (Table 5), laid out as CARIS's vision-language
//! pixel decoder (`lsa1997/CARIS`, `model/msdeform_decoder.py` and
//! `model/builder.py`):
//!
//! 1. F8, F16, F32 (coarsest first, as CARIS orders its levels) are projected to `D` channels
//!    (1x1 convolution + group norm) and flattened into one sequence of visual tokens; each token's position is its level's 2-D sine encoding
//!    plus a learnt level embedding. The words are projected to `D` (linear + layer norm) and
//!    `P` learnable prompts are appended to them.
//! 2. Each of the `layers` bidirectional layers is post-norm, in CARIS's order:
//!    language from vision `T = LN(T + g1 * Attn(T, V + pos, V))`, language self-attention
//!    (padding masked), language FFN, vision from language `V = LN(V + g2 * Attn(V + pos, T, T))`
//!    (padding masked), vision self-attention `V = LN(V + Attn(V + pos, V + pos, V))`, vision
//!    FFN. `g1`, `g2` are per-channel layer scales initialised to 1. Every attention has `heads`
//!    heads over `attn_dim` channels (CARIS: 8 over 1024), projected back to `D`.
//! 3. The F32-level visual tokens (the finest of the three) become a map, are upsampled to F64 and added to F64's
//!    lateral (1x1 convolution + group norm); a 3x3 convolution + group norm + ReLU and a
//!    three-layer 1x1 MLP give the mask features.
//! 4. One shared three-layer MLP turns the sentence token into the foreground embedding and the
//!    mean prompt into the background embedding; their dot products with the mask features are
//!    the two class logits, upsampled with `align_corners = true`.
//!
//! What still differs from CARIS, and why (`docs/DESIGN.md`, section 2): full self-attention over
//! the concatenated tokens instead of multi-scale deformable attention (Burn has none; same
//! receptive field, more memory); the sentence token is CLIP's end token
//! (CARIS reads BERT's first token); Burn's default initialisation instead of CARIS's truncated
//! normal.

use crate::norm::group_norm;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    GroupNorm, GroupNormConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::tensor::activation::relu;
use burn::tensor::{Bool, Tensor};
use diffris_kernels::{SdBackend, sd_conv2d, sd_relu, swap_dims};
use serde::{Deserialize, Serialize};

use super::common::{
    conv_no_bias, gather_tokens, padding_mask, resize_bilinear, resize_bilinear_corners,
    sine_position_embedding,
};
use super::wide_attention::WideAttention;
use super::{DecoderInput, DecoderOutput};

/// CAMD sizes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CamdConfig {
    /// Width `D` of the visual and language tokens.
    pub hidden: usize,
    pub layers: usize,
    pub prompts: usize,
    pub heads: usize,
    /// The attention heads' total width (CARIS: 1024 inside 256-wide layers).
    pub attn_dim: usize,
    pub ffn_dim: usize,
}

impl Default for CamdConfig {
    fn default() -> Self {
        Self {
            hidden: 256,
            layers: 6,
            prompts: 5,
            heads: 8,
            attn_dim: 1024,
            ffn_dim: 1024,
        }
    }
}

/// Group count of CARIS's group norms (32) where it divides the width, else the largest
/// divisor of both (the tiny profile's width 16 gets 16 groups).
fn groups(d: usize) -> usize {
    let (mut a, mut b) = (32, d);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `conv -> group norm`, bias-free (the norm follows), CARIS's `Conv2d(norm=GN)`.
#[derive(Module, Debug)]
pub struct ConvGn<B: SdBackend> {
    pub conv: Conv2d<B>,
    pub norm: GroupNorm<B>,
}

impl<B: SdBackend> ConvGn<B> {
    fn new(cin: usize, cout: usize, kernel: usize, device: &B::Device) -> Self {
        Self {
            conv: conv_no_bias(cin, cout, kernel, device),
            norm: GroupNormConfig::new(groups(cout), cout).init(device),
        }
    }

    /// # Shapes
    /// `[B, C_in, H, W]` -> `[B, C_out, H, W]`.
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        group_norm(&self.norm, sd_conv2d(&self.conv, x))
    }
}

/// Post-norm attention sub-layer: `LN(x + scale * Attn(x + pos_q, ctx + pos_k, ctx))`, with an
/// optional per-channel layer scale (CARIS's cross-attentions have one, initialised to 1).
#[derive(Module, Debug)]
pub struct AttnBlock<B: SdBackend> {
    pub attn: WideAttention<B>,
    pub norm: LayerNorm<B>,
    /// `[D]` layer scale.
    pub scale: Option<Param<Tensor<B, 1>>>,
}

impl<B: SdBackend> AttnBlock<B> {
    fn new(d: usize, attn: (usize, usize), layer_scale: bool, device: &B::Device) -> Self {
        let (heads, inner) = attn;
        Self {
            attn: WideAttention::new(d, inner, heads, device),
            norm: LayerNormConfig::new(d).init(device),
            scale: layer_scale.then(|| Initializer::Ones.init([d], device)),
        }
    }

    /// Self-attention when `context` is `None`; `pad` marks context positions to ignore. The
    /// positional encodings go into queries and keys only, as in DETR's layers.
    ///
    /// # Shapes
    /// `x`: `[B, N, D]`, `context`: `[B, M, D]`, `pad`: `[B, M]`, positions as their tensors;
    /// returns `[B, N, D]`.
    fn forward(
        &self,
        x: Tensor<B, 3>,
        context: Option<Tensor<B, 3>>,
        pad: Option<Tensor<B, 2, Bool>>,
        (pos_q, pos_k): (Option<&Tensor<B, 3>>, Option<&Tensor<B, 3>>),
    ) -> Tensor<B, 3> {
        let v = context.unwrap_or_else(|| x.clone());
        let with = |t: Tensor<B, 3>, pos: Option<&Tensor<B, 3>>| match pos {
            Some(p) => t + p.clone(),
            None => t,
        };
        let mut out = self
            .attn
            .forward(with(x.clone(), pos_q), with(v.clone(), pos_k), v, pad);
        if let Some(scale) = &self.scale {
            let d = out.dims()[2];
            out = out * scale.val().reshape([1, 1, d]);
        }
        self.norm.forward(x + out)
    }
}

/// Post-norm feed-forward: `LN(x + fc2(relu(fc1(x))))`.
#[derive(Module, Debug)]
pub struct FfnBlock<B: SdBackend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
    pub norm: LayerNorm<B>,
}

impl<B: SdBackend> FfnBlock<B> {
    fn new(d: usize, hidden: usize, device: &B::Device) -> Self {
        Self {
            fc1: LinearConfig::new(d, hidden).init(device),
            fc2: LinearConfig::new(hidden, d).init(device),
            norm: LayerNormConfig::new(d).init(device),
        }
    }

    /// # Shapes
    /// `[B, N, D]` -> `[B, N, D]`.
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let y = self.fc2.forward(relu(self.fc1.forward(x.clone())));
        self.norm.forward(x + y)
    }
}

/// One bidirectional vision-language layer, in CARIS's order (module doc, step 2).
#[derive(Module, Debug)]
pub struct CamdLayer<B: SdBackend> {
    /// The language attends to the visual tokens.
    pub lang_from_vision: AttnBlock<B>,
    pub lang_self: AttnBlock<B>,
    pub lang_ffn: FfnBlock<B>,
    /// The visual tokens attend to the words.
    pub vision_from_lang: AttnBlock<B>,
    pub vision_self: AttnBlock<B>,
    pub vision_ffn: FfnBlock<B>,
}

/// A stack of linear layers with ReLU between them (CARIS's `MLP`).
#[derive(Module, Debug)]
pub struct ReluMlp<B: SdBackend> {
    pub layers: Vec<Linear<B>>,
}

impl<B: SdBackend> ReluMlp<B> {
    /// # Shapes
    /// `[B, D]` -> `[B, D]`.
    fn forward(&self, mut x: Tensor<B, 2>) -> Tensor<B, 2> {
        let last = self.layers.len() - 1;
        for (k, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if k < last {
                x = relu(x);
            }
        }
        x
    }
}

/// CAMD.
#[derive(Module, Debug)]
pub struct Camd<B: SdBackend> {
    /// 1x1 projections (+ group norm) of F8, F16, F32 to `D`.
    pub vision_proj: Vec<ConvGn<B>>,
    /// `[3, D]` level embeddings.
    pub level_embed: Param<Tensor<B, 2>>,
    pub text_proj: Linear<B>,
    pub text_norm: LayerNorm<B>,
    /// `[P, D]` learnable prompts.
    pub prompts: Param<Tensor<B, 2>>,
    pub layers: Vec<CamdLayer<B>>,
    /// F64's lateral: 1x1 convolution + group norm.
    pub lateral: ConvGn<B>,
    /// 3x3 convolution + group norm (ReLU follows).
    pub output: ConvGn<B>,
    /// Three 1x1 convolutions with ReLU between them.
    pub mask_features: Vec<Conv2d<B>>,
    /// The foreground / background embedding MLP, shared by both classes.
    pub class_embed: ReluMlp<B>,
}

impl CamdConfig {
    pub fn init<B: SdBackend>(
        &self,
        channels: &[usize],
        text_dim: usize,
        device: &B::Device,
    ) -> Camd<B> {
        let d = self.hidden;
        let attn = (self.heads, self.attn_dim);
        let normal = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        Camd {
            vision_proj: (1..4)
                .rev()
                .map(|level| ConvGn::new(channels[level], d, 1, device))
                .collect(),
            level_embed: normal.init([3, d], device),
            text_proj: LinearConfig::new(text_dim, d).init(device),
            text_norm: LayerNormConfig::new(d).init(device),
            prompts: normal.init([self.prompts, d], device),
            layers: (0..self.layers)
                .map(|_| CamdLayer {
                    lang_from_vision: AttnBlock::new(d, attn, true, device),
                    lang_self: AttnBlock::new(d, attn, false, device),
                    lang_ffn: FfnBlock::new(d, self.ffn_dim, device),
                    vision_from_lang: AttnBlock::new(d, attn, true, device),
                    vision_self: AttnBlock::new(d, attn, false, device),
                    vision_ffn: FfnBlock::new(d, self.ffn_dim, device),
                })
                .collect(),
            lateral: ConvGn::new(channels[0], d, 1, device),
            output: ConvGn::new(d, d, 3, device),
            mask_features: (0..3)
                .map(|_| Conv2dConfig::new([d, d], [1, 1]).init(device))
                .collect(),
            class_embed: ReluMlp {
                layers: (0..3)
                    .map(|_| LinearConfig::new(d, d).init(device))
                    .collect(),
            },
        }
    }
}

impl<B: SdBackend> Camd<B> {
    /// # Shapes
    /// See [`DecoderInput`]; `class_logits` `[B, 2, H, W]` (background, foreground), `logits`
    /// `[B, 1, H, W]`.
    pub fn forward(&self, input: DecoderInput<'_, B>) -> DecoderOutput<B> {
        let f = input.features;
        let b = f[0].dims()[0];
        let level_embed = self.level_embed.val();
        let d = level_embed.dims()[1];
        // Visual tokens of F8, F16, F32, each with its level's sine encoding plus its level
        // embedding as position (CARIS's `pos + level_embed`).
        let mut sizes = Vec::new();
        let mut tokens = Vec::new();
        let mut positions = Vec::new();
        for (k, proj) in self.vision_proj.iter().enumerate() {
            let m = proj.forward(f[3 - k].clone());
            let [_, _, h, w] = m.dims();
            sizes.push((h, w));
            let lvl = level_embed.clone().narrow(0, k, 1);
            let pos = sine_position_embedding::<B>(h, w, d, &m.device()) + lvl;
            positions.push(pos.reshape([1, h * w, d]));
            tokens.push(swap_dims(m.reshape([b, d, h * w]), 1, 2));
        }
        let mut vision = Tensor::cat(tokens, 1);
        let n = vision.dims()[1];
        let vision_pos = Tensor::cat(positions, 1).expand([b, n, d]);
        let vpos = Some(&vision_pos);
        // The words, then the prompts (CARIS appends them to the sentence).
        let t = input.text.dims()[1];
        let words = self
            .text_norm
            .forward(self.text_proj.forward(input.text.clone()));
        let prompts = self.prompts.val();
        let p = prompts.dims()[0];
        let mut lang = Tensor::cat(vec![words, prompts.reshape([1, p, d]).expand([b, p, d])], 1);
        let word_pad = padding_mask(input.eos_index.clone(), t);
        // Prompts are never padding; the start token (position 0) never is either, so its mask
        // column (all false) serves for them.
        let prompt_pad = word_pad.clone().narrow(1, 0, 1).expand([b, p]);
        let lang_pad = Tensor::cat(vec![word_pad, prompt_pad], 1);
        for layer in &self.layers {
            lang = layer
                .lang_from_vision
                .forward(lang, Some(vision.clone()), None, (None, vpos));
            lang = layer
                .lang_self
                .forward(lang, None, Some(lang_pad.clone()), (None, None));
            lang = layer.lang_ffn.forward(lang);
            vision = layer.vision_from_lang.forward(
                vision,
                Some(lang.clone()),
                Some(lang_pad.clone()),
                (vpos, None),
            );
            vision = layer.vision_self.forward(vision, None, None, (vpos, vpos));
            vision = layer.vision_ffn.forward(vision);
        }
        // The finest level's (F32's, last) tokens as a map, upsampled onto F64's lateral.
        let (hf, wf) = sizes[2];
        let fine = swap_dims(vision.narrow(1, n - hf * wf, hf * wf), 1, 2).reshape([b, d, hf, wf]);
        let lateral = self.lateral.forward(f[0].clone());
        let [_, _, h0, w0] = lateral.dims();
        let mut pixels = sd_relu(
            self.output
                .forward(lateral + resize_bilinear(fine, [h0, w0])),
        );
        let last = self.mask_features.len() - 1;
        for (k, conv) in self.mask_features.iter().enumerate() {
            pixels = sd_conv2d(conv, pixels);
            if k < last {
                pixels = sd_relu(pixels);
            }
        }
        // Foreground from the sentence token, background from the mean prompt, one MLP.
        let sentence = gather_tokens(lang.clone().narrow(1, 0, t), input.eos_index.clone());
        let prompt_mean = lang.narrow(1, t, p).mean_dim(1).reshape([b, d]);
        let emb = Tensor::stack::<3>(
            vec![
                self.class_embed.forward(prompt_mean),
                self.class_embed.forward(sentence),
            ],
            1,
        );
        let flat = pixels.reshape([b, d, h0 * w0]);
        let class_logits = emb.matmul(flat).reshape([b, 2, h0, w0]);
        let (h, w) = input.image_size;
        let class_logits = resize_bilinear_corners(class_logits, [h, w]);
        let logits = class_logits.clone().narrow(1, 1, 1) - class_logits.clone().narrow(1, 0, 1);
        DecoderOutput {
            logits,
            class_logits: Some(class_logits),
            hit_maps: vec![],
            assignments: vec![],
        }
    }
}
