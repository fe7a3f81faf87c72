//! Checkpoint key rules: from a parameter path of our modules to the key a checkpoint stores it
//! under, in diffusers / transformers naming and in the original single-file LDM naming.
//!
//! | our module path (Burn)                       | diffusers / transformers key                 |
//! |----------------------------------------------|----------------------------------------------|
//! | `<norm>.gamma`, `<norm>.beta`                | `<norm>.weight`, `<norm>.bias`               |
//! | `*.to_out.{weight,bias}`                     | `*.to_out.0.{weight,bias}`                   |
//! | `*.ff.proj.*`, `*.ff.out.*`                  | `*.ff.net.0.proj.*`, `*.ff.net.2.*`          |
//! | VAE `mid_block.attentions.0.to_{q,k,v,out}`  | also the old `query`, `key`, `value`, `proj_attn` |
//! | CLIP `<path>`                                | `text_model.<path>` or `<path>`              |
//! | Linear `weight` `[in, out]`                  | `[out, in]` (transposed on load)             |
//!
//! | diffusers UNet key (L = layers_per_block, i = block, j = layer) | LDM key under `model.diffusion_model.` |
//! |---|---|
//! | `conv_in`                                   | `input_blocks.0.0` |
//! | `time_embedding.linear_{1,2}`               | `time_embed.{0,2}` |
//! | `down_blocks.i.resnets.j`                   | `input_blocks.{1+i(L+1)+j}.0` |
//! | `down_blocks.i.attentions.j`                | `input_blocks.{1+i(L+1)+j}.1` |
//! | `down_blocks.i.downsamplers.0.conv`         | `input_blocks.{(i+1)(L+1)}.0.op` |
//! | `mid_block.resnets.0`, `.attentions.0`, `.resnets.1` | `middle_block.0`, `.1`, `.2` |
//! | `up_blocks.i.resnets.j`                     | `output_blocks.{i(L+1)+j}.0` |
//! | `up_blocks.i.attentions.j`                  | `output_blocks.{i(L+1)+j}.1` |
//! | `up_blocks.i.upsamplers.0.conv`             | `output_blocks.{i(L+1)+L}.{1, or 2 with attention}.conv` |
//! | `conv_norm_out`, `conv_out`                 | `out.0`, `out.2` |
//! | resnet `norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut` | `in_layers.0, in_layers.2, emb_layers.1, out_layers.0, out_layers.3, skip_connection` |
//!
//! | diffusers VAE key                           | LDM key under `first_stage_model.` |
//! |---|---|
//! | `encoder.down_blocks.i.resnets.j`           | `encoder.down.i.block.j` (`conv_shortcut` -> `nin_shortcut`) |
//! | `encoder.down_blocks.i.downsamplers.0.conv` | `encoder.down.i.downsample.conv` |
//! | `encoder.mid_block.resnets.{0,1}`           | `encoder.mid.block_{1,2}` |
//! | `encoder.mid_block.attentions.0.{group_norm,to_q,to_k,to_v,to_out.0}` | `encoder.mid.attn_1.{norm,q,k,v,proj_out}` (1x1 convs) |
//! | `encoder.conv_norm_out`                     | `encoder.norm_out` |
//! | `encoder.conv_in`, `encoder.conv_out`, `quant_conv` | unchanged |
//!
//! CLIP keys live under `cond_stage_model.transformer.` with transformers' `text_model.` names.

use crate::sd::config::UNetConfig;

/// One of the three frozen components.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Unet,
    Vae,
    Clip,
}

impl Component {
    /// Prefix of the component in a single-file LDM checkpoint.
    pub fn ldm_prefix(self) -> &'static str {
        match self {
            Self::Unet => "model.diffusion_model.",
            Self::Vae => "first_stage_model.",
            Self::Clip => "cond_stage_model.transformer.",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Unet => "unet",
            Self::Vae => "vae",
            Self::Clip => "text_encoder",
        }
    }
}

/// Keys real checkpoints carry that are not weights of the modules diffris builds; they are
/// skipped on purpose (diffusion schedule buffers, EMA bookkeeping and the EMA set when the
/// trained UNet is read, see `weights::UnetWeights`; position-id buffers, and the VAE decoder,
/// which DiffRIS never runs).
pub fn is_ignored_key(key: &str) -> bool {
    const SCHEDULE: [&str; 14] = [
        "betas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
        "logvar",
        "lvlb_weights",
    ];
    SCHEDULE.contains(&key)
        || key.starts_with("model_ema.")
        || key.ends_with("position_ids")
        || key.starts_with("first_stage_model.decoder.")
        || key.starts_with("first_stage_model.post_quant_conv.")
        || key.starts_with("decoder.")
        || key.starts_with("post_quant_conv.")
}

/// The diffusers / transformers key(s) a parameter of our module may be stored under, in order
/// of preference.
pub fn diffusers_keys(component: Component, path: &str) -> Vec<String> {
    let mut key = path.to_string();
    for (ours, theirs) in [(".gamma", ".weight"), (".beta", ".bias")] {
        if let Some(stem) = key.strip_suffix(ours) {
            key = format!("{stem}{theirs}");
        }
    }
    let key = key
        .replace(".to_out.", ".to_out.0.")
        .replace(".ff.proj.", ".ff.net.0.proj.")
        .replace(".ff.out.", ".ff.net.2.");
    match component {
        Component::Clip => vec![format!("text_model.{key}"), key],
        Component::Vae if key.contains("mid_block.attentions.") => {
            let old = key
                .replace(".to_q.", ".query.")
                .replace(".to_k.", ".key.")
                .replace(".to_v.", ".value.")
                .replace(".to_out.0.", ".proj_attn.");
            if old == key {
                vec![key]
            } else {
                vec![key, old]
            }
        }
        _ => vec![key],
    }
}

/// The single-file LDM key of a diffusers key (prefix included).
pub fn ldm_key(component: Component, diffusers_key: &str, unet: &UNetConfig) -> String {
    let body = match component {
        Component::Unet => ldm_unet_key(diffusers_key, unet),
        Component::Vae => ldm_vae_key(diffusers_key),
        Component::Clip => {
            let k = diffusers_key
                .strip_prefix("text_model.")
                .unwrap_or(diffusers_key);
            format!("text_model.{k}")
        }
    };
    format!("{}{body}", component.ldm_prefix())
}

/// Splits `a.b.3.rest` style keys: the leading segments and the numeric indices.
fn split_first(key: &str, n: usize) -> Option<(Vec<&str>, &str)> {
    let mut parts = key.splitn(n + 1, '.');
    let head: Vec<&str> = (0..n).map_while(|_| parts.next()).collect();
    (head.len() == n).then_some(())?;
    Some((head, parts.next().unwrap_or("")))
}

fn ldm_resnet(rest: &str) -> String {
    let (name, tail) = rest.split_once('.').unwrap_or((rest, ""));
    let ldm = match name {
        "norm1" => "in_layers.0",
        "conv1" => "in_layers.2",
        "time_emb_proj" => "emb_layers.1",
        "norm2" => "out_layers.0",
        "conv2" => "out_layers.3",
        "conv_shortcut" => "skip_connection",
        other => other,
    };
    format!("{ldm}.{tail}")
}

fn ldm_unet_key(key: &str, cfg: &UNetConfig) -> String {
    let l = cfg.layers_per_block;
    let simple = [
        ("conv_in.", "input_blocks.0.0."),
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
    ];
    for (d, o) in simple {
        if let Some(rest) = key.strip_prefix(d) {
            return format!("{o}{rest}");
        }
    }
    if let Some(rest) = key.strip_prefix("mid_block.") {
        return match split_first(rest, 2) {
            Some((h, tail)) => match (h[0], h[1]) {
                ("resnets", "0") => format!("middle_block.0.{}", ldm_resnet(tail)),
                ("attentions", "0") => format!("middle_block.1.{tail}"),
                ("resnets", "1") => format!("middle_block.2.{}", ldm_resnet(tail)),
                _ => key.to_string(),
            },
            None => key.to_string(),
        };
    }
    let Some((h, tail)) = split_first(key, 4) else {
        return key.to_string();
    };
    let (Ok(i), Ok(j)) = (h[1].parse::<usize>(), h[3].parse::<usize>()) else {
        return key.to_string();
    };
    match (h[0], h[2]) {
        ("down_blocks", "resnets") => format!(
            "input_blocks.{}.0.{}",
            1 + i * (l + 1) + j,
            ldm_resnet(tail)
        ),
        ("down_blocks", "attentions") => format!("input_blocks.{}.1.{tail}", 1 + i * (l + 1) + j),
        ("down_blocks", "downsamplers") => {
            let tail = tail.strip_prefix("conv.").unwrap_or(tail);
            format!("input_blocks.{}.0.op.{tail}", (i + 1) * (l + 1))
        }
        ("up_blocks", "resnets") => {
            format!("output_blocks.{}.0.{}", i * (l + 1) + j, ldm_resnet(tail))
        }
        ("up_blocks", "attentions") => format!("output_blocks.{}.1.{tail}", i * (l + 1) + j),
        ("up_blocks", "upsamplers") => {
            let level = cfg.levels() - 1 - i;
            let slot = if cfg.down_block_cross_attention[level] {
                2
            } else {
                1
            };
            format!("output_blocks.{}.{slot}.{tail}", i * (l + 1) + l)
        }
        _ => key.to_string(),
    }
}

/// The single-file LDM key of a diffusers VAE decoder key (prefix included): LDM numbers the
/// decoder's `up` blocks from the output side, so diffusers' `up_blocks.i` of `blocks` is LDM's
/// `up.{blocks-1-i}`; its resnets are `block.j`, its upsampler `upsample`, and the mid block and
/// output norm are named as in the encoder.
pub fn ldm_vae_decoder_key(diffusers_key: &str, blocks: usize) -> String {
    let key = diffusers_key.replace(".conv_shortcut.", ".nin_shortcut.");
    let body = if let Some(rest) = key.strip_prefix("decoder.up_blocks.")
        && let Some((h, tail)) = split_first(rest, 3)
        && let Ok(i) = h[0].parse::<usize>()
        && i < blocks
    {
        let ldm = blocks - 1 - i;
        match h[1] {
            "resnets" => format!("decoder.up.{ldm}.block.{}.{tail}", h[2]),
            "upsamplers" => format!("decoder.up.{ldm}.upsample.{tail}"),
            _ => key.clone(),
        }
    } else if let Some(rest) = key.strip_prefix("decoder.") {
        // The mid block and the output norm are spelt as the encoder's.
        ldm_vae_key(&format!("encoder.{rest}")).replacen("encoder.", "decoder.", 1)
    } else {
        key
    };
    format!("{}{body}", Component::Vae.ldm_prefix())
}

fn ldm_vae_key(key: &str) -> String {
    let key = key.replace(".conv_shortcut.", ".nin_shortcut.");
    if let Some(rest) = key.strip_prefix("encoder.down_blocks.")
        && let Some((h, tail)) = split_first(rest, 3)
    {
        return match h[1] {
            "resnets" => format!("encoder.down.{}.block.{}.{tail}", h[0], h[2]),
            "downsamplers" => format!("encoder.down.{}.downsample.{tail}", h[0]),
            _ => key.clone(),
        };
    }
    if let Some(rest) = key.strip_prefix("encoder.mid_block.")
        && let Some((h, tail)) = split_first(rest, 2)
    {
        return match (h[0], h[1]) {
            ("resnets", "0") => format!("encoder.mid.block_1.{tail}"),
            ("resnets", "1") => format!("encoder.mid.block_2.{tail}"),
            ("attentions", "0") => {
                let (name, param) = tail.rsplit_once('.').unwrap_or((tail, ""));
                let ldm = match name {
                    "group_norm" => "norm",
                    "to_q" | "query" => "q",
                    "to_k" | "key" => "k",
                    "to_v" | "value" => "v",
                    "to_out.0" | "proj_attn" => "proj_out",
                    other => other,
                };
                format!("encoder.mid.attn_1.{ldm}.{param}")
            }
            _ => key.clone(),
        };
    }
    if let Some(rest) = key.strip_prefix("encoder.conv_norm_out.") {
        return format!("encoder.norm_out.{rest}");
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sd::config::SdConfig;

    #[test]
    fn ldm_names_of_the_vae_decoder() {
        for (diffusers, ldm) in [
            (
                "decoder.up_blocks.0.resnets.2.conv_shortcut.weight",
                "decoder.up.3.block.2.nin_shortcut.weight",
            ),
            (
                "decoder.up_blocks.2.upsamplers.0.conv.bias",
                "decoder.up.1.upsample.conv.bias",
            ),
            (
                "decoder.mid_block.attentions.0.to_out.0.weight",
                "decoder.mid.attn_1.proj_out.weight",
            ),
            (
                "decoder.mid_block.resnets.1.norm2.bias",
                "decoder.mid.block_2.norm2.bias",
            ),
            ("decoder.conv_norm_out.weight", "decoder.norm_out.weight"),
            ("decoder.conv_in.weight", "decoder.conv_in.weight"),
            ("post_quant_conv.weight", "post_quant_conv.weight"),
        ] {
            assert_eq!(
                ldm_vae_decoder_key(diffusers, 4),
                format!("first_stage_model.{ldm}"),
                "{diffusers}"
            );
        }
    }

    #[test]
    fn diffusers_names_of_our_paths() {
        assert_eq!(
            diffusers_keys(
                Component::Unet,
                "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_out.weight"
            ),
            vec!["down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_out.0.weight"]
        );
        assert_eq!(
            diffusers_keys(Component::Unet, "up_blocks.1.resnets.0.norm1.gamma"),
            vec!["up_blocks.1.resnets.0.norm1.weight"]
        );
        assert_eq!(
            diffusers_keys(
                Component::Unet,
                "mid_block.attentions.0.transformer_blocks.0.ff.proj.bias"
            ),
            vec!["mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj.bias"]
        );
        assert_eq!(
            diffusers_keys(Component::Clip, "final_layer_norm.beta"),
            vec!["text_model.final_layer_norm.bias", "final_layer_norm.bias"]
        );
        assert_eq!(
            diffusers_keys(
                Component::Vae,
                "encoder.mid_block.attentions.0.to_out.weight"
            ),
            vec![
                "encoder.mid_block.attentions.0.to_out.0.weight",
                "encoder.mid_block.attentions.0.proj_attn.weight"
            ]
        );
    }

    #[test]
    fn ldm_names_of_sd15_unet_keys() {
        let cfg = SdConfig::sd15().unet;
        let cases = [
            ("conv_in.weight", "input_blocks.0.0.weight"),
            ("time_embedding.linear_2.bias", "time_embed.2.bias"),
            (
                "down_blocks.0.resnets.1.norm1.weight",
                "input_blocks.2.0.in_layers.0.weight",
            ),
            (
                "down_blocks.1.resnets.0.conv_shortcut.weight",
                "input_blocks.4.0.skip_connection.weight",
            ),
            (
                "down_blocks.2.attentions.1.proj_in.weight",
                "input_blocks.8.1.proj_in.weight",
            ),
            (
                "down_blocks.2.downsamplers.0.conv.weight",
                "input_blocks.9.0.op.weight",
            ),
            (
                "down_blocks.3.resnets.1.time_emb_proj.weight",
                "input_blocks.11.0.emb_layers.1.weight",
            ),
            (
                "mid_block.resnets.1.conv2.bias",
                "middle_block.2.out_layers.3.bias",
            ),
            (
                "mid_block.attentions.0.norm.weight",
                "middle_block.1.norm.weight",
            ),
            (
                "up_blocks.0.resnets.2.conv1.weight",
                "output_blocks.2.0.in_layers.2.weight",
            ),
            (
                "up_blocks.0.upsamplers.0.conv.weight",
                "output_blocks.2.1.conv.weight",
            ),
            (
                "up_blocks.1.upsamplers.0.conv.bias",
                "output_blocks.5.2.conv.bias",
            ),
            (
                "up_blocks.3.attentions.2.transformer_blocks.0.attn1.to_q.weight",
                "output_blocks.11.1.transformer_blocks.0.attn1.to_q.weight",
            ),
            ("conv_norm_out.weight", "out.0.weight"),
        ];
        for (d, l) in cases {
            assert_eq!(
                ldm_key(Component::Unet, d, &cfg),
                format!("model.diffusion_model.{l}"),
                "{d}"
            );
        }
    }

    #[test]
    fn ldm_names_of_vae_and_clip_keys() {
        let cfg = SdConfig::sd15().unet;
        let cases = [
            (
                "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
                "encoder.down.1.block.0.nin_shortcut.weight",
            ),
            (
                "encoder.down_blocks.2.downsamplers.0.conv.bias",
                "encoder.down.2.downsample.conv.bias",
            ),
            (
                "encoder.mid_block.resnets.1.norm2.weight",
                "encoder.mid.block_2.norm2.weight",
            ),
            (
                "encoder.mid_block.attentions.0.to_out.0.weight",
                "encoder.mid.attn_1.proj_out.weight",
            ),
            (
                "encoder.mid_block.attentions.0.group_norm.bias",
                "encoder.mid.attn_1.norm.bias",
            ),
            ("encoder.conv_norm_out.weight", "encoder.norm_out.weight"),
            ("quant_conv.weight", "quant_conv.weight"),
        ];
        for (d, l) in cases {
            assert_eq!(
                ldm_key(Component::Vae, d, &cfg),
                format!("first_stage_model.{l}"),
                "{d}"
            );
        }
        assert_eq!(
            ldm_key(Component::Clip, "encoder.layers.0.mlp.fc1.weight", &cfg),
            "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight"
        );
    }

    #[test]
    fn non_weight_buffers_are_ignored_and_weights_are_not() {
        for k in [
            "betas",
            "alphas_cumprod",
            "model_ema.decay",
            "cond_stage_model.transformer.text_model.embeddings.position_ids",
            "first_stage_model.decoder.conv_in.weight",
        ] {
            assert!(is_ignored_key(k), "{k}");
        }
        for k in [
            "model.diffusion_model.out.0.weight",
            "first_stage_model.quant_conv.weight",
            "encoder.conv_in.weight",
        ] {
            assert!(!is_ignored_key(k), "{k}");
        }
    }
}
