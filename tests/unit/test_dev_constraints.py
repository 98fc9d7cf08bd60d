"""The dev venv is locked: constraints.txt pins every package at one version, and every
pin in requirements-dev.txt agrees with it (one source of truth per version)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==(\S+)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if m := PIN.match(line):
            out[canonical(m.group(1))] = m.group(3)
    return out


def test_every_constraint_is_one_exact_version():
    lines = [raw.strip() for raw in (ROOT / "constraints.txt").read_text().splitlines()
             if raw.strip() and not raw.startswith("#")]
    assert lines, "constraints.txt pins nothing"
    bad = [line for line in lines if not PIN.match(line)]
    assert bad == [], f"not `name==version`: {bad}"
    names = [canonical(PIN.match(line).group(1)) for line in lines]
    assert len(names) == len(set(names)), "a package is pinned twice"


def test_requirements_pins_agree_with_the_constraints():
    locked = pins(ROOT / "constraints.txt")
    for name, version in pins(ROOT / "requirements-dev.txt").items():
        assert name in locked, f"{name} is pinned in requirements-dev.txt but not locked"
        # the local CPU wheel carries a +cpu local version: the same release
        assert locked[name].split("+")[0] == version, (name, version, locked[name])


def test_the_venv_is_installed_with_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    assert "-r requirements-dev.txt -c constraints.txt" in makefile
