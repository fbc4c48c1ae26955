"""Exceptions with one-line messages that name the problem (the CLI prints them as they are)."""

from __future__ import annotations

__all__ = ["DomainWarning", "InputError", "ModelFileError"]


class InputError(ValueError):
    """Bad input data: wrong shape, NaN/inf, non-numeric, empty, mismatched features, bad file."""


class ModelFileError(ValueError):
    """A saved model that is missing, truncated, foreign or of an unknown format version."""


class DomainWarning(UserWarning):
    """Training rows lie outside the domain B, so the fitted model scores them as anomalies."""
