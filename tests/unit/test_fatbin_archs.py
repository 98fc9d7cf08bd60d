"""tests/bench/fatbin_archs.py reads which GPU code a CUDA binary carries (the CUDA LLM
image's build record), here on containers laid out as nvcc 13.0 writes them: a header
(magic, version, header size, payload size) and entries (kind, version, header size,
payload size, ..., the architecture at byte 28)."""
import struct

import fatbin_archs as fatbin


def entry(kind: int, arch: int, payload: bytes, header: int = 64) -> bytes:
    head = struct.pack("<HHIQ", kind, 0x101, header, len(payload))
    head += struct.pack("<III", 0, 0, 0x10008) + struct.pack("<I", arch)
    return head + bytes(header - len(head)) + payload


def container(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body)) + body


def test_each_entry_of_each_container_is_read_with_its_kind_and_architecture(tmp_path):
    one = container(entry(2, 80, b"\x7fELF" + bytes(60)), entry(1, 90, b"ptx", header=80),
                    entry(2, 90, bytes(33)))
    two = container(entry(2, 120, bytes(8), header=112))
    binary = tmp_path / "server"
    binary.write_bytes(b"\0" * 100 + one + b"code" * 7 + two + b"\0" * 5)
    assert fatbin.entries(binary.read_bytes()) == [
        ("sass", 80), ("ptx", 90), ("sass", 90), ("sass", 120)]
    assert fatbin.main([str(binary), "--json"]) == 0


def test_a_binary_without_gpu_code_says_so(tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.write_bytes(b"\x7fELF" + bytes(200))
    assert fatbin.main([str(plain)]) == 1
    assert "no fatbin entries" in capsys.readouterr().err


def test_counts_name_machine_code_and_ptx_apart():
    assert fatbin.summary([("sass", 86), ("sass", 86), ("ptx", 90)]) == {
        "compute_90 (ptx)": 1, "sm_86": 2}
