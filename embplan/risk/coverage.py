"""Disease outside the treated territory (issue 11): the dose facts of a planned TARE per tumour, and the
UNTREATED_DISEASE flag.

The planner fills :class:`BoardDoseFacts` from its dose map (per-tumour mean dose and the share of each tumour inside
the perfused territory); the case alone gives the lesions outside the requested territory. A tumour is *untreated*
when none of it lies in the perfused territory, *partly treated* when some of it lies outside: the geometry decides,
no threshold. The tumour board (:mod:`embplan.board`) names the same tumours in its course and staged plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .flags import Flag, Severity

if TYPE_CHECKING:  # pragma: no cover
    from ..case import Case

__all__ = ["TumorDoseFact", "BoardDoseFacts", "untreated_tumors", "untreated_lesions", "untreated_disease_flag"]


@dataclass(frozen=True)
class TumorDoseFact:
    """One tumour of the planned TARE: its volume, mean absorbed dose (Gy, the plan's dose map) and the fraction of
    its volume inside the perfused territory; its lobe when the images say (phantom or lobe ROIs)."""

    name: str
    volume_ml: float
    mean_dose_gy: float
    perfused_fraction: float
    lobe: str | None = None

    @property
    def untreated(self) -> bool:
        return self.perfused_fraction <= 0.0

    @property
    def partly_treated(self) -> bool:
        return 0.0 < self.perfused_fraction < 1.0


@dataclass(frozen=True)
class BoardDoseFacts:
    """The dose facts of a planned TARE that the board uses (filled by the planner)."""

    territory: str
    tumors: tuple[TumorDoseFact, ...] = field(default_factory=tuple)
    normal_liver_dose_gy: float | None = None  # non-tumour liver of the perfused territory (partition D_N)
    lung_dose_gy: float | None = None
    source: str = ""
    #: the plan's dose-side contraindications (code: message), e.g. no activity within the lung dose budget
    contraindications: tuple[str, ...] = ()


def untreated_tumors(dose: BoardDoseFacts | None) -> tuple[list[TumorDoseFact], list[TumorDoseFact]]:
    """(untreated, partly treated) tumours of the planned TARE."""
    if dose is None:
        return [], []
    return [t for t in dose.tumors if t.untreated], [t for t in dose.tumors if t.partly_treated]


def untreated_lesions(case: Case) -> list[str]:
    """Case lesions (ids) that lie wholly outside the requested procedure's territory."""
    lesions = case.patient.disease.lesions or []
    segs = case.procedure.territory.couinaud_segments
    return [lesion.id for lesion in lesions if not (set(lesion.segments) & segs)]


def _tumor_text(t: TumorDoseFact) -> str:
    where = f", {t.lobe} lobe" if t.lobe else ""
    return f"{t.name} ({t.volume_ml:.1f} mL{where}, {t.mean_dose_gy:.1f} Gy)"


def untreated_disease_flag(case: Case, dose: BoardDoseFacts | None) -> Flag | None:
    """UNTREATED_DISEASE (caution): tumours of the plan's images outside the perfused territory (named with their
    volume, lobe and mean dose), or case lesions outside the procedure's territory. The board's course and staged
    plan name the same tumours and propose their next step."""
    untreated, partial = untreated_tumors(dose)
    lesions = untreated_lesions(case)
    if not untreated and not partial and not lesions:
        return None
    territory = case.procedure.territory.describe()
    parts = []
    if untreated:
        parts.append(f"{len(untreated)} tumour(s) lie outside the treated territory ({territory}) and receive only "
                     f"scatter dose: {', '.join(_tumor_text(t) for t in untreated)}")
    if partial:
        parts.append("partly outside: " + ", ".join(f"{t.name} ({t.perfused_fraction:.0%} inside, "
                                                      f"{t.mean_dose_gy:.1f} Gy)" for t in partial))
    if lesions:
        parts.append(f"lesion(s) outside the territory ({territory}): {', '.join(lesions)}")
    return Flag(
        code="UNTREATED_DISEASE", severity=Severity.CAUTION,
        message="This procedure leaves disease untreated: " + "; ".join(parts) + ". The tumour board's staged plan "
        "names the next step for them.",
        evidence="The plan's dose map and perfused territory (embplan); staged lobar treatment instead of whole-liver "
        "TARE (Su 2017; Currie 2019)",
        context={"untreated": [t.name for t in untreated], "partly_treated": [t.name for t in partial],
                 "untreated_lesions": lesions, "territory": territory,
                 "untreated_lobes": sorted({t.lobe for t in untreated if t.lobe})},
    )
