"""The sample inventories (inventory/homelab, inventory/fleet) as Ansible reads them.

Each inventory is read with the real `ansible-inventory --list` (a copy without any
local vault.yml, so no vault password is needed and the `.example` files show that
they are never loaded); the merged variables of every host are then checked against
the roles' own `meta/argument_specs.yml` (names, types, choices) with Ansible's
ArgumentSpecValidator, the per-class driver/torch pins against the kit's decision code
(plugins/module_utils/gpu_decisions.py) and the services against the VRAM
planner (plugins/module_utils/vram_plan.py), as site.yml's preflight would.
"""

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible_collections.kokoro.deploy.plugins.module_utils import gpu_decisions as kg
from ansible_collections.kokoro.deploy.plugins.module_utils import vram_plan
from required_tools import run_ok

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv running the tests, wherever it lives
INVENTORIES = ("homelab", "fleet")
GPU_CLASSES = ("rtx5090", "rtx4090", "a100", "h100")
FLEET_CLASSES = (*GPU_CLASSES, "cpu")
# The card each GPU class is planned on before a driver answers: nvidia-smi's name.
CLASS_CARD = {
    "rtx5090": "NVIDIA GeForce RTX 5090",
    "rtx4090": "NVIDIA GeForce RTX 4090",
    "a100": "NVIDIA A100-SXM4-40GB",
    "h100": "NVIDIA H100 80GB HBM3",
}
# The smallest card the homelab's comments promise Kokoro + LLM fit on.
HOMELAB_CARD = ("NVIDIA GeForce RTX 4080", 16376)


COMPANIONS = yaml.safe_load((REPO / "manifest.yml").read_text())["companions"]


def role_specs() -> dict[str, dict]:
    """Role name -> the options of its `main` entry point."""
    specs = {}
    for path in sorted(REPO.glob("roles/*/meta/argument_specs.yml")):
        doc = yaml.safe_load(path.read_text())
        specs[path.parents[1].name] = doc["argument_specs"]["main"]["options"]
    return specs


SPECS = role_specs()


def owning_role(var: str) -> str | None:
    """The role whose prefix the variable carries and whose spec declares it, else the
    longest such prefix (so that nvidia_container_toolkit_* is not taken for another
    role's). stack_proxy_enabled carries stack_proxy's prefix, but is stack's: stack runs
    the proxy's container, stack_proxy writes what it serves."""
    roles = [r for r in SPECS if var.startswith(r + "_")]
    declared = [r for r in roles if var in SPECS[r]]
    return max(declared or roles, key=len) if roles else None


def role_defaults(role: str) -> dict:
    return yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text()) or {}


def run_inventory(src: Path, work: Path) -> tuple[dict, str]:
    """`ansible-inventory --list` on a copy of `src` without local vault.yml files."""
    copy = work / src.name
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("vault.yml"))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
        "ANSIBLE_HOME": str(work / "home"),
    }
    # No vault password and no -e: listing must not need the vault (values stay
    # templates until a play runs; extra vars would show up as hostvars).
    proc = run_ok([str(BIN / "ansible-inventory"), "-i", str(copy / "hosts.yml"), "--list"],
                  env=env, timeout=120)
    return json.loads(proc.stdout), proc.stderr


@pytest.fixture(scope="module", params=INVENTORIES)
def inventory(request, tmp_path_factory):
    name = request.param
    data, stderr = run_inventory(REPO / "inventory" / name, tmp_path_factory.mktemp(name))
    return name, data, stderr


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    data, _ = run_inventory(REPO / "inventory" / "fleet", tmp_path_factory.mktemp("fleet"))
    return data


def members(data: dict, group: str) -> set[str]:
    """Every host in `group` and its child groups."""
    node = data.get(group, {})
    hosts = set(node.get("hosts", []))
    for child in node.get("children", []):
        hosts |= members(data, child)
    return hosts


def hostvars(data: dict) -> dict[str, dict]:
    return data["_meta"]["hostvars"]


def templated(value) -> bool:
    return "{{" in json.dumps(value)


# ---------------------------------------------------------------- groups and hosts


def test_inventory_loads_without_warnings(inventory):
    name, data, stderr = inventory
    assert hostvars(data), f"{name}: no hosts"
    assert "WARNING" not in stderr, stderr


# Hosts that serve the fleet rather than speech (ansible/build_images.yml's groups and
# the front door, ansible/gateway.yml's).
SUPPORT_GROUPS = ("registries", "image_builders", "gateway")


def test_every_host_is_in_kokoro_hosts(inventory):
    name, data, _ = inventory
    every = members(data, "all") | set(hostvars(data))
    support = set().union(*(members(data, g) for g in SUPPORT_GROUPS))
    missing = every - members(data, "kokoro_hosts") - support
    assert not missing, f"{name}: hosts outside kokoro_hosts (site.yml skips them): {missing}"


def test_the_fleet_registry_host_builds_and_every_engine_trusts_its_ca(fleet):
    """build_images.yml needs one builder; the registry's TLS name is the one the images
    are pushed to and the one every engine holds the CA for."""
    assert len(members(fleet, "image_builders")) == 1
    registry_host = sorted(members(fleet, "registries"))[0]
    hv = hostvars(fleet)
    address = hv[registry_host]["stack_image_registry"].split("/")[0]
    assert address.split(":")[0] in hv[registry_host]["registry_tls_names"]
    for host in members(fleet, "kokoro_hosts") | members(fleet, "image_builders"):
        assert hv[host]["stack_image_registry"].split("/")[0] == address, host
        assert address in hv[host]["docker_engine_registry_ca_files"], host
    for host in members(fleet, "kokoro_hosts"):
        assert hv[host]["stack_images_source"] == "registry", host


def test_every_gpu_class_host_is_in_gpu_hosts(inventory):
    name, data, _ = inventory
    gpu = members(data, "gpu_hosts")
    for cls in GPU_CLASSES:
        missing = members(data, cls) - gpu
        assert not missing, f"{name}: {cls} hosts outside gpu_hosts: {missing}"


def test_fleet_has_the_five_classes_each_host_in_exactly_one(fleet):
    data = fleet
    for cls in FLEET_CLASSES:
        assert members(data, cls), f"fleet: class group {cls} has no hosts"
    for host in members(data, "kokoro_hosts"):
        classes = [c for c in FLEET_CLASSES if host in members(data, c)]
        assert len(classes) == 1, f"fleet: {host} is in classes {classes}"
    assert not members(data, "cpu") & members(data, "gpu_hosts")


# ------------------------------------------------------------- variables vs. roles


def test_every_variable_is_a_declared_role_variable(inventory):
    name, data, _ = inventory
    problems = []
    for host, hv in hostvars(data).items():
        for var in hv:
            if var.startswith("ansible_"):
                continue
            role = owning_role(var)
            if role is None:
                problems.append(f"{host}: {var} belongs to no role (prefix)")
            elif var not in SPECS[role]:
                problems.append(f"{host}: {var} is not in roles/{role}/meta/argument_specs.yml")
    assert not problems, f"{name}:\n" + "\n".join(problems)


def test_every_value_passes_its_roles_argument_spec(inventory):
    name, data, _ = inventory
    problems = []
    for host, hv in hostvars(data).items():
        by_role: dict[str, dict] = {}
        for var, value in hv.items():
            role = owning_role(var)
            if role and var in SPECS[role]:
                by_role.setdefault(role, {})[var] = value
        for role, params in by_role.items():
            for var, value in params.items():
                choices = SPECS[role][var].get("choices")
                values = value if isinstance(value, list) else [value]
                if choices and not templated(value):
                    bad = [v for v in values if v not in choices]
                    if bad:
                        problems.append(f"{host}: {var}={bad} not one of {choices}")
            result = ArgumentSpecValidator(SPECS[role]).validate(params)
            problems += [f"{host} ({role}): {m}" for m in result.error_messages]
    assert not problems, f"{name}:\n" + "\n".join(problems)


def test_vault_example_is_not_loaded_and_defines_what_vars_refer_to(inventory):
    name, data, _ = inventory
    folder = REPO / "inventory" / name
    examples = sorted(folder.glob("group_vars/**/vault.yml.example"))
    assert examples, f"{name}: no vault.yml.example"
    defined = set()
    for example in examples:
        defined |= set(yaml.safe_load(example.read_text()))
        assert "ansible-vault create" in example.read_text()
    assert all(v.startswith("vault_") for v in defined), defined
    for host, hv in hostvars(data).items():
        leaked = defined & set(hv)
        assert not leaked, f"{name}: {host} got {leaked} from a .example file"
        refs = set(re.findall(r"\{\{\s*(vault_\w+)", json.dumps(hv)))
        assert refs <= defined, f"{name}: {host} refers to {refs - defined}, not in the example"


# --------------------------------------------------------- the numbers of each class


def _merged(role: str, hv: dict) -> dict:
    return {**role_defaults(role), **{k: v for k, v in hv.items() if k.startswith(role + "_")}}


def _services(hv: dict) -> dict:
    """The services dict roles/stack/tasks/plan.yml builds from the variables."""
    s = _merged("stack", hv)
    return {
        "vram_total_mib": int(s["stack_vram_total_mib"]),
        "kokoro": {
            "enabled": True,
            "engine": s["stack_kokoro_engine"],
            "gpu": int(s["stack_kokoro_gpu"]),
            "workers": int(s["stack_kokoro_workers"]),
            "vram_mib": int(s["stack_kokoro_vram_mib"]),
        },
        "llm": {
            "enabled": bool(s["stack_llm_enabled"]),
            "model": s["stack_llm_model"],
            "model_spec": s["stack_llm_model_spec"],
            "ctx_size": int(s["stack_llm_ctx_size"]),
            "parallel": int(s["stack_llm_parallel"]),
            "n_gpu_layers": int(s["stack_llm_n_gpu_layers"]),
            "cache_type_k": s["stack_llm_cache_type_k"],
            "cache_type_v": s["stack_llm_cache_type_v"],
            "gpu": int(s["stack_llm_gpu"]),
        },
        "comfyui": {
            "enabled": bool(s["stack_comfyui_enabled"]),
            "model": s["stack_comfyui_model"],
            "gpu": int(s["stack_comfyui_gpu"]),
            "reserve_policy": s["stack_comfyui_reserve_policy"],
        },
    }


def _plan(hv: dict, card: tuple[str, int] | None) -> dict:
    gpus = (
        []
        if card is None
        else [{"index": 0, "name": card[0], "memory_total_mib": card[1], "memory_used_mib": 0}]
    )
    reserve = int(_merged("stack", hv)["stack_vram_reserve_mib"])
    return vram_plan.plan_stack(gpus, _services(hv), COMPANIONS, reserve_mib=reserve)


@pytest.mark.parametrize("cls", GPU_CLASSES)
def test_fleet_class_driver_and_torch_pins_suit_the_card(fleet, cls):
    for host in sorted(members(fleet, cls)):
        hv = hostvars(fleet)[host]
        cc = hv["gpu_facts_compute_capability"]
        branch = hv["nvidia_driver_branch"]
        modules = hv["nvidia_driver_kernel_modules"]
        driver = kg.plan_driver([cc], branch, modules)
        assert driver["ok"], f"{host}: {driver['reason']}"
        assert driver["kernel_modules"] == modules, f"{host}: {driver['reason']}"
        # What torch_runtime's auto would pick on the branch's current releases.
        torch = _merged("torch_runtime", hv)["torch_runtime_torch_version"]
        gpu = {"compute_cap": cc, "driver_version": f"{branch}.999.99"}
        planned = kg.plan_torch_flavour(torch, [gpu])
        assert hv["torch_runtime_flavour"] == planned["flavour"], f"{host}: {planned['reason']}"


def test_every_llm_on_a_gpu_gets_a_driver_that_runs_the_llm_image(inventory):
    """The preflight's rule (roles/stack/tasks/plan.yml): the kit's CUDA LLM image needs
    the branch __stack_llm_cuda_min_driver_branch; a sample must not trip it."""
    _, data, _ = inventory
    floor = yaml.safe_load((REPO / "roles/stack/vars/main.yml").read_text())[
        "__stack_llm_cuda_min_driver_branch"]
    for host in sorted(members(data, "gpu_hosts")):
        hv = _merged("stack", hostvars(data)[host])
        if not hv["stack_llm_enabled"] or hv["stack_device"] == "cpu":
            continue
        branch = str(hostvars(data)[host].get("nvidia_driver_branch", "auto"))
        assert branch == "auto" or int(branch) >= floor, f"{host}: branch {branch}"


@pytest.mark.parametrize("cls", GPU_CLASSES)
def test_fleet_class_services_fit_the_classs_smallest_card(fleet, cls):
    for host in sorted(members(fleet, cls)):
        hv = hostvars(fleet)[host]
        total = hv["stack_vram_total_mib"]
        assert 0 < hv["gpu_facts_min_vram_mib"] <= total, host
        assert hv["stack_device"] == "gpu", host
        assert "torch" in hv["model_cache_kokoro_engines"], host
        plan = _plan(hv, (CLASS_CARD[cls], total))
        assert plan["fits"], f"{host}:\n{plan['table']}\n{plan['problems']}"


def test_fleet_cpu_class_runs_kokoro_on_onnx_and_fits(fleet):
    for host in sorted(members(fleet, "cpu")):
        hv = hostvars(fleet)[host]
        assert hv["torch_runtime_flavour"] == "cpu"
        assert hv["stack_device"] == "cpu"
        assert hv["model_cache_kokoro_engines"] == ["onnx"]
        assert not hv["stack_comfyui_enabled"]
        assert _plan(hv, None)["fits"], host


def test_non_loopback_services_are_authenticated(inventory):
    name, data, _ = inventory
    loopback = {"127.0.0.1", "::1", "localhost"}
    for host, hv in hostvars(data).items():
        s = _merged("stack", hv)
        if s["stack_kokoro_bind_address"] not in loopback:
            assert s["stack_kokoro_api_keys"], f"{name}: {host} publishes Kokoro without keys"
        for svc in ("llm", "comfyui"):
            if s[f"stack_{svc}_enabled"]:
                assert s[f"stack_{svc}_bind_address"] in loopback, f"{name}: {host} {svc}"


@pytest.mark.parametrize("llm", [False, True], ids=["as-shipped", "llm-enabled"])
def test_homelab_fits_a_16gb_card_and_the_cpu(tmp_path, llm):
    data, _ = run_inventory(REPO / "inventory" / "homelab", tmp_path)
    (host,) = hostvars(data)
    hv = {**hostvars(data)[host], "stack_llm_enabled": llm}
    assert hv["stack_device"] == "auto"
    assert set(hv["model_cache_kokoro_engines"]) == {"onnx", "torch"}
    gpu_plan = _plan(hv, HOMELAB_CARD)
    assert gpu_plan["fits"], gpu_plan["table"]
    assert _plan(hv, None)["fits"]


# ------------------------------------------------------------------------ hygiene


def test_inventories_are_yamllint_clean():
    paths = [str(REPO / "inventory" / name) for name in INVENTORIES]
    run_ok([str(BIN / "yamllint"), "-s", *paths], cwd=REPO)


def test_no_real_registry_or_address_is_named():
    """Only placeholder hosts (*.example.internal) and documentation addresses."""
    allowed_ip = re.compile(
        r"^(192\.0\.2|198\.51\.100|203\.0\.113)\.\d+$|^127\.0\.0\.1$|^0\.0\.0\.0$"
    )
    for name in INVENTORIES:
        for path in sorted((REPO / "inventory" / name).rglob("*")):
            if not path.is_file():
                continue
            text = path.read_text()
            for ip in re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", text):
                assert allowed_ip.match(ip), f"{path}: {ip} is not a documentation address"
            for url_host in re.findall(r"https?://([^/\s\"'{]+)", text):
                assert url_host.endswith(".example.internal"), f"{path}: {url_host}"
            for image in re.findall(r"^\s*stack_\w*image\w*:\s*(\S+)", text, re.M):
                first = image.split("/")[0]
                if "." in first or ":" in first:
                    assert first.split(":")[0].endswith(".example.internal"), f"{path}: {image}"
