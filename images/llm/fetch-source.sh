#!/usr/bin/env bash
# Fetch what the LLM image builds from, pinned by manifest.yml (build_sources):
# - llama.cpp's source: PyPI's llama-cpp-python sdist, which vendors the whole of
#   llama.cpp (vendor/llama.cpp, tools/server included), into images/llm/src/;
# - with --cuda, NVIDIA's CUDA toolkit wheels from PyPI (build_sources.llm_cuda_wheels:
#   compiler, runtime, cuBLAS, CCCL) into images/llm/src/cuda/, for GGML_CUDA=ON; that
#   folder then holds exactly the manifest's wheels (others, e.g. an older pin's, are
#   removed: the build unpacks every wheel there).
# Each file is checked against the manifest (size, sha256); one that does not match is
# removed. Safe to rerun: a present file with the right digest is kept and nothing is
# downloaded.
#   images/llm/fetch-source.sh [--cuda]   # prints the sdist's path on stdout, all else on stderr
# pip goes through its own configuration (index, proxy CA); nothing else is contacted.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${KOKORO_DEPLOY_VENV:-$root/.venv}
dest=$here/src
manifest=${KOKORO_DEPLOY_MANIFEST:-$root/manifest.yml}

say() { printf '[llm-source] %s\n' "$*" >&2; }
die() { printf '[llm-source] error: %s\n' "$*" >&2; exit 1; }

cuda=0
case ${1:-} in
  "") ;;
  --cuda) cuda=1 ;;
  *) die "unknown argument: $1 (usage: fetch-source.sh [--cuda])" ;;
esac

if [ -x "$venv/bin/python" ]; then py=$venv/bin/python; else py=python3; fi

# One line per file: kind, folder, requirement, file, size, sha256 (the sdist first).
pins=$("$py" - "$manifest" "$cuda" <<'PY'
import sys, yaml
m = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
src = m["build_sources"]["llama_cpp_python"]
assert str(src["version"]) == str(m["versions"]["llama_cpp_python"]), "manifest: versions differ"
print("sdist", ".", f"llama-cpp-python=={src['version']}", src["file"], src["size"], src["sha256"])
if sys.argv[2] == "1":
    for w in m["build_sources"]["llm_cuda_wheels"]:
        print("wheel", "cuda", f"{w['name']}=={w['version']}", w["file"], w["size"], w["sha256"])
PY
) || die "cannot read build_sources from $manifest (PyYAML needed: make venv)"

verify() {  # FILE SIZE SHA256
  [ -f "$1" ] || return 1
  [ "$(stat -c %s "$1")" = "$2" ] || return 1
  [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$3" ]
}

fetch() {  # KIND FOLDER REQUIREMENT FILE SIZE SHA256
  local kind=$1 dir=$dest/$2 req=$3 file=$4 size=$5 sha256=$6 target tmp got
  target=$dir/$file
  if verify "$target" "$size" "$sha256"; then say "$file: present, sha256 matches"; return; fi
  if [ -e "$target" ]; then say "$file: present but does not match the manifest; fetching again"; rm -f "$target"; fi
  mkdir -p "$dir"
  # Beside, not inside, the folder a build context is packed from; renamed into it whole.
  tmp=$(mktemp -d "$dest/.fetch.XXXXXX")
  say "fetching $req ($kind, $((size / 1000000)) MB)"
  if [ "$kind" = sdist ]; then
    # pip builds the sdist's metadata in an isolated env (scikit-build-core only, no
    # compiler run); --no-deps keeps it to this one file.
    set -- --no-binary :all:
  else
    # The image's platform, not the controller's: x86-64 Linux, any Python.
    set -- --only-binary :all: --implementation py --python-version 3 \
      --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux_2_12_x86_64
  fi
  "$py" -m pip download --quiet --no-deps "$@" --dest "$tmp" "$req" >&2 \
    || { rm -rf "$tmp"; die "pip download $req failed"; }
  if [ ! -f "$tmp/$file" ]; then
    got=$(ls "$tmp"); rm -rf "$tmp"; die "pip did not produce $file (got: $got)"
  fi
  mv "$tmp/$file" "$target"
  rm -rf "$tmp"
  if ! verify "$target" "$size" "$sha256"; then
    got="sha256 $(sha256sum "$target" | cut -d' ' -f1), $(stat -c %s "$target") bytes"
    rm -f "$target"
    die "$file: $got does not match the manifest ($sha256, $size bytes); removed"
  fi
  say "$file: fetched, sha256 matches"
}

sdist=
wheels=()
while read -r kind dir req file size sha256; do
  fetch "$kind" "$dir" "$req" "$file" "$size" "$sha256"
  if [ "$kind" = sdist ]; then sdist=$dest/$file; else wheels+=("$file"); fi
done <<<"$pins"
if [ "$cuda" = 1 ]; then
  for f in "$dest"/cuda/*; do
    [ -e "$f" ] || continue
    case " ${wheels[*]} " in *" ${f##*/} "*) ;; *) say "${f##*/}: not in the manifest; removed"; rm -rf "$f" ;; esac
  done
fi
echo "$sdist"
