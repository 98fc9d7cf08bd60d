"""roles/gateway in https upstream mode (the fleet's default), by traffic: the pinned Caddy
runs the role's Caddyfile (LLM on) and the role's upstreams tool's upstreams.caddy in front
of loopback TLS stand-ins of the hosts' proxies, whose certificates come from a throwaway
CA that the gateway trusts through gateway_upstream_ca_files. Both routes reach both hosts
over TLS (the LLM's through its tcp/ addresses, verified by name), the readiness checks
pass with each route's key, hosts whose certificate is from another CA or for another
name get nothing, and the tool's status and drain count a host's LLM request in flight.

The one change to what the role would run: the Caddyfile is adapted to JSON with the
internal CA's trust-store installation turned off (the role runs Caddy as an unprivileged
user; here it may be root, and would write into this machine's trust store)."""

from __future__ import annotations

import datetime
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path

import kokoro_gateway_upstreams as upstreams
import pytest
from caddy_config import caddy_env, pinned_caddy
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_gateway import KOKORO_KEY, LLM_KEY, render_role

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "roles/gateway/files/kokoro_gateway_upstreams.py"
DEADLINE = 30.0  # generous: every wait is on a condition, never on the clock


def wait_for(condition, what: str, deadline: float = DEADLINE):
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


# --- a throwaway CA and its certificates ---------------------------------------------------

def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class CA:
    def __init__(self, cn: str):
        self.key = _key()
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256()))

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, folder: Path, stem: str, name: str) -> tuple[Path, Path]:
        """A server certificate for `name` (a DNS name, or an IP address as an IP SAN)."""
        key = _key()
        try:
            san = x509.IPAddress(ip_address(name))
        except ValueError:
            san = x509.DNSName(name)
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(self.key, hashes.SHA256()))
        crt, pem_key = folder / f"{stem}.crt", folder / f"{stem}.key"
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pem_key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        return crt, pem_key


# --- the hosts' proxies' stand-ins ---------------------------------------------------------

class Host:
    """A host's proxy on loopback, over TLS: /kokoro/* and /v1/audio/* behind Kokoro's key,
    /llm/* and /v1/chat/* behind the LLM's, each answer naming the host. A chat request
    whose body says "hold" is answered once `release` is set."""

    def __init__(self, name: str, cert: Path, key: Path):
        self.name = name
        self.requests: list[tuple[str, str, str]] = []  # (method, path, Authorization)
        self.answered: list[tuple[str, int]] = []
        self.server_names: list[str | None] = []  # SNI of each TLS handshake begun
        self.held = threading.Event()
        self.release = threading.Event()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        context.sni_callback = lambda _sock, sni, _ctx: self.server_names.append(sni)
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def answer(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                host.answered.append((self.path, status))

            def serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                auth = self.headers.get("Authorization", "")
                host.requests.append((self.command, self.path, auth))
                if self.path.startswith(("/kokoro/", "/v1/audio/")):
                    key = KOKORO_KEY
                elif self.path.startswith(("/llm/", "/v1/chat/")):
                    key = LLM_KEY
                else:
                    return self.answer(404, {"host": host.name})
                if auth != f"Bearer {key}":
                    return self.answer(401, {"host": host.name})
                if b"hold" in body:
                    host.held.set()
                    host.release.wait(120)
                self.answer(200, {"host": host.name, "path": self.path})

            do_GET = do_POST = serve

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a refused handshake (the gateway does not trust us): expected

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True,
                                                 do_handshake_on_connect=False)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def served(self, path: str) -> list[int]:
        return [status for p, status in list(self.answered) if p == path]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the gateway ---------------------------------------------------------------------------

def config_json(caddy: Path, etc: Path) -> bytes:
    """The Caddyfile as Caddy adapts it, with the internal CA's trust-store installation
    off (see the module's docstring)."""
    r = subprocess.run([str(caddy), "adapt", "--adapter", "caddyfile",
                        "--config", str(etc / "Caddyfile")],
                       capture_output=True, text=True, env=caddy_env(etc), check=False)
    assert r.returncode == 0, r.stderr
    config = json.loads(r.stdout)
    for ca in config.get("apps", {}).get("pki", {}).get("certificate_authorities", {}).values():
        ca["install_trust"] = False
    return json.dumps(config).encode()


class Gateway:
    def __init__(self, caddy: Path, etc: Path, socket_path: str, port: int, ca: CA):
        self.caddy, self.etc, self.socket_path, self.port = caddy, etc, socket_path, port
        (etc / "config.json").write_bytes(config_json(caddy, etc))
        self.log = open(etc / "caddy.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [str(caddy), "run", "--config", str(etc / "config.json")],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            env=caddy_env(etc), start_new_session=True)
        self.context = ssl.create_default_context(cadata=ca.pem().decode())

    def reload(self, _settings=None) -> None:
        """What the unit's ExecReload does (caddy reload), through the admin socket."""
        conn = upstreams.UnixHTTPConnection(self.socket_path)
        conn.request("POST", "/load", body=config_json(self.caddy, self.etc),
                     headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        assert answer.status == 200, answer.read()

    def request(self, method: str, path: str, key: str, body: dict | None = None):
        conn = http.client.HTTPSConnection("localhost", self.port, context=self.context,
                                           timeout=60)
        try:
            data = json.dumps(body or {}).encode() if method == "POST" else None
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            conn.request(method, path, body=data, headers=headers)
            answer = conn.getresponse()
            return answer.status, answer.read()
        finally:
            conn.close()

    def log_tail(self) -> str:
        return (self.etc / "caddy.log").read_text(errors="replace")[-12000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    caddy = pinned_caddy(tmp_path_factory.mktemp("caddy"))
    tmp = tmp_path_factory.mktemp("https")
    certs = tmp / "certs"
    certs.mkdir()
    ca, stranger = CA("fleet test CA"), CA("some other CA")
    (certs / "ca.crt").write_bytes(ca.pem())
    # a: by name (SNI "localhost"); b: by address (an IP SAN); each at its own port, as
    # both sit on this machine's loopback. Neither certificate names the other's address.
    hosts = {
        "a": ("localhost", Host("a", *ca.issue(certs, "a", "localhost"))),
        "b": ("127.0.0.1", Host("b", *ca.issue(certs, "b", "127.0.0.1"))),
    }
    # Hosts the gateway must not use: a certificate from another CA, and one of the
    # fleet's CA for another name. Each route at its own port, to tell their checks apart.
    refused = {
        name: {route: Host(name, *issuer.issue(certs, f"{name}-{route}", cert_name))
               for route in ("kokoro", "llm")}
        for name, issuer, cert_name in (("stranger", stranger, "localhost"),
                                        ("misnamed", ca, "elsewhere.invalid"))
    }
    gateway_crt, gateway_key = ca.issue(certs, "gateway", "localhost")
    port = free_port()
    socket_dir = tempfile.mkdtemp(prefix="kgw-")  # short: a unix socket's path is limited
    socket_path = os.path.join(socket_dir, "admin.sock")
    r = render_role(
        tmp, gateway_upstream_scheme="https", gateway_upstream_port=443,
        gateway_llm_enabled=True, gateway_llm_api_keys=[LLM_KEY],
        gateway_upstream_ca_files=[str(certs / "ca.crt")],
        gateway_tls="files", gateway_tls_cert_file=str(gateway_crt),
        gateway_tls_key_file=str(gateway_key), gateway_server_names=["localhost"],
        gateway_bind_address="127.0.0.1", gateway_port=port, gateway_health_interval="1s",
        __gateway_admin_socket=socket_path)
    assert r.returncode == 0, r.stdout + r.stderr
    etc = tmp / "etc"
    # What tasks/config.yml writes beside the template: the certificate and the trust pool.
    shutil.copy(gateway_crt, etc / "tls.crt")
    shutil.copy(gateway_key, etc / "tls.key")
    (etc / "upstream-ca.pem").write_text((certs / "ca.crt").read_text() + "\n")
    # upstreams.json as the role wrote it (its balancing, readiness checks and TLS
    # transport per route), with the inventory's hosts swapped for the stand-ins: the
    # role's shapes, <scheme>://<name>:<port> for Kokoro and tcp/<name>:<port> for the LLM.
    settings = json.loads((etc / "upstreams.json").read_text())
    assert settings["routes"]["kokoro"]["to"]["up-a"] == "https://up-a:443"
    assert settings["routes"]["llm"]["to"]["up-a"] == "tcp/up-a:443"
    assert any("tls_trust_pool file" in o for o in settings["routes"]["llm"]["options"])
    to = {"kokoro": {}, "llm": {}}
    for name, (address, host) in hosts.items():
        to["kokoro"][name] = f"https://{address}:{host.port}"
        to["llm"][name] = f"tcp/{address}:{host.port}"
    for name, routes in refused.items():
        for route, host in routes.items():
            to[route][name] = (f"https://localhost:{host.port}" if route == "kokoro"
                               else f"tcp/localhost:{host.port}")
    settings["hosts"] = [*hosts, *refused]
    settings["caddy"] = str(caddy)
    for route in ("kokoro", "llm"):
        settings["routes"][route]["to"] = to[route]
    (etc / "upstreams.json").write_text(json.dumps(settings, indent=2))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(upstreams, "CONFIG_DIR", etc)
        assert upstreams.render([]) is True  # the tool's upstreams.caddy, checked by Caddy
        gateway = Gateway(caddy, etc, socket_path, port, ca)
        try:
            wait_for(lambda: gateway.process.poll() is not None or os.path.exists(socket_path),
                     "Caddy's admin socket")
            assert gateway.process.poll() is None, gateway.log_tail()
            # Every refused host's readiness check has been tried (and failed) on its
            # route, twice: the first check's verdict is in before requests are sent.
            for routes in refused.values():
                for host in routes.values():
                    wait_for(lambda h=host: len(h.server_names) >= 2,
                             f"the gateway's handshakes with {host.name}")
            for _, host in hosts.values():
                wait_for(lambda h=host: h.served("/kokoro/health") and h.served("/llm/health"),
                         f"readiness checks at {host.name}")
            gateway.hosts = {n: h for n, (_, h) in hosts.items()}
            gateway.refused = refused
            yield gateway
        finally:
            gateway.stop()
            shutil.rmtree(socket_dir, ignore_errors=True)


def spread(gateway: Gateway, path: str, key: str) -> set[str]:
    """Requests until both hosts have answered one; every one answered 200."""
    seen: set[str] = set()

    def both():
        status, body = gateway.request("POST", path, key, {"input": "hi"})
        if status != 200:  # the whole log tail: an assertion's repr would be cut short
            pytest.fail(f"{path} answered {status} {body!r}; Caddy's log:\n"
                        f"{gateway.log_tail()}")
        seen.add(json.loads(body)["host"])
        return seen >= {"a", "b"}

    wait_for(both, f"both hosts to answer {path}")
    return seen


def test_kokoro_reaches_both_hosts_over_tls(fleet):
    assert spread(fleet, "/v1/audio/speech", KOKORO_KEY) == {"a", "b"}
    status, body = fleet.request("GET", "/health", KOKORO_KEY)
    assert status == 200 and json.loads(body)["path"] == "/kokoro/health"
    status, body = fleet.request("GET", "/kokoro/health", KOKORO_KEY)
    assert status == 200 and json.loads(body)["host"] in {"a", "b"}


def test_the_llm_reaches_both_hosts_over_tls_through_its_tcp_addresses(fleet):
    assert spread(fleet, "/v1/chat/completions", LLM_KEY) == {"a", "b"}
    status, body = fleet.request("GET", "/llm/health", LLM_KEY)
    assert status == 200 and json.loads(body)["path"] == "/llm/health"
    # Each route with its own key: the LLM's is not Kokoro's.
    assert fleet.request("POST", "/v1/chat/completions", KOKORO_KEY)[0] == 401


def test_readiness_checks_pass_with_each_routes_key(fleet):
    for host in fleet.hosts.values():
        checks = {(path, auth) for method, path, auth in host.requests
                  if path.endswith("/health") and method == "GET"}
        assert ("/kokoro/health", f"Bearer {KOKORO_KEY}") in checks
        assert ("/llm/health", f"Bearer {LLM_KEY}") in checks
        assert set(host.served("/kokoro/health")) == {200}
        assert set(host.served("/llm/health")) == {200}


def test_the_gateway_verifies_each_hosts_name(fleet):
    # Host a is dialled by name on both routes (Kokoro's https:// and the LLM's tcp/):
    # every handshake names it; b's address is no name, so no SNI (an IP SAN verifies it).
    assert fleet.hosts["a"].server_names and set(fleet.hosts["a"].server_names) == {"localhost"}
    assert set(fleet.hosts["b"].server_names) == {None}


def test_hosts_with_an_untrusted_or_misnamed_certificate_get_nothing(fleet):
    spread(fleet, "/v1/audio/speech", KOKORO_KEY)
    spread(fleet, "/v1/chat/completions", LLM_KEY)
    for name, routes in fleet.refused.items():
        for route, host in routes.items():
            assert host.server_names, (name, route)  # the gateway tried...
            assert host.requests == [], (name, route)  # ...and sent no request


def run_tool(etc: Path, *args: str) -> subprocess.CompletedProcess:
    """The installed tool as an operator runs it, its config folder from the environment."""
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                          env=dict(os.environ, KOKORO_GATEWAY_CONFIG_DIR=str(etc)), check=False)


def test_status_and_drain_count_an_llm_request_in_flight(fleet, monkeypatch):
    etc = fleet.etc
    monkeypatch.setattr(upstreams, "CONFIG_DIR", etc)
    monkeypatch.setattr(upstreams, "reload_if_running", fleet.reload)
    answers = []
    client = threading.Thread(target=lambda: answers.append(fleet.request(
        "POST", "/v1/chat/completions", LLM_KEY, {"hold": True})), daemon=True)
    client.start()
    [holder] = wait_for(lambda: [n for n, h in fleet.hosts.items() if h.held.is_set()],
                        "the held LLM request to reach a host")
    other = ({"a", "b"} - {holder}).pop()
    host = fleet.hosts[holder]
    try:
        r = run_tool(etc, "status")
        assert r.returncode == 0, r.stderr
        shown = json.loads(r.stdout)
        assert shown["in_flight"][holder] == 1, shown
        assert shown["in_flight"][other] == 0, shown

        polls = []
        real_in_flight = upstreams.in_flight

        def counted(settings):
            flight = real_in_flight(settings)
            polls.append(flight)
            return flight

        monkeypatch.setattr(upstreams, "in_flight", counted)
        drained = []
        drain = threading.Thread(target=lambda: drained.append(
            upstreams.main(["drain", holder, "--timeout", "120"])), daemon=True)
        drain.start()
        # The drain has taken the host out and polled its count more than once: it waits.
        wait_for(lambda: len(polls) >= 3 or not drain.is_alive(), "the drain to poll")
        assert drain.is_alive() and not drained, "drain returned with a request in flight"
        assert upstreams.drained() == [holder]
        # The drained host gets no new request; the other one takes them.
        for _ in range(4):
            status, body = fleet.request("POST", "/v1/chat/completions", LLM_KEY)
            assert status == 200 and json.loads(body)["host"] == other
    finally:
        host.release.set()
    client.join(DEADLINE)
    assert answers and answers[0][0] == 200, answers  # it finished on the old configuration
    drain.join(DEADLINE)
    assert drained == [0]
    assert upstreams.main(["undrain", holder]) == 0
    assert spread(fleet, "/v1/chat/completions", LLM_KEY) == {"a", "b"}
