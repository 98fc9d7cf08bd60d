#!/bin/sh
# A stand-in for nvidia-smi on a test host without a GPU: prints the recorded sample
# beside it (two H100s, one GPU process). The process's recorded pid is replaced by the
# Kokoro container's main pid, so that the exporter's cgroup lookup finds a real
# compose service. A recorded sample, not a GPU.
here=$(dirname "$0")
case "$1" in
  --query-gpu=*) cat "$here/gpus.csv" ;;
  --query-compute-apps=*)
    id=$(docker ps -q --filter label=com.docker.compose.service=kokoro 2>/dev/null | head -n 1)
    pid=$(docker inspect -f '{{.State.Pid}}' "$id" 2>/dev/null)
    sed "s/, 4242, /, ${pid:-4242}, /" "$here/apps.csv" ;;
  *) echo "nvidia-smi-replay: only --query-gpu and --query-compute-apps are recorded" >&2; exit 2 ;;
esac
