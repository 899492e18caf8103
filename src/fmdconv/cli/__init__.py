"""The ``fmdconv`` command line.

Each module of this package that defines ``register(subparsers)`` adds one sub-command; the
function it registers with ``set_defaults(run=...)`` receives the parsed arguments and returns an
exit code. The process keeps the memory it frees for reuse
(:func:`fmdconv.utils.allocator.keep_freed_memory`): a CPU training step then no longer spends as
much time in the operating system as in arithmetic.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from fmdconv.utils.allocator import keep_freed_memory


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmdconv", description="Dynamic convolution toolkit (FMDConv, ODConv, DyConv, CondConv)."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
