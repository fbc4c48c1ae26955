"""Domains B where negatives live: a box or a ball, in the network's input space.

The network sees *standardised* features for tabular data (see :class:`Standardizer`), so a box
``[-5, 5]^d`` there is ten standard deviations wide in every raw feature. For images the box is
the pixel range. Every random draw takes an explicit :class:`torch.Generator`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Box", "Ball", "Domain", "Standardizer", "WithBalls", "make_domain"]


@dataclass(frozen=True)
class Box:
    """Axis-aligned box ``[low, high]^d`` (the same bounds in every dimension)."""

    low: float = -5.0
    high: float = 5.0

    def sample(self, n: int, d: int, generator: torch.Generator, device="cpu") -> torch.Tensor:
        """``n`` points uniform in the box, shape ``(n, d)``."""
        u = torch.rand(n, d, generator=generator, device=device)
        return self.low + (self.high - self.low) * u

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """Euclidean projection onto the box (coordinate-wise clipping)."""
        return z.clamp(self.low, self.high)

    def distance_outside(self, z: torch.Tensor) -> torch.Tensor:
        """l2 distance from each row of ``z`` to the box, 0 inside; shape ``(n,)``. 1-Lipschitz."""
        return (z - self.project(z)).norm(dim=-1)

    def signed_distance(self, z: torch.Tensor) -> torch.Tensor:
        """Signed l2 distance to the box boundary, > 0 inside; shape ``(n,)``. 1-Lipschitz."""
        inside = torch.minimum(self.high - z, z - self.low).min(dim=-1).values
        return torch.where(inside >= 0, inside, -self.distance_outside(z))


@dataclass(frozen=True)
class Ball:
    """Euclidean ball of radius ``radius`` centred at the origin."""

    radius: float = 5.0

    def sample(self, n: int, d: int, generator: torch.Generator, device="cpu") -> torch.Tensor:
        """``n`` points uniform in the ball, shape ``(n, d)``.

        Gaussian direction, radius ``radius * U^(1/d)``.
        """
        g = torch.randn(n, d, generator=generator, device=device)
        g = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        r = self.radius * torch.rand(n, 1, generator=generator, device=device) ** (1.0 / d)
        return g * r

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """Euclidean projection onto the ball."""
        norm = z.norm(dim=-1, keepdim=True)
        return z * torch.clamp(self.radius / norm.clamp_min(1e-12), max=1.0)

    def distance_outside(self, z: torch.Tensor) -> torch.Tensor:
        """l2 distance from each row of ``z`` to the ball, 0 inside; shape ``(n,)``."""
        return torch.relu(z.norm(dim=-1) - self.radius)

    def signed_distance(self, z: torch.Tensor) -> torch.Tensor:
        """Signed l2 distance to the sphere, > 0 inside; shape ``(n,)``. 1-Lipschitz."""
        return self.radius - z.norm(dim=-1)


#: Centres per block when :class:`WithBalls` computes distances (memory: rows x block).
_BALL_BLOCK = 4096


@dataclass(frozen=True, eq=False)
class WithBalls:
    """``B = base U ball(c_1, r) U ... U ball(c_k, r)``: a box or ball domain extended by a ball
    of radius ``radius`` around each of ``k`` points, in the network's input space.

    What a fitted tabular model uses as B: the centres are the standardised training rows that
    lie outside ``base`` (the box of ``domain_size`` standard deviations), and the radius is
    the HKR margin ``m``, so B holds every training row by construction while a training row
    beyond the box still scores at most ``m`` (borderline normal: with rows that hold
    anomalies, extreme rows stay at the bottom of the ranking). Measured on the 19 ADBench sets,
    5 seeds, the same trained models scored both ways (``docs/results/domain_balls/``).

    Negatives are still drawn in ``base`` (:meth:`sample`); :meth:`project`,
    :meth:`distance_outside` and :meth:`signed_distance` are those of the union.

    Parameters
    ----------
    base : Box or Ball
    centres : ndarray, shape (k, d)
        Ball centres (float64, standardised units); ``k = 0`` gives ``base`` itself.
    radius : float
        ``r > 0``, the same for every ball.
    """

    base: Box | Ball
    centres: np.ndarray
    radius: float

    def __post_init__(self) -> None:
        c = np.ascontiguousarray(np.asarray(self.centres, dtype=np.float64))
        if c.ndim != 2:
            raise ValueError(f"centres must have shape (k, d), got {c.shape}")
        if not self.radius > 0:
            raise ValueError(f"radius must be > 0, got {self.radius}")
        object.__setattr__(self, "centres", c)
        object.__setattr__(self, "radius", float(self.radius))
        object.__setattr__(self, "_tensors", {})  # centres as tensors, by (dtype, device)

    def _centres(self, z: torch.Tensor) -> torch.Tensor:
        """The centres in ``z``'s dtype and device, ``(k, d)`` (converted once; a normal tensor
        even when first asked for in inference mode, so that autograd may use it later)."""
        key = (z.dtype, z.device)
        if key not in self._tensors:
            with torch.inference_mode(False):
                self._tensors[key] = torch.as_tensor(self.centres, dtype=z.dtype,
                                                     device=z.device)
        return self._tensors[key]

    def _blocks(self, z: torch.Tensor):
        centres = self._centres(z)
        for start in range(0, len(centres), _BALL_BLOCK):
            yield centres[start:start + _BALL_BLOCK]

    def _nearest(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distance from each row of ``z`` ``(n, d)`` to its nearest centre and that centre's
        index, ``(n,)`` each (exact differences, no ``|a|^2 - 2ab + |b|^2`` cancellation)."""
        best = torch.full((len(z),), torch.inf, dtype=z.dtype, device=z.device)
        index = torch.zeros(len(z), dtype=torch.long, device=z.device)
        start = 0
        for c in self._blocks(z):
            dist = torch.cdist(z, c, compute_mode="donot_use_mm_for_euclid_dist")
            d_min, i_min = dist.min(dim=1)
            better = d_min < best
            best = torch.where(better, d_min, best)
            index = torch.where(better, i_min + start, index)
            start += len(c)
        return best, index

    def sample(self, n: int, d: int, generator: torch.Generator, device="cpu") -> torch.Tensor:
        """``n`` points uniform in ``base``, shape ``(n, d)`` (negatives start there)."""
        return self.base.sample(n, d, generator, device)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """Euclidean projection onto B: the nearest of the projections onto ``base`` and onto
        the nearest ball. ``z``: ``(..., d)``."""
        if z.dim() != 2:
            return self.project(z.reshape(-1, z.shape[-1])).reshape(z.shape)
        p = self.base.project(z)
        if len(self.centres) == 0 or len(z) == 0:
            return p
        # a row inside base is its own projection (no ball is nearer than 0): only the rows
        # that base moved can be nearer to a ball
        moved = torch.nonzero((p != z).any(dim=-1)).squeeze(1)
        if len(moved) == 0:
            return p
        zm, pm = z[moved], p[moved]
        dist, idx = self._nearest(zm)
        c = self._centres(zm)[idx]
        tiny = torch.finfo(z.dtype).tiny
        shrink = (self.radius / dist.clamp_min(tiny)).clamp(max=1.0).unsqueeze(-1)
        q = c + (zm - c) * shrink
        to_ball = (dist - self.radius).clamp_min(0.0)
        use_ball = (to_ball < (zm - pm).norm(dim=-1)).unsqueeze(-1)
        return p.index_put((moved,), torch.where(use_ball, q, pm))

    def distance_outside(self, z: torch.Tensor) -> torch.Tensor:
        """l2 distance from each row of ``z`` to B, 0 inside; shape ``(n,)``. 1-Lipschitz."""
        return torch.relu(-self.signed_distance(z))

    def signed_distance(self, z: torch.Tensor) -> torch.Tensor:
        """``max(sdf_base(z), max_i (r - ||z - c_i||))``, shape ``(n,)``: the exact signed
        distance to B outside B, a 1-Lipschitz lower bound of it inside (a maximum of
        1-Lipschitz functions), > 0 exactly inside. Differentiable. The balls are evaluated
        only for rows where ``sdf_base < r`` (elsewhere no ball can raise the maximum).
        ``z``: ``(..., d)``."""
        if z.dim() != 2:
            return self.signed_distance(z.reshape(-1, z.shape[-1])).reshape(z.shape[:-1])
        s = self.base.signed_distance(z)
        if len(self.centres) == 0:
            return s
        near = torch.nonzero(s < self.radius).squeeze(1)
        if len(near) == 0:
            return s
        dist, _ = self._nearest(z[near])
        ball = torch.full_like(s, -torch.inf).index_put((near,), self.radius - dist)
        return torch.maximum(s, ball)


Domain = Box | Ball | WithBalls


def make_domain(kind: str, size: float) -> Domain:
    """``"box"`` → ``Box(-size, size)``; ``"ball"`` → ``Ball(size)``; ``"unit"`` → ``Box(0, 1)``."""
    if kind == "box":
        return Box(-float(size), float(size))
    if kind == "ball":
        return Ball(float(size))
    if kind == "unit":
        return Box(0.0, 1.0)
    raise ValueError(f"domain must be 'box', 'ball' or 'unit', got {kind!r}")


@dataclass(frozen=True)
class Standardizer:
    """Per-feature affine map ``z = (x - mean) / scale`` (raw units → standardised units).

    Constant columns get ``scale = 1`` so they map to 0 instead of dividing by zero.
    """

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, enabled: bool = True) -> Standardizer:
        """Fit on ``x`` of shape ``(n, d)``; ``enabled=False`` gives the identity map."""
        d = x.shape[1]
        if not enabled:
            return cls(np.zeros(d), np.ones(d))
        return cls.from_moments(x.mean(axis=0), x.std(axis=0))

    @classmethod
    def from_moments(cls, mean: np.ndarray, std: np.ndarray) -> Standardizer:
        """From per-feature mean and standard deviation (``ddof=0``, raw units, ``(d,)``),
        e.g. combined over processes; constant columns (``std <= 1e-12 max(1, |mean|)``) get
        scale 1."""
        constant = std <= 1e-12 * np.maximum(1.0, np.abs(mean))
        return cls(mean, np.where(constant, 1.0, std))

    def covering(self, x: np.ndarray, domain: Domain, room: float = 0.8) -> Standardizer:
        """This map with scales raised so that every row of ``x`` (raw, ``(n, d)``) lands in
        ``domain`` shrunk by ``room`` about the origin: per feature for a centred box
        (``scale_j >= max_i |x_ij - mean_j| / (room * s)``), one common factor for a ball
        (``max_i ||z_i|| <= room * r``). Scales never decrease.
        """
        if isinstance(domain, Box):
            if domain.low != -domain.high:
                raise ValueError(f"covering needs a box centred at 0, got [{domain.low:g}, "
                                 f"{domain.high:g}]")
            need = np.abs(x - self.mean).max(axis=0) / (room * domain.high)
            return Standardizer(self.mean, np.maximum(self.scale, need))
        norm = float(np.linalg.norm(self.transform(x), axis=1).max())
        return Standardizer(self.mean, self.scale * max(1.0, norm / (room * domain.radius)))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Raw ``(n, d)`` → standardised ``(n, d)``."""
        return (x - self.mean) / self.scale

    def inverse_transform(self, z: np.ndarray) -> np.ndarray:
        """Standardised ``(n, d)`` → raw ``(n, d)``."""
        return z * self.scale + self.mean
