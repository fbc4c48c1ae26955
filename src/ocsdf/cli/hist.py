"""``ocsdf hist``: scores of normal images against uniform noise, the 1-Lipschitz model beside a
conventional network of the same shape (paper Figure 7)."""

from __future__ import annotations

import argparse

from .options import add_device, positive_int, writing

__all__ = ["register", "cmd_hist"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``hist`` sub-command to the ``ocsdf`` parser."""
    p = subparsers.add_parser(
        "hist", help="histograms of scores: normal images vs uniform noise",
        description="Score normal images and uniform noise in the pixel box with a saved "
        "image model and with a conventional network of the same shape (ReLU, binary "
        "cross-entropy against the same sampler) trained here on the normal images; write both "
        "histograms to one PNG.",
    )
    p.add_argument("model", help="model directory of an image model")
    p.add_argument("normal", help="normal images: .npz (array x, X, x_train or images) or .npy, "
                   "(n, H, W) or (n, C, H, W), 8-bit or [0, 1]")
    p.add_argument("--noise", type=positive_int, default=1000, help="uniform images (1000)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="training steps of the conventional network (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", default="hist.png", help="PNG to write (hist.png)")
    add_device(p)
    p.set_defaults(func=cmd_hist)


def cmd_hist(args: argparse.Namespace) -> int:
    """``ocsdf hist``: load, score, train the conventional network, plot. Returns 0."""
    from ..errors import InputError
    from ..pictures import load_image_array, load_image_model, score_histograms

    model = load_image_model(args.model, device=args.device)
    shape = model.image_shape_
    x = load_image_array(args.normal)
    if x.ndim == 3:
        x = x[:, None]
    if tuple(x.shape[1:]) != tuple(shape):
        raise InputError(f"{args.normal} holds images of shape {tuple(x.shape[1:])}, the model "
                         f"takes {tuple(shape)}")
    with writing(args.output):
        stats = score_histograms(model, x, args.output, n_noise=args.noise,
                                 conventional_steps=args.steps, seed=args.seed)
    print(f"wrote {args.output}: AUROC normal vs noise {stats['ocsdf_auroc']:.4f} (OCSDF), "
          f"{stats['conventional_auroc']:.4f} (conventional); median gap "
          f"{stats['ocsdf_gap']:.3g} vs {stats['conventional_gap']:.3g} interquartile ranges")
    return 0
