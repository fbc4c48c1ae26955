"""Bounded-memory scoring of files larger than memory: :func:`score_files` and
:func:`iter_scores`.

A CSV or Parquet file (or a folder of them) is read in chunks of rows (pandas' chunked CSV
parser, pyarrow's Parquet batch reader: :func:`ocsdf.io.iter_table`), each chunk is checked
exactly as a whole file is (:func:`ocsdf.io.select_for_model`: same columns, same one-line
errors, rows named by their number in the whole file), scored, and the scores written chunk
by chunk. Memory is bounded by the chunk size whatever the number of rows.

Scores are bit for bit those of the in-memory path (``model.score_samples`` on the whole
table, or ``ocsdf score`` before it streamed): the rows are scored in the same batches of
:attr:`ocsdf.Scorer.batch_rows` rows, counted from the first row of the input, whatever
the chunk size (a matrix product may round the last bit differently with another batch size).

Output (by extension): ``.parquet``/``.pq`` is Parquet, anything else CSV, with the columns of
``ocsdf score``: ``score`` (float64, higher = more normal), ``decision`` (``score - offset_``,
float64) and ``label`` (int64, +1 inlier, -1 outlier). The file is written to a temporary file
in the destination folder and renamed into place only once every row is scored: a failure
leaves nothing half-written (and a previous file of that name unchanged).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from .errors import InputError
from .io import (
    CSV_SUFFIXES,
    NPZ_SUFFIXES,
    PARQUET_SUFFIXES,
    Table,
    atomic_open,
    iter_table,
    require_folder,
    select_for_model,
)

__all__ = ["DEFAULT_CHUNK_ROWS", "BatchScorer", "StreamResult", "data_files", "iter_scores",
           "load_counts", "score_files"]

#: Rows read per chunk by default (with 20 float64 features: about 10 MB per chunk).
DEFAULT_CHUNK_ROWS = 65_536

OUTPUT_COLUMNS = ("score", "decision", "label")
_DATA_SUFFIXES = CSV_SUFFIXES + PARQUET_SUFFIXES + NPZ_SUFFIXES


@dataclass(frozen=True)
class StreamResult:
    """What :func:`score_files` did.

    Attributes
    ----------
    n_rows : int
        Rows scored (all files).
    n_outliers : int
        Rows labelled -1 (``decision < 0``).
    output : Path or None
        The file written (None: standard output).
    files : tuple of Path
        The data files read, in the order their rows were written.
    ignored : tuple of str
        Columns of the files left out because the model does not use them (see
        :func:`ocsdf.io.select_for_model`); empty when ``columns`` was given.
    seconds : float
        Wall-clock time of reading, scoring and writing.
    """

    n_rows: int
    n_outliers: int
    output: Path | None
    files: tuple[Path, ...]
    ignored: tuple[str, ...]
    seconds: float

    @property
    def n_inliers(self) -> int:
        """Rows labelled +1."""
        return self.n_rows - self.n_outliers

    @property
    def rows_per_second(self) -> float:
        """Throughput, rows per second of wall-clock time."""
        return self.n_rows / self.seconds if self.seconds > 0 else float("inf")


def data_files(source: str | os.PathLike, exclude: Sequence[str | os.PathLike] = ()
               ) -> list[Path]:
    """The data files of ``source``: itself when it is a file, else the ``.csv``/``.tsv``/
    ``.txt``/``.parquet``/``.pq``/``.npz`` files under the folder (subfolders included, as in
    a partitioned dataset ``year=2024/part-0.parquet``), sorted by their path relative to it.

    Names starting with ``.`` or ``_`` (``_SUCCESS``, ``.crc`` and temporary files) are skipped
    at any level, and so are the paths in ``exclude`` (an output file written into the folder).
    Raises :class:`InputError` when ``source`` does not exist or the folder holds no data file.
    """
    source = Path(source)
    if not source.exists():
        raise InputError(f"file not found: {source}")
    if not source.is_dir():
        return [source]
    skip = {Path(p).resolve() for p in exclude}
    found = []
    for path in source.rglob("*"):
        rel = path.relative_to(source)
        if any(part.startswith((".", "_")) for part in rel.parts):
            continue
        if path.suffix.lower() in _DATA_SUFFIXES and path.is_file() \
                and path.resolve() not in skip:
            found.append((rel.as_posix(), path))
    if not found:
        raise InputError(f"{source} holds no data files ({', '.join(_DATA_SUFFIXES)})")
    return [path for _, path in sorted(found)]


def iter_scores(
    model,
    source: str | os.PathLike,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    columns: Sequence[str | int] | None = None,
    header: bool | None = None,
    *,
    model_dir: str | os.PathLike | None = None,
    ignored: list[str] | None = None,
    files: Sequence[Path] | None = None,
) -> Iterator[pd.DataFrame]:
    """Score the rows of ``source`` chunk by chunk; yields the score tables in row order.

    Parameters
    ----------
    model : OCSDF
        A fitted model (anything with ``score_samples``, ``offset_``, ``n_features_in_`` and
        optionally ``feature_names_in_`` and ``scorer_``).
    source : str or PathLike
        A data file or a folder of them (:func:`data_files`). In a folder, a file with a header
        and no rows, or of 0 bytes, is skipped; rows are numbered per file in errors.
    chunk_rows : int, default 65536
        Rows read and checked at a time (>= 1). Memory holds about one chunk plus one scoring
        batch of rows; the scores do not depend on it.
    columns : sequence of str or int, optional
        The feature columns (names or 0-based positions), as ``ocsdf score --columns``;
        default: the model's feature names when a file has a header, else every column.
    header : bool or None
        Whether the first line of a CSV file holds column names (None: detect).
    model_dir : str or PathLike, optional
        The model's folder, named in the error about a wrong number of columns.
    ignored : list, optional
        Filled with the columns left out because the model does not use them.
    files : sequence of Path, optional
        The files to read (default: :func:`data_files` of ``source``).

    Yields
    ------
    DataFrame, shape (n_batch, 3)
        Columns ``score``, ``decision`` (float64) and ``label`` (int64, +1/-1), for
        consecutive rows; every batch but the last holds ``model.scorer_.batch_rows`` rows
        (:data:`~ocsdf.core.scorer.SCORE_BATCH`; fewer for image networks).

    Raises
    ------
    InputError
        A one-line message naming the file and, for a bad value, its data row in that file
        (1-based, header not counted), raised when the chunk holding it is read.
    """
    if int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows!r}")
    paths = list(files) if files is not None else data_files(source)
    blocks = _checked_rows(model, paths, Path(source), int(chunk_rows), columns, header,
                           model_dir, ignored if ignored is not None else [])
    names = getattr(model, "feature_names_in_", None)
    for X in _batches(blocks, model.scorer_.batch_rows):
        rows = pd.DataFrame(X, columns=list(names), copy=False) if names is not None else X
        score = np.asarray(model.score_samples(rows), dtype=np.float64)
        decision = score - model.offset_
        label = np.where(decision >= 0, 1, -1).astype(np.int64)
        yield pd.DataFrame({"score": score, "decision": decision, "label": label})


def score_files(
    model,
    source: str | os.PathLike,
    output: str | os.PathLike | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    columns: Sequence[str | int] | None = None,
    header: bool | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> StreamResult:
    """Score every row of ``source`` with ``model`` and write the scores to ``output``, in
    chunks: memory is bounded by ``chunk_rows`` whatever the number of rows.

    Parameters
    ----------
    model : OCSDF or str or PathLike
        A fitted model, or the folder of a saved one (loaded onto ``device``).
    source : str or PathLike
        A CSV (``.csv``/``.tsv``/``.txt``), Parquet (``.parquet``/``.pq``) or ``.npz`` file
        (read whole: NPZ cannot be read in parts), or a folder of them (:func:`data_files`;
        their rows are written one file after another, in sorted path order).
    output : str or PathLike or None
        ``.parquet``/``.pq``: a Parquet file; any other name: CSV (as ``ocsdf score`` writes,
        floats at full precision); None: CSV on standard output (written as it goes: not
        atomic). Its folder must exist. Columns ``score``, ``decision``, ``label``; one row per
        input row, in order.
    chunk_rows : int, default 65536
        Rows read and checked at a time (>= 1); the scores do not depend on it.
    columns, header
        As for ``ocsdf score`` (see :func:`iter_scores`).
    progress : bool, default True
        A tqdm bar on stderr (rows and rows/s; a total for Parquet inputs), shown once the
        run has lasted a second.
    device : str, default "cpu"
        Where a model given by its folder is loaded ("cpu", "cuda").

    Returns
    -------
    StreamResult

    Raises
    ------
    InputError
        One line, for a bad input (naming the file and, for a bad value, its data row in that
        file) or an output that cannot be written. Nothing is left at ``output`` then (an
        earlier file there is unchanged).
    ModelFileError
        ``model`` is a folder that does not hold a readable model.
    """
    start = time.perf_counter()
    if int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows!r}")
    if output is not None:
        require_folder(output)
    model_dir = None
    if isinstance(model, str | os.PathLike):
        from .estimator import OCSDF

        model_dir, model = model, OCSDF.load(model, device=device)
    files = data_files(source, exclude=[output] if output is not None else [])
    ignored: list[str] = []
    batches = iter_scores(model, source, chunk_rows, columns, header, model_dir=model_dir,
                          ignored=ignored, files=files)
    n_rows = n_out = 0
    with _progress_bar(files, progress) as bar:
        if output is None:
            sink = _CsvSink(sys.stdout)
            for frame in batches:
                sink.write(frame)
                n_rows, n_out = n_rows + len(frame), n_out + int((frame["label"] < 0).sum())
                bar.update(len(frame))
            sys.stdout.flush()
        else:
            parquet = Path(output).suffix.lower() in PARQUET_SUFFIXES
            # reading errors are InputErrors (_checked_rows), so an OSError here is a write's
            with _writing(output), atomic_open(output, "wb" if parquet else "w") as fh:
                sink = _ParquetSink(fh) if parquet else _CsvSink(fh)
                try:
                    for frame in batches:
                        sink.write(frame)
                        n_rows += len(frame)
                        n_out += int((frame["label"] < 0).sum())
                        bar.update(len(frame))
                except BaseException:
                    sink.abandon()
                    raise
                sink.close()
    return StreamResult(n_rows, n_out, None if output is None else Path(output), tuple(files),
                        tuple(dict.fromkeys(ignored)), time.perf_counter() - start)


class BatchScorer:
    """Scores batches of rows with a saved model: the function engines ship to workers (Dask
    ``map_partitions``, Spark ``mapInPandas`` / ``predict_batch_udf``, Ray ``map_batches``).

    It pickles as its settings only (the model folder, thread count, device, columns: a few
    hundred bytes); each process loads the saved model (the exported weights that scoring
    uses, never the training state) the first time it scores, then reuses it. Every call runs
    with exactly ``n_threads`` torch threads (restored afterwards): one per worker by default,
    since engines run one task per core and more threads per task oversubscribe the machine.

    Parameters
    ----------
    model_dir : str or PathLike
        A folder written by ``OCSDF.save`` / ``ocsdf fit``, readable from every worker.
    n_threads : int, default 1
        Torch intra-op threads while scoring (>= 1).
    device : str, default "cpu"
    columns : sequence of str or int, optional
        Feature columns of a DataFrame batch (names or positions); default: the model's
        feature names when it has them, else every column.

    Notes
    -----
    A batch's rows are checked as a file's are (:func:`ocsdf.io.select_for_model`; errors
    name rows within the batch). Scores equal ``score_samples`` on the same batch; across
    batch sizes they may differ in the last bit (see the module notes).
    """

    def __init__(self, model_dir: str | os.PathLike, n_threads: int = 1, device: str = "cpu",
                 columns: Sequence[str | int] | None = None) -> None:
        if int(n_threads) < 1:
            raise ValueError(f"n_threads must be >= 1, got {n_threads!r}")
        # absolute: workers may start in another folder
        self.model_dir = str(Path(model_dir).expanduser().absolute())
        self.n_threads = int(n_threads)
        self.device = device
        self.columns = None if columns is None else list(columns)

    @property
    def model(self):
        """The loaded :class:`~ocsdf.OCSDF`, from this process's cache (:func:`load_counts`):
        every BatchScorer of the same folder and device in a process shares one load, even
        when an engine unpickles one object per task."""
        return _cached_model(self.model_dir, self.device)

    def __call__(self, batch) -> pd.DataFrame:
        """Score ``batch``: a pandas DataFrame, a pyarrow Table or RecordBatch, or an array
        of shape (n, d) (raw units).

        Returns
        -------
        DataFrame, shape (n, 3) or (n, 4)
            ``score``, ``decision`` (float64), ``label`` (int64, +1/-1) and, when the model
            has calibration scores, ``pvalue`` (float64, split-conformal); the index of a
            DataFrame batch is kept.
        """
        from .core.runtime import torch_threads
        from .estimator import conformal_pvalues

        model = self.model
        index = None
        if hasattr(batch, "to_pandas") and not isinstance(batch, pd.DataFrame):
            batch = batch.to_pandas()
        if isinstance(batch, pd.DataFrame):
            index = batch.index
            frame = batch.reset_index(drop=True)
            frame.columns = [str(c) for c in frame.columns]
            table = Table(frame, True, Path("batch"))
        else:
            array = np.asarray(batch)
            if array.ndim != 2:
                raise InputError(f"a batch must be 2-D (n_rows, n_features), got shape "
                                 f"{array.shape}")
            table = Table(pd.DataFrame(array, columns=[f"x{i}" for i in range(array.shape[1])]),
                          False, Path("batch"))
        X, _ = select_for_model(table, model, self.columns)
        names = getattr(model, "feature_names_in_", None)
        rows = pd.DataFrame(X, columns=list(names), copy=False) if names is not None else X
        with torch_threads(self.n_threads):
            score = np.asarray(model.score_samples(rows), dtype=np.float64) if len(X) \
                else np.empty(0)
        decision = score - model.offset_
        out = {"score": score, "decision": decision,
               "label": np.where(decision >= 0, 1, -1).astype(np.int64)}
        if hasattr(model, "calibration_scores_"):
            out["pvalue"] = conformal_pvalues(model.calibration_scores_, score)
        return pd.DataFrame(out, index=index)


# ---------------------------------------------------------------------------- model cache
#: Loaded models kept per process (the oldest load is dropped beyond this).
_MAX_CACHED = 8
_lock = threading.Lock()
_models: dict[tuple, object] = {}  # (folder, device, stamp) -> OCSDF
_loads: dict[tuple[str, str], int] = {}  # (folder, device) -> loads in this process


def load_counts() -> dict[tuple[str, str], int]:
    """How many times this process loaded each saved model, ``{(folder, device): loads}``:
    1 per folder and device, more only when the folder was saved again meanwhile (e.g. on a
    Dask cluster, ``client.run(load_counts)`` on every worker)."""
    with _lock:
        return dict(_loads)


def _cached_model(folder: str, device: str):
    """The model saved in ``folder``, loaded onto ``device`` once per process (again only when
    the folder's ``config.json`` was replaced, as ``OCSDF.save`` does)."""
    from .estimator import OCSDF

    key = (folder, device, _stamp(folder))
    with _lock:
        model = _models.get(key)
        if model is None:
            model = OCSDF.load(folder, device=device)
            for old in [k for k in _models if k[:2] == key[:2]]:
                del _models[old]  # an older save of the same folder
            while len(_models) >= _MAX_CACHED:
                del _models[next(iter(_models))]
            _models[key] = model
            _loads[key[:2]] = _loads.get(key[:2], 0) + 1
        return model


def _stamp(folder: str) -> tuple[int, int, int] | None:
    """Identity of the saved model's ``config.json`` (inode, size, mtime in ns); None if
    absent (loading then raises the one-line ModelFileError)."""
    try:
        st = os.stat(os.path.join(folder, "config.json"))
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


# ---------------------------------------------------------------------------- internals
def _checked_rows(
    model, paths: list[Path], source: Path, chunk_rows: int,
    columns: Sequence[str | int] | None, header: bool | None,
    model_dir: str | os.PathLike | None, ignored: list[str],
) -> Iterator[np.ndarray]:
    """The rows of every file as checked float64 blocks ``(n_chunk, d)``, file after file.

    A single file with no data rows is an error (as for a whole file); in a folder, empty
    files are skipped and only a folder without any row is an error."""
    in_folder = source.is_dir()
    n_rows = 0
    for path in paths:
        try:
            if in_folder and path.stat().st_size == 0:
                continue
            tables = iter_table(path, chunk_rows, header=header, allow_empty=in_folder)
            table = next(tables, None)
        except OSError as err:
            raise InputError(f"cannot read {path}: {err.strerror or err}") from None
        while table is not None:
            X, dropped = select_for_model(table, model, columns, model_dir=model_dir)
            ignored.extend(c for c in dropped if c not in ignored)
            _check_range(model, X, table)
            n_rows += len(X)
            if len(X):
                yield X
            try:
                table = next(tables, None)
            except OSError as err:
                raise InputError(f"cannot read {path}: {err.strerror or err}") from None
    if n_rows == 0:
        raise InputError(f"empty input: {source} has no data rows "
                         f"({len(paths)} file{'s' if len(paths) != 1 else ''})")


def _check_range(model, X: np.ndarray, table: Table) -> None:
    """Raise :class:`InputError` for a row farther than :data:`~ocsdf.core.scorer.Z_MAX`
    standard deviations from the training mean (which ``score_samples`` refuses), naming its
    data row in the whole file rather than in the batch."""
    from .core.scorer import Z_MAX

    scorer = getattr(model, "scorer_", None)
    if scorer is None or not len(X):
        return
    with np.errstate(over="ignore", invalid="ignore"):
        z = np.abs(scorer.standardize(X))
    bad = ~(z <= Z_MAX)
    if not bad.any():
        return
    row, col = np.argwhere(bad)[0]
    names = getattr(model, "feature_names_in_", None)
    name = str(names[col]) if names is not None else f"x{col}"
    count = int(bad.any(axis=1).sum())
    raise InputError(
        f"{table.path}, data row {table.first_row + row + 1}, feature {name!r}: "
        f"{X[row, col]:.3g} is {z[row, col]:.3g} standard deviations from the training mean, "
        f"beyond the {Z_MAX:.0e} up to which scores are computed ({count} such rows in data "
        f"rows {table.first_row + 1} to {table.first_row + len(X)}); such a row is anomalous "
        "by any measure: drop it or clip it")


def _batches(blocks: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """The rows of ``blocks`` regrouped into consecutive arrays of exactly ``size`` rows (the
    last may be shorter), so that batch ``k`` holds rows ``k * size`` to ``(k + 1) * size - 1``
    of the whole input whatever the block sizes. Holds at most ``size`` rows besides the
    current block."""
    pending: list[np.ndarray] = []
    held = 0
    for X in blocks:
        while len(X):
            take = min(size - held, len(X))
            pending.append(X[:take])
            held += take
            X = X[take:]
            if held == size:
                yield pending[0] if len(pending) == 1 else np.concatenate(pending)
                pending, held = [], 0
    if held:
        yield pending[0] if len(pending) == 1 else np.concatenate(pending)


class _CsvSink:
    """Writes score tables as one CSV (header once, ``\\n`` newlines, full-precision floats:
    the bytes ``DataFrame.to_csv`` writes for the whole table)."""

    def __init__(self, fh: IO[str]) -> None:
        self.fh, self.first = fh, True

    def write(self, frame: pd.DataFrame) -> None:
        frame.to_csv(self.fh, index=False, header=self.first, lineterminator="\n")
        self.first = False

    def close(self) -> None:
        if self.first:  # no rows: still a header line, like the whole-table writer
            pd.DataFrame(columns=list(OUTPUT_COLUMNS)).to_csv(self.fh, index=False,
                                                              lineterminator="\n")
            self.first = False

    def abandon(self) -> None:
        """Stop after a failure (the file is being discarded): nothing to do."""


class _ParquetSink:
    """Writes score tables as one Parquet file (a row group per table; needs pyarrow)."""

    def __init__(self, fh: IO[bytes]) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise InputError("writing Parquet needs pyarrow: pip install pyarrow") from None
        self.pa = pa
        self.schema = pa.schema([("score", pa.float64()), ("decision", pa.float64()),
                                 ("label", pa.int64())])
        self.writer = pq.ParquetWriter(fh, self.schema)

    def write(self, frame: pd.DataFrame) -> None:
        self.writer.write_table(self.pa.Table.from_pandas(frame, schema=self.schema,
                                                          preserve_index=False))

    def close(self) -> None:
        self.writer.close()

    def abandon(self) -> None:
        """Stop after a failure (the file is being discarded): close the writer quietly."""
        try:
            self.writer.close()
        except Exception:  # the original error is the one to report
            pass


class _writing:
    """Context manager: an OS error while writing ``path`` -> :class:`InputError` naming it."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> bool:
        if kind is not None and issubclass(kind, OSError):
            reason = getattr(err, "strerror", None) or str(err).strip() or kind.__name__
            raise InputError(f"cannot write {self.path}: {reason}") from None
        return False


def _progress_bar(files: list[Path], progress: bool):
    """A tqdm bar counting rows (with rows/s) on stderr; its total is known when every file is
    Parquet (from the files' metadata). Shown only after a second, and only with
    ``progress``."""
    from tqdm.auto import tqdm

    total = None
    if progress and all(f.suffix.lower() in PARQUET_SUFFIXES for f in files):
        try:
            import pyarrow.parquet as pq

            total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        except Exception:  # a bad file: its reader will name the problem
            total = None
    return tqdm(total=total, unit="rows", unit_scale=True, desc="scoring", file=sys.stderr,
                disable=not progress, delay=1.0, leave=False, dynamic_ncols=True)
