#!/usr/bin/env python3
"""Build and verify the offline bundle: ONE archive that deploys air-gapped hosts.

    python tools/bundle.py build --models-from .cache/mirror \\
        --images kokoro-deploy/kokoro:cpu kokoro-deploy/llm:cpu --out dist/
    python tools/bundle.py verify dist/kokoro-deploy-bundle-20261127.tar

The archive holds one folder, kokoro-deploy-bundle-<label>/, with

    models/       the model cache's layout (kokoro/config.json, kokoro/voices/*.pt, ...):
                  point model_cache_bundle_dir here (model_cache_source: bundle)
    images/       one `docker save` archive per image, named after the image with / and :
                  as _ (kokoro-deploy_kokoro_cpu.tar): point stack_image_archive_dir here
                  (stack_images_source: archive)
    wheels/       optional `pip download` output, a flat wheelhouse
                  (torch_runtime_wheelhouse_src)
    debs/         optional Debian packages a bare host lacks (the roles' packages and their
                  dependencies, resolved by apt in a container of the target release), as a
                  flat apt repository (Packages, Release): point docker_engine_bundle_dir
                  and espeak_ng_bundle_dir here (docker_engine_source/espeak_ng_source: bundle)
    bin/          optional docker-compose, the compose v2 CLI plugin for releases that
                  package none (Debian 12): docker_engine_compose_binary_src
    bundle.json   what is inside: manifest pins, images with ids, sizes, creation time
    SHA256SUMS    every other file, `sha256sum -c SHA256SUMS` compatible

Models are selected as roles/model_cache selects them (the same code: the collection's
plugins/module_utils/model_cache_plan.py and model_cache_lock.py, imported here) and
every file is checked against manifest.yml's sha256 before it enters the bundle. The
output is written under a temporary name and renamed at the end; a failure removes
everything it made. Python 3.11 standard library plus PyYAML.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import yaml

# The kit's collection (kokoro.deploy), as Ansible finds it beside the playbooks: the
# model_cache role's plan, and its companions and lock of digests learned on first use,
# read as the role reads them. Standard library only, so no Ansible is needed here.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ansible" / "collections"))
from ansible_collections.kokoro.deploy.plugins.module_utils import (
    model_cache_lock,
    model_cache_plan,
)

TOOL_VERSION = "1.1.0"
BUNDLE_FORMAT = 1
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MANIFEST = ROOT / "manifest.yml"
NAME_PREFIX = "kokoro-deploy-bundle-"
CHUNK = 1 << 20
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# What bundle.json records of each model file and each image.
MODEL_KEYS = ("name", "path", "group", "sha256", "size", "voice")
IMAGE_KEYS = (
    "name",
    "archive",
    "id",
    "config",
    "size",
    "sha256",
    "image_size",
    "os",
    "architecture",
)
# External compressors, first found wins: (argv for compressing stdin to stdout, suffix).
# What bundle.json records of each Debian package.
DEB_KEYS = ("package", "version", "architecture", "file", "sha256", "size")
# The image whose apt resolves the packages: a bare host of the target release.
DEFAULT_DEBS_IMAGE = "debian:12"
# Where the compose v2 plugin goes in the bundle.
COMPOSE_PLUGIN = "bin/docker-compose"
COMPRESSORS = {
    "zst": ([["zstd", "-q", "-T0", "-3", "-c"]], ".tar.zst"),
    "gz": ([["pigz", "-n", "-6", "-c"], ["gzip", "-n", "-6", "-c"]], ".tar.gz"),
}


class BundleError(Exception):
    """A problem the user can fix; the message says what went wrong and how to fix it."""


# ---------------------------------------------------------------------------- helpers


def log(msg: str) -> None:
    print(f"bundle: {msg}", file=sys.stderr, flush=True)


def human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def sha256_file(path: Path) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
            n += len(block)
    return h.hexdigest(), n


class HashingReader(io.RawIOBase):
    """Reads through to a file object while hashing and counting every byte read."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.hash, self.count = raw, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.hash.update(data)
        self.count += len(data)
        return data

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def archive_name(image: str) -> str:
    """The archive file roles/stack looks for: the image name with / and : as _."""
    return re.sub(r"[/:]", "_", image) + ".tar"


def image_reference(image: str) -> str:
    """What `docker save` is given: the name, with :latest when it names no tag (an untagged
    repository would otherwise save every tag it has)."""
    if "@" in image:
        raise BundleError(
            f"image {image} is named by digest; name it by tag (repo:tag) as the stack role "
            "does, since `docker load` restores tags, not digests"
        )
    return image if ":" in image.rsplit("/", 1)[-1] else f"{image}:latest"


def read_lock(path: str | None) -> dict:
    """The model_cache lock file (models.lock.yml), or {} when none is given."""
    if not path:
        return {}
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise BundleError(f"cannot read the lock file {path}: {err}") from None


def companions(manifest: dict, names: list[str], lock_path: str | None) -> list[dict]:
    """The named companions' files, each with the sha256 manifest.yml pins or, failing
    that, the one the lock recorded on first use; one with neither is an error."""
    if not names:
        return []
    lk = model_cache_lock
    try:
        arts = lk.companion_artifacts(manifest, names, read_lock(lock_path),
                                      str(lock_path or "the lock file"))
    except lk.LockError as err:
        raise BundleError(f"companions: {err}") from None
    for a in arts:
        if not a["sha256"]:
            raise BundleError(
                f"companion file {a['path']} ({a['name']}) has no sha256 in manifest.yml "
                f"{'or in ' + str(lock_path) if lock_path else 'and no --lock was given'}: "
                "run site.yml's models stage once against Hugging Face so that "
                "models.lock.yml records it (trust on first use) and pass --lock, or pin it"
            )
    return arts


def read_docker_archive(fileobj: BinaryIO) -> dict:
    """RepoTags and config digest of a `docker save` archive, read as a stream."""
    try:
        with tarfile.open(fileobj=fileobj, mode="r|") as tar:
            for member in tar:
                if member.name.lstrip("./") == "manifest.json" and member.isfile():
                    manifest = json.loads(tar.extractfile(member).read())
                    break
            else:
                raise BundleError("it has no manifest.json")
    except (tarfile.TarError, json.JSONDecodeError) as err:
        raise BundleError(f"it is not a docker save archive ({err})") from None
    tags = sorted(t for entry in manifest for t in entry.get("RepoTags") or [])
    configs = [entry.get("Config", "") for entry in manifest]
    digests = []
    for config in configs:
        hexdigest = re.search(r"([0-9a-f]{64})(?:\.json)?$", config)
        digests.append(f"sha256:{hexdigest.group(1)}" if hexdigest else config)
    return {"repo_tags": tags, "config": digests[0] if len(digests) == 1 else digests}


# ---------------------------------------------------------------------------- sources


class DirSource:
    """A folder with the model cache's layout (the test bed's .cache/mirror is one)."""

    def __init__(self, root: Path):
        self.root = root
        self.label = str(root)
        if not root.is_dir():
            raise BundleError(
                f"--models-from {root} is not a folder: point it at a folder with the model "
                "cache's layout (make testbed builds .cache/mirror) or use --models-url"
            )

    def check(self, artifact: dict) -> None:
        if not (self.root / artifact["path"]).is_file():
            raise BundleError(
                f"model file {artifact['path']} ({artifact['name']}) is missing from "
                f"{self.root}: put it there with the cache's layout, choose a folder that "
                "has it, or leave it out of the selection (--engines/--voices/--groups)"
            )

    def fetch(self, artifact: dict, workdir: Path) -> Path:
        return self.root / artifact["path"]


class UrlSource:
    """A mirror: a plain HTTP(S) tree with the model cache's layout."""

    def __init__(self, base: str, timeout: float):
        if not base.startswith(("http://", "https://")):
            raise BundleError(f"--models-url {base!r} is not an http(s) URL")
        self.base, self.timeout, self.label = base.rstrip("/") + "/", timeout, base

    def check(self, artifact: dict) -> None:
        pass  # a download is the only real check; fetch() names a missing file

    def fetch(self, artifact: dict, workdir: Path) -> Path:
        url = self.base + artifact["path"]
        dest = workdir / "download" / artifact["path"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp, dest.open("wb") as f:
                shutil.copyfileobj(resp, f, CHUNK)
        except urllib.error.HTTPError as err:
            raise BundleError(
                f"download of {artifact['path']} failed: {url} answered HTTP {err.code}: "
                "check that --models-url is a tree with the cache's layout that holds it"
            ) from None
        except (urllib.error.URLError, OSError) as err:
            raise BundleError(
                f"download of {artifact['path']} from {url} failed ({err}): check "
                "--models-url and the network, or copy from a folder with --models-from"
            ) from None
        return dest


# ---------------------------------------------------------------------------- writing


class TarWriter:
    """Streams a deterministic tar (sorted input, fixed owner, modes and mtime) into a file,
    optionally through an external compressor, recording each file's sha256."""

    def __init__(self, path: Path, top: str, mtime: int, compressor: list[str] | None):
        self.top, self.mtime = top, mtime
        self.sums: dict[str, str] = {}
        self.sizes: dict[str, int] = {}
        self._dirs: set[str] = set()
        self._file = path.open("wb")
        self._proc = None
        sink: BinaryIO = self._file
        if compressor:
            self._proc = subprocess.Popen(compressor, stdin=subprocess.PIPE, stdout=self._file)
            sink = self._proc.stdin
        # Closed by close() or abort(): the writer lives across the whole build.
        self._tar = tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115

    def _info(self, name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.size, info.mtime = kind, mode, size, self.mtime
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    def _parents(self, rel: str) -> None:
        parts = PurePosixPath(self.top, rel).parts[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self._dirs:
                self._dirs.add(d)
                self._tar.addfile(self._info(d, tarfile.DIRTYPE, 0o755))

    def add_file(self, rel: str, src: Path, mode: int = 0o644) -> str:
        size = src.stat().st_size
        self._parents(rel)
        with src.open("rb") as f:
            reader = HashingReader(f)
            self._tar.addfile(self._info(f"{self.top}/{rel}", tarfile.REGTYPE, mode, size), reader)
        if reader.count != size:
            raise BundleError(f"{src} changed size while it was added; run the build again")
        self.sums[rel], self.sizes[rel] = reader.hash.hexdigest(), size
        return self.sums[rel]

    def add_bytes(self, rel: str, data: bytes) -> None:
        self._parents(rel)
        info = self._info(f"{self.top}/{rel}", tarfile.REGTYPE, 0o644, len(data))
        self._tar.addfile(info, io.BytesIO(data))
        self.sums[rel], self.sizes[rel] = hashlib.sha256(data).hexdigest(), len(data)

    def close(self) -> None:
        self._tar.close()
        if self._proc:
            self._proc.stdin.close()
            if self._proc.wait() != 0:
                raise BundleError(f"{self._proc.args[0]} failed (exit {self._proc.returncode})")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._tar.close()
        if self._proc:
            with contextlib.suppress(Exception):
                self._proc.stdin.close()
            self._proc.kill()
            self._proc.wait()
        self._file.close()


def find_compressor(kind: str) -> tuple[list[str] | None, str]:
    if kind == "none":
        return None, ".tar"
    candidates, suffix = COMPRESSORS[kind]
    for argv in candidates:
        if shutil.which(argv[0]):
            return argv, suffix
    tools = " or ".join(a[0] for a in candidates)
    raise BundleError(
        f"--compress {kind} needs {tools} on PATH: install it (apt-get install "
        f"{candidates[-1][0]}) or build an uncompressed bundle (--compress none)"
    )


def docker(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, **kw)


def inspect_images(images: list[str]) -> list[dict]:
    if images and not shutil.which("docker"):
        raise BundleError(
            f"docker is not on PATH but images were named ({', '.join(images)}): install "
            "the Docker client and start the engine (make testbed), or leave out --images"
        )
    found = []
    for image in images:
        ref = image_reference(image)
        r = docker("image", "inspect", "--format", "{{json .}}", ref)
        if r.returncode != 0:
            raise BundleError(
                f"docker save failed for {image}: the engine has no such image "
                f"({r.stderr.strip()}): build it with make images "
                "or name an existing image (docker images)"
            )
        data = json.loads(r.stdout)
        found.append(
            {
                "name": image,
                "reference": ref,
                "archive": f"images/{archive_name(image)}",
                "id": data["Id"],
                "image_size": data.get("Size"),
                "os": data.get("Os"),
                "architecture": data.get("Architecture"),
            }
        )
    names = [i["archive"] for i in found]
    dupes = sorted({a for a in names if names.count(a) > 1})
    if dupes:
        raise BundleError(f"two images map to the same archive name {dupes}; name each once")
    return found


def save_image(image: dict, workdir: Path) -> Path:
    out = workdir / "image.tar"
    r = docker("save", "-o", str(out), image["reference"])
    if r.returncode != 0:
        raise BundleError(
            f"docker save failed for {image['name']} ({r.stderr.strip()}): build it with make "
            "images (e.g. make image-cpu) or name an existing image (docker images)"
        )
    with out.open("rb") as f:
        try:
            info = read_docker_archive(f)
        except BundleError as err:
            raise BundleError(f"docker save of {image['name']} gave an archive {err}") from None
    if image["reference"] not in info["repo_tags"]:
        raise BundleError(
            f"docker save of {image['reference']} wrote tags {info['repo_tags']}, not the name "
            "itself; docker load would not restore the name the stack role looks for"
        )
    image["config"] = info["config"]
    return out


# ---------------------------------------------------------------------------- debs


def read_deb_control(path: Path) -> str:
    """The control paragraph of a .deb: an ar archive whose control.tar[.gz|.xz] holds it."""
    with path.open("rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise BundleError(f"{path.name} is not a Debian package (no ar header)")
        while header := f.read(60):
            if len(header) < 60:
                break
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            data_start = f.tell()
            if name.startswith("control.tar"):
                if name.endswith(".zst"):
                    raise BundleError(
                        f"{path.name}: control.tar.zst is not readable here (Python's "
                        "tarfile has no zstd); Debian's own packages use xz"
                    )
                try:
                    with tarfile.open(fileobj=io.BytesIO(f.read(size)), mode="r:*") as tar:
                        for member in tar:
                            if member.name.lstrip("./") == "control" and member.isfile():
                                return tar.extractfile(member).read().decode()
                except tarfile.TarError as err:
                    raise BundleError(f"{path.name}: unreadable {name} ({err})") from None
                raise BundleError(f"{path.name}: {name} holds no control file")
            f.seek(data_start + size + (size & 1))
    raise BundleError(f"{path.name} is not a Debian package (no control.tar member)")


def control_fields(text: str) -> dict[str, str]:
    """The single-line fields of a control paragraph (continuation lines are skipped)."""
    fields = {}
    for line in text.splitlines():
        if line and not line[0].isspace() and ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return fields


def deb_file_name(fields: dict[str, str]) -> str:
    """package_version_arch.deb with an epoch's colon as _: apt's own download names write it
    as %3a, which a file: URI would decode back to a colon that is not on disk."""
    name = f"{fields['Package']}_{fields['Version']}_{fields['Architecture']}"
    return re.sub(r"[^A-Za-z0-9.+~_-]", "_", name) + ".deb"


def write_apt_repo(debs: list[Path], repo: Path, created: dt.datetime) -> list[dict]:
    """Move the packages into repo/ under stable names and write a flat apt repository's
    Packages and Release (no signature: hosts name it [trusted=yes] in a local file: source,
    and its files are covered by SHA256SUMS). Returns what bundle.json records."""
    repo.mkdir(parents=True, exist_ok=True)
    entries: dict[str, tuple[dict, str]] = {}
    for deb in debs:
        control = read_deb_control(deb)
        fields = control_fields(control)
        missing = [k for k in ("Package", "Version", "Architecture") if not fields.get(k)]
        if missing:
            raise BundleError(f"{deb.name}: control file lacks {', '.join(missing)}")
        key = f"{fields['Package']}:{fields['Architecture']}"
        if key in entries:
            raise BundleError(
                f"two packages for {key} ({entries[key][0]['version']} and "
                f"{fields['Version']}): a flat repository holds one version of each"
            )
        name = deb_file_name(fields)
        dest = repo / name
        shutil.move(deb, dest)
        digest, size = sha256_file(dest)
        record = {
            "package": fields["Package"],
            "version": fields["Version"],
            "architecture": fields["Architecture"],
            "file": f"debs/{name}",
            "sha256": digest,
            "size": size,
        }
        stanza = control.strip("\n") + f"\nFilename: ./{name}\nSize: {size}\nSHA256: {digest}\n"
        entries[key] = (record, stanza)
    ordered = [entries[k] for k in sorted(entries)]
    packages = "\n".join(stanza for _, stanza in ordered).encode()
    (repo / "Packages").write_bytes(packages)
    release = (
        "Origin: kokoro-deploy-bundle\n"
        "Label: kokoro-deploy-bundle\n"
        f"Date: {created.strftime('%a, %d %b %Y %H:%M:%S UTC')}\n"
        "SHA256:\n"
        f" {hashlib.sha256(packages).hexdigest()} {len(packages)} Packages\n"
    )
    (repo / "Release").write_text(release)
    return [record for record, _ in ordered]


def parse_os_release(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip('"')
    return out


def role_packages(os_release: dict[str, str], roles_dir: Path = ROOT / "roles") -> list[str]:
    """What roles/docker_engine and roles/espeak_ng install from a bundle on this release,
    read from their vars files in the order the roles pick them (distribution-major,
    distribution, family, main), plus python3-apt, which Ansible's apt module needs."""
    distribution = {"debian": "Debian", "ubuntu": "Ubuntu"}.get(os_release.get("ID", ""))
    if distribution is None:
        raise BundleError(
            f"the debs image runs {os_release.get('ID')!r}: the roles support Debian and "
            "Ubuntu; choose an image of the target release with --debs-image"
        )
    major = os_release.get("VERSION_ID", "").split(".")[0]
    candidates = [f"{distribution}-{major}.yml", f"{distribution}.yml", "Debian.yml", "main.yml"]

    def role_vars(role: str) -> dict:
        for name in candidates:
            path = roles_dir / role / "vars" / name
            if path.is_file():
                return yaml.safe_load(path.read_text()) or {}
        raise BundleError(f"roles/{role}/vars has none of {candidates}")

    docker = role_vars("docker_engine")
    wanted = list(docker["__docker_engine_packages"]["bundle"])
    compose = docker["__docker_engine_compose_packages"]["bundle"]
    if compose:
        wanted.append(compose)
    wanted += role_vars("espeak_ng")["__espeak_ng_packages"]
    wanted.append("python3-apt")
    return list(dict.fromkeys(wanted))


def expand_debs(requested: list[str], os_release: dict[str, str]) -> list[str]:
    out: list[str] = []
    for name in requested:
        out += role_packages(os_release) if name == "roles" else [name]
    for name in out:
        if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]*(:[a-z0-9]+)?(=[A-Za-z0-9.+~:-]+)?", name):
            raise BundleError(f"--debs {name!r} is not a Debian package name (name[=version])")
    return list(dict.fromkeys(out))


def download_debs(image: str, requested: list[str], workdir: Path) -> tuple[list[Path], dict]:
    """Let apt in a container of `image` (a bare host of the target release) resolve the
    packages and download exactly what such a host lacks: the packages and every missing
    dependency, without recommends, as the roles install them."""
    if not shutil.which("docker"):
        raise BundleError(
            "--debs needs docker, to resolve the packages in a container of the target "
            "release: install the Docker client and start the engine, or leave out --debs"
        )
    r = docker("run", "--rm", "--network", "none", image, "cat", "/etc/os-release")
    if r.returncode != 0:
        raise BundleError(
            f"cannot run the debs image {image} ({r.stderr.strip()}): name a local image of "
            "a bare target host with --debs-image (make testbed builds kokoro-deploy/debian:12)"
        )
    os_release = parse_os_release(r.stdout)
    packages = expand_debs(requested, os_release)
    out = workdir / "debs-download"
    out.mkdir()
    script = (
        "set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -q; "
        "apt-get install -q -y --download-only --no-install-recommends "
        '-o Dir::Cache::archives=/out -o APT::Sandbox::User=root "$@"; '
        "rm -rf /out/partial /out/lock; "
        f"chown -R {os.getuid()}:{os.getgid()} /out"
    )
    name = f"kokoro-deploy-bundle-debs-{os.getpid()}"
    try:
        r = docker(
            "run",
            "--rm",
            "--name",
            name,
            "-v",
            f"{out.resolve()}:/out",
            image,
            "sh",
            "-c",
            script,
            "sh",
            *packages,
        )
    finally:
        docker("rm", "-f", name)
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-5:])
        raise BundleError(
            f"apt in {image} could not download {' '.join(packages)}:\n{tail}\n"
            "check the package names and that the image's apt sources are reachable"
        )
    debs = sorted(out.glob("*.deb"))
    if not debs:
        log(f"debs: {image} already has every package asked for; the repository is empty")
    info = {
        "image": image,
        "os": os_release.get("PRETTY_NAME") or os_release.get("ID"),
        "os_id": os_release.get("ID"),
        "os_version_id": os_release.get("VERSION_ID"),
        "requested": requested,
        "packages": packages,
    }
    return debs, info


def pip_download(
    requirements: list[Path], specs: list[str], pip_options: list[str], dest: Path
) -> None:
    for req in requirements:
        if not req.is_file():
            raise BundleError(f"--wheels-requirements {req} does not exist")
    argv = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--dest",
        str(dest),
    ]
    for req in requirements:
        argv += ["--requirement", str(req)]
    argv += [*pip_options, *specs]
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        wanted = specs + [str(q) for q in requirements]
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-5:])
        raise BundleError(
            f"pip download failed for the wheels ({' '.join(wanted)}):\n{tail}\n"
            "fix the requirement or the pip options (--pip-option), or leave out "
            "--wheels/--wheels-requirements"
        )


def git_revision() -> str | None:
    try:
        r = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    return r.stdout.strip() or None


def _display(path: Path) -> str:
    """A path as recorded in bundle.json: relative to the repository when inside it."""
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return path.name


def manifest_summary(manifest: dict, manifest_path: Path) -> dict:
    revisions = sorted(
        {
            f"{a['source']['repo']}@{a['source']['revision']}"
            for a in manifest.get("artifacts", [])
            if a.get("source", {}).get("type") == "huggingface"
        }
    )
    return {
        "path": _display(manifest_path),
        "sha256": sha256_file(manifest_path)[0],
        "schema_version": manifest.get("schema_version"),
        "versions": manifest.get("versions", {}),
        "revisions": revisions,
    }


def deploy_vars(top: str, debs: bool, compose: bool) -> dict:
    """The role variables that deploy from the unpacked bundle (ansible/airgap.yml sets
    them all from one variable, kokoro_bundle_dir)."""
    where = f"<unpacked>/{top}"
    out = {
        "model_cache_source": "bundle",
        "model_cache_bundle_dir": f"{where}/models",
        "stack_images_source": "archive",
        "stack_image_archive_dir": f"{where}/images",
    }
    if debs:
        out |= {
            "docker_engine_source": "bundle",
            "docker_engine_bundle_dir": f"{where}/debs",
            "espeak_ng_source": "bundle",
            "espeak_ng_bundle_dir": f"{where}/debs",
        }
    if compose:
        out["docker_engine_compose_binary_src"] = f"{where}/{COMPOSE_PLUGIN}"
    return out


def build(args: argparse.Namespace) -> Path:
    manifest_path = Path(args.manifest)
    try:
        manifest = yaml.safe_load(manifest_path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise BundleError(f"cannot read the manifest {manifest_path}: {err}") from None
    plan = model_cache_plan
    selection = {
        "engines": args.engines,
        "voices": args.voices,
        "groups": args.groups,
        "artifacts": args.artifacts,
        "companions": args.companions,
    }
    artifacts = []
    if not args.no_models:
        try:
            artifacts = plan.select_artifacts(
                manifest, args.engines, args.voices, args.groups, args.artifacts
            )
        except plan.PlanError as err:
            raise BundleError(f"model selection: {err}") from None
        artifacts += companions(manifest, args.companions, args.lock)
    for a in artifacts:
        if not a.get("sha256"):
            raise BundleError(f"manifest.yml pins no sha256 for {a['name']}; pin one first")
    source = None
    if artifacts:
        if bool(args.models_from) == bool(args.models_url):
            raise BundleError(
                f"{len(artifacts)} model files are selected: give exactly one of "
                "--models-from DIR or --models-url URL (or --no-models)"
            )
        source = (
            DirSource(Path(args.models_from))
            if args.models_from
            else UrlSource(args.models_url, args.timeout)
        )
        for a in artifacts:
            source.check(a)
    wheels = bool(args.wheels or args.wheels_requirements)
    compose_plugin = Path(args.compose_plugin) if args.compose_plugin else None
    if compose_plugin and not (compose_plugin.is_file() and os.access(compose_plugin, os.X_OK)):
        raise BundleError(
            f"--compose-plugin {compose_plugin} is not an executable file: give the compose v2 "
            "binary (make testbed installs one at /usr/local/lib/docker/cli-plugins/docker-compose)"
        )
    if not (artifacts or args.images or wheels or args.debs or compose_plugin):
        raise BundleError(
            "nothing to bundle: select models, name --images or ask for --wheels, --debs or "
            "--compose-plugin"
        )
    compressor, suffix = find_compressor(args.compress)
    images = inspect_images(args.images)

    created_epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or dt.datetime.now(dt.UTC).timestamp())
    created = dt.datetime.fromtimestamp(created_epoch, dt.UTC)
    label = args.label or created.strftime("%Y%m%d")
    if not re.fullmatch(r"[A-Za-z0-9._+-]+", label):
        raise BundleError(f"--label {label!r} may hold only letters, digits and . _ + -")
    top = NAME_PREFIX + label
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{top}{suffix}"

    workdir = Path(tempfile.mkdtemp(prefix=f".{top}.", suffix=".tmp", dir=out_dir))
    writer = None
    try:
        # Every model file is checked before anything is written, so a bad pin fails fast.
        staged: list[tuple[dict, Path]] = []
        for a in artifacts:
            path = source.fetch(a, workdir)
            digest, size = sha256_file(path)
            if digest != a["sha256"]:
                raise BundleError(
                    f"digest mismatch for {a['path']} from {source.label}: "
                    f"{a.get('pinned_by') or 'manifest.yml'} pins sha256 {a['sha256']}"
                    f"{' at revision ' + a['source']['revision'] if 'companion' in a else ''}, "
                    f"the file has {digest}: replace the file with the pinned one (make "
                    "testbed rebuilds .cache/mirror) or fix the pin"
                )
            if a.get("size") is not None and size != a["size"]:
                raise BundleError(
                    f"size mismatch for {a['path']}: manifest.yml pins {a['size']} bytes, "
                    f"the file has {size}"
                )
            staged.append((a, path))
        if staged:
            log(f"models: {len(staged)} files verified against {manifest_path.name}")

        # The packages are resolved and fetched before the archive is opened: a wrong name
        # or an unreachable apt source fails before the slow image saves.
        debs_info = None
        if args.debs:
            downloaded, debs_info = download_debs(args.debs_image, args.debs, workdir)
            debs_info["files"] = write_apt_repo(downloaded, workdir / "debs", created)
            log(
                f"debs: {len(debs_info['files'])} packages for {debs_info['os']} "
                f"({', '.join(debs_info['packages'])} and their dependencies)"
            )

        partial = workdir / final.name
        writer = TarWriter(partial, top, created_epoch, compressor)
        for a, path in sorted(staged, key=lambda s: s[0]["path"]):
            if writer.add_file(f"models/{a['path']}", path) != a["sha256"]:
                raise BundleError(f"{path} changed while it was added; run the build again")

        for image in images:
            saved = save_image(image, workdir)
            image["size"] = saved.stat().st_size
            writer.add_file(image["archive"], saved)
            image["sha256"] = writer.sums[image["archive"]]
            saved.unlink()
            log(f"image {image['name']}: {image['archive']} ({human(image['size'])})")

        wheel_files = []
        if wheels:
            wheel_dir = workdir / "wheels"
            wheel_dir.mkdir()
            pip_download(
                [Path(r) for r in args.wheels_requirements],
                args.wheels,
                args.pip_option,
                wheel_dir,
            )
            for f in sorted(wheel_dir.iterdir()):
                writer.add_file(f"wheels/{f.name}", f)
                wheel_files.append(
                    {"file": f"wheels/{f.name}", "size": writer.sizes[f"wheels/{f.name}"]}
                )
            log(f"wheels: {len(wheel_files)} files")

        if debs_info is not None:
            for deb in debs_info["files"]:
                if writer.add_file(deb["file"], workdir / deb["file"]) != deb["sha256"]:
                    raise BundleError(f"{deb['file']} changed while it was added")
            for index in ("Packages", "Release"):
                writer.add_file(f"debs/{index}", workdir / "debs" / index)

        compose_info = None
        if compose_plugin:
            writer.add_file(COMPOSE_PLUGIN, compose_plugin, mode=0o755)
            compose_info = {
                "file": COMPOSE_PLUGIN,
                "source": str(compose_plugin),
                "sha256": writer.sums[COMPOSE_PLUGIN],
                "size": writer.sizes[COMPOSE_PLUGIN],
            }

        info = {
            "bundle_format": BUNDLE_FORMAT,
            "name": top,
            "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tool": {"name": "tools/bundle.py", "version": TOOL_VERSION, "kit": git_revision()},
            "manifest": manifest_summary(manifest, manifest_path),
            "models": {
                "dir": "models",
                "source": source.label if source else None,
                "selection": selection if artifacts else None,
                "artifacts": [{k: a[k] for k in MODEL_KEYS if k in a} for a in artifacts],
            },
            "images": [{k: i[k] for k in IMAGE_KEYS} for i in images],
            "wheels": (
                {
                    "dir": "wheels",
                    "requirements": args.wheels,
                    "requirement_files": args.wheels_requirements,
                    "pip_options": args.pip_option,
                    "files": wheel_files,
                }
                if wheels
                else None
            ),
            "debs": (
                {"dir": "debs", **debs_info, "files": [dict(d) for d in debs_info["files"]]}
                if debs_info is not None
                else None
            ),
            "compose_plugin": compose_info,
            "deploy": deploy_vars(top, debs_info is not None, compose_info is not None),
        }
        writer.add_bytes("bundle.json", (json.dumps(info, indent=2) + "\n").encode())
        sums = "".join(f"{writer.sums[rel]}  {rel}\n" for rel in sorted(writer.sums))
        writer.add_bytes("SHA256SUMS", sums.encode())
        writer.close()
        writer = None
        if final.exists():
            log(f"replacing {final}")
        os.replace(partial, final)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log(f"wrote {final} ({human(final.stat().st_size)})")
    log(
        f"on the air-gapped side: tar -xf {final.name} && python tools/bundle.py verify {top}; "
        f"then ansible-playbook ansible/airgap.yml -e airgap_bundle_dir=$PWD/{top}"
    )
    return final


# ---------------------------------------------------------------------------- verifying


def _safe_rel(name: str) -> str | None:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts:
        return None
    return str(p)


def _iter_archive(path: Path) -> Iterator[tuple[str, tarfile.TarInfo, tarfile.TarFile]]:
    with path.open("rb") as raw:
        zstd = raw.read(4) == ZSTD_MAGIC
    if zstd and not shutil.which("zstd"):
        raise BundleError(f"{path} is zstd-compressed: install zstd to verify it")
    try:
        with contextlib.ExitStack() as stack:
            if zstd:
                argv = ["zstd", "-q", "-d", "-c", str(path)]
                proc = stack.enter_context(subprocess.Popen(argv, stdout=subprocess.PIPE))
                tar = stack.enter_context(tarfile.open(fileobj=proc.stdout, mode="r|"))
            else:
                tar = stack.enter_context(tarfile.open(path, mode="r|*"))
            for member in tar:
                yield member.name, member, tar
    except tarfile.TarError as err:
        raise BundleError(f"{path} is not a readable tar archive ({err})") from None


class Collected:
    def __init__(self):
        self.digests: dict[str, str] = {}
        self.sizes: dict[str, int] = {}
        self.images: dict[str, dict | str] = {}  # archive -> read_docker_archive() or error
        self.texts: dict[str, bytes] = {}
        self.problems: list[str] = []
        self.top: str | None = None

    def take(self, rel: str, f: BinaryIO) -> None:
        reader = HashingReader(f)
        if rel.startswith("images/") and rel.endswith(".tar"):
            try:
                self.images[rel] = read_docker_archive(reader)
            except BundleError as err:
                self.images[rel] = str(err)
        elif rel in ("SHA256SUMS", "bundle.json", "debs/Packages"):
            self.texts[rel] = reader.read()
        reader.drain()
        self.digests[rel], self.sizes[rel] = reader.hash.hexdigest(), reader.count


def collect_archive(path: Path) -> Collected:
    c = Collected()
    for name, member, tar in _iter_archive(path):
        rel = _safe_rel(name)
        if rel is None:
            c.problems.append(f"{name}: unsafe path in the archive (absolute or with ..)")
            continue
        top, _, inner = rel.partition("/")
        if c.top is None:
            c.top = top
        if top != c.top:
            c.problems.append(f"{name}: outside the bundle folder {c.top}/")
            continue
        if member.isdir():
            continue
        if not member.isfile():
            c.problems.append(f"{name}: not a regular file (links and devices are refused)")
            continue
        c.take(inner, tar.extractfile(member))
    return c


def collect_folder(path: Path) -> Collected:
    c = Collected()
    c.top = path.name
    for f in sorted(path.rglob("*")):
        rel = f.relative_to(path).as_posix()
        if f.is_symlink() or not (f.is_file() or f.is_dir()):
            c.problems.append(f"{rel}: not a regular file (links and devices are refused)")
        elif f.is_file():
            with f.open("rb") as fh:
                c.take(rel, fh)
    return c


def check(c: Collected, manifest_path: Path | None,
          lock_path: Path | None = None) -> tuple[list[str], dict | None]:
    problems = list(c.problems)
    if "SHA256SUMS" not in c.texts:
        return [*problems, "SHA256SUMS is missing: this is not a complete bundle"], None
    listed: dict[str, str] = {}
    for n, line in enumerate(c.texts["SHA256SUMS"].decode(errors="replace").splitlines(), 1):
        m = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line)
        if not m:
            problems.append(f"SHA256SUMS line {n} is malformed: {line!r}")
            continue
        listed[m.group(2)] = m.group(1)
    for rel, digest in sorted(listed.items()):
        if rel not in c.digests:
            problems.append(f"{rel}: listed in SHA256SUMS but missing from the bundle")
        elif c.digests[rel] != digest:
            problems.append(
                f"{rel}: sha256 is {c.digests[rel]}, SHA256SUMS says {digest} (the file is "
                "corrupt or was changed: copy the bundle again)"
            )
    for rel in sorted(set(c.digests) - set(listed) - {"SHA256SUMS"}):
        problems.append(f"{rel}: in the bundle but not in SHA256SUMS")

    try:
        info = json.loads(c.texts.get("bundle.json", b""))
    except json.JSONDecodeError as err:
        return [*problems, f"bundle.json is missing or not JSON ({err})"], None
    if info.get("bundle_format") != BUNDLE_FORMAT:
        problems.append(
            f"bundle.json: bundle_format {info.get('bundle_format')!r} is not {BUNDLE_FORMAT}; "
            "verify it with the tools/bundle.py that built it"
        )
    if c.top and info.get("name") != c.top:
        problems.append(
            f"bundle.json names the bundle {info.get('name')!r}, its folder is {c.top!r}"
        )
    accounted = {"bundle.json"}
    models = info.get("models") or {}
    for a in models.get("artifacts", []):
        rel = f"models/{a['path']}"
        accounted.add(rel)
        if rel not in c.digests:
            problems.append(f"{rel}: bundle.json lists model {a['name']} but the file is missing")
        elif c.digests[rel] != a["sha256"]:
            problems.append(
                f"{rel}: sha256 is {c.digests[rel]}, the manifest pin in bundle.json is "
                f"{a['sha256']}"
            )
        elif a.get("size") is not None and c.sizes[rel] != a["size"]:
            problems.append(f"{rel}: {c.sizes[rel]} bytes, bundle.json says {a['size']}")
    for i in info.get("images", []):
        rel = i["archive"]
        accounted.add(rel)
        if rel != f"images/{archive_name(i['name'])}":
            problems.append(f"{rel}: not the archive name the stack role expects for {i['name']}")
        if rel not in c.digests:
            problems.append(f"{rel}: bundle.json lists image {i['name']} but the file is missing")
            continue
        if c.sizes[rel] != i["size"] or c.digests[rel] != i["sha256"]:
            problems.append(f"{rel}: size or sha256 differs from bundle.json")
        saved = c.images.get(rel)
        if isinstance(saved, str):
            problems.append(f"{rel}: {saved}")
        elif saved:
            if image_reference(i["name"]) not in saved["repo_tags"]:
                problems.append(
                    f"{rel}: tagged {saved['repo_tags']}, not {i['name']}; docker load would "
                    "not restore the name the stack role looks for"
                )
            if saved["config"] != i["config"]:
                problems.append(
                    f"{rel}: image config {saved['config']}, bundle.json says {i['config']}"
                )
    for w in (info.get("wheels") or {}).get("files", []):
        accounted.add(w["file"])
        if w["file"] not in c.digests:
            problems.append(f"{w['file']}: bundle.json lists it but the file is missing")
    problems += check_debs(c, info.get("debs"), accounted)
    compose = info.get("compose_plugin")
    if compose:
        accounted.add(compose["file"])
        if c.digests.get(compose["file"]) != compose["sha256"]:
            problems.append(f"{compose['file']}: missing, or its sha256 differs from bundle.json")
    for rel in sorted(set(c.digests) - accounted - {"SHA256SUMS"}):
        problems.append(f"{rel}: in the bundle but not described in bundle.json")

    if manifest_path is not None:
        manifest = yaml.safe_load(manifest_path.read_text())
        pins = {a["name"]: a["sha256"] for a in manifest["artifacts"]}
        # Companions: manifest.yml's pin, else the lock's digest (trust on first use).
        lk = model_cache_lock
        companion_names = lk.companion_names(manifest.get("companions"))
        try:
            comp = lk.companion_artifacts(manifest, companion_names, read_lock(lock_path),
                                          str(lock_path))
        except lk.LockError as err:
            return [*problems, f"companions: {err}"], info
        pins.update({a["name"]: a["sha256"] for a in comp})
        for a in models.get("artifacts", []):
            if pins.get(a["name"]) is None and "/" in a["name"]:
                problems.append(
                    f"models/{a['path']}: neither {manifest_path} nor a lock file pins "
                    f"companion {a['name']}: give the models.lock.yml it was built with (--lock)"
                )
            elif pins.get(a["name"]) != a["sha256"]:
                problems.append(
                    f"models/{a['path']}: {manifest_path} pins {a['name']} to "
                    f"{pins.get(a['name'])}, the bundle carries {a['sha256']} (built from "
                    "another manifest revision or lock file)"
                )
    return problems, info


def check_debs(c: Collected, debs: dict | None, accounted: set[str]) -> list[str]:
    """Each package bundle.json lists is present with its sha256, and the repository's
    Packages index names exactly those files with the same digests (apt checks them)."""
    if not debs:
        return []
    problems = []
    accounted |= {"debs/Packages", "debs/Release"}
    for index in ("debs/Packages", "debs/Release"):
        if index not in c.digests:
            problems.append(f"{index}: missing, so apt cannot use debs/ as a repository")
    indexed = {}
    for stanza in c.texts.get("debs/Packages", b"").decode(errors="replace").split("\n\n"):
        fields = control_fields(stanza)
        if fields.get("Filename"):
            indexed["debs/" + fields["Filename"].removeprefix("./")] = fields.get("SHA256")
    for d in debs.get("files", []):
        accounted.add(d["file"])
        if d["file"] not in c.digests:
            problems.append(f"{d['file']}: bundle.json lists it but the file is missing")
        elif c.digests[d["file"]] != d["sha256"]:
            problems.append(f"{d['file']}: sha256 differs from bundle.json")
        if indexed.pop(d["file"], None) != d["sha256"]:
            problems.append(f"{d['file']}: not in debs/Packages with the sha256 bundle.json has")
    for rel in sorted(indexed):
        problems.append(f"{rel}: in debs/Packages but not listed in bundle.json")
    return problems


def verify(args: argparse.Namespace) -> int:
    path = Path(args.bundle)
    if path.is_dir():
        c = collect_folder(path)
    elif path.is_file():
        c = collect_archive(path)
    else:
        raise BundleError(f"{path} does not exist: give the bundle archive or its unpacked folder")
    problems, info = check(c, Path(args.manifest) if args.manifest else None,
                           Path(args.lock) if args.lock else None)
    if problems:
        for p in problems:
            print(f"FAIL {p}", file=sys.stderr)
        print(f"bundle: {path} FAILED verification ({len(problems)} problems)", file=sys.stderr)
        return 1
    n_models = len((info.get("models") or {}).get("artifacts", []))
    n_wheels = len((info.get("wheels") or {}).get("files", []))
    n_debs = len((info.get("debs") or {}).get("files", []))
    print(
        f"bundle: {path} OK: {len(c.digests)} files match SHA256SUMS and bundle.json "
        f"({n_models} model files, {len(info['images'])} images, {n_wheels} wheels, "
        f"{n_debs} debs; "
        f"created {info['created']})"
    )
    return 0


# ---------------------------------------------------------------------------- CLI


def listed(group, flag: str, metavar: str, default: list[str], text: str) -> None:
    """An option of any number of values (the flag alone: an empty list)."""
    group.add_argument(flag, nargs="*", default=default, metavar=metavar, help=text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tools/bundle.py",
        description=(
            "Offline bundle for air-gapped deploys: one tar holding the model cache "
            "(models/), docker save archives of the service images (images/), optional "
            "wheels (wheels/), Debian packages as a flat apt repository (debs/), a compose "
            "plugin (bin/), bundle.json and SHA256SUMS. Unpack it on the controller and run "
            "ansible/airgap.yml -e airgap_bundle_dir=<dir>, or set model_cache_source=bundle, "
            "model_cache_bundle_dir=<dir>/models, stack_images_source=archive, "
            "stack_image_archive_dir=<dir>/images, docker_engine_source=bundle, "
            "docker_engine_bundle_dir=<dir>/debs, espeak_ng_source=bundle, "
            "espeak_ng_bundle_dir=<dir>/debs."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `tools/bundle.py build --help` or `tools/bundle.py verify --help`.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser(
        "build",
        help="build a bundle archive",
        description=(
            "Build one bundle archive. Models are selected like roles/model_cache selects "
            "them (defaults: the onnx engine and all voices) and each is checked against "
            "manifest.yml's sha256 before it is added. The archive is written under a "
            "temporary name in --out and renamed when complete; on any failure nothing is "
            "left behind. SOURCE_DATE_EPOCH, if set, fixes the creation time."
        ),
    )
    m = b.add_argument_group("models (the model cache's layout, into models/)")
    m.add_argument(
        "--models-from",
        metavar="DIR",
        help="copy from a folder with the cache's layout, e.g. .cache/mirror",
    )
    m.add_argument(
        "--models-url",
        metavar="URL",
        help="download from a mirror: an HTTP(S) tree with the cache's layout",
    )
    listed(m, "--engines", "ENGINE", ["onnx"],
           "Kokoro engines: onnx and/or torch (default: onnx; the flag alone: none)")
    listed(m, "--voices", "VOICE", ["all"],
           "voice ids such as af_heart, or all (default: all; the flag alone: none)")
    listed(m, "--groups", "GROUP", [],
           "extra manifest groups, e.g. spacy, or kokoro for config.json alone")
    listed(m, "--artifacts", "NAME", [], "extra manifest artifacts by name")
    listed(m, "--companions", "NAME", [],
           "companion models, e.g. llm/qwen3-8b-q4_k_m comfyui/qwen-image-fp8 (their "
           "sha256 from manifest.yml or --lock)")
    m.add_argument(
        "--lock",
        metavar="FILE",
        help="model_cache's models.lock.yml: the digests learned on first use for "
        "companion files that manifest.yml pins none for",
    )
    m.add_argument("--no-models", action="store_true", help="bundle no model files")
    m.add_argument(
        "--manifest",
        default=str(DEFAULT_MANIFEST),
        help="the manifest with the pins (default: the repository's manifest.yml)",
    )
    m.add_argument("--timeout", type=float, default=60, help="download timeout in seconds")
    i = b.add_argument_group("images (docker save, into images/)")
    listed(i, "--images", "IMAGE", [],
           "images in the local engine, by repo:tag as the stack role names them")
    w = b.add_argument_group("wheels (pip download, into wheels/; off by default)")
    listed(w, "--wheels", "SPEC", [], "requirement specifiers, e.g. torch==2.9.1")
    w.add_argument(
        "--wheels-requirements",
        action="append",
        default=[],
        metavar="FILE",
        help="a requirements file (repeatable)",
    )
    w.add_argument(
        "--pip-option",
        action="append",
        default=[],
        metavar="OPT",
        help="passed to pip download, e.g. --pip-option=--only-binary=:all: "
        "--pip-option=--platform=manylinux_2_28_x86_64 (repeatable)",
    )
    d = b.add_argument_group("Debian packages (into debs/, a flat apt repository; off by default)")
    d.add_argument(
        "--debs",
        nargs="+",
        default=[],
        metavar="PKG",
        help="packages a bare host needs, with every dependency it lacks; the word roles "
        "stands for what docker_engine and espeak_ng install (and python3-apt), read from "
        "the roles' vars for the image's release, e.g. --debs roles",
    )
    d.add_argument(
        "--debs-image",
        default=DEFAULT_DEBS_IMAGE,
        metavar="IMAGE",
        help="a bare host of the target release, run with docker; its apt resolves and "
        f"downloads the packages (default: {DEFAULT_DEBS_IMAGE})",
    )
    d.add_argument(
        "--compose-plugin",
        metavar="FILE",
        help="a compose v2 binary to ship as bin/docker-compose, for releases whose docker.io "
        "has no compose (Debian 12)",
    )
    o = b.add_argument_group("output")
    o.add_argument("--out", default="dist", metavar="DIR", help="output folder (default: dist)")
    o.add_argument("--label", help="name suffix: kokoro-deploy-bundle-LABEL (default: UTC date)")
    o.add_argument(
        "--compress",
        choices=["none", "zst", "gz"],
        default="none",
        help="compress with zstd or gzip/pigz (default: none; model files barely "
        "compress, image layers do: zst made llm:cpu 165 -> 76 MiB, at a CPU cost)",
    )
    b.set_defaults(func=build)

    v = sub.add_parser(
        "verify",
        help="check a bundle archive or unpacked folder",
        description=(
            "Check every file against SHA256SUMS, that bundle.json describes exactly the "
            "files present (model pins, image archives with their tags and config digests, "
            "wheels) and that nothing is missing or extra. Runs offline; exit 0 when sound, "
            "1 with each problem named."
        ),
    )
    v.add_argument("bundle", help="the .tar/.tar.gz/.tar.zst, or the unpacked bundle folder")
    v.add_argument("--manifest", help="also check the model pins against this manifest.yml")
    v.add_argument("--lock", help="with --manifest: model_cache's models.lock.yml, for the "
                   "companion files manifest.yml pins no sha256 for (trust on first use)")
    v.set_defaults(func=verify)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        result = args.func(args)
    except BundleError as err:
        print(f"bundle: error: {err}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    # A terminated build unwinds like any failure: its partial output is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
