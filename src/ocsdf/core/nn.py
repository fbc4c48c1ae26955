"""1-Lipschitz networks with a leading model axis: orthogonal layers, GroupSort2, bounds, export.

A :class:`LipschitzMLP` holds ``M`` independent networks of one architecture (``M = 1`` for a
single fit): every parameter has a leading model axis and one batched matrix product evaluates
all of them, so one training step costs about as many torch operations for ``M`` models as for
one (what makes ``fit_many`` fast on small networks).

Each dense layer stores an *unconstrained* parameter ``P`` and maps it to an orthogonal weight
with the Cayley transform ``Q = (I + A)^{-1} (I - A)``, ``A = triu(P, 1) - triu(P, 1)^T``
(:func:`cayley_orthogonal`). Chosen over Björck and the matrix exponential by measurement
(512 x 512, forward + backward, one thread: Björck with 15 iterations about 11x slower and far
from orthogonal from a random start, ``matrix_exp`` about 16x slower; ``docs/results/speed.md``).

The constraint is a training-time reparametrisation only: :func:`export` freezes one model into
plain :class:`torch.nn.Linear` and :class:`GroupSort2` modules, and :func:`lipschitz_bound`
computes a sound bound of the l2 Lipschitz constant from the weights actually used.

GroupSort2 pairs unit ``k`` with unit ``k + w/2`` (the "halves" layout) and outputs
``[max of each pair..., min of each pair...]``: a permutation of the coordinates at every point,
so 1-Lipschitz and gradient-norm preserving. It is the same function class as pairing
neighbours ``(2k, 2k+1)`` (a fixed permutation of hidden units, absorbed by the orthogonal
weights) and needs no ``torch.sort``: measured on one CPU thread (d = 21, 128 x 3, batch 128,
T = 4, best of 3 x 60 steps, 2026-11-30), a training step took 5.1 ms with max/min against 7.2 ms
with ``torch.sort`` on the pairs (1.41x), and 30.7 against 46.7 ms for M = 8 models (1.52x);
the activation alone is timed by ``ocsdf bench speed`` (rows "GroupSort2 forward + backward").
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import nn

__all__ = [
    "GroupSort2",
    "FullSort",
    "LipschitzMLP",
    "LipschitzNetwork",
    "cayley_full",
    "cayley_orthogonal",
    "cayley_parameter",
    "export",
    "group_sort2",
    "inverse_identity_plus",
    "lipschitz_bound",
    "make_mlp",
    "refine_inverse",
]


def cayley_orthogonal(param: torch.Tensor, out_features: int, in_features: int) -> torch.Tensor:
    """Orthogonal ``(..., out_features, in_features)`` matrices from ``(..., n, n)`` parameters,
    ``n = max(out_features, in_features)``: orthonormal columns if ``out >= in``, orthonormal
    rows otherwise. Any leading batch (models) is computed in one call. The training-time
    parametrisation of :class:`LipschitzMLP`. A wide layer uses only the first ``out`` rows of
    its parameter and also takes them alone, ``(..., out, n)`` (:func:`cayley_parameter`).

    With ``A = triu(P, 1) - triu(P, 1)^T`` (skew-symmetric):

    * **square** (``out = in = n``): ``Q = (I + A)^{-1} (I - A) = 2 (I + A)^{-1} - I``, the
      inverse by block elimination (:func:`inverse_identity_plus`, matrix products rather than
      triangular solves) with a hand-written backward pass, ``dL/dA = -2 R^T G R^T`` with
      ``R = (I + A)^{-1} = (Q + I) / 2`` and ``G = dL/dQ``: two matrix products, no solve.
      Measured on one CPU thread (forward + backward, 2026-12-01): 512 x 512 18.6 -> 10.2 ms,
      128 x 128 0.68 -> 0.44 ms, eight 128 x 128 at once 5.2 -> 2.6 ms, against
      ``torch.linalg.solve`` and its autograd; the same matrices up to float32 rounding.
    * **tall** (``out > in``): the first ``in`` columns of that ``Q``
      (:func:`cayley_full`, a solve with ``in`` right-hand sides).
    * **wide** (``in > out = k``, e.g. a first layer on 784 pixels): the transpose of the first
      ``k`` columns of the Cayley transform of ``A`` with its lower-right ``(n - k) x (n - k)``
      block set to zero (only the first ``k`` rows of ``triu(P, 1)`` are used), in closed form:
      with ``S = A[:k, :k]``, ``B = A[k:, :k]`` and ``M = I + S + B^T B`` (``k x k``), the
      columns are ``[2 M^{-1} - I; -2 B M^{-1}]``. Orthonormal columns (a Cayley transform) at
      ``O(n k^2)`` instead of the ``O(n^3)`` of an ``n x n`` solve; every ``n x k`` matrix with
      orthonormal columns whose top block has no eigenvalue -1 is reached.
    """
    n = param.shape[-1]
    if out_features == in_features == n:
        return _CayleySquare.apply(param)
    if in_features > out_features:
        return _cayley_thin(param, out_features).transpose(-1, -2)
    return cayley_full(param, out_features, in_features)


def cayley_parameter(draw: torch.Tensor, out_features: int, in_features: int) -> torch.Tensor:
    """The Cayley parameter of a layer from a draw ``(..., n, n)``: the draw itself, or for a
    wide layer (``in > out``) a copy of its first ``out`` rows, ``(..., out, n)``, the only ones
    :func:`cayley_orthogonal` reads (the same weights; on 3,072 pixels and 128 units, 0.4M
    numbers for the optimiser instead of 9.4M)."""
    if in_features > out_features:
        return draw[..., :out_features, :].clone()
    return draw


def cayley_full(param: torch.Tensor, out_features: int, in_features: int) -> torch.Tensor:
    """Top-left ``(out_features, in_features)`` block of the full Cayley transform
    ``Q = (I + A)^{-1} (I - A)``, ``A = triu(P, 1) - triu(P, 1)^T``, by a linear solve (the
    definition; :func:`cayley_orthogonal` computes the same matrix for square and tall layers,
    and model files of format 1 hold parameters of this map).

    Solves for the ``min(out, in)`` columns only: a wide layer (``in > out``) solves for its
    ``out`` rows, since ``I + A`` and ``I - A`` commute, so ``Q^T = (I - A)^{-1} (I + A)`` and
    the top ``out`` rows of ``Q`` are the transpose of ``solve(I - A, (I + A)[:, :out])``.
    """
    upper = param.triu(1)
    skew = upper - upper.transpose(-1, -2)
    eye = torch.eye(param.shape[-1], dtype=param.dtype, device=param.device)
    if in_features > out_features:
        qt = torch.linalg.solve(eye - skew, (eye + skew)[..., :out_features])
        return qt[..., :in_features, :].transpose(-1, -2)
    q = torch.linalg.solve(eye + skew, (eye - skew)[..., :in_features])
    return q[..., :out_features, :]


def _cayley_thin(param: torch.Tensor, k: int) -> torch.Tensor:
    """``(..., n, k)`` orthonormal columns: the wide-layer map of :func:`cayley_orthogonal`."""
    rows = param[..., :k, :].triu(1)  # the first k rows of triu(P, 1)
    s = rows[..., :, :k]
    s = s - s.transpose(-1, -2)  # S = A[:k, :k]
    b = -rows[..., :, k:].transpose(-1, -2)  # B = A[k:, :k], (n - k, k)
    inv = inverse_identity_plus(s + b.transpose(-1, -2) @ b)  # M^{-1}
    top = 2.0 * inv - torch.eye(k, dtype=param.dtype, device=param.device)
    return torch.cat((top, -2.0 * (b @ inv)), dim=-2)


#: Largest block :func:`inverse_identity_plus` inverts with LU (``torch.linalg.inv``); larger
#: matrices are split in halves. 64 was the fastest of 64 / 128 / 256 for n = 128 to 1024 on one
#: CPU thread (2026-12-01).
_INVERSE_LEAF = 64


def inverse_identity_plus(a: torch.Tensor, leaf: int = _INVERSE_LEAF) -> torch.Tensor:
    """``(I + a)^{-1}`` for ``(..., n, n)`` matrices ``a`` whose symmetric part is positive
    semi-definite (a skew-symmetric ``a``, and the Schur complements this recursion forms).

    Block elimination on the halves, recursively, down to blocks of ``leaf`` (inverted by
    ``torch.linalg.inv``): with ``M = I + a = [[M11, M12], [M21, M22]]``, ``X11 = M11^{-1}``,
    ``T = X11 M12`` and the Schur complement ``S = M22 - M21 T``,
    ``M^{-1} = [[X11 - T R21, -T S^{-1}], [-S^{-1} M21 X11, S^{-1}]]`` with ``R21`` the
    bottom-left block. No pivoting is needed: ``M11`` and ``S`` again have a symmetric part
    ``>= I``, so every block solved is invertible with inverse of norm ``<= 1``. Costs about
    ``2 n^3`` flops in matrix products, which run faster than the triangular solves of an LU.
    """
    n = a.shape[-1]
    if n <= leaf:
        m = a.clone()
        m.diagonal(dim1=-2, dim2=-1).add_(1.0)
        return torch.linalg.inv(m)
    h = n // 2
    a12, a21 = a[..., :h, h:], a[..., h:, :h]
    x11 = inverse_identity_plus(a[..., :h, :h], leaf)
    t = x11 @ a12
    xs = inverse_identity_plus(a[..., h:, h:] - a21 @ t, leaf)  # S = I + (a22 - a21 T)
    r21 = -(xs @ (a21 @ x11))
    top = torch.cat((x11 - t @ r21, -(t @ xs)), dim=-1)
    return torch.cat((top, torch.cat((r21, xs), dim=-1)), dim=-2)


#: Newton–Schulz refinements :func:`refine_inverse` makes before it falls back to an exact
#: inverse.
_REFINE_MAX_ITER = 3
#: :func:`refine_inverse` stops once ``||I - M X||_F^2`` of its last refinement's input is
#: below this.
_REFINE_TOL = 1e-6
#: Largest matrix :func:`refine_inverse` refines; larger ones are inverted exactly (block
#: elimination costs about 2 n^3 flops against 8 n^3 for two refinements: measured on one CPU
#: thread, 64 x 64 refined in 47 us against 90 exact, 128 x 128 278 against 249, 512 x 512
#: 16.4 against 3.9 ms).
_REFINE_MAX_SIZE = 96


def refine_inverse(a: torch.Tensor, warm: torch.Tensor | None) -> torch.Tensor:
    """``(I + a)^{-1}`` from an approximate inverse ``warm`` (e.g. that of the previous training
    step, whose ``a`` differed by one optimiser update), by Newton–Schulz refinement.

    Each refinement ``X <- X + X E`` with the residual ``E = I - (I + a) X`` squares the
    residual (``E' = E^2``), at the cost of two matrix products. Refines at least twice, then
    until the residual's Frobenius norm (an upper bound of its spectral norm), squared, is at
    most 1e-6 for every matrix of the batch, at most 3 times; when ``warm`` is None, of
    another shape, too far (residual norm >= 1/2) or not converged, or the matrices larger
    than 96 x 96 (where the exact inverse is cheaper), returns :func:`inverse_identity_plus`
    (exact).
    A training step's update moves the residual to about 1e-2, so two refinements (four matrix
    products) replace one LU inverse: on one CPU thread, one 64 x 64 matrix in 47 against 90
    us, three at once in 93 against 217 us.
    The result is as accurate as an LU inverse in float32; what is certified is always computed
    from the weights actually exported, whichever inverse gave them.
    """
    n = a.shape[-1]
    if warm is None or warm.shape != a.shape or n > _REFINE_MAX_SIZE:
        return inverse_identity_plus(a)
    eye = _eye(n, a.dtype, a.device)
    m = a.reshape(-1, n, n) + eye
    eye = eye.expand_as(m)
    x = warm.reshape(-1, n, n)
    for it in range(_REFINE_MAX_ITER):
        e = torch.baddbmm(eye, m, x, alpha=-1.0)  # I - (I + a) X
        if it > 0:  # the first residual is not checked: a bad one shows in the second
            err = float(torch.linalg.matrix_norm(e).max())
            if not err < 0.5:  # also catches NaN
                break
        x = torch.baddbmm(x, x, e)  # X + X E
        if it > 0 and err * err <= _REFINE_TOL:
            return x.reshape(a.shape)
    return inverse_identity_plus(a)


@functools.lru_cache(maxsize=32)
def _eye(n: int, dtype: torch.dtype, device: torch.device, value: float = 1.0) -> torch.Tensor:
    """``value`` times the ``n x n`` identity, made once per arguments (a normal tensor, even
    when first asked for in inference mode; never written to)."""
    with torch.inference_mode(False):
        return value * torch.eye(n, dtype=dtype, device=device)


class _CayleySquare(torch.autograd.Function):
    """``Q = (I + A)^{-1} (I - A) = 2 (I + A)^{-1} - I`` from ``P``, ``A = triu(P,1) -
    triu(P,1)^T`` (square), with the two-product backward pass of :func:`cayley_orthogonal`."""

    @staticmethod
    def forward(ctx, param: torch.Tensor) -> torch.Tensor:
        upper = param.triu(1)
        twice_inv = 2.0 * inverse_identity_plus(upper - upper.transpose(-1, -2))  # Q + I
        ctx.save_for_backward(twice_inv)
        q = twice_inv.clone()
        q.diagonal(dim1=-2, dim2=-1).sub_(1.0)
        return q

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (twice_inv,) = ctx.saved_tensors
        ht = twice_inv.transpose(-1, -2)  # 2 R^T
        grad_skew = (ht @ grad) @ ht
        grad_skew = grad_skew.mul_(-0.5)  # -2 R^T G R^T
        return (grad_skew - grad_skew.transpose(-1, -2)).triu_(1)


class _GroupSort2Halves(torch.autograd.Function):
    """``[max(a, b), min(a, b)]`` of the halves ``a = x[..., :w/2]``, ``b = x[..., w/2:]``.

    Written as an autograd function with a saved float mask: fewer kernels in the backward pass
    than autograd's ``maximum``/``minimum`` (which save both inputs and build two masks).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        k = x.shape[-1] // 2
        a, b = x[..., :k], x[..., k:]
        ctx.save_for_backward((a >= b).to(x.dtype))
        return torch.cat((torch.maximum(a, b), torch.minimum(a, b)), dim=-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (mask,) = ctx.saved_tensors
        k = grad.shape[-1] // 2
        g_hi, g_lo = grad[..., :k], grad[..., k:]
        swap = mask * (g_hi - g_lo)  # a gets g_hi where a >= b, else g_lo; b the other one
        return torch.cat((g_lo + swap, g_hi - swap), dim=-1)


def group_sort2(x: torch.Tensor) -> torch.Tensor:
    """GroupSort2 on the last axis (even size ``w``): pairs ``(k, k + w/2)`` sorted descending,
    output ``[max..., min...]``. Any leading shape; exact in floating point."""
    if not (torch.is_grad_enabled() and x.requires_grad):  # scoring: no mask to save
        k = x.shape[-1] // 2
        a, b = x[..., :k], x[..., k:]
        return torch.cat((torch.maximum(a, b), torch.minimum(a, b)), dim=-1)
    return _GroupSort2Halves.apply(x)


class GroupSort2(nn.Module):
    """Module form of :func:`group_sort2` (used by exported networks)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return group_sort2(x)


class FullSort(nn.Module):
    """Sort all features (last axis) in descending order: a coordinate permutation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sort(x, dim=-1, descending=True).values


_ACTIVATIONS = {"groupsort2": GroupSort2, "fullsort": FullSort}

#: l2 Lipschitz constants of the activation modules this module knows. Anything else inside a
#: network makes :func:`lipschitz_bound` raise instead of guessing.
_ACTIVATION_LIPSCHITZ: dict[type[nn.Module], float] = {
    GroupSort2: 1.0,
    FullSort: 1.0,
    nn.ReLU: 1.0,
    nn.Identity: 1.0,
}


class LipschitzNetwork(Protocol):
    """What the trainer and the sampler need from a network of ``M`` stacked models.

    ``weights()`` computes the constrained weights once (they change only at optimiser steps);
    ``forward_with(weights, x)`` evaluates all models, ``(M, n, *input_shape)`` or
    ``(n, *input_shape)`` (shared) to ``(M, n)``; ``export(i)`` freezes model ``i`` into plain
    modules; ``lipschitz_bounds()`` is a sound l2 bound per model from the weights used.
    """

    n_models: int

    def weights(self) -> list[torch.Tensor]: ...

    def forward_with(self, weights: Sequence[torch.Tensor], x: torch.Tensor
                     ) -> torch.Tensor: ...

    def export(self, index: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential: ...

    def lipschitz_bounds(self) -> list[float]: ...

    def parameters(self): ...

    # Optional: ``biases()`` lists the bias parameters (the trainer may give them their own
    # learning rate, ``TrainConfig.bias_lr_factor``).


class LipschitzMLP(nn.Module):
    """``M`` networks ``d -> [orthogonal dense -> GroupSort2] x depth -> unit-norm linear -> 1``.

    Parameters
    ----------
    in_features : int
        Input dimension ``d``.
    hidden : sequence of int
        Widths of the hidden layers (even for GroupSort2).
    activation : {"groupsort2", "fullsort"}, default "groupsort2"
    n_models : int, default 1
        ``M``, the number of independent networks held.
    seeds : sequence of ``M`` ints or None, default None
        Model ``i``'s initial parameters are drawn from a generator seeded with ``seeds[i]``
        (the same values whatever ``M`` and the position). None: torch's global generator, as
        ``nn.Linear`` does.

    Notes
    -----
    Parameters: ``dense_params[l]`` ``(M, n_l, n_l)`` (Cayley parameter, ``n_l = max(in, out)``;
    ``(M, out_l, in_l)`` for a wide layer, :func:`cayley_parameter`),
    ``dense_biases[l]`` ``(M, out_l)``, ``head_param`` ``(M, 1, width)``, ``head_bias``
    ``(M, 1)``. ``forward(x)`` maps ``(M, n, d)`` (model ``i`` sees ``x[i]``) or ``(n, d)``
    (every model sees it) to ``(M, n)``. Each network is 1-Lipschitz in l2 in exact arithmetic;
    :meth:`lipschitz_bounds` measures it on the actual weights.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], activation: str = "groupsort2",
                 n_models: int = 1, seeds: Sequence[int] | None = None) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be 'groupsort2' or 'fullsort', got {activation!r}")
        if activation == "groupsort2" and any(h % 2 for h in hidden):
            raise ValueError(f"GroupSort2 needs even hidden widths, got {list(hidden)}")
        if int(n_models) < 1:
            raise ValueError(f"n_models must be >= 1, got {n_models}")
        if seeds is not None and len(seeds) != n_models:
            raise ValueError(f"seeds needs {n_models} entries, got {len(seeds)}")
        self.n_models = int(n_models)
        self.in_features = int(in_features)
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        sizes = (self.in_features, *self.hidden)
        self.layer_sizes = tuple(zip(sizes[:-1], sizes[1:]))
        gens = ([torch.Generator().manual_seed(int(s)) for s in seeds] if seeds is not None
                else [None] * self.n_models)
        # Per model, in layer order: Cayley parameters with entries of scale 1/sqrt(n) give a
        # well mixed orthogonal matrix (rotation angles spread over about +-2 arctan 2).
        draws = [[torch.randn(max(a, b), max(a, b), generator=g) / math.sqrt(max(a, b))
                  for a, b in self.layer_sizes]
                 + [torch.randn(1, sizes[-1], generator=g) / math.sqrt(sizes[-1])]
                 for g in gens]
        self.dense_params = nn.ParameterList(
            nn.Parameter(cayley_parameter(torch.stack([m[li] for m in draws]), b, a))
            for li, (a, b) in enumerate(self.layer_sizes))
        self.dense_biases = nn.ParameterList(
            nn.Parameter(torch.zeros(self.n_models, b)) for _, b in self.layer_sizes)
        self.head_param = nn.Parameter(torch.stack([m[-1] for m in draws]))
        self.head_bias = nn.Parameter(torch.zeros(self.n_models, 1))

    def weights(self) -> list[torch.Tensor]:
        """Constrained weights of every layer, each ``(M, out, in)``, computed once."""
        ws = [cayley_orthogonal(p, b, a) for p, (a, b) in zip(self.dense_params, self.layer_sizes)]
        ws.append(self.head_param / self.head_param.norm(dim=-1, keepdim=True))
        return ws

    def biases(self) -> list[torch.Tensor]:
        """Biases of every layer, each ``(M, out)``."""
        return [*self.dense_biases, self.head_bias]

    def forward_with(self, weights: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """All ``M`` networks with precomputed ``weights`` (from :meth:`weights`).

        Lets a caller orthogonalise once and evaluate many times (the ``T`` Newton passes of
        Algorithm 1, then the loss). ``x``: ``(M, n, d)`` or ``(n, d)``; returns ``(M, n)``.
        """
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n_models, -1, -1)
        act = group_sort2 if self.activation == "groupsort2" else _full_sort
        for w, b in zip(weights[:-1], self.dense_biases):
            x = act(torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2)))
        out = torch.baddbmm(self.head_bias.unsqueeze(1), x, weights[-1].transpose(1, 2))
        return out.squeeze(-1)

    def value_and_grad_with(self, weights: Sequence[torch.Tensor], x: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores ``(M, n)`` and their gradients w.r.t. the input ``(M, n, d)``, without autograd.

        What the Newton passes of Algorithm 1 need: one forward pass that keeps the GroupSort2
        masks (:meth:`forward_tape`), then the chain rule by hand (``grad = W_1^T P_1 ... W_L^T
        P_L h``, with ``P_l`` the permutation GroupSort2 applied at layer ``l``). Fewer
        operations than building and walking an autograd graph; the same numbers up to float
        rounding. ``x``: ``(M, n, d)`` or ``(n, d)``; ``weights`` from :meth:`weights` (detached
        or not: nothing is recorded). GroupSort2 networks only (``fullsort`` uses autograd).
        """
        out, (inputs, masks) = self.forward_tape(weights, x)
        with torch.no_grad():
            head = weights[-1]  # (M, 1, width)
            grad, _, _ = _back_through(weights, masks, head.expand(-1, inputs[-1].shape[1], -1))
        return out, grad

    def supports_tape(self) -> bool:
        """Whether a training step may use :meth:`weights_tape`, :meth:`forward_tape` and
        :meth:`backward_tape` instead of autograd: GroupSort2 activations and no wide layer
        (``in > out``, whose Cayley map is the thin closed form)."""
        return self.activation == "groupsort2" and all(b >= a for a, b in self.layer_sizes)

    def _tape_layout(self, refresh: bool = False) -> tuple:
        """``(dense params, dense biases, parameters in order, layers by Cayley size n)``,
        looked up once per training run (``refresh``: at a cold :meth:`weights_tape`) instead of
        at every step."""
        if refresh or getattr(self, "_layout", None) is None:
            groups: dict = {}
            for li, (a, b) in enumerate(self.layer_sizes):
                # a large tall layer (e.g. 2 -> 512) alone: an LU solve for its `in` columns
                # costs far less than the full inverse
                key = ("tall", li) if a < b > _REFINE_MAX_SIZE else max(a, b)
                groups.setdefault(key, []).append(li)
            self._layout = (tuple(self.dense_params), tuple(self.dense_biases),
                            tuple(self.parameters()), groups)
        return self._layout

    def weights_tape(self, warm: dict | None = None) -> tuple[list[torch.Tensor], dict]:
        """The weights of :meth:`weights` without autograd, and the Cayley inverses
        ``R = (I + A)^{-1}`` of the dense layers (what :meth:`backward_tape` needs, and the
        warm start of the next call; a dict to pass on unchanged).

        The layers whose parameters have the same size are computed as one batch, except a tall
        layer larger than 96 (e.g. 2 -> 512), which solves for the ``in`` columns of ``R`` it
        uses (an LU factorisation; its backward pass one more triangular solve). ``warm``:
        the inverses of the previous call (the parameters have moved by one optimiser update
        since): each is then refined from it by :func:`refine_inverse` instead of being
        recomputed (a training step's fastest path). The weights are those of
        :func:`cayley_orthogonal`, ``Q = (2 R - I)[:out, :in]`` (square and tall layers).
        Networks with :meth:`supports_tape` only.
        """
        if not self.supports_tape():
            raise NotImplementedError("weights_tape needs GroupSort2 and no wide layer")
        ws: list[torch.Tensor] = [None] * len(self.layer_sizes)  # type: ignore[list-item]
        # Cayley size n -> (G, M, n, n) inverses; ("tall", layer) -> its LU and first columns of
        # R; "head_norm" -> (M, 1, 1)
        inverses: dict = {}
        with torch.no_grad():
            dense, _, _, groups = self._tape_layout(refresh=warm is None)
            for n, layers in groups.items():
                upper = torch.stack([dense[li] for li in layers]).triu(1)
                skew = upper - upper.transpose(-1, -2)
                if isinstance(n, tuple):  # one large tall layer: R's first `in` columns
                    (li,) = layers
                    a = self.layer_sizes[li][0]
                    eye = _eye(skew.shape[-1], skew.dtype, skew.device)
                    lu, pivots, _ = torch.linalg.lu_factor_ex(skew[0] + eye)
                    cols = torch.linalg.lu_solve(
                        lu, pivots, eye[:, :a].expand(skew.shape[1], -1, -1))  # (M, n, in)
                    q = 2.0 * cols
                    q.diagonal(dim1=-2, dim2=-1).sub_(1.0)
                    ws[li] = q
                    inverses[n] = (lu, pivots, cols)
                    continue
                r = refine_inverse(skew, None if warm is None else warm[n])  # (G, M, n, n)
                q = torch.add(_eye(n, r.dtype, r.device, -1.0), r, alpha=2.0)  # 2 R - I
                for g, li in enumerate(layers):
                    a, b = self.layer_sizes[li]
                    ws[li] = q[g, :, :b, :a]
                inverses[n] = r
            head_norm = self.head_param.norm(dim=-1, keepdim=True)
            ws.append(self.head_param / head_norm)
            inverses["head_norm"] = head_norm
        return ws, inverses

    def forward_tape(self, weights: Sequence[torch.Tensor], x: torch.Tensor
                     ) -> tuple[torch.Tensor, tuple[list[torch.Tensor], list[torch.Tensor]]]:
        """:meth:`forward_with` without autograd, keeping what the backward passes need.

        Returns the scores ``(M, n)`` and the tape ``(inputs, masks)``: the input of every
        dense layer and of the head (``(M, n, width)``), and each layer's GroupSort2 mask
        (1 where the first unit of a pair was the larger, else 0, in the scores' dtype).
        GroupSort2 networks only.
        """
        if self.activation != "groupsort2":
            raise NotImplementedError("the hand-written passes need GroupSort2 activations")
        with torch.no_grad():
            if x.dim() == 2:
                x = x.unsqueeze(0).expand(self.n_models, -1, -1)
            inputs, masks = [], []
            for w, b in zip(weights[:-1], self.dense_biases):
                inputs.append(x)
                pre = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
                k = pre.shape[-1] // 2
                lo, hi = pre[..., :k], pre[..., k:]
                # written as floats straight away (a third of the time of comparing, then
                # converting)
                masks.append(torch.ge(lo, hi, out=torch.empty(lo.shape, dtype=x.dtype,
                                                              device=x.device)))
                x = torch.cat((torch.maximum(lo, hi), torch.minimum(lo, hi)), dim=-1)
            inputs.append(x)
            head = weights[-1]
            out = torch.baddbmm(self.head_bias.unsqueeze(1), x, head.transpose(1, 2)).squeeze(-1)
        return out, (inputs, masks)

    def backward_tape(self, weights: Sequence[torch.Tensor], inverses: dict,
                      tape: tuple[list[torch.Tensor], list[torch.Tensor]],
                      grad_out: torch.Tensor, n_param_rows: int | None = None
                      ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Gradients of ``sum_ij grad_out[i, j] * f_i(x_ij)`` w.r.t. every parameter, in the
        order of :meth:`parameters`, by hand: what autograd gives through :meth:`weights` and
        :meth:`forward_with` (the same numbers up to float rounding; tested), in fewer
        operations.

        ``weights``, ``inverses`` from :meth:`weights_tape`; ``tape`` from :meth:`forward_tape`
        on the same weights; ``grad_out`` ``(M, n)``, e.g. the loss's derivative w.r.t. the
        scores. ``n_param_rows``: only the first rows count in the parameter gradients; the
        gradient w.r.t. the input of the other rows ``(M, n - n_param_rows, d)`` is returned
        beside them (with ``grad_out = 1`` there: ``grad f``, what a Newton pass needs, from
        the same pass; None when every row counts). Through the Cayley map
        ``Q = (2 R - I)[:out, :in]``: ``dL/dA = -2 R^T G R^T`` (``G = dL/dQ`` padded with
        zeros), ``dL/dP = triu(dL/dA - dL/dA^T, 1)``; through the
        unit-norm head ``w = p / |p|``: ``dL/dp = (g - w (w . g)) / |p|``.
        """
        inputs, masks = tape
        rows = grad_out.shape[1] if n_param_rows is None else n_param_rows
        with torch.no_grad():
            g = grad_out.unsqueeze(-1)  # (M, n, 1)
            head = weights[-1]
            g_head = torch.bmm(g[:, :rows].transpose(1, 2), inputs[-1][:, :rows])  # (M, 1, w)
            g_in, g_ws, g_bs = _back_through(weights, masks, g * head, inputs[:-1],
                                             n_param_rows=rows)
            grads = {id(self.head_bias): grad_out[:, :rows].sum(1, keepdim=True),
                     id(self.head_param): (g_head - head * (g_head * head).sum(-1, keepdim=True))
                     / inverses["head_norm"]}
            dense, biases, params, groups = self._tape_layout()
            for li, bias in enumerate(biases):
                grads[id(bias)] = g_bs[li]
            for n, layers in groups.items():
                if isinstance(n, tuple):  # dL/dA = -2 (R^T G) (R[:, :in])^T, R^T G by a solve
                    (li,) = layers
                    lu, pivots, cols = inverses[n]
                    rt_g = torch.linalg.lu_solve(lu, pivots, g_ws[li], adjoint=True)
                    g_skew = (rt_g @ cols.transpose(-1, -2)).mul_(-2.0)
                    grads[id(dense[li])] = (g_skew - g_skew.transpose(-1, -2)).triu_(1)
                    continue
                g_q = [g_ws[li] if g_ws[li].shape[-2:] == (n, n)  # dL/dQ of the full n x n map
                       else nn.functional.pad(g_ws[li], (0, n - g_ws[li].shape[-1],
                                                         0, n - g_ws[li].shape[-2]))
                       for li in layers]
                rt = inverses[n].transpose(-1, -2)
                g_skew = (rt @ torch.stack(g_q) @ rt).mul_(-2.0)
                g_param = (g_skew - g_skew.transpose(-1, -2)).triu_(1)
                for g, li in enumerate(layers):
                    grads[id(dense[li])] = g_param[g]
        return [grads[id(p)] for p in params], g_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with(self.weights(), x)

    def lipschitz_bounds(self) -> list[float]:
        """Sound l2 Lipschitz bound of each model: the product of its layers' exact spectral
        norms (float64 SVD of the weights used); activations are 1-Lipschitz permutations."""
        with torch.no_grad():
            norms = [_spectral_norms(w) for w in self.weights()]
        return [math.prod(float(n[i]) for n in norms) for i in range(self.n_models)]

    def export(self, index: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
        """Model ``index`` frozen into plain ``nn.Linear`` and activation modules.

        The weights are computed once (one Cayley solve per layer) and copied; the result maps
        ``(n, d)`` to ``(n,)`` with no solve, has no trainable parameters, and is accepted by
        :func:`lipschitz_bound`.
        """
        if not 0 <= index < self.n_models:
            raise IndexError(f"model index {index} out of range for {self.n_models} models")
        return self.export_all(dtype, [index])[0]

    def export_all(self, dtype: torch.dtype = torch.float32,
                   indices: Sequence[int] | None = None) -> list[nn.Sequential]:
        """:meth:`export` of every model (or of ``indices``), from one computation of the
        weights of all ``M`` models."""
        with torch.no_grad():
            ws, bs = self.weights(), self.biases()
        return [plain_network([w[i] for w in ws], [b[i] for b in bs], self.activation, dtype)
                for i in (range(self.n_models) if indices is None else indices)]

    def extra_repr(self) -> str:
        return (f"n_models={self.n_models}, in_features={self.in_features}, "
                f"hidden={list(self.hidden)}, activation={self.activation!r}")


def _full_sort(x: torch.Tensor) -> torch.Tensor:
    return torch.sort(x, dim=-1, descending=True).values


def _back_through(weights: Sequence[torch.Tensor], masks: Sequence[torch.Tensor],
                  grad: torch.Tensor, inputs: Sequence[torch.Tensor] | None = None,
                  n_param_rows: int | None = None
                  ) -> tuple[torch.Tensor | None, list[torch.Tensor], list[torch.Tensor]]:
    """Back-propagate ``grad`` ``(M, n, width)`` from the last GroupSort2 output of a
    :class:`LipschitzMLP` (``weights`` and ``masks`` of its dense layers) to its input.

    Without ``inputs``: returns the input gradient ``(M, n, d)`` and two empty lists. With
    ``inputs`` (each dense layer's input): also each dense layer's weight gradient ``(M, out,
    in)`` and bias gradient ``(M, out)`` from the first ``n_param_rows`` rows (default all),
    and the input gradient of the other rows only (None when there are none).
    """
    rows = grad.shape[1] if n_param_rows is None else n_param_rows
    g_ws: list[torch.Tensor] = []
    g_bs: list[torch.Tensor] = []
    for li in reversed(range(len(masks))):
        mask = masks[li]
        k = grad.shape[-1] // 2
        g_hi, g_lo = grad[..., :k], grad[..., k:]
        # the unit of the first half gets g_hi where it was the max, else g_lo
        diff = g_hi - g_lo
        grad = torch.cat((torch.addcmul(g_lo, mask, diff), torch.addcmul(g_hi, mask, diff,
                                                                         value=-1.0)), dim=-1)
        if inputs is not None:
            g_ws.insert(0, torch.bmm(grad[:, :rows].transpose(1, 2), inputs[li][:, :rows]))
            g_bs.insert(0, grad[:, :rows].sum(1))
            if li == 0:
                grad = grad[:, rows:]
                if grad.shape[1] == 0:
                    return None, g_ws, g_bs
        grad = torch.bmm(grad, weights[li])
    return grad, g_ws, g_bs


class _Squeeze(nn.Module):
    """``(n, 1) -> (n,)``: the last step of an exported network (no effect on the bound)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.squeeze(-1)


def plain_network(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                  activation: str, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """``Linear -> act -> ... -> Linear -> squeeze`` holding exactly ``weights`` and ``biases``
    (each ``(out, in)`` and ``(out,)``), cast to ``dtype``, frozen, in eval mode."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be 'groupsort2' or 'fullsort', got {activation!r}")
    layers: list[nn.Module] = []
    with torch.no_grad():
        for i, (w, b) in enumerate(zip(weights, biases)):
            lin = nn.Linear(w.shape[1], w.shape[0], device=w.device, dtype=dtype)
            lin.weight.copy_(w)
            lin.bias.copy_(b)
            layers.append(lin)
            if i < len(weights) - 1:
                layers.append(_ACTIVATIONS[activation]())
    plain = nn.Sequential(*layers, _Squeeze())
    plain.requires_grad_(False)
    return plain.eval()


def make_mlp(in_features: int, width: int = 128, depth: int = 3, activation: str = "groupsort2",
             n_models: int = 1, seeds: Sequence[int] | None = None) -> LipschitzMLP:
    """The paper's dense 1-Lipschitz MLP ``in_features -> width x depth -> 1`` (``M`` models).

    The paper uses ``width=512, depth=4`` on 2-D data; the defaults are :class:`ocsdf.OCSDF`'s.
    """
    return LipschitzMLP(in_features, [width] * depth, activation, n_models, seeds)


def export(model: LipschitzMLP, dtype: torch.dtype = torch.float32, index: int = 0
           ) -> nn.Sequential:
    """``model.export(index, dtype)``: model ``index`` as a plain frozen network."""
    return model.export(index, dtype)


def _spectral_norms(w: torch.Tensor) -> torch.Tensor:
    """Largest singular value of each matrix of ``w`` (``(..., m, n)``), float64 SVD of the
    stored values on the CPU (the same numbers on every device)."""
    return torch.linalg.matrix_norm(w.detach().to("cpu", torch.float64), ord=2)


def lipschitz_bound(model: nn.Module) -> float:
    """Sound upper bound of the l2 Lipschitz constant of ``model``, from its actual weights.

    The product, over the layers in order, of each linear map's exact spectral norm (float64 SVD
    of the weights the network really uses, so any inexactness of the orthogonalisation shows)
    and of each activation's Lipschitz constant (1 for the sorting activations and ReLU).
    Biases do not change it. For a :class:`LipschitzMLP` of ``M`` models: the largest of their
    bounds (sound for each of them).

    Raises
    ------
    TypeError
        For a layer whose Lipschitz constant is unknown here: the bound is never assumed from a
        name.

    Notes
    -----
    The bound is that of the real-arithmetic function defined by the stored weights; float32
    evaluation adds a rounding error of order ``1e-6 * |score|``.
    """
    if isinstance(model, LipschitzMLP):
        return max(model.lipschitz_bounds())
    if isinstance(model, nn.Sequential):
        bound = 1.0
        for layer in model:
            if isinstance(layer, nn.Linear):
                bound *= float(_spectral_norms(layer.weight))
            elif type(layer) in _ACTIVATION_LIPSCHITZ:
                bound *= _ACTIVATION_LIPSCHITZ[type(layer)]
            elif isinstance(layer, _Squeeze):
                continue
            else:
                raise TypeError(f"no known Lipschitz constant for layer {type(layer).__name__}")
        return bound
    raise TypeError(f"lipschitz_bound does not know how to bound a {type(model).__name__}")
