"""``ocsdf bench images``: one class against the others on MNIST or a CIFAR-10 subset.

For each class ``c`` and seed: OCSDF is fitted on training images of class ``c`` (the
estimator's image defaults: a dense 1-Lipschitz network on the flattened pixels, B the pixel box;
``--set network=conv`` for the convolutional one; ``--full`` for the paper's setting), then the
test images of class ``c`` (normal) are ranked against those of the other classes (anomalous):
AUROC, certified AUROC at each l2 budget (paper Proposition 1), and AUROC under an l2 PGD attack
of the same budget on a subset of the test images (normal images pushed down, anomalous ones
up; 3 restarts, step 0.025 eps, as the paper's Figure 3). In the same run, on the same images:
the exact distance to the nearest training image of the class (:class:`~ocsdf.knn.KNNDistance`,
1-Lipschitz, so certified with L = 1: the reference a learned distance has to beat), and
scikit-learn's OneClassSVM and IsolationForest on the flattened pixels (no certificate).
Budgets and radii are l2 norms in [0, 1] pixel units (8/255 ... 72/255).
"""

from __future__ import annotations

import argparse
import functools
import shlex
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from ..certify import certified_auroc, empirical_auroc_under_attack
from ..data import IMAGE_SETS, load_images
from .harness import command_line, run_jobs, study
from .report import write_table

__all__ = ["PAPER_FULL", "PAPER_TABLE3", "full_params", "images_benchmark", "register", "run"]

#: Paper Table 3 (Béthune et al. 2023): mean AUROC over the classes, and certified AUROC at
#: 8, 16, 36, 72 / 255 (MNIST); OneClassSVM on CIFAR-10 as the paper reports it.
PAPER_TABLE3 = {
    "mnist": {"auroc": 95.5, "cert": (93.2, 89.9, 78.4, 57.5)},
    "cifar10": {"auroc": 57.4, "cert": None, "ocsvm": 64.8},
}

DEFAULT_EPS = (8 / 255, 16 / 255, 36 / 255, 72 / 255)

#: The paper's MNIST setting (section 5 and appendix): 784 -> 512 x 3 -> 1, 70 epochs of which 10
#: warm-up, batch 128, T = 16 Newton steps, m = 0.79 in [-1, 1] pixel units (0.395 in [0, 1]),
#: lambda = 200, learning rate decayed linearly from 1e-3 to 1e-6; every training image of the
#: class; no distance supervision (ours). ``(OCSDF parameters, epochs, warm-up epochs)``.
PAPER_FULL = ({"width": 512, "depth": 3, "batch_size": 128, "n_newton_steps": 16,
               "margin": 0.395, "lam": 200.0, "learning_rate": 1e-3, "lr_schedule": "linear",
               "distance_weight": 0.0},
              70, 10)


def _full_text() -> str:
    base, epochs, warmup = PAPER_FULL
    return (f"{epochs} epochs of which {warmup} warm-up, "
            + ", ".join(f"{k}={v}" for k, v in base.items()))


def full_params(n_train: int, params: dict | None = None) -> dict:
    """OCSDF parameters of the paper's setting (:data:`PAPER_FULL`) for ``n_train`` images:
    ``n_steps`` = 70 epochs and ``warmup_steps`` = 10 epochs of ``ceil(n_train / batch)``
    steps; ``params`` (e.g. ``--set``) override any of them."""
    base, epochs, warmup = PAPER_FULL
    out = {**base, **(params or {})}
    per_epoch = -(-int(n_train) // int(out["batch_size"]))
    out.setdefault("n_steps", epochs * per_epoch)
    out.setdefault("warmup_steps", warmup * per_epoch)
    return out


def _eps_label(e: float) -> str:
    return f"{round(e * 255):g}/255"


def _one_run(item: tuple[int, int], dataset: str, data_dir, eps: tuple[float, ...],
             train_rows: int, test_rows: int, attack_rows: int, attack_steps: int,
             restarts: int, params: dict, baselines: tuple[str, ...],
             full: bool = False) -> dict:
    """Fit and evaluate one (class, seed): a dict of AUROCs (fractions) and seconds. ``full``:
    the paper's setting (:func:`full_params`, ``params`` overriding it)."""
    from sklearn.ensemble import IsolationForest
    from sklearn.svm import OneClassSVM

    from ..estimator import OCSDF
    from ..knn import KNNDistance

    cls, seed = item
    x_train, y_train, x_test, y_test = _images(dataset, data_dir)
    rng = np.random.default_rng(seed)
    own = np.flatnonzero(y_train == cls)
    train = x_train[rng.permutation(own)[:train_rows]]
    test_idx = np.sort(rng.permutation(len(x_test))[:test_rows])
    xt, normal = x_test[test_idx], y_test[test_idx] == cls
    flat_train, flat_test = train.reshape(len(train), -1), xt.reshape(len(xt), -1)
    out: dict = {"class": cls, "seed": seed, "n_train": len(train),
                 "n_test_normal": int(normal.sum()), "n_test_anomalous": int((~normal).sum())}

    if full:
        params = full_params(len(train), params)
        out["n_steps"] = params["n_steps"]
    start = time.perf_counter()
    model = OCSDF(random_state=seed, **params).fit(train)
    out["ocsdf_fit_s"] = time.perf_counter() - start
    start = time.perf_counter()
    s = model.score_samples(xt)
    out["ocsdf_score_ms_per_1k"] = 1e6 * (time.perf_counter() - start) / len(xt)
    out["ocsdf_bytes"] = model.scorer_.nbytes
    out["ocsdf_auroc"] = roc_auc_score(normal, s)
    out["ocsdf_lipschitz"] = model.lipschitz_
    cert = certified_auroc(s[normal], s[~normal], np.asarray(eps), model.lipschitz_)
    for e, c in zip(eps, cert):
        out[f"ocsdf_cert_{_eps_label(e)}"] = c
    if attack_rows > 0:  # attack a subset: the first attack_rows normal and anomalous images
        attacked = empirical_auroc_under_attack(
            model, flat_test[normal][:attack_rows], flat_test[~normal][:attack_rows],
            np.asarray(eps), n_iter=attack_steps, restarts=restarts, clip=(0.0, 1.0),
            seed=seed)
        for e, a in zip(eps, attacked):
            out[f"ocsdf_pgd_{_eps_label(e)}"] = a

    if "knn" in baselines:
        start = time.perf_counter()
        knn = KNNDistance(domain="unit", standardize=False).fit(flat_train)
        out["knn_fit_s"] = time.perf_counter() - start
        start = time.perf_counter()
        sk = knn.score_samples(flat_test)
        out["knn_score_ms_per_1k"] = 1e6 * (time.perf_counter() - start) / len(flat_test)
        out["knn_bytes"] = knn.scorer_.nbytes
        out["knn_auroc"] = roc_auc_score(normal, sk)
        for e, c in zip(eps, certified_auroc(sk[normal], sk[~normal], np.asarray(eps), 1.0)):
            out[f"knn_cert_{_eps_label(e)}"] = c
    if "ocsvm" in baselines:
        oc = OneClassSVM(gamma="scale", nu=0.1).fit(flat_train)
        out["ocsvm_auroc"] = roc_auc_score(normal, oc.score_samples(flat_test))
    if "iforest" in baselines:
        forest = IsolationForest(random_state=seed).fit(flat_train)
        out["iforest_auroc"] = roc_auc_score(normal, forest.score_samples(flat_test))
    return out


@functools.lru_cache(maxsize=2)
def _images(dataset: str, data_dir) -> tuple[np.ndarray, ...]:
    """:func:`~ocsdf.data.load_images`, read once per process (every class and seed a worker
    runs shares it; the arrays are only indexed, never written)."""
    return load_images(dataset, data_dir)


def images_benchmark(
    dataset: str = "mnist",
    classes: tuple[int, ...] = tuple(range(10)),
    seeds: int = 2,
    eps: tuple[float, ...] = DEFAULT_EPS,
    train_rows: int = 2000,
    test_rows: int = 2000,
    attack_rows: int = 100,
    attack_steps: int = 50,
    restarts: int = 3,
    params: dict | None = None,
    baselines: tuple[str, ...] = ("knn", "ocsvm", "iforest"),
    jobs: int = 1,
    data_dir=None,
    progress: bool = True,
    finished=None,
    full: bool = False,
) -> list[dict]:
    """One dict per (class, seed), in order of ``classes`` then seeds (see the module text).

    ``train_rows`` training images of the class (a random subset per seed), ``test_rows`` test
    images (a random subset per seed, all classes), ``attack_rows`` normal and as many anomalous
    test images attacked. ``params``: OCSDF parameters over the defaults (over the paper's
    setting with ``full``, :func:`full_params`). ``finished(i, row)`` is called as each run ends
    (to write partial tables).
    """
    worker = functools.partial(
        _one_run, dataset=dataset, data_dir=data_dir, eps=tuple(eps), train_rows=train_rows,
        test_rows=test_rows, attack_rows=attack_rows, attack_steps=attack_steps,
        restarts=restarts, params=dict(params or {}), baselines=tuple(baselines), full=full)
    items = [(c, s) for c in classes for s in range(seeds)]
    return run_jobs(items, worker, n_jobs=jobs, threads=1, finished=finished,
                    progress=progress, desc=f"bench images {dataset}")


def summarise(runs: list[dict], eps: tuple[float, ...], dataset: str) -> list[dict]:
    """Per class mean over seeds (AUROC in %), a mean row over the classes, and the paper's
    Table 3 row."""
    keys = [k for k in runs[0] if k.endswith("auroc") or "_cert_" in k or "_pgd_" in k]
    rows = []
    for cls in sorted({r["class"] for r in runs}):
        mine = [r for r in runs if r["class"] == cls]
        row = {"class": str(cls), "seeds": len(mine)}
        for k in keys:
            vals = [100 * r[k] for r in mine if k in r]
            row[k] = float(np.mean(vals)) if vals else None
        for k in ("ocsdf_fit_s", "ocsdf_score_ms_per_1k", "ocsdf_bytes", "knn_fit_s",
                  "knn_score_ms_per_1k", "knn_bytes"):
            vals = [r[k] for r in mine if k in r]
            row[k] = float(np.mean(vals)) if vals else None
        row["ocsdf_lipschitz"] = float(max(r["ocsdf_lipschitz"] for r in mine))
        rows.append(row)
    mean = {"class": "mean", "seeds": rows[0]["seeds"]}
    for k in [*keys, "ocsdf_fit_s", "ocsdf_score_ms_per_1k", "ocsdf_bytes", "knn_fit_s",
              "knn_score_ms_per_1k", "knn_bytes"]:
        vals = [r[k] for r in rows if r.get(k) is not None]
        mean[k] = float(np.mean(vals)) if vals else None
    mean["ocsdf_lipschitz"] = float(max(r["ocsdf_lipschitz"] for r in rows))
    rows.append(mean)
    paper = PAPER_TABLE3.get(dataset)
    if paper is not None:
        ref = {"class": "paper Table 3 (mean)", "ocsdf_auroc": paper["auroc"]}
        if paper.get("cert") is not None and tuple(eps) == DEFAULT_EPS:
            for e, v in zip(eps, paper["cert"]):
                ref[f"ocsdf_cert_{_eps_label(e)}"] = v
        if paper.get("ocsvm") is not None:
            ref["ocsvm_auroc"] = paper["ocsvm"]
        rows.append(ref)
    return rows


def _plot(rows: list[dict], eps: tuple[float, ...], path) -> None:
    """Mean certified and attacked AUROC against the budget (OCSDF, and the 1-NN reference)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean = next(r for r in rows if r["class"] == "mean")
    x = [0.0, *eps]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for key, label, style in (("ocsdf_cert", "OCSDF certified", "-o"),
                              ("ocsdf_pgd", "OCSDF under PGD", "--o"),
                              ("knn_cert", "1-NN certified (L = 1)", "-s")):
        ys = [mean.get(f"{key}_{_eps_label(e)}") for e in eps]
        base = mean["ocsdf_auroc"] if key.startswith("ocsdf") else mean.get("knn_auroc")
        if base is None or any(v is None for v in ys):
            continue
        ax.plot([v * 255 for v in x], [base, *ys], style, label=label)
    ax.set_xlabel("l2 budget eps (x 1/255, pixels in [0, 1])")
    ax.set_ylabel("mean AUROC over classes (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ocsdf bench images``."""
    p = subparsers.add_parser(
        "images", help="one class vs the others on MNIST / a CIFAR-10 subset, with certificates",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--dataset", default="mnist", choices=sorted(IMAGE_SETS))
    p.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9",
                   help="comma-separated classes (default: all ten)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per class (2)")
    p.add_argument("--eps", default="8,16,36,72",
                   help="l2 budgets in units of 1/255 (pixels in [0, 1]); default 8,16,36,72")
    p.add_argument("--train-rows", type=int, default=None,
                   help="training images of the class per run (2000; with --full all of them)")
    p.add_argument("--full", action="store_true",
                   help="the paper's setting: 512 x 3, 70 epochs (10 warm-up), batch 128, T = 16, "
                   "m = 0.395, lambda = 200, lr 1e-3 -> 1e-6 linearly, every training image of "
                   "the class (for a GPU: about 91 s a digit on an H200); --set overrides it")
    p.add_argument("--test-rows", type=int, default=2000, help="test images per run (2000)")
    p.add_argument("--attack-rows", type=int, default=100,
                   help="normal and anomalous test images attacked per run (100 each; 0: no "
                   "attack, no ocsdf_pgd_* columns)")
    p.add_argument("--attack-steps", type=int, default=50, help="PGD iterations (50)")
    p.add_argument("--restarts", type=int, default=3, help="PGD restarts (3)")
    p.add_argument("--set", action="append", default=None, metavar="NAME=VALUE",
                   help="an OCSDF parameter for every fit, e.g. --set n_steps=500 (repeatable)")
    p.add_argument("--baselines", default="knn,ocsvm,iforest",
                   help="comma-separated from knn, ocsvm, iforest ('' for none)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (1)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out-dir", default="docs/results")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the study and write ``images_DATASET.{md,csv,json}`` (+ ``_runs``, + PNG), the
    tables rewritten as each run finishes."""
    from pathlib import Path

    classes = tuple(int(c) for c in args.classes.split(",") if c.strip())
    eps = tuple(float(e) / 255 for e in args.eps.split(",") if e.strip())
    baselines = tuple(b for b in args.baselines.split(",") if b.strip())
    bad = set(baselines) - {"knn", "ocsvm", "iforest"}
    if bad:
        raise ValueError(f"--baselines: unknown {sorted(bad)}; choose from knn, ocsvm, iforest")
    from .tabular import _parse_set

    params = dict(_parse_set(item) for item in args.set or ())
    if args.train_rows is None:
        args.train_rows = 10**9 if args.full else 2000
    name = f"images_{args.dataset}" + ("_full" if args.full else "")
    cmd = " ".join([command_line("ocsdf bench images", args,
                                 ["dataset", "classes", "seeds", "eps", "train_rows",
                                  "test_rows", "attack_rows", "attack_steps", "restarts",
                                  "baselines", "jobs", "data_dir", "out_dir", "full"],
                                 omit={"train_rows": 10**9}),
                    *(shlex.join(["--set", item]) for item in args.set or ())])
    with study(args) as run_:
        done: list[dict] = []

        def write(rows: list[dict]) -> Path:
            table = summarise(rows, eps, args.dataset)
            notes = (
                f"{IMAGE_SETS[args.dataset][1]}. Per class and seed: OCSDF fitted on "
                f"{args.train_rows} training images of the class (random per seed; all when "
                f"fewer), scored on {args.test_rows} random test images (the class = normal, "
                "the other classes = anomalous). AUROC in %, mean over seeds. "
                "`ocsdf_cert_E`: certified AUROC at l2 budget E (pixels in [0, 1]; Proposition "
                "1 with the network's sound bound `ocsdf_lipschitz`, FFT bound of each "
                "convolution x dense spectral norms). "
                + (f"`ocsdf_pgd_E`: AUROC under l2 PGD ({args.attack_steps} steps of 0.025 E, "
                   f"{args.restarts} restarts, pixels clipped to [0, 1]) on the first "
                   f"{args.attack_rows} normal and anomalous test images of the run (never "
                   "below the certified value up to that subset). " if args.attack_rows > 0
                   else "PGD: no attack (--attack-rows 0). ")
                + "`knn_*`: minus the exact l2 distance to the nearest training image of the "
                "class (1-Lipschitz: certified with L = 1, no training). OneClassSVM "
                "(gamma='scale', nu=0.1) and IsolationForest on flattened pixels: no "
                "certificate. `*_score_ms_per_1k`: milliseconds to score 1,000 test images "
                "(score_samples, float64, one thread); `*_bytes`: what the model keeps to score "
                "(OCSDF: its saved weights and standardisation; 1-NN: the training images, "
                "float64). OCSDF parameters: "
                + (f"the paper's setting ({_full_text()}; `n_steps` per run in the runs table)"
                   if args.full else "defaults")
                + f"{' with ' + str(params) if params else ''}. "
                f"Runs done: {len(rows)}; wall {run_.wall_s / 60:.1f} min with {args.jobs} "
                "worker(s), 1 torch thread each."
            )
            path = write_table(table, name, args.out_dir,
                               title=f"Images: one class vs the rest ({args.dataset})",
                               notes=notes, command=cmd)
            write_table(rows, f"{name}_runs", args.out_dir, title=f"{name}: every run",
                        command=cmd)
            _plot(table, eps, Path(args.out_dir) / f"{name}.png")
            return path

        def finished(_i: int, row: dict) -> None:
            done.append(row)
            write(sorted(done, key=lambda r: (r["class"], r["seed"])))

        runs = images_benchmark(args.dataset, classes, args.seeds, eps, args.train_rows,
                                args.test_rows, args.attack_rows, args.attack_steps,
                                args.restarts, params, baselines, args.jobs, args.data_dir,
                                progress=not args.quiet, finished=finished, full=args.full)
        path = write(runs)
    print(f"wrote {path}")
    return 0
