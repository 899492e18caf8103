"""Run the speed benchmark (``fmdconv bench``), writing ``benchmarks/results/<device>.json`` and ``.md``.

Usage: ``python benchmarks/bench_resnet.py [--full] [--device cuda] [--threads N]``; the logic lives in
:mod:`fmdconv.profiling.bench`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fmdconv.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--out", str(Path(__file__).resolve().parent / "results"), *sys.argv[1:]]))
