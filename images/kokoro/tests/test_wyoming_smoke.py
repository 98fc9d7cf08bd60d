"""The Wyoming check of roles/stack/files/stack_smoke.py (the stack's verify step and the
acceptance suite on real hosts) against the real server: a wire-level reader written
from the protocol must agree with the server the `wyoming` package speaks for, and a
wrong voice or a closed port must be reported, not crash the check."""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from kokoro_testlib import ServerThread, free_port

SMOKE = Path(__file__).resolve().parents[3] / "roles/stack/files/stack_smoke.py"


@pytest.fixture(scope="module")
def smoke():
    spec = importlib.util.spec_from_file_location("stack_smoke", SMOKE)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("stack_smoke", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def wyoming_port(onnx_settings):
    settings = replace(onnx_settings, port=free_port(), wyoming_port=free_port())
    with ServerThread(settings):
        yield settings.wyoming_port


def test_the_smoke_check_hears_the_sentence_as_home_assistant_would(smoke, wyoming_port):
    found = smoke.check(smoke.check_wyoming, "127.0.0.1", wyoming_port)
    assert found["ok"], found
    assert found["voices"] >= 1 and found["audio_seconds"] >= 1


def test_a_voice_the_server_lacks_is_reported(smoke, wyoming_port):
    found = smoke.check(smoke.check_wyoming, "127.0.0.1", wyoming_port, "xx_nobody")
    assert not found["ok"] and "not xx_nobody" in found["error"], found


def test_a_closed_port_is_reported(smoke):
    found = smoke.check(smoke.check_wyoming, "127.0.0.1", free_port())
    assert not found["ok"] and "ConnectionRefusedError" in found["error"], found
