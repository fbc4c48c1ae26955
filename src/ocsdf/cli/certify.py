"""``ocsdf certify``: certified and attacked AUROC of a saved model against l2 budgets."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .options import (
    add_model_rows,
    as_model_input,
    eps_list,
    note_ignored,
    positive_int,
    read_for_model,
    writing,
)

__all__ = ["register", "cmd_certify"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``certify`` sub-command to the ``ocsdf`` parser."""
    p = subparsers.add_parser(
        "certify", help="certified and attacked AUROC of a saved model",
        description="Certified AUROC (a lower bound under any l2 attack of budget eps) and the "
        "AUROC under an l2 PGD attack, normal rows against anomalous rows. Budgets are l2 norms "
        "in raw feature units (--space raw, default) or standardised units.",
    )
    add_model_rows(p, {"normal": "normal rows (.csv, .npz, .parquet)",
                       "anomalous": "anomalous rows"})
    p.add_argument("--eps", type=eps_list, default=[0.0, 0.05, 0.1, 0.2, 0.5],
                   help="l2 budgets (0,0.05,0.1,0.2,0.5)")
    p.add_argument("--space", choices=("raw", "standardized"), default="raw",
                   help="units of eps: raw feature units or standardised units (raw)")
    p.add_argument("--png", metavar="PNG", default=None,
                   help="also draw certified (and attacked) AUROC against eps into this PNG "
                   "(default: no plot)")
    p.add_argument("--reference", metavar="TRAIN", default=None,
                   help="also certify the exact nearest-neighbour reference fitted on these "
                   "(normal training) rows: minus the l2 distance to the nearest of them, in "
                   "the model's input space and domain rule, 1-Lipschitz (column "
                   "knn_certified_auroc)")
    p.add_argument("--no-attack", action="store_true", help="skip the PGD attack")
    p.add_argument("--attack-steps", type=positive_int, default=50,
                   help="PGD iterations per restart (50; step 0.025 eps)")
    p.add_argument("--restarts", type=positive_int, default=3, help="PGD restarts (3)")
    p.add_argument("-o", "--output", metavar="CSV", help="also write the table as CSV")
    p.set_defaults(func=cmd_certify)


def cmd_certify(args: argparse.Namespace) -> int:
    """``ocsdf certify``: print (eps, certified AUROC, empirical AUROC), write PNG. Returns 0."""
    import pandas as pd

    from ..certify import empirical_auroc_under_attack, lipschitz_in, term_lipschitz
    from ..estimator import OCSDF
    from ..io import write_csv_atomic
    from ..plot import robustness_plot

    model = OCSDF.load(args.model, device=args.device)
    xn, ignored_n = read_for_model(model, args.normal, args)
    xa, ignored_a = read_for_model(model, args.anomalous, args)
    eps = np.asarray(args.eps)
    units = "raw feature units" if args.space == "raw" else "standardised units"
    cert = model.certified_auroc(as_model_input(model, xn), as_model_input(model, xa), eps,
                                 space=args.space)
    emp = None
    if not args.no_attack:
        emp = empirical_auroc_under_attack(model, xn, xa, eps, space=args.space,
                                           n_iter=args.attack_steps, restarts=args.restarts)
    table = pd.DataFrame({"eps": eps, "certified_auroc": cert})
    if emp is not None:
        table["empirical_auroc"] = emp
    lf, lb = term_lipschitz(model, args.space)
    terms = f"network term {lf:.4g}" + ("" if lb is None else f", domain term {lb:.4g}")
    print(f"{len(xn)} normal rows vs {len(xa)} anomalous rows; eps = l2 budget in {units}; "
          f"L = {lipschitz_in(model, args.space):.4g} (sound Lipschitz bound, same units; "
          f"{terms}, bounded apart)")
    ref_cert, ignored_r = None, []
    if args.reference:
        ref_cert, ignored_r, text = _reference(model, args, xn, xa, eps)
        table["knn_certified_auroc"] = ref_cert
        print(text)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.png:
        with writing(args.png):
            png = robustness_plot(eps, cert, emp, args.png, units, title=Path(args.model).name,
                                  reference=ref_cert)
        print(f"wrote {png}")
    if args.output:
        with writing(args.output):
            write_csv_atomic(table, args.output, header=True)
        print(f"wrote {args.output}")
    note_ignored(ignored_n, ignored_a, ignored_r)
    return 0


def _reference(model, args: argparse.Namespace, xn: np.ndarray, xa: np.ndarray,
               eps: np.ndarray) -> tuple[np.ndarray, list[str], str]:
    """The 1-NN reference of ``--reference``: its certified AUROC at ``eps`` (same units), the
    ignored columns of the training file, and a line comparing its cost with the model's."""
    import time
    import warnings

    from ..errors import DomainWarning
    from ..knn import KNNDistance

    x_train, ignored = read_for_model(model, args.reference, args)
    start = time.perf_counter()
    image = model._is_image()  # images: the pixel box, no standardisation, as the model
    with warnings.catch_warnings():  # rows outside B: the model's fit said so already
        warnings.simplefilter("ignore", DomainWarning)
        knn = KNNDistance(domain="unit" if image else model.domain,
                          domain_size=model.domain_size,
                          standardize=False if image else model.standardize
                          ).fit(as_model_input(model, x_train))
    fit_s = time.perf_counter() - start
    rows = np.vstack((xn, xa))
    start = time.perf_counter()
    knn.score_samples(as_model_input(model, rows))
    knn_ms = 1e6 * (time.perf_counter() - start) / len(rows)
    start = time.perf_counter()
    model.score_samples(as_model_input(model, rows))
    ours_ms = 1e6 * (time.perf_counter() - start) / len(rows)
    cert = knn.certified_auroc(as_model_input(model, xn), as_model_input(model, xa), eps,
                               space=args.space)
    text = (f"reference: exact 1-NN distance to the {len(x_train)} rows of {args.reference} "
            f"(L = {knn.scorer_.lipschitz_in(args.space):.4g}, same units); fit {fit_s:.3g} s; "
            f"scoring {knn_ms:.3g} ms per 1,000 rows (model: {ours_ms:.3g}); keeps "
            f"{knn.scorer_.nbytes:,} bytes (model: {model.scorer_.nbytes:,})")
    return np.asarray(cert, dtype=float), ignored, text
