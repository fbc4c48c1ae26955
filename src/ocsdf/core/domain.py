"""Domains B where negatives live: a box or a ball, in the network's input space.

The network sees *standardised* features for tabular data (see :class:`Standardizer`), so a box
``[-5, 5]^d`` there is ten standard deviations wide in every raw feature. For images the box is
the pixel range. Every random draw takes an explicit :class:`torch.Generator`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Box", "Ball", "Domain", "Standardizer", "make_domain"]


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


Domain = Box | Ball


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
