"""``ocsdf sample``: what a saved image model puts on the boundary of the normal class
(paper Figure 4)."""

from __future__ import annotations

import argparse

from .options import add_device, positive_int, writing

__all__ = ["register", "cmd_sample"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sample`` sub-command to the ``ocsdf`` parser."""
    p = subparsers.add_parser(
        "sample", help="draw samples on the boundary a saved image model learned",
        description="Run Algorithm 1 of the paper from uniform noise in the pixel box with a "
        "fixed step size (eta = 1, --steps Newton steps towards the level -margin) and save "
        "the images as a grid: what the model puts on the boundary of the normal class.",
    )
    p.add_argument("model", help="model directory (ocsdf fit / OCSDF.save) of an image model")
    p.add_argument("--n", type=positive_int, default=64, help="images to draw (64)")
    p.add_argument("--steps", type=positive_int, default=64, help="Newton steps T (64)")
    p.add_argument("--level", type=float, default=None,
                   help="target score level (default: -margin, the training negatives' level; "
                   "0 for the decision boundary)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", default="samples.png", help="PNG to write (samples.png)")
    add_device(p)
    p.set_defaults(func=cmd_sample)


def cmd_sample(args: argparse.Namespace) -> int:
    """``ocsdf sample``: load, draw, write the grid. Returns 0."""
    import numpy as np

    from ..errors import InputError
    from ..pictures import boundary_samples, load_image_model, save_image_grid

    model = load_image_model(args.model, device=args.device)
    if model.image_shape_[0] not in (1, 3):
        raise InputError(f"{args.model}: images of {model.image_shape_[0]} channels cannot be "
                         "drawn (1 or 3)")
    images = boundary_samples(model, args.n, args.steps, level=args.level, seed=args.seed)
    scores = model.score_samples(images)
    level = -model.margin_ if args.level is None else args.level
    with writing(args.output):
        save_image_grid(images, args.output,
                        title=f"{args.n} samples, T = {args.steps}, target level {level:.3g}")
    print(f"wrote {args.output}: {args.n} images, scores median {np.median(scores):.4g} "
          f"(target level {level:.4g}, pixel l2 units)")
    return 0
