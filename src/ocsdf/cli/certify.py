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
    p.add_argument("--no-attack", action="store_true", help="skip the PGD attack")
    p.add_argument("--attack-steps", type=positive_int, default=50,
                   help="PGD iterations per restart (50; step 0.025 eps)")
    p.add_argument("--restarts", type=positive_int, default=3, help="PGD restarts (3)")
    p.add_argument("-o", "--output", metavar="CSV", help="also write the table as CSV")
    p.set_defaults(func=cmd_certify)


def cmd_certify(args: argparse.Namespace) -> int:
    """``ocsdf certify``: print (eps, certified AUROC, empirical AUROC), write PNG. Returns 0."""
    import pandas as pd

    from ..certify import empirical_auroc_under_attack, lipschitz_in
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
    print(f"{len(xn)} normal rows vs {len(xa)} anomalous rows; eps = l2 budget in {units}; "
          f"L = {lipschitz_in(model, args.space):.4g} (sound Lipschitz bound, same units)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.png:
        with writing(args.png):
            png = robustness_plot(eps, cert, emp, args.png, units, title=Path(args.model).name)
        print(f"wrote {png}")
    if args.output:
        with writing(args.output):
            write_csv_atomic(table, args.output, header=True)
        print(f"wrote {args.output}")
    note_ignored(ignored_n, ignored_a)
    return 0
