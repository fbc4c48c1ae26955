"""Transformed negatives: training images rotated or flipped, as negatives of the HKR loss.

Algorithm 1 starts its negatives from uniform noise in the pixel box. Noise is far from every
natural image, so a network that separates the class from noise can learn "natural against
noise" (smoothness, texture) instead of the class: on the CIFAR-10 subset the classes with
textured backgrounds (bird, deer, frog) then score *below* the other classes (AUROC 39-56 %,
``docs/results/images_cifar10_studies/``). A training image turned upside down, by a quarter
turn, or flipped top to bottom has the class's own pixel statistics but not its shape: used as
a negative, it makes the network tell the class from images of the same kind (the "shifting
transformations" of self-supervised anomaly detection, e.g. Golan and El-Yaniv 2018, Tack et
al. 2020).

:class:`TransformedNegatives` is an ``extra_loss`` of :func:`~ocsdf.core.training.train`: at every
update, per model, ``weight * hkr_loss(f(positives), f(transformed), m, lam)`` on a fresh batch
of its training images and as many transformed ones, drawn from its own generator. The network
stays 1-Lipschitz by construction (the term only changes where the weights go), so every
certificate is unchanged.

Only torch: this is core code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .loss import hkr_loss
from .runtime import side_generators

__all__ = ["TRANSFORM_SETS", "TransformedNegatives", "sum_losses", "transform_images",
           "transforms_for"]

#: Transforms of each named set: "rot90" / "rot180" / "rot270" turn the image counter-clockwise
#: by that angle, "vflip" flips it top to bottom.
TRANSFORM_SETS = {"rotate": ("rot90", "rot180", "rot270"), "flip": ("vflip",),
                  "rotate+flip": ("rot90", "rot180", "rot270", "vflip")}


def transforms_for(name: str, image_shape: Sequence[int]) -> tuple[str, ...]:
    """The transforms of the set ``name`` (:data:`TRANSFORM_SETS`) that keep ``image_shape``
    ``(C, H, W)``: quarter turns only for square images."""
    if name not in TRANSFORM_SETS:
        raise ValueError(f"transforms must be one of {', '.join(map(repr, TRANSFORM_SETS))}, "
                         f"got {name!r}")
    _, h, w = (int(v) for v in image_shape)
    return tuple(t for t in TRANSFORM_SETS[name] if h == w or t not in ("rot90", "rot270"))


def transform_images(x: torch.Tensor, which: torch.Tensor, image_shape: Sequence[int],
                     transforms: Sequence[str]) -> torch.Tensor:
    """Rows ``x`` ``(n, C*H*W)`` (flattened ``(C, H, W)`` images), row ``i`` transformed by
    ``transforms[which[i]]``; shape ``(n, C*H*W)``."""
    c, h, w = (int(v) for v in image_shape)
    if c * h * w != x.shape[1]:
        raise ValueError(f"image_shape {tuple(image_shape)} does not match {x.shape[1]} features")
    images = x.reshape(-1, c, h, w)
    out = torch.empty_like(images)
    for k, name in enumerate(transforms):
        rows = (which == k).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        part = images[rows]
        if name == "vflip":
            part = part.flip(2)
        else:
            part = torch.rot90(part, {"rot90": 1, "rot180": 2, "rot270": 3}[name], dims=(2, 3))
        out[rows] = part
    return out.reshape(len(x), c * h * w)


class TransformedNegatives:
    """``extra_loss`` of :func:`~ocsdf.core.training.train`: per model, ``weight`` x the HKR
    loss between a batch of its training images and a batch of its training images, each
    transformed by a transform drawn uniformly from ``transforms`` (:func:`transforms_for`).

    Parameters
    ----------
    data : Tensor ``(n, d)`` or sequence of ``M`` tensors
        Each model's training images, flattened, in the network's input space ([0, 1] pixels).
    margins : ``M`` floats
        Each model's HKR margin (input units).
    seeds : ``M`` ints
        Seed of each model's generator (its own, not the training generators).
    image_shape : ``(C, H, W)``
    transforms : sequence of str
        Names from :data:`TRANSFORM_SETS`' values.
    weight : float
        Weight of the term relative to the HKR loss of the Newton negatives (> 0).
    lam : float
        ``lambda`` of the HKR loss.
    batch_size : int
        Positives, and as many transformed images, per update and model.
    """

    def __init__(self, data: torch.Tensor | Sequence[torch.Tensor], margins: Sequence[float],
                 seeds: Sequence[int], *, image_shape: Sequence[int], transforms: Sequence[str],
                 weight: float = 1.0, lam: float = 100.0, batch_size: int = 64) -> None:
        n_models = len(seeds)
        if isinstance(data, torch.Tensor):
            data = [data] * n_models
        if len(data) != n_models or len(margins) != n_models:
            raise ValueError(f"data, margins and seeds need {n_models} entries")
        if not weight > 0:
            raise ValueError(f"weight must be > 0, got {weight}")
        if not transforms:
            raise ValueError("transforms is empty")
        self.data = list(data)
        self.image_shape = tuple(int(v) for v in image_shape)
        self.transforms = tuple(transforms)
        device = self.data[0].device
        self.generators = side_generators(seeds, device, 2246822519, 131)
        self.margins = torch.as_tensor(list(margins), dtype=self.data[0].dtype, device=device)
        self.weight, self.lam, self.batch_size = float(weight), float(lam), int(batch_size)

    def draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Positives and transformed images, each ``(M, batch_size, d)``."""
        pos, neg = [], []
        b = self.batch_size
        for x, g in zip(self.data, self.generators):
            rows = torch.randint(len(x), (2 * b,), generator=g, device=g.device).to(x.device)
            which = torch.randint(len(self.transforms), (b,), generator=g,
                                  device=g.device).to(x.device)
            pos.append(x[rows[:b]])
            neg.append(transform_images(x[rows[b:]], which, self.image_shape, self.transforms))
        return torch.stack(pos), torch.stack(neg)

    def __call__(self, forward: Callable[[torch.Tensor], torch.Tensor], step: int
                 ) -> torch.Tensor:
        """The term of each model, shape ``(M,)``."""
        pos, neg = self.draw()
        scores = forward(torch.cat((pos, neg), dim=1))
        b = self.batch_size
        return self.weight * hkr_loss(scores[:, :b], scores[:, b:], self.margins, self.lam)


def sum_losses(*losses: Callable | None) -> Callable | None:
    """One ``extra_loss`` adding the given ones (None entries left out; None when none)."""
    parts = [f for f in losses if f is not None]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]

    def total(forward: Callable[[torch.Tensor], torch.Tensor], step: int) -> torch.Tensor:
        return sum(f(forward, step) for f in parts)

    return total
