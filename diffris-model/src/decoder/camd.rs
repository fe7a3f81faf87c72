//! CAMD, the comparison decoder after CARIS (Table 5): learnable prompts and the words attend
//! to the visual tokens of F8/F16/F32 and the visual tokens attend to the words, over several
//! bidirectional layers; an FPN merges the result with F64; foreground and background
//! embeddings from the sentence token and the mean prompt classify every pixel by dot product.
//!
//! CARIS uses multi-scale deformable attention for the visual self-attention. This
//! implementation uses full self-attention over the concatenated multi-scale tokens instead
//! (a documented departure, `docs/DESIGN.md`): the same receptive field, more memory. As in
//! CARIS, every visual token's position is its level's 2-D sine encoding plus a learnt level
//! embedding, added to the attention's queries and keys (without it full attention over the
//! tokens would not know where each one is).

use crate::ops::SdBackend;
use burn::module::{Module, Param};
use burn::nn::attention::{MhaInput, MultiHeadAttention, MultiHeadAttentionConfig};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Bool, Tensor};
use serde::{Deserialize, Serialize};

use super::common::{
    ConvBnRelu, gather_tokens, padding_mask, resize_bilinear, resize_bilinear_corners,
    sine_position_embedding,
};
use super::{DecoderInput, DecoderOutput};

/// CAMD sizes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CamdConfig {
    pub hidden: usize,
    pub layers: usize,
    pub prompts: usize,
    pub heads: usize,
    pub ffn_dim: usize,
}

impl Default for CamdConfig {
    fn default() -> Self {
        Self {
            hidden: 256,
            layers: 6,
            prompts: 5,
            heads: 8,
            ffn_dim: 1024,
        }
    }
}

/// Pre-LN attention sub-layer with a residual.
#[derive(Module, Debug)]
pub struct AttnBlock<B: SdBackend> {
    pub norm: LayerNorm<B>,
    pub attn: MultiHeadAttention<B>,
}

impl<B: SdBackend> AttnBlock<B> {
    fn new(d: usize, heads: usize, device: &B::Device) -> Self {
        Self {
            norm: LayerNormConfig::new(d).init(device),
            attn: MultiHeadAttentionConfig::new(d, heads)
                .with_dropout(0.0)
                .init(device),
        }
    }

    /// `x + Attn(LN(x) + pos_q, context + pos_k, context)` (self-attention on `LN(x)` when
    /// `context` is `None`), ignoring the context positions `pad` marks. The positional
    /// encodings go into queries and keys only, as in DETR's layers.
    fn forward(
        &self,
        x: Tensor<B, 3>,
        context: Option<Tensor<B, 3>>,
        pad: Option<Tensor<B, 2, Bool>>,
        (pos_q, pos_k): (Option<&Tensor<B, 3>>, Option<&Tensor<B, 3>>),
    ) -> Tensor<B, 3> {
        let q = self.norm.forward(x.clone());
        let v = context.unwrap_or_else(|| q.clone());
        let with = |t: Tensor<B, 3>, pos: Option<&Tensor<B, 3>>| match pos {
            Some(p) => t + p.clone(),
            None => t,
        };
        let mut input = MhaInput::new(with(q, pos_q), with(v.clone(), pos_k), v);
        if let Some(p) = pad {
            input = input.mask_pad(p);
        }
        x + self.attn.forward(input).context
    }
}

/// Pre-LN feed-forward with a residual.
#[derive(Module, Debug)]
pub struct FfnBlock<B: SdBackend> {
    pub norm: LayerNorm<B>,
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

impl<B: SdBackend> FfnBlock<B> {
    fn new(d: usize, hidden: usize, device: &B::Device) -> Self {
        Self {
            norm: LayerNormConfig::new(d).init(device),
            fc1: LinearConfig::new(d, hidden).init(device),
            fc2: LinearConfig::new(hidden, d).init(device),
        }
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        x.clone()
            + self
                .fc2
                .forward(relu(self.fc1.forward(self.norm.forward(x))))
    }
}

/// One bidirectional vision-language layer.
#[derive(Module, Debug)]
pub struct CamdLayer<B: SdBackend> {
    pub lang_to_vision: AttnBlock<B>,
    pub lang_self: AttnBlock<B>,
    pub lang_ffn: FfnBlock<B>,
    pub vision_to_lang: AttnBlock<B>,
    pub vision_self: AttnBlock<B>,
    pub vision_ffn: FfnBlock<B>,
}

/// CAMD.
#[derive(Module, Debug)]
pub struct Camd<B: SdBackend> {
    /// 1x1 projections of F32, F16, F8 to `D`.
    pub vision_proj: Vec<Conv2d<B>>,
    /// `[3, D]` level embeddings.
    pub level_embed: Param<Tensor<B, 2>>,
    pub text_proj: Linear<B>,
    /// `[P, D]` learnable prompts.
    pub prompts: Param<Tensor<B, 2>>,
    pub layers: Vec<CamdLayer<B>>,
    pub lateral: Conv2d<B>,
    pub fpn: ConvBnRelu<B>,
    pub fg_embed: Linear<B>,
    pub bg_embed: Linear<B>,
}

impl CamdConfig {
    pub fn init<B: SdBackend>(
        &self,
        channels: &[usize],
        text_dim: usize,
        device: &B::Device,
    ) -> Camd<B> {
        let d = self.hidden;
        Camd {
            vision_proj: (1..4)
                .map(|level| Conv2dConfig::new([channels[level], d], [1, 1]).init(device))
                .collect(),
            level_embed: Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            }
            .init([3, d], device),
            text_proj: LinearConfig::new(text_dim, d).init(device),
            prompts: Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            }
            .init([self.prompts, d], device),
            layers: (0..self.layers)
                .map(|_| CamdLayer {
                    lang_to_vision: AttnBlock::new(d, self.heads, device),
                    lang_self: AttnBlock::new(d, self.heads, device),
                    lang_ffn: FfnBlock::new(d, self.ffn_dim, device),
                    vision_to_lang: AttnBlock::new(d, self.heads, device),
                    vision_self: AttnBlock::new(d, self.heads, device),
                    vision_ffn: FfnBlock::new(d, self.ffn_dim, device),
                })
                .collect(),
            lateral: Conv2dConfig::new([channels[0], d], [1, 1]).init(device),
            fpn: ConvBnRelu::new(d, d, 3, device),
            fg_embed: LinearConfig::new(2 * d, d).init(device),
            bg_embed: LinearConfig::new(2 * d, d).init(device),
        }
    }
}

impl<B: SdBackend> Camd<B> {
    /// # Shapes
    /// See [`DecoderInput`]; `class_logits` `[B, 2, H, W]`, `logits` `[B, 1, H, W]`.
    pub fn forward(&self, input: DecoderInput<'_, B>) -> DecoderOutput<B> {
        let f = input.features;
        let b = f[0].dims()[0];
        let level_embed = self.level_embed.val();
        let d = level_embed.dims()[1];
        // Visual tokens of F32, F16, F8; each level's sine positional encoding plus its level
        // embedding is their position (CARIS's `pos + level_embed`), given to the attention's
        // queries and keys.
        let mut sizes = Vec::new();
        let mut tokens = Vec::new();
        let mut positions = Vec::new();
        for (k, proj) in self.vision_proj.iter().enumerate() {
            let m = proj.forward(f[k + 1].clone());
            let [_, _, h, w] = m.dims();
            sizes.push((h, w));
            let lvl = level_embed.clone().narrow(0, k, 1);
            let pos = sine_position_embedding::<B>(h, w, d, &m.device()) + lvl;
            positions.push(pos.reshape([1, h * w, d]));
            tokens.push(m.reshape([b, d, h * w]).swap_dims(1, 2));
        }
        let mut vision = Tensor::cat(tokens, 1);
        let n = vision.dims()[1];
        let vision_pos = Tensor::cat(positions, 1).expand([b, n, d]);
        let vpos = Some(&vision_pos);
        let t = input.text.dims()[1];
        let words = self.text_proj.forward(input.text.clone());
        let prompts = self.prompts.val();
        let p = prompts.dims()[0];
        let mut lang = Tensor::cat(vec![prompts.reshape([1, p, d]).expand([b, p, d]), words], 1);
        let word_pad = padding_mask(input.eos_index.clone(), t);
        // Prompts are never padding; the start token (position 0) never is either, so its mask
        // column (all false) serves for them.
        let prompt_pad = word_pad.clone().narrow(1, 0, 1).expand([b, p]);
        let lang_pad = Tensor::cat(vec![prompt_pad, word_pad.clone()], 1);
        for layer in &self.layers {
            lang = layer
                .lang_to_vision
                .forward(lang, Some(vision.clone()), None, (None, vpos));
            lang = layer
                .lang_self
                .forward(lang, None, Some(lang_pad.clone()), (None, None));
            lang = layer.lang_ffn.forward(lang);
            let words = lang.clone().narrow(1, p, t);
            vision = layer.vision_to_lang.forward(
                vision,
                Some(words),
                Some(word_pad.clone()),
                (vpos, None),
            );
            vision = layer.vision_self.forward(vision, None, None, (vpos, vpos));
            vision = layer.vision_ffn.forward(vision);
        }
        // Back to maps, top-down merge, then F64's lateral.
        let offsets: Vec<usize> = sizes
            .iter()
            .scan(0, |acc, &(h, w)| {
                let start = *acc;
                *acc += h * w;
                Some(start)
            })
            .collect();
        let mut merged: Option<Tensor<B, 4>> = None;
        for (&(h, w), &start) in sizes.iter().zip(&offsets).rev() {
            let map = vision
                .clone()
                .narrow(1, start, h * w)
                .swap_dims(1, 2)
                .reshape([b, d, h, w]);
            merged = Some(match merged {
                Some(m) => resize_bilinear_corners(m, [h, w]) + map,
                None => map,
            });
        }
        let lateral = self.lateral.forward(f[0].clone());
        let [_, _, h0, w0] = lateral.dims();
        let pixels = self.fpn.forward(
            resize_bilinear_corners(merged.expect("three levels"), [h0, w0]) + lateral,
            input.training,
        );
        // Foreground / background embeddings from the sentence token and the mean prompt.
        let words = lang.clone().narrow(1, p, t);
        let sentence = gather_tokens(words, input.eos_index.clone());
        let prompt_mean = lang.narrow(1, 0, p).mean_dim(1).reshape([b, d]);
        let key = Tensor::cat(vec![sentence, prompt_mean], 1);
        let emb = Tensor::stack::<3>(
            vec![
                self.bg_embed.forward(key.clone()),
                self.fg_embed.forward(key),
            ],
            1,
        );
        let flat = pixels.reshape([b, d, h0 * w0]);
        let class_logits = emb
            .matmul(flat)
            .mul_scalar((d as f64).powf(-0.5))
            .reshape([b, 2, h0, w0]);
        let (h, w) = input.image_size;
        let class_logits = resize_bilinear(class_logits, [h, w]);
        let logits = class_logits.clone().narrow(1, 1, 1) - class_logits.clone().narrow(1, 0, 1);
        DecoderOutput {
            logits,
            class_logits: Some(class_logits),
            hit_maps: vec![],
            assignments: vec![],
        }
    }
}
