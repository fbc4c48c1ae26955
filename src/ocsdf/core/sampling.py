"""Algorithm 1 of the paper: complementary negatives by adapted Newton–Raphson, per model."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .domain import Ball, Box, Domain

__all__ = ["domain_centre", "negative_starts", "newton_raphson_negatives", "newton_step",
           "stack_models"]


def newton_raphson_negatives(
    f: Callable[[torch.Tensor], torch.Tensor],
    domain: Domain,
    n: int,
    d: int,
    n_steps: int,
    margin: float | torch.Tensor,
    generator: torch.Generator | Sequence[torch.Generator],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    value_and_grad: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    eta: float | None = None,
    spread: float = 1.0,
) -> torch.Tensor:
    """Draw ``n`` negatives per model near the level set ``{f = -margin}`` (paper Algorithm 1).

    ``z0 ~ U(B)``; one step size ``eta ~ U[0, 1]`` per sample; ``n_steps`` times
    ``z <- proj_B(z - (eta / T) * grad f(z) / ||grad f(z)||^2 * (f(z) + margin))``.
    Because ``f`` is 1-Lipschitz no step overshoots the level, so negatives stay outside the
    region the model calls normal; ``eta`` spreads them along the path.

    Parameters
    ----------
    f : callable
        With one generator: ``(n, d) -> (n,)``. With ``M`` generators: ``(M, n, d) -> (M, n)``
        (model ``i`` scores ``z[i]``). Differentiated w.r.t. its input only: pass a function
        with frozen weights so that no parameter gradient is built.
    domain : Box or Ball
        Where negatives start and are projected back to.
    n, d : int
        Negatives per model and input dimension.
    n_steps : int
        ``T``; 0 gives uniform samples of B.
    margin : float or Tensor ``(M,)``
        ``m``, target level ``-m`` (per model).
    generator : torch.Generator or sequence of ``M`` generators
        Model ``i`` draws its starts, then its step sizes, from its own generator (so a model's
        negatives do not depend on the others).

    value_and_grad : callable, optional
        ``z -> (f(z), grad f(z))`` in one pass, same shapes as ``f`` (e.g.
        :meth:`~ocsdf.core.nn.LipschitzMLP.value_and_grad_with`); default: autograd on ``f``.
    eta : float, optional
        A fixed step size for every sample instead of ``eta ~ U[0, 1]`` (no step-size draw):
        ``eta = 1`` moves each sample along the whole path (the paper's Figure 4 pictures).
    spread : float in (0, 1], default 1
        Where the starts lie (:func:`negative_starts`): 1 = uniform in B (the paper).

    Returns
    -------
    Tensor, shape ``(n, d)`` (one generator) or ``(M, n, d)``, detached.
    """
    single = isinstance(generator, torch.Generator)
    gens = [generator] if single else list(generator)
    z, eta = negative_starts(domain, n, d, n_steps, gens, device, dtype, eta, spread)
    if n_steps > 0:
        fm = (lambda x: f(x[0]).unsqueeze(0)) if single else f
        for _ in range(n_steps):
            if value_and_grad is not None:
                y, grad = (value_and_grad(z[0]) if single else value_and_grad(z))
                if single:
                    y, grad = y.unsqueeze(0), grad.unsqueeze(0)
            else:
                z = z.detach().requires_grad_(True)
                with torch.enable_grad():
                    y = fm(z)
                    (grad,) = torch.autograd.grad(y.sum(), z)
            z = newton_step(domain, z, y, grad, eta, margin)
    z = z.detach()
    return z[0] if single else z


def negative_starts(domain: Domain, n: int, d: int, n_steps: int,
                    generators: Sequence[torch.Generator], device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32, eta: float | None = None,
                    spread: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The random part of Algorithm 1: starts ``z0`` ``(M, n, d)`` and step sizes ``eta / T``
    ``(M, n, 1)`` (None when ``n_steps = 0``), model ``i`` drawing its starts, then its step
    sizes, from ``generators[i]``. ``eta``: a fixed step size instead of ``U[0, 1]``.

    ``spread = 1``: ``z0 ~ U(B)`` (the paper). ``spread = a < 1``: each start is drawn in B, then,
    with probability 1/2 (one more uniform draw per start, right after the start), moved to
    ``c + a (z0 - c)``, ``c`` the centre of B: half the starts are uniform in B shrunk by ``a``
    about its centre, nearer the data that standardisation centres there. Both halves stay in B
    (it is convex and holds ``c``).
    """
    if not 0 < spread <= 1:
        raise ValueError(f"spread must be in (0, 1], got {spread}")
    centre = domain_centre(domain) if spread < 1 else 0.0
    parts = []
    for g in generators:
        z0 = domain.sample(n, d, g, device)
        if spread < 1:
            near = torch.rand(n, 1, generator=g, device=device) < 0.5
            z0 = centre + torch.where(near, spread, 1.0) * (z0 - centre)
        parts.append(z0)
    z = stack_models(parts).to(dtype)
    if n_steps <= 0:
        return z, None
    steps = (torch.full((len(generators), n, 1), float(eta), dtype=dtype, device=device)
             if eta is not None else
             stack_models([torch.rand(n, 1, generator=g, device=device) for g in generators]
                          ).to(dtype))
    return z, (steps / n_steps if n_steps != 1 else steps)


def domain_centre(domain: Domain) -> float:
    """Centre of B, the same in every coordinate: the box's midpoint, the ball's origin (the
    base of a :class:`~ocsdf.core.domain.WithBalls` domain, where negatives start)."""
    base = getattr(domain, "base", domain)
    if isinstance(base, Box):
        return 0.5 * (base.low + base.high)
    if isinstance(base, Ball):
        return 0.0
    raise TypeError(f"no centre for a domain of type {type(base).__name__}")


def stack_models(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.stack(parts)`` along a new leading model axis, without a copy for one model."""
    return parts[0].unsqueeze(0) if len(parts) == 1 else torch.stack(parts)


def newton_step(domain: Domain, z: torch.Tensor, y: torch.Tensor, grad: torch.Tensor,
                eta: torch.Tensor, margin: float | torch.Tensor) -> torch.Tensor:
    """One step of Algorithm 1 from ``f(z)`` ``y`` ``(M, n)`` and ``grad f(z)`` ``(M, n, d)``:
    ``proj_B(z - eta * grad / ||grad||^2 * (f(z) + m))``, ``eta`` ``(M, n, 1)`` (already over
    ``T``), ``margin`` per model. Detached."""
    with torch.no_grad():
        target = torch.as_tensor(margin, dtype=z.dtype, device=z.device).reshape(-1, 1)
        scale = (y + target) / (grad.pow(2).sum(-1) + 1e-12)
        return domain.project(torch.addcmul(z, eta * scale.unsqueeze(-1), grad, value=-1.0))
