"""The course per segment (issue 11): when treatments or lesions are segmental, the course shows each segment group
beside its lobe: what was done there, the response recorded for it, the lesions it holds, and the next step.

Groups: the Couinaud segment sets of every segmental treatment (prior or requested) and of every per-territory
response, then each segment that holds a listed lesion outside those sets. A group's next step is its lobe's (the
lobe's ladder reads every record that touches the lobe, the segment's included: one next step per lobe, so that the
segment line and the lobe line never disagree); the group's own ladder position is given beside it. Segment 1 (the
caudate lobe) is followed as a territory of its own (:func:`embplan.board.facts.board_territories`) and has no
segment entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..protocols.sequencing import expected_step, territory_records
from ..protocols.territory import LOBE_SEGMENTS
from .facts import biliary_risk, lobe_name
from .model import TerritoryCourse

if TYPE_CHECKING:  # pragma: no cover
    from ..case import Case
    from ..protocols.history import PriorTreatment

__all__ = ["segment_groups", "segment_courses"]


def _describe(segs: frozenset[int]) -> str:
    s = sorted(segs)
    return ("segment " if len(s) == 1 else "segments ") + ", ".join(map(str, s))


def segment_groups(case: Case) -> list[frozenset[int]]:
    """The segment groups the course lists (see the module docstring), in order of first appearance."""
    groups: list[frozenset[int]] = []

    def add(segs: frozenset[int]) -> None:
        segs = frozenset(segs - {1})
        if segs and segs not in groups:
            groups.append(segs)

    for r in sorted(case.patient.prior_treatments, key=lambda r: r.date):
        if r.territory is not None and r.territory.scope == "segmental":
            add(r.territory.couinaud_segments)
        for tr in r.responses or ():
            if tr.territory.scope == "segmental":
                add(tr.territory.couinaud_segments)
    if case.procedure.territory.scope == "segmental":
        add(case.procedure.territory.couinaud_segments)
    covered = frozenset().union(*groups) if groups else frozenset()
    for lesion in case.patient.disease.lesions or ():
        for s in sorted(set(lesion.segments) - covered - {1}):
            add(frozenset({s}))
    return groups


def segment_courses(case: Case, lobe_courses: list[TerritoryCourse],
                    history_line: Callable[[PriorTreatment, frozenset[int]], str],
                    responses: dict[str, str]) -> list[TerritoryCourse]:
    """One course entry per segment group (empty when the case has no segmental treatment and no lesions)."""
    by_name = {c.territory: c for c in lobe_courses}
    proc = case.procedure
    lesions = case.patient.disease.lesions
    out = []
    for segs in segment_groups(case):
        lobes = [lb for lb, ls in LOBE_SEGMENTS.items() if segs & ls]
        where = " and ".join(lobe_name(lb) for lb in lobes)
        records = [r for r in sorted(case.patient.prior_treatments, key=lambda r: r.date)
                   if r.territory is not None and r.territory.couinaud_segments & segs]
        hist = [history_line(r, segs) for r in records]
        now = bool(proc.territory.couinaud_segments & segs)
        if now:
            hist.append(f"{proc.date.isoformat()}: {proc.kind.replace('_', '-')} ({proc.territory.describe()}): "
                        "this plan")
        last = None
        for r in sorted(case.patient.prior_treatments, key=lambda r: r.date):
            if r.territory is None or r.territory.couinaud_segments & segs:
                resp = r.response_for(segs)
                if resp is not None:
                    last = f"{responses.get(resp, resp)} after {r.kind.replace('_', '-')} on {r.date.isoformat()}"
        held = [les for les in lesions or () if set(les.segments) & segs]
        disease = (bool(held) if lesions is not None else None)
        own_step, position = expected_step(territory_records(case.patient.prior_treatments, segs),
                                           biliary_risk=bool(biliary_risk(case))
                                           or case.patient.disease.main_portal_vein_thrombosis,
                                           before=proc.date)
        parts = []
        if held:
            parts.append("lesions " + ", ".join(f"{les.id} ({les.longest_diameter_mm:g} mm)" for les in held))
        elif lesions is not None:
            parts.append("no listed lesion")
        parts.append(f"own history: {position.describe()} (its own ladder step {own_step})")
        if len(lobes) == 1:
            lobe_next = by_name.get(lobe_name(lobes[0]))
            nxt = f"with the {where}: {lobe_next.next_step}" if lobe_next and lobe_next.next_step else None
            parts.append(f"in the {where}; the lobe's next step governs (its records include this segment's)")
        else:
            nxt = f"see the {where} entries"
            parts.append(f"spans the {where}")
        out.append(TerritoryCourse(territory=f"{_describe(segs)} ({where})", disease_present=disease, history=hist,
                                   last_response=last, next_step=nxt, reason="; ".join(parts) + "."))
    return out
