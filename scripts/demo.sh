#!/usr/bin/env bash
# Installs celeriac into .venv and runs the demo on the embedded SQLite broker: a worker, a batch of
# tasks with live progress, results, a retry, a failure with its traceback, a workflow.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/python examples/demo/run.py "$@"
