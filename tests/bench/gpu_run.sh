#!/usr/bin/env bash
# The one script run on a lent GPU machine (CUDA and torch, no network, no Docker):
# installs the carried wheels, then runs gpu_bench.py once per configuration, each in
# its own process so each VRAM peak is its own. Prepare here first:
#   python tests/bench/prepare_gpu_assets.py     # -> .whl/ (carried, git-ignored)
#   bash tests/bench/gpu_run.sh --device cpu      # dry run on the CPU machine
# On the GPU machine: bash tests/bench/gpu_run.sh  (results under $OUT, else .cache/gpu)
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-.cache/gpu}
mkdir -p "$out"
py=${PYTHON:-python3}
"$py" -m pip install -q --no-index --no-deps .whl/*.whl 2>&1 | tail -n 3
export PYTHONPATH=images/kokoro/src PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
# workers:batch size:batch tokens[:flags], flags gpu_bench.py's switches joined by commas
# (--server-only: no direct engine calls, so VRAM is the server's alone;
# --precision=fp16; --no-cudnn). The device tool brings back 8 files: at most 6 configs.
# The default measures what the VRAM plan still extrapolates (more workers, fp16 batched).
configs=${GPU_CONFIGS:-"1:1:510:--server-only 2:1:510:--server-only 4:1:510:--server-only
  1:1:510:--server-only,--precision=fp16 1:16:512:--server-only,--precision=fp16
  2:16:1024:--server-only,--precision=fp16"}
for c in $configs; do
  IFS=: read -r w b t extra <<< "$c"
  IFS=, read -r -a flags <<< "$extra"
  tag="w$w-b$b-t$t$(printf -- '-%s' "${flags[@]#--}" | tr -d '=' | sed 's/^-$//')"
  echo "== $tag"
  start=$SECONDS
  timeout "${GPU_CONFIG_TIMEOUT:-150}" "$py" tests/bench/gpu_bench.py --assets .whl/assets \
    --out "$out" --workers "$w" --batch "$b" --batch-tokens "$t" --tag "$tag" \
    "${flags[@]}" "$@" > "$out/$tag.log" 2>&1
  echo "rc=$? $((SECONDS - start)) s $(grep -E '^[0-9]+ \{' "$out/$tag.log" | tail -n 1)"
done
# The device tool brings back a limited number of files: keep the JSON, fold the logs.
tail -n 5 "$out"/*.log > "$out/logs.txt"; rm -f "$out"/*.log "$out"/*.md "$out"/nvidia-smi.csv
