#!/usr/bin/env bash
# Installs gan_jax with its test and aot extras and runs the default test suite (README command 2).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -e ".[test,aot]"
status=0
# Two pytest workers (one per core here; PYTEST_WORKERS=0 runs serially); a test file stays on one
# worker, so its module-scoped fixtures (compiled steps, built datasets) are built once.
python -m pytest -q -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing." >&2
  exit 1
fi
exit "$status"
