"""What the ``ocsdf`` commands share: argparse option types, ``--device``, and the readers and
writers of rows.

User errors are raised as :class:`ocsdf.errors.InputError` (one line), which
:func:`ocsdf.cli.main` prints as ``ocsdf: error: ...``. This module imports no command module
and nothing of :mod:`ocsdf.bench`, so any of them can import it.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = [
    "add_device",
    "add_model_rows",
    "add_header",
    "as_model_input",
    "auto_or_float",
    "check_finite",
    "column_list",
    "eps_list",
    "first_line",
    "note_ignored",
    "positive_int",
    "read_for_model",
    "open_fraction",
    "trim_fraction",
    "write_rows",
    "writing",
]


# ---------------------------------------------------------------------------- option types
def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _number_in(text: str, ok, expected: str) -> float:
    """``float(text)`` when ``ok(value)``, else argparse's error ``expected ..., got 'text'``."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def trim_fraction(text: str) -> float:
    """argparse type of ``--trim``: a float in ``[0, 0.5)``."""
    return _number_in(text, lambda v: 0 <= v < 0.5, "a fraction in [0, 0.5)")


def spread_fraction(text: str) -> float:
    """argparse type of ``--negative-spread``: a float in ``(0, 1]``."""
    return _number_in(text, lambda v: 0 < v <= 1, "a number in (0, 1]")


def open_fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1 (a rate such as ``--fpr``)."""
    return _number_in(text, lambda v: 0 < v < 1, "a number between 0 and 1")


def auto_or_float(low: float, high: float):
    """argparse type: ``"auto"`` or a finite float in ``(low, high]``."""
    bound = "" if math.isinf(high) else f" and at most {high:g}"
    expected = f"'auto' or a number greater than {low:g}{bound}"

    def parse(text: str) -> float | str:
        if text.strip().lower() == "auto":
            return "auto"
        return _number_in(text, lambda v: low < v <= high, expected)

    return parse


def column_list(text: str) -> list[str]:
    """argparse type: ``"a,b,c"`` → ``["a", "b", "c"]`` (names or 0-based positions)."""
    columns = [c.strip() for c in text.split(",") if c.strip()]
    if not columns:
        raise argparse.ArgumentTypeError("expected comma-separated column names or positions")
    return columns


def eps_list(text: str) -> list[float]:
    """argparse type: ``"0,0.05,0.1"`` → budgets, each finite and >= 0."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) and v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated budgets >= 0, got {text!r}")
    return sorted(set(values))


def add_device(p: argparse.ArgumentParser) -> None:
    """``--device``: where a command trains or scores ("cpu", "cuda", "cuda:1", ...)."""
    p.add_argument("--device", default="cpu",
                   help="torch device to train/score on: cpu (default) or cuda; results, saved "
                   "models and exports are the same format either way")


def add_header(p: argparse.ArgumentParser) -> None:
    """``--header`` / ``--no-header`` (mutually exclusive; ``args.header`` True, False or None
    to detect): whether the first line of a CSV data file holds column names."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--header", dest="header", action="store_const", const=True,
                       default=None, help="the first line of a CSV file holds column names "
                       "(default: detected; a first line of numbers that looks like column "
                       "labels needs this or --no-header)")
    group.add_argument("--no-header", dest="header", action="store_const", const=False,
                       default=None, help="the first line of a CSV file is data")


_COLUMNS_HELP = ("columns to use (default: the model's feature names when the file has a "
                 "header, else all columns)")


def add_model_rows(p: argparse.ArgumentParser, files: dict[str, str],
                   columns_help: str = _COLUMNS_HELP) -> None:
    """The inputs of a command that reads rows for a saved model: the ``model`` directory, the
    data files ``files`` (positional name -> help), ``--columns``, ``--header``/``--no-header``
    and ``--device``."""
    p.add_argument("model", metavar="DIR", help="model directory written by 'ocsdf fit'")
    for name, text in files.items():
        p.add_argument(name, help=text)
    p.add_argument("--columns", type=column_list, metavar="A,B,...", help=columns_help)
    add_header(p)
    add_device(p)


# ---------------------------------------------------------------------------- reading rows
def read_for_model(
    model,
    path: str,
    args: argparse.Namespace,
    exclude: Sequence[str] = (),
    allow_empty: bool = False,
    labels_option: str | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Rows of ``path`` as the (n, d) float64 array (raw units) that ``model`` expects, and the
    names of the file's columns left out because the model does not use them.

    ``args`` holds the options :func:`add_model_rows` defines: ``columns``, ``model`` (the
    model folder, named in errors) and ``header``.

    With no ``columns``, a file with a header and a model fitted with feature names gives the
    model's columns by name (in the model's order); otherwise every column but ``exclude`` (a
    label column, say), by position. Raises :class:`InputError` (one line) for missing columns,
    a wrong width, NaN/inf or non-numeric columns. With ``allow_empty`` a file with a header and
    no data rows gives shape (0, d) instead of an error. ``header`` is passed to
    :func:`ocsdf.io.load_table` (None: detect); ``labels_option`` (``"--labels"``) is suggested
    for a label column in the error about non-numeric columns.
    Rule for extra columns: the header's columns other than the model's and ``exclude`` are
    skipped and returned as the ignored names (the command prints them with
    :func:`note_ignored`); with explicit ``columns`` nothing is reported as ignored.
    """
    from ..io import load_table, select_for_model

    table = load_table(path, allow_empty=allow_empty, header=args.header)
    return select_for_model(table, model, args.columns, exclude, labels_option, args.model)


def note_ignored(*ignored: Sequence[str]) -> None:
    """Print ``ocsdf: note: ignored columns not used by the model: [...]`` on stderr, one line
    for the names returned by one or more :func:`read_for_model` calls (nothing when none).

    Commands call it once their work is done, so that a user error stays a single line.
    """
    from ..io import _short_list

    names = list(dict.fromkeys(name for names in ignored for name in names))
    if names:
        print(f"ocsdf: note: ignored columns not used by the model: {_short_list(names)}",
              file=sys.stderr)


def as_model_input(model, X: np.ndarray):
    """``X`` as a DataFrame with the model's feature names when it was fitted with names."""
    import pandas as pd

    names = getattr(model, "feature_names_in_", None)
    return pd.DataFrame(X, columns=list(names)) if names is not None else X


def check_finite(X: np.ndarray, names: list[str], path: Path) -> None:
    """Raise :class:`InputError` naming the columns and first row holding NaN or inf
    (:func:`ocsdf.io.check_finite`)."""
    from ..io import check_finite as _check

    _check(X, names, path)


# ---------------------------------------------------------------------------- writing
@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OS error while writing ``path`` into an :class:`InputError` naming it."""
    try:
        yield
    except OSError as err:
        reason = err.strerror or first_line(err)
        raise InputError(f"cannot write {path}: {reason}") from None


def write_rows(table, output: str | None, summary: str) -> None:
    """Write a per-row result table as CSV to ``output`` (atomically) or to stdout.

    The one-line ``summary`` goes to stdout after the file, or to stderr when the table itself
    is on stdout (so that ``ocsdf score ... > out.csv`` keeps the CSV clean).
    """
    from ..io import write_csv_atomic

    if output:
        with writing(output):
            write_csv_atomic(table, output, header=True)
        print(f"{summary}; wrote {output}")
    else:
        table.to_csv(sys.stdout, index=False, lineterminator="\n")
        sys.stdout.flush()
        print(summary, file=sys.stderr)


def first_line(err: BaseException) -> str:
    """The first non-empty line of ``err``'s message (its type name when empty)."""
    for line in str(err).splitlines():
        if line.strip():
            return line.strip()
    return type(err).__name__
