"""The post-deploy VRAM report: nvidia-smi's cards (with their UUIDs) and compute
processes parsed, each process given to its compose service, what each service holds
beside its plan (vram_plan.plan_stack's rows) and each card's headroom (vram_report),
with its table. Nothing here touches a host: the role runs nvidia-smi, this reads its
text.
"""

from __future__ import annotations

import re

from ansible_collections.kokoro.deploy.plugins.module_utils import nvidia_smi
from ansible_collections.kokoro.deploy.plugins.module_utils.vram_sizing import _gib

# ----------------------------------------------------------------------- nvidia-smi

NVIDIA_SMI_GPUS_QUERY = (
    "nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used --format=csv,noheader,nounits"
)
NVIDIA_SMI_APPS_QUERY = (
    "nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name,used_memory "
    "--format=csv,noheader,nounits"
)


def parse_gpu_uuids(text: str) -> list[dict]:
    """NVIDIA_SMI_GPUS_QUERY output -> [{'index', 'uuid', 'name', 'memory_total_mib',
    'memory_used_mib'}] (memory None where the card prints '[N/A]'). ValueError on a
    line it cannot read."""
    fields = ("index", "uuid", "name", "memory.total", "memory.used")
    cards = []
    for row in nvidia_smi.records(text, fields, free="name", what="GPU"):
        if not re.fullmatch(r"\d+", row["index"]):
            raise ValueError(f"nvidia-smi GPU line has not 5 fields: {row!r}")
        cards.append(
            {
                "index": int(row["index"]),
                "uuid": row["uuid"],
                "name": row["name"],
                "memory_total_mib": nvidia_smi.mib(row["memory.total"]),
                "memory_used_mib": nvidia_smi.mib(row["memory.used"]),
            }
        )
    return cards


def parse_compute_apps(text: str) -> list[dict]:
    """NVIDIA_SMI_APPS_QUERY output -> [{'gpu_uuid', 'pid', 'process_name',
    'used_memory_mib'}]; process_name None for '[Insufficient Permissions]' (a process
    of another PID namespace or user), used memory None for '[N/A]'. Lines without a
    process ('No running processes found') are skipped; ValueError on others."""
    fields = ("gpu_uuid", "pid", "process_name", "used_memory")
    lines = "\n".join(line for line in str(text or "").splitlines()
                      if not line.strip().lower().startswith("no running"))
    apps = []
    for row in nvidia_smi.records(lines, fields, free="process_name", what="compute-apps"):
        if not re.fullmatch(r"\d+", row["pid"]):
            raise ValueError(f"nvidia-smi compute-apps line has not 4 fields: {row!r}")
        name = row["process_name"]
        apps.append(
            {
                "gpu_uuid": row["gpu_uuid"],
                "pid": int(row["pid"]),
                "process_name": None if name.startswith("[") else name,
                "used_memory_mib": nvidia_smi.mib(row["used_memory"]),
            }
        )
    return apps


def vram_report(
    gpus_text: str,
    apps_text: str,
    pid_services: dict | None,
    plan: dict | None,
    min_headroom_mib: int = 512,
) -> dict:
    """What the running stack holds, beside the plan.

    gpus_text / apps_text: output of NVIDIA_SMI_GPUS_QUERY / NVIDIA_SMI_APPS_QUERY;
    pid_services: {host pid: compose service} for every process of every service
    container (e.g. from `docker top <container> -eo pid`); plan: plan_stack's result.
    Returns {ok, cards: [{index, uuid, name, total_mib, used_mib, free_mib,
    headroom_ok}], services: [{service, gpu, planned_mib, measured_mib, pids}], others:
    [{pid, process_name, gpu, used_mib}], problems, warnings, table}. ok: every card
    keeps at least min_headroom_mib free.
    """
    cards = parse_gpu_uuids(gpus_text)
    apps = parse_compute_apps(apps_text)
    owners = {int(pid): str(svc) for pid, svc in (pid_services or {}).items()}
    by_uuid = {c["uuid"]: c for c in cards}
    problems: list[str] = []
    warnings: list[str] = []
    min_headroom = int(min_headroom_mib)

    for card in cards:
        total, used = card["memory_total_mib"], card["memory_used_mib"]
        card["free_mib"] = None if total is None or used is None else total - used
        card["headroom_ok"] = card["free_mib"] is not None and card["free_mib"] >= min_headroom
        if card["free_mib"] is None:
            problems.append(f"GPU {card['index']} ({card['name']}) reports no memory figures")
        elif not card["headroom_ok"]:
            problems.append(
                f"GPU {card['index']} ({card['name']}): {_gib(card['free_mib'])} GiB free, "
                f"below the {_gib(min_headroom)} GiB headroom (stack_vram_min_headroom_mib)"
            )

    measured: dict[str, dict] = {}
    others = []
    for app in apps:
        card = by_uuid.get(app["gpu_uuid"])
        gpu = card["index"] if card else None
        service = owners.get(app["pid"])
        if service is None:
            others.append(
                {
                    "pid": app["pid"],
                    "process_name": app["process_name"],
                    "gpu": gpu,
                    "used_mib": app["used_memory_mib"],
                }
            )
            continue
        entry = measured.setdefault(service, {"mib": 0, "pids": [], "gpus": set(), "na": False})
        entry["pids"].append(app["pid"])
        entry["gpus"].add(gpu)
        if app["used_memory_mib"] is None:
            entry["na"] = True
        else:
            entry["mib"] += app["used_memory_mib"]

    planned_rows = [r for r in (plan or {}).get("rows", []) if r.get("device") == "gpu"]
    names = [r["service"] for r in planned_rows] + sorted(
        s for s in measured if s not in {r["service"] for r in planned_rows}
    )
    services = []
    for name in names:
        row = next((r for r in planned_rows if r["service"] == name), None)
        got = measured.get(name)
        mib = None if got is None and not apps else (got["mib"] if got else 0)
        if got and got["na"] and not got["mib"]:
            mib = None
        entry = {
            "service": name,
            "gpu": row["gpu"] if row else (sorted(got["gpus"], key=str)[0] if got else None),
            "planned_mib": row["planned_mib"] if row else None,
            "measured_mib": mib,
            "pids": sorted(got["pids"]) if got else [],
        }
        services.append(entry)
        if row and mib is not None and mib > row["planned_mib"]:
            warnings.append(
                f"{name} holds {_gib(mib)} GiB, more than its planned {_gib(row['planned_mib'])}"
                " GiB: the plan under-counts it (raise its figure or lower its knobs)"
            )
        if row and apps and not got and name != "comfyui":
            warnings.append(
                f"{name} is planned on GPU {row['gpu']} but none of its processes holds VRAM "
                "(running on the CPU?)"
            )
    if not apps and any(c["memory_used_mib"] for c in cards):
        warnings.append(
            "nvidia-smi lists no compute processes although memory is in use (no permission "
            "or another PID namespace): per-service figures unavailable, card headroom checked"
        )
    if planned_rows and not cards:
        problems.append("the plan puts services on a GPU but nvidia-smi lists none")

    report = {
        "ok": not problems,
        "cards": cards,
        "services": services,
        "others": others,
        "problems": problems,
        "warnings": warnings,
    }
    report["table"] = format_report_table(report, min_headroom)
    return report


def format_report_table(report: dict, min_headroom_mib: int) -> str:
    def gib(value: int | None) -> str:
        return "-" if value is None else _gib(value)

    head = f"{'service':<10}{'gpu':<5}{'planned GiB':>12}{'measured GiB':>14}  pids"
    lines = [head, "-" * len(head)]
    for s in report["services"]:
        gpu = "-" if s["gpu"] is None else str(s["gpu"])
        pids = " ".join(str(p) for p in s["pids"]) or "-"
        lines.append(
            f"{s['service']:<10}{gpu:<5}{gib(s['planned_mib']):>12}"
            f"{gib(s['measured_mib']):>14}  {pids}"
        )
    for o in report["others"]:
        gpu = "-" if o["gpu"] is None else str(o["gpu"])
        lines.append(
            f"{'other':<10}{gpu:<5}{'-':>12}{gib(o['used_mib']):>14}  "
            f"{o['pid']} {o['process_name'] or '?'}"
        )
    lines.append("")
    head = f"{'gpu':<5}{'total GiB':>10}{'used GiB':>10}{'free GiB':>10}  headroom  name"
    lines += [head, "-" * len(head)]
    for c in report["cards"]:
        verdict = "ok" if c["headroom_ok"] else "LOW"
        lines.append(
            f"{c['index']:<5}{gib(c['memory_total_mib']):>10}{gib(c['memory_used_mib']):>10}"
            f"{gib(c['free_mib']):>10}  {verdict:<8}  {c['name']}"
        )
    lines.append(f"minimum headroom per card: {_gib(min_headroom_mib)} GiB")
    return "\n".join(lines)
