"""``ocsdf explain``: which features to change, and to what, to make each row normal.

Writes one CSV row per input row: the score, the certified radius, whether it is flagged, and
the top features with their current value, the value that would make the row normal and the
change (:meth:`ocsdf.explain.Explanation.to_frame`).
"""

from __future__ import annotations

import argparse

import numpy as np

from .options import (
    add_model_rows,
    as_model_input,
    note_ignored,
    positive_int,
    read_for_model,
    write_rows,
)

__all__ = ["register", "cmd_explain"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``explain`` sub-command to the ``ocsdf`` parser."""

    p = subparsers.add_parser(
        "explain", help="explain each row: the features to change to make it normal",
        description="For each row, find the nearest point the model scores as normal and list "
        "the features that change most. Writes CSV columns score (f, > 0 normal, standardised "
        "units), certified_radius (l2, raw feature units, around the threshold), flagged, "
        "distance, gap, reached, then feature_j, value_j, normal_value_j and change_j "
        "(raw units) for the top features j = 1..TOP.",
    )
    add_model_rows(p, {"data": "rows to explain (.csv, .npz, .parquet)"})
    p.add_argument("-o", "--output", metavar="CSV", help="output CSV (default: stdout)")
    p.add_argument("--top", type=positive_int, default=5,
                   help="features listed per row (5)")
    p.add_argument("--max-features", type=positive_int, default=None, metavar="K",
                   help="change at most K features per row (default: any)")
    p.add_argument("--max-steps", type=positive_int, default=50,
                   help="search steps per row (50)")
    p.set_defaults(func=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> int:
    """``ocsdf explain``: load a model, explain every row of a file, write the CSV. Returns 0."""
    from ..estimator import OCSDF
    from ..explain import explain

    model = OCSDF.load(args.model, device=args.device)
    X, ignored = read_for_model(model, args.data, args, allow_empty=True)
    data = as_model_input(model, X)
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
    write_rows(out, args.output, summary)
    note_ignored(ignored)
    return 0
