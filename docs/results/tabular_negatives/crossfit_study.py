"""Out-of-fold scores of the training rows in the AD protocol (issue 21).

With anomalies among the training rows, a tight network covers them too (``negative_spread``
AD -5.7 points): each anomaly is scored by a model that was fitted on it. Out-of-fold scoring
removes that: split the rows in K folds, fit one model per fold on the other folds, score each
row with the model that never saw it (what PyOD's KNN does by leaving a row out of its own
neighbours). No labels are used.

Per set and seed 0-4 (the bench's subsample; AD protocol: every row is fitted and scored), for
each setting (``smooth``: defaults; ``tight``: ``negative_spread=0.5``; ``trim``: ``trim=0.2``)
and K = 2: the folds are a random split (``default_rng([seed, 13])``); AUROC of the out-of-fold
scores over all rows, anomalies positive. The default tables' in-sample AUROC (one model fitted
and scoring all rows) is in ``../tabular_ad_runs.csv`` and the run folders here.

    python docs/results/tabular_negatives/crossfit_study.py            # fits, 2 cores
    python docs/results/tabular_negatives/crossfit_study.py --report > crossfit.md
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from study_runs import run_sets, seed_rows

HERE = Path(__file__).resolve().parent
RUNS = HERE / "crossfit_runs.csv"
SETTINGS = {"smooth": {}, "tight": {"negative_spread": 0.5}, "trim": {"trim": 0.2}}
K = 2
IN_SAMPLE = {"smooth": HERE.parent / "tabular_ad_runs.csv",
             "tight": HERE / "spread0.5" / "tabular_ad_runs.csv",
             "trim": HERE / "trim0.2" / "tabular_ad_runs.csv"}


def out_of_fold(x: np.ndarray, seed: int, params: dict) -> np.ndarray:
    """``(n,)`` scores of the rows ``x``, each by the model fitted on the other folds."""
    from ocsdf import OCSDF

    fold = np.random.default_rng([seed, 13]).permutation(len(x)) % K
    scores = np.empty(len(x))
    for k in range(K):
        model = OCSDF(random_state=seed, **params).fit(x[fold != k])
        scores[fold == k] = model.score_samples(x[fold == k])
    return scores


def one_set(name: str) -> list[dict]:
    rows = []
    for seed, _, x, y in seed_rows(name, "ad"):  # AD: every row is fitted and scored
        for setting, params in SETTINGS.items():
            rows.append({"set": name, "seed": seed, "setting": setting,
                         "auroc": roc_auc_score(y, -out_of_fold(x, seed, params))})
    return rows


def run() -> None:
    run_sets(one_set, RUNS, ["set", "seed", "setting", "auroc"])


def in_sample(path: Path) -> dict[str, float]:
    with path.open() as fh:
        return {r["dataset"]: 100 * float(r["auroc"]) for r in csv.DictReader(fh)
                if r["method"] == "OCSDF m=auto"}


def report() -> None:
    with RUNS.open() as fh:
        rows = list(csv.DictReader(fh))
    sets = sorted({r["set"] for r in rows})
    oof = {st: {n: 100 * np.mean([float(r["auroc"]) for r in rows
                                  if r["set"] == n and r["setting"] == st]) for n in sets}
           for st in SETTINGS}
    ins = {st: in_sample(p) for st, p in IN_SAMPLE.items()}
    print("| set | " + " | ".join(f"{st} in-sample | {st} out-of-fold" for st in SETTINGS)
          + " |")
    print("|---|" + "---:|" * (2 * len(SETTINGS)))
    for n in sets:
        print(f"| {n} | " + " | ".join(f"{ins[st][n]:.1f} | {oof[st][n]:.1f}" for st in SETTINGS)
              + " |")
    print("| **mean** | " + " | ".join(
        f"{np.mean([ins[st][n] for n in sets]):.2f} | {np.mean(list(oof[st].values())):.2f}"
        for st in SETTINGS) + " |")


if __name__ == "__main__":
    report() if "--report" in sys.argv else run()
