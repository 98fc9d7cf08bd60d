"""How the docker_engine role merges /etc/docker/daemon.json: its keys go in, keys other
roles added (the NVIDIA container toolkit's runtime) stay, and the result is stable so
a second run writes nothing."""

import json

import pytest
from ansible_collections.kokoro.deploy.plugins.module_utils import docker_engine_daemon_json as de

# What `nvidia-ctk runtime configure --runtime=docker` writes.
NVIDIA = {
    "runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}},
    "default-runtime": "nvidia",
}


def test_merge_keeps_the_nvidia_runtime_and_adds_the_role_keys():
    managed = de.managed_keys(["https://mirror.local"], ["registry.lan:5000"], "json-file",
                              "10m", 3, "/srv/docker")
    merged = de.merge_daemon_json(NVIDIA, managed)
    assert merged["runtimes"] == NVIDIA["runtimes"]
    assert merged["default-runtime"] == "nvidia"
    assert merged["registry-mirrors"] == ["https://mirror.local"]
    assert merged["insecure-registries"] == ["registry.lan:5000"]
    assert merged["log-opts"] == {"max-size": "10m", "max-file": "3"}
    assert merged["data-root"] == "/srv/docker"


def test_merge_is_recursive_for_mappings_and_replaces_lists():
    existing = {"log-opts": {"labels": "team"}, "registry-mirrors": ["https://old.local"]}
    managed = de.managed_keys(["https://new.local"], log_driver="json-file", log_max_size="5m",
                              log_max_file=2)
    merged = de.merge_daemon_json(existing, managed)
    assert merged["log-opts"] == {"labels": "team", "max-size": "5m", "max-file": "2"}
    assert merged["registry-mirrors"] == ["https://new.local"]


def test_merge_of_a_converged_file_changes_nothing():
    managed = de.managed_keys(["https://mirror.local"], log_driver="json-file",
                              log_max_size="10m", log_max_file=3)
    once = de.merge_daemon_json(NVIDIA, managed)
    reread = json.loads(json.dumps(once, indent=2, sort_keys=True))
    assert de.merge_daemon_json(reread, managed) == reread


def test_empty_settings_leave_existing_keys_alone_and_absent_keys_go():
    existing = {"registry-mirrors": ["https://keep.local"], "debug": True}
    merged = de.merge_daemon_json(existing, de.managed_keys(), absent_keys=["debug"])
    assert merged == {"registry-mirrors": ["https://keep.local"]}


def test_options_are_merged_last_and_may_add_a_runtime():
    options = {"runtimes": {"crun": {"path": "/usr/bin/crun"}}, "features": {"buildkit": True}}
    merged = de.merge_daemon_json(NVIDIA, {}, options)
    assert set(merged["runtimes"]) == {"nvidia", "crun"}
    assert merged["features"] == {"buildkit": True}


def test_log_opts_only_for_drivers_that_rotate_files():
    assert "log-opts" not in de.managed_keys(log_driver="journald", log_max_size="10m")
    assert de.managed_keys(log_driver="local", log_max_size="10m", log_max_file=3)["log-opts"]


def test_merge_refuses_a_file_that_is_not_an_object():
    with pytest.raises(ValueError, match="not a JSON object"):
        de.merge_daemon_json(["not", "an", "object"], {})
