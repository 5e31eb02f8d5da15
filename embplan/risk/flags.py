"""The risk flag: a code, an ordered severity, a message, its evidence and the values that triggered it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

__all__ = ["Severity", "Flag", "ALL_CODES", "sort_flags", "max_severity"]

# The contract's flag codes (DESIGN.md): more may be added, none may be renamed.
ALL_CODES: tuple[str, ...] = (
    "LUNG_DOSE_LIMIT",
    "LUNG_SHUNT_HIGH",
    "NON_TUMOR_LIVER_DOSE_HIGH",
    "TUMOR_DOSE_LOW",
    "WHOLE_LIVER_TARE",
    "BILIARY_ENTERIC_ANASTOMOSIS",
    "INCOMPETENT_SPHINCTER",
    "DEB_TACE_IN_NET",
    "CARCINOID_CRISIS_RISK",
    "BILIRUBIN_HIGH",
    "TUMOR_BURDEN_HIGH",
    "PORTAL_VEIN_THROMBOSIS",
    "PERFORMANCE_STATUS",
    "LAB_LIMITS",
    "DOXORUBICIN_CUMULATIVE",
    "SEQUENCE_DEVIATION",
    "RESECTION_CANDIDATE",
    "TRANSPLANT_CANDIDATE",
    "PRIOR_RADIOEMBOLIZATION",
    "PROTOCOL_DEVIATION",
    "HEPATIC_RESERVE_LOW",
    # issue 12 (input plausibility): one session's doxorubicin above the highest per-session dose in practice
    "DOXORUBICIN_SESSION_HIGH",
    # tumour board (issue 11): tumours or lesions outside the treated territory
    "UNTREATED_DISEASE",
    # tumour board (issue 11): earlier PRRT or liver EBRT before radioembolization
    "PRIOR_LIVER_RADIATION",
    # issue 13 (dose meaning): the delivered activity departs from the prescription beyond the vial tolerance; the
    # case's lung shunt and the images' differ beyond the discrepancy threshold
    "DELIVERED_ACTIVITY_DEVIATION",
    "LUNG_SHUNT_DISCREPANCY",
    # tumour board (issue 11): earlier TARE dose maps + this plan's over the non-tumour liver limit
    "CUMULATIVE_LIVER_DOSE_HIGH",
    # post-treatment verification (embplan.verify): activity outside the liver and lungs as delivered
    "EXTRAHEPATIC_DEPOSITION",
)

_RANK = {"info": 0, "caution": 1, "warning": 2, "contraindication": 3}


class Severity(StrEnum):
    """Flag severity, totally ordered: ``INFO < CAUTION < WARNING < CONTRAINDICATION``.

    - info: for the record (e.g. a resection or transplant candidate); nothing to change.
    - caution: proceed, with a named precaution (prophylaxis, dose reduction, a check).
    - warning: a serious risk; proceed only with a documented reason or a changed plan.
    - contraindication: do not proceed as requested.

    Members compare with each other and with their string values (``Severity.INFO < "warning"``).
    """

    INFO = "info"
    CAUTION = "caution"
    WARNING = "warning"
    CONTRAINDICATION = "contraindication"

    @property
    def rank(self) -> int:
        """0 (info) .. 3 (contraindication)."""
        return _RANK[self.value]

    @staticmethod
    def _rank_of(other: object) -> int | None:
        if isinstance(other, Severity):
            return other.rank
        if isinstance(other, str):
            if other not in _RANK:  # never fall back to alphabetical str comparison
                raise TypeError(f"cannot compare a Severity with {other!r} (known: {', '.join(_RANK)})")
            return _RANK[other]
        return None

    def __lt__(self, other: object) -> bool:
        r = self._rank_of(other)
        return NotImplemented if r is None else self.rank < r

    def __le__(self, other: object) -> bool:
        r = self._rank_of(other)
        return NotImplemented if r is None else self.rank <= r

    def __gt__(self, other: object) -> bool:
        r = self._rank_of(other)
        return NotImplemented if r is None else self.rank > r

    def __ge__(self, other: object) -> bool:
        r = self._rank_of(other)
        return NotImplemented if r is None else self.rank >= r

    __hash__ = str.__hash__


def _check_json(value: Any, path: str) -> Any:
    """Return ``value`` as plain JSON data (tuples -> lists); reject non-finite floats and foreign objects."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path}: must be a finite number, got {value!r}")
        return value
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, list | tuple):
        return [_check_json(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{path}: keys must be strings, got {k!r}")
            out[k] = _check_json(v, f"{path}.{k}")
        return out
    # numpy scalars and the like: accept what converts to a plain number
    item = getattr(value, "item", None)
    if callable(item):
        return _check_json(item(), path)
    raise ValueError(f"{path}: must be JSON-serialisable (number, string, bool, None, list, dict), got {value!r}")


class Flag(BaseModel):
    """One risk finding.

    ``code`` is one of :data:`ALL_CODES`; ``evidence`` the citation(s); ``context`` the values that triggered the
    flag and the thresholds used (plain JSON data).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    code: str
    severity: Severity
    message: str
    evidence: str
    context: dict[str, Any] = {}

    @field_validator("code")
    @classmethod
    def _known_code(cls, v: str) -> str:
        if v not in ALL_CODES:
            raise ValueError(f"unknown flag code {v!r} (known: {', '.join(ALL_CODES)})")
        return v

    @field_validator("message", "evidence")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @field_validator("context", mode="before")
    @classmethod
    def _json_context(cls, v: Any) -> Any:
        if not isinstance(v, Mapping):
            raise ValueError(f"must be a mapping, got {type(v).__name__}")
        return _check_json(v, "context")

    def sort_key(self) -> tuple[int, str]:
        """Severity descending, then code."""
        return (-self.severity.rank, self.code)


def sort_flags(flags: Iterable[Flag]) -> list[Flag]:
    """Flags sorted by severity (most severe first), then code."""
    return sorted(flags, key=Flag.sort_key)


def max_severity(flags: Iterable[Flag]) -> Severity | None:
    """The highest severity among ``flags`` (None when there are none)."""
    ranks = [f.severity for f in flags]
    return max(ranks, key=lambda s: s.rank) if ranks else None
