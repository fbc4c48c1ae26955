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

from .domain import Ball, Box, Domain
from .nn import FullSort, GroupSort2, lipschitz_bound, plain_network

__all__ = ["Scorer", "Z_MAX"]

_ACTIVATION_NAMES = {GroupSort2: "groupsort2", FullSort: "fullsort"}

#: Rows scored per batch (memory: a few ``(batch, width)`` float64 arrays).
SCORE_BATCH = 65536

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
    domain : Box or Ball
        Domain B of the negatives, standardised units.
    clip_to_domain : bool
        Score ``min(f, sdf_B)`` (box and ball) or ``f`` alone (pixel box).

    Attributes
    ----------
    lipschitz : float
        Sound upper bound of the l2 Lipschitz constant of the score in standardised units,
        computed here from ``net``'s weights (never passed in): the network's bound, and at
        least 1 with ``clip_to_domain`` (``sdf_B`` is 1-Lipschitz and a minimum is Lipschitz
        with the larger constant).
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
        bound = lipschitz_bound(self.net)
        object.__setattr__(self, "lipschitz", max(bound, 1.0) if self.clip_to_domain else bound)
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

    def lipschitz_in(self, space: str = "raw") -> float:
        """Sound l2 bound of the score in ``space``: "standardized" (``lipschitz``) or "raw"
        (``lipschitz / min(scale)``, since ``||diag(1/scale) g|| <= ||g|| / min(scale)``)."""
        if space == "standardized":
            return float(self.lipschitz)
        if space == "raw":
            return float(self.lipschitz / np.min(self.scale))
        raise ValueError(f"space must be 'raw' or 'standardized', got {space!r}")

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

    def score_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable score of raw rows ``(n, d)`` -> ``(n,)`` (float64); no validation."""
        z = (x.to(self.device, torch.float64) - self._mean_t) / self._scale_t
        return self.score_z_tensor(z)

    def score(self, X: np.ndarray, standardized: bool = False) -> np.ndarray:
        """Scores of a float64 array of rows ``(n, d)`` -> ``(n,)``, raw units unless
        ``standardized``, in batches of :data:`SCORE_BATCH` rows. No validation."""
        fn = self.score_z_tensor if standardized else self.score_tensor
        out = np.empty(len(X))
        with torch.no_grad():
            for start in range(0, len(X), SCORE_BATCH):
                xb = torch.tensor(X[start : start + SCORE_BATCH], dtype=torch.float64,
                                     device=self.device)
                out[start : start + len(xb)] = fn(xb).cpu().numpy()
        return out

    # ------------------------------------------------------------------ persistence
    def layers(self) -> list[tuple[str, object]]:
        """The network as ``[("linear", (W, b)), ("groupsort2", None) | ("fullsort", None),
        ...]``, float64 NumPy arrays, in order (for ONNX and other exports)."""
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
        JSON-able description; :meth:`from_state` rebuilds the identical scorer."""
        acts = {_ACTIVATION_NAMES[type(m)] for m in self.net if type(m) in _ACTIVATION_NAMES}
        tensors = {"mean": torch.from_numpy(self.mean.copy()),
                   "scale": torch.from_numpy(self.scale.copy())}
        linear = [m for m in self.net if isinstance(m, nn.Linear)]
        for i, lin in enumerate(linear):
            tensors[f"layers.{i}.weight"] = lin.weight.detach().cpu().contiguous()
            tensors[f"layers.{i}.bias"] = lin.bias.detach().cpu().contiguous()
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
        return cls(net, mean, scale, _domain_from_meta(meta["domain"]),
                   bool(meta["clip_to_domain"]))


def _copy_net(net: nn.Sequential) -> nn.Sequential:
    import copy

    return copy.deepcopy(net)


def _domain_meta(domain: Domain) -> dict:
    if isinstance(domain, Box):
        return {"kind": "box", "low": float(domain.low), "high": float(domain.high)}
    if isinstance(domain, Ball):
        return {"kind": "ball", "radius": float(domain.radius)}
    raise TypeError(f"unknown domain {domain!r}")


def _domain_from_meta(meta: dict) -> Domain:
    if meta["kind"] == "box":
        return Box(float(meta["low"]), float(meta["high"]))
    if meta["kind"] == "ball":
        return Ball(float(meta["radius"]))
    raise ValueError(f"unknown domain kind {meta['kind']!r}")
