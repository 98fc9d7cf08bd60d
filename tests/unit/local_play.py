"""Run a playbook against this machine (`-c local`), as the role tests do; run_role_tasks
writes the usual one: a role's task file, included as a play would."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_local_play(play: Path, variables: dict, *args: str,
                   env: dict | None = None) -> subprocess.CompletedProcess:
    """ansible-playbook from the running venv on `play`, with `variables` as extra vars
    (this interpreter for the tasks), the repository's roles and `env` added to the
    environment; never raises."""
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(REPO / "roles"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_COLLECTIONS_PATH=str(REPO / "ansible" / "collections"), **(env or {}))
    variables = {"ansible_python_interpreter": sys.executable, **variables}
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), *args, "-i", "localhost,",
         "-c", "local", "-e", json.dumps(variables), str(play)],
        capture_output=True, text=True, env=env, check=False)


def run_role_tasks(folder: Path, role: str, tasks_from: str, variables: dict, *args: str,
                   gather_subset: list[str] | None = None) -> subprocess.CompletedProcess:
    """roles/<role>/tasks/<tasks_from>.yml run by a play written to folder/play.yml
    (facts gathered only where `gather_subset` names some), as run_local_play runs it."""
    facts = (f"gather_facts: true\n  gather_subset: [{', '.join(gather_subset)}]"
             if gather_subset else "gather_facts: false")
    play = folder / "play.yml"
    play.write_text(f"""
- hosts: localhost
  {facts}
  tasks:
    - name: Run {role}'s {tasks_from} tasks.
      ansible.builtin.include_role:
        name: {role}
        tasks_from: {tasks_from}
""")
    return run_local_play(play, variables, *args)


def role_play(roles: list[str], tasks: str) -> str:
    """A play on this machine with the defaults and vars of `roles` (role_path: the first
    one's), running `tasks`: a task list indented four spaces, in str.format syntax with
    {repo} for the repository ({{{{ }}}} for Jinja's braces)."""
    files = "".join(f"    - {REPO}/roles/{role}/{kind}/main.yml\n"
                    for role in roles for kind in ("defaults", "vars"))
    return (f"\n- hosts: localhost\n  gather_facts: false\n  vars_files:\n{files}"
            f"  vars:\n    role_path: {REPO}/roles/{roles[0]}\n  tasks:\n"
            + tasks.format(repo=REPO))
