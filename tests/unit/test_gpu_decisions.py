"""The GPU decisions (plugins/module_utils/gpu_decisions.py) over the issue's
card table: RTX 5090 sm_120, RTX 4090 sm_89, RTX 3060 sm_86, A100 sm_80, H100 sm_90,
T4 sm_75, GTX 1080 sm_61, each on driver branches 535, 550, 570, 575 and 580.

Expected values follow the sources cited at the top of gpu_decisions.py: the flavours
each torch release publishes and their arch lists (PyTorch RELEASE.md matrix,
build_cuda.sh, 2.8 release notes), the CUDA toolkit's minimum drivers and minor version
compatibility (CUDA release notes, tables 2 and 3), and the open kernel module rules
(NVIDIA driver installation guide, "Kernel Modules").
"""

from pathlib import Path

import pytest
from ansible_collections.kokoro.deploy.plugins.module_utils import gpu_decisions as kg
from ansible_collections.kokoro.deploy.plugins.module_utils import gpu_table
from role_filters import role_filters

REPO = Path(__file__).resolve().parents[2]

# name, memory.total MiB, compute_cap (as nvidia-smi prints them)
CARDS = {
    "RTX 5090": ("NVIDIA GeForce RTX 5090", 32607, "12.0"),
    "RTX 4090": ("NVIDIA GeForce RTX 4090", 24564, "8.9"),
    "RTX 3060": ("NVIDIA GeForce RTX 3060", 12288, "8.6"),
    "A100": ("NVIDIA A100-SXM4-80GB", 81920, "8.0"),
    "H100": ("NVIDIA H100 80GB HBM3", 81559, "9.0"),
    "T4": ("Tesla T4", 15360, "7.5"),
    "GTX 1080": ("NVIDIA GeForce GTX 1080", 8192, "6.1"),
}
# Real driver releases of each branch.
DRIVERS = {
    535: "535.309.01",
    550: "550.163.01",
    570: "570.195.03",
    575: "575.64.05",
    580: "580.105.08",
}
TURING_TO_HOPPER = ["RTX 4090", "RTX 3060", "A100", "H100", "T4"]


def smi_line(card: str, branch: int, used: int = 0) -> str:
    name, total, cap = CARDS[card]
    return f"{name}, {total}, {used}, {DRIVERS[branch]}, {cap}"


def gpus(card: str, branch: int) -> list[dict]:
    return kg.parse_nvidia_smi(smi_line(card, branch))


# --- torch flavour, pinned torch 2.9 (manifest.yml) ------------------------------------
# torch 2.9 publishes cu126 (sm_50..sm_90), cu128 (sm_70..sm_120+PTX), cu130
# (sm_75..sm_120+PTX). Drivers 535/550 fully support no 2.9 build (cu126 needs 560.28),
# so they get the newest 12.x build with a cubin for the card, through minor version
# compatibility (12.x runs on >= 525.60.13). 570/575 run cu128 fully; 580 runs cu130.
# Pascal has no cubin in cu128/cu130 (dropped in 2.8), so the GTX 1080 stays on cu126.
# Blackwell needs branch >= 570: no torch plan on 535/550.
TORCH_29 = {
    # card: {branch: (flavour, compat)} ; None = plan must fail
    "RTX 5090": {535: None, 550: None, 570: ("cu128", "full"), 575: ("cu128", "full"),
                 580: ("cu130", "full")},
    **{
        card: {535: ("cu128", "minor"), 550: ("cu128", "minor"), 570: ("cu128", "full"),
               575: ("cu128", "full"), 580: ("cu130", "full")}
        for card in TURING_TO_HOPPER
    },
    "GTX 1080": {535: ("cu126", "minor"), 550: ("cu126", "minor"), 570: ("cu126", "full"),
                 575: ("cu126", "full"), 580: ("cu126", "full")},
}

CASES_29 = [(card, branch, want) for card, row in TORCH_29.items() for branch, want in row.items()]


@pytest.mark.parametrize(("card", "branch", "want"), CASES_29,
                         ids=[f"{c}-{b}" for c, b, _ in CASES_29])
def test_torch_2_9_flavour_for_card_and_driver(card, branch, want):
    if want is None:
        with pytest.raises(ValueError, match=r"branch >= 570"):
            kg.plan_torch_flavour("2.9.1", gpus(card, branch))
        return
    plan = kg.plan_torch_flavour("2.9.1", gpus(card, branch))
    assert (plan["flavour"], plan["compat"]) == want
    assert plan["cuda"] == kg.FLAVOUR_CUDA[want[0]]
    # The chosen wheels really carry code for the card: a cubin, since minor
    # version compatibility cannot JIT PTX.
    assert kg.arch_coverage(CARDS[card][2], kg.wheel_arch_list("2.9.1", want[0])) == "sass"


# torch 2.7 (cu118, cu126, cu128 with sm_75..sm_120): a 535/550 driver fully supports
# cu118 (>= 520.61.05), which is preferred over a minor-compat cu12x build.
TORCH_27 = [
    ("RTX 5090", 570, "cu128", "full"),
    ("RTX 5090", 580, "cu128", "full"),
    ("RTX 4090", 535, "cu118", "full"),
    ("RTX 4090", 570, "cu128", "full"),
    ("GTX 1080", 570, "cu126", "full"),  # cu128 of 2.7 starts at Turing
    ("GTX 1080", 535, "cu118", "full"),
    ("T4", 550, "cu118", "full"),
]


# torch 2.13 (cu126, cu130, cu132; RELEASE.md matrix): 580 runs cu130 fully and cu132
# only through minor compatibility, so full cu130 wins; 535 can run no 13.x build.
TORCH_213 = [
    ("RTX 5090", 580, "cu130", "full"),
    ("H100", 580, "cu130", "full"),
    ("RTX 4090", 535, "cu126", "minor"),
    ("GTX 1080", 580, "cu126", "full"),
]


@pytest.mark.parametrize(("torch", "card", "branch", "flavour", "compat"),
                         [("2.7.1", *case) for case in TORCH_27]
                         + [("2.13.0", *case) for case in TORCH_213])
def test_torch_flavour_of_other_releases(torch, card, branch, flavour, compat):
    plan = kg.plan_torch_flavour(torch, gpus(card, branch))
    assert (plan["flavour"], plan["compat"]) == (flavour, compat)


def test_no_gpu_means_cpu_wheels():
    plan = kg.plan_torch_flavour("2.9.1", [])
    assert plan["flavour"] == "cpu" and plan["cuda"] is None


def test_minor_compat_can_be_refused():
    with pytest.raises(ValueError, match="minor version compatibility"):
        kg.plan_torch_flavour("2.9.1", gpus("RTX 4090", 535), allow_minor_compat=False)


def test_unknown_torch_release_fails_naming_the_override():
    with pytest.raises(ValueError, match="torch_runtime_flavour"):
        kg.plan_torch_flavour("3.0.0", gpus("RTX 4090", 580))


def test_filter_form_returns_the_error_instead_of_raising():
    plan = kg.plan_torch_flavour_or_error("2.9.1", gpus("RTX 5090", 535))
    assert plan["flavour"] is None and "570" in plan["error"]


def test_mixed_cards_get_a_flavour_that_covers_both():
    both = kg.parse_nvidia_smi(smi_line("RTX 4090", 580) + "\n" + smi_line("GTX 1080", 580))
    assert kg.plan_torch_flavour("2.9.1", both)["flavour"] == "cu126"


# --- architecture coverage rules ----------------------------------------------------


@pytest.mark.parametrize(
    ("card_cc", "arches", "want"),
    [
        ("8.9", ["sm_80", "sm_86", "sm_90"], "sass"),  # sm_86 cubin runs on Ada
        ("6.1", ["sm_50", "sm_60", "sm_70"], "sass"),  # sm_60 cubin runs on GP104
        ("12.0", ["sm_90", "sm_100"], None),  # sm_100 cubin does not run on sm_120
        ("12.0", ["sm_90", "compute_90"], "ptx"),
        ("12.0", ["sm_100", "sm_120", "compute_120"], "sass"),
        ("6.1", ["sm_70", "sm_75"], None),
    ],
)
def test_arch_coverage(card_cc, arches, want):
    assert kg.arch_coverage(card_cc, arches) == want


def test_wheel_arch_list_matches_what_torch_prints():
    # torch 2.8 cu128, as pytorch/pytorch#158700 shows torch.cuda.get_arch_list().
    assert kg.wheel_arch_list("2.8.0", "cu128") == [
        "sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]


@pytest.mark.parametrize(
    ("driver", "cuda"),
    [("535.309.01", "12.2"), ("550.163.01", "12.4"), ("570.195.03", "12.8"),
     ("575.64.05", "12.9"), ("580.105.08", "13.0"), ("520.61.05", "11.8"), ("470.256.02", None)],
)
def test_driver_max_cuda(driver, cuda):
    assert kg.driver_max_cuda(driver) == cuda


# --- driver branch and kernel modules ----------------------------------------------------

DRIVER_TABLE = {
    # card: {branch: kernel modules with nvidia_driver_kernel_modules=auto, None = fail}
    "RTX 5090": {535: None, 550: None, 570: "open", 575: "open", 580: "open"},
    **{card: {535: "proprietary", 550: "proprietary", 570: "open", 575: "open", 580: "open"}
       for card in TURING_TO_HOPPER},
    "GTX 1080": {b: "proprietary" for b in DRIVERS},
}
CASES_DRV = [(c, b, w) for c, row in DRIVER_TABLE.items() for b, w in row.items()]


@pytest.mark.parametrize(("card", "branch", "want"), CASES_DRV,
                         ids=[f"{c}-{b}" for c, b, _ in CASES_DRV])
def test_driver_plan_auto(card, branch, want):
    plan = kg.plan_driver([CARDS[card][2]], branch)
    if want is None:
        assert not plan["ok"]
        assert ">= 570" in plan["reason"] and plan["supported_branches"] == ">= 570"
    else:
        assert plan["ok"], plan["reason"]
        assert plan["kernel_modules"] == want


def test_blackwell_refuses_proprietary_modules():
    plan = kg.plan_driver(["12.0"], 580, "proprietary")
    assert not plan["ok"] and "open" in plan["reason"]


def test_pascal_refuses_open_modules():
    plan = kg.plan_driver(["6.1"], 580, "open")
    assert not plan["ok"] and "GSP" in plan["reason"]


def test_pascal_is_not_supported_after_580():
    plan = kg.plan_driver(["6.1"], 590)
    assert not plan["ok"] and plan["supported_branches"] == "<= 580"


def test_turing_may_choose_open_on_535():
    assert kg.plan_driver(["7.5"], 535, "open")["kernel_modules"] == "open"


def test_blackwell_and_pascal_cannot_share_a_host():
    assert not kg.plan_driver(["12.0", "6.1"], 580)["ok"]


@pytest.mark.parametrize(
    ("cc", "support"),
    [("12.0", "required"), ("10.0", "required"), ("9.0", "supported"), ("7.5", "supported"),
     ("7.0", "unsupported"), ("6.1", "unsupported")],
)
def test_open_module_support(cc, support):
    assert kg.open_modules_support(cc) == support


# --- parsers ---------------------------------------------------------------------------

# The shape of `nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,
# compute_cap --format=csv,noheader,nounits` on a two-card host.
TWO_CARDS = """NVIDIA GeForce RTX 4090, 24564, 1234, 580.105.08, 8.9
NVIDIA H100 80GB HBM3, 81559, 0, 580.105.08, 9.0
"""


def test_parse_nvidia_smi_two_cards():
    rows = kg.parse_nvidia_smi(TWO_CARDS)
    assert [r["arch"] for r in rows] == ["sm_89", "sm_90"]
    assert rows[0]["memory_total_mib"] == 24564 and rows[0]["memory_used_mib"] == 1234
    assert rows[1]["family"] == "Hopper" and rows[1]["index"] == 1
    assert kg.vram_headroom_mib(rows) == [23330, 81559]


def test_parse_nvidia_smi_unified_memory_and_commas_in_names():
    rows = kg.parse_nvidia_smi("NVIDIA GB10, rev A, [N/A], [N/A], 580.95.05, 12.1\n")
    assert rows[0]["name"] == "NVIDIA GB10, rev A"
    assert rows[0]["memory_total_mib"] is None and rows[0]["family"] == "Blackwell"
    assert kg.vram_headroom_mib(rows) == [None]


def test_parse_nvidia_smi_empty_and_garbage():
    assert kg.parse_nvidia_smi("") == []
    with pytest.raises(ValueError):
        kg.parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate")


def test_parse_nvidia_smi_refuses_negative_memory_naming_the_value():
    with pytest.raises(ValueError, match=r"negative: '-1234' MiB"):
        kg.parse_nvidia_smi("NVIDIA GeForce RTX 4090, 24564, -1234, 580.105.08, 8.9\n")


def test_parse_pci_devices_keeps_nvidia_display_controllers():
    text = (
        "0000:00:02.0 0x8086 0x3e92 0x030000\n"  # Intel iGPU
        "0000:01:00.0 0x10de 0x2684 0x030000\n"  # RTX 4090 (VGA)
        "0000:01:00.1 0x10de 0x22ba 0x040300\n"  # its HDMI audio function
        "0000:41:00.0 0x10de 0x2330 0x030200\n"  # H100 (3D controller)
        "0000:42:00.0 0x10de 0x9999 0x030200\n"  # a card outside the table
    )
    rows = kg.parse_pci_devices(text)
    assert [(r["device_id"], r["compute_cap"]) for r in rows] == [
        ("2684", "8.9"), ("2330", "9.0"), ("9999", None)]


def test_every_card_of_the_issue_is_in_the_gpu_table():
    ccs = {card.compute_cap for card in gpu_table.GPU_TABLE.values()}
    assert {cap for _, _, cap in CARDS.values()} <= ccs


def test_flavour_list_matches_the_kit():
    assert kg.FLAVOURS == ["cpu", "cu118", "cu121", "cu124", "cu126", "cu128", "cu129",
                           "cu130", "cu132"]


def test_uncovered_caps_names_the_cards_a_build_cannot_run():
    assert kg.uncovered_caps(["8.9", "12.0", "6.1"], kg.wheel_arch_list("2.9.1", "cu126")) == [
        "12.0"]
    assert kg.uncovered_caps(["6.1"], kg.wheel_arch_list("2.9.1", "cu130")) == ["6.1"]


def test_parse_nvidia_smi_reads_the_output_of_a_real_h100():
    """docs/benchmarks/nvidia-smi-query-h100.csv is verbatim nvidia-smi output from the
    H100 lent for the 2026-11-27 benchmark: the parser the roles use must read it."""
    real = REPO / "docs/benchmarks/nvidia-smi-query-h100.csv"
    (gpu,) = kg.parse_nvidia_smi(real.read_text())
    assert gpu["name"] == "NVIDIA H100 80GB HBM3"
    assert (gpu["memory_total_mib"], gpu["memory_used_mib"]) == (81559, 0)
    assert gpu["driver_version"] == "580.159.04" and kg.driver_branch(gpu["driver_version"]) == 580
    assert (gpu["arch"], gpu["family"]) == ("sm_90", "Hopper")
    plan = kg.plan_torch_flavour("2.9.1", [gpu])
    assert (plan["flavour"], plan["compat"]) == ("cu130", "full"), plan


def test_the_role_filters_are_these_functions():
    """roles/gpu_facts/filter_plugins/kokoro_gpu.py, as Ansible loads it, names these
    functions and nothing of its own (the roles' tasks use these names)."""
    expected = {
        "kokoro_gpu_parse_nvidia_smi": kg.parse_nvidia_smi,
        "kokoro_gpu_parse_pci_devices": kg.parse_pci_devices,
        "kokoro_gpu_plan_torch_flavour": kg.plan_torch_flavour_or_error,
        "kokoro_gpu_plan_driver": kg.plan_driver,
        "kokoro_gpu_driver_max_cuda": kg.driver_max_cuda,
        "kokoro_gpu_flavour_cuda": kg.flavour_cuda,
        "kokoro_gpu_torch_minor": kg.torch_minor,
        "kokoro_gpu_cc_to_arch": kg.cc_to_arch,
        "kokoro_gpu_wheel_arch_list": kg.wheel_arch_list,
        "kokoro_gpu_arch_coverage": kg.arch_coverage,
        "kokoro_gpu_uncovered_caps": kg.uncovered_caps,
        "kokoro_gpu_open_modules_support": kg.open_modules_support,
        "kokoro_gpu_vram_headroom_mib": kg.vram_headroom_mib,
    }
    assert role_filters("gpu_facts", expected) == expected
    assert kg.flavour_cuda("cu128") == "12.8"
    assert kg.flavour_cuda("cpu") is None
