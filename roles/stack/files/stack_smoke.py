#!/usr/bin/env python3
"""Check every service of a kokoro-deploy compose project the way a client would, from
the host it runs on, and print one JSON object with the findings.

    stack_smoke.py [--env /opt/kokoro-deploy/stack/.env] [--vram]
    stack_smoke.py --kokoro-url http://127.0.0.1:8880 [--kokoro-key KEY]

Reads ports, profiles and the key files from the project's .env. With the TLS proxy
(compose.proxy.yml) every call goes through it, as a remote client's would: to
https://localhost:<PROXY_PORT>/kokoro and /llm, and ComfyUI's own host name, verified
against the proxy's CA (proxy-ca.crt beside .env, else the system's), each with its
service's key; a call without a key must get 401. For Kokoro: /health is ready, one
sentence comes back from /v1/audio/speech as 24 kHz WAV with real signal
(a server that does not answer at all is also marked "unreachable"); with Wyoming
(compose.wyoming.yml), `describe` lists af_heart and `synthesize` streams the sentence
back as 24 kHz mono with real signal, as Home Assistant asks. --kokoro-url checks
only the Kokoro server at that URL, with no .env read.
For the LLM (profile llm): /health, then a chat completion that produces tokens. For
ComfyUI (profile comfyui): /system_stats lists a device and /models/<folder> each model
file of COMFYUI_MODEL_FILES. For Open WebUI (profile webui, at its own host name behind
the proxy): signs in as WEBUI_ADMIN_EMAIL (secrets/webui_admin_password), lists the LLM's
model and has a sentence read aloud through Kokoro. --vram adds what the VRAM
report needs: nvidia-smi's per-card and per-process memory and which compose service
each GPU process belongs to. Standard library only: it runs on a bare host. Used by
roles/stack (verify) and by tests/acceptance/stack and tests/acceptance/gpu, so all
check the same things.
"""

from __future__ import annotations

import argparse
import array
import http.client
import io
import json
import math
import re
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import wave
from pathlib import Path

SENTENCE = "The speech server on this host is ready."
TIMEOUT = 180


def read_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip()
    return env


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a host name (SNI, certificate check) at the loopback address: the proxy's
    other host names need not resolve on the host itself."""

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class _PinnedHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_PinnedHTTPS, req, context=self._context)


# Set by main() with the proxy: the TLS context its certificates verify against.
TLS: ssl.SSLContext | None = None


def call(url: str, body: dict | None = None, key: str = "") -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    urlopen = (
        urllib.request.build_opener(_PinnedHandler(context=TLS)).open
        if TLS
        else urllib.request.urlopen
    )
    try:
        with urlopen(req, timeout=TIMEOUT) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def check_refused_without_key(url: str) -> dict:
    status, body = call(url)
    ok = status == 401
    return {
        "ok": ok,
        "error": None if ok else f"{url} without a key answered {status}: {body[:200]!r}",
    }


def base_url(env: dict, prefix: str, default_port: str) -> str:
    host = env.get(f"{prefix}_BIND_ADDRESS", "127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{env.get(f'{prefix}_PORT', default_port)}"


def check(fn, *args) -> dict:
    start = time.monotonic()
    try:
        result = fn(*args)
    except Exception as exc:  # any failure is a finding to report, not a crash
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    result["seconds"] = round(time.monotonic() - start, 3)
    return result


def check_kokoro(url: str, key: str) -> dict:
    try:
        status, body = call(url + "/health", key=key)
    except urllib.error.URLError as exc:  # nothing answers there (HTTP errors are answers)
        return {"ok": False, "unreachable": True, "error": f"{type(exc).__name__}: {exc}"}
    health = json.loads(body or b"{}")
    if status != 200 or health.get("status") != "ok":
        return {"ok": False, "error": f"/health answered {status}: {health}"}
    status, body = call(
        url + "/v1/audio/speech",
        {
            "model": "kokoro",
            "input": SENTENCE,
            "voice": "af_heart",
            "response_format": "wav",
            "stream": False,
        },
        key,
    )
    if status != 200:
        return {"ok": False, "error": f"/v1/audio/speech answered {status}: {body[:300]!r}"}
    with wave.open(io.BytesIO(body)) as w:
        rate, width, frames = w.getframerate(), w.getsampwidth(), w.readframes(w.getnframes())
    problems, seconds, rms = audio_findings(frames, rate, width)
    return {
        "ok": not problems,
        "error": "; ".join(problems) or None,
        "device": health.get("device"),
        "engine": health.get("engine"),
        "rate": rate,
        "audio_seconds": round(seconds, 2),
        "rms": round(rms, 4),
    }


def audio_findings(pcm: bytes, rate: int, width: int) -> tuple[list[str], float, float]:
    """Problems with 16-bit mono PCM as Kokoro should speak it, its seconds and RMS."""
    samples = array.array("h", pcm[: len(pcm) // 2 * 2]) if width == 2 else array.array("h")
    seconds = len(samples) / max(rate, 1)
    rms = math.sqrt(sum(s * s for s in samples) / max(len(samples), 1)) / 32768
    problems = []
    if rate != 24000:
        problems.append(f"audio at {rate} Hz, Kokoro speaks at 24000")
    if seconds < 0.5 or rms < 0.01:
        problems.append(f"silent or empty audio ({seconds:.2f} s, RMS {rms:.4f})")
    return problems, seconds, rms


def wyoming_send(sock: socket.socket, kind: str, data: dict) -> None:
    # Wyoming: one JSON header line per event; its data may ride inline.
    sock.sendall(json.dumps({"type": kind, "data": data}).encode() + b"\n")


def wyoming_events(stream):
    """(type, data, payload) of each event the server sends, until it closes."""
    while line := stream.readline():
        header = json.loads(line)
        data = dict(header.get("data") or {})
        if header.get("data_length"):
            data.update(json.loads(stream.read(header["data_length"])))
        payload = stream.read(header["payload_length"]) if header.get("payload_length") else b""
        yield header["type"], data, payload


def check_wyoming(host: str, port: int, voice: str = "af_heart") -> dict:
    """Home Assistant's way: `describe` lists the voice, `synthesize` streams it back as
    audio-start, audio-chunk... and audio-stop, each on a connection of its own."""
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        wyoming_send(sock, "describe", {})
        info = next((d for t, d, _ in wyoming_events(sock.makefile("rb")) if t == "info"), {})
    voices = [v.get("name") for prog in info.get("tts", []) for v in prog.get("voices", [])]
    if voice not in voices:
        return {"ok": False, "error": f"describe lists {len(voices)} voices, not {voice}"}
    fmt, pcm = {}, bytearray()
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        wyoming_send(sock, "synthesize", {"text": SENTENCE, "voice": {"name": voice}})
        for kind, data, payload in wyoming_events(sock.makefile("rb")):
            if kind == "error":
                return {"ok": False, "error": f"synthesize answered an error: {data.get('text')}"}
            if kind == "audio-start":
                fmt = data
            elif kind == "audio-chunk":
                pcm += payload
            elif kind == "audio-stop":
                break
    if not fmt:
        return {"ok": False, "error": "synthesize sent no audio-start"}
    problems, seconds, rms = audio_findings(bytes(pcm), fmt.get("rate", 0), fmt.get("width", 0))
    if fmt.get("channels") != 1:
        problems.append(f"{fmt.get('channels')} channels, not mono")
    return {"ok": not problems, "error": "; ".join(problems) or None, "voices": len(voices),
            "audio_seconds": round(seconds, 2), "rms": round(rms, 4)}


def check_llm(url: str, alias: str, key: str = "") -> dict:
    status, body = call(url + "/health", key=key)
    if status != 200:
        return {"ok": False, "error": f"/health answered {status}: {body[:300]!r}"}
    status, body = call(
        url + "/v1/chat/completions",
        {
            "model": alias,
            "max_tokens": 8,
            "temperature": 0,
            "messages": [{"role": "user", "content": "Say hello."}],
        },
        key,
    )
    if status != 200:
        return {"ok": False, "error": f"/v1/chat/completions answered {status}: {body[:300]!r}"}
    reply = json.loads(body)
    message = reply.get("choices", [{}])[0].get("message", {})
    tokens = reply.get("usage", {}).get("completion_tokens", 0)
    ok = message.get("role") == "assistant" and tokens > 0
    return {
        "ok": ok,
        "error": None if ok else f"no completion in {reply}",
        "completion_tokens": tokens,
        "model": reply.get("model"),
    }


def check_comfyui(url: str, key: str = "", model_files: list[str] | None = None) -> dict:
    """/system_stats lists a device, and ComfyUI itself lists each model file the kit's
    workflows load (`<folder>/<file>` under the model cache's comfyui/) in its /models/<folder>:
    an empty or unmounted folder answers its health check but fails every workflow."""
    status, body = call(url + "/system_stats", key=key)
    if status != 200:
        return {"ok": False, "error": f"/system_stats answered {status}: {body[:300]!r}"}
    devices = json.loads(body).get("devices", [])
    missing = []
    for folder in sorted({f.split("/", 1)[0] for f in model_files or []}):
        status, body = call(f"{url}/models/{folder}", key=key)
        listed = json.loads(body) if status == 200 else []
        missing += [f for f in model_files if f.split("/", 1)[0] == folder
                    and f.split("/", 1)[1] not in listed]
    error = None
    if not devices:
        error = "no device listed"
    elif missing:
        error = (f"ComfyUI does not list {', '.join(missing)} in its model folders: the model "
                 "cache's comfyui/ files are missing or not mounted (run site.yml's models stage)")
    return {
        "ok": error is None,
        "error": error,
        "devices": [
            {k: d.get(k) for k in ("name", "type", "vram_total", "vram_free")} for d in devices
        ],
        "model_files": len(model_files or []) - len(missing),
    }


def check_webui(url: str, email: str, password: str, alias: str) -> dict:
    """Open WebUI as its admin uses it: sign in, see the LLM's model, and have a sentence
    read aloud (Open WebUI asks Kokoro with its own key). Open WebUI keeps each spoken
    text, so the sentence carries the time: every verify reaches Kokoro again."""
    status, body = call(url + "/health")
    if status != 200:
        return {"ok": False, "error": f"/health answered {status}: {body[:200]!r}"}
    if not email:
        return {"ok": True, "error": None, "signed_in": False}
    status, body = call(url + "/api/v1/auths/signin", {"email": email, "password": password})
    if status != 200:
        return {"ok": False, "error": f"signing in as {email} answered {status}: {body[:300]!r} "
                "(the admin's password is used only while Open WebUI has no account)"}
    token = json.loads(body)["token"]
    status, body = call(url + "/api/models", key=token)
    models = [m.get("id") for m in json.loads(body).get("data", [])] if status == 200 else []
    if alias not in models:
        return {"ok": False, "error": f"/api/models answered {status} without the LLM's {alias}: "
                f"{body[:300]!r}"}
    text = f"{SENTENCE} Checked at {time.strftime('%H:%M:%S')}."
    status, audio = call(url + "/api/v1/audio/speech", {"input": text}, key=token)
    if status != 200 or len(audio) < 1000:
        return {"ok": False, "error": f"read-aloud answered {status} with {len(audio)} bytes: "
                f"{audio[:300]!r}"}
    return {"ok": True, "error": None, "signed_in": True, "models": models,
            "audio_bytes": len(audio)}


def run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.stdout if proc.returncode == 0 else ""


def vram_inputs(project: str) -> dict:
    """nvidia-smi's card and process lines, and the compose service of each GPU process
    (found through the container id in the process's cgroup)."""
    gpus = run(
        [
            "nvidia-smi",
            "--query-gpu=index,uuid,name,memory.total,memory.used",
            "--format=csv,noheader,nounits",
        ]
    )
    apps = run(
        [
            "nvidia-smi",
            "--query-compute-apps=gpu_uuid,pid,process_name,used_memory",
            "--format=csv,noheader,nounits",
        ]
    )
    containers = {}
    for line in run(
        [
            "docker",
            "ps",
            "--no-trunc",
            "--filter",
            f"label=com.docker.compose.project={project}",
            "--format",
            '{{.ID}} {{.Label "com.docker.compose.service"}}',
        ]
    ).splitlines():
        cid, _, service = line.partition(" ")
        containers[cid] = service
    pid_services = {}
    for line in apps.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 2 or not fields[1].isdigit():
            continue
        try:
            cgroup = Path(f"/proc/{fields[1]}/cgroup").read_text()
        except OSError:
            continue
        for cid in re.findall(r"[0-9a-f]{64}", cgroup):
            if cid in containers:
                pid_services[fields[1]] = containers[cid]
    return {"gpus_csv": gpus, "apps_csv": apps, "pid_services": pid_services}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", type=Path, default=Path("/opt/kokoro-deploy/stack/.env"))
    ap.add_argument("--vram", action="store_true")
    ap.add_argument("--kokoro-url", help="check only the Kokoro server at this URL")
    ap.add_argument("--kokoro-key", default="", help="its API key, with --kokoro-url")
    args = ap.parse_args()
    if args.kokoro_url:
        print(json.dumps({"kokoro": check(check_kokoro, args.kokoro_url, args.kokoro_key)}))
        return
    env = read_env(args.env)
    profiles = {p for p in env.get("COMPOSE_PROFILES", "").split(",") if p}
    secrets = args.env.parent / "secrets"

    def first_key(service: str) -> str:
        path = secrets / f"{service}_api_keys"
        keys = path.read_text().split() if path.is_file() else []
        # a Kokoro key may be named (name:key); the bearer token is the key alone
        return keys[0].rpartition(":")[2] if keys else ""

    urls = {
        "kokoro": base_url(env, "KOKORO", "8880"),
        "llm": base_url(env, "LLM", "8080"),
        "comfyui": base_url(env, "COMFYUI", "8188"),
        "webui": base_url(env, "WEBUI", "3000"),
    }
    out = {}
    if "compose.proxy.yml" in env.get("COMPOSE_FILE", "").split(":"):
        global TLS  # one context for every call of this run
        ca = args.env.parent / "proxy-ca.crt"
        TLS = ssl.create_default_context(cafile=str(ca) if ca.is_file() else None)
        port = env.get("PROXY_PORT", "443")
        front = f"https://localhost:{port}"
        urls = {
            "kokoro": f"{front}/kokoro",
            "llm": f"{front}/llm",
            "comfyui": f"https://{env.get('PROXY_COMFYUI_SERVER_NAME', '')}:{port}",
            "webui": f"https://{env.get('PROXY_WEBUI_SERVER_NAME', '')}:{port}",
        }
        out["proxy_auth"] = check(check_refused_without_key, urls["kokoro"] + "/v1/audio/voices")
    out["kokoro"] = check(check_kokoro, urls["kokoro"], first_key("kokoro"))
    if "compose.wyoming.yml" in env.get("COMPOSE_FILE", "").split(":"):
        host = env.get("WYOMING_BIND_ADDRESS", "127.0.0.1")
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        out["wyoming"] = check(check_wyoming, host, int(env.get("WYOMING_PORT", "10200")))
    if "llm" in profiles:
        alias = env.get("LLM_MODEL_ALIAS", "")
        out["llm"] = check(check_llm, urls["llm"], alias, first_key("llm"))
    if "comfyui" in profiles:
        files = [f for f in env.get("COMFYUI_MODEL_FILES", "").split(",") if f]
        out["comfyui"] = check(check_comfyui, urls["comfyui"], first_key("comfyui"), files)
    if "webui" in profiles:
        password = secrets / "webui_admin_password"
        out["webui"] = check(
            check_webui, urls["webui"], env.get("WEBUI_ADMIN_EMAIL", ""),
            password.read_text().strip() if password.is_file() else "",
            env.get("LLM_MODEL_ALIAS", ""))
    if args.vram:
        out["vram"] = vram_inputs(env.get("COMPOSE_PROJECT_NAME", "kokoro"))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
