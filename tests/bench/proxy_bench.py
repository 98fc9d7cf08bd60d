"""What the TLS front door (roles/stack's Caddy proxy) costs a Kokoro client, measured on
a host that runs the stack behind it: the same requests through the proxy and straight
to Kokoro's container address, alternated in one run, compared as ratios.

    python tests/bench/proxy_bench.py [--container stack-debian12] [--out docs/benchmarks]

On the controller it finds the host container's Kokoro address and keys, runs this file
on the host (`docker exec ... python3 -`, standard library only: nothing is installed
there) and writes proxy-overhead.{json,md}. Start a host first, e.g. with
`cd tests && molecule converge -s stack` (the stack scenario turns the proxy on).

Measured per path, N rounds each:
  * a new connection: TCP connect, plus the TLS handshake through the proxy;
  * GET /v1/audio/voices on a kept-alive connection (the proxy's per-request cost);
  * POST /v1/audio/speech, a short sentence as WAV: the whole answer;
  * POST /v1/audio/speech with stream=true for a paragraph as PCM: the first audio bytes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

SHORT = "Hello there, this is a short sentence."
PARAGRAPH = (
    "The front door terminates TLS and checks the key. Then it passes the request on. "
    "Streaming audio must flow through it as soon as the first sentence is ready. "
    "Nothing should wait for the whole answer."
)


# --- on the host --------------------------------------------------------------------


def on_host(cfg: dict) -> dict:
    import http.client
    import socket
    import ssl

    def connect(path: dict):
        t0 = time.perf_counter()
        sock = socket.create_connection((path["address"], path["port"]), timeout=60)
        t_tcp = time.perf_counter()
        if path["tls"]:
            ctx = ssl.create_default_context(cafile=cfg["ca"])
            sock = ctx.wrap_socket(sock, server_hostname=cfg["name"])
        t_tls = time.perf_counter()
        conn = http.client.HTTPConnection(path["address"], path["port"], timeout=300)
        conn.sock = sock
        return conn, t_tcp - t0, t_tls - t0

    def request(conn, method: str, url: str, body: dict | None = None,
                first_bytes: int = 0) -> tuple[float, int]:
        headers = {"Authorization": "Bearer " + cfg["key"], "Host": cfg["name"]}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        t0 = time.perf_counter()
        conn.request(method, url, body=data, headers=headers)
        resp = conn.getresponse()
        if first_bytes:
            got = resp.read1(first_bytes)
            elapsed = time.perf_counter() - t0
            resp.read()  # the rest, so the connection can be reused
            return elapsed, resp.status if got else -1
        resp.read()
        return time.perf_counter() - t0, resp.status

    paths = cfg["paths"]
    samples: dict = {name: {} for name in paths}
    conns = {name: connect(p)[0] for name, p in paths.items()}

    def pooled(name: str, *args, **kwargs) -> tuple[float, int]:
        """Like a client's connection pool: a kept-alive connection the server has
        closed meanwhile (uvicorn after 5 idle seconds) is replaced, and the request
        sent again on the new one; only that attempt is timed."""
        try:
            return request(conns[name], *args, **kwargs)
        except (http.client.RemoteDisconnected, ConnectionError):
            conns[name].close()
            conns[name] = connect(paths[name])[0]
            return request(conns[name], *args, **kwargs)

    speech = {"model": "kokoro", "input": SHORT, "voice": cfg["voice"], "response_format": "wav"}
    stream = {"model": "kokoro", "input": PARAGRAPH, "voice": cfg["voice"],
              "response_format": "pcm", "stream": True}
    for name in paths:  # warm both paths (and the engine) before measuring
        for _ in range(2):
            pooled(name, "POST", "/v1/audio/speech", speech)
    statuses = set()
    for _ in range(cfg["rounds"]):
        for name, p in paths.items():  # alternate, so drift hits both paths alike
            s = samples[name]
            conn, tcp, tls = connect(p)
            conn.close()
            s.setdefault("connect_s", []).append(tcp)
            s.setdefault("connect_and_handshake_s", []).append(tls)
            for key, args in (
                ("voices_keepalive_s", ("GET", "/v1/audio/voices")),
                ("speech_short_wav_s", ("POST", "/v1/audio/speech", speech)),
            ):
                elapsed, status = pooled(name, *args)
                statuses.add(status)
                s.setdefault(key, []).append(elapsed)
            elapsed, status = pooled(name, "POST", "/v1/audio/speech", stream, first_bytes=4800)
            statuses.add(status)
            s.setdefault("stream_first_audio_s", []).append(elapsed)
    return {"samples": samples, "statuses": sorted(statuses)}


# --- on the controller --------------------------------------------------------------


def sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--container", default="stack-debian12",
                    help="the host (a test-bed systemd container) that runs the stack")
    ap.add_argument("--project", default="/opt/kokoro-deploy/stack")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--voice", default="af_heart")
    ap.add_argument("--out", type=Path, help="default: docs/benchmarks of this checkout")
    ap.add_argument("--on-host", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.on_host:
        print(json.dumps(on_host(json.loads(args.on_host))))
        return

    def host(*argv: str) -> str:
        return sh("docker", "exec", args.container, *argv)

    env = dict(line.split("=", 1) for line in host("cat", f"{args.project}/.env").splitlines()
               if "=" in line and not line.startswith("#"))
    if "compose.proxy.yml" not in env.get("COMPOSE_FILE", ""):
        sys.exit(f"{args.container}: the stack runs without the proxy (stack_proxy_enabled)")
    project = env.get("COMPOSE_PROJECT_NAME", "kokoro")
    kokoro = host("docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                  "--filter", "label=com.docker.compose.service=kokoro")
    address = host("docker", "inspect", "-f",
                   "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", kokoro).split()[0]
    cfg = {
        "key": host("cat", f"{args.project}/secrets/kokoro_api_keys").split()[0],
        "name": env["PROXY_SERVER_NAMES"].split(",")[0],
        "ca": f"{args.project}/proxy-ca.crt",
        "voice": args.voice,
        "rounds": args.rounds,
        "paths": {
            "proxy": {"address": "127.0.0.1", "port": int(env.get("PROXY_PORT", "443")),
                      "tls": True},
            "direct": {"address": address, "port": 8880, "tls": False},
        },
    }
    out = args.out or Path(__file__).resolve().parents[2] / "docs" / "benchmarks"
    script = Path(__file__).read_text()
    done = subprocess.run(
        ["docker", "exec", "-i", args.container, "python3", "-", "--on-host", json.dumps(cfg)],
        input=script, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"the run on {args.container} failed:\n{done.stderr[-3000:]}")
    raw = json.loads(done.stdout)
    if raw["statuses"] != [200]:
        sys.exit(f"not every request answered 200: {raw['statuses']}")
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"controller": platform.node(), "cpus": os.cpu_count(),
                    "load_avg_at_end": os.getloadavg()},
        "host": args.container,
        "images": {s: host("docker", "inspect", "-f", "{{.Config.Image}}",
                           host("docker", "ps", "-q", "--filter",
                                f"label=com.docker.compose.service={s}"))
                   for s in ("kokoro", "proxy")},
        "caddy": host("docker", "exec", host("docker", "ps", "-q", "--filter",
                                             "label=com.docker.compose.service=proxy"),
                      "caddy", "version").split()[0],
        "rounds": args.rounds,
        "median_s": {path: {k: statistics.median(v) for k, v in s.items()}
                     for path, s in raw["samples"].items()},
        "samples_s": raw["samples"],
    }
    med = result["median_s"]
    result["proxy_over_direct"] = {k: med["proxy"][k] / med["direct"][k] for k in med["proxy"]}
    result["proxy_minus_direct_ms"] = {k: 1000 * (med["proxy"][k] - med["direct"][k])
                                       for k in med["proxy"]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "proxy-overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "proxy-overhead.md").write_text(render(result))
    print(render(result))


def render(r: dict) -> str:
    labels = {
        "connect_s": "new connection: TCP connect",
        "connect_and_handshake_s": "new connection: TCP connect + TLS handshake (proxy only)",
        "voices_keepalive_s": "GET /v1/audio/voices, kept-alive connection",
        "speech_short_wav_s": f"POST /v1/audio/speech, WAV of \"{SHORT}\"",
        "stream_first_audio_s": "POST /v1/audio/speech stream=true (PCM), first 100 ms of audio",
    }
    med = r["median_s"]
    lines = [
        "# Kokoro through the TLS proxy against straight to its container",
        "",
        f"- Date: {r['date']}; host: the test-bed container `{r['host']}` on "
        f"`{r['machine']['controller']}` ({r['machine']['cpus']} cores, load average at the "
        f"end {', '.join(f'{x:.1f}' for x in r['machine']['load_avg_at_end'])})",
        f"- Images: {r['images']['kokoro']} (onnx int8 on the CPU), {r['images']['proxy']} "
        f"(Caddy {r['caddy']}); {r['rounds']} rounds, the two paths alternated",
        "- Made by `python tests/bench/proxy_bench.py` (medians; every sample in the JSON)",
        "",
        "| request | direct (ms) | through the proxy (ms) | difference (ms) | ratio |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for key, label in labels.items():
        lines.append(
            f"| {label} | {1000 * med['direct'][key]:.1f} | {1000 * med['proxy'][key]:.1f} | "
            f"{r['proxy_minus_direct_ms'][key]:+.1f} | {r['proxy_over_direct'][key]:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
