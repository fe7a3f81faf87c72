"""diffusers -> original LDM ("single file") key mapping for Stable Diffusion 1.x.

Helper module imported by tools/make_sd_fixtures.py and tools/make_sd15_keys.py (not run on its
own). Dev-only; needs ../venv-ref (or any venv built from tools/requirements.txt).

diffusers ships only the LDM -> diffusers direction
(`diffusers.loaders.single_file_utils.convert_ldm_{unet,vae,clip}_checkpoint`); the reverse
direction below is written from the two layouts, and both callers check that feeding the result
back through diffusers' converters gives every diffusers tensor back exactly.

Rules (L = layers_per_block, N = number of VAE blocks):

UNet, prefix `model.diffusion_model.`
  time_embedding.linear_1 / linear_2       -> time_embed.0 / time_embed.2
  conv_in                                  -> input_blocks.0.0
  down_blocks.i.resnets.j                  -> input_blocks.{1 + i*(L+1) + j}.0
  down_blocks.i.attentions.j               -> input_blocks.{1 + i*(L+1) + j}.1
  down_blocks.i.downsamplers.0.conv        -> input_blocks.{(i+1)*(L+1)}.0.op
  mid_block.resnets.0 / attentions.0 / resnets.1 -> middle_block.0 / .1 / .2
  up_blocks.i.resnets.j                    -> output_blocks.{i*(L+1) + j}.0
  up_blocks.i.attentions.j                 -> output_blocks.{i*(L+1) + j}.1
  up_blocks.i.upsamplers.0.conv            -> output_blocks.{i*(L+1) + L}.{1 if block i has no
                                              attentions else 2}.conv
  conv_norm_out / conv_out                 -> out.0 / out.2
  inside a resnet: norm1 in_layers.0, conv1 in_layers.2, time_emb_proj emb_layers.1,
                   norm2 out_layers.0, conv2 out_layers.3, conv_shortcut skip_connection
  inside an attention (Transformer2DModel): names are identical in both layouts (norm, proj_in,
                   transformer_blocks.0.{norm1,attn1,norm2,attn2,norm3,ff.net.0.proj,ff.net.2},
                   proj_out); proj_in/proj_out are 1x1 convs [C,C,1,1] in both for SD-1.x.

VAE, prefix `first_stage_model.`
  {encoder,decoder}.conv_in / conv_out     -> same
  {encoder,decoder}.conv_norm_out          -> {encoder,decoder}.norm_out
  encoder.down_blocks.i.resnets.j          -> encoder.down.i.block.j
  encoder.down_blocks.i.downsamplers.0.conv-> encoder.down.i.downsample.conv
  decoder.up_blocks.i.resnets.j            -> decoder.up.{N-1-i}.block.j      (order reversed)
  decoder.up_blocks.i.upsamplers.0.conv    -> decoder.up.{N-1-i}.upsample.conv
  X.mid_block.resnets.0 / resnets.1        -> X.mid.block_1 / X.mid.block_2
  X.mid_block.attentions.0.group_norm      -> X.mid.attn_1.norm
  X.mid_block.attentions.0.to_q/to_k/to_v  -> X.mid.attn_1.q/k/v        weight [C,C] -> [C,C,1,1]
  X.mid_block.attentions.0.to_out.0        -> X.mid.attn_1.proj_out     weight [C,C] -> [C,C,1,1]
  inside a resnet: conv_shortcut -> nin_shortcut (norm1/conv1/norm2/conv2 unchanged)
  quant_conv / post_quant_conv             -> same

CLIP text encoder, prefix `cond_stage_model.transformer.`
  text_model.X -> cond_stage_model.transformer.text_model.X (transformers >= 5.6 saves
  CLIPTextModel without `text_model.`; add it first).

Non-weight entries real LDM files carry (float32 [1000] each unless noted):
  betas alphas_cumprod alphas_cumprod_prev sqrt_alphas_cumprod sqrt_one_minus_alphas_cumprod
  log_one_minus_alphas_cumprod sqrt_recip_alphas_cumprod sqrt_recipm1_alphas_cumprod
  posterior_variance posterior_log_variance_clipped posterior_mean_coef1 posterior_mean_coef2
  cond_stage_model.transformer.text_model.embeddings.position_ids  int64 [1,77]
  model_ema.decay float32 [], model_ema.num_updates int32 []
"""

import re

import numpy as np
import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTN = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def _resnet_rest(rest):
    """Rename the first component(s) of a UNet resnet sub-key (e.g. 'norm1.weight')."""
    for old, new in _UNET_RESNET.items():
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    raise KeyError(f"unknown UNet resnet parameter {rest}")


def unet_key_to_ldm(key, layers_per_block, up_block_has_attn):
    """One diffusers UNet key -> LDM key (without the `model.diffusion_model.` prefix)."""
    lpb = layers_per_block
    fixed = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
    }
    for old, new in fixed.items():
        if key.startswith(old):
            return new + key[len(old):]
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)$", key)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        n = 1 + i * (lpb + 1) + j
        if kind == "resnets":
            return f"input_blocks.{n}.0.{_resnet_rest(rest)}"
        return f"input_blocks.{n}.1.{rest}"
    m = re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)$", key)
    if m:
        return f"input_blocks.{(int(m[1]) + 1) * (lpb + 1)}.0.op.{m[2]}"
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)$", key)
    if m:
        kind, j, rest = m[1], int(m[2]), m[3]
        if kind == "resnets":
            return f"middle_block.{2 * j}.{_resnet_rest(rest)}"
        return f"middle_block.{2 * j + 1}.{rest}"
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)$", key)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        n = i * (lpb + 1) + j
        if kind == "resnets":
            return f"output_blocks.{n}.0.{_resnet_rest(rest)}"
        return f"output_blocks.{n}.1.{rest}"
    m = re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)$", key)
    if m:
        i = int(m[1])
        slot = 2 if up_block_has_attn[i] else 1
        return f"output_blocks.{i * (lpb + 1) + lpb}.{slot}.conv.{m[2]}"
    raise KeyError(f"unmapped diffusers UNet key {key}")


def vae_key_to_ldm(key, num_blocks):
    """One diffusers VAE key -> (LDM key without `first_stage_model.`, is_attention_matrix)."""
    for part in ("encoder", "decoder"):
        for old, new in (("conv_norm_out.", "norm_out."), ("conv_in.", "conv_in."),
                         ("conv_out.", "conv_out.")):
            if key.startswith(f"{part}.{old}"):
                return f"{part}.{new}{key[len(part) + 1 + len(old):]}", False
    if key.startswith("quant_conv.") or key.startswith("post_quant_conv."):
        return key, False

    def resnet(rest):
        return rest.replace("conv_shortcut.", "nin_shortcut.", 1) if rest.startswith(
            "conv_shortcut.") else rest

    m = re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$", key)
    if m:
        return f"encoder.down.{m[1]}.block.{m[2]}.{resnet(m[3])}", False
    m = re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)$", key)
    if m:
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}", False
    m = re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$", key)
    if m:
        return f"decoder.up.{num_blocks - 1 - int(m[1])}.block.{m[2]}.{resnet(m[3])}", False
    m = re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)$", key)
    if m:
        return f"decoder.up.{num_blocks - 1 - int(m[1])}.upsample.conv.{m[2]}", False
    m = re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)$", key)
    if m:
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{resnet(m[3])}", False
    m = re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)$", key)
    if m and m[2] in _VAE_ATTN:
        is_matrix = m[2] != "group_norm" and m[3] == "weight"
        return f"{m[1]}.mid.attn_1.{_VAE_ATTN[m[2]]}.{m[3]}", is_matrix
    raise KeyError(f"unmapped diffusers VAE key {key}")


def unet_to_ldm(unet_sd, unet_config):
    lpb = unet_config["layers_per_block"]
    has_attn = [t.startswith("CrossAttn") for t in unet_config["up_block_types"]]
    out = {}
    for k, v in unet_sd.items():
        out[UNET_PREFIX + unet_key_to_ldm(k, lpb, has_attn)] = v
    return out


def vae_to_ldm(vae_sd, vae_config):
    n = len(vae_config["down_block_types"])
    assert len(vae_config["up_block_types"]) == n
    out = {}
    for k, v in vae_sd.items():
        nk, is_matrix = vae_key_to_ldm(k, n)
        if is_matrix:
            assert v.ndim == 2, (k, v.shape)
            v = v.reshape(*v.shape, 1, 1)
        out[VAE_PREFIX + nk] = v
    return out


def clip_to_ldm(clip_sd):
    """transformers CLIPTextModel state dict (with or without `text_model.`) -> LDM keys."""
    out = {}
    for k, v in clip_sd.items():
        if not k.startswith("text_model."):
            k = "text_model." + k
        out[CLIP_PREFIX + k] = v
    return out


def ldm_schedule_buffers(n=1000, linear_start=0.00085, linear_end=0.012):
    """The DDPM schedule buffers an SD-1.x LDM checkpoint stores, float32 [n] each.

    SD's "linear" schedule is linear in sqrt(beta) (diffusers calls it scaled_linear); all the
    derived quantities are computed in float64 and stored as float32, with v_posterior = 0.
    """
    betas = np.linspace(linear_start ** 0.5, linear_end ** 0.5, n, dtype=np.float64) ** 2
    alphas = 1.0 - betas
    ac = np.cumprod(alphas)
    ac_prev = np.concatenate([[1.0], ac[:-1]])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    vals = {
        "betas": betas,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": np.sqrt(ac),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "log_one_minus_alphas_cumprod": np.log(1.0 - ac),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1.0),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
    }
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in vals.items()}


def ldm_extra_buffers(max_positions=77):
    """Every non-weight entry of an SD-1.x single-file checkpoint, with real dtypes/shapes."""
    extra = ldm_schedule_buffers()
    extra[CLIP_PREFIX + "text_model.embeddings.position_ids"] = torch.arange(
        max_positions, dtype=torch.int64).unsqueeze(0)
    extra["model_ema.decay"] = torch.tensor(0.9999, dtype=torch.float32)
    extra["model_ema.num_updates"] = torch.tensor(0, dtype=torch.int32)
    return extra


def check_round_trip(ldm, unet_sd, unet_config, vae_sd, vae_config, clip_sd_prefixed,
                     compare_values=True):
    """Run diffusers' own LDM -> diffusers converters on `ldm` and demand the original tensors."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    for name, conv, want in (
        ("unet", lambda: convert_ldm_unet_checkpoint(dict(ldm), dict(unet_config)), unet_sd),
        ("vae", lambda: convert_ldm_vae_checkpoint(dict(ldm), dict(vae_config)), vae_sd),
        ("clip", lambda: convert_ldm_clip_checkpoint(dict(ldm)), clip_sd_prefixed),
    ):
        got = conv()
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        assert not missing and not extra, (name, missing[:5], extra[:5])
        for k, v in want.items():
            g = got[k]
            assert g is not None, (name, k)
            assert tuple(g.shape) == tuple(v.shape) and g.dtype == v.dtype, (
                name, k, g.shape, v.shape, g.dtype, v.dtype)
            if compare_values:
                assert torch.equal(g, v), (name, k)
        print(f"round trip {name}: {len(want)} tensors identical"
              + ("" if compare_values else " (shapes/dtypes)"))
