"""Algorithm 3 of the paper: lazy alternating training of a 1-Lipschitz network.

One training loop serves every kind of data (tabular, images flattened to vectors, 3-D points):
it sees tensors in the network's input space and a :mod:`ocsdf.domain` object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
from tqdm.auto import tqdm

from .domain import Domain
from .loss import hkr_loss
from .nn import LipschitzMLP
from .sampling import newton_raphson_negatives

__all__ = ["TrainConfig", "TrainHistory", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train` (defaults: the paper's, with steps instead of epochs).

    Attributes
    ----------
    n_steps : int
        Number of iterations (one negative batch each). Steps, not epochs: a small data set needs
        thousands of steps before ``f`` behaves like a distance.
    warmup_steps : int
        Initial iterations with ``T = 0`` (uniform negatives in B).
    batch_size : int
        Positives per iteration; the same number of negatives.
    n_newton_steps : int
        ``T`` of Algorithm 1.
    n_updates : int
        ``K``: optimiser steps per negative batch.
    margin : float
        ``m`` of the HKR loss, in input-space units.
    lam : float
        ``lambda`` of the HKR loss.
    lr : float
        RMSprop (or Adam) learning rate.
    optimizer : {"rmsprop", "adam"}
    seed : int
        Seeds negatives, positive batches (the network is seeded by its creator).
    """

    n_steps: int = 1000
    warmup_steps: int = 100
    batch_size: int = 128
    n_newton_steps: int = 4
    n_updates: int = 1
    margin: float = 0.05
    lam: float = 100.0
    lr: float = 1e-3
    optimizer: str = "rmsprop"
    seed: int = 0


@dataclass
class TrainHistory:
    """Logged every ``log_every`` steps: step, loss, mean f on positives and on negatives."""

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    f_pos: list[float] = field(default_factory=list)
    f_neg: list[float] = field(default_factory=list)


def _optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"optimizer must be 'rmsprop' or 'adam', got {name!r}")


def train(
    model: LipschitzMLP,
    x: torch.Tensor,
    domain: Domain,
    config: TrainConfig,
    progress: bool = False,
    log_every: int = 50,
) -> TrainHistory:
    """Fit ``model`` to the normal samples ``x`` with the HKR loss (paper Algorithm 3).

    Each iteration draws a negative batch with Algorithm 1 from the current network and a
    positive batch, then makes ``K`` optimiser updates on them. The orthogonal weights are
    computed once per update and shared by the ``T`` sampling passes and the loss (they only
    change at optimiser steps), which is what makes a step cheap.

    Parameters
    ----------
    model : LipschitzMLP
        Trained in place, on ``x``'s device.
    x : Tensor, shape (n, d)
        Normal samples in the network's input space (standardised units for tabular data).
    domain : Box or Ball
        Where negatives live.
    config : TrainConfig
    progress : bool
        Show a tqdm bar with the loss and the mean score on positives and negatives.

    Returns
    -------
    TrainHistory
    """
    device = x.device
    n, d = x.shape
    gen = torch.Generator(device=device).manual_seed(config.seed)
    opt = _optimizer(config.optimizer, model.parameters(), config.lr)
    history = TrainHistory()
    model.train()
    bar = tqdm(range(config.n_steps), disable=not progress, desc="ocsdf fit", leave=False)
    for step in bar:
        t = 0 if step < config.warmup_steps else config.n_newton_steps
        weights = model.weights()
        frozen = [w.detach() for w in weights]
        neg = newton_raphson_negatives(
            partial(model.forward_with, frozen),
            domain, config.batch_size, d, t, config.margin, gen, device,
        )
        pos = x[torch.randint(n, (config.batch_size,), generator=gen, device=device)]
        batch = torch.cat((pos, neg))
        for k in range(config.n_updates):
            if k > 0:
                weights = model.weights()
            scores = model.forward_with(weights, batch)
            f_pos, f_neg = scores[: len(pos)], scores[len(pos) :]
            loss = hkr_loss(f_pos, f_neg, config.margin, config.lam)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if step % log_every == 0 or step == config.n_steps - 1:
            vals = (loss.item(), f_pos.mean().item(), f_neg.mean().item())
            history.step.append(step)
            history.loss.append(vals[0])
            history.f_pos.append(vals[1])
            history.f_neg.append(vals[2])
            if progress:
                bar.set_postfix(
                    loss=f"{vals[0]:.3f}", f_pos=f"{vals[1]:.3f}", f_neg=f"{vals[2]:.3f}"
                )
    model.eval()
    return history
