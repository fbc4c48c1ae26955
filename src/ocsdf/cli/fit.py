"""``ocsdf fit``: fit OCSDF on a file of normal rows and save the model directory."""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from ..errors import DomainWarning, InputError
from .options import (
    add_device,
    add_header,
    auto_or_float,
    check_finite,
    column_list,
    open_fraction,
    positive_int,
    trim_fraction,
)

__all__ = ["register", "cmd_fit"]

#: OCSDF's defaults of the options that leave them out, for the help text only (the CLI does not
#: import the estimator to draw its help; a test checks that they agree).
FIT_DEFAULTS = {"n_steps": 1000, "width": 128, "depth": 3}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``fit`` sub-command to the ``ocsdf`` parser."""
    p = subparsers.add_parser(
        "fit", help="fit a model on normal data and save it",
        description="Fit OCSDF on a file of normal rows (CSV, NPZ or Parquet) and save the "
        "model directory.",
    )
    p.add_argument("data", help="training data: .csv (header detected), .npz (array X), .parquet")
    p.add_argument("--model", required=True, metavar="DIR", help="model directory to write")
    p.add_argument("--columns", type=column_list, metavar="A,B,...",
                   help="columns to use: names or 0-based positions (default: all)")
    add_header(p)
    p.add_argument("--steps", type=positive_int, default=None,
                   help=f"training steps (OCSDF's default, {FIT_DEFAULTS['n_steps']})")
    p.add_argument("--width", type=positive_int, default=None,
                   help=f"hidden width, even (OCSDF's default, {FIT_DEFAULTS['width']})")
    p.add_argument("--depth", type=positive_int, default=None,
                   help=f"hidden layers (OCSDF's default, {FIT_DEFAULTS['depth']})")
    p.add_argument("--margin", type=auto_or_float(0.0, math.inf), default="auto",
                   help="HKR margin in standardised units, or 'auto' (default)")
    p.add_argument("--contamination", type=auto_or_float(0.0, 0.5), default="auto",
                   help="expected outlier fraction in (0, 0.5] for the threshold, or 'auto' "
                   "(threshold f = 0; default)")
    p.add_argument("--fpr", type=open_fraction, default=None,
                   help="target false-positive rate in (0, 1): hold out 20-50%% of the rows "
                   "(at least 10/FPR when possible) to calibrate the threshold "
                   "(split-conformal); enables p-values")
    p.add_argument("--domain", choices=("box", "ball", "unit"), default="box",
                   help="domain B of the negatives, standardised units: box [-s, s]^d, ball of "
                   "radius s, or the pixel box [0, 1]^d (box)")
    p.add_argument("--domain-size", type=float, default=5.0, help="s above (5)")
    p.add_argument("--cover", action="store_true",
                   help="the rows are all normal: raise the feature scales so that B holds "
                   "every training row (without it, a row beyond s standard deviations in some "
                   "feature scores as an anomaly and fit says how many there are)")
    p.add_argument("--trim", type=trim_fraction, default=0.0,
                   help="the rows may hold anomalies: refit without this fraction of rows, "
                   "those the first fit scores lowest, in [0, 0.5) (0: one fit; default)")
    p.add_argument("--normal-only", action="store_true",
                   help="for an .npz holding labels y beside X (ADBench files): train on the "
                   "rows with y == 0 only")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    add_device(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_fit)


def cmd_fit(args: argparse.Namespace) -> int:
    """``ocsdf fit``: read, fit, save, print a summary. Returns 0."""
    import pandas as pd

    from ..estimator import OCSDF
    from ..io import load_table, select_numeric
    from ..pictures import read_images

    images = read_images(args.data)
    if images is not None:  # an .npz / .npy of images: fitted as images (pixel box)
        X, labels, path = images[0], images[1], Path(args.data)
        names = [f"pixel{i}" for i in range(int(np.prod(X.shape[1:])))]
        has_header = False
    else:
        table = load_table(args.data, header=args.header)
        X, names = select_numeric(table, args.columns)
        check_finite(X, names, table.path)
        labels, path, has_header = table.labels, table.path, table.has_header
    labels_note = None
    if args.normal_only:
        if labels is None:
            raise InputError(f"--normal-only needs labels: {path} holds no array y "
                             "beside X")
        normal = np.asarray(labels) == 0
        X = X[normal]
        labels_note = (f"trained on the {int(normal.sum())} rows with y == 0 of {path}, "
                       f"leaving out {int((~normal).sum())} labelled anomalies")
    elif labels is not None:
        n_pos = int(np.count_nonzero(np.asarray(labels)))
        labels_note = (f"{path} also holds labels y ({n_pos} of {len(labels)} rows "
                       "non-zero); every row was used for training, anomalies included "
                       "(--normal-only trains on the rows with y == 0)")
    given = {"width": args.width, "depth": args.depth, "n_steps": args.steps}
    if args.steps is not None:
        given["warmup_steps"] = args.steps // 10
    model = OCSDF(
        **{k: v for k, v in given.items() if v is not None}, margin=args.margin,
        contamination=args.contamination, random_state=args.seed, device=args.device,
        verbose=not args.quiet, domain=args.domain, domain_size=args.domain_size,
        standardize="cover" if args.cover else args.domain != "unit",
        fpr=args.fpr, trim=args.trim,
    )
    data = pd.DataFrame(X, columns=names) if has_header else X
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DomainWarning)
        model.fit(data)
    seconds = time.perf_counter() - start
    for w in caught:  # the rows outside B: one note line, not a Python warning with a path
        if issubclass(w.category, DomainWarning):
            print(f"ocsdf: note: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    model.set_params(verbose=False)  # the saved model does not draw progress bars when refit
    saved = model.save(args.model)
    _print_fit_summary(model, X.reshape(len(X), -1), names, path, seconds, saved)
    if labels_note:
        print(f"ocsdf: note: {labels_note}", file=sys.stderr)
    return 0


def _print_fit_summary(model, X: np.ndarray, names: list[str], path: Path, seconds: float,
                       saved: Path) -> None:
    """The few lines ``ocsdf fit`` prints after training."""
    from ..io import _short_list

    margin_kind = "auto" if model.margin == "auto" else "given"
    n_cal = len(getattr(model, "calibration_scores_", ()))
    n_trim = int(getattr(model, "n_trimmed_", 0))
    print(f"fitted OCSDF on {X.shape[0]} rows x {X.shape[1]} features of {path} "
          f"in {seconds:.1f} s")
    if n_cal or n_trim:
        parts = [f"trained on {X.shape[0] - n_cal - n_trim} rows"]
        if n_cal:
            parts.append(f"{n_cal} held out to calibrate the threshold")
        if n_trim:
            parts.append(f"{n_trim} left out of the second fit by --trim {model.trim:g} (those "
                         "the first fit scored lowest)")
        print("; ".join(parts))
    print(f"features: {_short_list(names)}")
    print(f"margin m = {model.margin_:.4g} (standardised units, {margin_kind})")
    print(f"L = {model.lipschitz_:.4f} (l2, standardised units)")
    if model.fpr is not None:
        print(f"threshold offset = {model.offset_:.4g} (target false-positive rate "
              f"{model.fpr:g}, calibrated on {len(model.calibration_scores_)} held-out rows)")
    elif model.contamination != "auto":
        print(f"threshold offset = {model.offset_:.4g} (contamination {model.contamination:g})")
    print(f"saved model to {saved}")
