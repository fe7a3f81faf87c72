//! diffusers `UNet2DConditionModel` (SD-1.x), with the VPD feature taps and the head-averaged
//! cross-attention maps DiffRIS reads (`docs/DESIGN.md`, the feature-tap and cross-attention rows).

pub mod blocks;

use crate::norm::sd_group_norm;
use crate::precision::{param_dtype, to_dtype};
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, GroupNormConfig};
use burn::tensor::{DType, Tensor, backend::Backend};
use diffris_kernels::SdBackend;
use diffris_kernels::{sd_conv2d, sd_silu, swap_dims};

use self::blocks::{AttentionSpec, DownBlock, MidBlock, ResnetSpec, UpBlock, UpBlockWidths};
use super::config::UNetConfig;
use super::embeddings::{TimestepEmbedding, timestep_features};
use super::resnet::conv3x3;

/// What a UNet pass computes besides the feature taps.
#[derive(Clone, Copy, Debug, Default)]
pub struct UNetRequest {
    /// Run `conv_norm_out`/`conv_out` and return the noise prediction.
    pub sample: bool,
    /// Average the cross-attention probabilities per resolution level.
    pub attention_maps: bool,
    /// Return every cross-attention's head-averaged probabilities by module path.
    pub attention_probs: bool,
}

/// The outputs of one UNet pass.
#[derive(Debug, Clone)]
pub struct UNetOutput<B: Backend> {
    /// The noise prediction `[B, out_channels, h, w]`, when requested.
    pub sample: Option<Tensor<B, 4>>,
    /// VPD feature taps, finest level first. With the SD-1.x layout and a 512 input these are
    /// F64 `[B,320,64,64]`, F32 `[B,640,32,32]`, F16 `[B,1280,16,16]`, F8 `[B,1280,8,8]`:
    /// level `k` is the state of up block `n-1-k` after its layer `layers_per_block - 1`
    /// (LDM `output_blocks.{3(n-1-k)+1}`), and the finest is the last up block's output.
    pub taps: Vec<Tensor<B, 4>>,
    /// Per level: the mean over every down- and up-block cross-attention at that level of the
    /// head-averaged probabilities, as `[B, M, h_k, w_k]` (`M` context tokens); `None` for
    /// levels without attention or when not requested.
    pub attention_maps: Vec<Option<Tensor<B, 4>>>,
    /// `(diffusers path of the attn2 module, [B, h*w, M])` for every cross-attention of the
    /// down and up blocks, when requested.
    pub attention_probs: Vec<(String, Tensor<B, 3>)>,
}

impl<B: Backend> UNetOutput<B> {
    /// The taps with the attention maps of `levels` concatenated on the channel axis (VPD's
    /// input to the decoder: F32 and F16, levels 1 and 2).
    ///
    /// # Shapes
    /// tap `k`: `[B, C_k, h_k, w_k]` -> `[B, C_k + M, h_k, w_k]` for `k` in `levels`.
    pub fn features_with_maps(&self, levels: &[usize]) -> Vec<Tensor<B, 4>> {
        self.taps
            .iter()
            .enumerate()
            .map(|(k, tap)| match self.attention_maps.get(k) {
                Some(Some(maps)) if levels.contains(&k) => {
                    Tensor::cat(vec![tap.clone(), to_dtype(maps.clone(), tap.dtype())], 1)
                }
                _ => tap.clone(),
            })
            .collect()
    }
}

/// The SD-1.x UNet. Field names are diffusers' so checkpoint keys map one to one.
#[derive(Module, Debug)]
pub struct UNet2DConditionModel<B: SdBackend> {
    pub conv_in: Conv2d<B>,
    pub time_embedding: TimestepEmbedding<B>,
    pub down_blocks: Vec<DownBlock<B>>,
    pub mid_block: MidBlock<B>,
    pub up_blocks: Vec<UpBlock<B>>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
    config: UNetConfig,
}

impl UNetConfig {
    /// Builds the UNet with freshly initialised weights.
    pub fn init<B: SdBackend>(&self, device: &B::Device) -> UNet2DConditionModel<B> {
        let ch = &self.block_out_channels;
        let n = ch.len();
        let resnet = ResnetSpec {
            temb_dim: self.time_embed_dim(),
            groups: self.norm_num_groups,
            eps: self.norm_eps,
        };
        let attention = |heads: usize| AttentionSpec {
            context_dim: self.cross_attention_dim,
            heads,
            groups: self.norm_num_groups,
            linear_projection: self.use_linear_projection,
        };
        let down_blocks = (0..n)
            .map(|i| {
                DownBlock::new(
                    if i == 0 { ch[0] } else { ch[i - 1] },
                    ch[i],
                    self.layers_per_block,
                    resnet,
                    self.down_block_cross_attention[i].then(|| attention(self.attention_heads[i])),
                    i + 1 < n,
                    device,
                )
            })
            .collect();
        let up_blocks = (0..n)
            .map(|j| {
                let level = n - 1 - j;
                let widths = self.up_block_widths(j);
                UpBlock::new(
                    &widths,
                    resnet,
                    self.down_block_cross_attention[level]
                        .then(|| attention(self.attention_heads[level])),
                    j + 1 < n,
                    device,
                )
            })
            .collect();
        UNet2DConditionModel {
            conv_in: conv3x3(self.in_channels, ch[0], device),
            time_embedding: TimestepEmbedding::new(ch[0], self.time_embed_dim(), device),
            down_blocks,
            mid_block: MidBlock::new(
                ch[n - 1],
                resnet,
                attention(self.attention_heads[n - 1]),
                device,
            ),
            up_blocks,
            conv_norm_out: GroupNormConfig::new(self.norm_num_groups, ch[0])
                .with_epsilon(self.norm_eps)
                .init(device),
            conv_out: conv3x3(ch[0], self.out_channels, device),
            config: self.clone(),
        }
    }

    /// Widths of up block `j` as diffusers derives them.
    fn up_block_widths(&self, j: usize) -> UpBlockWidths {
        let rev: Vec<usize> = self.block_out_channels.iter().rev().copied().collect();
        let n = rev.len();
        let out = rev[j];
        let prev_out = rev[j.saturating_sub(1)];
        let input = rev[(j + 1).min(n - 1)];
        let layers = self.layers_per_block + 1;
        UpBlockWidths {
            prev_out,
            out,
            skips: (0..layers)
                .map(|i| if i + 1 == layers { input } else { out })
                .collect(),
        }
    }

    /// Channels of each feature tap, finest first, plus the attention-map channels `context_len`
    /// where `levels` asks for them.
    pub fn tap_channels(&self, levels_with_maps: &[usize], context_len: usize) -> Vec<usize> {
        self.block_out_channels
            .iter()
            .enumerate()
            .map(|(k, &c)| {
                let maps = levels_with_maps.contains(&k) && self.down_block_cross_attention[k];
                c + if maps { context_len } else { 0 }
            })
            .collect()
    }
}

impl<B: SdBackend> UNet2DConditionModel<B> {
    /// The architecture this UNet was built from.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// One denoising pass without noise, as DiffRIS uses it. Float inputs are cast to the
    /// dtype of the weights (see [`crate::precision`]); every output is in that dtype.
    ///
    /// # Shapes
    /// `latent`: `[B, C_in, h, w]` (`h`, `w` multiples of `2^(levels-1)`), `timesteps`: `[B]`,
    /// `context`: `[B, M, cross_attention_dim]`. See [`UNetOutput`] for the outputs.
    pub fn forward(
        &self,
        latent: Tensor<B, 4>,
        timesteps: Tensor<B, 1>,
        context: Tensor<B, 3>,
        request: UNetRequest,
    ) -> UNetOutput<B> {
        let cfg = self.config();
        let n = self.down_blocks.len();
        let want_probs = request.attention_maps || request.attention_probs;
        // Inputs in the weights' dtype; the sinusoidal features in f32 first (as diffusers).
        let dtype = param_dtype(&self.conv_in.weight);
        let (latent, context) = (to_dtype(latent, dtype), to_dtype(context, dtype));
        let t = timestep_features(
            to_dtype(timesteps, DType::F32),
            cfg.block_out_channels[0],
            cfg.flip_sin_to_cos,
            cfg.freq_shift,
        );
        let temb = self.time_embedding.forward(to_dtype(t, dtype));

        let mut x = sd_conv2d(&self.conv_in, latent);
        let mut skips = vec![x.clone()];
        let mut probs: Vec<(String, usize, Tensor<B, 3>)> = Vec::new();
        for (i, block) in self.down_blocks.iter().enumerate() {
            let mut block_probs = Vec::new();
            let (h, s) = block.forward(x, &temb, &context, want_probs, &mut block_probs);
            x = h;
            skips.extend(s);
            probs.extend(
                block_probs
                    .into_iter()
                    .enumerate()
                    .map(|(a, p)| (attn2_path("down_blocks", i, a), i, p)),
            );
        }
        x = self.mid_block.forward(x, &temb, &context);

        let tap_layer = cfg.layers_per_block - 1;
        let mut taps: Vec<Option<Tensor<B, 4>>> = vec![None; n];
        for (j, block) in self.up_blocks.iter().enumerate() {
            let mut block_probs = Vec::new();
            let (h, tap) = block.forward(
                x,
                &mut skips,
                &temb,
                &context,
                tap_layer,
                want_probs,
                &mut block_probs,
            );
            x = h;
            let level = n - 1 - j;
            taps[level] = Some(if j + 1 == n { x.clone() } else { tap });
            probs.extend(
                block_probs
                    .into_iter()
                    .enumerate()
                    .map(|(a, p)| (attn2_path("up_blocks", j, a), level, p)),
            );
        }

        let attention_maps = if request.attention_maps {
            level_maps(&probs, &taps, n)
        } else {
            vec![None; n]
        };
        let sample = request.sample.then(|| {
            sd_conv2d(
                &self.conv_out,
                sd_silu(sd_group_norm(&self.conv_norm_out, x)),
            )
        });
        UNetOutput {
            sample,
            taps: taps
                .into_iter()
                .map(|t| t.expect("every level tapped"))
                .collect(),
            attention_maps,
            attention_probs: if request.attention_probs {
                probs.into_iter().map(|(path, _, p)| (path, p)).collect()
            } else {
                vec![]
            },
        }
    }
}

fn attn2_path(kind: &str, block: usize, attention: usize) -> String {
    format!("{kind}.{block}.attentions.{attention}.transformer_blocks.0.attn2")
}

/// Averages the cross-attention probabilities of each level and lays them out as maps.
fn level_maps<B: SdBackend>(
    probs: &[(String, usize, Tensor<B, 3>)],
    taps: &[Option<Tensor<B, 4>>],
    n: usize,
) -> Vec<Option<Tensor<B, 4>>> {
    (0..n)
        .map(|level| {
            let [_, _, h, w] = taps[level].as_ref()?.dims();
            let at_level: Vec<Tensor<B, 3>> = probs
                .iter()
                .filter(|(_, l, _)| *l == level)
                .map(|(_, _, p)| p.clone())
                .collect();
            let count = at_level.len();
            let sum = at_level.into_iter().reduce(|a, b| a + b)?;
            let [b, hw, m] = sum.dims();
            debug_assert_eq!(hw, h * w);
            Some(swap_dims(sum.div_scalar(count as f64), 1, 2).reshape([b, m, h, w]))
        })
        .collect()
}
