"""1-Lipschitz layers with a model axis: orthogonality, GroupSort2, bound soundness, export."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ocsdf.core.loss import hkr_loss, hkr_loss_and_grad
from ocsdf.core.nn import (
    FullSort,
    GroupSort2,
    LipschitzMLP,
    cayley_full,
    cayley_orthogonal,
    cayley_parameter,
    export,
    group_sort2,
    inverse_identity_plus,
    lipschitz_bound,
    make_mlp,
    refine_inverse,
)


@pytest.mark.parametrize("shape", [(8, 8), (16, 3), (3, 16), (64, 32), (16, 40)])
def test_cayley_weight_has_orthonormal_rows_or_columns(shape):
    out_f, in_f = shape
    n = max(shape)
    p = torch.randn(3, n, n, generator=torch.Generator().manual_seed(0)) / math.sqrt(n)
    w = cayley_orthogonal(p, out_f, in_f).double()
    assert w.shape == (3, out_f, in_f)
    gram = w.transpose(1, 2) @ w if out_f >= in_f else w @ w.transpose(1, 2)
    assert torch.allclose(gram, torch.eye(min(shape), dtype=torch.float64).expand_as(gram),
                          atol=1e-5)


def test_cayley_full_solves_for_the_fewer_columns():
    """cayley_full: a wide layer solves for its rows, a tall one for its columns; both are the
    blocks of the full Cayley matrix (the definition model files of format 1 rely on)."""
    p = torch.randn(2, 40, 40, dtype=torch.float64) / 40**0.5
    upper = p.triu(1)
    skew = upper - upper.transpose(1, 2)
    eye = torch.eye(40, dtype=torch.float64)
    full = torch.linalg.solve(eye + skew, eye - skew)
    torch.testing.assert_close(cayley_full(p, 16, 40), full[:, :16, :], atol=1e-12, rtol=0)
    torch.testing.assert_close(cayley_full(p, 40, 16), full[:, :, :16], atol=1e-12, rtol=0)
    torch.testing.assert_close(cayley_orthogonal(p, 40, 16), full[:, :, :16], atol=1e-12,
                               rtol=0)


@pytest.mark.parametrize("n, k", [(40, 16), (300, 8), (70, 69)])
def test_wide_layer_is_the_cayley_transform_of_the_thin_skew_matrix(n, k):
    """The closed form of a wide layer equals the first k columns of the full Cayley transform
    of A with its lower-right block zeroed (transposed), and its gradient passes gradcheck."""
    p = (torch.randn(2, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
         / math.sqrt(n)).requires_grad_(True)
    upper = p.triu(1)
    skew = upper - upper.transpose(1, 2)
    thin = skew.clone()
    thin[:, k:, k:] = 0
    eye = torch.eye(n, dtype=torch.float64)
    expected = torch.linalg.solve(eye + thin, eye - thin)[:, :, :k].transpose(1, 2)
    w = cayley_orthogonal(p, k, n)
    torch.testing.assert_close(w, expected, atol=1e-11, rtol=0)
    torch.testing.assert_close(w @ w.transpose(1, 2), torch.eye(k, dtype=torch.float64)
                               .expand(2, k, k), atol=1e-12, rtol=0)
    if n <= 70:
        probe = torch.randn(2, k, n, dtype=torch.float64)
        assert torch.autograd.gradcheck(lambda q: (cayley_orthogonal(q, k, n) * probe).sum(),
                                        (p,))
    # the k rows a wide layer keeps (cayley_parameter) give the same weights
    kept = cayley_parameter(p.detach(), k, n)
    assert kept.shape == (2, k, n)
    torch.testing.assert_close(cayley_orthogonal(kept, k, n), w.detach(), atol=0, rtol=0)
    assert cayley_parameter(p, n, k) is p  # tall: the whole draw


def test_wide_first_layer_stores_only_its_rows():
    net = make_mlp(50, 8, 2, n_models=2, seeds=[0, 1])
    assert [tuple(p.shape) for p in net.dense_params] == [(2, 8, 50), (2, 8, 8)]
    assert net.weights()[0].shape == (2, 8, 50)


@pytest.mark.parametrize("n, leaf", [(13, 4), (40, 64), (70, 64), (9, 2)])
def test_block_inverse_equals_lu_inverse(n, leaf):
    """The block elimination of inverse_identity_plus against torch.linalg.inv (float64),
    for odd sizes and several recursion depths."""
    p = torch.randn(3, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    upper = p.triu(1)
    skew = upper - upper.transpose(1, 2)
    expected = torch.linalg.inv(torch.eye(n, dtype=torch.float64) + skew)
    torch.testing.assert_close(inverse_identity_plus(skew, leaf), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("n", [6, 70])
def test_square_cayley_matches_the_solve_and_its_gradient(n):
    """The square path (block inverse + hand-written backward) is the Cayley transform of the
    solve, and gradcheck confirms its backward pass (n = 70 splits the block inverse)."""
    p = (torch.randn(2, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
         / math.sqrt(n)).requires_grad_(True)
    upper = p.triu(1)
    skew = upper - upper.transpose(1, 2)
    eye = torch.eye(n, dtype=torch.float64)
    torch.testing.assert_close(cayley_orthogonal(p, n, n), torch.linalg.solve(eye + skew,
                                                                             eye - skew),
                               atol=1e-12, rtol=0)
    probe = torch.randn(2, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert torch.autograd.gradcheck(lambda q: (cayley_orthogonal(q, n, n) * probe).sum(), (p,))


def test_cayley_is_differentiable():
    p = torch.randn(5, 5, requires_grad=True)
    cayley_orthogonal(p, 5, 5).sum().backward()
    assert p.grad is not None and p.grad.abs().sum() > 0


def test_unit_norm_head():
    model = make_mlp(3, 8, 1, n_models=4, seeds=[0, 1, 2, 3])
    head = model.weights()[-1]
    torch.testing.assert_close(head.norm(dim=-1), torch.ones(4, 1))


def test_groupsort2_sorts_pairs_of_halves_and_preserves_norm():
    x = torch.tensor([[1.0, -5.0, 3.0, -2.0]])  # pairs (1, 3) and (-5, -2)
    assert torch.equal(group_sort2(x), torch.tensor([[3.0, -2.0, 1.0, -5.0]]))
    z = torch.randn(100, 6)
    assert torch.allclose(GroupSort2()(z).norm(dim=1), z.norm(dim=1))
    assert torch.allclose(FullSort()(z), torch.sort(z, dim=1, descending=True).values)


def test_groupsort2_gradient_matches_autograd_of_max_min():
    x = torch.randn(7, 3, 10, dtype=torch.float64, requires_grad=True)
    g = torch.randn(7, 3, 10, dtype=torch.float64)
    (ours,) = torch.autograd.grad((group_sort2(x) * g).sum(), x)
    a, b = x[..., :5], x[..., 5:]
    ref_out = torch.cat((torch.maximum(a, b), torch.minimum(a, b)), -1)
    (ref,) = torch.autograd.grad((ref_out * g).sum(), x)
    torch.testing.assert_close(ours, ref)
    with torch.no_grad():  # the scoring path (no mask) computes the same values
        torch.testing.assert_close(group_sort2(x), ref_out)


def test_gradient_norm_never_exceeds_bound_at_random_points():
    model = make_mlp(5, width=32, depth=3, seeds=[0])
    bound = lipschitz_bound(model)
    x = (torch.randn(4000, 5, generator=torch.Generator().manual_seed(1)) * 3).requires_grad_()
    (g,) = torch.autograd.grad(model(x).sum(), x)
    assert g.norm(dim=1).max() <= bound * (1 + 1e-5)
    assert bound <= 1 + 1e-4


def test_bound_sees_a_non_orthogonal_weight():
    """The bound is computed from the weights, not assumed from the layer type."""
    plain = export(make_mlp(3, width=8, depth=2, seeds=[0]))
    with torch.no_grad():
        plain[0].weight.mul_(3.0)
    assert lipschitz_bound(plain) == pytest.approx(3.0, rel=1e-4)


def test_bound_refuses_unknown_layers():
    with pytest.raises(TypeError, match="no known Lipschitz constant"):
        lipschitz_bound(nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 1)))


@pytest.mark.parametrize("activation", ["groupsort2", "fullsort"])
def test_export_of_each_model_is_plain_and_identical(activation):
    model = make_mlp(4, width=16, depth=2, activation=activation, n_models=3, seeds=[0, 1, 2])
    x = torch.randn(1000, 4)
    with torch.no_grad():
        joint = model(x)
    assert joint.shape == (3, 1000)
    bounds = model.lipschitz_bounds()
    for i in range(3):
        plain = model.export(i)
        assert all(type(m) in (nn.Linear, GroupSort2, FullSort) for m in plain[:-1])
        assert not any(p.requires_grad for p in plain.parameters())
        with torch.no_grad():
            torch.testing.assert_close(plain(x), joint[i], atol=1e-5, rtol=0)
        assert lipschitz_bound(plain) == pytest.approx(bounds[i], rel=1e-9)


def test_a_model_depends_on_its_own_seed_only():
    """Model i's initial weights are drawn from its own seed, wherever it sits in the stack."""
    alone = make_mlp(3, 8, 2, seeds=[7])
    stacked = make_mlp(3, 8, 2, n_models=3, seeds=[1, 7, 2])
    for p, q in zip(alone.parameters(), stacked.parameters()):
        assert torch.equal(p[0], q[1])
    assert not torch.equal(stacked.head_param[0], stacked.head_param[1])
    state = torch.random.get_rng_state()
    make_mlp(3, 8, 2, seeds=[3])
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched


def test_mlp_rejects_bad_arguments():
    with pytest.raises(ValueError, match="even hidden widths"):
        LipschitzMLP(2, [7])
    with pytest.raises(ValueError, match="n_models"):
        LipschitzMLP(2, [8], n_models=0)
    with pytest.raises(ValueError, match="seeds needs 2"):
        LipschitzMLP(2, [8], n_models=2, seeds=[0])


def test_value_and_grad_by_hand_matches_autograd():
    """The Newton passes' gradient without autograd equals autograd's, for M models and for a
    batch shared by all of them; ``fullsort`` networks are refused (they use autograd)."""
    net = LipschitzMLP(5, [16, 16, 8], n_models=3, seeds=[0, 1, 2])
    w = [t.detach() for t in net.weights()]
    for x in (torch.randn(3, 40, 5), torch.randn(40, 5)):
        x = x.requires_grad_(True)
        y = net.forward_with(w, x)
        # per model (with a shared batch autograd would sum the models' gradients)
        g = torch.stack([torch.autograd.grad(y[i].sum(), x, retain_graph=True)[0]
                         for i in range(3)])
        if x.dim() == 3:
            g = g.sum(0)  # model i's rows only depend on model i
        y2, g2 = net.value_and_grad_with(w, x.detach())
        torch.testing.assert_close(y2, y.detach(), rtol=0, atol=0)
        torch.testing.assert_close(g2, g, rtol=1e-5, atol=1e-6)
        assert g2.shape == (3, 40, 5)
        assert float(g2.norm(dim=-1).max()) <= 1 + 1e-5  # 1-Lipschitz networks
    with pytest.raises(NotImplementedError, match="GroupSort2"):
        LipschitzMLP(5, [8], activation="fullsort").value_and_grad_with(w[:1], x)


def _with_random_biases(net: LipschitzMLP, seed: int) -> LipschitzMLP:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for b in net.biases():
            b.copy_(torch.randn(b.shape, generator=gen))
    return net


def test_refine_inverse_from_a_warm_start_and_its_fallbacks():
    """Newton–Schulz refinement from the inverse of a nearby matrix gives the exact inverse
    to float32 rounding; no, a far or a mis-shaped warm start gives inverse_identity_plus."""
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(3, 2, 32, 32, generator=gen) / math.sqrt(32)
    upper = p.triu(1)
    a = upper - upper.transpose(-1, -2)
    exact = torch.linalg.inv(torch.eye(32, dtype=torch.float64) + a.double())
    step = 1e-3 * torch.randn(3, 2, 32, 32, generator=gen)  # one optimiser update of P
    moved = (upper + step.triu(1)) - (upper + step.triu(1)).transpose(-1, -2)
    warm = inverse_identity_plus(moved)
    refined = refine_inverse(a, warm)
    assert refined.shape == a.shape
    assert float((refined.double() - exact).abs().max()) < 2e-6
    assert float((warm.double() - exact).abs().max()) > 1e-3  # the warm start was not it
    for bad in (None, torch.zeros_like(a), warm[:1], torch.full_like(a, float("nan"))):
        assert torch.equal(refine_inverse(a, bad), inverse_identity_plus(a))


@pytest.mark.parametrize("in_features,hidden,n_models", [(5, [16, 16, 16], 3), (16, [16, 16], 1),
                                                         (3, [8, 12, 12], 2),
                                                         (3, [128, 128], 2)])  # LU tall layer
def test_hand_written_training_step_matches_autograd(in_features, hidden, n_models):
    """weights_tape / forward_tape / backward_tape give the weights, scores and parameter
    gradients of autograd through weights() and forward_with (HKR loss), from a cold and from
    a warm start of the inverses; with n_param_rows, the gradients of the first rows and grad f
    at the others (what a fused Newton pass uses)."""
    net = _with_random_biases(LipschitzMLP(in_features, hidden, n_models=n_models,
                                           seeds=list(range(n_models))), 1)
    assert net.supports_tape()
    gen = torch.Generator().manual_seed(2)
    x = 2.0 * torch.randn(n_models, 60, in_features, generator=gen)
    margin = torch.linspace(0.05, 0.3, n_models)
    ws_cold, inv = net.weights_tape()
    with torch.no_grad():  # move the parameters by one small update: the next call is warm
        for p in net.parameters():
            p.add_(1e-3 * torch.randn(p.shape, generator=gen))
    ws, inv = net.weights_tape(inv)
    net.zero_grad()
    weights = net.weights()
    for w_tape, w in zip(ws, weights):
        torch.testing.assert_close(w_tape, w.detach(), rtol=0, atol=2e-6)
    scores = net.forward_with(weights, x[:, :40])
    hkr_loss(scores[:, :20], scores[:, 20:], margin, 100.0).sum().backward()
    expected = [p.grad.clone() for p in net.parameters()]

    f, tape = net.forward_tape(ws, x)
    for mask in tape[1]:  # GroupSort2 masks as 0 / 1 floats
        assert mask.dtype == f.dtype and set(mask.unique().tolist()) == {0.0, 1.0}
    loss, seed = hkr_loss_and_grad(f, 20, 20, margin, 100.0)  # derivative 1 on 20 extra rows
    torch.testing.assert_close(loss, hkr_loss(scores[:, :20], scores[:, 20:], margin, 100.0)
                               .detach(), rtol=1e-5, atol=1e-5)
    assert torch.equal(seed[:, 40:], torch.ones(n_models, 20))
    grads, grad_in = net.backward_tape(ws, inv, tape, seed, n_param_rows=40)
    assert len(grads) == len(expected)
    for g, e in zip(grads, expected):
        assert g.shape == e.shape
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4 * float(e.abs().max()))
    _, grad_f = net.value_and_grad_with([w.detach() for w in weights], x[:, 40:])
    torch.testing.assert_close(grad_in, grad_f, rtol=1e-4, atol=1e-5)
    all_rows, none = net.backward_tape(ws, inv, tape, torch.ones(n_models, 60))
    assert none is None and len(all_rows) == len(expected)


def test_hand_written_step_is_refused_where_it_does_not_apply():
    for net in (LipschitzMLP(20, [8, 8]), LipschitzMLP(4, [8], activation="fullsort")):
        assert not net.supports_tape()
        with pytest.raises(NotImplementedError):
            net.weights_tape()
