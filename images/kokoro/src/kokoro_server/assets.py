"""Local model files and the kit's manifest: find them, check their sha256, never download."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import StartupError
from .settings import Settings

log = logging.getLogger(__name__)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Artifact:
    path: str
    sha256: str
    voice_id: str | None = None
    lang_code: str | None = None
    gender: str | None = None


class Manifest:
    def __init__(self, artifacts: dict[str, Artifact]):
        self.artifacts = artifacts

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError as exc:
            raise StartupError(f"manifest not found: {path} (set KOKORO_MANIFEST)") from exc
        arts = {}
        for a in data.get("artifacts", []):
            voice = a.get("voice") or {}
            arts[a["path"]] = Artifact(a["path"], a["sha256"], voice.get("id"),
                                       voice.get("lang_code"), voice.get("gender"))
        return cls(arts)

    def voices(self, voices_dir: str) -> list[Artifact]:
        prefix = voices_dir.rstrip("/") + "/"
        return [a for a in self.artifacts.values() if a.path.startswith(prefix) and a.voice_id]


@dataclass(frozen=True)
class Assets:
    """The verified files the engine and the voice store read."""

    config: Path
    model: Path
    voices: dict[str, tuple[Path, Artifact]]  # voice id -> (file, manifest entry)


def _check(settings: Settings, manifest: Manifest, rel: str, required: bool) -> Path | None:
    path = settings.path(rel)
    art = manifest.artifacts.get(rel)
    if art is None:
        raise StartupError(f"{rel}: not listed in the manifest {settings.manifest}")
    if not path.is_file():
        if required:
            raise StartupError(f"missing model file {path} (manifest path {rel}); pre-fetch it "
                               "into KOKORO_MODEL_DIR, the server never downloads")
        return None
    if settings.verify_digests:
        actual = sha256_file(path)
        if actual != art.sha256:
            raise StartupError(f"sha256 mismatch for {path}: found {actual}, manifest "
                               f"{settings.manifest} expects {art.sha256}")
    return path


def verify(settings: Settings) -> Assets:
    """Check every file the server will read against the manifest; raise StartupError."""
    manifest = Manifest.load(settings.manifest)
    config = _check(settings, manifest, settings.config, required=True)
    model = _check(settings, manifest, settings.model_file, required=True)
    voices = {}
    for art in manifest.voices(settings.voices_dir):
        path = _check(settings, manifest, art.path, required=False)
        if path is not None:
            voices[art.voice_id] = (path, art)
    if not voices:
        raise StartupError(f"no voice files found under {settings.path(settings.voices_dir)}")
    if settings.default_voice not in voices:
        raise StartupError(f"default voice {settings.default_voice!r} has no file "
                           f"(KOKORO_DEFAULT_VOICE; present: {', '.join(sorted(voices))})")
    log.info("verified %d files against %s", 2 + len(voices), settings.manifest)
    assert config is not None and model is not None
    return Assets(config, model, voices)
