"""The Kokoro check of roles/stack/files/stack_smoke.py (which the stack role's verify
step, tests/acceptance/stack and tests/acceptance/gpu all run on a host) reads a server's
/health and a WAV from /v1/audio/speech correctly: served here over real HTTP on loopback
by a stand-in that answers with a 24 kHz tone, so a wrong sample rate, silence, bytes
that are no WAV or an unreachable server are each reported as such."""

import io
import json
import math
import struct
import subprocess
import sys
import wave
from pathlib import Path

import pytest
import stack_smoke
from loopback_standin import Request, standin

SCRIPT = Path(__file__).resolve().parents[2] / "roles/stack/files/stack_smoke.py"


def _wav(rate: int, amplitude: float, seconds: float = 1.0) -> bytes:
    n = int(rate * seconds)
    frames = b"".join(
        struct.pack("<h", int(amplitude * 32767 * math.sin(2 * math.pi * 440 * i / rate)))
        for i in range(n)
    )
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return buf.getvalue()


@pytest.fixture
def server(request):
    """A loopback stand-in for Kokoro whose speech is request.param: (rate, amplitude) for a
    WAV tone, or raw bytes."""
    audio = request.param if isinstance(request.param, bytes) else _wav(*request.param)
    seen = {}

    def answer(req: Request):
        if req.method == "GET":
            return 200, "application/json", {"status": "ok", "device": "cuda:0", "engine": "torch"}
        seen["request"] = json.loads(req.body)
        seen["auth"] = req.headers.get("Authorization")
        return 200, "audio/wav", audio

    with standin(answer) as url:
        yield url, seen


def _check(url: str, key: str = "") -> dict:
    return stack_smoke.check(stack_smoke.check_kokoro, url, key)


@pytest.mark.parametrize("server", [(24000, 0.3)], indirect=True)
def test_kokoro_check_reads_rate_level_and_device(server):
    url, seen = server
    result = _check(url, "k1")
    assert result["ok"] and result["error"] is None, result
    assert result["rate"] == 24000 and result["device"] == "cuda:0"
    assert 0.2 < result["rms"] < 0.22  # a 0.3-amplitude sine: 0.3 / sqrt(2)
    assert abs(result["audio_seconds"] - 1.0) < 0.01
    assert seen["request"]["response_format"] == "wav" and seen["auth"] == "Bearer k1"


@pytest.mark.parametrize("server", [(22050, 0.0)], indirect=True)
def test_kokoro_check_reports_silence_and_other_rates(server):
    result = _check(server[0])
    assert not result["ok"] and not result.get("unreachable")
    assert result["rate"] == 22050 and result["rms"] == 0.0
    assert "22050 Hz" in result["error"] and "silent" in result["error"]


@pytest.mark.parametrize("server", [b"ID3 this is no WAV"], indirect=True)
def test_kokoro_check_reports_audio_that_is_no_wav(server):
    result = _check(server[0])
    assert not result["ok"] and not result.get("unreachable")
    assert "RIFF" in result["error"], result


def test_kokoro_check_reports_an_unreachable_server():
    result = _check("http://127.0.0.1:9")
    assert not result["ok"] and result["unreachable"], result


@pytest.mark.parametrize("server", [(24000, 0.3)], indirect=True)
def test_script_checks_one_kokoro_url_as_the_gpu_acceptance_test_runs_it(server):
    url, seen = server
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT.read_text(), "--kokoro-url", url, "--kokoro-key", "k1"],
        capture_output=True, text=True, check=True, timeout=60)
    result = json.loads(out.stdout)
    assert list(result) == ["kokoro"] and result["kokoro"]["ok"], result
    assert result["kokoro"]["rate"] == 24000 and seen["auth"] == "Bearer k1"
