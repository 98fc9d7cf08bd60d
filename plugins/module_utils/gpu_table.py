"""The NVIDIA cards the kit knows by PCI device id, for hosts whose driver is not there
yet: the name nvidia-smi prints, the compute capability, and memory.total in MiB.

One table for every user: gpu_facts (compute capability before a driver exists), the
stack's VRAM planner (card size, bigger-card suggestions), tools/plan.py and the docs'
card lists (tests/unit/test_gpu_table.py ties them to it). Standard library only.

Sources: names and device ids from the PCI ID repository and nvidia-smi; compute
capabilities from NVIDIA's CUDA GPUs list; memory.total as nvidia-smi reports it (the
H100's 81559 MiB measured, docs/benchmarks). A card outside the table still works: set
gpu_facts_compute_capability and stack_vram_total_mib for it.
"""

from __future__ import annotations

from typing import NamedTuple


class Card(NamedTuple):
    name: str
    compute_cap: str  # "major.minor"
    memory_mib: int | None  # None: size not recorded (set stack_vram_total_mib)


GPU_TABLE: dict[str, Card] = {
    "2b85": Card("NVIDIA GeForce RTX 5090", "12.0", 32607),  # GB202
    "2684": Card("NVIDIA GeForce RTX 4090", "8.9", 24564),  # AD102
    "2704": Card("NVIDIA GeForce RTX 4080", "8.9", 16376),  # AD103
    "27b8": Card("NVIDIA L4", "8.9", 23034),  # AD104GL
    "2204": Card("NVIDIA GeForce RTX 3090", "8.6", 24576),  # GA102
    "2503": Card("NVIDIA GeForce RTX 3060", "8.6", 12288),  # GA106
    "2504": Card("NVIDIA GeForce RTX 3060", "8.6", 12288),  # GA106 Lite Hash Rate
    "2487": Card("NVIDIA GeForce RTX 3060", "8.6", 12288),  # GA104
    "20b0": Card("NVIDIA A100-SXM4-40GB", "8.0", 40960),  # GA100
    "20f1": Card("NVIDIA A100-PCIE-40GB", "8.0", 40960),  # GA100
    "20b2": Card("NVIDIA A100-SXM4-80GB", "8.0", 81920),  # GA100
    "20b5": Card("NVIDIA A100 80GB PCIe", "8.0", 81920),  # GA100
    "2330": Card("NVIDIA H100 80GB HBM3", "9.0", 81559),  # GH100 SXM5
    "2331": Card("NVIDIA H100 PCIe", "9.0", 81559),  # GH100
    "2339": Card("NVIDIA H100", "9.0", None),  # GH100
    "1eb8": Card("Tesla T4", "7.5", 15360),  # TU104GL
    "1e04": Card("NVIDIA GeForce RTX 2080 Ti", "7.5", 11264),  # TU102
    "1b80": Card("NVIDIA GeForce GTX 1080", "6.1", 8192),  # GP104
    "1b81": Card("NVIDIA GeForce GTX 1070", "6.1", 8192),  # GP104
}


def card(device_id: str) -> Card | None:
    """The card with PCI device id `device_id` ('2b85', '0x2b85', any case), or None."""
    return GPU_TABLE.get(str(device_id).lower().removeprefix("0x"))


def sized_cards() -> list[tuple[str, int]]:
    """(name, memory MiB) of every card whose size is recorded, smallest first, each
    name once."""
    return sorted({(c.name, c.memory_mib) for c in GPU_TABLE.values() if c.memory_mib},
                  key=lambda nm: (nm[1], nm[0]))
