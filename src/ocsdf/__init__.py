"""ocsdf: certifiably robust one-class classification with signed distance functions.

Learns the signed distance to the support of normal data with a 1-Lipschitz network (OCSDF,
Béthune et al., ICML 2023). Public API: :class:`OCSDF` and :func:`fit_many` (scikit-learn
estimator), :class:`Scorer` (the fitted score every face uses), and from the core
(:mod:`ocsdf.core`): :func:`hkr_loss`, :func:`lipschitz_bound`, :func:`export`,
:func:`make_mlp`, :func:`newton_raphson_negatives`.
"""

from ._version import __version__
from .core import Scorer, export, hkr_loss, lipschitz_bound, make_mlp, newton_raphson_negatives
from .errors import InputError, ModelFileError
from .estimator import OCSDF, fit_many

__all__ = [
    "OCSDF",
    "InputError",
    "Scorer",
    "fit_many",
    "ModelFileError",
    "export",
    "hkr_loss",
    "lipschitz_bound",
    "make_mlp",
    "newton_raphson_negatives",
    "__version__",
]
