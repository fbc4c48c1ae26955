"""OCSDF as a PyOD detector: :class:`OCSDFDetector` (needs ``pip install pyod``).

PyOD's convention is the opposite of scikit-learn's: a **higher** ``decision_function`` means
**more abnormal**, and labels are 0 (inlier) / 1 (outlier). ``OCSDFDetector`` therefore returns
``-OCSDF.score_samples``: the negated learned signed distance, in standardised units. It is
``> 0`` outside the support that OCSDF learned and grows like the distance to it.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils import check_array
from sklearn.utils.validation import check_is_fitted

try:
    from pyod.models.base import BaseDetector
except ModuleNotFoundError as err:  # pragma: no cover - depends on the environment
    if err.name is None or not err.name.startswith("pyod"):
        raise
    raise ModuleNotFoundError(
        "ocsdf.pyod needs PyOD: pip install pyod", name="pyod") from err

from .estimator import OCSDF

__all__ = ["OCSDFDetector"]

_FITTED = ["decision_scores_", "threshold_", "labels_"]


class OCSDFDetector(BaseDetector):
    """One-class signed distance function (OCSDF, ICML 2023) with PyOD's interface.

    Wraps :class:`ocsdf.OCSDF` (built as ``detector_`` in :meth:`fit`): a 1-Lipschitz network
    trained with the HKR loss against negatives drawn from the complement of the data, whose
    output approximates the signed distance to the support of the training rows.

    **Sign convention (PyOD's).** ``decision_function(X) = -OCSDF.score_samples(X)``: higher is
    more abnormal; ``> 0`` outside the learned support, about the distance to it (standardised
    units); a row moved by ``eps`` (l2, standardised units) changes its score by at most
    ``lipschitz_ * eps``. ``threshold_`` is the ``1 - contamination`` quantile of
    ``decision_scores_`` (PyOD's rule), ``predict`` gives 1 for outliers and 0 for inliers, and
    ``predict_proba`` rescales the scores linearly to [0, 1] (from :class:`BaseDetector`).

    **Thresholds.** PyOD's rule is a quantile of the *training* scores, which the network has
    fitted: held-out normal rows score lower, so the share of them flagged is not
    ``contamination`` (and the data must contain that share of outliers for the rule to mean
    anything; ``docs/results/thresholds.md``, rows "OCSDF train-quantile": above the 99 %
    binomial interval of the target in 8 of 30 runs at 0.01). With ``fpr=t``, the wrapped
    estimator holds out 20-50 % of the rows (``OCSDF``'s ``calibration_size="auto"``), and
    ``threshold_`` is set by split-conformal
    calibration on them so that a new normal row is flagged with probability at most ``t``
    (exchangeable data; see ``ocsdf.OCSDF``);
    ``predict_pvalue`` then gives conformal p-values.

    Parameters
    ----------
    contamination : float in (0, 0.5], default 0.1
        Expected share of outliers; sets ``threshold_`` (PyOD's default 0.1) unless ``fpr`` is
        given. It does not change the training of the network.
    fpr : float in (0, 1), optional
        Target false-positive rate: ``threshold_`` from a held-out calibration split (20-50 %
        of the rows, which then do not train the network) instead of ``contamination``.
    width, depth, activation, margin, lam, n_steps, warmup_steps, batch_size, n_newton_steps, \
learning_rate, lr_schedule, bias_lr_factor, domain, domain_size, standardize, random_state, \
device, n_threads, verbose, trim, image_shape, network, channels, distance_weight, \
distance_k, distance_pool, distance_radius, distance_loss, distance_shift, \
negative_transforms, negative_weight, negative_spread
        Passed unchanged to :class:`ocsdf.OCSDF` (same defaults; ``margin="auto"`` is the
        label-free rule: 0.05 x the median nearest-neighbour distance in standardised units).
        ``trim`` (e.g. 0.1) refits without the lowest-scoring fraction of the training rows,
        for training data that holds anomalies (PyOD's usual setting); see
        ``docs/results/tabular_trim/tabular_ad.md``. ``image_shape=(C, H, W)`` makes the rows
        flattened images (pixels in [0, 1], the pixel box; ``network="conv"`` for a
        convolutional network). ``distance_weight > 0`` adds distance supervision
        (regression of the score towards ``margin_ - d_k`` off the data; see ``ocsdf.OCSDF``).
        OCSDF's ``contamination`` and ``calibration_size`` are not exposed: PyOD's
        ``contamination`` rule (or ``fpr``) sets ``threshold_``.

    Attributes
    ----------
    detector_ : ocsdf.OCSDF
        The fitted estimator.
    decision_scores_ : ndarray, shape (n_samples,)
        Outlier scores of the training rows (higher = more abnormal).
    threshold_ : float
    labels_ : ndarray of int, shape (n_samples,)
        0 = inlier, 1 = outlier, for the training rows.
    lipschitz_, margin_ : float
        ``detector_.lipschitz_`` and ``detector_.margin_``.
    n_features_in_ : int
        Number of features seen in ``fit`` (scikit-learn's and PyOD's generic attribute).

    Examples
    --------
    >>> from pyod.utils.data import generate_data
    >>> from ocsdf.pyod import OCSDFDetector
    >>> X_train, X_test, y_train, y_test = generate_data(
    ...     n_train=200, n_test=100, contamination=0.1, random_state=42)
    >>> clf = OCSDFDetector(n_steps=200, width=32, random_state=0).fit(X_train)
    >>> clf.predict(X_test).shape
    (100,)
    """

    def __init__(
        self,
        contamination: float = 0.1,
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
        random_state=None,
        device: str = "cpu",
        n_threads: int | None = 1,
        verbose: bool = False,
        fpr: float | None = None,
        trim: float = 0.0,
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
        # BaseDetector only stores ``contamination`` (and rejects one outside (0, 0.5]).
        super().__init__(contamination=contamination)
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
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads
        self.verbose = verbose
        self.fpr = fpr
        self.trim = trim
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

    def _make_estimator(self) -> OCSDF:
        """The wrapped OCSDF with this detector's hyper-parameters (threshold left to PyOD)."""
        params = {k: v for k, v in self.get_params().items() if k != "contamination"}
        return OCSDF(**params, contamination="auto")  # fpr, when given, calibrates offset_

    def fit(self, X, y=None) -> OCSDFDetector:
        """Fit OCSDF on ``X`` (unlabelled; ``y`` is ignored, as in every PyOD detector).

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self
        """
        c = self.contamination
        if isinstance(c, (float, int)) and not 0.0 < c <= 0.5:
            raise ValueError(f"contamination must be in (0, 0.5], got: {c!r}")
        X = check_array(X, dtype=np.float64)
        self._set_n_classes(y)
        self.detector_ = self._make_estimator().fit(X)
        self.n_features_in_ = int(self.detector_.n_features_in_)
        self.decision_scores_ = -self.detector_.score_samples(X)
        self._process_decision_scores()
        if self.fpr is not None:
            # PyOD flags decision > threshold_, i.e. score < offset_: OCSDF's conformal rule.
            self.threshold_ = -float(self.detector_.offset_)
            self.labels_ = (self.decision_scores_ > self.threshold_).astype(int)
        return self

    def predict_pvalue(self, X) -> np.ndarray:
        """Split-conformal p-values of ``X``, shape (n_samples,), in (0, 1]; small = anomalous.

        Needs ``fpr`` (a calibration split); see :meth:`ocsdf.OCSDF.predict_pvalue`.
        """
        check_is_fitted(self, _FITTED)
        return self.detector_.predict_pvalue(check_array(X, dtype=np.float64))

    def decision_function(self, X) -> np.ndarray:
        """Outlier scores of ``X``: ``-OCSDF.score_samples(X)``, higher = more abnormal.

        Returns
        -------
        ndarray, shape (n_samples,)
            About the distance to the learned support (standardised units) for rows outside it,
            minus the distance to its boundary for rows inside.
        """
        check_is_fitted(self, _FITTED)
        X = check_array(X, dtype=np.float64)
        return -self.detector_.score_samples(X)

    def explain(self, X, top: int = 5, max_features: int | None = None, max_steps: int = 50):
        """Counterfactual explanation of each row: the nearest point the detector calls normal.

        Delegates to :func:`ocsdf.explain.explain` on ``detector_`` with PyOD's threshold: a
        row is explained when ``decision_function(x) > threshold_`` (``predict`` = 1), and the
        walk goes to ``OCSDF`` score ``-threshold_``. ``x``, ``x_star``, ``delta`` (n, d) are in
        raw units; ``score``, ``score_star``, ``threshold``, ``distance``, ``gap`` (n,) use
        OCSDF's convention (high = normal, standardised units), not PyOD's.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
        top : int, default 5
        max_features : int or None, default None
            At most this many features move per row.
        max_steps : int, default 50

        Returns
        -------
        ocsdf.explain.Explanation
        """
        from .explain import explain

        check_is_fitted(self, _FITTED)
        return explain(self.detector_, X, top=top, max_features=max_features,
                       max_steps=max_steps, threshold=-float(self.threshold_))

    @property
    def lipschitz_(self) -> float:
        """Sound l2 Lipschitz bound of the score in standardised units (``detector_``'s)."""
        check_is_fitted(self, "detector_")
        return self.detector_.lipschitz_

    @property
    def margin_(self) -> float:
        """The HKR margin used (standardised units)."""
        check_is_fitted(self, "detector_")
        return self.detector_.margin_
