"""The fitted score shared by every face: standardiser, exported network, domain, sound bound.

:class:`Scorer` is what a trained OCSDF model *is* once training is over. The estimator, the PyOD
detector, certificates, explanations, ONNX export, persistence, reports and surfaces all score
through it; only the estimators build one. It holds plain tensors (the exported weights that
scoring uses, float64), so saving it and loading it anywhere gives the same scores bit for bit:
nothing is re-solved on load.

Units and signs: raw rows ``x`` (the user's feature units) are standardised to
``z = (x - mean) / scale``; the score is ``f(z)`` (> 0 inside the normal region, < 0 outside,
about the signed l2 distance to its boundary in standardised units), combined with the domain as
``min(f(z), sdf_B(z))`` when ``clip_to_domain`` (box and ball domains: a row outside B is
anomalous by definition, whatever the network says there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .conv import ChannelGroupSort2, sequential_lipschitz_bound
from .domain import Ball, Box, Domain, WithBalls
from .nn import FullSort, GroupSort2, _Squeeze, plain_network

__all__ = ["IMAGE_SCORE_BATCH", "SCORE_BATCH", "Scorer", "Z_MAX", "batched", "is_image_network"]

_ACTIVATION_NAMES = {GroupSort2: "groupsort2", FullSort: "fullsort"}

#: Rows scored per batch by dense networks (memory: a few ``(batch, width)`` float64 arrays).
SCORE_BATCH = 65536
#: Rows scored per batch by convolutional (image) networks: their activations are
#: ``channels x H x W`` per row (65,536 MNIST digits would take about 10 GB; 256 rows were also
#: 2.6 x faster per row than 65,536 on a 2-core CPU).
IMAGE_SCORE_BATCH = 256

#: Largest standardised magnitude ``|z_i|`` scored (standard deviations from the training mean).
#: Float64 scores are exact to about 1e-16 x |z| x depth, so up to here rounding stays below
#: 1e-3; the estimators refuse a row farther out with a one-line error (like NaN/inf) rather than
#: score it -inf or NaN (overflow) and give it a certificate that means nothing.
Z_MAX = 1e12


@dataclass(frozen=True, eq=False)
class Scorer:
    """A fitted score ``x -> min(f((x - mean) / scale), sdf_B)`` with its sound l2 bound.

    Parameters
    ----------
    net : torch.nn.Sequential
        Exported network (``nn.Linear`` and sorting activations, float64), ``(n, d) -> (n,)``
        on standardised rows.
    mean, scale : ndarray, shape (d,)
        Standardisation, raw units (``scale > 0``).
    domain : Box, Ball or WithBalls
        Domain B, standardised units: the box or ball the negatives were drawn in, for tabular
        models extended by a ball of radius ``m`` around each training row outside it
        (:class:`~ocsdf.core.domain.WithBalls`), so that B holds every training row.
    clip_to_domain : bool
        Score ``min(f, sdf_B)`` (box and ball) or ``f`` alone (pixel box).

    Attributes
    ----------
    lipschitz : float
        Sound upper bound of the l2 Lipschitz constant of the score in standardised units,
        computed here from ``net``'s weights (never passed in): the network's bound, and at
        least 1 with ``clip_to_domain`` (``sdf_B`` is 1-Lipschitz and a minimum is Lipschitz
        with the larger constant).
    lipschitz_network_raw : float
        Sound l2 bound of ``x -> f((x - mean) / scale)`` in raw units: the exact spectral norm
        of the first layer with the standardisation folded in, ``||W_1 diag(1/scale)||_2``
        (float64 SVD), times the bound of the other layers. Never larger than
        ``network bound / min(scale)`` (``||W_1 D|| <= ||W_1|| ||D||``), and much smaller when
        the features with small scales carry small weights. Networks that do not start with a
        dense layer (images) use ``network bound / min(scale)``.
    """

    net: nn.Sequential
    mean: np.ndarray
    scale: np.ndarray
    domain: Domain
    clip_to_domain: bool = True

    def __post_init__(self) -> None:
        mean = np.ascontiguousarray(self.mean, dtype=np.float64)
        scale = np.ascontiguousarray(self.scale, dtype=np.float64)
        if mean.shape != scale.shape or mean.ndim != 1:
            raise ValueError(f"mean and scale must be 1-D of one length, got {mean.shape} and "
                             f"{scale.shape}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "scale", scale)
        bound = sequential_lipschitz_bound(self.net, (mean.shape[0],))
        object.__setattr__(self, "network_lipschitz", bound)
        object.__setattr__(self, "lipschitz", max(bound, 1.0) if self.clip_to_domain else bound)
        object.__setattr__(self, "lipschitz_network_raw", _folded_bound(self.net, scale, bound))
        dev = self.device
        object.__setattr__(self, "_mean_t", torch.as_tensor(mean, device=dev))
        object.__setattr__(self, "_scale_t", torch.as_tensor(scale, device=dev))

    # ------------------------------------------------------------------ facts
    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    @property
    def batch_rows(self) -> int:
        """Rows scored per batch: :data:`IMAGE_SCORE_BATCH` for image (convolutional)
        networks, :data:`SCORE_BATCH` otherwise. Scores are bit for bit the same for the same
        batches (a matrix product may round its last bit differently with another batch)."""
        return IMAGE_SCORE_BATCH if is_image_network(self.net) else SCORE_BATCH

    @property
    def nbytes(self) -> int:
        """Bytes of the numbers scoring needs (weights, biases, standardisation), as a saved
        model stores them: what the model keeps, whatever the number of training rows."""
        tensors, _ = self.state()
        return int(sum(t.numel() * t.element_size() for t in tensors.values()))

    def lipschitz_in(self, space: str = "raw") -> float:
        """Sound l2 bound of the whole score in ``space``: "standardized" (``lipschitz``) or
        "raw" (the larger of the two terms' raw bounds, :meth:`term_lipschitz`; never larger
        than ``lipschitz / min(scale)``, since ``||diag(1/scale) g|| <= ||g|| / min(scale)``)."""
        if space == "standardized":
            return float(self.lipschitz)
        net, dom = self.term_lipschitz(space)
        return float(net if dom is None else max(net, dom))

    def term_lipschitz(self, space: str = "raw") -> tuple[float, float | None]:
        """Sound l2 bounds ``(L_f, L_B)`` of the two terms of ``score = min(f, sdf_B)`` in
        ``space``: the network term ``f`` and the domain term ``sdf_B`` (None without the
        domain clip). Standardised units: (network bound, 1). Raw units:
        (:attr:`lipschitz_network_raw`, ``1 / min(scale)``, exact for ``sdf_B``). Certificates
        that treat the terms apart (:mod:`ocsdf.certify`) are never looser than one constant
        for both."""
        if space == "standardized":
            net, dom = float(self.network_lipschitz), 1.0
        elif space == "raw":
            net, dom = float(self.lipschitz_network_raw), float(1.0 / np.min(self.scale))
        else:
            raise ValueError(f"space must be 'raw' or 'standardized', got {space!r}")
        return net, (dom if self.clip_to_domain else None)

    def to(self, device: str | torch.device) -> Scorer:
        """The same scorer on ``device`` (an exact copy of the weights)."""
        net = _copy_net(self.net).to(device)
        return Scorer(net, self.mean, self.scale, self.domain, self.clip_to_domain)

    # ------------------------------------------------------------------ scoring
    def standardize(self, X: np.ndarray) -> np.ndarray:
        """Raw ``(n, d)`` -> standardised ``(n, d)``."""
        return (X - self.mean) / self.scale

    def unstandardize(self, Z: np.ndarray) -> np.ndarray:
        """Standardised ``(n, d)`` -> raw ``(n, d)``."""
        return Z * self.scale + self.mean

    def score_z_tensor(self, z: torch.Tensor) -> torch.Tensor:
        """Differentiable score of standardised rows ``(n, d)`` -> ``(n,)`` (float64)."""
        z = z.to(self.device, torch.float64)
        f = self.net(z)
        if self.clip_to_domain:
            f = torch.minimum(f, self.domain.signed_distance(z))
        return f

    def terms_z_tensor(self, z: torch.Tensor) -> torch.Tensor:
        """The two terms of the score of standardised rows, ``(n, d)`` -> ``(n, 2)``
        (float64): the network ``f(z)`` and ``sdf_B(z)`` (``+inf`` without the domain clip);
        the score is their row minimum."""
        z = z.to(self.device, torch.float64)
        dom = (self.domain.signed_distance(z) if self.clip_to_domain
               else torch.full((len(z),), torch.inf, dtype=z.dtype, device=z.device))
        return torch.stack((self.net(z), dom), dim=1)

    def score_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable score of raw rows ``(n, d)`` -> ``(n,)`` (float64); no validation."""
        z = (x.to(self.device, torch.float64) - self._mean_t) / self._scale_t
        return self.score_z_tensor(z)

    def score(self, X: np.ndarray, standardized: bool = False) -> np.ndarray:
        """Scores of a float64 array of rows ``(n, d)`` -> ``(n,)``, raw units unless
        ``standardized``, in batches of :attr:`batch_rows` rows. No validation."""
        fn = self.score_z_tensor if standardized else self.score_tensor
        return batched(fn, X, self.batch_rows, self.device)

    def score_terms(self, X: np.ndarray, standardized: bool = False) -> np.ndarray:
        """``(n, 2)`` terms (network, domain; :meth:`terms_z_tensor`) of a float64 array of
        rows, raw units unless ``standardized``; their row minimum is :meth:`score`."""
        Z = X if standardized else self.standardize(X)
        return batched(self.terms_z_tensor, Z, self.batch_rows, self.device, width=2)

    # ------------------------------------------------------------------ persistence
    def layers(self) -> list[tuple[str, object]]:
        """The network as ``[("linear", (W, b)), ("groupsort2", None) | ("fullsort", None),
        ...]``, float64 NumPy arrays, in order (for ONNX and other exports)."""
        if is_image_network(self.net):
            raise NotImplementedError("convolutional (image) networks have no dense layer list "
                                      "(ONNX export walks them layer by layer: ocsdf.deploy)")
        out: list[tuple[str, object]] = []
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                out.append(("linear", (layer.weight.detach().cpu().double().numpy(),
                                       layer.bias.detach().cpu().double().numpy())))
            elif type(layer) in _ACTIVATION_NAMES:
                out.append((_ACTIVATION_NAMES[type(layer)], None))
        return out

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """``(tensors, meta)``: every number scoring uses (CPU tensors, their own dtype) and a
        JSON-able description; :meth:`from_state` rebuilds the identical scorer. Dense networks
        are described by ``n_layers`` and ``activation``; image networks by a ``layers`` list
        of layer descriptions (:func:`_layer_specs`)."""
        if is_image_network(self.net):
            tensors, specs = _layer_specs(self.net)
            tensors["mean"] = torch.from_numpy(self.mean.copy())
            tensors["scale"] = torch.from_numpy(self.scale.copy())
            tensors.update(_domain_tensors(self.domain))
            return tensors, {"layers": specs, "domain": _domain_meta(self.domain),
                             "clip_to_domain": bool(self.clip_to_domain)}
        acts = {_ACTIVATION_NAMES[type(m)] for m in self.net if type(m) in _ACTIVATION_NAMES}
        tensors = {"mean": torch.from_numpy(self.mean.copy()),
                   "scale": torch.from_numpy(self.scale.copy())}
        linear = [m for m in self.net if isinstance(m, nn.Linear)]
        for i, lin in enumerate(linear):
            tensors[f"layers.{i}.weight"] = lin.weight.detach().cpu().contiguous()
            tensors[f"layers.{i}.bias"] = lin.bias.detach().cpu().contiguous()
        tensors.update(_domain_tensors(self.domain))
        meta = {
            "n_layers": len(linear),
            "activation": acts.pop() if acts else "groupsort2",
            "domain": _domain_meta(self.domain),
            "clip_to_domain": bool(self.clip_to_domain),
        }
        return tensors, meta

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict,
                   device: str | torch.device = "cpu") -> Scorer:
        """The scorer :meth:`state` described, on ``device`` (values copied exactly).

        Raises KeyError / ValueError for missing or inconsistent entries."""
        if "layers" in meta:
            net = _network_from_specs(tensors, meta["layers"]).to(device)
            mean, scale = tensors["mean"].double().numpy(), tensors["scale"].double().numpy()
            return cls(net, mean, scale, _domain_from_meta(meta["domain"], tensors),
                       bool(meta["clip_to_domain"]))
        n = int(meta["n_layers"])
        ws = [tensors[f"layers.{i}.weight"] for i in range(n)]
        bs = [tensors[f"layers.{i}.bias"] for i in range(n)]
        for w, b, w_next in zip(ws, bs, [*ws[1:], None]):
            if w.dim() != 2 or b.shape != (w.shape[0],) or (
                    w_next is not None and w_next.shape[1] != w.shape[0]):
                raise ValueError("layer shapes do not chain")
        if ws[-1].shape[0] != 1:
            raise ValueError("the last layer must have one output")
        net = plain_network(ws, bs, str(meta["activation"]), dtype=ws[0].dtype).to(device)
        mean, scale = tensors["mean"].double().numpy(), tensors["scale"].double().numpy()
        if mean.shape != (ws[0].shape[1],):
            raise ValueError(f"mean has shape {mean.shape}, the network takes "
                             f"{ws[0].shape[1]} features")
        return cls(net, mean, scale, _domain_from_meta(meta["domain"], tensors),
                   bool(meta["clip_to_domain"]))


def is_image_network(net: nn.Sequential) -> bool:
    """Whether ``net`` is an exported image network (it starts by unflattening rows into
    ``(C, H, W)`` images, :meth:`~ocsdf.core.conv.LipschitzConvNet.export`)."""
    return len(net) > 0 and type(net[0]) is nn.Unflatten


#: Layers without parameters in an image network, by the name stored in a model file.
_PLAIN_LAYERS: dict[str, type[nn.Module]] = {
    "channel_groupsort2": ChannelGroupSort2, "groupsort2": GroupSort2, "fullsort": FullSort,
    "flatten": nn.Flatten, "squeeze": _Squeeze,
}


def _layer_specs(net: nn.Sequential) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """``(tensors, specs)`` describing an image network layer by layer: the weight and bias of
    the ``i``-th layer with parameters as ``layers.{i}.weight`` / ``.bias`` (CPU, own dtype),
    and one JSON-able dict per layer. Raises TypeError for a layer it cannot describe."""
    names = {v: k for k, v in _PLAIN_LAYERS.items()}
    tensors: dict[str, torch.Tensor] = {}
    specs: list[dict] = []
    for layer in net:
        kind = type(layer)
        if kind in (nn.Conv2d, nn.Linear):
            i = sum(1 for sp in specs if "param" in sp)
            tensors[f"layers.{i}.weight"] = layer.weight.detach().cpu().contiguous()
            tensors[f"layers.{i}.bias"] = layer.bias.detach().cpu().contiguous()
            if kind is nn.Linear:
                specs.append({"type": "linear", "param": i})
            else:
                specs.append({"type": "conv2d", "param": i, "stride": list(layer.stride),
                              "padding": list(layer.padding), "dilation": list(layer.dilation),
                              "groups": int(layer.groups), "padding_mode": layer.padding_mode})
        elif kind is nn.Unflatten:
            specs.append({"type": "unflatten", "dim": int(layer.dim),
                          "shape": [int(v) for v in layer.unflattened_size]})
        elif kind is nn.PixelUnshuffle:
            specs.append({"type": "pixel_unshuffle", "factor": int(layer.downscale_factor)})
        elif kind is nn.Flatten:
            specs.append({"type": "flatten", "start": int(layer.start_dim),
                          "end": int(layer.end_dim)})
        elif kind in names:
            specs.append({"type": names[kind]})
        else:
            raise TypeError(f"cannot save a network holding a {kind.__name__} layer")
    return tensors, specs


def _network_from_specs(tensors: dict[str, torch.Tensor], specs: list[dict]) -> nn.Sequential:
    """The frozen network :func:`_layer_specs` described (values copied exactly)."""
    layers: list[nn.Module] = []
    for sp in specs:
        kind = sp["type"]
        if kind in ("linear", "conv2d"):
            i = int(sp["param"])
            w, b = tensors[f"layers.{i}.weight"], tensors[f"layers.{i}.bias"]
            if kind == "linear":
                if w.dim() != 2:
                    raise ValueError("a linear weight must be 2-D")
                layer = nn.Linear(w.shape[1], w.shape[0], dtype=w.dtype)
            else:
                if w.dim() != 4:
                    raise ValueError("a conv2d weight must be 4-D")
                groups = int(sp["groups"])
                layer = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]),
                                  stride=tuple(sp["stride"]), padding=tuple(sp["padding"]),
                                  dilation=tuple(sp["dilation"]), groups=groups,
                                  padding_mode=str(sp["padding_mode"]), dtype=w.dtype)
            with torch.no_grad():
                layer.weight.copy_(w)
                layer.bias.copy_(b)
        elif kind == "unflatten":
            layer = nn.Unflatten(int(sp["dim"]), tuple(int(v) for v in sp["shape"]))
        elif kind == "pixel_unshuffle":
            layer = nn.PixelUnshuffle(int(sp["factor"]))
        elif kind == "flatten":
            layer = nn.Flatten(int(sp["start"]), int(sp["end"]))
        elif kind in _PLAIN_LAYERS:
            layer = _PLAIN_LAYERS[kind]()
        else:
            raise ValueError(f"unknown layer type {kind!r}")
        layers.append(layer)
    net = nn.Sequential(*layers)
    net.requires_grad_(False)
    return net.eval()


def _copy_net(net: nn.Sequential) -> nn.Sequential:
    import copy

    return copy.deepcopy(net)


def _domain_meta(domain: Domain) -> dict:
    """JSON description of ``domain``; a :class:`WithBalls` keeps its centres in the tensor
    ``domain.centres`` (:func:`_domain_tensors`)."""
    if isinstance(domain, WithBalls):
        return {"kind": "with_balls", "base": _domain_meta(domain.base),
                "radius": float(domain.radius), "n_balls": len(domain.centres)}
    if isinstance(domain, Box):
        return {"kind": "box", "low": float(domain.low), "high": float(domain.high)}
    if isinstance(domain, Ball):
        return {"kind": "ball", "radius": float(domain.radius)}
    raise TypeError(f"unknown domain {domain!r}")


def _domain_tensors(domain: Domain) -> dict[str, torch.Tensor]:
    """The domain's numbers a model file stores as tensors (ball centres, float64)."""
    if isinstance(domain, WithBalls):
        return {"domain.centres": torch.from_numpy(domain.centres.copy())}
    return {}


def _domain_from_meta(meta: dict, tensors: dict[str, torch.Tensor] | None = None) -> Domain:
    if meta["kind"] == "with_balls":
        centres = (tensors or {})["domain.centres"].double().numpy()
        if centres.ndim != 2 or len(centres) != int(meta["n_balls"]):
            raise ValueError(f"domain.centres has shape {tuple(centres.shape)}, the model "
                             f"describes {meta['n_balls']} balls")
        return WithBalls(_domain_from_meta(meta["base"]), centres, float(meta["radius"]))
    if meta["kind"] == "box":
        return Box(float(meta["low"]), float(meta["high"]))
    if meta["kind"] == "ball":
        return Ball(float(meta["radius"]))
    raise ValueError(f"unknown domain kind {meta['kind']!r}")


def batched(fn, X: np.ndarray, rows: int, device, width: int | None = None) -> np.ndarray:
    """``fn`` (a float64 tensor function of ``(b, d)`` rows to ``(b,)``, or ``(b, width)``)
    applied to ``X`` in blocks of ``rows`` rows without gradients: ``(n,)`` or ``(n, width)``.
    Each block is copied row-major first, so the result does not depend on ``X``'s memory
    layout (a column-major array, e.g. a validated DataFrame, would otherwise round the matrix
    products' last bit differently)."""
    out = np.empty((len(X),) if width is None else (len(X), width))
    with torch.no_grad():
        for start in range(0, len(X), rows):
            block = np.ascontiguousarray(X[start : start + rows], dtype=np.float64)
            xb = torch.tensor(block, device=device)
            out[start : start + len(xb)] = fn(xb).cpu().numpy()
    return out


def _folded_bound(net: nn.Sequential, scale: np.ndarray, bound: float) -> float:
    """Raw-unit l2 bound of ``x -> net(x / scale)`` (``Scorer.lipschitz_network_raw``)."""
    first = net[0] if len(net) else None
    if type(first) is not nn.Linear:
        return float(bound / np.min(scale))
    w = first.weight.detach().to("cpu", torch.float64) / torch.as_tensor(scale)
    rest = sequential_lipschitz_bound(net[1:], (first.out_features,))
    return min(float(torch.linalg.matrix_norm(w, ord=2)) * rest, float(bound / np.min(scale)))
