"""The demo figure: filled contours of the learned signed distance over 2-D data.

Uses :class:`matplotlib.figure.Figure` with the Agg canvas directly, so no global pyplot state
(and no display) is involved.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import InputError
from .io import atomic_open

__all__ = ["contour_plot", "robustness_plot"]

COLORBAR_LABEL = "f(x) (signed distance, standardised units; > 0 normal)"
_GRID = 200
_PAD = 0.25


def contour_plot(
    model,
    X_train: np.ndarray,
    path: str | os.PathLike,
    title: str | None = None,
    outliers: np.ndarray | None = None,
) -> Path:
    """Write a PNG of ``model.score_samples`` over the plane of 2-D data.

    Parameters
    ----------
    model : fitted OCSDF (or any estimator with ``score_samples`` and 2 input features)
    X_train : ndarray, shape (n, 2)
        Training points in raw units; the grid covers their range plus 25 % on each side.
    path : str or PathLike
        The PNG to write, atomically (temporary file, then rename).
    title : str, optional
    outliers : ndarray, shape (m, 2), optional
        Extra points drawn as red crosses (e.g. anomalies).

    Returns
    -------
    Path
        ``path``.

    Notes
    -----
    Colours show ``f`` (> 0 normal, < 0 anomalous; diverging colours centred on 0); the thick
    black line is the decision boundary ``f = 0``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    X_train = np.asarray(X_train, dtype=np.float64)
    if X_train.ndim != 2 or X_train.shape[1] != 2:
        raise InputError(f"contour plots need 2-D points of shape (n, 2), got {X_train.shape}")
    equal = _similar_scales(model)
    xx, yy, scores = _score_grid(model, X_train, square=equal)

    fig = Figure(figsize=(7.0, 5.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    lo, hi = float(scores.min()), float(scores.max())
    norm = TwoSlopeNorm(vcenter=0.0, vmin=min(lo, -1e-6), vmax=max(hi, 1e-6))
    filled = ax.contourf(xx, yy, scores, levels=_levels(lo, hi), cmap="RdBu", norm=norm)
    if lo < 0.0 < hi:
        ax.contour(xx, yy, scores, levels=[0.0], colors="black", linewidths=2.5)
    ax.scatter(X_train[:, 0], X_train[:, 1], s=3, c="black", alpha=0.6, linewidths=0,
               label="training points")
    if outliers is not None and len(outliers):
        out = np.asarray(outliers, dtype=np.float64)
        ax.scatter(out[:, 0], out[:, 1], s=18, c="red", marker="x", label="outliers")
        ax.legend(loc="upper right", fontsize="small")
    fig.colorbar(filled, ax=ax, label=COLORBAR_LABEL, ticks=_ticks(lo, hi))
    names = _feature_names(model)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    if equal:
        ax.set_aspect("equal", adjustable="box")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png")
    return Path(path)


def _score_grid(model, X: np.ndarray, square: bool = False
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ``_GRID x _GRID`` grid over ``X``'s range plus padding, and the scores on it.

    ``square``: widen the shorter side so both sides have the same length (for an equal
    aspect ratio that still fills the axes). Returns ``xx, yy, scores``, each (_GRID, _GRID).
    """
    lo, hi = X.min(axis=0), X.max(axis=0)
    span = np.maximum(hi - lo, 1e-9)
    if square:
        centre = (lo + hi) / 2
        span = np.full(2, span.max())
        lo, hi = centre - span / 2, centre + span / 2
    lo, hi = lo - _PAD * span, hi + _PAD * span
    xx, yy = np.meshgrid(np.linspace(lo[0], hi[0], _GRID), np.linspace(lo[1], hi[1], _GRID))
    grid = np.column_stack([xx.ravel(), yy.ravel()])
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        import pandas as pd

        grid = pd.DataFrame(grid, columns=list(names))
    scores = np.asarray(model.score_samples(grid), dtype=np.float64).reshape(xx.shape)
    return xx, yy, scores


def _levels(lo: float, hi: float) -> np.ndarray | int:
    """Contour levels with 0 as a level and both signs resolved (16 bands below, 8 above)."""
    if lo < 0.0 < hi:
        return np.unique(np.r_[np.linspace(lo, 0.0, 17), np.linspace(0.0, hi, 9)])
    return 24


def _ticks(lo: float, hi: float) -> np.ndarray:
    """Round colorbar ticks on each side of 0 (the norm gives each side half the bar)."""
    from matplotlib.ticker import MaxNLocator

    ticks = np.r_[MaxNLocator(5).tick_values(min(lo, 0.0), 0.0),
                  MaxNLocator(4).tick_values(0.0, max(hi, 0.0))]
    ticks = np.unique(np.round(ticks, 12))
    return ticks[(ticks >= lo) & (ticks <= hi)]


def _feature_names(model) -> list[str]:
    """The model's two feature names, else ``["x0", "x1"]``."""
    names = getattr(model, "feature_names_in_", None)
    return [str(n) for n in names] if names is not None else ["x0", "x1"]


def _similar_scales(model) -> bool:
    """True when both features have similar standardisation scales (within a factor 1.5), so
    an equal aspect ratio shows distances undistorted."""
    scale = getattr(model, "scale_", None)
    if scale is None:
        return True
    scale = np.asarray(scale, dtype=np.float64)
    return bool(scale.max() <= 1.5 * scale.min())


def robustness_plot(
    eps: np.ndarray,
    certified: np.ndarray,
    empirical: np.ndarray | None,
    path: str | os.PathLike,
    space_label: str,
    title: str | None = None,
    reference: np.ndarray | None = None,
) -> Path:
    """Write a PNG of certified AUROC (and empirical AUROC under attack) against the budget.

    Parameters
    ----------
    eps : ndarray, shape (k,)
        l2 attack budgets, in the units named by ``space_label``.
    certified, empirical : ndarray, shape (k,)
        AUROC (normal vs anomalous) certified at each budget, and measured under a PGD attack
        (``None`` to omit). The true worst case lies between the two curves.
    reference : ndarray, shape (k,), optional
        Certified AUROC of the exact nearest-neighbour reference at the same budgets.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(eps, certified, "o-", label="certified AUROC (lower bound)")
    if empirical is not None:
        ax.plot(eps, empirical, "s--", label="AUROC under l2 PGD attack")
    if reference is not None:
        ax.plot(eps, reference, "^:", label="1-NN reference, certified")
    ax.set_xlabel(f"l2 attack budget eps ({space_label})")
    ax.set_ylabel("AUROC")
    ax.set_ylim(0.0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png")
    return Path(path)
