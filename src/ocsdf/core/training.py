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

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .domain import Domain
from .loss import hkr_loss, hkr_loss_and_grad
from .nn import LipschitzNetwork
from .sampling import negative_starts, newton_raphson_negatives, newton_step, stack_models

__all__ = ["LR_SCHEDULES", "LINEAR_FINAL_FACTOR", "InMemoryPositives", "RMSprop", "TrainConfig",
           "TrainHistory", "lr_factor", "train"]

#: Learning-rate schedules of :class:`TrainConfig`.
LR_SCHEDULES = ("constant", "cosine", "linear")
#: Last step's rate over the first's with ``lr_schedule="linear"``.
LINEAR_FINAL_FACTOR = 1e-3


def lr_factor(schedule: str, step: int, n_steps: int) -> float:
    """Learning rate of ``step`` (0-based) over the base rate, for a run of ``n_steps``."""
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / n_steps))
    if schedule == "linear":
        return 1.0 - (1.0 - LINEAR_FINAL_FACTOR) * step / max(n_steps - 1, 1)
    return 1.0


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
    bias_lr_factor : float
        Learning rate of the biases relative to ``lr`` (networks that list their biases with
        ``biases()``). The weights are orthogonal, so the size of ``f`` deep inside the data
        (its distance to the boundary, several standardised units) is built by the biases
        alone, which RMSprop moves by about ``lr`` per step: a larger factor reaches it in
        fewer steps (measured: ADBench cardio, training rows with anomalies, 64 x 2 network,
        AUROC 0.551 / 0.645 / 0.841 after 300 / 500 / 1000 steps with factor 1, 0.894 / 0.911 /
        0.932 with factor 10).
    lr_schedule : {"constant", "cosine", "linear"}
        "cosine": the learning rate follows ``lr * (1 + cos(pi * step / n_steps)) / 2`` from
        ``lr`` at the first step to 0 at the last (a short run ends on a settled model instead
        of the last noisy update). "linear": from ``lr`` at the first step down to
        ``lr * LINEAR_FINAL_FACTOR`` (1e-3) at the last, linearly (the paper's MNIST setting,
        1e-3 to 1e-6).
    seed : int
        Seeds negatives and positive batches when :func:`train` gets no ``seeds`` (the network
        is seeded by its creator).
    autograd : bool
        True: every step by autograd, the Newton pass not fused, even where the network offers
        the hand-written step (:func:`train`); slower, the same gradients to float rounding.
        For comparisons and checks (``ocsdf bench speed``'s "before" row).
    negative_spread : float in (0, 1]
        Where the negatives' starts lie (:func:`~ocsdf.core.sampling.negative_starts`): 1 =
        uniform in B (the paper); ``a < 1``: half of them uniform in B shrunk by ``a`` about its
        centre.
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
    bias_lr_factor: float = 1.0
    lr_schedule: str = "constant"
    seed: int = 0
    autograd: bool = False
    negative_spread: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.negative_spread <= 1:
            raise ValueError(f"negative_spread must be in (0, 1], got {self.negative_spread}")
        if not self.bias_lr_factor > 0:
            raise ValueError(f"bias_lr_factor must be > 0, got {self.bias_lr_factor}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(map(repr, LR_SCHEDULES))}"
                             f", got {self.lr_schedule!r}")


@dataclass
class TrainHistory:
    """One model's log, every ``log_every`` steps: step, loss, mean f on positives and on
    negatives."""

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    f_pos: list[float] = field(default_factory=list)
    f_neg: list[float] = field(default_factory=list)


class RMSprop:
    """RMSprop as :class:`torch.optim.RMSprop` computes it with its defaults (``alpha = 0.99``,
    ``eps = 1e-8``, no momentum, not centred): the same numbers, bit for bit (tested).

    Written here because the first use of any ``torch.optim`` optimiser in a process imports
    ``torch._dynamo`` (about 1.2 s on the 2-core CI machine), which was most of a default fit;
    the update itself is a few whole-group operations on one flat running average.

    ``param_groups``: list of dicts with ``params`` and ``lr`` (changed in place by schedules).
    ``flat=True``: the parameters of each group (one dtype and device) are moved into one flat
    buffer, each parameter becoming a view of it (same values, same Parameter objects), so
    that the update is one operation per group instead of one per parameter (what the trainer
    uses).
    """

    alpha = 0.99
    eps = 1e-8

    def __init__(self, groups: list[dict], flat: bool = False) -> None:
        self.param_groups = [dict(g, params=list(g["params"])) for g in groups]
        # one flat running average per group (a few whole-group operations per step instead
        # of a few per parameter: torch's CPU foreach kernels loop over the tensors)
        self._square_avg = [torch.zeros(sum(p.numel() for p in g["params"]),
                                        dtype=g["params"][0].dtype, device=g["params"][0].device)
                            if g["params"] else None for g in self.param_groups]
        self._flat: list[torch.Tensor | None] = [None] * len(self.param_groups)
        if flat:
            for i, group in enumerate(self.param_groups):
                params = group["params"]
                if not params or len({(p.dtype, p.device) for p in params}) != 1:
                    continue
                with torch.no_grad():
                    buffer = torch.cat([p.detach().reshape(-1) for p in params])
                    for p, view in zip(params, buffer.split([p.numel() for p in params])):
                        p.data = view.view_as(p)
                self._flat[i] = buffer

    def zero_grad(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for group, square, flat in zip(self.param_groups, self._square_avg, self._flat):
            params = group["params"]
            if not params or any(p.grad is None for p in params):
                if any(p.grad is not None for p in params):
                    raise ValueError("RMSprop needs a gradient for every parameter of a group "
                                     "or for none")
                continue
            grad = torch.cat([p.grad.reshape(-1) for p in params])
            square.mul_(self.alpha).addcmul_(grad, grad, value=1 - self.alpha)
            denom = square.sqrt().add_(self.eps)
            if flat is not None:
                flat.addcdiv_(grad, denom, value=-group["lr"])
                continue
            torch._foreach_addcdiv_(params, [p.grad for p in params],
                                    [t.view_as(p) for t, p in
                                     zip(denom.split([p.numel() for p in params]), params)],
                                    value=-group["lr"])


def _optimizer(name: str, model, lr: float, bias_factor: float):
    """The optimiser over ``model``'s parameters, the biases (``model.biases()``, when the
    network lists them) in their own group at ``lr * bias_factor``."""
    params = list(model.parameters())
    biases = {id(b) for b in getattr(model, "biases", list)()} if bias_factor != 1 else set()
    groups = [{"params": [p for p in params if id(p) not in biases], "lr": lr}]
    if biases:
        groups.append({"params": [p for p in params if id(p) in biases],
                       "lr": lr * bias_factor})
    if name == "rmsprop":
        opt = RMSprop(groups, flat=True)
    elif name == "adam":
        opt = torch.optim.Adam(groups, lr=lr)
    else:
        raise ValueError(f"optimizer must be 'rmsprop' or 'adam', got {name!r}")
    for group in opt.param_groups:
        group["base_lr"] = group["lr"]
    return opt


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


class InMemoryPositives:
    """Positive batches drawn uniformly with replacement from tensors held in memory.

    The default source of :func:`train`. Any object with the same :meth:`draw` may replace it
    (e.g. a bounded shuffle buffer over a stream of rows, :mod:`ocsdf.streamfit`).

    Parameters
    ----------
    x : Tensor ``(n, d)`` or sequence of ``n_models`` tensors ``(n_i, d)``
        Normal samples in the network's input space: one set shared by all models, or one per
        model (the same tensor object given for several models is stored once).
    n_models, d : int
    device, dtype
        Where and how the rows are stored.
    """

    def __init__(self, x: torch.Tensor | Sequence[torch.Tensor], n_models: int, d: int,
                 device, dtype) -> None:
        self.data, self.offsets, self.lengths = _stack_data(x, n_models, d, device, dtype)
        self.shifted = bool((self.offsets != 0).any())  # else no offset to add

    def draw(self, gens: Sequence[torch.Generator], batch_size: int) -> torch.Tensor:
        """``(M, batch_size, d)`` rows, model ``i``'s drawn with one ``randint`` from
        ``gens[i]`` (the only use of the generators)."""
        idx = stack_models([torch.randint(n_i, (batch_size,), generator=g, device=g.device)
                            for n_i, g in zip(self.lengths, gens)])
        return self.data[idx + self.offsets if self.shifted else idx]


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
    grad_hook: Callable[[Sequence[torch.nn.Parameter]], None] | None = None,
    extra_loss: Callable[[Callable[[torch.Tensor], torch.Tensor], int], torch.Tensor]
    | None = None,
) -> list[TrainHistory]:
    """Fit the ``M`` models of ``model`` to their normal samples (paper Algorithm 3), in place.

    Each iteration draws, per model, a negative batch with Algorithm 1 from its current network
    and a positive batch, then makes ``K`` optimiser updates. The constrained weights are
    computed once per update and shared by the ``T`` sampling passes and the loss.

    Networks with ``supports_tape()`` (:class:`~ocsdf.core.nn.LipschitzMLP` with GroupSort2
    and no wide layer) are trained without autograd when no ``extra_loss`` is given: the
    weights, the forward pass and the gradients by hand (the same gradients to float rounding,
    tested), the Cayley inverses refined from the previous update's. With ``T = 1`` and
    ``K = 1`` (the tabular default) the Newton pass of the next step's negatives is computed in
    the same forward and backward pass as this step's loss: each step's negatives then come
    from the network one update older, and each step draws its positives, then the next
    step's starts and step sizes. Measured on ADBench cardio (827 x 21, 64 x 3, batch 128,
    one CPU thread, ``ocsdf bench speed``, same run): a fit 1.44 s with autograd, 0.74 s by
    hand; the AUROC on the 19 ADBench sets in ``docs/results/defaults_speed/hand_step/``.
    ``TrainConfig.autograd=True`` forces the autograd path.

    Parameters
    ----------
    model : LipschitzNetwork
        ``M`` models (``model.n_models``), trained in place on their parameters' device.
    x : Tensor ``(n, d)``, sequence of ``M`` tensors ``(n_i, d)``, or a positive source
        Normal samples in the network's input space (standardised units for tabular data): one
        set shared by all models, or one per model (sizes may differ; the same tensor object
        given for several models is stored once); or an object with
        ``draw(generators, batch_size) -> Tensor (M, batch_size, d)`` like
        :class:`InMemoryPositives`, which tensors are wrapped in.
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
    grad_hook : callable, optional
        Called with the network's parameters (``list(model.parameters())``, in that order)
        after every backward pass and before the optimiser step that uses their ``.grad``; it
        may change the gradients in place (e.g. average them over processes: data-parallel
        training in :mod:`ocsdf.distributed`). Default None: nothing is called, and training
        is exactly as without the argument.
    extra_loss : callable, optional
        ``extra_loss(forward, step) -> Tensor (M,)`` added to each model's HKR loss at every
        update; ``forward`` maps ``(M, n, d)`` inputs to ``(M, n)`` scores with the weights of
        that update (differentiable). It must not use the training generators. Default None:
        training is exactly as without the argument.

    Returns
    -------
    list of ``M`` TrainHistory

    Notes
    -----
    With RMSprop the parameters end as views of one flat buffer per parameter group (the same
    Parameter objects and values; :class:`RMSprop` with ``flat=True``).
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
    positives = x if hasattr(x, "draw") else InMemoryPositives(x, n_models, d, device, dtype)
    bs = config.batch_size
    gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    opt = _optimizer(config.optimizer, model, config.lr, config.bias_lr_factor)
    scheduled = config.lr_schedule != "constant"
    histories = [TrainHistory() for _ in range(n_models)]
    # the Newton passes' input gradients by hand where the network offers it (fewer operations)
    manual = (getattr(model, "value_and_grad_with", None)
              if getattr(model, "activation", None) == "groupsort2" else None)
    # the whole update by hand (no autograd) where the network offers it and no extra loss
    # needs autograd: the same gradients in fewer operations, the Cayley inverses refined
    # from the previous update's
    taped = (extra_loss is None and not config.autograd
             and getattr(model, "supports_tape", lambda: False)())
    # with T = 1 and K = 1, the Newton pass of the next step's negatives rides on this step's
    # training pass (one forward and backward over positives, negatives and the next starts)
    fused = taped and config.n_newton_steps == 1 and config.n_updates == 1
    inverses = None
    pending = None  # this step's negatives, made by the previous step's fused pass
    model.train()
    bar = tqdm(range(config.n_steps), disable=not progress, desc=desc, leave=False)
    # the hand-written step needs no autograd bookkeeping at all: inference mode dispatches
    # each operation faster (measured: 7 % of a default step)
    with torch.inference_mode(taped):
        for step in bar:
            t = 0 if step < config.warmup_steps else config.n_newton_steps
            if scheduled:
                decay = lr_factor(config.lr_schedule, step, config.n_steps)
                for group in opt.param_groups:
                    group["lr"] = group["base_lr"] * decay
            if taped:
                weights, inverses = model.weights_tape(inverses)
                frozen = weights
            else:
                weights = model.weights()
                frozen = [w.detach() for w in weights]
            if pending is not None:
                neg, pending = pending, None
            else:
                neg = newton_raphson_negatives(
                    lambda z, frozen=frozen: model.forward_with(frozen, z),
                    domain, bs, d, t, margin_t, gens, device, dtype,
                    value_and_grad=(lambda z, frozen=frozen: manual(frozen, z)) if manual else None,
                    spread=config.negative_spread)
            parts = [positives.draw(gens, bs).to(dtype), neg]
            starts = None
            if fused and config.warmup_steps <= step + 1 < config.n_steps:
                starts = negative_starts(domain, bs, d, 1, gens, device, dtype,
                                         spread=config.negative_spread)
                parts.append(starts[0])
            batch = torch.cat(parts, dim=1)
            for k in range(config.n_updates):
                opt.zero_grad()
                if taped:
                    if k > 0:
                        weights, inverses = model.weights_tape(inverses)
                    scores, tape = model.forward_tape(weights, batch)
                    f_pos, f_neg = scores[:, :bs], scores[:, bs:2 * bs]
                    # derivative 1 on the starts: their input gradient is grad f
                    losses, grad_scores = hkr_loss_and_grad(scores, bs, bs, margin_t, config.lam)
                    grads, grad_starts = model.backward_tape(weights, inverses, tape, grad_scores,
                                                             2 * bs)
                    for p, g in zip(params, grads):
                        p.grad = g
                    if starts is not None:
                        pending = newton_step(domain, starts[0], scores[:, 2 * bs:], grad_starts,
                                              starts[1], margin_t)
                else:
                    if k > 0:
                        weights = model.weights()
                    scores = model.forward_with(weights, batch)
                    f_pos, f_neg = scores[:, :bs], scores[:, bs:]
                    losses = hkr_loss(f_pos, f_neg, margin_t, config.lam)
                    if extra_loss is not None:
                        losses = losses + extra_loss(
                            lambda z, weights=weights: model.forward_with(weights, z), step)
                    losses.sum().backward()
                if grad_hook is not None:
                    grad_hook(params)
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
    if taped:  # no inference tensors left behind as .grad
        opt.zero_grad()
    model.eval()
    return histories
