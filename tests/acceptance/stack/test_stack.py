"""The compose project that roles/stack runs: every enabled service is up, healthy and
confined as planned, and answers as a client expects (speech from Kokoro as non-silent
24 kHz audio, a chat completion from the LLM, ComfyUI's stats); the VRAM plan is on the
host and, on GPU hosts, the measured VRAM report shows the headroom held.

The service calls are roles/stack/files/stack_smoke.py, the very script the role's
verify step runs, executed on the host. Settings (environment):
  KOKORO_STACK_DIR  the project folder on the host (default /opt/kokoro-deploy/stack)
"""

import json
import os
from pathlib import Path

import pytest

PROJECT = os.environ.get("KOKORO_STACK_DIR", "/opt/kokoro-deploy/stack")
SMOKE = (Path(__file__).resolve().parents[3] / "roles/stack/files/stack_smoke.py").read_text()
# uid each image runs as (images/*/Dockerfile)
SERVICE_UIDS = {"kokoro": "10001", "llm": "10002", "comfyui": "10003", "proxy": "10004",
                "webui": "10005"}
MODEL_MOUNTS = {
    "kokoro": "/models/kokoro",
    "llm": "/models",
    "comfyui": "/opt/comfyui/models/diffusion_models",
}
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@pytest.fixture(scope="module")
def env(stack_env):
    return stack_env


@pytest.fixture(scope="module")
def services(env):
    proxy = ["proxy"] if "compose.proxy.yml" in env.get("COMPOSE_FILE", "") else []
    return ["kokoro"] + [p for p in env.get("COMPOSE_PROFILES", "").split(",") if p] + proxy


@pytest.fixture(scope="module")
def containers(host, env, services):
    """docker inspect of each enabled service's container, by service name."""
    project = env.get("COMPOSE_PROJECT_NAME", "kokoro")
    ids = host.check_output(
        "docker ps -aq --filter label=com.docker.compose.project=%s", project
    ).split()
    assert ids, f"no container of compose project {project!r}"
    found = {
        c["Config"]["Labels"]["com.docker.compose.service"]: c
        for c in json.loads(host.check_output("docker inspect " + " ".join(ids)))  # hex ids
    }
    missing = set(services) - set(found)
    assert not missing, f"enabled services without a container: {sorted(missing)}"
    return {name: found[name] for name in services}


@pytest.fixture(scope="module")
def smoke(host):
    out = host.check_output("python3 -c %s --env %s", SMOKE, f"{PROJECT}/.env")
    return json.loads(out)


def test_every_enabled_service_runs_and_is_healthy(containers):
    states = {
        name: (c["State"]["Status"], c["State"].get("Health", {}).get("Status"))
        for name, c in containers.items()
    }
    assert all(s == ("running", "healthy") for s in states.values()), states


def test_services_restart_and_rotate_their_logs(containers):
    for name, c in containers.items():
        host_config = c["HostConfig"]
        assert host_config["RestartPolicy"]["Name"] == "unless-stopped", name
        log = host_config["LogConfig"]
        assert log["Type"] == "json-file" and log["Config"].get("max-size"), (name, log)


def test_services_run_confined(host, containers):
    for name, c in containers.items():
        host_config = c["HostConfig"]
        uid = host.check_output("docker exec %s id -u", c["Id"])
        assert uid == SERVICE_UIDS[name], f"{name} runs as uid {uid}"
        assert "no-new-privileges:true" in (host_config.get("SecurityOpt") or []), name
        assert host_config.get("CapDrop") == ["ALL"], (name, host_config.get("CapDrop"))
        assert host_config.get("Memory", 0) > 0 and host_config.get("PidsLimit", 0) > 0, name
        if name != "comfyui":  # ComfyUI writes beside its code (custom nodes, caches)
            assert host_config.get("ReadonlyRootfs"), f"{name}: root filesystem is writable"


def test_images_built_on_the_host_are_named_by_their_recipe(host, containers):
    """stack_images_source=build: every service runs the image its recipe built on this
    host, tagged <name>-<recipe digest>, the digest also in the image's own label."""
    # The scenario says how its images came (playbooks such as airgap.yml set it as a
    # play variable, which the inventory does not show).
    source = os.environ.get("KOKORO_IMAGES_SOURCE", "unknown")
    if source != "build":
        pytest.skip(f"KOKORO_IMAGES_SOURCE is {source}: the images were not built here")
    for name, c in containers.items():
        tag = c["Config"]["Image"]
        labels = json.loads(host.check_output(
            "docker image inspect --format '{{json .Config.Labels}}' %s", tag)) or {}
        recipe = labels.get("org.kokoro-deploy.recipe", "")
        assert len(recipe) == 16 and tag.endswith("-" + recipe), (name, tag, labels)


def test_models_are_mounted_read_only(host, containers):
    for name, c in containers.items():
        if name not in MODEL_MOUNTS:
            continue
        target = MODEL_MOUNTS[name]
        mounts = {m["Destination"]: m for m in c["Mounts"]}
        assert target in mounts and not mounts[target]["RW"], f"{name}: {target} not read-only"
        probe = host.run("docker exec %s touch %s/.write-probe", c["Id"], target)
        assert probe.rc != 0, f"{name} could write into its model mount {target}"


def test_ports_are_published_only_where_configured(env, containers):
    if "compose.publish.yml" not in env.get("COMPOSE_FILE", ""):
        pytest.skip("the services' own ports are not published (test_proxy.py checks the proxy's)")
    for name, c in containers.items():
        want = env.get(f"{name.upper()}_BIND_ADDRESS", "127.0.0.1")
        bound = {
            b["HostIp"]
            for bindings in (c["NetworkSettings"]["Ports"] or {}).values()
            for b in (bindings or [])
        }
        assert bound == {want}, f"{name} published on {bound}, configured {want}"
        if name == "kokoro" and want not in LOOPBACK:
            assert env.get("KOKORO_AUTH_DISABLED") == "false", (
                f"Kokoro is published on {want} without API keys"
            )


def test_wyoming_speaks_as_home_assistant_asks(env, smoke):
    if "compose.wyoming.yml" not in env.get("COMPOSE_FILE", "").split(":"):
        pytest.skip("this host's stack runs without Wyoming (stack_kokoro_wyoming_enabled)")
    result = smoke["wyoming"]
    assert result["ok"], result
    assert result["voices"] >= 1 and result["audio_seconds"] > 0.5 and result["rms"] > 0.01


def test_kokoro_speaks(smoke):
    result = smoke["kokoro"]
    assert result["ok"], result
    assert result["rate"] == 24000 and result["audio_seconds"] > 0.5 and result["rms"] > 0.01


def test_llm_answers_a_chat_completion(services, smoke):
    if "llm" not in services:
        pytest.skip("the LLM service is not enabled on this host")
    assert smoke["llm"]["ok"], smoke["llm"]
    assert smoke["llm"]["completion_tokens"] > 0


def test_open_webui_signs_its_admin_in_and_reads_aloud_through_kokoro(host, services, containers,
                                                                     smoke):
    """Open WebUI as its admin uses it (stack_smoke: sign in, the LLM's model listed, a
    sentence read aloud), and Kokoro counted that speech under Open WebUI's own key."""
    if "webui" not in services:
        pytest.skip("Open WebUI is not enabled on this host")
    result = smoke["webui"]
    assert result["ok"] and result["signed_in"] and result["audio_bytes"] > 1000, result
    # /metrics asks for a key where Kokoro has keys: Open WebUI's own, the file's last
    # line, handed over on stdin so that it shows in no command line.
    ask = ("import sys, urllib.request as u\n"
           "key = sys.stdin.read().strip().rpartition(':')[2]\n"
           "r = u.Request('http://127.0.0.1:8880/metrics',\n"
           "              headers={'Authorization': 'Bearer ' + key})\n"
           "print(u.urlopen(r).read().decode())")
    metrics = host.check_output(
        "tail -n1 %s/secrets/kokoro_api_keys | docker exec -i %s python3 -c %s",
        PROJECT, containers["kokoro"]["Id"], ask)
    counted = [line for line in metrics.splitlines()
               if line.startswith("kokoro_key_requests_total") and 'key="webui"' in line]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in counted) >= 1, counted


def test_comfyui_reports_its_devices(services, smoke):
    if "comfyui" not in services:
        pytest.skip("ComfyUI is not enabled on this host")
    assert smoke["comfyui"]["ok"], smoke["comfyui"]


def test_the_vram_plan_is_recorded_for_every_service(host, services):
    plan = host.file(f"{PROJECT}/vram-plan.txt")
    assert plan.exists, "vram-plan.txt missing: roles/stack writes it on every run"
    # the proxy and Open WebUI (no model of its own: slim, CPU only) hold no VRAM
    for name in (s for s in services if s not in ("proxy", "webui")):
        assert name in plan.content_string, f"{name} missing from the plan:\n{plan.content_string}"


def test_gpu_hosts_keep_the_measured_vram_headroom(host, env):
    if "compose.gpu.yml" not in env.get("COMPOSE_FILE", ""):
        pytest.skip("the stack runs on CPU on this host: no VRAM to measure")
    report = host.file(f"{PROJECT}/vram-report.txt")
    assert report.exists, "vram-report.txt missing: the verify stage writes it on GPU hosts"
    assert "kokoro" in report.content_string, report.content_string
