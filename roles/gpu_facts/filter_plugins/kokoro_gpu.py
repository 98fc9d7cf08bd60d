"""Ansible filters kokoro_gpu_*: the GPU decisions of
plugins/module_utils/gpu_decisions.py (arch, driver branch and kernel modules, torch
wheel flavour, nvidia-smi and PCI parsing), exposed to every role that depends on
gpu_facts. The logic and its sources live there; this file only names the filters."""

from __future__ import annotations

from ansible_collections.kokoro.deploy.plugins.module_utils.gpu_decisions import (
    arch_coverage,
    cc_to_arch,
    driver_max_cuda,
    flavour_cuda,
    open_modules_support,
    parse_nvidia_smi,
    parse_pci_devices,
    plan_driver,
    plan_torch_flavour_or_error,
    torch_minor,
    uncovered_caps,
    vram_headroom_mib,
    wheel_arch_list,
)


class FilterModule:
    """Ansible filters: kokoro_gpu_<function>."""

    def filters(self):
        return {
            "kokoro_gpu_parse_nvidia_smi": parse_nvidia_smi,
            "kokoro_gpu_parse_pci_devices": parse_pci_devices,
            "kokoro_gpu_plan_torch_flavour": plan_torch_flavour_or_error,
            "kokoro_gpu_plan_driver": plan_driver,
            "kokoro_gpu_driver_max_cuda": driver_max_cuda,
            "kokoro_gpu_flavour_cuda": flavour_cuda,
            "kokoro_gpu_torch_minor": torch_minor,
            "kokoro_gpu_cc_to_arch": cc_to_arch,
            "kokoro_gpu_wheel_arch_list": wheel_arch_list,
            "kokoro_gpu_arch_coverage": arch_coverage,
            "kokoro_gpu_uncovered_caps": uncovered_caps,
            "kokoro_gpu_open_modules_support": open_modules_support,
            "kokoro_gpu_vram_headroom_mib": vram_headroom_mib,
        }
