#!/usr/bin/env bash
# The README's test command: lint, library tests, and every chapter under nbmake (profile smoke),
# its prose checked as the book shows it.
# Slow checks run only with EHRSEQ_SLOW=1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" EHRSEQ_PROFILE=smoke PYTHONHASHSEED=0 EHRSEQ_NO_PROGRESS=1
# two pytest workers on two cores: one thread each (two threads each made steps several times slower)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# No MPLBACKEND here: kernels must keep the inline backend or figures vanish from the outputs.

echo "[test] ruff"
ruff check lib tests notebooks scripts benchmarks
ruff format --check lib tests notebooks scripts benchmarks

echo "[test] pairing notebooks (py:percent -> ipynb, generated, never committed)"
jupytext --quiet --to ipynb notebooks/[0-9]*.py

echo "[test] pytest: library tests and notebooks (EHRSEQ_PROFILE=smoke)"
set +e
# --overwrite writes each executed chapter back to its generated .ipynb, where
# notebooks/conftest.py reads its prose with the glued values pasted in (ehrseq.prose)
pytest -q -n "${EHRSEQ_TEST_WORKERS:-2}" --dist loadfile --durations=15 \
  --nbmake --overwrite --nbmake-timeout=300 tests notebooks/[0-9]*.ipynb "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "[test] pytest collected no tests: treated as a failure" >&2
fi
exit "$rc"
