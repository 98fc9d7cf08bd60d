"""The host firewall (roles/firewall) as other hosts meet it: the allowed ports answer,
other host ports and other Docker-published ports are dropped (silence, not a refusal),
Docker's own nftables tables and container traffic are intact, and the rules come back at
boot from the role's unit. With a test host's SSH key, the role's lockout safety is run
for real over SSH: rules that would drop the Ansible connection are refused before
anything changes, and rules that drop it anyway are reverted by the host itself.

Runs from Molecule against the test host, and against real hosts from a machine that
reaches them (probes go from this machine to the host). Settings, all optional:
  FIREWALL_TEST_ADDRESS              the host's address to probe (default: the source
                                     address of its default route, as it reports it)
  FIREWALL_TEST_ANSWERING_TCP_PORTS  comma-separated ports that must answer (a service
  FIREWALL_TEST_ANSWERING_UDP_PORTS  listens and the rules allow this machine)
  FIREWALL_TEST_DROPPED_TCP_PORTS    ports that must be dropped: no answer, no refusal
  FIREWALL_TEST_DROPPED_UDP_PORTS    (a service, or a Docker-published port, may be there)
  FIREWALL_TEST_CONTAINER            a running container listening on port 8000, on ...
  FIREWALL_TEST_NETWORK              ... this user network, and an image with bash to run
  FIREWALL_TEST_IMAGE                clients from (the container traffic checks)
  FIREWALL_TEST_SSH_KEY              a private key that root@host accepts: runs the checks
                                     that apply the role over SSH. They change the host's
                                     rules for up to a minute: test hosts only.
Without them, the port checks read the allowed ports from the role's variables (the
host's inventory over the role's defaults) and check only that those are not dropped.
"""

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
ROLE_DEFAULTS = REPO / "roles/firewall/defaults/main.yml"
TABLE = "inet kokoro_deploy"
UNIT = "kokoro-deploy-firewall.service"
RULES_FILE = "/etc/kokoro-deploy/firewall.nft"
LISTING_FILE = "/var/lib/kokoro-deploy/firewall/applied.listing"
RUN_DIR = "/run/kokoro-deploy-firewall"
PROBE_TIMEOUT = 2.0
SSH_KEY = os.environ.get("FIREWALL_TEST_SSH_KEY", "")
on_test_hosts_only = pytest.mark.skipif(
    not SSH_KEY, reason="FIREWALL_TEST_SSH_KEY unset: these checks run the role over SSH "
    "or restart the firewall, changing the host's rules for a while (test hosts only)")


def _ports(name):
    return [int(p) for p in os.environ.get(name, "").split(",") if p.strip()]


def _ports_or_skip(name):
    return [pytest.param(p, id=str(p)) for p in _ports(name)] or [
        pytest.param(None, marks=pytest.mark.skip(reason=f"{name} unset"))]


def _inventory(host):
    try:
        return host.ansible.get_variables()
    except (AttributeError, RuntimeError):  # local:// backend: no inventory
        return {}


def _setting(host, name):
    """The role variable's value for this host: inventory first, then the role default."""
    inventory = _inventory(host)
    if name in inventory:
        return inventory[name]
    return yaml.safe_load(ROLE_DEFAULTS.read_text())[name]


def _listing(host):
    cmd = host.run("nft -s list table %s", TABLE)
    assert cmd.rc == 0, f"table {TABLE} is not loaded: {cmd.stderr}"
    return cmd.stdout.strip()


def probe_tcp(address, port):
    """'open' (connected), 'refused' (RST: the rules let it in, nothing listens) or
    'dropped' (no answer at all)."""
    try:
        with socket.create_connection((address, port), timeout=PROBE_TIMEOUT):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "dropped"


def probe_udp(address, port):
    """'open' (a datagram came back), 'refused' (ICMP port unreachable) or 'dropped'."""
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET,
                       socket.SOCK_DGRAM) as sock:
        sock.settimeout(PROBE_TIMEOUT)
        sock.connect((address, port))
        sock.send(b"ping\n")
        try:
            sock.recv(512)
            return "open"
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "dropped"


@pytest.fixture(scope="module")
def address(host):
    if os.environ.get("FIREWALL_TEST_ADDRESS"):
        return os.environ["FIREWALL_TEST_ADDRESS"]
    route = host.check_output("ip -o route get 192.0.2.1")
    match = re.search(r"\bsrc (\S+)", route)
    assert match, f"no source address in {route!r}; set FIREWALL_TEST_ADDRESS"
    return match.group(1)


@pytest.fixture(scope="module")
def controller_address(address):
    """This machine's address as the host sees it (the source of the probes)."""
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET,
                       socket.SOCK_DGRAM) as sock:
        sock.connect((address, 9))
        return sock.getsockname()[0]


@pytest.fixture(scope="module")
def converged(host):
    """The table as the converge left it (taken by the first check)."""
    return _listing(host)


# --- the rules as loaded --------------------------------------------------------------


def test_firewall_table_drops_by_default_and_filters_published_ports(host, converged):
    listing = converged
    assert re.search(r"chain input \{\s*type filter hook input priority filter; policy drop;",
                     listing), listing
    if _setting(host, "firewall_filter_published_ports"):
        assert "hook forward priority filter - 10; policy accept;" in listing
        assert "ct status dnat jump published" in listing


def test_firewall_table_opens_exactly_the_configured_ports(host):
    listing = _listing(host)
    wanted = sorted({int(p) for p in _setting(host, "firewall_ssh_ports")
                     + _setting(host, "firewall_allowed_tcp_ports")})
    match = re.search(r"set tcp_open \{[^}]*?elements = \{ ([^}]*) \}", listing)
    found = sorted(int(p) for p in match.group(1).split(",")) if match else []
    assert found == wanted, f"open TCP ports {found}, the variables ask for {wanted}"


def test_firewall_leaves_dockers_own_tables_in_place(host):
    if not host.exists("dockerd"):
        pytest.skip("no Docker engine on this host")
    tables = host.check_output("nft list tables")
    for table in ("table ip nat", "table ip filter", f"table {TABLE}"):
        assert table in tables, f"{table} is missing from:\n{tables}"
    nat = host.run("nft list chain ip nat DOCKER")
    assert nat.rc == 0, f"Docker's NAT chain is gone: {nat.stderr}"
    if "->" in host.check_output("docker ps --format '{{.Ports}}'"):
        assert "dnat to" in nat.stdout, "containers publish ports but Docker's DNAT rules are gone"


def test_firewall_unit_is_enabled_and_active(host):
    unit = host.service(UNIT)
    assert unit.is_enabled, f"{UNIT} is not enabled: the rules would be gone after a reboot"
    assert unit.is_running, f"{UNIT} is not active"


def test_firewall_leaves_debians_flushing_nftables_service_disabled(host):
    assert not host.service("nftables").is_enabled, (
        "Debian's nftables.service is enabled: restarting it runs /etc/nftables.conf's "
        "'flush ruleset', which removes Docker's rules and this firewall")


def test_firewall_boot_file_loads_and_matches_the_running_table(host):
    check = host.run("nft -c -f %s", RULES_FILE)
    assert check.rc == 0, f"{RULES_FILE} does not load: {check.stderr}"
    recorded = host.file(LISTING_FILE)
    assert recorded.is_file, f"{LISTING_FILE} is missing: run the firewall role"
    assert recorded.content_string.strip() == _listing(host), (
        f"table {TABLE} was changed since the role loaded it; the next run reloads it")


# --- the rules as other hosts meet them ---------------------------------------------------


def test_firewall_does_not_drop_the_allowed_tcp_ports(host, address):
    ports = sorted({int(p) for p in _setting(host, "firewall_ssh_ports")
                    + _setting(host, "firewall_allowed_tcp_ports")})
    results = {port: probe_tcp(address, port) for port in ports}
    assert "dropped" not in results.values(), f"allowed ports dropped at {address}: {results}"


@pytest.mark.parametrize("port", _ports_or_skip("FIREWALL_TEST_ANSWERING_TCP_PORTS"))
def test_firewall_lets_an_allowed_tcp_port_answer(address, port):
    assert probe_tcp(address, port) == "open", f"{address}:{port}/tcp did not answer"


@pytest.mark.parametrize("port", _ports_or_skip("FIREWALL_TEST_DROPPED_TCP_PORTS"))
def test_firewall_drops_a_tcp_port_that_is_not_allowed(address, port):
    assert probe_tcp(address, port) == "dropped", f"{address}:{port}/tcp was not dropped"


@pytest.mark.parametrize("port", _ports_or_skip("FIREWALL_TEST_ANSWERING_UDP_PORTS"))
def test_firewall_lets_an_allowed_udp_port_answer(address, port):
    assert probe_udp(address, port) == "open", f"{address}:{port}/udp did not answer"


@pytest.mark.parametrize("port", _ports_or_skip("FIREWALL_TEST_DROPPED_UDP_PORTS"))
def test_firewall_drops_a_udp_port_that_is_not_allowed(address, port):
    assert probe_udp(address, port) == "dropped", f"{address}:{port}/udp was not dropped"


# --- container traffic is not the firewall's business ------------------------------------


@pytest.fixture(scope="module")
def client_image():
    container = os.environ.get("FIREWALL_TEST_CONTAINER")
    network = os.environ.get("FIREWALL_TEST_NETWORK")
    image = os.environ.get("FIREWALL_TEST_IMAGE")
    if not (container and network and image):
        pytest.skip("FIREWALL_TEST_CONTAINER, FIREWALL_TEST_NETWORK and FIREWALL_TEST_IMAGE unset")
    return container, network, image


def test_firewall_keeps_traffic_between_containers(host, client_image):
    container, network, image = client_image
    out = host.run("docker run --rm --network %s %s bash -c %s", network, image,
                   f"exec 3<>/dev/tcp/{container}/8000 && head -n1 <&3")
    assert out.rc == 0 and out.stdout.startswith("ok"), (
        f"a container could not reach {container}:8000 on {network}: {out.stdout}{out.stderr}")


def test_local_users_reach_containers_only_through_published_ports(host, client_image):
    container, _, _ = client_image
    fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
    ip = host.check_output("docker inspect -f %s %s", fmt, container).split()[0]
    probe = f"exec 3<>/dev/tcp/{ip}/8000 && head -n1 <&3"
    as_root = host.run("timeout 10 bash -c %s", probe)
    assert as_root.rc == 0 and as_root.stdout.startswith("ok"), as_root.stderr
    as_user = host.run("timeout 10 runuser -u nobody -- bash -c %s", probe)
    assert as_user.rc != 0, f"user nobody reached {container} at {ip}:8000 directly"


def test_firewall_keeps_container_egress(host, client_image, controller_address):
    """A container opens a connection to a listener on this machine (NAT, forward hook)."""
    _, _, image = client_image
    server = socket.create_server((controller_address, 0))
    server.settimeout(30)
    port = server.getsockname()[1]

    def greet():
        try:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"hello from outside\n")
        except OSError:
            pass

    thread = threading.Thread(target=greet, daemon=True)
    thread.start()
    try:
        out = host.run("docker run --rm %s bash -c %s", image,
                       f"exec 3<>/dev/tcp/{controller_address}/{port} && head -n1 <&3")
    finally:
        server.close()
    assert out.rc == 0 and "hello from outside" in out.stdout, (
        f"a container could not open a connection out to {controller_address}:{port}: "
        f"{out.stdout}{out.stderr}")


# --- the lockout safety, over a real SSH connection (test hosts only) ------------------------

PLAY = """\
- name: Apply the firewall role over SSH, as a user's site.yml would.
  hosts: all
  roles:
    - role: firewall
"""


def run_role(host, tmp_path, address, **overrides):
    """ansible-playbook with the firewall role against the host over SSH, with the host's
    inventory variables for the role and the overrides; returns (rc, output, seconds)."""
    variables = {k: v for k, v in _inventory(host).items() if k.startswith("firewall_")}
    variables.update(overrides)
    inventory = {"all": {"hosts": {"fwhost": {
        "ansible_host": address,
        "ansible_user": "root",
        "ansible_connection": "ssh",
        "ansible_ssh_private_key_file": SSH_KEY,
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        "ansible_timeout": 5,
        "ansible_python_interpreter": "/usr/bin/python3",
    }}}}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    (tmp_path / "play.yml").write_text(PLAY)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}
    # The role's filters import the kit's collection (kokoro.deploy), found as playbooks find it.
    env.update(ANSIBLE_ROLES_PATH=str(REPO / "roles"),
               ANSIBLE_COLLECTIONS_PATH=str(REPO / "ansible" / "collections"),
               ANSIBLE_HOST_KEY_CHECKING="False",
               ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="False", ANSIBLE_PIPELINING="True",
               ANSIBLE_LOCALHOST_WARNING="False")
    playbook = Path(sys.executable).with_name("ansible-playbook")
    start = time.monotonic()
    done = subprocess.run(
        [str(playbook), "-i", "hosts.yml", "-e", "@vars.json", "play.yml"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    return done.returncode, done.stdout + done.stderr, time.monotonic() - start


@pytest.fixture
def before(host, address):
    """The running table and the boot file before a check; SSH must answer then."""
    assert probe_tcp(address, 22) == "open", "sshd does not answer before the check"
    return _listing(host), host.file(RULES_FILE).sha256sum


@on_test_hosts_only
def test_firewall_refuses_rules_that_would_drop_the_ansible_ssh_connection(
        host, tmp_path, address, before):
    rc, out, _ = run_role(host, tmp_path, address, firewall_ssh_ports=[])
    assert rc != 0, f"the role applied rules without the SSH port:\n{out[-3000:]}"
    assert "firewall lockout check" in out and "port 22" in out, out[-3000:]
    assert "Add 22 to firewall_ssh_ports" in out, out[-3000:]
    assert (_listing(host), host.file(RULES_FILE).sha256sum) == before, (
        "the refused run changed the rules")


@on_test_hosts_only
def test_firewall_host_reverts_by_itself_when_new_rules_drop_the_ssh_connection(
        host, tmp_path, address, before):
    timeout = 10
    rc, out, seconds = run_role(host, tmp_path, address, firewall_ssh_ports=[],
                                firewall_lockout_check=False, firewall_confirm_timeout=timeout)
    assert rc != 0, f"the role confirmed rules that drop SSH:\n{out[-3000:]}"
    assert "went back to its previous rules by itself" in out, out[-3000:]
    assert (_listing(host), host.file(RULES_FILE).sha256sum) == before, (
        "the host did not return to its previous rules")
    # The revert job's own marker: it waited out the confirmation timeout (the revert
    # point is written just before the job is armed and the rules are loaded; mtimes are
    # whole seconds) and then fired. The upper bound only ties the marker to this run's
    # timer: two Ansible tasks over SSH on a loaded host can take many seconds.
    newest = host.check_output(f"ls -t {RUN_DIR}/*.reverted | head -n1")
    stem = newest[: -len(".reverted")]
    armed = int(host.check_output("stat -c %%Y %s", f"{stem}.revert.nft"))
    fired = int(host.check_output("stat -c %%Y %s", newest))
    assert timeout - 1 <= fired - armed <= timeout + 60, (
        f"reverted {fired - armed} s after the load, with a {timeout} s timeout")
    assert probe_tcp(address, 22) == "open", "sshd does not answer after the revert"
    print(f"role run with the revert: {seconds:.0f} s")


@on_test_hosts_only
def test_firewall_enabled_false_removes_only_the_roles_own_table(host, tmp_path, address, before):
    rc, out, _ = run_role(host, tmp_path, address, firewall_enabled=False)
    assert rc == 0, f"the role failed over SSH:\n{out[-3000:]}"
    assert host.run("nft list table %s", TABLE).rc != 0, f"table {TABLE} is still loaded"
    assert not host.file(RULES_FILE).exists, f"{RULES_FILE} is still there"
    assert not host.file(f"/etc/systemd/system/{UNIT}").exists, f"{UNIT} is still installed"
    if host.exists("dockerd"):
        tables = host.check_output("nft list tables")
        assert "table ip nat" in tables and "table ip filter" in tables, tables
    for port in _ports("FIREWALL_TEST_DROPPED_TCP_PORTS"):
        assert probe_tcp(address, port) == "open", f"{port} is still dropped with no firewall"


@on_test_hosts_only
def test_firewall_installs_over_ssh_confirming_through_a_new_connection(
        host, tmp_path, address, converged):
    """From no firewall at all (the test above) to the inventory's rules, over SSH: the
    lockout check passes, the rules load, a new SSH connection confirms them."""
    rc, out, _ = run_role(host, tmp_path, address)
    assert rc == 0, f"the role failed over SSH:\n{out[-3000:]}"
    assert "firewall lockout check passed" in out, out[-3000:]
    assert host.service(UNIT).is_enabled
    assert _listing(host) == converged, "the rules differ from the converge's"
    assert host.file(LISTING_FILE).content_string.strip() == converged
    for port in _ports("FIREWALL_TEST_DROPPED_TCP_PORTS"):
        assert probe_tcp(address, port) == "dropped", f"{port} is not dropped"
    for port in _ports("FIREWALL_TEST_ANSWERING_TCP_PORTS"):
        assert probe_tcp(address, port) == "open", f"{port} does not answer"


@on_test_hosts_only
def test_firewall_unit_restart_reloads_the_same_rules_and_keeps_dockers(host, address, before):
    dnat_before = host.run("nft list chain ip nat DOCKER").stdout
    host.run_expect([0], "systemctl restart %s", UNIT)
    assert _listing(host) == before[0]
    assert host.run("nft list chain ip nat DOCKER").stdout == dnat_before
    for port in _ports("FIREWALL_TEST_ANSWERING_TCP_PORTS"):
        assert probe_tcp(address, port) == "open", f"{port} did not answer after the restart"
