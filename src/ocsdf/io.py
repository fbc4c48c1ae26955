"""Reading user data files (CSV, NPZ, Parquet) and writing outputs atomically.

Every problem with a file raises :class:`~ocsdf.errors.InputError` with a one-line message that
names the file and the problem, so the command line can print it as it is. NaN and inf values
are read as they are: the estimator (or the CLI) rejects them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from .errors import InputError

__all__ = ["Table", "atomic_open", "load_table", "read_table", "select_numeric",
           "write_csv_atomic"]

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
NPZ_SUFFIXES = (".npz",)
PARQUET_SUFFIXES = (".parquet", ".pq")
_MAX_LISTED = 10


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
    """

    frame: pd.DataFrame
    has_header: bool
    path: Path
    labels: np.ndarray | None = None


def default_names(n_columns: int) -> list[str]:
    """Names given to unnamed columns: ``["x0", "x1", ...]`` (length ``n_columns``)."""
    return [f"x{i}" for i in range(n_columns)]


def read_table(
    path: str | os.PathLike, columns: Sequence[str | int] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Read a CSV, NPZ or Parquet file of numeric features.

    Parameters
    ----------
    path : str or PathLike
        ``.csv``/``.tsv``/``.txt`` (header detected: the first row is data when every field
        parses as a number), ``.npz`` (the array ``"X"``, or the only array; 2-D) or
        ``.parquet``/``.pq`` (needs pyarrow).
    columns : sequence of str or int, optional
        Columns to keep, in this order: names, or 0-based integer positions (ints or digit
        strings; a name that exists wins over a position). Default: every column.

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
        columns; an NPZ array that is not 2-D. One line, naming the file.
    """
    return select_numeric(load_table(path), columns)


def load_table(path: str | os.PathLike, allow_empty: bool = False) -> Table:
    """Read ``path`` into a :class:`Table` without choosing or checking columns.

    Raises :class:`InputError` for a missing, empty, unreadable or corrupt file, an unknown
    extension, or an NPZ array that is not 2-D. With ``allow_empty``, a file that has columns
    but no data rows gives a Table of zero rows (float64 columns) instead of an error.
    """
    path = Path(path)
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
    if suffix in CSV_SUFFIXES:
        table = _load_csv(path, sep="\t" if suffix == ".tsv" else ",")
    elif suffix in NPZ_SUFFIXES:
        table = _load_npz(path)
    else:
        table = _load_parquet(path)
    if table.frame.shape[1] == 0:
        raise InputError(f"empty file: {path} has no columns")
    if table.frame.shape[0] == 0:
        if not allow_empty:
            raise InputError(f"empty file: {path} has no data rows")
        frame = pd.DataFrame({c: pd.Series([], dtype=np.float64) for c in table.frame.columns})
        table = Table(frame, table.has_header, table.path)
    return table


def select_numeric(
    table: Table, columns: Sequence[str | int] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Choose ``columns`` of ``table`` (all by default) and convert them to float64.

    Returns ``X`` of shape (n_rows, n_chosen) and the chosen names; see :func:`read_table`.
    Raises :class:`InputError` for an unknown or repeated column, or non-numeric columns.
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
    bad = [names[i] for i, (_, dtype) in zip(chosen, sub.dtypes.items(), strict=True)
           if not pd.api.types.is_numeric_dtype(dtype)
           or pd.api.types.is_complex_dtype(dtype)]
    if bad:
        raise InputError(
            f"non-numeric columns in {table.path}: {_short_list(bad)}; "
            "choose numeric columns with --columns"
        )
    try:
        X = sub.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as err:
        raise InputError(f"cannot convert {table.path} to numbers: {_one_line(err)}") from None
    return X, [names[i] for i in chosen]


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


def _load_csv(path: Path, sep: str) -> Table:
    """CSV/TSV with header detection (see :func:`read_table`)."""
    try:
        first = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str,
                            keep_default_na=False)
        if first.shape[0] == 0:
            raise InputError(f"empty file: {path} has no rows")
        has_header = not all(_is_number(v) for v in first.iloc[0].tolist())
        frame = pd.read_csv(path, sep=sep, header=0 if has_header else None)
    except InputError:
        raise
    except pd.errors.EmptyDataError:
        raise InputError(f"empty file: {path} has no rows") from None
    except UnicodeDecodeError:
        raise InputError(f"cannot read {path}: not a UTF-8 text file") from None
    except (pd.errors.ParserError, ValueError, OSError) as err:
        raise InputError(f"cannot parse {path}: {_one_line(err)}") from None
    if not has_header:
        frame.columns = default_names(frame.shape[1])
    else:
        frame.columns = [str(c).strip() for c in frame.columns]
    return Table(frame, has_header, path)


def _is_number(field: str | None) -> bool:
    """True when a CSV field reads as a number; an empty field (a missing value) counts too."""
    if field is None:
        return True
    text = str(field).strip()
    if not text:
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


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
    try:
        frame = pd.read_parquet(path)
    except ImportError:
        raise InputError(
            f"reading Parquet ({path}) needs pyarrow: pip install pyarrow"
        ) from None
    except Exception as err:  # pyarrow raises its own error types for corrupt files
        raise InputError(f"cannot read {path}: not a valid Parquet file ({_one_line(err)})") \
            from None
    frame.columns = [str(c) for c in frame.columns]
    return Table(frame, True, path)


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
