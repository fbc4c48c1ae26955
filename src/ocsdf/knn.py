"""``KNNDistance``: a certified nearest-neighbour reference for :class:`~ocsdf.OCSDF`.

The l2 distance ``d_k(z)`` from a point ``z`` to its k-th nearest training row is 1-Lipschitz
(each ``||z - t_i||`` is, and the k-th smallest of 1-Lipschitz functions is 1-Lipschitz), with
no training at all. Scored in OCSDF's input space, with OCSDF's domain rule, it carries the same
certificates: ``score(z) = min(-d_k(z), sdf_B(z))`` is 1-Lipschitz in standardised units, so
:mod:`ocsdf.certify` applies unchanged. It is the baseline a learned signed distance has to beat:
OCSDF's network approximates a signed distance to the support, this is an exact (unsigned)
distance to the training rows.

Units and signs are OCSDF's: raw rows ``x`` are standardised to ``z = (x - mean) / scale``
(:class:`~ocsdf.core.domain.Standardizer`), scores are in standardised units and higher means
more normal. Unlike OCSDF's score, which is > 0 inside the learned normal region, this score is
``<= 0`` everywhere (0 exactly on a training row when ``n_neighbors=1``), so the threshold
``offset_`` is a quantile of leave-one-out training scores rather than 0.
"""

from __future__ import annotations

import time
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.neighbors import NearestNeighbors
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from .certify import CertificatesMixin
from .core.domain import Domain, Standardizer, make_domain
from .core.scorer import batched
from .errors import DomainWarning, InputError
from .estimator import _check_X, _outside_message

__all__ = ["AUTO_CONTAMINATION", "KNNDistance", "KNNScorer"]

#: Quantile level of the leave-one-out training scores that ``contamination="auto"`` uses.
AUTO_CONTAMINATION = 0.01

#: Extra neighbour candidates fetched beyond the k-th; their distances are recomputed exactly.
_EXTRA_CANDIDATES = 4

#: Largest number of float64 entries of one ``(rows, candidates, features)`` block when scoring.
_BLOCK_ENTRIES = 2**22


class KNNScorer:
    """Fitted score ``x -> min(-d_k((x - mean) / scale), sdf_B)`` with its l2 bound.

    The same interface as :class:`~ocsdf.Scorer` where :mod:`ocsdf.certify` and the estimators
    use it (``lipschitz``, ``lipschitz_in``, ``standardize``, ``unstandardize``, ``score``,
    ``score_tensor``, ``score_z_tensor``, ``n_features``, ``device``, ``mean``, ``scale``,
    ``domain``, ``clip_to_domain``).

    Parameters
    ----------
    train_z : ndarray, shape (n_train, d)
        Training rows, standardised units.
    n_neighbors : int
        ``k``, at most ``n_train``.
    mean, scale : ndarray, shape (d,)
        Standardisation, raw units (``scale > 0``).
    domain : Box or Ball
        Domain B, standardised units.
    clip_to_domain : bool
        Score ``min(-d_k, sdf_B)`` (box and ball) or ``-d_k`` alone (pixel box).
    algorithm : {"auto", "ball_tree", "kd_tree", "brute"}
        Search structure of scikit-learn's ``NearestNeighbors``.
    n_jobs : int or None
        Parallel jobs of the search (scikit-learn's meaning).

    Notes
    -----
    The search only picks candidates: the ``k + 4`` nearest rows by scikit-learn's search (its
    brute-force path computes distances as ``|a|^2 - 2 a.b + |b|^2``, which loses precision near
    0), whose distances are then recomputed as ``||z - t||`` from the difference, in float64, and
    the k-th smallest kept. The result is the exact k-th distance unless more than 4 rows tie with
    the k-th one to within the search's rounding; the same computation in torch gives the
    gradient (``score_tensor``), with the candidate indices held fixed (a subgradient where the
    k-th neighbour changes).
    """

    #: Sound l2 Lipschitz bound in standardised units: 1 (see the module docstring).
    lipschitz: float = 1.0

    def __init__(self, train_z: np.ndarray, n_neighbors: int, mean: np.ndarray,
                 scale: np.ndarray, domain: Domain, clip_to_domain: bool = True,
                 algorithm: str = "auto", n_jobs: int | None = None) -> None:
        self.train_z = np.ascontiguousarray(train_z, dtype=np.float64)
        self.mean = np.ascontiguousarray(mean, dtype=np.float64)
        self.scale = np.ascontiguousarray(scale, dtype=np.float64)
        if self.train_z.ndim != 2 or self.mean.shape != (self.train_z.shape[1],) \
                or self.scale.shape != self.mean.shape:
            raise ValueError(f"train_z (n, d), mean (d,) and scale (d,) do not match: "
                             f"{self.train_z.shape}, {self.mean.shape}, {self.scale.shape}")
        self.n_neighbors = int(n_neighbors)
        if not 1 <= self.n_neighbors <= len(self.train_z):
            raise ValueError(f"n_neighbors must be in [1, {len(self.train_z)}], got "
                             f"{self.n_neighbors}")
        self.domain = domain
        self.clip_to_domain = bool(clip_to_domain)
        self.n_candidates = min(len(self.train_z), self.n_neighbors + _EXTRA_CANDIDATES)
        self.index = NearestNeighbors(algorithm=algorithm, n_jobs=n_jobs).fit(self.train_z)
        self._train_t = torch.as_tensor(self.train_z)
        self._mean_t = torch.as_tensor(self.mean)
        self._scale_t = torch.as_tensor(self.scale)

    # ------------------------------------------------------------------ facts
    @property
    def device(self) -> torch.device:
        """Always the CPU (the search runs in scikit-learn)."""
        return torch.device("cpu")

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of the training rows the score keeps (float64; the search index adds more)."""
        return int(self.train_z.nbytes)

    def lipschitz_in(self, space: str = "raw") -> float:
        """Sound l2 bound of the score in ``space``: "standardized" (1) or "raw"
        (``1 / min(scale)``, since ``||diag(1/scale) g|| <= ||g|| / min(scale)``)."""
        net, dom = self.term_lipschitz(space)
        return float(net if dom is None else max(net, dom))

    def term_lipschitz(self, space: str = "raw") -> tuple[float, float | None]:
        """Bounds ``(L_f, L_B)`` of the two terms of ``min(-d_k, sdf_B)`` in ``space`` (as
        :meth:`ocsdf.Scorer.term_lipschitz`): both 1 in standardised units and
        ``1 / min(scale)`` in raw units (exact: a move along the feature of smallest scale);
        ``L_B`` is None without the domain clip."""
        if space == "standardized":
            one = float(self.lipschitz)
        elif space == "raw":
            one = float(self.lipschitz / np.min(self.scale))
        else:
            raise ValueError(f"space must be 'raw' or 'standardized', got {space!r}")
        return one, (one if self.clip_to_domain else None)

    # ------------------------------------------------------------------ scoring
    def standardize(self, X: np.ndarray) -> np.ndarray:
        """Raw ``(n, d)`` -> standardised ``(n, d)``."""
        return (X - self.mean) / self.scale

    def unstandardize(self, Z: np.ndarray) -> np.ndarray:
        """Standardised ``(n, d)`` -> raw ``(n, d)``."""
        return Z * self.scale + self.mean

    def kth_distance_tensor(self, z: torch.Tensor, leave_one_out: bool = False
                            ) -> torch.Tensor:
        """Differentiable l2 distance from each standardised row of ``z`` (float64, (n, d)) to
        its k-th nearest training row, shape (n,), standardised units.

        ``leave_one_out``: ``z`` must be the training rows themselves, in order, and each row's
        own index is left out of its candidates (a duplicate of it still counts, at distance 0).
        """
        z = z.to(self.device, torch.float64)
        if len(z) == 0:
            return z.new_zeros(0)
        zc = z.detach().numpy()
        if leave_one_out:
            m = min(self.n_candidates, len(self.train_z) - 1)
            idx = self.index.kneighbors(None, n_neighbors=m, return_distance=False)
        else:
            idx = self.index.kneighbors(zc, n_neighbors=self.n_candidates,
                                        return_distance=False)
        cand = self._train_t[torch.as_tensor(idx)]  # (n, m, d)
        dist = torch.linalg.vector_norm(z[:, None, :] - cand, dim=-1)  # (n, m)
        return dist.kthvalue(self.n_neighbors, dim=1).values

    def score_z_tensor(self, z: torch.Tensor) -> torch.Tensor:
        """Differentiable score of standardised rows ``(n, d)`` -> ``(n,)`` (float64, <= 0 with
        the domain clip)."""
        z = z.to(self.device, torch.float64)
        s = -self.kth_distance_tensor(z)
        if self.clip_to_domain:
            s = torch.minimum(s, self.domain.signed_distance(z))
        return s

    def terms_z_tensor(self, z: torch.Tensor) -> torch.Tensor:
        """``(n, 2)``: ``-d_k(z)`` and ``sdf_B(z)`` (``+inf`` without the domain clip); the
        score is their row minimum."""
        z = z.to(self.device, torch.float64)
        dom = (self.domain.signed_distance(z) if self.clip_to_domain
               else torch.full((len(z),), torch.inf, dtype=z.dtype))
        return torch.stack((-self.kth_distance_tensor(z), dom), dim=1)

    def score_terms(self, X: np.ndarray, standardized: bool = False) -> np.ndarray:
        """``(n, 2)`` terms (:meth:`terms_z_tensor`) of a float64 array of rows, raw units
        unless ``standardized``; their row minimum is :meth:`score`."""
        Z = np.asarray(X, dtype=np.float64)
        Z = Z if standardized else self.standardize(Z)
        return batched(self.terms_z_tensor, Z, self._block_rows(), self.device, width=2)

    def score_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable score of raw rows ``(n, d)`` -> ``(n,)`` (float64); no validation.
        The result is on the CPU."""
        z = (x.to(self.device, torch.float64) - self._mean_t) / self._scale_t
        return self.score_z_tensor(z)

    def score(self, X: np.ndarray, standardized: bool = False) -> np.ndarray:
        """Scores of a float64 array of rows ``(n, d)`` -> ``(n,)``, raw units unless
        ``standardized``, in blocks. No validation."""
        fn = self.score_z_tensor if standardized else self.score_tensor
        return batched(fn, np.asarray(X, dtype=np.float64), self._block_rows(), self.device)

    def _block_rows(self) -> int:
        """Rows scored per block (the candidates' distances take ``rows * k' * d`` floats)."""
        return max(1, _BLOCK_ENTRIES // (self.n_candidates * max(1, self.n_features)))

    def leave_one_out_scores(self) -> np.ndarray:
        """Score of each training row against the *other* training rows, shape (n_train,),
        standardised units: ``min(-d_k^{(-i)}(z_i), sdf_B(z_i))``. Needs ``n_train > k``."""
        if len(self.train_z) <= self.n_neighbors:
            raise ValueError(f"leave-one-out scores need more than n_neighbors="
                             f"{self.n_neighbors} training rows, got {len(self.train_z)}")
        with torch.no_grad():
            z = self._train_t
            s = -self.kth_distance_tensor(z, leave_one_out=True)
            if self.clip_to_domain:
                s = torch.minimum(s, self.domain.signed_distance(z))
        return s.numpy().copy()


class KNNDistance(CertificatesMixin, OutlierMixin, BaseEstimator):
    """Distance to the k-th nearest training row: a certified reference for :class:`OCSDF`.

    ``score_samples(x) = min(-d_k(z), sdf_B(z))`` with ``z`` the standardised row, ``d_k`` the
    l2 distance to the k-th nearest standardised training row and ``sdf_B`` the signed distance
    to the boundary of the domain B (> 0 inside, ``-dist(z, B)`` outside), both standardised
    units. Higher = more normal; the score is ``<= 0`` everywhere with a box or ball domain. It
    is 1-Lipschitz (l2) in standardised units and ``1 / min(scale_)`` in raw units, exactly, so
    ``certified_radius``, ``certified_auroc`` and every function of :mod:`ocsdf.certify` work as
    for OCSDF. Nothing is trained: ``fit`` standardises, builds the search index and sets the
    threshold.

    With ``n_neighbors=1`` a training row is its own nearest neighbour: its score is 0 (or
    ``sdf_B`` when it lies outside B). In general the k-th neighbour of a training row counts the
    row itself, so scores of the training rows are optimistic; the threshold is therefore set on
    leave-one-out scores (each training row scored against the others).

    Parameters
    ----------
    n_neighbors : int, default 1
        ``k``. ``fit`` needs more training rows than ``k``.
    domain : {"box", "ball", "unit"}, default "box"
        Domain B in standardised units, as for OCSDF: ``[-s, s]^d``, the ball of radius ``s``, or
        the pixel box ``[0, 1]^d`` (use with ``standardize=False``; no clip to B then, as OCSDF).
    domain_size : float, default 5.0
        ``s`` above.
    standardize : bool or "cover", default True
        As for OCSDF: True standardises each feature (mean 0, std 1; constant columns centred
        only) with the same :class:`~ocsdf.core.domain.Standardizer`; "cover" then raises the
        scales so every training row lies within 80 % of B; False keeps raw features.
    contamination : "auto" or float in (0, 0.5], default "auto"
        A float ``q``: ``offset_`` is the ``q`` quantile (``np.percentile``) of the leave-one-out
        training scores, so about a fraction ``q`` of new rows exchangeable with the training rows
        is flagged (OCSDF uses in-sample scores here; for a nearest-neighbour score they are 0
        when ``k = 1`` and would flag nothing). "auto": the same with ``q = 0.01``
        (:data:`AUTO_CONTAMINATION`), the counterpart of OCSDF's learned boundary ``f = 0``,
        which holds nearly every normal training row. (OCSDF's "auto" threshold 0 would flag
        every row that is not a training row.)
    algorithm : {"auto", "ball_tree", "kd_tree", "brute"}, default "auto"
        Passed to scikit-learn's ``NearestNeighbors``.
    n_jobs : int or None, default None
        Passed to scikit-learn's ``NearestNeighbors``.

    Attributes
    ----------
    scorer_ : KNNScorer
        The fitted score, with the interface of :class:`~ocsdf.Scorer` that :mod:`ocsdf.certify`
        uses.
    lipschitz_ : float
        1.0, the l2 Lipschitz constant of ``score_samples`` in standardised units (sound and
        attained).
    offset_ : float
        ``decision_function = score_samples - offset_`` (standardised units, ``<= 0``).
    loo_scores_ : ndarray, shape (n_train,)
        Leave-one-out scores of the training rows, in training order (standardised units).
    mean_, scale_ : ndarray, shape (n_features,)
        Standardisation: ``z = (x - mean_) / scale_``.
    n_outside_domain_ : int
        Training rows outside B (scored as anomalies, ``fit`` warns with a
        :class:`~ocsdf.errors.DomainWarning`).
    fit_time_ : float
        Wall-clock seconds ``fit`` took.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame with string column names.

    Examples
    --------
    >>> import numpy as np
    >>> from ocsdf.knn import KNNDistance
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> model = KNNDistance(n_neighbors=3).fit(X)
    >>> model.predict([[0.0, 0.0], [8.0, 8.0]])
    array([ 1, -1])
    """

    #: Allowed types and ranges of each parameter, checked by ``fit`` (scikit-learn's table).
    _parameter_constraints: dict = {
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "domain": [StrOptions({"box", "ball", "unit"})],
        "domain_size": [Interval(Real, 0, None, closed="neither")],
        "standardize": ["boolean", StrOptions({"cover"})],
        "contamination": [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="right")],
        "algorithm": [StrOptions({"auto", "ball_tree", "kd_tree", "brute"})],
        "n_jobs": [Integral, None],
    }

    def __init__(
        self,
        *,
        n_neighbors: int = 1,
        domain: str = "box",
        domain_size: float = 5.0,
        standardize: bool | str = True,
        contamination: float | str = "auto",
        algorithm: str = "auto",
        n_jobs: int | None = None,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.domain = domain
        self.domain_size = domain_size
        self.standardize = standardize
        self.contamination = contamination
        self.algorithm = algorithm
        self.n_jobs = n_jobs

    # ------------------------------------------------------------------ fitting
    def _validate_params(self) -> None:
        """scikit-learn's one-line check of each parameter, then OCSDF's rule tying two."""
        super()._validate_params()
        if self.standardize == "cover" and self.domain == "unit":
            raise ValueError("standardize='cover' needs domain 'box' or 'ball' (the pixel box "
                             "'unit' is used with raw features: standardize=False)")

    def fit(self, X, y=None) -> KNNDistance:
        """Fit on normal data ``X``.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
            Numeric, finite, more than ``n_neighbors`` rows (and at least 2). Raw units;
            standardised internally.
        y : ignored

        Returns
        -------
        self
        """
        start = time.perf_counter()
        self._validate_params()
        X = _check_X(self, X, reset=True)
        k = int(self.n_neighbors)
        if k >= len(X):
            raise InputError(
                f"n_neighbors={k} needs at least {k + 1} training rows (each training row is "
                f"scored against its {k}-th nearest other row to set the threshold), got "
                f"{len(X)}")
        domain = make_domain(self.domain, self.domain_size)
        std = Standardizer.fit(X, enabled=bool(self.standardize))
        if self.standardize == "cover":
            std = std.covering(X, domain)
        self.mean_, self.scale_ = std.mean, std.scale
        z = std.transform(X)
        outside = domain.distance_outside(torch.as_tensor(z)).numpy() > 0
        self.n_outside_domain_ = int(outside.sum())
        if self.n_outside_domain_:
            warnings.warn(_outside_message(self, X, z, outside), DomainWarning, stacklevel=2)
        self.scorer_ = KNNScorer(z, k, self.mean_, self.scale_, domain,
                                 clip_to_domain=self.domain != "unit",
                                 algorithm=self.algorithm, n_jobs=self.n_jobs)
        self.loo_scores_ = self.scorer_.leave_one_out_scores()
        q = AUTO_CONTAMINATION if self.contamination == "auto" else float(self.contamination)
        self.offset_ = float(np.percentile(self.loo_scores_, 100.0 * q))
        self.fit_time_ = time.perf_counter() - start
        return self

    @property
    def lipschitz_(self) -> float:
        """``scorer_.lipschitz`` = 1 (AttributeError before fitting)."""
        return self.scorer_.lipschitz

    # ------------------------------------------------------------------ scoring
    def score_samples(self, X) -> np.ndarray:
        """Normality score ``min(-d_k(z), sdf_B(z))``, standardised units, ``<= 0``.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features), raw units (validated like OCSDF's).

        Returns
        -------
        ndarray, shape (n_samples,)
            Higher = more normal; minus the distance to the k-th nearest training row, capped by
            the signed distance to the boundary of B.
        """
        check_is_fitted(self, "scorer_")
        return self.scorer_.score(_check_X(self, X, reset=False))

    def score_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable ``score_samples`` on a float64 tensor of raw rows, (n, d) -> (n,).

        No input validation; for attacks that need ``grad_x`` of the score.
        """
        return self.scorer_.score_tensor(x)

    def decision_function(self, X) -> np.ndarray:
        """``score_samples(X) - offset_``: >= 0 for inliers, < 0 for outliers. Shape
        (n_samples,)."""
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """+1 for inliers (``decision_function >= 0``), -1 for outliers. Shape (n_samples,)."""
        return np.where(self.decision_function(X) >= 0, 1, -1)
