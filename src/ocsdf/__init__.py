"""ocsdf: certifiably robust one-class classification with signed distance functions.

Learns the signed distance to the support of normal data with a 1-Lipschitz network (OCSDF,
Béthune et al., ICML 2023). Public API: :class:`OCSDF` and :func:`fit_many` (scikit-learn
estimator), :class:`KNNDistance` (the certified nearest-neighbour reference, same API),
:class:`Scorer` (the fitted score every face uses), and from the core
(:mod:`ocsdf.core`): :func:`hkr_loss`, :func:`lipschitz_bound`, :func:`export`,
:func:`make_mlp`, :func:`newton_raphson_negatives`.

The names are loaded on first use (PEP 562), so ``import ocsdf`` and the ``ocsdf`` command
start without importing torch or scikit-learn until they are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__
from .errors import InputError, ModelFileError

if TYPE_CHECKING:
    from .core import Scorer, export, hkr_loss, lipschitz_bound, make_mlp, newton_raphson_negatives
    from .estimator import OCSDF, fit_many
    from .knn import KNNDistance

#: Public name -> the module that defines it.
_LAZY = {
    "OCSDF": "estimator",
    "KNNDistance": "knn",
    "fit_many": "estimator",
    "Scorer": "core",
    "export": "core",
    "hkr_loss": "core",
    "lipschitz_bound": "core",
    "make_mlp": "core",
    "newton_raphson_negatives": "core",
}

__all__ = [
    "OCSDF",
    "InputError",
    "KNNDistance",
    "ModelFileError",
    "Scorer",
    "__version__",
    "export",
    "fit_many",
    "hkr_loss",
    "lipschitz_bound",
    "make_mlp",
    "newton_raphson_negatives",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'ocsdf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
