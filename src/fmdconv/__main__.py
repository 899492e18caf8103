"""``python -m fmdconv``: the ``fmdconv`` command (also what ``torchrun -m fmdconv train`` runs)."""

import sys

from fmdconv.cli import main

sys.exit(main())
