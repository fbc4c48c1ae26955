"""``ocsdf demo``: fit a 2-D toy set, draw the learned distance, report AUROC and L."""

from __future__ import annotations

import argparse
import time

import numpy as np

from .options import add_device, positive_int, writing

__all__ = ["DEMO_DATASETS", "DEMO_RADIUS", "register", "cmd_demo"]

DEMO_DATASETS = ("moons", "circles", "one-cloud", "two-clouds", "two-blobs", "blob-cloud")
DEMO_RADIUS = 5.0  # the ball B of the toy sets (standardised units), as in ocsdf.data.oc_split


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command to the ``ocsdf`` parser."""
    p = subparsers.add_parser(
        "demo", help="fit a 2-D toy set and draw the learned distance",
        description="Fit OCSDF on a 2-D toy set (1000 training rows), write a contour plot and "
        "report the AUROC of 1000 held-out normal rows against 1000 uniform points of the "
        "ball of radius 5 (standardised units).",
    )
    p.add_argument("--dataset", choices=DEMO_DATASETS, default="moons", help="toy set (moons)")
    p.add_argument("--steps", type=positive_int, default=2000, help="training steps (2000)")
    p.add_argument("--out", default="ocsdf-demo.png", help="PNG to write (ocsdf-demo.png)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    add_device(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """``ocsdf demo``: fit a toy set, write the contour PNG, print AUROC and L. Returns 0."""
    from sklearn.metrics import roc_auc_score

    from ..data import oc_split
    from ..estimator import OCSDF
    from ..plot import contour_plot

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
    with writing(args.out):
        png = contour_plot(model, train, args.out, title=title)
    print(f"dataset: {args.dataset}, {len(train)} training rows, {len(held_out)} held-out rows")
    print(f"AUROC = {auroc:.4f} (held-out normal vs {len(uniform)} uniform points "
          f"in the ball of radius {DEMO_RADIUS:g}, standardised units)")
    print(f"L = {model.lipschitz_:.4f} (l2, standardised units)")
    print(f"fit time: {seconds:.1f} s ({args.steps} steps)")
    print(f"wrote {png}")
    return 0
