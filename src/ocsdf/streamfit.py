"""Training from data larger than memory: :func:`fit_stream`.

``fit_stream(source, OCSDF(...))`` fits the estimator on the rows of a CSV/Parquet file, a
folder of them (read in chunks as ``ocsdf score`` reads them: :func:`ocsdf.io.iter_table`,
:func:`ocsdf.stream.data_files`), or a function returning a fresh iterator of row batches, in
memory bounded by ``buffer_rows`` (plus the calibration rows and one chunk), whatever the
number of rows. ``ocsdf fit DATA --stream`` runs it.

How
---
**Pass 1** (statistics) reads every row once and keeps, in float64:

* the row count and streaming moments of the training rows (each chunk's mean and sum of
  squared deviations, combined with Chan's formula), hence the :class:`Standardizer
  <ocsdf.core.domain.Standardizer>` (:meth:`~ocsdf.core.domain.Standardizer.from_moments`: the
  same constant-column rule as ``fit``);
* a uniform random sample of rows, by *bottom-k sampling*: row ``i`` gets a key ``u_i``
  (uniform, from a generator seeded with the estimator's seed and drawn in row order, so the
  key depends only on the row's position), and the sample is the rows with the smallest keys.
  Held out of the moments while they are candidates, those rows are split at the end of the
  pass: the ``n_cal`` smallest keys are the **calibration rows** (a uniform random subset of
  all rows, never used for training, standardisation or margin), the next ``buffer_rows`` are
  the first content of the training buffer, and the next ``sample_rows`` of them the sample
  the label-free margin (:func:`ocsdf.estimator.label_free_margin`, on the standardised
  sample) and, with ``contamination`` set, the threshold quantile are computed on.

**Training** draws its positives from a :class:`ShuffleBuffer` of at most ``buffer_rows``
standardised training rows (float32, on the training device), with exactly one
``torch.randint(len(buffer), (batch_size,), generator=g)`` per step, as
:class:`~ocsdf.core.training.InMemoryPositives` draws. When every training row fits in the
buffer, they are loaded once (in file order) and never refreshed. Otherwise a **second pass**
runs during training: it reads about ``ceil(n_rows / n_steps)`` rows per step (whole chunks at
a time, read ahead by a background thread), so that one pass over the data spans the run,
and it replaces the buffer by a *fresh uniform sample* of ``buffer_rows`` training rows, chosen
in advance by row number with the buffer's own generator (never the training generators):
each chosen row, when read, overwrites the next slot of a random permutation of the slots, so
that at the end of the pass every slot was replaced once. Why this rate and this choice:

* Training draws ``n_steps x batch_size`` positives in all (96,000 at the defaults for rows),
  fewer than a default buffer holds, so more passes would show the model no more rows; one pass is
  also what the second pass must do anyway to count the rows outside B and to check that the
  source gives the same rows again. Reading is bounded by read speed: when a chunk is not
  ready, training waits for it.
* With rows in random order (a shuffled file), the buffer is a uniform random sample of the
  training rows at every step. In a file sorted by something (time), it is a mix of the
  previous uniform sample and of the new sample's rows read so far, which over-represents the
  part of the file already read (by up to 3 : 1 halfway through the pass) but never collapses
  onto the last rows read as a buffer replacing *every* row read would (a sliding window).
  Shuffle such a file, or give a larger buffer, for a uniform sample throughout.

Then the estimator is finished exactly as :meth:`OCSDF.fit <ocsdf.OCSDF.fit>` finishes (the
same :class:`~ocsdf.core.scorer.Scorer`, calibration scores, threshold): it saves, loads,
certifies and scores like any fitted OCSDF. ``n_outside_domain_`` counts every training row
(in the second pass), with the same :class:`~ocsdf.errors.DomainWarning`, and
``domain_rows_`` holds those rows, standardised, in file order: the centres of the balls of
radius ``margin_`` that B adds (:class:`~ocsdf.core.domain.WithBalls`), as ``fit`` sets them.
The second pass keeps all of them in memory (float64, ``n_outside_domain_ x d``), beside the
buffer: few rows for data that suits the box, but not bounded by ``buffer_rows``.

Same results as ``fit``
-----------------------
When every training row fits in the buffer (``n_rows - n_cal <= buffer_rows``) and ``fpr`` is
None, ``fit_stream(source, est)`` is ``est.fit(X)`` bit for bit, for ``X`` the rows as ``fit``
would get them: the rows of a file as ``ocsdf fit`` reads them (a DataFrame when the file has
a header; numpy's column sums, hence the statistics' last bits, depend on the memory layout,
and a DataFrame is validated into a column-major array), ``np.concatenate`` of array batches,
``pd.concat`` of DataFrame batches. Then the training rows are kept whole (they fit in the
buffer) and go through ``fit``'s own validation and standardisation, the margin sample is all
of them in file order, and the buffer draws what ``InMemoryPositives`` draws. With ``fpr`` the
calibration rows are the bottom-k ones above, not ``fit``'s permutation split, so the models
differ (each is a valid fit). When the rows do not fit, the statistics are the streamed ones
(equal to ``fit``'s up to float rounding: sums in another order) and the positives differ.

Conformal guarantee
-------------------
With ``fpr`` (or ``calibration_rows``) the ``n_cal`` calibration rows are chosen uniformly at
random among all rows by their keys, independently of the values, and used for nothing but the
calibration scores. If the rows and a new normal row are exchangeable (e.g. i.i.d.), the new
row's score is exchangeable with the ``n_cal`` calibration scores, and the threshold of
:func:`~ocsdf.estimator.conformal_threshold` (the ``k``-th smallest calibration score,
``k = floor(fpr (n_cal + 1))``) flags it with probability ``k / (n_cal + 1) <= fpr`` (exactly,
for continuous scores; at most, with ties), marginally over the draw of the calibration rows
and of the new row; ``k = 0`` (``n_cal < 1 / fpr - 1``) flags nothing. Conditionally on the
calibration rows, the false-positive rate is a ``Beta(k, n_cal + 1 - k)`` draw: with the
default 10,000 rows and ``fpr = 0.01`` (``k = 100``) its mean is 0.0099990, its standard
deviation 0.00099, and it exceeds 0.0117 with probability about 5 %. The guarantee does not
hold under drift, or for a file whose rows are not exchangeable with future normal rows.
"""

from __future__ import annotations

import math
import os
import queue
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.utils import check_random_state
from tqdm.auto import tqdm

from .core.domain import Standardizer
from .core.runtime import torch_device, torch_threads
from .core.training import InMemoryPositives, train
from .errors import DomainWarning, InputError
from .estimator import OCSDF, _check_X, _outside_message, auto_calibration_size, label_free_margin
from .io import Table, _short_list, check_finite, default_names, iter_table, select_numeric
from .stream import DEFAULT_CHUNK_ROWS, data_files

__all__ = ["CALIBRATION_CAP", "DEFAULT_BUFFER_ROWS", "DEFAULT_SAMPLE_ROWS", "ShuffleBuffer",
           "StreamFitInfo", "fit_stream"]

#: Standardised training rows the training buffer holds by default (float32: 16 MB at 20
#: features).
DEFAULT_BUFFER_ROWS = 200_000
#: Rows of the uniform sample the label-free margin is computed on (which then draws 2,000).
DEFAULT_SAMPLE_ROWS = 20_000
#: Default cap of the calibration rows with ``fpr`` (raised to ``10 / fpr`` for a small rate).
CALIBRATION_CAP = 10_000

_KEY_STREAM = 1  # generator streams derived from the estimator's seed
_BUFFER_STREAM = 2
_BATCHES = Path("<batches>")  # how rows of an iterator source are named in errors


@dataclass
class StreamFitInfo:
    """What :func:`fit_stream` did (``estimator.stream_info_``).

    Attributes
    ----------
    n_rows : int
        Rows in the source (every pass).
    n_train, n_calibration : int
        Training rows and held-out calibration rows (``n_rows`` in all).
    n_features : int
    buffer_rows : int
        Rows the training buffer held.
    in_memory : bool
        Every training row fitted in the buffer: loaded once, never refreshed (then the fit is
        ``fit``'s, see the module notes).
    rows_per_step : int
        Rows the second pass read per training step (0 when in memory).
    pass_seconds : list of float
        Wall-clock seconds of the first pass and, when it ran, the second (which overlaps the
        training: from its start to the end of training or of the pass, the later).
    train_seconds : float
        The training loop (second pass included).
    steps_per_second : float
    files : tuple of Path
        The files read (empty for an iterator source).
    """

    n_rows: int
    n_train: int
    n_calibration: int
    n_features: int
    buffer_rows: int
    in_memory: bool
    rows_per_step: int = 0
    pass_seconds: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    steps_per_second: float = 0.0
    files: tuple[Path, ...] = ()


def fit_stream(
    source,
    estimator=None,
    *,
    columns: Sequence[str | int] | None = None,
    header: bool | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    buffer_rows: int = DEFAULT_BUFFER_ROWS,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
    calibration_rows: int | None = None,
    progress: bool = False,
):
    """Fit ``estimator`` on the rows of ``source`` in bounded memory (see the module notes).

    Parameters
    ----------
    source : path, 2-D array, sequence of batches, or callable
        A CSV (``.csv``/``.tsv``/``.txt``) or Parquet (``.parquet``/``.pq``) file, or a folder
        of them (:func:`ocsdf.stream.data_files`: subfolders included, sorted by path; files
        of 0 bytes or a header only are skipped); a 2-D NumPy array (e.g. ``np.load(...,
        mmap_mode="r")``: read ``chunk_rows`` rows at a time); a list or tuple of row batches;
        or a function returning a *fresh* iterator of row batches each time it is called
        (NumPy arrays ``(n, d)``, pandas DataFrames or pyarrow tables). The rows are read at
        least twice and must come in the same order every time: a one-shot iterator (a
        generator) is refused.
    estimator : OCSDF, optional
        The unfitted estimator whose parameters to use (default ``OCSDF()``); fitted in place
        and returned. Tabular rows only: ``image_shape``, ``network="conv"``, ``trim`` and
        ``standardize="cover"`` are refused (and ``distance_weight > 0``).
    columns : sequence of str or int, optional
        Feature columns (names or 0-based positions), as ``ocsdf fit --columns``; default all.
        Every file (batch) must give the same columns.
    header : bool or None
        Whether the first line of a CSV file holds column names (None: detect).
    chunk_rows : int, default 65536
        Rows read at a time (>= 1).
    buffer_rows : int, default 200000
        Standardised training rows held for training (float32, ``buffer_rows x d x 4`` bytes;
        the first pass holds them in float64 beside up to twice as many candidates).
    sample_rows : int, default 20000
        Rows of the uniform sample for the label-free margin and the ``contamination``
        quantile (>= 2). The margin draws 2,000 of them, as ``fit`` draws 2,000 training rows:
        with fewer, nearest neighbours are farther apart and the margin comes out larger.
    calibration_rows : int, optional
        Rows held out for the conformal threshold (and p-values). Default: with ``fpr``,
        :func:`~ocsdf.estimator.auto_calibration_size` of the rows (20 % to 50 %), capped at
        ``max(10000, ceil(10 / fpr))``; with a float ``calibration_size``, that share, capped
        alike; otherwise none.
    progress : bool, default False
        tqdm bars (rows and rows/s) for each pass and for the training steps (also on with the
        estimator's ``verbose``).

    Returns
    -------
    OCSDF
        ``estimator``, fitted; ``estimator.stream_info_`` is a :class:`StreamFitInfo`.
        ``offset_`` with ``contamination`` set is the quantile of the scores of the
        ``sample_rows`` sample (of every training row when they fit in the buffer).

    Raises
    ------
    InputError
        One line: a bad file or row (named by its file and data row, as ``ocsdf score`` names
        them), an unsupported option, a one-shot iterator, too few rows, or a source that gave
        other rows on its second pass.
    """
    start = time.perf_counter()
    est = OCSDF() if estimator is None else estimator
    _check_options(est, chunk_rows, buffer_rows, sample_rows, calibration_rows)
    progress = bool(progress or est.verbose)
    rows = _RowSource(source, columns, header, int(chunk_rows))
    device = torch_device(est.device)
    seed = int(check_random_state(est.random_state).randint(2**31 - 1))
    n_cal_max = _calibration_cap(est, calibration_rows)
    keep = max(int(buffer_rows), int(sample_rows))

    # ---- pass 1: count, moments, bottom-k sample
    t0 = time.perf_counter()
    with _row_bar(rows, progress, "ocsdf fit --stream: pass 1 (statistics)") as bar:
        first = _first_pass(rows, n_cal_max + keep, seed, bar)
    n, d = first.n_rows, first.n_features
    n_cal = _calibration_count(est, n, calibration_rows, n_cal_max)
    n_train = n - n_cal
    order = np.argsort(first.keys, kind="stable")  # held rows by key: their ranks
    cal_pos = order[:n_cal]
    train_pos = order[n_cal:]
    X_cal = first.rows[np.sort(cal_pos)] if n_cal else None  # calibration rows, file order
    cal_index = np.sort(first.index[cal_pos])
    in_memory = n_train <= int(buffer_rows)
    info = StreamFitInfo(n_rows=n, n_train=n_train, n_calibration=n_cal, n_features=d,
                         buffer_rows=min(int(buffer_rows), n_train), in_memory=in_memory,
                         pass_seconds=[time.perf_counter() - t0], files=rows.files)
    est.n_trimmed_ = 0
    est.image_shape_ = None
    domain = est._domain()
    if in_memory:
        # Every training row is held (n <= n_cal_max + keep): fit's own validation and
        # standardisation on them, in file order and in the layout fit would get.
        X_tr = first.rows[np.sort(train_pos)]
        first = None
        z = est._standardise(_check_fit_rows(est, rows.as_fit_input(X_tr)), seed)
        buffer = ShuffleBuffer(torch.as_tensor(z, dtype=torch.float32, device=device))
        del z
        X_sample = X_tr
        refresh = None
    else:
        by_rank = np.asarray(train_pos)
        first.moments.add(first.rows[by_rank])  # the held training rows join the moments
        mean, std = first.moments.result(rows.names, rows.has_header)
        std_map = (Standardizer.from_moments(mean, std) if est.standardize
                   else Standardizer(np.zeros(d), np.ones(d)))
        _set_features(est, rows, d)
        est.mean_, est.scale_ = std_map.mean, std_map.scale
        X_sample = first.rows[np.sort(by_rank[:int(sample_rows)])]
        z_sample = std_map.transform(X_sample)
        est.margin_ = (label_free_margin(z_sample, seed=seed) if est.margin == "auto"
                       else float(est.margin))
        initial = std_map.transform(first.rows[np.sort(by_rank[:int(buffer_rows)])])
        first = None
        rng = np.random.default_rng([seed, _BUFFER_STREAM])
        chosen = np.sort(rng.choice(n_train, int(buffer_rows), replace=False))
        slots = rng.permutation(int(buffer_rows))
        refresh = _RefreshPass(rows, std_map, domain, cal_index, chosen, slots, n,
                               est, progress)
        buffer = ShuffleBuffer(torch.as_tensor(initial, dtype=torch.float32, device=device),
                               refresh=refresh,
                               rows_per_step=math.ceil(n / int(est.n_steps_)))
        info.rows_per_step = buffer.rows_per_step
        del initial, z_sample

    # ---- training (pass 2 runs inside, from the buffer's draws)
    t1 = time.perf_counter()
    try:
        net, history = _train(est, buffer, seed, device, progress)
        if refresh is not None:
            refresh.finish()
    finally:
        if refresh is not None:
            refresh.close()
    info.train_seconds = time.perf_counter() - t1
    info.steps_per_second = int(est.n_steps_) / max(info.train_seconds, 1e-9)
    if refresh is not None:
        info.pass_seconds.append(time.perf_counter() - refresh.started)
        est.n_outside_domain_ = refresh.n_outside
        # B's ball centres: every training row outside the box, as fit's _standardise sets them
        est.domain_rows_ = refresh.outside_rows()
        if refresh.n_outside:
            warnings.warn(refresh.outside_message(est, n_train), DomainWarning, stacklevel=2)
    est._finish_fit(est._scorer(net), history, X_sample, X_cal)
    est.fit_time_ = time.perf_counter() - start
    est.stream_info_ = info
    return est


class ShuffleBuffer:
    """A positive source for :func:`ocsdf.core.training.train`: a buffer of training rows,
    optionally refreshed from a stream while training.

    Parameters
    ----------
    data : Tensor ``(B, d)``
        The first content (the network's input space, on the training device; float32).
    refresh : object with ``apply(buffer, n_rows)``, optional
        Called before each draw with a budget of ``rows_per_step`` rows: it reads rows of the
        stream and overwrites slots of :attr:`data` in place, with its own random choices.
        None: the buffer never changes (then draws are those of
        :class:`~ocsdf.core.training.InMemoryPositives` on ``data``).
    rows_per_step : int
        Stream rows read per step (whole chunks: the budget carries over).
    """

    def __init__(self, data: torch.Tensor, refresh=None, rows_per_step: int = 0) -> None:
        if data.dim() != 2 or len(data) < 1:
            raise ValueError(f"the buffer must have shape (n, d) with n >= 1, got "
                             f"{tuple(data.shape)}")
        self.data = data
        self.refresh = refresh
        self.rows_per_step = int(rows_per_step)
        self.budget = 0
        # the trainer's own draws over the buffer (it keeps ``data`` itself: refreshes show)
        self._rows = InMemoryPositives(data, 1, data.shape[1], data.device, data.dtype)
        if self._rows.data is not data:  # a copy would not see the refreshes
            raise RuntimeError("the buffer must be one tensor on its device, in its dtype")

    def draw(self, gens: Sequence[torch.Generator], batch_size: int) -> torch.Tensor:
        """``(1, batch_size, d)`` rows of the buffer drawn as
        :meth:`InMemoryPositives.draw <ocsdf.core.training.InMemoryPositives.draw>` draws
        them (one model), after this step's refresh."""
        if self.refresh is not None:
            self.budget += self.rows_per_step
            self.budget = self.refresh.apply(self.data, self.budget)
        return self._rows.draw(gens, batch_size)


# ---------------------------------------------------------------------------- options
def _check_options(est, chunk_rows, buffer_rows, sample_rows, calibration_rows) -> None:
    """One-line errors for what streaming does not do, and for bad sizes."""
    est._validate_params()
    est._resolve_auto()  # tabular rows: n_steps_, warmup_steps_, distance_weight_
    if est.image_shape is not None or est.network == "conv":
        raise InputError("fit_stream trains on tabular rows: images (image_shape, "
                         "network='conv') need OCSDF.fit")
    if est.trim > 0:
        raise InputError("fit_stream does not trim (trim > 0, --trim): the second fit would "
                         "need the first fit's scores of every row; use OCSDF.fit")
    if est.standardize == "cover":
        raise InputError("fit_stream does not cover (standardize='cover', --cover): use "
                         "OCSDF.fit, or a larger domain_size")
    if est.distance_weight_ > 0:
        raise InputError("fit_stream does not do distance supervision (distance_weight > 0): "
                         "its pool's distances need the training rows in memory; use OCSDF.fit")
    for name, value, low in (("chunk_rows", chunk_rows, 1), ("buffer_rows", buffer_rows, 1),
                             ("sample_rows", sample_rows, 2)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    if calibration_rows is not None and (
            isinstance(calibration_rows, bool)
            or not isinstance(calibration_rows, int | np.integer) or calibration_rows < 1):
        raise InputError(f"calibration_rows must be an integer >= 1 or None, got "
                         f"{calibration_rows!r}")


def _calibration_cap(est, calibration_rows: int | None) -> int:
    """The most calibration rows the first pass may hold (known before the row count)."""
    if calibration_rows is not None:
        return int(calibration_rows)
    if est.fpr is None and est.calibration_size == "auto":
        return 0
    need = math.ceil(10.0 / float(est.fpr)) if est.fpr is not None else 0
    return max(CALIBRATION_CAP, need)


def _calibration_count(est, n: int, calibration_rows: int | None, cap: int) -> int:
    """Calibration rows for ``n`` rows (see ``fit_stream``'s ``calibration_rows``)."""
    if calibration_rows is not None:
        n_cal, size = int(calibration_rows), None
    else:
        size = est.calibration_size
        if size == "auto":
            if est.fpr is None:
                return 0
            size = auto_calibration_size(est.fpr, n)
        n_cal = min(int(round(float(size) * n)), cap)
    if n_cal < 1 or n - n_cal < 2:
        what = f"{n_cal} calibration rows" if size is None else \
            f"a calibration split of {float(size):g}"
        raise InputError(f"{what} of {n} rows leaves too few rows; give more rows or a "
                         "different calibration size")
    return n_cal


def _set_features(est, rows: _RowSource, d: int) -> None:
    """``n_features_in_`` and ``feature_names_in_`` as ``fit`` sets them for these rows."""
    est.n_features_in_ = d
    if rows.has_header:
        est.feature_names_in_ = np.asarray(rows.names, dtype=object)
    elif hasattr(est, "feature_names_in_"):
        del est.feature_names_in_


def _check_fit_rows(est, X) -> np.ndarray:
    """``fit``'s validation of the rows (sets ``n_features_in_``, ``feature_names_in_``)."""
    return _check_X(est, X, reset=True)


def _train(est, buffer: ShuffleBuffer, seed: int, device, progress: bool):
    """The training run of ``_fit_estimators`` for one model, positives from ``buffer``:
    ``(exported float64 network, history)`` (the scorer is built once ``domain_rows_`` is
    known, after the second pass)."""
    net = est._make_network(1, [seed]).to(device)
    with torch_threads(est.n_threads):
        histories = train(net, buffer, est._domain(), est._train_config(seed),
                          margins=[est.margin_], seeds=[seed], progress=progress,
                          desc="ocsdf fit --stream: training")
    return net.export_all(torch.float64)[0], histories[0]


# ---------------------------------------------------------------------------- reading rows
class _RowSource:
    """The rows of a source as checked float64 blocks, one pass per :meth:`blocks` call."""

    def __init__(self, source, columns, header, chunk_rows: int) -> None:
        self.columns = None if columns is None else list(columns)
        self.header = header
        self.chunk_rows = chunk_rows
        self.files: tuple[Path, ...] = ()
        self.names: list[str] | None = None
        self.has_header = False
        self.first_path: Path | None = None
        self.frames = False  # DataFrame batches (fit would validate a DataFrame)
        if isinstance(source, str | os.PathLike):
            self.kind, self.root = "files", Path(source)
            self.files = tuple(data_files(source))
            self.label = str(source)
        elif isinstance(source, np.ndarray):
            if source.ndim != 2:
                raise InputError(f"an array source must be 2-D (n_rows, n_features), got "
                                 f"shape {source.shape}")
            self.kind, self.array, self.label = "array", source, "the array"
        elif isinstance(source, list | tuple):
            self.kind, self.batches, self.label = "sequence", source, str(_BATCHES)
        elif callable(source):
            self.kind, self.factory, self.label = "callable", source, str(_BATCHES)
        elif hasattr(source, "__next__") or (hasattr(source, "__iter__")
                                             and iter(source) is source):
            raise InputError(
                "fit_stream reads the rows twice (statistics, then training), and this "
                f"{type(source).__name__} can be read once only: pass a function returning a "
                "fresh iterator instead, e.g. lambda: read_batches(...)")
        else:
            raise InputError(f"fit_stream takes a file, a folder, a 2-D array, a list of row "
                             f"batches or a function returning an iterator of them, got a "
                             f"{type(source).__name__}")

    def as_fit_input(self, X: np.ndarray):
        """``X`` (the rows, file order) as ``fit`` would get them from the same source: a
        DataFrame with the header's names, else an array in the layout validation gives (a
        DataFrame or a file's columns: column-major; array batches: row-major)."""
        if self.has_header:
            return pd.DataFrame(X, columns=self.names)
        if self.kind == "files" or self.frames:
            return np.asfortranarray(X)
        return np.ascontiguousarray(X)

    def blocks(self) -> Iterator[np.ndarray]:
        """One pass: the rows as checked float64 blocks ``(n_chunk, d)``, in order."""
        n = 0
        for table_or_array in self._tables():
            X = self._select(table_or_array, n)
            n += len(X)
            if len(X):
                yield X
        if n == 0:
            raise InputError(f"empty input: {self.label} has no data rows")

    # -- internals
    def _tables(self) -> Iterator[Table | np.ndarray]:
        if self.kind == "files":
            in_folder = self.root.is_dir()
            for path in self.files:
                try:
                    if in_folder and path.stat().st_size == 0:
                        continue
                    tables = iter_table(path, self.chunk_rows, header=self.header,
                                        allow_empty=in_folder)
                    table = next(tables, None)
                    while table is not None:
                        yield table
                        table = next(tables, None)
                except OSError as err:
                    raise InputError(f"cannot read {path}: {err.strerror or err}") from None
            return
        if self.kind == "array":
            for s in range(0, len(self.array), self.chunk_rows):
                yield np.asarray(self.array[s:s + self.chunk_rows])
            return
        if self.kind == "sequence":
            batches = iter(self.batches)
        else:
            made = self.factory()
            try:
                batches = iter(made)
            except TypeError:
                raise InputError(f"the source function returned a {type(made).__name__}, "
                                 "not an iterator of row batches") from None
        for k, batch in enumerate(batches):
            yield self._batch(batch, k)

    def _batch(self, batch, k: int) -> Table | np.ndarray:
        if hasattr(batch, "to_pandas") and not isinstance(batch, pd.DataFrame):
            batch = batch.to_pandas()
        if isinstance(batch, pd.DataFrame):
            self.frames = True
            named = all(isinstance(c, str) for c in batch.columns)
            frame = batch.reset_index(drop=True)
            frame.columns = ([str(c) for c in frame.columns] if named
                             else default_names(frame.shape[1]))
            return Table(frame, named, _BATCHES, chunk=True)
        if isinstance(batch, np.ndarray):
            if batch.ndim != 2:
                raise InputError(f"row batch {k} has shape {batch.shape}: batches must be 2-D "
                                 "(n_rows, n_features)")
            return batch
        raise InputError(f"row batch {k} is a {type(batch).__name__}: batches must be NumPy "
                         "arrays (n_rows, n_features), DataFrames or pyarrow tables")

    def _select(self, item: Table | np.ndarray, n_before: int) -> np.ndarray:
        """The feature rows of one table or array batch, checked (finite, same columns)."""
        if isinstance(item, np.ndarray):
            try:
                X = np.asarray(item, dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise InputError(f"non-numeric values in {self.label} (data rows "
                                 f"{n_before + 1} to {n_before + len(item)}): {err}") from None
            names, path, has_header = default_names(X.shape[1]), Path(self.label), False
            if self.columns is not None:
                table = Table(pd.DataFrame(X, columns=names, copy=False), False, path)
                X, names = select_numeric(table, self.columns)
        else:
            if self.kind != "files":
                item = replace(item, first_row=n_before)
            cols = self.columns
            path, has_header = item.path, item.has_header
            if cols is None and self.names is not None and self.has_header and has_header:
                present = [str(c) for c in item.frame.columns]
                if any(c not in present for c in self.names):  # by the first file's names
                    self._mismatch(path, present)
                cols = self.names
            X, names = select_numeric(item, cols)
        if self.names is None:
            self.names, self.has_header, self.first_path = names, has_header, path
        elif X.shape[1] != len(self.names) or (has_header and self.has_header
                                               and names != self.names):
            self._mismatch(path, names)
        first_row = item.first_row if isinstance(item, Table) else n_before
        check_finite(X, names, path, first_row=first_row, chunk=True)
        return X

    def _mismatch(self, path: Path, names: list[str]) -> None:
        raise InputError(
            f"{path} has columns {_short_list(names)} but {self.first_path} has feature "
            f"columns {_short_list(self.names)}: every file (batch) needs the same columns; "
            "choose them with --columns")


def _prefetch(blocks: Iterator, depth: int = 2) -> Iterator:
    """``blocks`` read ahead by a background thread (``depth`` items at most): parsing the
    next chunk overlaps the work on this one. Same items, same order; an error raised while
    reading is raised here. Closing this generator stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for block in blocks:
                if not put(("block", block)):
                    return
            put(("done", None))
        except BaseException as err:  # handed to the reader's thread
            put(("error", err))
        finally:
            close = getattr(blocks, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name="ocsdf-fit-stream-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()


# ---------------------------------------------------------------------------- pass 1
class _Moments:
    """Float64 count, mean and sum of squared deviations per feature, combined chunk by
    chunk with Chan et al.'s formula."""

    def __init__(self, d: int) -> None:
        self.n = 0
        self.mean = np.zeros(d)
        self.m2 = np.zeros(d)

    def add(self, X: np.ndarray) -> None:
        nb = len(X)
        if nb == 0:
            return
        with np.errstate(over="ignore", invalid="ignore"):
            mb = X.mean(axis=0)
            dev = X - mb
            m2b = np.einsum("ij,ij->j", dev, dev)
            n = self.n + nb
            delta = mb - self.mean
            self.mean = self.mean + delta * (nb / n)
            self.m2 = self.m2 + m2b + delta * delta * (self.n * nb / n)
        self.n = n

    def result(self, names, named: bool) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std)`` (``ddof=0``); InputError when a statistic overflows float64."""
        std = np.sqrt(self.m2 / self.n)
        bad = np.flatnonzero(~(np.isfinite(self.mean) & np.isfinite(std)))
        if bad.size:
            shown = [str(names[j]) if named else f"x{j}" for j in bad]
            raise InputError(f"feature(s) {shown} hold values too large for float64 "
                             "statistics (their mean or standard deviation overflows); "
                             "rescale or remove them")
        return self.mean, std


@dataclass
class _FirstPass:
    """What pass 1 keeps: the counts, the moments of the rows not held, and the held rows
    (the ``capacity`` smallest keys) with their keys and row numbers."""

    n_rows: int
    n_features: int
    moments: _Moments
    keys: np.ndarray
    index: np.ndarray
    rows: np.ndarray


def _first_pass(rows: _RowSource, capacity: int, seed: int, bar) -> _FirstPass:
    """Read every row once: moments of the rows that are not candidates for the sample, and
    the ``capacity`` rows with the smallest keys (bottom-k sampling; compacted whenever twice
    that many are held, so memory stays below ``2 capacity`` rows plus a chunk)."""
    key_rng = np.random.default_rng([seed, _KEY_STREAM])
    moments: _Moments | None = None
    keys: list[np.ndarray] = []
    index: list[np.ndarray] = []
    held: list[np.ndarray] = []
    n_held, n, tau = 0, 0, math.inf

    def compact() -> tuple[int, float]:
        k = np.concatenate(keys)
        i = np.concatenate(index)
        r = np.concatenate(held)
        keys.clear(), index.clear(), held.clear()
        if len(k) > capacity:
            part = np.argpartition(k, capacity - 1)
            moments.add(r[part[capacity:]])  # no longer candidates: training rows
            part = part[:capacity]
            k, i, r = k[part], i[part], r[part]
        keys.append(k), index.append(i), held.append(r)
        return len(k), (float(k.max()) if len(k) >= capacity else math.inf)

    for X in _prefetch(rows.blocks()):
        if moments is None:
            moments = _Moments(X.shape[1])
        u = key_rng.random(len(X))
        cand = u < tau
        if cand.all():
            keys.append(u), index.append(np.arange(n, n + len(X))), held.append(X)
            n_held += len(X)
        else:
            moments.add(X[~cand])
            if cand.any():
                keys.append(u[cand]), index.append(np.flatnonzero(cand) + n)
                held.append(X[cand])
                n_held += int(cand.sum())
        n += len(X)
        if n_held >= 2 * capacity:
            n_held, tau = compact()
        bar.update(len(X))
    compact()
    return _FirstPass(n, moments.mean.shape[0], moments, keys[0], index[0], held[0])


# ---------------------------------------------------------------------------- pass 2
class _RefreshPass:
    """The second pass, run during training by :class:`ShuffleBuffer`: writes the chosen
    training rows (standardised) into the slots in ``slots`` order, counts the training rows
    outside B and keeps them (standardised, float64, in file order: :meth:`outside_rows`; all
    in memory), and checks that the source gives the same number of rows again."""

    def __init__(self, rows: _RowSource, std: Standardizer, domain, cal_index: np.ndarray,
                 chosen: np.ndarray, slots: np.ndarray, n_rows: int, est, progress: bool
                 ) -> None:
        self.rows, self.std, self.domain = rows, std, domain
        self.cal_index, self.chosen, self.slots = cal_index, chosen, slots
        self.n_rows = n_rows
        self.box = est.domain == "box"
        self.size = float(est.domain_size)
        self.beyond = np.zeros(len(std.mean), dtype=bool)
        self.n_outside = 0
        self.keep_outside = est._domain_kind() != "unit"  # as fit's domain_rows_
        self._outside: list[np.ndarray] = []
        self.n_read = 0  # rows of the source read
        self.n_train_read = 0  # training rows among them
        self.filled = 0  # slots replaced
        self.started = time.perf_counter()
        self.blocks = _prefetch(rows.blocks())
        self.done = False
        self.bar = _row_bar(rows, progress, "ocsdf fit --stream: pass 2 (buffer refresh)",
                            position=1)

    def apply(self, buffer: torch.Tensor, budget: int) -> int:
        """Read chunks while ``budget > 0`` and put their chosen rows into ``buffer``;
        returns the budget left (negative: rows read ahead)."""
        while budget > 0 and not self.done:
            X = next(self.blocks, None)
            if X is None:
                self._end()
                break
            budget -= len(X)
            self._block(X, buffer)
        return budget

    def finish(self) -> None:
        """Read what training left unread (rows counted, nothing written), then check."""
        while not self.done:
            X = next(self.blocks, None)
            if X is None:
                self._end()
            else:
                self._block(X, None)

    def close(self) -> None:
        self.blocks.close()
        self.bar.close()

    def outside_rows(self) -> np.ndarray:
        """The standardised training rows outside B read so far, float64 ``(k, d)`` in file
        order (``(0, d)`` when none)."""
        if not self._outside:
            return np.empty((0, len(self.std.mean)), dtype=np.float64)
        return np.concatenate(self._outside).astype(np.float64, copy=False)

    def outside_message(self, est, n_train: int) -> str:
        """The one-line DomainWarning text ``fit`` gives, from the streamed counts."""
        flags = np.where(self.beyond, self.size + 1.0, 0.0)[None, :]
        return _outside_message(est, np.empty((n_train, 0)), flags,
                                np.array([self.n_outside]))

    def _block(self, X: np.ndarray, buffer: torch.Tensor | None) -> None:
        a = self.n_read
        self.n_read += len(X)
        if self.n_read > self.n_rows:
            self._mismatch()
        lo, hi = np.searchsorted(self.cal_index, [a, a + len(X)])
        if hi > lo:
            keep = np.ones(len(X), dtype=bool)
            keep[self.cal_index[lo:hi] - a] = False
            X = X[keep]
        z = self.std.transform(X)
        zt = torch.from_numpy(z)
        outside = (self.domain.distance_outside(zt) > 0).numpy()
        k = int(outside.sum())
        if k:
            self.n_outside += k
            if self.keep_outside:
                self._outside.append(np.array(z[outside], dtype=np.float64))
            if self.box:
                self.beyond |= (np.abs(z[outside]) > self.size).any(axis=0)
        t0 = self.n_train_read
        self.n_train_read += len(X)
        lo, hi = np.searchsorted(self.chosen, [t0, t0 + len(X)])
        if hi > lo and buffer is not None:
            pick = self.chosen[lo:hi] - t0
            slots = torch.from_numpy(self.slots[self.filled:self.filled + (hi - lo)])
            buffer[slots.to(buffer.device)] = torch.as_tensor(
                z[pick], dtype=buffer.dtype).to(buffer.device)
            self.filled += hi - lo
        elif hi > lo:
            self.filled += hi - lo  # after training: nothing to write
        self.bar.update(self.n_read - a)

    def _end(self) -> None:
        self.done = True
        if self.n_read != self.n_rows:
            self._mismatch()

    def _mismatch(self) -> None:
        raise InputError(
            f"{self.rows.label} gave {self.n_rows} rows on the first pass but "
            f"{'more' if self.n_read > self.n_rows else self.n_read} on the second: "
            "fit_stream needs the same rows, in the same order, on every pass")


# ---------------------------------------------------------------------------- progress
def _row_bar(rows: _RowSource, progress: bool, desc: str, position: int = 0):
    """A tqdm bar counting rows (rows/s) on stderr; with a total when every file is
    Parquet (from the files' metadata)."""
    total = None
    if progress and rows.files and all(
            f.suffix.lower() in (".parquet", ".pq") for f in rows.files):
        try:
            import pyarrow.parquet as pq

            total = sum(pq.ParquetFile(f).metadata.num_rows for f in rows.files)
        except Exception:  # a bad file: its reader names the problem
            total = None
    return tqdm(total=total, unit="rows", unit_scale=True, desc=desc, file=sys.stderr,
                disable=not progress, leave=False, dynamic_ncols=True, position=position)
