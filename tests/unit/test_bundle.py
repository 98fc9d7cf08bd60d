"""tools/bundle.py: one archive for air-gapped deploys, built from real model files (the
Kokoro-82M config and two stock voices) and a real image in a real Docker engine, that
unpacks into exactly the folders roles/model_cache and roles/stack read."""

from __future__ import annotations

import functools
import hashlib
import http.server
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

import bundle
import pytest
import yaml
from ansible_collections.kokoro.deploy.plugins.module_utils import model_cache_plan as plan

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "bundle.py"
MANIFEST = ROOT / "manifest.yml"
FILES = ["kokoro/config.json", "kokoro/voices/af_heart.pt", "kokoro/voices/bf_emma.pt"]
SELECT = ["--engines", "--groups", "kokoro", "--voices", "af_heart", "bf_emma"]




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


def build_models(out: Path, models: Path, *args: str) -> int:
    """A build of SELECT's models copied from the folder `models`, with `args` added."""
    return build(out, "--models-from", str(models), *SELECT, *args)


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
    assert build_models(tmp_path / "dist", models_src, "--label", "t") == 0
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
    build_models(tmp_path / "dist", models_src, "--label", "c")
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
    rc = build_models(out, models_src, "--manifest", str(bad))
    assert rc == 2
    err = capsys.readouterr().err
    assert f"digest mismatch for kokoro/voices/bf_emma.pt from {models_src}" in err
    assert "0" * 64 in err and real in err
    assert nothing_in(out)


def test_a_build_failing_midway_leaves_no_output_and_no_temp_dir(tmp_path, models_src, capsys):
    """Models are already in the partial archive when pip fails on the wheels."""
    out = tmp_path / "dist"
    rc = build_models(out, models_src, "--wheels", "kokoro-deploy-no-such-package",
                      "--pip-option=--no-index", f"--pip-option=--find-links={tmp_path}")
    assert rc == 2
    err = capsys.readouterr().err
    assert "models: 3 files verified" in err
    assert "pip download failed for the wheels (kokoro-deploy-no-such-package)" in err
    assert out.is_dir() and not any(out.iterdir()), sorted(out.iterdir())


def test_a_missing_image_or_model_file_is_named_with_the_fix(tmp_path, models_src, capsys):
    out = tmp_path / "dist"
    rc = build_models(out, models_src, "--images", "kokoro-deploy/no-such-image:never")
    assert rc == 2
    err = capsys.readouterr().err
    assert "kokoro-deploy/no-such-image:never" in err
    assert "make images" in err or "install the Docker client" in err
    assert nothing_in(out)

    partial = tmp_path / "partial-src"
    shutil.copytree(models_src, partial)
    (partial / "kokoro/voices/bf_emma.pt").unlink()
    assert build_models(out, partial) == 2
    assert "model file kokoro/voices/bf_emma.pt (voice-bf_emma) is missing" in (
        capsys.readouterr().err
    )
    assert nothing_in(out)


def test_same_inputs_give_the_same_model_sums_and_with_a_fixed_time_the_same_archive(
    tmp_path, models_src, monkeypatch
):
    build_models(tmp_path / "a", models_src, "--label", "x")
    build_models(tmp_path / "b", models_src, "--label", "y")
    sums_a = model_sums(extract(only_bundle(tmp_path / "a"), tmp_path / "ua"))
    sums_b = model_sums(extract(only_bundle(tmp_path / "b"), tmp_path / "ub"))
    assert len(sums_a) == 3 and sums_a == sums_b

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1764201600")
    build_models(tmp_path / "c", models_src, "--label", "r")
    build_models(tmp_path / "d", models_src, "--label", "r")
    assert only_bundle(tmp_path / "c").read_bytes() == only_bundle(tmp_path / "d").read_bytes()


def test_models_download_from_a_mirror_url_on_loopback(tmp_path, models_src, capsys):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(models_src))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        assert build(tmp_path / "net", "--models-url", url, *SELECT) == 0
        assert build_models(tmp_path / "dir", models_src) == 0
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


# ------------------------------------------------------------------ Debian packages (debs/)


def make_deb(where: Path, package: str, version: str, depends: str = "") -> Path:
    """A real, minimal .deb built with dpkg-deb (one file under /usr/share/doc)."""
    if not shutil.which("dpkg-deb"):
        _unavailable("no dpkg-deb on PATH (the Debian package dpkg)")
    root = where / f"src-{package}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr/share/doc" / package).mkdir(parents=True)
    (root / "usr/share/doc" / package / "README").write_text(f"{package} {version}\n")
    control = (
        f"Package: {package}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: kokoro-deploy tests <tests@invalid>\n"
        + (f"Depends: {depends}\n" if depends else "")
        + f"Description: test package {package}\n a package made for tools/bundle.py tests\n"
    )
    (root / "DEBIAN/control").write_text(control)
    out = where / f"{package}.deb"
    r = subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return out


def apt_simulate(repo: Path, work: Path, package: str) -> subprocess.CompletedProcess:
    """apt itself, with a configuration that sees only `repo` and an empty dpkg status:
    update, then simulate installing `package`."""
    if not shutil.which("apt-get"):
        _unavailable("no apt-get on PATH")
    for d in ("lists/partial", "cache/archives/partial", "etc/sources.list.d", "etc/preferences.d"):
        (work / d).mkdir(parents=True, exist_ok=True)
    (work / "status").write_text("")
    (work / "etc/sources.list").write_text(f"deb [trusted=yes] file:{repo} ./\n")
    opts = [
        f"-oDir::State::status={work}/status",
        f"-oDir::State::Lists={work}/lists",
        f"-oDir::State::extended_states={work}/extended_states",
        f"-oDir::Cache={work}/cache",
        f"-oDir::Etc::SourceList={work}/etc/sources.list",
        f"-oDir::Etc::SourceParts={work}/etc/sources.list.d",
        f"-oDir::Etc::PreferencesParts={work}/etc/preferences.d",
        "-oDebug::NoLocking=1",
        "-oAPT::Sandbox::User=root" if os.geteuid() == 0 else "-oAPT::Sandbox::User=",
    ]
    r = subprocess.run(["apt-get", *opts, "update"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return subprocess.run(
        ["apt-get", *opts, "-s", "install", package], capture_output=True, text=True
    )


def test_debs_become_a_flat_apt_repository_that_apt_resolves(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    debs = [
        make_deb(src, "kd-test-app", "1.0-1", depends="kd-test-lib (>= 2.0)"),
        make_deb(src, "kd-test-lib", "1:2.0-1"),  # an epoch: a colon in the version
    ]
    created = bundle.dt.datetime(2026, 11, 27, tzinfo=bundle.dt.UTC)
    repo = tmp_path / "debs"
    records = bundle.write_apt_repo(debs, repo, created)

    assert [r["package"] for r in records] == ["kd-test-app", "kd-test-lib"]
    assert records[1]["file"] == "debs/kd-test-lib_1_2.0-1_all.deb"  # no ':' nor '%3a'
    held = sorted(p.name for p in repo.iterdir())
    assert held == [
        "Packages",
        "Release",
        "kd-test-app_1.0-1_all.deb",
        "kd-test-lib_1_2.0-1_all.deb",
    ]
    for r in records:
        assert _sha256((tmp_path / r["file"]).read_bytes()) == r["sha256"]
    packages = (repo / "Packages").read_bytes()
    assert b"Filename: ./kd-test-lib_1_2.0-1_all.deb\n" in packages
    assert b"Version: 1:2.0-1\n" in packages and b" a package made for" in packages
    release = (repo / "Release").read_text()
    assert f" {_sha256(packages)} {len(packages)} Packages" in release
    assert "Date: Fri, 27 Nov 2026 00:00:00 UTC" in release

    r = apt_simulate(repo, tmp_path / "apt", "kd-test-app")
    assert r.returncode == 0, r.stdout + r.stderr
    installs = re.findall(r"^Inst (\S+)", r.stdout, re.M)
    assert installs == ["kd-test-lib", "kd-test-app"], r.stdout


def test_two_versions_of_one_package_or_a_non_deb_are_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    debs = [make_deb(a, "kd-test-lib", "1.0"), make_deb(b, "kd-test-lib", "1.1")]
    with pytest.raises(bundle.BundleError, match="two packages for kd-test-lib:all"):
        bundle.write_apt_repo(debs, tmp_path / "repo", bundle.dt.datetime.now(bundle.dt.UTC))
    junk = tmp_path / "junk.deb"
    junk.write_bytes(b"not an ar archive")
    with pytest.raises(bundle.BundleError, match=r"junk\.deb is not a Debian package"):
        bundle.read_deb_control(junk)


@pytest.mark.parametrize(
    ("os_release", "expected"),
    [
        (
            {"ID": "debian", "VERSION_ID": "12"},
            ["docker.io", "espeak-ng", "espeak-ng-data", "libespeak-ng1", "python3-apt"],
        ),
        (
            {"ID": "debian", "VERSION_ID": "13"},
            ["docker.io", "docker-cli", "docker-compose", "espeak-ng", "espeak-ng-data"],
        ),
        ({"ID": "ubuntu", "VERSION_ID": "24.04"}, ["docker.io", "docker-compose-v2"]),
    ],
)
def test_debs_roles_means_what_the_roles_install_on_that_release(os_release, expected):
    got = bundle.expand_debs(["roles", "tini"], os_release)
    assert got[: len(expected)] == expected
    assert got[-1] == "tini" and "python3-apt" in got and len(got) == len(set(got))


def test_debs_from_an_unsupported_release_or_with_a_bad_name_are_refused():
    with pytest.raises(bundle.BundleError, match="roles support Debian and Ubuntu"):
        bundle.expand_debs(["roles"], {"ID": "fedora", "VERSION_ID": "41"})
    with pytest.raises(bundle.BundleError, match="is not a Debian package name"):
        bundle.expand_debs(["docker.io; rm -rf /"], {"ID": "debian", "VERSION_ID": "12"})


def test_compose_plugin_ships_executable_and_a_bad_one_leaves_nothing(tmp_path, capsys):
    plugin = tmp_path / "docker-compose"
    plugin.write_text("#!/bin/sh\necho 'Docker Compose version v9.9.9'\n")
    plugin.chmod(0o644)
    out = tmp_path / "dist"
    assert build(out, "--no-models", "--compose-plugin", str(plugin)) == 2
    assert "is not an executable file" in capsys.readouterr().err
    assert nothing_in(out)

    plugin.chmod(0o755)
    assert build(out, "--no-models", "--compose-plugin", str(plugin), "--label", "p") == 0
    archive = only_bundle(out)
    assert bundle.main(["verify", str(archive)]) == 0
    with tarfile.open(archive) as tar:
        member = tar.getmember("kokoro-deploy-bundle-p/bin/docker-compose")
        assert member.mode == 0o755
    top = extract(archive, tmp_path / "unpacked")
    info = json.loads((top / "bundle.json").read_text())
    assert info["compose_plugin"]["sha256"] == _sha256(plugin.read_bytes())
    assert info["deploy"]["docker_engine_compose_binary_src"].endswith("/bin/docker-compose")
    assert "docker_engine_source" not in info["deploy"]  # no debs/ in this bundle


@pytest.fixture(scope="module")
def debs_image():
    """The local stand-in for a bare Debian 12 host (make testbed builds it)."""
    image = os.environ.get("KOKORO_DEPLOY_BASE_IMAGE", "kokoro-deploy/debian:12")
    if not shutil.which("docker") or docker("info").returncode != 0:
        _unavailable("no Docker engine answers (start dockerd, e.g. tests/testbed/up.sh)")
    if docker("image", "inspect", image).returncode != 0:
        _unavailable(f"no image {image} (make testbed builds it)")
    return image


def test_debs_are_resolved_by_apt_in_the_target_image_and_verified(tmp_path, debs_image, capsys):
    """tini needs nothing a bare host lacks: exactly one real package from Debian's archive."""
    out = tmp_path / "dist"
    rc = build(out, "--no-models", "--debs", "tini", "--debs-image", debs_image, "--label", "d")
    assert rc == 0, capsys.readouterr().err
    archive = only_bundle(out)
    assert bundle.main(["verify", str(archive)]) == 0
    assert "1 debs" in capsys.readouterr().out
    top = extract(archive, tmp_path / "unpacked")
    info = json.loads((top / "bundle.json").read_text())
    (deb,) = info["debs"]["files"]
    assert deb["package"] == "tini" and (top / deb["file"]).is_file()
    assert info["debs"]["os_id"] == "debian" and info["debs"]["image"] == debs_image
    assert info["deploy"]["docker_engine_source"] == "bundle"
    assert info["deploy"]["espeak_ng_bundle_dir"].endswith("/debs")
    assert "Package: tini\n" in (top / "debs/Packages").read_text()

    (top / deb["file"]).write_bytes(b"tampered")
    assert bundle.main(["verify", str(top)]) == 1
    err = capsys.readouterr().err
    assert f"FAIL {deb['file']}: sha256 differs from bundle.json" in err


def test_an_unknown_package_fails_naming_it_and_leaves_nothing(tmp_path, debs_image, capsys):
    out = tmp_path / "dist"
    rc = build(
        out, "--no-models", "--debs", "kokoro-deploy-no-such-package", "--debs-image", debs_image
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "could not download kokoro-deploy-no-such-package" in err
    assert "Unable to locate package kokoro-deploy-no-such-package" in err
    assert nothing_in(out)
    assert docker("ps", "-aq", "--filter", "name=kokoro-deploy-bundle-debs-").stdout.strip() == b""


# ------------------------------------------------ companion models, held to the lock

def _companion_src(tmp_path):
    """The tiny GGUF standing in for Qwen3 in the cache's layout, and a lock file that
    records its digest as model_cache would after a first fetch."""
    sys.path.insert(0, str(ROOT / "tests" / "testbed"))
    import tiny_gguf

    src = tmp_path / "models"
    path = MANIFEST_DATA["companions"]["llm"]["qwen3-8b-q4_k_m"]["path"]
    size, sha = tiny_gguf.write(src / path)
    lock = tmp_path / "models.lock.yml"
    lock.write_text(yaml.safe_dump({"schema_version": 1, "files": {path: {
        "repo": "Qwen/Qwen3-8B-GGUF", "file": "Qwen3-8B-Q4_K_M.gguf", "revision": "main",
        "commit": "1" * 40, "size": size, "sha256": sha}}}))
    return src, lock, path, sha


MANIFEST_DATA = yaml.safe_load(MANIFEST.read_text())
COMPANION = ["--engines", "--voices", "--companions", "llm/qwen3-8b-q4_k_m"]


def test_a_companion_is_bundled_and_verified_against_the_lock(tmp_path, capsys):
    src, lock, path, sha = _companion_src(tmp_path)
    out = tmp_path / "dist"
    assert build(out, "--models-from", str(src), "--lock", str(lock), "--label", "c",
                 *COMPANION) == 0
    archive = only_bundle(out)
    assert bundle.main(["verify", str(archive), "--manifest", str(MANIFEST),
                        "--lock", str(lock)]) == 0
    top = extract(archive, tmp_path / "x")
    assert f"{sha}  models/{path}" in model_sums(top)
    # Verified against another lock (another first fetch), the bundle is refused.
    other = tmp_path / "other.lock.yml"
    other.write_text(lock.read_text().replace(sha, "2" * 64))
    capsys.readouterr()
    assert bundle.main(["verify", str(archive), "--manifest", str(MANIFEST),
                        "--lock", str(other)]) == 1
    assert "2" * 64 in capsys.readouterr().err
    assert bundle.main(["verify", str(archive), "--manifest", str(MANIFEST)]) == 1
    assert "--lock" in capsys.readouterr().err


def test_an_unlocked_companion_or_a_changed_file_is_refused_leaving_nothing(tmp_path, capsys):
    src, lock, path, sha = _companion_src(tmp_path)
    out = tmp_path / "dist"
    assert build(out, "--models-from", str(src), *COMPANION) == 2
    assert "no --lock was given" in capsys.readouterr().err and nothing_in(out)
    target = src / path
    target.write_bytes(target.read_bytes() + b"changed")
    assert build(out, "--models-from", str(src), "--lock", str(lock), *COMPANION) == 2
    err = capsys.readouterr().err
    assert str(lock) in err and sha in err and "revision " + "1" * 40 in err
    assert nothing_in(out)
