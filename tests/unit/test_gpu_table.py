"""The kit's one GPU table (plugins/module_utils/gpu_table.py) and everything that names a
card: the docs, the sample inventories, the Molecule hosts' PCI seams, the planner and
gpu_facts all agree with it."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from ansible_collections.kokoro.deploy.plugins.module_utils import gpu_table

REPO = Path(__file__).resolve().parents[2]
# Card models as people write them in prose: RTX 5090, GTX 1080, A100, H100, T4, L4.
CARD_NAME = re.compile(r"\b(?:RTX|GTX) \d{4}(?: Ti)?\b|\b[AHLT]\d{1,3}\b(?=[ ,./)|-]|$)")
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
        *sorted(REPO.glob("roles/*/README.md")), *sorted(REPO.glob("inventory/**/*.yml")),
        REPO / "inventory" / "README.md"]
# Not cards: hosts, figures and names that merely look like one.
NOT_CARDS = {"H1", "A1", "T1", "L1", "L2", "L3", "H2", "H3", "A2", "A3", "T2", "T3"}


def named_cards() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in DOCS:
        for name in CARD_NAME.findall(path.read_text()):
            if name not in NOT_CARDS:
                found.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return found


def seam_device_ids() -> set[str]:
    """NVIDIA device ids in the PCI seam of every Molecule scenario and sample host."""
    ids = set()
    for path in [*REPO.glob("tests/molecule/*/molecule.yml"), *REPO.glob("inventory/**/*.yml")]:
        for line in path.read_text().splitlines():
            m = re.search(r"\b0x10de 0x([0-9a-f]{4}) 0x03", line)
            if m:
                ids.add(m.group(1))
    return ids


def test_the_table_is_well_formed():
    for device_id, card in gpu_table.GPU_TABLE.items():
        assert re.fullmatch(r"[0-9a-f]{4}", device_id)
        assert re.fullmatch(r"\d{1,2}\.\d", card.compute_cap), card
        assert card.name.startswith(("NVIDIA ", "Tesla ")), card
        assert card.memory_mib is None or 4096 <= card.memory_mib <= 200_000, card


@pytest.mark.parametrize("name", sorted(named_cards()))
def test_every_card_the_docs_and_samples_name_is_in_the_table(name):
    names = [c.name for c in gpu_table.GPU_TABLE.values()]
    assert any(re.search(rf"\b{re.escape(name)}\b", n) for n in names), (
        f"{name} (named in {sorted(named_cards()[name])}) is not in "
        "plugins/module_utils/gpu_table.py")


def test_the_docs_name_the_kits_main_cards():
    """The scan above finds the cards, so its pattern is not silently matching nothing."""
    assert {"RTX 5090", "RTX 4090", "A100", "H100"} <= set(named_cards())


def test_every_pci_seam_device_is_in_the_table():
    ids = seam_device_ids()
    assert "2684" in ids  # the gpu_facts scenario's RTX 4090: the scan reads the seams
    assert ids - {"9999"} <= set(gpu_table.GPU_TABLE), ids - set(gpu_table.GPU_TABLE)


def test_lookup_takes_the_forms_a_host_prints():
    assert gpu_table.card("0x2B85") == gpu_table.card("2b85") == gpu_table.GPU_TABLE["2b85"]
    assert gpu_table.card("ffff") is None


def test_sized_cards_lists_each_card_once_smallest_first():
    sized = gpu_table.sized_cards()
    assert len(sized) == len(set(sized))
    assert [mib for _, mib in sized] == sorted(mib for _, mib in sized)
    assert ("NVIDIA GeForce RTX 3060", 12288) in sized  # three PCI ids, one entry
    assert all(name != "NVIDIA H100" for name, _ in sized)  # no size recorded


def test_gpu_facts_and_the_planner_read_the_one_table():
    """A card known to gpu_table only by id gets its compute capability from gpu_facts and
    its size from the planner, before any driver exists (the RTX 4080 had one without
    the other while the two roles kept their own tables)."""
    from ansible_collections.kokoro.deploy.plugins.module_utils import gpu_decisions as kg
    from ansible_collections.kokoro.deploy.plugins.module_utils import vram_sizing as kv

    for device_id, card in gpu_table.GPU_TABLE.items():
        (row,) = kg.parse_pci_devices(f"0000:01:00.0 0x10de 0x{device_id} 0x030000")
        assert row["compute_cap"] == card.compute_cap
        if card.memory_mib:
            assert kv.card_total_mib(row) == (card.memory_mib, f"PCI id table ({device_id})")
        else:
            with pytest.raises(ValueError, match="stack_vram_total_mib"):
                kv.card_total_mib(row)
