"""Sound 1-Lipschitz convolutional networks for images, and an independent l2 bound for them.

Two independent pieces:

* :func:`conv_spectral_norm` bounds the l2 operator norm of a 2-D convolution *from its kernel*
  (Sedghi, Gupta & Long 2019): a zero-padded convolution on ``H x W`` inputs equals a circular
  convolution on an ``N_h x N_w`` grid (``N >= H + padding``) between a zero-embedding and a
  crop (both of norm <= 1), and a circular convolution is block-diagonalised by the 2-D DFT, so
  its norm is the largest singular value of the ``(c_out, c_in)`` matrices ``K_hat(u, v)`` over
  the grid frequencies. Stride only subsamples the output (norm <= the stride-1 norm). With
  circular padding of total ``k - 1`` the operator *is* the circular convolution on the
  ``H x W`` grid and the value is its exact norm. :func:`sequential_lipschitz_bound` multiplies
  these, the exact spectral norms of dense layers and the constants of the permutation layers
  of an exported ``nn.Sequential``, tracking the spatial size; it raises for anything else.

* :class:`LipschitzConvNet`, a small network of orthogonal convolutions (BCOP, from the
  ``orthogonium`` package, with exact QR orthogonalisation of its projectors), GroupSort2 over
  channels, exact downsampling (``nn.PixelUnshuffle``, a permutation of the pixels), orthogonal
  dense layers (:func:`~ocsdf.core.nn.cayley_orthogonal`) and a unit-norm head. It follows the
  :class:`~ocsdf.core.nn.LipschitzNetwork` protocol (one model) on *flattened* images, so the
  trainer and the sampler use it unchanged; its bound is :func:`sequential_lipschitz_bound` of
  its export, never the orthogonality the parametrisation claims.

Norms are l2 on whole flattened tensors (all channels and pixels of one sample); inputs are in
pixel units (``[0, 1]``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .nn import FullSort, GroupSort2, _Squeeze, cayley_orthogonal, cayley_parameter, group_sort2

__all__ = [
    "ChannelGroupSort2",
    "LipschitzConvNet",
    "conv_spectral_norm",
    "power_iteration_norm",
    "sequential_lipschitz_bound",
]


# ---------------------------------------------------------------------------- the conv bound
def _pair(v: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(a) for a in v)
    if len(t) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {v!r}")
    return t  # type: ignore[return-value]


def _paddings(padding: str | int | Sequence[int], kernel: tuple[int, int]
              ) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((lo_h, hi_h), (lo_w, hi_w))`` zero/circular padding as torch applies it."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":  # torch: total k - 1 (dilated size), the smaller half first
        (kh, kw) = kernel
        return ((kh - 1) // 2, kh - 1 - (kh - 1) // 2), ((kw - 1) // 2, kw - 1 - (kw - 1) // 2)
    if isinstance(padding, str):
        raise ValueError(f"padding must be 'same', 'valid', an int or a pair, got {padding!r}")
    ph, pw = _pair(padding, "padding")
    if ph < 0 or pw < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    return (ph, ph), (pw, pw)


def _full_kernel(weight: torch.Tensor, dilation: tuple[int, int], groups: int) -> torch.Tensor:
    """The equivalent ``(c_out, c_in, kh', kw')`` kernel with groups = 1 and dilation = 1:
    block-diagonal over groups, zeros between the dilated taps (float64, CPU)."""
    w = weight.detach().to("cpu", torch.float64)
    c_out, c_in_g, kh, kw = w.shape
    if c_out % groups:
        raise ValueError(f"{c_out} output channels do not split into {groups} groups")
    if groups > 1:
        full = w.new_zeros(c_out, c_in_g * groups, kh, kw)
        o = c_out // groups
        for g in range(groups):
            full[g * o:(g + 1) * o, g * c_in_g:(g + 1) * c_in_g] = w[g * o:(g + 1) * o]
        w = full
    dh, dw = dilation
    if (dh, dw) != (1, 1):
        dil = w.new_zeros(w.shape[0], w.shape[1], dh * (kh - 1) + 1, dw * (kw - 1) + 1)
        dil[:, :, ::dh, ::dw] = w
        w = dil
    return w


def _polyphase(kernel: torch.Tensor, sh: int, sw: int) -> torch.Tensor:
    """Kernel ``(c_out, c_in, kh, kw)`` of a stride-``(sh, sw)`` correlation -> the stride-1
    kernel ``(c_out, c_in sh sw, ceil(kh / sh), ceil(kw / sw))`` acting on the polyphase
    components ``x[c, sh j + rh, sw l + rw]`` (the channel order of ``PixelUnshuffle``):
    ``w'[o, (c, rh, rw), qh, qw] = w[o, c, sh qh + rh, sw qw + rw]`` (0 beyond the kernel)."""
    if (sh, sw) == (1, 1):
        return kernel
    c_out, c_in, kh, kw = kernel.shape
    qh, qw = -(-kh // sh), -(-kw // sw)
    padded = F.pad(kernel, (0, qw * sw - kw, 0, qh * sh - kh))
    return (padded.reshape(c_out, c_in, qh, sh, qw, sw).permute(0, 1, 3, 5, 2, 4)
            .reshape(c_out, c_in * sh * sw, qh, qw))


def conv_spectral_norm(
    weight: torch.Tensor,
    input_size: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = "same",
    circular: bool = False,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> float:
    """Sound upper bound of the l2 operator norm of ``conv2d(x, weight)`` on ``H x W`` inputs.

    Parameters
    ----------
    weight : Tensor ``(c_out, c_in / groups, kh, kw)``
        The kernel as ``torch.nn.functional.conv2d`` uses it (cross-correlation); the values
        are read as float64 on the CPU (the bound is that of the stored numbers).
    input_size : ``(H, W)``
        Spatial size of the input (the norm depends on it).
    stride, padding, dilation, groups
        As in :class:`torch.nn.Conv2d` (``padding``: "same", "valid", an int or a pair).
    circular : bool
        Circular padding (``padding_mode="circular"``) instead of zeros.

    Returns
    -------
    float
        ``max_{u, v} sigma_max(K_hat(u, v))`` over the 2-D DFT frequencies of an
        ``N_h / s_h x N_w / s_w`` grid, ``K_hat`` the transform of the polyphase kernel
        (``(c_out, c_in s_h s_w)`` per frequency; the kernel itself for stride 1):
        ``N = s * ceil((H + lo + hi) / s)`` (``lo``, ``hi`` the padding on each side) for zero
        padding, ``N = H`` for circular padding. Always >= the true norm of the map
        ``R^{c_in H W} -> R^{c_out H_out W_out}``; equal to it (up to float64 rounding) for
        circular padding with ``lo + hi = k - 1`` (e.g. "same") and a stride that divides
        the size.

    Raises
    ------
    ValueError
        For an empty output, or circular padding wider than ``k - 1`` in total (torch then
        repeats input rows in the output; not bounded here).

    Notes
    -----
    Zero padding: with ``z`` the input shifted by ``lo`` into an ``N``-grid (zeros elsewhere),
    output ``i`` is ``sum_a w[a] z[s i + a]`` with ``s i + a <= H + lo + hi - 1 < N``: no
    index wraps, so the conv is ``crop o (strided circular conv on N) o embed`` (crop and
    embedding have norm <= 1). A stride-``s`` circular conv on an ``N``-grid (``s | N``) is a
    stride-1 circular conv of the ``s^2`` polyphase components on an ``N / s`` grid (a
    permutation of the input), whose norm is exactly the largest singular value of its
    transfer matrices. Circular padding: the rolled input (a permutation) through the
    circular conv on the ``H``-grid, outputs at ``0, s, 2s, ...``. The real kernel's spectrum
    is conjugate symmetric, so the half spectrum (``rfft2``) holds every singular value.
    """
    if weight.dim() != 4:
        raise ValueError(f"weight must be (c_out, c_in, kh, kw), got {tuple(weight.shape)}")
    h, w_in = _pair(tuple(input_size), "input_size")
    sh, sw = _pair(stride, "stride")
    if sh < 1 or sw < 1:
        raise ValueError(f"stride must be >= 1, got {stride!r}")
    kernel = _full_kernel(weight, _pair(dilation, "dilation"), int(groups))
    kh, kw = kernel.shape[-2:]
    (lo_h, hi_h), (lo_w, hi_w) = _paddings(padding, (kh, kw))
    if h + lo_h + hi_h < kh or w_in + lo_w + hi_w < kw:
        raise ValueError(f"a {kh} x {kw} kernel gives an empty output on {h} x {w_in} inputs "
                         f"with padding {padding!r}")
    if circular:
        if lo_h + hi_h > kh - 1 or lo_w + hi_w > kw - 1:
            raise ValueError("circular padding wider than kernel_size - 1 repeats input rows "
                             "in the output; no bound is implemented for it")
        if kh > h or kw > w_in:
            raise ValueError(f"a {kh} x {kw} kernel wraps more than once around {h} x {w_in}")
        # the input rolled by the padding (a permutation), then a circular conv on H x W
        # subsampled by the stride: exact by polyphase when the stride divides the size, else
        # bounded by the stride-1 norm (subsampling is a crop)
        sh, sw = (sh if h % sh == 0 else 1), (sw if w_in % sw == 0 else 1)
        n_h, n_w = h, w_in
    else:
        # the input shifted into an N-grid (N >= H + lo + hi, a multiple of the stride):
        # every tap reads inside the grid without wrapping, zeros outside the image
        n_h = sh * -(-(h + lo_h + hi_h) // sh)
        n_w = sw * -(-(w_in + lo_w + hi_w) // sw)
    kernel = _polyphase(kernel, sh, sw)
    spectrum = torch.fft.rfft2(kernel, s=(n_h // sh, n_w // sw))
    mats = spectrum.permute(2, 3, 0, 1)  # one (c_out, c_in s_h s_w) matrix per frequency
    return float(torch.linalg.matrix_norm(mats, ord=2).max())


def power_iteration_norm(fn: Callable[[torch.Tensor], torch.Tensor],
                         input_shape: Sequence[int], n_iter: int = 100,
                         generator: torch.Generator | None = None) -> float:
    """Lower bound of the l2 operator norm of a *linear* map ``fn`` by power iteration.

    ``fn`` maps a float64 batch ``(1, *input_shape)`` to any shape; its adjoint comes from
    autograd (for a convolution, the transposed convolution). Returns ``||fn(v)||`` for the
    final unit vector ``v``: never above the true norm (up to float64 rounding), and close to
    it after enough iterations. Biases must be absent (``fn`` linear, not affine).
    """
    v = torch.randn(1, *input_shape, generator=generator, dtype=torch.float64)
    v = v / v.norm()
    for _ in range(n_iter):
        v = v.detach().requires_grad_(True)
        with torch.enable_grad():
            y = fn(v)
            (g,) = torch.autograd.grad(y, v, y.detach())  # A^T A v
        v = g / g.norm().clamp_min(1e-300)
    with torch.no_grad():
        return float(fn(v.detach()).norm())


# ---------------------------------------------------------------------------- layers
class ChannelGroupSort2(nn.Module):
    """GroupSort2 over the channel axis of ``(n, C, H, W)`` maps (``C`` even): channel ``k``
    and ``k + C/2`` are sorted at every pixel, output ``[max..., min...]`` along channels.
    A permutation of the coordinates at every point: 1-Lipschitz in l2, gradient-norm
    preserving."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return group_sort2(x.movedim(-3, -1)).movedim(-1, -3)


#: Shape-preserving layers with an l2 Lipschitz constant known exactly (coordinate permutations
#: at every point, or the identity). Exact types only: a subclass may compute something else.
_PERMUTATION_LAYERS: dict[type[nn.Module], float] = {
    GroupSort2: 1.0,
    FullSort: 1.0,
    nn.ReLU: 1.0,
    nn.Identity: 1.0,
}


def _conv_out(size: int, k: int, lo: int, hi: int, stride: int) -> int:
    return (size + lo + hi - k) // stride + 1


def sequential_lipschitz_bound(model: nn.Sequential, input_shape: Sequence[int]) -> float:
    """Sound upper bound of the l2 Lipschitz constant of an exported network, from its weights.

    Parameters
    ----------
    model : nn.Sequential
        Plain layers, applied to a batch: ``nn.Conv2d`` (zero or circular padding),
        ``nn.Linear``, ``nn.Flatten``, ``nn.Unflatten``, ``nn.PixelUnshuffle``,
        ``nn.PixelShuffle``, :class:`ChannelGroupSort2`, and the activations and final squeeze
        of :mod:`ocsdf.core.nn` (``GroupSort2``, ``FullSort``, ``ReLU``, ``Identity``); nested
        ``nn.Sequential`` are walked.
    input_shape : tuple of int
        Shape of *one* sample (no batch axis), e.g. ``(C, H, W)``, or ``(C * H * W,)`` for a
        network that starts with ``nn.Unflatten``.

    Returns
    -------
    float
        Product over the layers of: :func:`conv_spectral_norm` at the spatial size the layer
        sees, the exact spectral norm (float64 SVD) of each dense weight, and 1 for the
        reshapes (``Flatten``, ``Unflatten``, pixel (un)shuffle: permutations) and the sorting
        activations. Biases do not change it.

    Raises
    ------
    TypeError
        For any layer not listed (exact type; subclasses, e.g. parametrised or orthogonium
        convolutions, too: export them to plain modules first), and for a listed layer in a
        configuration with no bound here (reflect/replicate padding). Never assumed from a name.
    ValueError
        When the shapes do not chain.
    """
    shape = tuple(int(s) for s in input_shape)
    bound, _ = _walk(model, shape)
    return bound


def _walk(model: nn.Sequential, shape: tuple[int, ...]) -> tuple[float, tuple[int, ...]]:
    bound = 1.0
    for layer in model:
        kind = type(layer)
        if kind is nn.Sequential:
            b, shape = _walk(layer, shape)
            bound *= b
        elif kind is nn.Conv2d:
            bound *= _conv_layer_bound(layer, shape)
            shape = _conv_layer_shape(layer, shape)
        elif kind is nn.Linear:
            if not shape or shape[-1] != layer.in_features:
                raise ValueError(f"Linear({layer.in_features}, ...) applied to shape {shape}")
            w = layer.weight.detach().to("cpu", torch.float64)
            bound *= float(torch.linalg.matrix_norm(w, ord=2))
            shape = (*shape[:-1], layer.out_features)
        elif kind in _PERMUTATION_LAYERS:
            if kind is GroupSort2 and shape[-1] % 2:
                raise ValueError(f"GroupSort2 needs an even last axis, got shape {shape}")
            bound *= _PERMUTATION_LAYERS[kind]
        elif kind is ChannelGroupSort2:
            if len(shape) != 3 or shape[0] % 2:
                raise ValueError(f"ChannelGroupSort2 needs (C even, H, W), got {shape}")
        elif kind is _Squeeze:
            if shape[-1] != 1:
                raise ValueError(f"the final squeeze needs a last axis of 1, got {shape}")
            shape = shape[:-1]
        elif kind is nn.Flatten:
            shape = _flatten_shape(layer, shape)
        elif kind is nn.Unflatten:
            shape = _unflatten_shape(layer, shape)
        elif kind in (nn.PixelUnshuffle, nn.PixelShuffle):
            shape = _pixel_shuffle_shape(layer, shape)
        else:
            raise TypeError(f"no known Lipschitz constant for layer {kind.__name__}")
    return bound, shape


def _conv_layer_bound(layer: nn.Conv2d, shape: tuple[int, ...]) -> float:
    if layer.padding_mode not in ("zeros", "circular"):
        raise TypeError(f"no bound for Conv2d with padding_mode={layer.padding_mode!r}")
    if len(shape) != 3 or shape[0] != layer.in_channels:
        raise ValueError(f"Conv2d({layer.in_channels}, ...) applied to shape {shape}")
    return conv_spectral_norm(layer.weight, shape[1:], layer.stride, layer.padding,
                              layer.padding_mode == "circular", layer.dilation, layer.groups)


def _conv_layer_shape(layer: nn.Conv2d, shape: tuple[int, ...]) -> tuple[int, ...]:
    kh, kw = (d * (k - 1) + 1 for d, k in zip(layer.dilation, layer.kernel_size))
    (lo_h, hi_h), (lo_w, hi_w) = _paddings(layer.padding, (kh, kw))
    return (layer.out_channels, _conv_out(shape[1], kh, lo_h, hi_h, layer.stride[0]),
            _conv_out(shape[2], kw, lo_w, hi_w, layer.stride[1]))


def _sample_dim(dim: int, ndim_batched: int) -> int:
    """A batched-tensor axis index as an axis of one sample (refuses the batch axis)."""
    d = dim if dim >= 0 else ndim_batched + dim
    if d < 1 or d >= ndim_batched:
        raise ValueError(f"axis {dim} is the batch axis or out of range")
    return d - 1


def _flatten_shape(layer: nn.Flatten, shape: tuple[int, ...]) -> tuple[int, ...]:
    nb = len(shape) + 1
    a, b = _sample_dim(layer.start_dim, nb), _sample_dim(layer.end_dim, nb)
    return (*shape[:a], math.prod(shape[a:b + 1]), *shape[b + 1:])


def _unflatten_shape(layer: nn.Unflatten, shape: tuple[int, ...]) -> tuple[int, ...]:
    d = _sample_dim(layer.dim, len(shape) + 1)
    sizes = tuple(int(s) for s in layer.unflattened_size)
    if math.prod(sizes) != shape[d] or any(s < 1 for s in sizes):
        raise ValueError(f"cannot unflatten axis of size {shape[d]} into {sizes}")
    return (*shape[:d], *sizes, *shape[d + 1:])


def _pixel_shuffle_shape(layer: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) != 3:
        raise ValueError(f"{type(layer).__name__} needs (C, H, W), got {shape}")
    c, h, w = shape
    if type(layer) is nn.PixelUnshuffle:
        r = layer.downscale_factor
        if h % r or w % r:
            raise ValueError(f"PixelUnshuffle({r}) needs H, W divisible by {r}, got {shape}")
        return (c * r * r, h // r, w // r)
    r = layer.upscale_factor
    if c % (r * r):
        raise ValueError(f"PixelShuffle({r}) needs C divisible by {r * r}, got {shape}")
    return (c // (r * r), h * r, w * r)


# ---------------------------------------------------------------------------- the network
def _bcop_conv(c_in: int, c_out: int, kernel_size: int, padding_mode: str) -> nn.Conv2d:
    """An orthogonium BCOP convolution whose projectors are orthonormalised by QR (exact up to
    rounding; the default power iteration + 12 Björck steps is only approximately orthogonal).
    Only its ``weight`` (recomputed at each access) and ``bias`` are used."""
    try:
        from orthogonium.layers.conv.AOC.fast_block_ortho_conv import FastBlockConv2d
        from orthogonium.reparametrizers import (
            BatchedIdentity,
            BatchedQROrthogonalization,
            OrthoParams,
        )
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("LipschitzConvNet needs the 'orthogonium' package (pip install "
                          "orthogonium, or the 'images' extra)") from exc
    params = OrthoParams(spectral_normalizer=BatchedIdentity,
                         orthogonalizer=BatchedQROrthogonalization)
    return FastBlockConv2d(c_in, c_out, kernel_size, padding="same", bias=True,
                           padding_mode=padding_mode, ortho_params=params)


class LipschitzConvNet(nn.Module):
    """One 1-Lipschitz convolutional network ``(C, H, W) -> 1`` on flattened images.

    Architecture: for each stage ``s`` (``channels[s]`` even), a ``PixelUnshuffle(2)`` before
    every stage but the first (exact downsampling: a permutation of the pixels,
    ``(c, h, w) -> (4c, h/2, w/2)``), then ``convs_per_stage`` times [orthogonal ``k x k``
    convolution ``-> channels[s]``, :class:`ChannelGroupSort2`]; then flatten, [orthogonal
    dense, GroupSort2] per entry of ``dense``, and a unit-norm linear head to one score.

    Parameters
    ----------
    input_shape : ``(C, H, W)``
        Image shape; ``H`` and ``W`` divisible by ``2 ** (len(channels) - 1)``.
    channels : sequence of even int, default ``(16, 32, 16)``
        Output channels of each stage. On MNIST ``(1, 28, 28)`` the default gives
        ``16 x 28 x 28 -> 32 x 14 x 14 -> 16 x 7 x 7 = 784`` features before the dense layers.
    convs_per_stage : int, default 1
    dense : sequence of even int, default ``(128,)``
        Hidden widths of the dense part.
    kernel_size : odd int, default 3
    padding : {"circular", "zeros"}, default "circular"
        Circular: every convolution is exactly orthogonal (BCOP kernels are orthogonal
        circulant operators), so the network is gradient-norm preserving where its layers do
        not widen. Zeros: each convolution has norm <= 1 but loses orthogonality at the border.
    n_models : int, default 1
        Only 1 is supported for now.
    seed : int or None
        Seeds the initial parameters (torch's global generator when None).

    Notes
    -----
    Follows :class:`~ocsdf.core.nn.LipschitzNetwork`: ``in_features = C * H * W``;
    :meth:`forward_with` takes ``(n, d)``, ``(1, n, d)``, ``(n, C, H, W)`` or
    ``(1, n, C, H, W)`` and returns ``(1, n)``. The convolutions come from ``orthogonium``
    (BCOP with QR-orthogonalised projectors), the dense layers from
    :func:`~ocsdf.core.nn.cayley_orthogonal`; neither is trusted: :meth:`lipschitz_bounds` is
    :func:`sequential_lipschitz_bound` of the float64 export of the weights actually used.
    """

    def __init__(self, input_shape: Sequence[int], channels: Sequence[int] = (16, 32, 16),
                 convs_per_stage: int = 1, dense: Sequence[int] = (128,), kernel_size: int = 3,
                 padding: str = "circular", n_models: int = 1, seed: int | None = None
                 ) -> None:
        super().__init__()
        if int(n_models) != 1:
            raise ValueError(f"LipschitzConvNet holds a single model for now (n_models=1), "
                             f"got n_models={n_models}; fit several models one by one")
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
        if padding not in ("circular", "zeros"):
            raise ValueError(f"padding must be 'circular' or 'zeros', got {padding!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        channels, dense = tuple(int(c) for c in channels), tuple(int(w) for w in dense)
        if not channels or any(c < 2 or c % 2 for c in channels):
            raise ValueError(f"channels must be even and >= 2, got {list(channels)}")
        if any(w < 2 or w % 2 for w in dense):
            raise ValueError(f"dense widths must be even and >= 2, got {list(dense)}")
        if int(convs_per_stage) < 1:
            raise ValueError(f"convs_per_stage must be >= 1, got {convs_per_stage}")
        c, h, w = shape
        down = 2 ** (len(channels) - 1)
        if h % down or w % down:
            raise ValueError(f"H and W must be divisible by {down} for {len(channels)} stages, "
                             f"got {h} x {w}")
        if padding == "circular" and kernel_size > min(h, w) // down:
            raise ValueError("the kernel is wider than the smallest feature map")
        self.n_models = 1
        self.input_shape = shape
        self.in_features = c * h * w
        self.channels, self.dense, self.kernel_size = channels, dense, int(kernel_size)
        self.convs_per_stage, self.padding = int(convs_per_stage), padding
        # plan: ("unshuffle",) | ("conv", i) | ("flatten",) | ("dense", j) | ("head",);
        # every conv and dense layer is followed by GroupSort2 (over channels / features)
        plan: list[tuple] = []
        conv_io: list[tuple[int, int]] = []
        for s, ch in enumerate(channels):
            if s > 0:
                plan.append(("unshuffle",))
                c, h, w = 4 * c, h // 2, w // 2
            for _ in range(self.convs_per_stage):
                plan.append(("conv", len(conv_io)))
                conv_io.append((c, ch))
                c = ch
        plan.append(("flatten",))
        sizes = (c * h * w, *dense)
        self.layer_sizes = tuple(zip(sizes[:-1], sizes[1:]))
        plan += [("dense", j) for j in range(len(dense))] + [("head",)]
        self._plan = plan
        self.conv_io = tuple(conv_io)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(int(seed))
            self.convs = nn.ModuleList(_bcop_conv(a, b, self.kernel_size, padding)
                                       for a, b in conv_io)
            for conv in self.convs:
                nn.init.zeros_(conv.bias)
            self.dense_params = nn.ParameterList(
                nn.Parameter(cayley_parameter(torch.randn(max(a, b), max(a, b))
                                              / math.sqrt(max(a, b)), b, a))
                for a, b in self.layer_sizes)
            self.head_param = nn.Parameter(torch.randn(1, sizes[-1]) / math.sqrt(sizes[-1]))
        self.dense_biases = nn.ParameterList(nn.Parameter(torch.zeros(b))
                                             for _, b in self.layer_sizes)
        self.head_bias = nn.Parameter(torch.zeros(1))

    # ---------------------------------------------------------------- protocol
    def weights(self) -> list[torch.Tensor]:
        """The weights used, computed once: conv kernels ``(c_out, c_in, k, k)``, dense
        ``(out, in)`` and the head ``(1, width)``, in layer order (no model axis)."""
        ws = [conv.weight for conv in self.convs]
        ws += [cayley_orthogonal(p, b, a) for p, (a, b) in zip(self.dense_params,
                                                                 self.layer_sizes)]
        ws.append(self.head_param / self.head_param.norm())
        return ws

    def biases(self) -> list[torch.Tensor]:
        """Bias parameters, in layer order: conv ``(c_out,)``, dense ``(out,)``, head ``(1,)``."""
        return [*(conv.bias for conv in self.convs), *self.dense_biases, self.head_bias]

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, d)``, ``(1, n, d)``, ``(n, C, H, W)`` or ``(1, n, C, H, W)`` -> images
        ``(n, C, H, W)``."""
        if x.dim() in (3, 5):
            if x.shape[0] != 1:
                raise ValueError(f"one model: a leading model axis must be 1, got "
                                 f"{tuple(x.shape)}")
            x = x[0]
        if x.dim() == 2 and x.shape[1] == self.in_features:
            return x.reshape(-1, *self.input_shape)
        if x.dim() == 4 and tuple(x.shape[1:]) == self.input_shape:
            return x
        raise ValueError(f"expected (n, {self.in_features}) rows or (n, *{self.input_shape}) "
                         f"images, got {tuple(x.shape)}")

    def _conv(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        p = self.kernel_size // 2
        if self.padding == "circular":
            return F.conv2d(F.pad(x, (p, p, p, p), mode="circular"), w, b)
        return F.conv2d(x, w, b, padding=p)

    def forward_with(self, weights: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Scores ``(1, n)`` of flattened or image inputs with precomputed ``weights`` (from
        :meth:`weights`); see :meth:`_images` for the accepted shapes."""
        h = self._images(x)
        n_conv, biases = len(self.convs), self.biases()
        for op in self._plan:
            if op[0] == "unshuffle":
                h = F.pixel_unshuffle(h, 2)
            elif op[0] == "conv":
                i = op[1]
                h = self._conv(h, weights[i], biases[i]).movedim(1, -1)
                h = group_sort2(h).movedim(-1, 1)
            elif op[0] == "flatten":
                h = h.flatten(1)
            elif op[0] == "dense":
                j = n_conv + op[1]
                h = group_sort2(F.linear(h, weights[j], biases[j]))
            else:
                h = F.linear(h, weights[-1], biases[-1])
        return h.reshape(1, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with(self.weights(), x)

    def export(self, index: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
        """The network frozen into plain modules holding the weights used, cast to ``dtype``:
        ``Unflatten -> [PixelUnshuffle] Conv2d -> ChannelGroupSort2 ... -> Flatten ->
        Linear -> GroupSort2 ... -> Linear -> squeeze``, ``(n, C * H * W) -> (n,)``, no
        trainable parameters, eval mode; accepted by :func:`sequential_lipschitz_bound` with
        ``input_shape = (C * H * W,)``."""
        if index != 0:
            raise IndexError(f"model index {index} out of range for 1 model")
        with torch.no_grad():
            ws, bs = self.weights(), self.biases()
            n_conv = len(self.convs)
            p = self.kernel_size // 2
            layers: list[nn.Module] = [nn.Unflatten(1, self.input_shape)]
            for op in self._plan:
                if op[0] == "unshuffle":
                    layers.append(nn.PixelUnshuffle(2))
                elif op[0] == "conv":
                    i = op[1]
                    c_in, c_out = self.conv_io[i]
                    conv = nn.Conv2d(c_in, c_out, self.kernel_size, padding=p,
                                     padding_mode=self.padding, dtype=dtype)
                    conv.weight.copy_(ws[i])
                    conv.bias.copy_(bs[i])
                    layers += [conv, ChannelGroupSort2()]
                elif op[0] == "flatten":
                    layers.append(nn.Flatten())
                else:
                    j = n_conv + op[1] if op[0] == "dense" else len(ws) - 1
                    lin = nn.Linear(ws[j].shape[1], ws[j].shape[0], dtype=dtype)
                    lin.weight.copy_(ws[j])
                    lin.bias.copy_(bs[j])
                    layers += [lin, GroupSort2()] if op[0] == "dense" else [lin]
        plain = nn.Sequential(*layers, _Squeeze()).to(ws[0].device)
        plain.requires_grad_(False)
        return plain.eval()

    def export_all(self, dtype: torch.dtype = torch.float32,
                   indices: Sequence[int] | None = None) -> list[nn.Sequential]:
        """``[export(0, dtype)]`` (one model), as :meth:`LipschitzMLP.export_all
        <ocsdf.core.nn.LipschitzMLP.export_all>`."""
        return [self.export(i, dtype) for i in (range(1) if indices is None else indices)]

    def lipschitz_bounds(self) -> list[float]:
        """``[bound]``: :func:`sequential_lipschitz_bound` of the float64 export (the weights
        used, cast exactly), at the real input size."""
        return [sequential_lipschitz_bound(self.export(0, torch.float64), (self.in_features,))]

    def extra_repr(self) -> str:
        return (f"input_shape={self.input_shape}, channels={list(self.channels)}, "
                f"convs_per_stage={self.convs_per_stage}, dense={list(self.dense)}, "
                f"kernel_size={self.kernel_size}, padding={self.padding!r}")
