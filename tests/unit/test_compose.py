"""The compose project (compose/): valid for Docker Compose in every combination the kit
renders (CPU or GPU, with or without the LLM and ComfyUI), each service confined,
health-checked and ordered by health, and every setting it reads documented in
.env.example and rendered by roles/stack's env.j2.

`docker compose config` is the real Compose parser (the test bed installs the plugin);
without it those tests fail in CI (CI=true) and are skipped elsewhere."""

import re
import shutil
from pathlib import Path

import pytest
import yaml
from required_tools import compose_config

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose"
VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)")


def _env_keys(text: str) -> set[str]:
    return set(re.findall(r"^([A-Z0-9_]+)=", text, re.M))


COMPOSE_FILES = ("compose.yml", "compose.gpu.yml", "compose.publish.yml", "compose.proxy.yml",
                 "compose.wyoming.yml")


def config(tmp_path: Path, files: list[str], profiles: str) -> dict:
    for name in COMPOSE_FILES:
        shutil.copy(COMPOSE / name, tmp_path)
    env = (COMPOSE / ".env.example").read_text()
    env = re.sub(r"^COMPOSE_FILE=.*$", f"COMPOSE_FILE={':'.join(files)}", env, flags=re.M)
    env = re.sub(r"^COMPOSE_PROFILES=.*$", f"COMPOSE_PROFILES={profiles}", env, flags=re.M)
    internal = str("compose.proxy.yml" in files and "compose.publish.yml" not in files).lower()
    env = re.sub(
        r"^SERVICES_NETWORK_INTERNAL=.*$", f"SERVICES_NETWORK_INTERNAL={internal}", env, flags=re.M
    )
    (tmp_path / ".env").write_text(env)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "kokoro_api_keys").write_text("")
    (tmp_path / "secrets" / "llm_api_keys").write_text("")
    for name in ("webui_secret_key", "webui_api_key", "webui_admin_password"):
        (tmp_path / "secrets" / name).write_text("x" * 64)
    (tmp_path / "secrets" / "proxy").mkdir()
    return compose_config(tmp_path, drop_env=("COMPOSE_", "KOKORO_"))


@pytest.mark.parametrize(
    ("files", "profiles", "services"),
    [
        (["compose.yml", "compose.publish.yml"], "", {"kokoro"}),
        (["compose.yml", "compose.publish.yml"], "llm", {"kokoro", "llm"}),
        (
            ["compose.yml", "compose.gpu.yml", "compose.publish.yml"],
            "llm,comfyui",
            {"kokoro", "llm", "comfyui"},
        ),
        (
            ["compose.yml", "compose.gpu.yml", "compose.publish.yml"],
            "comfyui",
            {"kokoro", "comfyui"},
        ),
        (["compose.yml", "compose.proxy.yml"], "", {"kokoro", "proxy"}),
        (["compose.yml", "compose.publish.yml", "compose.wyoming.yml"], "", {"kokoro"}),
        (["compose.yml", "compose.proxy.yml"], "llm", {"kokoro", "llm", "proxy"}),
        (
            ["compose.yml", "compose.gpu.yml", "compose.proxy.yml"],
            "llm,comfyui",
            {"kokoro", "llm", "comfyui", "proxy"},
        ),
        (["compose.yml", "compose.publish.yml"], "llm,webui", {"kokoro", "llm", "webui"}),
        (
            ["compose.yml", "compose.gpu.yml", "compose.proxy.yml"],
            "llm,comfyui,webui",
            {"kokoro", "llm", "comfyui", "webui", "proxy"},
        ),
    ],
)
def test_compose_accepts_every_combination_the_kit_renders(tmp_path, files, profiles, services):
    project = config(tmp_path, files, profiles)
    assert set(project["services"]) == services
    gpu = "compose.gpu.yml" in files
    publish = "compose.publish.yml" in files
    for name, svc in project["services"].items():
        devices = svc.get("deploy", {}).get("resources", {}).get("reservations", {})
        want_gpu = gpu and name not in ("proxy", "webui")
        assert bool(devices.get("devices")) == want_gpu, f"{name}: GPU device request {devices}"
        for mount in svc["volumes"]:
            if mount["type"] == "bind" and "/models" in mount["target"]:
                assert mount.get("read_only"), f"{name}: model mount {mount['target']} is writable"
        if name == "proxy":
            assert [(p["host_ip"], p["published"]) for p in svc["ports"]] == [("0.0.0.0", "443")]
            assert set(svc["networks"]) == {"default", "edge"}
        elif publish:
            assert all(p["host_ip"] == "127.0.0.1" for p in svc["ports"]), (name, svc["ports"])
        else:
            assert not svc.get("ports"), f"{name} is published beside the proxy: {svc['ports']}"
        if name == "webui":
            # its data on a volume, its secrets as files; Kokoro and the LLM by service name
            assert [m["target"] for m in svc["volumes"]] == ["/data"]
            assert {m["source"] for m in svc["secrets"]} == {
                "webui_secret_key", "webui_api_key", "webui_admin_password"}
            assert svc["environment"]["OPENAI_API_BASE_URL"] == "http://llm:8080/v1"
            assert svc["environment"]["AUDIO_TTS_OPENAI_API_BASE_URL"] == "http://kokoro:8880/v1"
            if publish:
                assert [p["published"] for p in svc["ports"]] == ["3000"]
        if name == "kokoro":
            # Wyoming (no authentication): its own port, on loopback unless told otherwise
            wyoming = [(p["host_ip"], p["published"]) for p in svc.get("ports", [])
                       if p["target"] == 10200]
            assert wyoming == ([("127.0.0.1", "10200")] if "compose.wyoming.yml" in files else [])
    internal = project["networks"]["default"].get("internal", False)
    assert internal == ("proxy" in services and not publish), project["networks"]


def test_every_service_is_confined_checked_and_ordered_by_health():
    services = yaml.safe_load((COMPOSE / "compose.yml").read_text())["services"]
    services |= yaml.safe_load((COMPOSE / "compose.proxy.yml").read_text())["services"]
    for name, svc in services.items():
        assert svc["restart"] == "unless-stopped", name
        assert svc["healthcheck"]["test"], name
        assert svc["cap_drop"] == ["ALL"] and "no-new-privileges:true" in svc["security_opt"]
        assert "privileged" not in svc and svc.get("mem_limit") and svc.get("pids_limit"), name
        assert svc["logging"]["options"]["max-size"], name
    assert services["llm"]["depends_on"]["kokoro"]["condition"] == "service_healthy"
    comfy = services["comfyui"]["depends_on"]
    assert comfy["kokoro"]["condition"] == comfy["llm"]["condition"] == "service_healthy"
    assert comfy["llm"]["required"] is False, "ComfyUI must also start without the LLM"
    webui = services["webui"]["depends_on"]
    assert webui["kokoro"]["condition"] == webui["llm"]["condition"] == "service_healthy"
    assert webui["llm"].get("required", True), "Open WebUI is a chat with the LLM"


def test_every_setting_is_documented_and_rendered_by_the_role():
    used = set()
    for name in COMPOSE_FILES:
        used |= set(VARIABLE.findall((COMPOSE / name).read_text()))
    documented = _env_keys((COMPOSE / ".env.example").read_text())
    rendered = _env_keys((REPO / "roles/stack/templates/env.j2").read_text())
    assert used - documented == set(), "compose reads settings .env.example does not document"
    assert (used | {"COMPOSE_FILE", "COMPOSE_PROFILES"}) - rendered == set(), (
        "compose reads settings roles/stack does not render"
    )


def test_wyoming_beside_the_proxy_gets_its_own_network_and_the_services_stay_internal(tmp_path):
    # Caddy carries HTTP only; an internal network publishes nothing, so Kokoro's Wyoming
    # port needs a network of its own, and the services' network stays internal.
    project = config(tmp_path, ["compose.yml", "compose.proxy.yml", "compose.wyoming.yml"], "llm")
    kokoro = project["services"]["kokoro"]
    assert [(p["host_ip"], p["published"], p["target"]) for p in kokoro["ports"]] == [
        ("127.0.0.1", "10200", 10200)]
    assert set(kokoro["networks"]) == {"default", "wyoming"}
    assert set(project["services"]["llm"]["networks"]) == {"default"}
    assert project["networks"]["default"]["internal"] is True
    assert not project["networks"]["wyoming"].get("internal", False)
    assert kokoro["environment"]["KOKORO_WYOMING_PORT"] == "10200"
