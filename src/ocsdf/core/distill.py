"""Distance supervision: regress the 1-Lipschitz network towards ``m - d_k`` off the data.

With ``f >= m`` on the training rows and ``f`` 1-Lipschitz, ``f(x) >= m - d_1(x)`` everywhere
(``d_1``: distance to the nearest training row), and ``m - d_1`` is the lowest such function:
what the KR term of the HKR loss pushes ``f`` towards where negatives are drawn. Instead of
waiting for the negatives to find it, this module labels a fixed pool of points of the input
space with their exact distance ``d_k`` to the ``k``-th nearest training row and adds, at every
update, a regression term of ``f`` towards ``m - d_k`` on a minibatch of that pool
(:class:`DistanceSupervision`, the ``extra_loss`` of :func:`~ocsdf.core.training.train`).
The network stays 1-Lipschitz by construction: the term only changes where its weights go.

Pool (per model, from its own training rows, seeded by its own generator, built once), in the
shares of :data:`POOL_SHARES`:

* "around": a training row moved in a random direction by a radius drawn log-uniformly between
  a quarter of the median nearest-neighbour distance of the training rows and the median
  distance of the "far" points to the data (projected back onto B);
* "between": a point on the segment between two random training rows (uniform position);
* "far": uniform in B; for images with a pixel shift (``image_shape`` and ``max_shift > 0``),
  a training image rolled instead by a random integer offset of at most ``max_shift`` pixels
  along each axis (circular). A shifted digit is an image of the same kind as the anomalies an
  image model meets (other digits, other objects) at a distance of the same order, where
  uniform noise is three times farther than anything real: labelling it teaches ``f`` to fall
  between classes instead of staying flat there (``docs/results/images_mnist_studies/``).
  With shifted images they are the whole pool (MNIST, 10 digits x 2 seeds, mean AUROC /
  certified AUROC at l2 36/255, shifts of up to 4 pixels: shifted images as a quarter of the
  pool 95.6 / 90.4, a half 96.1 / 91.7, three quarters 96.5 / 92.7, all of it 96.5 / 93.1; all
  of it with shifts of up to 6 pixels, the image default: 97.5 / 94.8).

Distances are exact (float64 ``torch.cdist`` in chunks of bounded memory, against every
training row up to ``max_reference`` rows, beyond which a uniform subsample of that many rows
is the reference). Only pool points with ``d_k >= radius * rho_k`` (``rho_k``: median
leave-one-out ``d_k`` of the training rows, the data's own spacing) are supervised: the
inside of the support is left to the HKR loss.

Only torch (no scikit-learn): this is core code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .domain import Domain
from .runtime import side_generators

__all__ = ["POOL_SHARES", "DistancePool", "DistanceSupervision", "build_pool", "kth_distances",
           "shifted_images"]

#: Entries of the (chunk x reference rows) distance matrix computed at once (32 MiB in float64).
_CHUNK_ENTRIES = 1 << 22

#: Shares of the pool ("around", "between", "far") with uniform far points ("uniform") and
#: with shifted training images as the far points ("shifted"); "around" takes what the
#: rounding leaves.
POOL_SHARES = {"uniform": {"around": 0.5, "between": 0.25, "far": 0.25},
               "shifted": {"around": 0.0, "between": 0.0, "far": 1.0}}


def kth_distances(points: torch.Tensor, reference: torch.Tensor, k: int,
                  exclude_self: bool = False) -> torch.Tensor:
    """Exact l2 distance from each row of ``points`` ``(p, d)`` to its ``k``-th nearest row of
    ``reference`` ``(n, d)``, shape ``(p,)``, float64.

    Computed in chunks of ``points`` so that at most :data:`_CHUNK_ENTRIES` distances are held
    at once. ``exclude_self``: ``points`` are ``reference`` itself (same order) and each row's
    own index is left out (leave-one-out; a duplicate still counts at distance 0). A row that
    is its own reference counts at distance 0 otherwise, as :class:`~ocsdf.knn.KNNDistance`.
    """
    p, n = len(points), len(reference)
    kk = k + 1 if exclude_self else k
    if not 1 <= kk <= n:
        raise ValueError(f"k = {k} needs at least {kk} reference rows, got {n}")
    ref = reference.to(torch.float64)
    pts = points.to(torch.float64)
    ref_sq = (ref * ref).sum(1)
    chunk = max(1, _CHUNK_ENTRIES // max(n, 1))
    out = torch.empty(p, dtype=torch.float64, device=points.device)
    for start in range(0, p, chunk):
        block = pts[start:start + chunk]
        # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b, float64 (relative error ~1e-15 of the squares)
        sq = (block * block).sum(1, keepdim=True) + ref_sq - 2.0 * block @ ref.T
        sq.clamp_(min=0.0)
        if exclude_self:
            rows = torch.arange(len(block), device=points.device)
            sq[rows, rows + start] = math.inf
        # topk: several times faster than kthvalue on wide rows
        out[start:start + len(block)] = sq.topk(k, dim=1, largest=False).values[:, -1].sqrt()
    return out


def shifted_images(x: torch.Tensor, n: int, image_shape: Sequence[int], max_shift: int,
                   gen: torch.Generator) -> torch.Tensor:
    """``n`` rows of ``x`` ``(N, C*H*W)`` (flattened ``image_shape = (C, H, W)`` images, drawn
    uniformly with replacement), each rolled by its own random integer offset ``(dy, dx)``,
    ``|dy|, |dx| <= max_shift`` pixels (circular: what leaves one side enters the other; on
    images with an empty border, as MNIST, a plain shift). Shape ``(n, C*H*W)``; every draw
    from ``gen``."""
    c, h, w = (int(v) for v in image_shape)
    if c * h * w != x.shape[1]:
        raise ValueError(f"image_shape {tuple(image_shape)} does not match {x.shape[1]} features")
    device = x.device
    rows = torch.randint(len(x), (n,), generator=gen, device=gen.device).to(device)
    shift = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=gen,
                          device=gen.device).to(device)
    i = torch.arange(h, device=device)
    j = torch.arange(w, device=device)
    src_i = (i[None, :] - shift[:, :1]) % h  # (n, H): out[i] = in[(i - dy) mod H]
    src_j = (j[None, :] - shift[:, 1:]) % w  # (n, W)
    index = (src_i[:, :, None] * w + src_j[:, None, :]).reshape(n, 1, h * w).expand(-1, c, -1)
    return x[rows].reshape(n, c, h * w).gather(2, index).reshape(n, c * h * w)


def _median_spacing(x: torch.Tensor, k: int, gen: torch.Generator, max_rows: int = 2000
                    ) -> float:
    """Median leave-one-out ``d_k`` of (a subsample of at most ``max_rows`` of) the rows of
    ``x``, distances of 0 (duplicates) left out; 0 when every row is a duplicate."""
    n = len(x)
    if n < 2:
        return 0.0
    k = min(k, n - 1)
    if n > max_rows:
        idx = torch.randperm(n, generator=gen, device=gen.device)[:max_rows].to(x.device)
        # distances of the subsample to all rows; k + 1: the row itself counts at 0
        d = kth_distances(x[idx], x, k + 1)
    else:
        d = kth_distances(x, x, k, exclude_self=True)
    d = d[d > 1e-12]
    return float(d.median()) if len(d) else 0.0


class DistancePool:
    """A fixed pool of points of the input space with their exact ``k``-NN distances.

    Attributes
    ----------
    points : Tensor ``(P, d)``
    distance : Tensor ``(P,)``, float64
        ``d_k`` of each point to the reference rows.
    spacing : float
        ``rho_k``: median leave-one-out ``d_k`` of the training rows.
    n_reference : int
        Training rows the distances were computed against (all, or a subsample).
    """

    def __init__(self, points: torch.Tensor, distance: torch.Tensor, spacing: float,
                 n_reference: int) -> None:
        self.points = points
        self.distance = distance
        self.spacing = spacing
        self.n_reference = n_reference


def build_pool(x: torch.Tensor, domain: Domain, size: int, k: int, gen: torch.Generator,
               max_reference: int = 50_000, image_shape: Sequence[int] | None = None,
               max_shift: int = 0) -> DistancePool:
    """The pool of one model (see the module notes): ``size`` points around and between the
    training rows ``x`` ``(n, d)`` and uniform in ``domain`` (or, with ``image_shape``
    ``(C, H, W)`` and ``max_shift > 0``, training images shifted by up to ``max_shift``
    pixels), with exact ``d_k`` to ``x``.

    Every random draw uses ``gen`` (the model's own supervision generator, never the training
    one). ``x`` with more than ``max_reference`` rows: the distances are to a uniform subsample
    of ``max_reference`` rows (an upper bound of the distance to all rows). The largest radius
    of the points around the training rows is the median distance of the far points (uniform
    or shifted) to the data. Order of the points: around, between, far
    (:data:`POOL_SHARES`).
    """
    n, d = x.shape
    device, dtype = x.device, x.dtype
    ref = x
    if n > max_reference:
        ref = x[torch.randperm(n, generator=gen, device=gen.device)[:max_reference].to(device)]
    k = min(int(k), len(ref))
    shifted = image_shape is not None and max_shift > 0
    shares = POOL_SHARES["shifted" if shifted else "uniform"]
    n_uniform = int(size * shares["far"])
    n_mix = int(size * shares["between"])
    n_noise = size - n_uniform - n_mix
    if shifted:
        uniform = shifted_images(x, n_uniform, image_shape, int(max_shift), gen)
    else:
        uniform = domain.sample(n_uniform, d, gen, device=gen.device).to(device, dtype)
    d_uniform = kth_distances(uniform, ref, k)
    spacing1 = _median_spacing(x, 1, gen)
    spacing = spacing1 if k == 1 else _median_spacing(x, k, gen)
    far = float(d_uniform.median()) if n_uniform else 1.0
    near = 0.25 * spacing1 if spacing1 > 0 else 1e-3 * max(far, 1e-6)
    far = max(far, 2.0 * near)
    # around training rows: random direction, log-uniform radius in [near, far]
    rows = x[torch.randint(n, (n_noise,), generator=gen, device=gen.device).to(device)]
    direction = torch.randn(n_noise, d, generator=gen, device=gen.device).to(device, dtype)
    direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
    u = torch.rand(n_noise, 1, generator=gen, device=gen.device).to(device, dtype)
    radius = near * (far / near) ** u
    noise = domain.project(rows + radius * direction)
    # between two training rows
    a = x[torch.randint(n, (n_mix,), generator=gen, device=gen.device).to(device)]
    b = x[torch.randint(n, (n_mix,), generator=gen, device=gen.device).to(device)]
    t = torch.rand(n_mix, 1, generator=gen, device=gen.device).to(device, dtype)
    mix = a + t * (b - a)
    points = torch.cat((noise, mix, uniform))
    distance = torch.cat((kth_distances(noise, ref, k), kth_distances(mix, ref, k), d_uniform))
    return DistancePool(points, distance, spacing, len(ref))


class DistanceSupervision:
    """``extra_loss`` of :func:`~ocsdf.core.training.train`: per model, ``weight`` x the mean
    over a minibatch of its pool of ``huber(f(p) - (m - d_k(p)))`` on the supervised points.

    Parameters
    ----------
    data : Tensor ``(n, d)`` or sequence of ``M`` tensors
        Each model's training rows in the network's input space (the tensors given to
        :func:`train`; the same tensor object for several models builds one pool per model,
        each from its own seed).
    domain : Box or Ball
    margins : ``M`` floats
        Each model's HKR margin ``m`` (input-space units).
    seeds : ``M`` ints
        Seed of each model's supervision generator (pool and minibatches).
    weight : float
        Weight of the term relative to the HKR loss (> 0).
    k : int
        ``d_k``: distance to the ``k``-th nearest training row.
    pool_size : int
        Points per model's pool.
    batch_size : int
        Pool points per update and model.
    radius : float
        Supervise only pool points with ``d_k >= radius * rho_k`` (0: all).
    loss : {"two_sided", "one_sided"}
        "one_sided" penalises only ``f(p) > m - d_k(p)`` (the 1-Lipschitz bound with
        ``f >= m`` on the data already gives the other side for ``k = 1``).
    delta : float
        Huber threshold as a fraction of the margin: beyond ``delta * m`` the penalty is the
        absolute error (gradient of size ``weight`` per point, whatever the units).
    image_shape : ``(C, H, W)``, optional
        The rows are flattened images of this shape: with ``max_shift > 0`` the pool's far
        points are shifted training images instead of uniform points, in the shares of
        ``POOL_SHARES["shifted"]`` (:func:`build_pool`).
    max_shift : int
        Largest shift in pixels along each axis (0: uniform points).
    """

    def __init__(self, data: torch.Tensor | Sequence[torch.Tensor], domain: Domain,
                 margins: Sequence[float], seeds: Sequence[int], *, weight: float,
                 k: int = 1, pool_size: int = 4096, batch_size: int = 128,
                 radius: float = 0.0, loss: str = "two_sided", delta: float = 1.0,
                 image_shape: Sequence[int] | None = None, max_shift: int = 0) -> None:
        n_models = len(seeds)
        if isinstance(data, torch.Tensor):
            data = [data] * n_models
        if len(data) != n_models or len(margins) != n_models:
            raise ValueError(f"data, margins and seeds need {n_models} entries")
        if loss not in ("two_sided", "one_sided"):
            raise ValueError(f"loss must be 'two_sided' or 'one_sided', got {loss!r}")
        if not weight > 0:
            raise ValueError(f"weight must be > 0, got {weight}")
        device, dtype = data[0].device, data[0].dtype
        self.generators = side_generators(seeds, device, 2654435761, 97)
        self.pools = [build_pool(x, domain, int(pool_size), int(k), g,
                                 image_shape=image_shape, max_shift=int(max_shift))
                      for x, g in zip(data, self.generators)]
        self.points = torch.stack([p.points for p in self.pools]).to(device, dtype)  # (M, P, d)
        margin_t = torch.as_tensor(list(margins), dtype=torch.float64, device=device)
        dist = torch.stack([p.distance for p in self.pools])  # (M, P) float64
        self.target = (margin_t[:, None] - dist).to(dtype)
        cut = torch.as_tensor([radius * p.spacing for p in self.pools], dtype=torch.float64,
                              device=device)
        self.mask = (dist >= cut[:, None]).to(dtype)
        self.delta = (delta * margin_t).to(dtype)[:, None]
        self.weight = float(weight)
        self.batch_size = int(batch_size)
        self.one_sided = loss == "one_sided"
        self._rows = torch.arange(n_models, device=device)[:, None]

    def __call__(self, forward: Callable[[torch.Tensor], torch.Tensor], step: int
                 ) -> torch.Tensor:
        """The term of each model, shape ``(M,)``, on a fresh minibatch of its pool."""
        n_pool = self.points.shape[1]
        idx = torch.stack([torch.randint(n_pool, (self.batch_size,), generator=g,
                                         device=g.device) for g in self.generators])
        idx = idx.to(self.points.device)
        err = forward(self.points[self._rows, idx]) - self.target[self._rows, idx]
        if self.one_sided:
            err = err.clamp_min(0.0)
        a = err.abs()
        huber = torch.where(a < self.delta, 0.5 * a * a / self.delta, a - 0.5 * self.delta)
        mask = self.mask[self._rows, idx]
        return self.weight * (huber * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def supervised_fraction(self) -> list[float]:
        """Share of each model's pool that is supervised (``d_k >= radius * rho_k``)."""
        return self.mask.mean(1).tolist()
