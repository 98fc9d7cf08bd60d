"""Voice packs: a torch-free, restricted reader for PyTorch .pt files, and voice blends.

A Kokoro voice pack is one float32 tensor [510, 1, 256] saved with torch.save (a zip
holding data.pkl plus raw storages). The reader below maps the few pickle globals such
a file uses onto numpy and refuses every other global, so a hostile file cannot run
code (torch.load with weights_only=False would).
"""
from __future__ import annotations

import io
import pickle
import re
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ApiError

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": None, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class PtFormatError(ValueError):
    pass


@dataclass(frozen=True)
class _StorageType:
    name: str


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None,
                       metadata=None):
    itemsize = storage.dtype.itemsize
    if not size:
        return storage[offset:offset + 1].reshape(()).copy()
    return np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
    ).copy()


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix

    def find_class(self, module: str, name: str):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        raise PtFormatError(f"refusing pickle global {module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise PtFormatError(f"unexpected persistent id {pid!r}")
        _, stype, key, _location, _numel = pid
        dtype = _STORAGE_DTYPES.get(getattr(stype, "name", ""))
        if dtype is None:
            raise PtFormatError(f"unsupported storage type {stype!r}")
        raw = self._archive.read(f"{self._prefix}data/{key}")
        return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))


def load_pt(path: Path | str) -> object:
    """Read a torch.save zip file into numpy arrays (tensors) and plain containers."""
    with zipfile.ZipFile(path) as z:
        pkl = [n for n in z.namelist() if n.endswith("data.pkl")]
        if len(pkl) != 1:
            raise PtFormatError(f"{path}: not a torch zip file (no single data.pkl)")
        prefix = pkl[0][: -len("data.pkl")]
        order = z.read(prefix + "byteorder").decode() if prefix + "byteorder" in z.namelist() \
            else "little"
        if order != "little":
            raise PtFormatError(f"{path}: big-endian tensors are not supported")
        return _Unpickler(z.read(pkl[0]), z, prefix).load()


def load_voice_pack(path: Path | str) -> np.ndarray:
    arr = load_pt(path)
    if not isinstance(arr, np.ndarray) or arr.ndim != 3 or arr.shape[1:] != (1, 256):
        raise PtFormatError(f"{path}: expected a [N, 1, 256] voice tensor, got "
                            f"{getattr(arr, 'shape', type(arr))}")
    return np.ascontiguousarray(arr, dtype=np.float32)


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
