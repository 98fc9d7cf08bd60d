#!/usr/bin/env bash
# Fetch the llama.cpp source the LLM image builds from: PyPI's llama-cpp-python sdist,
# which vendors the whole of llama.cpp (vendor/llama.cpp, tools/server included), pinned
# by manifest.yml (versions.llama_cpp_python; build_sources.llama_cpp_python: file, size,
# sha256). It lands in images/llm/src/, the image's build context, and is checked
# against the manifest; a file that does not match is removed. Safe to rerun: a present
# file with the right digest is kept and nothing is downloaded.
#   images/llm/fetch-source.sh     # prints the sdist's path on stdout, all else on stderr
# pip goes through its own configuration (index, proxy CA); nothing else is contacted.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${KOKORO_DEPLOY_VENV:-$root/.venv}
dest=$here/src
manifest=${KOKORO_DEPLOY_MANIFEST:-$root/manifest.yml}

say() { printf '[llm-source] %s\n' "$*" >&2; }
die() { printf '[llm-source] error: %s\n' "$*" >&2; exit 1; }

if [ -x "$venv/bin/python" ]; then py=$venv/bin/python; else py=python3; fi

# version, file, size, sha256 from the manifest, one per line.
pin=$("$py" - "$manifest" <<'PY'
import sys, yaml
m = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
src = m["build_sources"]["llama_cpp_python"]
assert str(src["version"]) == str(m["versions"]["llama_cpp_python"]), "manifest: versions differ"
print(src["version"], src["file"], src["size"], src["sha256"], sep="\n")
PY
) || die "cannot read build_sources.llama_cpp_python from $manifest (PyYAML needed: make venv)"
{ read -r version; read -r file; read -r size; read -r sha256; } <<<"$pin"
target=$dest/$file

verify() {
  [ -f "$target" ] || return 1
  [ "$(stat -c %s "$target")" = "$size" ] || return 1
  [ "$(sha256sum "$target" | cut -d' ' -f1)" = "$sha256" ]
}

if verify; then say "$file: present, sha256 matches"; echo "$target"; exit 0; fi
if [ -e "$target" ]; then say "$file: present but does not match the manifest; fetching again"; rm -f "$target"; fi

mkdir -p "$dest"
tmp=$(mktemp -d "$dest/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
say "fetching llama-cpp-python==$version (sdist, about 77 MB)"
# pip builds the sdist's metadata in an isolated env (scikit-build-core only, no
# compiler run); --no-deps keeps it to this one file.
"$py" -m pip download --quiet --no-deps --no-binary :all: --dest "$tmp" \
  "llama-cpp-python==$version" >&2 || die "pip download failed"
[ -f "$tmp/$file" ] || die "pip did not produce $file (got: $(ls "$tmp"))"
mv "$tmp/$file" "$target"
if ! verify; then
  got="sha256 $(sha256sum "$target" | cut -d' ' -f1), $(stat -c %s "$target") bytes"
  rm -f "$target"
  die "$file: $got does not match the manifest ($sha256, $size bytes); removed"
fi
say "$file: fetched, sha256 matches"
echo "$target"
