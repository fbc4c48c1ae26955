"""Counterfactual explanations: the nearest point the model calls normal, in the user's units.

OCSDF's score ``f`` approximates a signed distance (standardised units) with a usable gradient,
so walking from a flagged row ``x`` along ``grad f`` up to the level ``f = t`` (``t`` = the
decision threshold ``offset_``) reaches, approximately, the closest point ``x*`` that the model
considers normal. ``delta = x* - x`` says *what would have to change, and by how much*, in raw
feature units; ranking the features by their standardised change ``|delta_i| / scale_i`` names
the features responsible.

Algorithm (standardised units ``z = (x - mean_) / scale_``, ``g = grad_z f(z)``)::

    repeat at most max_steps times, for the rows with f(z) < t:
        z <- project_B( z + (t - f(z) + overshoot) * g / ||g||^2 )

a Newton step on ``f(z) = t`` along the gradient (exact in one step where ``f`` is affine along
the path), projected on the domain B (``scorer.domain``: outside B the score is at most
``-dist(z, B)``, so nothing outside B is normal). ``overshoot = max(1e-4, 0.1 * margin_)`` puts
``x*`` just inside the level set so that ``f(x*) >= t`` survives the round trip to raw units.
Rows that do not reach ``t`` keep the iterate with the highest score (``reached`` False).

Since the score is ``L``-Lipschitz (``L = lipschitz_``, about 1), any ``x'`` with ``f(x') >= t``
satisfies ``||z' - z|| >= (t - f(z)) / L``: the ``gap`` is a lower bound (for ``L = 1``) of the
distance to *any* normal point, and ``distance / gap`` close to 1 means the ``x*`` found is close
to the nearest one.

Sparse option ``max_features=k`` (see :func:`explain`): only a set ``S`` of at most ``k``
features may move; ``S`` grows greedily from the largest ``|g_i|``. Guarantee: at most ``k``
entries of every row of ``delta`` are non-zero (exactly zero elsewhere), whatever the domain.
Reaching ``f >= t`` is not guaranteed (the normal region may not meet the ``k``-dimensional slice
through ``x``); ``reached`` says whether it did.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from .errors import InputError

if TYPE_CHECKING:
    from .core.scorer import Scorer

__all__ = ["Explanation", "explain", "explain_rows"]

# Rows explained together (memory: a few arrays of shape (chunk, d)).
_CHUNK = 4096
# A feature joins the sparse set while the set holds less than this share of ||g||^2.
_SPARSE_SHARE = 0.5
# Smallest ||g|| used in a Newton step: caps the step at 10 x the remaining gap.
_MIN_GRAD_NORM = 0.1


@dataclass
class Explanation:
    """Counterfactual explanations of ``n`` rows (see :func:`explain`).

    Units: ``x``, ``x_star`` and ``delta`` are raw (the user's feature units); ``score``,
    ``score_star``, ``threshold``, ``distance`` and ``gap`` are in standardised units, the
    score's own units (``f > t`` = normal).

    Attributes
    ----------
    feature_names : list of str, length d
        ``model.feature_names_in_`` when fitted on a DataFrame, else ``"x0" .. "x{d-1}"``.
    x : ndarray, shape (n, d)
        The rows, raw units.
    x_star : ndarray, shape (n, d)
        Nearest normal point found, raw units (``== x`` for rows not flagged).
    delta : ndarray, shape (n, d)
        ``x_star - x``, raw units (0 for rows not flagged).
    score : ndarray, shape (n,)
        ``model.score_samples(x)``.
    score_star : ndarray, shape (n,)
        Score at ``x_star``.
    threshold : float
        ``t``: a row is flagged when ``score < t`` (``model.offset_`` unless overridden).
    distance : ndarray, shape (n,)
        ``||z* - z||_2`` in standardised units (0 for rows not flagged).
    gap : ndarray, shape (n,)
        ``max(t - score, 0)``: what an exact signed distance says ``distance`` should be.
    flagged : ndarray of bool, shape (n,)
        ``score < t``.
    reached : ndarray of bool, shape (n,)
        ``score_star >= t`` (True for rows not flagged).
    top : ndarray of int, shape (n, k)
        Feature indices ranked by the standardised change ``|delta_i| / scale_i``, largest
        first; ``-1`` pads rows with fewer than ``k`` changed features (all ``-1`` for rows not
        flagged). ``k = min(top, d)``.
    """

    feature_names: list[str]
    x: np.ndarray
    x_star: np.ndarray
    delta: np.ndarray
    score: np.ndarray
    score_star: np.ndarray
    threshold: float
    distance: np.ndarray
    gap: np.ndarray
    flagged: np.ndarray
    reached: np.ndarray
    top: np.ndarray

    def __len__(self) -> int:
        """Number of rows explained."""
        return int(self.x.shape[0])

    def to_frame(self) -> pd.DataFrame:
        """One row per explained row.

        Columns: ``score, flagged, distance, gap, reached``, then for ``j = 1..k``:
        ``feature_j`` (name, ``""`` where absent), ``value_j`` (``x``), ``normal_value_j``
        (``x*``), ``change_j`` (``delta``), NaN where absent. Raw units for the values,
        standardised units for ``score``, ``distance`` and ``gap``.
        """
        n, k = self.top.shape
        cols: dict[str, object] = {
            "score": self.score,
            "flagged": self.flagged,
            "distance": self.distance,
            "gap": self.gap,
            "reached": self.reached,
        }
        names = np.asarray(self.feature_names + [""], dtype=object)  # index -1 -> ""
        rows = np.arange(n)
        for j in range(k):
            idx = self.top[:, j]
            present = idx >= 0
            safe = np.where(present, idx, 0)
            cols[f"feature_{j + 1}"] = names[idx] if n else np.zeros(0, dtype=object)
            for name, arr in (("value", self.x), ("normal_value", self.x_star),
                              ("change", self.delta)):
                vals = arr[rows, safe] if n else np.zeros(0)
                cols[f"{name}_{j + 1}"] = np.where(present, vals, np.nan)
        return pd.DataFrame(cols)


def check_explain_options(top, max_features, max_steps) -> tuple[int, int | None, int]:
    """``(top, max_features, max_steps)`` checked: integers >= 1 (``max_features`` may be
    None); InputError naming the option otherwise."""
    return (_positive_int("top", top),
            _positive_int("max_features", max_features, allow_none=True),
            _positive_int("max_steps", max_steps))


def _positive_int(name: str, value, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise InputError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def explain(model, X, top: int = 5, max_features: int | None = None, max_steps: int = 50, *,
            threshold: float | None = None) -> Explanation:
    """``model.explain(X, ...)`` for a fitted :class:`ocsdf.OCSDF` (or PyOD detector): the
    estimator validates ``X`` and calls :func:`explain_rows` on its scorer."""
    return model.explain(X, top=top, max_features=max_features, max_steps=max_steps,
                         threshold=threshold)


def explain_rows(
    scorer: Scorer,
    X: np.ndarray,
    threshold: float,
    feature_names: list[str] | None = None,
    margin: float = 0.0,
    top: int = 5,
    max_features: int | None = None,
    max_steps: int = 50,
) -> Explanation:
    """Counterfactual explanation of each row: the nearest point ``scorer`` considers normal.

    Parameters
    ----------
    scorer : ocsdf.Scorer
        The fitted score (``OCSDF.scorer_``).
    X : ndarray, shape (n, d), float64
        Validated rows in raw units (zero rows give an empty :class:`Explanation`).
    threshold : float
        Level ``t`` to reach, standardised score units (``OCSDF.offset_`` for the ``predict``
        boundary); below +inf.
    feature_names : list of d str or None
        None: ``x0, x1, ...``.
    margin : float, default 0
        The model's HKR margin: the walk overshoots ``t`` by ``max(1e-4, 0.1 margin)``.
    top : int, default 5
        Number of ranked features per row (``k = min(top, d)`` columns of ``Explanation.top``).
    max_features : int or None, default None
        None: every feature may move (dense: ``x*`` approximates the nearest normal point in
        standardised l2). ``k``: at most ``k`` features may move per row. The set ``S`` starts
        empty; before each Newton step, while ``|S| < k`` and the gradient restricted to ``S``
        holds less than half of ``||g||^2``, the feature with the largest ``|g_i|`` outside
        ``S`` joins ``S`` (once in, a feature stays). The step uses ``g`` restricted to ``S``.
        At most ``k`` entries of each row of ``delta`` are non-zero (exactly zero elsewhere);
        ``f(x*) >= t`` holds when ``reached`` is True, which is not guaranteed.
    max_steps : int, default 50
        Newton steps at most (each is one forward and one backward pass over the flagged rows).

    Returns
    -------
    Explanation
        Rows with ``score >= t`` are not flagged: ``x_star == x``, ``delta == 0``,
        ``distance == 0``, ``reached`` True and ``top`` all ``-1``.

    Notes
    -----
    The walk happens in standardised units ``z``: ``z <- project_B(z + (t - f + o) g/||g||^2)``
    with ``o = max(1e-4, 0.1 margin_)``, ``||g||`` floored at 0.1. Reached rows stop moving;
    the others end at their best iterate. See the module docstring for what ``distance / gap``
    means.
    """
    top, max_features, max_steps = check_explain_options(top, max_features, max_steps)
    n, d = X.shape
    t = float(threshold)
    if np.isnan(t) or t == np.inf:
        # -inf (an fpr too small for the calibration set) flags nothing: empty explanations.
        raise InputError(f"the threshold to reach must be a number below +inf, got {t!r}")
    if feature_names is None:
        feature_names = [f"x{i}" for i in range(d)]
    k = min(top, d)
    scale = scorer.scale
    overshoot = max(1e-4, 0.1 * float(margin))

    score = scorer.score(X) if n else np.zeros(0)
    flagged = score < t
    x_star = X.copy()
    delta = np.zeros_like(X)
    score_star = score.copy()
    distance = np.zeros(n)
    rows = np.flatnonzero(flagged)
    for start in range(0, len(rows), _CHUNK):
        idx = rows[start : start + _CHUNK]
        dz = _walk(scorer, X[idx], t, overshoot, max_features, max_steps)
        delta[idx] = dz * scale
        x_star[idx] = X[idx] + delta[idx]
        distance[idx] = np.linalg.norm(dz, axis=1)
    if len(rows):
        score_star[rows] = scorer.score(x_star[rows])
    reached = ~flagged | (score_star >= t)
    top_idx = np.full((n, k), -1, dtype=np.int64)
    if len(rows):
        change = np.abs(delta[rows]) / scale
        order = np.argsort(-change, axis=1, kind="stable")[:, :k]
        nonzero = np.take_along_axis(change, order, axis=1) > 0
        top_idx[rows] = np.where(nonzero, order, -1)
    return Explanation(
        feature_names=feature_names,
        x=X,
        x_star=x_star,
        delta=delta,
        score=score,
        score_star=score_star,
        threshold=t,
        distance=distance,
        gap=np.maximum(t - score, 0.0),
        flagged=flagged,
        reached=reached,
        top=top_idx,
    )


def _walk(scorer: Scorer, x: np.ndarray, t: float, overshoot: float, max_features: int | None,
          max_steps: int) -> np.ndarray:
    """Newton walk of raw rows ``x`` (n, d) to ``f >= t``; returns ``z* - z`` (n, d),
    standardised units."""
    dev = scorer.device
    domain = scorer.domain
    z0 = torch.as_tensor(scorer.standardize(x), dtype=torch.float64, device=dev)
    z = z0.clone()
    n, d = z.shape
    best = z0.clone()
    best_f = torch.full((n,), -torch.inf, dtype=torch.float64, device=dev)
    active = torch.ones(n, dtype=torch.bool, device=dev)
    mask = torch.zeros(n, d, dtype=torch.bool, device=dev) if max_features else None

    def score_grad(zz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zz = zz.detach().requires_grad_(True)
        f = scorer.score_z_tensor(zz)
        (g,) = torch.autograd.grad(f.sum(), zz)
        return f.detach(), g

    for _ in range(max_steps + 1):
        ia = torch.nonzero(active).flatten()
        if len(ia) == 0:
            break
        f, g = score_grad(z[ia])
        better = f > best_f[ia]
        best[ia[better]] = z[ia[better]]
        best_f[ia[better]] = f[better]
        done = f >= t
        active[ia[done]] = False
        if _ == max_steps:
            break
        keep = ~done
        ia, f, g = ia[keep], f[keep], g[keep]
        if len(ia) == 0:
            break
        if mask is not None:
            m = _grow_mask(mask[ia], g, max_features)
            mask[ia] = m
            g = torch.where(m, g, torch.zeros_like(g))
        gn2 = (g * g).sum(dim=1).clamp_min(_MIN_GRAD_NORM**2)
        step = ((t - f + overshoot) / gn2).unsqueeze(1) * g
        znew = domain.project(z[ia] + step)
        if mask is not None:
            # Projection (a ball's) may touch every coordinate: put the frozen ones back.
            znew = torch.where(mask[ia], znew, z0[ia])
        z[ia] = znew
    return (best - z0).cpu().numpy()


def _grow_mask(mask: torch.Tensor, g: torch.Tensor, k: int) -> torch.Tensor:
    """Add features (largest ``|g_i|`` first) to each row's boolean ``mask`` (n, d) while it holds
    fewer than ``k`` features and less than ``_SPARSE_SHARE`` of ``||g||^2``."""
    mask = mask.clone()
    g2 = g * g
    total = g2.sum(dim=1)
    for _ in range(k):
        held = (g2 * mask).sum(dim=1)
        need = (mask.sum(dim=1) < k) & (held < _SPARSE_SHARE * total)
        if not bool(need.any()):
            break
        cand = torch.where(mask, torch.full_like(g2, -1.0), g2).argmax(dim=1)
        rows = torch.nonzero(need).flatten()
        mask[rows, cand[rows]] = True
    return mask
