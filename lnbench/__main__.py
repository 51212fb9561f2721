import sys

from lnbench.cli import main

sys.exit(main())
