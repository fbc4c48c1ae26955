"""The hinge Kantorovich–Rubinstein (HKR) loss of OCSDF (paper section 3), per model."""

from __future__ import annotations

import torch

__all__ = ["hkr_loss", "hkr_loss_and_grad"]


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


def hkr_loss_and_grad(scores_pos: torch.Tensor, scores_neg: torch.Tensor,
                      margin: torch.Tensor, lam: float = 100.0
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`hkr_loss` and its derivative w.r.t. the scores, without autograd.

    ``scores_pos`` ``(M, n_pos)``, ``scores_neg`` ``(M, n_neg)``, ``margin`` ``(M,)``. Returns
    the loss of each model ``(M,)`` and ``dL/d[scores_pos, scores_neg]`` ``(M, n_pos + n_neg)``:
    ``(-lam [m - f > 0] - 1) / n_pos`` on positives, ``(lam [m + f > 0] + 1) / n_neg`` on
    negatives (the hinge's derivative at its kink is 0, as autograd's ``relu``).
    """
    m = margin.to(scores_pos.dtype).unsqueeze(-1)
    hinge_pos = torch.relu(m - scores_pos)
    hinge_neg = torch.relu(m + scores_neg)
    loss = (lam * hinge_pos - scores_pos).mean(dim=-1) + (lam * hinge_neg + scores_neg).mean(dim=-1)
    grad = torch.cat((((hinge_pos > 0).to(scores_pos.dtype) * -lam - 1.0) / scores_pos.shape[-1],
                      ((hinge_neg > 0).to(scores_neg.dtype) * lam + 1.0) / scores_neg.shape[-1]),
                     dim=-1)
    return loss, grad
