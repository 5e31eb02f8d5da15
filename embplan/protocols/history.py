"""Prior treatments: the records of a patient's history that the ladder and the risk rules read.

One flat model, :class:`PriorTreatment`, for every kind; the kind decides which extra fields are allowed:
``doxorubicin_mg`` only on TACE and DEB-TACE records; ``device``, ``activity_gbq``, ``lung_dose_gy`` and
``normal_liver_dose_gy`` (and ``dose_file``, the earlier plan's dose map) only on TARE records; a ``territory``
only on liver-directed treatments (not on SSA, PRRT or chemotherapy, which are systemic). A misplaced field is an
error naming it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import Field, model_validator

from .base import IsoDate, Issue, StrictModel, raise_issues
from .territory import Territory

__all__ = [
    "PriorTreatment",
    "TerritoryResponse",
    "TreatmentKind",
    "Response",
    "EMBOLIZATION_KINDS",
    "CHEMOEMBOLIZATION_KINDS",
    "SYSTEMIC_KINDS",
    "cumulative_doxorubicin_mg",
    "of_kind",
    "chronological",
]

TreatmentKind = Literal[
    "resection", "TAE", "TACE", "DEB_TACE", "TARE", "SSA", "PRRT", "chemotherapy", "ablation", "EBRT",
    "transplant", "other",
]
Response = Literal["complete", "partial", "stable", "progression", "unknown"]

EMBOLIZATION_KINDS: frozenset[str] = frozenset({"TAE", "TACE", "DEB_TACE", "TARE"})
CHEMOEMBOLIZATION_KINDS: frozenset[str] = frozenset({"TACE", "DEB_TACE"})
SYSTEMIC_KINDS: frozenset[str] = frozenset({"SSA", "PRRT", "chemotherapy"})

_TARE_EXTRAS = ("device", "activity_gbq", "lung_dose_gy", "normal_liver_dose_gy", "dose_file")


class TerritoryResponse(StrictModel):
    """The response of one lobe or segment group to a treatment (tumour board, issue 11): a treatment may control
    one lobe while the other progresses."""

    territory: Territory
    response: Response


class PriorTreatment(StrictModel):
    """One earlier treatment. ``date`` is when it was given (ISO date); ``response`` the best response recorded
    for the treated territory (``None``: not recorded)."""

    kind: TreatmentKind
    date: IsoDate
    territory: Territory | None = None
    response: Response | None = None
    note: str | None = Field(default=None, max_length=2000)
    # chemoembolization (TACE / DEB_TACE)
    doxorubicin_mg: float | None = Field(default=None, ge=0, le=1000)
    # radioembolization (TARE)
    device: Literal["resin", "glass"] | None = None
    activity_gbq: float | None = Field(default=None, gt=0, le=30)
    lung_dose_gy: float | None = Field(default=None, ge=0, le=500)
    normal_liver_dose_gy: float | None = Field(default=None, ge=0, le=1000)
    # the earlier session's dose map (tumour board, issue 11): an RT Dose file (``embplan export-dicom``) or an embplan
    # plan file (.h5); a relative path is relative to the case file's folder (Case.resolve_path). Read when this
    # case plans a TARE on DICOM images of the same frame of reference: the voxel maps are summed (docs/board.md).
    dose_file: str | None = Field(default=None, min_length=1, max_length=4096, pattern=r"\S")
    # response per lobe / segments (optional; issue 11)
    responses: list[TerritoryResponse] | None = Field(default=None, min_length=1, max_length=16)

    @model_validator(mode="after")
    def _fields_fit_kind(self) -> PriorTreatment:
        issues: list[Issue] = []
        for i, tr in enumerate(self.responses or ()):
            if tr.territory.is_whole_liver:
                issues.append(Issue(f"responses.{i}.territory", "a per-territory response names a lobe or segments "
                                    "(the whole-liver response is 'response')", "whole_liver"))
            elif (self.territory is not None and self.kind not in SYSTEMIC_KINDS
                  and not tr.territory.overlaps(self.territory)):
                issues.append(Issue(f"responses.{i}.territory", f"outside the treated territory "
                                    f"({self.territory.describe()})", tr.territory.describe()))
        if self.doxorubicin_mg is not None and self.kind not in CHEMOEMBOLIZATION_KINDS:
            issues.append(Issue("doxorubicin_mg", f"only on TACE or DEB_TACE records, not {self.kind}",
                                self.doxorubicin_mg))
        if self.kind != "TARE":
            for name in _TARE_EXTRAS:
                value = getattr(self, name)
                if value is not None:
                    issues.append(Issue(name, f"only on TARE records, not {self.kind}", value))
        if self.territory is not None and self.kind in SYSTEMIC_KINDS:
            issues.append(Issue("territory", f"{self.kind} is systemic: it has no liver territory",
                                self.territory.model_dump(exclude_none=True)))
        if issues:
            raise_issues(issues)
        return self

    @property
    def is_embolization(self) -> bool:
        return self.kind in EMBOLIZATION_KINDS

    def response_for(self, segments: frozenset[int]) -> str | None:
        """The response recorded for a territory covering ``segments``: a per-territory response that overlaps it
        (the first), else ``response``."""
        for tr in self.responses or ():
            if tr.territory.couinaud_segments & segments:
                return tr.response
        return self.response


def of_kind(records: Iterable[PriorTreatment], *kinds: str) -> list[PriorTreatment]:
    """The records of the given kinds, in date order."""
    return chronological(r for r in records if r.kind in kinds)


def chronological(records: Iterable[PriorTreatment]) -> list[PriorTreatment]:
    """The records sorted by date (stable: same-day records keep their given order)."""
    return sorted(records, key=lambda r: r.date)


def cumulative_doxorubicin_mg(records: Iterable[PriorTreatment]) -> tuple[float, int]:
    """Sum of ``doxorubicin_mg`` over the TACE and DEB-TACE records, and the number of such records whose dose is
    not recorded (the sum is then a lower bound)."""
    total, unknown = 0.0, 0
    for r in records:
        if r.kind in CHEMOEMBOLIZATION_KINDS:
            if r.doxorubicin_mg is None:
                unknown += 1
            else:
                total += r.doxorubicin_mg
    return total, unknown
