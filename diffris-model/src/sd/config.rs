//! Architecture descriptions of the three frozen Stable Diffusion components, their presets, and
//! how they are read from a diffusers / transformers `config.json`.
//!
//! Presets are data: [`SdConfig::sd15`] copies the `config.json` files of
//! `runwayml/stable-diffusion-v1-5` (SD-1-1, 1-2, 1-4 and 1-5 share them), [`SdConfig::tiny`] keeps
//! the block structure at small widths (the parity fixtures under `tests/fixtures/sd_tiny` use it).

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, ensure};

/// The SD-1.x `UNet2DConditionModel`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Output channels of each down block (and, reversed, of each up block).
    pub block_out_channels: Vec<usize>,
    /// Whether down block `i` has cross-attention transformers (`CrossAttnDownBlock2D`) or not
    /// (`DownBlock2D`); up blocks mirror it (up block `n-1-i` has attention iff down block `i`
    /// has, as in every SD-1.x config).
    pub down_block_cross_attention: Vec<bool>,
    pub layers_per_block: usize,
    /// Attention heads of the transformers of down block `i` (up blocks use the reversed list,
    /// the mid block the last entry).
    pub attention_heads: Vec<usize>,
    /// Width of the text context (768 for CLIP ViT-L/14).
    pub cross_attention_dim: usize,
    pub norm_num_groups: usize,
    /// GroupNorm epsilon of the resnets and of `conv_norm_out`.
    pub norm_eps: f64,
    /// `proj_in`/`proj_out` of the transformers are linear layers (SD-2) instead of 1x1 convs.
    pub use_linear_projection: bool,
    /// Timestep embedding layout `[cos, sin]` instead of `[sin, cos]`.
    pub flip_sin_to_cos: bool,
    /// Frequency shift of the timestep embedding.
    pub freq_shift: f64,
}

/// The encoder half of `AutoencoderKL` (plus `quant_conv`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    /// Whether the mid block has its single-head attention.
    pub mid_block_add_attention: bool,
    /// Latent scale the checkpoint was trained with (0.18215 for SD-1.x).
    pub scaling_factor: f64,
}

/// The CLIP text transformer of SD-1.x (`CLIPTextModel`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f64,
    /// `quick_gelu` (SD-1.x) or `gelu`.
    pub hidden_act: ClipActivation,
}

/// Feed-forward activation of the CLIP text transformer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipActivation {
    /// `x * sigmoid(1.702 x)`.
    QuickGelu,
    /// Exact (erf) GELU.
    Gelu,
}

/// The three frozen components together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SdConfig {
    pub unet: UNetConfig,
    pub vae: VaeConfig,
    pub clip: ClipConfig,
}

impl SdConfig {
    /// SD-1.x (1-1, 1-2, 1-4, 1-5): the `config.json` files of `runwayml/stable-diffusion-v1-5`.
    pub fn sd15() -> Self {
        Self {
            unet: UNetConfig {
                in_channels: 4,
                out_channels: 4,
                block_out_channels: vec![320, 640, 1280, 1280],
                down_block_cross_attention: vec![true, true, true, false],
                layers_per_block: 2,
                attention_heads: vec![8; 4],
                cross_attention_dim: 768,
                norm_num_groups: 32,
                norm_eps: 1e-5,
                use_linear_projection: false,
                flip_sin_to_cos: true,
                freq_shift: 0.0,
            },
            vae: VaeConfig {
                in_channels: 3,
                block_out_channels: vec![128, 256, 512, 512],
                layers_per_block: 2,
                latent_channels: 4,
                norm_num_groups: 32,
                mid_block_add_attention: true,
                scaling_factor: 0.18215,
            },
            clip: ClipConfig {
                vocab_size: 49408,
                hidden_size: 768,
                intermediate_size: 3072,
                num_hidden_layers: 12,
                num_attention_heads: 12,
                max_position_embeddings: 77,
                layer_norm_eps: 1e-5,
                hidden_act: ClipActivation::QuickGelu,
            },
        }
    }

    /// The SD-1.x block structure (four levels, two layers per block, the same block types and
    /// tap positions) at small widths, with the full CLIP vocabulary so real token ids work.
    /// GroupNorm uses 8 groups here (SD: 32) so the first level can be 16 channels wide: the
    /// `tiny` profile trains on a laptop CPU in minutes.
    pub fn tiny() -> Self {
        Self {
            unet: UNetConfig {
                block_out_channels: vec![16, 32, 32, 32],
                attention_heads: vec![2; 4],
                cross_attention_dim: 32,
                norm_num_groups: 8,
                ..Self::sd15().unet
            },
            vae: VaeConfig {
                block_out_channels: vec![16, 32, 32, 32],
                norm_num_groups: 8,
                ..Self::sd15().vae
            },
            clip: ClipConfig {
                hidden_size: 32,
                intermediate_size: 64,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                ..Self::sd15().clip
            },
        }
    }

    /// A preset by name (`sd15` or `tiny`).
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "sd15" => Some(Self::sd15()),
            "tiny" => Some(Self::tiny()),
            _ => None,
        }
    }

    /// Checks that the three components fit together and that every width divides as the
    /// architecture needs; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.unet.validate().map_err(|e| e.within("unet"))?;
        self.vae.validate().map_err(|e| e.within("vae"))?;
        self.clip.validate().map_err(|e| e.within("clip"))?;
        ensure(
            self.unet.cross_attention_dim == self.clip.hidden_size,
            "unet.cross_attention_dim",
            || {
                format!(
                    "{} must equal clip.hidden_size ({})",
                    self.unet.cross_attention_dim, self.clip.hidden_size
                )
            },
        )
    }
}

impl UNetConfig {
    /// Number of resolution levels (down blocks).
    pub fn levels(&self) -> usize {
        self.block_out_channels.len()
    }

    /// Width of the timestep embedding MLP (4x the first block width).
    pub fn time_embed_dim(&self) -> usize {
        4 * self.block_out_channels[0]
    }

    /// Checks lengths and divisibility; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = self.levels();
        ensure(n >= 2, "block_out_channels", || {
            format!("has {n} levels, at least two are needed")
        })?;
        for (name, len) in [
            (
                "down_block_cross_attention",
                self.down_block_cross_attention.len(),
            ),
            ("attention_heads", self.attention_heads.len()),
        ] {
            ensure(len == n, name, || {
                format!("has {len} entries but block_out_channels has {n}")
            })?;
        }
        for (i, (&c, &h)) in self
            .block_out_channels
            .iter()
            .zip(&self.attention_heads)
            .enumerate()
        {
            ensure(
                h > 0 && c.is_multiple_of(h),
                &format!("attention_heads[{i}]"),
                || format!("{h} does not divide block_out_channels[{i}] ({c})"),
            )?;
        }
        groups_divide(&self.block_out_channels, self.norm_num_groups)?;
        ensure(self.layers_per_block > 0, "layers_per_block", || {
            "must be at least 1".into()
        })
    }
}

/// Every width of `channels` splits into `groups` GroupNorm groups.
fn groups_divide(channels: &[usize], groups: usize) -> Result<(), ConfigError> {
    for (i, &c) in channels.iter().enumerate() {
        ensure(
            groups > 0 && c.is_multiple_of(groups),
            &format!("block_out_channels[{i}]"),
            || format!("{c} is not a multiple of norm_num_groups ({groups})"),
        )?;
    }
    Ok(())
}

impl VaeConfig {
    /// Checks lengths and divisibility; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            !self.block_out_channels.is_empty(),
            "block_out_channels",
            || "is empty".into(),
        )?;
        groups_divide(&self.block_out_channels, self.norm_num_groups)
    }

    /// Spatial downsampling factor image -> latent.
    pub fn downsampling(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

impl ClipConfig {
    /// Checks divisibility; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            self.num_attention_heads > 0
                && self.hidden_size.is_multiple_of(self.num_attention_heads),
            "num_attention_heads",
            || {
                format!(
                    "{} does not divide hidden_size ({})",
                    self.num_attention_heads, self.hidden_size
                )
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_differ_only_in_widths() {
        let (big, tiny) = (SdConfig::sd15(), SdConfig::tiny());
        big.validate().unwrap();
        tiny.validate().unwrap();
        assert_eq!(
            big.unet.down_block_cross_attention,
            tiny.unet.down_block_cross_attention
        );
        assert_eq!(big.unet.layers_per_block, tiny.unet.layers_per_block);
        assert_eq!(big.vae.downsampling(), 8);
        assert_eq!(big.unet.time_embed_dim(), 1280);
    }

    #[test]
    fn mismatched_context_width_is_named() {
        let mut cfg = SdConfig::tiny();
        cfg.clip.hidden_size = 48;
        cfg.clip.num_attention_heads = 4;
        let err = cfg.validate().unwrap_err();
        assert_eq!(err.field, "unet.cross_attention_dim", "{err}");
    }

    #[test]
    fn nested_errors_name_the_full_field_path() {
        let mut cfg = SdConfig::tiny();
        cfg.unet.attention_heads[2] = 5;
        let err = cfg.validate().unwrap_err();
        assert_eq!(err.field, "unet.attention_heads[2]", "{err}");
        let mut cfg = SdConfig::tiny();
        cfg.vae.block_out_channels[1] = 20;
        assert_eq!(
            cfg.validate().unwrap_err().field,
            "vae.block_out_channels[1]"
        );
        let mut cfg = SdConfig::tiny();
        cfg.clip.num_attention_heads = 5;
        assert_eq!(
            cfg.validate().unwrap_err().field,
            "clip.num_attention_heads"
        );
    }
}
