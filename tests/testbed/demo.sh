#!/usr/bin/env bash
# `make demo`: converge ansible/site.yml on the local sandbox host (a systemd
# container) exactly as on a real host, then show what it can do and how to reach it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/testbed/lib.sh
. "$here/lib.sh"
cd "$root"

timed "sandbox host" bash tests/testbed/sandbox.sh up
# torch_runtime is left out of the demo: the sandbox has no GPU, PyPI has no CPU build
# of torch for Linux, and the host venv (1.5 GB, ~6 min) is for host-side use only;
# the Kokoro server runs in its own image. Its Molecule scenario covers it.
timed "site.yml" ansible-playbook -i inventory/sandbox/hosts.yml ansible/site.yml \
  --skip-tags torch_runtime

sentence="Kokoro speaks from your own machine."
cat <<EOT

The sandbox host 'kokoro-sandbox' is converged. What site.yml did there:
  preflight (gpu_facts): no NVIDIA GPU found, so the plan is CPU-only;
  nvidia_driver, nvidia_container_toolkit: skipped (no NVIDIA device);
  docker_engine: Docker from the distribution, compose v2, daemon.json managed;
  espeak-ng (Kokoro's G2P back end), checked for en-us, en-gb, es, fr, hi, it, pt-br;
  model_cache: the Kokoro config, int8 ONNX model and voices, pushed as a bundle
  (air-gapped style), sha256-checked, read-only under /opt/kokoro-deploy/models.

Try it:
  docker exec kokoro-sandbox espeak-ng -q --ipa -v en-us "$sentence"
    -> $(docker exec kokoro-sandbox espeak-ng -q --ipa -v en-us "$sentence")
  docker exec kokoro-sandbox docker compose version
  docker exec kokoro-sandbox cat /opt/kokoro-deploy/models/cache-index.json
  docker exec -it kokoro-sandbox bash           # a shell on the host
  make demo-down                                # remove the sandbox

The Kokoro server, its compose stack and the curl/openai examples join this demo as
the stack lands (see the issues in the README's roadmap).
EOT
