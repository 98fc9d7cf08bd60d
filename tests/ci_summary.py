"""One closing line over every test stage: `N passed, N failed, N skipped`.

Each pytest run (unit, server, every Molecule scenario's testinfra verify) writes a JUnit
XML file into the results folder; each stage or scenario writes one line, `NAME RC`, to
`steps` in the same folder. A test case counts once. A step that failed without a failed
test case of its own (a lint finding, a converge or idempotence failure) counts as one
failure, so the line never reads `0 failed` for a run that failed; nor does it when the whole run
exited non-zero before any step recorded (a venv that failed to install).

    python tests/ci_summary.py RESULTS_DIR [RUN_EXIT_STATUS]
"""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def count_junit(path: Path) -> tuple[int, int, int]:
    """(passed, failed, skipped) of one JUnit XML file; errors count as failures."""
    failed = skipped = total = 0
    for case in ET.parse(path).getroot().iter("testcase"):
        total += 1
        kinds = {child.tag for child in case}
        if kinds & {"failure", "error"}:
            failed += 1
        elif "skipped" in kinds:
            skipped += 1
    return total - failed - skipped, failed, skipped


def summarize(results: Path) -> tuple[int, int, int, list[str]]:
    passed = failed = skipped = 0
    failed_by_file: dict[str, int] = {}
    for xml in sorted(results.glob("*.xml")):
        p, f, s = count_junit(xml)
        passed, failed, skipped = passed + p, failed + f, skipped + s
        failed_by_file[xml.stem] = f
    untested: list[str] = []
    steps = results / "steps"
    for line in steps.read_text().splitlines() if steps.exists() else []:
        name, rc = line.rsplit(" ", 1)
        if rc != "0" and not failed_by_file.get(name.replace(" ", "-")):
            untested.append(name)
    return passed, failed + len(untested), skipped, untested


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: " + __doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    passed, failed, skipped, untested = summarize(Path(argv[1]))
    if len(argv) == 3 and argv[2] != "0" and failed == 0:
        untested.append(f"the run itself (exit status {argv[2]})")
        failed = 1
    for name in untested:
        print(f"failed outside a test case: {name}")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
