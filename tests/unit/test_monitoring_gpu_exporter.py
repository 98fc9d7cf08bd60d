"""roles/monitoring's GPU exporter (files/kokoro_gpu_exporter.py): nvidia-smi's CSV as
two H100s print it (the card of docs/benchmarks, with utilisation, temperature and power,
one of them reporting power as [N/A]) becomes textfile-collector metrics that Prometheus'
own parser accepts; each GPU process is tied to its compose service through its cgroup;
a host without nvidia-smi gets `nvidia_smi_up 0` and no error."""

import subprocess
import sys
from pathlib import Path

import kokoro_gpu_exporter as exporter
import pytest
from required_tools import promtool, run_ok

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "roles/monitoring/files/kokoro_gpu_exporter.py"
RECORDED = REPO / "tests/molecule/stack/files"

CID = "3f" * 32


def test_parse_gpus_reads_the_recorded_h100_lines():
    gpus = exporter.parse_gpus((RECORDED / "nvidia-smi-gpus.csv").read_text())
    assert [g["index"] for g in gpus] == ["0", "1"]
    g0 = gpus[0]
    assert g0["name"] == "NVIDIA H100 80GB HBM3"
    assert g0["memory_total_bytes"] == 81559 * 1024 * 1024
    assert g0["memory_used_bytes"] == 7453 * 1024 * 1024
    assert g0["utilization_ratio"] == pytest.approx(0.38)
    assert g0["temperature_celsius"] == 41
    assert g0["power_watts"] == pytest.approx(118.42)


def test_parse_gpus_leaves_out_fields_the_card_does_not_report():
    gpus = exporter.parse_gpus(
        "0, GPU-x, NVIDIA GeForce RTX 5090, 32607, [N/A], [Not Supported], 50, [N/A]\n"
    )
    assert gpus[0]["memory_total_bytes"] == 32607 * 1024 * 1024
    assert gpus[0]["memory_used_bytes"] is None
    assert gpus[0]["utilization_ratio"] is None
    assert gpus[0]["power_watts"] is None
    text = exporter.render(True, gpus, [], {}, None)
    assert "nvidia_gpu_memory_used_bytes" not in text
    assert "nvidia_gpu_power_watts" not in text
    assert (
        'nvidia_gpu_temperature_celsius{gpu="0",uuid="GPU-x",name="NVIDIA GeForce RTX 5090"} 50'
        in text
    )


def test_parse_gpus_accepts_the_short_query_of_stack_smoke():
    # index,uuid,name,memory.total,memory.used: the fields roles/stack's verify asks for.
    gpus = exporter.parse_gpus("0, GPU-y, NVIDIA H100 80GB HBM3, 81559, 0\n",
                               fields=exporter.GPU_FIELDS[:5])
    assert gpus[0]["memory_used_bytes"] == 0
    assert gpus[0]["utilization_ratio"] is None


@pytest.mark.parametrize("name", ["NVIDIA A, rev 1", "NVIDIA B, rev 1, OEM",
                                  "NVIDIA C, rev 1, OEM, 80GB"])
def test_parse_gpus_keeps_commas_in_names_with_either_query(name):
    # A five-field line whose name holds three commas has as many commas as an
    # eight-field line: only the query that printed it says which it is.
    short = exporter.parse_gpus(f"0, GPU-y, {name}, 81559, 512\n", fields=exporter.GPU_FIELDS[:5])
    full = exporter.parse_gpus(f"0, GPU-y, {name}, 81559, 512, 38, 41, 118.42\n")
    for gpu in short + full:
        assert gpu["name"] == name
        assert gpu["memory_total_bytes"] == 81559 * 1024 * 1024
        assert gpu["memory_used_bytes"] == 512 * 1024 * 1024
    assert short[0]["temperature_celsius"] is None and short[0]["power_watts"] is None
    assert full[0]["temperature_celsius"] == 41
    assert full[0]["power_watts"] == pytest.approx(118.42)


def test_parse_apps_skips_no_process_lines_and_keeps_commas_in_names():
    apps = exporter.parse_apps(
        "No running processes found\n"
        "GPU-a, 4242, /opt/venv/bin/python3.11, 7096\n"
        "GPU-a, 77, /usr/bin/weird,name, [N/A]\n"
    )
    assert apps[0] == {
        "gpu_uuid": "GPU-a",
        "pid": "4242",
        "process": "/opt/venv/bin/python3.11",
        "memory_used_bytes": 7096 * 1024 * 1024,
    }
    assert apps[1]["process"] == "/usr/bin/weird,name"
    assert apps[1]["memory_used_bytes"] is None


def test_service_of_finds_the_compose_service_in_the_cgroup(tmp_path):
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "cgroup").write_text(
        f"12:memory:/docker/{CID}\n0::/system.slice/docker-{CID}.scope\n"
    )
    (tmp_path / "77").mkdir()
    (tmp_path / "77" / "cgroup").write_text("0::/user.slice\n")
    containers = {CID: "kokoro"}
    assert exporter.service_of("4242", containers, proc=tmp_path) == "kokoro"
    assert exporter.service_of("77", containers, proc=tmp_path) == ""
    assert exporter.service_of("99999", containers, proc=tmp_path) == ""


def test_render_is_valid_exposition_text_with_per_process_services():
    gpus = exporter.parse_gpus((RECORDED / "nvidia-smi-gpus.csv").read_text())
    apps = exporter.parse_apps((RECORDED / "nvidia-smi-apps.csv").read_text())
    text = exporter.render(True, gpus, apps, {"4242": "kokoro"}, 512)
    assert "nvidia_smi_up 1\n" in text
    assert "kokoro_deploy_vram_min_headroom_bytes 536870912\n" in text
    assert (
        'nvidia_gpu_process_memory_used_bytes{gpu="0",uuid="GPU-5d2e8a8e-3c1f-4b7a-9e0d-2f6a1c9b7e41",'
        'pid="4242",process="/opt/venv/bin/python3.11",compose_service="kokoro"} 7440695296'
    ) in text
    # Each metric's HELP and TYPE once, before its samples.
    for name in exporter.HELP:
        assert text.count(f"# TYPE {name} ") <= 1
    run_ok([promtool(), "check", "metrics"], input=text)


def test_label_values_are_escaped():
    text = exporter.render(
        True,
        [],
        [{"gpu_uuid": "u", "pid": "1", "process": 'a"b\\c', "memory_used_bytes": 1.0}],
        {},
        None,
    )
    assert 'process="a\\"b\\\\c"' in text


def test_a_host_without_nvidia_smi_gets_up_0_and_exit_0(tmp_path):
    out = tmp_path / "gpu.prom"
    rc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--output",
            str(out),
            "--nvidia-smi",
            str(tmp_path / "no-such-nvidia-smi"),
            "--min-headroom-mib",
            "512",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rc.returncode == 0, rc.stderr
    text = out.read_text()
    assert "nvidia_smi_up 0\n" in text
    assert "nvidia_gpu_memory" not in text
    assert [p.name for p in tmp_path.iterdir()] == ["gpu.prom"]  # no temporary file left


def test_a_failing_nvidia_smi_is_up_0_not_an_error(tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate' >&2\nexit 9\n"
    )
    fake.chmod(0o755)
    out = tmp_path / "gpu.prom"
    rc = exporter.main(["--output", str(out), "--nvidia-smi", str(fake), "--project", ""])
    assert rc == 0
    assert "nvidia_smi_up 0\n" in out.read_text()


def test_replayed_nvidia_smi_output_is_written_as_metrics(tmp_path):
    """The Molecule scenario's recorded sample, through a stand-in nvidia-smi."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        '#!/bin/sh\ncase "$1" in\n'
        f"  --query-gpu=*) cat {RECORDED / 'nvidia-smi-gpus.csv'} ;;\n"
        f"  --query-compute-apps=*) cat {RECORDED / 'nvidia-smi-apps.csv'} ;;\n"
        "esac\n"
    )
    fake.chmod(0o755)
    out = tmp_path / "gpu.prom"
    assert exporter.main(["--output", str(out), "--nvidia-smi", str(fake), "--project", ""]) == 0
    text = out.read_text()
    assert "nvidia_smi_up 1\n" in text
    assert text.count("nvidia_gpu_memory_total_bytes{") == 2
    assert text.count("nvidia_gpu_power_watts{") == 1  # GPU 1 said [N/A]
    assert 'compose_service=""' in text  # pid 4242 is no container's process here
