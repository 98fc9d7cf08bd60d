"""nvidia-smi's CSV (`--format=csv,noheader,nounits`), read one way for every user:
gpu_facts (the cards and driver), the stack's post-deploy VRAM report and the GPU
exporter. The exporter runs alone on hosts, so roles/monitoring copies this file beside
it: standard library only.

nvidia-smi does not quote its CSV. A card's or a process's name may hold commas, so one
field per query is free text: the fields before it are split from the left and those
after it from the right, and it keeps whatever lies between.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

# What nvidia-smi prints for a value the card or driver does not report.
MISSING = re.compile(
    r"^\[?(N/A|Not Supported|Unknown Error|Insufficient Permissions|GPU is lost)\]?$", re.I
)


def number(text: str) -> float | None:
    """A field's value, or None for [N/A], [Not Supported], '' and anything not a number."""
    text = text.strip()
    if not text or MISSING.match(text):
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def mib(text: str) -> int | None:
    """A memory field (nounits: MiB) as a whole number, or None where it is not reported.
    ValueError for a negative amount: no card or process holds less than nothing."""
    value = number(text)
    if value is not None and value < 0:
        raise ValueError(f"nvidia-smi memory field is negative: {text.strip()!r} MiB")
    return None if value is None else int(value)


def split_line(line: str, n_fields: int, free: int) -> list[str] | None:
    """`line` as `n_fields` stripped values, value number `free` (0-based) keeping any
    commas in it; None when the line has fewer values."""
    head = line.split(",", free)
    if len(head) != free + 1:
        return None
    tail = head[free].rsplit(",", n_fields - free - 1)
    if len(tail) != n_fields - free:
        return None
    return [f.strip() for f in head[:free] + tail]


def records(text: str, fields: Sequence[str], free: str, what: str = "",
            strict: bool = True) -> list[dict[str, str]]:
    """Each non-blank line of `text` as {field: raw value}, in order. `free` names the
    field that may hold commas. A line that does not split into len(fields) values
    raises ValueError naming it (strict) or is left out (not strict: a metrics exporter
    keeps the cards it can read)."""
    out = []
    free_at = list(fields).index(free)
    for line in str(text or "").splitlines():
        if not line.strip():
            continue
        values = split_line(line, len(fields), free_at)
        if values is None:
            if strict:
                raise ValueError(
                    f"nvidia-smi {what + ' ' if what else ''}line has not {len(fields)} "
                    f"fields: {line!r}")
            continue
        out.append(dict(zip(fields, values, strict=True)))
    return out
