"""The proxy's Caddy is pinned in one place, images/proxy/Dockerfile's ARG defaults
(version, and the sha256 of the amd64 and arm64 release binaries), and every other user
of the version or a checksum agrees with it: the Dockerfile's own download and check
use the ARGs (no literal copy), the test bed's stand-in script reads them from the
Dockerfile, and any text in the repository that names a Caddy version or a Caddy
checksum names the pinned ones. Dated measurements (docs/benchmarks, CHANGELOG.md)
record the version they were made with and are left out."""

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "images/proxy/Dockerfile").read_text()
# Records of what was measured or changed at a date: they keep the version of that day.
HISTORY = ("docs/benchmarks/", "CHANGELOG.md")


def arg(name: str) -> str:
    found = re.findall(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.M)
    assert len(found) == 1, f"images/proxy/Dockerfile: want one ARG {name}=<default>, got {found}"
    return found[0]


VERSION = arg("CADDY_VERSION")
SHAS = {arg("CADDY_SHA256_AMD64"), arg("CADDY_SHA256_ARM64")}


def tracked_text() -> dict[str, str]:
    files = (
        subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    out = {}
    for name in filter(None, files):
        path = REPO / name
        if name.startswith(HISTORY) or not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        try:
            out[name] = path.read_text()
        except UnicodeDecodeError:
            continue
    return out


def test_the_pin_is_a_version_and_two_sha256_digests():
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION), VERSION
    assert len(SHAS) == 2 and all(re.fullmatch(r"[0-9a-f]{64}", s) for s in SHAS), SHAS


def test_the_default_source_is_caddys_own_release_archives():
    assert arg("CADDY_DOWNLOAD_BASE") == "https://github.com/caddyserver/caddy/releases/download"
    add = re.findall(r"^ADD (\S+) ", DOCKERFILE, re.M)
    assert add == [
        "${CADDY_DOWNLOAD_BASE}/v${CADDY_VERSION}/caddy_${CADDY_VERSION}_linux_${TARGETARCH}.tar.gz"
    ]


def test_the_dockerfile_checks_the_binary_with_the_args_not_a_copy():
    body = DOCKERFILE.split("\nFROM ", 1)[1]
    run = body[body.index("RUN set -eu") :]
    for name in ("CADDY_SHA256_AMD64", "CADDY_SHA256_ARM64", "CADDY_VERSION"):
        assert "${" + name + "}" in run
    rest = re.sub(r"^ARG CADDY_\w+=\S+$", "", DOCKERFILE, flags=re.M)
    assert VERSION not in rest and not any(s in rest for s in SHAS), "a literal copy of the pin"


def test_the_test_beds_stand_in_reads_the_pin_from_the_dockerfile():
    script = (REPO / "tests/testbed/caddy_release.sh").read_text()
    assert "images/proxy/Dockerfile" in script
    for name in ("CADDY_VERSION", "CADDY_SHA256_AMD64", "CADDY_SHA256_ARM64"):
        assert f"arg {name}" in script
    assert VERSION not in script and not any(s in script for s in SHAS)


def test_every_mention_of_a_caddy_version_or_checksum_is_the_pin():
    versions = re.compile(r"(?i)caddy[ _-](?:bin[=_-]+|version[: ]+|v)?(\d+\.\d+(?:\.\d+)?)")
    wrong = []
    for name, text in tracked_text().items():
        for m in versions.finditer(text):
            if m[1] != VERSION and not VERSION.startswith(m[1] + "."):
                wrong.append(f"{name}: {m[0]!r}")
        for m in re.finditer(r"\b[0-9a-f]{64}\b", text):
            window = text[max(0, m.start() - 200) : m.end() + 200].lower()
            if "caddy" in window and m[0] not in SHAS:
                wrong.append(f"{name}: checksum {m[0][:12]}... near 'caddy' is not the pin")
    assert not wrong, "not the pinned Caddy (images/proxy/Dockerfile):\n" + "\n".join(wrong)
