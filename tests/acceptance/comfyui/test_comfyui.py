"""ComfyUI as the stack runs it (compose service `comfyui`, image images/comfyui): the
container is running and healthy, runs as a non-root user, its models folders are
read-only mounts through which ComfyUI lists the model cache's files, and, on a GPU host,
ComfyUI answers /system_stats from the host with a CUDA device and was started with the
VRAM plan's --reserve-vram.

Every check skips, saying so, on a host whose stack does not enable ComfyUI (no stack
.env, or COMPOSE_PROFILES without comfyui); the GPU checks also skip on a host with no
NVIDIA display controller. Nothing here changes the host: the write probe inside the
container removes what it made should a mount turn out writable. Reading the stack's
.env may need `--sudo` (tests/acceptance/README.md). Settings (environment):
  KOKORO_STACK_DIR    the compose project folder (default /opt/kokoro-deploy/stack)
  KOKORO_COMFYUI_URL  ComfyUI as the host reaches it (default http://ADDRESS:PORT from
                      COMFYUI_BIND_ADDRESS and COMFYUI_PORT in the stack's .env, else
                      http://127.0.0.1:8188)
"""

import json
import os
import posixpath
import shlex

import pytest
from ansible_collections.kokoro.deploy.plugins.module_utils import gpu_decisions

STACK_DIR = os.environ.get("KOKORO_STACK_DIR", "/opt/kokoro-deploy/stack").rstrip("/")
DEFAULT_MODEL_DIR = "/opt/kokoro-deploy/models"
MODELS = "/opt/comfyui/models"
# The model cache's comfyui/<folder> is mounted at /opt/comfyui/models/<folder>.
MODEL_FOLDERS = ("diffusion_models", "text_encoders", "vae", "loras", "checkpoints")
# What ComfyUI lists as model files (folder_paths.supported_pt_extensions, in part).
MODEL_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin")

# Runs on the host, so the URL is as the host sees it; prints the JSON body or the error.
_GET = r"""
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=15) as r:
        print(json.dumps({"body": json.load(r)}))
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
"""

# Run as root inside the container: root may write anywhere but on a read-only mount.
_WRITE_PROBE = (
    'f="$1/.kokoro-acceptance-write-probe"; '
    'if touch "$f" 2>/dev/null; then rm -f "$f"; echo writable; else echo read-only; fi'
)


def parse_env(text: str) -> dict[str, str]:
    """KEY=VALUE lines as docker compose reads a .env file (comments, `export`, quotes)."""
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def flag_value(argv: list[str], flag: str) -> str | None:
    """The value given to `flag` (`--flag V` or `--flag=V`); the last one wins, as in argparse."""
    found = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith(flag + "="):
            found = arg.partition("=")[2]
    return found


def get_json(host, url: str):
    result = json.loads(host.check_output("python3 -c %s %s", _GET, url))
    assert "error" not in result, f"ComfyUI does not answer {url}: {result.get('error')}"
    return result["body"]


@pytest.fixture(scope="module")
def stack_env(host) -> dict[str, str]:
    env_file = host.file(f"{STACK_DIR}/.env")
    if not env_file.exists:
        pytest.skip(f"no {STACK_DIR}/.env: the stack is not deployed on this host")
    env = parse_env(env_file.content_string)
    profiles = [p.strip() for p in env.get("COMPOSE_PROFILES", "").split(",")]
    if "comfyui" not in profiles:
        pytest.skip(
            f"COMPOSE_PROFILES={env.get('COMPOSE_PROFILES', '')!r} in {STACK_DIR}/.env "
            "does not enable comfyui: ComfyUI is not configured on this host"
        )
    return env


@pytest.fixture(scope="module")
def container(host, stack_env) -> dict:
    """`docker inspect` of the stack's comfyui container."""
    assert host.exists("docker"), "the stack enables comfyui but Docker is not installed"
    project = stack_env.get("COMPOSE_PROJECT_NAME", posixpath.basename(STACK_DIR))
    ids = []
    for label in (
        f"com.docker.compose.project.working_dir={STACK_DIR}",
        f"com.docker.compose.project={project}",
    ):
        ids = host.check_output(
            "docker ps --all --quiet --filter label=com.docker.compose.service=comfyui "
            "--filter label=%s",
            label,
        ).split()
        if ids:
            break
    assert ids, (
        f"COMPOSE_PROFILES enables comfyui but the project in {STACK_DIR} has no "
        "comfyui container: run `docker compose up -d --wait` there"
    )
    assert len(ids) == 1, f"{len(ids)} comfyui containers: {ids}"
    return json.loads(host.check_output("docker inspect %s", ids[0]))[0]


@pytest.fixture(scope="module")
def nvidia(host):
    out = host.check_output(
        "for d in /sys/bus/pci/devices/*; do [ -r $d/class ] && "
        'echo "${d##*/} $(cat $d/vendor) $(cat $d/device) $(cat $d/class)"; done; true'
    )
    devices = gpu_decisions.parse_pci_devices(out)
    if not devices:
        pytest.skip("no NVIDIA display controller on this host's PCI bus: GPU checks do not apply")
    return devices


@pytest.fixture(scope="module")
def comfyui_url(stack_env) -> str:
    address = stack_env.get("COMFYUI_BIND_ADDRESS") or "127.0.0.1"
    if address in ("0.0.0.0", "::"):  # published on every address: loopback is one
        address = "127.0.0.1"
    if ":" in address:
        address = f"[{address}]"
    default = f"http://{address}:{stack_env.get('COMFYUI_PORT') or '8188'}"
    return os.environ.get("KOKORO_COMFYUI_URL", default).rstrip("/")


@pytest.fixture(scope="module")
def system_stats(host, container, comfyui_url) -> dict:
    return get_json(host, f"{comfyui_url}/system_stats")


def test_comfyui_container_is_running_and_healthy(container):
    name = container["Name"].lstrip("/")
    state = container["State"]
    assert state["Status"] == "running", (
        f"{name} is {state['Status']} (exit code {state.get('ExitCode')}): `docker logs {name}`"
    )
    health = state.get("Health")
    assert health, f"{name} has no healthcheck (the image's probes /system_stats)"
    last = (health.get("Log") or [{}])[-1].get("Output", "").strip()
    assert health["Status"] == "healthy", f"{name} is {health['Status']}; last probe: {last}"


def test_comfyui_runs_as_a_non_root_user(host, container):
    # PID 1 is tini, started as the image's (or compose's) user; ComfyUI is its child.
    status = host.check_output("docker exec %s cat /proc/1/status", container["Id"])
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert "0" not in uids, (
        f"ComfyUI runs as root (uids {uids}, User={container['Config'].get('User')!r}): "
        "the image's USER 10003 is overridden (compose `user:`?)"
    )


def test_comfyui_models_are_read_only_mounts(host, container):
    mounts = [
        m
        for m in container["Mounts"]
        if m["Destination"] == MODELS or m["Destination"].startswith(MODELS + "/")
    ]
    assert mounts, f"nothing is mounted under {MODELS}: ComfyUI sees no model cache"
    writable = [m["Destination"] for m in mounts if m.get("RW")]
    assert not writable, f"mounted read-write: {writable} (mount the model cache with :ro)"
    # The kernel agrees: even root inside the container cannot create a file there.
    for mount in mounts:
        probe = host.run(
            "docker exec --user 0 %s sh -c %s sh %s",
            container["Id"],
            _WRITE_PROBE,
            mount["Destination"],
        )
        if probe.rc != 0 and "Not a directory" in probe.stderr:
            continue  # a single-file mount: its RW flag above is the check
        assert probe.stdout.strip() == "read-only", (
            f"a file could be created in {mount['Destination']}: {probe.stdout}{probe.stderr}"
        )


def test_comfyui_lists_the_model_cache_files(host, stack_env, container, comfyui_url):
    cache = f"{stack_env.get('MODEL_DIR') or DEFAULT_MODEL_DIR}/comfyui"
    checked = 0
    for folder in MODEL_FOLDERS:
        found = host.run("cd %s && find -L . -type f", f"{cache}/{folder}")
        files = sorted(
            path.removeprefix("./")
            for path in found.stdout.split("\n")
            if path.endswith(MODEL_SUFFIXES)
        )
        if found.rc != 0 or not files:
            continue
        listed = get_json(host, f"{comfyui_url}/models/{folder}")
        missing = [f for f in files if f not in listed]
        assert not missing, (
            f"{cache}/{folder} holds {missing} but ComfyUI's {folder} list "
            f"is {listed}: is that folder mounted at {MODELS}/{folder}?"
        )
        checked += 1
    if not checked:
        pytest.skip(f"no model files under {cache}/{{{','.join(MODEL_FOLDERS)}}}: nothing to list")


def test_comfyui_computes_on_a_cuda_device(nvidia, system_stats):
    devices = system_stats.get("devices", [])
    summary = [(d.get("name"), d.get("type"), d.get("vram_total")) for d in devices]
    assert devices and devices[0].get("type") == "cuda", (
        f"ComfyUI's device is {summary}: the container does not see the GPU (compose GPU "
        "overlay, nvidia_container_toolkit) or runs with --cpu"
    )
    gpu = devices[0]
    assert gpu["vram_total"] > 0 and 0 <= gpu["vram_free"] <= gpu["vram_total"], summary


def test_comfyui_runs_with_the_plans_reserve_vram(nvidia, stack_env, container, system_stats):
    argv = system_stats.get("system", {}).get("argv")
    if argv is None:  # a ComfyUI whose /system_stats omits argv: what the container was given
        env = dict(e.partition("=")[::2] for e in container["Config"].get("Env") or [])
        argv = shlex.split(env.get("COMFYUI_ARGS", "")) + (container.get("Args") or [])
    reserve = flag_value(argv, "--reserve-vram")
    assert reserve is not None, (
        f"ComfyUI runs without --reserve-vram ({argv}): beside Kokoro and the LLM it may "
        "take the whole card; COMFYUI_ARGS in the stack's .env comes from the VRAM plan"
    )
    assert float(reserve) > 0, f"--reserve-vram {reserve}"
    planned = flag_value(shlex.split(stack_env.get("COMFYUI_ARGS", "")), "--reserve-vram")
    if planned is not None:
        assert float(reserve) == float(planned), (
            f"ComfyUI runs with --reserve-vram {reserve}, the plan in {STACK_DIR}/.env says "
            f"{planned}: recreate the service (`docker compose up -d comfyui`)"
        )
