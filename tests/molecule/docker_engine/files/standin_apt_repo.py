"""Build a signed apt repository with the layout of Docker's own (LINUX/debian: gpg,
dists/SUITE/stable/binary-ARCH/Packages, InRelease) holding STAND-IN packages under
Docker's package names, for the docker_engine scenario's docker-ce path.

Docker's repository is out of reach on our build machines and no copy of its packages
is, so the packages here are not Docker's:
  docker-ce              Debian's docker.io package (given with --engine-deb), its
                         contents and maintainer scripts unchanged, re-labelled
                         docker-ce (docker.io itself conflicts with docker-ce, so a
                         metapackage depending on it cannot be named so);
  docker-ce-cli          a metapackage depending on docker-ce (Debian 12's docker.io
                         carries the CLI);
  containerd.io          a metapackage depending on Debian's containerd;
  docker-buildx-plugin   an empty metapackage (Debian 12 has no buildx);
  docker-compose-plugin  the real compose v2 binary given with --compose, at the path
                         Docker's package uses (/usr/libexec/docker/cli-plugins).
What this proves is the role's repository plumbing: key download, a deb822 source
with Signed-By, apt verifying the signature, install by Docker's package names, and
compose v2 coming from the docker-compose-plugin package. What only a real host can
prove is that Docker's own packages install and run.

    python3 standin_apt_repo.py --out DIR --suite bookworm --compose PATH \
        --engine-deb docker.io_*.deb

Needs dpkg-deb and gpg (run on the test host).
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

VERSION = "5:0.0.0~kokoro-deploy-standin"
PLUGIN = "usr/libexec/docker/cli-plugins/docker-compose"


def packages(compose: Path) -> list[dict]:
    note = "Stand-in for Docker's package, built by the docker_engine Molecule scenario."
    return [
        {"name": "docker-ce-cli", "depends": "docker-ce", "note": note},
        {"name": "containerd.io", "depends": "containerd", "note": note},
        {"name": "docker-buildx-plugin", "depends": "", "note": note},
        {"name": "docker-compose-plugin", "depends": "", "note": note, "files": {PLUGIN: compose}},
    ]


def build_deb(pkg: dict, arch: str, pool: Path, work: Path) -> Path:
    root = work / pkg["name"]
    (root / "DEBIAN").mkdir(parents=True)
    for dest, src in pkg.get("files", {}).items():
        target = root / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        target.chmod(0o755)
    control = [
        f"Package: {pkg['name']}",
        f"Version: {VERSION}",
        f"Architecture: {arch}",
        "Maintainer: kokoro-deploy tests <tests@kokoro-deploy.invalid>",
        *([f"Depends: {pkg['depends']}"] if pkg["depends"] else []),
        f"Description: {pkg['note']}",
    ]
    (root / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
    pool.mkdir(parents=True, exist_ok=True)
    deb = pool / f"{pkg['name']}_{VERSION.split(':', 1)[1]}_{arch}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", "-Zgzip", str(root), str(deb)],
                   check=True, capture_output=True)
    return deb


def relabel_engine(deb: Path, arch: str, pool: Path, work: Path) -> Path:
    """Debian's docker.io, contents and scripts unchanged, under the name docker-ce."""
    root = work / "docker-ce"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(root)], check=True)
    control = root / "DEBIAN" / "control"
    fields = []
    for line in control.read_text().splitlines():
        if line[:1] in (" ", "\t") and fields:
            fields[-1] += "\n" + line
        else:
            fields.append(line)
    dropped = ("Package:", "Version:", "Conflicts:", "Breaks:", "Replaces:", "Provides:")
    kept = [f for f in fields if not f.startswith(dropped)]
    control.write_text(
        f"Package: docker-ce\nVersion: {VERSION}\n"
        + "Provides: docker.io\nConflicts: docker.io\nReplaces: docker.io\n"
        + "\n".join(kept) + "\n"
    )
    pool.mkdir(parents=True, exist_ok=True)
    out = pool / f"docker-ce_{VERSION.split(':', 1)[1]}_{arch}.deb"
    subprocess.run(["dpkg-deb", "--build", "-Zgzip", "-z1", str(root), str(out)],
                   check=True, capture_output=True)
    return out


def digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    h.update(path.read_bytes())
    return h.hexdigest()


def packages_index(debs: list[Path], base: Path) -> str:
    stanzas = []
    for deb in debs:
        fields = subprocess.run(["dpkg-deb", "-f", str(deb)], check=True,
                                capture_output=True, text=True).stdout.rstrip("\n")
        stanzas.append(
            f"{fields}\nFilename: {deb.relative_to(base)}\nSize: {deb.stat().st_size}\n"
            f"MD5sum: {digest(deb, 'md5')}\nSHA256: {digest(deb, 'sha256')}\n"
        )
    return "\n".join(stanzas)


def release(dist: Path, suite: str, arch: str) -> str:
    files = sorted(p for p in dist.rglob("*") if p.is_file() and p.name == "Packages")
    lines = [
        "Origin: kokoro-deploy stand-in",
        "Label: kokoro-deploy stand-in for Docker CE",
        f"Suite: {suite}",
        f"Codename: {suite}",
        f"Architectures: {arch}",
        "Components: stable",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        "SHA256:",
    ]
    for f in files:
        lines.append(f" {digest(f, 'sha256')} {f.stat().st_size} {f.relative_to(dist)}")
    return "\n".join(lines) + "\n"


def sign(repo: Path, dist: Path) -> None:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "GNUPGHOME": home}

        def gpg(*args, **kw):
            return subprocess.run(["gpg", "--batch", "--quiet", *args], env=env,
                                  check=True, capture_output=True, **kw)

        gpg("--passphrase", "", "--quick-gen-key", "kokoro-deploy stand-in repository",
            "ed25519", "sign", "never")
        (repo / "gpg").write_bytes(gpg("--armor", "--export").stdout)
        gpg("--yes", "--clearsign", "-o", str(dist / "InRelease"), str(dist / "Release"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--suite", required=True)
    ap.add_argument("--arch", default="amd64")
    ap.add_argument("--compose", type=Path, required=True)
    ap.add_argument("--engine-deb", type=Path, required=True)
    args = ap.parse_args()
    repo = args.out / "linux" / "debian"
    if repo.exists():
        shutil.rmtree(repo)
    dist = repo / "dists" / args.suite
    pool = repo / "pool" / args.suite / "stable"
    with tempfile.TemporaryDirectory() as work:
        debs = [build_deb(p, args.arch, pool, Path(work)) for p in packages(args.compose)]
        debs.append(relabel_engine(args.engine_deb, args.arch, pool, Path(work)))
    binary = dist / "stable" / f"binary-{args.arch}"
    binary.mkdir(parents=True)
    (binary / "Packages").write_text(packages_index(debs, repo))
    (dist / "Release").write_text(release(dist, args.suite, args.arch))
    sign(repo, dist)
    print(repo)


if __name__ == "__main__":
    main()
