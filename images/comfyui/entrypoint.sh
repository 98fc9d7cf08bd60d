#!/bin/sh
# Starts ComfyUI on 0.0.0.0:8188 with the kit's fixed flags, then the words of
# COMFYUI_ARGS, then the container's own arguments (compose `command:`), in that order.
# argparse keeps the last value of an option given twice, so a later source overrides
# an earlier one (e.g. `--port`); two flags of one exclusive group (`--lowvram` and
# `--highvram`) stop ComfyUI with a usage error instead.
set -eu

# --disable-api-nodes: no partner (paid API) nodes, and ComfyUI sends a
# Content-Security-Policy that keeps the browser frontend from calling out.
# COMFYUI_OFFLINE=0 leaves both as upstream ships them.
offline=""
if [ "${COMFYUI_OFFLINE:-1}" != 0 ]; then
  offline="--disable-api-nodes"
fi

# COMFYUI_ARGS is split on blanks on purpose: one variable in .env carries several
# flags from the VRAM plan, e.g. "--reserve-vram 9.5 --disable-smart-memory".
# Globbing is off, so a "*" stays a "*". A value that itself holds blanks cannot be
# passed this way: give it as a container argument instead.
set -f
# shellcheck disable=SC2086
exec python /opt/comfyui/main.py --listen 0.0.0.0 --port 8188 --disable-auto-launch \
  $offline ${COMFYUI_ARGS:-} "$@"
