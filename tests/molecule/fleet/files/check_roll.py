#!/usr/bin/env python3
"""Judge the fleet scenario's runs from what side_effect.yml collected:

  DIR/<run>/                 each playbook's per-host reports (<host>.json), its output
                             (output.log) and its exit status and duration (run.json), for
                             roll-1..3 (rolling_update.yml), rollback-1 and rollback-2
                             (rollback.yml) and site (a plain site.yml)
  DIR/poll/<host>.jsonl      each host's loopback client and the gateway's client
                             (fleet_poller.py)

Rolls 1 and 3 must update every host; roll 2 must stop at --broken after rolling it back
and naming it and its failing check, with the hosts before it updated and the hosts after
it untouched. The first rollback must take every host back to the version it ran before
roll 3 and say so; the second must be refused before any host is drained (nothing further
back), and the plain site.yml, whose inventory names roll 3's version, refused on every
host with both versions named. While any host was being updated or rolled back (its
report's window), every other host must have answered every request (and answered some).
The gateway must have drained every host it fronts before that host's update, and
answered every request of its client from the first roll's start to the rollback's end,
some of them while each host was being updated. Prints a table and exits 1 with the
reasons when anything is off.

    check_roll.py DIR --hosts fleet-a fleet-b fleet-c --broken fleet-b --gateway fleet-gw
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load_roll(path: Path) -> tuple[dict, dict]:
    run = json.loads((path / "run.json").read_text())
    reports = {
        p.stem: json.loads(p.read_text())
        for p in sorted(path.glob("*.json"))
        if p.name != "run.json"
    }
    run["output"] = (path / "output.log").read_text(errors="replace")
    return run, reports


ROLLS = ("roll-1", "roll-2", "roll-3")
WINDOWED = (*ROLLS, "rollback-1")  # the runs that drain and change hosts


def flat(text: str) -> str:
    """Ansible folds long messages over lines: compare with whitespace collapsed."""
    return " ".join(text.split())


def version_before_roll_3(h: str, runs: dict) -> str | None:
    """The version a host ran before roll 3: the last earlier roll's report of it."""
    for name in ("roll-2", "roll-1"):
        if h in runs[name][1]:
            return runs[name][1][h].get("version")
    return None


def check_rolls(args, runs: dict) -> list[str]:
    problems = []
    for name in ("roll-1", "roll-3"):
        run, reps = runs[name]
        if run["rc"] != 0:
            problems.append(f"{name} exited {run['rc']}, expected 0")
        for h in args.hosts:
            if reps.get(h, {}).get("outcome") != "updated":
                problems.append(f"{name}: {h} is not reported updated: {reps.get(h)}")

    # Roll 2: hosts before the broken one updated, the broken one rolled back, the rest untouched.
    run2, rep2 = runs["roll-2"]
    i = args.hosts.index(args.broken)
    if run2["rc"] == 0:
        problems.append("roll 2 exited 0, expected a failure")
    for h in args.hosts[:i]:
        if rep2.get(h, {}).get("outcome") != "updated":
            problems.append(f"roll 2: {h} is not reported updated: {rep2.get(h)}")
    b = rep2.get(args.broken, {})
    if b.get("outcome") != "rolled_back":
        problems.append(f"roll 2: {args.broken} is not reported rolled back: {b}")
    if not str(b.get("check", "")).startswith("health"):
        problems.append(
            f"roll 2: {args.broken} failed check {b.get('check')!r}, expected the health check"
        )
    for h in args.hosts[i + 1 :]:
        if h in rep2:
            problems.append(f"roll 2: {h} was touched after the failure: {rep2[h]}")
    said = f"Rolling update stopped at {args.broken}. Failing check: {b.get('check')}."
    if said not in flat(run2["output"]):
        problems.append(f"roll 2's output does not report {said!r}")
    if "NO MORE HOSTS LEFT" not in run2["output"]:
        problems.append("roll 2's play did not stop (no 'NO MORE HOSTS LEFT' in its output)")
    return problems


def check_rollbacks(args, runs: dict) -> list[str]:
    """The rollback takes each host back one version; the second one and the plain
    site.yml are refused before anything changes."""
    problems = []
    run, reps = runs["rollback-1"]
    if run["rc"] != 0:
        problems.append(f"rollback-1 exited {run['rc']}, expected 0")
    for h in args.hosts:
        r = reps.get(h, {})
        want_to = version_before_roll_3(h, runs)
        want_from = runs["roll-3"][1].get(h, {}).get("version")
        if r.get("outcome") != "rolled_back":
            problems.append(f"rollback-1: {h} is not reported rolled back: {r}")
        elif (r.get("went_back_to"), r.get("went_back_from")) != (want_to, want_from):
            problems.append(
                f"rollback-1: {h} went back from {r.get('went_back_from')!r} to "
                f"{r.get('went_back_to')!r}, expected from {want_from!r} to {want_to!r}"
            )
        elif f"{h} went back from {want_from} to {want_to}." not in flat(run["output"]):
            problems.append(f"rollback-1's output does not say where {h} went back to")

    run, reps = runs["rollback-2"]
    first = args.hosts[0]
    if run["rc"] == 0:
        problems.append("rollback-2 exited 0, expected a refusal")
    if reps:
        problems.append(f"rollback-2 reported hosts it should not have touched: {sorted(reps)}")
    if f"{first}: no previous known-good version" not in flat(run["output"]):
        problems.append(f"rollback-2's output does not refuse {first}: no previous version")
    if "Take the host out of service" in run["output"]:
        problems.append("rollback-2 drained a host before refusing")

    run, _reps = runs["site"]
    out = flat(run["output"])
    if run["rc"] == 0:
        problems.append("the plain site.yml exited 0, expected a refusal")
    for h in args.hosts:
        now = runs["rollback-1"][1].get(h, {}).get("went_back_to")
        asked = runs["roll-3"][1].get(h, {}).get("version")
        named = f"{h} runs version {now} (" in out and f"asks for version {asked}." in out
        if not named:
            problems.append(
                f"the plain site.yml did not refuse {h} naming both versions ({now!r}, {asked!r})"
            )
    return problems


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--hosts", nargs="+", required=True)
    ap.add_argument("--broken", required=True)
    ap.add_argument("--gateway", required=True)
    args = ap.parse_args()

    runs = {name: load_roll(args.dir / name) for name in (*WINDOWED, "rollback-2", "site")}
    polls = {
        h: [
            json.loads(line)
            for line in (args.dir / "poll" / f"{h}.jsonl").read_text().splitlines()
            if line
        ]
        for h in [*args.hosts, args.gateway]
    }
    problems = check_rolls(args, runs) + check_rollbacks(args, runs)

    # Windows: [started, finished] of every host's update (or update and rollback).
    windows = [
        (h, r["started"], r["finished"], name)
        for name in WINDOWED
        for h, r in runs[name][1].items()
    ]
    print(
        f"{'host':10} {'requests':>8} {'failed':>6} {'failed outside own update':>26}  "
        "answered while each other host was updated"
    )
    for h in args.hosts:
        reqs = polls[h]
        own = [(s, f) for (g, s, f, _n) in windows if g == h]
        failed = [r for r in reqs if not r["ok"]]
        outside = [r for r in failed if not any(s <= r["t"] <= f for s, f in own)]
        during = []
        for g, s, f, n in windows:
            if g == h:
                continue
            inside = [r for r in reqs if s <= r["t"] <= f]
            ok = sum(r["ok"] for r in inside)
            during.append(f"{g}@{n}: {ok}/{len(inside)}")
            if not inside or ok != len(inside):
                problems.append(
                    f"{h} answered {ok} of {len(inside)} requests while {g} was updated ({n})"
                )
        print(f"{h:10} {len(reqs):8} {len(failed):6} {len(outside):26}  {', '.join(during)}")
        for r in outside[:5]:
            problems.append(f"{h} failed a request outside its own update: {r}")
        if not any(r["kind"] == "speech" and r["ok"] for r in reqs):
            problems.append(f"{h}: no speech request succeeded")

    problems += check_gateway(
        args.gateway, polls[args.gateway], windows, {n: runs[n][1] for n in WINDOWED}
    )

    for name, (run, _reps) in runs.items():
        print(f"{name}: exit {run['rc']}, {run['seconds']:.0f} s")
    b = runs["roll-2"][1].get(args.broken, {})
    back = {k: v.get("image") for k, v in (b.get("running") or {}).items()}
    print(
        f"roll 2 stopped at {args.broken}: check {b.get('check')!r}, "
        f"reason {b.get('summary')!r}; rolled back to {back} with {b.get('model_dir')}"
    )
    for name in WINDOWED:
        print(
            f"{name} per host: "
            + ", ".join(
                f"{h} {r['outcome']} in {r['finished'] - r['started']:.0f} s"
                for h, r in runs[name][1].items()
            )
        )
    for h, r in runs["rollback-1"][1].items():
        print(f"rollback-1: {h} from {r.get('went_back_from')} to {r.get('went_back_to')}")
    for p in problems:
        print("PROBLEM:", p)
    return 1 if problems else 0


def check_gateway(gateway: str, reqs: list[dict], windows: list, reports: dict) -> list[str]:
    """Every host drained at the gateway before its update; every request through the
    gateway answered during the rolls and the rollback, some of them during each host's
    update."""
    problems = []
    for n, reps in reports.items():
        for h, r in reps.items():
            if r.get("drained_at") != [gateway]:
                problems.append(
                    f"{n}: {h} was drained at {r.get('drained_at')}, expected [{gateway!r}]"
                )
    start = min(s for _h, s, _f, _n in windows)
    end = max(f for _h, _s, f, _n in windows)
    during = [r for r in reqs if start <= r["t"] <= end]
    failed = [r for r in during if not r["ok"]]
    speech = [r for r in during if r["kind"] == "speech"]
    per_host = []
    for h, s, f, n in windows:
        inside = [r for r in during if s <= r["t"] <= f]
        per_host.append(f"{h}@{n}: {sum(r['ok'] for r in inside)}/{len(inside)}")
        if not any(r["kind"] == "speech" and r["ok"] for r in inside):
            problems.append(f"{gateway}: no speech answered while {h} was updated ({n})")
    print(
        f"{gateway} (all hosts): {len(during)} requests during the rolls and the rollback, "
        f"{len(failed)} failed, "
        f"{sum(r['ok'] for r in speech)}/{len(speech)} speech answered; "
        f"while each host was updated: {', '.join(per_host)}"
    )
    if during:
        ms = sorted(r["ms"] for r in speech) or [0.0]
        print(f"{gateway} speech latency: median {ms[len(ms) // 2]:.0f} ms, max {ms[-1]:.0f} ms")
    else:
        problems.append(f"{gateway}: its client sent no request during the rolls")
    problems += [f"{gateway} failed a request during the rolls: {r}" for r in failed[:5]]
    # A connection closed unanswered is retried once by the client (fleet_poller.py); the
    # gateway reloads its config at each drain and undrain, and may drop at most one
    # connection a reload that way.
    retried = [r for r in during if r.get("retried")]
    reloads = 2 * len(windows)
    print(f"{gateway}: {len(retried)} requests retried on a connection closed unanswered "
          f"({reloads} reloads)")
    if len(retried) > reloads:
        problems.append(f"{gateway}: {len(retried)} connections closed unanswered in "
                        f"{reloads} reloads: {retried[:3]}")
    return problems


if __name__ == "__main__":
    sys.exit(main())
