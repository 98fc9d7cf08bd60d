"""roles/gateway's controller-side facts and its upstreams tool's rendering: the key rule
is the stack's (keys go into a Caddyfile either way), the Caddy pin is read from its one
home, the proxy block names exactly the hosts in service, the role's Caddyfile (with the
tool's upstreams) is one the pinned Caddy takes, with each route behind its own keys, and
bad settings or a binary that is not the pin's are refused."""

import hashlib
import json
import platform
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

import kokoro_gateway_upstreams as upstreams
import pytest
import yaml
from ansible_collections.kokoro.deploy.plugins.module_utils.stack_proxy import (
    stack_proxy_size_bytes,
)
from caddy_config import adapt, body_limits, pin, pinned_caddy
from local_play import role_play, run_local_play, run_role_tasks

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
    "hosts": ["a", "b"],
    "routes": {
        "kokoro": {
            "to": {"a": "http://a:8880", "b": "http://b:8880"},
            "options": ["lb_policy least_conn", "health_headers {",
                        '  Authorization "Bearer k"', "}"],
        },
        "llm": {"to": {"a": "tcp/a:8080", "b": "tcp/b:8080"}, "options": ["lb_policy least_conn"]},
    },
}


def test_the_proxy_block_names_the_hosts_in_service_only():
    block = upstreams.proxy_block(SETTINGS["routes"]["kokoro"], ["b"])
    assert "to http://a:8880" in block and "http://b:8880" not in block
    assert block.startswith("reverse_proxy {") and "\tlb_policy least_conn" in block


def test_a_drained_host_is_out_of_every_route():
    text = upstreams.snippets(SETTINGS, ["b"])
    assert "(kokoro_upstreams) {" in text and "(llm_upstreams) {" in text
    assert "to http://a:8880" in text and "to tcp/a:8080" in text and ":b:" not in text
    assert "b:8880" not in text and "b:8080" not in text


def test_a_route_the_gateway_does_not_serve_answers_404():
    kokoro_only = {"hosts": ["a"], "routes": {"kokoro": SETTINGS["routes"]["kokoro"]}}
    text = upstreams.snippets(kokoro_only, [])
    llm = text[text.index("(llm_upstreams)"):]
    assert "reverse_proxy" not in llm and "not_found" in llm and llm.rstrip().endswith("}")


def test_a_drain_waits_on_the_hosts_address_on_every_route():
    assert upstreams.addresses(SETTINGS, "a") == ["a:8080", "a:8880"]
    # Where both routes reach a host's proxy, its one address counts both.
    proxied = {"hosts": ["a"], "routes": {"kokoro": {"to": {"a": "https://a:443"}},
                                          "llm": {"to": {"a": "tcp/a:443"}}}}
    assert upstreams.addresses(proxied, "a") == ["a:443"]


def test_a_fleet_with_every_host_drained_answers_503_naming_it():
    block = upstreams.proxy_block(SETTINGS["routes"]["kokoro"], ["a", "b"])
    assert "reverse_proxy" not in block and "no_upstream" in block
    assert block.rstrip().endswith("503")


# The role's settings check and templates, run by ansible-playbook from its defaults and
# vars on this machine (the proxy's tests' pattern, tests/unit/caddy_config.py), in front
# of an inventory group of two hosts.
PLAY = role_play(["gateway"], """\
    - name: Check the gateway's settings as the role does.
      ansible.builtin.include_tasks: {repo}/roles/gateway/tasks/settings.yml
    - name: Write upstreams.json as the role does.
      ansible.builtin.copy:
        content: "{{{{ __gateway_settings | to_nice_json(indent=2, sort_keys=true) }}}}\\n"
        dest: "{{{{ gateway_config_dir }}}}/upstreams.json"
        mode: "0600"
    - name: Render the Caddyfile.
      ansible.builtin.template:
        src: {repo}/roles/gateway/templates/Caddyfile.j2
        dest: "{{{{ gateway_config_dir }}}}/Caddyfile"
        mode: "0600"
""")
KOKORO_KEY = "kokoro-key-0123456789abcdef"
LLM_KEY = "llm-key-0123456789abcdef"


TWO_HOSTS = "kokoro_hosts:\n  hosts:\n    up-a:\n    up-b:\n"
# Three hosts known by an IPv4 address, an IPv6 address and a DNS name; only up-a runs
# the LLM.
MIXED_FLEET = """
kokoro_hosts:
  hosts:
    up-a: {ansible_host: 192.0.2.10}
    up-b: {ansible_host: "2001:db8::2"}
    up-c: {ansible_host: up-c.example.internal}
gpu_hosts:
  hosts:
    up-a:
"""


def render_role(tmp_path: Path, inventory: str = TWO_HOSTS, **extra) -> subprocess.CompletedProcess:
    """The role's settings check, upstreams.json and Caddyfile, into tmp_path/etc."""
    (tmp_path / "play.yml").write_text(PLAY)
    (tmp_path / "hosts.yml").write_text(inventory)
    (tmp_path / "etc").mkdir(exist_ok=True)
    variables = {
        "gateway_config_dir": str(tmp_path / "etc"),
        "gateway_port": 8443,
        "gateway_kokoro_api_keys": [KOKORO_KEY],
        **extra,
    }
    return run_local_play(tmp_path / "play.yml", variables, "-i", str(tmp_path / "hosts.yml"))


def rendered(tmp_path: Path, caddy: Path, inventory: str = TWO_HOSTS, **extra) -> dict:
    """The configuration the pinned Caddy makes of the role's files and the tool's
    upstreams.caddy (all hosts in service)."""
    r = render_role(tmp_path, inventory, **extra)
    assert r.returncode == 0, r.stdout + r.stderr
    etc = tmp_path / "etc"
    settings = json.loads((etc / "upstreams.json").read_text())
    (etc / "upstreams.caddy").write_text(upstreams.snippets(settings, []))
    return adapt(caddy, etc)


@pytest.fixture(scope="module")
def caddy(tmp_path_factory) -> Path:
    return pinned_caddy(tmp_path_factory.mktemp("caddy"))


def routes(config: dict) -> list[dict]:
    """Each path-matched route of the site: its paths, the keys its check takes (the
    Authorization values of its `not header` matchers) and its reverse_proxy handlers."""
    def nodes(node):
        if isinstance(node, dict):
            yield node
            for value in node.values():
                yield from nodes(value)
        elif isinstance(node, list):
            for value in node:
                yield from nodes(value)

    found = []
    for server in config["apps"]["http"]["servers"].values():
        for site in server["routes"]:
            for route in site["handle"][0]["routes"]:
                paths = [p for m in route.get("match", []) for p in m.get("path", [])]
                if not paths:
                    continue
                keys = {k for n in nodes(route) for m in n.get("not", [])
                        for k in m.get("header", {}).get("Authorization", [])}
                found.append({"paths": paths, "keys": keys, "proxies": [
                    n for n in nodes(route) if n.get("handler") == "reverse_proxy"]})
    return found


def route(config: dict, path: str) -> dict:
    [found] = [r for r in routes(config) if path in r["paths"]]
    return found


def test_kokoro_alone_is_balanced_and_the_llms_paths_go_nowhere(caddy, tmp_path):
    """The fleet scenario's gateway: http to Kokoro's own port, no LLM."""
    config = rendered(tmp_path, caddy, gateway_upstream_scheme="http", gateway_upstream_port=8880,
                      gateway_health_path="/health")
    kokoro = route(config, "/v1/audio/*")
    assert "/v1/models" in kokoro["paths"] and kokoro["keys"] == {f"Bearer {KOKORO_KEY}"}
    [proxy] = kokoro["proxies"]
    assert [u["dial"] for u in proxy["upstreams"]] == ["up-a:8880", "up-b:8880"]
    assert not [r for r in routes(config) if "/v1/chat/*" in r["paths"]]
    # GET /health: Kokoro's readiness at a healthy host, behind Kokoro's keys.
    health = route(config, "/health")
    assert health["keys"] == {f"Bearer {KOKORO_KEY}"} and len(health["proxies"]) == 1
    assert "No such route" in (tmp_path / "etc/upstreams.caddy").read_text()


@pytest.mark.parametrize("scheme, port", [("http", 8880), ("https", 443)])
def test_each_route_has_its_own_keys_balancing_and_health_check(caddy, tmp_path, scheme, port):
    config = rendered(tmp_path, caddy, gateway_upstream_scheme=scheme, gateway_upstream_port=port,
                      gateway_llm_enabled=True, gateway_llm_api_keys=[LLM_KEY],
                      gateway_health_path="/kokoro/health")
    llm, kokoro = route(config, "/v1/chat/*"), route(config, "/v1/audio/*")
    assert llm["keys"] == {f"Bearer {LLM_KEY}"} and kokoro["keys"] == {f"Bearer {KOKORO_KEY}"}
    assert "/v1/models" in llm["paths"] and "/v1/models" not in kokoro["paths"]
    llm_port = 443 if scheme == "https" else 8080
    [llm_proxy], [kokoro_proxy] = llm["proxies"], kokoro["proxies"]
    assert [u["dial"] for u in llm_proxy["upstreams"]] == [
        f"tcp/up-a:{llm_port}", f"tcp/up-b:{llm_port}"]
    assert [u["dial"] for u in kokoro_proxy["upstreams"]] == [f"up-a:{port}", f"up-b:{port}"]
    for proxy, key, path in ((llm_proxy, LLM_KEY, "/llm/health"),
                             (kokoro_proxy, KOKORO_KEY, "/kokoro/health")):
        assert proxy["load_balancing"]["selection_policy"]["policy"] == "least_conn"
        active = proxy["health_checks"]["active"]
        assert active["uri"] == path and active["headers"]["Authorization"] == [f"Bearer {key}"]
        assert proxy["health_checks"]["passive"]["max_fails"] == 1
        assert proxy["flush_interval"] == -1
        assert ("tls" in proxy.get("transport", {})) == (scheme == "https")
    # Any other path: 401 without a key, 404 with either service's.
    text = (tmp_path / "etc/Caddyfile").read_text()
    catch_all = text[text.rindex("\thandle {"):]
    assert KOKORO_KEY in catch_all and LLM_KEY in catch_all and "` 404" in catch_all


def test_the_llm_goes_only_to_the_hosts_that_run_it(caddy, tmp_path):
    """A fleet's CPU hosts run Kokoro alone: gateway_llm_upstream_group names the others,
    and a drain still knows every host."""
    config = rendered(tmp_path, caddy, MIXED_FLEET, gateway_llm_enabled=True,
                      gateway_llm_api_keys=[LLM_KEY], gateway_llm_upstream_group="gpu_hosts")
    [llm] = route(config, "/v1/chat/*")["proxies"]
    [kokoro] = route(config, "/v1/audio/*")["proxies"]
    assert [u["dial"] for u in llm["upstreams"]] == ["tcp/up-a:443"]
    assert [u["dial"] for u in kokoro["upstreams"]] == ["up-a:443", "up-b:443", "up-c:443"]
    settings = json.loads((tmp_path / "etc/upstreams.json").read_text())
    assert settings["hosts"] == ["up-a", "up-b", "up-c"]
    assert upstreams.addresses(settings, "up-c") == ["up-c:443"]


def test_an_llm_group_without_hosts_is_refused_naming_it(tmp_path):
    r = render_role(tmp_path, MIXED_FLEET, gateway_llm_enabled=True, gateway_llm_api_keys=[LLM_KEY],
                    gateway_llm_upstream_group="gpus")
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode != 0, out[-2000:]
    assert "gateway_llm_upstream_group=gpus names no hosts" in out, out[-2000:]


RESOLVE_PLAY = role_play(["gateway"], """\
    - name: Name the hosts as the role does.
      ansible.builtin.include_tasks: {repo}/roles/gateway/tasks/resolve.yml
""")


def resolve(tmp_path: Path, hosts_file: Path, **extra) -> str:
    """roles/gateway/tasks/resolve.yml on hosts_file for MIXED_FLEET; its recap line."""
    (tmp_path / "play.yml").write_text(RESOLVE_PLAY)
    (tmp_path / "hosts.yml").write_text(MIXED_FLEET)
    r = run_local_play(tmp_path / "play.yml", {"__gateway_hosts_file": str(hosts_file), **extra},
                       "-i", str(tmp_path / "hosts.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    return re.search(r"localhost\s*:.*", r.stdout).group(0)


def test_hosts_known_by_address_are_named_in_the_gateways_hosts_file(tmp_path):
    """The gateway dials inventory names (its certificates' names): a host the inventory
    knows by an IP address gets a line; one known by a DNS name is left to DNS."""
    hosts_file = tmp_path / "etc-hosts"
    before = "127.0.0.1\tlocalhost\n10.0.0.9\tsomething-else\n"
    hosts_file.write_text(before)
    assert "changed=1" in resolve(tmp_path, hosts_file)
    text = hosts_file.read_text()
    assert text.startswith(before)
    block = [line for line in text[len(before):].splitlines() if not line.startswith("#")]
    assert block == ["192.0.2.10 up-a", "2001:db8::2 up-b"]
    assert "changed=0" in resolve(tmp_path, hosts_file)
    assert "changed=1" in resolve(tmp_path, hosts_file, gateway_resolve_inventory_names=False)
    assert hosts_file.read_text() == before


def test_the_llm_route_has_the_llms_body_limit(caddy, tmp_path):
    config = rendered(tmp_path, caddy, gateway_llm_enabled=True, gateway_llm_api_keys=[LLM_KEY])
    limits = body_limits(config)
    assert limits["tcp/up-a:443"] == 16777216 and limits["up-a:443"] == 262144


def test_the_gateways_llm_body_limit_is_the_hosts_proxys():
    gateway = yaml.safe_load((REPO / "roles/gateway/defaults/main.yml").read_text())
    proxy = yaml.safe_load((REPO / "roles/stack_proxy/defaults/main.yml").read_text())
    size = proxy["stack_proxy_llm_max_body_size"]
    assert gateway["gateway_llm_max_body_bytes"] == stack_proxy_size_bytes(size)


def test_the_gateway_routes_the_llms_paths_as_the_hosts_proxy_does():
    ours = (REPO / "roles/gateway/templates/Caddyfile.j2").read_text()
    theirs = (REPO / "roles/stack_proxy/templates/Caddyfile.j2").read_text()
    for matcher in ("@llm path ", "@kokoro path "):
        line = re.search(rf"{matcher}(.*)$", theirs, re.M)[1]
        assert f"{matcher}{line}" in ours.replace("gateway_llm_enabled", "stack_llm_enabled")


@pytest.mark.parametrize(
    "extra, words",
    [
        ({"gateway_kokoro_api_keys": []}, ["gateway_kokoro_api_keys", "stack_kokoro_api_keys"]),
        ({"gateway_kokoro_api_keys": ["short"]}, ["gateway_kokoro_api_keys", "16 or more"]),
        ({"gateway_llm_enabled": True}, ["gateway_llm_api_keys", "stack_llm_api_keys",
                                         "gateway_llm_enabled=false"]),
        ({"gateway_llm_enabled": True, "gateway_llm_api_keys": ["has space in it 0123"]},
         ["gateway_llm_api_keys", "16 or more"]),
        ({"gateway_tls": "files"}, ["gateway_tls_cert_file", "gateway_tls_key_file"]),
        ({"gateway_tls": "acme"}, ["gateway_acme_email"]),
        ({"gateway_upstream_group": "no_such_group"}, ["gateway_upstream_group=no_such_group"]),
        ({"gateway_llm_health_path": "llm/health"}, ["gateway_llm_health_path=llm/health"]),
        ({"gateway_health_path": "/a b"}, ["gateway_health_path=/a b"]),
    ],
)
def test_bad_settings_are_refused_naming_the_variable_and_the_fix(tmp_path, extra, words):
    r = render_role(tmp_path, **extra)
    assert r.returncode != 0
    out = " ".join((r.stdout + r.stderr).split())
    for word in words:
        assert word in out, (word, out[-2000:])
    assert not (tmp_path / "etc/Caddyfile").exists()


def test_a_caddy_binary_that_is_not_the_pinned_one_is_refused_and_leaves_nothing(tmp_path):
    """tasks/caddy.yml against a release archive whose binary is not the pin's."""
    version = pin("CADDY_VERSION")
    arch = {"x86_64": "amd64", "aarch64": "arm64"}[platform.machine()]
    folder = tmp_path / "mirror" / f"v{version}"
    folder.mkdir(parents=True)
    binary = tmp_path / "caddy"
    binary.write_text("#!/bin/sh\necho tampered\n")
    with tarfile.open(folder / f"caddy_{version}_linux_{arch}.tar.gz", "w:gz") as tar:
        tar.add(binary, arcname="caddy")
    install = tmp_path / "install"
    install.mkdir()
    scratch_before = set(Path(tempfile.gettempdir()).glob("kokoro-gateway-*"))
    r = run_role_tasks(tmp_path, "gateway", "caddy", {
        "gateway_caddy_download_base": (tmp_path / "mirror").as_uri(),
        "gateway_install_dir": str(install),
    }, gather_subset=["min"])
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode != 0
    assert f"has sha256 {hashlib.sha256(binary.read_bytes()).hexdigest()}" in out, out[-2000:]
    assert "gateway_caddy_download_base" in out
    assert list(install.iterdir()) == []
    assert set(Path(tempfile.gettempdir()).glob("kokoro-gateway-*")) == scratch_before


def test_named_fleet_keys_are_checked_and_sent_without_their_names(caddy, tmp_path):
    """A key named for the hosts' quotas (alice:KEY) is KEY at the gateway: in its key
    checks and in its readiness checks' header; the name never reaches Caddy."""
    config = rendered(tmp_path, caddy, gateway_upstream_scheme="http", gateway_upstream_port=8880,
                      gateway_health_path="/health",
                      gateway_kokoro_api_keys=[f"alice:{KOKORO_KEY}", LLM_KEY])
    kokoro = route(config, "/v1/audio/*")
    assert kokoro["keys"] == {f"Bearer {KOKORO_KEY}", f"Bearer {LLM_KEY}"}
    [proxy] = kokoro["proxies"]
    assert proxy["health_checks"]["active"]["headers"]["Authorization"] == [f"Bearer {KOKORO_KEY}"]
    assert "alice" not in (tmp_path / "etc/Caddyfile").read_text()


def test_the_key_name_rule_is_the_kokoro_servers():
    server = (REPO / "images/kokoro/src/kokoro_server/settings.py").read_text()
    name = re.search(r'^KEY_NAME = re\.compile\(r"(.+)"\)$', server, re.M)[1]
    for role in ("stack", "gateway"):
        assert role_vars(role)[f"__{role}_key_name_prefix"] == f"^{name}:", role
    # the chart's and Prometheus's scrape keys drop the name by the same rule
    for path in ("charts/kokoro-deploy/templates/secret.yaml",
                 "roles/monitoring/tasks/scrape_keys.yml"):
        assert f"^{name}:" in (REPO / path).read_text(), path


@pytest.mark.parametrize("command", [["drain", "elsewhere", "--timeout", "1"],
                                     ["undrain", "elsewhere"]])
def test_a_host_the_gateway_does_not_serve_is_answered_3_and_nothing_changes(
        tmp_path, monkeypatch, capsys, command):
    # rolling_update.yml asks every gateway and skips those that answer 3: the gateway's
    # own list of hosts decides, not a copy of its membership rule in the playbook.
    (tmp_path / "upstreams.json").write_text(json.dumps({"hosts": ["up-a", "up-b"]}))
    monkeypatch.setattr(upstreams, "CONFIG_DIR", tmp_path)
    assert upstreams.main(command) == 3
    assert "elsewhere is not one of the gateway's hosts (up-a, up-b)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["upstreams.json"]
