"""The OCSDF core: layers, loss, sampler, trainer and the fitted scorer.

Data flows ``Domain`` / ``Standardizer`` (:mod:`.domain`) -> :func:`.training.train`
(HKR loss, :mod:`.loss`; Newton–Raphson negatives, :mod:`.sampling`) -> a 1-Lipschitz network of
``M`` stacked models (:mod:`.nn`) -> :class:`.scorer.Scorer`. Every operation is written once
with a leading model axis (a single fit is ``M = 1``). The core imports torch and NumPy only: no
scikit-learn, pandas, plotting or CLI (a test checks it).
"""

from .domain import Ball, Box, Domain, Standardizer, make_domain
from .loss import hkr_loss
from .nn import LipschitzMLP, export, lipschitz_bound, make_mlp
from .sampling import newton_raphson_negatives
from .scorer import Scorer
from .training import InMemoryPositives, TrainConfig, TrainHistory, train

__all__ = [
    "Ball", "Box", "Domain", "InMemoryPositives", "LipschitzMLP", "Scorer", "Standardizer",
    "TrainConfig", "TrainHistory", "export", "hkr_loss", "lipschitz_bound", "make_domain",
    "make_mlp",
    "newton_raphson_negatives", "train",
]
