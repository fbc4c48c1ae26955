"""The ``ocsdf`` command: ``fit``, ``score``, ``demo`` and ``bench``.

Every user error (bad data, bad model directory, bad option) is printed as one line
``ocsdf: error: ...`` on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

from .errors import InputError, ModelFileError

__all__ = ["BENCH_MODULES", "COMMAND_MODULES", "build_parser", "main"]

BENCH_MODULES = ["speed", "defaults", "tabular", "robustness", "thresholds", "toy", "explain",
                 "shapes"]
# Top-level commands that live in their own module ``ocsdf.commands.NAME`` (each module has
# ``register(subparsers)``); a name whose module is absent is skipped.
COMMAND_MODULES = ["reconstruct", "explain", "report"]
DEMO_DATASETS = ("moons", "circles", "one-cloud", "two-clouds", "two-blobs", "blob-cloud")
DEMO_RADIUS = 5.0  # the ball B of the toy sets (standardised units), as in ocsdf.data.oc_split
_USER_ERRORS = (InputError, ModelFileError, FileNotFoundError, ValueError, OSError)
# Optional dependencies -> the pyproject extra that installs them (for a one-line error).
_EXTRAS = {"trimesh": "mesh", "skimage": "mesh", "rtree": "mesh", "scipy": "mesh",
           "onnx": "deploy", "onnxruntime": "deploy", "pyod": "pyod", "shap": "bench",
           "deel": "bench", "pyarrow": "parquet"}


# ---------------------------------------------------------------------------- option types
def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _trim_fraction(text: str) -> float:
    """argparse type of ``--trim``: a float in ``[0, 0.5)``."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < 0.5:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 0.5), got {text!r}")
    return value


def _auto_or_float(low: float, high: float, low_open: bool = True):
    """argparse type: ``"auto"`` or a finite float in ``(low, high]``."""

    def parse(text: str) -> float | str:
        if text.strip().lower() == "auto":
            return "auto"
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > low and value <= high):
            bound = "" if math.isinf(high) else f" and at most {high:g}"
            raise argparse.ArgumentTypeError(
                f"expected 'auto' or a number greater than {low:g}{bound}, got {text!r}"
            )
        return value

    return parse


def _column_list(text: str) -> list[str]:
    """argparse type: ``"a,b,c"`` → ``["a", "b", "c"]`` (names or 0-based positions)."""
    columns = [c.strip() for c in text.split(",") if c.strip()]
    if not columns:
        raise argparse.ArgumentTypeError("expected comma-separated column names or positions")
    return columns


def _add_device(p: argparse.ArgumentParser) -> None:
    """``--device``: where a command trains or scores ("cpu", "cuda", "cuda:1", ...)."""
    p.add_argument("--device", default="cpu",
                   help="torch device to train/score on: cpu (default) or cuda; results, saved "
                   "models and exports are the same format either way")


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The full ``ocsdf`` argument parser (sub-commands fit, score, demo, bench)."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="ocsdf",
        description="One-class anomaly detection with a learned signed distance function "
        "(1-Lipschitz network, OCSDF).",
    )
    parser.add_argument("--version", action="version", version=f"ocsdf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_fit(sub)
    _add_score(sub)
    _add_demo(sub)
    _add_certify(sub)
    _add_data(sub)
    _add_export(sub)
    for name in COMMAND_MODULES:
        module = _import_optional(f"commands.{name}")
        if module is not None:
            module.register(sub)
    _add_bench(sub)
    return parser


def _add_fit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit", help="fit a model on normal data and save it",
        description="Fit OCSDF on a file of normal rows (CSV, NPZ or Parquet) and save the "
        "model directory.",
    )
    p.add_argument("data", help="training data: .csv (header detected), .npz (array X), .parquet")
    p.add_argument("--model", required=True, metavar="DIR", help="model directory to write")
    p.add_argument("--columns", type=_column_list, metavar="A,B,...",
                   help="columns to use: names or 0-based positions (default: all)")
    p.add_argument("--steps", type=_positive_int, default=1000, help="training steps (1000)")
    p.add_argument("--width", type=_positive_int, default=128, help="hidden width, even (128)")
    p.add_argument("--depth", type=_positive_int, default=3, help="hidden layers (3)")
    p.add_argument("--margin", type=_auto_or_float(0.0, math.inf), default="auto",
                   help="HKR margin in standardised units, or 'auto' (default)")
    p.add_argument("--contamination", type=_auto_or_float(0.0, 0.5), default="auto",
                   help="expected outlier fraction in (0, 0.5] for the threshold, or 'auto' "
                   "(threshold f = 0; default)")
    p.add_argument("--fpr", type=_auto_or_float(0.0, 0.999), default=None,
                   help="target false-positive rate in (0, 1): hold out 20-50%% of the rows "
                   "(at least 10/FPR when possible) to calibrate the threshold "
                   "(split-conformal); enables p-values")
    p.add_argument("--domain", choices=("box", "ball", "unit"), default="box",
                   help="domain B of the negatives, standardised units: box [-s, s]^d, ball of "
                   "radius s, or the pixel box [0, 1]^d (box)")
    p.add_argument("--domain-size", type=float, default=5.0, help="s above (5)")
    p.add_argument("--trim", type=_trim_fraction, default=0.0,
                   help="the rows may hold anomalies: refit without this fraction of rows, "
                   "those the first fit scores lowest, in [0, 0.5) (0: one fit; default)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    _add_device(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_fit)


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score", help="score rows with a saved model",
        description="Score rows with a saved model. Writes CSV columns score (f, higher = more "
        "normal), decision (score - offset) and label (+1 inlier, -1 outlier).",
    )
    p.add_argument("model", metavar="DIR", help="model directory written by 'ocsdf fit'")
    p.add_argument("data", help="rows to score (.csv, .npz, .parquet)")
    p.add_argument("-o", "--output", metavar="CSV", help="output CSV (default: stdout)")
    p.add_argument("--columns", type=_column_list, metavar="A,B,...",
                   help="columns to use (default: the model's feature names when the file "
                   "has a header, else all columns)")
    _add_device(p)
    p.set_defaults(func=cmd_score)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="fit a 2-D toy set and draw the learned distance",
        description="Fit OCSDF on a 2-D toy set (1000 training rows), write a contour plot and "
        "report the AUROC of 1000 held-out normal rows against 1000 uniform points of the "
        "ball of radius 5 (standardised units).",
    )
    p.add_argument("--dataset", choices=DEMO_DATASETS, default="moons", help="toy set (moons)")
    p.add_argument("--steps", type=_positive_int, default=2000, help="training steps (2000)")
    p.add_argument("--out", default="ocsdf-demo.png", help="PNG to write (ocsdf-demo.png)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    _add_device(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)


def _eps_list(text: str) -> list[float]:
    """argparse type: ``"0,0.05,0.1"`` → budgets, each finite and >= 0."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) and v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated budgets >= 0, got {text!r}")
    return sorted(set(values))


def _add_certify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "certify", help="certified and attacked AUROC of a saved model",
        description="Certified AUROC (a lower bound under any l2 attack of budget eps) and the "
        "AUROC under an l2 PGD attack, normal rows against anomalous rows. Budgets are l2 norms "
        "in raw feature units (--space raw, default) or standardised units.",
    )
    p.add_argument("model", metavar="DIR", help="model directory written by 'ocsdf fit'")
    p.add_argument("normal", help="normal rows (.csv, .npz, .parquet)")
    p.add_argument("anomalous", help="anomalous rows")
    p.add_argument("--eps", type=_eps_list, default=[0.0, 0.05, 0.1, 0.2, 0.5],
                   help="l2 budgets (0,0.05,0.1,0.2,0.5)")
    p.add_argument("--space", choices=("raw", "standardized"), default="raw",
                   help="units of eps: raw feature units or standardised units (raw)")
    p.add_argument("--columns", type=_column_list, metavar="A,B,...", help="columns to use")
    p.add_argument("--png", default="robustness.png", help="plot to write (robustness.png)")
    p.add_argument("--no-attack", action="store_true", help="skip the PGD attack")
    p.add_argument("--attack-steps", type=_positive_int, default=50,
                   help="PGD iterations per restart (50; step 0.025 eps)")
    p.add_argument("--restarts", type=_positive_int, default=3, help="PGD restarts (3)")
    p.add_argument("-o", "--output", metavar="CSV", help="also write the table as CSV")
    _add_device(p)
    p.set_defaults(func=cmd_certify)


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data", help="write a one-class split of a built-in or benchmark data set as CSV",
        description="Write train.csv (normal rows), test_normal.csv and test_anomalous.csv for "
        "an ADBench set (half the normal rows to train, raw units; needs the data folder) or a "
        "2-D toy set (uniform anomalies in the ball of radius 5, standardised units).",
    )
    p.add_argument("name", help="ADBench short name (e.g. breastw, cardio) or a toy set (moons)")
    p.add_argument("--out-dir", required=True, help="folder to write the three CSV files to")
    p.add_argument("--seed", type=int, default=0, help="split seed (0)")
    p.add_argument("--data-dir", help="benchmark data folder (default: $OCSDF_DATA_DIR or "
                   "../shared/data)")
    p.set_defaults(func=cmd_data)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a saved model as an ONNX graph",
                       description="Write a saved model as an ONNX graph that scores rows in raw "
                       "units (outputs score and rounding; metadata: threshold, lipschitz_raw).")
    p.add_argument("model", metavar="DIR", help="model directory written by 'ocsdf fit'")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="ONNX file to write")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--opset", type=_positive_int, default=17)
    p.set_defaults(func=cmd_export)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark study",
                       description="Benchmark studies; each writes its table under "
                       "docs/results/.")
    studies = p.add_subparsers(dest="study", metavar="STUDY", required=True)
    for name in BENCH_MODULES:
        module = _import_optional(f"bench.{name}")
        if module is not None:
            module.register(studies)


def _import_optional(name: str) -> ModuleType | None:
    """``ocsdf.NAME`` (e.g. ``"bench.toy"``), or None when that module does not exist (yet).

    Any other import failure (a missing dependency inside the module) propagates.
    """
    full = f"{__package__ or 'ocsdf'}.{name}"
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as err:
        if err.name == full:
            return None
        raise


# ---------------------------------------------------------------------------- commands
def cmd_fit(args: argparse.Namespace) -> int:
    """``ocsdf fit``: read, fit, save, print a summary. Returns 0."""
    import pandas as pd

    from .estimator import OCSDF
    from .io import load_table, select_numeric

    table = load_table(args.data)
    X, names = select_numeric(table, args.columns)
    _check_finite(X, names, table.path)
    model = OCSDF(
        width=args.width, depth=args.depth, margin=args.margin, n_steps=args.steps,
        contamination=args.contamination, random_state=args.seed, device=args.device,
        verbose=not args.quiet, domain=args.domain, domain_size=args.domain_size,
        standardize=args.domain != "unit", fpr=None if args.fpr == "auto" else args.fpr,
        trim=args.trim,
    )
    data = pd.DataFrame(X, columns=names) if table.has_header else X
    start = time.perf_counter()
    model.fit(data)
    seconds = time.perf_counter() - start
    saved = model.save(args.model)
    _print_fit_summary(model, X, names, table.path, seconds, saved)
    return 0


def _print_fit_summary(model, X: np.ndarray, names: list[str], path: Path, seconds: float,
                       saved: Path) -> None:
    """The few lines ``ocsdf fit`` prints after training."""
    from .io import _short_list

    margin_kind = "auto" if model.margin == "auto" else "given"
    print(f"fitted OCSDF on {X.shape[0]} rows x {X.shape[1]} features of {path} "
          f"in {seconds:.1f} s")
    print(f"features: {_short_list(names)}")
    print(f"margin m = {model.margin_:.4g} (standardised units, {margin_kind})")
    print(f"L = {model.lipschitz_:.4f} (l2, standardised units)")
    if model.fpr is not None:
        print(f"threshold offset = {model.offset_:.4g} (target false-positive rate "
              f"{model.fpr:g}, calibrated on {len(model.calibration_scores_)} held-out rows)")
    elif model.contamination != "auto":
        print(f"threshold offset = {model.offset_:.4g} (contamination {model.contamination:g})")
    print(f"saved model to {saved}")


def cmd_score(args: argparse.Namespace) -> int:
    """``ocsdf score``: load a model, score a file, write score/decision/label CSV. Returns 0."""
    import pandas as pd

    from .estimator import OCSDF

    model = OCSDF.load(args.model, device=args.device)
    X = _read_for_model(model, args.data, args.columns, args.model)
    score = model.score_samples(_as_model_input(model, X))
    decision = score - model.offset_
    label = np.where(decision >= 0, 1, -1)
    out = pd.DataFrame({"score": score, "decision": decision, "label": label})
    n_out = int((label == -1).sum())
    summary = (f"scored {len(out)} rows of {args.data}: {n_out} flagged as outliers "
               f"(label -1), {len(out) - n_out} inliers")
    _write_rows(out, args.output, summary)
    return 0


def _write_rows(table, output: str | None, summary: str) -> None:
    """Write a per-row result table as CSV to ``output`` (atomically) or to stdout.

    The one-line ``summary`` goes to stdout after the file, or to stderr when the table itself
    is on stdout (so that ``ocsdf score ... > out.csv`` keeps the CSV clean).
    """
    from .io import write_csv_atomic

    if output:
        with _writing(output):
            write_csv_atomic(table, output, header=True)
        print(f"{summary}; wrote {output}")
    else:
        table.to_csv(sys.stdout, index=False, lineterminator="\n")
        sys.stdout.flush()
        print(summary, file=sys.stderr)


def _read_for_model(
    model,
    path: str,
    columns: Sequence[str] | None,
    model_dir: str,
    exclude: Sequence[str] = (),
    allow_empty: bool = False,
) -> np.ndarray:
    """Rows of ``path`` as the (n, d) float64 array (raw units) that ``model`` expects.

    With no ``columns``, a file with a header and a model fitted with feature names gives the
    model's columns by name (in the model's order); otherwise every column but ``exclude`` (a
    label column, say), by position. Raises :class:`InputError` (one line) for missing columns,
    a wrong width, NaN/inf or non-numeric columns. With ``allow_empty`` a file with a header and
    no data rows gives shape (0, d) instead of an error.
    """
    from .io import load_table, select_numeric

    table = load_table(path, allow_empty=allow_empty)
    present = [str(c) for c in table.frame.columns]
    model_names = getattr(model, "feature_names_in_", None)
    if columns is None and model_names is not None and table.has_header:
        missing = [str(n) for n in model_names if str(n) not in set(present)]
        if missing:
            raise InputError(
                f"{path} lacks columns the model was fitted on: {missing}; "
                "choose columns with --columns"
            )
        columns = [str(n) for n in model_names]
    elif columns is None and exclude:
        columns = [c for c in present if c not in set(exclude)]
    elif columns is not None and exclude:
        clash = [c for c in columns if c in set(exclude)]
        if clash:
            raise InputError(f"column {clash[0]!r} is the label column and cannot be a feature")
    X, names = select_numeric(table, columns)
    expected = int(model.n_features_in_)
    if X.shape[1] != expected:
        raise InputError(
            f"{path} has {X.shape[1]} feature columns but the model in {model_dir} expects "
            f"{expected}; choose columns with --columns"
        )
    _check_finite(X, names, table.path)
    return X


def _as_model_input(model, X: np.ndarray):
    """``X`` as a DataFrame with the model's feature names when it was fitted with names."""
    import pandas as pd

    names = getattr(model, "feature_names_in_", None)
    return pd.DataFrame(X, columns=list(names)) if names is not None else X


@contextlib.contextmanager
def _writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OS error while writing ``path`` into an :class:`InputError` naming it."""
    try:
        yield
    except OSError as err:
        reason = err.strerror or _first_line(err)
        raise InputError(f"cannot write {path}: {reason}") from None


def _check_finite(X: np.ndarray, names: list[str], path: Path) -> None:
    """Raise :class:`InputError` naming the columns and first row holding NaN or inf."""
    bad = ~np.isfinite(X)
    if not bad.any():
        return
    cols = [names[j] for j in np.flatnonzero(bad.any(axis=0))]
    first = int(np.flatnonzero(bad.any(axis=1))[0]) + 1
    raise InputError(
        f"{path} has {int(bad.sum())} missing or infinite values (NaN/inf) in columns {cols}, "
        f"first in data row {first}; remove or impute them"
    )


def cmd_demo(args: argparse.Namespace) -> int:
    """``ocsdf demo``: fit a toy set, write the contour PNG, print AUROC and L. Returns 0."""
    from sklearn.metrics import roc_auc_score

    from .data import oc_split
    from .estimator import OCSDF
    from .plot import contour_plot

    train, held_out, uniform = oc_split(args.dataset, seed=args.seed)
    model = OCSDF(
        domain="ball", domain_size=DEMO_RADIUS, width=128, depth=3, n_steps=args.steps,
        random_state=args.seed, margin=0.05, device=args.device, verbose=not args.quiet,
    )
    start = time.perf_counter()
    model.fit(train)
    seconds = time.perf_counter() - start
    y = np.r_[np.ones(len(held_out)), np.zeros(len(uniform))]
    s = np.r_[model.score_samples(held_out), model.score_samples(uniform)]
    auroc = float(roc_auc_score(y, s))
    title = f"OCSDF on {args.dataset} ({args.steps} steps): AUROC {auroc:.3f}"
    with _writing(args.out):
        png = contour_plot(model, train, args.out, title=title)
    print(f"dataset: {args.dataset}, {len(train)} training rows, {len(held_out)} held-out rows")
    print(f"AUROC = {auroc:.4f} (held-out normal vs {len(uniform)} uniform points "
          f"in the ball of radius {DEMO_RADIUS:g}, standardised units)")
    print(f"L = {model.lipschitz_:.4f} (l2, standardised units)")
    print(f"fit time: {seconds:.1f} s ({args.steps} steps)")
    print(f"wrote {png}")
    return 0


def cmd_certify(args: argparse.Namespace) -> int:
    """``ocsdf certify``: print (eps, certified AUROC, empirical AUROC), write PNG. Returns 0."""
    import pandas as pd

    from .certify import empirical_auroc_under_attack, lipschitz_in
    from .estimator import OCSDF
    from .io import write_csv_atomic
    from .plot import robustness_plot

    model = OCSDF.load(args.model, device=args.device)
    xn = _read_for_model(model, args.normal, args.columns, args.model)
    xa = _read_for_model(model, args.anomalous, args.columns, args.model)
    eps = np.asarray(args.eps)
    units = "raw feature units" if args.space == "raw" else "standardised units"
    cert = model.certified_auroc(_as_model_input(model, xn), _as_model_input(model, xa), eps,
                                 space=args.space)
    emp = None
    if not args.no_attack:
        emp = empirical_auroc_under_attack(model, xn, xa, eps, space=args.space,
                                           n_iter=args.attack_steps, restarts=args.restarts)
    table = pd.DataFrame({"eps": eps, "certified_auroc": cert})
    if emp is not None:
        table["empirical_auroc"] = emp
    print(f"{len(xn)} normal rows vs {len(xa)} anomalous rows; eps = l2 budget in {units}; "
          f"L = {lipschitz_in(model, args.space):.4g} (sound Lipschitz bound, same units)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    with _writing(args.png):
        png = robustness_plot(eps, cert, emp, args.png, units, title=Path(args.model).name)
    print(f"wrote {png}")
    if args.output:
        with _writing(args.output):
            write_csv_atomic(table, args.output, header=True)
        print(f"wrote {args.output}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``ocsdf export``: load a model directory, write its ONNX graph. Returns 0."""
    from .deploy import export_command

    try:
        print(export_command(args.model, args.output, opset=args.opset, dtype=args.dtype))
    except ImportError as err:
        print(f"ocsdf: error: {err}", file=sys.stderr)
        return 2
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    """``ocsdf data``: write the one-class split of a named data set as three CSVs."""
    import pandas as pd

    from .data import oc_split
    from .io import write_csv_atomic

    parts = oc_split(args.name, seed=args.seed, data_dir=args.data_dir)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [f"x{j}" for j in range(parts[0].shape[1])]
    for fname, x in zip(("train", "test_normal", "test_anomalous"), parts):
        with _writing(out / f"{fname}.csv"):
            write_csv_atomic(pd.DataFrame(x, columns=names), out / f"{fname}.csv", header=True)
    print(f"wrote {out}/train.csv ({len(parts[0])} rows), test_normal.csv ({len(parts[1])}), "
          f"test_anomalous.csv ({len(parts[2])}); {len(names)} features")
    return 0


# ---------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> int:
    """Run the ``ocsdf`` command line; returns the exit status.

    0 on success; 2 on a usage error or a user error (printed as one line
    ``ocsdf: error: ...`` on stderr); 130 when interrupted.
    """
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except SystemExit as exc:
        return _exit_status(exc.code)
    except BrokenPipeError:
        _silence_stdout()
        return 1
    except KeyboardInterrupt:
        print("ocsdf: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as err:
        top = (err.name or "").split(".")[0]
        if top not in _EXTRAS:
            raise
        print(f"ocsdf: error: this command needs the package {top!r}: "
              f"pip install 'ocsdf[{_EXTRAS[top]}]'", file=sys.stderr)
        return 2
    except _USER_ERRORS as err:
        print(f"ocsdf: error: {_first_line(err)}", file=sys.stderr)
        return 2


def _first_line(err: BaseException) -> str:
    """The first non-empty line of ``err``'s message (its type name when empty)."""
    for line in str(err).splitlines():
        if line.strip():
            return line.strip()
    return type(err).__name__


def _exit_status(code: object) -> int:
    """``SystemExit.code`` as an exit status (None → 0, a message → 1 after printing it)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _silence_stdout() -> None:
    """After a closed pipe (``ocsdf score ... | head``): point stdout at /dev/null so Python's
    final flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
