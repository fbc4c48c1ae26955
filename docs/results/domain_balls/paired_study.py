"""Paired study of docs/results/domain_balls/README.md.

Each default model (19 ADBench sets, 5 seeds, both protocols) is scored with B = the box alone
and with B = box U balls(r) around the training rows outside the box
(``sdf_B = max(sdf_box, max_i r - ||z - z_i||)``), for several radii r. The network term f comes
from the model; the box term is recomputed from the box alone (``domain.base``), so the script
gives the same comparison whatever B the model holds.

Run: ``python docs/results/domain_balls/paired_study.py > runs.jsonl`` (data from
``OCSDF_DATA_DIR`` or ``../shared/data``; 2 worker processes, one torch thread each; about
10 minutes on 2 cores). One JSON line per (set, protocol, seed): AUROC per variant.
"""

import json
import os
import warnings
from multiprocessing import Pool

os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from ocsdf import OCSDF  # noqa: E402
from ocsdf.bench.tabular import available_datasets  # noqa: E402
from ocsdf.data import find_data_dir, load_adbench, split_indices, subsample_indices  # noqa: E402

RADII = ["m/2", "m", 0.1, 0.25, 0.5]


def job(args: tuple[str, str, int]) -> dict:
    name, proto, seed = args
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    X, y = load_adbench(name, find_data_dir())[:2]
    keep = subsample_indices(y, 20000, seed)
    X, y = X[keep], y[keep]
    tr, te = split_indices(y, proto, seed)
    model = OCSDF(margin="auto", random_state=seed).fit(X[tr])
    sc = model.scorer_
    z_tr, z_te = sc.standardize(X[tr]), sc.standardize(X[te])
    f = sc.score_terms(X[te])[:, 0]
    box = getattr(sc.domain, "base", sc.domain).signed_distance(torch.as_tensor(z_te)).numpy()
    out = z_tr[(np.abs(z_tr) > 5).any(axis=1)]
    row = {"set": name, "proto": proto, "seed": seed, "n_out": len(out),
           "default": roc_auc_score(y[te], -np.minimum(f, box))}
    if len(out):
        dist = torch.cdist(torch.as_tensor(z_te), torch.as_tensor(out)).min(1).values.numpy()
    for r in RADII:
        rad = model.margin_ / 2 if r == "m/2" else model.margin_ if r == "m" else r
        sdf = np.maximum(box, rad - dist) if len(out) else box
        row[f"ball{r}"] = roc_auc_score(y[te], -np.minimum(f, sdf))
    print(json.dumps(row), flush=True)
    return row


if __name__ == "__main__":
    sets = available_datasets(find_data_dir())
    jobs = [(s, p, seed) for s in sets for p in ("ad", "oc") for seed in range(5)]
    with Pool(2) as pool:
        pool.map(job, jobs, chunksize=1)
