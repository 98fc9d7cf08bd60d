"""roles/gateway's controller-side facts and its upstreams tool's rendering: the key rule
is the stack's (keys go into a Caddyfile either way), the Caddy pin is read from its one
home, and the proxy block names exactly the hosts in service."""

import re
from pathlib import Path

import kokoro_gateway_upstreams as upstreams
import yaml
from ansible_collections.kokoro.deploy.plugins.module_utils.stack_proxy import (
    stack_proxy_size_bytes,
)

REPO = Path(__file__).resolve().parents[2]


def role_vars(role: str) -> dict:
    return yaml.safe_load((REPO / "roles" / role / "vars/main.yml").read_text())


def test_the_gateway_admits_the_keys_the_stack_admits():
    gateway, stack = role_vars("gateway"), role_vars("stack")
    assert gateway["__gateway_key_pattern"] == stack["__stack_key_pattern"]


def test_the_gateways_body_limit_is_the_hosts_proxys_for_kokoro():
    gateway = yaml.safe_load((REPO / "roles/gateway/defaults/main.yml").read_text())
    proxy = yaml.safe_load((REPO / "roles/stack_proxy/defaults/main.yml").read_text())
    size = proxy["stack_proxy_kokoro_max_body_size"]
    assert gateway["gateway_max_body_bytes"] == stack_proxy_size_bytes(size)


def test_the_caddy_pin_is_read_from_the_proxy_images_dockerfile():
    text = (REPO / "roles/gateway/vars/main.yml").read_text()
    assert "images/proxy/Dockerfile" in text
    assert not re.search(r"\b2\.\d+\.\d+\b|[0-9a-f]{64}", text), "no copy of the pin"


SETTINGS = {
    "hosts": {"a": "http://a:8880", "b": "http://b:8880"},
    "options": ["lb_policy least_conn", "health_headers {", "  Authorization \"Bearer k\"", "}"],
}


def test_the_proxy_block_names_the_hosts_in_service_only():
    block = upstreams.proxy_block(SETTINGS, ["b"])
    assert "to http://a:8880" in block and "http://b:8880" not in block
    assert block.startswith("reverse_proxy {") and "\tlb_policy least_conn" in block


def test_a_fleet_with_every_host_drained_answers_503_naming_it():
    block = upstreams.proxy_block(SETTINGS, ["a", "b"])
    assert "reverse_proxy" not in block and "no_upstream" in block
    assert block.rstrip().endswith("503")
