"""``python -m lnbench.gpu``: the GPU check (``lnbench gpu-check``); also the entry point of
its worker and probe processes."""

import sys

from lnbench.gpu.check import main

sys.exit(main())
