"""Robustness: sound certified radii, certified AUROC (paper Proposition 1), l2 PGD attacks.

Conventions used throughout: scores are *normality* scores (higher = more normal, as
``OCSDF.score_samples``); AUROC is the probability that a normal row outscores an anomalous one
(ties count one half), i.e. scikit-learn's ``roc_auc_score`` with normal rows as the positive
class. Budgets ``eps`` and radii are l2 norms, in the space named by ``space``:

* ``"raw"``: the user's feature units. The estimator scores ``g(x) = F((x - mean) / scale)``
  with ``F`` L-Lipschitz in standardised units, so ``||grad g(x)|| = ||diag(1/scale) grad F||
  <= L / min_i scale_i``: a raw-space bound is ``L / min(scale)``.
* ``"standardized"``: units of standard deviations, bound ``L``.

The score is the minimum of two terms, ``min(f(z), sdf_B(z))`` (the network and the signed
distance to the domain B; :meth:`ocsdf.Scorer.term_lipschitz`), and certificates bound each term
with its own constant ``(L_f, L_B)``: in raw units ``L_f = ||W_1 diag(1/scale)||_2 x`` (the
other layers' bound), the first layer's exact spectral norm with the standardisation folded in,
and ``L_B = 1 / min(scale)``. A row with terms ``(f, b)`` and threshold ``t``:

* inlier (``min(f, b) >= t``): stays one while both terms stay ``>= t``, so its radius is
  ``min((f - t) / L_f, (b - t) / L_B)``;
* outlier: must raise every term below ``t`` to ``t``, so its radius is
  ``max((t - f)_+ / L_f, (t - b)_+ / L_B)``;
* under a budget ``eps`` the score lies in ``[min(f - L_f eps, b - L_B eps),
  min(f + L_f eps, b + L_B eps)]`` (the certified AUROC uses these worst cases).

With ``L_f = L_B = L`` these are ``|score - t| / L`` and ``score -/+ L eps``; separate constants
are never looser, and tighter in raw units when feature scales differ.
"""

from __future__ import annotations

import numpy as np
import torch

from .core.scorer import Scorer

__all__ = [
    "CertificatesMixin",
    "certified_auroc",
    "certified_auroc_terms",
    "radius_from_terms",
    "score_terms",
    "term_lipschitz",
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


def term_lipschitz(model, space: str = "raw") -> tuple[float, float | None]:
    """Sound l2 bounds ``(L_f, L_B)`` of the network and domain terms of the score of
    ``model`` (estimator or scorer) in ``space``; ``L_B`` is None without the domain clip."""
    return _scorer(model).term_lipschitz(space)


def score_terms(model, X) -> np.ndarray:
    """``(n, 2)`` terms ``(f, sdf_B)`` of the score of the raw rows ``X`` (validated as
    ``score_samples`` validates them); ``score_samples`` is their row minimum."""
    scorer = _scorer(model)
    if scorer is model:  # a bare scorer: rows are a float64 array already
        return scorer.score_terms(np.asarray(X, dtype=np.float64))
    if hasattr(model, "_validate_rows"):  # OCSDF: validation alone
        rows = model._validate_rows(X)
    else:  # validated by scoring them (the one-line errors of score_samples)
        n = len(model.score_samples(X))
        rows = np.asarray(X, dtype=np.float64).reshape(n, -1)
    return scorer.score_terms(rows)


def radius_from_terms(terms: np.ndarray, threshold: float, lipschitz: tuple) -> np.ndarray:
    """Certified l2 radius of each row from its ``(n, 2)`` score terms (module docstring):
    no perturbation of smaller norm moves ``min(terms) - threshold`` across 0. ``lipschitz``
    is ``(L_f, L_B)`` (``L_B`` None: the domain term is ``+inf`` and ignored). Shape (n,)."""
    lf, lb = lipschitz
    terms = np.asarray(terms, dtype=np.float64).reshape(-1, 2)
    gap = terms - threshold  # (n, 2): > 0 where a term is above the threshold
    scale = np.array([lf, np.inf if lb is None else lb])
    with np.errstate(invalid="ignore"):
        inside = gap.min(axis=1) >= 0
        r_in = np.where(np.isinf(gap), np.inf, gap / scale).min(axis=1)
        r_out = (np.clip(-gap, 0.0, None) / scale).max(axis=1)
    return np.where(inside, r_in, np.nan_to_num(r_out, nan=0.0))


def certified_radius(model, X, space: str = "raw") -> np.ndarray:
    """Per-row certified l2 radius around the decision threshold ``t = offset_``.

    No perturbation of l2 norm below the radius (in ``space`` units) can move a row across
    ``t`` (i.e. change ``predict``). Each term of the score gets its own bound
    (:func:`radius_from_terms`); never smaller than ``|score - t| / L``. Shape
    ``(n_samples,)``.
    """
    return radius_from_terms(score_terms(model, X), float(model.offset_),
                             term_lipschitz(model, space))


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
    sa = np.asarray(scores_anomalous, dtype=np.float64).ravel()
    return certified_auroc_terms(np.c_[sn, np.full(sn.size, np.inf)],
                                 np.c_[sa, np.full(sa.size, np.inf)], eps, (lipschitz, None))


def certified_auroc_terms(terms_normal, terms_anomalous, eps, lipschitz: tuple):
    """Certified AUROC from the two score terms of each row (module docstring), each with its
    own bound: the AUROC of the normal rows' lowest possible scores against the anomalous
    rows' highest, ``min(f -/+ L_f eps, b -/+ L_B eps)``.

    Parameters
    ----------
    terms_normal, terms_anomalous : array-like, shape (n, 2)
        ``(f, sdf_B)`` per row (:func:`score_terms`); the score is the row minimum.
    eps : float or array-like of float, >= 0
        l2 budgets, in the units of ``lipschitz``.
    lipschitz : (L_f, L_B)
        Bounds of the two terms (``L_B`` None: domain term ignored).

    Returns
    -------
    float or ndarray shaped like ``eps``; never below :func:`certified_auroc` with
    ``max(L_f, L_B)``.
    """
    tn = np.asarray(terms_normal, dtype=np.float64).reshape(-1, 2)
    ta = np.asarray(terms_anomalous, dtype=np.float64).reshape(-1, 2)
    if len(tn) == 0 or len(ta) == 0:
        raise ValueError("certified_auroc needs at least one normal and one anomalous score")
    eps_arr = np.asarray(eps, dtype=np.float64)
    if np.any(eps_arr < 0) or not np.all(np.isfinite(eps_arr)):
        raise ValueError("eps must be finite and >= 0")
    lf, lb = lipschitz
    rate = np.array([lf, 0.0 if lb is None else lb])
    out = np.empty(eps_arr.size)
    for i, e in enumerate(eps_arr.ravel()):
        low = (tn - rate * e).min(axis=1)
        high = np.sort((ta + rate * e).min(axis=1))
        below = np.searchsorted(high, low, side="left")
        ties = np.searchsorted(high, low, side="right") - below
        out[i] = (below.sum() + 0.5 * ties.sum()) / (len(tn) * len(ta))
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

        In ``space`` units: "raw" (the user's feature units) or "standardized". Each term of
        the score (network, domain) is bounded with its own sound constant
        (:func:`radius_from_terms`); at least ``|decision_function(x)| / L``. No perturbation
        with a smaller l2 norm can change ``predict`` for that row.
        """
        return certified_radius(self, X, space)

    def certified_auroc(self, X_normal, X_anomalous, eps, space: str = "raw"):
        """Certified AUROC of normal vs anomalous rows under l2 attacks of budget ``eps``
        (scalar or array, in ``space`` units); see :func:`certified_auroc_terms`."""
        return certified_auroc_terms(score_terms(self, X_normal), score_terms(self, X_anomalous),
                                     eps, term_lipschitz(self, space))
