"""``python -m securegaze.cli``: the ``securegaze`` command."""

import sys

from securegaze.cli import main

sys.exit(main())
