#!/usr/bin/env python3
"""GPU metrics from nvidia-smi for node exporter's textfile collector.

Runs from a systemd timer (roles/monitoring). Per card: memory used and total,
utilisation, temperature and power; per GPU process: its memory, with the compose
service it belongs to (found through the container id in the process's cgroup); and the
VRAM headroom threshold of this host's plan, so that one alert rule serves a fleet whose
hosts have different thresholds. Where nvidia-smi is missing or fails, it writes
`nvidia_smi_up 0` and exits 0: a CPU host is not an error.

The file is written to a temporary name beside the output and renamed, so node exporter
never reads half a file. Standard library only (runs with the host's python3).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:  # on a host: roles/monitoring copies the kit's nvidia-smi reader beside this script
    import nvidia_smi
except ImportError:  # in the repository: the same file, from the kit's collection
    from ansible_collections.kokoro.deploy.plugins.module_utils import nvidia_smi

MIB = 1024 * 1024
GPU_FIELDS = ("index", "uuid", "name", "memory.total", "memory.used", "utilization.gpu",
              "temperature.gpu", "power.draw")
APP_FIELDS = ("gpu_uuid", "pid", "process_name", "used_memory")
number = nvidia_smi.number

HELP = {
    "nvidia_smi_up": (
        "gauge",
        "1 when nvidia-smi answered on this host, 0 when it is missing or failed",
    ),
    "nvidia_gpu_memory_total_bytes": ("gauge", "Total memory of the GPU (nvidia-smi memory.total)"),
    "nvidia_gpu_memory_used_bytes": ("gauge", "Memory in use on the GPU (nvidia-smi memory.used)"),
    "nvidia_gpu_utilization_ratio": (
        "gauge",
        "GPU utilisation, 0 to 1 (nvidia-smi utilization.gpu)",
    ),
    "nvidia_gpu_temperature_celsius": (
        "gauge",
        "GPU core temperature (nvidia-smi temperature.gpu)",
    ),
    "nvidia_gpu_power_watts": ("gauge", "GPU power draw (nvidia-smi power.draw)"),
    "nvidia_gpu_process_memory_used_bytes": (
        "gauge",
        "GPU memory of one process, with the compose service it belongs to",
    ),
    "kokoro_deploy_vram_min_headroom_bytes": (
        "gauge",
        "Free VRAM each card must keep on this host (roles/stack stack_vram_min_headroom_mib)",
    ),
}


def parse_gpus(text: str, fields: tuple[str, ...] = GPU_FIELDS) -> list[dict]:
    """`--query-gpu=<fields> --format=csv,noheader,nounits` lines, one dict per card.
    `fields` is the query that printed them: GPU_FIELDS, or its first five alone
    (stack_smoke's query). The line's count of commas cannot tell the two apart, since
    the name may hold any number of them (nvidia_smi.records keeps them in it).
    Unreadable lines are left out."""
    gpus = []
    for row in nvidia_smi.records(text, fields, free="name", strict=False):
        total, used = (number(row[f]) for f in ("memory.total", "memory.used"))
        util, temp, power = (number(row.get(f, "")) for f in GPU_FIELDS[5:])
        gpus.append(
            {
                "index": row["index"],
                "uuid": row["uuid"],
                "name": row["name"],
                "memory_total_bytes": None if total is None else total * MIB,
                "memory_used_bytes": None if used is None else used * MIB,
                "utilization_ratio": None if util is None else util / 100.0,
                "temperature_celsius": temp,
                "power_watts": power,
            }
        )
    return gpus


def parse_apps(text: str) -> list[dict]:
    """`--query-compute-apps=<APP_FIELDS> --format=csv,noheader,nounits` lines."""
    apps = []
    for row in nvidia_smi.records(text, APP_FIELDS, free="process_name", strict=False):
        if not row["pid"].isdigit():
            continue  # "No running processes found" and the like
        used = number(row["used_memory"])
        apps.append(
            {
                "gpu_uuid": row["gpu_uuid"],
                "pid": row["pid"],
                "process": row["process_name"],
                "memory_used_bytes": None if used is None else used * MIB,
            }
        )
    return apps


def container_services(project: str) -> dict[str, str]:
    """Container id -> compose service, for the project's containers (empty without docker)."""
    if not project or shutil.which("docker") is None:
        return {}
    try:
        out = subprocess.run(
            [
                "docker",
                "ps",
                "--no-trunc",
                "--filter",
                f"label=com.docker.compose.project={project}",
                "--format",
                '{{.ID}} {{.Label "com.docker.compose.service"}}',
            ],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found = {}
    for line in out.splitlines():
        cid, _, service = line.partition(" ")
        if cid:
            found[cid] = service.strip()
    return found


def service_of(pid: str, containers: dict[str, str], proc: Path = Path("/proc")) -> str:
    """The compose service whose container holds this process, "" when none does."""
    try:
        cgroup = (proc / pid / "cgroup").read_text()
    except OSError:
        return ""
    for cid in re.findall(r"[0-9a-f]{64}", cgroup):
        if cid in containers:
            return containers[cid]
    return ""


def label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(
    up: bool,
    gpus: list[dict],
    apps: list[dict],
    services: dict[str, str],
    min_headroom_mib: int | None,
    device_metrics: bool = True,
) -> str:
    """The textfile collector's file: HELP/TYPE once per metric, samples grouped by it."""
    samples: dict[str, list[str]] = {name: [] for name in HELP}

    def add(name: str, labels: dict[str, str], value: float | None) -> None:
        if value is None:
            return
        text = ",".join(f'{k}="{label_value(str(v))}"' for k, v in labels.items())
        number_ = str(int(value)) if float(value).is_integer() else repr(float(value))
        samples[name].append(f"{name}{{{text}}} {number_}" if text else f"{name} {number_}")

    add("nvidia_smi_up", {}, 1 if up else 0)
    if min_headroom_mib is not None:
        add("kokoro_deploy_vram_min_headroom_bytes", {}, min_headroom_mib * MIB)
    index_of = {g["uuid"]: g["index"] for g in gpus}
    if device_metrics:
        for g in gpus:
            labels = {"gpu": g["index"], "uuid": g["uuid"], "name": g["name"]}
            add("nvidia_gpu_memory_total_bytes", labels, g["memory_total_bytes"])
            add("nvidia_gpu_memory_used_bytes", labels, g["memory_used_bytes"])
            add("nvidia_gpu_utilization_ratio", labels, g["utilization_ratio"])
            add("nvidia_gpu_temperature_celsius", labels, g["temperature_celsius"])
            add("nvidia_gpu_power_watts", labels, g["power_watts"])
    for a in apps:
        add(
            "nvidia_gpu_process_memory_used_bytes",
            {
                "gpu": index_of.get(a["gpu_uuid"], ""),
                "uuid": a["gpu_uuid"],
                "pid": a["pid"],
                "process": a["process"],
                "compose_service": services.get(a["pid"], ""),
            },
            a["memory_used_bytes"],
        )
    out = []
    for name, lines in samples.items():
        if lines:
            kind, text = HELP[name]
            out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", *lines]
    return "\n".join(out) + "\n"


def query(smi: str, what: str, fields: tuple[str, ...]) -> str:
    return subprocess.run(
        [smi, f"--query-{what}={','.join(fields)}", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


def collect(smi: str, project: str) -> tuple[bool, list[dict], list[dict], dict[str, str]]:
    exe = shutil.which(smi)
    if exe is None:
        return False, [], [], {}
    try:
        gpus = parse_gpus(query(exe, "gpu", GPU_FIELDS))
        apps = parse_apps(query(exe, "compute-apps", APP_FIELDS))
    except (OSError, subprocess.SubprocessError) as err:
        print(f"kokoro_gpu_exporter: nvidia-smi failed: {err}", file=sys.stderr)
        return False, [], [], {}
    containers = container_services(project)
    services = {a["pid"]: service_of(a["pid"], containers) for a in apps}
    return True, gpus, apps, services


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", type=Path, required=True, help="the .prom file to write")
    ap.add_argument("--nvidia-smi", default="nvidia-smi", help="nvidia-smi command or path")
    ap.add_argument("--project", default="kokoro", help="compose project of the services")
    ap.add_argument("--min-headroom-mib", type=int, default=None)
    ap.add_argument(
        "--no-device-metrics",
        action="store_true",
        help="per-process memory only (the card's metrics come from DCGM)",
    )
    args = ap.parse_args(argv)
    up, gpus, apps, services = collect(args.nvidia_smi, args.project)
    write_atomically(
        args.output,
        render(
            up,
            gpus,
            apps,
            services,
            args.min_headroom_mib,
            device_metrics=not args.no_device_metrics,
        ),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
