"""What a model considers normal, as pictures: boundary samples (paper Figure 4) and score
histograms of normal data against uniform noise beside a conventional network (Figure 7).

Both take a fitted :class:`~ocsdf.OCSDF` (images or tables) and work in its input space: for
images the pixel box ``[0, 1]^(C H W)``; for tables the standardised space, mapped back to raw
units at the end.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["boundary_samples", "load_image_array", "load_image_model", "read_images",
           "save_image_grid", "score_histograms"]


def load_image_model(path: str | os.PathLike, device: str = "cpu"):
    """A saved OCSDF model fitted on images (:meth:`OCSDF.load`); :class:`InputError` naming
    the folder when it was fitted on tabular rows."""
    from .errors import InputError
    from .estimator import OCSDF

    model = OCSDF.load(path, device=device)
    if getattr(model, "image_shape_", None) is None:
        raise InputError(f"{path} is not an image model (fit it on images: (n, H, W) or "
                         "(n, C, H, W) arrays)")
    return model


def boundary_samples(model, n: int = 64, steps: int = 64, eta: float = 1.0,
                     level: float | None = None, seed: int = 0) -> np.ndarray:
    """Paper Algorithm 1 (:func:`~ocsdf.core.sampling.newton_raphson_negatives`, the trainer's
    sampler) run from uniform noise in B with a fixed step size: where the model puts the
    boundary of the normal region.

    ``z <- proj_B(z - (eta / steps) * (f(z) - level) * grad f(z) / ||grad f(z)||^2)``, ``steps``
    times, from ``z ~ U(B)``, with ``f`` the model's score (standardised units; pixels for
    images) and ``level = -margin_`` by default (the level the training negatives aim at; 0 for
    the decision boundary ``f = 0`` of ``contamination="auto"``).

    Returns
    -------
    ndarray
        ``(n, C, H, W)`` images in [0, 1] for an image model, else ``(n, d)`` rows in raw units.
    """
    from .core.sampling import newton_raphson_negatives

    if n < 1 or steps < 1 or not eta > 0:
        raise ValueError(f"n and steps must be >= 1 and eta > 0, got {n}, {steps}, {eta}")
    scorer = model.scorer_
    margin = float(model.margin_) if level is None else -float(level)
    z = newton_raphson_negatives(scorer.score_z_tensor, scorer.domain, n, scorer.n_features,
                                 steps, margin, torch.Generator().manual_seed(int(seed)),
                                 device=scorer.device, dtype=torch.float64, eta=eta)
    out = scorer.unstandardize(z.detach().cpu().numpy())
    shape = getattr(model, "image_shape_", None)
    return out.reshape(n, *shape) if shape is not None else out


def save_image_grid(images: np.ndarray, path: str | os.PathLike, ncol: int = 8,
                    title: str | None = None) -> Path:
    """Write ``(n, C, H, W)`` or ``(n, H, W)`` images with values in [0, 1] (clipped) as one PNG
    grid of ``ncol`` columns (grey for one channel, RGB for three). Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = np.asarray(images, dtype=np.float64)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3) or len(x) == 0:
        raise ValueError(f"images must be (n, H, W) or (n, 1|3, H, W), got {x.shape}")
    n, c, h, w = x.shape
    ncol = max(1, min(ncol, n))
    nrow = -(-n // ncol)
    grid = np.ones((nrow * (h + 1) + 1, ncol * (w + 1) + 1, c))
    for i, img in enumerate(np.clip(x, 0.0, 1.0)):
        r, q = divmod(i, ncol)
        grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = \
            img.transpose(1, 2, 0)
    fig = Figure(figsize=(ncol * 0.6 + 0.4, nrow * 0.6 + (0.6 if title else 0.3)), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(grid[..., 0] if c == 1 else grid, cmap="gray" if c == 1 else None, vmin=0,
              vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def read_images(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None] | None:
    """``(images, labels or None)`` of a ``.npy`` or ``.npz`` file whose images array (``x``,
    ``X``, ``x_train``, ``images``, or its only array) is 3-D or 4-D (``(n, H, W)`` or
    ``(n, C, H, W)``), as float64 with pixels in [0, 1] (8-bit values, any above 1, divided
    by 255); labels from ``y`` or ``y_train`` when the ``.npz`` holds them. None when the file
    is not such an image file (another suffix, no images array, or a 2-D table)."""
    p = Path(path)
    if p.suffix not in (".npy", ".npz") or not p.is_file():
        return None
    labels = None
    if p.suffix == ".npy":
        x = np.load(p, allow_pickle=False)
    else:
        with np.load(p, allow_pickle=False) as npz:
            keys = [k for k in ("x", "X", "x_train", "images") if k in npz.files] or (
                npz.files if len(npz.files) == 1 else [])
            if not keys:
                return None
            x = npz[keys[0]]
            ykeys = [k for k in ("y", "y_train") if k in npz.files]
            labels = npz[ykeys[0]] if ykeys else None
    if x.ndim not in (3, 4):
        return None
    x = np.asarray(x, dtype=np.float64)
    return (x / 255.0 if x.max(initial=0.0) > 1.0 else x), labels


def load_image_array(path: str | os.PathLike) -> np.ndarray:
    """The images of :func:`read_images`; :class:`InputError` naming the file when it holds
    none."""
    from .errors import InputError

    p = Path(path)
    if not p.is_file():
        raise InputError(f"file not found: {p}")
    found = read_images(p)
    if found is None:
        raise InputError(f"{p}: expected a .npz (array x, X, x_train or images) or .npy file of "
                         "images (n, H, W) or (n, C, H, W)")
    return found[0]


def score_histograms(model, normal: np.ndarray, path: str | os.PathLike, n_noise: int = 1000,
                     conventional_steps: int | None = None, seed: int = 0) -> dict:
    """Histograms of the scores of ``normal`` rows/images against uniform noise in B, for the
    1-Lipschitz model and for a conventional network of the same shape (ReLU, binary
    cross-entropy against the same sampler, :func:`ocsdf.baselines.train_conventional`) trained
    here on ``normal`` for ``conventional_steps`` (default: the model's ``n_steps``); one PNG of
    two panels. Returns ``{"ocsdf_auroc", "conventional_auroc", "ocsdf_gap",
    "conventional_gap"}``: AUROC of normal vs noise and the gap between the medians in units of
    the normal scores' interquartile range."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_auc_score

    from .baselines import train_conventional

    scorer = model.scorer_
    x = np.asarray(normal, dtype=np.float64).reshape(len(normal), -1)
    z = torch.as_tensor(scorer.standardize(x), device=scorer.device)
    gen = torch.Generator().manual_seed(int(seed))
    noise_z = scorer.domain.sample(n_noise, scorer.n_features, gen).to(scorer.device,
                                                                        torch.float64)
    with torch.no_grad():
        ours = (scorer.score_z_tensor(z).cpu().numpy(),
                scorer.score_z_tensor(noise_z).cpu().numpy())
    net = train_conventional(z.float(), scorer.domain, width=int(model.width_),
                             depth=int(model.depth),
                             n_steps=int(conventional_steps or model.n_steps_),
                             margin=float(model.margin_), seed=seed)
    with torch.no_grad():
        conv = (net(z.float()).double().cpu().numpy(), net(noise_z.float()).double().cpu().numpy())
    labels = np.r_[np.ones(len(x)), np.zeros(n_noise)]
    stats = {}
    fig = Figure(figsize=(9, 3.4), dpi=120)
    FigureCanvasAgg(fig)
    for i, (name, (sn, sa)) in enumerate((("ocsdf", ours), ("conventional", conv))):
        ax = fig.add_subplot(1, 2, i + 1)
        bins = np.linspace(min(sn.min(), sa.min()), max(sn.max(), sa.max()), 60)
        ax.hist(sn, bins=bins, alpha=0.6, label=f"normal ({len(sn)})")
        ax.hist(sa, bins=bins, alpha=0.6, label=f"uniform noise ({len(sa)})")
        iqr = float(np.subtract(*np.percentile(sn, [75, 25]))) or 1.0
        stats[f"{name}_auroc"] = float(roc_auc_score(labels, np.r_[sn, sa]))
        stats[f"{name}_gap"] = float((np.median(sn) - np.median(sa)) / iqr)
        title = ("1-Lipschitz OCSDF (score ~ signed distance)" if name == "ocsdf"
                 else "conventional network (logit)")
        ax.set_title(f"{title}\nAUROC {stats[f'{name}_auroc']:.3f}", fontsize=9)
        ax.set_xlabel("score")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return stats
