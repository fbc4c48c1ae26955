"""``ocsdf bench frontier``: scoring cost against training-set size, OCSDF vs exact k-NN.

OCSDF's exported network costs the same to store and to evaluate whatever the number of
training rows ``n``; the exact nearest-neighbour distance (:class:`~ocsdf.knn.KNNDistance`,
the certified reference with the same certificates) must keep every training row and search
them at each query. This study measures where one overtakes the other on a real ADBench set.

For each ``n_train`` in ``--sizes`` (normal rows of the set; subsampled without replacement, or,
when the set has fewer normal rows than ``n_train``, every row once plus copies drawn with
replacement and jittered, see :func:`training_rows`), it fits

- **OCSDF** (default settings, ``--steps`` training steps) exported to ONNX (float32) and scored
  in onnxruntime, the path users deploy (the exported torch network in float32 when
  onnxruntime is not installed; the table says which);
- **exact 1-NN** (``KNNDistance(n_neighbors=1)``) with scikit-learn's default search
  (``algorithm="auto"``, which picks a k-d tree in low dimension) and with ``"brute"``, and
  the bare scikit-learn query on the default index (``kneighbors``, k = 1, no certified
  recompute): the least any exact 1-NN scorer pays;
- scikit-learn's **IsolationForest** (default settings),

and measures fit time (s), scoring throughput (rows/s, one thread by default, on a fixed batch of
``--score-rows`` held-out rows), model size (bytes) and AUROC (held-out normal rows against the
set's anomalies; no labels used to fit). Results go to ``frontier.{md,csv,json}`` and a log-log
figure ``frontier.png`` (``frontier_SET.*`` for a set other than http).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..data import ADBENCH_FILES, TOY_DATASETS, load_adbench, oc_split
from .harness import command_line, rows_value, study, timed
from .report import write_table

__all__ = ["DEFAULT_SIZES", "crossover", "frontier_study", "plot", "rate_crossovers", "register",
           "run", "throughput", "training_rows"]

#: Default training-set sizes (rows). 100 is included because on http the crossover of the
#: rows/s curves lies between 100 and 1,000 rows (measured; see docs/results/frontier.md).
DEFAULT_SIZES = (100, 1_000, 10_000, 100_000, 1_000_000)
#: Standard deviation of the jitter added to resampled copies, as a fraction of each feature's
#: standard deviation over the normal training pool.
JITTER = 0.01
#: Held-out normal rows for AUROC: this fraction of the normal rows, at most :data:`MAX_TEST`.
TEST_FRACTION = 0.1
MAX_TEST = 20_000
#: Rows of the first (warm-up) scoring call of a throughput measurement.
_PROBE_ROWS = 256
#: Seconds an estimate call must last before its per-row time is trusted.
_PROBE_SECONDS = 0.2
#: Timed repeats of a throughput measurement (the fastest is kept; the machine may be shared).
_REPEATS = 5
#: Method labels, in table order.
OCSDF_LABEL = "OCSDF"
KNN_LABEL = "exact 1-NN"
SEARCH_LABEL = "1-NN search only"
BRUTE_LABEL = "exact 1-NN (brute)"
FOREST_LABEL = "IsolationForest"


# --------------------------------------------------------------------------- data
def load_set(name: str, seed: int, data_dir=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normal training pool, held-out normal rows, anomalies), raw units, float64.

    ADBench sets (``ocsdf.data.ADBENCH_FILES``): the normal rows in a random order
    (``default_rng([seed, 7])``); the first ``min(10 %, 20,000)`` of them are held out, the rest
    is the training pool; the anomalies are every row labelled 1. Toy sets
    (``ocsdf.data.TOY_DATASETS``, 2-D, for quick checks): :func:`ocsdf.data.oc_split`, whose
    anomalies are uniform in the ball of radius 5.
    """
    if name in TOY_DATASETS:
        train, test, anomalies = oc_split(name, seed)
        return train, test, anomalies
    if name not in ADBENCH_FILES:
        raise ValueError(f"unknown data set {name!r}; choose an ADBench set "
                         f"({', '.join(ADBENCH_FILES)}) or a toy set ({', '.join(TOY_DATASETS)})")
    X, y = load_adbench(name, data_dir)
    normal = X[y == 0][np.random.default_rng([seed, 7]).permutation(int((y == 0).sum()))]
    n_test = min(MAX_TEST, max(1, int(TEST_FRACTION * len(normal))))
    return normal[n_test:], normal[:n_test], X[y == 1]


def training_rows(pool: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, int]:
    """``n`` training rows from ``pool`` and how many of them are jittered copies.

    ``n <= len(pool)``: a random subset without replacement (no copies). Otherwise every pool
    row once, plus ``n - len(pool)`` rows drawn with replacement, each with Gaussian jitter of
    standard deviation :data:`JITTER` x the pool's per-feature standard deviation (raw units;
    so that the copies are not exact duplicates). Random stream ``default_rng([seed, 8, n])``.
    """
    rng = np.random.default_rng([seed, 8, n])
    if n <= len(pool):
        return pool[np.sort(rng.choice(len(pool), n, replace=False))], 0
    extra = n - len(pool)
    copies = pool[rng.integers(len(pool), size=extra)]
    copies = copies + rng.normal(size=copies.shape) * (JITTER * pool.std(axis=0))
    return np.concatenate([pool, copies]), extra


def scoring_batch(test: np.ndarray, anomalies: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` rows drawn with replacement from the held-out rows (normal and anomalous), the
    fixed batch every method is timed on (``default_rng([seed, 9])``), raw units."""
    held = np.concatenate([test, anomalies])
    return held[np.random.default_rng([seed, 9]).integers(len(held), size=n)]


# --------------------------------------------------------------------------- measurement
def _pickled_bytes(obj) -> int:
    """Size in bytes of ``pickle.dumps(obj)`` (highest protocol), counted without keeping it."""

    class _Count:
        n = 0

        def write(self, chunk) -> None:
            self.n += memoryview(chunk).nbytes  # bytes, or a PickleBuffer (protocol 5)

    sink = _Count()
    pickle.dump(obj, sink, protocol=pickle.HIGHEST_PROTOCOL)
    return sink.n


def _dir_bytes(path: Path) -> int:
    """Total size in bytes of the files under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def throughput(score: Callable[[np.ndarray], np.ndarray], X: np.ndarray, budget_s: float
               ) -> tuple[float, int]:
    """(rows per second, rows timed) of ``score`` on the batch ``X``.

    One warm-up call on the first 256 rows, estimate calls on the first 256, 1024, 4096, ...
    rows until one lasts 0.2 s or covers the batch, then up to five timed calls on the first
    ``q`` rows, the fastest kept: ``q = len(X)`` when five calls fit in ``budget_s`` seconds by
    the estimate, else as many rows as do (at least 256). With ``q < len(X)`` the rate is
    extrapolated to the whole batch (cost linear in the rows). Never slower than the budget by
    more than one call on ``q`` rows and the estimate calls (each shorter than 0.2 s but the
    last).
    """
    n = min(len(X), _PROBE_ROWS)
    score(X[:n])
    while True:
        _, sec = timed(score, X[:n])
        if sec >= _PROBE_SECONDS or n == len(X):
            break
        n = min(len(X), 4 * n)
    per_row = max(sec, 1e-9) / n
    q = int(min(len(X), max(min(len(X), _PROBE_ROWS), budget_s / _REPEATS / per_row)))
    batch = X[:q]
    best = math.inf
    start = time.perf_counter()
    for _ in range(_REPEATS):
        _, sec = timed(score, batch)
        best = min(best, sec)
        if time.perf_counter() - start > budget_s:
            break
    return q / max(best, 1e-12), q


def _auroc(score: Callable[[np.ndarray], np.ndarray], test: np.ndarray,
           anomalies: np.ndarray) -> float:
    """AUROC of ``-score`` (higher = more anomalous) separating anomalies from held-out normal
    rows, in [0, 1]."""
    from sklearn.metrics import roc_auc_score

    s = np.concatenate([score(test), score(anomalies)]).astype(np.float64)
    labels = np.concatenate([np.zeros(len(test)), np.ones(len(anomalies))])
    return float(roc_auc_score(labels, -s))


def _ocsdf_scorer(model, folder: Path, threads: int) -> tuple[Callable, str, int, int]:
    """The float32 scoring function of a fitted OCSDF as deployed: (score, path name, ONNX file
    bytes or 0, saved model directory bytes).

    onnxruntime on the graph of :meth:`~ocsdf.OCSDF.to_onnx` when onnx and onnxruntime are
    installed, with ``threads`` intra-op threads; otherwise the exported torch network cast to
    float32 (standardisation and domain clip as in :class:`~ocsdf.Scorer`).
    """
    saved = _dir_bytes(model.save(folder / "model"))
    try:
        import onnx  # noqa: F401
        import onnxruntime as ort
    except ImportError:
        return _torch_float32(model.scorer_), "exported torch network, float32", 0, saved
    path = model.to_onnx(folder / "model.onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def score(X: np.ndarray) -> np.ndarray:
        return session.run(["score"], {name: np.asarray(X, dtype=np.float32)})[0]

    return score, f"ONNX float32, onnxruntime {ort.__version__}", path.stat().st_size, saved


def _torch_float32(scorer) -> Callable[[np.ndarray], np.ndarray]:
    """``score_samples`` of ``scorer`` (an :class:`~ocsdf.Scorer`) computed in float32."""
    import torch

    net = copy.deepcopy(scorer.net).float().eval()
    mean = torch.as_tensor(scorer.mean, dtype=torch.float32)
    scale = torch.as_tensor(scorer.scale, dtype=torch.float32)

    def score(X: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            z = (torch.as_tensor(np.asarray(X, dtype=np.float32)) - mean) / scale
            f = net(z).reshape(-1)
            if scorer.clip_to_domain:
                f = torch.minimum(f, scorer.domain.signed_distance(z))
        return f.numpy()

    return score


def _row(n: int, method: str, fit_s: float | None, rate: float, timed_rows: int,
         score_rows: int, size: int, auroc: float, note: str) -> dict:
    extrapolated = timed_rows < score_rows
    return {"n_train": n, "method": method, "fit_s": fit_s, "rows_per_s": int(round(rate)),
            "rows_timed": timed_rows, "model_bytes": size, "auroc": auroc,
            "note": (f"rows/s extrapolated from the first {timed_rows:,} of {score_rows:,} "
                     f"rows; " if extrapolated else "") + note}


def _one_size(n: int, pool: np.ndarray, test: np.ndarray, anomalies: np.ndarray,
              batch: np.ndarray, *, n_steps: int, seed: int, threads: int, budget_s: float,
              brute: bool, log: Callable[[str], None], facts: dict) -> list[dict]:
    """The table rows of one training-set size ``n`` (see the module docstring); records the
    OCSDF scoring path in ``facts["ocsdf_path"]``."""
    from sklearn.ensemble import IsolationForest

    from ..estimator import OCSDF
    from ..knn import KNNDistance, KNNScorer

    X, n_copies = training_rows(pool, n, seed)
    data_note = (f"{n_copies:,} of the rows are jittered copies" if n_copies else "")
    rows = []

    # OCSDF: fit, export, score the exported graph in float32.
    model = OCSDF(n_steps=n_steps, warmup_steps=n_steps // 10, random_state=seed,
                  n_threads=threads)
    _, fit_s = timed(model.fit, X)
    with tempfile.TemporaryDirectory() as tmp:
        score, path, onnx_bytes, saved = _ocsdf_scorer(model, Path(tmp), threads)
        rate, q = throughput(score, batch, budget_s)
        auroc = _auroc(score, test, anomalies)
    size = onnx_bytes or saved
    facts["ocsdf_path"] = path
    what = "ONNX file" if onnx_bytes else "saved model directory"
    rows.append(_row(n, OCSDF_LABEL, fit_s, rate, q, len(batch), size, auroc,
                     f"{path}; {n_steps} steps; bytes: {what} (saved model directory "
                     f"{saved:,})"))
    log(f"n={n:,} {OCSDF_LABEL}: fit {fit_s:.1f} s, {rate:,.0f} rows/s, AUROC {auroc:.4f}")

    # Exact 1-NN with scikit-learn's default search.
    knn = KNNDistance(n_neighbors=1, n_jobs=threads if threads > 1 else None)
    _, fit_s = timed(knn.fit, X)
    rate, q = throughput(knn.score_samples, batch, budget_s)
    auroc = _auroc(knn.score_samples, test, anomalies)
    method = knn.scorer_.index._fit_method
    rows.append(_row(n, f"{KNN_LABEL} ({method})", fit_s, rate, q, len(batch),
                     _pickled_bytes(knn.scorer_.index), auroc,
                     f"algorithm='auto' -> {method}; whole estimator pickled: "
                     f"{_pickled_bytes(knn):,} bytes"))
    log(f"n={n:,} {KNN_LABEL} ({method}): fit {fit_s:.1f} s, {rate:,.0f} rows/s")

    # The bare search on the same rows: the least any exact 1-NN scorer must pay per row.
    from sklearn.neighbors import NearestNeighbors

    s = knn.scorer_
    index, fit_s = timed(NearestNeighbors(algorithm=method, n_jobs=knn.n_jobs).fit, s.train_z)

    def search(x: np.ndarray) -> np.ndarray:
        return -index.kneighbors(s.standardize(x), n_neighbors=1)[0][:, 0]

    rate, q = throughput(search, batch, budget_s)
    rows.append(_row(n, f"{SEARCH_LABEL} ({method})", fit_s, rate, q, len(batch),
                     _pickled_bytes(index), _auroc(search, test, anomalies),
                     "NearestNeighbors.kneighbors(k=1) on standardised rows: no exact "
                     "recompute, no domain clip, no validation; fit_s: index only"))
    log(f"n={n:,} {SEARCH_LABEL} ({method}): {rate:,.0f} rows/s")

    # Exact 1-NN, brute force: the same scores (exact distances), another search.
    if brute and method != "brute":
        other = copy.copy(knn)
        other.scorer_, fit_s = timed(KNNScorer, s.train_z, 1, s.mean, s.scale, s.domain,
                                     s.clip_to_domain, "brute", knn.n_jobs)
        rate, q = throughput(other.score_samples, batch, budget_s)
        rows.append(_row(n, BRUTE_LABEL, fit_s, rate, q, len(batch),
                         _pickled_bytes(other.scorer_.index), auroc,
                         f"the same distances, so the same AUROC, as {KNN_LABEL} ({method}); "
                         f"fit_s: index only"))
        log(f"n={n:,} {BRUTE_LABEL}: {rate:,.0f} rows/s")

    forest = IsolationForest(random_state=seed)
    _, fit_s = timed(forest.fit, X)
    rate, q = throughput(forest.score_samples, batch, budget_s)
    auroc = _auroc(forest.score_samples, test, anomalies)
    rows.append(_row(n, FOREST_LABEL, fit_s, rate, q, len(batch), _pickled_bytes(forest),
                     auroc, "scikit-learn defaults (100 trees of up to 256 rows)"))
    log(f"n={n:,} {FOREST_LABEL}: fit {fit_s:.1f} s, {rate:,.0f} rows/s")
    if data_note:
        for row in rows:
            row["note"] = f"{row['note']}; {data_note}"
    return rows


def frontier_study(dataset: str = "http", sizes: Sequence[int] = DEFAULT_SIZES,
                   score_rows: int = 100_000, n_steps: int = 1000, seed: int = 0,
                   threads: int = 1, budget_s: float = 15.0, brute: bool = True,
                   data_dir=None, log: Callable[[str], None] = print) -> tuple[list[dict], dict]:
    """Measure every method at every size; returns (table rows, facts for the notes).

    Parameters
    ----------
    dataset : str
        ADBench short name (e.g. "http", "shuttle") or a toy set name (2-D, quick checks).
    sizes : sequence of int
        Training-set sizes, rows.
    score_rows : int
        Rows of the fixed scoring batch the throughput is measured on.
    n_steps : int
        OCSDF training steps (its fit time does not depend on ``n_train`` otherwise).
    threads : int
        Threads for torch, onnxruntime, BLAS/OpenMP and the k-NN search.
    budget_s : float
        Seconds allowed to one throughput measurement (up to five timed calls); a slower method is
        timed on fewer rows and its rate extrapolated (:func:`throughput`).
    """
    from threadpoolctl import threadpool_limits

    pool, test, anomalies = load_set(dataset, seed, data_dir)
    batch = scoring_batch(test, anomalies, score_rows, seed)
    facts = {"dataset": dataset, "pool": len(pool), "test": len(test),
             "anomalies": len(anomalies), "d": pool.shape[1]}
    load_start = _load_average()
    rows: list[dict] = []
    with threadpool_limits(threads):
        for n in sorted(int(s) for s in sizes):
            rows += _one_size(n, pool, test, anomalies, batch, n_steps=n_steps, seed=seed,
                              threads=threads, budget_s=budget_s, brute=brute, log=log,
                              facts=facts)
    load_end = _load_average()
    if load_start is not None and load_end is not None:
        facts["load"] = (load_start, load_end)
    return rows, facts


def _load_average() -> float | None:
    """The 1-minute load average (runnable processes), or None where the system has none."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


# --------------------------------------------------------------------------- summary
def crossover(sizes: Sequence[float], fast: Sequence[float], slow: Sequence[float]
              ) -> tuple[str, float | None]:
    """Where the rate ``fast`` overtakes ``slow`` along ``sizes`` (increasing).

    Returns ``("before", sizes[0])`` when ``fast >= slow`` already at the first size,
    ``("at", n)`` with ``n`` interpolated linearly in log(size) vs log(fast / slow) between the
    last size where ``fast < slow`` and the next, or ``("never", None)`` within the range.
    """
    logs = [math.log(f / s) for f, s in zip(fast, slow, strict=True)]
    if logs[0] >= 0:
        return "before", float(sizes[0])
    for i in range(1, len(logs)):
        if logs[i - 1] < 0 <= logs[i]:
            a, b = math.log(sizes[i - 1]), math.log(sizes[i])
            t = -logs[i - 1] / (logs[i] - logs[i - 1])
            return "at", float(math.exp(a + t * (b - a)))
    return "never", None


def _series(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped by method, each list in increasing ``n_train``."""
    out: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: r["n_train"]):
        out.setdefault(row["method"], []).append(row)
    return out


def _knn_series(series: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The exact nearest-neighbour series (certified and search-only), by method."""
    return {m: v for m, v in series.items()
            if m.startswith(KNN_LABEL) or m.startswith(SEARCH_LABEL)}


def _default_knn(series: dict[str, list[dict]]) -> tuple[str, list[dict]]:
    """(method, rows) of the certified k-NN with scikit-learn's default search."""
    for method, rows in series.items():
        if method.startswith(KNN_LABEL + " (") and method != BRUTE_LABEL:
            return method, rows
    return "", []


def rate_crossovers(rows: list[dict]) -> dict[str, tuple[str, float | None, float]]:
    """For each exact 1-NN method: (kind, n_train, ratio) of :func:`crossover` of OCSDF's rows/s
    over its rows/s, with the ratio OCSDF / k-NN at the largest size."""
    series = _series(rows)
    ours = series.get(OCSDF_LABEL, [])
    out = {}
    for method, knn in _knn_series(series).items():
        if not ours or [r["n_train"] for r in knn] != [r["n_train"] for r in ours]:
            continue
        kind, at = crossover([r["n_train"] for r in ours], [r["rows_per_s"] for r in ours],
                             [r["rows_per_s"] for r in knn])
        out[method] = (kind, at, ours[-1]["rows_per_s"] / knn[-1]["rows_per_s"])
    return out


def _where(kind: str, at: float | None, sizes: Sequence[int]) -> str:
    return {"before": f"already at the smallest size ({sizes[0]:,} rows)",
            "at": f"from about n_train = {at or 0:,.0f} (log-log interpolation)",
            "never": f"nowhere up to {sizes[-1]:,} rows"}[kind]


def _crossover_text(rows: list[dict]) -> list[str]:
    """Sentences: where OCSDF's rows/s overtakes each exact 1-NN method, with the ratio at the
    largest size, and where its model becomes smaller than the default k-NN's."""
    series = _series(rows)
    ours = series.get(OCSDF_LABEL, [])
    if not ours:
        return []
    sizes = [r["n_train"] for r in ours]
    lines = []
    for method, (kind, at, ratio) in rate_crossovers(rows).items():
        knn = series[method]
        lines.append(f"- OCSDF scores faster than {method} {_where(kind, at, sizes)}; at "
                     f"{sizes[-1]:,} rows it is {ratio:,.1f} x as fast "
                     f"({ours[-1]['rows_per_s']:,} against {knn[-1]['rows_per_s']:,} rows/s).")
    method, knn = _default_knn(series)
    if knn and [r["n_train"] for r in knn] == sizes:
        kind, at = crossover(sizes, [1.0 / r["model_bytes"] for r in ours],
                             [1.0 / r["model_bytes"] for r in knn])
        lines.append(f"- OCSDF's model is smaller than {method}'s {_where(kind, at, sizes)}; "
                     f"at {sizes[-1]:,} rows {ours[-1]['model_bytes']:,} against "
                     f"{knn[-1]['model_bytes']:,} bytes.")
    return lines


def _noise_text(ours: list[dict], facts: dict) -> str:
    """How loaded the machine was, and the spread of OCSDF's rate (which does not depend on
    n_train, so its spread is the timing noise)."""
    parts = []
    if facts.get("load"):
        start, end = facts["load"]
        parts.append(f"the 1-minute load average of the machine was {start:.1f} at the start "
                     f"and {end:.1f} at the end of the run")
    if ours:
        rates = [r["rows_per_s"] for r in ours]
        parts.append(f"OCSDF's rate, which does not depend on n_train, ranges from "
                     f"{min(rates):,} to {max(rates):,} rows/s across the sizes: differences of "
                     f"that order (x {max(rates) / min(rates):.2f}) are noise")
    return ("Timing noise: " + "; ".join(parts) + ".") if parts else ""


def _notes(rows: list[dict], facts: dict, args: argparse.Namespace, wall_s: float,
           figure: Path | None) -> str:
    series = _series(rows)
    ours = series.get(OCSDF_LABEL, [])
    _, knn = _default_knn(series)
    forest = series.get(FOREST_LABEL, [])
    source = (f"ADBench `{facts['dataset']}` ({facts['d']} features)"
              if facts["dataset"] in ADBENCH_FILES else f"toy set `{facts['dataset']}` (2-D)")
    parts = [
        f"Data: {source}: {facts['pool']:,} normal rows to draw training rows from, "
        f"{facts['test']:,} held-out normal rows and {facts['anomalies']:,} anomalies for "
        f"AUROC (labels used only there). "
        f"n_train rows: a random subset of the pool, or, beyond its size, every pool row plus "
        f"copies drawn with replacement with Gaussian jitter of {JITTER:g} x each feature's "
        f"standard deviation (the note column says how many). Throughput: rows/s on a fixed "
        f"batch of {args.score_rows:,} rows drawn with replacement from the held-out rows "
        f"(normal and anomalous), {args.threads} thread(s) for torch, onnxruntime, BLAS and "
        f"the search, fastest of up to five timed calls after a warm-up; a measurement is limited "
        f"to about {args.budget:g} s, so a slow method is timed on the first rows of the batch "
        f"and its rate extrapolated (the note says so). fit_s: wall seconds of `fit` (k-NN: "
        f"standardisation, index and leave-one-out threshold; the brute-force row reuses that "
        f"threshold and times the index alone). Every method is timed through the call a user "
        f"makes: `score_samples` for k-NN (search, then exact float64 distances of the "
        f"candidates) and IsolationForest, the ONNX session for OCSDF. model_bytes: what must "
        f"be kept to score (OCSDF: the ONNX file; k-NN: its pickled scikit-learn index, which "
        f"holds the standardised training rows and the tree; IsolationForest: its pickle). "
        f"Peak memory is not measured. The search-only row is the bare scikit-learn query "
        f"(k = 1, no certified recompute of the distances, no domain clip, no input checks): "
        f"the least an exact 1-NN scorer costs with that index.",
        "",
        _noise_text(ours, facts),
        "",
        f"OCSDF: default estimator ({rows_value('width', 'auto')} x 3, GroupSort2) with "
        f"**{args.steps} training steps** "
        f"(fixed, so its fit time does not grow with n_train beyond reading the rows), one fit "
        f"per size; scored through the exported float32 graph, the deployed path "
        f"({facts.get('ocsdf_path', 'n/a')}).",
        "",
        "Crossovers:",
        *_crossover_text(rows),
        "",
    ]
    if ours and knn and forest:
        parts += [
            f"AUROC at the largest size ({ours[-1]['n_train']:,} rows): OCSDF "
            f"{ours[-1]['auroc']:.4f}, exact 1-NN {knn[-1]['auroc']:.4f}, IsolationForest "
            f"{forest[-1]['auroc']:.4f}. Model bytes there: OCSDF {ours[-1]['model_bytes']:,}, "
            f"exact 1-NN {knn[-1]['model_bytes']:,}, IsolationForest "
            f"{forest[-1]['model_bytes']:,}.",
            "",
            "When to pick which: exact k-NN needs no training, is exact (so certified with "
            "L = 1 and no approximation error) and, where its AUROC is higher, is the more "
            "accurate detector; its memory grows with n_train and its query cost with the "
            "search (a k-d tree stays cheap in a few dimensions, brute force is linear in "
            "n_train). OCSDF costs a fixed training run, then a fixed size and a fixed "
            "per-row cost, certified just as well: pick it where many rows are kept as normal "
            "(beyond the crossover above), where the model must be small or shipped as ONNX, "
            "and where its AUROC on your data is close enough to k-NN's.",
            "",
        ]
    parts.append(f"Whole run: {wall_s:.0f} s wall."
                 + (f" Figure: `{figure.name}`." if figure is not None else ""))
    return "\n".join(parts)


def plot(rows: list[dict], path: Path, title: str) -> Path:
    """Two log-log panels against n_train, one line per method: scoring rows/s (AUROC written
    at each point; dotted vertical lines where OCSDF overtakes an exact 1-NN method) and model
    bytes; written atomically as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..io import atomic_open

    fig = Figure(figsize=(12.5, 5.0), dpi=110)
    FigureCanvasAgg(fig)
    ax_rate = fig.add_subplot(1, 2, 1)
    ax_size = fig.add_subplot(1, 2, 2)
    markers = iter("osvD^<>")
    # AUROC labels: above OCSDF, below the k-NN line, to the right of IsolationForest; none on
    # the brute-force line (the same distances, so the same AUROC, as the default search) nor on
    # the search-only line (the same, without the domain clip).
    offsets = {OCSDF_LABEL: (-8, 7), FOREST_LABEL: (6, -10)}
    colours = {}
    for method, series in _series(rows).items():
        n = [r["n_train"] for r in series]
        style = "--" if method.startswith(SEARCH_LABEL) else "-"
        marker = next(markers, "o")
        (line,) = ax_rate.plot(n, [r["rows_per_s"] for r in series], style, marker=marker,
                               label=method)
        colours[method] = line.get_color()
        ax_size.plot(n, [r["model_bytes"] for r in series], style, marker=marker,
                     label=method, color=line.get_color())
        if method == BRUTE_LABEL or method.startswith(SEARCH_LABEL):
            continue
        dx, dy = offsets.get(method, (-8, -12))
        for r in series:
            ax_rate.annotate(f"{r['auroc']:.3f}", (r["n_train"], r["rows_per_s"]),
                             textcoords="offset points", xytext=(dx, dy), fontsize=7,
                             color=line.get_color())
    for method, (kind, at, _) in rate_crossovers(rows).items():
        if kind == "at" and at is not None:
            ax_rate.axvline(at, linestyle=":", color=colours[method], linewidth=1.2)
    for ax, label in ((ax_rate, "scoring throughput (rows/s, one thread by default)"),
                      (ax_size, "model size (bytes)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training rows n_train")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    ax_rate.set_title("throughput (AUROC beside OCSDF, k-NN, IsolationForest; dotted: OCSDF "
                      "overtakes)", fontsize=9)
    ax_size.set_title("what must be kept to score", fontsize=10)
    ax_rate.legend(fontsize=8, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png")
    return path


# --------------------------------------------------------------------------- CLI
def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(float(s)) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes: comma-separated integers, got {text!r}"
                                         ) from None
    if not sizes or min(sizes) < 2:
        raise argparse.ArgumentTypeError(f"--sizes: integers >= 2, got {text!r}")
    return sizes


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``ocsdf bench frontier``."""
    p = subparsers.add_parser(
        "frontier", help="scoring throughput and size vs n_train: OCSDF (ONNX) vs exact k-NN "
        "vs IsolationForest", description=__doc__.split("\n\n")[1])
    p.add_argument("--dataset", default="http",
                   help="ADBench set (default http; e.g. shuttle) or a 2-D toy set; tables "
                   "are frontier.* for http, frontier_SET.* otherwise")
    p.add_argument("--sizes", type=_sizes, default=list(DEFAULT_SIZES),
                   help="comma-separated n_train values (default 100,1000,10000,100000,1000000)")
    p.add_argument("--score-rows", type=_positive_int, default=100_000,
                   help="rows of the fixed scoring batch (default 100,000)")
    p.add_argument("--steps", type=_positive_int, default=1000,
                   help="OCSDF training steps (default 1000, the estimator's default)")
    p.add_argument("--budget", type=float, default=15.0,
                   help="seconds per throughput measurement before it is timed on fewer rows "
                   "and extrapolated (default 15)")
    p.add_argument("--no-brute", action="store_true",
                   help="skip the brute-force k-NN rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive_int, default=1,
                   help="threads for torch, onnxruntime, BLAS and the search (default 1)")
    p.add_argument("--out-dir", default="docs/results")
    p.add_argument("--data-dir", default=None,
                   help="benchmark data folder (default: $OCSDF_DATA_DIR or ../shared/data)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the study; write ``frontier.{md,csv,json,png}`` (``frontier_SET.*``) under
    ``--out-dir``."""
    name = "frontier" if args.dataset == "http" else f"frontier_{args.dataset}"
    out = Path(args.out_dir)
    with study(args) as run_:
        rows, facts = frontier_study(args.dataset, args.sizes, args.score_rows, args.steps,
                                     args.seed, args.threads, args.budget, not args.no_brute,
                                     args.data_dir)
        out.mkdir(parents=True, exist_ok=True)
        figure = plot(rows, out / f"{name}.png",
                      f"{args.dataset}: scoring cost vs training rows ({args.threads} thread(s))")
        command = command_line("ocsdf bench frontier", args,
                               ["dataset", "sizes", "score_rows", "steps", "budget", "no_brute",
                                "seed", "threads", "out_dir", "data_dir"],
                               omit={"dataset": "http", "sizes": list(DEFAULT_SIZES),
                                     "score_rows": 100_000, "steps": 1000, "budget": 15.0,
                                     "seed": 0, "threads": 1})
        path = write_table(rows, name, out_dir=out,
                           title=f"Frontier: scoring cost vs n_train on {args.dataset}",
                           notes=_notes(rows, facts, args, run_.wall_s, figure),
                           command=command)
    print(f"wrote {path} and {figure}")
    return 0
