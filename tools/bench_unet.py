"""PyTorch timing of the full-size SD-1.5 UNet, the anchor for the Burn benchmarks.

Random-init diffusers UNet2DConditionModel with SD-1.5's config (859.5M parameters), on the CPU
(default) or a CUDA GPU (--device cuda), fp32 or bf16 (--dtype), latent [N,4,64,64], context
[N,77,768] (N = --batch, default 1), timestep 1; or, with --arch tiny_profile, the tiny
profile's architecture at latent [N,32,16,16], context [N,77,32]. Three phases:
  forward   forward pass under torch.no_grad()
  fwdbwd    forward + backward to the context (every weight requires_grad=False,
            context.requires_grad=True), i.e. what DiffRIS training does through the frozen UNet
  train     forward, mean-squared error against a fixed random target, backward to every
            weight (requires_grad=True, gradients set to None before each run), i.e. what
            `diffris pretrain` and a trained UNet do (fp32; bench_unet --phase train)
Each phase: 1 warm-up, then --repeats timed runs; the median is reported, with the process's
peak RSS (resource.getrusage ru_maxrss) after the phase. On CUDA each run is timed by CUDA
events around it, and the GPU's figures are PyTorch's max_memory_allocated (tensors) and
max_memory_reserved (its caching pool, what Burn's cubecl pool reports as reserved) over the
timed runs, in MiB (device_mib is the reserved figure). With --phase both (default) forward
and fwdbwd run, each in its own child process so that its peak memory is its own.

    ../venv-ref/bin/python tools/bench_unet.py [--threads 2] [--repeats 3] [--json]
    ../venv-ref/bin/python tools/bench_unet.py --phase forward --json
    python3 tools/bench_unet.py --device cuda --dtype bf16 --batch 4 --phase fwdbwd --json

Needs ../venv-ref (or any venv built from tools/requirements.txt). Dev-only; takes about a
minute per phase on 2 threads. Machines here are noisy: compare against Burn in the same run.
--json prints one line {"forward_s":..,"fwd_bwd_s":..,"peak_rss_mib_forward":..,
"peak_rss_mib_fwd_bwd":..} (plus threads/repeats/torch).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,  # SD-1.x: this is the number of heads
    norm_num_groups=32,
    norm_eps=1e-5,
    flip_sin_to_cos=True,
    freq_shift=0,
    act_fn="silu",
)


# The tiny profile's architecture (diffris' `tiny_arch()`: what `diffris pretrain` trains by
# default), as its exported unet/config.json says; bench_unet --arch tiny_profile.
TINY_PROFILE_UNET = dict(
    SD15_UNET,
    sample_size=16,
    in_channels=32,
    out_channels=32,
    block_out_channels=(16, 32, 32, 32),
    cross_attention_dim=32,
    attention_head_dim=(1, 1, 1, 1),
    norm_num_groups=8,
)
ARCHS = {"sd15": SD15_UNET, "tiny_profile": TINY_PROFILE_UNET}


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_phase(phase, threads, repeats, device="cpu", dtype="fp32", batch=1, arch="sd15",
              latent=None):
    import torch
    from diffusers import UNet2DConditionModel

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    config = ARCHS[arch]
    unet = UNet2DConditionModel(**config).eval().to(device=device, dtype=dt)
    unet.requires_grad_(phase == "train")
    n = sum(p.numel() for p in unet.parameters())
    gen = torch.Generator().manual_seed(1)
    side = latent or config["sample_size"]
    shape = (batch, config["in_channels"], side, side)
    sample = torch.randn(shape, generator=gen).to(device=device, dtype=dt)
    context = torch.randn((batch, 77, config["cross_attention_dim"]), generator=gen).to(
        device=device, dtype=dt)
    timestep = torch.tensor([1.0], device=device)
    cuda = device.startswith("cuda")

    def forward():
        with torch.no_grad():
            return unet(sample, timestep, encoder_hidden_states=context).sample

    def fwd_bwd():
        ctx = context.clone().requires_grad_(True)
        out = unet(sample, timestep, encoder_hidden_states=ctx).sample
        out.square().mean().backward()
        assert ctx.grad is not None and torch.isfinite(ctx.grad).all()
        return ctx.grad

    target = torch.randn(shape, generator=gen).to(device=device, dtype=dt)

    def train():
        unet.zero_grad(set_to_none=True)
        out = unet(sample, timestep, encoder_hidden_states=context).sample
        (out - target).square().mean().backward()
        return [p.grad for p in unet.parameters()]

    fn = {"forward": forward, "fwdbwd": fwd_bwd, "train": train}[phase]
    fn()  # warm-up
    times = []
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    mib = 1024.0 * 1024.0
    res = {"phase": phase, "arch": arch, "latent": side, "device": device, "dtype": dtype,
           "batch": batch,
           "median_s": statistics.median(times), "times_s": times,
           "peak_rss_mib": peak_rss_mib(), "params": n, "threads": threads,
           "torch": torch.__version__,
           "allocated_mib": torch.cuda.max_memory_allocated() / mib if cuda else None,
           "device_mib": torch.cuda.max_memory_reserved() / mib if cuda else None}
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--phase", choices=("both", "forward", "fwdbwd", "train"), default="both")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--arch", choices=tuple(ARCHS), default="sd15")
    ap.add_argument("--latent", type=int, default=None,
                    help="latent side (default: the architecture's, 64 or 16)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    if args.phase != "both":
        res = run_phase(args.phase, args.threads, args.repeats, args.device, args.dtype,
                        args.batch, args.arch, args.latent)
        if args.json:
            print(json.dumps(res))
        else:
            print(f"{res['phase']}: median {res['median_s']:.2f} s over {args.repeats} "
                  f"({', '.join(f'{t:.2f}' for t in res['times_s'])}), peak RSS "
                  f"{res['peak_rss_mib']:.0f} MiB, {res['params']:,} params, "
                  f"{res['threads']} threads")
        return

    results = {}
    for phase in ("forward", "fwdbwd"):
        cmd = [sys.executable, os.path.abspath(__file__), "--phase", phase, "--json",
               "--threads", str(args.threads), "--repeats", str(args.repeats),
               "--device", args.device, "--dtype", args.dtype, "--batch", str(args.batch),
               "--arch", args.arch] + (["--latent", str(args.latent)] if args.latent else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[phase] = json.loads(out.strip().splitlines()[-1])
        if not args.json:
            r = results[phase]
            print(f"{phase:8s} median {r['median_s']:.2f} s  runs "
                  f"[{', '.join(f'{t:.2f}' for t in r['times_s'])}]  peak RSS "
                  f"{r['peak_rss_mib']:.0f} MiB", flush=True)
    summary = {
        "forward_s": round(results["forward"]["median_s"], 3),
        "fwd_bwd_s": round(results["fwdbwd"]["median_s"], 3),
        "peak_rss_mib_forward": round(results["forward"]["peak_rss_mib"], 1),
        "peak_rss_mib_fwd_bwd": round(results["fwdbwd"]["peak_rss_mib"], 1),
        "threads": args.threads,
        "repeats": args.repeats,
        "torch": results["forward"]["torch"],
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"SD-1.5 UNet ({results['forward']['params']:,} params), fp32 CPU, "
              f"{args.threads} threads: forward {summary['forward_s']} s, forward+backward "
              f"{summary['fwd_bwd_s']} s")


if __name__ == "__main__":
    main()
