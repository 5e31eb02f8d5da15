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
    "CAUDATE",
    "CAUDATE_NOTE",
    "CAUDATE_SOURCE",
    "TERRITORY_SEGMENTS",
    "board_territories",
    "lobe_name",
    "criterion",
    "lobe_has_disease",
    "biliary_risk",
    "untreated_tumors",
    "untreated_disease_flag",
    "untreated_lesions",
]

LOBES: tuple[str, ...] = ("right", "left")
#: The caudate lobe (Couinaud segment 1) is in neither functional lobe (LOBE_SEGMENTS): it has its own arteries and
#: drains to both sides (Couinaud 1957). The board follows it as a territory of its own when the case puts disease or
#: a segmental treatment there (see :func:`board_territories`).
CAUDATE = "caudate"
TERRITORY_SEGMENTS: dict[str, frozenset[int]] = {**LOBE_SEGMENTS, CAUDATE: frozenset({1})}
#: What the board reads about the caudate lobe's supply, and its sources.
CAUDATE_SOURCE = (
    "Furuta T et al., RadioGraphics 2009;29:e37 (the caudate lobe receives an artery from both the right and the left "
    "hepatic artery in 53 %, from the right only in 35 %, from the left only in 12 %); Miyayama S et al., Cardiovasc "
    "Intervent Radiol 2010 (feeders of caudate tumours: mostly the right hepatic artery, then the left, the anterior "
    "and the posterior segmental arteries; selective caudate-branch embolization); van Roekel C, PhD thesis "
    "(Utrecht), 2.3.2 (1-5 caudate arteries, most often two, from the RHA and the LHA)")
CAUDATE_NOTE = (
    "segment 1 (caudate lobe) belongs to neither lobe: its own arteries arise from the right hepatic artery, the "
    "left or both (both 53 %, right only 35 %, left only 12 %), so a lobar injection treats it only where its branch "
    "arises from that lobar artery; it is treated selectively through its caudate branch(es), identified on "
    "angiography / cone-beam CT")


def lobe_name(lobe: str) -> str:
    if lobe == CAUDATE:
        return "caudate lobe (segment 1)"
    return f"{lobe} lobe"


def board_territories(case: Case) -> tuple[str, ...]:
    """The territories the board follows: the right and left lobes, and the caudate lobe when a lesion lies in
    segment 1 or a segmental treatment (prior or requested) includes it."""
    d = case.patient.disease
    caudate = any(1 in lesion.segments for lesion in d.lesions or ())
    terr = [r.territory for r in case.patient.prior_treatments if r.territory is not None]
    terr.append(case.procedure.territory)
    caudate = caudate or any(t.scope == "segmental" and 1 in t.couinaud_segments for t in terr)
    return (*LOBES, CAUDATE) if caudate else LOBES


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
        return any(set(lesion.segments) & TERRITORY_SEGMENTS[lobe] for lesion in d.lesions)
    if lobe == CAUDATE:
        return None  # the liver distribution names lobes, not the caudate
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
