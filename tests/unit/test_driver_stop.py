"""Where a GPU host stops for its driver, and what it is told.

The nvidia_driver role stops a host whose kernel does not run the installed driver
(roles/nvidia_driver/tasks/activate.yml), with one message from
templates/stop-message.j2. The container case runs in Molecule (nvidia_driver, homelab);
the others need a machine that can reboot, so the message is rendered here for each.
site.yml's driver play takes -e site_gpu_serial to reboot a fleet a batch at a time:
that is run against this machine with two inventory hosts.
"""

import re
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "roles" / "nvidia_driver" / "templates" / "stop-message.j2"
RESUME = "ansible-playbook -i /srv/inventory/mine /srv/kokoro-deploy/ansible/site.yml"


def message(**facts) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters["bool"] = bool
    base = {
        "inventory_hostname": "kokoro-home",
        "ansible_host": "192.0.2.10",
        "nvidia_driver_installed_version": "580.95.05",
        "nvidia_driver_loaded_version": "",
        "nvidia_driver_resume_command": RESUME,
        "nvidia_driver_reboot": False,
        "__nvidia_driver_in_container": False,
        "__nvidia_driver_on_controller": False,
        "__nvidia_driver_now": "",
        **facts,
    }
    # As the task does: one line.
    return " ".join(env.from_string(TEMPLATE.read_text()).render(base).split())


def test_on_the_controller_it_says_to_reboot_this_machine_and_run_the_command_again():
    text = message(__nvidia_driver_on_controller=True, nvidia_driver_reboot=True)
    assert text.startswith("REBOOT NEEDED: NVIDIA driver 580.95.05 is installed on kokoro-home")
    assert "Reboot this machine (sudo systemctl reboot), then run the same playbook again" in text
    assert text.endswith(RESUME)


def test_a_remote_host_without_leave_to_reboot_gets_the_ssh_command_and_the_variable():
    text = message()
    assert "ssh 192.0.2.10 sudo systemctl reboot" in text
    assert "nvidia_driver_reboot: true" in text
    assert text.endswith(RESUME)


def test_a_remote_host_that_rebooted_into_the_wrong_driver_gets_the_checks_to_make():
    text = message(nvidia_driver_reboot=True, __nvidia_driver_now="535.261.03",
                   nvidia_driver_loaded_version="535.261.03")
    assert "After a reboot the kernel runs driver '535.261.03', not 580.95.05" in text
    assert "dkms status" in text and "nouveau" in text
    assert text.endswith(RESUME)


def test_a_loaded_driver_whose_nvidia_smi_fails_is_named_as_such():
    text = message(__nvidia_driver_now="580.95.05", nvidia_driver_loaded_version="580.95.05")
    assert text.startswith("The kernel runs NVIDIA driver 580.95.05 but nvidia-smi does not answer")
    assert text.endswith(RESUME)


def test_a_container_is_told_to_install_the_driver_on_its_machine():
    text = message(__nvidia_driver_in_container=True, nvidia_driver_reboot=True)
    assert "kokoro-home is a container" in text
    assert "'no nvidia module'" in text
    assert text.endswith(RESUME)


def test_the_default_resume_command_is_the_site_playbook_of_this_inventory():
    import yaml
    defaults = yaml.safe_load((REPO / "roles/nvidia_driver/defaults/main.yml").read_text())
    assert defaults["nvidia_driver_resume_command"] == (
        "ansible-playbook -i {{ inventory_dir }} {{ playbook_dir }}/site.yml")


@pytest.fixture
def two_local_hosts(tmp_path):
    inv = tmp_path / "hosts.yml"
    inv.write_text(
        "all:\n  children:\n    kokoro_hosts:\n      hosts:\n"
        "        fleet-a: {}\n        fleet-b: {}\n"
        "      vars:\n        ansible_connection: local\n"
        f"        ansible_python_interpreter: {sys.executable}\n"
        # CPU hosts: the GPU roles find no card and skip; nothing is written here.
        "        gpu_facts_detect: false\n        gpu_facts_write_local_facts: false\n"
    )
    return inv


def run_gpu_play(inv: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inv),
         str(REPO / "ansible" / "site.yml"), "--tags", "gpu", *extra],
        capture_output=True, text=True, check=False,
        env={"ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
             "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(inv.parent)})


def gpu_play_batches(out: str) -> list[list[str]]:
    """The hosts of each run of the driver play, from its first task's lines."""
    batches = []
    for chunk in out.split("PLAY [Make each GPU host's driver")[1:]:
        first_task = chunk.split("TASK [", 2)[1]
        batches.append(sorted(set(re.findall(r"\[(fleet-[ab])\]", first_task))))
    return batches


def test_site_gpu_serial_takes_the_hosts_through_the_driver_play_a_batch_at_a_time(two_local_hosts):
    proc = run_gpu_play(two_local_hosts, "-e", "site_gpu_serial=1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert gpu_play_batches(proc.stdout) == [["fleet-a"], ["fleet-b"]]


def test_without_site_gpu_serial_every_host_is_in_one_batch(two_local_hosts):
    proc = run_gpu_play(two_local_hosts)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert gpu_play_batches(proc.stdout) == [["fleet-a", "fleet-b"]]
