//! Loading the VAE decoder (`post_quant_conv` + `Decoder`) from the checkpoints that hold it
//! beside the encoder: a diffusers folder's `vae/` or a single-file LDM checkpoint (under
//! `first_stage_model.`). As strict as the rest: every parameter finds its key with its shape,
//! and every key of the decoder's own namespace is used (the encoder's, the UNet's and CLIP's
//! keys belong to the other loaders).

use std::collections::BTreeSet;
use std::path::Path;

use diffris_kernels::SdBackend;

use super::checkpoint::Checkpoint;
use super::keys::{Component, diffusers_keys, ldm_vae_decoder_key};
use super::{load_component, single_file_arch, weight_file};
use crate::error::{ModelError, Result};
use crate::sd::config::{SdConfig, VaeConfig};
use crate::sd::config_json::read_json_object;
use crate::sd::vae_decoder::VaeDecoder;

impl<B: SdBackend> VaeDecoder<B> {
    /// Loads the decoder of a diffusers folder (its architecture from `vae/config.json`) or of a
    /// single-file checkpoint (`arch` required).
    pub fn load(path: &Path, arch: Option<&SdConfig>, device: &B::Device) -> Result<Self> {
        if path.is_dir() {
            let vae = path.join("vae");
            let json_path = vae.join("config.json");
            let json = read_json_object(&json_path)?;
            let config = VaeConfig::from_diffusers_json(&json, &json_path)?;
            check_decoder_json(&json, &config, &json_path)?;
            let ckpt = Checkpoint::open(&weight_file(&vae, "diffusion_pytorch_model")?)?;
            Self::fill(config, &ckpt, "", |k| k.to_string(), device)
        } else {
            let arch = single_file_arch(path, arch)?;
            let blocks = arch.vae.block_out_channels.len();
            let ckpt = Checkpoint::open(path)?;
            Self::fill(
                arch.vae.clone(),
                &ckpt,
                Component::Vae.ldm_prefix(),
                |k| ldm_vae_decoder_key(k, blocks),
                device,
            )
        }
    }

    /// Builds the decoder of `config` and fills it from `ckpt`, whose keys are `key_of` each
    /// diffusers key; `prefix` is what precedes `decoder.` and `post_quant_conv.` there.
    fn fill(
        config: VaeConfig,
        ckpt: &Checkpoint,
        prefix: &str,
        key_of: impl Fn(&str) -> String,
        device: &B::Device,
    ) -> Result<Self> {
        config
            .validate()
            .map_err(|m| ModelError::checkpoint(&ckpt.path, m.to_string()))?;
        let mut decoder = config.init_decoder::<B>(device);
        let mut used = BTreeSet::new();
        load_component::<B, _>(
            &mut decoder,
            ckpt,
            |p| {
                diffusers_keys(Component::Vae, &p.path)
                    .iter()
                    .map(|k| key_of(k))
                    .collect()
            },
            &mut used,
        )?;
        // The stack's loader skips these keys on purpose (it builds no decoder); here every one
        // must be used.
        let own = [
            format!("{prefix}decoder."),
            format!("{prefix}post_quant_conv."),
        ];
        let unused: Vec<String> = ckpt
            .keys()
            .filter(|k| own.iter().any(|o| k.starts_with(o.as_str())) && !used.contains(*k))
            .cloned()
            .collect();
        if !unused.is_empty() {
            return Err(ModelError::UnusedKeys {
                path: ckpt.path.clone(),
                keys: unused,
            });
        }
        Ok(decoder)
    }
}

/// The decoder fields of a diffusers `vae/config.json` the encoder's reader leaves: an
/// `UpDecoderBlock2D` per block, a `post_quant_conv`, and an image of `in_channels` out.
fn check_decoder_json(
    json: &serde_json::Map<String, serde_json::Value>,
    config: &VaeConfig,
    path: &Path,
) -> Result<()> {
    let bad = |m: String| Err(ModelError::config(path, m));
    if json
        .get("use_post_quant_conv")
        .is_some_and(|v| v != &serde_json::json!(true))
    {
        return bad("use_post_quant_conv must be true (SD-1.x's decoder has one)".into());
    }
    if let Some(out) = json.get("out_channels")
        && out.as_u64() != Some(config.in_channels as u64)
    {
        return bad(format!(
            "out_channels = {out} differs from in_channels = {} (an SD-1.x VAE decodes to the \
             image it encodes)",
            config.in_channels
        ));
    }
    if let Some(up) = json.get("up_block_types") {
        let ok = up.as_array().is_some_and(|a| {
            a.len() == config.block_out_channels.len() && a.iter().all(|t| t == "UpDecoderBlock2D")
        });
        if !ok {
            return bad(format!(
                "up_block_types = {up} is not supported (one UpDecoderBlock2D per block)"
            ));
        }
    }
    Ok(())
}
