"""Scoring Dask collections with a saved model: :func:`score_dask_dataframe` and
:func:`score_dask_array`.

Each partition (or block of rows) is scored on the worker that holds it by a
:class:`ocsdf.stream.BatchScorer`; the task graph carries only the model's folder and a few
settings, never the weights. Every worker process loads the saved model once, the first time
it scores, and keeps it for every later partition of every later computation (a per-process
cache keyed by the folder, the device and the identity of the saved files: a model saved again
to the same folder is reloaded). :func:`load_counts` tells how many loads a process did.

Needs ``dask[dataframe]`` (and ``distributed`` for a cluster): ``pip install 'ocsdf[dask]'``.
Dask is imported when a function is called, never by ``import ocsdf``.

Scores are computed per partition: a partition of up to 65,536 rows
(:data:`ocsdf.core.scorer.SCORE_BATCH`) is one scoring batch, so its scores are bit for bit
those of ``model.score_samples`` on that partition, and may differ in the last bit from
``score_samples`` on the whole table (which batches rows from the first row; a matrix product
may round differently with another batch size).

The model's folder must be readable by every worker (a shared or network file system, or a
copy at the same path on each machine).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .stream import BatchScorer, load_counts

__all__ = ["load_counts", "score_dask_array", "score_dask_dataframe"]

_INSTALL = "pip install 'ocsdf[dask]'"

def score_dask_dataframe(model_dir: str | os.PathLike, ddf, columns: Sequence[str | int] | None
                         = None, n_threads: int = 1, device: str = "cpu"):
    """Score every row of a Dask DataFrame, partition by partition (``map_partitions``).

    Parameters
    ----------
    model_dir : str or PathLike
        A folder written by ``OCSDF.save`` / ``ocsdf fit``, readable from every worker at this
        path. It is also loaded here (in the client) to check the columns before any work.
    ddf : dask.dataframe.DataFrame, shape (n_rows, n_columns)
        Rows in raw units, any number of partitions.
    columns : sequence of str or int, optional
        Feature columns (names or positions); default: the model's feature names when it was
        fitted with them, else every column.
    n_threads : int, default 1
        Torch threads per task (>= 1). Keep 1 with one Dask thread per core.
    device : str, default "cpu"
        Where workers load the model ("cpu", "cuda").

    Returns
    -------
    dask.dataframe.DataFrame, shape (n_rows, 3) or (n_rows, 4)
        Lazy; same partitions and index as ``ddf``. Columns ``score`` (float64, higher = more
        normal), ``decision`` (``score - offset_``, float64), ``label`` (int64, +1 inlier,
        -1 outlier) and, when the model has calibration scores, ``pvalue`` (float64,
        split-conformal).

    Raises
    ------
    ImportError
        Dask is not installed.
    TypeError
        ``ddf`` is not a Dask DataFrame.
    InputError
        The columns do not fit the model (one line; checked on ``ddf``'s empty metadata). Bad
        values (NaN, text) are found when a partition is computed; the error names the row
        within its partition.
    ModelFileError
        ``model_dir`` does not hold a readable model.
    """
    dd = _import("dask.dataframe", "score_dask_dataframe")
    if not isinstance(ddf, dd.DataFrame):
        raise TypeError(f"ddf must be a dask.dataframe.DataFrame, got {type(ddf).__name__}; "
                        "convert with dask.dataframe.from_pandas(frame, npartitions=...)")
    folder = _folder(model_dir)
    scorer = BatchScorer(folder, n_threads, device, columns)
    empty = scorer(ddf._meta)  # checks columns and width now, in the client, on 0 rows
    dtypes = {"score": np.float64, "decision": np.float64, "label": np.int64}
    if "pvalue" in empty.columns:
        dtypes["pvalue"] = np.float64
    meta = pd.DataFrame({name: np.empty(0, dtype=kind) for name, kind in dtypes.items()},
                        index=ddf._meta.index[:0])
    return ddf.map_partitions(_score_partition, folder, n_threads, device, _listed(columns),
                              meta=meta)


def score_dask_array(model_dir: str | os.PathLike, arr, n_threads: int = 1,
                     device: str = "cpu"):
    """Scores of every row of a 2-D Dask array, block of rows by block (``map_blocks``).

    Parameters
    ----------
    model_dir : str or PathLike
        As for :func:`score_dask_dataframe`.
    arr : dask.array.Array, shape (n_rows, n_features)
        Rows in raw units, in the model's column order, chunked along rows only (one chunk
        spans every column: ``arr.rechunk({1: -1})``).
    n_threads : int, default 1
        Torch threads per task (>= 1).
    device : str, default "cpu"

    Returns
    -------
    dask.array.Array, shape (n_rows,), float64
        Lazy ``score_samples`` (higher = more normal), chunked as ``arr``'s rows.

    Raises
    ------
    ImportError, TypeError, ModelFileError
        As for :func:`score_dask_dataframe`.
    ValueError
        ``arr`` is not 2-D or is split along its columns.
    InputError
        ``arr`` has a number of columns other than the model's.
    """
    da = _import("dask.array", "score_dask_array")
    if not isinstance(arr, da.Array):
        raise TypeError(f"arr must be a dask.array.Array, got {type(arr).__name__}; "
                        "convert with dask.array.from_array(x, chunks=(rows, -1))")
    if arr.ndim != 2:
        raise ValueError(f"arr must be 2-D (n_rows, n_features), got shape {arr.shape}")
    if len(arr.chunks[1]) != 1:
        raise ValueError(f"arr must be chunked along rows only, got {len(arr.chunks[1])} "
                         f"column chunks {arr.chunks[1]}: use arr.rechunk({{1: -1}})")
    folder = _folder(model_dir)
    BatchScorer(folder, n_threads, device, None)(np.empty((0, arr.shape[1])))
    return da.map_blocks(_score_block, arr, folder, n_threads, device, drop_axis=1,
                         chunks=(arr.chunks[0],), dtype=np.float64,
                         meta=np.empty((0,), dtype=np.float64))


# ---------------------------------------------------------------------------- internals
def _score_partition(frame: pd.DataFrame, folder: str, n_threads: int, device: str,
                     columns: list | None) -> pd.DataFrame:
    """Score one partition (n, c) -> DataFrame (n, 3 or 4), same index (runs on a worker)."""
    return BatchScorer(folder, n_threads, device, columns)(frame)


def _score_block(block: np.ndarray, folder: str, n_threads: int, device: str) -> np.ndarray:
    """Scores of one block of rows (n, d) -> (n,) float64 (runs on a worker)."""
    scores = BatchScorer(folder, n_threads, device, None)(block)["score"]
    return scores.to_numpy(dtype=np.float64)


def _folder(model_dir: str | os.PathLike) -> str:
    """``model_dir`` as an absolute path string (workers may start in another folder)."""
    return str(Path(model_dir).expanduser().absolute())


def _listed(columns: Sequence[str | int] | None) -> list | None:
    return None if columns is None else list(columns)


def _import(module: str, caller: str):
    """Import ``module`` (a Dask package), or raise a one-line ImportError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{caller} needs dask ({err}): {_INSTALL}") from None
