"""1-Lipschitz networks: orthogonal dense layers, sorting activations, bounds and export.

Every dense layer stores an *unconstrained* parameter and maps it to an orthogonal weight
matrix with the Cayley transform ``Q = (I + A)^{-1} (I - A)`` of the skew-symmetric
``A = P - P^T`` (upper triangle of ``P``). ``Q`` is exactly orthogonal in real arithmetic; a
rectangular ``out x in`` weight is the top-left block of the ``n x n`` matrix,
``n = max(in, out)``, so it has orthonormal rows or columns. We chose Cayley over Björck
orthogonalisation and the matrix exponential by measurement (512 x 512, forward + backward, one
thread: Björck with 15 iterations about 11 times slower than Cayley and still far from orthogonal
from a random start, ``matrix_exp`` about 16 times slower); see ``docs/results/speed.md``.

The constraint is a training-time reparametrisation only: :func:`export` freezes the weights
into plain :class:`torch.nn.Linear` layers, and :func:`lipschitz_bound` computes a sound upper
bound of the network's l2 Lipschitz constant from the weights actually used, whatever
parametrisation produced them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "CayleyLinear",
    "UnitNormLinear",
    "GroupSort",
    "FullSort",
    "LipschitzMLP",
    "make_mlp",
    "lipschitz_bound",
    "export",
]


def cayley_orthogonal(param: torch.Tensor, out_features: int, in_features: int) -> torch.Tensor:
    """Orthogonal ``(out_features, in_features)`` matrix from an unconstrained square parameter.

    Parameters
    ----------
    param : Tensor, shape (n, n) with ``n = max(out_features, in_features)``
        Only its strict upper triangle is used.

    Returns
    -------
    Tensor, shape (out_features, in_features)
        Top-left block of the Cayley transform of ``A = triu(P, 1) - triu(P, 1)^T``: orthonormal
        columns if ``out >= in``, orthonormal rows otherwise.
    """
    upper = param.triu(1)
    skew = upper - upper.transpose(0, 1)
    eye = torch.eye(param.shape[0], dtype=param.dtype, device=param.device)
    # Only the first in_features columns of Q are used: solve for those alone.
    q = torch.linalg.solve(eye + skew, (eye - skew)[:, :in_features])
    return q[:out_features]


class CayleyLinear(nn.Module):
    """Dense layer ``y = W x + b`` with ``W`` orthogonal (Cayley parametrisation).

    Parameters
    ----------
    in_features, out_features : int
        Input and output sizes. ``W`` has orthonormal columns (``out >= in``) or rows.
    bias : bool, default True

    Notes
    -----
    ``weight()`` recomputes ``W`` (one ``n x n`` linear solve); callers that evaluate the network
    several times with the same parameters should compute the weights once and use
    :meth:`LipschitzMLP.forward_with`.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        n = max(in_features, out_features)
        # Random skew part with entries of scale 1/sqrt(n): the Cayley map then gives a well mixed
        # orthogonal matrix (rotation angles spread over roughly +-2 arctan 2).
        self.param = nn.Parameter(torch.randn(n, n) / math.sqrt(n))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features))
        else:
            self.register_parameter("bias", None)

    def weight(self) -> torch.Tensor:
        """The orthogonal weight matrix, shape ``(out_features, in_features)``."""
        return cayley_orthogonal(self.param, self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight(), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class UnitNormLinear(nn.Module):
    """Last layer ``y = <w, x> / ||w||_2 + b``: a linear form of unit l2 norm (1-Lipschitz)."""

    def __init__(self, in_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = 1
        self.param = nn.Parameter(torch.randn(1, in_features) / math.sqrt(in_features))
        if bias:
            self.bias = nn.Parameter(torch.zeros(1))
        else:
            self.register_parameter("bias", None)

    def weight(self) -> torch.Tensor:
        """The unit-norm weight, shape ``(1, in_features)``."""
        return self.param / self.param.norm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight(), self.bias)


class GroupSort(nn.Module):
    """Sort the features of ``x`` (last dimension) in groups of ``group_size``, descending.

    A permutation of the coordinates at every point: 1-Lipschitz in l2 and gradient-norm
    preserving. ``group_size=2`` is GroupSort2 (``max``/``min`` of pairs); ``group_size=None``
    sorts all features (FullSort).
    """

    def __init__(self, group_size: int | None = 2) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.group_size is None:
            return torch.sort(x, dim=-1, descending=True).values
        shape = x.shape
        grouped = x.reshape(*shape[:-1], shape[-1] // self.group_size, self.group_size)
        return torch.sort(grouped, dim=-1, descending=True).values.reshape(shape)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


def FullSort() -> GroupSort:  # noqa: N802 - reads like a layer class at call sites
    """Sort all features (GroupSort with one group)."""
    return GroupSort(None)


#: Lipschitz constants (l2) of the activation modules this module knows. Anything else inside a
#: network makes :func:`lipschitz_bound` raise instead of guessing.
_ACTIVATION_LIPSCHITZ: dict[type[nn.Module], float] = {
    GroupSort: 1.0,
    nn.ReLU: 1.0,
    nn.Identity: 1.0,
}


class LipschitzMLP(nn.Module):
    """``input -> [CayleyLinear -> GroupSort] x depth -> UnitNormLinear -> score``.

    Parameters
    ----------
    in_features : int
        Input dimension ``d``.
    hidden : sequence of int
        Widths of the hidden layers (each even for GroupSort2).
    activation : {"groupsort2", "fullsort"}, default "groupsort2"

    Notes
    -----
    ``forward(x)`` maps ``(n, d)`` to ``(n,)``. The network is 1-Lipschitz in l2 by construction
    in exact arithmetic; :func:`lipschitz_bound` measures it on the actual weights.
    """

    def __init__(
        self, in_features: int, hidden: Sequence[int], activation: str = "groupsort2"
    ) -> None:
        super().__init__()
        if activation not in ("groupsort2", "fullsort"):
            raise ValueError(f"activation must be 'groupsort2' or 'fullsort', got {activation!r}")
        if activation == "groupsort2" and any(h % 2 for h in hidden):
            raise ValueError(f"GroupSort2 needs even hidden widths, got {list(hidden)}")
        self.in_features = in_features
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        sizes = (in_features, *self.hidden)
        self.dense = nn.ModuleList(CayleyLinear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.act = GroupSort(2 if activation == "groupsort2" else None)
        self.head = UnitNormLinear(sizes[-1])

    def weights(self) -> list[torch.Tensor]:
        """Current weight matrices of all layers (orthogonalised once), in order."""
        return [layer.weight() for layer in self.dense] + [self.head.weight()]

    def forward_with(self, weights: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Evaluate the network with precomputed ``weights`` (from :meth:`weights`).

        Lets a caller orthogonalise once and evaluate many times (negative sampling, then the
        loss), since the weights change only at optimiser steps.
        """
        for w, layer in zip(weights[:-1], self.dense):
            x = self.act(nn.functional.linear(x, w, layer.bias))
        return nn.functional.linear(x, weights[-1], self.head.bias).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with(self.weights(), x)


def make_mlp(
    in_features: int, width: int = 256, depth: int = 3, activation: str = "groupsort2"
) -> LipschitzMLP:
    """The paper's dense 1-Lipschitz MLP: ``in_features -> width x depth -> 1``.

    The paper uses ``width=512, depth=4`` for 2-D data; the defaults here are the tabular
    defaults of :class:`ocsdf.OCSDF` (see the README for the measurement behind them).
    """
    return LipschitzMLP(in_features, [width] * depth, activation)


def _spectral_norm(w: torch.Tensor) -> float:
    """Largest singular value of ``w``, computed by SVD in float64 from the stored values."""
    return float(torch.linalg.matrix_norm(w.detach().to("cpu", torch.float64), ord=2))


def lipschitz_bound(model: nn.Module) -> float:
    """Sound upper bound of the l2 Lipschitz constant of ``model``, from its actual weights.

    The bound is the product, over the layers in order, of each linear map's exact spectral norm
    (float64 SVD of the float32 weights the network really uses, so any inexactness of the
    orthogonalisation is seen) and of each activation's Lipschitz constant (1 for the sorting
    activations and ReLU, which are coordinate permutations or contractions at each point).
    Biases do not change it. Works on a :class:`LipschitzMLP` and on its :func:`export`.

    Raises
    ------
    TypeError
        For a module that contains a layer whose Lipschitz constant is unknown here: the bound is
        never assumed from a name.

    Notes
    -----
    The bound is that of the real-arithmetic function defined by the stored weights. Evaluating
    it in float32 adds a rounding error to each score of order ``1e-6 * |score|``; radii derived
    from it are therefore accurate to that order, not exact to the last bit.
    """
    if isinstance(model, LipschitzMLP):
        with torch.no_grad():
            return math.prod(_spectral_norm(w) for w in model.weights())
    if isinstance(model, nn.Sequential):
        bound = 1.0
        for layer in model:
            if isinstance(layer, nn.Linear):
                bound *= _spectral_norm(layer.weight)
            elif type(layer) in _ACTIVATION_LIPSCHITZ:
                bound *= _ACTIVATION_LIPSCHITZ[type(layer)]
            elif isinstance(layer, _Squeeze):
                continue
            else:
                raise TypeError(f"no known Lipschitz constant for layer {type(layer).__name__}")
        return bound
    raise TypeError(f"lipschitz_bound does not know how to bound a {type(model).__name__}")


class _Squeeze(nn.Module):
    """``(n, 1) -> (n,)``: the last step of an exported network (no effect on the bound)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.squeeze(-1)


def export(model: LipschitzMLP, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """Freeze ``model`` into plain ``nn.Linear`` + :class:`GroupSort` modules for fast scoring.

    The orthogonalised weights are computed once and copied; the result computes the same
    function ``(n, d) -> (n,)`` without any linear solve, has no trainable parameters, and is
    accepted by :func:`lipschitz_bound`.
    """
    layers: list[nn.Module] = []
    with torch.no_grad():
        weights = model.weights()
        biases = [layer.bias for layer in model.dense] + [model.head.bias]
        for i, (w, b) in enumerate(zip(weights, biases)):
            lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
            lin.weight.copy_(w)
            if b is not None:
                lin.bias.copy_(b)
            layers.append(lin)
            if i < len(weights) - 1:
                layers.append(GroupSort(model.act.group_size))
    plain = nn.Sequential(*layers, _Squeeze()).to(device=weights[0].device, dtype=dtype)
    plain.requires_grad_(False)
    return plain.eval()
