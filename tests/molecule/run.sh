#!/usr/bin/env bash
# Run Molecule scenarios (all of them, or those named), print how long each took and
# close with the counts. Scenarios share the test-bed images.
#   tests/molecule/run.sh [SCENARIO...]
#   MOLECULE_SKIP="a b" tests/molecule/run.sh   (all but a and b)
#   MOLECULE_JOBS=2 tests/molecule/run.sh       (two scenarios at a time; default 1)
# Each scenario has its own hosts, networks and log, so scenarios can run side by side:
# most of a scenario's time is spent waiting (systemd and engines starting, health
# checks, Ansible's round trips), about half of two cores busy. With MOLECULE_JOBS=N,
# N lanes take the next scenario from one queue, longest first.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/testbed/lib.sh
. "$here/../testbed/lib.sh"
cd "$here/.."   # Molecule finds scenarios under ./molecule
# Each play ends with its slowest tasks in the log: where a scenario's time goes.
export ANSIBLE_CALLBACKS_ENABLED=${ANSIBLE_CALLBACKS_ENABLED:-ansible.posix.profile_tasks}
export PROFILE_TASKS_TASK_OUTPUT_LIMIT=${PROFILE_TASKS_TASK_OUTPUT_LIMIT:-12}
jobs=${MOLECULE_JOBS:-1}
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || die "MOLECULE_JOBS is '$jobs': set it to the number of scenarios to run at a time (1 or more)"
# The longest scenarios start first, so that no lane is left with one of them at the end
# (docs/ci.md has their times); the others follow in name order.
LONGEST_FIRST=(fleet stack airgap registry)

scenarios=("$@")
if [ ${#scenarios[@]} -eq 0 ]; then
  # All of them, less those in MOLECULE_SKIP (tests/stages.sh runs those on their own).
  for s in "${LONGEST_FIRST[@]}"; do
    [ -f "molecule/$s/molecule.yml" ] && [[ " ${MOLECULE_SKIP:-} " != *" $s "* ]] && scenarios+=("$s")
  done
  for f in molecule/*/molecule.yml; do
    s=$(basename "$(dirname "$f")")
    [[ " ${MOLECULE_SKIP:-} ${LONGEST_FIRST[*]} " == *" $s "* ]] || scenarios+=("$s")
  done
fi
for s in "${scenarios[@]}"; do
  [ -f "molecule/$s/molecule.yml" ] || die "no scenario named $s (tests/molecule/$s/molecule.yml)"
done

# The log takes Molecule's output; the [time] line stays on the terminal. Under
# tests/stages.sh, testinfra's results and each scenario's exit status go to
# $KOKORO_CI_RESULTS for the closing summary line.
run_scenario() {
  if [ -n "${KOKORO_CI_RESULTS:-}" ]; then
    PYTEST_ADDOPTS="--junitxml=$KOKORO_CI_RESULTS/molecule-$1.xml" molecule test -s "$1" >"$2" 2>&1
  else
    molecule test -s "$1" >"$2" 2>&1
  fi
}

state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
printf '%s\n' "${scenarios[@]}" >"$state/queue"

# next_scenario: take the first name off the queue (empty when none is left). The lock
# is a file of its own: sed -i replaces the queue by a new file, so a lane waiting on
# the queue's own lock would hold the replaced one and read the same first line again.
next_scenario() {
  flock "$state/queue.lock" bash -c 'head -n 1 "$1"; sed -i 1d "$1"' _ "$state/queue"
}

# One scenario, its report printed whole (lanes do not interleave lines of a report).
run_one() {
  local s=$1 log="${TMPDIR:-/tmp}/molecule-$1.log" rc=0 report
  report=$( { timed "molecule $s" run_scenario "$s" "$log" || rc=$?
              if [ "$rc" -eq 0 ]; then
                grep -aE '^\S+ +: actions=|[0-9]+ passed' "$log" | sed 's/\x1b\[[0-9;]*m//g; s/^/  /' | tail -n 3
              else
                sed 's/\x1b\[[0-9;]*m//g' "$log" | tail -n 80
                echo "molecule $s failed; full log: $log"
              fi
              exit "$rc"; } 2>&1 ) || rc=$?
  [ -z "${KOKORO_CI_RESULTS:-}" ] || echo "molecule $s $rc" >>"$KOKORO_CI_RESULTS/steps"
  echo "$s $rc" >>"$state/results"
  flock "$state/results" printf '%s\n' "$report"
}

lane() {
  local s
  while s=$(next_scenario) && [ -n "$s" ]; do run_one "$s"; done
}

[ "$jobs" -eq 1 ] || log "molecule: ${#scenarios[@]} scenarios in $jobs lanes: ${scenarios[*]}"
for _ in $(seq "$jobs"); do lane & done
wait

failures=()
while read -r s rc; do [ "$rc" -eq 0 ] || failures+=("$s"); done <"$state/results"
passed=$(( $(wc -l <"$state/results") - ${#failures[@]} ))
echo "molecule: ${passed} passed, ${#failures[@]} failed${failures[*]:+ (${failures[*]})}"
[ ${#failures[@]} -eq 0 ] && [ "$(wc -l <"$state/results")" -eq ${#scenarios[@]} ]
