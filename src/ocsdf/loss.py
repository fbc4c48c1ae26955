"""The hinge Kantorovich–Rubinstein (HKR) loss of OCSDF (paper section 3)."""

from __future__ import annotations

import torch

__all__ = ["hkr_loss"]


def hkr_loss(
    scores_pos: torch.Tensor, scores_neg: torch.Tensor, margin: float, lam: float = 100.0
) -> torch.Tensor:
    """HKR loss ``L(y f) = lam * max(0, m - y f) - y f``, averaged per class and summed.

    Parameters
    ----------
    scores_pos : Tensor, shape (n_pos,)
        ``f`` on normal samples (label ``y = +1``).
    scores_neg : Tensor, shape (n_neg,)
        ``f`` on negative samples from the complementary distribution (label ``y = -1``).
    margin : float
        ``m > 0``, in the units of ``f`` (standardised feature units for tabular data).
    lam : float, default 100
        Weight of the hinge term; large values make the margin constraint dominate.

    Returns
    -------
    Tensor, shape ()
        ``mean_pos L(f) + mean_neg L(-f)``.
    """
    pos = lam * torch.relu(margin - scores_pos) - scores_pos
    neg = lam * torch.relu(margin + scores_neg) + scores_neg
    return pos.mean() + neg.mean()
