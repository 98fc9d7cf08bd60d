"""tools/role_docs.py: every role's README variable table is the one its argument spec
renders, every spec option is in its README, and the renderer keeps a table valid
whatever a description holds."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import role_docs
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "tasks").is_dir())


def _cells(row: str) -> list[str]:
    """A markdown table row split as GFM splits it: on each ``|`` not escaped."""
    assert row.startswith("| ") and row.endswith(" |"), row
    return [c.strip() for c in re.split(r"(?<!\\)\|", row[1:-1])]


def _block(readme: str) -> str:
    assert readme.count(role_docs.BEGIN) == 1 and readme.count(role_docs.END) == 1
    start = readme.index(role_docs.BEGIN)
    return readme[start : readme.index(role_docs.END, start) + len(role_docs.END)]


@pytest.mark.parametrize("role", ROLES)
def test_readme_variable_table_is_the_one_its_argument_spec_renders(role):
    readme = (REPO / "roles" / role / "README.md").read_text()
    assert _block(readme) == role_docs.role_block(REPO / "roles" / role), (
        f"roles/{role}/README.md differs from its argument spec: run python tools/role_docs.py"
    )
    section = readme.split("## Role Variables", 1)[1].split("\n## ", 1)[0]
    assert role_docs.BEGIN in section, "the table belongs in the Role Variables section"


@pytest.mark.parametrize("role", ROLES)
def test_every_spec_option_of_every_entry_point_is_in_the_readme(role):
    spec, _ = role_docs.load_role(REPO / "roles" / role)
    block = _block((REPO / "roles" / role / "README.md").read_text())
    rows = {_cells(line)[0] for line in block.splitlines() if line.startswith("| `")}
    for name in spec["main"].get("options") or {}:
        if not name.startswith("__"):
            assert f"`{name}`" in rows, f"{name} has no row in roles/{role}/README.md"
    for entry, ep in spec.items():
        for name in ep.get("options") or {}:
            if not name.startswith("__"):
                assert f"`{name}`" in block, f"{entry}'s {name} is not in roles/{role}/README.md"


def test_the_check_mode_passes_on_the_kit():
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "role_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_stack_entry_points_share_mains_option_definitions():
    """One definition per option: plan, rollback and publish alias main's (anchors)."""
    text = (REPO / "roles" / "stack" / "meta" / "argument_specs.yml").read_text()
    spec = yaml.safe_load(text)["argument_specs"]
    for entry in ("plan", "rollback", "publish"):
        for name, option in spec[entry]["options"].items():
            assert option == spec["main"]["options"][name], f"{entry}'s {name} differs from main's"
            assert re.search(rf"^      {name}: \*{name}$", text, re.M), (
                f"{entry}'s {name} is written out again instead of aliasing main's (*{name})"
            )


# --- the renderer, on small specs in memory ----------------------------------------------

SPEC = {
    "main": {
        "short_description": "A role.",
        "options": {
            "demo_filter": {
                "type": "str",
                "default": "{{ items | select | list }}",
                "description": ["Pipes: a C(x | y) chain,", "or a b|c choice; see O(demo_list)."],
            },
            "demo_list": {
                "type": "list",
                "elements": "str",
                "default": ["a", "misaki[en]==0.9.4", "0444", ""],
                "description": "Kept in <repo>:<tag> form.",
            },
            "demo_required": {"type": "str", "required": True, "description": "Needed."},
            "demo_computed": {"type": "str", "description": "From facts."},
            "demo_unset": {"type": "str", "description": "Nothing."},
            "__demo_private": {"type": "str", "default": "x", "description": "Internal."},
        },
    },
    "extra": {
        "short_description": "Another entry point.",
        "options": {
            "demo_unset": {"type": "str", "description": "Nothing."},
            "demo_own": {"type": "int", "default": 3, "description": "Its own."},
        },
    },
}


def _rows(block: str) -> dict[str, list[str]]:
    rows = {}
    for line in block.splitlines():
        if line.startswith("| `"):
            cells = _cells(line)
            rows.setdefault(cells[0], cells)
    return rows


def test_a_pipe_in_a_description_or_default_keeps_the_row_three_cells():
    block = role_docs.render_block(SPEC, {"demo_computed": "{{ ansible_facts['x'] }}"})
    line = next(x for x in block.splitlines() if x.startswith("| `demo_filter`"))
    cells = _cells(line)
    assert len(cells) == 3, line
    assert cells[1] == '`"{{ items \\| select \\| list }}"`'
    assert cells[2] == "Pipes: a `x \\| y` chain, or a b\\|c choice; see `demo_list`."


def test_defaults_render_as_inline_yaml_and_missing_ones_say_why():
    rows = _rows(role_docs.render_block(SPEC, {"demo_computed": "{{ ansible_facts['x'] }}"}))
    assert rows["`demo_list`"][1] == '`[a, "misaki[en]==0.9.4", "0444", ""]`'
    assert rows["`demo_list`"][2] == "Kept in \\<repo>:\\<tag> form."
    assert rows["`demo_required`"][1] == "required"
    assert rows["`demo_computed`"][1] == "set in `defaults/main.yml`"
    assert rows["`demo_unset`"][1] == "unset"
    assert "`__demo_private`" not in rows


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "null"),
        (True, "true"),
        (0.05, "0.05"),
        ("", '""'),
        ("5/minute", "5/minute"),
        ("kokoro-deploy-drop: ", '"kokoro-deploy-drop: "'),
        ("2.9.1", "2.9.1"),
        ("0.0.0.0", "0.0.0.0"),
        ("true", '"true"'),
        ({}, "{}"),
        ({"a": [1, "x,y"]}, '{a: [1, "x,y"]}'),
    ],
)
def test_yaml_inline_reads_back_as_the_value(value, text):
    assert role_docs.yaml_inline(value) == text
    assert yaml.safe_load(text) == value


def test_other_entry_points_name_shared_options_and_table_their_own():
    block = role_docs.render_block(SPEC)
    assert "- `extra`: Another entry point. Options: `demo_unset`." in block
    own = block.split("Entry point `extra`, options of its own:", 1)[1]
    assert "| `demo_own` | `3` | Its own. |" in own


def test_a_readme_without_markers_gets_the_block_in_place_of_its_table():
    readme = (
        "# demo\n\n## Role Variables\n\nIntro.\n\n| variable | default | meaning |\n"
        "| --- | --- | --- |\n| `old` | `1` | gone |\n\nAfter.\n\n## Example Playbook\n"
    )
    block = role_docs.render_block(SPEC)
    new = role_docs.updated_readme(readme, block)
    assert new == readme.split("| variable")[0] + block + "\n\nAfter.\n\n## Example Playbook\n"
    assert role_docs.updated_readme(new, block) == new
    bare = "# demo\n\n## Role Variables\n\nText.\n"
    want = f"# demo\n\n## Role Variables\n\n{block}\n\nText.\n"
    assert role_docs.updated_readme(bare, block) == want


def test_check_names_a_stale_readme_and_writes_nothing(tmp_path):
    roles = tmp_path / "roles"
    shutil.copytree(REPO / "roles" / "apt_bundle", roles / "apt_bundle")
    readme = roles / "apt_bundle" / "README.md"
    stale = readme.read_text().replace("one folder per index checksum", "somewhere")
    readme.write_text(stale)
    tool = [sys.executable, str(REPO / "tools" / "role_docs.py"), "--roles-dir", str(roles)]
    proc = subprocess.run([*tool, "--check"], capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert "roles/apt_bundle/README.md differs" in proc.stdout
    assert "python tools/role_docs.py" in proc.stdout
    assert readme.read_text() == stale
    assert subprocess.run(tool, capture_output=True, check=False).returncode == 0
    assert subprocess.run([*tool, "--check"], capture_output=True, check=False).returncode == 0
