"""The fleet's private image registry (roles/registry): Debian's docker-registry serving
HTTPS (the role's generated CA, or your certificate) and HTTP basic auth itself.

What a Docker client meets: /v2/ answers over TLS that verifies with the CA the role
fetched to the controller, under every name the certificate was made for, and refuses a
name it was not; 401 without credentials or with a wrong password, 200 with a listed
user's; plain HTTP refused. On the host: the service enabled and running, the keys
private (0600, the server key the service user's, the CA key root's), the password file
bcrypt entries only (for the listed users, no password in clear).

Runs from Molecule against the test host, and against real hosts as part of the
acceptance suite (see tests/acceptance/README.md); root-only files need `--sudo` or an
inventory with `ansible_become: true`. The requests are made on the host (python3 and
its standard library, to the registry's loopback address when it listens on every
address), so a firewall between this machine and the host does not matter. Settings:
the host's inventory (registry_* variables) over the role's defaults; these environment
variables override them:
  REGISTRY_CA_FILE        the CA certificate clients trust, on this machine (default:
                          registry_ca_fetch_dest when the inventory sets a plain path;
                          else the generated CA on the host; else the host's trust store)
  REGISTRY_TEST_USER      a user that must log in, and its password (default: the first
  REGISTRY_TEST_PASSWORD  of registry_users, when the inventory holds its password in
                          clear, as test inventories do; a vault-encrypted one: set these)
  REGISTRY_TLS_NAMES      comma-separated names the certificate must carry (default:
                          registry_tls_names, else the role's default: the inventory
                          name, the host's FQDN and its default IPv4 address)
As the stack's checks do (host_http.py), a password reaches the host's python3 on its
command line for the moment of the request.
"""

import re
import secrets

import pytest
from registry_client import (
    CONFIG_DIR,
    HTPASSWD,
    SERVICE,
    SERVICE_USER,
    TLS_DIR,
    get,
    req,
    san_entries,
)

# conftest.py: these checks are for the registry's host.
GROUP = "registries"
# htpasswd -B: $2y$, a two-digit cost, 22 characters of salt and 31 of hash.
BCRYPT = re.compile(r"^[^:\s]+:\$2y\$\d\d\$[./A-Za-z0-9]{53}$")
FOREIGN_NAME = "not-a-registry-name.invalid"


def test_registry_is_enabled_and_running(host):
    service = host.service(SERVICE)
    assert service.is_enabled, f"{SERVICE} is not enabled at boot"
    assert service.is_running, f"{SERVICE} is not running: see journalctl -u {SERVICE}"


def test_every_certificate_name_verifies_with_the_fetched_ca(host, registry, ca_pem, tls_names):
    """Each name clients may use: TLS verifies with the CA clients are given, and the
    registry's API answers (without credentials: 401 asking for basic auth)."""
    answers = get(host, [req(registry, name, ca_pem) for name in tls_names])
    expected = 200 if registry["anonymous"] else 401
    for name, answer in zip(tls_names, answers, strict=True):
        assert "error" not in answer, f"https://{name}:{registry['port']}/v2/: {answer['error']}"
        assert answer["status"] == expected, f"{name}: {answer}"
        assert answer["api"] == "registry/2.0", f"{name}: not the registry's API: {answer}"
        if not registry["anonymous"]:
            assert (answer["auth"] or "").startswith("Basic realm="), answer


def test_a_name_not_in_the_certificate_is_refused(host, registry, ca_pem):
    answer = get(host, [req(registry, FOREIGN_NAME, ca_pem)])[0]
    assert "error" in answer, f"TLS accepted {FOREIGN_NAME}, a name the certificate lacks: {answer}"
    assert "CERTIFICATE_VERIFY_FAILED" in answer["error"], answer


def test_plain_http_is_refused(host, registry, tls_names):
    answer = get(host, [req(registry, tls_names[0], tls=False)])[0]
    # Go's TLS server answers a plain HTTP request with 400 and serves nothing.
    assert answer.get("status") == 400, f"plain HTTP was not refused: {answer}"


def test_a_listed_user_logs_in(host, registry, ca_pem, tls_names, login):
    user, password = login
    answer = get(host, [req(registry, tls_names[0], ca_pem, user=user, password=password)])[0]
    assert answer.get("status") == 200, f"{user} could not log in: {answer}"


def test_a_wrong_password_is_refused(host, registry, ca_pem, tls_names, login):
    if registry["anonymous"]:
        pytest.skip("registry_allow_anonymous: no authentication to refuse")
    user, _ = login
    wrong = "wrong-" + secrets.token_hex(8)
    answer = get(host, [req(registry, tls_names[0], ca_pem, user=user, password=wrong)])[0]
    assert answer.get("status") == 401, f"{user} with a wrong password got in: {answer}"


def test_the_fetched_ca_is_the_hosts_ca(host, ca_pem):
    on_host = host.file(f"{TLS_DIR}/ca.crt")
    signed = host.run("openssl verify -CAfile %s %s", on_host.path, f"{TLS_DIR}/server.crt")
    if not on_host.exists or signed.rc != 0:
        pytest.skip("the registry serves no certificate from a CA of its own "
                    "(registry_tls_cert_file: your certificate)")
    assert ca_pem is not None
    assert ca_pem.strip() == on_host.content_string.strip(), (
        "the CA clients are given is not the host's: run the registry role again to fetch it")


def test_the_keys_are_private(host):
    key = host.file(f"{TLS_DIR}/server.key")
    assert key.is_file, f"{TLS_DIR}/server.key is missing: run the registry role"
    assert key.mode == 0o600, f"server.key mode {key.mode:o}, not 600"
    assert key.user == SERVICE_USER
    ca_key = host.file(f"{TLS_DIR}/ca.key")
    if ca_key.exists:
        assert ca_key.mode == 0o600, f"ca.key mode {ca_key.mode:o}, not 600"
        assert ca_key.user == "root", "the CA key must be root's alone, not the service's"
    folder = host.file(TLS_DIR)
    assert folder.mode & 0o007 == 0, f"{TLS_DIR} is open to every user ({folder.mode:o})"


def test_the_password_file_holds_bcrypt_entries_only(host, listed_users, registry):
    f = host.file(HTPASSWD)
    assert f.is_file, f"{HTPASSWD} is missing: run the registry role"
    assert f.mode & 0o007 == 0, f"{HTPASSWD} is readable by every user ({f.mode:o})"
    assert f.user == "root" and f.group == SERVICE_USER, f"{HTPASSWD}: {f.user}:{f.group}"
    lines = [line for line in f.content_string.splitlines() if line.strip()]
    for line in lines:
        assert BCRYPT.match(line), f"not a bcrypt ($2y$) entry: {line.split(':')[0]}"
    if listed_users is None:
        return
    assert sorted(line.split(":")[0] for line in lines) == sorted(listed_users), (
        "the password file's users are not registry_users")
    for name, password in listed_users.items():
        # (A short one could occur inside a hash by chance.)
        if password and len(password) >= 8:
            assert password not in f.content_string, f"{name}'s password is in clear"
    assert lines or registry["anonymous"], "no users, and anonymous access is not configured"


def test_the_certificate_carries_the_configured_names(host, tls_names):
    cmd = host.run("openssl x509 -in %s -noout -ext subjectAltName", f"{TLS_DIR}/server.crt")
    assert cmd.rc == 0, cmd.stderr
    entries = cmd.stdout.split("\n", 1)[1] if "\n" in cmd.stdout else ""
    sans = set()
    for entry in (e.strip() for e in entries.split(",") if e.strip()):
        kind, _, value = entry.partition(":")
        sans |= san_entries([value]) if kind == "IP Address" else {f"{kind}:{value.lower()}"}
    missing = san_entries(tls_names) - sans
    assert not missing, f"the certificate lacks {sorted(missing)} (it has {sorted(sans)})"


def test_the_configuration_is_private(host):
    f = host.file(f"{CONFIG_DIR}/config.yml")
    assert f.mode & 0o007 == 0, f"config.yml is readable by every user ({f.mode:o})"
    assert f.group == SERVICE_USER
