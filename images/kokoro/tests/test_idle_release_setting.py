"""KOKORO_IDLE_UNLOAD_SECONDS, end to end: read from the environment (a negative value
refused naming the setting), handed by the app to its scheduler, and a server started
with it releases its model when left alone and answers the next request."""
from __future__ import annotations

import re
import time
from dataclasses import replace

import httpx
import pytest
from kokoro_server.settings import Settings, SettingsError
from kokoro_testlib import API_KEY, ServerThread, free_port

DEADLINE = 120  # against a hang, never a timing assertion


def test_the_setting_is_read_and_a_negative_one_refused():
    assert Settings.from_env({"KOKORO_IDLE_UNLOAD_SECONDS": "1800"}).idle_unload_seconds == 1800
    assert Settings.from_env({}).idle_unload_seconds == 0
    with pytest.raises(SettingsError, match="KOKORO_IDLE_UNLOAD_SECONDS must be >= 0"):
        Settings.from_env({"KOKORO_IDLE_UNLOAD_SECONDS": "-1"})


def loaded(client: httpx.Client) -> float:
    text = client.get("/metrics").text
    return float(re.search(r"^kokoro_model_loaded (\S+)$", text, re.M)[1])


def test_a_server_left_alone_releases_its_model_and_speaks_again(onnx_settings):
    settings = replace(onnx_settings, port=free_port(), idle_unload_seconds=0.5)
    with ServerThread(settings) as server, httpx.Client(
            base_url=server.url, timeout=DEADLINE,
            headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        deadline = time.monotonic() + DEADLINE
        while loaded(client) != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert loaded(client) == 0
        assert client.get("/health").status_code == 200
        r = client.post("/v1/audio/speech", json={"input": "Hello again.", "voice": "af_heart",
                                                  "response_format": "pcm"})
        assert r.status_code == 200 and len(r.content) > 24000  # over half a second of audio
