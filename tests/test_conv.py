"""Convolutional 1-Lipschitz networks: the FFT bound against exact norms, the reshaped-kernel
failure, orthogonal convolutions, export, the sequential bound and one trainer run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ocsdf.core.conv import (
    ChannelGroupSort2,
    LipschitzConvNet,
    conv_spectral_norm,
    power_iteration_norm,
    sequential_lipschitz_bound,
)
from ocsdf.core.nn import GroupSort2


def _dense_norm(conv: nn.Module, input_shape: tuple[int, ...]) -> float:
    """Exact l2 norm of a linear map: its matrix from the identity basis, float64 SVD."""
    n = math.prod(input_shape)
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *input_shape)
    with torch.no_grad():
        mat = conv(eye).reshape(n, -1).T
    return float(torch.linalg.matrix_norm(mat, ord=2))


def _conv64(c_in, c_out, k, stride, padding, circular, dilation=1, groups=1, seed=0):
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, bias=False, dtype=torch.float64,
                     padding_mode="circular" if circular else "zeros")
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, dtype=torch.float64,
                                      generator=torch.Generator().manual_seed(seed)))
    return conv


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("c_in, c_out, k, hw, stride, padding, dilation, groups", [
    (2, 3, 3, (5, 6), 1, "same", 1, 1),
    (2, 3, 3, (5, 6), 2, 1, 1, 1),
    (3, 2, 3, (7, 8), 2, 1, 1, 1),
    (3, 2, 2, (6, 5), 1, "same", 1, 1),
    (2, 2, 3, (5, 5), 1, "valid", 1, 1),
    (2, 2, 5, (7, 7), 1, 3, 1, 1),
    (2, 3, 4, (8, 8), 3, "valid", 1, 1),
    (2, 4, 3, (6, 6), 1, "same", 2, 2),
    (4, 4, 2, (6, 6), 2, 0, 1, 1),
])
def test_fft_bound_dominates_the_exact_norm_with_zero_padding(c_in, c_out, k, hw, stride,
                                                              padding, dilation, groups):
    conv = _conv64(c_in, c_out, k, stride, padding, False, dilation, groups)
    exact = _dense_norm(conv, (c_in, *hw))
    bound = conv_spectral_norm(conv.weight, hw, stride, padding, False, dilation, groups)
    assert bound >= exact * (1 - 1e-10)
    assert bound <= 2.0 * exact  # a bound, not a vacuous one (worst here: 1.58, dilation 2)


def test_fft_bound_is_exact_for_kernel_equal_stride_downsampling():
    """Non-overlapping patches (RKO-style downsampling): no border effect, the bound is exact."""
    conv = _conv64(4, 4, 2, 2, 0, False)
    exact = _dense_norm(conv, (4, 6, 6))
    assert conv_spectral_norm(conv.weight, (6, 6), 2, 0) == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("c_in, c_out, k, hw, stride", [
    (3, 3, 3, (5, 6), 1), (4, 4, 3, (4, 4), 1), (2, 3, 3, (6, 6), 2), (2, 3, 3, (6, 6), 3),
    (2, 3, 3, (8, 8), (2, 1)), (3, 5, 5, (6, 7), 1),
])
def test_fft_bound_equals_the_exact_norm_with_circular_padding(c_in, c_out, k, hw, stride):
    conv = _conv64(c_in, c_out, k, stride, k // 2, True)
    exact = _dense_norm(conv, (c_in, *hw))
    assert conv_spectral_norm(conv.weight, hw, stride, k // 2, circular=True) == pytest.approx(
        exact, rel=1e-6)


def test_fft_bound_stays_above_a_power_iteration_lower_bound_on_a_larger_input():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(6, 4, 3, 3, generator=gen, dtype=torch.float64)
    for stride in (1, 2):
        bound = conv_spectral_norm(w, (24, 24), stride, 1)
        lower = power_iteration_norm(lambda x, s=stride: F.conv2d(x, w, padding=1, stride=s),
                                     (4, 24, 24), 100, torch.Generator().manual_seed(0))
        assert lower <= bound
        assert bound <= 1.02 * lower  # measured 1.007 (stride 1) and 1.004 (stride 2)


def test_reshaped_kernel_orthogonalisation_is_not_1_lipschitz_and_the_bound_says_so():
    """The deel-lip recipe: orthonormal rows of the (c_out, c_in k k) reshape do not make the
    convolution 1-Lipschitz; the reshape's norm says 1, the FFT bound does not hide it."""
    c = 4
    q, _ = torch.linalg.qr(torch.randn(c * 9, c, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(0)))
    w = q.T.reshape(c, c, 3, 3).contiguous()
    assert float(torch.linalg.matrix_norm(w.reshape(c, -1), ord=2)) == pytest.approx(1.0,
                                                                                     abs=1e-12)
    lower = power_iteration_norm(lambda x: F.conv2d(x, w, padding=1), (c, 8, 8), 300,
                                 torch.Generator().manual_seed(0))
    bound = conv_spectral_norm(w, (8, 8))
    assert lower > 1.2  # a true lower bound of the norm: the layer is not 1-Lipschitz
    assert bound >= lower


def test_conv_bound_refuses_what_it_cannot_bound():
    w = torch.randn(2, 2, 3, 3)
    with pytest.raises(ValueError):
        conv_spectral_norm(w, (8, 8), padding=2, circular=True)  # rows repeated
    with pytest.raises(ValueError):
        conv_spectral_norm(w, (2, 2), padding="valid")  # empty output


def test_channel_groupsort2_sorts_channel_pairs_and_preserves_norms():
    x = torch.randn(5, 6, 4, 3, generator=torch.Generator().manual_seed(0))
    y = ChannelGroupSort2()(x)
    torch.testing.assert_close(y[:, :3], torch.maximum(x[:, :3], x[:, 3:]))
    torch.testing.assert_close(y[:, 3:], torch.minimum(x[:, :3], x[:, 3:]))
    torch.testing.assert_close(y.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1))


def _gnp_net(padding: str = "circular") -> LipschitzConvNet:
    """Never widens (4 -> 4 channels, 16 -> 8, 128 -> 32 -> 1): gradient-norm preserving."""
    return LipschitzConvNet((4, 8, 8), channels=(4, 8), dense=(32,), padding=padding, seed=3)


@pytest.mark.parametrize("padding", ["circular", "zeros"])
def test_orthogonal_conv_weights_have_bound_one(padding):
    pytest.importorskip("orthogonium")
    net = LipschitzConvNet((1, 8, 8), channels=(8, 16), dense=(32,), padding=padding, seed=0)
    sizes = [(8, 8), (4, 4)]
    for w, hw in zip(net.weights()[:2], sizes):
        bound = conv_spectral_norm(w, hw, 1, "same", circular=padding == "circular")
        assert bound <= 1 + 1e-5
        assert bound >= 1 - 1e-5  # orthogonal: the norm is 1, not a contraction


@pytest.mark.parametrize("padding", ["circular", "zeros"])
def test_exported_network_bound_against_independent_lower_bounds(padding):
    pytest.importorskip("orthogonium")
    net = _gnp_net(padding)
    plain = net.export(dtype=torch.float64)
    bound = sequential_lipschitz_bound(plain, (net.in_features,))
    assert bound <= 1 + 1e-4
    assert net.lipschitz_bounds() == [bound]
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(256, net.in_features, generator=gen, dtype=torch.float64)
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(plain(x).sum(), x)
    gnorm = grad.norm(dim=1)
    y = torch.rand(256, net.in_features, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        pairs = (plain(x) - plain(y)).abs() / (x - y).norm(dim=1)
        step = 1e-3 * grad / gnorm[:, None]  # pairs along the gradient: |f(x) - f(y)| ~ |grad|
        along = (plain(x + step) - plain(x)).abs() / step.norm(dim=1)
    for lower in (gnorm.max(), pairs.max(), along.max()):
        assert float(lower) <= bound * (1 + 1e-9)
    assert float(along.max()) >= 0.5
    if padding == "circular":  # every layer orthogonal and none widens: |grad f| = 1
        assert float(gnorm.min()) >= 1 - 1e-6


@pytest.mark.parametrize("padding", ["circular", "zeros"])
def test_export_equals_the_training_forward(padding):
    pytest.importorskip("orthogonium")
    net = LipschitzConvNet((1, 8, 8), channels=(8, 16), dense=(32,), padding=padding, seed=1)
    with torch.no_grad():  # move the biases off zero so that they are checked too
        for b in net.biases():
            b.copy_(0.1 * torch.randn(b.shape, generator=torch.Generator().manual_seed(2)))
    x = torch.rand(64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scores = net(x)
        plain = net.export()
        assert scores.shape == (1, 64)
        assert float((plain(x) - scores[0]).abs().max()) <= 1e-5
        torch.testing.assert_close(net(x.reshape(64, 1, 8, 8)), scores)
    assert not any(p.requires_grad for p in plain.parameters())
    kinds = {type(m) for m in plain}
    assert kinds <= {nn.Unflatten, nn.Conv2d, ChannelGroupSort2, nn.PixelUnshuffle, nn.Flatten,
                     nn.Linear, GroupSort2, type(plain[-1])}


def test_sequential_bound_multiplies_layer_norms_and_tracks_shapes():
    conv = _conv64(2, 4, 3, 1, 1, False)
    lin = nn.Linear(16 * 3 * 3, 6, dtype=torch.float64)  # (2, 6, 6) -> (4, 6, 6) -> (16, 3, 3)
    net = nn.Sequential(nn.Unflatten(1, (2, 6, 6)), conv, ChannelGroupSort2(),
                        nn.PixelUnshuffle(2), nn.Flatten(), nn.Sequential(lin, GroupSort2()))
    with torch.no_grad():
        lin.weight.mul_(3.0)
    expected = (conv_spectral_norm(conv.weight, (6, 6), 1, 1)
                * float(torch.linalg.matrix_norm(lin.weight.detach(), ord=2)))
    assert sequential_lipschitz_bound(net, (72,)) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError):  # shapes that do not chain: an error, not a bound
        sequential_lipschitz_bound(nn.Sequential(*net[1:]), (72,))
    with pytest.raises(ValueError):
        sequential_lipschitz_bound(net, (2, 6, 6))


def test_unknown_layers_raise_type_error():
    conv = nn.Conv2d(1, 2, 3, padding=1)
    for layer in (nn.Tanh(), nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"),
                  nn.BatchNorm2d(1), nn.Dropout()):
        with pytest.raises(TypeError):
            sequential_lipschitz_bound(nn.Sequential(layer, conv), (1, 8, 8))

    class Sneaky(nn.Conv2d):  # a Conv2d by name and type, something else inside
        def forward(self, x):
            return 10 * super().forward(x)

    with pytest.raises(TypeError):
        sequential_lipschitz_bound(nn.Sequential(Sneaky(1, 2, 3, padding=1)), (1, 8, 8))


def test_only_one_model_for_now():
    with pytest.raises(ValueError, match="n_models"):
        LipschitzConvNet((1, 8, 8), n_models=2)
    with pytest.raises(ValueError, match="divisible"):
        LipschitzConvNet((1, 6, 6), channels=(4, 4, 4))


def test_trainer_fits_flattened_images():
    """The unchanged trainer and sampler on 8 x 8 images given as flattened rows in [0, 1]."""
    pytest.importorskip("orthogonium")
    from ocsdf.core.domain import Box
    from ocsdf.core.training import TrainConfig, train

    gen = torch.Generator().manual_seed(0)
    x = 0.1 * torch.rand(128, 1, 8, 8, generator=gen)
    x[:, :, 1:4, 1:4] += 0.8  # a bright square: the normal class
    x = x.reshape(128, 64)
    net = LipschitzConvNet((1, 8, 8), channels=(8, 16), dense=(32,), seed=0)
    cfg = TrainConfig(n_steps=30, warmup_steps=5, batch_size=32, n_newton_steps=4, margin=0.3,
                      lr=3e-3, bias_lr_factor=10.0)
    (hist,) = train(net, x, Box(0.0, 1.0), cfg, log_every=10)
    assert all(math.isfinite(v) for v in hist.loss)
    assert hist.loss[-1] < hist.loss[0]
    assert hist.f_pos[-1] > hist.f_neg[-1]
    assert net.lipschitz_bounds()[0] <= 1 + 1e-4
