"""The fleet scenario's judge (tests/molecule/fleet/files/check_roll.py) on collected runs
built here: it passes what the scenario should produce and names each way it can go wrong,
so a 30-minute Molecule run is not what finds a slip in the judge."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CHECK = Path(__file__).resolve().parents[1] / "molecule" / "fleet" / "files" / "check_roll.py"
HOSTS = ["fleet-a", "fleet-b", "fleet-c"]
GATES = ["--broken", "fleet-b", "--gateway", "fleet-gw"]


def v(n: int, host: str = "") -> str:
    tag = "cpu-3-broken" if (n, host) == (3, "fleet-b") else f"cpu-{n}"
    return f"kokoro-deploy/kokoro:{tag}, models /opt/kokoro-deploy/models-{n}, settings 0123abcd"


def report(host: str, outcome: str, t0: float, version: str, **extra) -> dict:
    return {
        "host": host,
        "outcome": outcome,
        "started": t0,
        "finished": t0 + 10,
        "version": version,
        "drained_at": ["fleet-gw"],
        **extra,
    }


def good_runs() -> dict:
    """What the scenario should collect: run name -> (run.json, reports, output)."""
    runs = {}
    t = 1000.0
    rolls = {
        "roll-1": {h: ("updated", v(2)) for h in HOSTS},
        "roll-2": {"fleet-a": ("updated", v(3)), "fleet-b": ("rolled_back", v(2))},
        "roll-3": {h: ("updated", v(4)) for h in HOSTS},
    }
    for name, outcomes in rolls.items():
        reps = {}
        for h, (outcome, version) in outcomes.items():
            failed = outcome == "rolled_back"
            extra = {"check": "health (docker compose up --wait)"} if failed else {}
            reps[h] = report(h, outcome, t, version, **extra)
            t += 20
        out = "PLAY RECAP"
        rc = 0
        if name == "roll-2":
            rc = 2
            out = (
                "Rolling update stopped at fleet-b. Failing check:\n health (docker compose"
                " up --wait).\nNO MORE HOSTS LEFT"
            )
        runs[name] = ({"rc": rc, "seconds": 60.0}, reps, out)
    back = {"fleet-a": v(3), "fleet-b": v(2), "fleet-c": v(2)}
    reps, out = {}, []
    for h in HOSTS:
        reps[h] = report(h, "rolled_back", t, back[h], went_back_to=back[h], went_back_from=v(4))
        out.append(f'"msg": "{h} went back from {v(4)}\n to {back[h]}."')
        t += 20
    runs["rollback-1"] = ({"rc": 0, "seconds": 60.0}, reps, "\n".join(out))
    runs["rollback-2"] = (
        {"rc": 2, "seconds": 9.0},
        {},
        'fatal: [fleet-a]: FAILED! => {"msg": "fleet-a: no previous known-good version in x"}',
    )
    runs["site"] = (
        {"rc": 2, "seconds": 20.0},
        {},
        "\n".join(
            f'"msg": "{h} runs version {back[h]} (recorded t by \\"p\\"); this run asks for\n'
            f' version {v(4)}. Differences: ..."'
            for h in HOSTS
        ),
    )
    return runs


def write(tmp_path: Path, runs: dict, polls: dict | None = None) -> Path:
    for name, (run, reps, out) in runs.items():
        d = tmp_path / name
        d.mkdir()
        (d / "run.json").write_text(json.dumps(run))
        (d / "output.log").write_text(out)
        for h, r in reps.items():
            (d / f"{h}.json").write_text(json.dumps(r))
    (tmp_path / "poll").mkdir()
    if polls is None:
        # A request every 2 s on each client from before the first roll to after the rollback.
        polls = {
            h: [{"t": 990.0 + 2 * i, "ok": True, "kind": "speech", "ms": 900.0} for i in range(130)]
            for h in [*HOSTS, "fleet-gw"]
        }
    for h, reqs in polls.items():
        (tmp_path / "poll" / f"{h}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reqs))
    return tmp_path


def judge(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CHECK), str(path), "--hosts", *HOSTS, *GATES],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_runs_the_scenario_should_produce_pass(tmp_path):
    done = judge(write(tmp_path, good_runs()))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rollback-1: fleet-a from " + v(4) + " to " + v(3) in done.stdout


def _wrong_back_to(runs):
    runs["rollback-1"][1]["fleet-a"]["went_back_to"] = v(2)


def _second_rollback_passed(runs):
    runs["rollback-2"] = ({"rc": 0, "seconds": 60.0}, {}, "PLAY RECAP")


def _second_rollback_drained(runs):
    run, reps, out = runs["rollback-2"]
    drained = "\nTASK [Take the host out of service at the fleet gateways.]"
    runs["rollback-2"] = (run, reps, out + drained)


def _site_converged(runs):
    runs["site"] = ({"rc": 0, "seconds": 300.0}, {}, "PLAY RECAP")


def _site_named_one_version(runs):
    run, reps, out = runs["site"]
    runs["site"] = (run, reps, out.replace(f"asks for\n version {v(4)}", "asks for a change"))


def _roll_3_failed(runs):
    _run, reps, out = runs["roll-3"]
    reps["fleet-c"]["outcome"] = "rolled_back"
    runs["roll-3"] = ({"rc": 2, "seconds": 60.0}, reps, out)


def _rollback_not_drained(runs):
    runs["rollback-1"][1]["fleet-b"]["drained_at"] = []


@pytest.mark.parametrize(
    ("spoil", "said"),
    [
        (_wrong_back_to, "rollback-1: fleet-a went back from"),
        (_second_rollback_passed, "rollback-2 exited 0"),
        (_second_rollback_drained, "rollback-2 drained a host"),
        (_site_converged, "the plain site.yml exited 0"),
        (_site_named_one_version, "did not refuse fleet-a naming both versions"),
        (_roll_3_failed, "roll-3: fleet-c is not reported updated"),
        (_rollback_not_drained, "rollback-1: fleet-b was drained at []"),
    ],
)
def test_each_way_the_runs_go_wrong_is_named(tmp_path, spoil, said):
    runs = good_runs()
    spoil(runs)
    done = judge(write(tmp_path, runs))
    assert done.returncode == 1
    assert said in done.stdout, done.stdout


def test_a_failed_request_on_another_host_during_the_rollback_is_named(tmp_path):
    runs = good_runs()
    polls = {
        h: [{"t": 990.0 + 2 * i, "ok": True, "kind": "speech", "ms": 900.0} for i in range(130)]
        for h in [*HOSTS, "fleet-gw"]
    }
    during_a = runs["rollback-1"][1]["fleet-a"]["started"] + 4
    polls["fleet-c"].append({"t": during_a, "ok": False, "kind": "speech", "ms": 5.0})
    done = judge(write(tmp_path, runs, polls))
    assert done.returncode == 1
    assert "fleet-c failed a request outside its own update" in done.stdout, done.stdout


def test_retries_on_connections_closed_unanswered_are_bounded_by_the_reloads(tmp_path):
    runs = good_runs()
    polls = {
        h: [{"t": 990.0 + 2 * i, "ok": True, "kind": "speech", "ms": 900.0} for i in range(130)]
        for h in [*HOSTS, "fleet-gw"]
    }
    polls["fleet-gw"][10]["retried"] = 1
    done = judge(write(tmp_path, runs, polls))
    assert done.returncode == 0, done.stdout
    assert "fleet-gw: 1 requests retried" in done.stdout
    # More than one a reload (2 per host update or rollback: 22 here) is the gateway's fault.
    for r in polls["fleet-gw"][5:30]:
        r["retried"] = 1
    (tmp_path / "again").mkdir()
    done = judge(write(tmp_path / "again", runs, polls))
    assert done.returncode == 1
    assert "connections closed unanswered in 22 reloads" in done.stdout, done.stdout


def _poller():
    import importlib.util

    path = CHECK.parent / "fleet_poller.py"
    spec = importlib.util.spec_from_file_location("fleet_poller", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _server(answers: list[bool]):
    """A loopback HTTP server: for each connection in turn, answer /health (True) or
    close the connection unanswered (False)."""
    import socket
    import threading

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()

    def run():
        for answer in answers:
            conn, _ = sock.accept()
            with conn:
                conn.recv(65536)
                if answer:
                    body = b'{"status": "ok"}'
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
                    )
        sock.close()

    threading.Thread(target=run, daemon=True).start()
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_the_client_retries_a_connection_closed_unanswered_once_and_says_so():
    poller = _poller()
    line = poller.one("health", _server([False, True]), 5.0)
    assert (line["ok"], line["retried"], line["status"]) == (True, 1, 200)
    line = poller.one("health", _server([False, False]), 5.0)
    assert (line["ok"], line["retried"]) == (False, 0)
    assert line["error"].startswith("RemoteDisconnected")
    line = poller.one("health", _server([True]), 5.0)
    assert (line["ok"], line["retried"]) == (True, 0)
