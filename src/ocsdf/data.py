"""Built-in and benchmark data sets: scikit-learn toys (shipped) and ADBench files (shared data).

Benchmark files are never part of the package: they are read from ``data_dir``, the
``OCSDF_DATA_DIR`` environment variable, or ``../shared/data`` when it exists.

Random splits have one stream per seed, the same in every study and command: a subsample draws
from ``numpy.random.default_rng([seed, 1])``, a one-class half from ``default_rng([seed, 2])``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = ["TOY_DATASETS", "make_toy", "find_data_dir", "load_adbench", "adbench_path",
           "ADBENCH_FILES", "IMAGE_SETS", "load_images", "oc_split", "protocol_rows",
           "split_indices", "subsample_indices"]

#: Image sets of the shared data folder: name -> (file under it, description for tables).
IMAGE_SETS = {
    "mnist": ("mnist/mnist.npz", "MNIST, 60,000 training / 10,000 test images, 28 x 28"),
    "cifar10": ("cifar10/cifar10.npz", "a CIFAR-10 subset (4,660 training / 846 test images, "
                "32 x 32 x 3; see the shared data README), not the full set"),
}

_MIN_ANOMALIES = 10  # kept by a subsample when a set has that many

TOY_DATASETS = ("moons", "one-cloud", "two-clouds", "two-blobs", "blob-cloud", "circles")


def make_toy(name: str = "moons", n: int = 2000, seed: int = 0) -> np.ndarray:
    """A 2-D toy set of the paper (appendix E), standardised to mean 0 and unit variance.

    Parameters
    ----------
    name : {"moons", "one-cloud", "two-clouds", "two-blobs", "blob-cloud", "circles"}
    n : int
        Number of points.

    Returns
    -------
    ndarray, shape (n, 2), float64.
    """
    from sklearn.datasets import make_blobs, make_circles, make_moons

    rng = np.random.default_rng(seed)
    if name == "moons":
        x, _ = make_moons(n, noise=0.05, random_state=seed)
    elif name == "circles":
        x, _ = make_circles(n, noise=0.05, factor=0.5, random_state=seed)
    elif name == "one-cloud":
        x = rng.normal(size=(n, 2)) * [1.0, 0.5]
    elif name == "two-clouds":
        x, _ = make_blobs(n, centers=[[-2, 0], [2, 0]], cluster_std=[0.6, 0.6], random_state=seed)
    elif name == "two-blobs":
        x, _ = make_blobs(n, centers=[[-1.5, -1.0], [1.5, 1.0]], cluster_std=0.2,
                          random_state=seed)
    elif name == "blob-cloud":
        a, _ = make_blobs(n // 2, centers=[[-2, 0]], cluster_std=0.2, random_state=seed)
        b = rng.normal(size=(n - n // 2, 2)) * [0.8, 1.2] + [1.5, 0.0]
        x = np.concatenate([a, b])
    else:
        raise InputError(f"unknown toy dataset {name!r}; choose from {', '.join(TOY_DATASETS)}")
    return (x - x.mean(0)) / x.std(0)


def find_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The benchmark data folder: ``data_dir``, else ``$OCSDF_DATA_DIR``, else ``../shared/data``
    (relative to the working directory or to this repository) when it exists; ``None`` if none.
    """
    if data_dir is not None:
        p = Path(data_dir)
        if not p.is_dir():
            raise InputError(f"data directory not found: {p}")
        return p
    env = os.environ.get("OCSDF_DATA_DIR")
    if env:
        p = Path(env)
        if not p.is_dir():
            raise InputError(f"OCSDF_DATA_DIR points to a missing directory: {p}")
        return p
    repo = Path(__file__).resolve().parents[2]
    for candidate in (Path.cwd() / ".." / "shared" / "data", repo / ".." / "shared" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return None


ADBENCH_FILES = {
    "breastw": "4_breastw", "cardio": "6_cardio", "glass": "14_glass", "http": "16_http",
    "ionosphere": "18_Ionosphere", "lymphography": "21_Lymphography",
    "mammography": "23_mammography", "musk": "25_musk", "optdigits": "26_optdigits",
    "pima": "29_Pima", "satimage-2": "31_satimage-2", "shuttle": "32_shuttle",
    "smtp": "34_smtp", "thyroid": "38_thyroid", "vertebral": "39_vertebral",
    "vowels": "40_vowels", "wbc": "42_WBC", "wdbc": "43_WDBC", "wine": "45_wine",
}


def load_adbench(
    name: str, data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load an ADBench "Classical" set by short name (e.g. ``"cardio"``).

    Returns
    -------
    X : ndarray, shape (n, d), float64, raw units.
    y : ndarray, shape (n,), int: 1 = anomaly, 0 = normal.

    Raises
    ------
    FileNotFoundError
        When no data folder is found or it lacks the file (tests skip on this).
    """
    f = adbench_path(name, data_dir)
    with np.load(f, allow_pickle=False) as npz:
        return npz["X"].astype(np.float64), npz["y"].astype(int).ravel()


def load_images(name: str, data_dir: str | os.PathLike | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An image set of :data:`IMAGE_SETS`: ``(x_train, y_train, x_test, y_test)``.

    Images are float32 ``(n, C, H, W)`` with pixels in [0, 1] (8-bit values / 255; channels
    first), labels int ``(n,)``. Raises ``InputError`` for an unknown name and
    ``FileNotFoundError`` when no data folder is found or it lacks the file.
    """
    key = name.lower()
    if key not in IMAGE_SETS:
        raise InputError(f"unknown image set {name!r}; choose from {', '.join(IMAGE_SETS)}")
    root = find_data_dir(data_dir)
    if root is None:
        raise FileNotFoundError("no benchmark data folder: pass --data-dir, set "
                                "OCSDF_DATA_DIR, or provide ../shared/data")
    f = root / IMAGE_SETS[key][0]
    if not f.is_file():
        raise FileNotFoundError(f"image set file not found: {f}")
    out = []
    with np.load(f, allow_pickle=False) as npz:
        for part in ("train", "test"):
            x = npz[f"x_{part}"]
            x = x[:, None] if x.ndim == 3 else np.moveaxis(x, -1, 1)  # (n, C, H, W)
            out += [np.ascontiguousarray(x, dtype=np.float32) / np.float32(255),
                    npz[f"y_{part}"].astype(int).ravel()]
    return out[0], out[1], out[2], out[3]


def adbench_path(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The ``.npz`` file of the ADBench set ``name`` (short name, e.g. ``"cardio"``).

    Raises ``InputError`` for an unknown name and ``FileNotFoundError`` when no data folder is
    found or it lacks the file.
    """
    key = name.lower()
    if key not in ADBENCH_FILES:
        raise InputError(f"unknown ADBench set {name!r}; choose from {', '.join(ADBENCH_FILES)}")
    root = find_data_dir(data_dir)
    if root is None:
        raise FileNotFoundError(
            "no benchmark data folder: pass --data-dir, set OCSDF_DATA_DIR, "
            "or provide ../shared/data"
        )
    f = root / "adbench" / f"{ADBENCH_FILES[key]}.npz"
    if not f.is_file():
        raise FileNotFoundError(f"ADBench file not found: {f}")
    return f


def subsample_indices(y: np.ndarray, max_rows: int | None, seed: int) -> np.ndarray:
    """Sorted row indices: all rows, or a random subsample of ``max_rows`` rows stratified by
    class (the anomaly ratio is kept, with at least ``min(10, #anomalies)`` anomalies).

    Labels ``y``: 1 = anomaly, 0 = normal. Random stream: ``default_rng([seed, 1])``.
    """
    n = len(y)
    if max_rows is None or n <= max_rows:
        return np.arange(n)
    rng = np.random.default_rng([seed, 1])
    anomalies = np.flatnonzero(y == 1)
    normals = np.flatnonzero(y == 0)
    n_anom = int(round(max_rows * len(anomalies) / n))
    n_anom = min(len(anomalies), max(n_anom, _MIN_ANOMALIES))
    keep = np.concatenate([rng.choice(anomalies, n_anom, replace=False),
                           rng.choice(normals, max_rows - n_anom, replace=False)])
    return np.sort(keep)


def split_indices(y: np.ndarray, protocol: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, evaluation rows), sorted indices, of ``protocol`` for ``seed``.

    ``"ad"``: every row for both. ``"oc"``: a random half (rounded down) of the normal rows
    (``y == 0``) to train; the other normal rows and every anomaly (``y == 1``) to evaluate.
    Random stream: ``default_rng([seed, 2])``, so a seed is the same split in every study.
    """
    if protocol == "ad":
        every = np.arange(len(y))
        return every, every
    if protocol != "oc":
        raise ValueError(f"protocol must be 'ad' or 'oc', got {protocol!r}")
    normal = np.flatnonzero(y == 0)
    perm = np.random.default_rng([seed, 2]).permutation(normal)
    half = len(perm) // 2
    return np.sort(perm[:half]), np.sort(np.concatenate([perm[half:], np.flatnonzero(y == 1)]))


def protocol_rows(X: np.ndarray, y: np.ndarray, protocol: str, seed: int,
                  max_rows: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of one run of ``ocsdf bench tabular``: ``(x_train, x_eval, y_eval)``.

    :func:`subsample_indices` (``max_rows``, stratified, seed ``seed``), then
    :func:`split_indices` of ``protocol`` on the kept rows: the same rows as the bench's for the
    same seed, so studies outside the bench stay paired with its tables. ``X`` ``(n, d)`` raw,
    ``y`` ``(n,)`` with 1 = anomaly.
    """
    keep = subsample_indices(y, max_rows, seed)
    xs, ys = X[keep], y[keep]
    tr, te = split_indices(ys, protocol, seed)
    return xs[tr], xs[te], ys[te]


def oc_split(
    name: str, seed: int = 0, data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-class split of a named data set: (train normal, test normal, test anomalous).

    ADBench sets: the one-class split of :func:`split_indices` (``protocol="oc"``, the stream
    of every study): a random half of the normal rows to train on, the other normal rows and
    all anomalies to test, raw units, rows in file order. Toy sets (:data:`TOY_DATASETS`), a
    generator of their own (``default_rng(seed)`` permutation, torch generator ``seed + 1``):
    1000 training and 1000 held-out points (standardised units) and 1000 anomalies uniform in
    the ball of radius 5.
    """
    if name in TOY_DATASETS:
        import torch

        from .core.domain import Ball

        x = make_toy(name, n=2000, seed=seed)
        idx = np.random.default_rng(seed).permutation(len(x))
        gen = torch.Generator().manual_seed(seed + 1)
        anomalies = Ball(5.0).sample(1000, 2, gen).double().numpy()
        return x[idx[:1000]], x[idx[1000:]], anomalies
    X, y = load_adbench(name, data_dir)
    train, test = split_indices(y, "oc", seed)
    return X[train], X[test[y[test] == 0]], X[y == 1]
