#!/usr/bin/env bash
# Run test stages in order, each timed; stop at the first that fails.
#   tests/stages.sh STAGE...   (testbed lint unit server molecule)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=tests/testbed/lib.sh
. "$here/testbed/lib.sh"
cd "$root"

stage_testbed() { bash tests/testbed/up.sh; }
stage_lint() {
  yamllint -s . && log "yamllint: clean"
  ansible-lint -q && log "ansible-lint: clean (production profile)"
  ruff check . && log "ruff: clean"
}
stage_unit() { pytest tests/unit; }
# Every server test, the 3,000-word one (marked slow, ~8 min on 2 cores) included.
stage_server() {
  images/kokoro/tests/spacy_model.sh
  bash tests/testbed/browser.sh   # Debian's chromium + chromedriver for the web player test
  pytest images/kokoro/tests images/llm/tests
}
stage_molecule() { tests/molecule/run.sh; }

total=$(date +%s)
for stage in "$@"; do
  declare -F "stage_$stage" >/dev/null || die "unknown stage: $stage"
  timed "$stage" "stage_$stage"
done
printf '[time] %-22s %4ss\n' "all stages" "$(( $(date +%s) - total ))" >&2
