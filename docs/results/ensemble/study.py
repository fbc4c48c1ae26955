"""Ensemble study (issue 21): does the mean of K default OCSDF networks (different seeds, the
same training rows) rank better than one? The mean of 1-Lipschitz functions is 1-Lipschitz, so
the certificates are unchanged in kind.

For each ADBench set, protocol (ad, oc) and seed s (the bench's subsample and split): K = 4
default models fitted in one batched run (`fit_many`, random_state s, 1000 + s, 2000 + s,
3000 + s); AUROC of model 0 alone (the bench's single run), and of the mean score of the first
2 and of all 4. Writes ensemble_runs.csv here.

Usage: python docs/results/ensemble/study.py [datasets...]
"""
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from ocsdf import fit_many
from ocsdf.bench.tabular import available_datasets
from ocsdf.data import load_adbench, protocol_rows

torch.set_num_threads(1)
K = 4
out = Path(__file__).with_name("ensemble_runs.csv")
datasets = sys.argv[1:] or available_datasets()
new = not out.exists()
with out.open("a", newline="") as fh:
    w = csv.writer(fh)
    if new:
        w.writerow(["dataset", "protocol", "seed", "single", "mean2", "mean4", "fit_s"])
    for ds in datasets:
        X, y = load_adbench(ds)
        for p in ("ad", "oc"):
            for seed in range(5):
                x_tr, x_te, y_te = protocol_rows(X, y, p, seed, max_rows=20000)
                t = time.perf_counter()
                models = fit_many([x_tr] * K, ["auto"] * K, [seed + 1000 * j for j in range(K)])
                fit_s = time.perf_counter() - t
                s = np.stack([m.score_samples(x_te) for m in models])
                a = [roc_auc_score(y_te, -v) for v in (s[0], s[:2].mean(0), s.mean(0))]
                w.writerow([ds, p, seed, *(f"{v:.6f}" for v in a), f"{fit_s:.2f}"])
                fh.flush()
                print(ds, p, seed, [round(100 * v, 2) for v in a], round(fit_s, 1), flush=True)
