//! Reading the component architectures from diffusers / transformers `config.json` files, so any
//! SD-1.x-shaped variant loads without code changes.
//!
//! Keys that would change the architecture into something diffris does not build (other block
//! types, class embeddings, several transformer layers per block, ...) are errors naming the key
//! and value; keys that do not change the computation in f32 (`sample_size`, `upcast_attention`,
//! `force_upcast`, version stamps) are ignored.

use std::path::Path;

use serde_json::{Map, Value};

use super::config::{ClipActivation, ClipConfig, UNetConfig, VaeConfig};
use crate::error::{ModelError, Result};

type Json = Map<String, Value>;

/// Reads and parses a JSON object file.
pub fn read_json_object(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ModelError::config(path, "expected a JSON object")),
        Err(e) => Err(ModelError::config(path, format!("invalid JSON: {e}"))),
    }
}

struct Reader<'a> {
    json: &'a Json,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn err(&self, message: String) -> ModelError {
        ModelError::config(self.path, message)
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_u64().map(|x| x as usize).ok_or_else(|| {
                self.err(format!("`{key}` must be a non-negative integer, got {v}"))
            }),
        }
    }

    fn usize_req(&self, key: &str) -> Result<usize> {
        self.get(key)
            .ok_or_else(|| self.err(format!("missing key `{key}`")))?;
        self.usize_or(key, 0)
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(format!("`{key}` must be a number, got {v}"))),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(format!("`{key}` must be true or false, got {v}"))),
        }
    }

    fn usize_list(&self, key: &str) -> Result<Vec<usize>> {
        let v = self
            .get(key)
            .ok_or_else(|| self.err(format!("missing key `{key}`")))?;
        v.as_array()
            .and_then(|a| a.iter().map(|x| x.as_u64().map(|x| x as usize)).collect())
            .ok_or_else(|| self.err(format!("`{key}` must be a list of integers, got {v}")))
    }

    fn str_list(&self, key: &str) -> Result<Vec<String>> {
        let v = self
            .get(key)
            .ok_or_else(|| self.err(format!("missing key `{key}`")))?;
        v.as_array()
            .and_then(|a| a.iter().map(|x| x.as_str().map(String::from)).collect())
            .ok_or_else(|| self.err(format!("`{key}` must be a list of strings, got {v}")))
    }

    /// An int for every level, or one int for all of them.
    fn per_level(&self, key: &str, levels: usize) -> Result<Option<Vec<usize>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(Some(vec![
                n.as_u64()
                    .ok_or_else(|| self.err(format!("`{key}` must be positive")))?
                    as usize;
                levels
            ])),
            Some(Value::Array(_)) => {
                let list = self.usize_list(key)?;
                if list.len() != levels {
                    return Err(self.err(format!(
                        "`{key}` has {} entries but there are {levels} blocks",
                        list.len()
                    )));
                }
                Ok(Some(list))
            }
            Some(v) => Err(self.err(format!("`{key}` must be an integer or a list, got {v}"))),
        }
    }

    /// Errors when `key` is present with a value other than the ones SD-1.x uses.
    fn require(&self, key: &str, allowed: &[Value]) -> Result<()> {
        match self.get(key) {
            Some(v) if !allowed.contains(v) => Err(self.err(format!(
                "`{key}` = {v} is not supported (diffris builds SD-1.x-shaped models; supported: {})",
                allowed
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            _ => Ok(()),
        }
    }
}

impl UNetConfig {
    /// Parses a diffusers `unet/config.json` (`UNet2DConditionModel`).
    pub fn from_diffusers_json(json: &Json, path: &Path) -> Result<Self> {
        let r = Reader { json, path };
        use serde_json::json;
        for (key, allowed) in [
            ("act_fn", vec![json!("silu")]),
            ("mid_block_type", vec![json!("UNetMidBlock2DCrossAttn")]),
            ("time_embedding_type", vec![json!("positional")]),
            ("resnet_time_scale_shift", vec![json!("default")]),
            ("only_cross_attention", vec![json!(false)]),
            ("dual_cross_attention", vec![json!(false)]),
            ("center_input_sample", vec![json!(false)]),
            ("conv_in_kernel", vec![json!(3)]),
            ("conv_out_kernel", vec![json!(3)]),
            ("downsample_padding", vec![json!(1)]),
            ("mid_block_scale_factor", vec![json!(1), json!(1.0)]),
            ("resnet_out_scale_factor", vec![json!(1), json!(1.0)]),
            ("resnet_skip_time_act", vec![json!(false)]),
            ("attention_type", vec![json!("default")]),
            ("transformer_layers_per_block", vec![json!(1)]),
            ("class_embed_type", vec![]),
            ("addition_embed_type", vec![]),
            ("num_class_embeds", vec![]),
            ("encoder_hid_dim", vec![]),
            ("time_cond_proj_dim", vec![]),
            ("timestep_post_act", vec![]),
            ("cross_attention_norm", vec![]),
            ("projection_class_embeddings_input_dim", vec![]),
            ("reverse_transformer_layers_per_block", vec![]),
        ] {
            r.require(key, &allowed)?;
        }
        let block_out_channels = r.usize_list("block_out_channels")?;
        let n = block_out_channels.len();
        let down = r.str_list("down_block_types")?;
        let up = r.str_list("up_block_types")?;
        if down.len() != n || up.len() != n {
            return Err(r.err(format!(
                "down_block_types ({}) and up_block_types ({}) must have one entry per \
                 block_out_channels entry ({n})",
                down.len(),
                up.len()
            )));
        }
        let mut cross = Vec::with_capacity(n);
        for (i, t) in down.iter().enumerate() {
            cross.push(match t.as_str() {
                "CrossAttnDownBlock2D" => true,
                "DownBlock2D" => false,
                other => {
                    return Err(r.err(format!(
                        "down_block_types[{i}] = {other:?} is not supported \
                         (CrossAttnDownBlock2D or DownBlock2D)"
                    )));
                }
            });
        }
        for (j, t) in up.iter().enumerate() {
            let want = if cross[n - 1 - j] {
                "CrossAttnUpBlock2D"
            } else {
                "UpBlock2D"
            };
            if t != want {
                return Err(r.err(format!(
                    "up_block_types[{j}] = {t:?} but down_block_types[{}] implies {want:?}",
                    n - 1 - j
                )));
            }
        }
        // diffusers' historical naming: `attention_head_dim` holds the number of heads when
        // `num_attention_heads` is absent (every SD-1.x and SD-2 config relies on this).
        let heads = match r.per_level("num_attention_heads", n)? {
            Some(h) => h,
            None => r
                .per_level("attention_head_dim", n)?
                .unwrap_or_else(|| vec![8; n]),
        };
        let cross_attention_dim = match r.get("cross_attention_dim") {
            Some(Value::Array(_)) => {
                return Err(r.err("a per-block `cross_attention_dim` list is not supported".into()));
            }
            _ => r.usize_or("cross_attention_dim", 1280)?,
        };
        let cfg = Self {
            in_channels: r.usize_or("in_channels", 4)?,
            out_channels: r.usize_or("out_channels", 4)?,
            block_out_channels,
            down_block_cross_attention: cross,
            layers_per_block: r.usize_or("layers_per_block", 2)?,
            attention_heads: heads,
            cross_attention_dim,
            norm_num_groups: r.usize_or("norm_num_groups", 32)?,
            norm_eps: r.f64_or("norm_eps", 1e-5)?,
            use_linear_projection: r.bool_or("use_linear_projection", false)?,
            flip_sin_to_cos: r.bool_or("flip_sin_to_cos", true)?,
            freq_shift: r.f64_or("freq_shift", 0.0)?,
        };
        cfg.validate().map_err(|m| r.err(m.to_string()))?;
        Ok(cfg)
    }
}

impl VaeConfig {
    /// Parses a diffusers `vae/config.json` (`AutoencoderKL`).
    pub fn from_diffusers_json(json: &Json, path: &Path) -> Result<Self> {
        let r = Reader { json, path };
        use serde_json::json;
        r.require("act_fn", &[json!("silu")])?;
        r.require("use_quant_conv", &[json!(true)])?;
        r.require("shift_factor", &[])?;
        let block_out_channels = r.usize_list("block_out_channels")?;
        if let Some(down) = r.get("down_block_types") {
            let types = r.str_list("down_block_types")?;
            if types.len() != block_out_channels.len()
                || types.iter().any(|t| t != "DownEncoderBlock2D")
            {
                return Err(r.err(format!(
                    "down_block_types = {down} is not supported (one DownEncoderBlock2D per block)"
                )));
            }
        }
        let cfg = Self {
            in_channels: r.usize_or("in_channels", 3)?,
            block_out_channels,
            layers_per_block: r.usize_or("layers_per_block", 2)?,
            latent_channels: r.usize_or("latent_channels", 4)?,
            norm_num_groups: r.usize_or("norm_num_groups", 32)?,
            mid_block_add_attention: r.bool_or("mid_block_add_attention", true)?,
            scaling_factor: r.f64_or("scaling_factor", 0.18215)?,
        };
        cfg.validate().map_err(|m| r.err(m.to_string()))?;
        Ok(cfg)
    }
}

impl ClipConfig {
    /// Parses a transformers `text_encoder/config.json` (`CLIPTextModel`).
    pub fn from_transformers_json(json: &Json, path: &Path) -> Result<Self> {
        let r = Reader { json, path };
        let hidden_act = match r.get("hidden_act").and_then(Value::as_str) {
            None | Some("quick_gelu") => ClipActivation::QuickGelu,
            Some("gelu") => ClipActivation::Gelu,
            Some(other) => {
                return Err(r.err(format!(
                    "`hidden_act` = {other:?} is not supported (quick_gelu or gelu)"
                )));
            }
        };
        let cfg = Self {
            vocab_size: r.usize_req("vocab_size")?,
            hidden_size: r.usize_req("hidden_size")?,
            intermediate_size: r.usize_req("intermediate_size")?,
            num_hidden_layers: r.usize_req("num_hidden_layers")?,
            num_attention_heads: r.usize_req("num_attention_heads")?,
            max_position_embeddings: r.usize_or("max_position_embeddings", 77)?,
            layer_norm_eps: r.f64_or("layer_norm_eps", 1e-5)?,
            hidden_act,
        };
        cfg.validate().map_err(|m| r.err(m.to_string()))?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sd::config::SdConfig;
    use serde_json::json;

    fn obj(v: Value) -> Json {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn sd15_unet_json() -> Json {
        obj(json!({
            "_class_name": "UNet2DConditionModel",
            "act_fn": "silu",
            "attention_head_dim": 8,
            "block_out_channels": [320, 640, 1280, 1280],
            "center_input_sample": false,
            "cross_attention_dim": 768,
            "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            "downsample_padding": 1,
            "flip_sin_to_cos": true,
            "freq_shift": 0,
            "in_channels": 4,
            "layers_per_block": 2,
            "mid_block_scale_factor": 1,
            "norm_eps": 1e-05,
            "norm_num_groups": 32,
            "out_channels": 4,
            "sample_size": 64,
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
        }))
    }

    #[test]
    fn sd15_unet_json_gives_the_preset() {
        let cfg = UNetConfig::from_diffusers_json(&sd15_unet_json(), Path::new("unet/config.json"))
            .unwrap();
        assert_eq!(cfg, SdConfig::sd15().unet);
    }

    #[test]
    fn unsupported_key_is_named() {
        let mut json = sd15_unet_json();
        json.insert("class_embed_type".into(), json!("timestep"));
        let err = UNetConfig::from_diffusers_json(&json, Path::new("u/config.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("u/config.json") && err.contains("class_embed_type"),
            "{err}"
        );
    }

    #[test]
    fn mismatched_up_blocks_are_named() {
        let mut json = sd15_unet_json();
        json.insert(
            "up_block_types".into(),
            json!([
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D"
            ]),
        );
        let err = UNetConfig::from_diffusers_json(&json, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("up_block_types[0]"), "{err}");
    }

    #[test]
    fn per_block_heads_are_read() {
        let mut json = sd15_unet_json();
        json.insert("attention_head_dim".into(), json!([5, 10, 20, 20]));
        let cfg = UNetConfig::from_diffusers_json(&json, Path::new("c.json")).unwrap();
        assert_eq!(cfg.attention_heads, vec![5, 10, 20, 20]);
    }
}
