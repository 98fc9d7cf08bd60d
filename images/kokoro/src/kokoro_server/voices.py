"""Voices: the packs loaded at startup (pt_reader.py reads them), ids, languages, and
blends such as 'af_bella(2)+af_sky(1)'."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ApiError
from .pt_reader import load_voice_pack

# One reading per string (no two repetitions can claim the same digits): linear time.
_BLEND_PART = re.compile(
    r"^\s*([A-Za-z0-9_\-]+)\s*(?:\(\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*\))?\s*$")
MAX_BLEND_PARTS = 8
# Eight parts such as "af_bella(0.25)" with spaces fit many times over.
MAX_VOICE_CHARS = 256


def parse_blend(spec: str) -> list[tuple[str, float]]:
    """'af_bella(2)+af_sky(1)' -> [('af_bella', 2.0), ('af_sky', 1.0)]; weight default 1."""
    if not isinstance(spec, str) or not spec.strip():
        raise ApiError(400, "invalid_voice", "voice must be a non-empty string", "voice")
    if len(spec) > MAX_VOICE_CHARS:
        raise ApiError(400, "invalid_voice",
                       f"voice is {len(spec)} characters long; at most {MAX_VOICE_CHARS}: a "
                       "voice name or a blend such as af_bella(2)+af_sky(1)", "voice")
    parts = spec.split("+")
    if len(parts) > MAX_BLEND_PARTS:
        raise ApiError(400, "invalid_voice",
                       f"a blend may combine at most {MAX_BLEND_PARTS} voices", "voice")
    out = []
    for part in parts:
        m = _BLEND_PART.match(part)
        if not m:
            raise ApiError(400, "invalid_voice",
                           f"malformed voice blend {spec[:100]!r}: use e.g. af_bella(2)+af_sky(1)",
                           "voice")
        weight = float(m.group(2)) if m.group(2) else 1.0
        if not (0 < weight <= 100):
            raise ApiError(400, "invalid_voice",
                           f"voice weight for {m.group(1)!r} must be in (0, 100]", "voice")
        out.append((m.group(1), weight))
    return out


@dataclass(frozen=True)
class VoiceInfo:
    id: str
    lang_code: str
    gender: str


class VoiceStore:
    """All voice packs present on disk, loaded once (54 packs are about 28 MB)."""

    def __init__(self, packs: dict[str, np.ndarray], info: dict[str, VoiceInfo]):
        self._packs = packs
        self.info = info

    @classmethod
    def from_files(cls, files: dict[str, tuple[Path, object]]) -> VoiceStore:
        packs, info = {}, {}
        for vid, (path, art) in sorted(files.items()):
            packs[vid] = load_voice_pack(path)
            info[vid] = VoiceInfo(vid, getattr(art, "lang_code", None) or vid[0],
                                  getattr(art, "gender", None) or
                                  {"f": "female", "m": "male"}.get(vid[1:2], "unknown"))
        return cls(packs, info)

    def ids(self) -> list[str]:
        return sorted(self._packs)

    def resolve(self, spec: str) -> tuple[np.ndarray, str]:
        """Return the (possibly blended) pack and the language of its first voice."""
        parts = parse_blend(spec)
        missing = [name for name, _ in parts if name not in self._packs]
        if missing:
            raise ApiError(400, "voice_not_found",
                           f"unknown voice {missing[0]!r}; GET /v1/audio/voices lists them",
                           "voice")
        if len(parts) == 1:
            pack = self._packs[parts[0][0]]
        else:
            total = sum(w for _, w in parts)
            pack = sum(self._packs[n] * (w / total) for n, w in parts).astype(np.float32)
        return pack, self.info[parts[0][0]].lang_code
