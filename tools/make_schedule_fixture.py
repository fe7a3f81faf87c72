"""diffusers' numbers for SD's noise schedule, for `diffris-model/tests/all/schedule.rs`.

Dev-only (needs torch and diffusers at the pins of tools/requirements.txt). Builds the
schedulers of an SD-1.x `scheduler/scheduler_config.json` (scaled-linear betas from 0.00085 to
0.012 over 1,000 steps, epsilon prediction, `set_alpha_to_one=False`, `steps_offset=1`) and
writes to `diffris-model/tests/fixtures/schedule/ddpm.json`:

- `betas`, `alphas_cumprod`: `DDPMScheduler`'s f32 tensors;
- `add_noise`: a seeded latent `x0` and noise of shape [2, 4, 3, 3], two timesteps, and
  `DDPMScheduler.add_noise`'s output;
- `ddim`: `DDIMScheduler.set_timesteps(n)`'s timesteps for n = 10 and 50, and one
  `DDIMScheduler.step` (eta 0) from the first timestep of n = 10, given a seeded sample and noise
  prediction, and one from the last timestep (where the previous alpha_bar is alpha_bar_0).

All numbers are written as the f32 values' exact decimal expansions (Python floats).

    HF_HUB_OFFLINE=1 python tools/make_schedule_fixture.py
"""

import json
import pathlib

import diffusers
import torch
from diffusers import DDIMScheduler, DDPMScheduler

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "diffris-model" / "tests" / "fixtures" / "schedule" / "ddpm.json"

# The scheduler_config.json of runwayml/stable-diffusion-v1-5 (and every SD-1.x release).
CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)


def flat(t):
    return [float(v) for v in t.detach().float().reshape(-1).tolist()]


def main():
    torch.manual_seed(0)
    # from_config, as a pipeline loads scheduler_config.json: keys a class lacks are ignored.
    ddpm = DDPMScheduler.from_config(CONFIG)
    ddim = DDIMScheduler.from_config(CONFIG)
    shape = [2, 4, 3, 3]
    x0 = torch.randn(shape)
    noise = torch.randn(shape)
    timesteps = torch.tensor([10, 987])
    noisy = ddpm.add_noise(x0, noise, timesteps)

    steps = {}
    for n in (10, 50):
        ddim.set_timesteps(n)
        steps[str(n)] = [int(t) for t in ddim.timesteps]
    ddim.set_timesteps(10)
    sample = torch.randn(shape)
    eps = torch.randn(shape)
    first = int(ddim.timesteps[0])
    last = int(ddim.timesteps[-1])
    out_first = ddim.step(eps, first, sample, eta=0.0).prev_sample
    out_last = ddim.step(eps, last, sample, eta=0.0).prev_sample

    fixture = {
        "generator": f"diffusers {diffusers.__version__}, torch {torch.__version__}",
        "config": CONFIG,
        "betas": flat(ddpm.betas),
        "alphas_cumprod": flat(ddpm.alphas_cumprod),
        "add_noise": {
            "shape": shape,
            "x0": flat(x0),
            "noise": flat(noise),
            "timesteps": [int(t) for t in timesteps],
            "noisy": flat(noisy),
        },
        "ddim": {
            "timesteps": steps,
            "shape": shape,
            "sample": flat(sample),
            "eps": flat(eps),
            "inference_steps": 10,
            "from_first": {"t": first, "prev_sample": flat(out_first)},
            "from_last": {"t": last, "prev_sample": flat(out_last)},
        },
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
