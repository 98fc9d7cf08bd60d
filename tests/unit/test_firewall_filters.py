"""roles/firewall's filter plugin: sources split by address family with a clear error for
a bad one, and the lockout check's decision whether the running SSH connection (client
address, server port) survives the planned rules."""

import pytest
from ansible_collections.kokoro.deploy.plugins.module_utils import firewall_addresses as fw


def test_sources_are_split_by_family():
    out = fw.split_sources(["10.0.0.0/8", "192.0.2.7", "fd00:20::/48"])
    assert out["ip"] == ["10.0.0.0/8", "192.0.2.7/32"] and out["ip6"] == ["fd00:20::/48"]


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "not-an-address", "300.1.1.1"])
def test_a_bad_source_names_itself(bad):
    with pytest.raises(Exception, match="firewall_source_restricted_ports"):
        fw.split_sources([bad])


RESTRICTED = [{"port": 2222, "sources": ["10.20.0.0/16", "fd00:20::/48"]}]


@pytest.mark.parametrize(
    ("client", "port", "server", "allowed"),
    [
        ("192.0.2.9", 22, "", True),  # an open port, from anywhere
        ("192.0.2.9", 2222, "", False),  # restricted, from outside its sources
        ("10.20.3.4", 2222, "", True),  # restricted, from inside
        ("::ffff:10.20.3.4", 2222, "", True),  # an IPv4-mapped client
        ("fd00:20::5", 2222, "", True),
        ("fd00:21::5", 2222, "", False),
        ("", 2222, "", False),  # unknown client: open ports only
        ("192.0.2.9", 2200, "127.0.0.1", True),  # over loopback: always accepted
        ("fe80::1%eth0", 22, "", True),  # a zone id does not confuse it
    ],
)
def test_the_lockout_check_decides_like_the_rules(client, port, server, allowed):
    assert fw.connection_allowed(client, port, [22, 443], RESTRICTED, server=server) is allowed


def test_udp_restrictions_do_not_open_tcp():
    restricted = [{"port": 51820, "proto": "udp", "sources": ["0.0.0.0/0"]}]
    assert not fw.connection_allowed("192.0.2.9", 51820, [], restricted)
    assert fw.connection_allowed("192.0.2.9", 51820, [], restricted, proto="udp")
