"""Algorithm 1 of the paper: complementary negatives by adapted Newton–Raphson."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .domain import Domain

__all__ = ["newton_raphson_negatives"]


def newton_raphson_negatives(
    f: Callable[[torch.Tensor], torch.Tensor],
    domain: Domain,
    n: int,
    d: int,
    n_steps: int,
    margin: float,
    generator: torch.Generator,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Draw ``n`` negatives near the level set ``{f = -margin}`` (paper Algorithm 1).

    ``z0 ~ U(B)``; one step size ``eta ~ U[0, 1]`` per sample; ``n_steps`` times
    ``z <- proj_B(z - (eta / T) * grad f(z) / ||grad f(z)||^2 * (f(z) + margin))``.
    Because ``f`` is 1-Lipschitz no step overshoots the level, so negatives stay outside the
    region the model calls normal; ``eta`` spreads them along the path.

    Parameters
    ----------
    f : callable
        Maps ``(n, d)`` to ``(n,)``; differentiated w.r.t. its input only (pass a function with
        frozen weights so no parameter gradient is built).
    domain : Box or Ball
        Where negatives start and are projected back to.
    n, d : int
        Number of negatives and input dimension.
    n_steps : int
        ``T``; 0 gives uniform samples of B.
    margin : float
        ``m``, target level ``-m``.
    generator : torch.Generator

    Returns
    -------
    Tensor, shape (n, d), detached.
    """
    z = domain.sample(n, d, generator, device)
    if n_steps <= 0:
        return z
    eta = torch.rand(n, 1, generator=generator, device=device) / n_steps
    for _ in range(n_steps):
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            y = f(z)
            (grad,) = torch.autograd.grad(y.sum(), z)
        with torch.no_grad():
            step = (y + margin).unsqueeze(-1) * grad / (grad.pow(2).sum(-1, keepdim=True) + 1e-12)
            z = domain.project(z - eta * step)
    return z.detach()
