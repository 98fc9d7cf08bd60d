#!/usr/bin/env bash
# `make demo`: converge ansible/site.yml on the local sandbox host (a systemd
# container) exactly as on a real host, then show what it can do and how to reach it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/testbed/lib.sh
. "$here/lib.sh"
cd "$root"

timed "service images" bash tests/testbed/service_images.sh
timed "tiny LLM model" python tests/testbed/tiny_gguf.py .cache/llm/tiny-test.gguf
timed "sandbox host" bash tests/testbed/sandbox.sh up
# The tiny test model is no manifest artifact: put it where model_cache keeps models.
docker exec kokoro-sandbox mkdir -p /opt/kokoro-deploy/models/llm
docker cp .cache/llm/tiny-test.gguf kokoro-sandbox:/opt/kokoro-deploy/models/llm/tiny-test.gguf
# torch_runtime stays off (its default): the Kokoro server runs torch in its own image.
timed "site.yml" ansible-playbook -i inventory/sandbox/hosts.yml ansible/site.yml

sentence="Kokoro speaks from your own machine."
key=kokoro-sandbox-demo-key   # inventory/sandbox/group_vars/kokoro_hosts.yml
ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' kokoro-sandbox)
# The official openai client, from this machine, to Kokoro published on the sandbox.
mkdir -p .cache/demo
timed "openai client" python - "$ip" "$key" "$sentence" <<'PY'
import sys
from openai import OpenAI
ip, key, sentence = sys.argv[1:]
client = OpenAI(base_url=f"http://{ip}:8880/v1", api_key=key)
client.audio.speech.create(model="tts-1", voice="af_heart", input=sentence,
                           response_format="mp3").write_to_file(".cache/demo/hello.mp3")
PY
cat <<EOT

The sandbox host 'kokoro-sandbox' ($ip) is converged. What site.yml did there:
  preflight: no NVIDIA GPU, so the plan is CPU-only (the table: cat vram-plan.txt below);
  nvidia_driver, nvidia_container_toolkit: skipped (no NVIDIA device);
  docker_engine: Docker from the distribution, compose v2, daemon.json managed;
  espeak-ng (Kokoro's G2P back end), checked for en-us, en-gb, es, fr, hi, it, pt-br;
  model_cache: the Kokoro config, int8 ONNX model and voices, pushed as a bundle
  (air-gapped style), sha256-checked, read-only under /opt/kokoro-deploy/models;
  stack: the Kokoro and LLM images loaded from .cache/images, the compose project in
  /opt/kokoro-deploy/stack up and healthy; verify: speech and a chat completion answered.

Kokoro is published on the sandbox's address with an API key; the openai client on this
machine just wrote .cache/demo/hello.mp3 ($(du -h .cache/demo/hello.mp3 | cut -f1)):
  .venv/bin/python -c 'from openai import OpenAI
  c = OpenAI(base_url="http://$ip:8880/v1", api_key="$key")
  c.audio.speech.create(model="tts-1", voice="af_heart", input="$sentence").write_to_file("hello.mp3")'

  curl -s http://$ip:8880/v1/audio/speech -H "Authorization: Bearer $key" \\
    -H 'Content-Type: application/json' \\
    -d '{"model": "tts-1", "input": "$sentence", "voice": "af_heart", "response_format": "wav"}' > hello.wav
  curl -s -H "Authorization: Bearer $key" http://$ip:8880/v1/audio/voices | head -c 300
  open http://$ip:8880/web in a browser on this machine for the web player (key: $key)

The LLM server (a tiny random test model: its answers are noise) listens on the
sandbox's loopback only, with its own key (Debian's Docker 20.10 would let the LAN
reach a loopback port without one):
  docker exec kokoro-sandbox curl -s http://127.0.0.1:8080/v1/chat/completions \\
    -H 'Authorization: Bearer llm-sandbox-demo-key' -H 'Content-Type: application/json' \\
    -d '{"model": "tiny-test", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}'

  docker exec kokoro-sandbox cat /opt/kokoro-deploy/stack/vram-plan.txt
  docker exec kokoro-sandbox docker compose --project-directory /opt/kokoro-deploy/stack ps
  make demo-down                                # remove the sandbox
EOT
