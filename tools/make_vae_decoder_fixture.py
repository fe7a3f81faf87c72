"""Reference outputs of the VAE decoder for diffris-model/tests/all/vae_decoder.rs.

Loads the committed tiny SD fixture's VAE with diffusers (the same weights the Rust test loads,
from the diffusers folder and from the single-file LDM checkpoint), decodes seeded latents and
writes them with the decoded images:

  diffris-model/tests/fixtures/sd_tiny/vae_decoder.safetensors
      latent  [2, 4, 4, 6]   seeded standard normal (non-square, so a transposed layout shows)
      image   [2, 3, 32, 48] AutoencoderKL.decode(latent).sample (post_quant_conv + Decoder),
                             float32, attention through diffusers' plain AttnProcessor

Run from the repository root in the reference venv (tools/requirements.txt):
  HF_HUB_OFFLINE=1 python tools/make_vae_decoder_fixture.py
"""
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "diffris-model/tests/fixtures/sd_tiny"


def main():
    vae = AutoencoderKL.from_pretrained(FIXTURE / "diffusers" / "vae", torch_dtype=torch.float32)
    vae.eval()
    generator = torch.Generator().manual_seed(20261207)
    latent = torch.randn(2, 4, 4, 6, generator=generator)
    with torch.no_grad():
        vae.set_attn_processor(AttnProcessor())
        image = vae.decode(latent).sample
        vae.set_attn_processor(AttnProcessor2_0())
        sdpa = vae.decode(latent).sample
    print(f"image {tuple(image.shape)}, range [{image.min():.3f}, {image.max():.3f}], "
          f"AttnProcessor vs SDPA max |diff| {(image - sdpa).abs().max().item():.2e}")
    out = FIXTURE / "vae_decoder.safetensors"
    save_file({"latent": latent.contiguous(), "image": image.contiguous()}, str(out),
              metadata={"source": "tools/make_vae_decoder_fixture.py", "seed": "20261207"})
    print(f"wrote {out.relative_to(ROOT)} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
