"""``python -m lnbench ...``: the ``lnbench`` command."""

import sys

from lnbench.cli import main

sys.exit(main())
