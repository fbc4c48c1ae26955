"""Scoring Spark DataFrames with a saved model: :func:`score_spark_dataframe` and
:func:`score_udf` (a ``pyspark.ml.functions.predict_batch_udf``).

Each Arrow batch of a partition is scored on the executor's Python worker by a
:class:`ocsdf.stream.BatchScorer`; the UDF carries only the model's folder and a few settings
(a few hundred bytes), never the weights. Every Python worker process loads the saved model
(the exported weights that scoring uses, not the training state) once, the first time it
scores, and keeps it for every later batch, partition and job, and for every other UDF made
from the same folder (a per-process cache keyed by the folder, the device and the identity of
the saved files: a model saved again to the same folder is reloaded).
:func:`load_counts` tells how many loads a process did. Each batch is scored with exactly
``n_threads`` torch threads (1 by default: Spark runs one task per core, and more threads per
task oversubscribe the machine).

Needs ``pyspark`` (3.5 or later; Java for a local session): ``pip install 'ocsdf[spark]'``.
Pyspark is imported when a function is called, never by ``import ocsdf``. The executors' Python
(``PYSPARK_PYTHON``; ``python3`` on the ``PATH`` by default, not necessarily the driver's
virtual environment) must have ``ocsdf`` installed: the UDF refers to it by name.

**The model's folder must be readable at the same absolute path by every executor** (a shared
or network file system: NFS, a DBFS ``/dbfs/...`` fuse mount, a Kubernetes volume; or a copy
at that path on each machine, e.g. by a cluster init script). The path is made absolute on the
driver, and the driver reads the folder too (to check the columns and find out whether the
model has calibration scores) before any task runs. ``OCSDF.save`` / ``ocsdf fit`` write it.

Scores are computed per batch: Spark hands the UDF Arrow batches of at most
``spark.sql.execution.arrow.maxRecordsPerBatch`` rows (10,000 by default) of one partition,
split further into ``batch_size`` rows. A batch's scores are bit for bit those of
``model.score_samples`` on that batch's rows (whether they came as a struct or an array
column: the scorer copies each block row-major, so the layout does not matter), and may differ
in the last bit from ``score_samples`` on
the whole table (a matrix product may round differently with another batch size; on the
machine this was written on, 2M rows in 10,000-row batches matched it exactly).

Ray Data needs no adapter: ``BatchScorer`` is the function to give ``map_batches``. It
pickles as its settings and each Ray worker process loads the model once (the same cache)::

    import ray
    from ocsdf.stream import BatchScorer

    scorer = BatchScorer("/shared/model", n_threads=1)       # columns: score, decision, label
    ds = ray.data.read_parquet("/shared/data/")               # (+ pvalue when calibrated)
    scores = ds.map_batches(scorer, batch_format="pandas")     # only the score columns
    both = ds.map_batches(lambda b: b.join(scorer(b)), batch_format="pandas")  # inputs too

A BatchScorer *instance* runs as stateless Ray tasks (the per-process cache still loads the
model once per worker process); the class itself runs on a pool of actors, each loading the
model at its first batch: ``ds.map_batches(BatchScorer, fn_constructor_args=("/shared/model",),
concurrency=4, batch_format="pandas")``. Ray is not a dependency: nothing here imports it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .core.scorer import SCORE_BATCH
from .errors import InputError
from .stream import BatchScorer, load_counts

__all__ = ["OUTPUT_FIELDS", "load_counts", "score_spark_dataframe", "score_udf"]

_INSTALL = "pip install 'ocsdf[spark]'"

#: The fields :func:`score_udf` returns and the columns :func:`score_spark_dataframe` appends
#: (``pvalue`` only for a model with calibration scores).
OUTPUT_FIELDS = ("score", "decision", "label", "pvalue")


def score_udf(model_dir: str | os.PathLike, *, n_threads: int = 1, device: str = "cpu",
              batch_size: int = SCORE_BATCH):
    """A ``predict_batch_udf`` scoring rows with the model saved in ``model_dir``.

    Give it one column holding each row's features in the model's order: a struct of the
    feature columns (``F.struct(*names)``, numeric) or an ``array<double>`` of length
    ``n_features_in_``. :func:`score_spark_dataframe` does this for you, picking the columns by
    name and checking them first.

    Parameters
    ----------
    model_dir : str or PathLike
        A folder written by ``OCSDF.save`` / ``ocsdf fit``, readable at this path (made
        absolute here) by every executor. It is also loaded here, on the driver, to build the
        return type.
    n_threads : int, default 1
        Torch intra-op threads per batch (>= 1). Keep 1 with one Spark task per core.
    device : str, default "cpu"
        Where the Python workers load the model ("cpu", "cuda"). The driver loads it on the CPU.
    batch_size : int, default 65536
        Rows per call of the model at most (>= 1); Spark's Arrow batches
        (``spark.sql.execution.arrow.maxRecordsPerBatch``, 10,000 rows by default) bound it too.

    Returns
    -------
    UserDefinedFunction
        ``udf(features_column)`` is a struct column with fields ``score`` (double, higher = more
        normal, about a signed distance in standardised units), ``decision`` (double,
        ``score - offset_``: > 0 inlier), ``label`` (bigint, +1 inlier, -1 outlier: ``decision
        >= 0``) and, when the model has calibration scores, ``pvalue`` (double in (0, 1],
        split-conformal: small = anomalous).

    Raises
    ------
    ImportError
        pyspark is not installed.
    ModelFileError
        ``model_dir`` does not hold a readable model.

    Notes
    -----
    A null or non-finite feature fails the task with the one-line :class:`InputError` of
    :class:`~ocsdf.stream.BatchScorer` (naming the feature and the row within its batch),
    wrapped by Spark in a ``PythonException``.
    """
    model = _driver_model(model_dir, "score_udf")
    return _make_udf(_folder(model_dir), model, _feature_names(model), n_threads, device,
                     batch_size)


def score_spark_dataframe(sdf, model_dir: str | os.PathLike,
                          columns: Sequence[str | int] | None = None, *, n_threads: int = 1,
                          device: str = "cpu", batch_size: int = SCORE_BATCH):
    """``sdf`` with the scores of its rows appended as columns (lazy; one UDF pass).

    Parameters
    ----------
    sdf : pyspark.sql.DataFrame, shape (n_rows, n_columns)
        Rows in raw units, any number of partitions. Other columns (ids, labels) are kept.
    model_dir : str or PathLike
        As for :func:`score_udf`: readable at this path by the driver and every executor.
    columns : sequence of str or int, optional
        The feature columns, in the model's feature order (names, or 0-based positions in
        ``sdf.columns``); default: the model's feature names when it was fitted with them,
        else every column of ``sdf``.
    n_threads, device, batch_size
        As for :func:`score_udf`.

    Returns
    -------
    pyspark.sql.DataFrame, shape (n_rows, n_columns + 3) or (n_rows, n_columns + 4)
        ``sdf``'s columns, then ``score`` (double, higher = more normal), ``decision``
        (double, ``score - offset_``), ``label`` (bigint, +1 inlier / -1 outlier) and, when the
        model has calibration scores, ``pvalue`` (double, split-conformal). Same partitions and
        row order as ``sdf``.

    Raises
    ------
    ImportError
        pyspark is not installed.
    TypeError
        ``sdf`` is not a Spark DataFrame.
    InputError
        One line, on the driver before any task: a feature column is missing (named), is not
        numeric, the number of columns is not the model's, or ``sdf`` already has an output
        column. A null or non-finite value fails the job when its batch is scored (see
        :func:`score_udf`).
    ModelFileError
        ``model_dir`` does not hold a readable model.
    """
    F = _import("pyspark.sql.functions", "score_spark_dataframe")
    T = _import("pyspark.sql.types", "score_spark_dataframe")
    if not (hasattr(sdf, "schema") and hasattr(sdf, "withColumns") and hasattr(sdf, "columns")):
        raise TypeError(f"sdf must be a pyspark.sql.DataFrame, got {type(sdf).__name__}; "
                        "convert with spark.createDataFrame(frame)")
    model = _driver_model(model_dir, "score_spark_dataframe")
    present = list(sdf.columns)
    features = _pick_columns(model, present, columns)
    kinds = {field.name: field.dataType for field in sdf.schema.fields}
    for name in features:
        if not isinstance(kinds[name], T.NumericType):
            raise InputError(f"Spark DataFrame column {name!r} is "
                             f"{kinds[name].simpleString()}, not numeric; cast it or choose "
                             "columns with columns=[...]")
    outputs = [f for f in OUTPUT_FIELDS if f != "pvalue" or _calibrated(model)]
    clash = [name for name in outputs if name in present]
    if clash:
        raise InputError(f"Spark DataFrame already has column {clash[0]!r}, which scoring "
                         "appends; drop or rename it first")
    udf = _make_udf(_folder(model_dir), model, features, n_threads, device, batch_size)
    tmp = "__ocsdf_scores"
    while tmp in present:
        tmp += "_"
    struct = F.struct(*[F.col(_quoted(name)).cast("double").alias(name) for name in features])
    scored = sdf.withColumn(tmp, udf(struct))
    return scored.withColumns({name: F.col(tmp).getField(name) for name in outputs}).drop(tmp)


# ---------------------------------------------------------------------------- internals
class _Predict:
    """The predict function of one Python worker: (n, d) float64 -> dict of (n,) arrays."""

    def __init__(self, scorer: BatchScorer, names: list[str], fields: list[str]) -> None:
        self.scorer, self.names, self.fields = scorer, names, fields

    def __call__(self, X: np.ndarray) -> dict[str, np.ndarray]:
        # (the scorer copies each block row-major: scores do not depend on the layout)
        X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        frame = pd.DataFrame(X, columns=self.names, copy=False)
        out = self.scorer(frame)
        return {name: out[name].to_numpy() for name in self.fields}


class _MakePredict:
    """``make_predict_fn`` of :func:`predict_batch_udf`: loads the model through this process's
    cache (once per Python worker, whatever the number of UDFs, tasks and jobs)."""

    def __init__(self, scorer: BatchScorer, names: list[str], fields: list[str]) -> None:
        self.scorer, self.names, self.fields = scorer, names, fields

    def __call__(self) -> _Predict:
        self.scorer.model  # noqa: B018 -- load now (cached per process)
        return _Predict(self.scorer, self.names, self.fields)


def _make_udf(folder: str, model, names: list[str], n_threads: int, device: str,
              batch_size: int):
    """The predict_batch_udf for ``model`` (already loaded on the driver, for its shape)."""
    functions = _import("pyspark.ml.functions", "score_udf")
    T = _import("pyspark.sql.types", "score_udf")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    # the worker names rows' features by the Spark columns they came from
    scorer = BatchScorer(folder, n_threads, device, list(names))
    fields = [f for f in OUTPUT_FIELDS if f != "pvalue" or _calibrated(model)]
    kinds = {"score": T.DoubleType(), "decision": T.DoubleType(), "label": T.LongType(),
             "pvalue": T.DoubleType()}
    return_type = T.StructType([T.StructField(f, kinds[f]) for f in fields])
    return functions.predict_batch_udf(
        _MakePredict(scorer, list(names), fields), return_type=return_type,
        batch_size=int(batch_size), input_tensor_shapes=[[int(model.n_features_in_)]])


def _driver_model(model_dir: str | os.PathLike, caller: str):
    """The model, loaded on the driver's CPU through the per-process cache (checks the
    folder early: ModelFileError)."""
    _import("pyspark.sql", caller)
    return BatchScorer(model_dir, 1, "cpu").model


def _pick_columns(model, present: list[str], columns: Sequence[str | int] | None
                  ) -> list[str]:
    """The names of the feature columns of a Spark DataFrame with columns ``present``."""
    expected = int(model.n_features_in_)
    model_names = getattr(model, "feature_names_in_", None)
    if columns is None and model_names is not None:
        wanted = [str(n) for n in model_names]
        missing = [n for n in wanted if n not in set(present)]
        if missing:
            raise InputError(f"Spark DataFrame lacks columns the model was fitted on: "
                             f"{missing}; choose columns with columns=[...]")
        return wanted
    if columns is None:
        picked = list(present)
    else:
        picked = []
        for c in columns:
            if isinstance(c, int | np.integer) and not isinstance(c, bool):
                if not -len(present) <= int(c) < len(present):
                    raise InputError(f"column position {int(c)} is out of range: the Spark "
                                     f"DataFrame has {len(present)} columns")
                picked.append(present[int(c)])
            elif str(c) in present:
                picked.append(str(c))
            else:
                raise InputError(f"Spark DataFrame has no column {str(c)!r}; it has {present}")
    if len(picked) != expected:
        raise InputError(f"Spark DataFrame has {len(picked)} feature columns but the model "
                         f"expects {expected}; choose columns with columns=[...]")
    return picked


def _feature_names(model) -> list[str]:
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        return [str(n) for n in names]
    return [f"x{i}" for i in range(int(model.n_features_in_))]


def _calibrated(model) -> bool:
    return hasattr(model, "calibration_scores_")


def _quoted(name: str) -> str:
    """A column name as ``F.col`` reads it literally (dots, spaces, backticks)."""
    return "`" + name.replace("`", "``") + "`"


def _folder(model_dir: str | os.PathLike) -> str:
    """``model_dir`` as an absolute path string (executors may start in another folder)."""
    return str(Path(model_dir).expanduser().absolute())


def _import(module: str, caller: str):
    """Import ``module`` (a pyspark package), or raise a one-line ImportError naming the
    extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{caller} needs pyspark ({err}): {_INSTALL}") from None
