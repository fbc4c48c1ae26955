"""A label-free choice between a smooth and a tight model per data set (issue 21, one-class).

The one-class tables want a tight network (``negative_spread=0.5``) on some sets and the default
(smooth) one on others; a perfect per-set choice between the two would reach 93.08 % against
KNN's 92.57 % (the bench's runs ``../tabular_oc_runs.csv`` and ``spread0.5/``). Can the
training rows alone tell which one to use?

Per set and seed 0-4 (the bench's subsample and one-class split, ``protocol_rows``), for each
of the two settings (``smooth``: defaults; ``tight``: ``negative_spread=0.5``):

1. fit on a random 80 % of the training rows (``default_rng([seed, 11])``), score the other
   20 % (validation rows, normal) and three reference samples built from the 80 % only,
   2000 rows each:

   - ``marg``: product of the marginals (every column resampled independently);
   - ``part``: validation rows with a quarter of their features (at least one) replaced by the
     same features of random fitting rows (local corruptions);
   - ``gauss``: Gaussian with the fitting rows' mean and covariance;

   and record the proxy ``AUROC(reference against validation rows)`` (higher: the model tells
   the held-out normal rows from made-up rows better; no labels used);
2. fit on all the training rows and record the test AUROC (held-out normal rows against the
   anomalies, the bench's evaluation).

Rows of ``select_runs.csv``: set, seed, setting, the three proxies, test AUROC (fractions).
The choice rule per proxy (the setting with the higher proxy, summed over the 5 seeds, ties to
the default) and its mean test AUROC are printed by ``select_study.py --report``.

    python docs/results/tabular_negatives/select_study.py            # fits, ~10 min, 2 cores
    python docs/results/tabular_negatives/select_study.py --report > select.md
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from study_runs import run_sets, seed_rows

HERE = Path(__file__).resolve().parent
RUNS = HERE / "select_runs.csv"
SETTINGS = {"smooth": {}, "tight": {"negative_spread": 0.5}}
PROXIES = ("marg", "part", "gauss")
N_REF = 2000


def references(fit: np.ndarray, val: np.ndarray, rng: np.random.Generator
               ) -> dict[str, np.ndarray]:
    """The three reference samples ``(N_REF, d)`` of the module docstring, raw units."""
    n, d = fit.shape
    marg = np.stack([fit[rng.integers(n, size=N_REF), j] for j in range(d)], axis=1)
    part = val[rng.integers(len(val), size=N_REF)].copy()
    k = max(1, d // 4)
    donors = fit[rng.integers(n, size=N_REF)]
    for i in range(N_REF):
        cols = rng.choice(d, size=k, replace=False)
        part[i, cols] = donors[i, cols]
    cov = np.cov(fit, rowvar=False).reshape(d, d)
    gauss = rng.multivariate_normal(fit.mean(0), cov, size=N_REF, method="eigh")
    return {"marg": marg, "part": part, "gauss": gauss}


def one_set(name: str) -> list[dict]:
    from ocsdf import OCSDF

    rows = []
    for seed, x_tr, x_te, y_te in seed_rows(name, "oc"):
        rng = np.random.default_rng([seed, 11])
        perm = rng.permutation(len(x_tr))
        n_val = max(2, len(x_tr) // 5)
        val, fit = x_tr[perm[:n_val]], x_tr[perm[n_val:]]
        refs = references(fit, val, rng)
        labels = np.r_[np.zeros(len(val)), np.ones(N_REF)]
        for setting, params in SETTINGS.items():
            small = OCSDF(random_state=seed, **params).fit(fit)
            s_val = small.score_samples(val)
            row = {"set": name, "seed": seed, "setting": setting}
            for p in PROXIES:
                row[p] = roc_auc_score(labels, -np.r_[s_val, small.score_samples(refs[p])])
            full = OCSDF(random_state=seed, **params).fit(x_tr)
            row["test"] = roc_auc_score(y_te, -full.score_samples(x_te))
            rows.append(row)
    return rows


def run() -> None:
    run_sets(one_set, RUNS, ["set", "seed", "setting", *PROXIES, "test"])


def report() -> None:
    with RUNS.open() as fh:
        rows = list(csv.DictReader(fh))
    sets = sorted({r["set"] for r in rows})
    get = {(r["set"], int(r["seed"]), r["setting"]): r for r in rows}

    def mean_over(setting: str, key: str, name: str) -> float:
        return float(np.mean([float(get[(name, s, setting)][key]) for s in range(5)]))

    test = {st: {n: 100 * mean_over(st, "test", n) for n in sets} for st in SETTINGS}
    print("| rule | mean test AUROC % | sets choosing tight |")
    print("|---|---:|---:|")
    for st in SETTINGS:
        print(f"| always {st} | {np.mean(list(test[st].values())):.2f} | |")
    oracle = np.mean([max(test["smooth"][n], test["tight"][n]) for n in sets])
    print(f"| perfect choice (labels) | {oracle:.2f} | "
          f"{sum(test['tight'][n] > test['smooth'][n] for n in sets)} |")
    table = []
    for p in PROXIES:
        pick = {n: "tight" if mean_over("tight", p, n) > mean_over("smooth", p, n) else "smooth"
                for n in sets}
        chosen = np.mean([test[pick[n]][n] for n in sets])
        print(f"| proxy `{p}` | {chosen:.2f} | {sum(v == 'tight' for v in pick.values())} |")
        table.append(pick)
    print()
    print("| set | smooth | tight | " + " | ".join(f"{p} smooth / tight" for p in PROXIES) + " |")
    print("|---|---:|---:|" + "---:|" * len(PROXIES))
    for n in sets:
        cells = [f"{100 * mean_over('smooth', p, n):.1f} / {100 * mean_over('tight', p, n):.1f}"
                 for p in PROXIES]
        print(f"| {n} | {test['smooth'][n]:.1f} | {test['tight'][n]:.1f} | "
              + " | ".join(cells) + " |")


if __name__ == "__main__":
    report() if "--report" in sys.argv else run()
