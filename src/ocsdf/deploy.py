"""Export a fitted score (:class:`ocsdf.Scorer`, e.g. ``OCSDF.scorer_``) to ONNX, and certify
from the exported scores.

The ONNX graph computes ``score_samples`` from rows in **raw** feature units:

1. ``z = (x - mean_) / scale_`` (two elementwise ops; left out when the map is the identity);
2. the exported network (``Gemm`` layers; GroupSort2 as ``Concat(Max(a, b), Min(a, b))`` of
   the two halves of the units, exactly :func:`ocsdf.core.nn.group_sort2`; FullSort as
   ``TopK``);
3. for the box and ball domains, ``min(f, sdf_B(z))`` with ``sdf_B`` the signed distance to the
   boundary of B, written with ``Min``/``Clip``/``ReduceL2``/``Where`` exactly as
   ``Box.signed_distance`` and ``Ball.signed_distance`` of :mod:`ocsdf.core.domain`.

Input ``x``: shape ``(n, d)`` with a dynamic ``n``, raw units. Outputs: ``score``, shape
``(n,)``, equal to ``score_samples``; ``rounding``, shape ``(n,)``, a sound bound of
``|score - float64 score_samples|`` for each row (below).

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

Measured (width 32, depth 2, 3-D data with feature scales 0.01, 1, 100 and means -5, 0, 1000;
10,000 rows in the data, in the box and up to 9 standard deviations out; float32 graph on
onnxruntime's CPU provider): ``max |float32 - float64| = 2.6e-5`` standardised units (mean
``2.8e-6``), dominated by rounding the input to float32 (a feature whose mean is 500 of its
standard deviations from 0); on float32-representable rows the maximum is ``2.7e-6``, and on
unit-scale data ``1.5e-6``. The ``rounding`` bound was 17 to 100 times the worst row's error
(``<= 6e-4`` on those rows). With ``dtype="float64"`` the graph agrees with ``score_samples``
to ``~4e-15`` and the bound uses ``u = 2^-53``.

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
    "rounding_coef",
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


def _build(scorer, layers, coef: np.ndarray, np_dtype, opset: int):
    """The ONNX ``ModelProto`` (without metadata) of ``scorer.score``."""
    import onnx

    from .core.domain import Box

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
    for kind, spec in layers:
        if kind == "linear":
            w, b = spec
            h = g.op("Gemm", h, g.const(w), g.const(b), transB=1, prefix="linear")
        elif kind == "fullsort":  # all features, descending
            k = g.const([w.shape[0]], dtype=np.int64, prefix="k")
            values = g._name("sorted")
            g.nodes.append(onnx.helper.make_node(
                "TopK", [h, k], [values, g._name("indices")], axis=-1, largest=1, sorted=1))
            h = values
        elif kind == "groupsort2":
            # pairs (k, k + w/2): Concat(Max(a, b), Min(a, b)) of the two halves
            n = w.shape[0]
            axis = g.const([1], np.int64)
            zero, half, end = (g.const([0], np.int64), g.const([n // 2], np.int64),
                               g.const([n], np.int64))
            a = g.op("Slice", h, zero, half, axis)
            b = g.op("Slice", h, half, end, axis)
            h = g.op("Concat", g.op("Max", a, b), g.op("Min", a, b), axis=1, prefix="groupsort")
        else:
            raise TypeError(f"cannot export activation {kind!r}")
    f = g.op("Squeeze", h, g.const([1], np.int64), prefix="f")
    if scorer.clip_to_domain:
        dom = scorer.domain
        if isinstance(dom, Box):
            lo, hi = g.const(float(dom.low)), g.const(float(dom.high))
            gap = g.op("Min", g.op("Sub", hi, z), g.op("Sub", z, lo))
            inside = g.reduce("ReduceMin", gap, 1)
            clipped = g.op("Clip", z, lo, hi)
            outside = g.op("Neg", g.reduce("ReduceL2", g.op("Sub", z, clipped), 1))
            is_in = g.op("GreaterOrEqual", inside, g.const(0.0))
            sdf = g.op("Where", is_in, inside, outside, prefix="sdf")
        else:
            sdf = g.op("Sub", g.const(float(dom.radius)), g.reduce("ReduceL2", z, 1),
                       prefix="sdf")
        f = g.op("Min", f, sdf)
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
        s = _domain_extent(scorer.domain)
        sdf_err = dz + _gamma(d + 3, u) * (np.array([s, 0.0, 0.0]) + znorm)
        err = np.maximum(err, sdf_err)
    # Rounding a float64 input to the graph's dtype: |dx_i| <= u |x_i|.
    err = err + np.array([0.0, 0.0, float(scorer.lipschitz) * u])
    # Margin for the float64 arithmetic of this very computation, of score_samples, and of the
    # evaluation of the bound itself in the graph's dtype.
    return 1.01 * err + np.array([1e-12, 0.0, 1e-15])


def _is_identity(scorer) -> bool:
    return not (np.any(scorer.mean != 0) or np.any(scorer.scale != 1))


def _domain_extent(domain) -> float:
    """Largest coordinate magnitude of the domain's defining numbers (box bounds, radius)."""
    from .core.domain import Box

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
    ``score`` and ``rounding``, each of shape ``(n,)``. Metadata (``metadata_props``, strings):
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
    """
    scorer = _fitted_scorer(model)
    from .core.scorer import is_image_network

    if is_image_network(scorer.net):
        raise ValueError("ONNX export of image (convolutional) models is not available yet; "
                         "save the model (OCSDF.save) and score it with ocsdf instead")
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
    layers = scorer.layers()
    coef = _rounding_coefficients(scorer, layers, u)
    proto = _build(scorer, layers, coef, np_dtype, opset)
    names = getattr(model, "feature_names_in_", None)
    meta = {
        "ocsdf_version": __version__,
        "feature_names": json.dumps(None if names is None else [str(c) for c in names]),
        "n_features": str(scorer.n_features),
        "input_units": "raw feature units (the columns the model was fitted on, same order); "
                       "the graph standardises internally",
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
