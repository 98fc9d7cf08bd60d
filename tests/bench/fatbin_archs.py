#!/usr/bin/env python3
"""The GPU code a CUDA binary carries: each fatbin entry's kind and architecture.

    python3 tests/bench/fatbin_archs.py llama-server
    -> sass sm_80 x12, sass sm_86 x12, ..., ptx compute_90 x12  (JSON with --json)

Reads the fatbin containers nvcc embeds (header magic 0xBA55ED50, then entries of a
16-byte header: kind (1 PTX, 2 ELF/SASS), version, header size, payload size, with the
architecture at byte 28 of the entry), without NVIDIA's cuobjdump, which PyPI's CUDA
wheels do not ship. Used for the CUDA LLM image's build record (docs/benchmarks)."""
from __future__ import annotations

import argparse
import collections
import json
import struct
import sys
from pathlib import Path

MAGIC = struct.pack("<I", 0xBA55ED50)
KINDS = {1: "ptx", 2: "sass"}


def entries(data: bytes) -> list[tuple[str, int]]:
    """(kind, architecture) of every entry of every fatbin container in `data`."""
    found = []
    at = data.find(MAGIC)
    while at != -1:
        _, _, header, size = struct.unpack_from("<IHHQ", data, at)
        p, end = at + header, at + header + size
        while p + 32 <= end:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, p)
            if kind not in KINDS or entry_header < 32:
                break
            found.append((KINDS[kind], struct.unpack_from("<I", data, p + 28)[0]))
            p += entry_header + payload
        at = data.find(MAGIC, max(end, at + 4))
    return found


def summary(found: list[tuple[str, int]]) -> dict[str, int]:
    counts = collections.Counter(
        f"{'sm' if kind == 'sass' else 'compute'}_{arch}" + (" (ptx)" if kind == "ptx" else "")
        for kind, arch in found)
    return dict(sorted(counts.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binary", type=Path)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    result = summary(entries(args.binary.read_bytes()))
    if not result:
        print(f"{args.binary}: no fatbin entries (not a CUDA binary?)", file=sys.stderr)
        return 1
    print(json.dumps(result) if args.json else "\n".join(f"{k} x{v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
