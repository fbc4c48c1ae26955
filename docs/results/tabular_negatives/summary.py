"""The summary table of README.md: every run folder here against the default tables.

    python docs/results/tabular_negatives/summary.py > docs/results/tabular_negatives/summary.md

Per folder and protocol: mean over the 19 sets of the 5-seed mean AUROC (%) of "OCSDF m=auto",
its difference to the same sets in ``../tabular_{ad,oc}_runs.csv`` (the defaults, same seeds,
subsamples and splits), and on how many sets it is higher / lower. Then the ceiling of a
per-set choice: per protocol, the mean over the 19 sets of the better of two runs (the best
pair, defaults included) and of the best run, chosen per set by its labels -- what a perfect
label-free selector could at most reach.
"""

from __future__ import annotations

import csv
from itertools import combinations
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def aurocs(folder: Path, protocol: str) -> dict[str, float]:
    """5-seed mean AUROC (%) of the label-free OCSDF per data set, or {} without a table."""
    path = folder / f"tabular_{protocol}_runs.csv"
    if not path.is_file():
        return {}
    with path.open() as fh:
        return {r["dataset"]: 100 * float(r["auroc"]) for r in csv.DictReader(fh)
                if r["method"] == "OCSDF m=auto"}


def main() -> None:
    base = {p: aurocs(HERE.parent, p) for p in ("ad", "oc")}
    print("| run | AD mean | AD diff | AD higher / lower | one-class mean | one-class diff "
          "| one-class higher / lower |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| defaults (`../tabular_*.md`) | {np.mean(list(base['ad'].values())):.2f} | | "
          f"| {np.mean(list(base['oc'].values())):.2f} | | |")
    for folder in sorted(p for p in HERE.iterdir() if p.is_dir()):
        cells = []
        for p in ("ad", "oc"):
            run = aurocs(folder, p)
            sets = [s for s in run if s in base[p]]
            if not sets:
                cells += ["", "", ""]
                continue
            diff = np.array([run[s] - base[p][s] for s in sets])
            cells += [f"{np.mean([run[s] for s in sets]):.2f}", f"{diff.mean():+.2f}",
                      f"{(diff > 0).sum()} / {(diff < 0).sum()}"]
        if any(cells):  # the image runs (mnist_*) have no tabular table
            print(f"| `{folder.name}` | " + " | ".join(cells) + " |")
    print()
    print("| protocol | runs | best single run | best per-set pair (oracle) | best per-set run "
          "(oracle) |")
    print("|---|---:|---:|---:|---:|")
    for p in ("ad", "oc"):
        runs = {"defaults": base[p]}
        for folder in sorted(q for q in HERE.iterdir() if q.is_dir()):
            run = aurocs(folder, p)
            if set(run) == set(base[p]):
                runs[folder.name] = run
        sets = sorted(base[p])
        single = max((np.mean([r[s] for s in sets]), name) for name, r in runs.items())
        pair = max((np.mean([max(runs[a][s], runs[b][s]) for s in sets]), a, b)
                   for a, b in combinations(runs, 2))
        every = np.mean([max(r[s] for r in runs.values()) for s in sets])
        print(f"| {'AD' if p == 'ad' else 'one-class'} | {len(runs)} | {single[0]:.2f} "
              f"(`{single[1]}`) | {pair[0]:.2f} (`{pair[1]}` or `{pair[2]}`) | {every:.2f} |")


if __name__ == "__main__":
    main()
