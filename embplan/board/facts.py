"""What the board reads besides the case: the planned procedure's dose facts (per tumour), and helpers over the case
(lobes, each lobe's own history, criteria conversion, citations).

The planner fills :class:`BoardDoseFacts` from its dosimetry (per-tumour mean dose and the share of each tumour
inside the perfused territory); the board never imports the planner. A tumour is *untreated* when none of it lies
in the perfused territory, *partly treated* when some of it lies outside (no threshold: the geometry decides).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocols.territory import LOBE_SEGMENTS
from ..risk.coverage import (
    BoardDoseFacts,
    TumorDoseFact,
    untreated_disease_flag,
    untreated_lesions,
    untreated_tumors,
)
from ..risk.eligibility import CriterionResult
from .model import Criterion, CriterionStatus

if TYPE_CHECKING:  # pragma: no cover
    from ..case import Case

__all__ = [
    "TumorDoseFact",
    "BoardDoseFacts",
    "LOBES",
    "lobe_name",
    "criterion",
    "lobe_has_disease",
    "biliary_risk",
    "untreated_tumors",
    "untreated_disease_flag",
    "untreated_lesions",
]

LOBES: tuple[str, ...] = ("right", "left")


def lobe_name(lobe: str) -> str:
    return f"{lobe} lobe"


def criterion(c: CriterionResult) -> Criterion:
    return Criterion(key=c.key, label=c.label, status=CriterionStatus(c.status), value=c.value,
                     threshold=c.threshold, source=c.source, note=c.note)


def lobe_has_disease(case: Case, lobe: str, dose: BoardDoseFacts | None = None) -> bool | None:
    """Disease in the lobe: from the lesions when given, else from the liver distribution; a tumour of the plan's
    images in that lobe counts too."""
    d = case.patient.disease
    if dose is not None and any(t.lobe == lobe for t in dose.tumors):
        return True
    if d.lesions:
        return any(set(lesion.segments) & LOBE_SEGMENTS[lobe] for lesion in d.lesions)
    if d.liver_distribution == "bilobar":
        return True
    return d.liver_distribution == f"unilobar_{lobe}"


def biliary_risk(case: Case) -> list[str]:
    """Why TAE/TACE carry a high abscess risk: biliary-enteric anastomosis, biliary stent, sphincter not intact."""
    b = case.patient.biliary
    out = []
    if b.biliary_enteric_anastomosis:
        out.append("biliary-enteric anastomosis")
    if b.biliary_stent:
        out.append("biliary stent")
    if not b.sphincter_of_oddi_intact:
        out.append("sphincter of Oddi not intact (sphincterotomy)")
    return out
