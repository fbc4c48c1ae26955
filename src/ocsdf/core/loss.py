"""The hinge Kantorovich–Rubinstein (HKR) loss of OCSDF (paper section 3), per model."""

from __future__ import annotations

import functools

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


def hkr_loss_and_grad(scores: torch.Tensor, n_pos: int, n_neg: int, margin: torch.Tensor,
                      lam: float = 100.0) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`hkr_loss` and its derivative w.r.t. the scores, without autograd.

    ``scores`` ``(M, n)``: ``n_pos`` positives, then ``n_neg`` negatives, then any extra rows
    (points whose input gradient is wanted from the same backward pass; not in the loss).
    ``margin`` ``(M,)``. Returns the loss of each model ``(M,)`` and ``dL/dscores`` ``(M, n)``:
    ``(-lam [m - f > 0] - 1) / n_pos`` on positives, ``(lam [m + f > 0] + 1) / n_neg`` on
    negatives (the hinge's derivative at its kink is 0, as autograd's ``relu``), 1 on the
    extra rows.
    """
    sign, weight, slope, const = _hkr_coefficients(
        n_pos, n_neg, scores.shape[1] - n_pos - n_neg, float(lam), scores.dtype, scores.device)
    yf = scores * sign
    hinge = (margin.to(scores.dtype).unsqueeze(-1) - yf).relu_()
    loss = ((hinge * lam - yf) * weight).sum(dim=-1)
    active = torch.gt(hinge, 0, out=torch.empty_like(hinge))  # 1.0 / 0.0
    grad = torch.addcmul(const, active, slope)
    return loss, grad


@functools.lru_cache(maxsize=32)
def _hkr_coefficients(n_pos: int, n_neg: int, n_extra: int, lam: float, dtype: torch.dtype,
                      device: torch.device) -> tuple[torch.Tensor, ...]:
    """Per-row constants of :func:`hkr_loss_and_grad`, each ``(1, n)``: the label ``y``, the
    averaging weight ``w`` (0 on extra rows), and ``slope = -lam y w``, ``const = -y w`` (1 on
    extra rows), so that ``dL/df = slope * [hinge > 0] + const``. Normal tensors even when first
    asked for in inference mode (autograd may use them later)."""
    def rows(pos: float, neg: float, extra: float) -> torch.Tensor:
        return torch.tensor([pos] * n_pos + [neg] * n_neg + [extra] * n_extra,
                            dtype=dtype, device=device).unsqueeze(0)

    with torch.inference_mode(False):
        return (rows(1.0, -1.0, 0.0), rows(1.0 / n_pos, 1.0 / n_neg, 0.0),
                rows(-lam / n_pos, lam / n_neg, 0.0), rows(-1.0 / n_pos, 1.0 / n_neg, 1.0))
