"""Export a fitted score (:class:`ocsdf.Scorer`, e.g. ``OCSDF.scorer_``) to ONNX, and certify
from the exported scores.

The ONNX graph computes ``score_samples`` from rows in **raw** feature units:

1. ``z = (x - mean_) / scale_`` (two elementwise ops; left out when the map is the identity);
2. the exported network (``Gemm`` layers; GroupSort2 as ``Concat(Max(a, b), Min(a, b))`` of
   the two halves of the units, exactly :func:`ocsdf.core.nn.group_sort2`; FullSort as
   ``TopK``);
3. for the box and ball domains, ``min(f, sdf_B(z))`` with ``sdf_B`` the signed distance to the
   boundary of B, written with ``Min``/``Clip``/``ReduceL2``/``Where`` exactly as
   ``Box.signed_distance`` and ``Ball.signed_distance`` of :mod:`ocsdf.core.domain`; for a
   tabular model whose B is a ``WithBalls`` (training rows outside the box), also
   ``Max(sdf_base, ReduceMax_i(r - ReduceL2(z - c_i)))`` over the ``k`` ball centres (an
   ``(n, k, d)`` intermediate of exact differences), as ``WithBalls.signed_distance``.

Input ``x``: shape ``(n, d)`` with a dynamic ``n``, raw units. Outputs: ``score``, shape
``(n,)``, equal to ``score_samples``; ``rounding``, shape ``(n,)``, a sound bound of
``|score - float64 score_samples|`` for each row (below).

Image models (``OCSDF`` fitted on ``(n, H, W)`` / ``(n, C, H, W)`` arrays) take the same rows
``score_samples`` takes after flattening: ``x`` of shape ``(n, C * H * W)``, pixels in
``[0, 1]``, each image flattened in C order (``images.reshape(n, -1)``: channel, then row,
then column); the metadata key ``image_shape`` holds ``[C, H, W]`` (``null`` for tabular
models). Pixels are not standardised and the pixel box does not clip, so steps 1 and 3 vanish.
A convolutional network (``network="conv"``, :class:`~ocsdf.core.conv.LipschitzConvNet`) is
written layer by layer from its export:

* ``nn.Unflatten`` / ``nn.Flatten`` as ``Reshape`` to the static per-sample shape (batch size
  copied: any ``n``, also 0);
* ``nn.Conv2d`` as ``Conv`` with the layer's pads (torch's split, the smaller half first, for
  ``padding="same"``), strides, dilations and groups; circular padding (the default
  architecture's) as exact ``Slice`` + ``Concat`` copies of the wrapped rows and columns (H,
  then W, as torch pads) before an unpadded ``Conv``. onnxruntime's CPU ``Conv`` is float32
  only, so float64 graphs write each convolution as ``Pad``, then, channels last, a ``Sum``
  over the kernel taps of ``MatMul(strided Slice, K[:, :, a, b]^T)``, plus the bias (groups as
  a block-diagonal kernel, dilation as skipped zero taps);
* :class:`~ocsdf.core.conv.ChannelGroupSort2` as ``Concat(Max(a, b), Min(a, b))`` of the two
  channel halves (axis 1), GroupSort2 / FullSort on the last axis as for dense networks,
  ``ReLU`` as ``Relu``;
* ``nn.PixelUnshuffle(r)`` as ``Reshape (C, H/r, r, W/r, r)``, ``Transpose [0, 1, 3, 5, 2,
  4]``, ``Reshape (C r^2, H/r, W/r)``: PyTorch's channel order ``c r^2 + i r + j``
  (``SpaceToDepth`` puts the offset first, ``(i r + j) C + c``); ``nn.PixelShuffle(r)`` as its
  inverse (``Transpose [0, 1, 4, 2, 5, 3]``);
* ``nn.Linear`` as ``Gemm`` (``MatMul`` + ``Add`` on image axes), the final squeeze as
  ``Squeeze``.

Why ``z`` is computed first rather than folded into the first layer (``W' = W diag(1/scale)``,
``b' = b - W (mean/scale)``): ``sdf_B`` needs ``z`` anyway, and folding makes ``b'`` a
difference of large numbers when ``|mean| >> scale``, which in float32 loses digits that
``x - mean`` (nearly exact for ``x`` close to ``mean``) keeps.

Numerics: float32 certificates
------------------------------
The graph is written in ``float32`` by default. Its scores differ from the float64
``score_samples`` by a rounding error; a certificate computed from a float32 score must subtract
it. The graph's second output ``rounding`` is a sound per-row bound of that error, and the
metadata key ``rounding_coef`` holds its coefficients ``c``::

    rounding(x) = c0 + c1 * ||z||_2 + c2 * ||x / scale_||_2     (z = (x - mean_) / scale_)

derived by standard forward error analysis (Higham, *Accuracy and Stability of Numerical
Algorithms*, section 3.5): a dot product of length ``n`` plus a bias, with the weights rounded
to float32, is off by at most ``gamma_{n+3} (|W| |h| + |b|)`` with ``gamma_k = k u / (1 - k u)``,
``u = 2^-24``; its l2 norm is at most ``gamma (||W||_F ||h|| + ||b||)``. Each layer's error then
goes through the remaining layers (GroupSort is exact in floating point and 1-Lipschitz), i.e.
is multiplied by the product of their spectral norms (about 1 for the orthogonal layers). The
standardisation (``|dz_i| <= gamma_5 (|x_i| + |mean_i|) / scale_i``), ``sdf_B`` (the minimum of
two errors is at most the larger one) and the rounding of a float64 input to float32
(``<= lipschitz_ * u * ||x / scale_||``) are added the same way, and the total is inflated by 1%.
The bound holds for IEEE float32 arithmetic in any summation order (onnxruntime's CPU kernels,
FMA or not); it does not cover execution providers that compute in reduced precision (TF32,
float16).

Convolutional networks get the same bound, with the coefficients of
``rounding(x) = c0 + c1 ||z|| + c2 ||x / scale_||`` (``z = x`` for pixels) computed layer by
layer. A convolution's output ``(o, i, j)`` is one dot product of length
``k = C_in / groups * kh * kw`` (the taps under the kernel; zero padding adds exact zeros)
plus the bias, so the computed output of the computed input ``h`` is off by at most
``gamma_{k+3} (conv(|W|, |h|) + |b|)`` elementwise, whose l2 norm is at most
``gamma_{k+3} (N(|W|) ||h|| + ||b|| sqrt(H_out W_out))`` with ``N(|W|)`` the operator norm of
the convolution with the absolute-value kernel at that layer's input size, stride, padding
(circular or zeros), dilation and groups, bounded soundly by
:func:`~ocsdf.core.conv.conv_spectral_norm` (the FFT bound; ``|| |h| || = ||h||``). A dense
layer uses ``|| |W| ||_2`` likewise (``<= ||W||_F``). Each local error is multiplied by the
product of the remaining layers' bounds (:func:`~ocsdf.core.conv.conv_spectral_norm` of the
convolutions, spectral norms of the dense layers; reshapes, pixel (un)shuffles, sorts and ReLU
are exact and 1-Lipschitz), and ``||h||`` of each layer is bounded by the input norm times the
preceding layers' bounds plus their biases' contributions and their own errors. The input
rounding (``lipschitz_ * u * ||x||``, pixels in [0, 1]) is added, and so is the same analysis
with ``u = 2^-53`` for the float64 arithmetic of ``score_samples`` itself; the total is
inflated by 1%.

Measured (width 32, depth 2, 3-D data with feature scales 0.01, 1, 100 and means -5, 0, 1000;
10,000 rows in the data, in the box and up to 9 standard deviations out; float32 graph on
onnxruntime's CPU provider): ``max |float32 - float64| = 2.6e-5`` standardised units (mean
``2.8e-6``), dominated by rounding the input to float32 (a feature whose mean is 500 of its
standard deviations from 0); on float32-representable rows the maximum is ``2.7e-6``, and on
unit-scale data ``1.5e-6``. The ``rounding`` bound was 17 to 100 times the worst row's error
(``<= 6e-4`` on those rows). With ``dtype="float64"`` the graph agrees with ``score_samples``
to ``~4e-15`` and the bound uses ``u = 2^-53``.

Measured, convolutional (MNIST digit 0, 2,000 training images, ``network="conv"`` with the
default ``channels=(16, 32, 16)``, dense ``(128,) * 3``, 300 steps; 10,000 test digits and
1,000 uniform-noise images; onnxruntime CPU, one thread): ``max |float32 - float64| = 2.6e-6``
on the digits and ``6.1e-6`` on the noise (mean ``4.3e-7``); the ``rounding`` bound was
``0.0097`` to ``0.032`` (median ``0.0195``, about 5,000 times the worst row's error: the
worst-case ``gamma_k`` with ``k = 576`` and ``1,152`` taps, times ``N(|W|) = 13`` and ``9.3``
for the two deep convolutions and ``|| |W| ||_2 = 9`` for the dense layers, where the
orthogonal weights themselves have norm 1), i.e. a certified radius from the float32 graph
is at most 0.032 (median 0.0195) smaller than the float64 one (median radius 1.57). For
certificates at small radii use ``dtype="float64"``: scores within ``1.4e-14``, bound
``<= 1.2e-10``. Speed: the float32 graph scores 4,000 rows/s, ``score_samples`` 320 rows/s
in batches of 65,536 rows and 840 in batches of 256 (now its batch for image networks,
:data:`~ocsdf.core.scorer.IMAGE_SCORE_BATCH`), the float64 graph 390 rows/s.

:func:`certified_radius_from_scores` subtracts the bound: its radius is never larger than the
float64 ``OCSDF.certified_radius`` of the same row.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

__all__ = [
    "to_onnx",
    "certified_radius_from_scores",
    "onnx_metadata",
    "rounding_bound",
]

#: Metadata keys written by :func:`to_onnx` (all values are strings, as ONNX requires).
METADATA_KEYS = (
    "ocsdf_version", "feature_names", "n_features", "input_units", "norm", "dtype", "domain",
    "domain_size", "threshold", "lipschitz_raw", "lipschitz_standardized", "mean", "scale",
    "rounding_coef", "max_abs_z", "image_shape",
)

_DTYPES = {"float32": (np.float32, 2.0**-24), "float64": (np.float64, 2.0**-53)}


def _gamma(k: int, u: float) -> float:
    return k * u / (1.0 - k * u)


def _fitted_scorer(model):
    """``model.scorer_`` of a fitted estimator (anything that holds one)."""
    from sklearn.exceptions import NotFittedError

    if not hasattr(type(model), "score_samples") or not hasattr(type(model), "fit"):
        raise TypeError(f"to_onnx needs a fitted ocsdf.OCSDF, got {type(model).__name__}")
    scorer = getattr(model, "scorer_", None)
    if scorer is None:
        raise NotFittedError(
            "this OCSDF instance is not fitted yet: call fit(X) (or OCSDF.load) before "
            "exporting it to ONNX"
        )
    return scorer


class _Graph:
    """Tiny helper around ``onnx.helper`` that names nodes and constants."""

    def __init__(self, onnx_mod, np_dtype, opset: int) -> None:
        self.onnx = onnx_mod
        self.np_dtype = np_dtype
        self.opset = opset
        self.nodes: list = []
        self.inits: list = []
        self._n = 0

    def _name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, value, dtype=None, prefix: str = "c") -> str:
        name = self._name(prefix)
        arr = np.asarray(value, dtype=dtype or self.np_dtype)
        self.inits.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, *inputs: str, prefix: str | None = None, **attrs) -> str:
        out = self._name(prefix or op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def reduce(self, op_type: str, x: str, axis: int, keepdims: int = 0) -> str:
        """Reduce over one axis; axes are an attribute before opset 18 and an input after."""
        if self.opset >= 18:
            axes = self.const([axis], dtype=np.int64, prefix="axes")
            return self.op(op_type, x, axes, keepdims=keepdims)
        return self.op(op_type, x, axes=[axis], keepdims=keepdims)


def _build(scorer, emit, coef: np.ndarray, np_dtype, opset: int):
    """The ONNX ``ModelProto`` (without metadata) of ``scorer.score``; ``emit(g, z)`` writes
    the network's nodes on the standardised rows ``z`` and returns the name of ``f``, ``(n,)``."""
    import onnx

    d = scorer.n_features
    g = _Graph(onnx, np_dtype, opset)
    h = "x"
    mean, scale = scorer.mean, scorer.scale
    identity = _is_identity(scorer)
    if not identity:
        h = g.op("Div", g.op("Sub", "x", g.const(mean)), g.const(scale), prefix="z")
    z = h
    # Second output: the rounding bound c0 + c1 ||z|| + c2 ||x / scale|| of each row's score.
    x_scaled = "x" if identity else g.op("Div", "x", g.const(scale))
    rounding = g.op(
        "Add",
        g.op("Add", g.const(coef[0]), g.op("Mul", g.const(coef[1]), g.reduce("ReduceL2", z, 1))),
        g.op("Mul", g.const(coef[2]), g.reduce("ReduceL2", x_scaled, 1)),
    )
    f = emit(g, z)
    if scorer.clip_to_domain:
        f = g.op("Min", f, _emit_sdf(g, scorer.domain, z))
    g.nodes.append(onnx.helper.make_node("Identity", [f], ["score"]))
    g.nodes.append(onnx.helper.make_node("Identity", [rounding], ["rounding"]))
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(np_dtype))
    graph = onnx.helper.make_graph(
        g.nodes, "ocsdf_score",
        [onnx.helper.make_tensor_value_info("x", elem, ["n", d])],
        [onnx.helper.make_tensor_value_info("score", elem, ["n"]),
         onnx.helper.make_tensor_value_info("rounding", elem, ["n"])],
        initializer=g.inits,
    )
    proto = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", opset)], producer_name="ocsdf",
        doc_string="OCSDF normality score (score_samples) of rows in raw feature units; higher "
        "= more normal; decision = score - threshold.",
    )
    proto.ir_version = min(proto.ir_version, 8 if opset <= 17 else 9)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _emit_sdf(g, dom, z: str) -> str:
    """Nodes of ``dom.signed_distance(z)``, ``(n,)``, on the standardised rows ``z``.

    Box and ball exactly as :class:`~ocsdf.core.domain.Box` / :class:`~ocsdf.core.domain.Ball`
    (the same nodes as before :class:`~ocsdf.core.domain.WithBalls` existed). For
    ``WithBalls(base, C, r)`` with ``k >= 1`` centres, ``Max(sdf_base, ReduceMax_i(r -
    ReduceL2(Unsqueeze(z, 1) - C[None], axis=2)))``: exact differences ``z - c_i`` (no
    ``|z|^2 - 2 z.c + |c|^2`` cancellation), an ``(n, k, d)`` intermediate. Rows far from
    every ball get the same value as the torch version, which skips rows with
    ``sdf_base >= r`` (there no ball can raise the maximum)."""
    from .core.domain import Box, WithBalls

    if isinstance(dom, WithBalls):
        base = _emit_sdf(g, dom.base, z)
        if len(dom.centres) == 0:
            return base
        centres = g.const(dom.centres[None], prefix="centres")  # (1, k, d)
        diff = g.op("Sub", g.op("Unsqueeze", z, g.const([1], np.int64)), centres)
        dist = g.reduce("ReduceL2", diff, 2)  # (n, k)
        ball = g.reduce("ReduceMax", g.op("Sub", g.const(float(dom.radius)), dist), 1)
        return g.op("Max", base, ball, prefix="sdf")
    if isinstance(dom, Box):
        lo, hi = g.const(float(dom.low)), g.const(float(dom.high))
        gap = g.op("Min", g.op("Sub", hi, z), g.op("Sub", z, lo))
        inside = g.reduce("ReduceMin", gap, 1)
        clipped = g.op("Clip", z, lo, hi)
        outside = g.op("Neg", g.reduce("ReduceL2", g.op("Sub", z, clipped), 1))
        is_in = g.op("GreaterOrEqual", inside, g.const(0.0))
        return g.op("Where", is_in, inside, outside, prefix="sdf")
    return g.op("Sub", g.const(float(dom.radius)), g.reduce("ReduceL2", z, 1), prefix="sdf")


def _sdf_errors(dom, d: int, u: float, dz: np.ndarray, znorm: np.ndarray) -> np.ndarray:
    """Coefficients (on ``(1, ||z||, ||x / scale_||)``) of a bound of the error of
    ``sdf_B`` computed by the graph (unit roundoff ``u``) on the computed rows ``z~``
    (``||z~ - z|| <= dz``, ``||z~|| <= znorm``, both as coefficient vectors).

    Box / ball: ``dz + gamma_{d+3} (s + ||z~||)``, ``s`` the extent of the bounds (as before).

    Ball term of :class:`~ocsdf.core.domain.WithBalls`, ``r - ||z - c_i||`` for each centre
    (Higham's ``gamma_a + gamma_b + gamma_a gamma_b <= gamma_{a+b}`` throughout):

    * the centres and the radius are rounded to the dtype: ``||c~ - c|| <= u ||c||``,
      ``|r~ - r| <= u r``;
    * ``t = fl(z~ - c~)``: ``|t_j - (z~_j - c~_j)| <= u |z~_j - c~_j|``;
    * ``ReduceL2`` = ``sqrt`` of a sum of ``d`` nonnegative squares: relative error of the sum
      ``<= gamma_d`` (``d`` roundings of nonnegative terms), so ``sqrt(1 +- gamma_d)`` is
      within ``1 +- gamma_d`` and one more rounding gives ``<= gamma_{d+1}``; with the rounded
      differences (``| ||t|| - a | <= u a``, ``a = ||z~ - c~||``), ``|N~ - a| <= gamma_{d+2} a``;
    * the subtraction ``fl(r~ - N~)`` adds ``u |r~ - N~| <= u ((1 + u) r + (1 + gamma_{d+2}) a)``.

    With ``a <= ||z~|| + (1 + u) ||c||`` and ``| a - ||z - c|| | <= ||z~ - z|| + u ||c||``:
    ``|fl(r~ - N~) - (r - ||z - c||)| <= dz + gamma_{d+3} ||z~|| + gamma_{d+4} ||c|| +
    gamma_2 r <= dz + gamma_{d+6} (||z~|| + max_i ||c_i|| + r)`` (two spare ``u`` for
    slack, e.g. a ``ReduceL2`` kernel that squares after a scaling). The part in ``||z~||``
    goes into ``c1`` (and ``c0``, ``c2`` through ``dz`` and ``znorm``), the rest into ``c0``.
    ``ReduceMax`` and ``Max`` are exact and 1-Lipschitz in the sup norm, so the maximum's
    error is at most the larger of the two terms' errors (a coefficientwise maximum: every
    variable is >= 0). The same term with ``u = 2^-53`` is added for the float64 arithmetic of
    ``score_samples`` (``torch.cdist`` without the matrix-product shortcut, the same steps)."""
    from .core.domain import Box, WithBalls

    one = np.array([1.0, 0.0, 0.0])
    if isinstance(dom, WithBalls):
        err = _sdf_errors(dom.base, d, u, dz, znorm)
        if len(dom.centres) == 0:
            return err
        cmax = float(np.linalg.norm(dom.centres, axis=1).max())
        gam = _gamma(d + 6, u) + _gamma(d + 6, 2.0**-53)
        ball = dz + gam * ((cmax + float(dom.radius)) * one + znorm)
        return np.maximum(err, ball)
    s = _domain_extent(dom) if isinstance(dom, Box) else float(dom.radius)
    return dz + _gamma(d + 3, u) * (s * one + znorm)


def _dense_emitter(layers):
    """``emit`` of :func:`_build` for a dense network given as ``Scorer.layers()``."""

    def emit(g, h: str) -> str:
        w = None
        for kind, spec in layers:
            if kind == "linear":
                w, b = spec
                h = g.op("Gemm", h, g.const(w), g.const(b), transB=1, prefix="linear")
            elif kind == "fullsort":  # all features, descending
                h = _topk(g, h, w.shape[0], axis=1)
            elif kind == "groupsort2":
                h = _groupsort2(g, h, w.shape[0], axis=1)
            else:
                raise TypeError(f"cannot export activation {kind!r}")
        return g.op("Squeeze", h, g.const([1], np.int64), prefix="f")

    return emit


def _groupsort2(g, h: str, n: int, axis: int) -> str:
    """GroupSort2 along ``axis`` (size ``n``): pairs ``(k, k + n/2)`` as
    ``Concat(Max(a, b), Min(a, b))`` of the two halves, exactly :func:`ocsdf.core.nn.group_sort2`
    (and :class:`~ocsdf.core.conv.ChannelGroupSort2` on the channel axis)."""
    ax = g.const([axis], np.int64)
    zero, half, end = (g.const([0], np.int64), g.const([n // 2], np.int64),
                       g.const([n], np.int64))
    a = g.op("Slice", h, zero, half, ax)
    b = g.op("Slice", h, half, end, ax)
    return g.op("Concat", g.op("Max", a, b), g.op("Min", a, b), axis=axis, prefix="groupsort")


def _topk(g, h: str, n: int, axis: int) -> str:
    """FullSort (descending) along ``axis`` of size ``n``."""
    k = g.const([n], dtype=np.int64, prefix="k")
    values = g._name("sorted")
    g.nodes.append(g.onnx.helper.make_node(
        "TopK", [h, k], [values, g._name("indices")], axis=axis, largest=1, sorted=1))
    return values


def _rounding_coefficients(scorer, layers, u: float) -> np.ndarray:
    """``c`` with ``|score_T(x) - score_float64(x)| <= c[0] + c[1] ||z||_2 + c[2] ||x/scale_||_2``.

    ``z = (x - mean_) / scale_``. Every norm below is bounded by such an affine function of
    ``(1, ||z||, ||x / scale_||)``, kept as its coefficient vector. See the module docstring.
    """
    scale = scorer.scale
    mu = float(np.linalg.norm(scorer.mean / scale))
    d = scorer.n_features
    identity = _is_identity(scorer)
    g5 = _gamma(5, u)
    # z = (x - mean) / scale, computed: |dz_i| <= gamma_5 (|x_i| + |mean_i|) / scale_i (mean,
    # scale rounded to the dtype, the subtraction, the division or a reciprocal and a product).
    dz = np.zeros(3) if identity else np.array([g5 * mu, 0.0, g5])
    znorm = np.array([0.0, 1.0, 0.0]) + dz  # ||z_computed||
    linear = [spec for kind, spec in layers if kind == "linear"]
    spectral = [float(np.linalg.norm(w, 2)) for w, _ in linear]
    h = znorm
    err = math.prod(spectral) * dz  # the standardisation error, through the network
    for i, (w, b) in enumerate(linear):
        gam = _gamma(w.shape[1] + 3, u)
        fro, bn = float(np.linalg.norm(w)), float(np.linalg.norm(b))
        local = gam * (fro * h + np.array([bn, 0.0, 0.0]))
        err = err + math.prod(spectral[i + 1:]) * local
        h = spectral[i] * h + np.array([bn, 0.0, 0.0]) + local
    if scorer.clip_to_domain:
        err = np.maximum(err, _sdf_errors(scorer.domain, d, u, dz, znorm))
    # Rounding a float64 input to the graph's dtype: |dx_i| <= u |x_i|.
    err = err + np.array([0.0, 0.0, float(scorer.lipschitz) * u])
    # Margin for the float64 arithmetic of this very computation, of score_samples, and of the
    # evaluation of the bound itself in the graph's dtype.
    return 1.01 * err + np.array([1e-12, 0.0, 1e-15])


# ---------------------------------------------------------------------------- image networks
def _image_steps(net, d: int) -> list[tuple[str, object, tuple, tuple]]:
    """The layers of an image network (``nn.Sequential``, nested ones walked) as
    ``(kind, layer, in_shape, out_shape)``, shapes of one sample (no batch axis), from
    ``(d,)``. Raises TypeError for a layer with no ONNX form here."""
    from torch import nn

    from .core.conv import (
        ChannelGroupSort2,
        _conv_layer_shape,
        _flatten_shape,
        _pixel_shuffle_shape,
        _unflatten_shape,
    )
    from .core.nn import FullSort, GroupSort2, _Squeeze

    plain = {ChannelGroupSort2: "channel_groupsort2", GroupSort2: "groupsort2",
             FullSort: "fullsort", nn.ReLU: "relu", nn.Identity: "identity", _Squeeze: "squeeze",
             nn.PixelUnshuffle: "pixel_unshuffle", nn.PixelShuffle: "pixel_shuffle"}
    steps: list[tuple[str, object, tuple, tuple]] = []

    def walk(seq, shape: tuple) -> tuple:
        for layer in seq:
            kind = type(layer)
            if kind is nn.Sequential:
                shape = walk(layer, shape)
                continue
            if kind is nn.Conv2d:
                if layer.padding_mode not in ("zeros", "circular"):
                    raise TypeError(f"cannot export Conv2d with padding_mode="
                                    f"{layer.padding_mode!r}")
                out, name = _conv_layer_shape(layer, shape), "conv"
            elif kind is nn.Linear:
                out, name = (*shape[:-1], layer.out_features), "linear"
            elif kind is nn.Flatten:
                out, name = _flatten_shape(layer, shape), "reshape"
            elif kind is nn.Unflatten:
                out, name = _unflatten_shape(layer, shape), "reshape"
            elif kind in (nn.PixelUnshuffle, nn.PixelShuffle):
                out, name = _pixel_shuffle_shape(layer, shape), plain[kind]
            elif kind is _Squeeze:
                out, name = shape[:-1], "squeeze"
            elif kind in plain:
                out, name = shape, plain[kind]
            else:
                raise TypeError(f"cannot export a {kind.__name__} layer to ONNX")
            steps.append((name, layer, tuple(shape), tuple(out)))
            shape = tuple(out)
        return shape

    final = walk(net, (int(d),))
    if final != ():
        raise ValueError(f"the network ends with per-sample shape {final}, not a scalar score")
    return steps


def _conv_pads(layer) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((top, bottom), (left, right))`` padding of an ``nn.Conv2d`` as torch applies it."""
    from .core.conv import _paddings

    kh, kw = (dl * (k - 1) + 1 for dl, k in zip(layer.dilation, layer.kernel_size))
    return _paddings(layer.padding, (kh, kw))


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _image_emitter(steps):
    """``emit`` of :func:`_build` for an image network (:func:`_image_steps`)."""

    def reshape(g, h: str, shape: tuple) -> str:
        # 0 copies the batch size (any n, also 0); the other sizes are static
        return g.op("Reshape", h, g.const([0, *shape], np.int64), prefix="reshape")

    def emit(g, h: str) -> str:
        for kind, layer, shp, out in steps:
            if kind == "reshape":
                h = reshape(g, h, out)
            elif kind == "conv":
                (lo_h, hi_h), (lo_w, hi_w) = _conv_pads(layer)
                pads = [lo_h, lo_w, hi_h, hi_w]
                if layer.padding_mode == "circular":
                    # torch's circular pad: the last lo rows before, the first hi rows after
                    # (H first, then W); exact copies, as Slice + Concat
                    for axis, lo, hi, size in ((2, lo_h, hi_h, shp[1]), (3, lo_w, hi_w, shp[2])):
                        parts = []
                        ax = g.const([axis], np.int64)
                        if lo:
                            parts.append(g.op("Slice", h, g.const([size - lo], np.int64),
                                              g.const([size], np.int64), ax))
                        parts.append(h)
                        if hi:
                            parts.append(g.op("Slice", h, g.const([0], np.int64),
                                              g.const([hi], np.int64), ax))
                        if len(parts) > 1:
                            h = g.op("Concat", *parts, axis=axis, prefix="circular_pad")
                    pads = [0, 0, 0, 0]
                if g.np_dtype == np.float64:  # onnxruntime's CPU Conv is float32 only
                    h = _conv_by_taps(g, h, layer, pads, out)
                else:
                    h = g.op("Conv", h, g.const(_np(layer.weight)), g.const(_np(layer.bias)),
                             kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                             dilations=list(layer.dilation), group=int(layer.groups),
                             pads=pads, prefix="conv")
            elif kind == "linear":
                w, b = _np(layer.weight), _np(layer.bias)
                if len(shp) == 1:
                    h = g.op("Gemm", h, g.const(w), g.const(b), transB=1, prefix="linear")
                else:
                    h = g.op("Add", g.op("MatMul", h, g.const(w.T.copy())), g.const(b),
                             prefix="linear")
            elif kind == "channel_groupsort2":
                h = _groupsort2(g, h, shp[0], axis=1)
            elif kind == "groupsort2":
                h = _groupsort2(g, h, shp[-1], axis=len(shp))
            elif kind == "fullsort":
                h = _topk(g, h, shp[-1], axis=len(shp))
            elif kind == "relu":
                h = g.op("Relu", h)
            elif kind == "squeeze":
                h = g.op("Squeeze", h, g.const([len(shp)], np.int64), prefix="f")
            elif kind in ("pixel_unshuffle", "pixel_shuffle"):
                c, hh, ww = shp
                if kind == "pixel_unshuffle":
                    # torch: out[c r^2 + i r + j, y, x] = in[c, y r + i, x r + j]
                    r = int(layer.downscale_factor)
                    h = reshape(g, h, (c, hh // r, r, ww // r, r))
                    h = g.op("Transpose", h, perm=[0, 1, 3, 5, 2, 4])
                else:
                    # torch: out[c, y r + i, x r + j] = in[c r^2 + i r + j, y, x]
                    r = int(layer.upscale_factor)
                    h = reshape(g, h, (c // (r * r), r, r, hh, ww))
                    h = g.op("Transpose", h, perm=[0, 1, 4, 2, 5, 3])
                h = reshape(g, h, out)
            elif kind != "identity":
                raise TypeError(f"cannot export layer {kind!r}")
        return h

    return emit


def _conv_by_taps(g, h: str, layer, pads: list[int], out: tuple) -> str:
    """``Conv`` without the ``Conv`` op (for float64 graphs): zero ``pads``
    (``[top, left, bottom, right]``), then, channels last, the sum over the kernel taps
    ``(a, b)`` of ``MatMul(x[:, a + s i, b + s j, :], K[:, :, a, b]^T)`` plus the bias, with
    ``K`` the equivalent dense, undilated kernel (groups as a block-diagonal kernel, dilation
    as zero taps, which are skipped). Each output is still one dot product of the same
    nonzero terms (summed in another order) plus the bias."""
    from .core.conv import _full_kernel

    kernel = _full_kernel(layer.weight, tuple(layer.dilation), int(layer.groups)).numpy()
    if any(pads):
        top, left, bottom, right = pads
        h = g.op("Pad", h, g.const([0, 0, top, left, 0, 0, bottom, right], np.int64),
                 mode="constant", prefix="zero_pad")
    h = g.op("Transpose", h, perm=[0, 2, 3, 1])  # (n, H, W, C_in)
    _, h_out, w_out = out
    sh, sw = layer.stride
    axes, steps = g.const([1, 2], np.int64), g.const([sh, sw], np.int64)
    terms = []
    for a in range(kernel.shape[2]):
        for b in range(kernel.shape[3]):
            tap = kernel[:, :, a, b]
            if not np.any(tap) and (a, b) != (0, 0):  # (0, 0) is always a real tap
                continue
            patch = g.op("Slice", h, g.const([a, b], np.int64),
                         g.const([a + sh * (h_out - 1) + 1, b + sw * (w_out - 1) + 1], np.int64),
                         axes, steps)
            terms.append(g.op("MatMul", patch, g.const(tap.T.copy())))
    total = terms[0] if len(terms) == 1 else g.op("Sum", *terms)
    total = g.op("Add", total, g.const(_np(layer.bias)))
    return g.op("Transpose", total, perm=[0, 3, 1, 2], prefix="conv")


def _image_errors(scorer, steps, u: float) -> np.ndarray:
    """Coefficients (on ``(1, ||z||, ||x / scale_||)``) of a bound of the arithmetic error of
    an image network's score computed with unit roundoff ``u`` (weights rounded to it): the
    standardisation, each convolution / dense layer through the rest of the network, and
    ``sdf_B`` when clipped. See the module docstring."""
    import torch

    from .core.conv import conv_spectral_norm

    mu = float(np.linalg.norm(scorer.mean / scorer.scale))
    g5 = _gamma(5, u)
    dz = np.zeros(3) if _is_identity(scorer) else np.array([g5 * mu, 0.0, g5])
    znorm = np.array([0.0, 1.0, 0.0]) + dz
    one = np.array([1.0, 0.0, 0.0])
    affine = []  # (index, Lipschitz bound, bound of ||.|abs weights|.||, dot length, ||bias||)
    factors = []
    for i, (kind, layer, shp, out) in enumerate(steps):
        if kind == "conv":
            w = layer.weight.detach().to("cpu", torch.float64)
            circular = layer.padding_mode == "circular"
            args = (shp[1:], layer.stride, layer.padding, circular, layer.dilation, layer.groups)
            lip = conv_spectral_norm(w, *args)
            absn = conv_spectral_norm(w.abs(), *args)
            length = int(np.prod(w.shape[1:]))
            bias = float(np.linalg.norm(_np(layer.bias))) * math.sqrt(out[1] * out[2])
        elif kind == "linear":
            w = _np(layer.weight)
            lip, absn = float(np.linalg.norm(w, 2)), float(np.linalg.norm(np.abs(w), 2))
            length = w.shape[1]
            bias = float(np.linalg.norm(_np(layer.bias))) * math.sqrt(math.prod(shp[:-1]))
        else:  # reshapes, pixel (un)shuffles, sorts, ReLU: exact and 1-Lipschitz
            factors.append(1.0)
            continue
        factors.append(lip)
        affine.append((i, lip, absn, length, bias))
    h = znorm  # bound of the norm of the computed input of the current layer
    err = math.prod(factors) * dz
    for i, lip, absn, length, bias in affine:
        local = _gamma(length + 3, u) * (absn * h + bias * one)
        err = err + math.prod(factors[i + 1:]) * local
        h = lip * h + bias * one + local
    if scorer.clip_to_domain:
        err = np.maximum(err, _sdf_errors(scorer.domain, scorer.n_features, u, dz, znorm))
    return err


def _image_rounding_coefficients(scorer, steps, u: float) -> np.ndarray:
    """``c`` as :func:`_rounding_coefficients`, for an image network: the graph's arithmetic
    (unit roundoff ``u``), the float64 arithmetic of ``score_samples`` itself (``2^-53``), and
    the rounding of the input to the graph's dtype; inflated by 1 %."""
    err = _image_errors(scorer, steps, u) + _image_errors(scorer, steps, 2.0**-53)
    err = err + np.array([0.0, 0.0, float(scorer.lipschitz) * u])
    return 1.01 * err + np.array([1e-12, 0.0, 1e-15])


def _is_identity(scorer) -> bool:
    return not (np.any(scorer.mean != 0) or np.any(scorer.scale != 1))


def _domain_extent(domain) -> float:
    """Largest coordinate magnitude of the domain's defining numbers (box bounds, radius;
    for :class:`~ocsdf.core.domain.WithBalls` also ``max_i ||c_i||_inf + r``)."""
    from .core.domain import Box, WithBalls

    if isinstance(domain, WithBalls):
        base = _domain_extent(domain.base)
        if len(domain.centres) == 0:
            return base
        return max(base, float(np.abs(domain.centres).max()) + float(domain.radius))
    if isinstance(domain, Box):
        return max(abs(float(domain.low)), abs(float(domain.high)))
    return float(domain.radius)


def to_onnx(model, path: str | os.PathLike, opset: int = 17, dtype: str = "float32") -> Path:
    """Write ``model.score_samples`` as an ONNX graph on raw rows to ``path`` (atomically).

    Parameters
    ----------
    model : OCSDF
        A fitted estimator.
    path : str or path-like
        Output file, in an existing folder; written to a temporary file next to it and renamed
        into place, with the usual permissions (0o666 less the umask).
    opset : int, default 17
        ONNX opset (13 or newer).
    dtype : {"float32", "float64"}, default "float32"
        Element type of the input, the weights and the output.

    Returns
    -------
    Path
        ``path``.

    Notes
    -----
    Input ``x`` of shape ``(n, d)`` (dynamic ``n``, raw units, the graph's dtype), outputs
    ``score`` and ``rounding``, each of shape ``(n,)``. Image models (dense or convolutional)
    take flattened images: ``d = C * H * W``, pixels in [0, 1], ``images.reshape(n, -1)`` of
    ``(n, C, H, W)`` arrays (the rows ``score_samples`` takes). Metadata (``metadata_props``,
    strings): ``image_shape`` (JSON ``[C, H, W]``, or ``null`` for tabular models),
    ``feature_names`` (JSON list, or ``null`` when fitted on an array), ``n_features``,
    ``threshold`` (``offset_``), ``lipschitz_raw`` (sound l2 bound in raw units,
    ``lipschitz_ / min(scale_)``), ``lipschitz_standardized``, ``norm`` ("l2"), ``input_units``,
    ``mean``, ``scale`` (JSON lists), ``dtype``, ``domain``, ``domain_size``,
    ``ocsdf_version``, ``rounding_coef`` and ``max_abs_z`` (the graph does not validate its
    input: ``score_samples`` refuses rows with a standardised value beyond this, and so should
    a service feeding the graph; NaN, inf or such rows give meaningless scores). The second
    output ``rounding`` bounds the difference to the float64 score (module docstring): a
    certified radius from the graph is ``max(|score - threshold| - rounding, 0) / lipschitz_raw``
    (:func:`certified_radius_from_scores`), never larger than ``OCSDF.certified_radius``.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        For an unfitted model.
    ImportError
        When the ``onnx`` package is missing (``pip install 'ocsdf[deploy]'``).
    TypeError
        For a network holding a layer with no ONNX form here (every layer
        :class:`~ocsdf.Scorer` accepts has one).
    """
    scorer = _fitted_scorer(model)
    from .core.scorer import is_image_network

    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    if not isinstance(opset, int) or opset < 13:
        raise ValueError(f"opset must be an integer >= 13, got {opset!r}")
    try:
        import onnx
    except ImportError:
        raise ImportError(
            "exporting to ONNX needs the onnx package: pip install 'ocsdf[deploy]'"
        ) from None
    from ._version import __version__
    from .core.scorer import Z_MAX

    np_dtype, u = _DTYPES[dtype]
    if is_image_network(scorer.net):
        steps = _image_steps(scorer.net, scorer.n_features)
        coef = _image_rounding_coefficients(scorer, steps, u)
        emit = _image_emitter(steps)
    else:
        layers = scorer.layers()
        coef = _rounding_coefficients(scorer, layers, u)
        emit = _dense_emitter(layers)
    proto = _build(scorer, emit, coef, np_dtype, opset)
    names = getattr(model, "feature_names_in_", None)
    image_shape = getattr(model, "image_shape_", None)
    units = ("raw feature units (the columns the model was fitted on, same order); the graph "
             "standardises internally")
    if image_shape is not None:
        units = ("pixels in [0, 1] of (C, H, W) = image_shape images, flattened in C order "
                 "(images.reshape(n, -1), channel first, then rows, then columns), as "
                 "score_samples takes them")
    meta = {
        "ocsdf_version": __version__,
        "feature_names": json.dumps(None if names is None else [str(c) for c in names]),
        "n_features": str(scorer.n_features),
        "image_shape": json.dumps(None if image_shape is None
                                  else [int(v) for v in image_shape]),
        "input_units": units,
        "norm": "l2",
        "dtype": dtype,
        "domain": str(model.domain),
        "domain_size": repr(float(model.domain_size)),
        "threshold": repr(float(model.offset_)),
        "lipschitz_raw": repr(scorer.lipschitz_in("raw")),
        "lipschitz_standardized": repr(scorer.lipschitz_in("standardized")),
        "mean": json.dumps([float(v) for v in scorer.mean]),
        "scale": json.dumps([float(v) for v in scorer.scale]),
        "rounding_coef": json.dumps([float(c) for c in coef]),
        "max_abs_z": repr(Z_MAX),
    }
    onnx.helper.set_model_props(proto, meta)
    from .io import atomic_open

    path = Path(path)
    with atomic_open(path, "wb") as fh:  # usual permissions; the folder must exist
        fh.write(proto.SerializeToString())
    return path


def onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict of strings (needs ``onnx``)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def rounding_bound(X, metadata: dict[str, str]) -> np.ndarray:
    """Per-row bound of ``|ONNX score - float64 score_samples|`` from the stored metadata.

    ``c0 + c1 ||z||_2 + c2 ||x / scale||_2`` with ``c = rounding_coef`` and
    ``z = (x - mean) / scale``; ``X`` of shape (n, d) in raw units. The graph's second output
    ``rounding`` is the same quantity, computed in the graph's dtype.
    """
    X = np.asarray(X, dtype=np.float64)
    mean = np.asarray(json.loads(metadata["mean"]), dtype=np.float64)
    scale = np.asarray(json.loads(metadata["scale"]), dtype=np.float64)
    c = json.loads(metadata["rounding_coef"])
    z = np.linalg.norm((X - mean) / scale, axis=-1)
    return c[0] + c[1] * z + c[2] * np.linalg.norm(X / scale, axis=-1)


def certified_radius_from_scores(scores, threshold: float, lipschitz: float,
                                 rounding=0.0) -> np.ndarray:
    """Certified l2 radius from (possibly rounded) scores: ``max(|s - t| - rounding, 0) / L``.

    Parameters
    ----------
    scores : array-like, shape (n,)
        Scores, e.g. from the ONNX graph.
    threshold : float
        ``t`` (metadata ``threshold``, ``OCSDF.offset_``).
    lipschitz : float
        Sound l2 Lipschitz bound in the units of the radius (metadata ``lipschitz_raw``).
    rounding : float or array-like, shape (n,), default 0
        Bound of ``|scores - exact scores|`` (:func:`rounding_bound` for the ONNX graph).

    Returns
    -------
    ndarray, shape (n,)
        Never larger than the radius ``|exact score - t| / L`` when ``rounding`` bounds the
        error; 0 where the rounding could hide the side of the threshold.
    """
    s = np.asarray(scores, dtype=np.float64)
    r = np.asarray(rounding, dtype=np.float64)
    if np.any(r < 0) or not lipschitz > 0:
        raise ValueError("rounding must be >= 0 and lipschitz > 0")
    return np.maximum(np.abs(s - float(threshold)) - r, 0.0) / float(lipschitz)
