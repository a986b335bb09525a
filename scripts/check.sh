#!/usr/bin/env bash
# Every check `make test` runs, in order; the first failure stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== ruff"
ruff format --check .
ruff check .
echo "== mypy"; mypy .
echo "== generated code is up to date"
python scripts/gen_protos.py >/dev/null 2>&1
if [ -n "$(git status --porcelain -- gen)" ]; then
  git status --porcelain -- gen
  echo "gen/ differs from what protos/ generate: run 'make gen' and commit" >&2
  exit 1
fi
echo "== buf lint"; node_modules/.bin/buf lint
echo "== pytest"
set +e
pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"
