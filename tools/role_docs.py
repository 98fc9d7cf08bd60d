#!/usr/bin/env python3
"""Generate each role's "Role Variables" table from its meta/argument_specs.yml.

The argument spec is the one source of a role's options: their names, types, defaults
and meanings. This tool renders the spec's entry point ``main`` as a markdown table
(variable, default, meaning) and writes it into the role's README.md between two marker
comments, leaving the rest of the README as it is; the other entry points (stack's
``plan``, ``rollback``, ``publish``) get a note naming the options of ``main`` they take,
and a table of their own for any option ``main`` lacks or defines differently.

    python tools/role_docs.py [--check] [ROLE ...]

Without --check every README is rewritten where it differs. With --check nothing is
written; the exit status is 1 when a README differs (each one named, with a short diff).
A README without the markers gets them in place of the first table in its
"## Role Variables" section (or right under that heading).

Defaults: the spec's ``default``, as inline YAML. An option the spec gives no default is
"required" when the spec says so, "set in defaults/main.yml" when the role computes it
there (facts, other variables; its description says what it comes to), else "unset".

Python 3.11 standard library plus PyYAML.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
ROLES_DIR = REPO / "roles"
BEGIN = "<!-- BEGIN GENERATED: role variables (tools/role_docs.py) -->"
END = "<!-- END GENERATED -->"
HEADER = "| variable | default | meaning |\n| --- | --- | --- |"
FIX = "python tools/role_docs.py"

# Ansible's documentation markup (O(), C(), V(), I(), B(), U(), L(), M(), E(), P(), RV())
# as markdown.
_MARKUP = re.compile(r"\b([OCVIBUMEP]|RV|L)\(([^()]*)\)")


class RoleDocsError(Exception):
    """A role whose spec or README the tool cannot work with."""


# --- values ------------------------------------------------------------------------


def _plain_ok(text: str, flow: bool) -> bool:
    """Whether a string reads back as itself when written unquoted in YAML."""
    if text == "" or text != text.strip() or "\n" in text:
        return False
    if text[0] in "!&*{}[],#|>@`\"'%?:" or text.startswith("- "):
        return False
    if ": " in text or " #" in text or text.endswith(":"):
        return False
    if flow and any(c in text for c in ",[]{}"):
        return False
    try:
        return yaml.safe_load(text) == text
    except yaml.YAMLError:
        return False


def yaml_inline(value: Any, flow: bool = False) -> str:
    """A value as one line of YAML: flow lists and mappings, strings quoted only where
    YAML would read them as something else (then in double quotes)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return value if _plain_ok(value, flow) else json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(yaml_inline(v, flow=True) for v in value) + "]"
    if isinstance(value, dict):
        items = (
            f"{yaml_inline(k, flow=True)}: {yaml_inline(v, flow=True)}" for k, v in value.items()
        )
        return "{" + ", ".join(items) + "}"
    return json.dumps(value, ensure_ascii=False, default=str)


# --- markdown ------------------------------------------------------------------------


def code(text: str) -> str:
    """A markdown code span holding text exactly (fenced past any backticks in it), with
    ``|`` escaped so that it cannot end a table cell."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}".replace("|", "\\|")


def _escape_text(text: str) -> str:
    """Plain text for a table cell: ``|`` escaped, and a ``<`` that could open an HTML
    tag (``<repo>``) escaped so that renderers show it."""
    text = text.replace("|", "\\|")
    return re.sub(r"<(?=/?[A-Za-z][A-Za-z0-9-]*[\s/>]|[!?])", r"\\<", text)


def _markup(kind: str, arg: str) -> str:
    if kind in ("O", "C", "V", "M", "E", "P", "RV"):
        return code(arg)
    if kind == "I":
        return f"*{_escape_text(arg)}*"
    if kind == "B":
        return f"**{_escape_text(arg)}**"
    if kind == "U":
        return f"<{arg}>"
    title, _, url = arg.partition(",")
    return f"[{_escape_text(title.strip())}]({url.strip()})"


def cell_text(text: str) -> str:
    """A description as the text of one table cell: one line, Ansible markup as
    markdown, ``|`` escaped (in code spans too), no stray HTML."""
    text = " ".join(text.split())
    out, pos = [], 0
    for m in _MARKUP.finditer(text):
        out.append(_escape_text(text[pos : m.start()]))
        out.append(_markup(m.group(1), m.group(2)))
        pos = m.end()
    out.append(_escape_text(text[pos:]))
    return "".join(out)


def description(option: dict) -> str:
    desc = option.get("description", "")
    if isinstance(desc, list):
        desc = " ".join(str(d).strip() for d in desc)
    return cell_text(str(desc))


# --- tables --------------------------------------------------------------------------


def default_cell(name: str, option: dict, defaults: dict) -> str:
    if "default" in option:
        return code(yaml_inline(option["default"]))
    if option.get("required"):
        return "required"
    if name in defaults:
        return "set in `defaults/main.yml`"
    return "unset"


def option_row(name: str, option: dict, defaults: dict) -> str:
    return f"| {code(name)} | {default_cell(name, option, defaults)} | {description(option)} |"


def options_table(options: dict, defaults: dict) -> str:
    rows = [
        option_row(name, opt, defaults)
        for name, opt in options.items()
        if not name.startswith("__")
    ]
    return "\n".join([HEADER, *rows])


def _public(options: dict) -> dict:
    return {k: v for k, v in (options or {}).items() if not k.startswith("__")}


def render_block(spec: dict, defaults: dict | None = None) -> str:
    """The generated part of a README (markers included) for a parsed argument spec
    (the document's ``argument_specs`` mapping) and the role's defaults/main.yml."""
    defaults = defaults or {}
    if "main" not in spec:
        raise RoleDocsError("the argument spec has no entry point main")
    main = _public(spec["main"].get("options"))
    parts = [BEGIN, options_table(main, defaults) if main else "The role takes no options."]
    others = [ep for ep in spec if ep != "main"]
    if others:
        lines = [
            "",
            "Other entry points (`tasks_from:`) take these options, defined as in `main` above:",
            "",
        ]
        extra_tables = []
        for ep in others:
            options = _public(spec[ep].get("options"))
            shared = [n for n, o in options.items() if main.get(n) == o]
            own = {n: o for n, o in options.items() if main.get(n) != o}
            summary = cell_text(str(spec[ep].get("short_description", ""))).strip()
            summary = f"{summary.rstrip('.')}. " if summary else ""
            names = ", ".join(code(n) for n in shared) or "none"
            lines.append(f"- {code(ep)}: {summary}Options: {names}.")
            if own:
                extra_tables.append(
                    f"Entry point {code(ep)}, options of its own:\n\n"
                    + options_table(own, defaults)
                )
        parts.append("\n\n".join(["\n".join(lines), *extra_tables]))
    parts.append(END)
    return "\n".join(parts)


# --- READMEs -------------------------------------------------------------------------


def load_role(role_dir: Path) -> tuple[dict, dict]:
    """A role's argument_specs mapping and its defaults/main.yml (empty when absent)."""
    spec_path = role_dir / "meta" / "argument_specs.yml"
    if not spec_path.is_file():
        raise RoleDocsError(f"{spec_path} does not exist")
    spec = (yaml.safe_load(spec_path.read_text()) or {}).get("argument_specs")
    if not isinstance(spec, dict):
        raise RoleDocsError(f"{spec_path} has no argument_specs mapping")
    defaults_path = role_dir / "defaults" / "main.yml"
    defaults = yaml.safe_load(defaults_path.read_text()) if defaults_path.is_file() else {}
    return spec, defaults or {}


def role_block(role_dir: Path) -> str:
    return render_block(*load_role(role_dir))


def _insert_point(readme: str) -> tuple[int, int]:
    """Where a README without markers gets the block: the span of the first table in its
    "## Role Variables" section, else an empty span right under the heading."""
    heading = re.search(r"^## Role Variables[ \t]*\n", readme, re.M)
    if not heading:
        raise RoleDocsError("no '## Role Variables' section to put the table in")
    nxt = re.search(r"^## ", readme[heading.end() :], re.M)
    section_end = heading.end() + (nxt.start() if nxt else len(readme) - heading.end())
    table = re.search(r"(?:^\|.*\n)+", readme[heading.end() : section_end], re.M)
    if table:
        return heading.end() + table.start(), heading.end() + table.end() - 1
    return heading.end(), heading.end()


def updated_readme(readme: str, block: str) -> str:
    """The README text with its generated block replaced by (or, first time, set to) block."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start != -1 and end != -1 and end > start:
        return readme[:start] + block + readme[end + len(END) :]
    if start != -1 or end != -1:
        raise RoleDocsError("one of the generated-block markers is missing")
    begin, stop = _insert_point(readme)
    if begin == stop:
        return readme[:begin] + "\n" + block + "\n" + readme[stop:]
    return readme[:begin] + block + readme[stop:]


def role_dirs(names: list[str] | None = None, roles_dir: Path = ROLES_DIR) -> list[Path]:
    if names:
        dirs = [roles_dir / n for n in names]
        missing = [d.name for d in dirs if not d.is_dir()]
        if missing:
            raise RoleDocsError(f"no such role: {', '.join(missing)}")
        return dirs
    return sorted(p for p in roles_dir.iterdir() if (p / "meta" / "argument_specs.yml").is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 naming each README that differs"
    )
    parser.add_argument(
        "--roles-dir", type=Path, default=ROLES_DIR, help="the roles folder (default: the kit's)"
    )
    parser.add_argument("roles", nargs="*", metavar="ROLE", help="roles (default: all)")
    args = parser.parse_args(argv)
    stale = []
    try:
        for role_dir in role_dirs(args.roles, args.roles_dir):
            path = role_dir / "README.md"
            rel = str(path.relative_to(args.roles_dir.parent))
            old = path.read_text() if path.is_file() else ""
            try:
                new = updated_readme(old, role_block(role_dir))
            except RoleDocsError as err:
                raise RoleDocsError(f"{rel}: {err}") from None
            if new == old:
                continue
            if args.check:
                stale.append(rel)
                diff = difflib.unified_diff(
                    old.splitlines(),
                    new.splitlines(),
                    f"{rel} (now)",
                    f"{rel} (generated)",
                    n=1,
                    lineterm="",
                )
                lines = list(diff)
                print(f"{rel} differs from its argument spec:")
                print("\n".join(lines[:40] + (["..."] if len(lines) > 40 else [])))
            else:
                path.write_text(new)
                print(f"wrote {rel}")
    except RoleDocsError as err:
        print(f"role_docs: {err}", file=sys.stderr)
        return 2
    if stale:
        print(
            f"\n{len(stale)} README(s) out of date: {', '.join(stale)}.\n"
            f"Edit meta/argument_specs.yml (not the table), then run: {FIX}"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
