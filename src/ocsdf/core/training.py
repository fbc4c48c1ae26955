"""Algorithm 3 of the paper: lazy alternating training of ``M`` 1-Lipschitz networks at once.

One training loop serves every kind of data (tabular, images flattened to vectors, 3-D points)
and every number of models (``M = 1`` for a single fit, more for ``fit_many``): it sees tensors
in the network's input space, a :mod:`~ocsdf.core.domain` object and a network that follows
:class:`~ocsdf.core.nn.LipschitzNetwork`.

The models stay independent: each has its own weights, margin, data set, positive batches and
negatives (drawn with its own :class:`torch.Generator`), and the summed loss has block-diagonal
gradients; RMSprop and Adam act elementwise, so one optimiser over the stacked parameters is
``M`` optimisers. A model's trajectory does not depend on the others except through float
rounding of batched kernels (training is chaotic, so over 1000 steps such differences grow into
different, equally likely, models: measured on ADBench mammography and musk, 5 margins, AUROC
differences up to 0.016, within the seed-to-seed spread).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .domain import Domain
from .loss import hkr_loss
from .nn import LipschitzNetwork
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
        Positives per iteration and model; the same number of negatives.
    n_newton_steps : int
        ``T`` of Algorithm 1.
    n_updates : int
        ``K``: optimiser steps per negative batch.
    margin : float
        ``m`` of the HKR loss, in input-space units (when :func:`train` gets no ``margins``).
    lam : float
        ``lambda`` of the HKR loss.
    lr : float
        RMSprop (or Adam) learning rate.
    optimizer : {"rmsprop", "adam"}
    seed : int
        Seeds negatives and positive batches when :func:`train` gets no ``seeds`` (the network
        is seeded by its creator).
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
    """One model's log, every ``log_every`` steps: step, loss, mean f on positives and on
    negatives."""

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


def _stack_data(x: torch.Tensor | Sequence[torch.Tensor], n_models: int, d: int,
                device, dtype) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """One tensor holding each distinct data set once, the row offset of each model's set
    (``(M, 1)``) and the set sizes."""
    if isinstance(x, torch.Tensor):
        x = [x] * n_models
    unique: dict[int, int] = {}
    parts: list[torch.Tensor] = []
    offsets, lengths = [], []
    start = 0
    for xi in x:
        if xi.dim() != 2 or xi.shape[1] != d or len(xi) < 1:
            raise ValueError(f"each data set must have shape (n, {d}) with n >= 1, "
                             f"got {tuple(xi.shape)}")
        if id(xi) not in unique:
            unique[id(xi)] = start
            parts.append(xi.to(device=device, dtype=dtype))
            start += len(xi)
        offsets.append(unique[id(xi)])
        lengths.append(len(xi))
    data = torch.cat(parts) if len(parts) > 1 else parts[0]
    return data, torch.as_tensor(offsets, device=device).unsqueeze(1), lengths


def train(
    model: LipschitzNetwork,
    x: torch.Tensor | Sequence[torch.Tensor],
    domain: Domain,
    config: TrainConfig,
    margins: Sequence[float] | torch.Tensor | None = None,
    seeds: Sequence[int] | None = None,
    progress: bool = False,
    log_every: int = 50,
    desc: str = "ocsdf fit",
) -> list[TrainHistory]:
    """Fit the ``M`` models of ``model`` to their normal samples (paper Algorithm 3), in place.

    Each iteration draws, per model, a negative batch with Algorithm 1 from its current network
    and a positive batch, then makes ``K`` optimiser updates. The constrained weights are
    computed once per update and shared by the ``T`` sampling passes and the loss.

    Parameters
    ----------
    model : LipschitzNetwork
        ``M`` models (``model.n_models``), trained in place on their parameters' device.
    x : Tensor ``(n, d)`` or sequence of ``M`` tensors ``(n_i, d)``
        Normal samples in the network's input space (standardised units for tabular data): one
        set shared by all models, or one per model (sizes may differ; the same tensor object
        given for several models is stored once).
    domain : Box or Ball
        Where negatives live.
    config : TrainConfig
    margins : ``M`` floats or Tensor ``(M,)``, optional
        HKR margin of each model (input-space units, > 0). Default ``config.margin`` for all.
    seeds : ``M`` ints, optional
        Seed of each model's generator (its negatives' starts, step sizes and positive batches,
        drawn in that order each step). Default ``[config.seed]`` when ``M = 1``.
    progress : bool
        tqdm bar over the steps with the mean loss over models.

    Returns
    -------
    list of ``M`` TrainHistory
    """
    n_models = model.n_models
    params = list(model.parameters())
    device, dtype = params[0].device, params[0].dtype
    if margins is None:
        margins = [config.margin] * n_models
    if seeds is None:
        if n_models != 1:
            raise ValueError(f"train needs one seed per model ({n_models} models)")
        seeds = [config.seed]
    if len(seeds) != n_models or len(margins) != n_models:
        raise ValueError(f"margins and seeds need {n_models} entries (one per model), got "
                         f"{len(margins)} and {len(seeds)}")
    margin_t = torch.as_tensor(margins, dtype=dtype, device=device).reshape(n_models)
    if not bool((margin_t > 0).all()):
        raise ValueError(f"every margin must be > 0, got {margin_t.tolist()}")
    d = model.in_features
    data, offsets, lengths = _stack_data(x, n_models, d, device, dtype)
    bs = config.batch_size
    gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    opt = _optimizer(config.optimizer, params, config.lr)
    histories = [TrainHistory() for _ in range(n_models)]
    # the Newton passes' input gradients by hand where the network offers it (fewer operations)
    manual = (getattr(model, "value_and_grad_with", None)
              if getattr(model, "activation", None) == "groupsort2" else None)
    model.train()
    bar = tqdm(range(config.n_steps), disable=not progress, desc=desc, leave=False)
    for step in bar:
        t = 0 if step < config.warmup_steps else config.n_newton_steps
        weights = model.weights()
        frozen = [w.detach() for w in weights]
        neg = newton_raphson_negatives(
            lambda z, frozen=frozen: model.forward_with(frozen, z),
            domain, bs, d, t, margin_t, gens, device, dtype,
            value_and_grad=(lambda z, frozen=frozen: manual(frozen, z)) if manual else None)
        idx = torch.stack([torch.randint(n_i, (bs,), generator=g, device=device)
                           for n_i, g in zip(lengths, gens)])
        batch = torch.cat((data[idx + offsets], neg), dim=1)
        for k in range(config.n_updates):
            if k > 0:
                weights = model.weights()
            scores = model.forward_with(weights, batch)
            f_pos, f_neg = scores[:, :bs], scores[:, bs:]
            losses = hkr_loss(f_pos, f_neg, margin_t, config.lam)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
        if step % log_every == 0 or step == config.n_steps - 1:
            with torch.no_grad():
                vals = torch.stack((losses, f_pos.mean(1), f_neg.mean(1))).tolist()
            for i, h in enumerate(histories):
                h.step.append(step)
                h.loss.append(vals[0][i])
                h.f_pos.append(vals[1][i])
                h.f_neg.append(vals[2][i])
            if progress:
                mean = [sum(v) / n_models for v in vals]
                bar.set_postfix(loss=f"{mean[0]:.3f}", f_pos=f"{mean[1]:.3f}",
                                f_neg=f"{mean[2]:.3f}", models=n_models)
    model.eval()
    return histories
