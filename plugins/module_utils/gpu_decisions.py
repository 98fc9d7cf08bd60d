"""The GPU decisions of kokoro-deploy, in one place: pure functions over plain data.

Role `gpu_facts` exposes them as Ansible filters (`kokoro_gpu_*`, in
roles/gpu_facts/filter_plugins/kokoro_gpu.py) and sets the `gpu_facts_*` facts that
`nvidia_driver`, `nvidia_container_toolkit` and `torch_runtime` read; the tests, the
acceptance suite and the VRAM planner import this module.
Nothing here touches a host: every function takes text or numbers and returns data.

Sources of the tables (checked 2026-11-27):

[PT-MATRIX]  PyTorch RELEASE.md, "Release Compatibility Matrix" and "PyTorch CUDA
             Support Matrix" (github.com/pytorch/pytorch/blob/main/RELEASE.md): the CUDA
             flavours published for each release (stable + experimental columns are both
             on the wheel index), and for 2.12-2.14 the architectures of each flavour.
[PT-BUILD]   PyTorch .ci/manywheel/build_cuda.sh, TORCH_CUDA_ARCH_LIST per CUDA version
             (Maxwell/Pascal only in the 12.6 arm from 2.8 on; cu118 keeps 3.7).
[PT-2.8]     "Maxwell and Pascal architecture support removed in CUDA 12.8 and 12.9
             builds" (dev-discuss.pytorch.org/t/3128, PyTorch 2.8 release notes) and
             pytorch/pytorch#157517, #158700 (cu128 arch list of 2.8:
             sm_70 sm_75 sm_80 sm_86 sm_90 sm_100 sm_120 compute_120).
[PT-RFC-SM70] pytorch/pytorch#172352: Volta (sm_70) leaves the cu128 build (2.11).
[CUDA-RN]    NVIDIA CUDA Toolkit Release Notes, "CUDA Toolkit and Corresponding Driver
             Versions" (Table 3, Linux x86_64, GA rows) and "CUDA Minor Version
             Compatibility" (Table 2): 11.x >= 450.80.02, 12.x >= 525.60.13, and
             docs.nvidia.com/datacenter/tesla/drivers/supported-drivers-and-cuda-toolkit-
             versions.html: R580 runs CUDA 13.x through minor version compatibility.
[NV-KMOD]    NVIDIA driver installation guide, "Kernel Modules": open modules only for
             Turing and newer (they need the GSP); proprietary required for Maxwell,
             Pascal, Volta; open is the default from the 560 series; Grace Hopper and
             Blackwell need the open modules. github.com/NVIDIA/open-gpu-kernel-modules.
[NV-BW]      Blackwell (GeForce RTX 50xx, B200) is first supported by the R570 branch
             (the first public R570 Linux driver, shipped with CUDA 12.8, drives the
             RTX 5090; CUDA 12.8 is the first toolkit with sm_100/sm_120).
[NV-LEGACY]  NVIDIA's "Unix graphics feature deprecation schedule" (forums.developer.
             nvidia.com): "The release 580 series will be the last to support GPUs based
             on the Maxwell, Pascal, and Volta architectures."
[PCI-IDS]    The PCI ID repository (pci.ids) for device ids; 2b85 (RTX 5090) from the
             "supported GPUs" appendix of the NVIDIA Linux driver README (570+).
"""

from __future__ import annotations

import re
from typing import Any

from ansible_collections.kokoro.deploy.plugins.module_utils import gpu_table, nvidia_smi

# --------------------------------------------------------------------------- arches

# Compute capability major -> architecture family. Blackwell spans 10.x (B100/B200),
# 11.x (Thor) and 12.x (GeForce RTX 50xx, RTX PRO); all count as Blackwell for the
# driver rules below.
ARCH_FAMILY = {
    3: "Kepler",
    5: "Maxwell",
    6: "Pascal",
    7: "Volta",  # 7.5 is Turing, handled in arch_family()
    8: "Ampere",  # 8.9 is Ada Lovelace
    9: "Hopper",
    10: "Blackwell",
    11: "Blackwell",
    12: "Blackwell",
}


def parse_cc(value: Any) -> tuple[int, int]:
    """'8.9', 8.9, (8, 9), 'sm_89' or '89' -> (8, 9)."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return int(value[0]), int(value[1])
    text = str(value).strip().lower()
    match = re.fullmatch(r"(\d+)\.(\d+)", text)
    if match:
        return int(match.group(1)), int(match.group(2))
    match = re.fullmatch(r"(?:sm_|compute_)?(\d+)(\d)[a-z]?", text)
    if match:
        return int(match.group(1)), int(match.group(2))
    raise ValueError(f"not a compute capability: {value!r}")


def cc_to_arch(value: Any) -> str:
    """Compute capability -> the nvcc/torch arch name: (12, 0) -> 'sm_120'."""
    major, minor = parse_cc(value)
    return f"sm_{major}{minor}"


def arch_family(value: Any) -> str:
    major, minor = parse_cc(value)
    if (major, minor) == (7, 5):
        return "Turing"
    if (major, minor) == (8, 9):
        return "Ada"
    return ARCH_FAMILY.get(major, "unknown")


# ------------------------------------------------------------------- driver versions


def parse_driver_version(value: Any) -> tuple[int, ...]:
    """'535.309.01' -> (535, 309, 1); 570 -> (570,)."""
    text = str(value).strip()
    if not re.fullmatch(r"\d+(\.\d+)*", text):
        raise ValueError(f"not a driver version: {value!r}")
    return tuple(int(part) for part in text.split("."))


def driver_branch(value: Any) -> int:
    return parse_driver_version(value)[0]


# CUDA toolkit -> minimum Linux x86_64 driver (GA row of [CUDA-RN] Table 3). A driver at
# or above this runs that toolkit's binaries with every feature, PTX JIT included.
CUDA_MIN_DRIVER: dict[str, tuple[int, ...]] = {
    "11.8": (520, 61, 5),
    "12.0": (525, 60, 13),
    "12.1": (530, 30, 2),
    "12.2": (535, 54, 3),
    "12.3": (545, 23, 6),
    "12.4": (550, 54, 14),
    "12.5": (555, 42, 2),
    "12.6": (560, 28, 3),
    "12.8": (570, 26),
    "12.9": (575, 51, 3),
    "13.0": (580, 65, 6),
    "13.1": (590, 44, 1),
    # Branch-level floor: CUDA 13.2 ships with the R595 branch (patch level not pinned
    # here; a lower 595.x would only be reported as minor-version compatible).
    "13.2": (595,),
}

# [CUDA-RN] Table 2: the oldest driver that runs any toolkit of a major version through
# CUDA minor version compatibility (no PTX JIT of newer PTX, otherwise complete).
MINOR_COMPAT_MIN_DRIVER: dict[int, tuple[int, ...]] = {
    11: (450, 80, 2),
    12: (525, 60, 13),
    13: (580, 65, 6),
}


def _cuda_key(cuda: str) -> tuple[int, int]:
    major, minor = str(cuda).split(".")[:2]
    return int(major), int(minor)


def driver_max_cuda(driver_version: Any) -> str | None:
    """The newest CUDA toolkit a driver fully supports (what nvidia-smi prints as
    'CUDA Version'), from [CUDA-RN]; None for a driver older than CUDA 11.8."""
    driver = parse_driver_version(driver_version)
    best = None
    for cuda, floor in CUDA_MIN_DRIVER.items():
        if driver >= floor and (best is None or _cuda_key(cuda) > _cuda_key(best)):
            best = cuda
    return best


def driver_runs_cuda(driver_version: Any, cuda: str) -> str | None:
    """'full', 'minor' (minor version compatibility only) or None (cannot run)."""
    driver = parse_driver_version(driver_version)
    floor = CUDA_MIN_DRIVER.get(cuda)
    if floor is not None and driver >= floor:
        return "full"
    compat = MINOR_COMPAT_MIN_DRIVER.get(_cuda_key(cuda)[0])
    if compat is not None and driver >= compat:
        return "minor"
    return None


# ---------------------------------------------------------------- torch wheel index

FLAVOUR_CUDA = {
    "cu118": "11.8",
    "cu121": "12.1",
    "cu124": "12.4",
    "cu126": "12.6",
    "cu128": "12.8",
    "cu129": "12.9",
    "cu130": "13.0",
    "cu132": "13.2",
}
FLAVOURS = ["cpu", *FLAVOUR_CUDA]

_KEPLER_TO_HOPPER = "3.7;5.0;6.0;7.0;7.5;8.0;8.6;9.0"  # cu118 [PT-BUILD]
_MAXWELL_TO_HOPPER = "5.0;6.0;7.0;7.5;8.0;8.6;9.0"  # cu121/cu124/cu126 [PT-BUILD]
_TURING_TO_BLACKWELL = "7.5;8.0;8.6;9.0;10.0;12.0+PTX"  # [PT-MATRIX], [PT-RFC-SM70]
_VOLTA_TO_BLACKWELL = "7.0;7.5;8.0;8.6;9.0;10.0;12.0+PTX"  # [PT-2.8]

# torch minor release -> {flavour: TORCH_CUDA_ARCH_LIST of its Linux x86_64 wheels}.
# Which flavours exist: [PT-MATRIX]. What each carries: [PT-BUILD], [PT-2.8], [PT-MATRIX].
TORCH_WHEELS: dict[str, dict[str, str]] = {
    "2.5": {"cu118": _KEPLER_TO_HOPPER, "cu121": _MAXWELL_TO_HOPPER, "cu124": _MAXWELL_TO_HOPPER},
    "2.6": {"cu118": _KEPLER_TO_HOPPER, "cu124": _MAXWELL_TO_HOPPER, "cu126": _MAXWELL_TO_HOPPER},
    # 2.7's cu128 was the first Blackwell build and left out everything before Turing.
    "2.7": {"cu118": _KEPLER_TO_HOPPER, "cu126": _MAXWELL_TO_HOPPER, "cu128": _TURING_TO_BLACKWELL},
    "2.8": {
        "cu126": _MAXWELL_TO_HOPPER,
        "cu128": _VOLTA_TO_BLACKWELL,
        "cu129": _VOLTA_TO_BLACKWELL,
    },
    "2.9": {
        "cu126": _MAXWELL_TO_HOPPER,
        "cu128": _VOLTA_TO_BLACKWELL,
        "cu130": _TURING_TO_BLACKWELL,
    },
    "2.10": {
        "cu126": _MAXWELL_TO_HOPPER,
        "cu128": _VOLTA_TO_BLACKWELL,
        "cu130": _TURING_TO_BLACKWELL,
    },
    "2.11": {
        "cu126": _MAXWELL_TO_HOPPER,
        "cu128": _TURING_TO_BLACKWELL,
        "cu130": _TURING_TO_BLACKWELL,
    },
    "2.12": {
        "cu126": _MAXWELL_TO_HOPPER,
        "cu130": _TURING_TO_BLACKWELL,
        "cu132": _TURING_TO_BLACKWELL,
    },
    "2.13": {
        "cu126": _MAXWELL_TO_HOPPER,
        "cu130": _TURING_TO_BLACKWELL,
        "cu132": _TURING_TO_BLACKWELL,
    },
    "2.14": {
        "cu126": _MAXWELL_TO_HOPPER,
        "cu130": _TURING_TO_BLACKWELL,
        "cu132": _TURING_TO_BLACKWELL,
    },
}


def flavour_cuda(flavour: str) -> str | None:
    """A wheel flavour's CUDA version: 'cu128' -> '12.8'; None for cpu or an unknown one."""
    return FLAVOUR_CUDA.get(flavour)


def torch_minor(version: Any) -> str:
    """'2.9.1' or '2.9.1+cu128' -> '2.9'."""
    match = re.match(r"(\d+)\.(\d+)", str(version).strip())
    if not match:
        raise ValueError(f"not a torch version: {version!r}")
    return f"{match.group(1)}.{match.group(2)}"


def arch_list_from_torch(arch_list: str) -> list[str]:
    """TORCH_CUDA_ARCH_LIST syntax ('7.5;8.0;12.0+PTX') -> what
    torch.cuda.get_arch_list() prints (['sm_75', 'sm_80', 'sm_120', 'compute_120'])."""
    out: list[str] = []
    for item in arch_list.split(";"):
        cc = item.replace("+PTX", "")
        out.append(cc_to_arch(cc))
        if item.endswith("+PTX"):
            out.append("compute_" + cc_to_arch(cc)[3:])
    return out


def wheel_arch_list(torch_version: Any, flavour: str) -> list[str]:
    minor = torch_minor(torch_version)
    return arch_list_from_torch(TORCH_WHEELS[minor][flavour])


def arch_coverage(card_cc: Any, arch_list: list[str]) -> str | None:
    """How a build with `arch_list` (torch.cuda.get_arch_list()) runs on a card:
    'sass' when it holds a cubin the card can load (same major version, minor <= the
    card's: sm_86 code runs on sm_89, sm_60 on sm_61, but sm_100 not on sm_120), 'ptx'
    when only PTX of an older or equal arch can be JIT-compiled, else None."""
    major, minor = parse_cc(card_cc)
    has_ptx = False
    for arch in arch_list:
        kind, _, digits = str(arch).partition("_")
        a_major, a_minor = parse_cc(digits)
        if kind == "sm" and a_major == major and a_minor <= minor:
            return "sass"
        if kind == "compute" and (a_major, a_minor) <= (major, minor):
            has_ptx = True
    return "ptx" if has_ptx else None


def plan_torch_flavour(
    torch_version: Any,
    gpus: list[dict] | None,
    allow_minor_compat: bool = True,
) -> dict:
    """Pick the torch wheel flavour for a host.

    gpus: parsed nvidia-smi rows (parse_nvidia_smi), empty or None for no NVIDIA GPU.
    Returns {'flavour', 'cuda' (None for cpu), 'compat' ('full'|'minor'|None),
    'arches' (the cards' sm_XY), 'reason'} or raises ValueError with the fix.

    Rule: among the flavours published for this torch release, keep those whose
    wheels hold code every card can run, then the newest one the driver fully
    supports; failing that (e.g. driver 535 with torch >= 2.8, which has no CUDA <= 12.2
    build), the newest one the driver runs through CUDA minor version compatibility,
    provided every card has a cubin (PTX JIT needs full support).
    """
    minor = torch_minor(torch_version)
    if not gpus:
        return {
            "flavour": "cpu",
            "cuda": None,
            "compat": None,
            "arches": [],
            "reason": "no NVIDIA GPU: CPU wheels",
        }
    if minor not in TORCH_WHEELS:
        raise ValueError(
            f"torch {torch_version}: no wheel table for {minor} (known: "
            f"{', '.join(TORCH_WHEELS)}); set torch_runtime_flavour to a flavour its "
            "wheel index publishes, or extend TORCH_WHEELS in gpu_decisions.py"
        )
    drivers = {str(g["driver_version"]) for g in gpus}
    driver = min(drivers, key=parse_driver_version)
    arches = sorted({cc_to_arch(g["compute_cap"]) for g in gpus})
    driver_plan = plan_driver([g["compute_cap"] for g in gpus], driver)
    if not driver_plan["ok"]:
        raise ValueError(f"driver {driver} cannot run these cards: {driver_plan['reason']}")
    candidates: list[tuple[str, str, str]] = []
    rejected: list[str] = []
    for flavour, arch_string in TORCH_WHEELS[minor].items():
        cuda = FLAVOUR_CUDA[flavour]
        compat = driver_runs_cuda(driver, cuda)
        wheel = arch_list_from_torch(arch_string)
        coverage = [arch_coverage(g["compute_cap"], wheel) for g in gpus]
        if compat is None:
            rejected.append(f"{flavour}: driver {driver} is older than CUDA {cuda} needs")
        elif None in coverage:
            rejected.append(f"{flavour}: no kernels for {', '.join(arches)}")
        elif compat == "minor" and "ptx" in coverage:
            rejected.append(f"{flavour}: only PTX for this card and the driver cannot JIT it")
        elif compat == "minor" and not allow_minor_compat:
            rejected.append(f"{flavour}: needs CUDA minor version compatibility (disabled)")
        else:
            candidates.append((flavour, cuda, compat))
    for wanted in ("full", "minor"):
        pool = [c for c in candidates if c[2] == wanted]
        if pool:
            flavour, cuda, compat = max(pool, key=lambda c: _cuda_key(c[1]))
            how = "fully" if compat == "full" else "through CUDA minor version compatibility"
            return {
                "flavour": flavour,
                "cuda": cuda,
                "compat": compat,
                "arches": arches,
                "reason": (
                    f"newest torch {minor} flavour with kernels for {', '.join(arches)} that "
                    f"driver {driver} runs ({how})"
                ),
            }
    raise ValueError(
        f"no torch {minor} CUDA build runs {', '.join(arches)} on driver {driver}: "
        + "; ".join(rejected)
        + ". Fix: install a newer driver (nvidia_driver_branch), pick another torch "
        "version (torch_runtime_torch_version), or force torch_runtime_flavour=cpu"
    )


# ------------------------------------------------------------------ driver decisions

# Oldest driver branch that knows each architecture ([NV-BW]; earlier families are
# supported by every branch this kit installs, 535 and later).
ARCH_MIN_BRANCH = {"Blackwell": 570}
# Newest branch that still supports each pre-Turing family ([NV-LEGACY]).
ARCH_MAX_BRANCH = {"Kepler": 470, "Maxwell": 580, "Pascal": 580, "Volta": 580}
# From the 560 series NVIDIA installs the open modules by default ([NV-KMOD]).
OPEN_DEFAULT_FROM_BRANCH = 560


def open_modules_support(card_cc: Any) -> str:
    """'required' (Blackwell), 'supported' (Turing..Hopper) or 'unsupported'
    (pre-Turing: the open modules need the GSP, first in Turing) [NV-KMOD]."""
    cc = parse_cc(card_cc)
    if arch_family(cc) == "Blackwell":
        return "required"
    if cc >= (7, 5):
        return "supported"
    return "unsupported"


def plan_driver(
    compute_caps: list[Any],
    branch: Any,
    kernel_modules: str = "auto",
) -> dict:
    """Decide the kernel module flavour for a driver branch on a set of cards.

    compute_caps: every card's compute capability (one host may mix cards).
    kernel_modules: 'auto', 'open' or 'proprietary'.
    Returns {'ok', 'branch', 'kernel_modules' ('open'|'proprietary'|None),
    'supported_branches' (text), 'reason'}; ok=False names what would work.
    """
    branch_n = driver_branch(branch)
    if kernel_modules not in ("auto", "open", "proprietary"):
        raise ValueError(f"kernel_modules must be auto, open or proprietary: {kernel_modules!r}")
    ccs = [parse_cc(c) for c in compute_caps]
    support = {open_modules_support(c) for c in ccs}
    families = sorted({arch_family(c) for c in ccs})
    lo = max([ARCH_MIN_BRANCH.get(f, 0) for f in families] or [0])
    hi = min([ARCH_MAX_BRANCH.get(f, 10_000) for f in families] or [10_000])
    span = f">= {lo}" if hi == 10_000 else (f"<= {hi}" if not lo else f"{lo}..{hi}")

    def fail(reason: str) -> dict:
        return {
            "ok": False,
            "branch": branch_n,
            "kernel_modules": None,
            "supported_branches": span,
            "reason": reason,
        }

    if "required" in support and "unsupported" in support:
        return fail(
            f"this host mixes {', '.join(families)}: Blackwell needs the open kernel "
            "modules and pre-Turing cards cannot use them; no single driver runs both"
        )
    if branch_n < lo:
        return fail(
            f"{'/'.join(families)} needs driver branch >= {lo}; {branch_n} does not support "
            f"it. Set nvidia_driver_branch to a supported branch ({span})"
        )
    if branch_n > hi:
        return fail(
            f"{'/'.join(families)} is not supported after branch {hi}; set "
            f"nvidia_driver_branch to {span}"
        )
    if "required" in support:
        if kernel_modules == "proprietary":
            return fail(
                "Blackwell cards run only with the open kernel modules; set "
                "nvidia_driver_kernel_modules to open (or auto)"
            )
        chosen = "open"
    elif "unsupported" in support:
        if kernel_modules == "open":
            return fail(
                f"{'/'.join(families)} cannot use the open kernel modules (they need the "
                "GSP, Turing and newer); set nvidia_driver_kernel_modules to proprietary "
                "(or auto)"
            )
        chosen = "proprietary"
    elif kernel_modules == "auto":
        chosen = "open" if branch_n >= OPEN_DEFAULT_FROM_BRANCH else "proprietary"
    else:
        chosen = kernel_modules
    return {
        "ok": True,
        "branch": branch_n,
        "kernel_modules": chosen,
        "supported_branches": span,
        "reason": f"{'/'.join(families)} on branch {branch_n}: {chosen} kernel modules",
    }


# ----------------------------------------------------------------------- parsers

NVIDIA_SMI_QUERY = (
    "nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,compute_cap "
    "--format=csv,noheader,nounits"
)


SMI_FIELDS = ("name", "memory.total", "memory.used", "driver_version", "compute_cap")


def parse_nvidia_smi(text: str) -> list[dict]:
    """Parse the output of NVIDIA_SMI_QUERY (one line per card) into
    [{'index', 'name', 'memory_total_mib', 'memory_used_mib', 'driver_version',
    'compute_cap', 'arch', 'family'}]. Memory reads None where the card reports
    '[N/A]' (unified-memory parts). Raises ValueError on a line it cannot read."""
    gpus = []
    for row in nvidia_smi.records(text, SMI_FIELDS, free="name"):
        parse_driver_version(row["driver_version"])
        major, minor = parse_cc(row["compute_cap"])
        gpus.append(
            {
                "index": len(gpus),
                "name": row["name"],
                "memory_total_mib": nvidia_smi.mib(row["memory.total"]),
                "memory_used_mib": nvidia_smi.mib(row["memory.used"]),
                "driver_version": row["driver_version"],
                "compute_cap": f"{major}.{minor}",
                "arch": f"sm_{major}{minor}",
                "family": arch_family((major, minor)),
            }
        )
    return gpus


def parse_pci_devices(text: str) -> list[dict]:
    """Parse lines 'ADDRESS VENDOR DEVICE CLASS' (from /sys/bus/pci/devices/*:
    e.g. '0000:01:00.0 0x10de 0x2684 0x030000') and keep NVIDIA display controllers
    (class 0x03xxxx: VGA or 3D). Returns [{'address', 'device_id', 'compute_cap'}],
    compute_cap None for a device id outside the kit's GPU table (gpu_table)."""
    found = []
    for line in str(text or "").splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue
        address, vendor, device, klass = (p.lower() for p in parts)
        if vendor != "0x10de" or not klass.startswith("0x03"):
            continue
        device_id = device.removeprefix("0x")
        found.append(
            {
                "address": address,
                "device_id": device_id,
                "compute_cap": known.compute_cap if (known := gpu_table.card(device_id)) else None,
            }
        )
    return found


def uncovered_caps(compute_caps: list[Any], arch_list: list[str]) -> list[str]:
    """The compute capabilities among `compute_caps` that a build with `arch_list` has
    no code for (what the torch_runtime check fails on)."""
    return [str(cc) for cc in compute_caps if arch_coverage(cc, arch_list) is None]


def vram_headroom_mib(gpus: list[dict]) -> list[int | None]:
    """Free VRAM per card (total - used), None where the card reports no numbers."""
    out = []
    for gpu in gpus:
        total, used = gpu.get("memory_total_mib"), gpu.get("memory_used_mib")
        out.append(None if total is None or used is None else total - used)
    return out


def plan_torch_flavour_or_error(*args, **kwargs) -> dict:
    """plan_torch_flavour for templates: the ValueError's text lands in 'error'
    (flavour None) so that a task can fail with it instead of a filter traceback."""
    try:
        return {**plan_torch_flavour(*args, **kwargs), "error": None}
    except ValueError as exc:
        return {"flavour": None, "cuda": None, "compat": None, "arches": [], "error": str(exc)}

