"""Test helpers shared by the suite, the benchmark and the GPU script.

Nothing here is mocked: the model cache is filled over HTTP from a real mirror and
checked against the kit's manifest, and the random-init checkpoint is written in the
real on-disk format and loaded by the real kokoro.KModel code.
"""
from __future__ import annotations

import io
import math
import os
import shutil
import socket
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import yaml
from kokoro_server.assets import sha256_file as sha256

REPO = Path(__file__).resolve().parents[3]
MANIFEST = REPO / "manifest.yml"
DEFAULT_CACHE = REPO / ".cache" / "models"
KOKORO_PARTS = ("bert", "bert_encoder", "predictor", "text_encoder", "decoder")
RANDOM_CKPT_PATH = "kokoro/test/random-init-kokoro.pth"  # never the real checkpoint's path
API_KEY = "test-key-5f2b"  # a test credential for the servers the tests start


def manifest_artifacts(manifest: Path = MANIFEST) -> dict[str, dict]:
    return {a["path"]: a for a in yaml.safe_load(manifest.read_text())["artifacts"]}


def fetch_models(mirror: str, paths: list[str], cache: Path = DEFAULT_CACHE) -> Path:
    """Make `cache` hold each manifest path, downloaded from the mirror and checked.

    A file already in the cache with the right digest is kept; a download goes to a
    temporary name and is renamed only once its sha256 matches the manifest.
    """
    arts = manifest_artifacts()
    for rel in paths:
        art = arts[rel]
        dest = cache / rel
        if dest.is_file() and sha256(dest) == art["sha256"]:
            if dest.stat().st_mode & 0o044 != 0o044:
                os.chmod(dest, 0o644)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        url = mirror.rstrip("/") + "/" + rel
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
                shutil.copyfileobj(resp, out, 1 << 20)
            actual = sha256(Path(tmp))
            if actual != art["sha256"]:
                raise RuntimeError(f"{url}: sha256 {actual}, manifest expects {art['sha256']}")
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; containers read as another user
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return cache


def voice_paths() -> list[str]:
    return [p for p, a in manifest_artifacts().items() if a.get("group") == "voices"]


def duration_bias(frames_per_phoneme: float, max_dur: int = 50) -> float:
    """Bias for duration_proj so every phoneme lasts about this many frames.

    Kokoro's duration is sum(sigmoid(proj(x))) over max_dur outputs; with zero
    weights that is max_dur * sigmoid(bias)."""
    p = frames_per_phoneme / max_dur
    return math.log(p / (1 - p))


def build_random_checkpoint(config: Path, out: Path, frames_per_phoneme: float = 3.0,
                            seed: int = 0) -> Path:
    """A random-init Kokoro-82M checkpoint in the real format ({part: state_dict}).

    Built through kokoro.KModel itself: an empty state dict per part loads with
    strict=False (KModel's own fallback), leaving the modules randomly initialised.
    duration_proj gets zero weights and a bias giving `frames_per_phoneme` frames per
    phoneme (a random one gives ~25, i.e. ~50 s of audio per sentence)."""
    import torch
    from kokoro import KModel

    torch.manual_seed(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    empty = out.with_suffix(".empty.pth")
    torch.save({k: {} for k in KOKORO_PARTS}, empty)
    model = KModel(repo_id="hexgrad/Kokoro-82M", config=str(config), model=str(empty))
    empty.unlink()
    proj = model.predictor.duration_proj.linear_layer
    with torch.no_grad():
        proj.weight.zero_()
        proj.bias.fill_(duration_bias(frames_per_phoneme))
    torch.save({k: getattr(model, k).state_dict() for k in KOKORO_PARTS}, out)
    return out


def manifest_with(extra: dict[str, Path], dest: Path) -> Path:
    """A copy of the kit's manifest that also pins the given test-only files."""
    data = yaml.safe_load(MANIFEST.read_text())
    for rel, path in extra.items():
        data["artifacts"].append({"name": "test-" + Path(rel).stem, "path": rel,
                                  "group": "test", "sha256": sha256(path)})
    dest.write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """A real uvicorn server on a loopback port, in a thread of this process."""

    def __init__(self, settings, state=None):
        import uvicorn
        from kokoro_server.app import create_app

        self.settings = settings
        self.app = create_app(settings, state)
        self.port = settings.port
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state(self):
        return self.app.state.kokoro

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 300
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("server thread exited during start-up")
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start within 300 s")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)


# One sentence per language Kokoro speaks (lang_code -> text), for tests that speak with
# every stock voice: each voice gets its own language's sentence. One sentence each, so
# one chunk: test_gpu_image's exact length check counts one pass's two pad tokens.
LANGUAGE_SAMPLES = {
    "a": "The weather is nice today and the children are playing in the park.",
    "b": "Please call me back tomorrow morning when you have time.",
    "e": "Buenos días, me llamo Dora y vivo en una ciudad pequeña.",
    "f": "Bonjour, je m'appelle Siwis et j'habite dans une petite ville.",
    "h": "नमस्ते, मेरा नाम अल्फा है और मैं एक छोटे शहर में रहती हूँ।",
    "i": "Buongiorno, mi chiamo Sara e vivo in una piccola città.",
    "j": "東京タワーの高さはとても高いです。",
    "p": "Bom dia, meu nome é Dora e eu moro em uma pequena cidade.",
    "z": "我们明天一起去北京看长城，然后回家吃饭。",
}


def speak_every_voice(url: str, key: str, stream: bool = False, phonemes: bool = False,
                      only_lang: str | None = None) -> dict[str, dict]:
    """Speak LANGUAGE_SAMPLES[lang] with every voice the server lists (or only those of
    language `only_lang`), over HTTP.

    Returns {voice id: {"lang": lang_code, "pcm": int16 samples, "tokens": the
    phonemize endpoint's token ids for the same text (when `phonemes`)}}. Fails on a
    voice the server lists as unavailable or a request that is not answered with audio."""
    import httpx

    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=auth, timeout=300) as client:
        voices = client.get("/v1/audio/voices").json()["voices"]
        unavailable = [v["id"] for v in voices if not v.get("available", True)]
        assert not unavailable, f"voices listed as unavailable: {unavailable}"
        spoken = {}
        for v in voices:
            lang = v["lang_code"]
            if only_lang and lang != only_lang:
                continue
            body = {"input": LANGUAGE_SAMPLES[lang], "voice": v["id"],
                    "response_format": "pcm", "stream": stream}
            r = client.post("/v1/audio/speech", json=body)
            assert r.status_code == 200, (v["id"], r.text)
            spoken[v["id"]] = {"lang": lang, "pcm": np.frombuffer(r.content, "<i2")}
            if phonemes:
                p = client.post("/v1/audio/phonemize",
                                json={"input": LANGUAGE_SAMPLES[lang], "voice": v["id"]})
                assert p.status_code == 200, (v["id"], p.text)
                spoken[v["id"]]["tokens"] = p.json()["tokens"]
    return spoken


ERROR_KEYS = {"message", "type", "code", "param"}


def assert_error(resp, status: int, code: str) -> dict:
    """The response is the server's one error shape with this status and code."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Decode any container PyAV knows to mono float32 and its sample rate."""
    import av

    with av.open(io.BytesIO(data)) as c:
        stream = c.streams.audio[0]
        frames = [f.to_ndarray().reshape(-1) for f in c.decode(stream)]
        rate = stream.rate
    pcm = np.concatenate(frames) if frames else np.zeros(0, np.float32)
    if pcm.dtype.kind == "i":
        pcm = pcm.astype(np.float32) / 32768.0
    return pcm.astype(np.float32), rate


# Inputs that took the old normaliser seconds to minutes (its patterns backtracked over
# whole runs without whitespace): each is 20,000 characters, the request limit.
HOSTILE = {
    "dotted letters": "a." * 10_000,
    "www runs": "www." * 5_000,
    "digit dashes": "1-" * 10_000,
    "digit run": "1" * 20_000,  # over Python's 4,300-digit int() limit
    "grouped digits": "1," + "000," * 4_999 + "0",
    "open brackets": "[" * 20_000,
    "at signs": "a@" * 10_000,
    "dotted digits": "1.2." * 5_000,
    "plus groups": "+1 " * 6_666,
    "colons": "1:" * 10_000,
}
# One sample each normaliser rule reads (text/normalize.py RULES), to repeat into runs.
RULE_SAMPLES = {
    "markup": "[a](/b/)", "url": "http://a.io/b", "email": "a.b@c.com",
    "domain": "www.a.com/b", "phone": "+1 555-123-4567", "date": "2024-01-02",
    "money": "-$1,234.56k", "time": "10:30:15pm", "clock": "5 p.m.", "percent": "-5.5%",
    "decade": "'90s", "unit": "5.5 km/h", "ordinal": "1,000th", "version": "1.2.3",
    "range": "1-2%", "number": "-1,234.5", "abbr": "Dr.", "numero": "No. 5", "amp": " & ",
}


def rule_runs(limit: int = 20_000) -> dict[str, str]:
    """Each rule's sample repeated to `limit` characters, glued and spaced in the ways
    that made the old patterns backtrack."""
    return {f"{rule} {name}": (sample + sep) * (limit // (len(sample) + len(sep)))
            for rule, sample in RULE_SAMPLES.items()
            for name, sep in (("glued", ""), ("spaced", " "), ("dotted", "."),
                              ("dashed", "-"))}

