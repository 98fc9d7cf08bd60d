"""Fixtures of the registry's acceptance checks, and which hosts each module is for."""

import os
import re
from pathlib import Path

import pytest
import yaml
from registry_client import ROLE_DEFAULTS, TLS_DIR, inventory, plain, setting


# Each module's checks are for the hosts of one inventory group (its GROUP: the registry
# host, or the kokoro hosts that pull from it). With an inventory (Molecule, or
# --hosts=ansible://...), a host outside that group is skipped, saying so; without one
# (--hosts=local://) every check runs on the machine itself.
# Module-scoped, so that it runs before the module-scoped fixtures the checks ask for.
@pytest.fixture(scope="module", autouse=True)
def _host_in_the_modules_group(request, host):
    group = getattr(request.module, "GROUP", None)
    groups = inventory(host).get("group_names")
    if group and groups is not None and group not in groups:
        pytest.skip(f"{host.backend.hostname} is not in the {group} group")


@pytest.fixture(scope="module")
def registry(host):
    """Where and how the registry serves, from the host's settings."""
    port = int(setting(host, "registry_port"))
    listen = setting(host, "registry_listen_address") or ""
    address = "127.0.0.1" if listen in ("0.0.0.0", "::", "") else listen
    return {"address": address, "port": port,
            "anonymous": bool(setting(host, "registry_allow_anonymous"))}


@pytest.fixture(scope="module")
def ca_pem(host):
    """The CA a client trusts: the controller's copy, else the host's generated CA, else
    None (the host's trust store: a certificate from a public CA)."""
    path = os.environ.get("REGISTRY_CA_FILE") or setting(host, "registry_ca_fetch_dest")
    if path:
        ca = Path(path)
        assert ca.is_file(), (
            f"{ca} (the CA clients trust) is missing on this machine: run the registry role, "
            "which fetches it there, or set REGISTRY_CA_FILE")
        return ca.read_text()
    on_host = host.file(f"{TLS_DIR}/ca.crt")
    return on_host.content_string if on_host.exists else None


@pytest.fixture(scope="module")
def tls_names(host):
    if os.environ.get("REGISTRY_TLS_NAMES"):
        return [n.strip() for n in os.environ["REGISTRY_TLS_NAMES"].split(",") if n.strip()]
    values = inventory(host)
    if "registry_tls_names" in values:
        names = plain(values["registry_tls_names"])
        if names is None:
            pytest.skip("registry_tls_names is an expression in the inventory: "
                        "set REGISTRY_TLS_NAMES")
        return names
    # The role's default, worked out on the host as Ansible's facts do.
    names = [values.get("inventory_hostname")]
    names.append(host.check_output("python3 -c %s", "import socket; print(socket.getfqdn())"))
    route = host.run("ip -4 route get 8.8.8.8")
    match = re.search(r"\bsrc (\S+)", route.stdout)
    names.append(match.group(1) if match else None)
    return list(dict.fromkeys(n for n in names if n))


@pytest.fixture(scope="module")
def listed_users(host):
    """The inventory's users as {name: password or None}; None when unreadable here."""
    users = inventory(host).get("registry_users", ROLE_DEFAULTS["registry_users"])
    if isinstance(users, dict) or not isinstance(users, list):
        return None  # the whole list vault-encrypted
    return {u["name"]: plain(u.get("password")) for u in users}


@pytest.fixture(scope="module")
def login(listed_users):
    """A (user, password) that must log in, or skip saying how to give one."""
    if os.environ.get("REGISTRY_TEST_USER"):
        return os.environ["REGISTRY_TEST_USER"], os.environ.get("REGISTRY_TEST_PASSWORD", "")
    for name, password in (listed_users or {}).items():
        if password is not None:
            return name, password
    pytest.skip("no readable password for a registry user (vault-encrypted, or no users): "
                "set REGISTRY_TEST_USER and REGISTRY_TEST_PASSWORD")


@pytest.fixture(scope="module")
def lock(host):
    """The image lock ansible/build_images.yml wrote: KOKORO_IMAGE_LOCK, else the
    inventory's stack_image_lock_path when it is a plain path on this machine."""
    path = os.environ.get("KOKORO_IMAGE_LOCK") or plain(
        inventory(host).get("stack_image_lock_path", ""))
    if not path or not Path(path).is_file():
        pytest.skip("no image lock on this machine (ansible/build_images.yml writes it): "
                    "set KOKORO_IMAGE_LOCK")
    return yaml.safe_load(Path(path).read_text())
