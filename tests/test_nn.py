"""1-Lipschitz layers: orthogonality, activations, bound soundness, export."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ocsdf.nn import (
    CayleyLinear,
    FullSort,
    GroupSort,
    LipschitzMLP,
    UnitNormLinear,
    cayley_orthogonal,
    export,
    lipschitz_bound,
    make_mlp,
)


@pytest.mark.parametrize("shape", [(8, 8), (16, 3), (3, 16), (64, 32)])
def test_cayley_weight_has_orthonormal_rows_or_columns(shape):
    out_f, in_f = shape
    torch.manual_seed(0)
    w = CayleyLinear(in_f, out_f).weight().double()
    gram = w.T @ w if out_f >= in_f else w @ w.T
    assert torch.allclose(gram, torch.eye(min(shape), dtype=torch.float64), atol=1e-5)


def test_cayley_is_differentiable_and_changes_with_param():
    p = torch.randn(5, 5, requires_grad=True)
    w = cayley_orthogonal(p, 5, 5)
    w.sum().backward()
    assert p.grad is not None and p.grad.abs().sum() > 0


def test_unit_norm_head():
    head = UnitNormLinear(10)
    assert math.isclose(head.weight().detach().norm().item(), 1.0, rel_tol=1e-6)


def test_groupsort2_sorts_pairs_and_preserves_norm():
    x = torch.tensor([[1.0, 3.0, -2.0, -5.0]])
    y = GroupSort(2)(x)
    assert torch.equal(y, torch.tensor([[3.0, 1.0, -2.0, -5.0]]))
    z = torch.randn(100, 6)
    assert torch.allclose(GroupSort(2)(z).norm(dim=1), z.norm(dim=1))
    assert torch.allclose(FullSort()(z), torch.sort(z, dim=1, descending=True).values)
    assert torch.allclose(GroupSort(3)(z).norm(dim=1), z.norm(dim=1))


def test_gradient_norm_never_exceeds_bound_at_random_points():
    torch.manual_seed(0)
    model = make_mlp(5, width=32, depth=3)
    bound = lipschitz_bound(model)
    x = (torch.randn(4000, 5) * 3).requires_grad_(True)
    (g,) = torch.autograd.grad(model(x).sum(), x)
    norms = g.norm(dim=1)
    assert norms.max() <= bound * (1 + 1e-5)
    assert bound <= 1 + 1e-4


def test_bound_sees_a_non_orthogonal_weight():
    """The bound is computed from the weights, not assumed from the layer type."""
    plain = export(make_mlp(3, width=8, depth=2))
    with torch.no_grad():
        plain[0].weight.mul_(3.0)
    assert lipschitz_bound(plain) == pytest.approx(3.0, rel=1e-4)


def test_bound_refuses_unknown_layers():
    with pytest.raises(TypeError, match="no known Lipschitz constant"):
        lipschitz_bound(nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 1)))


def test_export_is_plain_and_identical():
    torch.manual_seed(1)
    model = make_mlp(4, width=16, depth=2, activation="fullsort")
    plain = export(model)
    assert all(type(m) in (nn.Linear, GroupSort) for m in plain[:-1])
    assert not any(p.requires_grad for p in plain.parameters())
    x = torch.randn(1000, 4)
    with torch.no_grad():
        assert torch.allclose(plain(x), model(x), atol=1e-6)
    assert lipschitz_bound(plain) == pytest.approx(lipschitz_bound(model), rel=1e-9)


def test_mlp_rejects_odd_width_for_groupsort2():
    with pytest.raises(ValueError, match="even hidden widths"):
        LipschitzMLP(2, [7])
