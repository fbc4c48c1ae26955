"""``ocsdf bench tabular``: OCSDF against PyOD baselines on the ADBench tabular sets (paper
Table 2 and appendix G), under the paper's two protocols.

Protocols
---------
``"ad"`` (anomaly detection, Table 2)
    Fit on every row, labels unused; AUROC on every row.
``"oc"`` (one-class, appendix G / Table 5)
    Fit on a random half of the normal rows (the split depends on the seed only, so every method
    sees the same split); AUROC of the other half of the normal rows against all anomalies.

Methods
-------
OCSDF (:class:`ocsdf.OCSDF`, its default network) with each margin of ``margins``; ``"auto"``
is the label-free rule (0.05 x the median nearest-neighbour distance, standardised units) and
the headline. "Best m" is the fixed margin with the highest mean AUROC on that data set, the
paper's practice, which peeks at the labels. Baselines are PyOD detectors with PyOD's default
hyper-parameters on standardised features (mean and scale of the training rows); OCSDF
standardises the same way internally.

AUROC takes anomalies as the positive class; OCSDF's outlier score is ``-score_samples``.

By default all OCSDF models of a data set and protocol (margins x seeds) are trained as one
batched network (:func:`ocsdf.fit_many`: the same algorithm, seeds and random draws as
one-by-one fits, whose trajectories drift apart over 1000 steps only through float rounding, so
AUROCs agree within seed noise; 1.3-2x faster on one thread); ``--separate`` fits them one at a
time. ``--jobs N`` runs whole data sets in N spawned worker processes of ``--threads`` threads
each (largest first), with the same numbers as one process: the whole AD benchmark (19 sets, 5
seeds, 5 margins, 8 baselines) took 30.2 min with ``--jobs 2`` on 2 cores, 76 min in one process.
The tables are rewritten after each data set, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import io
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from ..core.runtime import torch_device
from ..data import ADBENCH_FILES, load_adbench
from ..errors import InputError
from ..estimator import OCSDF, fit_many
from .harness import (
    command_line,
    resolve_jobs,
    rows_value,
    run_jobs,
    split_indices,
    study,
    subsample_indices,
    timed,
)

__all__ = [
    "DEFAULT_BASELINES",
    "DEFAULT_MARGINS",
    "DEFAULT_MAX_ROWS",
    "PROTOCOLS",
    "available_datasets",
    "make_baseline",
    "paper_table2",
    "register",
    "run",
    "tabular_benchmark",
]

PROTOCOLS = ("ad", "oc")
DEFAULT_MARGINS: tuple[float | str, ...] = ("auto", 0.01, 0.05, 0.2, 1.0)
DEFAULT_BASELINES = ("IForest", "OCSVM", "KNN", "LOF", "PCA", "ECOD", "COPOD", "DeepSVDD")
DEFAULT_MAX_ROWS = 20_000
AUTO = "ours auto"
BEST = "ours best-m"

_PROTOCOL_TEXT = {
    "ad": "AD protocol (paper Table 2): fit on every row without labels; AUROC on every row.",
    "oc": "OC protocol (paper appendix G / Table 5): fit on a random half of the normal rows "
          "(split by seed, the same for every method); AUROC of the other half of the normal "
          "rows against all anomalies.",
}


# ----------------------------------------------------------------------------- data
def available_datasets(data_dir=None) -> list[str]:
    """The short names of :data:`ocsdf.data.ADBENCH_FILES` whose file is present."""
    from ..data import adbench_path

    present = []
    for name in ADBENCH_FILES:
        try:
            adbench_path(name, data_dir)
        except FileNotFoundError:
            continue
        present.append(name)
    return present


def paper_table2() -> pd.DataFrame:
    """The paper's Table 2 (AUROC %, AD protocol) from ``paper_table2.csv``, indexed by the
    ADBench short name (``key``); rows without a file here (speech) are dropped. Empty when the
    file is not installed."""
    try:
        text = resources.files(__package__).joinpath("paper_table2.csv").read_text("utf-8")
    except (FileNotFoundError, ModuleNotFoundError):
        return pd.DataFrame()
    df = pd.read_csv(io.StringIO(text), comment="#")
    return df.dropna(subset=["key"]).set_index("key")


# ----------------------------------------------------------------------------- methods
def make_baseline(name: str, n_features: int, seed: int):
    """A PyOD detector with PyOD's default hyper-parameters (``random_state=seed`` where it has
    one). Names: IForest, OCSVM, KNN, LOF, PCA, ECOD, COPOD, DeepSVDD."""
    key = name.lower()
    if key == "iforest":
        from pyod.models.iforest import IForest
        return IForest(random_state=seed)
    if key == "ocsvm":
        from pyod.models.ocsvm import OCSVM
        return OCSVM()
    if key == "knn":
        from pyod.models.knn import KNN
        return KNN()
    if key == "lof":
        from pyod.models.lof import LOF
        return LOF()
    if key == "pca":
        from pyod.models.pca import PCA
        return PCA(random_state=seed)
    if key == "ecod":
        from pyod.models.ecod import ECOD
        return ECOD()
    if key == "copod":
        from pyod.models.copod import COPOD
        return COPOD()
    if key == "deepsvdd":
        from pyod.models.deep_svdd import DeepSVDD
        return DeepSVDD(n_features=n_features, random_state=seed, verbose=0)
    raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(DEFAULT_BASELINES)}")


def _canonical_baseline(name: str) -> str:
    for b in DEFAULT_BASELINES:
        if b.lower() == name.lower():
            return b
    raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(DEFAULT_BASELINES)}")


def _margin_label(margin: float | str) -> str:
    return "auto" if margin == "auto" else f"{float(margin):g}"


def _fit_ocsdf(x_tr, x_te, y_te, margin, seed: int, params: dict) -> dict:
    model, fit_s = timed(OCSDF(margin=margin, random_state=seed, **params).fit, x_tr)
    score, score_s = timed(model.score_samples, x_te)
    return {"auroc": float(roc_auc_score(y_te, -score)), "fit_s": fit_s, "score_s": score_s,
            "margin_": float(model.margin_), "error": "", "note": ""}


def _fit_ocsdf_batched(jobs: list[tuple], params: dict, progress: bool, desc: str
                       ) -> list[dict]:
    """Fit every OCSDF of ``jobs`` (``(x_tr, x_te, y_te, margin, seed)`` each) in one batched
    run (:func:`ocsdf.fit_many`); one result dict per job, as :func:`_fit_ocsdf` gives.

    ``fit_s`` is the batched run's wall time divided by the number of models (the amortised
    cost of one fit). Jobs that share a training array object share its storage.
    """
    models, fit_s = timed(fit_many, [j[0] for j in jobs], [j[3] for j in jobs],
                          [j[4] for j in jobs], progress=progress, desc=desc, **params)
    fit_s /= len(jobs)
    out = []
    for model, (_, x_te, y_te, _, _) in zip(models, jobs):
        score, score_s = timed(model.score_samples, x_te)
        out.append({"auroc": float(roc_auc_score(y_te, -score)), "fit_s": fit_s,
                    "score_s": score_s, "margin_": float(model.margin_), "error": "",
                    "note": ""})
    return out


def _fit_baseline(name: str, x_tr, x_te, y_te, seed: int) -> dict:
    scaler = StandardScaler().fit(x_tr)
    z_tr, z_te = scaler.transform(x_tr), scaler.transform(x_te)
    note = ""
    try:
        det = make_baseline(name, x_tr.shape[1], seed)
        if name == "PCA":
            # PyOD's weighted PCA score divides by each component's variance: a numerically zero
            # one (collinear features, e.g. cardio) gives huge, inf or NaN scores depending on
            # rounding. Keep the components of the numerical rank (all of them when full rank).
            rank = int(np.linalg.matrix_rank(z_tr))
            if rank < z_tr.shape[1]:
                det.set_params(n_components=rank)
                note = f"PCA: n_components = numerical rank {rank} < d = {z_tr.shape[1]}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, fit_s = timed(det.fit, z_tr)
            score, score_s = timed(det.decision_function, z_te)
        if not np.all(np.isfinite(score)):
            raise FloatingPointError("non-finite scores")
        auroc = float(roc_auc_score(y_te, score))
    except (ValueError, FloatingPointError, RuntimeError, np.linalg.LinAlgError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        return {"auroc": float("nan"), "fit_s": float("nan"), "score_s": float("nan"),
                "margin_": float("nan"), "error": f"{type(err).__name__}: {msg}"[:200],
                "note": note}
    return {"auroc": auroc, "fit_s": fit_s, "score_s": score_s, "margin_": float("nan"),
            "error": "", "note": note}


# ----------------------------------------------------------------------------- study
def tabular_benchmark(
    datasets: Sequence[str],
    protocol: str = "both",
    seeds: int | Sequence[int] = 5,
    margins: Sequence[float | str] = DEFAULT_MARGINS,
    n_steps: int | None = None,
    baselines: Sequence[str] = DEFAULT_BASELINES,
    max_rows: int | None = DEFAULT_MAX_ROWS,
    data_dir=None,
    n_threads: int = 1,
    ocsdf_params: dict | None = None,
    verbose: bool = False,
    batched: bool = True,
    on_dataset: Callable[[list[dict], dict], None] | None = None,
    n_jobs: int = 1,
    device: str = "cpu",
) -> tuple[list[dict], dict]:
    """Run OCSDF (each margin) and the baselines on each data set, protocol and seed.

    Parameters
    ----------
    datasets : sequence of str
        ADBench short names (:data:`ocsdf.data.ADBENCH_FILES`).
    protocol : {"ad", "oc", "both"}
    seeds : int or sequence of int
        ``k`` means seeds ``0 .. k-1``. A seed fixes the subsample, the OC split and every
        method's ``random_state``.
    margins : sequence of float or "auto"
        OCSDF margins; "best m" is taken over the fixed (float) ones.
    n_steps : int, optional
        OCSDF training steps (default: OCSDF's); ``warmup_steps = n_steps // 10``.
    baselines : sequence of str
        PyOD detectors, see :func:`make_baseline`.
    max_rows : int or None, default 20000
        Larger sets are subsampled (stratified, per seed) to this many rows before the split,
        for every method alike.
    data_dir : path, optional
        Folder holding ``adbench/``.
    n_threads : int, default 1
        ``torch.set_num_threads`` during the study (restored afterwards).
    ocsdf_params : dict, optional
        Other :class:`ocsdf.OCSDF` keyword arguments (``width``, ``depth``, ...).
    verbose : bool
        One line per fit on stderr, and a progress bar per batched training run.
    batched : bool, default True
        Fit all OCSDF models (margins x seeds) of a data set and protocol in one batched run
        (:func:`ocsdf.fit_many`: the same algorithm, seeds and random draws as separate
        fits, drifting apart only through float rounding; faster on one thread); False fits
        them one by one.
    on_dataset : callable, optional
        Called as ``on_dataset(rows, summary)`` after each data set (all protocols) with the
        rows so far and the summary of those rows, e.g. to write partial tables. With several
        workers, data sets finish in any order; the rows and ``datasets_done`` always follow
        the order of ``datasets``.
    n_jobs : int, default 1
        Worker processes, each running whole data sets (all protocols, seeds, margins and
        baselines) with ``n_threads`` threads; 0 = one per CPU core. The numbers do not depend
        on it: a data set's results are the same whichever process computes them. With one
        worker everything runs in this process.
    device : str, default "cpu"
        Torch device of the OCSDF fits ("cuda" when asked for and present); the PyOD baselines
        run on the CPU.

    Returns
    -------
    rows : list of dict
        One per (protocol, data set, method): ``protocol, dataset, method, kind`` ("ocsdf" or
        "baseline"), ``margin`` (OCSDF), ``margin_`` (the margin used, mean over seeds),
        ``auroc, auroc_std`` (sample std over seeds, 0 for one seed), ``auroc_seeds, fit_s,
        score_s`` (means over seeds), ``n_seeds, n_rows, n_total, n_features, n_train, n_test,
        error``. Methods are "OCSDF m=auto", "OCSDF m=0.01", ... and the baseline names.
    summary : dict
        Per protocol (``summary["ad"]``, ``summary["oc"]``): ``table`` (the wide rows written
        to ``tabular_PROTOCOL.*``: per data set paper, ours auto, ours best-m, each baseline,
        times; then the average-rank and mean-AUROC rows), ``margin_table`` (AUROC per margin),
        ``avg_rank_auto`` and ``avg_rank_best`` (method -> average rank, 1 = best, in the pool
        of baselines + ours auto, resp. + ours best-m), ``mean_auroc``, ``mean_fit_s``,
        ``best_margin`` (data set -> m). Also ``wall_s``, ``seeds``, ``n_steps``,
        ``batched``, ``device``, ``n_jobs`` and ``datasets_done``.
    """
    datasets = list(datasets)
    protocols = _protocols(protocol)
    for p in protocols:
        if p not in PROTOCOLS:
            raise ValueError(f"protocol must be 'ad', 'oc' or 'both', got {protocol!r}")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ValueError("at least one seed is needed")
    margins = [m if m == "auto" else float(m) for m in margins]
    if not margins:
        raise ValueError("at least one margin is needed")
    baselines = [_canonical_baseline(b) for b in baselines]
    params = dict(ocsdf_params or {})
    params.setdefault("device", device)
    torch_device(params["device"])  # a bad or absent device fails now, not in a worker
    if n_steps is not None:
        params.setdefault("n_steps", int(n_steps))
        params.setdefault("warmup_steps", int(n_steps) // 10)
    defaults = OCSDF()
    steps_used = rows_value("n_steps", params.get("n_steps", defaults.n_steps))

    meta: dict = {"seeds": seed_list, "n_steps": steps_used,
                  "width": rows_value("width", params.get("width", defaults.width)),
                  "depth": int(params.get("depth", defaults.depth)),
                  "margins": [_margin_label(m) for m in margins], "baselines": baselines,
                  "batched": bool(batched), "device": str(params["device"]),
                  "trim": float(params.get("trim", defaults.trim)),
                  "standardize": params.get("standardize", defaults.standardize),
                  "params": {k: v for k, v in params.items() if k != "device"},
                  "n_jobs": resolve_jobs(n_jobs, len(datasets))}
    paper = paper_table2()

    def summarise(rows: list[dict], wall: float, done: list[str]) -> dict:
        summary = {"wall_s": wall, **meta, "datasets_done": list(done)}
        for p in protocols:
            summary[p] = _summarise([r for r in rows if r["protocol"] == p], p, baselines, paper)
        return summary

    # One worker: this process, with the per-fit progress bars; several: spawned processes
    # (largest data sets first), one bar counting the data sets done.
    worker = functools.partial(
        _run_dataset, protocols=protocols, seed_list=seed_list, margins=margins,
        baselines=baselines, params=params, max_rows=max_rows, data_dir=data_dir,
        verbose=verbose, batched=batched, progress=verbose and meta["n_jobs"] == 1)
    t_start = time.perf_counter()
    per_dataset: dict[int, list[dict]] = {}

    def finished(index: int, dataset_rows: list[dict]) -> None:
        per_dataset[index] = dataset_rows
        if on_dataset is not None:
            rows, done = _collect(datasets, per_dataset)
            on_dataset(rows, summarise(rows, time.perf_counter() - t_start, done))

    run_jobs(datasets, worker, meta["n_jobs"], int(n_threads), finished=finished,
             cost=lambda d: _dataset_cost(d, data_dir, max_rows), progress=verbose,
             desc="tabular: data sets")
    rows, done = _collect(datasets, per_dataset)
    return rows, summarise(rows, time.perf_counter() - t_start, done)


def _collect(datasets: list[str], per_dataset: dict[int, list[dict]]
             ) -> tuple[list[dict], list[str]]:
    """Rows and names of the finished data sets, in the order ``datasets`` lists them."""
    done = sorted(per_dataset)
    return [r for i in done for r in per_dataset[i]], [datasets[i] for i in done]


def _dataset_cost(dataset: str, data_dir, max_rows: int | None) -> int:
    """Rows a data set is run on (after the subsample cap): the order of the parallel queue,
    largest first, so the long jobs do not start last. 0 when the file cannot be read (its
    worker then reports the error)."""
    from ..data import adbench_path

    try:
        with np.load(adbench_path(dataset, data_dir)) as npz:
            n = int(npz["y"].shape[0])
    except (OSError, KeyError, ValueError):  # InputError is a ValueError
        return 0
    return min(n, max_rows) if max_rows else n


def _run_dataset(dataset: str, *, protocols: list[str], seed_list: list[int],
                 margins: list, baselines: list[str], params: dict, max_rows: int | None,
                 data_dir, verbose: bool, batched: bool, progress: bool) -> list[dict]:
    """Every protocol, seed, margin and baseline of one data set: the aggregated rows of
    :func:`tabular_benchmark` for it (a module-level function, so worker processes can run
    it)."""
    X, y = load_adbench(dataset, data_dir)
    rows: list[dict] = []
    for p in protocols:
        runs: dict[str, list[dict]] = {}
        sizes = {}
        splits = []
        for seed in seed_list:
            keep = subsample_indices(y, max_rows, seed)
            ys = y[keep]
            tr, te = split_indices(ys, p, seed)
            # The same rows for several seeds (no subsample, AD protocol): one array, so a
            # batched run stores the set once.
            same = next((s for s in splits if np.array_equal(s["keep"], keep)
                         and np.array_equal(s["tr"], tr)), None)
            xs = X[keep]
            x_tr = same["x_tr"] if same is not None else xs[tr]
            splits.append({"seed": seed, "keep": keep, "tr": tr, "x_tr": x_tr,
                           "x_te": xs[te], "y_te": ys[te]})
            sizes = {"n_rows": len(keep), "n_total": len(y), "n_features": X.shape[1],
                     "n_train": len(tr), "n_test": len(te)}
        results: dict[tuple[int, int], dict] = {}
        if batched:
            jobs = [(s["x_tr"], s["x_te"], s["y_te"], m, s["seed"])
                    for s in splits for m in margins]
            fitted = _fit_ocsdf_batched(
                jobs, params, progress=progress,
                desc=f"{p} {dataset}: {len(jobs)} OCSDF fits")
            results = {(i, j): fitted[i * len(margins) + j]
                       for i in range(len(splits)) for j in range(len(margins))}
        for i, s in enumerate(splits):
            x_tr, x_te, y_te, seed = s["x_tr"], s["x_te"], s["y_te"], s["seed"]
            for j, m in enumerate(margins):
                name = f"OCSDF m={_margin_label(m)}"
                r = results[(i, j)] if batched else _fit_ocsdf(x_tr, x_te, y_te, m, seed, params)
                runs.setdefault(name, []).append(r)
                _log(verbose, dataset, p, name, seed, r)
            for b in baselines:
                r = _fit_baseline(b, x_tr, x_te, y_te, seed)
                runs.setdefault(b, []).append(r)
                _log(verbose, dataset, p, b, seed, r)
        for name, rs in runs.items():
            rows.append(_aggregate(p, dataset, name, rs, sizes))
    return rows


def _log(verbose: bool, dataset: str, protocol: str, name: str, seed: int, r: dict) -> None:
    if verbose:
        extra = f" margin_={r['margin_']:.4g}" if np.isfinite(r["margin_"]) else ""
        extra += f" ERROR {r['error']}" if r["error"] else ""
        extra += f" ({r['note']})" if r["note"] else ""
        print(f"[tabular] {protocol} {dataset} {name} seed={seed} auroc={r['auroc']:.4f} "
              f"fit={r['fit_s']:.2f}s score={r['score_s']:.3f}s{extra}",
              file=sys.stderr, flush=True)


def _aggregate(protocol: str, dataset: str, name: str, rs: list[dict], sizes: dict) -> dict:
    auroc = np.array([r["auroc"] for r in rs])
    ok = np.isfinite(auroc)
    is_ocsdf = name.startswith("OCSDF")
    return {
        "protocol": protocol,
        "dataset": dataset,
        "method": name,
        "kind": "ocsdf" if is_ocsdf else "baseline",
        "margin": name.split("=", 1)[1] if is_ocsdf else "",
        "margin_": float(np.mean([r["margin_"] for r in rs])) if is_ocsdf else float("nan"),
        "auroc": float(auroc[ok].mean()) if ok.any() else float("nan"),
        "auroc_std": float(auroc[ok].std(ddof=1)) if ok.sum() > 1 else 0.0,
        "auroc_seeds": " ".join(f"{a:.4f}" for a in auroc),
        "fit_s": float(np.nanmean([r["fit_s"] for r in rs])) if ok.any() else float("nan"),
        "score_s": float(np.nanmean([r["score_s"] for r in rs])) if ok.any() else float("nan"),
        "n_seeds": int(ok.sum()),
        **sizes,
        "error": "; ".join(sorted({r["error"] for r in rs if r["error"]})),
        "note": "; ".join(sorted({r["note"] for r in rs if r["note"]})),
    }


def _cell(mean: float, std: float, n_seeds: int) -> str:
    if not np.isfinite(mean):
        return "failed"
    if n_seeds <= 1:
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def _seconds(value: float) -> str:
    return f"{value:.3g}" if np.isfinite(value) else ""


def _summarise(rows: list[dict], protocol: str, baselines: list[str],
               paper: pd.DataFrame) -> dict:
    df = pd.DataFrame(rows)
    datasets = list(dict.fromkeys(df["dataset"]))
    oc = df[df["kind"] == "ocsdf"]
    fixed = oc[oc["margin"] != "auto"]
    auto = oc[oc["margin"] == "auto"].set_index("dataset")
    base = df[df["kind"] == "baseline"]

    # Per data set: the fixed margin with the best mean AUROC (the paper's practice).
    best_rows = {}
    for ds in datasets:
        sub = fixed[fixed["dataset"] == ds]
        if len(sub) and sub["auroc"].notna().any():
            best_rows[ds] = sub.loc[sub["auroc"].idxmax()]

    # AUROC matrix (data set x method) for the ranks.
    methods = [AUTO, BEST, *baselines]
    mat = pd.DataFrame(index=datasets, columns=methods, dtype=float)
    for ds in datasets:
        if ds in auto.index:
            mat.loc[ds, AUTO] = auto.loc[ds, "auroc"]
        if ds in best_rows:
            mat.loc[ds, BEST] = best_rows[ds]["auroc"]
        for b in baselines:
            hit = base[(base["dataset"] == ds) & (base["method"] == b)]
            if len(hit):
                mat.loc[ds, b] = hit["auroc"].iloc[0]

    def avg_rank(ours: str) -> dict[str, float]:
        pool = [m for m in methods if m == ours or m not in (AUTO, BEST)]
        pool = [m for m in pool if mat[m].notna().any()]
        if not pool:
            return {}
        ranks = mat[pool].rank(axis=1, ascending=False, method="average", na_option="bottom")
        return {m: float(ranks[m].mean()) for m in pool}

    rank_auto, rank_best = avg_rank(AUTO), avg_rank(BEST)

    table: list[dict] = []
    margin_table: list[dict] = []
    for ds in datasets:
        sizes = df[df["dataset"] == ds].iloc[0]
        n_text = (f"{int(sizes['n_rows'])}" if sizes["n_rows"] == sizes["n_total"]
                  else f"{int(sizes['n_rows'])} of {int(sizes['n_total'])}")
        row: dict = {"dataset": ds, "n": n_text, "d": str(int(sizes["n_features"]))}
        if protocol == "ad":
            if ds in paper.index:
                pr = paper.loc[ds]
                row["paper OCSDF"] = f"{pr['ocsdf_auroc']:.1f} ± {pr['ocsdf_std']:.1f}"
            else:
                row["paper OCSDF"] = ""
        if ds in auto.index:
            a = auto.loc[ds]
            row[AUTO] = _cell(a["auroc"], a["auroc_std"], a["n_seeds"])
        if ds in best_rows:
            b = best_rows[ds]
            row[BEST] = _cell(b["auroc"], b["auroc_std"], b["n_seeds"])
            row["best m"] = b["margin"]
        for name in baselines:
            hit = base[(base["dataset"] == ds) & (base["method"] == name)]
            row[name] = (_cell(hit["auroc"].iloc[0], hit["auroc_std"].iloc[0],
                               hit["n_seeds"].iloc[0]) if len(hit) else "")
        sub_oc = oc[oc["dataset"] == ds]
        row["fit s ours"] = _seconds(sub_oc["fit_s"].mean())
        row["score s ours"] = _seconds(sub_oc["score_s"].mean())
        if "IForest" in baselines:
            hit = base[(base["dataset"] == ds) & (base["method"] == "IForest")]
            row["fit s IForest"] = _seconds(hit["fit_s"].iloc[0])
            row["score s IForest"] = _seconds(hit["score_s"].iloc[0])
        table.append(row)

        mrow: dict = {"dataset": ds}
        if ds in auto.index:
            mrow["m (auto)"] = f"{auto.loc[ds, 'margin_']:.3g}"
        for _, r in sub_oc.iterrows():
            mrow[f"m={r['margin']}"] = _cell(r["auroc"], r["auroc_std"], r["n_seeds"])
        if protocol == "ad" and ds in paper.index:
            mrow["paper IF"] = f"{paper.loc[ds, 'iforest']:g}"
        margin_table.append(mrow)

    paper_pool = _paper_pool_ranks(mat, paper) if protocol == "ad" else {}
    mean_auroc = {m: float(mat[m].mean()) for m in methods if mat[m].notna().any()}
    for label, ranks in (("average rank (ours auto + baselines)", rank_auto),
                         ("average rank (ours best-m + baselines)", rank_best)):
        table.append({"dataset": f"**{label}**",
                      **{m: f"{v:.2f}" for m, v in ranks.items()}})
    table.append({"dataset": "**mean AUROC**",
                  **{m: f"{100 * v:.1f}" for m, v in mean_auroc.items()}})
    columns = list(dict.fromkeys(k for row in table for k in row))
    table = [{k: row.get(k, "") for k in columns} for row in table]
    margin_columns = list(dict.fromkeys(k for row in margin_table for k in row))
    margin_table = [{k: row.get(k, "") for k in margin_columns} for row in margin_table]
    mean_fit = {"OCSDF (all margins)": float(oc["fit_s"].mean())}
    for b in baselines:
        mean_fit[b] = float(base.loc[base["method"] == b, "fit_s"].mean())
    return {"table": table, "margin_table": margin_table, "avg_rank_auto": rank_auto,
            "avg_rank_best": rank_best, "mean_auroc": mean_auroc, "mean_fit_s": mean_fit,
            "best_margin": {ds: best_rows[ds]["margin"] for ds in best_rows},
            "paper_pool": paper_pool}


PAPER_POOL = ("deepsvdd", "ocsvm", "iforest", "pca", "knn")
"""The baseline columns the paper prints in Table 2 (the other 9 of its 15 methods are not)."""


def _paper_pool_ranks(mat: pd.DataFrame, paper: pd.DataFrame) -> dict:
    """Average rank (1 = best of 6) of the paper's OCSDF, of ours auto and of ours best-m, each
    ranked alone against the paper's printed baseline figures (:data:`PAPER_POOL`, AUROC %)
    on the data sets of ``mat`` (AUROC in [0, 1], data set x method) that have a paper row.

    ``wbc`` is left out: the paper's WBC row is the 378 x 30 set, for which ``wdbc`` stands.
    Returns {} when no data set qualifies; else the three ranks keyed "paper OCSDF", AUTO and
    BEST (NaN when no fixed margin was run), plus ``datasets``, ``n_sets``, ``auto_ge_paper``
    and ``best_ge_paper`` (sets where ours, rounded to 0.1 % as printed, is at least the
    paper's figure).
    """
    sets = [ds for ds in mat.index if ds in paper.index and ds != "wbc"
            and np.isfinite(mat.loc[ds, AUTO])]
    if not sets or paper.empty:
        return {}
    base = paper.loc[sets, list(PAPER_POOL)].astype(float)

    def rank_of(values: pd.Series) -> float:
        pool = base.assign(candidate=values.astype(float))
        ranks = pool.rank(axis=1, ascending=False, method="average")
        return float(ranks["candidate"].mean())

    ours_auto = 100 * mat.loc[sets, AUTO].astype(float)
    ours_best = 100 * mat.loc[sets, BEST].astype(float)
    theirs = paper.loc[sets, "ocsdf_auroc"].astype(float)
    best_rank = rank_of(ours_best.round(1)) if ours_best.notna().all() else float("nan")
    return {"paper OCSDF": rank_of(theirs), AUTO: rank_of(ours_auto.round(1)),
            BEST: best_rank, "datasets": sets, "n_sets": len(sets),
            "auto_ge_paper": int((ours_auto.round(1) >= theirs).sum()),
            "best_ge_paper": int((ours_best.round(1) >= theirs).sum())}


# ----------------------------------------------------------------------------- report
def _notes(protocol: str, summary: dict, datasets: Sequence[str], max_rows: int | None,
           n_threads: int, rows: list[dict]) -> str:
    res = summary[protocol]
    seeds = summary["seeds"]
    subsampled = sorted({r["dataset"] for r in rows
                         if r["protocol"] == protocol and r["n_rows"] < r["n_total"]})
    errors = sorted({f"{r['dataset']} {r['method']}: {r['error']}" for r in rows
                     if r["protocol"] == protocol and r["error"]})
    notes = sorted({f"{r['dataset']}: {r['note']}" for r in rows
                    if r["protocol"] == protocol and r["note"]})
    not_run = [k for k in ADBENCH_FILES if k not in datasets]
    lines = [
        _PROTOCOL_TEXT[protocol],
        "",
        f"AUROC in % (anomalies positive), mean ± sample std over {len(seeds)} seed(s) "
        f"({', '.join(map(str, seeds))}); a seed fixes the subsample, the split and every "
        f"method's random_state. Data sets run: {', '.join(datasets)}"
        + (f"; not run: {', '.join(not_run)}" if not_run else "") + ".",
        "",
        f"**ours auto**: OCSDF with the label-free margin rule (margin=\"auto\": 0.05 x median "
        f"nearest-neighbour distance of the training rows, exact duplicates left out, "
        f"standardised units, clipped to [0.005, 1]) -- no labels used. **ours best-m**: "
        f"the fixed margin among "
        f"{{{', '.join(m for m in summary['margins'] if m != 'auto')}}} with the best mean "
        f"AUROC on that data set (the paper's practice; it peeks at the labels). OCSDF: default "
        f"network ({summary['width']} x {summary['depth']}, GroupSort2), n_steps = "
        f"{summary['n_steps']}, warmup_steps = n_steps // 10, "
        f"{_training_text(summary.get('params'))}, box domain "
        f"[-5, 5]^d after standardisation. The paper trains 40 epochs (5 warm-up) and averages "
        f"20 runs."
        + (f" **Trim {summary['trim']:g}** (every OCSDF here): after a first fit, the "
           f"{summary['trim']:g} fraction of training rows with the lowest scores is dropped and "
           "the model fitted again, from the same seed, on the rest (OCSDF(trim=...); "
           "label-free; twice the fit time, included in 'fit s ours')."
           if summary.get("trim", 0) > 0 else "")
        + (" **Covering scales** (every OCSDF here, OCSDF(standardize='cover')): each "
           "feature's scale raised so that every training row lies within 80 % of the box B."
           if summary.get("standardize") == "cover" else ""),
        "",
        "Baselines: PyOD "
        f"{', '.join(summary['baselines'])} with PyOD's default hyper-parameters, on features "
        "standardised with the training rows' mean and std (IForest/PCA/DeepSVDD get "
        "random_state = seed). Average rank: per data set, 1 = best mean AUROC (ties share the "
        "mean rank), averaged over data sets; one pool holds the baselines and ours auto, the "
        "other the baselines and ours best-m. Times: mean seconds per fit / per scoring of the "
        "evaluation rows, "
        + (f"{summary['n_jobs']} worker processes running whole data sets side by side, each "
           f"with {n_threads} thread(s) (torch and BLAS)" if summary.get("n_jobs", 1) > 1
           else f"single process, torch.set_num_threads({n_threads})")
        + f", OCSDF on device {summary.get('device', 'cpu')}; 'fit s ours' averages over all "
        "margins"
        + ("; OCSDF fits batched: all margins x seeds of a data set and protocol trained as one "
           "batched network (ocsdf.fit_many: the same algorithm, seeds and random draws "
           "as separate fits, drifting apart over the steps only through float rounding), "
           "fit s = the batched run's time / number of models"
           if summary.get("batched") else "; OCSDF fitted one model at a time")
        + ". Mean fit time over data sets: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in res["mean_fit_s"].items()) + ".",
        "",
    ]
    if protocol == "ad":
        lines += [
            "**paper OCSDF**: Table 2 of the ICML 2023 paper (best m of {0.01, 0.05, 0.2, 1}, "
            "20 runs), from src/ocsdf/bench/paper_table2.csv; the paper's average rank of OCSDF "
            "is 7.1 ± 3.6 among 15 methods (IsolationForest best, 4.5).",
            "",
        ]
        pool = res.get("paper_pool")
        if pool:
            lines += [
                "**Against the paper's own figures** (the paper ranks among 15 methods but prints "
                "only 5 baseline columns, so its 7.1 cannot be recomputed): on the "
                f"{pool['n_sets']} data sets with a paper row ({', '.join(pool['datasets'])}), "
                "rank each OCSDF among the paper's printed DeepSVDD, OCSVM, IF, PCA and kNN "
                f"figures (1 = best of 6): paper OCSDF {pool['paper OCSDF']:.2f}, "
                f"ours auto {pool[AUTO]:.2f}"
                + (f", ours best-m {pool[BEST]:.2f}" if np.isfinite(pool[BEST]) else "")
                + f". Ours auto ≥ the paper's OCSDF figure on {pool['auto_ge_paper']} of "
                f"{pool['n_sets']} sets"
                + (f" (ours best-m: {pool['best_ge_paper']})." if np.isfinite(pool[BEST])
                   else " (no fixed margin was run, so no best-m)."),
                "",
            ]
    else:
        lines += [
            "No paper column: the OC protocol's Table 5 is referred to in appendix G but is not "
            "in the paper text available to this project.",
            "",
        ]
    cap = (f"Sets larger than {max_rows} rows are subsampled to {max_rows} rows (stratified "
           f"by class, per seed) for OCSDF and the baselines alike"
           if max_rows else "No subsampling")
    lines += [
        "Data caveats (ADBench 'Classical' .npz files, see shared/data/README.md): the paper's "
        "speech set is not available; glass has 7 features here (paper 9) and Ionosphere 32 "
        "(paper 33); ADBench's wbc is the 223 x 9 variant while the paper's WBC row is 378 x 30 "
        "-- wdbc (367 x 30) is the closest 30-feature set and was added; the paper's WBC figure "
        f"is shown on both rows. {cap}"
        + (f" (subsampled here: {', '.join(subsampled)})." if subsampled else "."),
        "",
        f"Wall time of the whole run: {summary['wall_s'] / 60:.1f} min.",
        "",
    ]
    if errors:
        lines += ["Failures (ranked last on that data set): " + "; ".join(errors), ""]
    if notes:
        lines += ["Adjustments: " + "; ".join(notes) + " (PyOD's weighted PCA score divides "
                  "by each component's variance, so a numerically zero one makes the score "
                  "blow up to inf/NaN depending on rounding).", ""]
    lines += ["AUROC of OCSDF per margin ('m (auto)' = mean margin the auto rule chose):", "",
              pd.DataFrame(res["margin_table"]).fillna("").to_markdown(index=False), "",
              "Main table:"]
    return "\n".join(lines)


COMMAND_OPTIONS = ("protocol", "seeds", "margins", "max_rows", "threads", "datasets", "steps",
                   "baselines", "data_dir", "out_dir", "separate", "trim", "cover", "jobs",
                   "device")
"""The options :func:`command_text` records, in order (defaults of the last ones left out)."""


def command_text(args: argparse.Namespace) -> str:
    """The ``ocsdf bench tabular`` command line equivalent to ``args``."""
    text = command_line("ocsdf bench tabular", args, COMMAND_OPTIONS,
                        omit={"baselines": ",".join(DEFAULT_BASELINES), "trim": 0.0, "jobs": 1,
                              "cover": False})
    return " ".join([text, *(shlex.join(["--set", item]) for item in getattr(args, "set", None)
                             or ())])


def _parse_set(item: str) -> tuple[str, object]:
    """``"name=value"`` -> ``(name, value)`` with an int, float, bool or string value, or a
    tuple of them for a comma-separated value (``channels=8,16``); the name must be an OCSDF
    parameter (ValueError naming the known ones)."""
    name, sep, text = item.partition("=")
    known = OCSDF().get_params()
    if not sep or name not in known:
        raise ValueError(f"--set {item!r}: expected NAME=VALUE with NAME one of "
                         f"{', '.join(sorted(known))}")
    if "," in text:
        return name, tuple(_parse_set(f"{name}={part}")[1] for part in text.split(","))
    value: object = text
    if text.lower() in ("true", "false"):
        value = text.lower() == "true"
    else:
        for kind in (int, float):
            try:
                value = kind(text)
                break
            except ValueError:
                continue
    return name, value


def _training_text(params: dict | None = None) -> str:
    """OCSDF's training hyper-parameters in words (for the table notes): the defaults with
    ``params`` over them."""
    known = OCSDF().get_params()
    d = OCSDF(**{**known, **{k: v for k, v in (params or {}).items() if k in known}})
    text = (f"batch {rows_value('batch_size', d.batch_size)}, "
            f"T = {rows_value('n_newton_steps', d.n_newton_steps)}, "
            f"lambda = {d.lam:g}, RMSprop lr "
            f"{d.learning_rate:g}")
    if d.bias_lr_factor != 1:
        text += f" ({d.bias_lr_factor:g} x for the biases)"
    if d.lr_schedule != "constant":
        text += f", {d.lr_schedule} schedule"
    return text


def _ocsdf_params(args: argparse.Namespace) -> dict | None:
    """The OCSDF parameters the options set (None: all defaults)."""
    params: dict = dict(_parse_set(item) for item in getattr(args, "set", None) or ())
    if args.trim:
        params["trim"] = args.trim
    if getattr(args, "cover", False):
        params["standardize"] = "cover"
    return params or None


def _split_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _parse_margins(text: str) -> list[float | str]:
    out: list[float | str] = []
    for t in _split_list(text):
        if t == "auto":
            out.append("auto")
            continue
        try:
            v = float(t)
        except ValueError:
            raise ValueError(f"--margins: expected 'auto' or positive numbers, got {t!r}") from None
        if not v > 0:
            raise ValueError(f"--margins: margins must be positive, got {t!r}")
        out.append(v)
    return out


def _run_datasets(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The data sets (every one available by default) and baselines of ``args``, checked."""
    datasets = (_split_list(args.datasets) if args.datasets
                else available_datasets(args.data_dir))
    if not datasets:
        raise FileNotFoundError("no ADBench files found: pass --data-dir or set OCSDF_DATA_DIR")
    unknown = [d for d in datasets if d.lower() not in ADBENCH_FILES]
    if unknown:
        raise ValueError(f"unknown data set(s) {unknown}; choose from {', '.join(ADBENCH_FILES)}")
    baselines = _split_list(args.baselines)
    if baselines and importlib.util.find_spec("pyod") is None:
        raise InputError("the baselines need PyOD: pip install pyod (or run OCSDF alone with "
                         "--baselines '')")
    return [d.lower() for d in datasets], baselines


def _write_tables(args: argparse.Namespace, rows: list[dict], summary: dict, final: bool,
                  datasets: list[str], max_rows: int | None) -> list[Path]:
    """The tables of ``rows`` so far: tabular_P.{md,csv,json} and the per-method rows
    tabular_P_runs.csv (rewritten atomically after each data set, so an interrupted run keeps
    every finished data set)."""
    from ..io import write_csv_atomic
    from .report import write_table

    done = summary["datasets_done"]
    paths = []
    for p in _protocols(args.protocol):
        notes = _notes(p, summary, done, max_rows, args.threads, rows)
        if not final:
            notes = (f"**Partial results: {len(done)} of {len(datasets)} data sets done** "
                     "(written after each data set; the run was still going or was "
                     "interrupted).\n\n" + notes)
        paths.append(write_table(
            summary[p]["table"], f"tabular_{p}", out_dir=args.out_dir,
            title=f"Tabular anomaly detection, {p.upper()} protocol (OCSDF vs PyOD baselines)",
            notes=notes, command=command_text(args)))
        write_csv_atomic(pd.DataFrame([r for r in rows if r["protocol"] == p]),
                         Path(args.out_dir) / f"tabular_{p}_runs.csv")
    return paths


def _protocols(protocol: str) -> list[str]:
    return list(PROTOCOLS) if protocol == "both" else [protocol]


def run(args: argparse.Namespace) -> int:
    """Run the study from parsed ``args`` and write ``tabular_ad``/``tabular_oc`` tables."""
    with study(args):  # the device first; --threads for the run and the tables' machine line
        datasets, baselines = _run_datasets(args)
        max_rows = args.max_rows if args.max_rows and args.max_rows > 0 else None

        def write(rows: list[dict], summary: dict, final: bool) -> list[Path]:
            return _write_tables(args, rows, summary, final, datasets, max_rows)

        rows, summary = tabular_benchmark(
            datasets, protocol=args.protocol, seeds=args.seeds,
            margins=_parse_margins(args.margins), n_steps=args.steps, baselines=baselines,
            max_rows=max_rows, ocsdf_params=_ocsdf_params(args),
            data_dir=args.data_dir, n_threads=args.threads, verbose=not args.quiet,
            batched=not getattr(args, "separate", False), n_jobs=args.jobs, device=args.device,
            on_dataset=lambda r, s: write(r, s, final=False))
        paths = write(rows, summary, final=True)
    for p, path in zip(_protocols(args.protocol), paths):
        ranks = ", ".join(f"{k} {v:.2f}" for k, v in sorted(summary[p]["avg_rank_auto"].items(),
                                                             key=lambda kv: kv[1]))
        print(f"{p}: average rank (ours auto + baselines): {ranks}")
        pool = summary[p].get("paper_pool")
        if pool:
            print(f"{p}: rank among the paper's printed baselines on {pool['n_sets']} sets: "
                  f"paper OCSDF {pool['paper OCSDF']:.2f}, ours auto {pool[AUTO]:.2f}; ours "
                  f"auto >= paper OCSDF on {pool['auto_ge_paper']} of {pool['n_sets']}")
        print(f"wrote {path}")
    print(f"wall time {summary['wall_s'] / 60:.1f} min")
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``ocsdf bench tabular`` to ``subparsers`` (from ``add_subparsers``)."""
    p = subparsers.add_parser(
        "tabular", help="OCSDF vs PyOD baselines on ADBench tabular sets (paper Table 2)",
        description="Fit OCSDF (several margins, and the label-free 'auto') and PyOD baselines "
        "on ADBench sets under the AD and/or OC protocol; write "
        "docs/results/tabular_{ad,oc}.{md,csv,json}. Needs pyod.")
    p.add_argument("--datasets", default=None, metavar="A,B,...",
                   help="comma-separated ADBench short names (default: every one available)")
    p.add_argument("--protocol", choices=("ad", "oc", "both"), default="both",
                   help="ad: fit and score all rows; oc: fit on half of the normal rows "
                   "(default: both)")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..k-1 (default: 5)")
    p.add_argument("--margins", default=",".join(_margin_label(m) for m in DEFAULT_MARGINS),
                   help="comma-separated OCSDF margins, 'auto' = label-free rule "
                   "(default: %(default)s)")
    p.add_argument("--steps", type=int, default=None,
                   help="OCSDF n_steps (default: OCSDF's for rows, "
                        f"{rows_value('n_steps', 'auto')})")
    p.add_argument("--baselines", default=",".join(DEFAULT_BASELINES),
                   help="comma-separated PyOD baselines (default: %(default)s)")
    p.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS,
                   help="subsample larger sets to this many rows, stratified, for every method "
                   "(0 = no limit; default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="folder holding adbench/ (default: found)")
    p.add_argument("--out-dir", default="docs/results", help="output folder (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--quiet", action="store_true", help="no per-fit progress lines")
    p.add_argument("--separate", action="store_true",
                   help="fit the OCSDF models one at a time instead of one batched run per "
                   "data set and protocol (same algorithm and random draws, slower)")
    p.add_argument("--trim", type=float, default=0.0,
                   help="OCSDF(trim=...): refit every OCSDF model without the lowest-scoring "
                   "fraction of its training rows (default: 0, one fit)")
    p.add_argument("--set", action="append", default=None, metavar="NAME=VALUE",
                   help="an OCSDF parameter for every OCSDF model, e.g. --set width=128 "
                   "--set learning_rate=0.001 (repeatable; numbers, true/false or text)")
    p.add_argument("--cover", action="store_true",
                   help="OCSDF(standardize='cover'): scales raised so that the domain B holds "
                   "every training row (default: standard deviations)")
    p.add_argument("--jobs", type=int, default=1,
                   help="worker processes, each running whole data sets with --threads threads "
                   "(0 = one per CPU core; default: 1). Results do not depend on it")
    from ..cli.options import add_device

    add_device(p)
    p.set_defaults(func=run)
    return p
