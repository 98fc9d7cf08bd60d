#!/bin/sh
# The CA bundle a build trusts, in one place for every image that downloads over TLS
# while it builds (Kokoro's and ComfyUI's build stages): the PEM files dropped into
# images/extra-ca/*.crt (a TLS-inspecting proxy's CA; roles/stack's
# stack_build_extra_ca_files puts them there), then the system's bundle, written to
# /tmp/extra-ca.pem for pip (PIP_CERT) and curl (--cacert). Run after ca-certificates is
# installed; the file stays in build stages, never in a final image.
set -eu
out=/tmp/extra-ca.pem
: > "$out"
for f in /tmp/extra-ca/*.crt; do
  if [ -f "$f" ]; then cat "$f" >> "$out"; fi
done
cat /etc/ssl/certs/ca-certificates.crt >> "$out"
