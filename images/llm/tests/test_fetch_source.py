"""images/llm/fetch-source.sh without the network: files that already match the
manifest are kept, and with --cuda the wheel folder is left holding exactly the
manifest's wheels (the build unpacks every wheel there). The script is run from a copy,
so that its src/ is a temporary folder, against a manifest written here."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parents[1]


def _pin(path: Path, data: bytes) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"file": path.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def kit(tmp_path: Path) -> Path:
    root = tmp_path / "llm"
    root.mkdir()
    shutil.copy(HERE / "fetch-source.sh", root)
    sdist = _pin(root / "src/llama_cpp_python-9.9.9.tar.gz", b"sdist")
    wheel = _pin(root / "src/cuda/nvidia_cuda_nvcc-13.0.1-py3-none-x.whl", b"wheel")
    manifest = {
        "versions": {"llama_cpp_python": "9.9.9"},
        "build_sources": {
            "llama_cpp_python": {"version": "9.9.9", **sdist},
            "llm_cuda_wheels": [{"name": "nvidia-cuda-nvcc", "version": "13.0.1", **wheel}],
        },
    }
    (tmp_path / "manifest.yml").write_text(yaml.safe_dump(manifest))
    return root


def run(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(root / "fetch-source.sh"), *args],
                          env={"PATH": "/usr/bin:/bin",
                               "KOKORO_DEPLOY_MANIFEST": str(root.parent / "manifest.yml"),
                               # this interpreter (with PyYAML) as the script's venv
                               "KOKORO_DEPLOY_VENV": str(Path(sys.executable).parents[1])},
                          capture_output=True, text=True, timeout=60)


def test_present_files_are_kept_and_a_stale_wheel_is_removed(tmp_path):
    root = kit(tmp_path)
    (root / "src/cuda/nvidia_cuda_nvcc-12.0.0-py3-none-x.whl").write_bytes(b"old pin")
    r = run(root, "--cuda")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(root / "src/llama_cpp_python-9.9.9.tar.gz")
    assert "nvidia_cuda_nvcc-12.0.0-py3-none-x.whl: not in the manifest; removed" in r.stderr
    assert "fetching" not in r.stderr
    assert sorted(p.name for p in (root / "src/cuda").iterdir()) == [
        "nvidia_cuda_nvcc-13.0.1-py3-none-x.whl"]


def test_without_cuda_the_wheel_folder_is_not_touched(tmp_path):
    root = kit(tmp_path)
    stale = root / "src/cuda/other.whl"
    stale.write_bytes(b"x")
    assert run(root).returncode == 0
    assert stale.exists()


def test_an_unknown_argument_is_refused_with_the_usage(tmp_path):
    r = run(kit(tmp_path), "--cdua")
    assert r.returncode == 1
    assert "unknown argument: --cdua (usage: fetch-source.sh [--cuda])" in r.stderr
