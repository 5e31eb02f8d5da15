"""The errors embplan raises.

Every error the library raises on bad input or a bad file is an :class:`EmbplanError`. Messages name the field
path (or file) and the reason, e.g. ``patient.labs.bilirubin_mg_dl: must be >= 0, got -1``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EmbplanError", "CaseError", "PlanFileError", "ImagingError", "DosimetryError"]


class EmbplanError(Exception):
    """Base class of every error embplan raises on bad input or a bad file."""


class CaseError(EmbplanError, ValueError):
    """A case (file or dict) is invalid: the message names the field path and the reason."""

    # set (one record per problem: loc, path, msg, ...) on the errors of a validated case; see protocols.base.case_error
    errors: list[dict[str, Any]]


class PlanFileError(EmbplanError, OSError):
    """A plan file is missing, foreign, truncated, corrupted or of an unsupported version."""


class ImagingError(EmbplanError, ValueError):
    """An image, mask or DICOM input is unreadable, inconsistent or implausible."""


class DosimetryError(EmbplanError, ValueError):
    """Bad input to a dosimetry function (NaN or negative activity, shape mismatch, bad spacing, ...)."""
