"""``OCSDF``: the scikit-learn estimator (a thin layer over the core: nn, domain, training)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.neighbors import NearestNeighbors
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .certify import CertificatesMixin
from .core.augment import TRANSFORM_SETS, TransformedNegatives, sum_losses, transforms_for
from .core.conv import LipschitzConvNet
from .core.domain import Standardizer, WithBalls, make_domain
from .core.nn import make_mlp
from .core.runtime import torch_device, torch_threads
from .core.scorer import Z_MAX, Scorer
from .core.training import LR_SCHEDULES, TrainConfig, TrainHistory, train
from .errors import DomainWarning, InputError, ModelFileError

__all__ = ["AUTO_BATCH", "AUTO_BY_KIND", "AUTO_DISTANCE_SHIFT", "AUTO_DISTANCE_WEIGHT",
           "AUTO_NEGATIVE_TRANSFORMS", "AUTO_NEWTON_STEPS", "AUTO_STEPS", "AUTO_WIDTH", "OCSDF",
           "fit_many"]


#: What ``n_steps="auto"`` means, by the kind of data ("rows": tables; "images").
AUTO_STEPS = {"rows": 1000, "images": 3000}
#: What ``distance_weight="auto"`` means, by the kind of data.
AUTO_DISTANCE_WEIGHT = {"rows": 0.0, "images": 0.3}
#: What ``distance_shift="auto"`` means, by the kind of data (pixels; rows have none).
AUTO_DISTANCE_SHIFT = {"rows": 0, "images": 6}
#: What ``n_newton_steps="auto"`` means, by the kind of data (``T`` of Algorithm 1).
AUTO_NEWTON_STEPS = {"rows": 1, "images": 4}
#: What ``width="auto"`` means, by the kind of data (hidden units per dense layer).
AUTO_WIDTH = {"rows": 64, "images": 128}
#: What ``negative_transforms="auto"`` means, by the kind of data (images turned and flipped as
#: negatives, :mod:`ocsdf.core.augment`; rows have none).
AUTO_NEGATIVE_TRANSFORMS = {"rows": "none", "images": "rotate+flip"}
#: What ``batch_size="auto"`` means, by the kind of data (positives, and as many negatives, per
#: step).
AUTO_BATCH = {"rows": 96, "images": 128}
#: Every parameter whose "auto" depends on the kind of data, with its table; the value used is
#: the attribute of the same name with a trailing underscore (``width_``, ...), of the type of
#: the table's values.
AUTO_BY_KIND = {"width": AUTO_WIDTH, "n_steps": AUTO_STEPS, "n_newton_steps": AUTO_NEWTON_STEPS,
                "batch_size": AUTO_BATCH, "distance_weight": AUTO_DISTANCE_WEIGHT,
                "distance_shift": AUTO_DISTANCE_SHIFT,
                "negative_transforms": AUTO_NEGATIVE_TRANSFORMS}


def resolve_auto(value, table: dict, kind: str = "rows"):
    """``table[kind]`` when ``value`` is "auto" (``kind``: "rows" or "images"), else ``value``
    as the type of the table's values: the one rule behind every parameter of
    :data:`AUTO_BY_KIND`."""
    return table[kind] if value == "auto" else type(table[kind])(value)


def label_free_margin(z: np.ndarray, factor: float = 0.05, seed: int = 0) -> float:
    """Margin ``m`` chosen without labels: ``factor`` x the median nearest-neighbour distance
    (over rows whose nearest neighbour is not an exact duplicate).

    Parameters
    ----------
    z : ndarray, shape (n, d)
        Training data in the network's input space (standardised units).

    Returns
    -------
    float
        ``m`` in the same units, clipped to ``[0.005, 1.0]``. On the tabular sets measured before
        the project started this lands in the range of the best margins {0.01, 0.05}.
    """
    rng = np.random.default_rng(seed)
    if len(z) > 2000:
        z = z[rng.choice(len(z), 2000, replace=False)]
    dist, _ = NearestNeighbors(n_neighbors=2).fit(z).kneighbors(z)
    # Duplicate rows (common with integer features) have distance 0 and say nothing of the
    # data's scale: leave them out.
    nonzero = dist[:, 1][dist[:, 1] > 1e-12]
    median = float(np.median(nonzero)) if nonzero.size else 0.0
    return float(np.clip(factor * median, 0.005, 1.0))


def _outside_message(estimator: OCSDF, X: np.ndarray, z: np.ndarray, outside: np.ndarray
                     ) -> str:
    """One line: how many training rows lie outside the box (or ball) of the negatives, in
    which features, what B does with them and what to do."""
    n, k = len(X), int(outside.sum())
    shape = {"box": "box", "ball": "ball"}.get(estimator.domain, "unit box [0, 1]^d")
    text = (f"{k} of {n} training rows ({100 * k / n:.1f} %) lie outside the {shape} of the "
            "negatives")
    if estimator.domain == "box":
        s = float(estimator.domain_size)
        beyond = np.flatnonzero((np.abs(z) > s).any(axis=0))
        names = getattr(estimator, "feature_names_in_", None)
        shown = [str(names[j]) if names is not None else f"feature {j}" for j in beyond[:5]]
        more = f" and {len(beyond) - 5} more" if len(beyond) > 5 else ""
        units = "standard deviations from the mean" if estimator.standardize else "units"
        text += f" (beyond {s:g} {units} in {', '.join(shown)}{more})"
    if estimator.domain == "unit":  # no domain term: the network alone scores them
        return (text + "; the network was never shown negatives there. Scale the features "
                "into [0, 1] or use domain='box'.")
    m = float(getattr(estimator, "margin_", 0.0))
    fix = ("standardize='cover' (ocsdf fit --cover) raises the scales so that the "
           f"{shape} holds them" if estimator.standardize else "a larger domain_size")
    return (text + f"; B adds a ball of radius m = {m:.3g} around each, so they score at most "
            f"{m:.3g} (borderline normal). If the training rows are all normal, {fix}.")


def _check_X(estimator: OCSDF, X, reset: bool) -> np.ndarray:
    """Validate ``X`` like scikit-learn, with messages that name the problem; then check that
    its values are in the range scores are computed for (:data:`Z_MAX`). Image arrays
    ``(n, H, W)`` / ``(n, C, H, W)`` are flattened to rows first (:func:`_image_rows`)."""
    X = _validate(estimator, _image_rows(estimator, X, reset), reset)
    if reset and getattr(estimator, "image_shape_", None) is not None:
        shape = estimator.image_shape_
        if X.shape[1] != int(np.prod(shape)):
            raise InputError(f"image_shape={tuple(shape)} needs {int(np.prod(shape))} "
                             f"features (C x H x W), got {X.shape[1]}")
        lo, hi = float(X.min()), float(X.max())
        if lo < 0 or hi > 1:
            raise InputError(f"image pixels must lie in [0, 1] (the domain B is the pixel "
                             f"box), got values in [{lo:.3g}, {hi:.3g}]; divide 8-bit images "
                             "by 255")
    with np.errstate(over="ignore", invalid="ignore"):
        if reset:
            spread = np.std(X, axis=0) + np.abs(np.mean(X, axis=0))
            bad = np.flatnonzero(~np.isfinite(spread))
            if bad.size:
                largest = float(np.abs(X[:, bad[0]]).max())
                raise InputError(
                    f"feature(s) {_feature_names(estimator, X, bad)} hold values too large for "
                    "float64 statistics (their mean or standard deviation overflows; largest "
                    f"|value| {largest:.3g}); rescale or remove them")
        elif hasattr(estimator, "scorer_"):
            z = np.abs(estimator.scorer_.standardize(X))
            bad = ~(z <= Z_MAX)
            if bad.any():
                row, col = np.argwhere(bad)[0]
                raise InputError(
                    f"row {row} (0-based), feature {_feature_names(estimator, X, [col])[0]!r}: "
                    f"{X[row, col]:.3g} is {z[row, col]:.3g} standard deviations from the "
                    f"training mean, beyond the {Z_MAX:.0e} up to which scores are computed "
                    f"({int(bad.any(axis=1).sum())} such rows); such a row is anomalous by any "
                    "measure: drop it or clip it")
    return X


def _image_rows(estimator, X, reset: bool):
    """Images to rows for estimators that take them (``OCSDF``): an array of ``(n, H, W)``
    (one channel) or ``(n, C, H, W)`` images becomes ``(n, C * H * W)`` rows (C-order, as
    ``reshape``). At fit (``reset``) sets ``image_shape_`` (``(C, H, W)``, from the array or
    the ``image_shape`` parameter, else None); when scoring, image arrays must match it.
    Anything else is returned unchanged."""
    if not hasattr(estimator, "image_shape"):
        return X
    ndim = getattr(X, "ndim", None)
    given = estimator.image_shape
    if ndim in (3, 4):
        shape = tuple(int(v) for v in (X.shape[1:] if ndim == 4 else (1, *X.shape[1:])))
        if reset:
            if given is not None and tuple(given) != shape:
                raise InputError(f"images of shape {shape} (C, H, W) but image_shape="
                                 f"{tuple(given)}")
            estimator.image_shape_ = shape
        elif getattr(estimator, "image_shape_", None) != shape:
            fitted = getattr(estimator, "image_shape_", None)
            raise InputError(f"images of shape {shape} (C, H, W), but the model was fitted on "
                             + (f"images of shape {tuple(fitted)}" if fitted else "rows"))
        return np.asarray(X).reshape(len(X), -1)
    if ndim is not None and ndim > 4:
        raise InputError(f"X must be rows (n, d) or images (n, H, W) / (n, C, H, W), got "
                         f"{ndim} dimensions")
    if reset:
        estimator.image_shape_ = None if given is None else tuple(int(v) for v in given)
    return X


def _feature_names(estimator: OCSDF, X: np.ndarray, idx) -> list[str]:
    names = getattr(estimator, "feature_names_in_", None)
    return [str(names[i]) if names is not None else f"x{i}" for i in idx]


def _validate(estimator: OCSDF, X, reset: bool) -> np.ndarray:
    """``validate_data`` with messages that name the problem."""
    if hasattr(X, "dtypes") and hasattr(X, "columns"):
        from pandas.api.types import is_numeric_dtype

        bad = [str(c) for c, t in zip(X.columns, X.dtypes) if not is_numeric_dtype(t)]
        if bad:
            raise InputError(f"non-numeric columns: {bad}; {type(estimator).__name__} needs "
                             "numeric features")
    try:
        return validate_data(
            estimator, X, reset=reset, dtype=np.float64, ensure_min_samples=2 if reset else 1
        )
    except ValueError as err:
        msg = str(err)
        if "could not convert" in msg:
            raise InputError(f"non-numeric values in X ({msg})") from None
        if "Expected 2D array" in msg:
            raise InputError(
                "X must be 2-D (n_samples, n_features), got a 1-D array. Reshape your data: "
                "X.reshape(-1, 1) for one feature, X.reshape(1, -1) for one sample"
            ) from None
        raise


class OCSDF(CertificatesMixin, OutlierMixin, BaseEstimator):
    """One-class classifier that learns the signed distance to the support of normal data.

    A 1-Lipschitz network ``f`` (orthogonal dense layers, GroupSort activations) is trained with
    the HKR loss against negatives from the complementary distribution (paper Algorithms 1 and
    3). ``f`` is positive on the normal region and approximates the signed distance to its
    boundary, in standardised units: moving a row by ``eps`` (l2, standardised units) changes its
    score by at most ``lipschitz_ * eps``.

    Parameters
    ----------
    width : int or "auto", default "auto"
        Units of each hidden dense layer (even for GroupSort2). "auto": 64 for rows, 128 for
        images (:data:`AUTO_WIDTH`). The value used is ``width_``. Measured on the 19 ADBench
        sets, 5 seeds, 1000 steps (``docs/results/defaults_speed/``): 64 x 3 against 128 x 3,
        mean AUROC 85.44 against 85.77 % with training rows that hold anomalies and 91.37
        against 91.53 % on clean ones (both within seed noise); a fit on ADBench cardio, one
        CPU thread, 1.9 s against 3.8 s (``docs/results/speed.md``).
    depth : int, default 3
        Number of hidden dense layers.
    activation : {"groupsort2", "fullsort"}, default "groupsort2"
    margin : float or "auto", default "auto"
        HKR margin ``m`` in standardised units. "auto": 0.05 x the median nearest-neighbour
        distance of the training data (no labels used), clipped to [0.005, 1].
    lam : float, default 100
        Weight of the hinge term of the HKR loss.
    n_steps : int or "auto", default "auto"
        Training iterations (steps, not epochs: a small data set needs many passes). "auto":
        1000 for rows, 3000 for images (:data:`AUTO_STEPS`; measured: MNIST, 10 digits x 2
        seeds, mean AUROC 91.8 at 1000 steps, 93.0 at 3000, higher on every digit; tables were
        measured at 1000, ``docs/results/defaults.md``). The value used is ``n_steps_``.
    warmup_steps : int or "auto", default "auto"
        First iterations with uniform negatives only (``T = 0``). "auto": ``n_steps_ // 10``.
    batch_size : int or "auto", default "auto"
        Positives per iteration (and as many negatives). "auto": 96 for rows, 128 for images
        (:data:`AUTO_BATCH`; measured on the 19 ADBench sets x 20 seeds, label-free margin,
        mean AUROC AD / one-class: 96 84.76 / 91.42, 128 84.99 / 91.52, within seed noise,
        with a default fit on ADBench cardio 10 % shorter;
        ``docs/results/defaults_speed/hand_step/``).
        The value used is ``batch_size_``.
    n_newton_steps : int or "auto", default "auto"
        ``T``, Newton–Raphson steps per negative batch. "auto": 1 for rows, 4 for images
        (:data:`AUTO_NEWTON_STEPS`; measured on the 19 ADBench sets x 5 seeds, mean AUROC AD /
        one-class: T = 4 85.44 / 91.37, T = 2 85.36 / 91.38, T = 1 85.58 / 91.38, all within
        seed noise, while the sampling passes were about 40 % of a training step at T = 4;
        ``docs/results/defaults_speed/newton_steps/``). The value used is ``n_newton_steps_``.
    learning_rate : float, default 1e-3
        RMSprop learning rate of the weights (the first step's with ``lr_schedule="cosine"``).
    bias_lr_factor : float, default 1
        Learning rate of the biases relative to ``learning_rate``: with orthogonal weights the
        biases alone set how large ``f`` grows inside the data, so a larger factor gets there
        in fewer steps (see :class:`~ocsdf.core.training.TrainConfig`).
    lr_schedule : {"constant", "cosine", "linear"}, default "constant"
        "cosine": decay the learning rate from ``learning_rate`` to 0 along a half cosine over
        the ``n_steps`` (measured: no better than constant on six ADBench sets, and worse with
        training rows that hold anomalies; ``docs/results/defaults_speed/``). "linear": from
        ``learning_rate`` down to a thousandth of it at the last step (the paper's MNIST
        setting, ``ocsdf bench images --full``).

    domain : {"box", "ball", "unit"}, default "box"
        Domain B of the negatives in standardised units: ``[-s, s]^d``, the ball of radius
        ``s`` (2-D toys), or the pixel box ``[0, 1]^d`` (use with ``standardize=False``).
    domain_size : float, default 5.0
        ``s`` above (5 = ten standard deviations wide).
    standardize : bool or "cover", default True
        True: standardise each feature (mean 0, std 1; constant columns are centred only).
        A training row beyond ``domain_size`` standard deviations in some feature then lies
        outside B and scores as an anomaly (``fit`` warns, :class:`~ocsdf.errors.DomainWarning`,
        and sets ``n_outside_domain_``). "cover": standardise, then raise each feature's scale
        (box; one common factor for the ball) so that every training row lies within 80 % of
        B: for training rows known to be normal. Measured on the 19 ADBench sets
        (``docs/results/domain_cover/``, 2 seeds): "cover" gains where normal features are
        heavy-tailed (one-class optdigits 80.0 -> 87.9 %, cardio 96.0 -> 96.7 %) and loses where
        the tails set the scale or are the anomalies (smtp 94.0 -> 85.5 %, thyroid 98.9 ->
        96.9 %): one-class mean 91.28 vs 91.26 %, 85.42 vs 85.16 % with contaminated training
        rows, hence not the default.
        False: raw features (pixels with ``domain="unit"``).
    contamination : "auto" or float in (0, 0.5], default "auto"
        "auto": ``offset_ = 0``, the learned boundary ``f = 0``. A float: ``offset_`` is that
        quantile of the training scores, as in IsolationForest. Ignored when ``fpr`` is set.
    fpr : float in (0, 1) or None, default None
        Target false-positive rate: hold out a calibration split of the training rows and set
        ``offset_`` so that a new normal row is flagged with probability at most ``fpr``
        (split-conformal guarantee: exchangeable normal data, marginal over calibration sets).
        With few calibration rows the rule is conservative: ``fpr=0.01`` needs at least 99.
    calibration_size : float in (0, 0.5] or "auto", default "auto"
        Fraction of the training rows held out for calibration (not used to train). "auto"
        with ``fpr``: :func:`auto_calibration_size` — 20 %, raised to hold ``10 / fpr`` rows
        when the data allow, at most 50 % (measured in
        ``docs/results/thresholds_calibration.md``: holding out 50 % instead of 20 % cost at
        most 0.002 AUROC on cardio and thyroid, and at ``fpr=0.01`` it tripled the recall on
        cardio, whose 20 % is too few rows for that rate). Without ``fpr``: no split (then
        ``predict_pvalue`` is unavailable).
    trim : float in [0, 0.5), default 0.0
        For training rows that may hold anomalies (unsupervised anomaly detection): after a
        first fit, drop the ``trim`` fraction of training rows with the lowest scores (the
        likeliest anomalies) and fit again, from the same seed, on the rest (standardisation
        and label-free margin recomputed on them). Calibration rows (``fpr``) are never
        trimmed. Doubles the fit time. 0 = one fit. Measured on the 19 ADBench sets, 5 seeds
        (``docs/results/tabular_negatives/``, current defaults): 0.05 / 0.1 / 0.2 raise the mean
        AUROC with anomalies among the training rows from 85.20 to 86.26 / 86.50 / 86.58 % and
        lower it on clean rows from 91.49 to 91.30 / 91.12 / 90.57 % (earlier defaults:
        ``docs/results/tabular_trim/``).
    random_state : int, RandomState or None, default None
        Seeds the initial weights, the negatives and the batches.
    device : str, default "cpu"
        Torch device for training and scoring ("cuda" if available and asked for).
    n_threads : int or None, default 1
        Torch CPU threads while fitting (restored afterwards). One thread is fastest for these
        small dense networks: measured on 2 cores with one other busy process, 7 ms per step at
        128 x 3 with 1 thread against 400 ms with 2 (thread contention). None keeps torch's
        setting.
    verbose : bool, default False
        Show a progress bar during ``fit``.
    image_shape : (C, H, W) or None, default None
        Rows are flattened images of this shape (C-order, as ``reshape``). Not needed for image
        arrays: ``fit`` on an ``(n, H, W)`` or ``(n, C, H, W)`` array infers it. For images,
        pixels must lie in [0, 1]: B is the pixel box ``[0, 1]^(C H W)``, pixels are not
        standardised (``domain`` and ``standardize`` do not apply; "cover" is refused), the
        score is ``f`` alone (no clip to B: valid images sit on its boundary), and radii and
        ``eps`` are l2 norms in [0, 1] pixel units (``space="raw"`` and "standardized" agree).
    network : {"dense", "conv"}, default "dense"
        "conv" (images only): a convolutional network, :class:`~ocsdf.core.conv.
        LipschitzConvNet`. "dense": the dense network, on the flattened pixels for images. The
        dense network is the default for images too, by measurement (MNIST one class vs the
        rest, 2,000 training images, 2026-12-01, one CPU thread): digit 2 AUROC 92.8 %,
        certified 82.0 % at l2 36/255, 35 s at 128 x 3 and 1000 steps, against 67.6-76.5 % for
        the convolutional networks tried (4-8-8 and 8-16-16 channels, 300-1000 steps, up to
        150 s); digit 8: 82.3 against 59.5-81.0 % (measured before wide layers were computed
        in closed form; the 10-digit table is ``docs/results/images_mnist.md``).
    channels : tuple of even int, default (8, 16, 16)
        Convolutional network only: output channels of each stage (3 x 3 orthogonal
        convolutions with circular padding, GroupSort2 over channels, a pixel unshuffle
        halving H and W before every stage but the first), followed by ``depth`` dense
        layers of ``width`` units (:class:`~ocsdf.core.conv.LipschitzConvNet`). Its
        ``lipschitz_`` is the FFT bound of each convolution times the spectral norms of the
        dense layers (:func:`~ocsdf.core.conv.sequential_lipschitz_bound`).
    distance_weight : float or "auto", default "auto"
        "auto": 0 (off) for rows, 0.3 for images (:data:`AUTO_DISTANCE_WEIGHT`; measured in
        ``docs/results/distance_supervision/``: on MNIST, 10 digits x 2 seeds at 3000 steps,
        mean AUROC 93.0 -> 94.5 and certified AUROC at 36/255 86.0 -> 87.5, higher on every
        digit, and 97.5 / 94.8 with a pool of shifted images, ``distance_shift``; on the 19
        tabular sets it loses 3.2 points with contaminated training rows and gains nothing
        beyond seed noise on clean ones). The value used is ``distance_weight_``.
        Distance supervision (:mod:`ocsdf.core.distill`): weight of a regression term, added
        to the HKR loss at every update, of ``f`` towards ``margin_ - d_k`` on a minibatch
        (``batch_size`` points) of a fixed pool of points around, between and away from the
        training rows, ``d_k`` being their exact l2 distance to the ``distance_k``-th nearest
        training row (network input units: standardised, or [0, 1] pixels). The penalty is a
        Huber loss with threshold ``margin_`` (beyond it the absolute error), so the weight is
        relative to the HKR loss's unit-slope Kantorovich term whatever the units. The network
        stays 1-Lipschitz (the bound is unchanged). 0 = off: training is exactly as without
        it. Costs the pool's distances (once) and one more forward/backward pass per update.
    distance_k : int, default 1
        ``k`` of the supervision's distances (``k > 1`` is less sensitive to isolated
        anomalies among the training rows).
    distance_pool : int, default 4096
        Points in the supervision pool (per model). Their distances are computed against every
        training row up to 50,000 rows, against a uniform subsample of 50,000 beyond.
    distance_radius : float, default 0.0
        Supervise only pool points with ``d_k >= distance_radius * rho_k``, ``rho_k`` being the
        median leave-one-out ``d_k`` of the training rows: leaves the inside of the data to the
        HKR loss. 0 = every pool point.
    distance_loss : {"two_sided", "one_sided"}, default "two_sided"
        "one_sided": penalise only ``f > margin_ - d_k`` (scores above the distance target).
    distance_shift : int or "auto", default "auto"
        Images only: the supervision pool is training images shifted by a random whole number
        of pixels, at most this many along each axis (circular;
        :func:`~ocsdf.core.distill.shifted_images`), instead of points around, between and
        away from the training images (0; ``distill.POOL_SHARES``). "auto": 6 for images, 0
        for rows (:data:`AUTO_DISTANCE_SHIFT`; measured on MNIST, 10 digits x 2 seeds, mean
        AUROC / certified AUROC at 36/255: 94.5 / 87.5 without shifts, 95.6 / 90.4 with
        images shifted by up to 4 pixels as a quarter of the pool, 96.5 / 93.1 as all of it,
        97.5 / 94.8 shifted by up to 6 pixels (8: the same);
        ``docs/results/images_mnist_studies/``). The value used is ``distance_shift_``. A
        value > 0 with rows is an error.
    negative_transforms : {"auto", "none", "rotate", "flip", "rotate+flip"}, default "auto"
        Images only: training images turned by a quarter, half or three-quarter turn
        ("rotate"; square images, else the half turn only) and/or flipped top to bottom
        ("flip") are the negatives of a second HKR loss against the training images, added at
        every update (:mod:`ocsdf.core.augment`): the class's own pixel statistics without its
        shape, where the Newton negatives start from uniform noise. One more forward/backward
        pass over ``batch_size`` images per update; the network stays 1-Lipschitz (the bound
        is unchanged). "auto": "rotate+flip" for images, "none" for rows
        (:data:`AUTO_NEGATIVE_TRANSFORMS`; ``docs/results/images_cifar10_studies/``: on the
        CIFAR-10 subset, 10 classes, 1000 steps, mean AUROC 60.9 without, 64.2 "rotate", 64.7
        "flip", 67.0 "rotate+flip"; on MNIST, 10 digits x 2 seeds, 97.5 -> 97.2, certified at
        l2 36/255 94.8 -> 95.5). Give "none" for a class that looks the same turned or flipped
        (a zero, a texture, images without an up): MNIST zeros lose 2.9 points with it. The
        value used is ``negative_transforms_``; with rows, anything but "none" or "auto" is an
        error.
    negative_weight : float, default 1.0
        Weight of that second HKR loss relative to the first (> 0).
    negative_spread : float in (0, 1], default 1.0
        Where the negatives of Algorithm 1 start: 1 = uniform in B (the paper); ``a < 1``:
        half of them uniform in B shrunk by ``a`` about its centre (where standardisation puts
        the data), so that more of them land in the gaps and holes of the data instead of far
        away (:func:`~ocsdf.core.sampling.negative_starts`). The network is tighter around the
        training rows: for rows known to be normal, with gaps that matter. Measured on the 19
        ADBench sets, 5 seeds, rows (``docs/results/tabular_negatives/``): with 0.5 the
        one-class mean AUROC goes 91.49 -> 92.15 % (glass +7.7, vertebral +8.7, optdigits
        +6.9, vowels +5.5; mammography -7.3, pima -3.6), but with anomalies among the training
        rows 85.20 -> 79.55 % (the tighter network covers them too), hence not the default.
        On MNIST (digits 0, 2, 8, one seed) no effect: 94.92 -> 94.78 %.

    Attributes
    ----------
    scorer_ : ocsdf.Scorer
        The fitted score (standardisation, exported network, domain, sound bound) that every
        face (certificates, explanations, ONNX, persistence, PyOD) scores with.
    net_ : torch.nn.Sequential
        The trained network's exported form (float64, input: standardised features);
        ``scorer_.net``.
    lipschitz_ : float
        Sound upper bound of the l2 Lipschitz constant of ``score_samples`` in standardised
        units (``max(network bound, 1)`` for box and ball domains, see Notes).
    margin_ : float
        The margin used.
    offset_ : float
        ``decision_function = score_samples - offset_``.
    calibration_scores_ : ndarray, shape (n_calibration,)
        Sorted scores of the held-out calibration rows (only with a calibration split).
    mean_, scale_ : ndarray, shape (n_features,)
        Standardisation: ``z = (x - mean_) / scale_``.
    history_ : TrainHistory
    fit_time_ : float
        Wall-clock seconds ``fit`` took (training, calibration and threshold).
    n_trimmed_ : int
        Training rows the second fit left out (0 without ``trim``).
    n_outside_domain_ : int
        Training rows (of the final fit) that lie outside the box (or ball) of the negatives
        (0 with ``standardize="cover"``). B adds a ball of radius ``margin_`` around each, so
        B holds every training row and such a row scores at most ``margin_``.
    domain_rows_ : ndarray, shape (n_outside_domain_, n_features)
        Those rows, standardised: the centres of B's balls (empty for images).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame with string column names.
    image_shape_ : (C, H, W) or None
        The image shape of the training rows (None for tabular data).

    Notes
    -----
    A faster configuration, ``OCSDF(width=64, depth=2, n_steps=350, warmup_steps=35,
    learning_rate=2e-3, bias_lr_factor=5)``, fits several times faster than the default (ADBench
    cardio on one CPU thread: ``docs/results/speed.md``) and ranks as well on six ADBench sets
    and on 2 seeds of the 19, but over 5 seeds of the 19 sets it loses 1.7 points of mean AUROC
    on training rows that hold anomalies (83.96 against 85.68 % for 128 x 3) and 0.7 on clean
    ones (90.68 against 91.35 %; ``docs/results/defaults_speed/``), so it is not the default.
    The bias rate is what makes short runs work at all: with orthogonal weights only the
    biases can make ``f`` large deep inside the data.

    A row outside B is anomalous by definition, but no negative is ever drawn there, so the
    network may score it as it likes. The score is therefore ``min(f(z), sdf_B(z))``, where
    ``sdf_B`` is the signed distance to the boundary of B (> 0 inside, ``-dist(z, B)`` outside):
    far inside B it is ``f``; outside B it is at most ``-dist(z, B)``. The minimum of two
    functions is Lipschitz with the larger of their constants, so the bound is
    ``max(lipschitz_bound(net), 1)``. Not applied to the pixel box (``domain="unit"``), where
    valid images often sit on the boundary.

    Reference: Béthune, Novello, Coiffier, Boissin, Serrurier, Vincenot, Troya-Galvis.
    *Robust One-Class Classification with Signed Distance Function using 1-Lipschitz Neural
    Networks*, ICML 2023.

    Examples
    --------
    >>> from sklearn.datasets import make_moons
    >>> from ocsdf import OCSDF
    >>> X, _ = make_moons(500, noise=0.05, random_state=0)
    >>> model = OCSDF(n_steps=200, random_state=0).fit(X)
    >>> model.predict(X[:3]).shape
    (3,)
    """

    #: Allowed types and ranges of each parameter, checked by ``fit`` (scikit-learn's table).
    _parameter_constraints: dict = {
        "width": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "depth": [Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions({"groupsort2", "fullsort"})],
        "margin": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
        "lam": [Interval(Real, 0, None, closed="neither")],
        "n_steps": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "warmup_steps": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "n_newton_steps": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "lr_schedule": [StrOptions(set(LR_SCHEDULES))],
        "bias_lr_factor": [Interval(Real, 0, None, closed="neither")],
        "domain": [StrOptions({"box", "ball", "unit"})],
        "domain_size": [Interval(Real, 0, None, closed="neither")],
        "standardize": ["boolean", StrOptions({"cover"})],
        "contamination": [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="right")],
        "fpr": [Interval(Real, 0, 1, closed="neither"), None],
        "calibration_size": [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="right")],
        "trim": [Interval(Real, 0, 0.5, closed="left")],
        "random_state": ["random_state"],
        "device": [str, torch.device],
        "n_threads": [Interval(Integral, 1, None, closed="left"), None],
        "verbose": ["verbose"],
        "image_shape": [tuple, list, None],
        "network": [StrOptions({"dense", "conv"})],
        "channels": [tuple, list],
        "distance_weight": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
        "distance_k": [Interval(Integral, 1, None, closed="left")],
        "distance_pool": [Interval(Integral, 1, None, closed="left")],
        "distance_radius": [Interval(Real, 0, None, closed="left")],
        "distance_loss": [StrOptions({"two_sided", "one_sided"})],
        "distance_shift": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "negative_transforms": [StrOptions({"auto", "none", *TRANSFORM_SETS})],
        "negative_weight": [Interval(Real, 0, None, closed="neither")],
        "negative_spread": [Interval(Real, 0, 1, closed="right")],
    }

    def __init__(
        self,
        *,
        width: int | str = "auto",
        depth: int = 3,
        activation: str = "groupsort2",
        margin: float | str = "auto",
        lam: float = 100.0,
        n_steps: int | str = "auto",
        warmup_steps: int | str = "auto",
        batch_size: int | str = "auto",
        n_newton_steps: int | str = "auto",
        learning_rate: float = 1e-3,
        lr_schedule: str = "constant",
        bias_lr_factor: float = 1.0,
        domain: str = "box",
        domain_size: float = 5.0,
        standardize: bool | str = True,
        contamination: float | str = "auto",
        fpr: float | None = None,
        calibration_size: float | str = "auto",
        trim: float = 0.0,
        random_state=None,
        device: str = "cpu",
        n_threads: int | None = 1,
        verbose: bool = False,
        image_shape: tuple[int, int, int] | None = None,
        network: str = "dense",
        channels: tuple[int, ...] = (8, 16, 16),
        distance_weight: float | str = "auto",
        distance_k: int = 1,
        distance_pool: int = 4096,
        distance_radius: float = 0.0,
        distance_loss: str = "two_sided",
        distance_shift: int | str = "auto",
        negative_transforms: str = "auto",
        negative_weight: float = 1.0,
        negative_spread: float = 1.0,
    ) -> None:
        self.width = width
        self.depth = depth
        self.activation = activation
        self.margin = margin
        self.lam = lam
        self.n_steps = n_steps
        self.warmup_steps = warmup_steps
        self.batch_size = batch_size
        self.n_newton_steps = n_newton_steps
        self.learning_rate = learning_rate
        self.lr_schedule = lr_schedule
        self.bias_lr_factor = bias_lr_factor
        self.domain = domain
        self.domain_size = domain_size
        self.standardize = standardize
        self.contamination = contamination
        self.fpr = fpr
        self.calibration_size = calibration_size
        self.trim = trim
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads
        self.verbose = verbose
        self.image_shape = image_shape
        self.network = network
        self.channels = channels
        self.distance_weight = distance_weight
        self.distance_k = distance_k
        self.distance_pool = distance_pool
        self.distance_radius = distance_radius
        self.distance_loss = distance_loss
        self.distance_shift = distance_shift
        self.negative_transforms = negative_transforms
        self.negative_weight = negative_weight
        self.negative_spread = negative_spread

    # ------------------------------------------------------------------ validation
    def _validate_params(self) -> None:
        """Check every parameter against :attr:`_parameter_constraints` (scikit-learn's
        one-line ``InvalidParameterError``, a ValueError naming the parameter, the allowed
        values and the value given), then the rules that tie two parameters together."""
        super()._validate_params()
        if self.activation == "groupsort2" and self.width != "auto" and self.width % 2:
            raise ValueError(f"width must be even for GroupSort2, got {self.width}")
        if self.standardize == "cover" and self.domain == "unit":
            raise ValueError("standardize='cover' needs domain 'box' or 'ball' (the pixel box "
                             "'unit' is used with raw features: standardize=False)")
        if self.image_shape is not None and (
                len(self.image_shape) != 3 or any(int(v) < 1 for v in self.image_shape)):
            raise ValueError(f"image_shape must be (C, H, W) of positive ints, got "
                             f"{self.image_shape!r}")
        if not self.channels or any(int(c) < 2 or int(c) % 2 for c in self.channels):
            raise ValueError(f"channels must be even ints >= 2, got {self.channels!r}")
        if self.network == "conv" and self.activation != "groupsort2":
            raise ValueError("network='conv' uses GroupSort2 activations (activation="
                             f"'groupsort2'), got activation={self.activation!r}")
        torch_device(self.device)

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None) -> OCSDF:
        """Fit on normal data ``X``.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features), or images (n, H, W) / (n, C, H, W)
            Numeric, finite, at least 2 rows. Raw units; standardised internally (images:
            pixels in [0, 1], not standardised; see ``image_shape``).
        y : ignored

        Returns
        -------
        self
        """
        _fit_estimators([self], [X], progress=bool(self.verbose), desc="ocsdf fit")
        return self

    # The steps of ``fit`` before and after training (see ``_fit_estimators``).
    def _prepare_fit(self, X) -> tuple[int, np.ndarray, np.ndarray | None, np.ndarray]:
        """Validate, draw the seed, split off calibration rows, standardise, choose the margin.

        Returns ``(seed, X_train (raw), X_calibration (raw) or None, z_train (standardised))``
        and sets ``n_features_in_``, ``mean_``, ``scale_``, ``margin_``.
        """
        self._validate_params()
        X = _check_X(self, X, reset=True)
        if self._is_image() and self.standardize == "cover":
            raise InputError("standardize='cover' does not apply to images (pixels are not "
                             "standardised; B is the pixel box)")
        if self.network == "conv" and not self._is_image():
            raise InputError("network='conv' needs images: (n, H, W) or (n, C, H, W) arrays, "
                             "or rows with image_shape=(C, H, W)")
        torch_device(self.device)
        self._resolve_auto()
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        X_tr, X_cal = self._calibration_split(X, seed)
        return seed, X_tr, X_cal, self._standardise(X_tr, seed)

    def _standardise(self, X_tr: np.ndarray, seed: int) -> np.ndarray:
        """Fit the standardisation and the margin on ``X_tr`` (raw, (n, d)); sets ``mean_``,
        ``scale_`` and ``margin_`` and returns the standardised rows."""
        domain = self._domain()
        std = Standardizer.fit(X_tr, enabled=bool(self.standardize) and not self._is_image())
        if self.standardize == "cover":
            std = std.covering(X_tr, domain)
        self.mean_, self.scale_ = std.mean, std.scale
        z = std.transform(X_tr)
        outside = domain.distance_outside(torch.as_tensor(z)).numpy() > 0
        self.n_outside_domain_ = int(outside.sum())
        self.margin_ = (
            label_free_margin(z, seed=seed) if self.margin == "auto" else float(self.margin)
        )
        clip = self._domain_kind() != "unit"
        self.domain_rows_ = np.array(z[outside] if clip else z[:0], dtype=np.float64)
        if self.n_outside_domain_:
            warnings.warn(_outside_message(self, X_tr, z, outside), DomainWarning, stacklevel=5)
        return z

    def _trim_rows(self, scorer: Scorer, X_tr: np.ndarray, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
        """The ``trim`` step between the two fits: score ``X_tr`` with the first fit's
        ``scorer``, keep the rows scoring above the ``trim`` quantile, and standardise them
        anew. Returns ``(kept raw rows, their standardised rows)``; at least 2 rows are kept.
        """
        scores = scorer.score(X_tr)
        n_keep = max(2, len(X_tr) - int(np.floor(self.trim * len(X_tr))))
        keep = np.sort(np.argsort(-scores, kind="stable")[:n_keep])
        X_kept = X_tr[keep]
        return X_kept, self._standardise(X_kept, seed)

    def _resolve_auto(self) -> None:
        """Set ``width_``, ``n_steps_``, ``warmup_steps_``, ``n_newton_steps_``,
        ``distance_weight_``, ``distance_shift_`` and ``negative_transforms_``: the parameters,
        with "auto" resolved by
        the kind of data (rows or images; after validation)."""
        kind = "images" if self._is_image() else "rows"
        for name, table in AUTO_BY_KIND.items():
            setattr(self, name + "_", resolve_auto(getattr(self, name), table, kind))
        self.warmup_steps_ = (self.n_steps_ // 10 if self.warmup_steps == "auto"
                              else int(self.warmup_steps))
        if kind == "rows" and self.distance_shift_ > 0:
            raise InputError(f"distance_shift={self.distance_shift_} shifts images by pixels; "
                             "these are rows (give image_shape, or distance_shift=0)")
        if kind == "rows" and self.negative_transforms_ != "none":
            raise InputError(f"negative_transforms={self.negative_transforms_!r} turns images; "
                             "these are rows (give image_shape, or negative_transforms='none')")

    def _train_config(self, seed: int) -> TrainConfig:
        """The :class:`TrainConfig` of this estimator's hyper-parameters (after ``margin_``)."""
        return TrainConfig(
            n_steps=int(self.n_steps_),
            warmup_steps=int(self.warmup_steps_),
            batch_size=int(self.batch_size_),
            n_newton_steps=int(self.n_newton_steps_),
            margin=self.margin_,
            lam=float(self.lam),
            lr=float(self.learning_rate),
            lr_schedule=str(self.lr_schedule),
            bias_lr_factor=float(self.bias_lr_factor),
            seed=seed,
            negative_spread=float(self.negative_spread),
        )

    def _finish_fit(self, scorer: Scorer, history: TrainHistory, X_tr: np.ndarray,
                    X_cal: np.ndarray | None) -> None:
        """Store the fitted scorer, the calibration scores and the threshold ``offset_``."""
        self.history_ = history
        self._set_scorer(scorer)
        if X_cal is not None:
            self.calibration_scores_ = np.sort(self._score_array(X_cal))
        elif hasattr(self, "calibration_scores_"):
            del self.calibration_scores_
        if self.fpr is not None:
            self.offset_ = conformal_threshold(self.calibration_scores_, float(self.fpr))
            if not np.isfinite(self.offset_):
                warnings.warn(
                    f"fpr={self.fpr:g} with {len(self.calibration_scores_)} calibration rows: "
                    f"nothing will be flagged (needs at least {int(np.ceil(1 / self.fpr)) - 1} "
                    "calibration rows); give more rows or a larger calibration_size",
                    stacklevel=3,
                )
        elif self.contamination == "auto":
            self.offset_ = 0.0
        else:
            self.offset_ = float(
                np.percentile(self._score_array(X_tr), 100.0 * self.contamination))

    def _calibration_split(self, X: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(rows to train on, calibration rows or None), split at random with ``seed``."""
        size = self.calibration_size
        if size == "auto":
            size = auto_calibration_size(self.fpr, len(X)) if self.fpr is not None else 0.0
        n_cal = int(round(size * len(X)))
        if size == 0:
            return X, None
        if n_cal < 1 or len(X) - n_cal < 2:
            raise InputError(
                f"a calibration split of {size:g} of {len(X)} rows leaves too few rows; "
                "give more rows or a different calibration_size"
            )
        idx = np.random.default_rng(seed).permutation(len(X))
        return X[idx[n_cal:]], X[idx[:n_cal]]

    def _is_image(self) -> bool:
        """Whether the model was fitted on images (``image_shape_`` set by ``fit``)."""
        return getattr(self, "image_shape_", None) is not None

    def _domain_kind(self) -> str:
        """``domain``, or "unit" (the pixel box) for images."""
        return "unit" if self._is_image() else self.domain

    def _domain(self):
        return make_domain(self._domain_kind(), self.domain_size)

    def _scorer(self, net: torch.nn.Sequential) -> Scorer:
        """The fitted score of an exported network ``net`` with this estimator's
        standardisation and domain (``min(f, sdf_B)`` except for the pixel box). B is the
        box (or ball) of the negatives with a ball of radius ``margin_`` around each training
        row outside it (``domain_rows_``): it holds every training row."""
        domain = self._domain()
        rows = getattr(self, "domain_rows_", None)
        if rows is not None and len(rows):
            domain = WithBalls(domain, rows, self.margin_)
        return Scorer(net, self.mean_, self.scale_, domain,
                      clip_to_domain=self._domain_kind() != "unit")

    def _make_network(self, n_models: int, seeds: Sequence[int]):
        """The network to train: ``M`` stacked dense networks, or with ``network="conv"`` a
        :class:`~ocsdf.core.conv.LipschitzConvNet` (images; one model at a time)."""
        if self.network == "conv":
            if n_models != 1:
                raise InputError("convolutional networks are fitted one model at a time: use "
                                 "OCSDF.fit per data set, or network='dense' with fit_many")
            try:
                return LipschitzConvNet(self.image_shape_, channels=tuple(self.channels),
                                        dense=(int(self.width_),) * int(self.depth),
                                        seed=int(seeds[0]))
            except ValueError as err:
                raise InputError(
                    f"images of shape {tuple(self.image_shape_)} and channels="
                    f"{tuple(self.channels)} ({len(self.channels)} stages, each after the "
                    f"first halving H and W): {err}; give fewer stages, e.g. channels="
                    f"{tuple(self.channels[:-1]) or (8,)}") from None
        return make_mlp(self.n_features_in_, int(self.width_), int(self.depth),
                        self.activation, n_models=n_models, seeds=seeds)

    def _distance_supervision(self, data: Sequence[torch.Tensor], domain, margins: Sequence[float],
                              seeds: Sequence[int]):
        """The ``extra_loss`` of :func:`train` for ``distance_weight > 0`` (one pool per model,
        from its own rows and seed; :class:`~ocsdf.core.distill.DistanceSupervision`), else
        None."""
        if not float(self.distance_weight_) > 0:
            return None
        from .core.distill import DistanceSupervision

        return DistanceSupervision(
            list(data), domain, margins, seeds, weight=float(self.distance_weight_),
            k=int(self.distance_k), pool_size=int(self.distance_pool),
            batch_size=int(self.batch_size_), radius=float(self.distance_radius),
            loss=str(self.distance_loss),
            image_shape=self.image_shape_ if self._is_image() else None,
            max_shift=int(self.distance_shift_))

    def _transformed_negatives(self, data: Sequence[torch.Tensor], margins: Sequence[float],
                               seeds: Sequence[int]):
        """The ``extra_loss`` of :func:`train` for ``negative_transforms`` other than "none"
        (:class:`~ocsdf.core.augment.TransformedNegatives`), else None."""
        if self.negative_transforms_ == "none":
            return None
        return TransformedNegatives(
            list(data), margins, seeds, image_shape=self.image_shape_,
            transforms=transforms_for(self.negative_transforms_, self.image_shape_),
            weight=float(self.negative_weight), lam=float(self.lam),
            batch_size=max(1, int(self.batch_size_) // 2))

    def _set_scorer(self, scorer: Scorer) -> None:
        """Make ``scorer`` the fitted model (``mean_`` and ``scale_`` are its standardisation;
        ``net_`` and ``lipschitz_`` read it)."""
        self.scorer_ = scorer
        self.mean_, self.scale_ = scorer.mean, scorer.scale
        dom = scorer.domain
        self.domain_rows_ = (dom.centres if isinstance(dom, WithBalls)
                             else np.empty((0, scorer.n_features)))

    @property
    def net_(self) -> torch.nn.Sequential:
        """The exported network ``scorer_.net`` (AttributeError before fitting)."""
        return self.scorer_.net

    @property
    def lipschitz_(self) -> float:
        """``scorer_.lipschitz`` (AttributeError before fitting)."""
        return self.scorer_.lipschitz

    # ------------------------------------------------------------------ scoring
    def score_samples(self, X) -> np.ndarray:
        """Normality score ``f``: > 0 inside, < 0 outside, ~ signed distance (standardised units).

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features), raw units.

        Returns
        -------
        ndarray, shape (n_samples,)
            ``min(f(z), sdf_B(z))`` with ``z`` the standardised rows and ``sdf_B`` the signed
            distance to the boundary of B (see Notes). Higher = more normal.
        """
        check_is_fitted(self, "net_")
        return self._score_array(_check_X(self, X, reset=False))

    def _score_array(self, X: np.ndarray) -> np.ndarray:
        """``score_samples`` on an already validated float64 array, in batches."""
        return self.scorer_.score(X)

    def score_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable ``score_samples`` on a float64 tensor of raw rows, shape (n, d) → (n,).

        No input validation; for attacks and explanations that need ``grad_x f``.
        """
        return self.scorer_.score_tensor(x)

    def decision_function(self, X) -> np.ndarray:
        """``score_samples(X) - offset_``: > 0 for inliers, < 0 for outliers. Shape (n_samples,)."""
        return self.score_samples(X) - self.offset_

    def predict(self, X, alpha: float | None = None) -> np.ndarray:
        """+1 for inliers, -1 for outliers. Shape (n_samples,).

        Without ``alpha``: -1 where ``decision_function < 0``. With ``alpha`` (needs a
        calibration split): -1 where the conformal p-value is ``<= alpha``, which flags a new
        normal row with probability at most ``alpha``.
        """
        if alpha is None:
            return np.where(self.decision_function(X) >= 0, 1, -1)
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        return np.where(self.predict_pvalue(X) > alpha, 1, -1)

    def predict_pvalue(self, X) -> np.ndarray:
        """Split-conformal p-value of each row, shape (n_samples,), in (0, 1].

        ``(1 + #{calibration scores <= s(x)}) / (n_calibration + 1)``: small = anomalous. For a
        new row exchangeable with the normal training rows, ``P(p <= a) <= a`` for every ``a``
        whatever the model (a marginal guarantee, over the draw of the calibration set and the
        row; it does not hold under drift or for rows that are not exchangeable with them).
        """
        return conformal_pvalues(self._require_calibration(), self.score_samples(X))

    def certified_pvalue_interval(self, X, eps, space: str = "raw"
                                  ) -> tuple[np.ndarray, np.ndarray]:
        """Range of each row's p-value under any l2 perturbation of norm ``<= eps``.

        Returns ``(low, high)``, each shape (n_samples,): the p-values of ``f(x) - L eps`` and
        ``f(x) + L eps`` with ``L`` the sound bound in ``space`` ("raw" or "standardized").
        Since the p-value is non-decreasing in the score, no such perturbation moves it outside.
        """
        from .certify import lipschitz_in

        cal = self._require_calibration()
        s = self.score_samples(X)
        shift = lipschitz_in(self, space) * float(eps)
        return conformal_pvalues(cal, s - shift), conformal_pvalues(cal, s + shift)

    def _require_calibration(self) -> np.ndarray:
        check_is_fitted(self, "net_")
        if not hasattr(self, "calibration_scores_"):
            raise ValueError(
                "p-values need a calibration split: fit with fpr=... or calibration_size=..."
            )
        return self.calibration_scores_

    def explain(self, X, top: int = 5, max_features: int | None = None, max_steps: int = 50,
                *, threshold: float | None = None):
        """Counterfactual explanation of each row: the nearest point this model calls normal.

        For each row with ``score_samples(x) < offset_``, walks along the score's gradient (in
        standardised units, projected on the domain B) to ``f >= offset_`` and returns the point
        ``x*`` reached, ``delta = x* - x`` in raw units and the features ranked by their
        standardised change. ``max_features=k`` moves at most ``k`` features per row. See
        :func:`ocsdf.explain.explain` for the algorithm and its guarantees.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features), raw units (validated like
            ``score_samples``; zero rows give an empty result).
        top : int, default 5
            Ranked features per row.
        max_features : int or None, default None
        max_steps : int, default 50
        threshold : float or None, keyword-only
            Score level to reach (standardised units); None: ``offset_``. A higher level (e.g.
            the median training score) walks to the typical region rather than the boundary:
            in ``docs/results/explain.md`` ("ocsdf-deep") that named the cause of
            correlation-breaking anomalies first more often than SHAP on IsolationForest.

        Returns
        -------
        ocsdf.explain.Explanation
            ``x``, ``x_star``, ``delta`` (n, d) raw units; ``score``, ``score_star``,
            ``distance``, ``gap`` (n,) standardised units; ``flagged``, ``reached`` (n,);
            ``top`` (n, k) feature indices; ``to_frame()`` for a table.
        """
        from .explain import check_explain_options, explain_rows

        check_is_fitted(self, "scorer_")
        top, max_features, max_steps = check_explain_options(top, max_features, max_steps)
        X = self._validate_rows(X)
        names = getattr(self, "feature_names_in_", None)
        return explain_rows(
            self.scorer_, X, self.offset_ if threshold is None else threshold,
            [str(c) for c in names] if names is not None else None, self.margin_,
            top=top, max_features=max_features, max_steps=max_steps)

    def _validate_rows(self, X) -> np.ndarray:
        """``X`` validated exactly as :meth:`score_samples` does, except that zero rows are
        allowed (``(0, d)``)."""
        shape = getattr(X, "shape", None)
        if shape is None:
            try:
                shape = np.shape(X)
            except ValueError:  # ragged lists: let the validation below name it
                shape = None
        if shape is not None and len(shape) == 2 and shape[0] == 0:
            return validate_data(self, X, reset=False, dtype=np.float64, ensure_min_samples=0)
        return _check_X(self, X, reset=False)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the fitted model to directory ``path`` (safetensors weights + JSON config).

        The directory is written next to its final place and renamed into it, so a failure
        leaves nothing half-written. An existing model directory at ``path`` is replaced.
        """
        from .persistence import save_model

        check_is_fitted(self, "scorer_")
        return save_model(self, path)

    def to_onnx(self, path: str | Path, opset: int = 17, dtype: str = "float32") -> Path:
        """Write ``score_samples`` as an ONNX graph on raw rows (outputs ``score`` and a
        ``rounding`` bound; metadata: threshold, Lipschitz bounds, feature names); needs
        ``ocsdf[deploy]``. See :func:`ocsdf.deploy.to_onnx`."""
        from .deploy import to_onnx

        return to_onnx(self, path, opset=opset, dtype=dtype)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> OCSDF:
        """Load a model written by :meth:`save` onto ``device`` ("cpu" or "cuda").

        Never unpickles; raises :class:`ModelFileError` with a one-line message naming the
        missing, truncated or foreign file. Saved weights are device-independent: a model
        trained on a GPU loads and scores on a CPU (and the other way round).
        """
        from .persistence import read_model

        params, fitted, scorer = read_model(path, device=device)
        for key in ("channels", "image_shape"):  # JSON stores the tuples as lists
            if isinstance(params.get(key), list):
                params[key] = tuple(params[key])
        try:
            model = cls(**{**params, "device": device})
        except TypeError as err:
            raise ModelFileError(f"{path} has parameters this ocsdf does not know: {err}") \
                from None
        model.offset_ = fitted["offset"]
        model.margin_ = fitted["margin"]
        model.n_features_in_ = fitted["n_features_in"]
        model.image_shape_ = fitted.get("image_shape")
        model._resolve_auto()  # what "auto" meant at fit: rows or images, as now
        for key, attr in (("fit_time_s", "fit_time_"), ("calibration_scores",
                          "calibration_scores_"), ("feature_names_in", "feature_names_in_")):
            if fitted.get(key) is not None:
                setattr(model, attr, fitted[key])
        model._set_scorer(scorer)
        return model


def auto_calibration_size(fpr: float, n_rows: int) -> float:
    """Share of ``n_rows`` training rows to hold out for a conformal threshold at ``fpr``.

    ``clip(10 / (fpr * n_rows), 0.2, 0.5)``: at least 20 %; up to half the rows so that the
    calibration set holds ``10 / fpr`` rows (then the conformal rule's order statistic is
    ``k = floor(fpr (n_cal + 1)) >= 10``, and the rule is conservative by at most a tenth of
    ``fpr``; with fewer rows, e.g. ``k = 1``, the threshold is much lower than needed).
    """
    return float(min(0.5, max(0.2, 10.0 / (float(fpr) * max(int(n_rows), 1)))))


def conformal_pvalues(calibration_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Split-conformal p-values ``(1 + #{c <= s}) / (n + 1)`` for sorted calibration scores
    ``c`` (shape (n,)) and scores ``s`` (higher = more normal); shape of ``scores``."""
    cal = np.asarray(calibration_scores)
    counts = np.searchsorted(cal, np.asarray(scores), side="right")
    return (1.0 + counts) / (len(cal) + 1.0)


def conformal_threshold(calibration_scores: np.ndarray, fpr: float) -> float:
    """Offset ``t`` such that flagging ``score < t`` has false-positive rate ``<= fpr``.

    With sorted calibration scores ``c_1 <= ... <= c_n`` and ``k = floor(fpr (n + 1))``,
    ``t = c_k`` (``-inf`` if ``k = 0``): a new exchangeable normal row falls below ``c_k`` with
    probability at most ``k / (n + 1) <= fpr``.
    """
    cal = np.asarray(calibration_scores)
    k = int(np.floor(fpr * (len(cal) + 1) + 1e-9))
    return float(cal[k - 1]) if k >= 1 else float("-inf")


def _fit_estimators(ests: Sequence[OCSDF], X_list: Sequence, progress: bool, desc: str) -> None:
    """Fit the estimators ``ests[i]`` on ``X_list[i]`` with one training run of ``M`` stacked
    models (the single training path: ``OCSDF.fit`` is ``M = 1``).

    Each estimator prepares its own data as a separate fit would (seed, calibration split,
    standardisation, margin), its network starts from its own seed, and its negatives and
    batches come from its own generator; all share the device, thread count and architecture
    of ``ests[0]``.
    """
    start = time.perf_counter()
    first = ests[0]
    device = torch_device(first.device)
    z_by_key: dict[int, torch.Tensor] = {}
    data: list[torch.Tensor] = []
    prepared = []
    for est, X in zip(ests, X_list):
        seed, X_tr, X_cal, z = est._prepare_fit(X)
        if est.n_features_in_ != first.n_features_in_ or est._is_image() != first._is_image():
            raise InputError(f"every data set needs {first.n_features_in_} features, got "
                             f"{est.n_features_in_}")
        # The same input object without a calibration split gives the same z: store it once.
        key = id(X) if X_cal is None else -(len(data) + 1)
        if key not in z_by_key:
            z_by_key[key] = torch.as_tensor(z, dtype=torch.float32, device=device)
        data.append(z_by_key[key])
        prepared.append((seed, X_tr, X_cal))
    seeds = [p[0] for p in prepared]
    for est in ests:
        est.n_trimmed_ = 0
    config = first._train_config(seeds[0])  # margin and seed are per model below
    domain = first._domain()

    def train_all(data: list[torch.Tensor], what: str) -> tuple[list[Scorer], list]:
        net = first._make_network(len(ests), seeds).to(device)
        margins = [e.margin_ for e in ests]
        with torch_threads(first.n_threads):
            extra = sum_losses(first._distance_supervision(data, domain, margins, seeds),
                               first._transformed_negatives(data, margins, seeds))
            histories = train(net, data, domain, config, margins=margins,
                              seeds=seeds, progress=progress, desc=desc + what,
                              extra_loss=extra)
        scorers = [est._scorer(plain) for est, plain in zip(ests, net.export_all(torch.float64))]
        return scorers, histories

    scorers, histories = train_all(data, "")
    if first.trim > 0:  # refit on the rows the first fit scores highest
        trimmed = [est._trim_rows(sc, X_tr, seed)
                   for est, sc, seed, (_, X_tr, _) in zip(ests, scorers, seeds, prepared)]
        for est, (X_kept, _), (_, X_tr, _) in zip(ests, trimmed, prepared):
            est.n_trimmed_ = len(X_tr) - len(X_kept)
        prepared = [(seed, X_kept, X_cal)
                    for (X_kept, _), (seed, _, X_cal) in zip(trimmed, prepared)]
        scorers, histories = train_all(
            [torch.as_tensor(z, dtype=torch.float32, device=device) for _, z in trimmed],
            " (after trim)")
    for est, sc, hist, (_, X_tr, X_cal) in zip(ests, scorers, histories, prepared):
        est._finish_fit(sc, hist, X_tr, X_cal)
    per_model = (time.perf_counter() - start) / len(ests)  # the run's share per model
    for est in ests:
        est.fit_time_ = per_model


def fit_many(
    X_list: Sequence,
    margins: Sequence[float | str],
    seeds: Sequence,
    progress: bool = False,
    desc: str = "ocsdf fit_many",
    **ocsdf_params,
) -> list[OCSDF]:
    """Fit ``M`` :class:`OCSDF` estimators in one training run of ``M`` stacked networks.

    Estimator ``i`` is ``OCSDF(margin=margins[i], random_state=seeds[i], **ocsdf_params)``
    fitted on ``X_list[i]``, through the same code path as :meth:`OCSDF.fit` (which is
    ``M = 1``): the same preparation, initial weights and random draws per model, so over a
    short run the same model up to float rounding of batched kernels, and over a long one a
    draw from the same distribution. Small networks are launch-bound, so ``M`` models cost
    about as much per step as one (1.7-2x model-steps/s at M = 4-20 on one thread).

    Parameters
    ----------
    X_list : sequence of ``M`` array-likes, each (n_i, n_features), raw units
        Same number of features for all. Pass the same object several times to share one set
        (stored once during training).
    margins : sequence of ``M`` (float or "auto")
    seeds : sequence of ``M`` random_state values (int or None)
    progress : bool
        tqdm bar over the training steps (also on with ``verbose=True``).
    **ocsdf_params
        Any other :class:`OCSDF` parameter (the same for every model).

    Returns
    -------
    list of ``M`` fitted OCSDF; ``fit_time_`` is the run's time divided by ``M``.

    Raises
    ------
    InputError
        Lengths differ, no model, or the data sets have different numbers of features.
    """
    n_models = len(X_list)
    if n_models < 1:
        raise InputError("fit_many needs at least one data set")
    if len(margins) != n_models or len(seeds) != n_models:
        raise InputError(f"X_list, margins and seeds need the same length, got {n_models}, "
                         f"{len(margins)} and {len(seeds)}")
    for bad in ("margin", "random_state"):
        if bad in ocsdf_params:
            raise InputError(f"pass {bad} through margins/seeds, not as a keyword")
    ests = [OCSDF(margin=m, random_state=s, **ocsdf_params) for m, s in zip(margins, seeds)]
    _fit_estimators(ests, X_list, progress=progress or bool(ests[0].verbose), desc=desc)
    return ests
