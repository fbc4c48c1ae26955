"""How the domain guard min(f, sdf_B) ranks held-out rows, and three other guards (issue 21).

The same default models (margin "auto", the bench's subsample and split, seeds 0-4) scored by:
``cur`` the fitted score (``score_samples``: B = box of ``domain_size`` standard deviations
with a ball of radius ``margin_`` around each training row outside it); ``g_rho`` the same
balls with the median nearest-neighbour distance of the training rows as radius; ``g_range``
the smallest box holding [-s, s]^d and every training row, no balls; ``f`` the network alone.
Training is the same for all four (the guard only scores), so the comparison is paired.

    python docs/results/tabular_negatives/guard_study.py oc 5,3 > guard_oc.txt
    python docs/results/tabular_negatives/guard_study.py ad 5,3 > guard_ad.txt

AUROC in %, anomalies positive, mean over the 5 seeds; one torch thread.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from ocsdf import OCSDF
from ocsdf.bench.tabular import available_datasets
from ocsdf.data import load_adbench, protocol_rows

warnings.simplefilter("ignore")  # the DomainWarning of every fit with rows outside B


def box_sdf(z: np.ndarray, low, high) -> np.ndarray:
    """Signed distance to the box [low, high] (per-feature bounds allowed), > 0 inside."""
    inside = np.minimum(high - z, z - low).min(1)
    outside = np.linalg.norm(z - np.clip(z, low, high), axis=1)
    return np.where(inside >= 0, inside, -outside)


def balls_guard(z: np.ndarray, size: float, centres: np.ndarray, radius: float) -> np.ndarray:
    """max(sdf of [-size, size]^d, max_i radius - |z - c_i|)."""
    s = box_sdf(z, -size, size)
    if len(centres):
        nearest = np.array([np.sqrt(((row - centres) ** 2).sum(-1)).min() for row in z])
        s = np.maximum(s, radius - nearest)
    return s


def main(protocol: str, sizes: list[float]) -> None:
    torch.set_num_threads(1)
    means: dict[float, list] = {s: [] for s in sizes}
    for name in available_datasets():
        X, y = load_adbench(name)
        for size in sizes:
            runs = []
            for seed in range(5):
                x_tr, x_te, y_te = protocol_rows(X, y, protocol, seed, max_rows=20000)
                model = OCSDF(random_state=seed, domain_size=size).fit(x_tr)
                scorer = model.scorer_
                z, z_tr = scorer.standardize(x_te), scorer.standardize(x_tr)
                terms = scorer.score_terms(x_te)  # (network, guard); their minimum scores
                f = terms[:, 0]
                centres = z_tr[(np.abs(z_tr) > size).any(1)]
                unique = np.unique(z_tr, axis=0)
                rho = float(np.median(
                    NearestNeighbors(n_neighbors=2).fit(unique).kneighbors(unique)[0][:, 1]))
                low = np.minimum(-size, z_tr.min(0))
                high = np.maximum(size, z_tr.max(0))
                scores = (terms.min(1),
                          np.minimum(f, balls_guard(z, size, centres, rho)),
                          np.minimum(f, box_sdf(z, low, high)), f)
                runs.append([roc_auc_score(y_te, -s) for s in scores])
            mean = 100 * np.mean(runs, 0)
            means[size].append(mean)
            print(f"{protocol} {name:13s} s={size:g}  cur {mean[0]:.1f}  g_rho {mean[1]:.1f}  "
                  f"g_range {mean[2]:.1f}  f {mean[3]:.1f}", flush=True)
    for size in sizes:
        m = np.mean(means[size], 0)
        print(f"{protocol} mean over {len(means[size])} sets, s={size:g}:  cur {m[0]:.2f}  "
              f"g_rho {m[1]:.2f}  g_range {m[2]:.2f}  f {m[3]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1], [float(v) for v in sys.argv[2].split(",")])
