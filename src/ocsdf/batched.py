"""Train many small OCSDF networks at once: one batched network, one optimiser, M models.

A study such as ``ocsdf bench tabular`` fits hundreds of ``128 x 3`` networks for 1000 steps
each. On one CPU thread such a step is dominated by the fixed cost of each torch operation on
tiny matrices, not by arithmetic. :class:`BatchedLipschitzMLP` stacks the parameters of ``M``
independent :class:`~ocsdf.nn.LipschitzMLP` networks on a leading model dimension and evaluates
all of them with batched matrix products (``torch.baddbmm``), so one step of
:func:`train_batched` costs about as many operations as one step of
:func:`ocsdf.training.train`, for ``M`` models.

The models stay independent: each has its own weights, margin, data set, positive batches and
negatives (drawn with its own :class:`torch.Generator`, in the same order as
:func:`ocsdf.training.train` draws them), and the summed loss has block-diagonal gradients;
RMSprop and Adam act elementwise, so one optimiser over the stacked parameters is M optimisers.
With ``M = 1`` and the same seed the batched trainer follows :func:`ocsdf.training.train` up to
floating-point rounding (batched and unbatched kernels round differently). Training is chaotic,
so over 1000 steps these rounding differences grow into different (equally likely) models:
measured on ADBench mammography and musk, 5 margins, the AUROC of a batched fit and of the
separate fit with the same seed differ by up to 0.016, within the seed-to-seed spread.

:func:`fit_many` returns ordinary fitted :class:`~ocsdf.OCSDF` estimators (score, save, load,
certify like any other); :meth:`BatchedLipschitzMLP.split` returns plain ``LipschitzMLP``
networks holding exactly the batched parameters.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .domain import Domain
from .errors import InputError
from .nn import GroupSort, LipschitzMLP, make_mlp
from .training import TrainConfig, TrainHistory, _optimizer

if TYPE_CHECKING:
    from .estimator import OCSDF

__all__ = [
    "BatchedLipschitzMLP",
    "batched_cayley_orthogonal",
    "fit_many",
    "speed_comparison",
    "train_batched",
]


def batched_cayley_orthogonal(
    param: torch.Tensor, out_features: int, in_features: int
) -> torch.Tensor:
    """Orthogonal matrices of shape ``(M, out_features, in_features)`` from ``(M, n, n)``.

    The batched form of :func:`ocsdf.nn.cayley_orthogonal` (same transform: top-left block of
    ``(I + A)^{-1} (I - A)`` with ``A = triu(P, 1) - triu(P, 1)^T``), one batched linear solve
    for all ``M`` models. ``n = max(out_features, in_features)``.

    A wide layer (``in_features > out_features``, e.g. the first layer on 274 features) solves
    for its ``out`` rows instead of its ``in`` columns: ``I + A`` and ``I - A`` commute, so
    ``Q^T = (I - A)^{-1} (I + A)`` and the top ``out`` rows of ``Q`` are the transpose of
    ``solve(I - A, (I + A)[:, :out])``; the same matrix, with ``out`` instead of ``in``
    right-hand sides (equal to :func:`ocsdf.nn.cayley_orthogonal` up to float rounding).
    """
    upper = param.triu(1)
    skew = upper - upper.transpose(-1, -2)
    eye = torch.eye(param.shape[-1], dtype=param.dtype, device=param.device)
    if in_features > out_features:
        qt = torch.linalg.solve(eye - skew, (eye + skew)[..., :out_features])
        return qt[..., :in_features, :].transpose(-1, -2)
    q = torch.linalg.solve(eye + skew, (eye - skew)[..., :in_features])
    return q[..., :out_features, :]


class _GroupSort2Halves(torch.autograd.Function):
    """GroupSort2 on pairs ``(x[..., k], x[..., k + w/2])``, output ``[max..., min...]``.

    The same function as :class:`~ocsdf.nn.GroupSort` (pairs ``(2k, 2k+1)``, interleaved
    output) in a permuted layout of the hidden units, which :class:`BatchedLipschitzMLP` absorbs
    into the rows and columns of its weights. Computed with ``maximum``/``minimum`` and a
    float mask instead of ``torch.sort`` on pairs, which is several times slower on CPU.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        k = x.shape[-1] // 2
        a, b = x[..., :k], x[..., k:]
        ctx.save_for_backward((a >= b).to(x.dtype))
        out = torch.empty_like(x)
        torch.maximum(a, b, out=out[..., :k])
        torch.minimum(a, b, out=out[..., k:])
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (mask,) = ctx.saved_tensors
        k = grad.shape[-1] // 2
        g_hi, g_lo = grad[..., :k], grad[..., k:]
        swap = mask * (g_hi - g_lo)  # a gets g_hi where a >= b, else g_lo; b the other one
        out = torch.empty_like(grad)
        torch.add(g_lo, swap, out=out[..., :k])
        torch.sub(g_hi, swap, out=out[..., k:])
        return out


class BatchedLipschitzMLP(nn.Module):
    """``M`` independent :class:`~ocsdf.nn.LipschitzMLP` networks with stacked parameters.

    Parameters
    ----------
    n_models : int
        ``M``.
    in_features : int
        Input dimension ``d`` (the same for every model).
    hidden : sequence of int
        Hidden widths (the same for every model).
    activation : {"groupsort2", "fullsort"}

    Notes
    -----
    Parameters: ``dense_params[l]`` of shape ``(M, n_l, n_l)`` (Cayley parameter of layer ``l``,
    ``n_l = max(in_l, out_l)``), ``dense_biases[l]`` ``(M, out_l)``, ``head_param``
    ``(M, 1, width)`` and ``head_bias`` ``(M, 1)``: slice ``i`` of each is model ``i``'s
    :class:`~ocsdf.nn.CayleyLinear` / :class:`~ocsdf.nn.UnitNormLinear` parameter. Build one
    with :meth:`from_models` (copies) and get the models back with :meth:`split`.
    ``forward(x)`` maps ``(M, n, d)`` (or ``(n, d)``, shared by all models) to ``(M, n)``.
    """

    def __init__(
        self, n_models: int, in_features: int, hidden: Sequence[int],
        activation: str = "groupsort2",
    ) -> None:
        super().__init__()
        if n_models < 1:
            raise ValueError(f"n_models must be >= 1, got {n_models}")
        template = LipschitzMLP(in_features, hidden, activation)  # validates the arguments
        self.n_models = int(n_models)
        self.in_features = int(in_features)
        self.hidden = template.hidden
        self.activation = activation
        self.act = GroupSort(template.act.group_size)
        sizes = (self.in_features, *self.hidden)
        self.layer_sizes = tuple(zip(sizes[:-1], sizes[1:]))
        # GroupSort2 in "halves" layout (see _GroupSort2Halves): hidden unit j of the internal
        # layout is unit perm[j] = (0, 2, 4, ..., 1, 3, 5, ...)[j] of the LipschitzMLP layout.
        self.halves = activation == "groupsort2"
        for i, h in enumerate(self.hidden):
            perm = torch.cat((torch.arange(0, h, 2), torch.arange(1, h, 2)))
            self.register_buffer(f"perm{i}", perm, persistent=False)
        self.dense_params = nn.ParameterList()
        self.dense_biases = nn.ParameterList()
        for a, b in self.layer_sizes:
            n = max(a, b)
            self.dense_params.append(nn.Parameter(torch.randn(n_models, n, n) / math.sqrt(n)))
            self.dense_biases.append(nn.Parameter(torch.zeros(n_models, b)))
        width = sizes[-1]
        self.head_param = nn.Parameter(torch.randn(n_models, 1, width) / math.sqrt(width))
        self.head_bias = nn.Parameter(torch.zeros(n_models, 1))

    # ------------------------------------------------------------------ conversion
    @classmethod
    def from_models(cls, models: Sequence[LipschitzMLP]) -> BatchedLipschitzMLP:
        """Stack ``M`` networks of the same architecture (copies of their parameters)."""
        if not models:
            raise ValueError("from_models needs at least one model")
        first = models[0]
        for m in models:
            if (m.in_features, m.hidden, m.activation) != (
                first.in_features, first.hidden, first.activation
            ):
                raise ValueError("all models must have the same in_features, hidden and activation")
            if any(layer.bias is None for layer in m.dense) or m.head.bias is None:
                raise ValueError("batched networks need every layer to have a bias")
        with torch.random.fork_rng(devices=[]):  # the global RNG is left as it was
            out = cls(len(models), first.in_features, first.hidden, first.activation)
        out = out.to(device=first.head.param.device, dtype=first.head.param.dtype)
        with torch.no_grad():
            for li in range(len(out.layer_sizes)):
                out.dense_params[li].copy_(torch.stack([m.dense[li].param for m in models]))
                out.dense_biases[li].copy_(torch.stack([m.dense[li].bias for m in models]))
            out.head_param.copy_(torch.stack([m.head.param for m in models]))
            out.head_bias.copy_(torch.stack([m.head.bias for m in models]))
        return out

    def split(self) -> list[LipschitzMLP]:
        """The ``M`` models as ordinary :class:`~ocsdf.nn.LipschitzMLP` networks (in eval mode),
        whose parameters are exact copies of the batched slices."""
        dev, dtype = self.head_param.device, self.head_param.dtype
        models = []
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            for i in range(self.n_models):
                m = LipschitzMLP(self.in_features, self.hidden, self.activation)
                m = m.to(device=dev, dtype=dtype)
                for li, layer in enumerate(m.dense):
                    layer.param.copy_(self.dense_params[li][i])
                    layer.bias.copy_(self.dense_biases[li][i])
                m.head.param.copy_(self.head_param[i])
                m.head.bias.copy_(self.head_bias[i])
                models.append(m.eval())
        return models

    # ------------------------------------------------------------------ evaluation
    def _perm(self, i: int) -> torch.Tensor:
        return getattr(self, f"perm{i}")

    def weights(self) -> list[torch.Tensor]:
        """Orthogonalised weights of every layer, each ``(M, out, in)``; the head ``(M, 1, w)``
        has unit-norm rows.

        With GroupSort2 the hidden units are in the internal "halves" layout (rows of each dense
        weight and columns of the next one permuted alike, the same function); use
        :meth:`split` for weights in :class:`~ocsdf.nn.LipschitzMLP`'s layout.
        """
        ws = [
            batched_cayley_orthogonal(p, b, a)
            for p, (a, b) in zip(self.dense_params, self.layer_sizes)
        ]
        ws.append(self.head_param / self.head_param.norm(dim=-1, keepdim=True))
        if self.halves:
            for i in range(len(self.hidden)):
                perm = self._perm(i)
                ws[i] = ws[i].index_select(1, perm)
                ws[i + 1] = ws[i + 1].index_select(2, perm)
        return ws

    def forward_with(self, weights: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """All ``M`` networks with precomputed ``weights`` (from :meth:`weights`).

        ``x``: ``(M, n, d)`` (model ``i`` sees ``x[i]``) or ``(n, d)`` (every model sees it).
        Returns ``(M, n)``.
        """
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n_models, -1, -1)
        for i, (w, b) in enumerate(zip(weights[:-1], self.dense_biases)):
            if self.halves:
                b = b.index_select(1, self._perm(i))
            x = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
            x = _GroupSort2Halves.apply(x) if self.halves else self.act(x)
        return torch.baddbmm(self.head_bias.unsqueeze(1), x, weights[-1].transpose(1, 2)
                             ).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with(self.weights(), x)


# ---------------------------------------------------------------------------- training
def _hkr_per_model(f_pos: torch.Tensor, f_neg: torch.Tensor, margins: torch.Tensor,
                   lam: float) -> torch.Tensor:
    """HKR loss of each model, shape ``(M,)``, from ``(M, n)`` scores and ``(M,)`` margins
    (the same formula as :func:`ocsdf.loss.hkr_loss`, per row)."""
    m = margins.unsqueeze(1)
    pos = lam * torch.relu(m - f_pos) - f_pos
    neg = lam * torch.relu(m + f_neg) + f_neg
    return pos.mean(dim=1) + neg.mean(dim=1)


def train_batched(
    model: BatchedLipschitzMLP,
    x: torch.Tensor | Sequence[torch.Tensor],
    domain: Domain,
    config: TrainConfig,
    margins: Sequence[float] | torch.Tensor,
    seeds: Sequence[int],
    progress: bool = False,
    log_every: int = 50,
    desc: str = "ocsdf fit_many",
) -> list[TrainHistory]:
    """Algorithm 3 for all ``M`` models of ``model`` at once (in place).

    For model ``i`` this is :func:`ocsdf.training.train` with ``config`` except that its margin
    is ``margins[i]`` and its seed ``seeds[i]`` (``config.margin`` and ``config.seed`` are
    ignored): its own generator draws, at each step and in the same order as ``train``, the
    uniform starts of its negatives, their step sizes ``eta`` and its positive batch; its
    negatives move towards its own level set ``{f_i = -margins[i]}``.

    Parameters
    ----------
    model : BatchedLipschitzMLP
        ``M`` models, trained in place.
    x : Tensor ``(n, d)`` or sequence of ``M`` tensors ``(n_i, d)``
        Normal samples in the network's input space (standardised units): one set shared by all
        models, or one per model (lengths may differ; the same tensor object given for several
        models is stored once).
    domain : Box or Ball
    config : TrainConfig
    margins : sequence of ``M`` floats or Tensor ``(M,)``
        HKR margins, input-space units, each > 0.
    seeds : sequence of ``M`` ints
    progress : bool
        tqdm bar over the steps with the mean loss over models.

    Returns
    -------
    list of ``M`` TrainHistory
        Model ``i``'s own loss and mean scores.
    """
    n_models = model.n_models
    device = model.head_param.device
    dtype = model.head_param.dtype
    if isinstance(x, torch.Tensor):
        x = [x] * n_models
    if len(x) != n_models or len(seeds) != n_models or len(margins) != n_models:
        raise InputError(f"x, margins and seeds need {n_models} entries (one per model), got "
                         f"{len(x)}, {len(margins)} and {len(seeds)}")
    margin_t = torch.as_tensor(margins, dtype=dtype, device=device).reshape(n_models)
    if not bool((margin_t > 0).all()):
        raise InputError(f"every margin must be > 0, got {margin_t.tolist()}")
    # Store each distinct data tensor once; model i indexes rows offset[i] .. offset[i] + n_i.
    unique: dict[int, int] = {}
    parts: list[torch.Tensor] = []
    offsets, lengths = [], []
    start = 0
    for xi in x:
        if xi.dim() != 2 or xi.shape[1] != model.in_features or len(xi) < 1:
            raise InputError(f"each data set must have shape (n, {model.in_features}), "
                             f"got {tuple(xi.shape)}")
        if id(xi) not in unique:
            unique[id(xi)] = start
            parts.append(xi.to(device=device, dtype=dtype))
            start += len(xi)
        offsets.append(unique[id(xi)])
        lengths.append(len(xi))
    data = torch.cat(parts) if len(parts) > 1 else parts[0]
    offset_t = torch.as_tensor(offsets, device=device).unsqueeze(1)
    d = model.in_features
    bs = config.batch_size
    gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    opt = _optimizer(config.optimizer, model.parameters(), config.lr)
    histories = [TrainHistory() for _ in range(n_models)]
    model.train()
    bar = tqdm(range(config.n_steps), disable=not progress, desc=desc, leave=False)
    for step in bar:
        t = 0 if step < config.warmup_steps else config.n_newton_steps
        weights = model.weights()
        frozen = [w.detach() for w in weights]
        # Random draws per model, in the order of ocsdf.training.train / newton_raphson_negatives.
        z = torch.stack([domain.sample(bs, d, g, device) for g in gens]).to(dtype)
        if t > 0:
            eta = torch.stack(
                [torch.rand(bs, 1, generator=g, device=device) for g in gens]
            ).to(dtype) / t
            target = margin_t.view(n_models, 1)
            for _ in range(t):
                z = z.detach().requires_grad_(True)
                with torch.enable_grad():
                    y = model.forward_with(frozen, z)
                    (grad,) = torch.autograd.grad(y.sum(), z)
                with torch.no_grad():
                    scale = (y + target) / (grad.pow(2).sum(-1) + 1e-12)
                    z = domain.project(z - eta * scale.unsqueeze(-1) * grad)
            z = z.detach()
        idx = torch.stack([
            torch.randint(n_i, (bs,), generator=g, device=device)
            for n_i, g in zip(lengths, gens)
        ])
        pos = data[idx + offset_t]
        batch = torch.cat((pos, z), dim=1)
        for k in range(config.n_updates):
            if k > 0:
                weights = model.weights()
            scores = model.forward_with(weights, batch)
            f_pos, f_neg = scores[:, :bs], scores[:, bs:]
            losses = _hkr_per_model(f_pos, f_neg, margin_t, config.lam)
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
                bar.set_postfix(loss=f"{float(np.mean(vals[0])):.3f}", models=n_models)
    model.eval()
    return histories


# ---------------------------------------------------------------------------- estimators
def fit_many(
    X_list: Sequence,
    margins: Sequence[float | str],
    seeds: Sequence,
    progress: bool = False,
    desc: str = "ocsdf fit_many",
    **ocsdf_params,
) -> list[OCSDF]:
    """Fit ``M`` :class:`~ocsdf.OCSDF` estimators in one batched training run.

    Estimator ``i`` is ``OCSDF(margin=margins[i], random_state=seeds[i], **ocsdf_params)``
    fitted on ``X_list[i]``: validation, calibration split, standardisation, label-free margin,
    initial weights (seeded exactly as :meth:`OCSDF.fit` seeds them), ``offset_``,
    ``calibration_scores_``, ``model_``, ``net_``, ``lipschitz_`` and ``history_`` are filled as
    :meth:`OCSDF.fit` fills them; only the training loop is shared (:func:`train_batched`, the
    same random draws per model as ``fit``: equal to ``fit``'s result over a short run, and a
    draw from the same distribution over a long one, where float rounding differences grow).

    Parameters
    ----------
    X_list : sequence of ``M`` array-likes, each (n_i, n_features), raw units
        Same number of features for all. Pass the same object several times to share one set
        (stored once during training).
    margins : sequence of ``M`` (float or "auto")
    seeds : sequence of ``M`` random_state values (int or None)
    progress : bool
        tqdm bar over the training steps (also on with ``verbose=True``).
    **ocsdf_params
        Any other :class:`~ocsdf.OCSDF` parameter (the same for every model).

    Returns
    -------
    list of ``M`` fitted OCSDF

    Raises
    ------
    InputError
        Lengths differ, no model, or the data sets have different numbers of features.
    """
    from .estimator import OCSDF, _torch_device, _torch_threads  # noqa: F811 (runtime import)

    n_models = len(X_list)
    if n_models < 1:
        raise InputError("fit_many needs at least one data set")
    if len(margins) != n_models or len(seeds) != n_models:
        raise InputError(f"X_list, margins and seeds need the same length, got {n_models}, "
                         f"{len(margins)} and {len(seeds)}")
    for bad in ("margin", "random_state"):
        if bad in ocsdf_params:
            raise InputError(f"pass {bad} through margins/seeds, not as a keyword")
    start = time.perf_counter()
    ests = [OCSDF(margin=m, random_state=s, **ocsdf_params) for m, s in zip(margins, seeds)]
    first = ests[0]
    device = _torch_device(first.device)

    # Each estimator prepares its own data exactly as OCSDF.fit does (seed, calibration split,
    # standardisation, margin); only the training is shared.
    z_by_key: dict[int, torch.Tensor] = {}
    data: list[torch.Tensor] = []
    prepared = []
    for est, X in zip(ests, X_list):
        seed, X_tr, X_cal, z = est._prepare_fit(X)
        if est.n_features_in_ != first.n_features_in_:
            raise InputError(f"every data set needs {first.n_features_in_} features, got "
                             f"{est.n_features_in_}")
        # The same input object without a calibration split gives the same z: share it.
        key = id(X) if X_cal is None else -(len(data) + 1)
        if key not in z_by_key:
            z_by_key[key] = torch.as_tensor(z, dtype=torch.float32, device=device)
        data.append(z_by_key[key])
        prepared.append((seed, X_tr, X_cal))

    run_seeds = [p[0] for p in prepared]
    # config.margin and config.seed are per model here (margins_, run_seeds).
    config = first._train_config(run_seeds[0])

    def train_all(data: list[torch.Tensor], what: str):
        nets = [est._initial_network(seed) for est, seed in zip(ests, run_seeds)]
        batched = BatchedLipschitzMLP.from_models(nets).to(device)
        with _torch_threads(first.n_threads):
            histories = train_batched(
                batched, data, first._domain(), config, [e.margin_ for e in ests], run_seeds,
                progress=progress or bool(first.verbose), desc=desc + what)
        return batched.split(), histories

    nets, histories = train_all(data, "")
    if first.trim > 0:  # OCSDF.fit's second fit on the rows the first one scores highest
        trimmed = [est._trim_rows(net, X_tr, seed)
                   for est, net, seed, (_, X_tr, _) in zip(ests, nets, run_seeds, prepared)]
        prepared = [(seed, X_kept, X_cal) for (X_kept, _), (seed, _, X_cal)
                    in zip(trimmed, prepared)]
        nets, histories = train_all(
            [torch.as_tensor(z, dtype=torch.float32, device=device) for _, z in trimmed],
            " (after trim)")
    for est, net, hist, (_, X_tr, X_cal) in zip(ests, nets, histories, prepared):
        est._finish_fit(net, hist, X_tr, X_cal)
    amortised = (time.perf_counter() - start) / n_models  # the batched run's share per model
    for est in ests:
        est.fit_time_ = amortised
    return ests


# ---------------------------------------------------------------------------- speed
def speed_comparison(
    n_features: int, n_models: int, n_steps: int = 20, width: int = 128, depth: int = 3,
    batch_size: int = 128, n_newton_steps: int = 4, n_rows: int = 1000, repeats: int = 2,
    seed: int = 0,
) -> dict[str, float]:
    """Steps per second of :func:`train_batched` with ``M = n_models`` against ``M`` separate
    :func:`ocsdf.training.train` calls, on random data, with the current torch thread setting.

    All ``n_steps`` timed steps use ``T = n_newton_steps`` (no warm-up), after one untimed step.
    The three variants are timed in turn ``repeats`` times and the best time of each is kept
    (robust to other processes on a shared machine). ``batched_sort`` is the batched network
    with ``torch.sort`` GroupSort2 (as :class:`ocsdf.nn.GroupSort`) instead of its max/min
    layout, to separate the gain of batching from that of the activation.

    Returns
    -------
    dict
        ``batched_steps_s``: batched steps per second (each advances ``M`` models);
        ``separate_steps_s``: single-model steps per second; ``batched_sort_steps_s``;
        ``model_steps_s_batched`` and ``model_steps_s_separate``: model-steps per second;
        ``speedup``: their ratio; ``speedup_sort``: the same with the sort activation.
    """
    from .domain import Box
    from .training import train

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_rows, n_features, generator=gen)
    domain = Box(-5.0, 5.0)
    cfg = TrainConfig(n_steps=n_steps, warmup_steps=0, batch_size=batch_size,
                      n_newton_steps=n_newton_steps)
    warm = TrainConfig(n_steps=1, warmup_steps=0, batch_size=batch_size,
                       n_newton_steps=n_newton_steps)
    torch.manual_seed(seed)
    nets = [make_mlp(n_features, width, depth) for _ in range(n_models)]
    batched = BatchedLipschitzMLP.from_models(nets)
    margins, seeds = [0.05] * n_models, list(range(n_models))

    def run_batched(halves: bool) -> float:
        batched.halves = halves
        train_batched(batched, x, domain, warm, margins, seeds)
        t0 = time.perf_counter()
        train_batched(batched, x, domain, cfg, margins, seeds)
        return time.perf_counter() - t0

    def run_separate() -> float:
        train(nets[0], x, domain, warm)
        t0 = time.perf_counter()
        for net in nets:
            train(net, x, domain, cfg)
        return time.perf_counter() - t0

    best = {"batched": math.inf, "sort": math.inf, "separate": math.inf}
    for _ in range(repeats):
        best["batched"] = min(best["batched"], run_batched(True))
        best["separate"] = min(best["separate"], run_separate())
        if batched.activation == "groupsort2":
            best["sort"] = min(best["sort"], run_batched(False))
    batched.halves = batched.activation == "groupsort2"
    out = {
        "batched_steps_s": n_steps / best["batched"],
        "batched_sort_steps_s": n_steps / best["sort"],
        "separate_steps_s": n_steps * n_models / best["separate"],
    }
    out["model_steps_s_batched"] = out["batched_steps_s"] * n_models
    out["model_steps_s_separate"] = out["separate_steps_s"]
    out["speedup"] = out["model_steps_s_batched"] / out["model_steps_s_separate"]
    out["speedup_sort"] = out["batched_sort_steps_s"] * n_models / out["separate_steps_s"]
    return out
