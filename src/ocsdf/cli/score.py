"""``ocsdf score``: score rows with a saved model; CSV (or Parquet) columns score, decision,
label. Files are read, scored and written in chunks (:func:`ocsdf.stream.score_files`), so
memory stays bounded whatever their size."""

from __future__ import annotations

import argparse
import sys

from .options import add_model_rows, note_ignored, positive_int

__all__ = ["register", "cmd_score"]

#: ``--chunk-rows`` default: :data:`ocsdf.stream.DEFAULT_CHUNK_ROWS` (not imported here, so
#: that building the parser does not import pandas; a test checks the two agree).
DEFAULT_CHUNK_ROWS = 65_536


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``score`` sub-command to the ``ocsdf`` parser."""
    p = subparsers.add_parser(
        "score", help="score rows with a saved model",
        description="Score rows with a saved model. Writes CSV columns score (f, higher = more "
        "normal), decision (score - offset) and label (+1 inlier, -1 outlier); Parquet when "
        "the output ends in .parquet. Reads, scores and writes in chunks of rows, so files "
        "larger than memory work.",
    )
    add_model_rows(p, {"data": "rows to score (.csv, .npz, .parquet, or a folder of such "
                               "files)"})
    p.add_argument("-o", "--output", metavar="FILE",
                   help="output .csv or .parquet, written once every row is scored "
                   "(default: CSV on stdout)")
    p.add_argument("--chunk-rows", type=positive_int, default=DEFAULT_CHUNK_ROWS, metavar="N",
                   help=f"rows read at a time (default {DEFAULT_CHUNK_ROWS}); memory grows "
                   "with it, the scores do not depend on it")
    p.set_defaults(func=cmd_score)


def cmd_score(args: argparse.Namespace) -> int:
    """``ocsdf score``: load a model, score a file (or folder) chunk by chunk, write
    score/decision/label. A progress bar (rows, rows/s) appears on a terminal for runs longer
    than a second. Returns 0."""
    from ..stream import score_files

    # the model folder (loaded onto --device) is named in errors about the number of columns
    result = score_files(args.model, args.data, args.output, chunk_rows=args.chunk_rows,
                         columns=args.columns, header=args.header,
                         progress=sys.stderr.isatty(), device=args.device)
    summary = (f"scored {result.n_rows} rows of {args.data}: {result.n_outliers} flagged as "
               f"outliers (label -1), {result.n_inliers} inliers")
    if args.output:
        print(f"{summary}; wrote {args.output}")
    else:
        print(summary, file=sys.stderr)
    note_ignored(result.ignored)
    return 0
