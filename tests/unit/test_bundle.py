"""tools/bundle.py: one archive for air-gapped deploys, built from real model files (the
Kokoro-82M config and two stock voices) and a real image in a real Docker engine, that
unpacks into exactly the folders roles/model_cache and roles/stack read."""

from __future__ import annotations

import functools
import hashlib
import http.server
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "bundle.py"
MANIFEST = ROOT / "manifest.yml"
FILES = ["kokoro/config.json", "kokoro/voices/af_heart.pt", "kokoro/voices/bf_emma.pt"]
SELECT = ["--engines", "--groups", "kokoro", "--voices", "af_heart", "bf_emma"]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bundle = _load("kokoro_deploy_bundle_tool", TOOL)
plan = _load(
    "kokoro_deploy_model_cache_plan", ROOT / "roles/model_cache/filter_plugins/model_cache.py"
)


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"bundle test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def models_src(tmp_path_factory) -> Path:
    """The three real files in the cache's layout, from the test bed's mirror or else the
    upstream seed folder (a private copy, so tests may alter it)."""
    mirror = ROOT / ".cache" / "mirror"
    seed = Path(os.environ.get("KOKORO_DEPLOY_SEED_DIR", ROOT.parent / "shared/kokoro-82M"))
    dest = tmp_path_factory.mktemp("models-src")
    for rel in FILES:
        src = mirror / rel
        if not src.is_file():
            src = seed / rel.removeprefix("kokoro/")
        if not src.is_file():
            _unavailable(f"{rel} is in neither {mirror} (make testbed) nor the seed {seed}")
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest / rel)
    return dest


def build(out: Path, *args: str) -> int:
    return bundle.main(["build", "--out", str(out), *args])


def only_bundle(out: Path) -> Path:
    found = sorted(out.iterdir())
    assert len(found) == 1, f"expected one archive and nothing else in {out}: {found}"
    return found[0]


def nothing_in(out: Path) -> bool:
    """No archive, partial file or temporary folder (hidden ones included) is left."""
    return not out.exists() or not any(out.iterdir())


def extract(archive: Path, dest: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    (top,) = dest.iterdir()
    return top


def model_sums(top: Path) -> list[str]:
    return [ln for ln in (top / "SHA256SUMS").read_text().splitlines() if "  models/" in ln]


def test_bundle_verifies_and_unpacks_into_the_model_cache_layout(tmp_path, models_src, capsys):
    assert build(tmp_path / "dist", "--models-from", str(models_src), "--label", "t", *SELECT) == 0
    archive = only_bundle(tmp_path / "dist")
    assert archive.name == "kokoro-deploy-bundle-t.tar"
    assert bundle.main(["verify", str(archive), "--manifest", str(MANIFEST)]) == 0
    assert "OK: 5 files" in capsys.readouterr().out

    top = extract(archive, tmp_path / "unpacked")
    models = top / "models"
    held = sorted(p.relative_to(models).as_posix() for p in models.rglob("*") if p.is_file())
    assert held == sorted(FILES)
    for rel in FILES:
        assert (models / rel).read_bytes() == (models_src / rel).read_bytes()

    # The role's own planning, pointed at the unpacked folder, finds every file it needs.
    manifest = yaml.safe_load(MANIFEST.read_text())
    chosen = plan.select_artifacts(manifest, [], ["af_heart", "bf_emma"], ["kokoro"])
    for entry in plan.plan_sources(chosen, "bundle", bundle_dir=str(models)):
        data = (models / entry["bundle_path"]).read_bytes()
        assert _sha256(data) == entry["sha256"], entry["name"]

    if shutil.which("sha256sum"):
        r = subprocess.run(
            ["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=top, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stdout + r.stderr
    info = json.loads((top / "bundle.json").read_text())
    assert info["manifest"]["schema_version"] == 1
    assert info["manifest"]["revisions"] == [
        "hexgrad/Kokoro-82M@" + manifest["huggingface"]["kokoro"]["revision"]
    ]
    assert [a["name"] for a in info["models"]["artifacts"]] == [
        "kokoro-config",
        "voice-af_heart",
        "voice-bf_emma",
    ]
    assert info["tool"]["version"] == bundle.TOOL_VERSION
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["created"])
    assert info["images"] == [] and info["wheels"] is None


def test_verify_names_a_corrupted_file_in_the_archive_and_in_the_folder(
    tmp_path, models_src, capsys
):
    build(tmp_path / "dist", "--models-from", str(models_src), "--label", "c", *SELECT)
    archive = only_bundle(tmp_path / "dist")
    top = extract(archive, tmp_path / "unpacked")
    capsys.readouterr()

    with tarfile.open(archive) as tar:
        offset = tar.getmember(
            "kokoro-deploy-bundle-c/models/kokoro/voices/af_heart.pt"
        ).offset_data
    with archive.open("r+b") as f:
        f.seek(offset + 1000)
        byte = f.read(1)
        f.seek(offset + 1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert bundle.main(["verify", str(archive)]) == 1
    err = capsys.readouterr().err
    assert re.search(
        r"FAIL models/kokoro/voices/af_heart\.pt: sha256 is [0-9a-f]{64}, "
        r"SHA256SUMS says [0-9a-f]{64}",
        err,
    ), err
    assert "bf_emma" not in err and "config.json" not in err

    assert bundle.main(["verify", str(top)]) == 0
    (top / "models/kokoro/voices/bf_emma.pt").write_bytes(b"not a voice pack")
    (top / "models/kokoro/voices/stray.pt").write_bytes(b"extra")
    assert bundle.main(["verify", str(top)]) == 1
    err = capsys.readouterr().err
    assert "FAIL models/kokoro/voices/bf_emma.pt: sha256 is" in err
    assert "FAIL models/kokoro/voices/stray.pt: in the bundle but not in SHA256SUMS" in err


def test_a_source_file_off_its_pin_fails_naming_both_digests_and_leaves_nothing(
    tmp_path, models_src, capsys
):
    manifest = yaml.safe_load(MANIFEST.read_text())
    (pinned,) = [a for a in manifest["artifacts"] if a["name"] == "voice-bf_emma"]
    real = pinned["sha256"]
    pinned["sha256"] = "0" * 64
    bad = tmp_path / "manifest.yml"
    bad.write_text(yaml.safe_dump(manifest))
    out = tmp_path / "dist"
    rc = build(out, "--manifest", str(bad), "--models-from", str(models_src), *SELECT)
    assert rc == 2
    err = capsys.readouterr().err
    assert f"digest mismatch for kokoro/voices/bf_emma.pt from {models_src}" in err
    assert "0" * 64 in err and real in err
    assert nothing_in(out)


def test_a_build_failing_midway_leaves_no_output_and_no_temp_dir(tmp_path, models_src, capsys):
    """Models are already in the partial archive when pip fails on the wheels."""
    out = tmp_path / "dist"
    rc = build(
        out,
        "--models-from",
        str(models_src),
        *SELECT,
        "--wheels",
        "kokoro-deploy-no-such-package",
        "--pip-option=--no-index",
        f"--pip-option=--find-links={tmp_path}",
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "models: 3 files verified" in err
    assert "pip download failed for the wheels (kokoro-deploy-no-such-package)" in err
    assert out.is_dir() and not any(out.iterdir()), sorted(out.iterdir())


def test_a_missing_image_or_model_file_is_named_with_the_fix(tmp_path, models_src, capsys):
    out = tmp_path / "dist"
    rc = build(
        out,
        "--models-from",
        str(models_src),
        *SELECT,
        "--images",
        "kokoro-deploy/no-such-image:never",
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "kokoro-deploy/no-such-image:never" in err
    assert "make images" in err or "install the Docker client" in err
    assert nothing_in(out)

    partial = tmp_path / "partial-src"
    shutil.copytree(models_src, partial)
    (partial / "kokoro/voices/bf_emma.pt").unlink()
    assert build(out, "--models-from", str(partial), *SELECT) == 2
    assert "model file kokoro/voices/bf_emma.pt (voice-bf_emma) is missing" in (
        capsys.readouterr().err
    )
    assert nothing_in(out)


def test_same_inputs_give_the_same_model_sums_and_with_a_fixed_time_the_same_archive(
    tmp_path, models_src, monkeypatch
):
    build(tmp_path / "a", "--models-from", str(models_src), "--label", "x", *SELECT)
    build(tmp_path / "b", "--models-from", str(models_src), "--label", "y", *SELECT)
    sums_a = model_sums(extract(only_bundle(tmp_path / "a"), tmp_path / "ua"))
    sums_b = model_sums(extract(only_bundle(tmp_path / "b"), tmp_path / "ub"))
    assert len(sums_a) == 3 and sums_a == sums_b

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1764201600")
    build(tmp_path / "c", "--models-from", str(models_src), "--label", "r", *SELECT)
    build(tmp_path / "d", "--models-from", str(models_src), "--label", "r", *SELECT)
    assert only_bundle(tmp_path / "c").read_bytes() == only_bundle(tmp_path / "d").read_bytes()


def test_models_download_from_a_mirror_url_on_loopback(tmp_path, models_src, capsys):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(models_src))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        assert build(tmp_path / "net", "--models-url", url, *SELECT) == 0
        assert build(tmp_path / "dir", "--models-from", str(models_src), *SELECT) == 0
        # A file the mirror lacks is named with the URL that failed, and nothing is left.
        rc = build(tmp_path / "miss", "--models-url", url, "--engines", "--voices", "af_sky")
        assert rc == 2 and nothing_in(tmp_path / "miss")
        assert f"{url}kokoro/voices/af_sky.pt answered HTTP 404" in capsys.readouterr().err
    finally:
        server.shutdown()
        server.server_close()
    net = model_sums(extract(only_bundle(tmp_path / "net"), tmp_path / "u1"))
    assert net == model_sums(extract(only_bundle(tmp_path / "dir"), tmp_path / "u2"))


# ------------------------------------------------------------------ a real Docker engine


def docker(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, **kw)


@pytest.fixture(scope="module")
def tiny_image():
    """A real one-file image made with `docker import` (no registry needed)."""
    if not shutil.which("docker"):
        _unavailable("no docker client on PATH")
    if docker("info").returncode != 0:
        _unavailable("no Docker engine answers (start dockerd, e.g. tests/testbed/up.sh)")
    name = f"kokoro-deploy/bundle-test:t{os.getpid()}"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"kokoro-deploy bundle test\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    r = docker("import", "-", name, input=buf.getvalue())
    assert r.returncode == 0, r.stderr.decode()
    yield name
    docker("image", "rm", "-f", name)


def test_image_archive_loads_with_docker_load_under_the_name_the_stack_role_uses(
    tmp_path, tiny_image, capsys
):
    image_id = docker("image", "inspect", "--format", "{{.Id}}", tiny_image, text=True)
    image_id = image_id.stdout.strip()
    assert build(tmp_path / "dist", "--no-models", "--images", tiny_image, "--label", "i") == 0
    archive = only_bundle(tmp_path / "dist")
    assert bundle.main(["verify", str(archive)]) == 0
    top = extract(archive, tmp_path / "unpacked")

    # roles/stack/tasks/images.yml: name | regex_replace('[/:]', '_') ~ '.tar'
    expected = top / "images" / (re.sub("[/:]", "_", tiny_image) + ".tar")
    assert [p.name for p in (top / "images").iterdir()] == [expected.name]
    (entry,) = json.loads((top / "bundle.json").read_text())["images"]
    assert entry["name"] == tiny_image and entry["id"] == image_id
    assert entry["size"] == expected.stat().st_size

    assert docker("image", "rm", tiny_image).returncode == 0
    r = docker("load", "--input", str(expected), text=True)
    assert r.returncode == 0, r.stderr
    loaded = docker("image", "inspect", "--format", "{{.Id}}", tiny_image, text=True)
    assert loaded.stdout.strip() == image_id


def test_cli_help_explains_the_layout_and_errors_exit_2(tmp_path):
    r = subprocess.run([sys.executable, str(TOOL), "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    assert "model_cache_bundle_dir" in r.stdout and "stack_image_archive_dir" in r.stdout
    r = subprocess.run(
        [sys.executable, str(TOOL), "verify", str(tmp_path / "none.tar")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "does not exist" in r.stderr
