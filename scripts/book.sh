#!/usr/bin/env bash
# The README's book command: build the HTML book, executing every chapter (profile book).
# Output: _build/html/index.html. A cell that raises fails the build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
unset MPLBACKEND  # the kernels need the inline backend, or figures vanish from the book
export EHRSEQ_NO_PROGRESS=1  # no progress bars in the rendered pages
export EHRSEQ_PROFILE=${EHRSEQ_PROFILE:-book}

# Executed outputs are cached by notebook text; a chapter whose text changed runs again, with
# the chapters that read what it writes (scripts/execute_chapters.py). Results also depend on
# the library, the shipped data and the profile, so drop the whole cache when any of those
# changed. Sphinx keeps its own record of every page it has read (_build/.doctrees) and would
# re-read only the changed ones, keeping stale outputs of the others: drop that record too.
inputs=$( (echo "$EHRSEQ_PROFILE"; find lib data -type f \( -name '*.py' -o -name '*.csv' -o -name '*.md' -o -name '*.toml' \) -print0 | sort -z | xargs -0 cat) | sha256sum | cut -d' ' -f1)
if [ "$(cat _build/.inputs-hash 2>/dev/null || true)" != "$inputs" ]; then
  rm -rf _build/.jupyter_cache _build/.doctrees
fi
mkdir -p _build
start=$(date +%s)
# Execute the chapters into the cache first, EHRSEQ_BOOK_JOBS at a time (default 2, one
# thread each: both cores busy); the build below then only renders. A failing chapter stops here.
python scripts/execute_chapters.py
jupyter-book build . -W -n --keep-going
echo "$inputs" > _build/.inputs-hash
echo "[book] built _build/html/index.html (profile $EHRSEQ_PROFILE) in $(( $(date +%s) - start )) s"
