#!/bin/sh
# Lays out a CUDA toolkit at PREFIX from NVIDIA's CUDA wheels on PyPI (WHEEL_DIR/*.whl:
# nvcc, crt, nvvm, runtime, cuBLAS, CCCL), in the shape nvcc's own nvcc.profile and
# CMake's FindCUDAToolkit expect of an installed toolkit:
#   PREFIX/{bin,include,lib,nvvm}   the wheels' nvidia/cu13 tree
#   PREFIX/targets/x86_64-linux/{include,lib}, PREFIX/lib64   links to the above
#   PREFIX/lib/lib*.so              link-time names for the wheels' sonames
#   PREFIX/lib/stubs/libcuda.so     the driver API's link stub (see below)
# The wheels carry no libcuda: the driver's library comes from the host at run time
# (NVIDIA's container toolkit mounts it). ggml links the driver API for its VMM memory
# pool, so a stub is built here as the full toolkit ships one: every function cuda.h
# declares, under the names the header's macros select (cuMemAlloc -> cuMemAlloc_v2),
# with the soname libcuda.so.1 that the real library answers to. Its bodies never run.
#   sh cuda-toolkit.sh WHEEL_DIR PREFIX
set -eu
wheels=$1 prefix=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for w in "$wheels"/*.whl; do unzip -q -o "$w" 'nvidia/*' -d "$tmp"; done
[ -x "$tmp/nvidia/cu13/bin/nvcc" ] || { echo "cuda-toolkit.sh: no nvidia/cu13/bin/nvcc in $wheels" >&2; exit 1; }
mkdir -p "$(dirname "$prefix")"
mv "$tmp/nvidia/cu13" "$prefix"
cd "$prefix"
mkdir -p targets/x86_64-linux lib/stubs
ln -s ../../include targets/x86_64-linux/include
ln -s ../../lib targets/x86_64-linux/lib
ln -s lib lib64
for so in lib/lib*.so.*; do
  ln -sf "$(basename "$so")" "${so%.so.*}.so"
done
# One line: a declaration may span several.
printf '#include <cuda.h>\n' | gcc -E -P -I include - | tr '\n' ' ' \
  | grep -oE '\bCUresult[[:space:]]+cu[A-Za-z0-9_]+[[:space:]]*\(' \
  | sed -E 's/^CUresult[[:space:]]+//; s/[[:space:]]*\($//' | sort -u \
  | sed 's/.*/int &(void) { return 999; }/' > lib/stubs/libcuda.c
[ -s lib/stubs/libcuda.c ] || { echo "cuda-toolkit.sh: no driver API functions found in cuda.h" >&2; exit 1; }
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o lib/stubs/libcuda.so lib/stubs/libcuda.c
rm lib/stubs/libcuda.c
"$prefix/bin/nvcc" --version | tail -2
