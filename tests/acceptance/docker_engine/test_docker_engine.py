"""The Docker engine as the compose stack needs it: the daemon runs and runs containers,
compose v2 answers, and daemon.json is valid JSON holding the configured keys while
keeping keys that other roles (the NVIDIA container toolkit) added.

Runs from Molecule against test hosts, and against real hosts as part of the acceptance
suite. Settings, all optional on real hosts:
  DOCKER_ENGINE_TEST_IMAGE       a local image to `docker run` (default kokoro-deploy/debian:12;
                                 the run check is skipped when unset and that image is absent)
  DOCKER_ENGINE_EXPECT_RUNTIMES  comma-separated runtimes that must be configured and usable
                                 (e.g. "nvidia" on GPU hosts)
The keys the role was asked to manage are read from the role's defaults overlaid with
the host's inventory variables, so group_vars that configure the role configure the check.
"""

import json
import os
from pathlib import Path

import pytest
import yaml

ROLE_DEFAULTS = Path(__file__).resolve().parents[3] / "roles/docker_engine/defaults/main.yml"
DAEMON_JSON = "/etc/docker/daemon.json"


def _setting(host, name):
    """The role variable's value for this host: inventory first, then the role default."""
    try:
        inventory = host.ansible.get_variables()
    except (AttributeError, RuntimeError):  # local:// backend: no inventory
        inventory = {}
    if name in inventory:
        return inventory[name]
    return yaml.safe_load(ROLE_DEFAULTS.read_text())[name]


@pytest.fixture(scope="module")
def daemon_json(host):
    f = host.file(DAEMON_JSON)
    assert f.is_file, f"{DAEMON_JSON} is missing: run the docker_engine role"
    try:
        return json.loads(f.content_string)
    except json.JSONDecodeError as err:
        pytest.fail(f"{DAEMON_JSON} is not valid JSON ({err}); Docker cannot start with it")


def test_docker_engine_service_is_running_and_enabled(host):
    docker = host.service("docker")
    assert docker.is_running
    assert docker.is_enabled


def test_docker_engine_packages_come_from_the_configured_source(host):
    if _setting(host, "docker_engine_source") == "distro":
        assert host.package("docker.io").is_installed
        return
    for name in ("docker-ce", "docker-ce-cli", "containerd.io", "docker-compose-plugin"):
        assert host.package(name).is_installed, f"{name} is not installed"
    source = host.file("/etc/apt/sources.list.d/docker.sources")
    assert source.is_file, "Docker's apt source is missing"
    assert "Signed-By: /etc/apt/keyrings/docker.asc" in source.content_string
    uri = next(
        line.split(None, 1)[1] for line in source.content_string.splitlines()
        if line.startswith("URIs:")
    )
    # apt installed docker-ce from that repository, verified with that key.
    policy = host.check_output("apt-cache policy docker-ce")
    assert uri.rstrip("/") in policy, f"docker-ce does not come from {uri}: {policy}"
    assert host.file("/etc/apt/keyrings/docker.asc").contains("BEGIN PGP PUBLIC KEY BLOCK")


def test_docker_engine_answers_with_a_server_version(host):
    out = host.check_output("docker version --format '{{.Server.Version}}'")
    assert out and out[0].isdigit(), out


def test_docker_engine_compose_v2_plugin_answers(host):
    cmd = host.run("docker compose version --short")
    assert cmd.rc == 0, f"`docker compose version` failed: {cmd.stderr}"
    major = int(cmd.stdout.strip().lstrip("v").split(".")[0])
    assert major >= 2, f"compose v2 or newer expected, got {cmd.stdout!r}"


def test_docker_engine_uses_overlay2_not_the_slow_vfs_driver(host):
    assert host.check_output("docker info --format '{{.Driver}}'") == "overlay2"


def test_docker_engine_runs_a_container_from_a_local_image(host):
    image = os.environ.get("DOCKER_ENGINE_TEST_IMAGE")
    if not image:
        image = "kokoro-deploy/debian:12"
        if host.run("docker image inspect %s", image).rc != 0:
            pytest.skip(f"no local image {image}; set DOCKER_ENGINE_TEST_IMAGE to one")
    cmd = host.run("docker run --rm --network none %s cat /etc/os-release", image)
    assert cmd.rc == 0, f"docker run {image} failed: {cmd.stderr}"
    assert "ID=debian" in cmd.stdout or "ID=" in cmd.stdout


def test_docker_engine_daemon_json_holds_the_configured_keys(host, daemon_json):
    mirrors = _setting(host, "docker_engine_registry_mirrors")
    insecure = _setting(host, "docker_engine_insecure_registries")
    log_driver = _setting(host, "docker_engine_log_driver")
    if mirrors:
        assert daemon_json["registry-mirrors"] == mirrors
    if insecure:
        assert daemon_json["insecure-registries"] == insecure
    if log_driver:
        assert daemon_json["log-driver"] == log_driver
    if log_driver in ("json-file", "local") and _setting(host, "docker_engine_log_max_size"):
        opts = daemon_json["log-opts"]
        assert opts["max-size"] == _setting(host, "docker_engine_log_max_size")
        assert opts["max-file"] == str(_setting(host, "docker_engine_log_max_file"))
    data_root = _setting(host, "docker_engine_data_root")
    if data_root:
        assert daemon_json["data-root"] == data_root


def test_docker_engine_daemon_applies_the_configured_keys(host):
    """The running daemon, not only the file, has the settings (it was restarted)."""
    info = json.loads(host.check_output("docker info --format '{{json .}}'"))
    mirrors = _setting(host, "docker_engine_registry_mirrors")
    for mirror in mirrors:
        assert mirror.rstrip("/") + "/" in info["RegistryConfig"]["Mirrors"]
    log_driver = _setting(host, "docker_engine_log_driver")
    if log_driver:
        assert info["LoggingDriver"] == log_driver


@pytest.mark.parametrize(
    "runtime",
    [r for r in os.environ.get("DOCKER_ENGINE_EXPECT_RUNTIMES", "").split(",") if r]
    or [pytest.param(None, marks=pytest.mark.skip(reason="DOCKER_ENGINE_EXPECT_RUNTIMES unset"))],
)
def test_docker_engine_keeps_and_uses_a_runtime_another_role_added(host, daemon_json, runtime):
    assert runtime in daemon_json.get("runtimes", {}), f"{runtime} was dropped from daemon.json"
    listed = host.check_output("docker info --format '{{json .Runtimes}}'")
    assert runtime in json.loads(listed), f"the daemon does not list runtime {runtime}"
    image = os.environ.get("DOCKER_ENGINE_TEST_IMAGE", "kokoro-deploy/debian:12")
    cmd = host.run("docker run --rm --network none --runtime %s %s true", runtime, image)
    assert cmd.rc == 0, f"docker run --runtime {runtime} failed: {cmd.stderr}"


def test_docker_engine_trusts_each_configured_registry_ca(host):
    """docker_engine_registry_ca_files: the engine finds each registry's CA where it looks
    for it (certs.d/<host:port>/ca.crt), the same certificate as on the controller."""
    configured = _setting(host, "docker_engine_registry_ca_files") or {}
    if not configured:
        pytest.skip("no docker_engine_registry_ca_files on this host")
    for address, source in configured.items():
        f = host.file(f"/etc/docker/certs.d/{address}/ca.crt")
        assert f.is_file, f"{address}: no CA in /etc/docker/certs.d; run the docker_engine role"
        assert (f.user, f.group, f.mode) == ("root", "root", 0o644)
        assert f.content_string.startswith("-----BEGIN CERTIFICATE-----")
        if "{{" not in source and Path(source).is_file():
            assert f.content_string == Path(source).read_text(), f"{address}: not {source}"
