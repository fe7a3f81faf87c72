#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, prepared so that a session lent one (a few minutes of
# device time, one command of at most 10 minutes) spends them running, not building:
#
#   1. one optimizer step of the paper profile on CUDA: full-size SD-1.5 (random weights), a
#      512-pixel SynthRS, batch 32 through micro-batches (MICRO, default 16: the README's rule
#      for an 80 GB GPU), with its time, heartbeat lines, `--dry-run`'s memory verdict, and the
#      GPU memory in use sampled every half second by nvidia-smi;
#   2. `diffris doctor --device cuda`: every decoder's tiny training step on CUDA against the CPU
#      backend from the same weights and batch (loss, gradients, step time, device memory);
#   3. with two or more GPUs: one tiny epoch of `cp_adapter/full` on cuda:0,cuda:1 with the
#      ordered loop and with Burn's DDP, same seed (their metrics should agree within rounding).
#
# Here (no GPU and no CUDA toolkit needed; a cold build takes about 9 minutes per binary):
#   tools/gpu_check.sh build      # writes build/diffris-cuda.gz, build/diffris-cuda-ddp.gz
# On the device machine, from a checkout of the repository holding build/ (the device tool's
# `run` with carry ["build"]; $OUT comes back):
#   bash tools/gpu_check.sh run   # figures under $OUT (default ./gpu-check-out)
#
# The steps share one deadline (BUDGET seconds, default 540): each runs with the time left, and
# steps with too little left are skipped. `summary.txt` holds one line per step with its exit
# status and seconds; the script exits non-zero when a step failed or was skipped.
set -uo pipefail
cd "$(dirname "$0")/.."

build() {
    set -e
    local target="${CARGO_TARGET_DIR:-$HOME/.cache/diffris-target-gpu}"
    mkdir -p build
    # Stripped, without debug info: the binaries must fit the device tool's carry limit.
    export CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols
    CARGO_TARGET_DIR="$target" cargo build --release --locked -p diffris-experiments \
        --bin diffris --features cuda
    gzip -c "$target/release/diffris" > build/diffris-cuda.gz
    CARGO_TARGET_DIR="$target-ddp" cargo build --release --locked -p diffris-experiments \
        --bin diffris --no-default-features --features cuda,ddp
    gzip -c "$target-ddp/release/diffris" > build/diffris-cuda-ddp.gz
    ls -l build/
}

run() {
    local out="${OUT:-$PWD/gpu-check-out}" work="${GPU_CHECK_WORK:-/tmp/diffris-gpu-check}"
    local micro="${MICRO:-16}" dev="${DEVICE:-cuda}" # DEVICE=flex tries the plumbing on a CPU
    local deadline=$((SECONDS + ${BUDGET:-540})) failed=0
    if [ ! -f build/diffris-cuda.gz ]; then
        echo "build/diffris-cuda.gz is missing: run 'tools/gpu_check.sh build' first" >&2
        return 2
    fi
    mkdir -p "$out"
    rm -rf "$work" && mkdir -p "$work"
    gunzip -c build/diffris-cuda.gz > "$work/diffris" && chmod +x "$work/diffris"
    if [ -f build/diffris-cuda-ddp.gz ]; then
        gunzip -c build/diffris-cuda-ddp.gz > "$work/diffris-ddp" && chmod +x "$work/diffris-ddp"
    fi
    local bin="$work/diffris" summary="$out/summary.txt"
    : > "$summary"
    # /usr/bin/time -v reports the host process's peak RSS, where the machine has it.
    local timed=()
    [ -x /usr/bin/time ] && timed=(/usr/bin/time -v)
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
        "${timed[@]}" timeout "$limit" "$@" >> "$out/$name.txt" 2>&1
        local rc=$?
        [ "$rc" -ne 0 ] && failed=1
        echo "$name: exit $rc after $((SECONDS - start)) s (limit $limit s)" | tee -a "$summary"
        tail -n 25 "$out/$name.txt"
    }

    { nvidia-smi; nvidia-smi -L; ldconfig -p | grep -E "libcuda|libnvrtc|libnccl"; } \
        > "$out/machine.txt" 2>&1
    # GPU memory in use, every half second, for the whole run.
    nvidia-smi --query-gpu=index,memory.used,memory.total --format=csv -lms 500 \
        > "$out/gpu-memory.csv" 2>/dev/null &
    local sampler=$!

    step synth 5 60 "$bin" data synth --size 512 --train 32 --val 2 --test 2 --out "$work/synth"
    step init-sd 30 150 "$bin" init-sd --arch sd15 --device "$dev" --out "$work/sd15"
    local paper=(train cp_adapter --variant full --profile paper --sd "sd15=$work/sd15"
        --data "rrsisd=$work/synth" --micro-batch "$micro" --epochs 1
        --results "$work/results" --cache "$work/cache")
    step paper-dry-run 5 60 "$bin" --device "$dev" "${paper[@]}" --dry-run
    step paper-step 120 360 "$bin" --device "$dev" "${paper[@]}" --log-every 5
    for f in env.json result.json progress.log epochs.json; do
        find "$work/results/runs" -name "$f" -exec cp {} "$out/paper-$f" \; 2>/dev/null
    done
    rm -rf "$work/sd15"
    step doctor 60 200 "$bin" --device "$dev" doctor

    local gpus
    gpus=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | wc -l)
    if [ "$gpus" -ge 2 ] && [ -x "$work/diffris-ddp" ]; then
        local tiny=(ablation cp_adapter --only full --epochs 1 --jobs 1 --cache "$work/cache")
        step ordered 60 240 "$bin" --device cuda:0,cuda:1 --data-parallel ordered "${tiny[@]}" \
            --results "$work/ordered"
        step ddp 60 240 "$work/diffris-ddp" --device cuda:0,cuda:1 --data-parallel ddp \
            "${tiny[@]}" --results "$work/ddp"
        for r in ordered ddp; do
            cp "$work/$r/runs/cp_adapter/full/seed-0/result.json" "$out/$r-result.json" 2>/dev/null
        done
    else
        echo "ordered/ddp: not run ($gpus GPU(s); needs two and build/diffris-cuda-ddp.gz)" \
            | tee -a "$summary"
    fi
    kill "$sampler" 2>/dev/null
    cat "$summary"
    return "$failed"
}

case "${1:-}" in
    build) build ;;
    run) run ;;
    *)
        echo "usage: tools/gpu_check.sh build | run" >&2
        exit 2
        ;;
esac
