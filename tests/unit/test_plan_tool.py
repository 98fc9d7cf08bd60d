"""tools/plan.py: the preflight's VRAM and host-RAM plan for a card, with no host.

The tool is run as a user runs it (a subprocess of this interpreter) and its figures are
checked against the planner (plugins/module_utils/vram_plan.py) called here on
the same inputs, built from the role's defaults and the manifest; the preflight's own
task file (roles/stack/tasks/plan.yml) is run by ansible-playbook on this machine and
must make the very plan the tool prints.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import plan as tool  # tools/plan.py (tools/ is on pytest's pythonpath)
import pytest
import yaml
from ansible_collections.kokoro.deploy.plugins.module_utils import gpu_table, vram_plan, vram_sizing
from local_play import run_local_play

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "plan.py"


DEFAULTS = yaml.safe_load((REPO / "roles" / "stack" / "defaults" / "main.yml").read_text())
COMPANIONS = yaml.safe_load((REPO / "manifest.yml").read_text())["companions"]
RTX_5090 = ("NVIDIA GeForce RTX 5090", 32607)
RTX_4090 = ("NVIDIA GeForce RTX 4090", 24564)
ALL_THREE = "kokoro,llm,comfyui"


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TOOL), *args], capture_output=True, text=True, check=False
    )


def tool_plan(*args: str) -> tuple[int, dict]:
    proc = run_tool(*args, "--json")
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def card(name: str, mib: int, index: int = 0) -> dict:
    return {"index": index, "name": name, "memory_total_mib": mib, "memory_used_mib": 0}


def services(llm: bool, comfyui: bool, webui: bool = False, **over) -> dict:
    """What plan.yml hands the planner, written out here from the role's defaults."""
    d = {**DEFAULTS, **over}
    return {
        "vram_total_mib": d["stack_vram_total_mib"],
        "kokoro": {
            "enabled": True,
            "engine": d["stack_kokoro_engine"],
            "gpu": d["stack_kokoro_gpu"],
            "workers": d["stack_kokoro_workers"],
            "batch_size": d["stack_kokoro_batch_size"],
            "batch_tokens": d["stack_kokoro_batch_tokens"],
            "precision": d["stack_kokoro_precision"],
            "vram_mib": d["stack_kokoro_vram_mib"],
        },
        "llm": {
            "enabled": llm,
            "model": d["stack_llm_model"],
            "model_spec": d["stack_llm_model_spec"],
            "ctx_size": d["stack_llm_ctx_size"],
            "parallel": d["stack_llm_parallel"],
            "n_gpu_layers": d["stack_llm_n_gpu_layers"],
            "cache_type_k": d["stack_llm_cache_type_k"],
            "cache_type_v": d["stack_llm_cache_type_v"],
            "gpu": d["stack_llm_gpu"],
        },
        "comfyui": {
            "enabled": comfyui,
            "model": d["stack_comfyui_model"],
            "gpu": d["stack_comfyui_gpu"],
            "reserve_policy": d["stack_comfyui_reserve_policy"],
        },
        "webui": {"enabled": webui, "mem_limit": d["stack_webui_mem_limit"]},
    }


def planner(gpus: list[dict], svc: dict, **kwargs) -> dict:
    return vram_plan.plan_stack(gpus, svc, COMPANIONS,
                                reserve_mib=DEFAULTS["stack_vram_reserve_mib"], **kwargs)


def table(out: str, head: str) -> dict[str, list[str]]:
    """The printed table whose header starts with `head`: first word -> the line's words."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(head))
    body = []
    for line in lines[start + 2:]:
        if not line.strip():
            break
        body.append(line.split())
    return {words[0]: words for words in body}


# ------------------------------------------------------------ the planner's figures


def test_rtx_5090_with_every_service_prints_the_planners_table():
    proc = run_tool("--card", "RTX 5090", "--services", ALL_THREE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    want = planner([card(*RTX_5090)], services(llm=True, comfyui=True))
    assert want["fits"]
    out = proc.stdout
    assert want["table"] in out and want["ram_table"] in out
    # Row by row: the planned and free columns are the planner's MiB put through its
    # own GiB formatting, and the card's total is 32,607 MiB.
    vram, ram = table(out, "service"), table(out, "host RAM")
    for row in want["rows"]:
        assert vram[row["service"]][1:3] == ["gpu0", vram_sizing._gib(row["planned_mib"])]
        assert vram[row["service"]][3:5] == [vram_sizing._gib(32607),
                                             vram_sizing._gib(want["free_mib"])]
        assert ram[row["service"]][1] == vram_sizing._gib(row["ram_mib"])
    assert ram["system"][1] == vram_sizing._gib(want["ram_reserve_mib"])
    assert ram["total"][1] == vram_sizing._gib(want["ram_needed_mib"])
    assert out.rstrip().endswith("Fits.")


def test_tool_json_carries_the_planners_integers():
    code, got = tool_plan("--card", "RTX 5090", "--services", ALL_THREE)
    want = planner([card(*RTX_5090)], services(llm=True, comfyui=True))
    assert code == 0
    assert [(r["service"], r["planned_mib"], r["ram_mib"]) for r in got["rows"]] == [
        (r["service"], r["planned_mib"], r["ram_mib"]) for r in want["rows"]
    ]
    assert got["knobs"] == want["knobs"]
    assert got["free_mib"] == want["free_mib"] and got["ram_needed_mib"] == want["ram_needed_mib"]


@pytest.mark.parametrize("spelling", ["RTX 5090", "rtx5090", "GeForce RTX 5090", "5090",
                                      "5090 rtx", "10de:2b85", "0x2B85"])
def test_a_card_by_any_spelling_or_pci_id_is_the_same_card(spelling):
    _, got = tool_plan("--card", spelling, "--services", ALL_THREE)
    assert got["card"]["name"] == RTX_5090[0]
    assert got["card"]["total_mib"] == RTX_5090[1]


def test_a_vram_figure_plans_like_the_card_of_that_size():
    _, by_name = tool_plan("--card", "RTX 5090", "--services", ALL_THREE)
    _, by_mib = tool_plan("--vram-mib", "32607", "--services", ALL_THREE)
    assert by_mib["card"]["name"] == "card (--vram-mib)"
    assert by_mib["rows"] == by_name["rows"] and by_mib["knobs"] == by_name["knobs"]


def test_several_cards_are_gpu_0_1_in_order():
    code, got = tool_plan("--cards", "RTX 5090,RTX 4090", "--services", ALL_THREE,
                          "--set", "stack_comfyui_gpu=1")
    assert code == 0
    assert [(c["index"], c["total_mib"]) for c in got["cards"]] == [(0, 32607), (1, 24564)]
    want = planner([card(*RTX_5090), card(*RTX_4090, index=1)],
                   services(llm=True, comfyui=True, stack_comfyui_gpu=1))
    assert got["knobs"] == want["knobs"] and got["cards"] == want["cards"]


# ------------------------------------------------------------- one source of truth


def test_the_tool_hands_the_planner_what_plan_yml_builds_from_the_role_defaults():
    """plan.yml's services block is the tool's mapping: every variable it names is a
    default of the role and reaches the planner with that default's value."""
    block = tool.services_block()
    named = re.findall(r"stack_\w+", json.dumps(block))
    assert named and set(named) <= set(DEFAULTS)
    rendered = tool.render(block, DEFAULTS)
    assert rendered == services(llm=DEFAULTS["stack_llm_enabled"],
                                comfyui=DEFAULTS["stack_comfyui_enabled"],
                                webui=DEFAULTS["stack_webui_enabled"])


def test_a_set_setting_reaches_the_planner():
    _, got = tool_plan("--card", "RTX 5090", "--services", "kokoro,llm",
                       "--set", "stack_llm_ctx_size=16384", "--set", "stack_llm_cache_type_k=q8_0")
    llm = next(r for r in got["rows"] if r["service"] == "llm")
    assert got["knobs"]["llm"]["ctx_size"] == 16384
    kv_mib = vram_sizing.kv_cache_mib(36, 16384, 8, 128, "q8_0", "f16")
    assert llm["breakdown"]["kv_cache_mib"] == kv_mib


def test_an_inventory_hosts_settings_are_planned():
    code, got = tool_plan("--inventory", str(REPO / "inventory" / "fleet"),
                          "--host", "gpu-4090-01", "--card", "RTX 4090")
    assert code == 0
    # group_vars/rtx4090.yml: two workers, 16k context in q8_0, no ComfyUI
    assert [r["service"] for r in got["rows"]] == ["kokoro", "llm"]
    assert got["knobs"]["kokoro"]["workers"] == 2
    assert got["knobs"]["llm"]["ctx_size"] == 16384
    assert got["knobs"]["llm"]["cache_type_v"] == "q8_0"


@pytest.mark.parametrize(
    ("gpu_vars", "settings", "fits"),
    [
        # fits, with ComfyUI heavily offloaded: the warning and its fixes
        ({"gpu_facts_gpus": [card(*RTX_4090)]},
         {"stack_llm_enabled": True, "stack_comfyui_enabled": True}, True),
        # does not fit by 113 MiB: the problems and the card-size suggestion in MiB
        ({"gpu_facts_gpus": [card(*RTX_5090)]},
         {"stack_llm_enabled": True, "stack_comfyui_enabled": True,
          "stack_kokoro_workers": 2, "stack_llm_ctx_size": 40960}, False),
        # before a driver: the card by its PCI id; and this machine's RAM, from its facts
        ({"gpu_facts_gpus": [], "gpu_facts_pci_devices": [
            {"address": "0000:01:00.0", "device_id": "2b85", "compute_cap": "12.0"}]},
         {"stack_llm_enabled": True}, True),
    ],
    ids=["4090-warns", "5090-short", "5090-by-pci-id-host-ram"],
)
def test_the_preflight_play_makes_the_plan_the_tool_prints(
    tmp_path, monkeypatch, gpu_vars, settings, fits
):
    # Facts only where the play gathers them (not from ansible.cfg's cache of this machine).
    monkeypatch.setenv("ANSIBLE_CACHE_PLUGIN", "ansible.builtin.memory")
    gather = not gpu_vars["gpu_facts_gpus"]
    play = tmp_path / "play.yml"
    play.write_text(PLAY.replace("GATHER", str(gather).lower()))
    out = tmp_path / "plan.json"
    r = run_local_play(play, {**gpu_vars, **settings, "gpu_facts_nvidia_present": True,
                              "plan_out": str(out)})
    assert (r.returncode == 0) is fits, r.stdout + r.stderr
    played = json.loads(out.read_text())
    assert (played["ram"] is not None) is gather

    args = [f"--set={k}={json.dumps(v)}" for k, v in settings.items()]
    if played["ram"]:
        args += ["--host-ram-mib", str(played["ram"]["total_mib"])]
    if gpu_vars["gpu_facts_gpus"]:
        args += ["--card", gpu_vars["gpu_facts_gpus"][0]["name"]]
    else:
        args += ["--card", "10de:" + gpu_vars["gpu_facts_pci_devices"][0]["device_id"]]
    code, printed = tool_plan(*args)
    assert code == (0 if fits else 1)
    played.pop("error")
    if not gpu_vars["gpu_facts_gpus"]:
        # the play read the size from the PCI id table, the tool as nvidia-smi would give it
        assert played["card"].pop("source") == "PCI id table (2b85)"
        printed["card"].pop("source")
        for c in played["cards"] + printed["cards"]:
            c.pop("source")
    assert played == printed
    # what the play printed, the tool prints: warnings, problems, suggestions
    text = run_tool(*args).stdout
    for line in played["warnings"] + played["warning_suggestions"] + played["problems"] + (
        played["suggestions"]
    ):
        assert f"- {line}" in text
    assert ("Warnings:" in text) is bool(played["warnings"])


PLAY = """
- hosts: localhost
  gather_facts: GATHER
  gather_subset: [hardware]
  tasks:
    - name: Plan as site.yml's preflight does, and keep the plan whatever its verdict.
      block:
        - name: Run the role's plan.
          ansible.builtin.include_role:
            name: stack
            tasks_from: plan
      always:
        - name: Keep the plan.
          ansible.builtin.copy:
            content: "{{ stack_plan | to_json }}"
            dest: "{{ plan_out }}"
            mode: "0600"
"""


# ------------------------------------------------------------------ what it says


def test_an_unknown_card_is_refused_naming_the_known_ones_and_vram_mib():
    proc = run_tool("--card", "RTX 9999", "--services", ALL_THREE)
    assert proc.returncode == 2
    assert proc.stdout == ""
    err = proc.stderr
    assert "unknown card 'RTX 9999'" in err
    for name, mib in gpu_table.sized_cards():
        assert f"{name} ({mib} MiB)" in err
    assert "--vram-mib N" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--card", "A100"], "matches cards of different sizes"),
        (["--card", "2684"], "write a PCI id as 10de:2684 and a VRAM figure as --vram-mib 2684"),
        (["--card", "10de:2339"], "has no memory figure for it; give its memory instead"),
        (["--card", "10de:ffff"], "not in the kit's GPU table"),
        (["--services", "kokoro"], "which card?"),
        (["--cpu", "--services", "llm"], "kokoro is always planned"),
        (["--cpu", "--services", "kokoro,tts"], "unknown tts"),
        (["--cpu", "--set", "stack_llm_ctx=1"], "stack_llm_ctx: not a variable"),
        (["--cpu", "--set", "stack_llm_model=nope", "--services", "kokoro,llm"],
         "stack_llm_model: 'nope' is not a companion in manifest.yml"),
        (["--cpu", "--host", "x"], "--inventory and --host go together"),
    ],
)
def test_bad_input_says_what_is_wrong_and_how_to_fix_it(args, message):
    proc = run_tool(*args)
    assert proc.returncode == 2, proc.stdout
    assert message in proc.stderr


def test_a_named_card_that_matches_one_size_is_accepted():
    _, got = tool_plan("--card", "A100 80GB")
    assert got["card"]["total_mib"] == 81920


def test_the_ram_table_and_its_total_are_printed_and_checked():
    proc = run_tool("--card", "RTX 5090", "--services", ALL_THREE, "--host-ram-mib", "32050")
    assert proc.returncode == 1
    assert "total        33.47  the host has 31.30: short by 2.17 GiB" in proc.stdout
    assert ("- give the host at least 34275 MiB of RAM (as `free -m` counts it; it has 32050: "
            "2225 MiB short)") in proc.stdout


# ---------------------------------------------------- the suggestions and the warning


def card_sizes(hint: str) -> list[int]:
    """The card sizes a card-size suggestion names: the need, and its example card's."""
    sizes = re.findall(r"at least (\d+) MiB|e\.g\. .* \((\d+) MiB\)$", hint)
    return [int(a or b) for a, b in sizes]


def test_a_32gb_card_is_never_told_to_use_a_32gb_card():
    proc = run_tool("--card", "RTX 5090", "--services", ALL_THREE,
                    "--set", "stack_kokoro_workers=2", "--set", "stack_llm_ctx_size=40960")
    assert proc.returncode == 1
    (hint,) = [line for line in proc.stdout.splitlines() if "use a card with" in line]
    need, example = card_sizes(hint)
    assert need > 32607 and example > 32607, hint
    assert "NVIDIA GeForce RTX 5090" not in hint.split("e.g.")[1]


@pytest.mark.parametrize("total", [16376, 24564, 32607, 40960])
def test_no_card_size_suggestion_names_a_card_no_larger_than_the_one_at_hand(total):
    """Across contexts and worker counts that overflow the card by a little or a lot."""
    for workers in (1, 2, 4):
        for ctx in range(8192, 40961, 4096):
            svc = services(llm=True, comfyui=True, stack_kokoro_workers=workers,
                           stack_llm_ctx_size=ctx)
            result = planner([card("card", total)], svc)
            for hint in result["suggestions"] + result["warning_suggestions"]:
                if hint.startswith("use a card"):
                    assert all(size > total for size in card_sizes(hint)), hint


def test_comfyui_below_its_useful_minimum_warns_on_a_24gb_card_with_everything():
    proc = run_tool("--card", "RTX 4090", "--services", ALL_THREE)
    assert proc.returncode == 0, "it fits: the warning does not fail the plan"
    assert "Warnings:\n- comfyui: runs only with heavy offloading, below its useful minimum" in (
        proc.stdout
    )
    assert "What would clear them (each checked alone):" in proc.stdout
    assert "heavy offload: budget 6.45" in proc.stdout


@pytest.mark.parametrize("enabled", ["kokoro,comfyui", ALL_THREE])
def test_a_32gb_card_gives_comfyui_its_useful_minimum(enabled):
    proc = run_tool("--card", "RTX 5090", "--services", enabled)
    assert proc.returncode == 0
    assert "Warnings:" not in proc.stdout


# -------------------------------------------------------------------- the docs' table

SETS = {
    "Kokoro": (False, False),
    "Kokoro + LLM": (True, False),
    "Kokoro + ComfyUI": (False, True),
    "Kokoro + LLM + ComfyUI": (True, True),
}


@pytest.mark.parametrize("doc", ["docs/planning.md", "roles/stack/README.md", "README.md"])
def test_the_docs_host_ram_table_is_the_planners(doc):
    """Each row's MiB: the planner's ram_needed_mib for that set on a GPU host (a 5090, where
    every set fits) and on a CPU host."""
    rows = re.findall(r"^\| (Kokoro[^|]*?) \| ([^|]+) \| ([^|]+) \|$", (REPO / doc).read_text(),
                      re.MULTILINE)
    assert {name for name, _, _ in rows} == set(SETS), doc
    for name, gpu_cell, cpu_cell in rows:
        llm, comfyui = SETS[name]
        on_gpu = planner([card(*RTX_5090)], services(llm=llm, comfyui=comfyui))
        assert f"({on_gpu['ram_needed_mib']:,} MiB)" in gpu_cell, (doc, name)
        if comfyui:
            assert "needs a GPU" in cpu_cell
        else:
            on_cpu = planner([], services(llm=llm, comfyui=comfyui))
            assert f"({on_cpu['ram_needed_mib']:,} MiB)" in cpu_cell, (doc, name)


# ------------------------------------------------- Kokoro released for idleness


def test_kokoro_idle_released_gives_comfyui_kokoros_vram_at_night_and_leaves_the_day_plan():
    day_code, day = tool_plan("--card", "RTX 5090", "--services", ALL_THREE,
                              "--host-ram-mib", "64000")
    code, got = tool_plan("--card", "RTX 5090", "--services", ALL_THREE,
                          "--host-ram-mib", "64000", "--kokoro-idle-released")
    assert day_code == code == 0
    # the day plan is the plan without the option, figure for figure
    assert {k: v for k, v in got.items() if k not in ("night", "day_fits")} == day
    kokoro = next(r for r in day["rows"] if r["service"] == "kokoro")
    # the night is the planner's plan without Kokoro's VRAM, its process's RAM kept aside
    svc = services(llm=True, comfyui=True)
    svc["kokoro"]["enabled"] = False
    want = planner([card(*RTX_5090)], svc, host_ram_mib=64000 - kokoro["ram_mib"])
    night = got["night"]
    assert [(r["service"], r["planned_mib"]) for r in night["rows"]] == [
        (r["service"], r["planned_mib"]) for r in want["rows"]]
    assert "kokoro" not in [r["service"] for r in night["rows"]]
    assert night["kokoro_released"] == {"day_planned_mib": kokoro["planned_mib"], "gpu": 0,
                                        "ram_mib": kokoro["ram_mib"]}

    def comfyui(plan):
        return next(r["planned_mib"] for r in plan["rows"] if r["service"] == "comfyui")

    assert comfyui(night) > comfyui(day)  # the night budget gains what Kokoro frees
    assert got["fits"] and got["day_fits"] and night["fits"]

    out = run_tool("--card", "RTX 5090", "--services", ALL_THREE, "--host-ram-mib", "64000",
                   "--kokoro-idle-released").stdout
    assert day["table"] in out and want["table"] in out
    assert out.index(day["table"]) < out.index("Night: Kokoro's model released")


def test_kokoro_idle_released_is_refused_for_a_kokoro_on_the_cpu():
    proc = run_tool("--cpu", "--services", "kokoro", "--kokoro-idle-released")
    assert proc.returncode == 2
    assert "Kokoro runs on the CPU in this plan" in proc.stderr


# ------------------------------------------------------------------ Open WebUI


def test_open_webui_counts_its_memory_limit_in_host_ram_and_no_vram():
    """Open WebUI holds no VRAM; the host RAM it may take is its container's limit, so a
    host that fits the LLM alone can be short once Open WebUI is on."""
    code, got = tool_plan("--cpu", "--services", "kokoro,llm,webui", "--host-ram-mib", "9500")
    assert code == 1
    assert got["ram_rows"] == [{"service": "webui", "ram_mib": 2048}]  # the default 2g
    assert "webui" not in [r["service"] for r in got["rows"]]  # not a VRAM row
    assert "kokoro + llm + webui + 1.00 GiB for the system" in got["problems"][0]
    assert "disable Open WebUI (stack_webui_enabled: false)" in got["suggestions"]
    # the LLM only goes with Open WebUI, which cannot run without it
    assert ("disable the LLM (stack_llm_enabled: false) and Open WebUI "
            "(stack_webui_enabled: false)") in got["suggestions"]
    webui_line = next(line for line in got["ram_table"].splitlines() if line.startswith("webui"))
    assert webui_line.split()[1] == "2.00"
    code, alone = tool_plan("--cpu", "--services", "kokoro,llm", "--host-ram-mib", "9500")
    assert code == 0 and alone["ram_rows"] == []
    assert got["ram_needed_mib"] - alone["ram_needed_mib"] == 2048
    code, small = tool_plan("--cpu", "--services", "kokoro,llm,webui", "--host-ram-mib", "9500",
                            "--set", "stack_webui_mem_limit=512m")
    assert code == 0 and small["ram_rows"] == [{"service": "webui", "ram_mib": 512}]


@pytest.mark.parametrize(("limit", "mib"), [("2g", 2048), ("512m", 512), ("1.5G", 1536),
                                            ("1048576", 1), ("300k", 1), ("2gb", 2048)])
def test_a_docker_memory_size_reads_as_mib_rounded_up(limit, mib):
    assert vram_sizing._size_mib(limit, "stack_webui_mem_limit", 0) == mib


@pytest.mark.parametrize("limit", ["lots", "2x", "-1g", "0", "2bb"])
def test_a_bad_memory_size_names_the_variable_and_the_form(limit):
    with pytest.raises(ValueError, match=r"stack_webui_mem_limit: .* (memory size|more than 0)"):
        vram_sizing._size_mib(limit, "stack_webui_mem_limit", 0)
