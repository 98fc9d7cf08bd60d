"""Build signed apt repositories that have a vendor's exact URL layout but hold STAND-IN
packages under the vendor's package names, for scenarios whose roles install from
repositories that the test bed cannot reach (Docker's, NVIDIA's).

A stand-in proves a role's repository plumbing: the URL it derives, the key download,
a deb822 source with Signed-By, apt verifying the signature, the pins and the package
names. It cannot prove that the vendor's own packages install or run; each scenario
says what its stand-ins are.

As a library (docker_engine's builder): build_deb, packages_index, sign, digest.
As a tool, for NVIDIA's flat repositories ("deb URL /"):

    python3 standin_apt.py --out DIR SPEC.json

SPEC: {"repos": [{"path": "compute/cuda/repos/debian12/x86_64", "key": "3bf863cc.pub",
       "arch": "amd64", "packages": [{"name", "version", "depends", "note",
       "texts": {"/etc/x": "content"}}]}]}. "key" is relative to the repo's folder, or
absolute from DIR when it starts with "/" (NVIDIA's toolkit key sits above its repos).
Needs dpkg-deb and gpg (run it on the test host).
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

VERSION = "5:0.0.0~kokoro-deploy-standin"


def build_deb(pkg: dict, arch: str, pool: Path, work: Path) -> Path:
    """A package with a control file and the given files: "files" copies paths (mode
    0755), "texts" writes strings (mode 0644)."""
    version = pkg.get("version", VERSION)
    root = work / f"{pkg['name']}_{version}"
    (root / "DEBIAN").mkdir(parents=True)
    for dest, src in pkg.get("files", {}).items():
        target = root / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        target.chmod(0o755)
    for dest, text in pkg.get("texts", {}).items():
        target = root / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    control = [
        f"Package: {pkg['name']}",
        f"Version: {version}",
        f"Architecture: {pkg.get('arch', arch)}",
        "Maintainer: kokoro-deploy tests <tests@kokoro-deploy.invalid>",
        *([f"Depends: {pkg['depends']}"] if pkg.get("depends") else []),
        f"Description: {pkg['note']}",
    ]
    (root / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
    pool.mkdir(parents=True, exist_ok=True)
    upstream = version.split(":", 1)[-1]
    deb = pool / f"{pkg['name']}_{upstream}_{pkg.get('arch', arch)}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", "-Zgzip", str(root), str(deb)],
                   check=True, capture_output=True)
    return deb


def digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    h.update(path.read_bytes())
    return h.hexdigest()


def packages_index(debs: list[Path], base: Path, prefix: str = "") -> str:
    """Filename is relative to base; flat repositories write it as "./name.deb"."""
    stanzas = []
    for deb in debs:
        fields = subprocess.run(["dpkg-deb", "-f", str(deb)], check=True,
                                capture_output=True, text=True).stdout.rstrip("\n")
        stanzas.append(
            f"{fields}\nFilename: {prefix}{deb.relative_to(base)}\nSize: {deb.stat().st_size}\n"
            f"MD5sum: {digest(deb, 'md5')}\nSHA256: {digest(deb, 'sha256')}\n"
        )
    return "\n".join(stanzas)


def flat_release(repo: Path, label: str, arch: str) -> str:
    """Release of a flat repository: no suite, its index files beside it."""
    lines = [
        "Origin: kokoro-deploy stand-in",
        f"Label: {label}",
        f"Architectures: {arch}",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        "SHA256:",
    ]
    for name in ("Packages",):
        f = repo / name
        lines.append(f" {digest(f, 'sha256')} {f.stat().st_size} {name}")
    return "\n".join(lines) + "\n"


def sign(key_out: Path, dist: Path) -> None:
    """A fresh signing key (exported to key_out) clear-signs dist/Release as InRelease."""
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "GNUPGHOME": home}

        def gpg(*args):
            return subprocess.run(["gpg", "--batch", "--quiet", *args], env=env,
                                  check=True, capture_output=True)

        gpg("--passphrase", "", "--quick-gen-key", "kokoro-deploy stand-in repository",
            "ed25519", "sign", "never")
        key_out.parent.mkdir(parents=True, exist_ok=True)
        key_out.write_bytes(gpg("--armor", "--export").stdout)
        gpg("--yes", "--clearsign", "-o", str(dist / "InRelease"), str(dist / "Release"))


def build_flat_repo(out: Path, spec: dict) -> Path:
    repo = out / spec["path"]
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir(parents=True)
    arch = spec.get("arch", "amd64")
    with tempfile.TemporaryDirectory() as work:
        debs = [build_deb(p, arch, repo, Path(work)) for p in spec["packages"]]
    (repo / "Packages").write_text(packages_index(debs, repo, "./"))
    label = f"kokoro-deploy stand-in of {spec['path']}"
    (repo / "Release").write_text(flat_release(repo, label, arch))
    key = spec["key"]
    sign(out / key.lstrip("/") if key.startswith("/") else repo / key, repo)
    return repo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("spec", type=Path)
    args = ap.parse_args()
    for repo in json.loads(args.spec.read_text())["repos"]:
        print(build_flat_repo(args.out, repo))


if __name__ == "__main__":
    main()
