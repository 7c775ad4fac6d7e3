#!/usr/bin/env bash
# Creates (idempotently) the project's Python venv in .venv with python/requirements-dev.txt,
# and prints the path of its python.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=.venv
python=${IKV_PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv" >&2
fi
stamp=$venv/.requirements-installed
if ! cmp -s "$stamp" python/requirements-dev.txt 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r python/requirements-dev.txt >&2
  cp python/requirements-dev.txt "$stamp"
fi
echo "$PWD/$venv/bin/python"
