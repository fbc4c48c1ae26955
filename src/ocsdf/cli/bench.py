"""``ocsdf bench STUDY``: the benchmark studies, one module ``ocsdf.bench.STUDY`` each
(:data:`ocsdf.cli.BENCH_MODULES`), registered through their ``register(subparsers)``."""

from __future__ import annotations

import argparse

from . import BENCH_MODULES, import_optional

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction, studies: bool = True) -> None:
    """Add ``bench`` and, under it (when ``studies``), every study whose module exists."""
    p = subparsers.add_parser("bench", help="run a benchmark study",
                              description="Benchmark studies; each writes its table under "
                              "docs/results/.")
    sub = p.add_subparsers(dest="study", metavar="STUDY", required=True)
    if not studies:  # only reached when the command line does not name "bench"
        return
    for name in BENCH_MODULES:
        module = import_optional(f"bench.{name}")
        if module is not None:
            module.register(sub)
