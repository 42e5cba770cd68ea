#!/usr/bin/env bash
# SPS of a variant under each speed option set, side by side: bash benchmark/speed.sh [--script F] [--iterations N] [-- extra]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
exec "$PY" benchmark/speed.py "$@"
