//! Writing the three frozen components as a diffusers-style folder (`unet/`, `vae/`,
//! `text_encoder/`, each with `config.json` and F32 safetensors in diffusers / transformers
//! naming), readable by [`StableDiffusion::from_diffusers`]. The VAE folder holds the encoder and
//! `quant_conv`, and the decoder and `post_quant_conv` when one is given
//! ([`StableDiffusion::save_diffusers_with_decoder`]: a folder diffusers' `AutoencoderKL` and
//! [`VaeDecoder::load`] read whole).

use diffris_kernels::SdBackend;
use std::path::Path;

use burn::tensor::backend::Backend;
use burn_store::ModuleSnapshot;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::json;

use super::keys::{Component, diffusers_keys};
use crate::error::{ModelError, Result};
use crate::sd::config::{ClipActivation, ClipConfig, SdConfig, UNetConfig, VaeConfig};
use crate::sd::stack::StableDiffusion;
use crate::sd::vae_decoder::VaeDecoder;

/// A tensor of a safetensors file: key, shape, little-endian f32 bytes.
type Entry = (String, Vec<usize>, Vec<u8>);

fn component_bytes<B: Backend, M: ModuleSnapshot<B>>(
    module: &M,
    component: Component,
    file: &Path,
) -> Result<Vec<u8>> {
    serialize(component_entries::<B, M>(module, component, file)?, file)
}

/// The tensors of `module` under their `component` keys (Burn's `[in, out]` linear weights
/// transposed to the checkpoint's `[out, in]`).
fn component_entries<B: Backend, M: ModuleSnapshot<B>>(
    module: &M,
    component: Component,
    file: &Path,
) -> Result<Vec<Entry>> {
    let mut entries: Vec<Entry> = Vec::new();
    for snap in module.collect(None, None, true) {
        let path = snap.full_path();
        let key = diffusers_keys(component, &path)
            .into_iter()
            .next()
            .expect("every path has a key");
        let data = snap
            .to_data()
            .map_err(|e| ModelError::checkpoint(file, format!("reading `{path}`: {e:?}")))?
            .convert::<f32>();
        let mut shape = snap.shape.to_vec();
        let mut values: Vec<f32> = data.to_vec().expect("converted to f32");
        let linear = snap.module_type().as_deref() == Some("Struct:Linear");
        if linear && shape.len() == 2 && path.ends_with("weight") {
            // Burn's [in, out] -> the checkpoint's [out, in].
            let (d_in, d_out) = (shape[0], shape[1]);
            let mut t = vec![0f32; values.len()];
            for i in 0..d_in {
                for o in 0..d_out {
                    t[o * d_in + i] = values[i * d_out + o];
                }
            }
            values = t;
            shape = vec![d_out, d_in];
        }
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        entries.push((key, shape, bytes));
    }
    Ok(entries)
}

fn serialize(entries: Vec<Entry>, file: &Path) -> Result<Vec<u8>> {
    let views: Vec<(String, TensorView<'_>)> = entries
        .iter()
        .map(|(k, s, b)| {
            TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (k.clone(), v))
                .map_err(|e| ModelError::checkpoint(file, e.to_string()))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, None).map_err(|e| ModelError::checkpoint(file, e.to_string()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    }
    std::fs::write(path, bytes).map_err(|e| ModelError::io(path, e))
}

fn unet_json(c: &UNetConfig) -> serde_json::Value {
    let n = c.levels();
    json!({
        "_class_name": "UNet2DConditionModel",
        "in_channels": c.in_channels,
        "out_channels": c.out_channels,
        "block_out_channels": c.block_out_channels,
        "down_block_types": c.down_block_cross_attention.iter()
            .map(|&a| if a { "CrossAttnDownBlock2D" } else { "DownBlock2D" }).collect::<Vec<_>>(),
        "up_block_types": (0..n).map(|j| if c.down_block_cross_attention[n - 1 - j] {
            "CrossAttnUpBlock2D" } else { "UpBlock2D" }).collect::<Vec<_>>(),
        "layers_per_block": c.layers_per_block,
        "attention_head_dim": c.attention_heads,
        "cross_attention_dim": c.cross_attention_dim,
        "norm_num_groups": c.norm_num_groups,
        "norm_eps": c.norm_eps,
        "use_linear_projection": c.use_linear_projection,
        "flip_sin_to_cos": c.flip_sin_to_cos,
        "freq_shift": c.freq_shift,
        "act_fn": "silu",
    })
}

fn vae_json(c: &VaeConfig) -> serde_json::Value {
    json!({
        "_class_name": "AutoencoderKL",
        "in_channels": c.in_channels,
        "block_out_channels": c.block_out_channels,
        "down_block_types": vec!["DownEncoderBlock2D"; c.block_out_channels.len()],
        "layers_per_block": c.layers_per_block,
        "latent_channels": c.latent_channels,
        "norm_num_groups": c.norm_num_groups,
        "mid_block_add_attention": c.mid_block_add_attention,
        "scaling_factor": c.scaling_factor,
        "act_fn": "silu",
    })
}

fn clip_json(c: &ClipConfig) -> serde_json::Value {
    json!({
        "architectures": ["CLIPTextModel"],
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "max_position_embeddings": c.max_position_embeddings,
        "layer_norm_eps": c.layer_norm_eps,
        "hidden_act": match c.hidden_act {
            ClipActivation::QuickGelu => "quick_gelu",
            ClipActivation::Gelu => "gelu",
        },
    })
}

impl SdConfig {
    /// The `config.json` of each component folder of a diffusers layout of this architecture,
    /// as `(folder, config)`: what [`StableDiffusion::save_diffusers`] writes beside the weights.
    pub fn diffusers_configs(&self) -> [(&'static str, serde_json::Value); 3] {
        [
            ("unet", unet_json(&self.unet)),
            ("vae", vae_json(&self.vae)),
            ("text_encoder", clip_json(&self.clip)),
        ]
    }
}

impl<B: SdBackend> StableDiffusion<B> {
    /// Writes the components as a diffusers-style folder under `dir`.
    pub fn save_diffusers(&self, dir: &Path) -> Result<()> {
        self.save_folder(None, dir)
    }

    /// [`Self::save_diffusers`] with `decoder` written into the VAE folder beside the encoder
    /// (its architecture must be the encoder's).
    pub fn save_diffusers_with_decoder(&self, decoder: &VaeDecoder<B>, dir: &Path) -> Result<()> {
        if decoder.config() != self.vae.config() {
            return Err(ModelError::config(
                dir,
                "the VAE decoder is of another architecture than the encoder",
            ));
        }
        self.save_folder(Some(decoder), dir)
    }

    fn save_folder(&self, decoder: Option<&VaeDecoder<B>>, dir: &Path) -> Result<()> {
        let [(unet, unet_cfg), (vae, mut vae_cfg), (clip, clip_cfg)] =
            self.config().diffusers_configs();
        // In this order: the UNet, the VAE (encoder, then decoder), CLIP. Lazily initialised
        // weights draw from Burn's random stream as they are read, so the order fixes the
        // values of seeded random weights (`inputs::frozen::write_random`, whose digest is
        // pinned).
        let unet_bytes = component_bytes::<B, _>(&self.unet, Component::Unet, dir)?;
        let mut vae_entries = component_entries::<B, _>(&self.vae, Component::Vae, dir)?;
        if let Some(d) = decoder {
            vae_entries.extend(component_entries::<B, _>(d, Component::Vae, dir)?);
            let c = d.config();
            vae_cfg["up_block_types"] = json!(vec!["UpDecoderBlock2D"; c.block_out_channels.len()]);
            vae_cfg["out_channels"] = json!(c.in_channels);
            vae_cfg["use_post_quant_conv"] = json!(true);
        }
        let vae_bytes = serialize(vae_entries, dir)?;
        let clip_bytes = component_bytes::<B, _>(&self.text_encoder, Component::Clip, dir)?;
        let parts: [(&str, &str, serde_json::Value, Vec<u8>); 3] = [
            (
                unet,
                "diffusion_pytorch_model.safetensors",
                unet_cfg,
                unet_bytes,
            ),
            (
                vae,
                "diffusion_pytorch_model.safetensors",
                vae_cfg,
                vae_bytes,
            ),
            (clip, "model.safetensors", clip_cfg, clip_bytes),
        ];
        for (folder, file, config, bytes) in parts {
            let sub = dir.join(folder);
            let text = serde_json::to_string_pretty(&config).expect("serialisable");
            write(&sub.join("config.json"), text.as_bytes())?;
            write(&sub.join(file), &bytes)?;
        }
        Ok(())
    }
}
