"""3-D implicit surfaces: fit OCSDF on points sampled inside a shape, extract its surface.

A point cloud sampled *inside* a solid is "normal data"; the learned ``f`` is then a signed
distance function of the shape learned without any ground-truth distance (paper section 6).
This module holds the library part of ``ocsdf reconstruct`` and ``ocsdf bench shapes``:

- reading points from a mesh (sampled inside it) or a point cloud, with validation;
- fitting (:func:`fit_surface`) in a frame with **one common scale** for the three axes, so
  distances stay isotropic: ``z = (x - center) / scale`` with ``scale`` a scalar;
- evaluating ``f`` on a grid in batches and extracting the level set with marching cubes
  (Lewiner), pruning the grid with the Lipschitz bound (exactly the same mesh as the full grid);
- metrics against a ground-truth mesh: Chamfer distance, normal consistency, SDF error;
- the DeepSDF-style baseline (paper Table 4): an unconstrained MLP regressed on distances
  computed from the point cloud by nearest-neighbour search;
- a three-view PNG preview.

Sign convention: ``f > 0`` inside the shape, ``f < 0`` outside, and the true SDF used by the
metrics follows the same convention (``+`` inside).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError

if TYPE_CHECKING:  # torch is imported where it is used: `ocsdf reconstruct --help` stays fast
    import torch

__all__ = [
    "CLOUD_EXTENSIONS", "MESH_EXTENSIONS", "OUTPUT_EXTENSIONS", "Frame", "GridResult",
    "SurfaceFit", "chamfer_normal_consistency", "extract_surface", "fit_deepsdf", "fit_surface",
    "load_mesh", "load_points", "mesh_is_watertight", "render_preview", "sample_inside",
    "sdf_error", "true_sdf", "validate_points", "winding_number", "write_mesh",
]

MESH_EXTENSIONS = (".off", ".obj", ".ply", ".stl")
CLOUD_EXTENSIONS = (".ply", ".xyz", ".npy")
OUTPUT_EXTENSIONS = (".ply", ".obj", ".stl")
MIN_POINTS = 10
GRID_BATCH = 16384
#: Defaults chosen by measurement (docs/results/shapes.md and the report of issue 7).
DEFAULT_STEPS = 4000
DEFAULT_WIDTH = 128
DEFAULT_DEPTH = 3
DEFAULT_PERCENTILE = 1.0
#: Training hyper-parameters of :func:`fit_surface` besides size and steps (those the shapes
#: table was measured with; independent of the tabular defaults of :class:`ocsdf.OCSDF`).
SURFACE_TRAINING = {"batch_size": 128, "n_newton_steps": 4, "learning_rate": 1e-3,
                    "lr_schedule": "constant", "bias_lr_factor": 1.0}
#: Grid padding around the points' bounding box, as a fraction of its largest side.
GRID_PAD = 0.15


# ---------------------------------------------------------------------------- input
def _suffix(path: Path) -> str:
    return path.suffix.lower()


def _require_file(path: str | Path, allowed: tuple[str, ...]) -> Path:
    path = Path(path)
    if _suffix(path) not in allowed:
        raise InputError(
            f"{path}: unknown extension {path.suffix or '(none)'!r}; expected one of "
            f"{', '.join(allowed)}"
        )
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    return path


def load_mesh(path: str | Path):
    """Read a triangle mesh (.off/.obj/.ply/.stl) with trimesh.

    Returns
    -------
    trimesh.Trimesh
        With at least one face and finite vertices (raw units).

    Raises
    ------
    InputError
        Missing file, unknown extension, unreadable file, no faces, NaN/inf vertices.
    """
    import trimesh

    path = _require_file(path, MESH_EXTENSIONS)
    try:
        mesh = trimesh.load(path, force="mesh", process=True)
    except Exception as err:  # trimesh raises many types on bad files
        raise InputError(f"{path}: cannot read as a mesh ({err})") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise InputError(f"{path}: the file holds no triangles")
    if not np.isfinite(mesh.vertices).all():
        raise InputError(f"{path}: NaN or infinite vertex coordinates")
    return mesh


def validate_points(points, source: str = "points") -> np.ndarray:
    """Check a point cloud: 2-D, 3 columns, at least :data:`MIN_POINTS` rows, all finite.

    Returns
    -------
    ndarray, shape (n, 3), float64, raw units.
    """
    try:
        x = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{source}: coordinates are not numbers") from None
    if x.ndim != 2:
        raise InputError(f"{source}: expected an (n, 3) array of points, got shape {x.shape}")
    if x.shape[0] == 0:
        raise InputError(f"{source}: no points")
    if x.shape[1] != 3:
        raise InputError(
            f"{source}: expected 3 coordinates (x, y, z) per point, got {x.shape[1]} columns"
        )
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise InputError(
            f"{source}: {int(bad.sum())} points have NaN or infinite coordinates, first is "
            f"point {int(np.flatnonzero(bad)[0]) + 1}"
        )
    if len(x) < MIN_POINTS:
        raise InputError(f"{source}: {len(x)} points, need at least {MIN_POINTS}")
    if np.ptp(x, axis=0).max() <= 0:
        raise InputError(f"{source}: all points are identical")
    return x


def _read_xyz(path: Path) -> np.ndarray:
    rows = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for k, line in enumerate(fh, 1):
            text = line.split("#", 1)[0].replace(",", " ").split()
            if not text:
                continue
            try:
                rows.append([float(v) for v in text])
            except ValueError:
                bad = line.strip()[:60]
                raise InputError(f"{path}: line {k} is not numbers: {bad!r}") from None
    if not rows:
        return np.empty((0, 3))
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise InputError(f"{path}: lines have different numbers of columns {sorted(widths)}")
    return np.array(rows)


def load_points(path: str | Path, n_points: int = 2048, seed: int = 0):
    """Points to fit on, from a mesh (sampled inside it) or a point cloud file.

    A mesh (.off/.obj/.stl, or a .ply with faces) gives ``n_points`` points uniform inside it
    (:func:`sample_inside`). A point cloud (.xyz: three numbers per line; .npy: an (n, 3)
    array; .ply without faces) is used as it is (``n_points`` ignored).

    Returns
    -------
    points : ndarray, shape (n, 3), raw units
    mesh : trimesh.Trimesh or None
        The mesh when the input was one (the ground truth for metrics).

    Raises
    ------
    InputError
        Missing file, unknown extension, no points, NaN/inf coordinates, not 3 columns.
    """
    import trimesh

    path = _require_file(path, MESH_EXTENSIONS + CLOUD_EXTENSIONS)
    ext = _suffix(path)
    if ext == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise InputError(f"{path}: cannot read as a NumPy array ({err})") from None
        return validate_points(arr, str(path)), None
    if ext == ".xyz":
        return validate_points(_read_xyz(path), str(path)), None
    if ext == ".ply":
        try:
            obj = trimesh.load(path, process=False)
        except Exception as err:
            raise InputError(f"{path}: cannot read as PLY ({err})") from None
        faces = getattr(obj, "faces", None)
        if faces is None or len(faces) == 0:
            return validate_points(np.asarray(getattr(obj, "vertices", np.empty((0, 3)))),
                                   str(path)), None
    mesh = load_mesh(path)
    return sample_inside(mesh, n_points, seed), mesh


# ---------------------------------------------------------------------------- inside tests
def winding_number(mesh, query: np.ndarray, chunk_pairs: int = 100_000) -> np.ndarray:
    """Generalised winding number of ``mesh`` at each query point, shape (m,).

    Sum over the triangles of their signed solid angle seen from the point, over 4 pi
    (van Oosterom & Strackee's formula). About 1 inside and 0 outside a closed mesh; for a
    mesh with holes it degrades gracefully (about 0.5 across a hole), so ``> 0.5`` is a robust
    inside test for the non-watertight shared meshes. Cost O(m x faces).

    Computed in float64 with torch (current torch thread count), one coordinate at a time on
    (points x faces) blocks of about ``chunk_pairs`` elements, small enough to stay in cache:
    the same formula as a plain numpy version to ~1e-15, about 10 times faster than it on one
    thread (0.29 s instead of 3.0 s for 500 points x 12,756 faces, 45 ns per pair).
    """
    import torch

    tri = np.asarray(mesh.vertices, dtype=np.float64)[np.asarray(mesh.faces)]  # (F, 3, 3)
    q = torch.as_tensor(np.asarray(query, dtype=np.float64).reshape(-1, 3))
    out = torch.zeros(len(q), dtype=torch.float64)
    if len(tri) == 0 or len(q) == 0:
        return out.numpy()
    # verts[k][i]: coordinate i of vertex k of every face, shape (F,)
    verts = [[torch.as_tensor(np.ascontiguousarray(tri[:, k, i])) for i in range(3)]
             for k in range(3)]
    step = max(1, chunk_pairs // len(tri))
    with torch.no_grad():
        for s in range(0, len(q), step):
            qs = q[s : s + step]
            (ax, ay, az), (bx, by, bz), (cx, cy, cz) = (
                [verts[k][i][None, :] - qs[:, i, None] for i in range(3)] for k in range(3))
            la = (ax * ax + ay * ay + az * az).sqrt_()
            lb = (bx * bx + by * by + bz * bz).sqrt_()
            lc = (cx * cx + cy * cy + cz * cz).sqrt_()
            det = ax * (by * cz - bz * cy) + ay * (bz * cx - bx * cz) + az * (bx * cy - by * cx)
            den = (la * lb * lc + (ax * bx + ay * by + az * bz) * lc
                   + (ax * cx + ay * cy + az * cz) * lb + (bx * cx + by * cy + bz * cz) * la)
            out[s : s + step] = torch.atan2(det, den).sum(dim=1) / (2.0 * np.pi)
    # Orientation: a mesh with inward-facing triangles gives -1 inside.
    return out.abs().numpy()


def mesh_is_watertight(mesh) -> bool:
    """trimesh's watertightness test (every edge shared by exactly two faces)."""
    return bool(mesh.is_watertight)


def _inside(mesh, q: np.ndarray) -> np.ndarray:
    """Inside test: ``mesh.contains`` (ray tests) for a watertight mesh, winding number > 0.5
    otherwise."""
    if mesh_is_watertight(mesh) and mesh.is_winding_consistent:
        return np.asarray(mesh.contains(q), dtype=bool)
    return winding_number(mesh, q) > 0.5


def sample_inside(mesh, n: int = 2048, seed: int = 0, max_rounds: int = 50,
                  min_fraction: float = 1e-3) -> np.ndarray:
    """``n`` points uniform inside ``mesh`` (raw units), shape (n, 3), by rejection sampling.

    Candidates are uniform in the bounding box; a watertight mesh is tested with
    ``mesh.contains``, any other with the generalised winding number (> 0.5), which tolerates
    holes and small gaps. Raises :class:`InputError` when the mesh encloses (almost) no volume:
    after ``max_rounds`` rounds, or as soon as at least ``10 / min_fraction`` candidates were
    tried and fewer than ``min_fraction`` of them were inside (the inside fills less than about
    0.1 % of the bounding box by default: millions of inside tests for a few thousand points).
    """
    rng = np.random.default_rng(seed)
    lo, hi = mesh.bounds
    kept: list[np.ndarray] = []
    have = tried = 0
    batch = max(2 * n, 1024)
    for _ in range(max_rounds):
        cand = lo + (hi - lo) * rng.random((batch, 3))
        inside = cand[_inside(mesh, cand)]
        kept.append(inside)
        have += len(inside)
        tried += batch
        if have >= n:
            return np.concatenate(kept)[:n]
        if tried >= 10.0 / min_fraction and have < min_fraction * tried:
            raise InputError(
                f"the mesh encloses almost no volume: {have} of {tried} points of its bounding "
                f"box are inside (fewer than {min_fraction:.2%}); {n} needed"
            )
        rate = max(have / tried, 1e-3)
        batch = int(min(max(1.2 * (n - have) / rate, 256), 200_000))
    raise InputError(
        f"the mesh encloses almost no volume: {have} of the needed {n} points found inside"
    )


# ---------------------------------------------------------------------------- fitting
@dataclass(frozen=True)
class Frame:
    """Isotropic standardisation ``z = (x - center) / scale`` (one scalar scale).

    ``scale`` is the root mean per-axis variance of the points, so the cloud has unit variance
    on average over the axes while distances keep their ratios in every direction (per-axis
    standardisation would stretch a flat shape and distort distances).
    """

    center: np.ndarray
    scale: float

    @classmethod
    def fit(cls, x: np.ndarray) -> Frame:
        """Fit on points ``x`` of shape (n, 3)."""
        center = x.mean(axis=0)
        scale = float(np.sqrt(x.var(axis=0).mean()))
        return cls(center, scale if scale > 0 else 1.0)

    def to_std(self, x: np.ndarray) -> np.ndarray:
        """Raw (n, 3) → standardised (n, 3)."""
        return (np.asarray(x, dtype=np.float64) - self.center) / self.scale

    def to_raw(self, z: np.ndarray) -> np.ndarray:
        """Standardised (n, 3) → raw (n, 3)."""
        return np.asarray(z, dtype=np.float64) * self.scale + self.center


@dataclass
class SurfaceFit:
    """A fitted implicit surface.

    Attributes
    ----------
    func : callable
        ``func(z)`` maps a float32 tensor of standardised points (n, 3) to scores (n,); ``> 0``
        inside, in standardised units.
    frame : Frame
    level : float
        Iso-level of the surface (standardised units): the ``percentile`` of ``f`` over the
        training points for OCSDF, 0 for the baseline.
    lipschitz : float or None
        Sound Lipschitz bound of ``func`` (standardised units); None when unknown (baseline).
    points : ndarray, shape (n, 3)
        Training points, standardised.
    fit_seconds : float
    model : object
        The fitted estimator/network.
    device : str, default "cpu"
        Torch device ``func`` runs on (where the model was trained).
    """

    func: Callable[[torch.Tensor], torch.Tensor]
    frame: Frame
    level: float
    lipschitz: float | None
    points: np.ndarray
    fit_seconds: float
    model: object
    device: str = "cpu"

    def score_raw(self, x: np.ndarray) -> np.ndarray:
        """``(f(z) - level) * scale`` at raw points (n, 3): the fitted signed distance to the
        extracted surface in raw units (> 0 inside), shape (n,)."""
        z = self.frame.to_std(x)
        return (_evaluate(self.func, z, device=self.device) - self.level) * self.frame.scale


def _evaluate(func, z: np.ndarray, batch: int = GRID_BATCH, device: str = "cpu") -> np.ndarray:
    import torch

    out = np.empty(len(z), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, len(z), batch):
            zb = torch.as_tensor(z[s : s + batch], dtype=torch.float32, device=device)
            out[s : s + len(zb)] = func(zb).cpu().numpy()
    return out


def _domain_size(z: np.ndarray) -> float:
    """Half side of the negatives' box: 5 (tabular default) or more if points reach beyond 3.3."""
    return float(max(5.0, 1.5 * np.abs(z).max()))


def fit_surface(
    points: np.ndarray,
    n_steps: int = DEFAULT_STEPS,
    width: int = DEFAULT_WIDTH,
    depth: int = DEFAULT_DEPTH,
    percentile: float = DEFAULT_PERCENTILE,
    seed: int = 0,
    device: str = "cpu",
    verbose: bool = False,
    **ocsdf_params,
) -> SurfaceFit:
    """Fit OCSDF on points inside a shape (raw units, shape (n, 3)).

    The points are standardised with :class:`Frame` (one scale for all axes) and OCSDF is fitted
    with ``standardize=False`` on a box domain ``[-s, s]^3`` (``s = 5`` unless points reach
    beyond 3.3), margin "auto", lambda 100, batch 128, T = 4, RMSprop 1e-3
    (:data:`SURFACE_TRAINING`), a tenth of the steps as warm-up. The surface level is the
    ``percentile``-th percentile of ``f`` over the training points (paper: the first).
    """
    import copy

    from .estimator import OCSDF

    x = validate_points(points)
    frame = Frame.fit(x)
    z = frame.to_std(x)
    params = dict(width=width, depth=depth, n_steps=n_steps, warmup_steps=max(n_steps // 10, 0),
                  **SURFACE_TRAINING, standardize=False, domain="box", domain_size=_domain_size(z),
                  random_state=seed, device=device, verbose=verbose)
    params.update(ocsdf_params)
    t0 = time.perf_counter()
    model = OCSDF(**params).fit(z)
    seconds = time.perf_counter() - t0
    # float32 copy of the exported network for the grid (GroupSort2 is max/min, no sort)
    func = copy.deepcopy(model.scorer_.net).float()
    level = float(np.percentile(_evaluate(func, z, device=device), percentile))
    # model.lipschitz_ bounds the float64 network; add room for float32 rounding.
    lip = float(model.lipschitz_) * (1 + 1e-4)
    return SurfaceFit(func, frame, level, lip, z, seconds, model, str(device))


def deepsdf_radius(z: np.ndarray) -> float:
    """Ball radius of the baseline's target: the median nearest-neighbour spacing of ``z``."""
    from scipy.spatial import cKDTree

    d = cKDTree(z).query(z, k=2)[0][:, 1]
    return float(np.median(d))


def fit_deepsdf(
    points: np.ndarray,
    n_steps: int = DEFAULT_STEPS,
    width: int = DEFAULT_WIDTH,
    depth: int = DEFAULT_DEPTH,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "cpu",
) -> SurfaceFit:
    """The DeepSDF-style baseline (paper Table 4): an unconstrained MLP regressed on distances
    computed from the point cloud by nearest-neighbour search.

    Same frame and box as :func:`fit_surface`; ``width x depth`` Linear + ReLU layers (the same
    size as OCSDF's network), Adam, MSE loss (DeepSDF's ``||f(x) - S(x)||^2``), ``n_steps``
    batches of ``batch_size`` (OCSDF sees 128 positives + 128 negatives per step). The target
    is ``S(x) = r - d(x, P)``: the signed distance to the union of balls of radius ``r`` (the
    median nearest-neighbour spacing) around the training points, ``+`` inside — the only
    signed distance the point cloud defines without a surface. Half of each batch is uniform in
    the box, half is training points plus Gaussian noise of standard deviation ``2 r`` (DeepSDF
    samples densely near the surface). The surface is its zero level.
    """
    import torch
    from scipy.spatial import cKDTree

    from .baselines import make_conventional_mlp

    x = validate_points(points)
    frame = Frame.fit(x)
    z = frame.to_std(x)
    size = _domain_size(z)
    t0 = time.perf_counter()
    r = deepsdf_radius(z)
    tree = cKDTree(z)
    rng = np.random.default_rng(seed)
    n_pool = min(n_steps * batch_size, 400_000)
    half = n_pool // 2
    pool = np.concatenate([
        rng.uniform(-size, size, (n_pool - half, 3)),
        z[rng.integers(len(z), size=half)] + rng.normal(scale=2 * r, size=(half, 3)),
    ])
    target = r - tree.query(pool)[0]
    pool_t = torch.as_tensor(pool, dtype=torch.float32, device=device)
    target_t = torch.as_tensor(target, dtype=torch.float32, device=device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = make_conventional_mlp(3, width, depth).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator(device=device).manual_seed(seed)
    for _ in range(n_steps):
        idx = torch.randint(len(pool_t), (batch_size,), generator=gen, device=device)
        loss = torch.mean((net(pool_t[idx]) - target_t[idx]) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval().requires_grad_(False)
    seconds = time.perf_counter() - t0
    return SurfaceFit(net, frame, 0.0, None, z, seconds, net, str(device))


# ---------------------------------------------------------------------------- extraction
@dataclass
class GridResult:
    """Outcome of :func:`extract_surface`.

    Attributes
    ----------
    mesh : trimesh.Trimesh
        The surface in raw units.
    seconds : float
        Grid evaluation plus marching cubes.
    n_evaluated : int
        Network evaluations (grid nodes actually computed).
    n_nodes : int
        Nodes of the full grid.
    shape : tuple of int
        Grid nodes per axis.
    clipped : bool
        The level set reached the grid's boundary and was capped there (the surface extends
        beyond the padded bounding box of the points: usually an under-trained ``f``).
    """

    mesh: object
    seconds: float
    n_evaluated: int
    n_nodes: int
    shape: tuple[int, int, int]
    clipped: bool = False


def _grid_axes(z: np.ndarray, resolution: int) -> tuple[np.ndarray, float, np.ndarray]:
    """Origin (3,), spacing ``h`` and cells per axis (3,) of a grid with ``resolution`` nodes
    along the longest side of the padded bounding box of ``z``, equal spacing on every axis."""
    lo, hi = z.min(axis=0), z.max(axis=0)
    pad = GRID_PAD * float((hi - lo).max())
    lo, hi = lo - pad, hi + pad
    h = float((hi - lo).max()) / (resolution - 1)
    cells = np.maximum(np.ceil((hi - lo) / h - 1e-9).astype(int), 1)
    return lo, h, cells


def extract_surface(
    fit: SurfaceFit,
    resolution: int = 200,
    prune: bool = True,
    stride: int = 4,
    device: str = "cpu",
):
    """Evaluate ``f`` on a grid and extract the level ``fit.level`` with marching cubes.

    The grid has ``resolution`` nodes along the longest side of the training points' bounding
    box padded by :data:`GRID_PAD` on each side, and the same spacing on the other axes (so at
    most ``resolution^3`` nodes; exactly that for a shape as long as it is wide and high).

    With ``prune`` and a known Lipschitz bound ``L``, a coarse grid (every ``stride``-th node)
    is evaluated first; a coarse cell is skipped when its 8 corners lie on the same side of the
    level by more than ``L`` times its half-diagonal — every point of the cell is within that
    distance of a corner, so no level crossing can lie inside. Only nodes of the remaining cells
    are evaluated; skipped nodes get a value of the proven sign. Marching cubes then returns the
    same mesh as on the full grid.

    Returns
    -------
    GridResult
    """
    import trimesh
    from skimage.measure import marching_cubes

    t0 = time.perf_counter()
    if resolution < 8:
        raise InputError(f"grid resolution must be at least 8, got {resolution}")
    lo, h, cells = _grid_axes(fit.points, resolution)
    use_prune = prune and fit.lipschitz is not None and stride > 1
    if use_prune:
        cells = (np.ceil(cells / stride) * stride).astype(int)
    shape = tuple(int(c) + 1 for c in cells)
    level = fit.level
    axes = [lo[i] + h * np.arange(shape[i]) for i in range(3)]

    def nodes(ix: np.ndarray) -> np.ndarray:
        return np.column_stack([axes[k][ix[:, k]] for k in range(3)])

    if not use_prune:
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        vol = _evaluate(fit.func, grid, device=device).reshape(shape)
        n_eval = vol.size
    else:
        cshape = tuple((s - 1) // stride + 1 for s in shape)
        cidx = np.stack(np.meshgrid(*[np.arange(c) * stride for c in cshape], indexing="ij"),
                        axis=-1).reshape(-1, 3)
        coarse = (_evaluate(fit.func, nodes(cidx), device=device).reshape(cshape) - level)
        radius = fit.lipschitz * stride * h * np.sqrt(3.0) / 2.0
        corners = [coarse[i : i + cshape[0] - 1, j : j + cshape[1] - 1, k : k + cshape[2] - 1]
                   for i in (0, 1) for j in (0, 1) for k in (0, 1)]
        cmin = np.minimum.reduce(corners)
        cmax = np.maximum.reduce(corners)
        positive = cmin > radius
        negative = cmax < -radius
        active = ~(positive | negative)
        # Fine nodes of active cells (a node on a cell face belongs to both neighbours).
        own = np.zeros(shape, dtype=bool)
        rep = active.repeat(stride, 0).repeat(stride, 1).repeat(stride, 2)
        own[:-1, :-1, :-1] = rep
        mask = own.copy()
        for dx in (0, 1):
            for dy in (0, 1):
                for dz in (0, 1):
                    if dx or dy or dz:
                        mask[dx:, dy:, dz:] |= own[: shape[0] - dx, : shape[1] - dy,
                                                   : shape[2] - dz]
        sign = np.where(positive, 1.0, -1.0).astype(np.float32)
        sign = sign.repeat(stride, 0).repeat(stride, 1).repeat(stride, 2)
        sign = np.pad(sign, ((0, 1), (0, 1), (0, 1)), mode="edge")
        vol = (level + sign * np.float32(max(radius, h))).astype(np.float32)
        idx = np.argwhere(mask)
        vol[mask] = _evaluate(fit.func, nodes(idx), device=device)
        n_eval = int(coarse.size + len(idx))
    lo_v, hi_v = float(vol.min()), float(vol.max())
    if not lo_v < level < hi_v:
        raise ValueError(
            f"the level {level:.4g} is not crossed on the grid (f from {lo_v:.4g} to {hi_v:.4g})"
            "; the fit failed"
        )
    # Nodes of the grid's faces scored inside mean the level set leaves the grid: a layer of
    # "outside" values around the volume caps it there, so the mesh is still closed.
    faces_max = max(float(vol[[0, -1]].max()), float(vol[:, [0, -1]].max()),
                    float(vol[:, :, [0, -1]].max()))
    clipped = faces_max > level
    if clipped:
        vol = np.pad(vol, 1, constant_values=np.float32(level - h))
        lo = lo - h
    verts, faces, _, _ = marching_cubes(vol, level=level, spacing=(h, h, h), method="lewiner")
    verts = fit.frame.to_raw(verts + lo)
    # No vertex merging: where f equals the level at a node, marching cubes puts two distinct
    # vertices at one position, and merging them would make non-manifold edges.
    mesh = trimesh.Trimesh(verts, faces, process=False)
    if mesh.volume < 0:  # orient the faces outward (f > 0 inside)
        mesh.invert()
    return GridResult(mesh, time.perf_counter() - t0, n_eval, int(np.prod(shape)), shape,
                      clipped)


def write_mesh(mesh, path: str | Path) -> Path:
    """Write ``mesh`` as PLY (binary), OBJ or STL (binary) by extension, atomically."""
    from .io import atomic_open

    path = Path(path)
    ext = _suffix(path)
    if ext not in OUTPUT_EXTENSIONS:
        raise InputError(
            f"{path}: unknown output extension {path.suffix or '(none)'!r}; expected one of "
            f"{', '.join(OUTPUT_EXTENSIONS)}"
        )
    data = mesh.export(file_type=ext[1:])
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return path


# ---------------------------------------------------------------------------- metrics
def chamfer_normal_consistency(
    recon, truth, n_samples: int = 100_000, seed: int = 0
) -> tuple[float, float]:
    """Chamfer distance and normal consistency between two surfaces.

    ``n_samples`` points are drawn uniformly on each surface (area-weighted), with their face
    normals. Chamfer = ``(mean_a d(a, B) + mean_b d(b, A)) / 2`` in raw units (nearest sampled
    point, scipy cKDTree); normal consistency = mean over both directions of ``|n_a . n_b|``
    with ``n_b`` the normal at the nearest sample (1 = identical orientation field; the absolute
    value makes it independent of face orientation).

    Returns
    -------
    (chamfer, normal_consistency) : tuple of float
    """
    from scipy.spatial import cKDTree
    from trimesh.sample import sample_surface

    pa, fa = sample_surface(recon, n_samples, seed=seed)
    pb, fb = sample_surface(truth, n_samples, seed=seed + 1)
    na, nb = recon.face_normals[fa], truth.face_normals[fb]
    dab, iab = cKDTree(pb).query(pa)
    dba, iba = cKDTree(pa).query(pb)
    chamfer = 0.5 * (float(dab.mean()) + float(dba.mean()))
    nc = 0.5 * (float(np.abs((na * nb[iab]).sum(1)).mean())
                + float(np.abs((nb * na[iba]).sum(1)).mean()))
    return chamfer, nc


def true_sdf(mesh, x: np.ndarray) -> np.ndarray:
    """Signed distance from ``x`` (m, 3) to ``mesh``, raw units, ``> 0`` inside, shape (m,).

    Magnitude: exact closest-point distance (trimesh's proximity query). Sign: ``mesh.contains``
    for a watertight mesh, the generalised winding number otherwise.
    """
    from trimesh.proximity import closest_point

    _, dist, _ = closest_point(mesh, x)
    return np.where(_inside(mesh, x), dist, -dist)


def near_surface_points(mesh, n: int = 10_000, sigma: float = 0.01, seed: int = 0
                        ) -> np.ndarray:
    """``n`` points near ``mesh``: surface samples plus Gaussian noise of standard deviation
    ``sigma`` x the bounding-box diagonal; shape (n, 3), raw units."""
    from trimesh.sample import sample_surface

    p, _ = sample_surface(mesh, n, seed=seed)
    diag = float(np.linalg.norm(mesh.bounds[1] - mesh.bounds[0]))
    rng = np.random.default_rng(seed)
    return p + rng.normal(scale=sigma * diag, size=p.shape)


def sdf_error(fit: SurfaceFit, x: np.ndarray, sdf: np.ndarray) -> np.ndarray:
    """``|(f(z) - level) * scale - sdf(x)|`` at raw points ``x`` (m, 3), raw units, shape (m,).

    ``(f - level) * scale`` is the fitted signed distance to the extracted surface in the
    user's units; ``sdf`` the true one (> 0 inside, see :func:`true_sdf`).
    """
    return np.abs(fit.score_raw(x) - sdf)


# ---------------------------------------------------------------------------- preview
_VIEWS = (("front (x-y)", (0, 1, 2)), ("side (z-y)", (2, 1, 0)), ("top (x-z)", (0, 2, 1)))


def _splat(points: np.ndarray, normals: np.ndarray, axes: tuple[int, int, int],
           lo: np.ndarray, size: float, px: int) -> np.ndarray:
    """Orthographic z-buffered splat of surface samples; shading ``|n . view|``."""
    u, v, w = axes
    iu = np.clip(((points[:, u] - lo[u]) / size * (px - 1)).round().astype(int), 0, px - 1)
    iv = np.clip(((points[:, v] - lo[v]) / size * (px - 1)).round().astype(int), 0, px - 1)
    # Each sample covers a 2 x 2 pixel footprint, so the back surface cannot show through gaps.
    iu = np.concatenate([np.minimum(iu + du, px - 1) for du in (0, 1) for _ in (0, 1)])
    iv = np.concatenate([np.minimum(iv + dv, px - 1) for _ in (0, 1) for dv in (0, 1)])
    pix = (px - 1 - iv) * px + iu
    depth = np.tile(-points[:, w], 4)  # viewer on the + side of axis w
    normals = np.tile(normals, (4, 1))
    order = np.lexsort((depth, pix))
    first = np.ones(len(order), dtype=bool)
    first[1:] = pix[order][1:] != pix[order][:-1]
    sel = order[first]
    img = np.full(px * px, np.nan)
    light = np.zeros(3)
    light[w] = 1.0
    light[v] += 0.5
    light /= np.linalg.norm(light)
    img[pix[sel]] = 0.25 + 0.75 * np.abs(normals[sel] @ light)
    return img.reshape(px, px)


def render_preview(meshes: list[tuple[str, object]], path: str | Path, title: str = "",
                   px: int = 320, n_samples: int = 200_000, seed: int = 0) -> Path:
    """Write a PNG with three orthographic views (front, side, top) of each mesh, one row per
    mesh (``[(label, trimesh.Trimesh), ...]``), grey-shaded surface samples; atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from trimesh.sample import sample_surface

    from .io import atomic_open

    fig = Figure(figsize=(3.0 * len(_VIEWS), 3.1 * len(meshes) + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    for r, (label, mesh) in enumerate(meshes):
        p, fidx = sample_surface(mesh, n_samples, seed=seed)
        nrm = mesh.face_normals[fidx]
        lo, hi = mesh.bounds
        size = float((hi - lo).max()) * 1.02
        lo = (lo + hi) / 2 - size / 2
        for c, (view, axes) in enumerate(_VIEWS):
            ax = fig.add_subplot(len(meshes), len(_VIEWS), r * len(_VIEWS) + c + 1)
            ax.imshow(_splat(p, nrm, axes, lo, size, px), cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{label}: {view}" if label else view, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png")
    return Path(path)
