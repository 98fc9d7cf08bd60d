"""The web player at /web: its files over plain HTTP, then the page in a real headless
Chromium (Debian's chromium + chromium-driver, driven by Selenium) against the real
server with the real int8 model.

The browser tests need `chromium` and `chromedriver` on PATH (tests/testbed/browser.sh
installs them) and the `selenium` package; without them they are skipped, and fail when
CI=true. Set KOKORO_DEPLOY_UPDATE_SCREENSHOTS=1 to refresh docs/images/web-player.png.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from kokoro_server.api.web import FILES
from kokoro_testlib import API_KEY, REPO, decode_audio

SCREENSHOT = REPO / "docs" / "images" / "web-player.png"
KOKORO = REPO / "images" / "kokoro"
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
         ".svg": "image/svg+xml"}


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture()
def anon(onnx_server):
    """A client with no API key (the server under test requires one for the API)."""
    with httpx.Client(base_url=onnx_server.url, timeout=60) as c:
        yield c


class Refs(HTMLParser):
    """Every URL-bearing attribute, inline script/style and event handler of a page."""

    URL_ATTRS = frozenset({"src", "href", "action", "formaction", "poster", "data",
                           "srcset", "background"})

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self.ids: set[str] = set()
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        for name, value in attrs:
            if name in self.URL_ATTRS and value is not None:
                self.urls.append(value)
            if name.startswith("on") or name == "style":
                self.inline.append(f"<{tag} {name}=...>")
        if tag == "style":
            self.inline.append("<style>")
        if tag == "script":
            if not a.get("src"):
                self.inline.append("<script> without src")
            self._in_script = True

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.inline.append("inline script text")


def test_web_redirects_to_the_page_without_an_api_key(anon):
    assert anon.get("/v1/audio/voices").status_code == 401  # the API does need the key
    r = anon.get("/web")
    assert r.status_code == 307 and r.headers["location"] == "web/"
    page = anon.get("/web", follow_redirects=True)
    assert page.status_code == 200 and str(page.url).endswith("/web/")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>Kokoro TTS player</title>" in page.text


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_file_has_its_type_and_security_headers(anon, name):
    path = "/web/" if name == "index.html" else f"/web/{name}"
    r = anon.get(path)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].split(";")[0] == TYPES[Path(name).suffix]
    assert r.content == (KOKORO / "src/kokoro_server/web" / name).read_bytes()
    csp = dict(d.strip().split(" ", 1) for d in r.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'"
    for directive in ("script-src", "style-src", "connect-src", "img-src"):
        assert csp[directive] == "'self'", (directive, csp)
    assert csp["media-src"] == "'self' blob:"  # the page plays its own blob: URL
    assert csp["frame-ancestors"] == "'none'" and csp["base-uri"] == "'none'"
    assert "unsafe" not in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-frame-options"] == "DENY"


def test_the_root_favicon_is_the_players_icon_without_a_key(anon):
    """Browsers fetch /favicon.ico for pages that name no icon: a 401 there was a
    console error that arrived at any time (and failed the key test below by chance)."""
    r = anon.get("/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"] == "image/svg+xml"
    assert r.content == anon.get("/web/favicon.svg").content


@pytest.mark.parametrize("path", ["/web/missing.js", "/web/%2e%2e%2fapp.py", "/web/web.py"])
def test_only_the_players_own_files_are_served(anon, path):
    r = anon.get(path)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_page_references_only_its_own_origin(anon):
    refs = Refs()
    refs.feed(anon.get("/web/").text)
    assert refs.inline == []  # the CSP forbids inline script and style: none is needed
    assert sorted(refs.urls) == ["app.js", "favicon.svg", "style.css"]
    for url in refs.urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and not url.startswith("/"), url
    for name in ("app.js", "style.css"):
        text = anon.get(f"/web/{name}").text
        assert not re.search(r"\b[a-z][a-z0-9+.-]*://|[\"'(]//|@import", text), name
    # app.js reaches the API relative to the page, and finds every element it uses
    js = anon.get("/web/app.js").text
    assert set(re.findall(r'new URL\("([^"]+)"', js)) == {"../v1/audio/voices",
                                                         "../v1/audio/speech"}
    assert set(re.findall(r'\$\("([a-z-]+)"\)', js)) <= refs.ids


def test_the_wheel_ships_the_players_files(tmp_path):
    src = tmp_path / "kokoro"
    shutil.copytree(KOKORO, src, ignore=shutil.ignore_patterns(
        "tests", "__pycache__", "*.egg-info", "build", "wheels", "extra-ca"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                        "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("kokoro_server-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"kokoro_server/web/{n}" for n in FILES} <= names
    assert "kokoro_server/api/web.py" in names


# ------------------------------------------------------------------ in a real browser

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
    downloads = tmp_path_factory.mktemp("downloads")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1000,700", "--hide-scrollbars", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-extensions", "--mute-audio",
                "--force-color-profile=srgb",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=chromedriver,
                      log_output=str(tmp_path_factory.mktemp("chromedriver") / "log"))
    # Both paths are given, so Selenium Manager is skipped; SE_OFFLINE keeps it from
    # downloading anything should a Selenium version consult it anyway.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SE_OFFLINE", "true")
        driver = webdriver.Chrome(options=opts, service=service)
    # a 1000x700 viewport whatever the headless window's decorations take
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1000, "height": 700, "deviceScaleFactor": 1,
                            "mobile": False})
    driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, script: str, timeout: float = 60):
    """Poll a JS expression until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if value:
            return value
        if time.monotonic() > deadline:
            status = driver.execute_script("return document.getElementById('status')"
                                           "?.textContent")
            pytest.fail(f"timed out after {timeout} s waiting for: {script}\n"
                        f"page status: {status!r}\nbrowser log: {driver.get_log('browser')}")
        time.sleep(0.1)


def open_player(driver, url: str, key: str | None):
    """Open /web in a tab whose sessionStorage holds `key` (or nothing)."""
    driver.get(url + "/web/favicon.svg")  # same origin, so the same sessionStorage
    driver.execute_script("sessionStorage.clear();"
                          "if (arguments[0]) sessionStorage.setItem('kokoro.apiKey', "
                          "arguments[0]);", key)
    driver.get_log("browser")  # start the console log afresh
    driver.get(url + "/web")
    assert driver.current_url == url + "/web/"


def errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_player_asks_for_a_key_when_the_server_needs_one(browser, onnx_server):
    from selenium.webdriver.common.by import By

    open_player(browser, onnx_server.url, None)
    wait_for(browser, "return document.getElementById('key-box').open")
    status = browser.find_element(By.ID, "status").text
    assert "needs an API key" in status and "missing API key" in status
    assert browser.find_element(By.ID, "voice").get_attribute("disabled")
    assert browser.find_element(By.ID, "speak").get_attribute("disabled")
    assert browser.switch_to.active_element.get_attribute("id") == "api-key"
    # the only console errors: the browser's own notes of the 401 on the voice list
    logged = errors(browser)
    assert logged and all("/v1/audio/voices" in e["message"] and "401" in e["message"]
                          for e in logged), logged

    browser.find_element(By.ID, "api-key").send_keys(API_KEY)
    browser.find_element(By.ID, "key-save").click()
    wait_for(browser, "return Number(document.getElementById('voice').dataset.loaded)")
    assert browser.execute_script("return sessionStorage.getItem('kokoro.apiKey')") == API_KEY
    assert browser.find_element(By.ID, "api-key").get_attribute("type") == "password"
    assert errors(browser) == []


def test_player_lists_voices_speaks_plays_and_downloads(browser, onnx_server, client):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    voices = client.get("/v1/audio/voices").json()["voices"]
    open_player(browser, onnx_server.url, API_KEY)
    wait_for(browser, "return Number(document.getElementById('voice').dataset.loaded)")

    # every voice of the server, once, under an optgroup named for its language
    groups = browser.execute_script(
        "return [...document.querySelectorAll('#voice > optgroup')].map(g => "
        "[g.label, [...g.querySelectorAll('option')].map(o => o.value)]);")
    assert browser.execute_script(
        "return document.querySelectorAll('#voice > option').length") == 0
    listed = [(label, vid) for label, ids in groups for vid in ids]
    assert sorted(vid for _, vid in listed) == sorted(v["id"] for v in voices)
    language = {v["id"]: v["language"] for v in voices}
    assert all(language[vid] == label for label, vid in listed)
    labels = [label for label, _ in groups]
    assert len(labels) == len(set(labels)) == len(set(language.values())) > 1
    assert Select(browser.find_element(By.ID, "voice")).first_selected_option \
        .get_attribute("value") == "af_heart"

    Select(browser.find_element(By.ID, "voice")).select_by_value("bf_emma")
    text = browser.find_element(By.ID, "text")
    text.clear()
    text.send_keys("Hello from the web player. It speaks through the server's own API.")
    browser.execute_script("const s = document.getElementById('speed'); s.value = '1.25';"
                           "s.dispatchEvent(new Event('input'));")
    assert browser.find_element(By.ID, "speed-value").text == "1.25×"
    Select(browser.find_element(By.ID, "format")).select_by_value("mp3")
    browser.find_element(By.ID, "speak").click()

    src = wait_for(browser, """
        const a = document.getElementById('player');
        return a.src.startsWith('blob:') && a.readyState >= 2 && a.duration > 0 && a.src;
    """, timeout=180)
    duration = browser.execute_script("return document.getElementById('player').duration")
    assert 2.0 < duration < 10.0, duration
    assert browser.find_element(By.ID, "status").text.startswith("Done in")
    link = browser.find_element(By.ID, "download")
    assert link.get_attribute("href") == src
    filename = link.get_attribute("download")
    assert re.fullmatch(r"kokoro-bf_emma-[\d-]+\.mp3", filename), filename
    assert link.get_attribute("aria-disabled") is None

    browser.execute_script("document.getElementById('player').pause(); window.scrollTo(0, 0);"
                           "document.activeElement.blur();")
    shot = browser.get_screenshot_as_png()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("KOKORO_DEPLOY_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        SCREENSHOT.write_bytes(shot)

    link.click()
    target = browser.downloads / filename
    deadline = time.monotonic() + 30
    while not target.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert target.is_file(), sorted(p.name for p in browser.downloads.iterdir())
    pcm, rate = decode_audio(target.read_bytes())
    assert abs(len(pcm) / rate - duration) < 0.5

    assert errors(browser) == []


@pytest.mark.parametrize("fmt", ["opus", "aac", "flac", "wav"])
def test_player_plays_each_format(browser, onnx_server, fmt):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_player(browser, onnx_server.url, API_KEY)
    wait_for(browser, "return Number(document.getElementById('voice').dataset.loaded)")
    text = browser.find_element(By.ID, "text")
    text.clear()
    text.send_keys(f"This is {fmt}.")
    Select(browser.find_element(By.ID, "format")).select_by_value(fmt)
    text.send_keys("\ue009\ue007")  # Ctrl+Enter speaks
    wait_for(browser, """
        const a = document.getElementById('player');
        return a.src.startsWith('blob:') && a.readyState >= 2 && a.duration > 0;
    """, timeout=120)
    assert browser.find_element(By.ID, "download").get_attribute("download").endswith(
        f".{fmt}")
    assert browser.find_element(By.ID, "meta").text.startswith(fmt.upper())
    assert errors(browser) == []


def test_player_disables_the_voices_of_a_language_the_image_lacks(browser, onnx_server,
                                                                 monkeypatch):
    monkeypatch.setitem(sys.modules, "jieba", None)  # as if built with LANGUAGE_EXTRAS=ja
    open_player(browser, onnx_server.url, API_KEY)
    wait_for(browser, "return Number(document.getElementById('voice').dataset.loaded)")
    options = browser.execute_script(
        "return [...document.querySelectorAll('#voice option')]"
        ".map(o => [o.value, o.disabled, o.textContent]);")
    off = {value: text for value, disabled, text in options if disabled}
    assert set(off) == {value for value, _, _ in options if value.startswith("z")} != set()
    assert all(text.endswith("not in this image") for text in off.values())
    assert browser.execute_script("return document.getElementById('voice').value") == "af_heart"
    assert errors(browser) == []
