"""``ocsdf bench speed``: what our parametrisation costs and saves, measured in one process.

Three studies, all timed with :func:`time.perf_counter` on the same machine and in the same
process (so the ratios compare like with like even when absolute times drift):

1. **Training step** on the paper's 2-D toy configuration (two moons, 2 -> 512 x 4 -> 1,
   GroupSort2, batch 256, ``T = 4`` Newton–Raphson steps, HKR loss ``lambda = 100``,
   ``m = 0.05``, RMSprop, ball domain of radius 5). *Ours* is :func:`ocsdf.core.training.train`,
   which orthogonalises the weights once per step and reuses them for the ``T`` sampling passes
   and the loss. The *torchlip* baseline is the straightforward loop with deel-torchlip layers
   (``SpectralLinear``: power iteration + Björck; ``GroupSort2``; ``FrobeniusLinear`` head):
   every forward pass, the ``T`` sampling passes included, recomputes the constrained weights.
   Both models are then bounded from their actual weights (product of exact float64 spectral
   norms), which shows how orthogonal each really is.
2. **Orthogonalisation micro-benchmark** of one ``n x n`` weight (forward + backward) by the
   Cayley transform, 15 Björck iterations and ``torch.matrix_exp`` of a skew matrix, with the
   extreme singular values each gives from the same random start.
3. **Scoring throughput** of the parametrised network (which re-solves the Cayley systems at
   every call) and of its :func:`ocsdf.core.nn.export` (plain ``nn.Linear`` layers).
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from ..core.domain import Ball, Box
from ..core.loss import hkr_loss
from ..core.nn import (
    LipschitzMLP,
    cayley_orthogonal,
    export,
    group_sort2,
    lipschitz_bound,
    make_mlp,
)
from ..core.runtime import torch_threads
from ..core.sampling import newton_raphson_negatives
from ..core.training import TrainConfig, train
from ..data import make_toy
from .harness import command_line, study
from .report import write_table

__all__ = ["speed_benchmark", "register", "run"]

_MARGIN = 0.05
_LAM = 100.0
# 1e-4, not TrainConfig's 1e-3: torch's RMSprop makes a first update of about 10 x lr per entry,
# which at 1e-3 takes torchlip's hidden weights to a spectral norm near 3; one power iteration
# then under-normalises them, Björck diverges and the network turns NaN (after which Björck
# stops after one iteration, so its steps would look cheap). The learning rate does not change
# the cost of our step.
_LR = 1e-4
_RADIUS = 5.0
_N_TOY = 2000
_WARMUP_STEPS = 2
_ROUNDS = 4
_SCORE_BATCH = 65_536
_TORCHLIP_MISSING = "deel-torchlip not installed (pip install --no-deps deel-torchlip)"


def _row(measurement: str, variant: str, value: float | None, unit: str,
         ratio: float | None = None, note: str = "") -> dict:
    return {"measurement": measurement, "variant": variant, "value": value, "unit": unit,
            "ratio_vs_reference": ratio, "note": note}


def _near_one(value: float | None) -> str:
    """``value`` written as ``1 +- deviation`` (the table's 4 significant digits would hide it)."""
    if value is None:
        return ""
    dev = value - 1.0
    return f"= 1 {'+' if dev >= 0 else '-'} {abs(dev):.2e}"


def _singular_values(w: torch.Tensor) -> torch.Tensor:
    """All singular values of ``w`` by float64 SVD of the stored values."""
    return torch.linalg.svdvals(w.detach().to("cpu", torch.float64))


# --------------------------------------------------------------------------- training step


def _ours_stepper(x: torch.Tensor, width: int, depth: int, batch_size: int,
                  n_newton_steps: int, seed: int) -> tuple[Callable[[int], None], nn.Module]:
    """Our model and a function running ``k`` steps of :func:`ocsdf.core.training.train` on it."""
    model = make_mlp(x.shape[1], width, depth, "groupsort2", seeds=[seed])
    domain = Ball(_RADIUS)
    calls = [0]

    def steps(k: int) -> None:
        calls[0] += 1
        config = TrainConfig(n_steps=k, warmup_steps=0, batch_size=batch_size,
                             n_newton_steps=n_newton_steps, margin=_MARGIN, lam=_LAM, lr=_LR,
                             optimizer="rmsprop", seed=seed + calls[0])
        train(model, x, domain, config)

    return steps, model


def _torchlip_model(in_features: int, width: int, depth: int) -> nn.Module:
    """The same architecture from deel-torchlip layers (raises ImportError if absent)."""
    from deel import torchlip

    layers: list[nn.Module] = []
    sizes = [in_features] + [width] * depth
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [torchlip.SpectralLinear(a, b), torchlip.GroupSort2()]
    layers.append(torchlip.FrobeniusLinear(width, 1))
    return torchlip.Sequential(*layers)


def _torchlip_stepper(x: torch.Tensor, width: int, depth: int, batch_size: int,
                      n_newton_steps: int, seed: int) -> tuple[Callable[[int], None], nn.Module]:
    """The torchlip model and a function running ``k`` steps of the straightforward loop.

    Raises ImportError when deel-torchlip is not installed.
    """
    with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG left alone
        torch.manual_seed(seed)
        model = _torchlip_model(x.shape[1], width, depth)
    model.train()
    domain = Ball(_RADIUS)
    opt = torch.optim.RMSprop(model.parameters(), lr=_LR)
    gen = torch.Generator().manual_seed(seed)
    n, d = x.shape

    def score(z: torch.Tensor) -> torch.Tensor:
        # Every call goes through the parametrised torchlip layers: power iteration + Björck.
        return model(z).squeeze(-1)

    def steps(k: int) -> None:
        for _ in range(k):
            neg = newton_raphson_negatives(score, domain, batch_size, d, n_newton_steps,
                                           _MARGIN, gen)
            pos = x[torch.randint(n, (batch_size,), generator=gen)]
            scores = score(torch.cat((pos, neg)))
            loss = hkr_loss(scores[:batch_size], scores[batch_size:], _MARGIN, _LAM)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return steps, model


def _bjorck_iterations(layer: nn.Module, eps: float = 1e-3, max_iter: int = 15) -> int:
    """Björck iterations torchlip's stopping rule (``||W_k+1 - W_k||_F < eps``) needs now.

    Counted on the layer's spectrally normalised weight (the input of its Björck step), with
    ``W <- 1.5 W - 0.5 W W^T W``.
    """
    plist = layer.parametrizations.weight
    with torch.no_grad():
        w = plist[0](plist.original)
        for k in range(1, max_iter + 1):
            nxt = 1.5 * w - 0.5 * (w @ (w.transpose(0, 1) @ w))
            if float((nxt - w).norm()) < eps:
                return k
            w = nxt
    return max_iter


def _timed(fn: Callable[[int], None], k: int) -> float:
    t0 = time.perf_counter()
    fn(k)
    return time.perf_counter() - t0


def _linear_weights(model: nn.Module) -> list[torch.Tensor]:
    """Weights of the ``nn.Linear`` layers of a plain (exported) network, in order."""
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear)]


def _training_rows(n_steps: int, width: int, depth: int, batch_size: int, n_newton_steps: int,
                   seed: int, include_torchlip: bool) -> tuple[list[dict], nn.Module]:
    x = torch.as_tensor(make_toy("moons", _N_TOY, seed), dtype=torch.float32)
    ours_steps, ours = _ours_stepper(x, width, depth, batch_size, n_newton_steps, seed)
    tl_steps = tl = None
    missing = ""
    if include_torchlip:
        try:
            tl_steps, tl = _torchlip_stepper(x, width, depth, batch_size, n_newton_steps, seed)
        except ImportError:
            missing = _TORCHLIP_MISSING
    # Warm-up, then alternate chunks of steps so that both variants see the same machine load.
    ours_steps(_WARMUP_STEPS)
    if tl_steps is not None:
        tl_steps(_WARMUP_STEPS)
    n_rounds = min(_ROUNDS, n_steps)
    chunks = [n_steps // n_rounds + (i < n_steps % n_rounds) for i in range(n_rounds)]
    sec_ours = sec_tl = 0.0
    for k in chunks:
        sec_ours += _timed(ours_steps, k)
        if tl_steps is not None:
            sec_tl += _timed(tl_steps, k)
    sec_ours /= n_steps
    sec_tl /= n_steps

    config = (f"2 -> {width} x {depth} -> 1, GroupSort2, batch {batch_size}, "
              f"T = {n_newton_steps}, RMSprop lr {_LR:g}; {n_steps} timed steps after "
              f"{_WARMUP_STEPS}, "
              f"in {n_rounds} rounds alternating with the baseline")
    ours_w = ours.weights()
    rows = [_row("training step", "ours (ocsdf.core.training.train)", 1e3 * sec_ours,
                 "ms/step", 1.0, f"{config}; weights orthogonalised once per step")]
    bound = lipschitz_bound(ours)
    smallest = min(float(_singular_values(w).min()) for w in ours_w[:-1])
    lip_rows = [_row("Lipschitz bound after training", "ours (Cayley)", bound, "", None,
                     f"{_near_one(bound)}; lipschitz_bound (float64 spectral norms)")]
    min_rows = [_row("smallest singular value of hidden weights", "ours (Cayley)", smallest, "",
                     None, f"{_near_one(smallest)}; 1 for an exactly orthogonal weight")]
    if missing:
        for group, name in ((rows, "training step"), (lip_rows, "Lipschitz bound after training"),
                            (min_rows, "smallest singular value of hidden weights")):
            group.append(_row(name, "deel-torchlip", None, "", None, missing))
    elif tl is not None:
        tl.eval()
        tl_w = _linear_weights(tl.vanilla_export())
        finite = all(bool(torch.isfinite(w).all()) for w in tl_w)
        diverged = "" if finite else "; DIVERGED: its weights are NaN, so the timing is invalid"
        tl_bound = math.prod(float(_singular_values(w).max()) for w in tl_w) if finite else None
        tl_min = min(float(_singular_values(w).min()) for w in tl_w[:-1]) if finite else None
        iters = [_bjorck_iterations(m) for m in tl.modules()
                 if hasattr(m, "parametrizations") and len(m.parametrizations.weight) == 2
                 and m.in_features == m.out_features]
        rows.append(_row(
            "training step", "deel-torchlip straightforward loop", 1e3 * sec_tl, "ms/step",
            sec_tl / sec_ours,
            f"same config; SpectralLinear (power iteration + Björck) recomputed at each of "
            f"the {n_newton_steps + 1} forward passes per step; Björck iterations its stopping "
            f"rule needs at the end, per square hidden layer: {iters}; ratio = torchlip / ours"
            f"{diverged}"))
        lip_rows.append(_row("Lipschitz bound after training", "deel-torchlip (Björck)",
                             tl_bound, "", None,
                             f"{_near_one(tl_bound)}; float64 spectral norms of its "
                             f"vanilla_export weights{diverged}"))
        min_rows.append(_row("smallest singular value of hidden weights", "deel-torchlip (Björck)",
                             tl_min, "", None,
                             f"{_near_one(tl_min)}; Björck stopped by its tolerance{diverged}"))
    return rows + lip_rows + min_rows, ours


# --------------------------------------------------------------------------- GPU vs CPU
# (name, input dim, hidden widths, batch, T): the toy configuration of the training-step rows and
# the dense MNIST configuration of method.md (784 -> 512 -> 512 -> 256 -> 1, batch 128, T = 16).
_DEVICE_CONFIGS = (("toy 2-D", 2, (512, 512, 512, 512), 256, 4),
                   ("MNIST dense", 784, (512, 512, 256), 128, 16))


def _device_stepper(config: tuple, device: str, seed: int) -> Callable[[int], None]:
    """``k`` steps of :func:`ocsdf.core.training.train` for one of :data:`_DEVICE_CONFIGS`."""
    _, dim, widths, batch_size, t = config
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(4096, dim, generator=gen).to(device)
    model = LipschitzMLP(dim, list(widths), "groupsort2", seeds=[seed]).to(device)
    domain = Ball(_RADIUS) if dim <= 3 else Box(0.0, 1.0)
    calls = [0]

    def steps(k: int) -> None:
        calls[0] += 1
        cfg = TrainConfig(n_steps=k, warmup_steps=0, batch_size=batch_size, n_newton_steps=t,
                          margin=_MARGIN, lam=_LAM, lr=_LR, seed=seed + calls[0])
        train(model, x, domain, cfg)
        if device != "cpu":
            torch.cuda.synchronize()

    return steps


def _device_rows(n_steps: int, seed: int) -> list[dict]:
    """Training step time on CPU (reference) and on the GPU, when torch sees one.

    Without CUDA a single row says so plainly (value left empty)."""
    if not torch.cuda.is_available():
        return [_row("training step on GPU vs CPU", "no GPU", None, "", None,
                     "torch.cuda.is_available() is False on this machine: no GPU figure "
                     "measured (run `ocsdf bench speed` on a GPU machine to fill these rows)")]
    name = torch.cuda.get_device_name(0)
    rows = []
    for config in _DEVICE_CONFIGS:
        label = (f"training step, {config[0]} ({config[1]} -> "
                 f"{' x '.join(map(str, config[2]))} -> 1, batch {config[3]}, T = {config[4]})")
        cpu, gpu = _device_stepper(config, "cpu", seed), _device_stepper(config, "cuda", seed)
        cpu(_WARMUP_STEPS)
        gpu(_WARMUP_STEPS)
        sec_cpu = _timed(cpu, n_steps) / n_steps
        sec_gpu = _timed(gpu, n_steps) / n_steps
        rows.append(_row(label, "CPU (reference)", 1e3 * sec_cpu, "ms/step", 1.0,
                         f"{torch.get_num_threads()} torch threads"))
        rows.append(_row(label, f"GPU: {name}", 1e3 * sec_gpu, "ms/step", sec_cpu / sec_gpu,
                         "ratio = CPU time / GPU time (speed-up)"))
    return rows


# ------------------------------------------------------------------ orthogonalisation micro


def _bjorck(p: torch.Tensor, iterations: int = 15) -> torch.Tensor:
    """Björck orthogonalisation ``W <- 1.5 W - 0.5 W W^T W`` after Frobenius normalisation."""
    w = p / p.norm()
    for _ in range(iterations):
        w = 1.5 * w - 0.5 * (w @ (w.transpose(0, 1) @ w))
    return w


def _expm_skew(p: torch.Tensor) -> torch.Tensor:
    """``exp(A)`` of the skew matrix ``A = triu(P, 1) - triu(P, 1)^T`` (orthogonal)."""
    upper = p.triu(1)
    return torch.matrix_exp(upper - upper.transpose(0, 1))


def _orthogonalisation_rows(size: int, repeats: int, seed: int) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    start = torch.randn(size, size, generator=gen) / math.sqrt(size)
    probe = torch.randn(size, size, generator=gen)
    methods: list[tuple[str, Callable[[torch.Tensor], torch.Tensor], str]] = [
        ("Cayley (cayley_orthogonal)", lambda p: cayley_orthogonal(p, size, size),
         "block-elimination inverse, two-product backward; ours"),
        ("Björck, 15 iterations", _bjorck, "after Frobenius normalisation"),
        ("matrix_exp of skew", _expm_skew, "torch.matrix_exp"),
    ]
    params = {name: start.clone().requires_grad_(True) for name, _, _ in methods}
    samples: dict[str, list[float]] = {name: [] for name, _, _ in methods}
    outputs: dict[str, torch.Tensor] = {}
    # Round robin over the methods (the first round is a warm-up) so that they share the load.
    for i in range(repeats + 1):
        for name, fn, _ in methods:
            p = params[name]
            p.grad = None
            t0 = time.perf_counter()
            q = fn(p)
            (q * probe).sum().backward()
            if i:
                samples[name].append(time.perf_counter() - t0)
            outputs[name] = q.detach()
    times = {name: statistics.median(v) for name, v in samples.items()}
    sv = {}
    for name, q in outputs.items():
        s = _singular_values(q)
        sv[name] = (float(s.max()), float(s.min()))
    ref = methods[0][0]
    label = f"orthogonalise {size}x{size}, forward + backward"
    rows = [_row(label, name, 1e3 * times[name], "ms", times[name] / times[ref],
                 f"{note}; median of {repeats}") for name, _, note in methods]
    rows += [_row(f"largest singular value ({size}x{size})", name, sv[name][0], "", None,
                  _near_one(sv[name][0])) for name, _, _ in methods]
    rows += [_row(f"smallest singular value ({size}x{size})", name, sv[name][1], "", None,
                  _near_one(sv[name][1])) for name, _, _ in methods]
    return rows


def _sort_pairs(x: torch.Tensor) -> torch.Tensor:
    """GroupSort2 on the same pairs ``(k, k + w/2)`` by ``torch.sort`` (the reference)."""
    k = x.shape[-1] // 2
    pairs = torch.sort(torch.stack((x[..., :k], x[..., k:]), dim=-1), dim=-1,
                       descending=True).values
    return torch.cat((pairs[..., 0], pairs[..., 1]), dim=-1)


def _groupsort_rows(repeats: int, seed: int, shapes=((1, 256, 128), (8, 256, 128))
                    ) -> list[dict]:
    """Forward + backward of GroupSort2 as the network computes it (max/min of halves,
    :func:`ocsdf.core.nn.group_sort2`) against ``torch.sort`` on the same pairs, on the
    activations of one training batch (``M`` models x 256 rows x 128 units); round robin, the
    first round a warm-up, median of ``repeats`` rounds of 50 calls."""
    gen = torch.Generator().manual_seed(seed + 3)
    rows: list[dict] = []
    for shape in shapes:
        x = torch.randn(*shape, generator=gen).requires_grad_(True)
        probe = torch.randn(*shape, generator=gen)
        methods = [("max/min of halves (group_sort2)", group_sort2), ("torch.sort of the pairs",
                                                                     _sort_pairs)]
        samples: dict[str, list[float]] = {name: [] for name, _ in methods}
        for i in range(repeats + 1):
            for name, fn in methods:
                t0 = time.perf_counter()
                for _ in range(50):
                    (g,) = torch.autograd.grad((fn(x) * probe).sum(), x)
                if i:
                    samples[name].append((time.perf_counter() - t0) / 50)
        same = torch.equal(group_sort2(x.detach()), _sort_pairs(x.detach()))
        times = {name: statistics.median(v) for name, v in samples.items()}
        ref = methods[0][0]
        label = f"GroupSort2 forward + backward, {shape[0]} x {shape[1]} x {shape[2]}"
        rows += [_row(label, name, 1e6 * times[name], "us", times[name] / times[ref],
                      f"median of {repeats} x 50 calls; same output: {same}")
                 for name, _ in methods]
    return rows


# ----------------------------------------------------------------------------- scoring


def _scoring_rows(model: nn.Module, n_rows: int, seed: int) -> list[dict]:
    gen = torch.Generator().manual_seed(seed + 2)
    x = Ball(_RADIUS).sample(n_rows, model.in_features, gen)
    model.eval()
    plain = export(model, torch.float32)
    with torch.no_grad():
        model(x[:1024])  # warm-up
        plain(x[:1024])
    (sec_param, s_param), (sec_plain, s_plain) = _time_alternating(
        [lambda b: model(b)[0], plain], x)
    rate_param, rate_plain = n_rows / sec_param, n_rows / sec_plain
    diff = float((s_param - s_plain).abs().max())
    label = f"scoring throughput, {n_rows:,} rows of 2-D data"
    return [
        _row(label, "parametrised LipschitzMLP.forward", rate_param, "rows/s", 1.0,
             f"batches of {_SCORE_BATCH:,}, no_grad; Cayley solves redone per batch"),
        _row(label, "export(model), float32", rate_plain, "rows/s", rate_plain / rate_param,
             "plain nn.Linear + GroupSort; ratio = exported / parametrised"),
        _row("max abs score difference, export vs parametrised", "export(model), float32", diff,
             "score units", None, f"over the same {n_rows:,} rows"),
    ]


def _time_alternating(fns: list[Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor
                      ) -> list[tuple[float, torch.Tensor]]:
    """Score ``x`` (n, d) with each function of ``fns`` in batches of ``_SCORE_BATCH``, the
    functions alternated batch by batch so that they share the machine load (no_grad).
    Returns, per function, ``(seconds, concatenated outputs)``."""
    seconds = [0.0] * len(fns)
    outputs: list[list[torch.Tensor]] = [[] for _ in fns]
    with torch.no_grad():
        for batch in x.split(_SCORE_BATCH):
            for k, fn in enumerate(fns):
                t0 = time.perf_counter()
                outputs[k].append(fn(batch))
                seconds[k] += time.perf_counter() - t0
    return [(sec, torch.cat(out)) for sec, out in zip(seconds, outputs)]


def _network_rows(model, x, label: str, rate_forest: float) -> list[dict]:
    """Rows/s of the fitted model's two torch networks on raw rows ``x`` (n, d), float32: the
    parametrised :class:`~ocsdf.core.nn.LipschitzMLP` (orthogonal weights recomputed by Cayley
    solves for every batch) and the exported plain network (:func:`ocsdf.core.nn.export`). Both
    time the standardisation too, in the same batches, alternated batch by batch so that they
    share the machine load; neither applies the domain clipping of ``score_samples``. Ratios
    are against IsolationForest's rate ``rate_forest``."""
    mean = torch.as_tensor(model.mean_, dtype=torch.float32)
    scale = torch.as_tensor(model.scale_, dtype=torch.float32)
    # A parametrised network of the fitted model's architecture (its values do not change the
    # time) and the fitted model's own exported network in float32.
    param = make_mlp(model.n_features_in_, model.width_, model.depth, seeds=[0]).eval()
    plain = copy.deepcopy(model.net_).float()
    xt = torch.as_tensor(x, dtype=torch.float32)
    (sec_param, _), (sec_plain, _) = _time_alternating(
        [lambda b: param((b - mean) / scale)[0], lambda b: plain((b - mean) / scale)], xt)
    n = len(xt)
    note = "standardisation + network, float32, batches of 65,536, no domain clipping"
    return [
        _row(label, "parametrised LipschitzMLP.forward (float32)", n / sec_param, "rows/s",
             n / sec_param / rate_forest, note + "; Cayley solves redone per batch"),
        _row(label, "exported plain network (float32)", n / sec_plain, "rows/s",
             n / sec_plain / rate_forest, note + "; nn.Linear + GroupSort"),
    ]


def _deployed_rows(n_rows: int, dims: tuple[int, ...], seed: int) -> list[dict]:
    """Rows/s of the scoring paths a deployment uses, against IsolationForest, per dimension.

    A default-size OCSDF (64 x 3; a few training steps: throughput does not depend on them) is
    scored through ``score_samples`` (float64 exported network, standardisation and domain
    clipping included), through its ONNX graph in onnxruntime (float32; skipped when onnx or
    onnxruntime is missing), and compared with IsolationForest's ``decision_function``
    (PyOD's when installed, else scikit-learn's) fitted on the same rows.
    """
    import numpy as np

    from ..estimator import OCSDF

    rows: list[dict] = []
    rng = np.random.default_rng(seed)
    for d in dims:
        x = rng.normal(size=(n_rows, d))
        fit_rows = x[:10_000]
        label = f"scoring throughput, {n_rows:,} rows x d = {d}"
        try:
            from pyod.models.iforest import IForest as _IForest

            forest, forest_name = _IForest(random_state=seed).fit(fit_rows), "PyOD IForest"
        except ModuleNotFoundError:
            from sklearn.ensemble import IsolationForest

            forest = IsolationForest(random_state=seed).fit(fit_rows)
            forest_name = "scikit-learn IsolationForest"
        t0 = time.perf_counter()
        forest.decision_function(x)
        rate_forest = n_rows / (time.perf_counter() - t0)
        rows.append(_row(label, f"{forest_name}.decision_function", rate_forest, "rows/s", 1.0,
                         "reference; 100 trees, fitted on 10,000 of the rows"))
        model = OCSDF(n_steps=20, warmup_steps=0, random_state=seed).fit(fit_rows)
        t0 = time.perf_counter()
        model.score_samples(x)
        rate_ours = n_rows / (time.perf_counter() - t0)
        rows.append(_row(label, "OCSDF.score_samples (float64)", rate_ours, "rows/s",
                         rate_ours / rate_forest,
                         f"{model.width_} x {model.depth} exported network, batches of 65,536"))
        rows += _network_rows(model, x, label, rate_forest)
        try:
            import onnxruntime as ort

            from ..deploy import to_onnx
        except ModuleNotFoundError:
            rows.append(_row(label, "onnxruntime (float32)", None, "rows/s", None,
                             "onnx/onnxruntime not installed (pip install -e '.[deploy]')"))
            continue
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            path = to_onnx(model, Path(tmp) / "m.onnx")
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = torch.get_num_threads()
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            x32 = x.astype(np.float32)
            t0 = time.perf_counter()
            for start in range(0, n_rows, _SCORE_BATCH):
                sess.run(["score"], {"x": x32[start : start + _SCORE_BATCH]})
            rate_onnx = n_rows / (time.perf_counter() - t0)
        rows.append(_row(label, "onnxruntime (float32)", rate_onnx, "rows/s",
                         rate_onnx / rate_forest,
                         f"ONNX graph of score_samples, batches of {_SCORE_BATCH:,}, "
                         f"intra-op threads = torch's"))
    return rows


# ------------------------------------------------------------------------------- public


#: A faster configuration measured against the default (``docs/results/defaults_speed/``): timed
#: beside it so that the ratio comes from one run.
FAST_CONFIG = {"width": 64, "depth": 2, "n_steps": 350, "warmup_steps": 35,
               "learning_rate": 2e-3, "bias_lr_factor": 5.0, "n_newton_steps": 4}


@functools.cache
def _autograd_estimator():
    """``OCSDF`` whose fits train every step with autograd (``TrainConfig.autograd``): the
    training step before 2026-12-01, evening, for the comparison row (one class, made once)."""
    from dataclasses import replace

    from ..estimator import OCSDF

    class AutogradOCSDF(OCSDF):
        def _train_config(self, seed: int) -> TrainConfig:
            return replace(super()._train_config(seed), autograd=True)

    return AutogradOCSDF


def _default_fit_rows(seeds: tuple[int, ...] = (0, 1), data_dir=None) -> list[dict]:
    """Default ``OCSDF().fit`` on ADBench cardio (one-class half of the normal rows) against
    scikit-learn's IsolationForest, per seed in turn (IsolationForest, the default,
    :data:`FAST_CONFIG`), median over seeds; AUROC on the other half against all anomalies."""
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import roc_auc_score

    from ..data import load_adbench, split_indices
    from ..estimator import OCSDF

    label = "default fit, ADBench cardio (one-class half)"
    try:
        X, y = load_adbench("cardio", data_dir=data_dir)[:2]
    except FileNotFoundError as err:
        return [_row(label, "not run", None, "s", None, f"ADBench cardio not found: {err}")]
    fits: dict[str, list[tuple[float, float]]] = {}
    makers = {
        "scikit-learn IsolationForest": lambda seed: IsolationForest(random_state=seed),
        "OCSDF() (default: 64 x 3, 1000 steps, batch 96, T = 1)":
            lambda seed: OCSDF(random_state=seed),
        "OCSDF() trained with autograd (the training step until 2026-12-01, evening)":
            lambda seed: _autograd_estimator()(random_state=seed),
        "OCSDF(batch_size=128) trained with autograd (the default until 2026-12-01, evening)":
            lambda seed: _autograd_estimator()(random_state=seed, batch_size=128),
        "OCSDF(batch_size=128) (the default until 2026-12-01, evening: batch 128)":
            lambda seed: OCSDF(random_state=seed, batch_size=128),
        "OCSDF(batch_size=128, n_newton_steps=4) (the default until 2026-12-01, afternoon: "
        "64 x 3, T = 4)": lambda seed: OCSDF(random_state=seed, batch_size=128, n_newton_steps=4),
        "OCSDF(width=128, batch_size=128, n_newton_steps=4) (the default until 2026-12-01, "
        "morning: 128 x 3, T = 4)": lambda seed: OCSDF(random_state=seed, width=128,
                                                       batch_size=128, n_newton_steps=4),
        "OCSDF fast (64 x 2, 350 steps, lr 2e-3, 5 x for biases)":
            lambda seed: OCSDF(random_state=seed, **FAST_CONFIG),
    }
    for seed in seeds:
        tr, te = split_indices(y, "oc", seed)
        for name, make in makers.items():
            t0 = time.perf_counter()
            model = make(seed).fit(X[tr])
            sec = time.perf_counter() - t0
            score = model.score_samples(X[te])
            fits.setdefault(name, []).append((sec, roc_auc_score(y[te], -score)))
    ref = statistics.median(t for t, _ in fits["scikit-learn IsolationForest"])
    rows = []
    for name, runs in fits.items():
        sec = statistics.median(t for t, _ in runs)
        aurocs = " ".join(f"{a:.4f}" for _, a in runs)
        rows.append(_row(label, name, sec, "s", sec / ref,
                         f"{len(tr)} x {X.shape[1]} training rows; median of seeds "
                         f"{', '.join(map(str, seeds))}; AUROC per seed {aurocs}; "
                         "ratio = fit time / IsolationForest's"))
    return rows


def speed_benchmark(
    n_steps: int = 20,
    n_rows: int = 1_000_000,
    width: int = 512,
    depth: int = 4,
    batch_size: int = 256,
    n_newton_steps: int = 4,
    seed: int = 0,
    include_torchlip: bool = True,
    ortho_size: int = 512,
    ortho_repeats: int = 5,
    threads: int | None = None,
    deploy_dims: tuple[int, ...] = (3, 30),
    gpu: bool = True,
    default_fit: bool = True,
) -> list[dict]:
    """Run the three speed studies and return the table rows.

    Parameters
    ----------
    n_steps : int
        Timed training steps per variant (after two warm-up steps).
    n_rows : int
        Rows scored in the throughput study.
    width, depth, batch_size, n_newton_steps : int
        Network and training configuration (paper: 512, 4, 256, 4).
    seed : int
    include_torchlip : bool
        Time the deel-torchlip baseline too; rows say "not installed" when it is missing.
    ortho_size, ortho_repeats : int
        Matrix size and timed repetitions of the orthogonalisation micro-benchmark.
    threads : int, optional
        ``torch.set_num_threads`` for the run (restored afterwards); default: leave as is. On a
        machine shared with other jobs, 1 thread avoids the large, erratic slowdowns of
        oversubscribed OpenMP threads.
    deploy_dims : tuple of int
        Dimensions of the deployment scoring study (``n_rows`` rows each); empty to skip it.
    gpu : bool
        Time training steps on the GPU against the CPU (toy and dense MNIST configurations)
        when torch sees CUDA; without it, one row says that no GPU was available.
    default_fit : bool
        Time the default ``OCSDF().fit`` (and the previous default) against IsolationForest
        on ADBench cardio (shared data; one row says so when it is absent).

    Returns
    -------
    list of dict
        Rows with keys ``measurement``, ``variant``, ``value``, ``unit``,
        ``ratio_vs_reference`` and ``note``; the reference of each measurement is its first row.
    """
    with torch_threads(threads):
        rows = [_row("torch threads", "torch.get_num_threads()", float(torch.get_num_threads()),
                     "threads", None, "all timings below in this one process")]
        if default_fit:
            rows += _default_fit_rows()
        train_rows, model = _training_rows(n_steps, width, depth, batch_size, n_newton_steps,
                                           seed, include_torchlip)
        rows += train_rows
        rows += _orthogonalisation_rows(ortho_size, ortho_repeats, seed)
        rows += _groupsort_rows(ortho_repeats, seed)
        rows += _scoring_rows(model, n_rows, seed)
        rows += _deployed_rows(n_rows, tuple(deploy_dims), seed)
        if gpu:
            rows += _device_rows(n_steps, seed)
    return rows


_NOTES = """\
All rows come from one process (`torch` on CPU, thread count in the first row) and every time
is a `time.perf_counter` interval. Each `ratio_vs_reference` divides two measurements taken in
that same process, interleaved (alternating rounds of training steps, round-robin repetitions,
alternating scoring batches) so that both see the same machine load; the reference of each
measurement is its first row (ratio 1). The machine has 2 cores and other jobs may have been
using them during the run, so absolute times are noisy; the ratios are the result to read.

- **default fit**: seconds of `OCSDF(random_state=seed).fit` on ADBench cardio (the one-class
  half of the normal rows of each seed, 827 x 21; 64 x 3, batch 96, T = 1 Newton–Raphson step
  since 2026-12-01, evening), scikit-learn's `IsolationForest` on the same rows first (ratio
  1), the default and the previous default (batch 128) trained with autograd
  (`TrainConfig.autograd`: the training step before 2026-12-01, evening), the three previous
  defaults next (batch 128; batch 128 with T = 4; 128 x 3, batch 128, T = 4), and the fast
  configuration (64 x 2, 350 steps, T = 4, lr 2e-3, 5 x for the biases;
  not the default: `docs/results/defaults_speed/`) last, one after the other for each seed;
  medians over seeds 0 and 1, with each seed's AUROC (the other half of the normal rows
  against all anomalies) in the note. Every other configuration runs the hand-written training
  step (no autograd, Newton pass fused when T = 1) of 2026-12-01, evening.
- **training step**: milliseconds per training iteration on the paper's toy configuration
  (two moons, 2 -> 512 x 4 -> 1, GroupSort2, batch 256, T = 4 Newton–Raphson steps of
  Algorithm 1, HKR loss with lambda = 100 and m = 0.05, RMSprop, ball of radius 5), after 2
  warm-up steps. *Ours* is `ocsdf.core.training.train` (warm-up disabled so every step does T = 4):
  the Cayley weights are computed once per step and shared by the 4 sampling passes and the
  loss. *deel-torchlip* is the straightforward loop with its `SpectralLinear` (power iteration +
  Björck), `GroupSort2` and `FrobeniusLinear` (unit-norm head) layers, the same sampler
  (`ocsdf.core.sampling.newton_raphson_negatives`) and the same loss: each of the 5 forward
  passes of a step recomputes the constrained weights. Its ratio is torchlip time / our time.
  The learning rate is 1e-4 for both: at 1e-3, torch's RMSprop first update (about 10 x lr
  per entry) takes torchlip's hidden weights to a spectral norm near 3, one power iteration
  under-normalises them, Björck diverges and the network becomes NaN (our Cayley layers are
  unaffected); the learning rate does not change the cost of a step.
- **Lipschitz bound after training**: product over the layers of the exact spectral norm
  (float64 SVD) of the weights each trained model really uses (ours: `lipschitz_bound`;
  torchlip: the weights of its `vanilla_export`). **smallest singular value of hidden weights**:
  the minimum over the hidden layers, 1 for exactly orthogonal weights. The notes give both as
  `1 +- deviation`. Deviations of order 1e-6 are float32 rounding. Björck is an iteration
  stopped by a tolerance (torchlip: `||W_k+1 - W_k||_F < 1e-3`, at most 15 iterations), so it is
  only as orthogonal as its starting point allows; here it starts each time from a spectrally
  normalised weight that a few training steps have kept close to orthogonal, and the training
  row's note gives how many iterations its rule needs at the end. Its inexactness from a poor
  start shows in the micro-benchmark below.
- **orthogonalise n x n, forward + backward**: median time to compute one orthogonal matrix from
  an unconstrained parameter and back-propagate through it, by the Cayley transform (ours), 15
  Björck iterations after Frobenius normalisation, and `torch.matrix_exp` of a skew matrix. The
  singular-value rows give the largest and smallest singular value each produces from the same
  random start (Björck needs a good start, which is why torchlip runs power iteration first).
- **GroupSort2 forward + backward**: microseconds per call of the activation on one training
  batch's hidden units (M models x 256 rows x 128 units), as the network computes it (max/min
  of the halves, a custom autograd function with a saved mask) against `torch.sort` on the same
  pairs; the outputs are checked equal. Ratio = time / max-min time.
- **scoring throughput**: rows per second scored (uniform in the ball, batches of 65,536,
  `torch.no_grad`) by the parametrised network, which re-solves the Cayley systems on each
  batch, and by `export(model)` (plain float32 `nn.Linear` layers); the last row is the largest
  difference between their scores.
- **scoring throughput, rows x d**: the paths a deployment uses on Gaussian rows of dimension d
  (3 and 30): IsolationForest's `decision_function` (the reference users know; ratio 1),
  `OCSDF.score_samples` of a default-size model (64 x 3; float64 exported network with the
  standardisation and domain clipping), the same model's two torch networks in float32 on the
  standardised rows (the parametrised `LipschitzMLP`, which redoes its Cayley solves for every
  batch, and the exported plain `nn.Linear` + GroupSort network; no domain clipping) and its
  ONNX graph in onnxruntime (float32).
- **training step on GPU vs CPU**: milliseconds per step of `ocsdf.core.training.train` on the toy
  configuration and the dense MNIST one (784 -> 512 -> 512 -> 256 -> 1, batch 128, T = 16,
  box [0, 1]^784), CPU first (ratio 1) then the GPU named in the row; one row saying "no GPU"
  when torch sees none.
"""


def _threads_note(threads: int | None) -> str:
    if threads is None:
        return ""
    return (f"\ntorch was limited to {threads} thread(s) for this run (`--threads {threads}`): "
            "on a small machine shared with other jobs, more OpenMP threads than free cores make "
            "times erratic (in trials here, 2 threads under load slowed our training step "
            "about 20-fold).\n")


def run(args: argparse.Namespace) -> int:
    """``ocsdf bench speed``: run :func:`speed_benchmark` and write ``speed.{md,csv,json}``."""
    # --threads for the whole command, so that the machine line of the table reports it too
    # (None: torch's own setting); restored afterwards.
    with study(args):
        rows = speed_benchmark(n_steps=args.steps, n_rows=args.rows, seed=args.seed,
                               include_torchlip=not args.no_torchlip)
        command = command_line("ocsdf bench speed", args,
                               ["steps", "rows", "seed", "threads", "no_torchlip"],
                               omit={"steps": 20, "rows": 1_000_000, "seed": 0})
        path = write_table(rows, "speed", out_dir=args.out_dir,
                           title="Speed: training step, orthogonalisation, scoring",
                           notes=_NOTES + _threads_note(args.threads), command=command)
    for row in rows:
        value = "n/a" if row["value"] is None else f"{row['value']:.4g}"
        print(f"{row['measurement']:<50} {row['variant']:<38} {value:>12} {row['unit']}")
    print(f"wrote {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``speed`` sub-command to ``ocsdf bench``."""
    parser = subparsers.add_parser(
        "speed", help="time training steps (ours vs deel-torchlip), orthogonalisation, scoring",
        description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20,
                        help="timed training steps per variant (default 20)")
    parser.add_argument("--rows", type=int, default=1_000_000,
                        help="rows scored in the throughput study (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for the run (default: torch's own setting)")
    parser.add_argument("--out-dir", default="docs/results",
                        help="where speed.md/.csv/.json are written (default docs/results)")
    parser.add_argument("--no-torchlip", action="store_true",
                        help="skip the deel-torchlip baseline")
    parser.set_defaults(func=run)
    return parser
