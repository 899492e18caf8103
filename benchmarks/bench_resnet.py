"""Run the speed benchmark (``fmdconv bench``) from the checkout's root, so its results land in
``benchmarks/results/<machine>/`` of this checkout whatever the current folder.

Usage: ``python benchmarks/bench_resnet.py [--full] [--device cuda] [--threads N] [--authors-code DIR]``
(a relative ``--out`` is taken from the checkout's root); the logic lives in
:mod:`fmdconv.profiling.bench`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from fmdconv.cli import main

if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parent.parent)
    sys.exit(main(["bench", *sys.argv[1:]]))
