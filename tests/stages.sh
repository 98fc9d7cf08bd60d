#!/usr/bin/env bash
# Run test stages in order, each timed; stop at the first that fails.
#   tests/stages.sh STAGE...   (testbed lint unit server molecule)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=tests/testbed/lib.sh
. "$here/testbed/lib.sh"
cd "$root"

# A stage runs under `timed ... ||`, where bash ignores `set -e`: each step returns its
# own failure explicitly, or a failing linter before the last would pass unnoticed.
stage_testbed() { bash tests/testbed/up.sh; }
stage_lint() {
  yamllint -s . || return; log "yamllint: clean"
  # The roles' filter plugins import the kit's collection (kokoro.deploy), which
  # playbooks find beside them in ansible/collections; ansible-lint is told where.
  ANSIBLE_COLLECTIONS_PATH="$root/ansible/collections" ansible-lint -q || return
  log "ansible-lint: clean (production profile)"
  python3 tools/role_docs.py --check || return; log "role READMEs: variable tables match the specs"
  ruff check . || return; log "ruff: clean"
}
stage_unit() { pytest tests/unit --junitxml="$KOKORO_CI_RESULTS/unit.xml"; }
stage_server() {
  images/kokoro/tests/spacy_model.sh || return
  bash tests/testbed/browser.sh || return  # Debian's chromium + chromedriver (web player)
  pytest images/kokoro/tests images/llm/tests images/webui/tests images/comfyui/tests images/proxy/tests \
    --junitxml="$KOKORO_CI_RESULTS/server.xml"
}
# When the run includes Molecule, some scenarios start as soon as the test bed is up and
# run, one after another, beside lint, unit and server tests instead of after them:
# fleet, the longest (about 23 minutes alone), which needs nothing those stages build,
# and fills the core that Ansible-bound lint and unit tests leave idle; torch_runtime,
# which spends most of its time waiting on pip downloads. Their log and [time] lines are
# printed when the Molecule stage ends; their results count as usual. The stack scenario
# stays in the Molecule stage: it takes the LLM and Open WebUI images the server stage
# builds.
EARLY_SCENARIOS=(fleet torch_runtime)
early_pid=""
start_early_scenarios() {
  local log=$KOKORO_CI_RESULTS/molecule-early.log
  log "molecule ${EARLY_SCENARIOS[*]}: started beside the next stages (log: $log)"
  setsid tests/molecule/run.sh "${EARLY_SCENARIOS[@]}" >"$log" 2>&1 </dev/null &
  early_pid=$!
}
stop_early_scenarios() {  # on a failed run: the group, Molecule and Ansible with it
  [ -z "$early_pid" ] || kill -- "-$early_pid" 2>/dev/null || true
}
# Two lanes: a scenario keeps about half of the two cores busy (tests/molecule/run.sh).
stage_molecule() {
  local rc=0
  export MOLECULE_JOBS=${MOLECULE_JOBS:-2}
  if [ -z "$early_pid" ]; then tests/molecule/run.sh; return; fi
  MOLECULE_SKIP="${EARLY_SCENARIOS[*]}" tests/molecule/run.sh || rc=$?
  wait "$early_pid" || rc=$?
  early_pid=""
  cat "$KOKORO_CI_RESULTS/molecule-early.log"
  return "$rc"
}

for stage in "$@"; do
  declare -F "stage_$stage" >/dev/null || die "unknown stage: $stage"
done
# Every stage's test results, for the closing line (tests/ci_summary.py); Molecule's
# scenarios record their own (tests/molecule/run.sh).
export KOKORO_CI_RESULTS="$root/.cache/ci"
rm -rf "$KOKORO_CI_RESULTS" && mkdir -p "$KOKORO_CI_RESULTS"
trap stop_early_scenarios EXIT
total=$(date +%s) rc=0
for stage in "$@"; do
  timed "$stage" "stage_$stage" || rc=$?
  [ "$stage" = molecule ] || echo "$stage $rc" >>"$KOKORO_CI_RESULTS/steps"
  [ "$rc" -eq 0 ] || break
  if [ "$stage" = testbed ] && [[ " $* " == *" molecule "* ]]; then start_early_scenarios; fi
done
printf '[time] %-22s %4ss\n' "all stages" "$(( $(date +%s) - total ))" >&2
# .ci/run prints the line itself, last, after its own total time.
[ -n "${KOKORO_CI_SUMMARY_BY_CALLER:-}" ] || python3 tests/ci_summary.py "$KOKORO_CI_RESULTS"
exit "$rc"
