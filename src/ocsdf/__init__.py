"""ocsdf: certifiably robust one-class classification with signed distance functions.

Learns the signed distance to the support of normal data with a 1-Lipschitz network (OCSDF,
Béthune et al., ICML 2023). Public API: :class:`OCSDF`, :func:`hkr_loss`,
:func:`lipschitz_bound`, :func:`export`, :func:`make_mlp`, :func:`newton_raphson_negatives`.
"""

from .errors import InputError, ModelFileError
from .estimator import OCSDF
from .loss import hkr_loss
from .nn import export, lipschitz_bound, make_mlp
from .sampling import newton_raphson_negatives

__all__ = [
    "OCSDF",
    "InputError",
    "ModelFileError",
    "export",
    "hkr_loss",
    "lipschitz_bound",
    "make_mlp",
    "newton_raphson_negatives",
]
__version__ = "0.1.0"
