"""``python -m simplepyq``: the same command line as the ``simplepyq`` script."""

from simplepyq.cli import main

raise SystemExit(main())
