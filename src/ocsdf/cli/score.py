"""``ocsdf score``: score rows with a saved model; CSV columns score, decision, label."""

from __future__ import annotations

import argparse

import numpy as np

from .options import (
    add_model_rows,
    as_model_input,
    note_ignored,
    read_for_model,
    write_rows,
)

__all__ = ["register", "cmd_score"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``score`` sub-command to the ``ocsdf`` parser."""
    p = subparsers.add_parser(
        "score", help="score rows with a saved model",
        description="Score rows with a saved model. Writes CSV columns score (f, higher = more "
        "normal), decision (score - offset) and label (+1 inlier, -1 outlier).",
    )
    add_model_rows(p, {"data": "rows to score (.csv, .npz, .parquet)"})
    p.add_argument("-o", "--output", metavar="CSV", help="output CSV (default: stdout)")
    p.set_defaults(func=cmd_score)


def cmd_score(args: argparse.Namespace) -> int:
    """``ocsdf score``: load a model, score a file, write score/decision/label CSV. Returns 0."""
    import pandas as pd

    from ..estimator import OCSDF

    model = OCSDF.load(args.model, device=args.device)
    X, ignored = read_for_model(model, args.data, args)
    score = model.score_samples(as_model_input(model, X))
    decision = score - model.offset_
    label = np.where(decision >= 0, 1, -1)
    out = pd.DataFrame({"score": score, "decision": decision, "label": label})
    n_out = int((label == -1).sum())
    summary = (f"scored {len(out)} rows of {args.data}: {n_out} flagged as outliers "
               f"(label -1), {len(out) - n_out} inliers")
    write_rows(out, args.output, summary)
    note_ignored(ignored)
    return 0
