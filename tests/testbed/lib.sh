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
