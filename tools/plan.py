#!/usr/bin/env python3
"""The preflight's VRAM and host-RAM plan for a card, before there is a host.

    python3 tools/plan.py --card "RTX 5090" --services kokoro,llm,comfyui
    python3 tools/plan.py --card 10de:2684 --services kokoro,llm
    python3 tools/plan.py --vram-mib 32607 --set stack_llm_ctx_size=16384
    python3 tools/plan.py --cards "RTX 4090,RTX 4090" --services kokoro,llm,comfyui \\
        --set stack_comfyui_gpu=1
    python3 tools/plan.py --cpu --services kokoro,llm --host-ram-mib 16000
    python3 tools/plan.py --inventory inventory/fleet --host gpu-4090-01 --card "RTX 4090"
    python3 tools/plan.py --card "RTX 5090" --services kokoro,comfyui --kokoro-idle-released

Nothing here decides anything: the planner is the one the preflight play runs
(plugins/module_utils/vram_plan.py), the settings are the role's defaults
(roles/stack/defaults/main.yml) with an inventory's and --set's values over them, they
reach the planner through the very block of roles/stack/tasks/plan.yml that the play
uses, and the model sizes are manifest.yml's. So the table, warnings and suggestions
printed here are the ones preflight prints for a host with that card.

--kokoro-idle-released adds ComfyUI's night budget: the same plan with Kokoro's model
released for idleness (KOKORO_IDLE_UNLOAD_SECONDS > 0), so Kokoro counts as no VRAM; its
process stays, and so does its host RAM. The plan without it is printed first, unchanged.

Exit 0: the plan fits (warnings may be printed); 1: it does not fit (the problems and
what would make it fit are printed); 2: the input is wrong (an unknown card, a bad
setting). Python 3.11 standard library plus PyYAML; --inventory also needs Ansible's
ansible-inventory (the repository's .venv has both).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
ROLE = ROOT / "roles" / "stack"
DEFAULTS = ROLE / "defaults" / "main.yml"
PLAN_TASKS = ROLE / "tasks" / "plan.yml"

SERVICES = ("kokoro", "llm", "comfyui", "webui")
# The one shape plan.yml's services block uses: a variable, optionally through int or
# bool. The planner reads Ansible's strings itself, so the value goes over as it is.
LEAF = re.compile(r"^\{\{\s*(stack_\w+)\s*(?:\|\s*(?:int|bool)\s*)?\}\}$")
PCI_ID = re.compile(r"^(?:10de:|0x)([0-9a-f]{4})$", re.IGNORECASE)


class PlanError(Exception):
    """Input the tool cannot plan with; the message names the problem and the fix."""


# The kit's collection (plugins/module_utils): the GPU table and the planner, the very
# modules the stack role's filter plugins import.
sys.path.insert(0, str(ROOT / "ansible" / "collections"))
from ansible_collections.kokoro.deploy.plugins.module_utils import (  # noqa: E402
    gpu_table,
    vram_plan,
)

# ----------------------------------------------------------------------------- cards


def known_cards() -> list[tuple[str, int]]:
    """(name, MiB) of every card whose size the kit's GPU table knows, once each."""
    return gpu_table.sized_cards()


def _known_list() -> str:
    return "\n".join(f"  {name} ({mib} MiB)" for name, mib in known_cards())


def _compact(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


def card_by_pci_id(device_id: str) -> tuple[str, int]:
    device_id = device_id.lower()
    known = gpu_table.card(device_id)
    if known and known.memory_mib:
        return known.name, known.memory_mib
    if known:
        raise PlanError(
            f"PCI id 10de:{device_id}: the kit's GPU table knows it ({known.name}, compute "
            f"capability {known.compute_cap}) but has no memory figure for it; give its "
            "memory instead: --vram-mib N (nvidia-smi --query-gpu=memory.total "
            "--format=csv prints it)"
        )
    raise PlanError(
        f"PCI id 10de:{device_id} is not in the kit's GPU table; give the card's memory "
        f"instead: --vram-mib N. The table knows:\n{_known_list()}"
    )


def card_by_name(text: str) -> tuple[str, int]:
    """The table's card whose name holds every word of `text` ("RTX 5090", "rtx4090",
    "A100 80GB"); several with one size are one card, several sizes are ambiguous."""
    words = [_compact(w) for w in re.findall(r"[0-9A-Za-z]+", text)]
    if not words:
        raise PlanError(f"--card {text!r}: empty; name a card, e.g. --card 'RTX 4090'")
    found = [c for c in known_cards() if all(w in _compact(c[0]) for w in words)]
    sizes = sorted({mib for _, mib in found})
    if len(sizes) == 1:
        return found[0]
    if not found:
        raise PlanError(
            f"unknown card {text!r}. The kit's GPU table knows:\n{_known_list()}\n"
            "For another card give its memory in MiB instead: --vram-mib N (nvidia-smi "
            "--query-gpu=memory.total --format=csv prints it)"
        )
    listed = ", ".join(f"{name} ({mib} MiB)" for name, mib in found)
    raise PlanError(f"card {text!r} matches cards of different sizes: {listed}; name one")


def parse_card(text: str) -> tuple[str, int]:
    """A card named by the user: its name in the kit's GPU table ("RTX 4090", or just
    "4090") or its PCI id (10de:2684; a bare 2684 is no card's name, so it is refused)."""
    text = text.strip()
    match = PCI_ID.match(text)
    if match:
        return card_by_pci_id(match.group(1))
    if text.isdigit() and not any(text in _compact(name) for name, _ in known_cards()):
        raise PlanError(
            f"card {text!r} is a bare number: write a PCI id as 10de:{text} and a VRAM "
            f"figure as --vram-mib {text}"
        )
    return card_by_name(text)


def parse_vram(text: str) -> list[tuple[str, int]]:
    cards = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) <= 0:
            raise PlanError(f"--vram-mib {text!r}: each card's memory is a whole number of MiB")
        cards.append(("card (--vram-mib)", int(item)))
    return cards


def as_gpus(cards: list[tuple[str, int]]) -> list[dict]:
    """The cards as nvidia-smi rows (kokoro_gpu.parse_nvidia_smi's shape), as the
    preflight sees them once a driver answers: a named card's size wins over
    stack_vram_total_mib, as nvidia-smi's figure does."""
    return [
        {"index": i, "name": name, "memory_total_mib": mib, "memory_used_mib": 0}
        for i, (name, mib) in enumerate(cards)
    ]


# -------------------------------------------------------------------------- settings


def role_defaults() -> dict:
    return yaml.safe_load(DEFAULTS.read_text()) or {}


def services_block() -> dict:
    """plan.yml's `__stack_services`: what the preflight hands the planner."""
    for task in yaml.safe_load(PLAN_TASKS.read_text()):
        if "stack_plan" in (task.get("ansible.builtin.set_fact") or {}):
            return task["vars"]["__stack_services"]
    raise PlanError(f"{PLAN_TASKS}: no task sets stack_plan; tools/plan.py follows that task")


def render(block: Any, settings: dict, where: str = "__stack_services") -> Any:
    """plan.yml's services block with each `{{ stack_x | int }}` replaced by the setting."""
    if isinstance(block, dict):
        return {k: render(v, settings, f"{where}.{k}") for k, v in block.items()}
    if not isinstance(block, str):
        return block
    match = LEAF.match(block.strip())
    if not match:
        raise PlanError(
            f"{PLAN_TASKS.relative_to(ROOT)}: {where} is {block!r}, not a stack_* variable "
            "with an optional '| int' or '| bool'; teach tools/plan.py's render() that shape"
        )
    return setting(settings, match.group(1))


def setting(settings: dict, name: str) -> Any:
    if name not in settings:
        raise PlanError(f"{name}: not a variable of {DEFAULTS.relative_to(ROOT)}")
    value = settings[name]
    if isinstance(value, str) and "{{" in value:
        raise PlanError(
            f"{name} is a template ({value}), which this tool does not evaluate; give its "
            f"value with --set {name}=VALUE"
        )
    return value


def inventory_settings(inventory: str, host: str) -> dict:
    """The host's stack_* variables as Ansible merges them (`ansible-inventory --host`)."""
    beside = Path(sys.executable).parent / "ansible-inventory"
    binary = shutil.which("ansible-inventory") or str(beside)
    if not Path(binary).exists():
        raise PlanError(
            "--inventory needs Ansible's ansible-inventory; run the tool with the "
            "repository's .venv (.venv/bin/python tools/plan.py ...) or give the settings "
            "with --set"
        )
    proc = subprocess.run(
        [binary, "-i", inventory, "--host", host],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1"},
    )
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise PlanError(
            f"ansible-inventory could not give {host}'s variables from {inventory}: {last} "
            "(a vault-encrypted file needs ANSIBLE_VAULT_PASSWORD_FILE)"
        )
    hostvars = json.loads(proc.stdout)
    return {k: v for k, v in hostvars.items() if k.startswith("stack_")}


def parse_set(items: list[str], known: dict) -> dict:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise PlanError(
                f"--set {item!r}: write NAME=VALUE, e.g. --set stack_llm_ctx_size=16384"
            )
        if name not in known:
            raise PlanError(
                f"--set {name}: not a variable of {DEFAULTS.relative_to(ROOT)} "
                "(the planner reads the stack role's variables)"
            )
        out[name] = yaml.safe_load(value) if value.strip() else ""
    return out


def services_settings(names: str) -> dict:
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in SERVICES]
    if unknown:
        raise PlanError(
            f"--services: unknown {', '.join(unknown)}; choose from {', '.join(SERVICES)}"
        )
    if "kokoro" not in chosen:
        raise PlanError("--services: kokoro is always planned (the stack runs it on every host)")
    return {f"stack_{s}_enabled": s in chosen for s in SERVICES[1:]}


def manifest_companions(settings: dict) -> dict:
    """manifest.yml's companions (the model sizes), from where the role reads it."""
    path = str(settings["stack_manifest_path"]).replace("{{ role_path }}", str(ROLE))
    path = setting({"stack_manifest_path": path}, "stack_manifest_path")
    return yaml.safe_load(Path(path).read_text())["companions"]


# ------------------------------------------------------------------------------ plan


def vram_total_mib(settings: dict) -> int:
    value = setting(settings, "stack_vram_total_mib")
    try:
        return int(value or 0)
    except ValueError:
        raise PlanError(f"stack_vram_total_mib: {value!r} is not a whole number of MiB") from None


def gpus_for(args: argparse.Namespace, settings: dict) -> tuple[list[dict], str]:
    """The cards to plan on, as plan.yml picks them (stack_device), and a note."""
    if args.card or args.cards:
        names = (args.card or []) + (args.cards or "").split(",")
        cards = [parse_card(name) for name in names if name.strip()]
    elif args.vram_mib:
        cards = parse_vram(args.vram_mib)
    elif args.cpu:
        cards = []
    elif vram_total_mib(settings) > 0:
        cards = [("card (stack_vram_total_mib)", vram_total_mib(settings))]
    elif setting(settings, "stack_device") == "cpu":
        cards = []
    else:
        raise PlanError(
            "which card? --card NAME (or PCI id 10de:XXXX), --cards A,B for several, "
            "--vram-mib N, or --cpu for a host without one; --list-cards shows the names"
        )
    device = setting(settings, "stack_device")
    if device == "gpu" and not cards:
        raise PlanError(
            "stack_device=gpu, but there is no card to plan on; name one (--card) or set "
            "stack_device to auto or cpu"
        )
    if device == "cpu" and cards:
        return [], "stack_device is cpu: every service is planned on the CPU, whatever the card"
    return as_gpus(cards), ""


def make_plan(args: argparse.Namespace) -> tuple[dict, str]:
    """(the planner's result, a heading) for the command line's choices."""
    settings = role_defaults()
    if args.inventory:
        settings.update(inventory_settings(args.inventory, args.host))
    if args.services:
        settings.update(services_settings(args.services))
    settings.update(parse_set(args.set or [], settings))
    gpus, note = gpus_for(args, settings)
    services = render(services_block(), settings)
    companions = manifest_companions(settings)
    reserve = setting(settings, "stack_vram_reserve_mib")
    try:
        plan = vram_plan.plan_stack(
            gpus, services, companions, reserve_mib=reserve, host_ram_mib=args.host_ram_mib
        )
    except ValueError as exc:
        raise PlanError(str(exc)) from None
    enabled = " + ".join(r["service"] for r in plan["rows"] + plan["ram_rows"])
    where = "; ".join(f"GPU {g['index']}: {g['name']}, {g['memory_total_mib']} MiB" for g in gpus)
    sources = [str(DEFAULTS.relative_to(ROOT))]
    sources += [f"{args.inventory} --host {args.host}"] if args.inventory else []
    sources += [f"--set {s}" for s in args.set or []]
    lines = [
        f"Plan for {enabled} on {where or 'a host without a GPU'}",
        f"Settings: {', then '.join(sources)}",
        note,
    ]
    if getattr(args, "kokoro_idle_released", False):
        plan = with_kokoro_released(plan, gpus, services, companions, reserve, args.host_ram_mib)
    return plan, "\n".join(line for line in lines if line)


def with_kokoro_released(
    day: dict,
    gpus: list[dict],
    services: dict,
    companions: dict,
    reserve_mib: Any,
    host_ram_mib: int | None,
) -> dict:
    """The day plan with its night beside it (`night`): the same services while Kokoro's
    model is released for idleness, so Kokoro counts as no VRAM and ComfyUI's budget
    grows by what it frees. Kokoro's process stays, so its host RAM is taken off the
    RAM the others are checked against."""
    kokoro = next(r for r in day["rows"] if r["service"] == "kokoro")
    if kokoro["device"] != "gpu":
        raise PlanError(
            "--kokoro-idle-released: Kokoro runs on the CPU in this plan, so releasing its "
            "model frees no VRAM; leave the option out"
        )
    night_services = {**services, "kokoro": {**services["kokoro"], "enabled": False}}
    ram = host_ram_mib - kokoro["ram_mib"] if host_ram_mib else None
    try:
        night = vram_plan.plan_stack(
            gpus, night_services, companions, reserve_mib=reserve_mib, host_ram_mib=ram
        )
    except ValueError as exc:
        raise PlanError(str(exc)) from None
    night["kokoro_released"] = {
        "day_planned_mib": kokoro["planned_mib"],
        "gpu": kokoro["gpu"],
        "ram_mib": kokoro["ram_mib"],
    }
    return {**day, "fits": day["fits"] and night["fits"], "day_fits": day["fits"], "night": night}


def verdict(plan: dict) -> list[str]:
    out = []
    if plan["warnings"]:
        out += ["", "Warnings:"] + [f"- {w}" for w in plan["warnings"]]
        if plan["warning_suggestions"]:
            out += ["What would clear them (each checked alone):"]
            out += [f"- {s}" for s in plan["warning_suggestions"]]
    if plan.get("day_fits", plan["fits"]):
        out += ["", "Fits."]
    else:
        out += ["", "Does not fit:"] + [f"- {p}" for p in plan["problems"]]
        if plan["suggestions"]:
            out += ["What would make it fit (each checked alone):"]
            out += [f"- {s}" for s in plan["suggestions"]]
    return out


def night_report(night: dict) -> list[str]:
    released = night["kokoro_released"]
    gib = released["day_planned_mib"] / 1024
    return [
        "",
        "Night: Kokoro's model released for idleness (KOKORO_IDLE_UNLOAD_SECONDS > 0), "
        "counted as 0 VRAM",
        f"Kokoro's process stays: its host RAM ({released['ram_mib'] / 1024:.2f} GiB) is "
        "taken off the host RAM given. The budget holds only while Kokoro is released: the "
        f"request that loads it again needs its {gib:.2f} GiB free on GPU "
        f"{released['gpu']}, and is answered 503 model_unavailable until it is.",
        "",
        night["table"],
        "",
        night["ram_table"],
        *verdict(night),
    ]


def report(plan: dict, heading: str) -> str:
    """The plan as preflight shows it: the tables, the warnings, the verdict (and with
    --kokoro-idle-released the night's after it)."""
    out = [heading, "", plan["table"], "", plan["ram_table"], *verdict(plan)]
    if "night" in plan:
        out += night_report(plan["night"])
    return "\n".join(out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tools/plan.py",
        description=__doc__.split("\n\n")[0],
        epilog="Settings: the stack role's defaults, then --inventory's, then --services "
        "and --set. Exit 0 fits, 1 does not fit, 2 bad input.",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--card",
        action="append",
        metavar="NAME|PCI-ID",
        help="a card by name ('RTX 5090', 'A100 80GB') or PCI id (10de:2b85); repeat for several",
    )
    where.add_argument("--cards", metavar="A,B", help="several cards, comma-separated")
    where.add_argument("--vram-mib", metavar="N[,N]", help="a card (or several) by memory in MiB")
    where.add_argument("--cpu", action="store_true", help="a host without a GPU")
    p.add_argument(
        "--services",
        metavar="LIST",
        help="comma-separated, from kokoro,llm,comfyui,webui "
        "(default: the settings' stack_*_enabled)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="a stack role variable, e.g. stack_llm_ctx_size=16384 (YAML value); repeatable",
    )
    p.add_argument("--inventory", metavar="PATH", help="read the host's stack_* variables from it")
    p.add_argument("--host", metavar="NAME", help="the inventory host (with --inventory)")
    p.add_argument(
        "--host-ram-mib",
        type=int,
        metavar="N",
        help="check against this much host RAM (free -m's total, Ansible's memtotal_mb)",
    )
    p.add_argument(
        "--kokoro-idle-released",
        action="store_true",
        help="also plan the night: Kokoro's model released for idleness counts as 0 VRAM, "
        "which ComfyUI's budget gains (the plan without it is unchanged)",
    )
    p.add_argument("--json", action="store_true", help="print the planner's whole result as JSON")
    p.add_argument("--list-cards", action="store_true", help="print the card names it knows")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list_cards:
        print(_known_list())
        return 0
    try:
        if bool(args.inventory) != bool(args.host):
            raise PlanError("--inventory and --host go together: the host's variables are read")
        plan, heading = make_plan(args)
    except PlanError as exc:
        print(f"tools/plan.py: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(plan, indent=2) if args.json else report(plan, heading))
    return 0 if plan["fits"] else 1


if __name__ == "__main__":
    sys.exit(main())
