"""Blends of a smooth and a tight model (issue 21): is one default for both protocols there?

Per set, protocol and seed 0-4 (the bench's subsample and split): the default model
(``smooth``, negatives uniform in B) and ``OCSDF(negative_spread=0.6)`` (``tight``), both
margin "auto", then the AUROC of each, of their mean score and of their minimum (both
1-Lipschitz, so certificates would hold) and of the sum of their ranks.

    python docs/results/tabular_negatives/blend_study.py oc > blend_oc.txt
    python docs/results/tabular_negatives/blend_study.py ad > blend_ad.txt

AUROC in %, anomalies positive, mean over the 5 seeds; one torch thread.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from ocsdf import OCSDF
from ocsdf.bench.tabular import available_datasets
from ocsdf.data import load_adbench, protocol_rows

warnings.simplefilter("ignore")  # the DomainWarning of every fit with rows outside B


def main(protocol: str) -> None:
    torch.set_num_threads(1)
    means = []
    for name in available_datasets():
        X, y = load_adbench(name)
        runs = []
        for seed in range(5):
            x_tr, x_te, y_te = protocol_rows(X, y, protocol, seed, max_rows=20000)
            a = OCSDF(random_state=seed).fit(x_tr).score_samples(x_te)
            b = OCSDF(random_state=seed, negative_spread=0.6).fit(x_tr).score_samples(x_te)
            blends = (a, b, (a + b) / 2, np.minimum(a, b), rankdata(a) + rankdata(b))
            runs.append([roc_auc_score(y_te, -s) for s in blends])
        mean = 100 * np.mean(runs, 0)
        means.append(mean)
        print(f"{protocol} {name:13s}  smooth {mean[0]:.1f}  tight {mean[1]:.1f}  "
              f"mean {mean[2]:.1f}  min {mean[3]:.1f}  ranks {mean[4]:.1f}", flush=True)
    m = np.mean(means, 0)
    print(f"{protocol} mean over {len(means)} sets:  smooth {m[0]:.2f}  tight {m[1]:.2f}  "
          f"mean {m[2]:.2f}  min {m[3]:.2f}  ranks {m[4]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1])
