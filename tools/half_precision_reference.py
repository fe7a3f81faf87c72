"""How far PyTorch's own half-precision runs of the tiny SD fixture land from its f32 outputs.

Dev-only (needs torch, diffusers, transformers). Loads `diffris-model/tests/fixtures/sd_tiny`
(the diffusers folders and the reference inputs of `reference.safetensors`), runs the CLIP text
encoder, the VAE encoder and the UNet with their weights and inputs cast to float16 and to
bfloat16 on the CPU, and writes, per output tensor, `max |half - f32| / max(1, max |f32|)` to
`tests/fixtures/sd_tiny/half_precision.json`. `tests/all/half_precision.rs` holds diffris' half
precision to a small multiple of these errors. Also records the relative error of the gradient
of `sum(sin(0.37 i) * out_i)` over the noise prediction of the reference inputs, with respect
to the context, `max |half - f32| / max |f32|`.

    python tools/half_precision_reference.py
"""

import json
import pathlib

import diffusers
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import load_file
from transformers import CLIPTextModel

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIX = ROOT / "diffris-model" / "tests" / "fixtures" / "sd_tiny"


def rel(got, want):
    got, want = got.float(), want.float()
    return ((got - want).abs().max() / want.abs().max().clamp(min=1.0)).item()


def taps_of(unet, sample, timestep, context):
    taps = {}

    def keep(k, first=False):
        return lambda mod, args, out: taps.__setitem__(k, (out[0] if first else out).clone())

    hooks = [
        unet.up_blocks[3].register_forward_hook(keep(0)),
        unet.up_blocks[2].attentions[1].register_forward_hook(keep(1, first=True)),
        unet.up_blocks[1].attentions[1].register_forward_hook(keep(2, first=True)),
        unet.up_blocks[0].resnets[1].register_forward_hook(keep(3)),
    ]
    out = unet(sample, timestep, encoder_hidden_states=context).sample
    for h in hooks:
        h.remove()
    return out, taps


def outputs(dtype, ref):
    clip = CLIPTextModel.from_pretrained(FIX / "diffusers" / "text_encoder").to(dtype).eval()
    vae = AutoencoderKL.from_pretrained(FIX / "diffusers" / "vae").to(dtype).eval()
    unet = UNet2DConditionModel.from_pretrained(FIX / "diffusers" / "unet").to(dtype).eval()
    got = {}
    with torch.no_grad():
        got["clip.last_hidden_state"] = clip(ref["clip.input_ids"]).last_hidden_state
        got["vae.posterior_mean"] = vae.encode(ref["vae.image"].to(dtype)).latent_dist.mean
        out, taps = taps_of(
            unet,
            ref["unet.sample"].to(dtype),
            ref["unet.timestep"],
            ref["unet.context"].to(dtype),
        )
    got["unet.out"] = out
    for k, t in taps.items():
        got[f"unet.tap.{k}"] = t
    return got, unet


def context_gradient(unet, dtype, ref, weights):
    for p in unet.parameters():
        p.requires_grad_(False)
    ctx = ref["unet.context"].clone().requires_grad_(True)
    out = unet(ref["unet.sample"].to(dtype), ref["unet.timestep"], encoder_hidden_states=ctx.to(dtype))
    (out.sample.float() * weights).sum().backward()
    return ctx.grad


def main():
    ref = load_file(FIX / "reference.safetensors")
    base, unet32 = outputs(torch.float32, ref)
    # f32 through this script must be the committed reference (same models, same inputs).
    for k, t in base.items():
        assert rel(t, ref[k]) < 1e-5, (k, rel(t, ref[k]))
    # Deterministic weights both sides can compute: sin(0.37 i) over the flattened output.
    n = ref["unet.out"].numel()
    weights = torch.sin(0.37 * torch.arange(n, dtype=torch.float64)).float().reshape(ref["unet.out"].shape)
    grad32 = context_gradient(unet32, torch.float32, ref, weights)
    report = {
        "generator": "tools/half_precision_reference.py",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "measure": "max |half - f32| / max(1, max |f32|) per tensor, PyTorch CPU",
    }
    for name, dtype in [("f16", torch.float16), ("bf16", torch.bfloat16)]:
        got, unet = outputs(dtype, ref)
        errs = {k: rel(got[k], base[k]) for k in sorted(got)}
        grad = context_gradient(unet, dtype, ref, weights)
        errs["unet.context_gradient"] = ((grad - grad32).abs().max() / grad32.abs().max()).item()
        report[name] = errs
        print(name, json.dumps(errs, indent=1))
    (FIX / "half_precision.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
