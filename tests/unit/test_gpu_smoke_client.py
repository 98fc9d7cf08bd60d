"""The Kokoro smoke client of tests/acceptance/gpu (the script it runs on each host) reads
a server's /health and a WAV from /v1/audio/speech correctly: served here over real HTTP
on loopback by a stand-in that answers with a 24 kHz tone, so a wrong sample rate,
silence or an unreachable server are each reported as such."""

import io
import json
import math
import re
import struct
import subprocess
import sys
import threading
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SMOKE = re.search(
    r'_SMOKE = r"""(.*?)"""', (REPO / "tests/acceptance/gpu/test_gpu.py").read_text(), re.S
).group(1)


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
    rate, amplitude = request.param
    seen = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = json.dumps({"status": "ok", "device": "cuda:0"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            length = int(self.headers["Content-Length"])
            seen["request"] = json.loads(self.rfile.read(length))
            seen["auth"] = self.headers.get("Authorization")
            body = _wav(rate, amplitude)
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}", seen
    httpd.shutdown()


def _run(url: str, key: str = "") -> dict:
    out = subprocess.run([sys.executable, "-c", SMOKE, url, key], capture_output=True,
                         text=True, check=True, timeout=60)
    return json.loads(out.stdout)


@pytest.mark.parametrize("server", [(24000, 0.3)], indirect=True)
def test_smoke_client_reads_rate_and_level(server):
    url, seen = server
    result = _run(url, "k1")
    assert result["rate"] == 24000 and result["health"]["device"] == "cuda:0"
    assert 0.2 < result["rms"] < 0.22  # a 0.3-amplitude sine: 0.3 / sqrt(2)
    assert abs(result["seconds"] - 1.0) < 0.01
    assert seen["request"]["response_format"] == "wav" and seen["auth"] == "Bearer k1"


@pytest.mark.parametrize("server", [(22050, 0.0)], indirect=True)
def test_smoke_client_reports_silence_and_other_rates(server):
    result = _run(server[0])
    assert result["rate"] == 22050 and result["rms"] == 0.0


def test_smoke_client_reports_an_unreachable_server():
    assert "unreachable" in _run("http://127.0.0.1:9")
