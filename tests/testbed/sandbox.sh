#!/usr/bin/env bash
# Start (or reuse) the local sandbox host for `make demo`: a Debian 12 systemd container
# like the Molecule test hosts, with a volume for a Docker engine inside it.
#   sandbox.sh up | down
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/testbed/lib.sh
. "$here/lib.sh"
name=${KOKORO_DEPLOY_SANDBOX:-kokoro-sandbox}
image=${KOKORO_DEPLOY_SANDBOX_IMAGE:-kokoro-deploy/debian-systemd:12}

up() {
  if [ "$(docker inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" = true ]; then
    log "sandbox: $name already running"
    return
  fi
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker run -d --name "$name" --hostname "$name" \
    --cap-add SYS_ADMIN --cap-add NET_ADMIN --cap-add SYS_PTRACE --cap-add MKNOD \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
    --tmpfs /run --tmpfs /run/lock --tmpfs /tmp:exec \
    -v "$name-docker:/var/lib/docker" --stop-signal SIGRTMIN+3 \
    "$image" >/dev/null
  local state=""
  for _ in $(seq 1 60); do
    state=$(docker exec "$name" systemctl is-system-running 2>/dev/null || true)
    case $state in running|degraded) log "sandbox: $name up (systemd $state)"; return ;; esac
    sleep 0.5
  done
  die "sandbox: systemd in $name did not finish booting (state: ${state:-unknown})"
}

down() {
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker volume rm "$name-docker" >/dev/null 2>&1 || true
  log "sandbox: $name removed"
}

case ${1:-up} in
  up) up ;;
  down) down ;;
  *) die "usage: sandbox.sh up|down" ;;
esac
