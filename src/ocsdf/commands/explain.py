"""``ocsdf explain``: which features to change, and to what, to make each row normal.

Writes one CSV row per input row: the score, the certified radius, whether it is flagged, and
the top features with their current value, the value that would make the row normal and the
change (:meth:`ocsdf.explain.Explanation.to_frame`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError

__all__ = ["register", "cmd_explain", "load_model", "read_rows"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``explain`` sub-command to the ``ocsdf`` parser."""
    from ..cli import _column_list, _positive_int

    p = subparsers.add_parser(
        "explain", help="explain each row: the features to change to make it normal",
        description="For each row, find the nearest point the model scores as normal and list "
        "the features that change most. Writes CSV columns score (f, > 0 normal, standardised "
        "units), certified_radius (l2, raw feature units, around the threshold), flagged, "
        "distance, gap, reached, then feature_j, value_j, normal_value_j and change_j "
        "(raw units) for the top features j = 1..TOP.",
    )
    p.add_argument("model", metavar="DIR", help="model directory written by 'ocsdf fit'")
    p.add_argument("data", help="rows to explain (.csv, .npz, .parquet)")
    p.add_argument("-o", "--output", metavar="CSV", help="output CSV (default: stdout)")
    p.add_argument("--top", type=_positive_int, default=5,
                   help="features listed per row (5)")
    p.add_argument("--max-features", type=_positive_int, default=None, metavar="K",
                   help="change at most K features per row (default: any)")
    p.add_argument("--max-steps", type=_positive_int, default=50,
                   help="search steps per row (50)")
    p.add_argument("--columns", type=_column_list, metavar="A,B,...",
                   help="columns to use (default: the model's feature names when the file "
                   "has a header, else all columns)")
    p.add_argument("--device", default="cpu", help="torch device to score on (cpu)")
    p.set_defaults(func=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> int:
    """``ocsdf explain``: load a model, explain every row of a file, write the CSV. Returns 0."""
    from ..cli import _as_model_input, _write_rows
    from ..explain import explain

    model = load_model(args.model, args.device)
    X = read_rows(model, args.data, args.columns, args.model, allow_empty=True)
    data = _as_model_input(model, X)
    ex = explain(model, data, top=args.top, max_features=args.max_features,
                 max_steps=args.max_steps)
    out = ex.to_frame()
    # certified_radius needs a row; zero data rows give the header alone.
    radius = model.certified_radius(data) if len(X) else np.zeros(0)
    position = list(out.columns).index("score") + 1 if "score" in out.columns else 0
    out.insert(position, "certified_radius", radius)
    n_flag = int(np.asarray(ex.flagged, dtype=bool).sum())
    summary = (f"explained {len(out)} rows of {args.data}: {n_flag} flagged as outliers; "
               f"top {args.top} features per row (certified_radius: l2, raw feature units)")
    _write_rows(out, args.output, summary)
    return 0


def load_model(model_dir: str, device: str = "cpu"):
    """``OCSDF.load(model_dir, device=device)`` (raises ModelFileError, or a one-line
    ValueError for a bad or unavailable device)."""
    from ..estimator import OCSDF

    return OCSDF.load(model_dir, device=device)


def read_rows(
    model,
    path: str,
    columns: Sequence[str] | None,
    model_dir: str,
    exclude: Sequence[str] = (),
    allow_empty: bool = False,
) -> np.ndarray:
    """Rows of ``path`` as the (n, d) float64 array (raw units) that ``model`` expects.

    Like ``ocsdf score``: with no ``columns``, a file with a header and a model fitted with
    feature names gives the model's columns by name; otherwise every column but ``exclude``, by
    position. Raises :class:`InputError` (one line) for a wrong width, NaN/inf or non-numeric
    columns. With ``allow_empty`` a file with no data rows gives shape (0, d) instead of an error.
    """
    from ..cli import _check_finite
    from ..io import load_table, select_numeric

    try:
        table = load_table(path)
    except InputError as err:
        if not (allow_empty and "no data rows" in str(err)):
            raise
        table = _empty_table(Path(path))
    names = [str(c) for c in table.frame.columns]
    model_names = getattr(model, "feature_names_in_", None)
    if columns is None and model_names is not None and table.has_header:
        missing = [str(n) for n in model_names if str(n) not in names]
        if missing:
            raise InputError(
                f"{path} lacks columns the model was fitted on: {missing}; "
                "choose columns with --columns"
            )
        columns = [str(n) for n in model_names]
    elif columns is None and exclude:
        columns = [c for c in names if c not in set(exclude)]
    elif columns is not None and exclude:
        clash = [c for c in columns if c in set(exclude)]
        if clash:
            raise InputError(f"column {clash[0]!r} is the label column and cannot be a feature")
    X, chosen = select_numeric(table, columns)
    expected = int(model.n_features_in_)
    if X.shape[1] != expected:
        raise InputError(
            f"{path} has {X.shape[1]} feature columns but the model in {model_dir} expects "
            f"{expected}; choose columns with --columns"
        )
    _check_finite(X, chosen, table.path)
    return X


def _empty_table(path: Path):
    """A data file with columns but no data rows, as a Table of float64 columns."""
    from ..io import CSV_SUFFIXES, NPZ_SUFFIXES, Table, _load_csv, _load_npz, _load_parquet

    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        table = _load_csv(path, sep="\t" if suffix == ".tsv" else ",")
    elif suffix in NPZ_SUFFIXES:
        table = _load_npz(path)
    else:
        table = _load_parquet(path)
    frame = pd.DataFrame({c: pd.Series([], dtype=np.float64) for c in table.frame.columns})
    return Table(frame, table.has_header, table.path)
