"""What the registry's acceptance checks share: where the registry's settings come from
(the host's inventory over the role's defaults) and an HTTP(S) client that runs on the
host with python3's standard library (see test_registry.py for the settings)."""

import ipaddress
import json
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
ROLE_DEFAULTS = yaml.safe_load((REPO / "roles/registry/defaults/main.yml").read_text())
SERVICE = "docker-registry"
SERVICE_USER = "docker-registry"
CONFIG_DIR = "/etc/docker/registry"
TLS_DIR = f"{CONFIG_DIR}/tls"
HTPASSWD = f"{CONFIG_DIR}/htpasswd"

# One request each (GET /v2/ unless method, path and accept say otherwise): {address,
# port, name (TLS name and Host), tls, ca (PEM, or none for the system's trust store),
# user, password}. Answers, in order, {status, api, auth, digest} or {error}.
CLIENT = r"""
import base64, http.client, json, socket, ssl, sys
out = []
for r in json.loads(sys.argv[1]):
    try:
        sock = socket.create_connection((r["address"], r["port"]), timeout=15)
        if r["tls"]:
            ctx = ssl.create_default_context(cadata=r.get("ca") or None)
            sock = ctx.wrap_socket(sock, server_hostname=r["name"])
        name = "[%s]" % r["name"] if ":" in r["name"] else r["name"]
        conn = http.client.HTTPConnection(name, r["port"], timeout=15)
        conn.sock = sock
        headers = {}
        if r.get("user") is not None:
            token = base64.b64encode((r["user"] + ":" + r["password"]).encode()).decode()
            headers["Authorization"] = "Basic " + token
        if r.get("accept"):
            headers["Accept"] = r["accept"]
        conn.request(r.get("method", "GET"), r.get("path", "/v2/"), headers=headers)
        resp = conn.getresponse()
        resp.read()
        out.append({"status": resp.status,
                    "api": resp.getheader("Docker-Distribution-Api-Version"),
                    "auth": resp.getheader("WWW-Authenticate"),
                    "digest": resp.getheader("Docker-Content-Digest")})
    except Exception as exc:
        out.append({"error": type(exc).__name__ + ": " + str(exc)})
print(json.dumps(out))
"""


def inventory(host) -> dict:
    try:
        return host.ansible.get_variables()
    except (AttributeError, RuntimeError):  # local:// backend: no inventory
        return {}


def plain(value):
    """The value when the inventory holds it as data; None for a Jinja expression or a
    vault-encrypted value (testinfra reads the inventory untemplated, undecrypted)."""
    if isinstance(value, str):
        return None if "{{" in value or "$ANSIBLE_VAULT" in value else value
    if isinstance(value, list):
        items = [plain(v) for v in value]
        return None if any(i is None for i in items) else items
    if isinstance(value, dict):
        if "__ansible_vault" in value:
            return None
        items = {k: plain(v) for k, v in value.items()}
        return None if any(v is None for v in items.values()) else items
    return value


def setting(host, name):
    """The role variable for this host: the inventory's, else the role's default; None
    where either is an expression this check cannot evaluate."""
    values = inventory(host)
    return plain(values[name] if name in values else ROLE_DEFAULTS[name])


def san_entries(names) -> set[str]:
    """Names as the certificate's SAN entries: "IP:<address>" (normalised) or "DNS:<name>"."""
    out = set()
    for name in names:
        try:
            out.add(f"IP:{ipaddress.ip_address(name)}")
        except ValueError:
            out.add(f"DNS:{name.lower()}")
    return out


def get(host, reqs: list[dict]) -> list[dict]:
    cmd = host.run("python3 -c %s %s", CLIENT, json.dumps(reqs))
    assert cmd.rc == 0, f"the HTTP client failed on the host: {cmd.stderr}"
    return json.loads(cmd.stdout)


def req(registry, name, ca=None, tls=True, **more) -> dict:
    """One request to the registry at its address on the host, as `name` (more: user,
    password, method, path, accept)."""
    return {"address": registry["address"], "port": registry["port"], "name": name,
            "tls": tls, "ca": ca, **more}


