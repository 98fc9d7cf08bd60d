#!/usr/bin/env bash
# Run Molecule scenarios one after another (all of them, or those named), print how
# long each took and close with the counts. Scenarios share the test-bed images.
#   tests/molecule/run.sh [SCENARIO...]
#   MOLECULE_SKIP="a b" tests/molecule/run.sh   (all but a and b)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/testbed/lib.sh
. "$here/../testbed/lib.sh"
cd "$here/.."   # Molecule finds scenarios under ./molecule
# Each play ends with its slowest tasks in the log: where a scenario's time goes.
export ANSIBLE_CALLBACKS_ENABLED=${ANSIBLE_CALLBACKS_ENABLED:-ansible.posix.profile_tasks}
export PROFILE_TASKS_TASK_OUTPUT_LIMIT=${PROFILE_TASKS_TASK_OUTPUT_LIMIT:-12}

scenarios=("$@")
if [ ${#scenarios[@]} -eq 0 ]; then
  # All of them, less those in MOLECULE_SKIP (tests/stages.sh runs those on their own).
  for f in molecule/*/molecule.yml; do
    s=$(basename "$(dirname "$f")")
    [[ " ${MOLECULE_SKIP:-} " == *" $s "* ]] || scenarios+=("$s")
  done
fi
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

passed=0 failed=0 failures=()
for s in "${scenarios[@]}"; do
  log="${TMPDIR:-/tmp}/molecule-$s.log"
  rc=0
  timed "molecule $s" run_scenario "$s" "$log" || rc=$?
  [ -z "${KOKORO_CI_RESULTS:-}" ] || echo "molecule $s $rc" >>"$KOKORO_CI_RESULTS/steps"
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    grep -aE '^\S+ +: actions=|[0-9]+ passed' "$log" | sed 's/\x1b\[[0-9;]*m//g; s/^/  /' | tail -n 3
  else
    failed=$((failed + 1)); failures+=("$s")
    sed 's/\x1b\[[0-9;]*m//g' "$log" | tail -n 80
    echo "molecule $s failed; full log: $log"
  fi
done
echo "molecule: ${passed} passed, ${failed} failed${failures:+ (${failures[*]})}"
[ "$failed" -eq 0 ]
