"""What the per-set studies here share: the bench's rows per seed, and one CSV from 2 workers.

``select_study.py`` and ``crossfit_study.py`` fit models per data set and seed in worker
processes and write one row per (set, seed, setting) to a CSV next to them.
"""

from __future__ import annotations

import csv
import sys
import warnings
from collections.abc import Callable, Iterator
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch

SEEDS = range(5)
MAX_ROWS = 20000


def seed_rows(name: str, protocol: str) -> Iterator[tuple[int, np.ndarray, np.ndarray,
                                                          np.ndarray]]:
    """``(seed, x_train, x_eval, y_eval)`` of ``ocsdf bench tabular`` for seeds 0-4, the set
    loaded once; prints ``name seed`` to stderr after each seed's work. Call in a worker: it
    sets one torch thread and silences the DomainWarning of fits with rows outside B."""
    from ocsdf.data import load_adbench, protocol_rows

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    X, y = load_adbench(name)
    for seed in SEEDS:
        yield (seed, *protocol_rows(X, y, protocol, seed, max_rows=MAX_ROWS))
        print(name, seed, flush=True, file=sys.stderr)


def run_sets(one_set: Callable[[str], list[dict]], path: Path, fields: list[str]) -> None:
    """``one_set(name)`` for every ADBench set, in 2 worker processes; its rows (dicts with
    ``fields``) written to ``path``, floats with 6 decimals."""
    from ocsdf.bench.tabular import available_datasets

    with Pool(2) as pool:
        parts = pool.map(one_set, available_datasets(), chunksize=1)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fields)
        w.writeheader()
        for rows in parts:
            for r in rows:
                w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
