"""List every tensor name, dtype and shape of the full-size SD-1.5 checkpoints (no weights).

Writes `diffris-model/tests/fixtures/sd15_keys/`:
  unet_config.json, vae_config.json, text_encoder_config.json
      the config.json files of the SD-1.5 diffusers repository (unet/, vae/, text_encoder/)
  diffusers_unet.txt, diffusers_vae.txt, diffusers_text_encoder.txt
      the tensors of a diffusers SD-1.5 folder as diffusers 0.42 / transformers 5 name them;
      the text encoder WITH the `text_model.` prefix and the int64 `position_ids` buffer, as the
      SD-1.5 repository's text_encoder/model.safetensors has them
  ldm.txt
      the single-file LDM layout of `v1-5-pruned-emaonly.safetensors` (weights F32), built with
      the diffusers -> LDM mapping in tools/sd_ldm_mapping.py, plus the non-weight entries
      (schedule buffers, position_ids, model_ema.decay / model_ema.num_updates) and the VAE decoder
One line per tensor, sorted by key: `key<TAB>dtype<TAB>d0,d1,...` (dtype in safetensors
spelling: F32, I64, I32; a scalar has an empty shape field).

    HF_HUB_OFFLINE=1 ../venv-ref/bin/python tools/make_sd15_keys.py

Needs ../venv-ref (or any venv built from tools/requirements.txt). Dev-only; deterministic.
The models are built on torch's meta device, so nothing of their 4 GB is allocated. The script
checks that diffusers' own LDM -> diffusers converters map the LDM key set exactly onto the
diffusers key sets with equal shapes.

About the configs: they are the values of the SD-1.5 repository's files (written in the
diffusers 0.6 / transformers 4.22 era). Notably `attention_head_dim: 8` there means 8 HEADS
(head width 40/80/160), the VAE config has no `scaling_factor` key (diffusers' default 0.18215
applies), and the text encoder config carries the legacy token ids bos 0 / eos 2 / pad 1 (the
tokenizer's real ids are 49406 / 49407).
"""

import json
import os
import pathlib
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import sd_ldm_mapping as mapping  # noqa: E402

OUT = (pathlib.Path(__file__).resolve().parent.parent
       / "diffris-model" / "tests" / "fixtures" / "sd15_keys")

UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.6.0",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                         "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                       "CrossAttnUpBlock2D"],
}
VAE_CONFIG = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.6.0",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
TEXT_ENCODER_CONFIG = {
    "_name_or_path": "openai/clip-vit-large-patch14",
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "torch_dtype": "float32",
    "transformers_version": "4.22.0.dev0",
    "vocab_size": 49408,
}

DTYPE = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
         torch.int64: "I64", torch.int32: "I32"}


def model_kwargs(cfg):
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items()
            if not k.startswith("_")}


def build_meta():
    with torch.device("meta"):
        unet = UNet2DConditionModel(**model_kwargs(UNET_CONFIG))
        vae = AutoencoderKL(**model_kwargs(VAE_CONFIG))
        te_kwargs = {k: v for k, v in TEXT_ENCODER_CONFIG.items()
                     if k not in ("_name_or_path", "architectures", "torch_dtype",
                                  "transformers_version", "model_type")}
        te = CLIPTextModel(CLIPTextConfig(**te_kwargs))
    return unet, vae, te


def write_list(path, sd):
    lines = []
    for k in sorted(sd):
        t = sd[k]
        lines.append(f"{k}\t{DTYPE[t.dtype]}\t{','.join(str(d) for d in t.shape)}")
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def n_params(sd):
    return sum(t.numel() for t in sd.values() if t.is_floating_point())


def main():
    unet, vae, te = build_meta()
    u = dict(unet.state_dict())
    v = dict(vae.state_dict())
    c = {"text_model." + k: t for k, t in te.state_dict().items()}
    c["text_model.embeddings.position_ids"] = torch.empty(
        (1, TEXT_ENCODER_CONFIG["max_position_embeddings"]), dtype=torch.int64, device="meta")
    for sd in (u, v, c):
        assert all(t.device.type == "meta" for t in sd.values())
    print(f"parameters: unet {n_params(u):,} vae {n_params(v):,} text encoder {n_params(c):,}")
    assert n_params(u) == 859_520_964, n_params(u)
    assert n_params(v) == 83_653_863, n_params(v)
    assert n_params(c) == 123_060_480, n_params(c)

    ldm = {}
    ldm.update(mapping.unet_to_ldm(u, unet.config))
    ldm.update(mapping.vae_to_ldm(v, vae.config))
    ldm.update(mapping.clip_to_ldm(c))
    extra = {k: t.to("meta") for k, t in mapping.ldm_extra_buffers(77).items()}
    for k, t in extra.items():
        if k in ldm:  # position_ids is already there from the text encoder
            assert ldm[k].dtype == t.dtype and ldm[k].shape == t.shape, k
        ldm[k] = t
    mapping.check_round_trip(ldm, u, unet.config, v, vae.config, c, compare_values=False)

    OUT.mkdir(parents=True, exist_ok=True)
    for name, cfg in (("unet_config.json", UNET_CONFIG), ("vae_config.json", VAE_CONFIG),
                      ("text_encoder_config.json", TEXT_ENCODER_CONFIG)):
        (OUT / name).write_text(json.dumps(cfg, indent=2) + "\n")
    counts = {
        "diffusers_unet.txt": write_list(OUT / "diffusers_unet.txt", u),
        "diffusers_vae.txt": write_list(OUT / "diffusers_vae.txt", v),
        "diffusers_text_encoder.txt": write_list(OUT / "diffusers_text_encoder.txt", c),
        "ldm.txt": write_list(OUT / "ldm.txt", ldm),
    }
    for name, n in counts.items():
        print(f"  {name}: {n} tensors")


if __name__ == "__main__":
    main()
