"""daemon.json as the docker_engine role writes it: the file that is there, with the
role's keys merged in. Pure functions, standard library only: the role's filters
(roles/docker_engine/filter_plugins/docker_engine.py) and
tests/unit/test_docker_engine_daemon_json.py import them."""

from __future__ import annotations

import copy


def managed_keys(registry_mirrors=(), insecure_registries=(), log_driver="",
                 log_max_size="", log_max_file=None, data_root=""):
    """The daemon.json keys the role's variables ask for. An empty value asks for
    nothing, so it leaves that key as it is."""
    keys = {}
    if registry_mirrors:
        keys["registry-mirrors"] = list(registry_mirrors)
    if insecure_registries:
        keys["insecure-registries"] = list(insecure_registries)
    if log_driver:
        keys["log-driver"] = log_driver
        if log_driver in ("json-file", "local") and log_max_size:
            opts = {"max-size": str(log_max_size)}
            if log_max_file not in (None, ""):
                opts["max-file"] = str(log_max_file)  # daemon.json wants strings here
            keys["log-opts"] = opts
    if data_root:
        keys["data-root"] = data_root
    return keys


def _merge(base: dict, extra: dict) -> dict:
    """Recursive for mappings (log-opts, runtimes); lists and scalars are replaced."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def merge_daemon_json(existing, managed, options=None, absent_keys=()):
    """existing (the parsed file, {} when there is none) with the managed keys, then
    the free-form options, merged in; top-level absent_keys removed. Keys that other
    roles added (the NVIDIA runtime) stay as they are."""
    if not isinstance(existing, dict):
        raise ValueError("the current daemon.json is not a JSON object")
    merged = _merge(_merge(existing, managed), options or {})
    for key in absent_keys:
        merged.pop(key, None)
    return merged
