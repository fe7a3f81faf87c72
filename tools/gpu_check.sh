#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, prepared so that a session lent one (a few minutes of
# device time, one command of at most 10 minutes) spends them running, not building. In order:
#
#   1. `diffris info` (the kernels: cuda with autotune and fusion) and `diffris doctor`: every
#      decoder's tiny training step on CUDA against the CPU backend from the same weights and
#      batch, then `doctor --precision bf16` (the bf16 step against CUDA's own f32 step);
#   2. `bench_unet` on CUDA, the full-size SD-1.5 UNet: forward+backward (`fwdbwd`) and one whole
#      DiffRIS training step (`step`) at each batch of BATCHES (1 2 4), in f32 and bf16, each
#      with its steady-state time (the median after a warm-up, so without kernel compilation and
#      autotuning) and the device pool's reservation (`device_mib`, not host RSS);
#   3. the same UNet phase in PyTorch on the same GPU (`tools/bench_unet.py --device cuda`, CUDA
#      events, max_memory_reserved), diffusers carried as a wheel in build/whl, and the ratios
#      diffris / PyTorch of time and memory, one line each;
#   4. one optimizer step of the paper profile (random SD-1.5, a 512-pixel SynthRS of 32
#      samples, batch 32) at the micro-batch the memory plan picks (`--micro-batch auto`): its
#      `--dry-run` plan, then the run, whose heartbeat lines separate encoding, training and
#      evaluation (the steady-state step time is step 2's), with the GPU's memory in use sampled
#      every half second by nvidia-smi;
#   5. with two or more GPUs: one tiny epoch of `cp_adapter/full` on cuda:0,cuda:1 with the
#      ordered loop and with Burn's DDP, same seed (their metrics should agree within rounding).
#
# Here (no GPU and no CUDA toolkit needed; a cold build takes about 10 minutes per binary set):
#   tools/gpu_check.sh build      # build/diffris-cuda.gz, build/bench_unet-cuda.gz,
#                                 # build/diffris-cuda-ddp.gz, build/whl/*.whl
# On the device machine, from a checkout of the repository holding build/ (the device tool's
# `run` with carry ["build"]; $OUT comes back):
#   bash tools/gpu_check.sh run   # figures under $OUT (default ./gpu-check-out)
#
# The steps share one deadline (BUDGET seconds, default 540): each runs with the time left, and
# steps with too little left are skipped. `summary.txt` holds one line per step with its exit
# status and seconds, then the ratios; the script exits non-zero when a step failed or was
# skipped for lack of time (a step that does not apply, such as DDP on one GPU or PyTorch where
# it cannot be imported, is listed as not run). Settings: DEVICE (cuda; `flex` tries the whole
# script on the CPU, as .ci/run does with ARCH=tiny), ARCH (sd15), LATENT (64, the latent side
# of the benchmarks; their images are 8x it), BATCHES ("1 2 4"),
# PRECISIONS ("f32 bf16"), DOCTOR_DECODERS (all), PAPER (1; 0 leaves step 4 out), DIFFRIS_BIN
# and BENCH_BIN (binaries to use instead of build/'s).
set -uo pipefail
cd "$(dirname "$0")/.."

# The diffusers release carried for the PyTorch reference, and what it needs that the GPU
# machines' image lacks.
WHEELS=(diffusers==0.36.0 importlib_metadata==8.7.0)

build() {
    set -e
    local target="${CARGO_TARGET_DIR:-$HOME/.cache/diffris-target-gpu}"
    mkdir -p build/whl
    # Stripped, without debug info: the binaries must fit the device tool's carry limit.
    export CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols
    # The CUDA version of the bindings: the lent GPU machines' driver (580) supports CUDA 13.0;
    # without it the build takes the newest cudarc knows (13.4).
    export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"
    CARGO_TARGET_DIR="$target" cargo build --release --locked -p diffris-experiments \
        --bin diffris --bin bench_unet --features cuda
    gzip -c "$target/release/diffris" > build/diffris-cuda.gz
    gzip -c "$target/release/bench_unet" > build/bench_unet-cuda.gz
    CARGO_TARGET_DIR="$target-ddp" cargo build --release --locked -p diffris-experiments \
        --bin diffris --no-default-features --features cuda,ddp
    gzip -c "$target-ddp/release/diffris" > build/diffris-cuda-ddp.gz
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
        -d build/whl "${WHEELS[@]}"
    ls -l build/ build/whl/
}

run() {
    local out="${OUT:-$PWD/gpu-check-out}" work="${GPU_CHECK_WORK:-/tmp/diffris-gpu-check}"
    local dev="${DEVICE:-cuda}" arch="${ARCH:-sd15}" batches="${BATCHES:-1 2 4}"
    local latent="${LATENT:-64}"
    local precisions="${PRECISIONS:-f32 bf16}"
    local deadline=$((SECONDS + ${BUDGET:-540})) failed=0
    mkdir -p "$out"
    rm -rf "$work" && mkdir -p "$work"
    local bin="${DIFFRIS_BIN:-}" bench="${BENCH_BIN:-}"
    for pair in "bin:diffris-cuda" "bench:bench_unet-cuda"; do
        local var="${pair%%:*}" name="${pair#*:}"
        if [ -z "${!var}" ]; then
            if [ ! -f "build/$name.gz" ]; then
                echo "build/$name.gz is missing: run 'tools/gpu_check.sh build' first" >&2
                return 2
            fi
            gunzip -c "build/$name.gz" > "$work/$name" && chmod +x "$work/$name"
            printf -v "$var" '%s' "$work/$name"
        fi
    done
    local ddp_bin=""
    if [ -f build/diffris-cuda-ddp.gz ]; then
        gunzip -c build/diffris-cuda-ddp.gz > "$work/diffris-ddp" && chmod +x "$work/diffris-ddp"
        ddp_bin="$work/diffris-ddp"
    fi
    local summary="$out/summary.txt"
    : > "$summary"
    # step NAME MIN_S MAX_S CMD...: runs CMD with its output in $out/NAME.txt, for at most
    # MAX_S seconds and the time left; skipped when less than MIN_S is left.
    step() {
        local name="$1" min="$2" max="$3"
        shift 3
        local left=$((deadline - SECONDS)) start=$SECONDS
        local limit=$((left < max ? left : max))
        if [ "$limit" -lt "$min" ]; then
            echo "$name: skipped, ${left} s left" | tee -a "$summary"
            failed=1
            return
        fi
        echo "== $name: $*" >> "$out/$name.txt"
        timeout "$limit" "$@" >> "$out/$name.txt" 2>&1
        local rc=$?
        [ "$rc" -ne 0 ] && failed=1
        echo "$name: exit $rc after $((SECONDS - start)) s (limit $limit s)" | tee -a "$summary"
        tail -n 12 "$out/$name.txt"
    }
    not_run() { echo "$1: not run ($2)" | tee -a "$summary"; }

    { nvidia-smi; nvidia-smi -L; ldconfig -p | grep -E "libcuda|libnvrtc|libnccl"; } \
        > "$out/machine.txt" 2>&1
    # GPU memory in use, every half second, for the whole run.
    nvidia-smi --query-gpu=index,memory.used,memory.total --format=csv -lms 500 \
        > "$out/gpu-memory.csv" 2>/dev/null &
    local sampler=$!
    local decoders=()
    [ -n "${DOCTOR_DECODERS:-}" ] && decoders=(--decoders "$DOCTOR_DECODERS")

    # 1. What runs, and whether it computes what the CPU computes.
    step info 5 60 "$bin" --device "$dev" info
    step doctor 30 200 "$bin" --device "$dev" doctor "${decoders[@]}"
    step doctor-bf16 30 200 "$bin" --device "$dev" doctor --precision bf16 "${decoders[@]}"

    # 2. diffris's UNet and training step, steady state, per precision and batch.
    local p b
    for p in $precisions; do
        for b in $batches; do
            step "bench-fwdbwd-$p-b$b" 20 120 "$bench" --device "$dev" --arch "$arch" \
                --latent "$latent" --phase fwdbwd --precision "$p" --batch "$b" --repeats 3
            step "bench-step-$p-b$b" 20 150 "$bench" --device "$dev" --arch "$arch" \
                --latent "$latent" --phase step --precision "$p" --batch "$b" --repeats 2
        done
    done

    # 3. PyTorch on the same device: the SD-1.5 UNet's forward+backward.
    if [ -d build/whl ] && compgen -G "build/whl/*.whl" > /dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$work/site" build/whl/*.whl > "$out/wheels.txt" 2>&1
        export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    local torch_dev="$dev"
    [ "$dev" = flex ] && torch_dev=cpu
    if [ "$arch" != sd15 ]; then
        not_run torch "the PyTorch reference is SD-1.5's UNet; ARCH=$arch"
    elif ! python3 -c "import torch, diffusers" > /dev/null 2>&1; then
        not_run torch "python3 cannot import torch and diffusers"
    else
        for p in $precisions; do
            local dtype=fp32
            [ "$p" = bf16 ] && dtype=bf16
            for b in $batches; do
                step "torch-fwdbwd-$p-b$b" 20 120 python3 tools/bench_unet.py --phase fwdbwd \
                    --device "$torch_dev" --dtype "$dtype" --batch "$b" --repeats 3 \
                    --json
            done
        done
    fi
    ratios "$out" "$precisions" "$batches" | tee -a "$summary"

    # 4. One optimizer step of the paper profile at the planner's micro-batch.
    if [ "${PAPER:-1}" = 0 ] || [ "$arch" != sd15 ]; then
        not_run paper "PAPER=${PAPER:-1}, ARCH=$arch"
    else
        step synth 5 60 "$bin" data synth --size 512 --train 32 --val 2 --test 2 \
            --out "$work/synth"
        step init-sd 30 150 "$bin" init-sd --arch sd15 --device "$dev" --out "$work/sd15"
        local paper=(train cp_adapter --variant full --profile paper --sd "sd15=$work/sd15"
            --data "rrsisd=$work/synth" --micro-batch auto --epochs 1
            --results "$work/results" --cache "$work/cache")
        step paper-dry-run 5 60 "$bin" --device "$dev" "${paper[@]}" --dry-run
        step paper-step 120 360 "$bin" --device "$dev" "${paper[@]}" --log-every 5
        for f in env.json result.json progress.log epochs.json config.ron; do
            find "$work/results/runs" -name "$f" -exec cp {} "$out/paper-$f" \; 2>/dev/null
        done
        rm -rf "$work/sd15"
    fi

    # 5. Several GPUs: the ordered loop and DDP, same seed.
    local gpus=0
    [ "$dev" != flex ] && gpus=$(nvidia-smi -L 2>/dev/null | grep -c "^GPU ")
    if [ "$gpus" -ge 2 ] && [ -n "$ddp_bin" ]; then
        local tiny=(ablation cp_adapter --only full --epochs 1 --jobs 1 --cache "$work/cache")
        step ordered 60 240 "$bin" --device cuda:0,cuda:1 --data-parallel ordered "${tiny[@]}" \
            --results "$work/ordered"
        step ddp 60 240 "$ddp_bin" --device cuda:0,cuda:1 --data-parallel ddp \
            "${tiny[@]}" --results "$work/ddp"
        for r in ordered ddp; do
            cp "$work/$r/runs/cp_adapter/full/seed-0/result.json" "$out/$r-result.json" 2>/dev/null
        done
    else
        not_run "ordered/ddp" "$gpus GPU(s); needs two and build/diffris-cuda-ddp.gz"
    fi
    kill "$sampler" 2>/dev/null
    echo "== summary"
    cat "$summary"
    return "$failed"
}

# ratios OUT PRECISIONS BATCHES: one line per precision and batch with diffris's and PyTorch's
# forward+backward medians and device memory, and their ratios (where both ran).
ratios() {
    local out="$1" p b
    field() { grep -o "\"$2\": *[0-9.]*" "$1" 2>/dev/null | tail -n 1 | grep -o "[0-9.]*$"; }
    for p in $2; do
        for b in $3; do
            local ours="$out/bench-fwdbwd-$p-b$b.txt" theirs="$out/torch-fwdbwd-$p-b$b.txt"
            local t1 m1 t2 m2
            t1=$(field "$ours" median_s) m1=$(field "$ours" device_mib)
            t2=$(field "$theirs" median_s) m2=$(field "$theirs" device_mib)
            if [ -n "$t1" ] && [ -n "$t2" ]; then
                awk -v p="$p" -v b="$b" -v t1="$t1" -v t2="$t2" -v m1="${m1:-0}" \
                    -v m2="${m2:-0}" 'BEGIN {
                    printf "ratio fwdbwd %s batch %s: time %.3f / %.3f s = %.2fx", p, b, t1, t2, t1 / t2
                    if (m1 > 0 && m2 > 0) printf ", memory %.0f / %.0f MiB = %.2fx", m1, m2, m1 / m2
                    printf "\n" }'
            else
                echo "ratio fwdbwd $p batch $b: not both measured (diffris ${t1:-none}, PyTorch ${t2:-none})"
            fi
        done
    done
}

case "${1:-}" in
    build) build ;;
    run) run ;;
    *)
        echo "usage: tools/gpu_check.sh build | run" >&2
        exit 2
        ;;
esac
