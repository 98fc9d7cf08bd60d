"""The roles' filter plugins as Ansible loads them: roles/<role>/filter_plugins through
Ansible's own filter loader, for the tests that tie a filter name to the collection's
function (or check how the filter fails)."""

from pathlib import Path

from ansible.plugins.loader import filter_loader

REPO = Path(__file__).resolve().parents[2]


def role_filters(role: str, names) -> dict:
    """{name: the function Ansible runs for the filter `name`} of roles/<role>."""
    filter_loader.add_directory(str(REPO / "roles" / role / "filter_plugins"))
    return {name: filter_loader.get(name).j2_function for name in names}
