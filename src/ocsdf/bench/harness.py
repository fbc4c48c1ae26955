"""The harness every ``ocsdf bench`` study runs in.

- Splits: :func:`split_indices` and :func:`subsample_indices` (from :mod:`ocsdf.data`, one
  random stream per seed), so "seed 0" is the same split in every study and in ``ocsdf data``.
- :func:`study`: the device checked first (one-line ``ValueError``), ``args.threads`` torch
  threads for the run (restored afterwards), the wall time, and the device note of the tables.
- :func:`command_line`: the reproducible command a table records, from the parsed arguments.
- :func:`run_jobs`: items run by a worker function in spawned processes (largest first, results
  in input order, one failure does not lose the others), or in this process for one job.
- :func:`timed`: a call and its wall seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..core.runtime import torch_device, torch_threads
from ..data import split_indices, subsample_indices

__all__ = ["Study", "command_line", "device_note", "resolve_jobs", "rows_value", "run_jobs",
           "split_indices", "study", "subsample_indices", "timed"]

T = TypeVar("T")
R = TypeVar("R")

#: Option values :func:`command_line` leaves out unless told otherwise (the CLI defaults).
OMITTED: dict[str, Any] = {"device": "cpu", "out_dir": "docs/results"}


def rows_value(name: str, value):
    """The value an OCSDF parameter ``name`` of :data:`ocsdf.estimator.AUTO_BY_KIND` takes in a
    tabular fit (``"auto"`` resolved for rows)."""
    from ..estimator import AUTO_BY_KIND, resolve_auto

    return resolve_auto(value, AUTO_BY_KIND[name])


# ----------------------------------------------------------------------------- one study
def device_note(device: str, done: str, times: str | None = None) -> str:
    """``"{done} on torch device `cuda` ({times} are that device's)"``; "" on the CPU."""
    if str(device) == "cpu":
        return ""
    return f"{done} on torch device `{device}`" + (f" ({times} are that device's)"
                                                   if times else "")


@dataclass
class Study:
    """What :func:`study` gives the block: the checked ``device`` (its name, as given), the
    ``threads`` set (None: left as they were) and the start of the wall clock."""

    device: str = "cpu"
    threads: int | None = None
    start: float = field(default_factory=time.perf_counter)

    @property
    def wall_s(self) -> float:
        """Wall seconds since the study started."""
        return time.perf_counter() - self.start

    def device_note(self, done: str, times: str | None = None) -> str:
        """:func:`device_note` of this study's device."""
        return device_note(self.device, done, times)


@contextlib.contextmanager
def study(args: argparse.Namespace) -> Iterator[Study]:
    """The frame of a study's ``run(args)``: checks ``args.device`` (default "cpu") before any
    work, runs the block with ``args.threads`` torch threads (None or absent: unchanged) and
    restores the previous count after it, so the table written inside the block reports the
    threads used; the :class:`Study` it yields measures the wall time. The fits' notes on
    training rows outside B (:class:`~ocsdf.errors.DomainWarning`) are not shown.

    Raises ``ValueError`` (one line) for a bad device, CUDA asked for and absent, or fewer
    than one thread.
    """
    device = str(getattr(args, "device", "cpu"))
    torch_device(device)
    threads = getattr(args, "threads", None)
    if threads is not None and int(threads) < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    from ..errors import DomainWarning

    with torch_threads(threads), warnings.catch_warnings():
        # studies fit hundreds of models on data with known tails: no per-fit note
        warnings.simplefilter("ignore", DomainWarning)
        yield Study(device=device, threads=threads)


def timed(fn: Callable[..., R], *args: Any, **kwargs: Any) -> tuple[R, float]:
    """``(fn(*args, **kwargs), wall seconds of the call)``."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


# ----------------------------------------------------------------------------- command
def _word(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def command_line(prefix: str, args: argparse.Namespace, names: Sequence[str], *,
                 omit: Mapping[str, Any] | None = None, spread: Collection[str] = ()) -> str:
    """The command that reproduces a run: ``prefix`` then ``--name value`` for each of
    ``names`` (``args.name``; underscores become dashes), shell-quoted.

    A value of None or False is left out, True is the bare flag, a float is written with
    ``:g``, a list or tuple is comma-joined (or one word per item for the names in ``spread``,
    options declared with ``nargs="+"``). A value equal to its entry in ``omit`` (added to
    :data:`OMITTED`: ``--device cpu``, ``--out-dir docs/results``) is left out too.

    >>> command_line("ocsdf bench toy", argparse.Namespace(sets="moons", steps=30,
    ...              rate=0.50, device="cpu"), ["sets", "steps", "rate", "device"])
    'ocsdf bench toy --sets moons --steps 30 --rate 0.5'
    """
    skip = {**OMITTED, **(omit or {})}
    words = shlex.split(prefix)
    for name in names:
        value = getattr(args, name, None)
        if value is None or value is False or (name in skip and value == skip[name]):
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            words.append(flag)
        elif isinstance(value, (list, tuple)):
            items = [_word(v) for v in value]
            words += [flag, *items] if name in spread else [flag, ",".join(items)]
        else:
            words += [flag, _word(value)]
    return shlex.join(words)


# ----------------------------------------------------------------------------- parallel jobs
def resolve_jobs(n_jobs: int, n_items: int) -> int:
    """Worker processes to use: ``n_jobs`` (0 or less = one per CPU core), at most one per
    item, at least 1."""
    if n_jobs <= 0:
        n_jobs = os.cpu_count() or 1
    return max(1, min(int(n_jobs), n_items))


def _worker_init(n_threads: int) -> None:
    """Start of a worker process: ``n_threads`` threads for torch and for the BLAS/OpenMP pools
    that NumPy, SciPy and scikit-learn use, so the workers share the cores without
    oversubscribing them."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n_threads)
    threadpool_limits(n_threads)
    warnings.simplefilter("ignore")


def run_jobs(
    items: Sequence[T],
    worker: Callable[[T], R],
    n_jobs: int = 1,
    threads: int = 1,
    *,
    cost: Callable[[T], float] | None = None,
    finished: Callable[[int, R], None] | None = None,
    progress: bool = False,
    desc: str = "jobs",
) -> list[R]:
    """``[worker(item) for item in items]``, in ``n_jobs`` processes (see :func:`resolve_jobs`).

    One job: in this process, in order, with ``threads`` torch threads (restored afterwards);
    the first failure stops the run. Several: spawned worker processes (no torch or OpenMP
    state forked), each with ``threads`` threads for torch and BLAS; items in decreasing
    ``cost`` (e.g. rows, so the long jobs do not start last); ``worker`` and the items must
    pickle (a module-level function or a ``functools.partial`` of one). An item that fails does
    not stop the others: every other one still finishes (and is passed to ``finished``), then
    the first failure is raised; an interrupt (Ctrl-C) cancels the items not yet started.

    ``finished(index, result)`` is called in this process as each item ends (any order with
    several workers). ``progress``: a bar counting the items done (several workers). Returns
    the results in the order of ``items``.
    """
    n_jobs = resolve_jobs(n_jobs, len(items))
    results: dict[int, R] = {}

    def done(i: int, result: R) -> None:
        results[i] = result
        if finished is not None:
            finished(i, result)

    if n_jobs == 1:
        with torch_threads(int(threads)):
            for i, item in enumerate(items):
                done(i, worker(item))
    else:
        _run_parallel(items, worker, n_jobs, int(threads), cost, done, progress, desc)
    return [results[i] for i in range(len(items))]


def _run_parallel(items: Sequence[T], worker: Callable[[T], R], n_jobs: int, threads: int,
                  cost: Callable[[T], float] | None, done: Callable[[int, R], None],
                  progress: bool, desc: str) -> None:
    """The several-workers branch of :func:`run_jobs`."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from tqdm.auto import tqdm

    order = list(range(len(items)))
    if cost is not None:
        order.sort(key=lambda i: -cost(items[i]))
    bar = tqdm(total=len(items), desc=f"{desc} ({n_jobs} workers)", disable=not progress,
               file=sys.stderr)
    pool = ProcessPoolExecutor(max_workers=n_jobs,
                               mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(threads,))
    first_error: BaseException | None = None
    try:
        pending = {pool.submit(worker, items[i]): i for i in order}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                i = pending.pop(fut)
                try:
                    result = fut.result()
                except Exception as err:  # keep the others' results; raised at the end
                    first_error = first_error or err
                    continue
                done(i, result)
                bar.set_postfix_str(str(items[i]))
                bar.update()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    if first_error is not None:
        raise first_error
