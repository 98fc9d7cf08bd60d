"""Run a playbook against this machine (`-c local`), as the role tests do."""
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
