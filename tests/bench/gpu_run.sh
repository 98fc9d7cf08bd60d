#!/usr/bin/env bash
# The one script run on a lent GPU machine (CUDA and torch, no network, no Docker):
# installs the carried wheels, then runs gpu_bench.py once per configuration, each in
# its own process so each VRAM peak is its own. Prepare here first:
#   python tests/bench/prepare_gpu_assets.py     # -> .whl/ (carried, git-ignored)
#   bash tests/bench/gpu_run.sh --device cpu      # dry run on the CPU machine
# On the GPU machine: bash tests/bench/gpu_run.sh  (results under $OUT, else .cache/gpu)
#
# GPU_PRESET picks the configurations (gpu_bench.py's PRESETS; GPU_CONFIGS overrides):
#   vram (default)  VRAM and throughput by workers, batch size, precision (--server-only)
#   frontier        issue 27's targets with the server's defaults (workers auto = 1 on a
#                   GPU, 16 inputs and 512 tokens per pass, fp32), one process: first audio
#                   p50/p95 (20 single-stream runs of the long text), first audio p95 at 16
#                   concurrent streams, aggregate x real time at 64 streams, process VRAM,
#                   each beside the same work as direct engine calls, judged against the
#                   targets. About 2 minutes on an H100 after the machine starts (estimated
#                   from the 2026-11-27 runs); give the device call timeout_s 540 (the
#                   config is stopped after 480 s).
#   GPU_PRESET=frontier bash tests/bench/gpu_run.sh
# The frontier preset writes nvidia-smi.txt, kokoro-gpu-torch-<tag>.json (figures, raw
# timings, summary), kokoro-gpu-torch-<tag>-summary.txt (each figure against its target,
# with the GPU name and the date) and logs.txt (the tail of each log): 4 files, within
# the device tool's 8.
# CPU dry run of the frontier preset with tiny counts (about 2 minutes on 2 cores):
#   GPU_NO_INSTALL=1 GPU_PRESET=frontier bash tests/bench/gpu_run.sh --device cpu --streams 1 \
#     --per-stream 1 --ttfa-runs 2 --concurrent 2 --concurrent-rounds 1 --concurrent-text hello
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-.cache/gpu}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONPATH=images/kokoro/src PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
preset=${GPU_PRESET:-vram}
if [ -n "${GPU_CONFIGS:-}" ]; then
  configs=$GPU_CONFIGS
elif ! configs=$("$py" tests/bench/gpu_bench.py --preset-configs "$preset"); then
  exit 2  # an unknown preset: gpu_bench.py named the known ones
fi
if [ "$preset" = frontier ]; then default_timeout=480; else default_timeout=150; fi
# GPU_NO_INSTALL=1: leave the python as it is (a CPU dry run with the project's venv,
# which has these packages; installing would change its versions)
[ -n "${GPU_NO_INSTALL:-}" ] || "$py" -m pip install -q --no-index --no-deps .whl/*.whl 2>&1 | tail -n 3
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
# workers:batch size:batch tokens[:flags], flags gpu_bench.py's switches joined by commas
# (--server-only: no direct engine calls, so VRAM is the server's alone;
# --precision=fp16; --no-cudnn; --frontier); workers auto: the server's default.
# The device tool brings back 8 files: at most 6 configs.
for c in $configs; do
  IFS=: read -r w b t extra <<< "$c"
  IFS=, read -r -a flags <<< "$extra"
  tag="w$w-b$b-t$t$(printf -- '-%s' "${flags[@]#--}" | tr -d '=' | sed 's/^-$//')"
  echo "== $tag"
  start=$SECONDS
  timeout "${GPU_CONFIG_TIMEOUT:-$default_timeout}" "$py" tests/bench/gpu_bench.py \
    --assets .whl/assets --out "$out" --workers "$w" --batch "$b" --batch-tokens "$t" \
    --tag "$tag" "${flags[@]}" "$@" > "$out/$tag.log" 2>&1
  echo "rc=$? $((SECONDS - start)) s $(grep -E '^[0-9]+ \{' "$out/$tag.log" | tail -n 1)"
  grep -E '^(Issue 27|target |admission)' "$out/$tag.log"
done
# The device tool brings back a limited number of files: keep the JSON, fold the logs.
tail -n 12 "$out"/*.log > "$out/logs.txt"; rm -f "$out"/*.log "$out"/*.md "$out"/nvidia-smi.csv
