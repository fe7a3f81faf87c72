"""Make the tiny Stable-Diffusion-architecture parity fixtures for the Rust model tests.

Writes `diffris-model/tests/fixtures/sd_tiny/`:
  diffusers/                      a diffusers pipeline folder (model_index.json, unet/, vae/,
                                  text_encoder/, scheduler/; no tokenizer/), weights stored F16;
                                  text_encoder saved by transformers 5.x (keys WITHOUT the
                                  `text_model.` prefix)
  text_encoder_prefixed_bf16.safetensors
                                  the same CLIP weights with the `text_model.` prefix every real
                                  SD-1.x checkpoint has, stored BF16, plus the int64
                                  `text_model.embeddings.position_ids` buffer
  ldm/model.safetensors           the original single-file LDM layout (F16 weights, float32
                                  schedule buffers, int64 position_ids, model_ema.* scalars)
  ldm/model.ckpt                  the same dict as a PyTorch zip pickle:
                                  {"state_dict": <float16 weights, float32 buffers>, "global_step": 0, "epoch": 0}
  reference.safetensors           seeded inputs and fp32 reference outputs (F32; ids I64)
  reference.json                  tensor names/shapes, configs, versions and seed, for humans

    HF_HUB_OFFLINE=1 ../venv-ref/bin/python tools/make_sd_fixtures.py

Needs ../venv-ref (or any venv built from tools/requirements.txt). Dev-only: CI never runs it;
the outputs are committed. CPU, fp32, one thread, seeded: two runs give byte-identical files.

Models: diffusers UNet2DConditionModel / AutoencoderKL and transformers CLIPTextModel with the
SD-1.x block types at small widths (see UNET_CONFIG, VAE_CONFIG, CLIP_CONFIG).

Weights: after the libraries' own init, every 1-D parameter is replaced (norm weights by
1 + 0.1*N(0,1), biases by 0.1*N(0,1)) so a port that forgets an affine or a bias fails; then
EVERY floating weight is rounded to bfloat16 precision (round to nearest even) and values with
|w| < 2**-14 are flushed to 0. Such values are exactly representable in f32, f16 AND bf16, so the
F16, BF16 and F32 files all hold the very same numbers and widening them in Rust is exact. All
reference outputs are computed in fp32 from these rounded weights.

Attention: the reference runs use diffusers' plain `AttnProcessor` math (explicit softmax); the
cross-attention probabilities are recorded by a processor that does exactly that computation
and is checked to give bit-identical outputs to the stock `AttnProcessor` (and to agree with
the default SDPA processor within 1e-5). The CLIP reference uses transformers' "eager"
attention (checked against "sdpa").

Size: about 40 MiB in all (5.0M parameters: UNet 3.22M, VAE 1.73M incl. decoder, CLIP 52k;
F16 diffusers 10 MB + F16 LDM 10 MB + F32 .ckpt 20 MB). Halving the widths to 32 everywhere
would give about 13 MiB; 32->64 is kept so that resnet shortcuts and two head widths are exercised.

Also checked here: the diffusers -> LDM mapping (tools/sd_ldm_mapping.py) round-trips exactly
through diffusers' own LDM -> diffusers converters.
"""

import copy
import hashlib
import json
import os
import pathlib
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import diffusers  # noqa: E402
import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.models.attention_processor import (  # noqa: E402
    Attention,
    AttnProcessor,
    AttnProcessor2_0,
)
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import sd_ldm_mapping as mapping  # noqa: E402

SEED = 0
ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "diffris-model" / "tests" / "fixtures" / "sd_tiny"

UNET_CONFIG = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    # 32 wide where the attention is (levels 0-2), 64 at the deepest level: the widening
    # exercises resnet shortcuts, and the mid block's 4 heads are 16 wide against 8 elsewhere.
    # Kept this small so the three committed copies stay a few MB.
    block_out_channels=(32, 32, 32, 64),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    layers_per_block=2,
    cross_attention_dim=32,
    # SD-1.x configs name the number of heads `attention_head_dim` (a historical misnomer that
    # diffusers keeps for compatibility): 4 heads, head width = channels / 4.
    attention_head_dim=4,
    norm_num_groups=32,
    # the rest are SD-1.5's values (equal to diffusers' defaults), spelled out
    act_fn="silu",
    center_input_sample=False,
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    mid_block_scale_factor=1,
    norm_eps=1e-5,
)
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(32, 32, 32, 64),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    act_fn="silu",
    sample_size=128,
)
CLIP_CONFIG = dict(
    vocab_size=1000,
    hidden_size=32,
    intermediate_size=64,
    projection_dim=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    pad_token_id=1,
    bos_token_id=998,
    eos_token_id=999,
)
BOS, EOS = 998, 999
FLUSH = 2.0 ** -14


# --------------------------------------------------------------------------------------------
# weights

def perturb_and_round(model, gen):
    """Replace 1-D params, then round every floating param/buffer to bf16-representable values."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
                if name.endswith("bias"):
                    p.copy_(0.1 * noise)
                else:
                    p.copy_(1.0 + 0.1 * noise)
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                r = t.to(torch.bfloat16).to(torch.float32)
                r[r.abs() < FLUSH] = 0.0
                t.copy_(r)
                assert torch.equal(t.to(torch.float16).to(torch.float32), t)
                assert torch.equal(t.to(torch.bfloat16).to(torch.float32), t)


def build_models():
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    torch.manual_seed(SEED + 1)
    vae = AutoencoderKL(**VAE_CONFIG)
    torch.manual_seed(SEED + 2)
    clip_cfg = CLIPTextConfig(**CLIP_CONFIG)
    clip_cfg._attn_implementation = "eager"
    clip = CLIPTextModel(clip_cfg)
    gen = torch.Generator().manual_seed(SEED + 3)
    for m in (unet, vae, clip):
        m.eval()
        m.requires_grad_(False)
        perturb_and_round(m, gen)
    return unet, vae, clip


# --------------------------------------------------------------------------------------------
# attention probabilities

class RecordingAttnProcessor:
    """Plain (non-fused) attention, as diffusers' AttnProcessor computes it, keeping the probs.

    Covers exactly what the SD-1.x UNet's `Attention` modules use (3-D input, no group/spatial
    norm, no residual inside, no mask); anything else is refused.
    """

    def __init__(self, store, name):
        self.store = store
        self.name = name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, **kwargs):
        assert hidden_states.ndim == 3 and attention_mask is None
        assert attn.spatial_norm is None and attn.group_norm is None
        assert not attn.residual_connection and attn.rescale_output_factor == 1.0
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))  # [B*heads, N, d]
        k = attn.head_to_batch_dim(attn.to_k(context))
        v = attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(q, k, None)  # softmax(q k^T * scale)
        out = attn.batch_to_head_dim(torch.bmm(probs, v))
        out = attn.to_out[1](attn.to_out[0](out))
        b = hidden_states.shape[0]
        self.store[self.name] = probs.reshape(b, attn.heads, *probs.shape[1:]).mean(dim=1)
        return out


def recorded_attn2_names(unet):
    names = []
    for name, mod in unet.named_modules():
        if isinstance(mod, Attention) and name.endswith("attn2") and not name.startswith(
                "mid_block"):
            names.append(name)
    return names


def set_processors(unet, store=None):
    """Stock AttnProcessor everywhere, or recording ones on down/up attn2 when store is given."""
    record = set(recorded_attn2_names(unet)) if store is not None else set()
    procs = {}
    for key in unet.attn_processors:
        mod_name = key[: -len(".processor")]
        procs[key] = RecordingAttnProcessor(store, mod_name) if mod_name in record else \
            AttnProcessor()
    unet.set_attn_processor(procs)


# --------------------------------------------------------------------------------------------
# reference computations

def clip_inputs(gen):
    ids = torch.full((2, 77), EOS, dtype=torch.int64)
    for row, n_tokens in ((0, 6), (1, 40)):
        body = torch.randint(0, BOS, (n_tokens,), generator=gen, dtype=torch.int64)
        ids[row, 0] = BOS
        ids[row, 1: 1 + n_tokens] = body
        ids[row, 1 + n_tokens] = EOS
    return ids


def run_clip(clip, ids):
    with torch.no_grad():
        out = clip(input_ids=ids).last_hidden_state
        sdpa = copy.deepcopy(clip)
        sdpa.set_attn_implementation("sdpa")
        assert clip.config._attn_implementation == "eager"
        alt = sdpa(input_ids=ids).last_hidden_state
    print(f"  clip eager vs sdpa: max |diff| {(out - alt).abs().max().item():.2e}")
    assert (out - alt).abs().max() < 1e-5, (out - alt).abs().max()
    return out


def run_vae(vae, image):
    vae.set_attn_processor(AttnProcessor())
    with torch.no_grad():
        moments = vae.quant_conv(vae.encoder(image))
        mean = moments[:, : VAE_CONFIG["latent_channels"]]
        lib = vae.encode(image).latent_dist.mean
        assert torch.equal(mean, lib)
        sdpa = copy.deepcopy(vae)
        sdpa.set_attn_processor(AttnProcessor2_0())  # SDPA
        alt = sdpa.encode(image).latent_dist.mean
    print(f"  vae AttnProcessor vs SDPA: max |diff| {(mean - alt).abs().max().item():.2e}")
    assert (mean - alt).abs().max() < 1e-5
    return mean


def run_unet(unet, sample, timestep, context):
    # taps (docs/DESIGN.md, the feature-tap row), finest level first
    taps = {}
    def keep(k, first=False):
        return lambda mod, args, out: taps.__setitem__(k, (out[0] if first else out).clone())

    hooks = [
        unet.up_blocks[3].register_forward_hook(keep(0)),
        unet.up_blocks[2].attentions[1].register_forward_hook(keep(1, first=True)),
        unet.up_blocks[1].attentions[1].register_forward_hook(keep(2, first=True)),
        unet.up_blocks[0].resnets[1].register_forward_hook(keep(3)),
        unet.conv_norm_out.register_forward_pre_hook(
            lambda mod, args: taps.__setitem__("norm_in", args[0].clone())),
    ]
    probs = {}
    with torch.no_grad():
        set_processors(unet, probs)
        out = unet(sample, timestep, encoder_hidden_states=context).sample
        for h in hooks:
            h.remove()
        set_processors(unet)
        stock = unet(sample, timestep, encoder_hidden_states=context).sample
        assert torch.equal(out, stock), (out - stock).abs().max()
        sdpa = copy.deepcopy(unet)
        sdpa.set_attn_processor(AttnProcessor2_0())  # SDPA
        alt = sdpa(sample, timestep, encoder_hidden_states=context).sample
        print(f"  unet AttnProcessor vs SDPA: max |diff| {(out - alt).abs().max().item():.2e}")
        assert (out - alt).abs().max() < 1e-5, (out - alt).abs().max()
        # conv_norm_out follows up_blocks.3 directly: tap 0 is its input
        assert torch.equal(taps.pop("norm_in"), taps[0])
    return out, taps, probs


def cross_attention_levels(probs, latent_hw):
    """Average recorded maps per resolution; [B, HW, 77] -> [B, 77, h, w]."""
    h0, w0 = latent_hw
    levels = {}
    for name, p in probs.items():
        hw = p.shape[1]
        k = 0
        while (h0 >> k) * (w0 >> k) != hw:
            k += 1
            assert k < 8, (name, hw)
        levels.setdefault(k, []).append(p)
    out = {}
    for k, maps in sorted(levels.items()):
        avg = torch.stack(maps).mean(dim=0)
        b, hw, t = avg.shape
        out[k] = avg.transpose(1, 2).reshape(b, t, h0 >> k, w0 >> k)
        print(f"  level {k}: {len(maps)} maps at {h0 >> k}x{w0 >> k}")
    return out


# --------------------------------------------------------------------------------------------
# files

def fp16_copy(model):
    return copy.deepcopy(model).to(torch.float16)


def save_diffusers(unet, vae, clip, folder):
    scheduler = PNDMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
        beta_schedule="scaled_linear", set_alpha_to_one=False, skip_prk_steps=True,
        steps_offset=1)
    pipe = StableDiffusionPipeline(
        vae=fp16_copy(vae), text_encoder=fp16_copy(clip), tokenizer=None, unet=fp16_copy(unet),
        scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)


def state_dicts(unet, vae, clip):
    u = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    v = {k: t.detach().clone() for k, t in vae.state_dict().items()}
    c = {k: t.detach().clone() for k, t in clip.state_dict().items()}
    return u, v, c


def build_ldm(u, v, c, unet, vae):
    ldm = {}
    ldm.update(mapping.unet_to_ldm(u, unet.config))
    ldm.update(mapping.vae_to_ldm(v, vae.config))
    ldm.update(mapping.clip_to_ldm(c))
    extra = mapping.ldm_extra_buffers(CLIP_CONFIG["max_position_embeddings"])
    assert not set(extra) & set(ldm)
    ldm.update(extra)
    return dict(sorted(ldm.items()))


def cast_floats(sd, dtype, skip=()):
    return {k: (t.to(dtype) if t.is_floating_point() and k not in skip else t).contiguous()
            for k, t in sd.items()}


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    unet, vae, clip = build_models()
    u, v, c = state_dicts(unet, vae, clip)
    n_params = {name: sum(t.numel() for t in sd.values() if t.is_floating_point())
                for name, sd in (("unet", u), ("vae", v), ("text_encoder", c))}
    print("parameters:", n_params)

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)

    # diffusers folder --------------------------------------------------------------------
    save_diffusers(unet, vae, clip, OUT / "diffusers")

    # prefixed BF16 text encoder ----------------------------------------------------------
    pos_ids = torch.arange(CLIP_CONFIG["max_position_embeddings"], dtype=torch.int64)[None]
    c_prefixed = {"text_model." + k: t for k, t in c.items()}
    bf16 = cast_floats(c_prefixed, torch.bfloat16)
    bf16["text_model.embeddings.position_ids"] = pos_ids
    save_file(dict(sorted(bf16.items())), OUT / "text_encoder_prefixed_bf16.safetensors",
              metadata={"format": "pt"})

    # LDM single file ----------------------------------------------------------------------
    ldm = build_ldm(u, v, c, unet, vae)
    want_clip = dict(c_prefixed)
    want_clip["text_model.embeddings.position_ids"] = pos_ids
    mapping.check_round_trip(ldm, u, unet.config, v, vae.config, want_clip)
    buffers = set(mapping.ldm_extra_buffers())
    (OUT / "ldm").mkdir()
    ldm16 = cast_floats(ldm, torch.float16, skip=buffers)
    save_file(ldm16, OUT / "ldm" / "model.safetensors", metadata={"format": "pt"})
    # F16 like the fp16 releases of the original checkpoints (keeps the fixture small).
    ckpt16 = cast_floats(ldm, torch.float16, skip=buffers)
    torch.save({"state_dict": ckpt16, "global_step": 0, "epoch": 0}, OUT / "ldm" / "model.ckpt")

    # the files must hold exactly the fp32 numbers used below
    check_files(u, v, c_prefixed, ldm)

    # reference computations ---------------------------------------------------------------
    gen = torch.Generator().manual_seed(SEED + 100)
    ref = {}
    ids = clip_inputs(gen)
    ref["clip.input_ids"] = ids
    ref["clip.last_hidden_state"] = run_clip(clip, ids)

    image = torch.rand((1, 3, 128, 64), generator=gen) * 2.0 - 1.0
    ref["vae.image"] = image
    ref["vae.posterior_mean"] = run_vae(vae, image)

    sample = torch.randn((2, 4, 16, 8), generator=gen)
    timestep = torch.tensor([1.0, 981.0])
    context = torch.randn((2, 77, UNET_CONFIG["cross_attention_dim"]), generator=gen)
    ref["unet.sample"] = sample
    ref["unet.timestep"] = timestep
    ref["unet.context"] = context
    out, taps, probs = run_unet(unet, sample, timestep, context)
    ref["unet.out"] = out
    for k in sorted(taps):
        ref[f"unet.tap.{k}"] = taps[k]
    for name in recorded_attn2_names(unet):
        ref[f"unet.attnprobs.{name}"] = probs[name]
    for k, lv in cross_attention_levels(probs, sample.shape[2:]).items():
        ref[f"unet.xattn.level{k}"] = lv
    ref = {k: t.detach().contiguous() for k, t in ref.items()}
    for k, t in ref.items():
        assert t.dtype in (torch.float32, torch.int64), (k, t.dtype)
        assert torch.isfinite(t.float()).all(), k

    meta = {
        "generator": "tools/make_sd_fixtures.py",
        "seed": str(SEED),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "attention": "diffusers AttnProcessor (explicit softmax); CLIP eager",
        "weights": "bf16-representable, |w|<2^-14 flushed to 0; exact in f16/bf16/f32",
    }
    # safetensors writes metadata from a hash map (key order varies run to run): keep ONE key
    save_file(ref, OUT / "reference.safetensors",
              metadata={"diffris_reference": json.dumps(meta, sort_keys=True)})

    files = sorted(p for p in OUT.rglob("*") if p.is_file() and p.name != "reference.json")
    doc = {
        **meta,
        "threads": 1,
        "unet_config": {k: list(x) if isinstance(x, tuple) else x for k, x in UNET_CONFIG.items()},
        "vae_config": {k: list(x) if isinstance(x, tuple) else x for k, x in VAE_CONFIG.items()},
        "text_encoder_config": CLIP_CONFIG,
        "parameters": n_params,
        "tensors": {k: {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape),
                        "max_abs": float(t.abs().max())} for k, t in ref.items()},
        "files": {str(p.relative_to(OUT)): {"bytes": p.stat().st_size, "sha256": sha256(p)}
                  for p in files},
        "tap_sources": {
            "unet.tap.0": "output of up_blocks.3 (input of conv_norm_out) = LDM output_blocks.11",
            "unet.tap.1": "up_blocks.2.attentions.1 output = LDM output_blocks.7",
            "unet.tap.2": "up_blocks.1.attentions.1 output = LDM output_blocks.4",
            "unet.tap.3": "up_blocks.0.resnets.1 output = LDM output_blocks.1",
        },
    }
    (OUT / "reference.json").write_text(json.dumps(doc, indent=1) + "\n")

    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            print(f"  {p.stat().st_size:>10}  {p.relative_to(OUT)}")
    print(f"total {total / 2**20:.2f} MiB in {OUT}")
    for k, t in ref.items():
        print(f"  {k:70s} {str(t.dtype):14s} {list(t.shape)}")


def check_files(u, v, c_prefixed, ldm):
    buffers = set(mapping.ldm_extra_buffers())
    from safetensors.torch import load_file

    d = OUT / "diffusers"
    for sd, path in ((u, d / "unet" / "diffusion_pytorch_model.safetensors"),
                     (v, d / "vae" / "diffusion_pytorch_model.safetensors")):
        got = load_file(path)
        assert set(got) == set(sd), path
        for k, t in sd.items():
            assert got[k].dtype == torch.float16 and torch.equal(got[k].float(), t), (path, k)
    got = load_file(d / "text_encoder" / "model.safetensors")
    assert set("text_model." + k for k in got) == set(c_prefixed), sorted(got)[:3]
    for k, t in got.items():
        assert t.dtype == torch.float16 and torch.equal(t.float(), c_prefixed["text_model." + k])
    got = load_file(OUT / "text_encoder_prefixed_bf16.safetensors")
    for k, t in c_prefixed.items():
        assert got[k].dtype == torch.bfloat16 and torch.equal(got[k].float(), t)
    got = load_file(OUT / "ldm" / "model.safetensors")
    assert set(got) == set(ldm)
    for k, t in ldm.items():
        assert torch.equal(got[k].to(t.dtype), t), k
    ck = torch.load(OUT / "ldm" / "model.ckpt", map_location="cpu", weights_only=True)
    assert set(ck) == {"state_dict", "global_step", "epoch"}
    for k, t in ldm.items():
        g = ck["state_dict"][k]
        want = t.dtype if (not t.is_floating_point() or k in buffers) else torch.float16
        assert g.dtype == want, (k, g.dtype)
        assert torch.equal(g.to(t.dtype), t), k
    # and diffusers / transformers load the folder back to the same numbers
    d_unet = UNet2DConditionModel.from_pretrained(d / "unet")
    d_vae = AutoencoderKL.from_pretrained(d / "vae")
    d_te = CLIPTextModel.from_pretrained(d / "text_encoder")
    for sd, m in ((u, d_unet), (v, d_vae)):
        for k, t in m.state_dict().items():
            assert torch.equal(t.float(), sd[k]), k
    for k, t in d_te.state_dict().items():
        assert torch.equal(t.float(), c_prefixed["text_model." + k]), k
    print("files hold exactly the reference weights")


if __name__ == "__main__":
    main()
