# Small helpers shared by the test-bed scripts.
log() { printf '[testbed] %s\n' "$*" >&2; }
die() { printf '[testbed] error: %s\n' "$*" >&2; exit 1; }

# timed LABEL CMD...: run CMD and print how long it took, so slow stages show up in CI logs.
timed() {
  local label=$1 start rc=0
  shift
  start=$(date +%s)
  "$@" || rc=$?
  printf '[time] %-22s %4ss%s\n' "$label" "$(( $(date +%s) - start ))" "$([ $rc -eq 0 ] || echo "  (failed, rc=$rc)")" >&2
  return $rc
}

# The CA bundle that containers get so they trust this machine's HTTPS proxy; a site's
# own corporate CA bundle can be named instead.
ca_bundle() { echo "${KOKORO_DEPLOY_EXTRA_CA:-/etc/ssl/certs/ca-certificates.crt}"; }

# label_of IMAGE: its org.kokoro-deploy.recipe label (empty when it has none or is gone).
label_of() { docker image inspect -f '{{index .Config.Labels "org.kokoro-deploy.recipe"}}' "$1" 2>/dev/null || true; }

# Every image the test bed builds carries org.kokoro-deploy.recipe (its own, or inherited
# from our base images). A rebuild leaves the image it replaced untagged: 1-8 GB each,
# and a machine that builds many times a day fills its disk (CI failed on exactly that).
# Untagged images with our label are never used again, so they go, but for the last
# layers of build stages (llama.cpp's compile, the Open WebUI install), also untagged:
# they carry the label of the base image they were built on, and while that base image is
# current they are Docker's build cache (without them every run compiled llama.cpp again,
# ten minutes on two cores).
prune_replaced_images() {
  local cache id label gone=0
  cache=$(for id in $(docker image ls -q 'kokoro-deploy/debian*'); do label_of "$id"; done | sort -u)
  for id in $(docker image ls -q --no-trunc --filter dangling=true --filter label=org.kokoro-deploy.recipe | sort -u); do
    label=$(label_of "$id")
    if [ -n "$cache" ] && grep -qxF -- "$label" <<<"$cache"; then continue; fi
    # An image a container still uses stays, as `docker image prune` would leave it.
    docker image rm "$id" >/dev/null 2>&1 && gone=$((gone + 1))
  done
  log "replaced images: removed $gone"
}

# warn_low_disk DIR GIB: say so early when DIR's file system has under GIB free, since
# the image loads into the test hosts fail late and obscurely ("no space left on device").
warn_low_disk() {
  local free_gib
  free_gib=$(df -P -BG "$1" | awk 'NR == 2 { sub("G", "", $4); print $4 }')
  if [ "${free_gib:-0}" -lt "$2" ]; then
    log "warning: ${free_gib} GiB free under $1; the Molecule scenarios need about $2 GiB (docker image ls / docker system df show what is kept)"
  else
    log "disk: ${free_gib} GiB free under $1"
  fi
}
