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
  ansible-lint -q || return; log "ansible-lint: clean (production profile)"
  ruff check . || return; log "ruff: clean"
}
stage_unit() { pytest tests/unit --junitxml="$KOKORO_CI_RESULTS/unit.xml"; }
stage_server() {
  images/kokoro/tests/spacy_model.sh || return
  bash tests/testbed/browser.sh || return  # Debian's chromium + chromedriver (web player)
  pytest images/kokoro/tests images/llm/tests --junitxml="$KOKORO_CI_RESULTS/server.xml"
}
stage_molecule() { tests/molecule/run.sh; }

for stage in "$@"; do
  declare -F "stage_$stage" >/dev/null || die "unknown stage: $stage"
done
# Every stage's test results, for the closing line (tests/ci_summary.py); Molecule's
# scenarios record their own (tests/molecule/run.sh).
export KOKORO_CI_RESULTS="$root/.cache/ci"
rm -rf "$KOKORO_CI_RESULTS" && mkdir -p "$KOKORO_CI_RESULTS"
total=$(date +%s) rc=0
for stage in "$@"; do
  timed "$stage" "stage_$stage" || rc=$?
  [ "$stage" = molecule ] || echo "$stage $rc" >>"$KOKORO_CI_RESULTS/steps"
  [ "$rc" -eq 0 ] || break
done
printf '[time] %-22s %4ss\n' "all stages" "$(( $(date +%s) - total ))" >&2
# .ci/run prints the line itself, last, after its own total time.
[ -n "${KOKORO_CI_SUMMARY_BY_CALLER:-}" ] || python3 tests/ci_summary.py "$KOKORO_CI_RESULTS"
exit "$rc"
