"""Robustness: sound certified radii, certified AUROC (paper Proposition 1), l2 PGD attacks.

Conventions used throughout: scores are *normality* scores (higher = more normal, as
``OCSDF.score_samples``); AUROC is the probability that a normal row outscores an anomalous one
(ties count one half), i.e. scikit-learn's ``roc_auc_score`` with normal rows as the positive
class. Budgets ``eps`` and radii are l2 norms, in the space named by ``space``:

* ``"raw"``: the user's feature units. The estimator scores ``g(x) = F((x - mean) / scale)``
  with ``F`` L-Lipschitz in standardised units, so ``||grad g(x)|| = ||diag(1/scale) grad F||
  <= L / min_i scale_i``: the raw-space bound is ``L_raw = L / min(scale)``.
* ``"standardized"``: units of standard deviations, bound ``L``.
"""

from __future__ import annotations

import numpy as np
import torch

from .core.scorer import Scorer

__all__ = [
    "CertificatesMixin",
    "certified_auroc",
    "lipschitz_in",
    "certified_radius",
    "local_lipschitz",
    "pgd_attack",
    "empirical_auroc_under_attack",
]


def _scorer(model) -> Scorer:
    """The fitted scorer of ``model``: an estimator's ``scorer_`` (a :class:`~ocsdf.Scorer` or
    :class:`~ocsdf.knn.KNNScorer`), or such a scorer itself."""
    return model.scorer_ if hasattr(model, "scorer_") else model


def lipschitz_in(model, space: str = "raw") -> float:
    """Sound l2 Lipschitz bound of the score of ``model`` (a fitted estimator or a
    :class:`~ocsdf.Scorer`) in ``space`` ("raw" or "standardized"); see the module docstring
    for the derivation."""
    return _scorer(model).lipschitz_in(space)


def local_lipschitz(score_fn, x, dtype: torch.dtype = torch.float64) -> float:
    """``max_i ||grad score_fn(x_i)||_2`` over the rows of ``x`` (array or tensor, (n, d)):
    the empirical (local) Lipschitz constant, a lower bound of the true one.

    ``score_fn`` maps a ``dtype`` tensor of rows to scores (a module or ``OCSDF.score_tensor``).
    """
    xt = torch.as_tensor(x).detach().to(dtype).clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(score_fn(xt).reshape(-1).sum(), xt)
    return float(grad.norm(dim=1).max())


def certified_radius(model, X, space: str = "raw") -> np.ndarray:
    """Per-row certified l2 radius ``|f(x) - t| / L`` around the decision threshold.

    No perturbation of l2 norm below the radius (in ``space`` units) can move a row across
    ``t = offset_`` (i.e. change ``predict``). Shape ``(n_samples,)``.
    """
    return np.abs(model.decision_function(X)) / lipschitz_in(model, space)


def certified_auroc(scores_normal, scores_anomalous, eps, lipschitz: float = 1.0):
    """Certified AUROC (paper Proposition 1) for l2 attack budgets ``eps``.

    The attacker may lower each normal score and raise each anomalous score by at most
    ``lipschitz * eps``; the certified AUROC is the AUROC of those worst-case scores, a lower
    bound of the AUROC under any such attack. Cost: one sort of the anomalous scores, then a
    binary search per normal score and budget.

    Parameters
    ----------
    scores_normal : array-like, shape (n_normal,)
        Normality scores of normal rows (higher = more normal).
    scores_anomalous : array-like, shape (n_anomalous,)
    eps : float or array-like of float, >= 0
        l2 budgets, in the units in which ``lipschitz`` is stated.
    lipschitz : float, default 1
        Sound Lipschitz bound of the score in those units.

    Returns
    -------
    float or ndarray shaped like ``eps``
        At ``eps = 0`` equal to ``roc_auc_score`` with normal rows as positives (ties count 1/2).
    """
    sn = np.asarray(scores_normal, dtype=np.float64).ravel()
    sa = np.sort(np.asarray(scores_anomalous, dtype=np.float64).ravel())
    if sn.size == 0 or sa.size == 0:
        raise ValueError("certified_auroc needs at least one normal and one anomalous score")
    eps_arr = np.asarray(eps, dtype=np.float64)
    if np.any(eps_arr < 0) or not np.all(np.isfinite(eps_arr)):
        raise ValueError("eps must be finite and >= 0")
    out = np.empty(eps_arr.size)
    for i, e in enumerate(eps_arr.ravel()):
        shifted = sn - 2.0 * lipschitz * e
        below = np.searchsorted(sa, shifted, side="left")
        ties = np.searchsorted(sa, shifted, side="right") - below
        out[i] = (below.sum() + 0.5 * ties.sum()) / (sn.size * sa.size)
    return float(out[0]) if eps_arr.ndim == 0 else out.reshape(eps_arr.shape)


def pgd_attack(
    score_fn,
    x: torch.Tensor,
    eps: float,
    direction: int,
    n_iter: int = 50,
    rel_step: float = 0.025,
    restarts: int = 3,
    clip: tuple[float, float] | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """l2 projected gradient attack on a score, row by row.

    Parameters
    ----------
    score_fn : callable
        Differentiable ``(n, d) -> (n,)`` float64 tensor function (e.g. ``OCSDF.score_tensor``).
    x : Tensor, shape (n, d)
        Rows to attack, in ``score_fn``'s input units.
    eps : float
        l2 budget per row, same units.
    direction : {-1, +1}
        -1 lowers the score (attack on normal rows), +1 raises it (anomalous rows).
    n_iter, rel_step : int, float
        Iterations and step size as a fraction of ``eps`` (Foolbox's l2 PGD default 0.025).
    restarts : int
        Random starts in the eps-ball; the first start is ``x`` itself. The best is kept.
    clip : (low, high) or None
        Data domain (e.g. the pixel range) to project on after each step.

    Returns
    -------
    Tensor, shape (n, d): adversarial rows with ``||x_adv - x|| <= eps`` (up to rounding).
    """
    if direction not in (-1, 1):
        raise ValueError("direction must be -1 (lower the score) or +1 (raise it)")
    x = x.detach().to(torch.float64)
    if eps <= 0:
        return x.clone()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    best = x.clone()
    with torch.no_grad():
        best_score = score_fn(x) * direction
    step = rel_step * eps
    for r in range(max(1, restarts)):
        if r == 0:
            adv = x.clone()
        else:
            noise = torch.randn(x.shape, generator=gen, dtype=x.dtype, device=x.device)
            noise = noise / noise.norm(dim=1, keepdim=True).clamp_min(1e-12)
            radius = eps * torch.rand(len(x), 1, generator=gen, dtype=x.dtype, device=x.device)
            adv = _project(x, x + noise * radius, eps, clip)
        for _ in range(n_iter):
            adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(score_fn(adv).sum(), adv)
            with torch.no_grad():
                g = grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
                adv = _project(x, adv + direction * step * g, eps, clip)
                s = score_fn(adv) * direction
                better = s > best_score
                best[better] = adv[better]
                best_score = torch.where(better, s, best_score)
    return best


def _project(x: torch.Tensor, adv: torch.Tensor, eps: float, clip) -> torch.Tensor:
    delta = adv - x
    norm = delta.norm(dim=1, keepdim=True)
    delta = delta * torch.clamp(eps / norm.clamp_min(1e-300), max=1.0)
    out = x + delta
    if clip is not None:
        out = out.clamp(clip[0], clip[1])
    return out.detach()


def empirical_auroc_under_attack(
    model,
    X_normal,
    X_anomalous,
    eps,
    space: str = "raw",
    **attack_kwargs,
) -> np.ndarray:
    """AUROC after an l2 PGD attack of budget ``eps`` on every row (normal rows pushed down,
    anomalous rows pushed up). Upper-bounds the true worst case; the certified AUROC
    lower-bounds it. ``eps`` scalar or array, in ``space`` units. Returns shape of ``eps``."""
    from sklearn.metrics import roc_auc_score

    scorer = _scorer(model)
    device = scorer.device  # attack where the model scores
    xn = np.asarray(X_normal, dtype=np.float64)
    xa = np.asarray(X_anomalous, dtype=np.float64)
    if space == "raw":
        score_fn = scorer.score_tensor
    elif space == "standardized":
        score_fn = scorer.score_z_tensor
        xn, xa = scorer.standardize(xn), scorer.standardize(xa)
    else:
        raise ValueError(f"space must be 'raw' or 'standardized', got {space!r}")
    eps_arr = np.atleast_1d(np.asarray(eps, dtype=np.float64))
    labels = np.r_[np.ones(len(xn)), np.zeros(len(xa))]
    out = []
    for e in eps_arr:
        an = pgd_attack(score_fn, torch.as_tensor(xn, device=device), float(e), -1,
                        **attack_kwargs)
        aa = pgd_attack(score_fn, torch.as_tensor(xa, device=device), float(e), +1,
                        **attack_kwargs)
        with torch.no_grad():
            scores = torch.cat((score_fn(an), score_fn(aa))).cpu().numpy()
        out.append(roc_auc_score(labels, scores))
    out = np.asarray(out)
    return float(out[0]) if np.ndim(eps) == 0 else out


class CertificatesMixin:
    """``certified_radius`` and ``certified_auroc`` for a fitted estimator that has
    ``decision_function``, ``score_samples`` and a ``scorer_`` (``OCSDF``, ``KNNDistance``)."""

    def certified_radius(self, X, space: str = "raw") -> np.ndarray:
        """Certified l2 radius of each row around the threshold ``offset_``, shape (n_samples,).

        ``|decision_function(x)| / L`` with ``L`` the sound bound in ``space``: "raw" (the
        user's feature units, ``L = lipschitz_ / min(scale_)``) or "standardized". No
        perturbation with a smaller l2 norm can change ``predict`` for that row.
        """
        return certified_radius(self, X, space)

    def certified_auroc(self, X_normal, X_anomalous, eps, space: str = "raw"):
        """Certified AUROC of normal vs anomalous rows under l2 attacks of budget ``eps``
        (scalar or array, in ``space`` units); see :func:`certified_auroc`."""
        return certified_auroc(self.score_samples(X_normal), self.score_samples(X_anomalous),
                               eps, lipschitz_in(self, space))
