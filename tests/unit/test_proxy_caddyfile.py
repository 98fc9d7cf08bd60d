"""The Caddyfile roles/stack_proxy renders (templates/Caddyfile.j2) is one that the pinned
Caddy release (images/proxy/Dockerfile) accepts: rendered by ansible-playbook from the
role's own defaults and vars, then adapted and validated by that exact binary (the
archive tests/testbed/caddy_release.sh puts on the test bed's mirror, its sha256 checked
against the pin). Every proxied route carries its request_body limit; a limit that is
not a size is refused by the role, naming the variable and the fix."""

import json
import re
import subprocess
from pathlib import Path

import pytest
from caddy_config import adapt, body_limits, caddy_env, pinned_caddy, render


@pytest.fixture(scope="module")
def caddy(tmp_path_factory) -> Path:
    return pinned_caddy(tmp_path_factory.mktemp("caddy"))


@pytest.mark.parametrize("tls", ["internal", "acme"])
def test_the_rendered_caddyfile_validates_with_the_pinned_caddy(caddy, tmp_path, tls):
    r = render(tmp_path, stack_proxy_tls=tls, stack_proxy_acme_email="ops@example.internal")
    assert r.returncode == 0, r.stdout + r.stderr
    v = subprocess.run(
        [str(caddy), "validate", "--adapter", "caddyfile", "--config", str(tmp_path / "Caddyfile")],
        capture_output=True,
        text=True,
        env=caddy_env(tmp_path),
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
        stack_proxy_webui_max_body_size="20MB",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert body_limits(adapt(caddy, tmp_path)) == {
        "kokoro:8880": 300 * 1024,
        "llm:8080": 2 * 1024 * 1024,
        "comfyui:8188": 50 * 1000 * 1000,
        "webui:8080": 20 * 1000 * 1000,
    }


def declared_length_limits(config: dict) -> dict[str, int]:
    """{service: the Content-Length over which the proxy answers 413 before proxying}."""
    text = json.dumps(config)
    found = re.findall(r'> (\d+)\", \"name\": \"(\w+)_body_over\"', text)
    return {name: int(number) for number, name in found}


@pytest.mark.parametrize("sizes", [("300KiB", "2MiB", "50MB"), ("256KB", "1GiB", "7B")])
def test_a_declared_length_is_held_to_the_same_limit_caddy_counts(caddy, tmp_path, sizes):
    """The Content-Length check (a number the role computes) and request_body (a size
    Caddy reads) are one limit in two forms: the same bytes for every unit."""
    kokoro, llm, comfyui = sizes
    r = render(tmp_path, stack_proxy_kokoro_max_body_size=kokoro,
               stack_proxy_llm_max_body_size=llm, stack_proxy_comfyui_max_body_size=comfyui)
    assert r.returncode == 0, r.stdout + r.stderr
    config = adapt(caddy, tmp_path)
    counted = {dial.split(":")[0]: size for dial, size in body_limits(config).items()}
    assert declared_length_limits(config) == counted
    assert set(counted) == {"kokoro", "llm", "comfyui", "webui"}


def test_http1_bodies_flow_while_an_answer_goes_back(caddy, tmp_path):
    """Full duplex on the API server (see tests/unit/test_proxy_body_limits.py)."""
    assert render(tmp_path).returncode == 0
    servers = adapt(caddy, tmp_path)["apps"]["http"]["servers"].values()
    api = [s for s in servers if any("8443" in a for a in s["listen"])]
    assert api and all(s.get("enable_full_duplex") for s in api)


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


def test_a_named_kokoro_key_is_checked_without_its_name(caddy, tmp_path):
    # alice:KEY in Kokoro's key file names the key for the server's quotas; clients send
    # KEY, so that is what the proxy compares.
    r = render(tmp_path, __stack_api_keys={
        "kokoro": ["alice:kokoro-key-0123456789abcdef", "kokoro-key2-0123456789abcdef"],
        "llm": ["llm-key-0123456789abcdef"], "comfyui": ["comfyui-key-0123456789abcdef"]})
    assert r.returncode == 0, r.stdout + r.stderr
    text = (tmp_path / "Caddyfile").read_text()
    assert "alice" not in text
    for key in ("kokoro-key-0123456789abcdef", "kokoro-key2-0123456789abcdef"):
        assert f"Bearer {key}" in text
    adapt(caddy, tmp_path)
