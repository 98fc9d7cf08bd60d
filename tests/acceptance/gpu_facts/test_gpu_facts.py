"""gpu_facts: what the run recorded in /etc/ansible/facts.d/kokoro_gpu.fact agrees with
the host's hardware (or, for facts made through the role's test seams, with itself).

Runs from Molecule against test hosts and against real hosts (tests/acceptance/README.md).
"""


import pytest
from gpu_fact import GPU_FACT


def test_gpu_facts_file_is_readable_by_all_and_written_by_root(host):
    fact = host.file(GPU_FACT)
    assert fact.is_file, f"{GPU_FACT} missing: run the gpu_facts role (preflight play)"
    assert fact.mode == 0o644


def _nvidia_pci_functions(host) -> int:
    out = host.check_output(
        "for d in /sys/bus/pci/devices/*; do "
        'echo "$(cat $d/vendor) $(cat $d/class)"; done 2>/dev/null || true'
    )
    return sum(
        1 for line in out.splitlines()
        if line.startswith("0x10de ") and line.split()[1].startswith("0x03")
    )


def test_gpu_facts_match_the_pci_bus(host, facts):
    if facts["source"] == "test-seam":
        pytest.skip("facts came from the role's test seams (Molecule), not this host's bus")
    assert facts["nvidia_present"] == (_nvidia_pci_functions(host) > 0)
    assert len(facts["pci_devices"]) == _nvidia_pci_functions(host)


def test_gpu_facts_match_nvidia_smi(host, facts):
    if facts["source"] == "test-seam":
        pytest.skip("facts came from the role's test seams (Molecule), not this host")
    if not facts["nvidia_present"]:
        pytest.skip("no NVIDIA PCI device on this host")
    smi = host.run(
        "nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader"
    )
    if not facts["driver_loaded"]:
        assert smi.rc != 0, "a driver answers now but the facts say none was loaded: rerun"
        return
    assert smi.rc == 0, f"nvidia-smi failed: {smi.stderr}"
    rows = [line.split(", ") for line in smi.stdout.strip().splitlines()]
    assert [r[0] for r in rows] == [g["name"] for g in facts["gpus"]]
    assert {r[1] for r in rows} == {facts["driver_version"]}
    assert [r[2] for r in rows] == facts["compute_caps"]


def test_gpu_facts_are_consistent(facts):
    if not facts["nvidia_present"]:
        assert facts["gpus"] == [] and facts["compute_caps"] == []
        assert facts["driver_version"] == ""
        return
    assert len(facts["compute_caps"]) >= 1
    for gpu in facts["gpus"]:
        major, minor = gpu["compute_cap"].split(".")
        assert gpu["arch"] == f"sm_{major}{minor}"
        assert gpu["driver_version"] == facts["driver_version"]
    if facts["driver_loaded"]:
        assert facts["driver_max_cuda"], "a loaded driver must map to a CUDA version"


def test_seam_facts_hold_the_injected_card(facts):
    if facts["source"] != "test-seam":
        pytest.skip("facts came from this host's hardware")
    assert [g["arch"] for g in facts["gpus"]] == ["sm_89"]
    assert facts["driver_max_cuda"] == "13.0"
    assert [d["device_id"] for d in facts["pci_devices"]] == ["2684"]
