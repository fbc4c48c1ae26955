"""``ocsdf data``: write the one-class split of a built-in or benchmark data set as CSV."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import writing

__all__ = ["register", "cmd_data"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` sub-command to the ``ocsdf`` parser."""
    p = subparsers.add_parser(
        "data", help="write a one-class split of a built-in or benchmark data set as CSV",
        description="Write train.csv (normal rows), test_normal.csv and test_anomalous.csv for "
        "an ADBench set (half the normal rows to train, raw units; needs the data folder) or a "
        "2-D toy set (uniform anomalies in the ball of radius 5, standardised units).",
    )
    p.add_argument("name", help="ADBench short name (e.g. breastw, cardio) or a toy set (moons)")
    p.add_argument("--out-dir", required=True, help="folder to write the three CSV files to")
    p.add_argument("--seed", type=int, default=0, help="split seed (0)")
    p.add_argument("--data-dir", help="benchmark data folder (default: $OCSDF_DATA_DIR or "
                   "../shared/data)")
    p.set_defaults(func=cmd_data)


def cmd_data(args: argparse.Namespace) -> int:
    """``ocsdf data``: write the one-class split of a named data set as three CSVs."""
    import pandas as pd

    from ..data import oc_split
    from ..io import write_csv_atomic

    parts = oc_split(args.name, seed=args.seed, data_dir=args.data_dir)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [f"x{j}" for j in range(parts[0].shape[1])]
    for fname, x in zip(("train", "test_normal", "test_anomalous"), parts):
        with writing(out / f"{fname}.csv"):
            write_csv_atomic(pd.DataFrame(x, columns=names), out / f"{fname}.csv", header=True)
    print(f"wrote {out}/train.csv ({len(parts[0])} rows), test_normal.csv ({len(parts[1])}), "
          f"test_anomalous.csv ({len(parts[2])}); {len(names)} features")
    return 0
