#!/usr/bin/env bash
# Create or reuse the project-local virtual environment .venv and install the pinned set.
# Re-installs only when requirements.txt, constraints.txt or pyproject.toml change.
# Used by scripts/book.sh and scripts/test.sh; safe to run by hand.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "ehrseq needs Python >= 3.11; set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi

stamp=$(cat requirements.txt constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.ehrseq-stamp 2>/dev/null || true)" != "$stamp" ]; then
  echo "[setup] installing pinned requirements into .venv (first time: a few minutes)"
  start=$(date +%s)
  # -c constraints.txt pins every transitive dependency, torch included (no CUDA wheels on CPU).
  # pip byte-compiles each package on one core; --no-compile, then compileall on every core,
  # does the same work in about half the time on 2 cores (files that do not compile, such as
  # Python 2 examples shipped in some packages, are skipped as pip skips them).
  .venv/bin/python -m pip install --disable-pip-version-check -q --no-compile \
    -r requirements.txt -c constraints.txt
  .venv/bin/python -m pip install --disable-pip-version-check -q --no-deps -e .
  .venv/bin/python -m compileall -j 0 -qq .venv/lib/python3*/site-packages || true
  .venv/bin/python -m pip check
  echo "$stamp" > .venv/.ehrseq-stamp
  echo "[setup] done in $(( $(date +%s) - start )) s"
else
  echo "[setup] .venv is up to date"
fi
