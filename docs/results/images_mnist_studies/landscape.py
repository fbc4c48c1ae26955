"""What the score looks like on MNIST test digits (one class, one seed): f against the exact
distance d1 to the nearest training image of the class.

Usage: [STEPS=3000] [LAM=100] [M=auto] [BLF=1] [DW=auto] python landscape.py
(digit 2, every training image of the class, the first 2000 test images; prints AUROC and
certified AUROC at l2 36/255 of f and of -d1, quantiles of f and d1 on normal and anomalous test
digits, and the least-squares fit f ~ a + b d1).
"""
import os
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from ocsdf import OCSDF
from ocsdf.certify import certified_auroc
from ocsdf.core.distill import kth_distances
from ocsdf.data import load_images

torch.set_num_threads(1)
env = os.environ.get
xtr, ytr, xte, yte = load_images("mnist")[:4]
c = 2
tr = xtr[ytr == c].reshape(-1, 784).astype(np.float32)
te = xte.reshape(-1, 784).astype(np.float32)[:2000]
yt = yte[:2000]
an = yt != c
d1 = kth_distances(torch.from_numpy(te), torch.from_numpy(tr), 1).numpy()
t = time.time()
m = OCSDF(random_state=0, image_shape=(1, 28, 28), n_steps=int(env("STEPS", 3000)),
          bias_lr_factor=float(env("BLF", 1)), lam=float(env("LAM", 100)),
          distance_weight="auto" if env("DW", "auto") == "auto" else float(env("DW")),
          margin="auto" if env("M", "auto") == "auto" else float(env("M"))).fit(tr)
print("fit s", round(time.time() - t, 1), "margin", m.margin_)
f = m.score_samples(te)
for name, s, lip in (("f", f, m.lipschitz_), ("-d1", -d1, 1.0)):
    print(name, "auroc", round(roc_auc_score(an, -s), 4),
          "cert36", round(float(certified_auroc(s[~an], s[an], 36 / 255, lip)), 4))
for lab, sel in (("normal", ~an), ("anomalous", an)):
    print(lab, "f q10/50/90", np.quantile(f[sel], [.1, .5, .9]).round(3),
          "d1 q10/50/90", np.quantile(d1[sel], [.1, .5, .9]).round(2))
print("training rows f q10/50/90", np.quantile(m.score_samples(tr[:2000]), [.1, .5, .9]).round(3))
a, b = np.linalg.lstsq(np.vstack([np.ones_like(d1), d1]).T, f, rcond=None)[0]
print(f"f ~ {a:.3f} + {b:.3f} d1, corr {np.corrcoef(f, d1)[0, 1]:.3f}")
