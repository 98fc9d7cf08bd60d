"""The restricted .pt reader on genuine torch.save files and on hostile rewrites of them.

Genuine files come from torch.save; hostile ones rewrite their zip: a crafted data.pkl
(built with the real torch globals, so it reads exactly as torch's own would), lying or
oversized entries, bad layouts. Every refusal must be a PtFormatError naming the file,
the fault and the fix, and must not allocate what the file claims: crafted data is a few
bytes, and the caps are lowered where a test needs an entry "over the cap".
"""
from __future__ import annotations

import io
import pickle
import re
import struct
import tracemalloc
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from kokoro_server import pt_reader
from kokoro_server.pt_reader import PtFormatError, load_pt, load_voice_pack

torch = pytest.importorskip("torch")

# --- building files -----------------------------------------------------------------

class _Persist:
    """Pickled as a persistent id, as torch.save pickles a storage."""

    def __init__(self, pid):
        self.pid = pid


class _Tensor:
    """Pickled exactly as torch.save pickles a tensor: _rebuild_tensor_v2(storage, ...)."""

    def __init__(self, pid, offset, size, stride):
        self.args = (_Persist(pid), offset, size, stride, False, OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _Persist) else None


def _pickle(obj) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def _storage_pid(numel, key="0", stype=None):
    return ("storage", stype or torch.FloatStorage, key, "cpu", numel)


def _tensor(numel, offset, size, stride, key="0", stype=None):
    return _Tensor(_storage_pid(numel, key, stype), offset, tuple(size), tuple(stride))


def _write_zip(path: Path, entries: dict[str, bytes], deflate=()) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data,
                       zipfile.ZIP_DEFLATED if name in deflate else zipfile.ZIP_STORED)
    return path


def _entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def _crafted(tmp_path, obj, storages=None, name="crafted.pt", **extra) -> Path:
    """A torch-format zip holding the pickle of obj and the given storages."""
    storages = {"0": np.arange(6, dtype="<f4").tobytes()} if storages is None else storages
    entries = {"archive/data.pkl": obj if isinstance(obj, bytes) else _pickle(obj),
               "archive/byteorder": b"little", "archive/version": b"3\n"}
    entries.update({f"archive/data/{k}": v for k, v in storages.items()})
    entries.update(extra)
    return _write_zip(tmp_path / name, entries)


def _set_declared_size(raw: bytes, name: str, size: int) -> bytes:
    """Rewrite an entry's uncompressed size in its local and central headers."""
    out = bytearray(raw)
    encoded = name.encode()
    for sig, name_len_at, name_at, size_at in ((b"PK\x03\x04", 26, 30, 22),
                                               (b"PK\x01\x02", 28, 46, 24)):
        at = out.find(sig)
        while at >= 0:
            (n,) = struct.unpack_from("<H", out, at + name_len_at)
            if bytes(out[at + name_at:at + name_at + n]) == encoded:
                struct.pack_into("<L", out, at + size_at, size)
            at = out.find(sig, at + 4)
    return bytes(out)


def _refused(path, pattern, fn=load_pt) -> str:
    """fn(path) raises a PtFormatError naming the file, matching pattern, with the fix,
    and no numpy/zipfile exception chained behind it."""
    with pytest.raises(PtFormatError) as err:
        fn(path)
    exc, msg = err.value, str(err.value)
    assert isinstance(exc, ValueError)
    assert str(path) in msg, msg
    assert re.search(pattern, msg), msg
    assert "re-fetch" in msg and "sha256" in msg, msg
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
    return msg


# --- genuine files round-trip ---------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.int64,
                                   torch.int32, torch.int16, torch.int8, torch.uint8,
                                   torch.bool])
def test_every_supported_dtype_round_trips_exactly(tmp_path, dtype):
    gen = torch.Generator().manual_seed(0)
    t = (torch.randn(3, 4, 5, generator=gen) * 50).to(dtype)
    torch.save(t, tmp_path / "t.pt")
    out = load_pt(tmp_path / "t.pt")
    assert out.dtype == t.numpy().dtype and out.shape == (3, 4, 5)
    assert np.array_equal(out, t.numpy())


def test_views_scalars_empties_and_containers_round_trip(tmp_path):
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    obj = {
        "view": base[1:5, ::3],  # offset and non-unit stride
        "transposed": base.t(),  # non-contiguous
        "row": base[5],  # shares base's storage, offset 50
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "expanded": torch.tensor([1.0, 2.0]).expand(3, 2),  # stride 0
        "nested": [torch.arange(3), (torch.ones(2, dtype=torch.float64),)],
        "state": OrderedDict(w=torch.full((2, 2), 7, dtype=torch.int16)),
        "plain": {"n": 3, "s": "x", "f": 1.5, "none": None},
    }
    torch.save(obj, tmp_path / "c.pt")
    out = load_pt(tmp_path / "c.pt")
    for key in ("view", "transposed", "row", "scalar", "empty", "expanded"):
        assert np.array_equal(out[key], obj[key].numpy()), key
        assert out[key].shape == tuple(obj[key].shape), key
    assert np.array_equal(out["nested"][0], np.arange(3))
    assert np.array_equal(out["nested"][1][0], np.ones(2))
    assert isinstance(out["state"], OrderedDict)
    assert np.array_equal(out["state"]["w"], np.full((2, 2), 7, dtype=np.int16))
    assert out["plain"] == {"n": 3, "s": "x", "f": 1.5, "none": None}
    # every tensor is its own writable copy, even where the file shares a storage
    out["row"][0] = -1
    assert out["view"].flags.writeable and out["transposed"][0, 5] == 50


def test_the_crafting_helpers_write_what_the_reader_accepts(tmp_path):
    # the baseline every hostile variant below departs from
    path = _crafted(tmp_path, _tensor(6, 1, (2, 2), (3, 1)))
    assert np.array_equal(load_pt(path), np.array([[1, 2], [4, 5]], dtype=np.float32))


def test_a_voice_pack_saved_by_torch_loads_as_the_model_expects(tmp_path):
    pack = torch.randn(510, 1, 256)
    torch.save(pack, tmp_path / "v.pt")
    out = load_voice_pack(tmp_path / "v.pt")
    assert out.shape == (510, 1, 256) and out.dtype == np.float32
    assert np.array_equal(out, pack.numpy())


# --- hostile and corrupt files --------------------------------------------------------

def test_not_a_zip_empty_missing_and_ambiguous_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a zip at all" * 10)
    _refused(tmp_path / "junk.pt", "not a torch zip file")
    (tmp_path / "empty.pt").write_bytes(b"")
    _refused(tmp_path / "empty.pt", "not a torch zip file")
    _write_zip(tmp_path / "nopkl.pt", {"archive/data/0": b"\0" * 4})
    _refused(tmp_path / "nopkl.pt", "0 data.pkl entries")
    _write_zip(tmp_path / "two.pt", {"a/data.pkl": _pickle(1), "b/data.pkl": _pickle(1)})
    _refused(tmp_path / "two.pt", "2 data.pkl entries")
    with pytest.raises(PtFormatError, match=r"cannot read.*exists"):
        load_pt(tmp_path / "absent.pt")


def test_a_storage_entry_over_the_cap_is_refused_from_its_declared_size(tmp_path,
                                                                        monkeypatch):
    monkeypatch.setattr(pt_reader, "MAX_STORAGE_BYTES", 64)
    path = _crafted(tmp_path, _tensor(6, 0, (6,), (1,)), {"0": b"\0" * 100})
    _refused(path, r"archive/data/0 declares 100 bytes; at most 64")


def test_a_pickle_entry_over_the_cap_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(pt_reader, "MAX_PICKLE_BYTES", 32)
    path = _crafted(tmp_path, [0] * 100)
    _refused(path, r"archive/data.pkl declares \d+ bytes; at most 32")


def test_a_storage_entry_whose_declared_size_lies_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(pt_reader, "MAX_STORAGE_BYTES", 64)
    for deflate in ((), ("archive/data/0",)):
        path = tmp_path / f"lie{len(deflate)}.pt"
        _write_zip(path, {"archive/data.pkl": _pickle(_tensor(6, 0, (6,), (1,))),
                          "archive/data/0": b"\1" * 1000}, deflate=deflate)
        path.write_bytes(_set_declared_size(path.read_bytes(), "archive/data/0", 24))
        _refused(path, r"archive/data/0")


def test_an_entry_is_read_at_most_cap_plus_one_bytes_whatever_its_declared_size(tmp_path):
    # zipfile itself stops at the declared size (then the CRC fails, as above); the reader
    # must not depend on that: an archive whose stream outruns its declared size
    asked = []

    class Stream(io.BytesIO):
        def read(self, n=-1):
            asked.append(n)
            return super().read(n)

    class Archive:
        def getinfo(self, name):
            info = zipfile.ZipInfo(name)
            info.file_size = 10
            return info

        def open(self, info):
            return Stream(b"x" * 100_000)

    with pytest.raises(PtFormatError) as err:
        pt_reader._read_entry(Archive(), "archive/data/0", 64, tmp_path / "v.pt")
    assert asked == [65]
    assert re.search(r"v\.pt: zip entry archive/data/0 holds more than 64 bytes \(its "
                     r"declared size says 10\); re-fetch", str(err.value)), str(err.value)


def test_a_deflate_bomb_is_read_no_further_than_the_cap(tmp_path, monkeypatch):
    # 1 MB of zeros deflates to about 1 KB; its declared size is rewritten to fit the cap
    monkeypatch.setattr(pt_reader, "MAX_STORAGE_BYTES", 64)
    path = tmp_path / "bomb.pt"
    _write_zip(path, {"archive/data.pkl": _pickle(_tensor(6, 0, (6,), (1,))),
                      "archive/data/0": bytes(1 << 20)}, deflate=("archive/data/0",))
    path.write_bytes(_set_declared_size(path.read_bytes(), "archive/data/0", 24))
    assert path.stat().st_size < 64 << 10
    tracemalloc.start()
    try:
        _refused(path, r"archive/data/0")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, peak


def test_a_file_over_the_size_cap_or_with_too_many_entries_is_refused(tmp_path, monkeypatch):
    path = _crafted(tmp_path, _tensor(6, 0, (6,), (1,)))
    monkeypatch.setattr(pt_reader, "MAX_FILE_BYTES", 100)
    _refused(path, r"file is \d+ bytes; at most 100")
    monkeypatch.undo()
    many = {f"archive/pad{i}": b"" for i in range(40)}
    path = _crafted(tmp_path, _tensor(6, 0, (6,), (1,)), name="many.pt", **many)
    monkeypatch.setattr(pt_reader, "MAX_ZIP_ENTRIES", 16)
    _refused(path, r"zip lists 4\d entries; at most 16")


def test_a_big_endian_file_is_refused(tmp_path):
    path = _crafted(tmp_path, _tensor(6, 0, (6,), (1,)), **{"archive/byteorder": b"big"})
    _refused(path, "only little-endian")


@pytest.mark.parametrize("offset, size, stride, pattern", [
    (0, (2, 3), (3, 2), r"reaches element 7 of a storage of 6"),  # stride past the end
    (5, (2,), (1,), r"reaches element 6 of a storage of 6"),  # offset past the end
    (6, (1,), (1,), r"reaches element 6"),
    (0, (-1,), (1,), r"size \(-1,\) must be non-negative"),
    (0, (2,), (-1,), r"stride \(-1,\) must be non-negative"),
    (-1, (1,), (1,), r"offset -1 is not a non-negative"),
    (0, (True,), (1,), r"size \(True,\) must be non-negative int64s"),
    (0, (2.0,), (1,), r"size \(2\.0,\) must be"),
    (2**70, (1,), (1,), r"offset <an int beyond int64>"),
    (0, (2**70,), (0,), r"size \(<an int beyond int64>,\)"),
    (0, (2, 3), (1,), r"2 sizes but 1 strides"),
    (0, (1,) * 9, (1,) * 9, r"9 dimensions; at most 8"),
    (0, "ab", "ab", r"must be tuples"),
    # a stride-0 view of one element would be 2**60 x 2**60 x 4 bytes if materialised
    (0, (2**60, 2**60), (0, 0), r"bytes; at most"),
    (0, (10**7,), (0,), r"40000000 bytes; at most"),
])
def test_a_layout_outside_its_storage_or_caps_is_refused(tmp_path, offset, size, stride,
                                                         pattern):
    path = _crafted(tmp_path, _Tensor(_storage_pid(6), offset, size, stride))
    tracemalloc.start()
    try:
        _refused(path, "bad tensor: .*" + pattern)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, peak


def test_a_huge_tensor_total_is_refused_even_when_each_tensor_fits(tmp_path, monkeypatch):
    monkeypatch.setattr(pt_reader, "MAX_TOTAL_BYTES", 100)
    path = _crafted(tmp_path, [_tensor(6, 0, (6,), (1,))] * 1 + [_tensor(6, 0, (6,), (1,))
                                                                for _ in range(10)])
    _refused(path, r"past 100 bytes")
    monkeypatch.setattr(pt_reader, "MAX_TENSORS", 3)
    monkeypatch.setattr(pt_reader, "MAX_TOTAL_BYTES", 1 << 20)
    _refused(path, r"more than 3 tensors")


@pytest.mark.parametrize("pid, storages, pattern", [
    (_storage_pid(6, stype=torch.BFloat16Storage), None, r"unsupported storage type "
     r"torch\.BFloat16Storage"),
    (("storage", "FloatStorage", "0", "cpu", 6), None, r"is not a torch storage"),
    (_storage_pid(6, key="../../etc/passwd"), None, r"bad storage key"),
    (_storage_pid(6, key="7"), None, r"archive/data/7 is missing"),
    (_storage_pid(8), None, r"holds 24 bytes, but the pickle declares 8 FloatStorage "
     r"elements \(32 bytes\)"),
    (_storage_pid(-1), None, r"declares -1 elements"),
    (_storage_pid(2**62), None, r"declares \d+ elements; at most"),
    (("storage", torch.FloatStorage, "0"), None, r"unexpected persistent id"),
    (("module", torch.FloatStorage, "0", "cpu", 6), None, r"unexpected persistent id"),
    (_storage_pid(6), {"0": b"\0" * 25}, r"holds 25 bytes"),
])
def test_a_bad_storage_reference_is_refused(tmp_path, pid, storages, pattern):
    path = _crafted(tmp_path, _Tensor(pid, 0, (1,), (1,)), storages)
    _refused(path, pattern)


def test_a_storage_read_twice_with_different_claims_is_refused(tmp_path):
    path = _crafted(tmp_path, [_tensor(6, 0, (1,), (1,)),
                               _tensor(6, 0, (1,), (1,), stype=torch.IntStorage)])
    _refused(path, r"storage 0 is declared twice")


def test_a_storage_passed_where_no_storage_belongs_is_refused(tmp_path):
    class NotAStorage:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, ([1, 2, 3], 0, (1,), (1,)))

    _refused(_crafted(tmp_path, NotAStorage()), r"tensor storage is a list")


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    msg = _refused(_crafted(tmp_path, {"w": _tensor(6, 0, (6,), (1,)), "x": Evil()}),
                   r"refusing pickle global (posix|nt|os)\.system")
    assert "_rebuild_tensor_v2" in msg  # says what is allowed
    for proto in (2, 4, 5):  # GLOBAL and STACK_GLOBAL both go through find_class
        _refused(_crafted(tmp_path, pickle.dumps(Evil(), protocol=proto), name=f"{proto}.pt"),
                 r"refusing pickle global")
    _refused(_crafted(tmp_path, pickle.dumps(np.zeros(2), protocol=2), name="np.pt"),
             r"opcode BUILD|refusing pickle global numpy")


@pytest.mark.parametrize("raw, opcode", [
    # OrderedDict is allowed, but BUILD would set attributes on whatever it builds
    (b"\x80\x02ccollections\nOrderedDict\n)R}X\x01\x00\x00\x00aK\x01sb.", "BUILD"),
    (b"\x80\x02(ccollections\nOrderedDict\no.", "OBJ"),
    (b"(icollections\nOrderedDict\n.", "INST"),
    (b"\x80\x02ccollections\nOrderedDict\n)\x81.", "NEWOBJ"),
    (b"\x80\x02\x82\x01.", "EXT1"),
    (b"\x80\x05\x97.", "NEXT_BUFFER"),
])
def test_object_building_pickle_opcodes_are_refused_before_any_runs(tmp_path, raw, opcode):
    _refused(_crafted(tmp_path, raw), rf"opcode {opcode}\b")


@pytest.mark.parametrize("raw", [b"", b"\x80\x02", b"\x80\x02K\x01K\x02\xff.",
                                 b"\x80\x02h\x05.", b"\x80\x02ccollections\nOrderedDict\nK\x01R."])
def test_a_malformed_pickle_is_refused(tmp_path, raw):
    _refused(_crafted(tmp_path, raw), r"data\.pkl (is not a valid pickle|does not unpickle)")


@pytest.mark.parametrize("obj, pattern", [
    ({"v": torch.zeros(2, 1, 256)}, r"expected one voice tensor, found a dict"),
    (torch.zeros(2, 256), r"expected a \[N, 1, 256\] voice tensor, got \[2, 256\]"),
    (torch.zeros(0, 1, 256), r"got \[0, 1, 256\]"),
    (torch.zeros(2, 1, 255), r"got \[2, 1, 255\]"),
    (torch.zeros(2, 1, 256, dtype=torch.float64), r"float32 voice tensor, got float64"),
    (torch.full((2, 1, 256), float("nan")), r"NaN or infinite"),
])
def test_a_voice_pack_of_the_wrong_shape_type_or_values_is_refused(tmp_path, obj, pattern):
    torch.save(obj, tmp_path / "v.pt")
    _refused(tmp_path / "v.pt", pattern, fn=load_voice_pack)


def test_a_genuine_voice_file_rewritten_with_a_hostile_pickle_is_refused(tmp_path):
    torch.save(torch.randn(4, 1, 256), tmp_path / "v.pt")
    entries = _entries(tmp_path / "v.pt")
    pkl = next(n for n in entries if n.endswith("/data.pkl"))
    entries[pkl] = _pickle(_Tensor(_storage_pid(4 * 256), 0, (4, 1, 256), (256, 256, 2)))
    _write_zip(tmp_path / "h.pt", entries)
    _refused(tmp_path / "h.pt", r"reaches element 1278 of a storage of 1024", load_voice_pack)
