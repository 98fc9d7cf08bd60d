"""Every role keeps the kit's conventions: an argument spec that matches its defaults,
role-prefixed variables, a Molecule scenario and a README of its own."""

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "tasks").is_dir())


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


@pytest.mark.parametrize("role", ROLES)
def test_role_defaults_are_prefixed_and_match_the_argument_spec(role):
    defaults = _load(REPO / "roles" / role / "defaults" / "main.yml")
    specs = _load(REPO / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]
    options = specs["main"].get("options", {})
    assert all(name.startswith(f"{role}_") for name in defaults), (
        "prefix variables with the role name"
    )
    assert set(defaults) <= set(options), f"undocumented defaults: {set(defaults) - set(options)}"
    # Every entry point's options (stack's plan, rollback, publish too): a default the spec
    # documents is the one defaults/main.yml sets, and a documented default is really set.
    for entry, spec in specs.items():
        for name, option in (spec.get("options") or {}).items():
            if "default" not in option:
                continue
            assert name in defaults, f"{entry}: {name} documents a default defaults/main.yml lacks"
            assert option["default"] == defaults[name], f"{entry}: {name}: spec default differs"


# Roles converged by another role's scenario, and the playbook that scenario imports for
# them: monitoring watches the stack it sits beside, so one host converges both (and a
# second stack just to be monitored would cost CI 7 minutes); stack_proxy runs only
# inside stack, and the stack scenario has the proxy on (tests/acceptance/stack/test_proxy.py).
SCENARIO_OF = {
    "monitoring": ("stack", "ansible/monitoring.yml"),
    "stack_proxy": ("stack", "ansible/site.yml"),
}


@pytest.mark.parametrize("role", ROLES)
def test_role_has_a_molecule_scenario_and_a_readme(role):
    scenario, playbook = SCENARIO_OF.get(role, (role, None))
    assert (REPO / "tests" / "molecule" / scenario / "molecule.yml").is_file()
    if playbook:
        converge = (REPO / "tests" / "molecule" / scenario / "converge.yml").read_text()
        assert f"../../../{playbook}" in converge, f"{scenario}'s converge.yml skips {playbook}"
    readme = (REPO / "roles" / role / "README.md").read_text()
    for section in ("## Requirements", "## Role Variables", "## Example Playbook"):
        assert section in readme, f"roles/{role}/README.md lacks {section}"
    assert f"(roles/{role}/README.md)" in (REPO / "README.md").read_text(), "list it in README"
