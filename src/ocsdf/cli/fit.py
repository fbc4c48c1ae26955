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
    spread_fraction,
    trim_fraction,
)

__all__ = ["register", "cmd_fit"]

#: OCSDF's defaults of the options that leave them out, for the help text only (the CLI does not
#: import the estimator to draw its help; a test checks that they agree).
FIT_DEFAULTS = {"n_steps": "auto", "width": "auto", "depth": 3}
#: ``ocsdf.streamfit.DEFAULT_BUFFER_ROWS`` and ``ocsdf.stream.DEFAULT_CHUNK_ROWS``, for the help
#: text (a test checks that they agree).
DEFAULT_BUFFER_ROWS = 200_000
#: The values of OCSDF's ``negative_transforms`` (``ocsdf.core.augment.TRANSFORM_SETS`` with
#: "auto" and "none"; a test checks that they agree).
NEGATIVE_TRANSFORMS = ("auto", "none", "rotate", "flip", "rotate+flip")
DEFAULT_CHUNK_ROWS = 65_536


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``fit`` sub-command to the ``ocsdf`` parser."""
    p = subparsers.add_parser(
        "fit", help="fit a model on normal data and save it",
        description="Fit OCSDF on a file of normal rows (CSV, NPZ or Parquet) and save the "
        "model directory.",
    )
    p.add_argument("data", help="training data: .csv (header detected), .npz (array X), .parquet; "
                   "with --stream also a folder of .csv / .parquet files")
    p.add_argument("--model", "-o", "--output", dest="model", required=True, metavar="DIR",
                   help="model directory to write (-o / --output, as in the other commands)")
    p.add_argument("--columns", type=column_list, metavar="A,B,...",
                   help="columns to use: names or 0-based positions (default: all)")
    add_header(p)
    p.add_argument("--steps", type=positive_int, default=None,
                   help=f"training steps (OCSDF's default, {FIT_DEFAULTS['n_steps']}: 1000 for "
                   "rows, 3000 for images)")
    p.add_argument("--width", type=positive_int, default=None,
                   help=f"hidden width, even (OCSDF's default, {FIT_DEFAULTS['width']}: 64 for "
                   "rows, 128 for images)")
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
    p.add_argument("--negative-spread", type=spread_fraction, default=1.0, metavar="A",
                   help="the rows are all normal and their gaps matter: start half of the "
                   "negatives in B shrunk by A in (0, 1] about its centre, nearer the data "
                   "(1: uniform in B; default). 0.5 raised the one-class AUROC of the 19 "
                   "ADBench sets 91.5 -> 92.2 %% and lowered it to 79.6 %% on rows with anomalies")
    p.add_argument("--normal-only", action="store_true",
                   help="for an .npz holding labels y beside X (ADBench files): train on the "
                   "rows with y == 0 only")
    p.add_argument("--negative-transforms", default="auto",
                   choices=NEGATIVE_TRANSFORMS,
                   help="images: training images turned and/or flipped as negatives ('auto': "
                   "rotate+flip for images, none for rows); 'none' for a class that looks the "
                   "same turned or flipped (a zero, a texture)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    add_device(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--stream", action="store_true",
                   help="data larger than memory: read DATA (a file or a folder of them) in "
                   "chunks, twice (statistics, then training from a buffer of rows); same "
                   "model as without it when the rows fit in the buffer and there is no --fpr")
    p.add_argument("--buffer-rows", type=positive_int, default=None, metavar="N",
                   help=f"with --stream: training rows held in memory ({DEFAULT_BUFFER_ROWS:,})")
    p.add_argument("--chunk-rows", type=positive_int, default=None, metavar="N",
                   help=f"with --stream: rows read at a time ({DEFAULT_CHUNK_ROWS:,})")
    p.set_defaults(func=cmd_fit)


def cmd_fit(args: argparse.Namespace) -> int:
    """``ocsdf fit``: read, fit, save, print a summary. Returns 0."""
    import pandas as pd

    from ..io import load_table, select_numeric
    from ..pictures import read_images

    if args.stream:
        return _cmd_fit_stream(args)
    for option, value in (("--buffer-rows", args.buffer_rows), ("--chunk-rows",
                                                                 args.chunk_rows)):
        if value is not None:
            raise InputError(f"{option} applies to --stream only")

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
    model = _estimator(args)
    data = pd.DataFrame(X, columns=names) if has_header else X
    start = time.perf_counter()
    _fit_noting_domain(lambda: model.fit(data))
    seconds = time.perf_counter() - start
    model.set_params(verbose=False)  # the saved model does not draw progress bars when refit
    saved = model.save(args.model)
    X = X.reshape(len(X), -1)
    _print_fit_summary(model, X.shape[0], X.shape[1], names, path, seconds, saved)
    if labels_note:
        print(f"ocsdf: note: {labels_note}", file=sys.stderr)
    return 0


def _estimator(args: argparse.Namespace):
    """The unfitted OCSDF of the command's options."""
    from ..estimator import OCSDF

    given = {"width": args.width, "depth": args.depth, "n_steps": args.steps}
    if args.steps is not None:
        given["warmup_steps"] = args.steps // 10
    return OCSDF(
        **{k: v for k, v in given.items() if v is not None}, margin=args.margin,
        contamination=args.contamination, random_state=args.seed, device=args.device,
        verbose=not args.quiet, domain=args.domain, domain_size=args.domain_size,
        standardize="cover" if args.cover else args.domain != "unit",
        fpr=args.fpr, trim=args.trim, negative_transforms=args.negative_transforms,
        negative_spread=args.negative_spread,
    )


def _fit_noting_domain(fit) -> None:
    """Run ``fit()``; the DomainWarning about rows outside B becomes one note line on stderr
    (not a Python warning with a path); other warnings pass through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DomainWarning)
        fit()
    for w in caught:
        if issubclass(w.category, DomainWarning):
            print(f"ocsdf: note: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _cmd_fit_stream(args: argparse.Namespace) -> int:
    """``ocsdf fit --stream``: :func:`ocsdf.streamfit.fit_stream` on the file or folder."""
    from ..streamfit import fit_stream

    for option, used in (("--trim", args.trim > 0), ("--cover", args.cover),
                         ("--normal-only", args.normal_only)):
        if used:
            raise InputError(f"--stream does not support {option}; fit without --stream")
    model = _estimator(args)
    start = time.perf_counter()
    options = {k: v for k, v in (("buffer_rows", args.buffer_rows),
                                 ("chunk_rows", args.chunk_rows)) if v is not None}
    _fit_noting_domain(lambda: fit_stream(args.data, model, columns=args.columns,
                                          header=args.header, progress=not args.quiet,
                                          **options))
    seconds = time.perf_counter() - start
    model.set_params(verbose=False)
    saved = model.save(args.model)
    info = model.stream_info_
    names = (list(model.feature_names_in_) if hasattr(model, "feature_names_in_")
             else [f"x{j}" for j in range(info.n_features)])
    where = Path(args.data)
    if len(info.files) > 1:
        where = f"{where} ({len(info.files)} files)"
    _print_fit_summary(model, info.n_rows, info.n_features, names, where, seconds, saved)
    passes = ", ".join(f"pass {i + 1} {s:.1f} s" for i, s in enumerate(info.pass_seconds))
    how = ("every training row in the buffer (read once)" if info.in_memory else
           f"buffer of {info.buffer_rows} rows refreshed from pass 2, {info.rows_per_step} "
           "rows per step")
    print(f"streamed: {passes}; training {info.train_seconds:.1f} s "
          f"({info.steps_per_second:.1f} steps/s); {how}")
    return 0


def _print_fit_summary(model, n_rows: int, n_features: int, names: list[str], path,
                       seconds: float, saved: Path) -> None:
    """The few lines ``ocsdf fit`` prints after training."""
    from ..io import _short_list

    margin_kind = "auto" if model.margin == "auto" else "given"
    n_cal = len(getattr(model, "calibration_scores_", ()))
    n_trim = int(getattr(model, "n_trimmed_", 0))
    print(f"fitted OCSDF on {n_rows} rows x {n_features} features of {path} "
          f"in {seconds:.1f} s")
    if n_cal or n_trim:
        parts = [f"trained on {n_rows - n_cal - n_trim} rows"]
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
