"""tools/model_cache_job.py, the entry point the chart's model Job and its services'
wait-for-models init containers run, against a real HTTP server on loopback (the test
bed's mirror server): it fills a cache with the model_cache role's plan and fetch code,
holds a companion to the lock's digest, verifies without changing anything, and names
what is missing or wrong."""

from __future__ import annotations

import hashlib
import random
import threading

import mirror_server
import model_cache_job
import pytest
import yaml

RNG = random.Random(20261207)
FILES = {
    "kokoro/config.json": b'{"n_token": 178}\n',
    "kokoro/onnx/kokoro-v1.0.int8.onnx": RNG.randbytes(300_000),
    "kokoro/voices/af_heart.pt": RNG.randbytes(5_000),
    "kokoro/voices/bf_emma.pt": RNG.randbytes(5_000),
}
GGUF = RNG.randbytes(70_000)
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def artifact(name, path, group, **extra):
    data = FILES[path]
    return {"name": name, "path": path, "group": group, "size": len(data), "sha256": sha(data),
            "source": {"type": "url", "url": f"https://upstream.invalid/{path}"}, **extra}


MANIFEST = {
    "schema_version": 1,
    "artifacts": [
        artifact("kokoro-config", "kokoro/config.json", "kokoro"),
        artifact("kokoro-onnx-int8", "kokoro/onnx/kokoro-v1.0.int8.onnx", "kokoro-onnx"),
        artifact("voice-af_heart", "kokoro/voices/af_heart.pt", "voices",
                 voice={"id": "af_heart", "lang_code": "a", "gender": "female"}),
        artifact("voice-bf_emma", "kokoro/voices/bf_emma.pt", "voices",
                 voice={"id": "bf_emma", "lang_code": "b", "gender": "female"}),
    ],
    "companions": {"llm": {"tiny": {
        "path": "llm/tiny.gguf", "planned_bytes": len(GGUF), "sha256": None,
        "source": {"type": "huggingface", "repo": "acme/tiny-GGUF", "revision": "main",
                   "file": "tiny.gguf"}}}},
}
LOCK = {"schema_version": 1, "files": {"llm/tiny.gguf": {
    "repo": "acme/tiny-GGUF", "file": "tiny.gguf", "revision": "main", "commit": COMMIT,
    "size": len(GGUF), "sha256": sha(GGUF)}}}


@pytest.fixture
def setup(tmp_path):
    """A mirror with the cache's layout that also answers as a Hugging Face endpoint."""
    root = tmp_path / "mirror"
    for rel, data in {**FILES, f"acme/tiny-GGUF/resolve/{COMMIT}/tiny.gguf": GGUF}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    server = mirror_server.make_server(str(root), 0, None)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    (tmp_path / "manifest.yml").write_text(yaml.safe_dump(MANIFEST))
    (tmp_path / "lock.yml").write_text(yaml.safe_dump(LOCK))
    (tmp_path / "cache").mkdir()
    common = ["--manifest", str(tmp_path / "manifest.yml"), "--dir", str(tmp_path / "cache"),
              "--engines", "onnx", "--voices", "af_heart", "--companions", "llm/tiny",
              "--source", "mirror", "--mirror-url", url, "--hf-endpoint", url.rstrip("/"),
              "--lock", str(tmp_path / "lock.yml"), "--retries", "1"]
    yield tmp_path / "cache", common
    server.shutdown()
    server.server_close()


def test_job_fills_the_cache_then_verifies_it(setup, capsys):
    cache, args = setup
    assert model_cache_job.main([*args, "--verify"]) == 1
    assert model_cache_job.main(args) == 0
    for rel in ("kokoro/config.json", "kokoro/onnx/kokoro-v1.0.int8.onnx",
                "kokoro/voices/af_heart.pt"):
        assert (cache / rel).read_bytes() == FILES[rel]
        assert (cache / rel).stat().st_mode & 0o777 == 0o444
    assert (cache / "llm/tiny.gguf").read_bytes() == GGUF
    assert not (cache / "kokoro/voices/bf_emma.pt").exists()  # not among the voices asked
    capsys.readouterr()
    assert model_cache_job.main([*args, "--verify"]) == 0
    assert model_cache_job.main(args) == 0
    assert '"fetched"' not in capsys.readouterr().out  # a second run changes nothing


def test_verify_names_a_wrong_file_and_the_job_replaces_it(setup, capsys):
    cache, args = setup
    assert model_cache_job.main(args) == 0
    wrong = cache / "kokoro/voices/af_heart.pt"
    wrong.chmod(0o644)
    wrong.write_bytes(b"x" * len(FILES["kokoro/voices/af_heart.pt"]))
    capsys.readouterr()
    assert model_cache_job.main([*args, "--verify"]) == 1
    assert "kokoro/voices/af_heart.pt" in capsys.readouterr().err
    assert model_cache_job.main(args) == 0
    assert wrong.read_bytes() == FILES["kokoro/voices/af_heart.pt"]


def test_an_unlocked_companion_is_not_verifiable_before_its_first_fetch(setup, capsys):
    _, args = setup
    i = args.index("--lock")
    unlocked = args[:i] + args[i + 2:]
    assert model_cache_job.main([*unlocked, "--verify"]) == 1
    assert "not fetched yet" in capsys.readouterr().err


def test_bad_input_is_exit_2(setup, capsys):
    _, args = setup
    assert model_cache_job.main([*args, "--voices", "zz_nobody"]) == 2
    assert "unknown voice" in capsys.readouterr().err
