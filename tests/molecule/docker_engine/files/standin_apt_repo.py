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

Needs dpkg-deb, gpg and tests/molecule/shared/standin_apt.py beside it (run on the test
host).
"""

from __future__ import annotations

import argparse
import email.utils
import shutil
import subprocess
import tempfile
from pathlib import Path

# Beside this file on the test host (prepare.yml copies both).
from standin_apt import VERSION, build_deb, digest, packages_index, sign

PLUGIN = "usr/libexec/docker/cli-plugins/docker-compose"


def packages(compose: Path) -> list[dict]:
    note = "Stand-in for Docker's package, built by the docker_engine Molecule scenario."
    return [
        {"name": "docker-ce-cli", "depends": "docker-ce", "note": note},
        {"name": "containerd.io", "depends": "containerd", "note": note},
        {"name": "docker-buildx-plugin", "depends": "", "note": note},
        {"name": "docker-compose-plugin", "depends": "", "note": note, "files": {PLUGIN: compose}},
    ]


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
    sign(repo / "gpg", dist)
    print(repo)


if __name__ == "__main__":
    main()
