"""The hinge Kantorovich–Rubinstein (HKR) loss of OCSDF (paper section 3), per model."""

from __future__ import annotations

import torch

__all__ = ["hkr_loss"]


def hkr_loss(scores_pos: torch.Tensor, scores_neg: torch.Tensor,
             margin: float | torch.Tensor, lam: float = 100.0) -> torch.Tensor:
    """HKR loss ``L(y f) = lam * max(0, m - y f) - y f``, averaged per class and summed.

    Parameters
    ----------
    scores_pos : Tensor, shape (..., n_pos)
        ``f`` on normal samples (label ``y = +1``); leading axes are models.
    scores_neg : Tensor, shape (..., n_neg)
        ``f`` on negatives from the complementary distribution (``y = -1``).
    margin : float or Tensor of the leading shape (one margin per model)
        ``m > 0``, in the units of ``f`` (standardised feature units for tabular data).
    lam : float, default 100
        Weight of the hinge term; large values make the margin constraint dominate.

    Returns
    -------
    Tensor of the leading shape (``()`` for 1-D scores)
        ``mean_pos L(f) + mean_neg L(-f)`` of each model.
    """
    m = torch.as_tensor(margin, dtype=scores_pos.dtype, device=scores_pos.device).unsqueeze(-1)
    pos = lam * torch.relu(m - scores_pos) - scores_pos
    neg = lam * torch.relu(m + scores_neg) + scores_neg
    return pos.mean(dim=-1) + neg.mean(dim=-1)
