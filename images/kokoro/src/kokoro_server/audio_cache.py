"""An on-disk cache of whole speech responses, bounded in bytes, least recently used out.

One file per entry, `<key>.kac`: a small header (magic, then JSON with the body's size,
sha256, media type and seconds of audio) and the exact bytes of a response that was sent
in full. An entry is written to a temporary file in the same folder, fsynced and renamed,
so a reader sees a whole entry or none; identical requests racing each write their own
temporary file and the last rename wins (same bytes). Every hit checks size and sha256:
a corrupt or truncated entry is removed and answered as a miss.

At start the index is rebuilt from the folder with one scandir and a stat per entry (no
reads), oldest modification first; a hit touches its file, so the order survives a
restart. Left-over temporary files are removed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAGIC = b"KKAC0001"  # a change of layout or of the key's parts changes this
SUFFIX = ".kac"
TMP_SUFFIX = ".tmp"
_LEN = struct.Struct(">I")


@dataclass(frozen=True)
class Entry:
    body: bytes
    media_type: str
    seconds: float  # audio in the body: what a hit counts against the key's quota


def make_key(parts: dict) -> str:
    """sha256 of every output-affecting part, in a stable JSON form."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def _noop(*_a) -> None:
    return None


class AudioCache:
    """Thread-safe; `on_hit`, `on_miss`, `on_evict(n)`, `on_size(bytes)` feed metrics."""

    def __init__(self, folder: Path, max_bytes: int, on_hit: Callable = _noop,
                 on_miss: Callable = _noop, on_evict: Callable = _noop,
                 on_size: Callable = _noop):
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.on_hit, self.on_miss, self.on_evict, self.on_size = (
            on_hit, on_miss, on_evict, on_size)
        self._lock = threading.Lock()
        self._index: OrderedDict[str, int] = OrderedDict()  # key -> file size, LRU first
        self.total = 0
        self._rebuild()

    def _path(self, key: str) -> Path:
        return self.folder / (key + SUFFIX)

    def _rebuild(self) -> None:
        found = []
        with os.scandir(self.folder) as it:
            for e in it:
                if not e.is_file(follow_symlinks=False):
                    continue
                if e.name.endswith(TMP_SUFFIX):
                    _unlink(Path(e.path))  # a write that never finished
                elif e.name.endswith(SUFFIX):
                    st = e.stat(follow_symlinks=False)
                    found.append((st.st_mtime_ns, e.name[:-len(SUFFIX)], st.st_size))
        for _, key, size in sorted(found):
            self._index[key] = size
            self.total += size
        self._evict()
        log.info("audio cache: %d entries, %d bytes in %s", len(self._index), self.total,
                 self.folder)

    def get(self, key: str) -> Entry | None:
        with self._lock:
            known = key in self._index
            if known:
                self._index.move_to_end(key)
        entry = self._read(key) if known else None
        if entry is None:
            if known:
                self._drop(key)
            self.on_miss()
            return None
        self.on_hit()
        return entry

    def _read(self, key: str) -> Entry | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
            os.utime(path)  # recency that survives a restart
        except OSError:
            return None
        try:
            if data[:len(MAGIC)] != MAGIC:
                raise ValueError("bad magic")
            start = len(MAGIC) + _LEN.size
            (hlen,) = _LEN.unpack(data[len(MAGIC):start])
            head = json.loads(data[start:start + hlen])
            body = data[start + hlen:]
            if len(body) != head["size"] or hashlib.sha256(body).hexdigest() != head["sha256"]:
                raise ValueError("size or sha256 differs")
            return Entry(body, str(head["media_type"]), float(head["seconds"]))
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            log.warning("audio cache: removing corrupt entry %s (%s)", path.name, exc)
            _unlink(path)
            return None

    def put(self, key: str, entry: Entry) -> bool:
        """Store `entry` (a whole, successful response) under `key`; False if too big."""
        head = json.dumps({"size": len(entry.body),
                           "sha256": hashlib.sha256(entry.body).hexdigest(),
                           "media_type": entry.media_type,
                           "seconds": entry.seconds}).encode()
        size = len(MAGIC) + _LEN.size + len(head) + len(entry.body)
        if size > self.max_bytes:
            return False
        path = self._path(key)
        tmp = self.folder / f"{key}.{uuid.uuid4().hex}{TMP_SUFFIX}"
        try:
            with open(tmp, "wb") as f:
                f.write(MAGIC + _LEN.pack(len(head)) + head)
                f.write(entry.body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _fsync_dir(self.folder)
        except OSError as exc:
            log.warning("audio cache: could not store %s: %s", path.name, exc)
            _unlink(tmp)
            return False
        with self._lock:
            self.total += size - self._index.pop(key, 0)
            self._index[key] = size
            self._evict()
        return True

    def _evict(self) -> None:
        """Oldest first until the total is within the bound (the lock held, or at start)."""
        evicted = 0
        while self.total > self.max_bytes and self._index:
            key, size = self._index.popitem(last=False)
            self.total -= size
            _unlink(self._path(key))
            evicted += 1
        if evicted:
            self.on_evict(evicted)
        self.on_size(self.total)

    def _drop(self, key: str) -> None:
        with self._lock:
            size = self._index.pop(key, None)
            if size is not None:
                self.total -= size
            self.on_size(self.total)

    def __len__(self) -> int:
        return len(self._index)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("audio cache: could not remove %s: %s", path, exc)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
