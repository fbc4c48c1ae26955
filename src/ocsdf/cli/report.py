"""``ocsdf report``: one self-contained HTML page on a saved model and a data file.

See :class:`ocsdf.report.Report` for the contents.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import InputError
from .options import (
    add_model_rows,
    as_model_input,
    note_ignored,
    positive_int,
    read_for_model,
    writing,
)

__all__ = ["register", "cmd_report"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` sub-command to the ``ocsdf`` parser."""

    p = subparsers.add_parser(
        "report", help="write a self-contained HTML report of a model on a data file",
        description="Write one HTML file (no network access needed to view it): the model's "
        "summary, a histogram of the scores with the threshold, the certified AUROC against "
        "the l2 attack budget (raw feature units) when labels are given, and the most "
        "anomalous rows with their certified radius and explanation.",
    )
    add_model_rows(p, {"data": "rows to report on (.csv, .npz, .parquet)"},
                   columns_help="feature columns (default: the model's feature names when the "
                   "file has a header, else every column but the labels)")
    p.add_argument("-o", "--output", required=True, metavar="HTML", help="HTML file to write")
    p.add_argument("--labels", metavar="COLUMN",
                   help="column of ground-truth labels, 1 = anomaly, 0 = normal (not a feature)")
    p.add_argument("--top-rows", type=positive_int, default=20,
                   help="most anomalous rows listed (20)")
    p.add_argument("--top-features", type=positive_int, default=3,
                   help="features per row in the explanation (3)")
    p.add_argument("--title", help="page heading (default: OCSDF report: MODEL on DATA)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    """``ocsdf report``: load a model and a file, write the HTML report. Returns 0."""
    from ..estimator import OCSDF
    from ..report import Report

    model = OCSDF.load(args.model, device=args.device)
    labels, exclude = None, ()
    if args.labels is not None:
        labels, name = _read_labels(args.data, args.labels, args.header)
        exclude = (name,)
    X, ignored = read_for_model(model, args.data, args, exclude=exclude,
                                labels_option="--labels" if args.labels is None else None)
    title = args.title or f"OCSDF report: {Path(args.model).name} on {Path(args.data).name}"
    report = Report(model, as_model_input(model, X), labels=labels, top_rows=args.top_rows,
                    top_features=args.top_features, title=title, source=str(args.data))
    with writing(args.output):
        path = report.save(args.output)
    n_flag = int(report.flagged.sum())
    extra = "" if report.auroc is None else f"; AUROC {report.auroc:.4f}"
    print(f"report on {len(X)} rows of {args.data}: {n_flag} flagged as outliers{extra}; "
          f"wrote {path}")
    note_ignored(ignored)
    return 0


def _read_labels(path: str, column: str, header: bool | None = None) -> tuple[np.ndarray, str]:
    """The label column of ``path`` (a name or a 0-based position) as floats, shape (n,)
    (values checked by :class:`Report`), and its name in the file."""
    from ..io import load_table, select_numeric

    table = load_table(path, header=header)
    if column not in [str(c) for c in table.frame.columns] and not column.isdigit():
        raise InputError(f"label column {column!r} not found in {path}")
    y, names = select_numeric(table, [column])
    return y[:, 0], names[0]
