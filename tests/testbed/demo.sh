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
timed "site.yml" ansible-playbook -i inventory/sandbox/hosts.yml ansible/site.yml

sentence="Kokoro speaks from your own machine."
cat <<EOT

The sandbox host 'kokoro-sandbox' is converged. What site.yml has installed so far:
  espeak-ng (Kokoro's G2P back end), checked for en-us, en-gb, es, fr, hi, it, pt-br.

Try it:
  docker exec kokoro-sandbox espeak-ng -q --ipa -v en-us "$sentence"
    -> $(docker exec kokoro-sandbox espeak-ng -q --ipa -v en-us "$sentence")
  docker exec -it kokoro-sandbox bash           # a shell on the host
  make demo-down                                # remove the sandbox

The Kokoro server, its compose stack and the curl/openai examples join this demo as
the stack lands (see the issues in the README's roadmap).
EOT
