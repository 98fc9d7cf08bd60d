"""A torch-free, restricted reader for PyTorch .pt files (voice packs).

A Kokoro voice pack is one float32 tensor [510, 1, 256] saved with torch.save: a zip
holding data.pkl (a pickle) plus one raw little-endian storage per tensor.

What the reader guarantees on its own, for any file (hostile or corrupt), without relying
on the sha256 pin that assets.verify checks at startup (which can be switched off):
- no code from the file runs: the pickle is scanned before it is run and may use only
  an allow-list of opcodes (those torch.save writes, plus plain data ones; never BUILD,
  INST, OBJ, NEWOBJ, extension codes or out-of-band buffers), and find_class resolves
  exactly three globals (torch._utils._rebuild_tensor_v2, the torch.*Storage classes
  with a numpy dtype, collections.OrderedDict);
- memory is bounded: the file, each zip entry, the number of entries, tensors and
  dimensions and the total bytes read and built have caps (the MAX_* constants below);
  an entry is checked against its declared size and read at most cap + 1 bytes, so a
  zip whose sizes lie, or a compression bomb, cannot exceed them; the containers the
  pickle itself builds are bounded by its own size cap;
- no read outside a storage: each tensor's offset, sizes and strides are validated as
  non-negative ints whose farthest element lies inside its storage before any view is
  made; every tensor returned is a fresh copy that owns its memory;
- every failure is a PtFormatError (a ValueError) that names the file, what is wrong
  and what to do.
What it does not guarantee: that the numbers are a good voice. A well-formed file with
the right shape but wrong values loads; only the sha256 pin in the manifest says a
file is the published one. Big-endian files, bfloat16 and torch's legacy (pre-zip)
format are refused rather than read.
"""
from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
import re
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}

# Caps. A stock voice file is 523 KB: one 522,240-byte storage (510 x 1 x 256 float32),
# a 165-byte data.pkl and 5 small entries. Each cap leaves ample headroom over that and
# keeps the worst case a hostile file can cost small (tens of MB, not gigabytes).
MAX_FILE_BYTES = 16 << 20  # ~30x a voice file; bounds zipfile's parse of the directory
MAX_ZIP_ENTRIES = 1024  # a voice file has 5-7; checked before zipfile parses them all
MAX_PICKLE_BYTES = 1 << 20  # data.pkl is 165 bytes for a voice; a big state dict is KBs
MAX_SMALL_ENTRY_BYTES = 64  # "byteorder" holds "little"
MAX_STORAGE_BYTES = 8 << 20  # 16x a voice's 522 KB storage
MAX_TENSOR_BYTES = MAX_STORAGE_BYTES  # one tensor built from the file (its copy)
MAX_TOTAL_BYTES = 32 << 20  # all storages read plus all tensors built, per file
MAX_TENSORS = 1024  # tensors (and storages) one file may hold
MAX_DIMS = 8  # a voice tensor has 3
# The opcodes torch.save's pickles use (protocol 2), plus harmless container, number
# and string opcodes of later protocols. Object-building ones (BUILD, INST, OBJ, NEWOBJ,
# NEWOBJ_EX), extension registry codes and out-of-band buffers are not in the list.
_ALLOWED_OPCODES = frozenset({
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP",
    "GLOBAL", "STACK_GLOBAL", "REDUCE", "BINPERSID",
    "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET",
    "NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG",
    "LONG1", "LONG4", "FLOAT", "BINFLOAT",
    "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
    "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
    "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
    "EMPTY_LIST", "LIST", "APPEND", "APPENDS", "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS",
})
_STORAGE_KEY = re.compile(r"[A-Za-z0-9_.]{1,64}")
_FIX = ("re-fetch the file from the model mirror: a stock voice's sha256 must match the "
        "manifest (KOKORO_MANIFEST)")


class PtFormatError(ValueError):
    """A .pt file the reader refuses; the message names the file, the fault and the fix."""


def _bad(path, what: str) -> PtFormatError:
    return PtFormatError(f"{path}: {what}; {_FIX}")


@dataclass(frozen=True)
class _StorageType:
    name: str


@dataclass(frozen=True)
class _Storage:
    """A storage read from the archive: a 1-D little-endian array and its zip key."""
    data: np.ndarray
    key: str


def _is_int(v) -> bool:
    """An int64 the file may give as an offset, size, stride or element count."""
    return isinstance(v, int) and not isinstance(v, bool) and -(1 << 63) <= v < 1 << 63


def _short(v) -> str:
    """A value from the file for a message: never a huge int's repr (which can raise)."""
    if isinstance(v, (tuple, list)):
        items = [_short(x) for x in v[:MAX_DIMS + 1]] + (["..."] if len(v) > MAX_DIMS + 1 else [])
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if isinstance(v, int) and not -(1 << 63) <= v < 1 << 63:
        return "<an int beyond int64>"
    return repr(v)[:60]


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None,
                       metadata=None):
    """torch._utils._rebuild_tensor_v2 on numpy: a bounds-checked copy of a storage view.

    Raises ValueError (with what is wrong, not the file: the unpickler adds that).
    """
    if not isinstance(storage, _Storage):
        raise ValueError(f"tensor storage is a {type(storage).__name__}, not a storage")
    if not _is_int(offset) or offset < 0:
        raise ValueError(f"tensor offset {_short(offset)} is not a non-negative int64")
    if not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)):
        raise ValueError("tensor size and stride must be tuples")
    if len(size) != len(stride):
        raise ValueError(f"tensor has {len(size)} sizes but {len(stride)} strides")
    if len(size) > MAX_DIMS:
        raise ValueError(f"tensor has {len(size)} dimensions; at most {MAX_DIMS}")
    for name, values in (("size", size), ("stride", stride)):
        if not all(_is_int(v) and v >= 0 for v in values):
            raise ValueError(f"tensor {name} {_short(values)} must be non-negative int64s")
    data = storage.data
    itemsize = data.dtype.itemsize
    numel = math.prod(size)  # Python ints: no overflow
    if numel * itemsize > MAX_TENSOR_BYTES:
        raise ValueError(f"tensor of size {tuple(size)} is {numel * itemsize} bytes; at most "
                         f"{MAX_TENSOR_BYTES}")
    if numel == 0:
        if offset > data.size:
            raise ValueError(f"tensor offset {offset} is past its storage of {data.size} "
                             "elements")
        return np.zeros(tuple(size), dtype=data.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= data.size:
        raise ValueError(f"tensor (offset {offset}, size {tuple(size)}, stride "
                         f"{tuple(stride)}) reaches element {last} of a storage of "
                         f"{data.size} elements")
    # Every index the view can touch lies in [offset, last], inside the storage.
    view = np.lib.stride_tricks.as_strided(
        data[offset:last + 1], shape=tuple(size),
        strides=tuple(s * itemsize for s in stride), writeable=False)
    return np.array(view, copy=True, order="C")


class _Unpickler(pickle.Unpickler):
    """Resolves only the globals a torch.save tensor file uses; counts what it builds."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, path):
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._path = path
        self._storages: dict[str, _Storage] = {}
        self._tensors = 0
        self._bytes = 0

    def _charge(self, nbytes: int, what: str) -> None:
        self._bytes += nbytes
        if self._bytes > MAX_TOTAL_BYTES:
            raise _bad(self._path, f"{what} takes the file past {MAX_TOTAL_BYTES} bytes of "
                       "tensor data")

    def _rebuild(self, *args, **kwargs):
        self._tensors += 1
        if self._tensors > MAX_TENSORS:
            raise _bad(self._path, f"more than {MAX_TENSORS} tensors")
        try:
            arr = _rebuild_tensor_v2(*args, **kwargs)
        except (TypeError, ValueError) as exc:
            raise _bad(self._path, f"bad tensor: {exc}") from None
        self._charge(arr.nbytes, "a tensor")
        return arr

    def find_class(self, module: str, name: str):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return self._rebuild
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch" and name.endswith("Storage"):
            raise _bad(self._path, f"unsupported storage type torch.{name} (supported: "
                       f"{', '.join(sorted(_STORAGE_DTYPES))})")
        raise _bad(self._path, f"refusing pickle global {module}.{name} (only "
                   "torch._utils._rebuild_tensor_v2, torch.*Storage and "
                   "collections.OrderedDict are allowed)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise _bad(self._path, f"unexpected persistent id {_short(pid)}")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType):
            raise _bad(self._path, f"storage type {_short(stype)} is not a torch storage")
        if not isinstance(key, str) or not _STORAGE_KEY.fullmatch(key):
            raise _bad(self._path, f"bad storage key {_short(key)}")
        dtype = np.dtype(_STORAGE_DTYPES[stype.name]).newbyteorder("<")
        if not _is_int(numel) or not 0 <= numel * dtype.itemsize <= MAX_STORAGE_BYTES:
            raise _bad(self._path, f"storage {key} declares {_short(numel)} elements; at most "
                       f"{MAX_STORAGE_BYTES // dtype.itemsize} {stype.name} elements")
        cached = self._storages.get(key)
        if cached is not None:
            if cached.data.dtype != dtype or cached.data.size != numel:
                raise _bad(self._path, f"storage {key} is declared twice, differently")
            return cached
        if len(self._storages) >= MAX_TENSORS:
            raise _bad(self._path, f"more than {MAX_TENSORS} storages")
        raw = _read_entry(self._archive, f"{self._prefix}data/{key}", MAX_STORAGE_BYTES,
                          self._path)
        if len(raw) != numel * dtype.itemsize:
            raise _bad(self._path, f"storage {key} holds {len(raw)} bytes, but the pickle "
                       f"declares {numel} {stype.name} elements ({numel * dtype.itemsize} "
                       "bytes): truncated or corrupt")
        self._charge(len(raw), f"storage {key}")
        storage = _Storage(np.frombuffer(raw, dtype=dtype), key)
        self._storages[key] = storage
        return storage


def _read_entry(archive: zipfile.ZipFile, name: str, cap: int, path) -> bytes:
    """One zip entry, at most cap bytes: its declared size is checked, then the read is
    bounded to cap + 1 bytes, since the declared size (or a compressed stream) can lie."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise _bad(path, f"zip entry {name} is missing") from None
    if info.file_size > cap:
        raise _bad(path, f"zip entry {name} declares {info.file_size} bytes; at most {cap}")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _bad(path, f"zip entry {name} uses compression method {info.compress_type}; "
                   "torch.save stores entries uncompressed")
    try:
        with archive.open(info) as f:
            data = f.read(cap + 1)
    except Exception as exc:  # BadZipFile (CRC), zlib.error, encrypted, truncated...
        raise _bad(path, f"zip entry {name} is unreadable ({type(exc).__name__}: "
                   f"{str(exc)[:200]})") from None
    if len(data) > cap:
        raise _bad(path, f"zip entry {name} holds more than {cap} bytes (its declared size "
                   f"says {info.file_size})")
    return data


def _zip_entry_count(f) -> int | None:
    """The entry count from the zip's end-of-central-directory record, read before
    zipfile parses every entry; None where it is not found (zipfile then says why)."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    tail_len = min(size, 22 + 0xFFFF)  # the record plus the longest comment
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return None
    _sig, _disk, _cd_disk, _here, total, _cd_size, _cd_off, _clen = struct.unpack(
        "<4s4H2LH", tail[at:at + 22])
    return None if total == 0xFFFF else total  # 0xFFFF: zip64; the file-size cap bounds it


def _check_pickle_opcodes(data: bytes, path) -> None:
    """Refuse any opcode torch.save does not use, before a single one runs."""
    try:
        for op, _arg, _pos in pickletools.genops(data):
            if op.name not in _ALLOWED_OPCODES:
                raise _bad(path, f"data.pkl uses pickle opcode {op.name}, which a "
                           "torch.save tensor file never does")
    except PtFormatError:
        raise
    except Exception as exc:
        raise _bad(path, f"data.pkl is not a valid pickle ({type(exc).__name__}: "
                   f"{str(exc)[:200]})") from None


def load_pt(path: Path | str) -> object:
    """Read a torch.save zip file into numpy arrays (tensors) and plain containers.

    Raises PtFormatError for anything but a well-formed, little-endian tensor file
    within the MAX_* caps (see the module docstring for what that guarantees).
    """
    try:
        with open(path, "rb") as f:
            return _load_zip(f, path)
    except PtFormatError:
        raise
    except OSError as exc:
        raise PtFormatError(f"{path}: cannot read ({exc.strerror or exc}); check that "
                            "the file exists and is readable") from None


def _load_zip(f, path) -> object:
    """The archive in an open file: caps first, then the pickle, then its tensors."""
    try:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_FILE_BYTES:
            raise _bad(path, f"file is {size} bytes; at most {MAX_FILE_BYTES}")
        count = _zip_entry_count(f)
        if count is not None and count > MAX_ZIP_ENTRIES:
            raise _bad(path, f"zip lists {count} entries; at most {MAX_ZIP_ENTRIES}")
        f.seek(0)
        z = zipfile.ZipFile(f)
    except PtFormatError:
        raise
    except Exception as exc:  # BadZipFile, struct.error, OSError...: never a traceback
        raise _bad(path, f"not a torch zip file ({type(exc).__name__}: "
                   f"{str(exc)[:200]})") from None
    with z:
        infos = z.infolist()
        if len(infos) > MAX_ZIP_ENTRIES:
            raise _bad(path, f"zip lists {len(infos)} entries; at most {MAX_ZIP_ENTRIES}")
        pkl = [i.filename for i in infos if i.filename.split("/")[-1] == "data.pkl"]
        if len(pkl) != 1:
            raise _bad(path, f"not a torch zip file ({len(pkl)} data.pkl entries, "
                       "expected 1)")
        prefix = pkl[0][: -len("data.pkl")]
        if prefix + "byteorder" in z.NameToInfo:
            order = _read_entry(z, prefix + "byteorder", MAX_SMALL_ENTRY_BYTES, path)
        else:
            order = b"little"
        if order != b"little":
            raise _bad(path, f"byteorder is {order[:20]!r}; only little-endian tensor "
                       "files are supported")
        data = _read_entry(z, pkl[0], MAX_PICKLE_BYTES, path)
        _check_pickle_opcodes(data, path)
        try:
            return _Unpickler(data, z, prefix, path).load()
        except PtFormatError:
            raise
        except Exception as exc:  # malformed stack, memo, arguments: never a traceback
            raise _bad(path, f"data.pkl does not unpickle ({type(exc).__name__}: "
                       f"{str(exc)[:200]})") from None


def load_voice_pack(path: Path | str) -> np.ndarray:
    """A voice pack as the model uses it: float32 [N, 1, 256], N >= 1, finite."""
    arr = load_pt(path)
    if not isinstance(arr, np.ndarray):
        raise _bad(path, f"expected one voice tensor, found a {type(arr).__name__}")
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1:] != (1, 256):
        raise _bad(path, f"expected a [N, 1, 256] voice tensor, got {list(arr.shape)}")
    if arr.dtype != np.float32:
        raise _bad(path, f"expected a float32 voice tensor, got {arr.dtype}")
    if not np.isfinite(arr).all():
        raise _bad(path, "the voice tensor holds NaN or infinite values")
    return np.ascontiguousarray(arr, dtype=np.float32)
