"""``python -m ehrseq.cli``: the same as the ``ehrseq`` command."""

from ehrseq.cli import main

raise SystemExit(main())
