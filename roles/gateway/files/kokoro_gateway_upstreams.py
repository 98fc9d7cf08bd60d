#!/usr/bin/env python3
"""The fleet gateway's upstreams, on the gateway host: which hosts get requests, and
taking one out of service (drain) until its requests in flight have finished.

    kokoro-gateway-upstreams render          # upstreams.caddy from the inventory's hosts
    kokoro-gateway-upstreams drain HOST      # out of service; waits for its requests
    kokoro-gateway-upstreams undrain HOST    # back in service
    kokoro-gateway-upstreams status          # hosts, drained, requests in flight (JSON)

roles/gateway writes <config>/upstreams.json (the hosts, and per route the gateway serves,
kokoro and llm, each host's address and the balancing settings) and the Caddyfile that
imports <config>/upstreams.caddy, which defines a snippet per route (kokoro_upstreams,
llm_upstreams); this script is the one writer of that file and of <config>/drained (one
host per line, kept across site.yml runs). A drained host is out of every route, and a
drain waits for its requests in flight on all of them. A new
upstreams.caddy is checked by Caddy with the whole Caddyfile before it replaces the old
one, and the running gateway loads it without a restart: requests in flight finish on
the configuration they started on. Prints "changed" or "unchanged" on its last line.
Exit status: 0 done, 1 refused (the reason on stderr), 3 the host is not one of this
gateway's (rolling_update.yml asks every gateway and skips those that answer 3).
Python 3 standard library only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG_DIR = Path(os.environ.get("KOKORO_GATEWAY_CONFIG_DIR", "/etc/kokoro-gateway"))


class GatewayError(Exception):
    pass


class NotOurHost(GatewayError):
    """The host is in none of the gateway's routes (exit status 3)."""


def load_settings() -> dict:
    path = CONFIG_DIR / "upstreams.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise GatewayError(
            f"{path} does not exist: run roles/gateway on this host first") from None


def drained() -> list[str]:
    path = CONFIG_DIR / "drained"
    return path.read_text().split() if path.exists() else []


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` whole, readable by root and the gateway's group (the folder's):
    upstreams.caddy carries a key for the health checks."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chown(tmp, -1, path.parent.stat().st_gid)
    os.chmod(tmp, 0o640)
    os.replace(tmp, path)


# Every route the Caddyfile may import; one the gateway does not serve answers 404, so
# a Caddyfile that still imports it (a route being turned off) stays valid.
ROUTES = ("kokoro", "llm")


def proxy_block(route: dict, out: list[str]) -> str:
    """A route's handler: a balanced reverse_proxy over the hosts in service."""
    live = [name for name in route["to"] if name not in out]
    if not live:
        return (
            "header Content-Type application/json\n"
            'respond `{"error":{"message":"Every host of the fleet is drained '
            '(ansible/rolling_update.yml); try again shortly","type":"server_error",'
            '"code":"no_upstream"}}` 503\n'
        )
    lines = ["reverse_proxy {"]
    lines += [f"\tto {route['to'][name]}" for name in live]
    lines += [f"\t{line}" for line in route["options"]]
    lines.append("}")
    return "\n".join(lines) + "\n"


NOT_SERVED = (
    "header Content-Type application/json\n"
    'respond `{"error":{"message":"No such route at the gateway","type":"invalid_request_error",'
    '"code":"not_found"}}` 404\n'
)


def snippets(settings: dict, out: list[str]) -> str:
    """upstreams.caddy: one snippet per route, <route>_upstreams."""
    parts = []
    for name in ROUTES:
        route = settings["routes"].get(name)
        body = proxy_block(route, out) if route else NOT_SERVED
        inner = "".join(f"\t{line}\n" if line else "\n" for line in body.splitlines())
        parts.append(f"({name}_upstreams) {{\n{inner}}}\n")
    return "\n".join(parts)


def addresses(settings: dict, host: str) -> list[str]:
    """The host's dial addresses (host:port), each once: in_flight() reads what Caddy's
    admin API counts per address dialled, whichever route sent the requests and whether
    Caddy spells the address with the LLM's tcp/ prefix or without; a request in flight
    is still counted after the host has left the configuration."""
    return sorted({dial(route["to"][host]) for route in settings["routes"].values()
                   if host in route["to"]})


def validate(settings: dict, caddyfile: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        env = dict(os.environ, XDG_DATA_HOME=scratch, XDG_CONFIG_HOME=scratch)
        r = subprocess.run(
            [settings["caddy"], "validate", "--adapter", "caddyfile", "--config", str(caddyfile)],
            capture_output=True, text=True, env=env, check=False,
        )
    if r.returncode:
        raise GatewayError(f"Caddy refuses the gateway's configuration: {r.stderr.strip()[-800:]}")


def reload_if_running(settings: dict) -> None:
    unit = settings.get("unit", "kokoro-gateway")
    active = subprocess.run(["systemctl", "is-active", "--quiet", unit], check=False)
    if active.returncode == 0:
        subprocess.run(["systemctl", "reload", unit], check=True)


def render(out: list[str] | None = None) -> bool:
    """Write upstreams.caddy for the hosts in service and load it; True when it changed."""
    settings = load_settings()
    out = drained() if out is None else out
    path = CONFIG_DIR / "upstreams.caddy"
    new = snippets(settings, out)
    old = path.read_text() if path.exists() else None
    if new == old:
        return False
    write_atomic(path, new)
    caddyfile = CONFIG_DIR / "Caddyfile"
    if not caddyfile.exists():  # a new gateway: roles/gateway checks the Caddyfile next
        return True
    try:
        validate(settings, caddyfile)
    except GatewayError:
        if old is None:
            path.unlink()
        else:
            write_atomic(path, old)
        raise
    reload_if_running(settings)
    return True


def set_drained(host: str, out: bool) -> bool:
    settings = load_settings()
    if host not in settings["hosts"]:
        raise NotOurHost(
            f"{host} is not one of the gateway's hosts ({', '.join(settings['hosts'])}): "
            "name a host of its upstream group as the inventory does")
    now = drained()
    wanted = sorted(set(now) | {host}) if out else [h for h in now if h != host]
    if wanted != now:
        write_atomic(CONFIG_DIR / "drained", "".join(f"{h}\n" for h in wanted))
    return render(wanted) or wanted != now


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.path)


def in_flight(settings: dict) -> dict[str, int]:
    """{dial address: requests in flight} from Caddy's admin API."""
    conn = UnixHTTPConnection(settings["admin_socket"])
    conn.request("GET", "/reverse_proxy/upstreams")
    answer = conn.getresponse()
    body = answer.read()
    if answer.status != 200:
        raise GatewayError(f"the gateway's admin API answered {answer.status}: {body[:200]!r}")
    flight: dict[str, int] = {}
    for u in json.loads(body):
        # Caddy lists an upstream under its dial address as written (the LLM's with tcp/)
        # and, at times, the same request again under the bare host:port: the larger count
        # of the two spellings is the host's (0 only when both are).
        address = dial(u["address"])
        flight[address] = max(flight.get(address, 0), u["num_requests"])
    return flight


def dial(url: str) -> str:
    """http://a:8880 and tcp/a:8080 -> a:8880 and a:8080."""
    address = url.split("://", 1)[-1]
    return address.removeprefix("tcp/")


def wait_drained(host: str, timeout: float) -> None:
    settings = load_settings()
    mine = addresses(settings, host)
    deadline = time.monotonic() + timeout
    while True:
        flight = in_flight(settings)
        left = sum(flight.get(address, 0) for address in mine)
        if left == 0:
            return
        if time.monotonic() > deadline:
            raise GatewayError(
                f"{host} still has {left} request(s) in flight at the gateway after {timeout:g} s; "
                "it takes no new ones. Raise gateway_drain_timeout, or undrain it with "
                f"kokoro-gateway-upstreams undrain {host}")
        time.sleep(0.2)


def status() -> dict:
    settings = load_settings()
    try:
        flight = in_flight(settings)
    except OSError:
        flight = {}
    return {
        "hosts": {name: {route: r["to"][name] for route, r in sorted(settings["routes"].items())
                         if name in r["to"]} for name in settings["hosts"]},
        "drained": drained(),
        # Per host, its requests in flight on every route.
        "in_flight": {name: sum(flight.get(a, 0) for a in addresses(settings, name))
                      for name in settings["hosts"]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("render")
    drain = sub.add_parser("drain")
    drain.add_argument("host")
    drain.add_argument("--timeout", type=float, default=300)
    sub.add_parser("undrain").add_argument("host")
    sub.add_parser("status")
    args = parser.parse_args(argv)
    try:
        if args.command == "status":
            print(json.dumps(status(), indent=2, sort_keys=True))
            return 0
        if args.command == "render":
            changed = render()
        else:
            changed = set_drained(args.host, args.command == "drain")
            if args.command == "drain":
                wait_drained(args.host, args.timeout)
    except GatewayError as e:
        print(f"kokoro-gateway-upstreams: {e}", file=sys.stderr)
        return 3 if isinstance(e, NotOurHost) else 1
    print("changed" if changed else "unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
