"""``ocsdf bench thresholds``: does the false-positive rate a user asks for hold on new data?

For each data set (one-class split by seed: half the normal rows to train, the other half and
all anomalies to test, :func:`ocsdf.data.oc_split`) and each target false-positive rate ``t``,
four thresholds are compared on the test rows:

* ``OCSDF conformal``: ``OCSDF(fpr=t)``: trained on 80 % of the training rows, threshold from
  the split-conformal rule on the other 20 % (:func:`ocsdf.estimator.conformal_threshold`).
* ``OCSDF train-quantile``: the same network, threshold = the ``t``-quantile of its scores on
  the rows it was trained on (the ``contamination=t`` rule, as PyOD's ``threshold_``).
* ``IForest contamination``: scikit-learn's ``IsolationForest(contamination=t)`` fitted on the
  same 80 % (its threshold is the ``t``-quantile of its own training scores).
* ``IForest conformal``: the same forest, threshold from the same split-conformal rule on the
  same 20 %, so that the two conformal rows differ only by the score.

Reported per (data set, target, method): the measured test FPR (mean over seeds), the binomial
99 % interval of the FPR of ``n`` rows flagged independently with probability ``t``, the exact
99 % interval of a split-conformal FPR (beta-binomial, see :func:`conformal_fpr_interval`), how
many runs fall inside each, and the recall of the anomalies at that threshold.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
from scipy import stats
from sklearn.ensemble import IsolationForest
from sklearn.utils import check_random_state

from ..core.runtime import torch_device
from ..data import ADBENCH_FILES, oc_split
from ..estimator import OCSDF, conformal_threshold
from .harness import Study, command_line, rows_value, study, timed
from .report import write_table

__all__ = [
    "DEFAULT_DATASETS",
    "DEFAULT_FPRS",
    "METHODS",
    "binomial_fpr_interval",
    "conformal_fpr_interval",
    "register",
    "run",
    "threshold_runs",
    "thresholds_benchmark",
    "summarise",
    "findings",
]

DEFAULT_DATASETS = ("cardio", "thyroid", "satimage-2")
DEFAULT_FPRS = (0.01, 0.05, 0.1)
METHODS = ("OCSDF conformal", "OCSDF train-quantile", "IForest contamination",
           "IForest conformal")
CONFORMAL = ("OCSDF conformal", "IForest conformal")
LEVEL = 0.99


def binomial_fpr_interval(target: float, n_test: int, level: float = LEVEL
                          ) -> tuple[float, float]:
    """Central ``level`` interval of ``#flagged / n_test`` when each of ``n_test`` normal rows is
    flagged independently with probability ``target`` (a threshold at the exact quantile)."""
    lo, hi = stats.binom.interval(level, n_test, target)
    return float(lo) / n_test, float(hi) / n_test


def conformal_fpr_interval(target: float, n_cal: int, n_test: int, level: float = LEVEL
                           ) -> tuple[float, float]:
    """Central ``level`` interval of the test FPR of a split-conformal threshold.

    With ``k = floor(target (n_cal + 1))`` the threshold is the ``k``-th smallest of ``n_cal``
    calibration scores; for ``n_test`` new rows exchangeable with them (continuous scores), the
    number that fall below it is exactly BetaBinomial(``n_test``, ``k``, ``n_cal + 1 - k``): the
    binomial spread plus the randomness of the calibration set. Mean ``k / (n_cal + 1) <= t``.
    """
    k = int(np.floor(target * (n_cal + 1) + 1e-9))
    if k == 0:
        return 0.0, 0.0
    lo, hi = stats.betabinom.interval(level, n_test, k, n_cal + 1 - k)
    return float(lo) / n_test, float(hi) / n_test


def _ocsdf_params(n_steps: int | None) -> dict:
    """``--steps`` with the default warm-up share (a tenth of the steps)."""
    return {} if n_steps is None else {"n_steps": int(n_steps), "warmup_steps": n_steps // 10}


def threshold_runs(
    dataset: str,
    seed: int = 0,
    fprs: Sequence[float] = DEFAULT_FPRS,
    n_steps: int | None = None,
    data_dir: str | None = None,
    ocsdf_params: dict | None = None,
    device: str = "cpu",
) -> list[dict]:
    """One seed on one data set: a dict per (target, method) with the measured FPR and recall.

    ``ocsdf_params`` overrides OCSDF's hyper-parameters (``n_steps`` too); the network does
    not depend on the target (only its threshold does), so it is trained once per seed.
    ``device``: torch device for training and scoring OCSDF ("cpu", "cuda", "cuda:1", ...);
    results are identical in format (a ``"device"`` in ``ocsdf_params`` wins).
    """
    torch_device(device)
    train, test_normal, anomalies = oc_split(dataset, seed=seed, data_dir=data_dir)
    params = {"device": device, **_ocsdf_params(n_steps), **(ocsdf_params or {})}
    # The table's protocol holds out exactly 20 % (OCSDF's "auto" may hold out more).
    model, fit_s = timed(OCSDF(fpr=float(fprs[0]), calibration_size=0.2, random_state=seed,
                               **params).fit, train)
    # The same 80 / 20 split the estimator drew (same seed, same rule), checked below.
    inner_seed = int(check_random_state(seed).randint(2**31 - 1))
    fit_rows, cal_rows = model._calibration_split(np.asarray(train, dtype=np.float64), inner_seed)
    if not np.allclose(np.sort(model.score_samples(cal_rows)), model.calibration_scores_):
        raise RuntimeError("could not reproduce OCSDF's calibration split")
    n_cal, n_test, n_anom = len(cal_rows), len(test_normal), len(anomalies)

    s_fit = model.score_samples(fit_rows)
    s_norm, s_anom = model.score_samples(test_normal), model.score_samples(anomalies)
    p_norm, p_anom = model.predict_pvalue(test_normal), model.predict_pvalue(anomalies)

    runs = []

    def add(method: str, target: float, flag_normal, flag_anom, threshold: float) -> None:
        runs.append({"dataset": dataset, "seed": seed, "target": target, "method": method,
                     "fpr": float(np.mean(flag_normal)), "recall": float(np.mean(flag_anom)),
                     "threshold": threshold, "n_cal": n_cal, "n_test": n_test,
                     "n_anomalies": n_anom, "ocsdf_fit_s": fit_s})

    for t in fprs:
        t = float(t)
        # (a) OCSDF(fpr=t): predict(X, alpha=t) is predict(X) of the model fitted with fpr=t.
        add("OCSDF conformal", t, p_norm <= t, p_anom <= t,
            conformal_threshold(model.calibration_scores_, t))
        # (a') the same network with the training-quantile (contamination) rule.
        q = float(np.percentile(s_fit, 100.0 * t))
        add("OCSDF train-quantile", t, s_norm < q, s_anom < q, q)
        # (b) IsolationForest(contamination=t) on the same 80 %; (c) the same forest, conformal.
        forest = IsolationForest(contamination=t, random_state=seed).fit(fit_rows)
        add("IForest contamination", t, forest.predict(test_normal) == -1,
            forest.predict(anomalies) == -1, float(forest.offset_))
        c = conformal_threshold(np.sort(forest.score_samples(cal_rows)), t)
        add("IForest conformal", t, forest.score_samples(test_normal) < c,
            forest.score_samples(anomalies) < c, c)
    return runs


def _judge(run: dict, level: float) -> dict:
    """``run`` plus whether its FPR lies in / above the binomial and conformal intervals."""
    t, n_test = run["target"], run["n_test"]
    b_lo, b_hi = binomial_fpr_interval(t, n_test, level)
    out = {**run, "b_lo": b_lo, "b_hi": b_hi, "in_b": b_lo <= run["fpr"] <= b_hi,
           "above_b": run["fpr"] > b_hi, "c_lo": None, "c_hi": None, "in_c": None}
    if run["method"] in CONFORMAL:
        c_lo, c_hi = conformal_fpr_interval(t, run["n_cal"], n_test, level)
        out.update(c_lo=c_lo, c_hi=c_hi, in_c=c_lo <= run["fpr"] <= c_hi)
    return out


def _count(rs: list[dict], key: str) -> str:
    return f"{sum(bool(r[key]) for r in rs)}/{len(rs)}"


def summarise(runs: Sequence[dict], level: float = LEVEL) -> list[dict]:
    """Table rows: one per (data set, target, method), means over seeds, with both intervals;
    then one per (target, method) over every data set and seed (data set "(all)")."""
    judged = [_judge(r, level) for r in runs]
    order = {m: i for i, m in enumerate(METHODS)}
    datasets = list(dict.fromkeys(r["dataset"] for r in judged))
    targets = sorted({r["target"] for r in judged})
    methods = sorted({r["method"] for r in judged}, key=lambda m: order.get(m, 99))
    rows = []
    for dataset in [*datasets, ALL]:
        for target in targets:
            for method in methods:
                rs = [r for r in judged if r["target"] == target and r["method"] == method
                      and dataset in (ALL, r["dataset"])]
                if rs:
                    rows.append(_row(dataset, target, method, rs))
    return rows


ALL = "(all)"


def _row(dataset: str, target: float, method: str, rs: list[dict]) -> dict:
    fprs = np.array([r["fpr"] for r in rs])
    one = dataset != ALL  # a single data set: one n_test, one n_cal, one pair of intervals
    conformal = method in CONFORMAL
    return {
        "dataset": dataset,
        "target FPR": target,
        "method": method,
        "test FPR (mean)": float(fprs.mean()),
        "test FPR (min-max)": f"{fprs.min():.3f}-{fprs.max():.3f}",
        "binomial 99% interval": f"{rs[0]['b_lo']:.3f}-{rs[0]['b_hi']:.3f}" if one else None,
        "runs in binomial": _count(rs, "in_b"),
        "runs above binomial": _count(rs, "above_b"),
        "conformal 99% interval": (f"{rs[0]['c_lo']:.3f}-{rs[0]['c_hi']:.3f}"
                                   if one and conformal else None),
        "runs in conformal": _count(rs, "in_c") if conformal else None,
        "recall (mean)": float(np.mean([r["recall"] for r in rs])),
        "n test normal / anomalies / cal": (
            f"{rs[0]['n_test']} / {rs[0]['n_anomalies']} / {rs[0]['n_cal']}" if one else None),
    }


def findings(rows: Sequence[dict]) -> str:
    """One line per method from the "(all)" rows: mean FPR against each target, runs above the
    binomial interval, runs inside the exact conformal interval, mean recall."""
    lines = []
    for method in METHODS:
        rs = [r for r in rows if r["dataset"] == ALL and r["method"] == method]
        if not rs:
            continue
        parts = []
        for r in rs:
            part = (f"t={r['target FPR']:g}: FPR {r['test FPR (mean)']:.4f}, recall "
                    f"{r['recall (mean)']:.3f}, above binomial {r['runs above binomial']}")
            if r["runs in conformal"] is not None:
                part += f", in conformal {r['runs in conformal']}"
            parts.append(part)
        lines.append(f"- {method}: " + "; ".join(parts) + ".")
    return "\n".join(lines)


def thresholds_benchmark(
    datasets: Sequence[str] = DEFAULT_DATASETS,
    fprs: Sequence[float] = DEFAULT_FPRS,
    seeds: int = 3,
    n_steps: int | None = None,
    data_dir: str | None = None,
    ocsdf_params: dict | None = None,
    verbose: bool = False,
    device: str = "cpu",
) -> tuple[list[dict], list[dict]]:
    """Run every (data set, seed); return ``(table rows, per-run dicts)``.

    ``device``: torch device for training and scoring OCSDF ("cpu", "cuda", "cuda:1", ...);
    results are identical in format. A bad device, or CUDA asked for and absent, raises
    ``ValueError`` before any work.
    """
    torch_device(device)
    runs: list[dict] = []
    for dataset in datasets:
        for seed in range(seeds):
            rs, seconds = timed(threshold_runs, dataset, seed, fprs, n_steps, data_dir,
                                ocsdf_params, device)
            runs += rs
            if verbose:
                fp = ", ".join(f"{r['method']}@{r['target']:g}: {r['fpr']:.3f}" for r in rs
                               if r["method"] == "OCSDF conformal")
                print(f"{dataset} seed {seed} ({seconds:.0f} s): FPR {fp}", flush=True)
    return summarise(runs), runs


def calibration_size_runs(
    dataset: str,
    seed: int = 0,
    sizes: Sequence[float] = (0.1, 0.2, 0.3, 0.5),
    fprs: Sequence[float] = DEFAULT_FPRS,
    data_dir: str | None = None,
    ocsdf_params: dict | None = None,
    device: str = "cpu",
) -> list[dict]:
    """The calibration-size trade-off on one split: one dict per (size, target FPR).

    For each ``calibration_size`` ``s``, ``OCSDF(fpr=..., calibration_size=s)`` trains on
    ``1 - s`` of the training half and calibrates on ``s``: more calibration rows make the
    test FPR steadier (a narrower conformal interval), fewer training rows may cost AUROC.
    Keys: dataset, seed, size, target, fpr, recall, auroc, n_cal, n_train, conformal_lo/hi,
    fit_s. ``device``: torch device for training and scoring OCSDF ("cpu", "cuda", ...);
    results are identical in format (a ``"device"`` in ``ocsdf_params`` wins).
    """
    from sklearn.metrics import roc_auc_score

    torch_device(device)
    train, test_normal, anomalies = oc_split(dataset, seed=seed, data_dir=data_dir)
    out = []
    for size in sizes:
        model, fit_s = timed(OCSDF(fpr=float(fprs[0]), calibration_size=float(size),
                                   random_state=seed,
                                   **{"device": device, **(ocsdf_params or {})}).fit, train)
        s_norm, s_anom = model.score_samples(test_normal), model.score_samples(anomalies)
        auroc = float(roc_auc_score(np.r_[np.zeros(len(s_norm)), np.ones(len(s_anom))],
                                    -np.r_[s_norm, s_anom]))
        n_cal = len(model.calibration_scores_)
        for t in fprs:
            lo, hi = conformal_fpr_interval(float(t), n_cal, len(test_normal))
            out.append({"dataset": dataset, "seed": seed, "size": float(size), "target": float(t),
                        "fpr": float(np.mean(model.predict(test_normal, alpha=t) == -1)),
                        "recall": float(np.mean(model.predict(anomalies, alpha=t) == -1)),
                        "auroc": auroc, "n_cal": n_cal, "n_train": len(train) - n_cal,
                        "conformal_lo": lo, "conformal_hi": hi, "fit_s": fit_s})
    return out


def summarise_calibration_sizes(runs: Sequence[dict]) -> list[dict]:
    """Mean over seeds per (dataset, target, size): AUROC, recall, test FPR and its spread."""
    import pandas as pd

    df = pd.DataFrame(list(runs))
    rows = []
    for (dataset, target, size), g in df.groupby(["dataset", "target", "size"], sort=True):
        rows.append({"dataset": dataset, "target_fpr": target, "calibration_size": size,
                     "n_train / n_cal": f"{int(g['n_train'].iloc[0])} / {int(g['n_cal'].iloc[0])}",
                     "auroc": g["auroc"].mean(), "recall": g["recall"].mean(),
                     "test_fpr_mean": g["fpr"].mean(),
                     "test_fpr_sd": g["fpr"].std(ddof=1) if len(g) > 1 else float("nan"),
                     "conformal_99": f"{g['conformal_lo'].mean():.3f}-"
                                     f"{g['conformal_hi'].mean():.3f}",
                     "seeds": len(g)})
    return rows


CALIBRATION_NOTES = """\
**Calibration size** (`OCSDF(fpr=t, calibration_size=s)`): the split-conformal threshold is
computed on a held-out share `s` of the training rows, which the network does not train on.
Same one-class splits as the main table (seed = split); for each `s` one OCSDF is trained on
`1 - s` of the training half and calibrated on `s`. `auroc`: held-out normal rows vs anomalies
(threshold-free: what the smaller training set costs); `recall`: anomalies flagged at target
`t`; `test_fpr_mean` / `test_fpr_sd`: mean and spread over seeds of the share of held-out normal
rows flagged; `conformal_99`: central 99 % interval of that share for one calibration set
(BetaBinomial, see the main table), which narrows as `n_cal` grows.
"""


DEFAULT_NOTES = """\
The default rule of each detector, with no threshold chosen by the user: OCSDF's
`contamination="auto"` flags `f < 0` (outside the learned boundary); scikit-learn's
`IsolationForest()` flags by its own `contamination="auto"` offset. Both are fitted on a random
half of the normal rows (`ocsdf.data.oc_split`, the one-class protocol) and judged on the other
half (**fpr**: share of held-out normal rows flagged) and on every anomaly (**recall**: share
flagged). **OCSDF train flagged**: share of its own training rows OCSDF flags. Percent, mean
over seeds; the "(all)" row averages the data sets. For a stated rate use `fpr=` (conformal,
`thresholds.md`).
"""

NOTES = """\
**Protocol.** One-class split per seed: a random half of the normal rows to train on, the other
half of the normal rows and all anomalies to test. OCSDF is fitted with `fpr=t`, which trains on
a random 80 % of the training half and calibrates on the other 20 %; the two IsolationForest rows
use a forest (scikit-learn defaults, `random_state=seed`) fitted on the same 80 % rows, and the
conformal one calibrates on the same 20 % rows, so the two conformal rows differ only by the
score. "train-quantile" / "contamination" thresholds are the `t`-quantile of the model's own
scores on the rows it was trained on (scikit-learn's `contamination`, PyOD's `threshold_`).
The network does not depend on `t` (only the offset does), so one OCSDF is trained per seed and
`predict(X, alpha=t)` (identical to `predict(X)` of the model fitted with `fpr=t`) is used.
Test FPR = share of held-out normal rows flagged; recall = share of anomalies flagged.

**Intervals.** "binomial 99 %" is where the FPR of the test rows falls if each is flagged
independently with probability exactly `t`. A split-conformal FPR varies more: conditional on
the calibration set the flag rate is `F(c_k)`, itself random (Beta(k, n_cal + 1 - k), mean
`k/(n_cal+1) <= t`); the exact law of the number of flagged test rows is
BetaBinomial(n_test, k, n_cal + 1 - k), whose central 99 % interval is "conformal 99 %". With
a small calibration set (cardio: 165 rows) this interval is much wider than the binomial one,
and at `t = 0.01` the rule is conservative (k = floor(0.01 x 166) = 1: the expected FPR is
1/166 = 0.006). "runs above binomial" counts runs that flagged more normal rows than the
binomial interval allows (the failure that matters to a user).

**What the guarantee is.** For a new normal row exchangeable with the calibration rows,
P(flagged) <= t, whatever the model: a *marginal* statement, averaged over the draw of the
calibration set and of the row. It is not a bound on the FPR of one deployed threshold (that
fluctuates with the calibration set, as the conformal interval shows: use a larger
calibration set to tighten it), not a per-row or per-subgroup guarantee, and it does not hold
when normal data drift or differ from the training data in any way (new sensor, new season,
rows selected by another process): exchangeability is the whole assumption. Likewise, test
p-values are uniform only marginally: conditional on one calibration set a one-sample KS test of
many test p-values against U(0, 1) rejects whenever n_test >> n_cal even when everything is
right; the matching check is a two-sample test of calibration scores against test scores.
The training-quantile rules carry no guarantee: training scores are in-sample.
"""


def command_text(args: argparse.Namespace) -> str:
    """The ``ocsdf bench thresholds`` command line equivalent to ``args``."""
    return command_line("ocsdf bench thresholds", args,
                        ["datasets", "fprs", "seeds", "threads", "steps", "data_dir", "out_dir",
                         "device", "default_threshold", "calibration_sizes"])


def _names(text: str) -> list[str]:
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in ADBENCH_FILES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown data set(s) {unknown}; choose from {', '.join(ADBENCH_FILES)}")
    return names


def _rates(text: str) -> list[float]:
    try:
        rates = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not rates or not all(0 < r < 1 for r in rates):
        raise argparse.ArgumentTypeError(f"target FPRs must be in (0, 1), got {text!r}")
    return rates


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``ocsdf bench thresholds``."""
    from ..cli.options import add_device

    p = subparsers.add_parser(
        "thresholds", help="target vs measured false-positive rate: conformal OCSDF vs "
        "IsolationForest",
        description="For each target FPR, the test FPR and recall of OCSDF(fpr=t) against "
        "IsolationForest(contamination=t) and IsolationForest with the same split-conformal "
        "calibration; writes docs/results/thresholds.{md,csv,json}.")
    p.add_argument("--datasets", type=_names, default=list(DEFAULT_DATASETS), metavar="A,B,...",
                   help=f"ADBench short names (default: {','.join(DEFAULT_DATASETS)})")
    p.add_argument("--fprs", type=_rates, default=list(DEFAULT_FPRS), metavar="T1,T2,...",
                   help="target false-positive rates (default: 0.01,0.05,0.1)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..k-1, results averaged (3)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"OCSDF n_steps (default: OCSDF's, {OCSDF().n_steps})")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--data-dir", default=None, help="folder holding adbench/ (default: found)")
    p.add_argument("--out-dir", default="docs/results", help="output folder (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no per-run progress lines")
    p.add_argument("--default-threshold", action="store_true",
                   help="measure the default rules instead (OCSDF f < 0, IsolationForest's "
                   "auto offset): false-positive rate and recall, thresholds_default.md")
    p.add_argument("--calibration-sizes", type=_rates, default=None, metavar="S1,S2,...",
                   help="instead: the calibration-size study (e.g. 0.1,0.2,0.3,0.5), written "
                   "to thresholds_calibration.{md,csv,json}")
    add_device(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the study from parsed ``args`` and write ``thresholds.{md,csv,json}`` (or, with
    ``--calibration-sizes``, ``thresholds_calibration.{md,csv,json}``)."""
    with study(args) as run_:  # the device first; --threads for the run and the machine line
        if args.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
        steps = args.steps if args.steps is not None else rows_value("n_steps", OCSDF().n_steps)
        device_text = run_.device_note(", trained and scored")
        if getattr(args, "default_threshold", False):
            runs = []
            for dataset in args.datasets:
                for seed in range(args.seeds):
                    runs.append(default_threshold_runs(dataset, seed, args.data_dir,
                                                       args.steps, run_.device))
                    if not args.quiet:
                        r = runs[-1]
                        print(f"{dataset} seed {seed}: OCSDF fpr {r['OCSDF fpr']:.3f}, "
                              f"IForest fpr {r['IForest fpr']:.3f} ({run_.wall_s:.0f} s)",
                              flush=True)
            rows = summarise_default_thresholds(runs)
            name, title = ("thresholds_default",
                           "Thresholds: what the default rule flags among new normal rows")
            notes = (DEFAULT_NOTES + f"\nOCSDF: default hyper-parameters, n_steps={steps}"
                     f"{device_text}; {args.seeds} seed(s); wall time "
                     f"{run_.wall_s / 60:.1f} min.\n")
        elif getattr(args, "calibration_sizes", None):
            rows = _calibration_sizes(args, run_)
            name, title = ("thresholds_calibration",
                           "Thresholds: how much data to hold out for calibration")
            notes = (CALIBRATION_NOTES + f"\nOCSDF: default hyper-parameters, n_steps={steps}"
                     f"{device_text}; wall time {run_.wall_s / 60:.1f} min.\n")
        else:
            rows, _ = thresholds_benchmark(args.datasets, args.fprs, args.seeds, args.steps,
                                           args.data_dir, verbose=not args.quiet,
                                           device=run_.device)
            name, title = "thresholds", "Thresholds: target vs measured false-positive rate"
            notes = (NOTES + f"\nOCSDF: default hyper-parameters, n_steps={steps}, margin "
                     f"'auto'{device_text}. {args.seeds} seed(s) per data set; wall time "
                     f"{run_.wall_s / 60:.1f} min.\n\n"
                     "**Over all data sets and seeds** (the \"(all)\" rows at the end):\n\n"
                     + findings(rows) + "\n")
        path = write_table(rows, name, args.out_dir, title=title, notes=notes,
                           command=command_text(args))
    print(f"wrote {path} ({run_.wall_s / 60:.1f} min)")
    return 0


def default_threshold_runs(dataset: str, seed: int, data_dir=None, n_steps: int | None = None,
                           device: str = "cpu") -> dict:
    """What a user gets without choosing a threshold: OCSDF's default ``contamination="auto"``
    (flag ``f < 0``, the learned boundary) and scikit-learn's ``IsolationForest()`` default
    (``contamination="auto"``), both fitted on the one-class training half of ``dataset``
    (:func:`ocsdf.data.oc_split`); the false-positive rate on the held-out normal rows and the
    recall on the anomalies."""
    train, test_normal, anomalies = oc_split(dataset, seed=seed, data_dir=data_dir)
    model = OCSDF(random_state=seed, device=device, **_ocsdf_params(n_steps)).fit(train)
    forest = IsolationForest(random_state=seed).fit(train)
    return {
        "dataset": dataset, "seed": seed, "n_train": len(train),
        "OCSDF fpr": float(np.mean(model.predict(test_normal) == -1)),
        "OCSDF recall": float(np.mean(model.predict(anomalies) == -1)),
        "OCSDF train flagged": float(np.mean(model.predict(train) == -1)),
        "IForest fpr": float(np.mean(forest.predict(test_normal) == -1)),
        "IForest recall": float(np.mean(forest.predict(anomalies) == -1)),
    }


def summarise_default_thresholds(runs: Sequence[dict]) -> list[dict]:
    """Mean over seeds per data set, then a row of means over data sets (percent)."""
    keys = ["OCSDF fpr", "OCSDF recall", "OCSDF train flagged", "IForest fpr", "IForest recall"]
    rows = []
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        rs = [r for r in runs if r["dataset"] == dataset]
        rows.append({"dataset": dataset, "n_train": rs[0]["n_train"], "seeds": len(rs),
                     **{f"{k} %": 100 * float(np.mean([r[k] for r in rs])) for k in keys}})
    rows.append({"dataset": ALL, "n_train": None, "seeds": None,
                 **{f"{k} %": float(np.mean([r[f"{k} %"] for r in rows])) for k in keys}})
    return rows


def _calibration_sizes(args: argparse.Namespace, run_: Study) -> list[dict]:
    """``--calibration-sizes``: the rows of :func:`calibration_size_runs` over the data sets
    and seeds of ``args``, summarised."""
    runs = []
    for dataset in args.datasets:
        for seed in range(args.seeds):
            runs += calibration_size_runs(dataset, seed, args.calibration_sizes, args.fprs,
                                          args.data_dir, _ocsdf_params(args.steps),
                                          device=run_.device)
            if not args.quiet:
                print(f"{dataset} seed {seed}: {run_.wall_s:.0f} s", flush=True)
    return summarise_calibration_sizes(runs)
