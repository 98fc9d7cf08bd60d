"""The VRAM planner and report (plugins/module_utils/vram_*.py) over the
issue's three combinations (Kokoro alone; Kokoro + LLM; Kokoro + LLM + ComfyUI) on 32 GB
(RTX 5090), 24 GB (RTX 4090) and 16 GB (RTX 4080) cards, with the manifest's real
`companions:` section and the role's default knobs: LLM Qwen3-8B Q4_K_M, 8192 tokens of
context in total over 2 slots, f16 KV cache, every layer on the GPU; one Kokoro worker
(1,714 MiB measured unbatched; 2,143 planned for the batched default when it has the card
to itself); 1 GiB reserve; ComfyUI Qwen-Image fp8 with the restart-safe
--reserve-vram.

Expected numbers, in MiB: Kokoro 1714 beside the LLM; LLM 4797 weights (5.03 GB) + 1152 KV
(36 layers x 8192 x 2 x 8 heads x 128 x 2 B) + 768 overhead = 6717; ComfyUI's whole set
1024 context + 19455 diffusion model + 2048 working = 22527, minimum 4096 offloaded.
ComfyUI keeps Kokoro + LLM + reserve = 9455 MiB free (--reserve-vram 9.3 GiB = 9524 MiB)
beyond what the device already uses, so beside them it gets total - 8431 - 9524.
"""

from pathlib import Path

import pytest
import yaml
from ansible_collections.kokoro.deploy.plugins.module_utils import (
    vram_plan,
    vram_report,
    vram_sizing,
)
from role_filters import role_filters

REPO = Path(__file__).resolve().parents[2]

COMPANIONS = yaml.safe_load((REPO / "manifest.yml").read_text())["companions"]

# name, memory.total MiB as nvidia-smi prints it
CARDS = {
    "32GB": ("NVIDIA GeForce RTX 5090", 32607),
    "24GB": ("NVIDIA GeForce RTX 4090", 24564),
    "16GB": ("NVIDIA GeForce RTX 4080", 16376),
}


def gpus(card: str, used: int = 0) -> list[dict]:
    name, total = CARDS[card]
    return [{"index": 0, "name": name, "memory_total_mib": total, "memory_used_mib": used}]


def services(*enabled: str, **over) -> dict:
    """The role's services dict with its defaults; `enabled` names the optional services
    that are on ("llm", "comfyui"); keyword arguments override keys per service."""
    out = {
        "vram_total_mib": 0,
        "kokoro": {"enabled": True, "engine": "auto", "gpu": 0, "workers": 1, "vram_mib": 0},
        "llm": {
            "enabled": "llm" in enabled,
            "model": "qwen3-8b-q4_k_m",
            "model_spec": {},
            "ctx_size": 8192,
            "parallel": 2,
            "n_gpu_layers": -1,
            "cache_type_k": "f16",
            "cache_type_v": "f16",
            "gpu": 0,
        },
        "comfyui": {"enabled": "comfyui" in enabled, "model": "qwen-image-fp8", "gpu": 0},
    }
    for key, values in over.items():
        out[key] = {**out[key], **values} if isinstance(values, dict) else values
    return out


def plan(card: str | None, svc: dict, **kwargs) -> dict:
    return vram_plan.plan_stack(gpus(card) if card else [], svc, COMPANIONS, **kwargs)


# --- the 3 x 3 matrix ----------------------------------------------------------------
# (card, combination) -> (fits, ComfyUI mode, --reserve-vram GiB, free MiB after plan)
MATRIX = {
    ("32GB", "kokoro"): (True, None, None, 29440),
    ("32GB", "kokoro+llm"): (True, None, None, 23152),
    ("32GB", "kokoro+llm+comfyui"): (True, "offload", 9.3, 0),
    ("24GB", "kokoro"): (True, None, None, 21397),
    ("24GB", "kokoro+llm"): (True, None, None, 15109),
    ("24GB", "kokoro+llm+comfyui"): (True, "offload", 9.3, 0),
    ("16GB", "kokoro"): (True, None, None, 13209),
    ("16GB", "kokoro+llm"): (True, None, None, 6921),
    ("16GB", "kokoro+llm+comfyui"): (False, None, 9.3, -5675),
}
COMBOS = {
    "kokoro": (),
    "kokoro+llm": ("llm",),
    "kokoro+llm+comfyui": ("llm", "comfyui"),
}


@pytest.mark.parametrize(("card", "combo"), list(MATRIX), ids=[f"{c}-{m}" for c, m in MATRIX])
def test_plan_matrix_fits_mode_reserve_and_free(card, combo):
    fits, mode, reserve_gib, free = MATRIX[(card, combo)]
    result = plan(card, services(*COMBOS[combo]))
    assert result["fits"] is fits, result["table"]
    assert result["device"] == "gpu"
    assert result["free_mib"] == free
    assert result["card"]["total_mib"] == CARDS[card][1]
    assert [r["service"] for r in result["rows"]] == combo.split("+")
    if "comfyui" in combo:
        knobs = result["knobs"]["comfyui"]
        assert knobs["mode"] == mode
        assert knobs["reserve_vram_gib"] == reserve_gib
        want_args = f"--reserve-vram {reserve_gib:.1f}" + (
            " --lowvram" if mode == "offload" else ""
        )
        assert knobs["args"] == want_args
    else:
        assert "comfyui" not in result["knobs"]
    assert result["suggestions"] == ([] if fits else result["suggestions"])
    assert bool(result["problems"]) is not fits


def test_comfyui_budget_beside_kokoro_and_llm_per_card():
    # budget = total - (kokoro + llm) - --reserve-vram (9.3 GiB = 9524 MiB): ComfyUI
    # counts the others' live use itself and keeps the reserve free on top of it.
    budgets = {"32GB": 14652, "24GB": 6609, "16GB": -1579}
    for card, budget in budgets.items():
        result = plan(card, services("llm", "comfyui"))
        row = next(r for r in result["rows"] if r["service"] == "comfyui")
        assert row["breakdown"]["budget_mib"] == budget
        assert row["breakdown"]["full_set_mib"] == 1024 + 19455 + 2048
        assert result["keep_free"]["planned_mib"] == 9524 - 1024


# What a card too small for all three services is offered after the LLM's layers, in
# this order (each checked alone).
RESIDENT_OR_DISABLE = [
    "set stack_comfyui_reserve_policy to resident (ComfyUI then keeps free only the "
    "reserve and Kokoro's cache growth, not the other services' whole share: a job run "
    "while Kokoro or the LLM restarts can take their memory)",
    "disable ComfyUI (stack_comfyui_enabled: false)",
    "disable the LLM (stack_llm_enabled: false)",
]


def test_16gb_all_three_names_the_knobs_that_make_it_fit():
    result = plan("16GB", services("llm", "comfyui"))
    assert not result["fits"]
    assert any("comfyui: needs at least 4.00 GiB" in p for p in result["problems"])
    assert result["suggestions"] == [
        "set stack_llm_n_gpu_layers to 19 (of 36; the other layers and their KV cache run "
        "on the CPU, slower)",
        *RESIDENT_OR_DISABLE,
        "use a card with at least 22051 MiB of VRAM for GPU 0 (this NVIDIA GeForce RTX 4080 "
        "has 16376: 5675 MiB short), e.g. NVIDIA L4 (23034 MiB)",
    ]


def test_each_suggestion_alone_makes_the_16gb_plan_fit():
    base = services("llm", "comfyui")
    variants = [
        services("llm", "comfyui", llm={"n_gpu_layers": 19}),
        services("llm", "comfyui", comfyui={"reserve_policy": "resident"}),
        services("llm"),
        services("comfyui"),
    ]
    assert not plan("16GB", base)["fits"]
    for svc in variants:
        assert plan("16GB", svc)["fits"], plan("16GB", svc)["table"]
    assert not plan("16GB", services("llm", "comfyui", llm={"n_gpu_layers": 20}))["fits"]
    big = [{"index": 0, "name": "24 GiB card", "memory_total_mib": 24 * 1024}]
    assert vram_plan.plan_stack(big, base, COMPANIONS)["fits"]


def test_resident_policy_reserves_only_reserve_and_kokoro_growth():
    result = plan("16GB", services("llm", "comfyui", comfyui={"reserve_policy": "resident"}))
    knobs = result["knobs"]["comfyui"]
    # 1024 reserve + (1714 - 838 CUDA context) = 1900 MiB -> 1.9 GiB (1946 MiB)
    assert knobs["args"] == "--reserve-vram 1.9 --lowvram"
    assert knobs["budget_mib"] == 16376 - 8431 - 1946
    assert knobs["mode"] == "offload"


def test_comfyui_runs_whole_in_normal_mode_on_an_h100():
    h100 = [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559}]
    result = vram_plan.plan_stack(h100, services("llm", "comfyui"), COMPANIONS)
    assert result["fits"]
    assert result["knobs"]["comfyui"] == {
        "mode": "normal",
        "args": "--reserve-vram 9.3",
        "reserve_vram_gib": 9.3,
        "budget_mib": 81559 - 8431 - 9524,
        "reserve_policy": "restart_safe",
    }
    row = next(r for r in result["rows"] if r["service"] == "comfyui")
    assert row["planned_mib"] == 22527
    assert result["free_mib"] == 81559 - 8431 - 9524 - 22527


def test_comfyui_alone_on_a_second_card_reserves_only_the_reserve():
    two = [
        {"index": 0, "name": "NVIDIA GeForce RTX 4090", "memory_total_mib": 24564},
        {"index": 1, "name": "NVIDIA GeForce RTX 4090", "memory_total_mib": 24564},
    ]
    result = vram_plan.plan_stack(two, services("llm", "comfyui", comfyui={"gpu": 1}), COMPANIONS)
    assert result["fits"]
    assert result["knobs"]["comfyui"]["args"] == "--reserve-vram 1.0"
    assert result["knobs"]["comfyui"]["mode"] == "normal"
    assert [c["free_mib"] for c in result["cards"]] == [15109, 24564 - 1024 - 22527]


def test_moving_comfyui_to_a_free_card_is_suggested():
    two = [
        {"index": 0, "name": "NVIDIA GeForce RTX 4080", "memory_total_mib": 16376},
        {"index": 1, "name": "NVIDIA GeForce RTX 4080", "memory_total_mib": 16376},
    ]
    result = vram_plan.plan_stack(two, services("llm", "comfyui"), COMPANIONS)
    assert not result["fits"]
    assert "set stack_comfyui_gpu to 1 (move comfyui to GPU 1)" in result["suggestions"]


# --- ComfyUI's useful minimum -------------------------------------------------------
# Half of Qwen-Image's 19,455 MiB diffusion model resident + 1,024 context + 2,048 working
# memory = 12,800 MiB. Below it the plan still fits (ComfyUI runs) but warns.
USEFUL_MIB = 1024 + 2048 + 19455 // 2 + 1


def comfy_row(result: dict) -> dict:
    return next(r for r in result["rows"] if r["service"] == "comfyui")


def test_comfyui_useful_minimum_is_half_its_diffusion_model_resident():
    row = comfy_row(plan("32GB", services("llm", "comfyui")))
    assert row["breakdown"]["useful_mib"] == USEFUL_MIB == 12800
    assert vram_sizing.COMFYUI_USEFUL_RESIDENT_SHARE == 0.5


def test_24gb_with_kokoro_and_llm_warns_that_comfyui_is_heavily_offloaded():
    result = plan("24GB", services("llm", "comfyui"))
    assert result["fits"], result["problems"]
    row = comfy_row(result)
    assert row["heavy_offload"] and row["breakdown"]["budget_mib"] == 6609 < USEFUL_MIB
    (warning,) = result["warnings"]
    # 19,455 - (6,609 - 3,072) = 15,918 MiB = 15.54 GiB copied on every step
    assert warning.startswith("comfyui: runs only with heavy offloading, below its useful minimum")
    assert "gets 6.45 GiB, less than the 12.50 GiB" in warning
    assert "the other 15.54 GiB cross PCIe on every sampling step" in warning
    assert "heavy offload: budget 6.45" in result["table"]
    assert result["suggestions"] == []
    assert "disable ComfyUI (stack_comfyui_enabled: false)" in result["warning_suggestions"]


@pytest.mark.parametrize(
    ("card", "enabled"),
    [("32GB", ("comfyui",)), ("32GB", ("llm", "comfyui"))],
    ids=["32GB-comfyui", "32GB-all-three"],
)
def test_32gb_gives_comfyui_its_useful_minimum_without_a_warning(card, enabled):
    result = plan(card, services(*enabled))
    assert result["fits"]
    assert not comfy_row(result)["heavy_offload"]
    assert comfy_row(result)["breakdown"]["budget_mib"] >= USEFUL_MIB
    assert result["warnings"] == [] and result["warning_suggestions"] == []


def test_each_warning_suggestion_alone_gives_comfyui_its_useful_minimum():
    result = plan("24GB", services("llm", "comfyui"))
    assert result["warning_suggestions"] == [
        "set stack_llm_n_gpu_layers to 17 (of 36; the other layers and their KV cache run "
        "on the CPU, slower)",
        *RESIDENT_OR_DISABLE,
        "use a card with at least 30755 MiB of VRAM for GPU 0 (this NVIDIA GeForce RTX 4090 "
        "has 24564: 6191 MiB short), e.g. NVIDIA GeForce RTX 5090 (32607 MiB)",
    ]
    for svc in (
        services("llm", "comfyui", llm={"n_gpu_layers": 17}),
        services("llm", "comfyui", comfyui={"reserve_policy": "resident"}),
        services("comfyui"),
    ):
        fixed = plan("24GB", svc)
        assert fixed["fits"] and not fixed["warnings"], fixed["table"]
    assert plan("24GB", services("llm", "comfyui", llm={"n_gpu_layers": 18}))["warnings"]
    bigger = [{"index": 0, "name": "card", "memory_total_mib": 30755}]
    assert not vram_plan.plan_stack(bigger, services("llm", "comfyui"), COMPANIONS)["warnings"]
    smaller = [{"index": 0, "name": "card", "memory_total_mib": 30754}]
    assert vram_plan.plan_stack(smaller, services("llm", "comfyui"), COMPANIONS)["warnings"]


def test_a_32gb_card_short_of_vram_is_told_the_mib_missing_not_a_rounded_size():
    # Two workers and the LLM's whole 40,960-token context leave ComfyUI 3,983 MiB, under
    # its 4,096 minimum: 113 MiB short. Rounded up to whole GiB that need is "32 GiB",
    # which a 32 GB card (32,607 MiB = 31.84 GiB) would already be.
    svc = services("llm", "comfyui", kokoro={"workers": 2}, llm={"ctx_size": 40960})
    result = plan("32GB", svc)
    assert not result["fits"]
    assert result["suggestions"][-1] == (
        "use a card with at least 32720 MiB of VRAM for GPU 0 (this NVIDIA GeForce RTX 5090 "
        "has 32607: 113 MiB short), e.g. NVIDIA A100-PCIE-40GB (40960 MiB)"
    )
    assert not any(">= 32 GiB" in s for s in result["suggestions"])
    just = [{"index": 0, "name": "card", "memory_total_mib": 32720}]
    assert vram_plan.plan_stack(just, svc, COMPANIONS)["fits"]


def test_a_need_beyond_every_known_card_says_so():
    svc = services(kokoro={"vram_mib": 100_000})
    (card_hint,) = [s for s in plan("32GB", svc)["suggestions"] if s.startswith("use a card")]
    assert card_hint.endswith("no card in the planner's table has that much")


# --- LLM arithmetic -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("ctx", "k", "v", "mib"),
    [
        (8192, "f16", "f16", 1152),  # 36 x 8192 x 2 x 1024 x 2 B
        (8192, "q8_0", "q8_0", 612),  # 1024 / 32 x 34 B per row
        (8192, "q4_0", "q4_0", 324),  # 1024 / 32 x 18 B
        (8192, "q8_0", "f16", 882),  # K and V sized separately
        (8192, "f32", "f32", 2304),
        (8192, "iq4_nl", "q5_1", 378),  # 32 x (18 + 24) B per row x 36 x 8192
        (4096, "f16", "f16", 576),
        (40960, "f16", "f16", 5760),  # Qwen3-8B's trained context
    ],
)
def test_kv_cache_of_qwen3_8b(ctx, k, v, mib):
    model = COMPANIONS["llm"]["qwen3-8b-q4_k_m"]
    args = (model["layers"], ctx, model["kv_heads"], model["head_dim"], k, v)
    assert vram_sizing.kv_cache_mib(*args) == mib


def test_kv_cache_is_144_kib_per_token_in_f16():
    assert vram_sizing.kv_cache_bytes(36, 1, 8, 128) == 144 * 1024


def test_llm_row_breakdown_with_every_layer_on_the_gpu():
    result = plan("32GB", services("llm"))
    row = next(r for r in result["rows"] if r["service"] == "llm")
    assert row["planned_mib"] == 6717
    assert row["breakdown"] == {
        "weights_mib": 4797,
        "kv_cache_mib": 1152,
        "overhead_mib": 768,
        "layers_on_gpu": 36,
        "layers": 36,
        "kv_cache_total_mib": 1152,
        "growth_mib": 0,
    }
    assert result["knobs"]["llm"] == {
        "device": "cuda",
        "gpu": 0,
        "n_gpu_layers": 999,
        "ctx_size": 8192,
        "parallel": 2,
        "ctx_per_slot": 4096,
        "cache_type_k": "f16",
        "cache_type_v": "f16",
        "flash_attn": "auto",
    }


def test_partial_offload_puts_weights_and_kv_of_the_offloaded_layers_on_the_gpu():
    result = plan("16GB", services("llm", llm={"n_gpu_layers": 18}))
    row = next(r for r in result["rows"] if r["service"] == "llm")
    assert row["breakdown"]["weights_mib"] == 2399  # half of 5.03 GB
    assert row["breakdown"]["kv_cache_mib"] == 576
    assert row["ram_mib"] == (4797 - 2399) + (1152 - 576) + 512
    assert result["knobs"]["llm"]["n_gpu_layers"] == 18


def test_quantized_v_cache_turns_flash_attention_on():
    result = plan("16GB", services("llm", llm={"cache_type_k": "q8_0", "cache_type_v": "q8_0"}))
    assert result["knobs"]["llm"]["flash_attn"] == "on"
    only_k = plan("16GB", services("llm", llm={"cache_type_k": "q8_0"}))
    assert only_k["knobs"]["llm"]["flash_attn"] == "auto"


def test_ctx_size_zero_takes_the_trained_context():
    result = plan("32GB", services("llm", llm={"ctx_size": 0, "parallel": 1}))
    assert result["knobs"]["llm"]["ctx_size"] == 40960
    row = next(r for r in result["rows"] if r["service"] == "llm")
    assert row["breakdown"]["kv_cache_mib"] == 5760


def test_too_many_slots_for_the_context_is_a_warning():
    result = plan("32GB", services("llm", llm={"parallel": 32}))
    assert result["fits"]
    assert any("256 tokens per slot" in w for w in result["warnings"])


def llm_suggestions(result: dict) -> list[str]:
    """The suggestions of a plan the LLM makes too big, in their order: its KV cache at
    q8_0 first, a smaller context next, disabling the LLM among the rest."""
    assert not result["fits"]
    sugg = result["suggestions"]
    assert sugg[0].startswith("set stack_llm_cache_type_k and stack_llm_cache_type_v to q8_0")
    assert sugg[1].startswith("lower stack_llm_ctx_size to ")
    assert "disable the LLM (stack_llm_enabled: false)" in sugg
    return sugg


def test_llm_that_does_not_fit_gets_kv_ctx_and_layer_suggestions():
    # A 12 GiB card with a 32k context: 1024 + 1714 + 4797 + 4608 KV + 768 = 12911 MiB.
    card = [{"index": 0, "name": "12 GiB card", "memory_total_mib": 12288}]
    result = vram_plan.plan_stack(card, services("llm", llm={"ctx_size": 32768}), COMPANIONS)
    sugg = llm_suggestions(result)
    assert sugg[0].startswith(
        "set stack_llm_cache_type_k and stack_llm_cache_type_v to q8_0 (KV cache 4.50 -> 2.39"
    )
    # 12288 - 1024 - 1714 - 4797 - 768 = 3985 MiB of KV = 28337 tokens -> 28160
    assert (
        sugg[1] == "lower stack_llm_ctx_size to 28160 (now 32768; 14080 tokens per slot "
        "with stack_llm_parallel 2)"
    )
    assert sugg[2].startswith("set stack_llm_n_gpu_layers to ")
    assert sugg[-1] == (
        "use a card with at least 12911 MiB of VRAM for GPU 0 (this 12 GiB card has 12288: "
        "623 MiB short), e.g. Tesla T4 (15360 MiB)"
    )


def test_kokoro_workers_scale_its_vram_from_the_measurements():
    assert vram_sizing.kokoro_gpu_vram_mib(1) == 1714
    assert vram_sizing.kokoro_gpu_vram_mib(2) == 1714 + 737
    assert vram_sizing.kokoro_gpu_vram_mib(4) == 1714 + 3 * 737  # 3,925: 4,802 before the fold
    result = plan("32GB", services(kokoro={"workers": 4, "batch_size": 1}))
    assert result["rows"][0]["planned_mib"] == 3925
    explicit = plan("32GB", services(kokoro={"vram_mib": 2600}))
    assert explicit["rows"][0]["planned_mib"] == 2600


def test_batched_passes_add_their_measured_share_per_worker_and_token():
    # 1.81 MiB per padded token in place of the unbatched pass's 498 MiB, per worker
    assert vram_sizing.kokoro_gpu_vram_mib(1, 512) == 1714 + (927 - 498)
    assert vram_sizing.kokoro_gpu_vram_mib(2, 1024) == 1714 + 737 + 2 * (1854 - 498)
    assert vram_sizing.kokoro_gpu_vram_mib(1, 128) == 1714  # a small batch fits in the pass's share
    # Measured on an H100, the server's code with weight norm folded
    # (docs/benchmarks/gpu-server-vram-2026-11-27): the plan is at or above each point.
    for workers, tokens, measured in ((1, 0, 1714), (1, 512, 2136), (2, 1024, 4918)):
        assert measured <= vram_sizing.kokoro_gpu_vram_mib(workers, tokens) <= measured * 1.05


def test_kokoro_batches_by_default_only_where_it_has_the_card_to_itself():
    alone = plan("32GB", services(kokoro={"workers": 2, "batch_tokens": 1024}))
    assert alone["knobs"]["kokoro"]["batch_size"] == 0  # the server's default: batched
    assert alone["rows"][0]["planned_mib"] == vram_sizing.kokoro_gpu_vram_mib(2, 1024)
    assert "batches of 1024 tokens" in alone["table"]
    shared = plan("32GB", services("llm"))
    assert shared["knobs"]["kokoro"]["batch_size"] == 1
    assert shared["rows"][0]["planned_mib"] == 1714
    forced = plan("32GB", services("llm", kokoro={"batch_size": 16}))
    assert forced["rows"][0]["planned_mib"] == vram_sizing.kokoro_gpu_vram_mib(1, 512)
    cpu = plan("32GB", services(kokoro={"device": "cpu"}))
    assert cpu["rows"][0]["planned_mib"] == 0


def test_kokoro_precision_reaches_only_the_torch_engine_on_a_gpu():
    assert plan("32GB", services())["knobs"]["kokoro"]["precision"] == "fp32"
    gpu = plan("32GB", services(kokoro={"precision": "fp16"}))
    assert gpu["knobs"]["kokoro"]["precision"] == "fp16"
    # the plan counts fp32's VRAM, an upper bound
    assert gpu["rows"][0]["planned_mib"] == vram_sizing.kokoro_gpu_vram_mib(1, 512)
    for where in ({"device": "cpu"}, {"engine": "onnx"}):
        other = plan("32GB", services(kokoro={"precision": "bf16", **where}))
        assert other["knobs"]["kokoro"]["precision"] == "fp32", where
    with pytest.raises(ValueError, match="stack_kokoro_precision: 'half' is not one of fp32"):
        plan("32GB", services(kokoro={"precision": "half"}))


@pytest.mark.parametrize("kokoro", [{"batch_size": -1}, {"batch_size": "many"},
                                    {"batch_tokens": -512}])
def test_bad_batch_settings_name_both_variables(kokoro):
    with pytest.raises(ValueError, match="stack_kokoro_batch_size"):
        plan("32GB", services(kokoro=kokoro))


def test_a_kokoro_too_big_for_its_card_is_told_to_stop_batching():
    result = plan("32GB", services(kokoro={"workers": 8, "batch_tokens": 4096}))
    assert not result["fits"]
    assert any(s.startswith("set stack_kokoro_batch_size to 1") for s in result["suggestions"])


# --- CPU-only hosts -------------------------------------------------------------------


def test_cpu_host_runs_every_service_on_the_cpu():
    result = plan(None, services("llm"), host_ram_mib=16000)
    assert result["fits"]
    assert result["device"] == "cpu"
    assert result["card"] is None
    assert [(r["service"], r["device"], r["planned_mib"]) for r in result["rows"]] == [
        ("kokoro", "cpu", 0),
        ("llm", "cpu", 0),
    ]
    assert result["knobs"]["kokoro"]["engine"] == "onnx"
    assert result["knobs"]["llm"]["n_gpu_layers"] == 0
    # Kokoro 1200 + LLM 4797 weights + 1152 KV + 512
    assert result["ram"]["planned_mib"] == 1200 + 6461
    assert "host RAM" in result["table"]


def test_cpu_host_with_comfyui_does_not_fit_and_says_why():
    result = plan(None, services("llm", "comfyui"))
    assert not result["fits"]
    assert any("comfyui: needs an NVIDIA GPU" in p for p in result["problems"])
    assert "disable ComfyUI (stack_comfyui_enabled: false)" in result["suggestions"]
    assert "run ComfyUI on a host with an NVIDIA GPU" in result["suggestions"]
    assert result["knobs"]["comfyui"]["args"] == ""


def test_cpu_host_short_of_ram_is_told_which_knobs_fit():
    result = plan(None, services("llm"), host_ram_mib=8192)
    assert any(p.startswith("host RAM:") for p in result["problems"])
    sugg = llm_suggestions(result)
    assert sugg[1].startswith("lower stack_llm_ctx_size to 4608 ")
    assert sugg[-1] == (
        "give the host at least 8685 MiB of RAM (as `free -m` counts it; it has 8192: "
        "493 MiB short)"
    )


def test_cpu_host_with_comfyui_is_not_told_to_add_ram():
    # More RAM would not make ComfyUI run on a CPU: only the knobs that fit are named.
    result = plan(None, services("llm", "comfyui"), host_ram_mib=16000)
    assert any(p.startswith("host RAM:") for p in result["problems"])
    assert result["suggestions"] == [
        "disable ComfyUI (stack_comfyui_enabled: false)",
        "run ComfyUI on a host with an NVIDIA GPU",
    ]


def test_gpu_host_ram_counts_comfyui_models_held_in_ram():
    # 32 GiB of RAM (31.30 GiB usable) beside a 5090: ComfyUI keeps Qwen-Image's 30.03 GB
    # of files in RAM (28,643 MiB) + 2 GiB, Kokoro 2 GiB, llama-server 0.5 GiB, 1 GiB system.
    result = plan("32GB", services("llm", "comfyui"), host_ram_mib=32050)
    assert result["ram"]["planned_mib"] == 2048 + 512 + 28643 + 2048
    assert not result["fits"]
    assert result["suggestions"] == [
        "disable ComfyUI (stack_comfyui_enabled: false)",
        "give the host at least 34275 MiB of RAM (as `free -m` counts it; it has 32050: "
        "2225 MiB short)",
    ]
    assert plan("32GB", services("llm", "comfyui"), host_ram_mib=64000)["fits"]


@pytest.mark.parametrize(
    ("card", "enabled", "needed"),
    [
        # GPU host: Kokoro's torch process 2,048, llama-server 512 (its weights and KV
        # cache on the card), ComfyUI every Qwen-Image file (28,643) + 2,048; 1,024 system.
        ("32GB", (), 2048 + 1024),
        ("32GB", ("llm",), 2048 + 512 + 1024),
        ("32GB", ("comfyui",), 2048 + 28643 + 2048 + 1024),
        ("32GB", ("llm", "comfyui"), 2048 + 512 + 28643 + 2048 + 1024),
        # CPU host: the onnx server 1,200; the LLM's weights 4,797 + KV 1,152 + 512.
        (None, (), 1200 + 1024),
        (None, ("llm",), 1200 + 4797 + 1152 + 512 + 1024),
    ],
)
def test_host_ram_needed_per_service_set(card, enabled, needed):
    result = plan(card, services(*enabled))
    assert result["ram"] is None  # the host's RAM is not known here
    assert result["ram_needed_mib"] == needed
    lines = result["ram_table"].splitlines()
    assert lines[-1].split()[:2] == ["total", vram_sizing._gib(needed)]
    assert lines[-1].endswith("host RAM not given")
    rows = {line.split()[0]: line.split()[1] for line in lines[2:-1]}
    assert rows == {
        **{r["service"]: vram_sizing._gib(r["ram_mib"]) for r in result["rows"]},
        "system": vram_sizing._gib(1024),
    }


def test_ram_table_compares_with_the_hosts_ram_when_known():
    short = plan("32GB", services("llm", "comfyui"), host_ram_mib=32050)["ram_table"]
    assert short.splitlines()[-1].endswith("the host has 31.30: short by 2.17 GiB")
    room = plan("32GB", services("llm", "comfyui"), host_ram_mib=64000)["ram_table"]
    assert room.splitlines()[-1].endswith("the host has 62.50: fits")


def test_device_cuda_without_a_gpu_is_an_error():
    with pytest.raises(ValueError, match="stack_llm_device: cuda, but the plan has no GPU"):
        plan(None, services("llm", llm={"device": "cuda"}))


def test_device_cpu_keeps_a_service_off_the_gpu():
    result = plan("32GB", services("llm", llm={"device": "cpu"}))
    llm = next(r for r in result["rows"] if r["service"] == "llm")
    assert (llm["device"], llm["planned_mib"]) == ("cpu", 0)
    assert result["knobs"]["llm"]["n_gpu_layers"] == 0
    assert result["free_mib"] == 29440  # Kokoro has the card to itself: batched


# --- unknown total VRAM ---------------------------------------------------------------


def test_unknown_total_vram_asks_for_stack_vram_total_mib():
    card = [{"index": 0, "name": "NVIDIA GB10", "memory_total_mib": None}]
    with pytest.raises(ValueError, match="set stack_vram_total_mib"):
        vram_plan.plan_stack(card, services(), COMPANIONS)
    result = vram_plan.plan_stack(card, services(vram_total_mib=24564), COMPANIONS)
    assert result["card"]["total_mib"] == 24564
    assert result["card"]["source"] == "stack_vram_total_mib"


def test_total_vram_from_the_pci_id_before_a_driver_exists():
    pci = [{"address": "0000:01:00.0", "device_id": "2b85", "compute_cap": "12.0"}]
    result = vram_plan.plan_stack(pci, services("llm", "comfyui"), COMPANIONS)
    assert result["card"] == {
        "index": 0,
        "name": "NVIDIA GeForce RTX 5090",
        "total_mib": 32607,
        "reserve_mib": 1024,
        "source": "PCI id table (2b85)",
    }
    assert result["knobs"]["comfyui"]["mode"] == "offload"
    unknown = [{"address": "0000:01:00.0", "device_id": "abcd", "compute_cap": None}]
    with pytest.raises(ValueError, match="10de:abcd"):
        vram_plan.plan_stack(unknown, services(), COMPANIONS)


def test_nvidia_smi_figure_wins_over_the_override():
    result = vram_plan.plan_stack(gpus("24GB"), services(vram_total_mib=8000), COMPANIONS)
    assert result["card"]["total_mib"] == 24564


# --- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("svc", "message"),
    [
        (services("llm", llm={"cache_type_k": "q3_k"}), r"stack_llm_cache_type_k: .*q8_0"),
        (services("llm", llm={"cache_type_v": "fp8"}), r"stack_llm_cache_type_v: unknown"),
        (
            services("llm", llm={"model": "llama-70b"}),
            r"stack_llm_model: 'llama-70b' .*qwen3-8b-q4_k_m.*stack_llm_model_spec",
        ),
        (
            services("comfyui", comfyui={"model": "flux"}),
            r"stack_comfyui_model: 'flux' .*qwen-image-fp8",
        ),
        (services("llm", llm={"gpu": 1}), r"stack_llm_gpu: this host has no GPU 1"),
        (services("llm", llm={"parallel": 0}), r"stack_llm_parallel"),
        (services("llm", llm={"n_gpu_layers": -2}), r"stack_llm_n_gpu_layers"),
        (services("llm", llm={"ctx_size": "big"}), r"stack_llm_ctx_size: 'big'"),
        (services(kokoro={"engine": "tensorrt"}), r"stack_kokoro_engine"),
        (
            services(kokoro={"engine": "onnx", "device": "cuda"}),
            r"set stack_kokoro_engine to torch",
        ),
        (
            services("llm", llm={"model_spec": {"planned_bytes": 1, "layers": 2}}),
            r"stack_llm_model_spec: needs a positive kv_heads",
        ),
    ],
)
def test_bad_input_names_the_variable_and_the_fix(svc, message):
    with pytest.raises(ValueError, match=message):
        plan("24GB", svc)


def test_custom_gguf_from_model_spec():
    spec = {"planned_bytes": 2 * 1024**3, "layers": 28, "kv_heads": 8, "head_dim": 128}
    result = plan("16GB", services("llm", llm={"model_spec": spec, "model": ""}))
    row = next(r for r in result["rows"] if r["service"] == "llm")
    assert row["breakdown"]["weights_mib"] == 2048
    assert row["breakdown"]["kv_cache_mib"] == 896  # 28 x 8192 x 4096 B


def test_ansible_strings_are_read_as_numbers_and_booleans():
    svc = services(
        llm={"enabled": "True", "ctx_size": "8192", "parallel": "2", "n_gpu_layers": "-1"},
        comfyui={"enabled": "False"},
    )
    result = vram_plan.plan_stack(gpus("24GB"), svc, COMPANIONS, reserve_mib="1024",
                                  host_ram_mib="64000")
    assert result["free_mib"] == 15109


def test_filter_turns_a_value_error_into_a_failed_plan():
    result = vram_plan.plan_stack_or_error(gpus("24GB"), services("llm", llm={"model": "x"}),
                                           COMPANIONS)
    assert result["fits"] is False
    assert result["problems"] == [result["error"]]
    assert "stack_llm_model" in result["error"]
    # plan.yml reads these keys whether or not the plan could be made
    good = vram_plan.plan_stack_or_error(gpus("24GB"), services("llm"), COMPANIONS)
    assert set(result) == set(good)


def test_the_role_filters_are_the_planner_functions():
    """roles/stack/filter_plugins/kokoro_vram.py, as Ansible loads it, names the planner's
    functions and nothing of its own (the role's tasks use these names)."""
    expected = {
        "kokoro_vram_plan": vram_plan.plan_stack_or_error,
        "kokoro_vram_report": vram_report.vram_report,
        "kokoro_vram_parse_compute_apps": vram_report.parse_compute_apps,
        "kokoro_vram_parse_gpus": vram_report.parse_gpu_uuids,
        "kokoro_vram_kv_cache_mib": vram_sizing.kv_cache_mib,
        "kokoro_vram_card_total_mib": vram_sizing.card_total_mib_only,
    }
    assert role_filters("stack", expected) == expected


# --- the table ------------------------------------------------------------------------


def test_plan_table_is_fixed_width_with_every_row():
    result = plan("32GB", services("llm", "comfyui"))
    lines = result["table"].splitlines()
    assert lines[0].split()[:7] == ["service", "device", "planned", "GiB", "card", "GiB", "free"]
    body = {line.split()[0]: line for line in lines[2:]}
    assert set(body) == {"kokoro", "llm", "comfyui", "keep-free", "reserve", "total"}
    # the three numeric columns are right-aligned, ending at columns 30, 40 and 50
    for line in lines[2:]:
        assert line[29].isdigit() and line[39].isdigit() and line[49].isdigit(), line
    assert body["kokoro"].split()[1:5] == ["gpu0", "1.67", "31.84", "0.00"]
    assert body["llm"].split()[2] == "6.56"
    assert "offload" in body["comfyui"]
    assert body["total"].split()[2:5] == ["31.84", "31.84", "0.00"]
    assert "fits" in body["total"]
    short = plan("16GB", services("llm", "comfyui"))["table"]
    assert "short by 5.54 GiB" in short


# --- nvidia-smi parsers -----------------------------------------------------------------

UUID0 = "GPU-3c1b2a4e-5f6d-7e8f-9a0b-1c2d3e4f5a6b"
UUID1 = "GPU-8d7c6b5a-4e3f-2a1b-0c9d-8e7f6a5b4c3d"
GPUS_TEXT = (
    f"0, {UUID0}, NVIDIA GeForce RTX 5090, 32607, 21394\n"
    f"1, {UUID1}, NVIDIA H100 80GB HBM3, 81559, [N/A]\n"
)
APPS_TEXT = (
    f"{UUID0}, 4242, /opt/venv/bin/python3, 1650\n"
    f"{UUID0}, 4343, /app/llama-server, 6300\n"
    f"{UUID0}, 4545, python3, 12900\n"
    f"{UUID0}, 4646, [Insufficient Permissions], 544\n"
)


def test_parse_gpu_uuids():
    assert vram_report.parse_gpu_uuids(GPUS_TEXT) == [
        {
            "index": 0,
            "uuid": UUID0,
            "name": "NVIDIA GeForce RTX 5090",
            "memory_total_mib": 32607,
            "memory_used_mib": 21394,
        },
        {
            "index": 1,
            "uuid": UUID1,
            "name": "NVIDIA H100 80GB HBM3",
            "memory_total_mib": 81559,
            "memory_used_mib": None,
        },
    ]
    assert vram_report.parse_gpu_uuids("") == []
    with pytest.raises(ValueError, match="5 fields"):
        vram_report.parse_gpu_uuids("NVIDIA GeForce RTX 5090, 32607")


def test_parse_compute_apps():
    apps = vram_report.parse_compute_apps(APPS_TEXT + f"{UUID1}, 77, /usr/bin/python3, [N/A]\n")
    assert apps[0] == {
        "gpu_uuid": UUID0,
        "pid": 4242,
        "process_name": "/opt/venv/bin/python3",
        "used_memory_mib": 1650,
    }
    assert apps[3]["process_name"] is None  # [Insufficient Permissions]
    assert apps[3]["used_memory_mib"] == 544
    assert apps[4]["used_memory_mib"] is None  # [N/A]
    assert vram_report.parse_compute_apps("No running processes found\n") == []
    with pytest.raises(ValueError, match="4 fields"):
        vram_report.parse_compute_apps(f"{UUID0}, not-a-pid, python3, 10")


# --- the post-deploy report ---------------------------------------------------------------


def _report(gpus_text=GPUS_TEXT, apps_text=APPS_TEXT, headroom=512, **pids):
    the_plan = plan("32GB", services("llm", "comfyui"))
    pid_services = pids or {4242: "kokoro", "4343": "llm", 4545: "comfyui"}
    return vram_report.vram_report(gpus_text, apps_text, pid_services, the_plan, headroom)


def test_report_puts_measured_beside_planned():
    one_card = GPUS_TEXT.splitlines()[0]
    report = _report(gpus_text=one_card)
    assert report["ok"], report["problems"]
    assert [
        (s["service"], s["planned_mib"], s["measured_mib"], s["pids"]) for s in report["services"]
    ] == [
        ("kokoro", 1714, 1650, [4242]),
        ("llm", 6717, 6300, [4343]),
        ("comfyui", 14652, 12900, [4545]),
    ]
    assert report["others"] == [{"pid": 4646, "process_name": None, "gpu": 0, "used_mib": 544}]
    assert report["cards"][0]["free_mib"] == 32607 - 21394
    assert report["warnings"] == []
    table = report["table"]
    assert "kokoro    0            1.67          1.61  4242" in table
    assert "minimum headroom per card: 0.50 GiB" in table


def test_report_fails_when_a_card_has_too_little_headroom():
    tight = f"0, {UUID0}, NVIDIA GeForce RTX 5090, 32607, 32300\n"
    report = _report(gpus_text=tight)
    assert not report["ok"]
    assert report["problems"] == [
        "GPU 0 (NVIDIA GeForce RTX 5090): 0.30 GiB free, below the 0.50 GiB headroom "
        "(stack_vram_min_headroom_mib)"
    ]
    assert "LOW" in report["table"]


def test_report_card_without_figures_is_a_problem():
    report = _report()
    assert not report["ok"]
    assert report["problems"] == ["GPU 1 (NVIDIA H100 80GB HBM3) reports no memory figures"]


def test_report_warns_when_a_service_outgrows_its_plan_or_is_missing():
    apps = f"{UUID0}, 4343, /app/llama-server, 7100\n{UUID0}, 4545, python3, 900\n"
    report = _report(gpus_text=GPUS_TEXT.splitlines()[0], apps_text=apps)
    assert report["ok"]
    assert any(
        w.startswith("llm holds 6.93 GiB, more than its planned 6.56") for w in report["warnings"]
    )
    assert any(
        w.startswith("kokoro is planned on GPU 0 but none of its processes")
        for w in report["warnings"]
    )


def test_report_without_process_list_still_checks_headroom():
    report = _report(gpus_text=GPUS_TEXT.splitlines()[0], apps_text="")
    assert report["ok"]
    assert all(s["measured_mib"] is None for s in report["services"])
    assert any("no compute processes" in w for w in report["warnings"])


def test_report_on_a_cpu_host_has_nothing_to_check():
    cpu_plan = plan(None, services("llm"))
    report = vram_report.vram_report("", "", {}, cpu_plan, 512)
    assert report["ok"]
    assert report["services"] == [] and report["cards"] == []
