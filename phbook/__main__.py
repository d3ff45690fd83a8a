"""``python -m phbook``: the ``phbook`` command (see :mod:`phbook.cli`)."""

import sys

from .cli import main

sys.exit(main())
