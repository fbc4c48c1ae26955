"""Reading user data files (CSV, NPZ, Parquet) and writing outputs atomically.

Every problem with a file raises :class:`~ocsdf.errors.InputError` with a one-line message that
names the file and the problem, so the command line can print it as it is. NaN and inf values
are read as they are: the estimator (or the CLI) rejects them.

Files are read whole (:func:`load_table`) or in chunks of rows (:func:`iter_table`, for
:mod:`ocsdf.stream`); either way each :class:`Table` goes through the same checks
(:func:`select_numeric`, :func:`select_for_model`, :func:`check_finite`), and a chunk's errors
name rows by their number in the whole file (:attr:`Table.first_row`).
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from .errors import InputError

__all__ = ["Table", "atomic_open", "check_finite", "iter_table", "load_table", "read_table",
           "select_for_model", "select_numeric", "write_csv_atomic"]

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
NPZ_SUFFIXES = (".npz",)
PARQUET_SUFFIXES = (".parquet", ".pq")
_MAX_LISTED = 10
DELIMITERS = (",", ";", "\t", "|")  # the field delimiters a CSV file is tried with
_SAMPLE_LINES = 50  # non-blank lines read to detect the delimiter, decimal mark and header
_SUGGESTED = 4  # numeric columns spelled out in a --columns suggestion
_INTEGER = re.compile(r"[+-]?\d+")
_DECIMAL_COMMA = re.compile(r"[+-]?(\d+,\d*|,\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class Table:
    """A data file as read, before any column is chosen.

    Attributes
    ----------
    frame : DataFrame, shape (n_rows, n_columns)
        The columns as read (any dtype); column names are strings.
    has_header : bool
        True when the names come from the file (CSV header, Parquet schema); False when they
        were generated as ``x0, x1, ...`` (CSV without header, NPZ).
    path : Path
        The file it came from (as given, for messages).
    labels : ndarray of shape (n_rows,) or None
        A label array stored beside the features (the ``y`` of an ``.npz`` holding ``X`` and
        ``y``, as ADBench files do); None when the file has none.
    delimiter : str or None
        The field delimiter a CSV file was read with (None for NPZ and Parquet).
    decimal : str
        The decimal mark numbers were read with: ``"."``, or ``","`` for decimal commas.
    suspect_delimiter : str or None
        Another delimiter the file seems to use, when the lines did not split evenly on any
        (a file mixing delimiters): errors about its columns then name it.
    first_row : int
        0-based number, among the file's data rows, of the frame's first row: 0 for a whole
        file, the rows read before it for a chunk of :func:`iter_table`. Errors name data row
        ``first_row + i + 1`` for the frame's row ``i``.
    chunk : bool
        True for a chunk of :func:`iter_table` (errors then say that counts are the chunk's).
    """

    frame: pd.DataFrame
    has_header: bool
    path: Path
    labels: np.ndarray | None = None
    delimiter: str | None = None
    decimal: str = "."
    suspect_delimiter: str | None = None
    first_row: int = 0
    chunk: bool = False

    def misread(self) -> str | None:
        """One line saying the file looks separated by another delimiter, or None."""
        if self.suspect_delimiter is None or self.delimiter is None:
            return None
        return (
            f"{self.path} looks {self.suspect_delimiter!r}-separated but was read as "
            f"{self.delimiter!r}-separated (its lines do not split into the same number of "
            "fields on any delimiter); use one delimiter on every line"
        )


def default_names(n_columns: int) -> list[str]:
    """Names given to unnamed columns: ``["x0", "x1", ...]`` (length ``n_columns``)."""
    return [f"x{i}" for i in range(n_columns)]


def read_table(
    path: str | os.PathLike,
    columns: Sequence[str | int] | None = None,
    header: bool | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Read a CSV, NPZ or Parquet file of numeric features.

    Parameters
    ----------
    path : str or PathLike
        ``.csv``/``.tsv``/``.txt`` (delimiter, decimal mark and header detected: see
        :func:`load_table`), ``.npz`` (the array ``"X"``, or the only array; 2-D) or
        ``.parquet``/``.pq`` (needs pyarrow).
    columns : sequence of str or int, optional
        Columns to keep, in this order: names, or 0-based integer positions (ints or digit
        strings; a name that exists wins over a position). Default: every column.
    header : bool or None, default None
        Whether the first line of a CSV file holds column names; None detects it.

    Returns
    -------
    X : ndarray, shape (n_rows, n_features), float64
        Raw units; may contain NaN/inf (not checked here).
    names : list of str, length n_features
        Column names (``x0, x1, ...`` when the file has none).

    Raises
    ------
    InputError
        Missing, empty, unreadable or corrupt file; unknown extension; non-numeric or unknown
        columns; an NPZ array that is not 2-D; a CSV whose first line may be a header or data
        (``header`` not given). One line, naming the file.
    """
    return select_numeric(load_table(path, header=header), columns)


def load_table(
    path: str | os.PathLike, allow_empty: bool = False, header: bool | None = None
) -> Table:
    """Read ``path`` into a :class:`Table` without choosing or checking columns.

    Raises :class:`InputError` for a missing, empty, unreadable or corrupt file, an unknown
    extension, or an NPZ array that is not 2-D. With ``allow_empty``, a file that has columns
    but no data rows gives a Table of zero rows (float64 columns) instead of an error.

    A CSV file (``.csv``, ``.tsv``, ``.txt``) is read as follows, from its first 50 non-blank
    lines:

    * Delimiter: the one of ``,`` ``;`` tab ``|`` that splits every line into the same number
      (> 1) of fields; when several do, the one giving the most all-numeric lines, then ``,``
      (tab for ``.tsv``). When none does (one column, or ragged lines), ``,`` (tab for
      ``.tsv``).
    * Decimal mark: with a delimiter other than ``,``, numbers are read with decimal commas
      (``1,5``) when some field is a decimal-comma number and no field is a number written with
      a decimal point; text fields (labels) do not count.
    * Header (``header=None``): a first line holding a field that is not a number is a header.
      A first line of numbers is data, unless the second line is numbers too and the first
      looks like column labels: two or more distinct integers over data holding non-integers,
      or exactly ``0..d-1`` or ``1..d`` (d >= 3 fields) that the second line does not continue
      (``1,2,3`` then ``4,5,6`` is data). Then the file is ambiguous and :class:`InputError`
      asks for ``--header`` or ``--no-header`` (``header=True``/``False``). ``header`` is
      ignored for NPZ and Parquet files.
    """
    path = Path(path)
    suffix = _check_file(path)
    if suffix in CSV_SUFFIXES:
        table = _load_csv(path, _default_sep(suffix), header)
    elif suffix in NPZ_SUFFIXES:
        table = _load_npz(path)
    else:
        table = _load_parquet(path)
    if table.frame.shape[1] == 0:
        raise InputError(f"empty file: {path} has no columns")
    if table.frame.shape[0] == 0:
        if not allow_empty:
            raise InputError(f"empty file: {path} has no data rows")
        table = _empty_float_table(table)
    return table


def iter_table(
    path: str | os.PathLike,
    chunk_rows: int = 65_536,
    header: bool | None = None,
    allow_empty: bool = False,
) -> Iterator[Table]:
    """Read ``path`` as consecutive :class:`Table` chunks of at most ``chunk_rows`` rows.

    The file is checked, and a CSV file's delimiter, decimal mark and header detected, as by
    :func:`load_table`; the values are parsed by the same readers (pandas' CSV parser,
    pyarrow for Parquet), so the chunks put together hold what :func:`load_table` reads.
    Memory is bounded by the chunk size whatever the file size. Each chunk's
    :attr:`Table.first_row` is the number of data rows before it, so the checks applied to it
    name rows by their number in the whole file. An ``.npz`` file cannot be read in parts: it
    comes as one table.

    Parameters
    ----------
    path : str or PathLike
        ``.csv``/``.tsv``/``.txt``, ``.parquet``/``.pq`` or ``.npz``.
    chunk_rows : int, default 65536
        Rows per chunk (>= 1); a Parquet chunk may be shorter at the end of a row group.
    header : bool or None
        As for :func:`load_table` (CSV only; None detects it).
    allow_empty : bool, default False
        With no data rows, yield one zero-row table (float64 columns) instead of raising.

    Yields
    ------
    Table
        ``frame`` of shape (n_chunk, n_columns), 1 <= n_chunk <= chunk_rows (0 only for the
        single table of an empty file with ``allow_empty``).

    Raises
    ------
    InputError
        As :func:`load_table`; a parse error further down the file is raised when its chunk is
        read.
    """
    if int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows!r}")
    path = Path(path)
    suffix = _check_file(path)
    if suffix in CSV_SUFFIXES:
        chunks = _iter_csv(path, _default_sep(suffix), header, int(chunk_rows))
    elif suffix in NPZ_SUFFIXES:
        chunks = iter([_load_npz(path)])
    else:
        chunks = _iter_parquet(path, int(chunk_rows))
    n_rows, last = 0, None
    for table in chunks:
        if table.frame.shape[1] == 0:
            raise InputError(f"empty file: {path} has no columns")
        last = table
        if len(table.frame) == 0:
            continue
        yield replace(table, first_row=n_rows)
        n_rows += len(table.frame)
    if n_rows == 0:
        if last is None or not allow_empty:
            raise InputError(f"empty file: {path} has no data rows")
        yield _empty_float_table(last)


def _check_file(path: Path) -> str:
    """The lower-case suffix of an existing, non-empty data file ``path``; raises
    :class:`InputError` for a missing file, a directory, an unknown extension or 0 bytes."""
    if not path.exists():
        raise InputError(f"file not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a data file")
    suffix = path.suffix.lower()
    if suffix not in CSV_SUFFIXES + NPZ_SUFFIXES + PARQUET_SUFFIXES:
        raise InputError(
            f"unknown file extension {suffix or '(none)'!r} for {path}; "
            "use .csv, .tsv, .npz or .parquet"
        )
    try:
        size = path.stat().st_size
    except OSError as err:
        raise InputError(f"cannot read {path}: {_one_line(err)}") from None
    if size == 0:
        raise InputError(f"empty file: {path} has 0 bytes")
    return suffix


def _default_sep(suffix: str) -> str:
    """The delimiter tried first for a CSV file with this suffix: tab for ``.tsv``."""
    return "\t" if suffix == ".tsv" else ","


def _empty_float_table(table: Table) -> Table:
    """``table`` with zero rows and float64 columns of the same names (no labels)."""
    frame = pd.DataFrame({c: pd.Series([], dtype=np.float64) for c in table.frame.columns})
    return replace(table, frame=frame, labels=None, first_row=0)


def select_numeric(
    table: Table,
    columns: Sequence[str | int] | None = None,
    labels_option: str | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Choose ``columns`` of ``table`` (all by default) and convert them to float64.

    Returns ``X`` of shape (n_rows, n_chosen) and the chosen names; see :func:`read_table`.
    Raises :class:`InputError` for an unknown or repeated column, or non-numeric columns: the
    message names them and suggests ``--columns`` with the chosen numeric ones, and
    ``labels_option`` (such as ``"--labels"``) for a label column when given. A file that
    seems to mix delimiters gets a message naming the delimiter instead.
    """
    frame = table.frame
    names = [str(c) for c in frame.columns]
    if columns is None:
        chosen = list(range(len(names)))
    else:
        chosen = [_column_index(c, names, table.path) for c in columns]
        if not chosen:
            raise InputError(f"no columns chosen from {table.path}")
        seen: set[int] = set()
        for i in chosen:
            if i in seen:
                raise InputError(f"column {names[i]!r} of {table.path} chosen twice")
            seen.add(i)
    sub = frame.iloc[:, chosen]
    bad_at = [i for i, (_, dtype) in zip(chosen, sub.dtypes.items(), strict=True)
              if not pd.api.types.is_numeric_dtype(dtype)
              or pd.api.types.is_complex_dtype(dtype)]
    if bad_at:
        misread = table.misread()
        if misread:
            raise InputError(misread)
        raise InputError(_non_numeric_message(table, [names[i] for i in bad_at],
                                              [names[i] for i in chosen], labels_option,
                                              _stray_text(table, bad_at[0])))
    try:
        X = sub.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as err:
        raise InputError(f"cannot convert {table.path} to numbers: {_one_line(err)}") from None
    return X, [names[i] for i in chosen]


def select_for_model(
    table: Table,
    model,
    columns: Sequence[str | int] | None = None,
    exclude: Sequence[str] = (),
    labels_option: str | None = None,
    model_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, list[str]]:
    """The rows of ``table`` as the (n, d) float64 array (raw units) that ``model`` expects,
    checked, and the names of the table's columns left out because the model does not use them.

    The per-table half of reading rows for a fitted model, shared by whole files (the CLI's
    ``read_for_model``) and chunks (:mod:`ocsdf.stream`): every chunk of a file gets the same
    choice of columns and the same checks, and errors name rows in the whole file.

    With no ``columns``, a table with a header and a model fitted with feature names gives the
    model's columns by name (in the model's order), and the header's other columns (but
    ``exclude``) are returned as ignored; otherwise every column but ``exclude`` (a label
    column, say), by position, and nothing is reported as ignored. Raises :class:`InputError`
    (one line) for missing columns, a wrong width, NaN/inf, or non-numeric columns
    (``labels_option``, such as ``"--labels"``, is then suggested for a label column).
    ``model_dir`` is the model's folder, named in the error about the width.

    Parameters
    ----------
    table : Table
        A whole file (:func:`load_table`) or a chunk (:func:`iter_table`); zero rows give X of
        shape (0, d).
    model : fitted estimator
        Anything with ``n_features_in_`` and, optionally, ``feature_names_in_``.

    Returns
    -------
    X : ndarray, shape (n_rows, n_features_in_), float64, all finite
    ignored : list of str
    """
    path = table.path
    present = [str(c) for c in table.frame.columns]
    model_names = getattr(model, "feature_names_in_", None)
    ignored: list[str] = []
    if columns is None and model_names is not None and table.has_header:
        wanted = [str(n) for n in model_names]
        missing = [n for n in wanted if n not in set(present)]
        if missing:
            raise InputError(table.misread() or (
                f"{path} lacks columns the model was fitted on: {missing}; "
                "choose columns with --columns"
            ))
        columns = wanted
        ignored = [c for c in present if c not in set(wanted) and c not in set(exclude)]
    elif columns is None and exclude:
        columns = [c for c in present if c not in set(exclude)]
    elif columns is not None and exclude:
        clash = [c for c in columns if c in set(exclude)]
        if clash:
            raise InputError(f"column {clash[0]!r} is the label column and cannot be a feature")
    X, names = select_numeric(table, columns, labels_option=labels_option)
    expected = int(model.n_features_in_)
    if X.shape[1] != expected:
        where = f"the model in {model_dir}" if model_dir is not None else "the model"
        raise InputError(table.misread() or (
            f"{path} has {X.shape[1]} feature columns but {where} expects "
            f"{expected}; choose columns with --columns"
        ))
    check_finite(X, names, path, first_row=table.first_row, chunk=table.chunk)
    return X, ignored


def check_finite(
    X: np.ndarray, names: Sequence[str], path: str | os.PathLike, first_row: int = 0,
    chunk: bool = False,
) -> None:
    """Raise :class:`InputError` naming the columns and first row holding NaN or inf.

    ``X`` has shape (n, len(names)); its row ``i`` is data row ``first_row + i + 1`` of
    ``path`` (1-based, the header not counted). With ``chunk`` the message says that its
    count is that of the chunk (rows ``first_row + 1`` to ``first_row + n``).
    """
    bad = ~np.isfinite(X)
    if not bad.any():
        return
    cols = [names[j] for j in np.flatnonzero(bad.any(axis=0))]
    first = first_row + int(np.flatnonzero(bad.any(axis=1))[0]) + 1
    where = (f" of data rows {first_row + 1} to {first_row + len(X)}" if chunk else "")
    raise InputError(
        f"{path} has {int(bad.sum())} missing or infinite values (NaN/inf){where} in columns "
        f"{cols}, first in data row {first}; remove or impute them"
    )


def _stray_text(table: Table, position: int) -> str | None:
    """For a column read as text that also holds numbers (a numeric column with a stray value,
    as a chunk of a big file may show), ``" ('abc' in data row N)"`` naming its first field
    that is not a number, N counted in the whole file; None for a column of text."""
    values = table.frame.iloc[:, position].to_numpy(dtype=object)
    first_text, has_number = None, False
    for i, value in enumerate(values):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if isinstance(value, int | float | np.number) or \
                _number(str(value), table.decimal) is not None:
            has_number = True
        elif first_text is None:
            first_text = i
        if has_number and first_text is not None:
            shown = str(values[first_text])
            shown = shown if len(shown) <= 30 else shown[:27] + "..."
            return f" ({shown!r} in data row {table.first_row + first_text + 1})"
    return None


def _non_numeric_message(
    table: Table, bad: list[str], chosen: list[str], labels_option: str | None,
    where: str | None = None,
) -> str:
    """One line naming the non-numeric columns (``where``: the first stray value, see
    :func:`_stray_text`) and how to leave them out."""
    numeric = [c for c in chosen if c not in set(bad)]
    text = f"non-numeric columns in {table.path}: {_short_list(bad)}{where or ''}; "
    if numeric:
        shown = ",".join(numeric[:_SUGGESTED]) + (",..." if len(numeric) > _SUGGESTED else "")
        count = "the numeric column" if len(numeric) == 1 else \
            f"the {len(numeric)} numeric columns"
        text += f"leave them out with --columns {shown} ({count})"
    else:
        text += "none of the chosen columns is numeric; choose numeric ones with --columns"
    if labels_option:
        text += f", and give a label column with {labels_option} COL"
    return text


def _column_index(column: str | int, names: list[str], path: Path) -> int:
    """Position of ``column`` (a name, or a 0-based position as int or digit string)."""
    if isinstance(column, str):
        key = column.strip()
        if key in names:
            return names.index(key)
        if key.isdigit():
            column = int(key)
    if isinstance(column, int | np.integer) and not isinstance(column, bool):
        if 0 <= int(column) < len(names):
            return int(column)
        raise InputError(
            f"column position {int(column)} is out of range for {path} "
            f"({len(names)} columns, positions 0 to {len(names) - 1})"
        )
    raise InputError(f"unknown column {column!r} in {path}; columns are {_short_list(names)}")


@dataclass(frozen=True)
class _CsvFormat:
    """How a CSV file is read (see :func:`load_table`): delimiter, decimal mark, header, and
    another delimiter the lines seem to use (None when the delimiter splits them evenly)."""

    sep: str
    decimal: str
    has_header: bool
    suspect: str | None

    def read_kwargs(self) -> dict:
        """Keyword arguments of :func:`pandas.read_csv` reading the file this way."""
        return {"sep": self.sep, "header": 0 if self.has_header else None,
                "decimal": self.decimal}

    def table(self, frame: pd.DataFrame, path: Path) -> Table:
        """``frame`` as read by :func:`pandas.read_csv` -> a :class:`Table` (names stripped,
        or ``x0, x1, ...`` without a header)."""
        if not self.has_header:
            frame.columns = default_names(frame.shape[1])
        else:
            frame.columns = [str(c).strip() for c in frame.columns]
        return Table(frame, self.has_header, path, delimiter=self.sep, decimal=self.decimal,
                     suspect_delimiter=self.suspect)


@contextlib.contextmanager
def _csv_errors(path: Path, suspect: str | None = None) -> Iterator[None]:
    """Turn what reading the CSV file ``path`` raises into a one-line :class:`InputError`."""
    try:
        yield
    except InputError:
        raise
    except pd.errors.EmptyDataError:
        raise InputError(f"empty file: {path} has no rows") from None
    except UnicodeDecodeError:
        raise InputError(f"cannot read {path}: not a UTF-8 text file") from None
    except (pd.errors.ParserError, csv.Error, ValueError, OSError) as err:
        note = f" ({suspect!r} may be the delimiter)" if suspect else ""
        raise InputError(f"cannot parse {path}: {_one_line(err)}{note}") from None


def _csv_format(path: Path, default_sep: str, header: bool | None) -> _CsvFormat:
    """Delimiter, decimal mark and header of a CSV file, from its first non-blank lines."""
    with _csv_errors(path):
        lines, truncated = _sample_lines(path)
        if not lines:
            raise InputError(f"empty file: {path} has no rows")
        sep, decimal, even = _sniff(lines, truncated, default_sep)
        rows = _records(lines, sep, truncated)
        if not rows:
            raise InputError(f"empty file: {path} has no rows")
        suspect = None if even else _suspect_delimiter(lines, truncated, sep)
        has_header = _detect_header(rows, decimal, path) if header is None else bool(header)
    return _CsvFormat(sep, decimal, has_header, suspect)


def _load_csv(path: Path, default_sep: str, header: bool | None) -> Table:
    """CSV/TSV with delimiter, decimal-mark and header detection (see :func:`load_table`)."""
    fmt = _csv_format(path, default_sep, header)
    with _csv_errors(path, fmt.suspect):
        frame = pd.read_csv(path, **fmt.read_kwargs())
    return fmt.table(frame, path)


def _iter_csv(path: Path, default_sep: str, header: bool | None, chunk_rows: int
              ) -> Iterator[Table]:
    """:func:`_load_csv` in chunks of ``chunk_rows`` rows (pandas' parser, same options)."""
    fmt = _csv_format(path, default_sep, header)
    with _csv_errors(path, fmt.suspect):
        reader = pd.read_csv(path, **fmt.read_kwargs(), chunksize=chunk_rows)
    with reader:
        while True:
            with _csv_errors(path, fmt.suspect):
                frame = next(reader, None)
            if frame is None:
                return
            yield replace(fmt.table(frame, path), chunk=True)


def _sample_lines(path: Path) -> tuple[list[str], bool]:
    """The first non-blank lines of ``path`` (at most ``_SAMPLE_LINES``), and whether there
    are more."""
    lines: list[str] = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for line in fh:
            if not line.strip():
                continue
            if len(lines) == _SAMPLE_LINES:
                return lines, True
            lines.append(line)
    return lines, False


def _records(lines: list[str], sep: str, truncated: bool) -> list[list[str]]:
    """``lines`` split into fields on ``sep`` (quotes respected); the last record is dropped
    when the sample was cut, as it may be cut inside a quoted field."""
    rows = [row for row in csv.reader(lines, delimiter=sep) if row]
    return rows[:-1] if truncated and len(rows) > 1 else rows


def _splits_evenly(rows: list[list[str]]) -> bool:
    """True when every record has the same number of fields, more than one."""
    counts = {len(row) for row in rows}
    return len(counts) == 1 and counts.pop() > 1


def _sniff(lines: list[str], truncated: bool, default_sep: str) -> tuple[str, str, bool]:
    """``(delimiter, decimal mark, whether the delimiter splits every line evenly)``."""
    order = [default_sep] + [d for d in DELIMITERS if d != default_sep]
    best: tuple[int, int, str, str] | None = None
    for rank, sep in enumerate(order):
        rows = _records(lines, sep, truncated)
        if not _splits_evenly(rows):
            continue
        decimal = _decimal_mark(rows) if sep != "," else "."
        numeric = sum(all(_is_number(f, decimal) for f in row) for row in rows)
        key = (-numeric, rank, sep, decimal)
        if best is None or key < best:
            best = key
    if best is None:
        return default_sep, ".", False
    return best[2], best[3], True


def _decimal_mark(rows: list[list[str]]) -> str:
    """``","`` when some field is a decimal-comma number and none a decimal-point number."""
    comma = False
    for row in rows:
        for field in row:
            text = field.strip()
            if "." in text and _is_number(text):
                return "."
            comma = comma or bool(_DECIMAL_COMMA.fullmatch(text))
    return "," if comma else "."


def _suspect_delimiter(lines: list[str], truncated: bool, sep: str) -> str | None:
    """Another delimiter that seems to be the file's when ``sep`` does not split it evenly:
    one splitting every line, or every line but the first, evenly, or (for a file read as one
    column) one found on every line."""
    for other in DELIMITERS:
        if other == sep:
            continue
        rows = _records(lines, other, truncated)
        if _splits_evenly(rows) or (len(rows) > 2 and _splits_evenly(rows[1:])):
            return other
    if all(len(row) == 1 for row in _records(lines, sep, truncated)):
        for other in DELIMITERS:
            if other != sep and all(other in line for line in lines):
                return other
    return None


def _detect_header(rows: list[list[str]], decimal: str, path: Path) -> bool:
    """Whether the first record is a header (rule in :func:`load_table`); raises
    :class:`InputError` when a first line of numbers may be column labels."""
    first = rows[0]
    if not all(_is_number(f, decimal) for f in first):
        return True
    if len(rows) < 2 or not all(_is_number(f, decimal) for f in rows[1]):
        return False
    if not _looks_like_labels(first, rows[1:], decimal):
        return False
    shown = ",".join(f.strip() for f in first)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    raise InputError(
        f"cannot tell whether the first line of {path} ({shown}) is a header or data: its "
        "numbers look like column labels; give --header or --no-header"
    )


def _looks_like_labels(first: list[str], data: list[list[str]], decimal: str) -> bool:
    """True when a first line of numbers reads like column labels over ``data``."""
    texts = [f.strip() for f in first]
    if len(texts) < 2 or not all(_INTEGER.fullmatch(t) for t in texts):
        return False
    values = [int(t) for t in texts]
    if len(set(values)) != len(values):
        return False
    below = [_number(f, decimal) for row in data for f in row]
    if any(v is not None and math.isfinite(v) and not v.is_integer() for v in below):
        return True  # integers over non-integers
    d = len(values)
    if d < 3 or values not in (list(range(d)), list(range(1, d + 1))):
        return False
    continued = [float(values[0] + d + j) for j in range(d)]
    return [_number(f, decimal) for f in data[0]] != continued


def _number(field: str | None, decimal: str = ".") -> float | None:
    """A CSV field as a float (NaN when empty: a missing value), or None when it is not a
    number; with ``decimal=","`` a number uses a decimal comma and no point."""
    if field is None:
        return math.nan
    text = str(field).strip()
    if not text:
        return math.nan
    if decimal == ",":
        if "." in text:
            return None
        text = text.replace(",", ".", 1)
    try:
        return float(text)
    except ValueError:
        return None


def _is_number(field: str | None, decimal: str = ".") -> bool:
    """True when a CSV field reads as a number; an empty field (a missing value) counts too."""
    return _number(field, decimal) is not None


def _load_npz(path: Path) -> Table:
    """The array ``"X"`` (or the only array) of an ``.npz`` archive, which must be 2-D."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise InputError(f"cannot read {path}: a single .npy array, not an .npz archive")
        with loaded as npz:
            keys = list(npz.files)
            if not keys:
                raise InputError(f"empty file: {path} holds no arrays")
            if "X" in keys:
                key = "X"
            elif len(keys) == 1:
                key = keys[0]
            else:
                raise InputError(
                    f"{path} holds arrays {_short_list(keys)} and none is named 'X'; "
                    "save the features as X"
                )
            arr = npz[key]
            labels = npz["y"] if key == "X" and "y" in keys else None
    except InputError:
        raise
    except Exception as err:  # zipfile, zlib, numpy format errors: all mean a bad file
        raise InputError(f"cannot read {path}: not a valid .npz file ({_one_line(err)})") \
            from None
    if arr.ndim != 2:
        raise InputError(
            f"array {key!r} in {path} is {arr.ndim}-D with shape {arr.shape}; "
            "expected 2-D (n_samples, n_features)"
        )
    if labels is not None and (labels.ndim != 1 or len(labels) != len(arr)):
        labels = None  # not one label per row: not labels of these rows
    return Table(pd.DataFrame(arr, columns=default_names(arr.shape[1])), False, path, labels)


def _load_parquet(path: Path) -> Table:
    """A Parquet file via pandas (needs pyarrow)."""
    with _parquet_errors(path):
        frame = pd.read_parquet(path)
    frame.columns = [str(c) for c in frame.columns]
    return Table(frame, True, path)


@contextlib.contextmanager
def _parquet_errors(path: Path) -> Iterator[None]:
    """Turn what reading the Parquet file ``path`` raises into a one-line :class:`InputError`
    (a missing pyarrow included)."""
    try:
        yield
    except ImportError:
        raise InputError(
            f"reading Parquet ({path}) needs pyarrow: pip install pyarrow"
        ) from None
    except InputError:
        raise
    except Exception as err:  # pyarrow raises its own error types for corrupt files
        raise InputError(f"cannot read {path}: not a valid Parquet file ({_one_line(err)})") \
            from None


def _iter_parquet(path: Path, chunk_rows: int) -> Iterator[Table]:
    """A Parquet file in record batches of at most ``chunk_rows`` rows (pyarrow), each
    converted as :func:`pandas.read_parquet` converts the whole table. Always yields at least
    one table (zero rows, the schema's columns, for an empty file). Column chunks are read
    through a buffer rather than whole, so a file of one huge row group stays bounded too."""
    with _parquet_errors(path):
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
        batches = pf.iter_batches(batch_size=chunk_rows, use_threads=False)
    yielded = False
    try:
        while True:
            with _parquet_errors(path):
                batch = next(batches, None)
                if batch is None:
                    break
                frame = batch.to_pandas()
            frame.columns = [str(c) for c in frame.columns]
            yielded = True
            yield Table(frame, True, path, chunk=True)
        if not yielded:
            with _parquet_errors(path):
                frame = pf.schema_arrow.empty_table().to_pandas()
            frame.columns = [str(c) for c in frame.columns]
            yield Table(frame, True, path, chunk=True)
    finally:
        pf.close()


def _short_list(items: Sequence[str]) -> str:
    """``['a', 'b']``, cut to the first few items with the total count when long."""
    items = list(items)
    if len(items) <= _MAX_LISTED:
        return repr(items)
    return f"{items[:_MAX_LISTED]!r} (+{len(items) - _MAX_LISTED} more)"


def _one_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message (its type name if empty)."""
    for line in str(err).splitlines():
        if line.strip():
            return line.strip()
    return type(err).__name__


# ---------------------------------------------------------------------------- writing
def require_folder(path: str | os.PathLike) -> None:
    """Raise :class:`InputError` when the folder that would hold ``path`` does not exist."""
    parent = Path(path).parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise InputError(f"cannot write {path}: the folder {parent} {what}")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched, so nothing
    half-written ever appears. The folder must exist (a mistyped path is an
    :class:`InputError` naming it, not a new folder). The file gets the usual permissions
    (0o666 less the umask), so other users and services can read it as with any file.

    Parameters
    ----------
    mode : {"w", "wb"}
        Text (UTF-8, ``\\n`` newlines) or binary.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    require_folder(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        kwargs = {"encoding": "utf-8", "newline": ""} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_csv_atomic(
    data: pd.DataFrame | np.ndarray,
    path: str | os.PathLike,
    header: Sequence[str] | bool = True,
) -> Path:
    """Write ``data`` as CSV to ``path`` atomically (temporary file, then :func:`os.replace`).

    Parameters
    ----------
    data : DataFrame or ndarray of shape (n_rows, n_columns)
        Written without the index; floats at full (round-trip) precision.
    path : str or PathLike
    header : sequence of str or bool, default True
        Column names to write, or True to write the DataFrame's names (``x0, x1, ...`` for an
        array), or False for no header line.

    Returns
    -------
    Path
        ``path``.
    """
    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(np.asarray(data))
    if header is True and not isinstance(data, pd.DataFrame):
        header = default_names(frame.shape[1])
    header_arg = list(header) if not isinstance(header, bool) else header
    with atomic_open(path, "w") as fh:
        frame.to_csv(fh, index=False, header=header_arg, lineterminator="\n")
    return Path(path)
