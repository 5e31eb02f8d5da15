"""The TAE -> TACE -> TARE ladder: where a patient stands, whether a request follows it, what may justify a skip.

The ladder (DESIGN.md "Clinical picture"; Soulen, CIRSE 2019). Evidence does not rank TAE over TACE over TARE; a
common working approach is sequential:

1. **TAE** first: bland embolization has the fewest adverse events;
2. **TACE** when the lesions are refractory to TAE;
3. **TARE** third (TARE last in long survivors: chronic radioembolization hepatotoxicity, Su JVIR 2017);
4. beyond the ladder: PRRT or systemic therapy, after a tumour board.

Skips the ladder accepts (each with its source):

- a **biliary-enteric anastomosis** (Whipple, hepaticojejunostomy) makes TAE/TACE abscess risk 30-50% (11/34, 33%,
  Mezhir JVIR 2011): TARE first;
- **ENETS 2022** (guidance via NICE): TAE for G1 intestinal NET with carcinoid syndrome; TACE or TARE for G2 (and
  higher) or non-intestinal primaries, so TACE or TARE without a prior TAE is justified for those.

DEB-TACE is never a ladder step: it has no role in NET (RETNET DEB arm closed for biliary injury, Soulen CIRSE
2019; Guiu J Hepatol 2012). A prior DEB-TACE *record* counts as chemoembolization (the TACE rung).

Definitions (parameters with defaults):

- *position*: the highest rung the patient has received (none, TAE, TACE, TARE), and whether the latest record
  on that rung is *refractory*: its response is in ``refractory_responses`` (default ``{"progression"}``; stable
  disease after embolization is disease control, not refractoriness; a site that escalates on stable disease
  passes ``{"progression", "stable"}``). The ladder reads the records it is given: :class:`~embplan.case.Case`
  and the risk rule pass the requested territory's own records (:func:`territory_records`; issue 11: a lobe
  progressing after TACE is ready for TARE while the other lobe, responding, is not).
- a rung below the requested one is *passed* when the patient is past it (a higher rung received) or refractory
  on it; the rungs not passed are *skipped* (including a rung received without refractoriness: premature
  escalation).

sequencing works on the history records only (:class:`~embplan.protocols.history.PriorTreatment`), never on the
case: the risk rule SEQUENCE_DEVIATION (info) reads :attr:`SequenceAssessment.is_deviation`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..errors import CaseError
from ..thresholds import MEZHIR_2011
from .history import PriorTreatment, chronological

__all__ = [
    "LADDER",
    "LadderStep",
    "NextStepCode",
    "LadderPosition",
    "Justification",
    "SequenceAssessment",
    "ladder_position",
    "evaluate_sequence",
    "territory_records",
    "expected_step",
    "next_step",
    "REFRACTORY_RESPONSES",
    "INTESTINAL_SITES",
    "SOULEN_CIRSE_2019",
    "ENETS_2022",
    "MEZHIR_2011",
]

SOULEN_CIRSE_2019 = ("Soulen MC, CIRSE 2019 (RETNET; sequential TAE -> TACE -> TARE, TARE last in long survivors; "
                     "DEB-TACE arm closed for biliary injury)")
ENETS_2022 = ("ENETS 2022 guidance (via NICE): G1 intestinal NET with carcinoid syndrome -> TAE; G2 or "
              "non-intestinal -> TACE or TARE")
_GUIU_2012 = "Guiu B et al., J Hepatol 2012 (DEB OR 9.78 and NET OR 8.13 for biloma/infarct)"
_PVT_SOURCE = ("World J Hepatol 2015;7(16), Table 1 (TAE/TACE with severely reduced portal flow: contraindication); "
               "van Roekel thesis, Table 1 (TARE: relative contraindication)")

LADDER: tuple[str, ...] = ("TAE", "TACE", "TARE")
LadderStep = Literal["none", "TAE", "TACE", "TARE"]
NextStepCode = Literal["TAE", "TACE", "TARE", "SYSTEMIC"]

# Rung of each treatment kind on the ladder (0 = TAE); DEB-TACE records count as chemoembolization.
_RUNG: dict[str, int] = {"TAE": 0, "TACE": 1, "DEB_TACE": 1, "TARE": 2}

REFRACTORY_RESPONSES: frozenset[str] = frozenset({"progression"})
# Anatomically intestinal primaries; "unknown" is neither intestinal nor non-intestinal (no ENETS skip).
INTESTINAL_SITES: frozenset[str] = frozenset({"small_intestine", "appendix", "colon", "rectum"})

_NEXT_TEXT: dict[str, str] = {
    "TAE": "TAE",
    "TACE": "TACE if the lesions are refractory to TAE",
    "TARE": "TARE if the lesions are refractory to TACE",
    "SYSTEMIC": "beyond the ladder: consider PRRT or systemic therapy; discuss at the tumour board",
}

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class LadderPosition(BaseModel):
    """Where the patient stands: the highest rung received and whether the latest record on it is refractory."""

    model_config = _FROZEN
    step: LadderStep
    refractory: bool
    last_date: date | None = None
    last_response: str | None = None
    ladder_records: int = 0

    def describe(self) -> str:
        if self.step == "none":
            return "no prior embolization (TAE, TACE or TARE)"
        state = "refractory" if self.refractory else "not refractory"
        resp = self.last_response or "response not recorded"
        when = self.last_date.isoformat() if self.last_date else "?"
        return f"after {self.step} ({state}: {resp} after the latest {self.step} on {when})"


class Justification(BaseModel):
    """A reason the ladder accepts for skipping steps: ``code``, ``text`` and ``source``."""

    model_config = _FROZEN
    code: Literal["BILIARY_ENTERIC_ANASTOMOSIS", "BILE_DUCT_INSTRUMENTATION", "PORTAL_VEIN_THROMBOSIS",
                  "ENETS_2022_GRADE", "ENETS_2022_NON_INTESTINAL"]
    text: str
    source: str

    def __str__(self) -> str:
        return f"{self.text} ({self.source})"


class SequenceAssessment(BaseModel):
    """The ladder's view of a requested procedure.

    - ``follows_ladder``: the request is the ladder's step or above it with nothing skipped: no step below the
      requested one is skipped, the request is not below the ladder's step (a step back, or a repeat of a rung the
      patient is refractory to: accepted, not a deviation) and not TAE/TACE where a biliary risk makes TARE the step;
    - ``skipped``: the ladder steps (codes) the request passes over without refractoriness;
    - ``justifications``: texts with sources of the reasons that justify the skip (``justification_details``
      keeps the structured form);
    - ``expected_step``: what the ladder suggests now, before the request;
    - ``suggested_next`` / ``suggested_next_code``: the step after the requested one;
    - ``is_deviation``: off the ladder (DEB-TACE), or a skip without a justification (SEQUENCE_DEVIATION).
    """

    model_config = _FROZEN
    requested: str
    on_ladder: bool
    position: LadderPosition
    follows_ladder: bool
    skipped: list[str]
    justifications: list[str]
    justification_details: list[Justification]
    expected_step: NextStepCode
    suggested_next: str
    suggested_next_code: NextStepCode
    explanation: str
    biliary_step: bool = False  # TAE/TACE requested where a biliary risk makes TARE the ladder's step

    @property
    def justified(self) -> bool:
        return self.follows_ladder or bool(self.justification_details)

    @property
    def below_expected(self) -> bool:
        """Below the ladder's step without skipping (a step back, or a repeat of a refractory rung): accepted."""
        return self.on_ladder and not self.follows_ladder and not self.skipped and not self.below_biliary_step

    @property
    def is_deviation(self) -> bool:
        return not self.on_ladder or not (self.justified or self.below_expected)

    @property
    def below_biliary_step(self) -> bool:
        """TAE/TACE requested where a biliary risk makes TARE the step (the BILIARY_ENTERIC_ANASTOMOSIS warning covers
        the risk)."""
        return self.biliary_step


def ladder_position(prior_treatments: Iterable[PriorTreatment], *,
                    refractory_responses: frozenset[str] = REFRACTORY_RESPONSES,
                    before: date | None = None) -> LadderPosition:
    """The highest ladder rung in ``prior_treatments`` (records after ``before`` ignored) and whether the latest
    record on it has a refractory response."""
    records = [r for r in chronological(prior_treatments)
               if r.kind in _RUNG and (before is None or r.date <= before)]
    if not records:
        return LadderPosition(step="none", refractory=False)
    top = max(_RUNG[r.kind] for r in records)
    last = [r for r in records if _RUNG[r.kind] == top][-1]
    return LadderPosition(step=LADDER[top], refractory=last.response in refractory_responses,  # type: ignore[arg-type]
                          last_date=last.date, last_response=last.response, ladder_records=len(records))


def next_step(after: str, *, biliary_enteric_anastomosis: bool = False) -> tuple[NextStepCode, str]:
    """The ladder step after ``after`` (TAE, TACE, DEB_TACE or TARE): ``(code, text)``.

    After TAE with a biliary-enteric anastomosis the next step is TARE (TACE carries the same abscess risk)."""
    if after == "TAE":
        if biliary_enteric_anastomosis:
            return "TARE", ("TARE if the lesions are refractory to TAE (biliary-enteric anastomosis: TARE rather "
                            "than TACE)")
        return "TACE", _NEXT_TEXT["TACE"]
    if after in ("TACE", "DEB_TACE"):
        return "TARE", _NEXT_TEXT["TARE"]
    if after == "TARE":
        return "SYSTEMIC", _NEXT_TEXT["SYSTEMIC"]
    raise CaseError(f"next_step: unknown procedure {after!r}; expected TAE, TACE, DEB_TACE or TARE")


def _expected_step(position: LadderPosition, biliary_enteric_anastomosis: bool) -> NextStepCode:
    if position.step == "none":
        return "TARE" if biliary_enteric_anastomosis else "TAE"
    rung = _RUNG[position.step] + (1 if position.refractory else 0)
    if biliary_enteric_anastomosis and rung < _RUNG["TARE"]:
        return "TARE"
    return "SYSTEMIC" if rung >= len(LADDER) else LADDER[rung]  # type: ignore[return-value]


def territory_records(records: Iterable[PriorTreatment], segments: frozenset[int]) -> list[PriorTreatment]:
    """The ladder records of one territory (issue 11: the ladder applies to each lobe's own history): embolization
    records whose territory overlaps ``segments`` (records without a territory count everywhere), each carrying the
    response recorded for that territory (a per-territory response overrides the record's)."""
    out = []
    for r in chronological(records):
        if r.kind not in _RUNG:
            continue
        if r.territory is not None and not (r.territory.couinaud_segments & segments):
            continue
        resp = r.response_for(segments)
        out.append(r if resp == r.response else r.model_copy(update={"response": resp}))
    return out


def expected_step(records: Iterable[PriorTreatment], *, biliary_risk: bool,
                  refractory_responses: frozenset[str] = REFRACTORY_RESPONSES,
                  before: date | None = None) -> tuple[NextStepCode, LadderPosition]:
    """What the ladder suggests for these records (one territory's, see :func:`territory_records`): TAE first, the
    next rung when refractory, TARE first with a biliary risk (anastomosis or bile-duct instrumentation), SYSTEMIC
    beyond TARE; with the position it read."""
    position = ladder_position(records, refractory_responses=refractory_responses, before=before)
    return _expected_step(position, biliary_risk), position


def evaluate_sequence(
    requested_kind: str,
    prior_treatments: Iterable[PriorTreatment],
    *,
    biliary_enteric_anastomosis: bool,
    grade: str,
    primary_site: str,
    functional_syndrome: str,
    refractory_responses: frozenset[str] = REFRACTORY_RESPONSES,
    intestinal_sites: frozenset[str] = INTESTINAL_SITES,
    before: date | None = None,
    bile_duct_instrumentation: bool = False,
    portal_vein_thrombosis: bool = False,
) -> SequenceAssessment:
    """Whether ``requested_kind`` (TAE, TACE, DEB_TACE, TARE) follows the ladder given the history, which steps it
    skips, which justifications apply, and the next step. See the module docstring for the rules.

    ``bile_duct_instrumentation`` (a biliary stent or a sphincterotomy) acts like a biliary-enteric anastomosis: the
    ladder's step is TARE first (issue 11; abscess after embolization with an incompetent sphincter, Mezhir 2011);
    so does a main ``portal_vein_thrombosis`` (TAE/TACE occlude the only inflow left; TARE is minimally embolic)."""
    if requested_kind not in _RUNG:
        raise CaseError(f"evaluate_sequence: requested_kind must be TAE, TACE, DEB_TACE or TARE, got "
                         f"{requested_kind!r}")
    records = list(prior_treatments)
    bea_only = biliary_enteric_anastomosis
    biliary_enteric_anastomosis = biliary_enteric_anastomosis or bile_duct_instrumentation or portal_vein_thrombosis
    position = ladder_position(records, refractory_responses=refractory_responses, before=before)
    expected = _expected_step(position, biliary_enteric_anastomosis)
    next_code, next_text = next_step(requested_kind, biliary_enteric_anastomosis=biliary_enteric_anastomosis)
    intestinal = primary_site in intestinal_sites
    g1_intestinal_syndrome = grade == "G1" and intestinal and functional_syndrome == "carcinoid"

    if requested_kind == "DEB_TACE":
        return SequenceAssessment(
            requested=requested_kind, on_ladder=False, position=position, follows_ladder=False, skipped=[],
            justifications=[], justification_details=[], expected_step=expected, suggested_next=next_text,
            suggested_next_code=next_code,
            explanation=(f"DEB-TACE is not a step of the TAE -> TACE -> TARE ladder: it has no role in NET "
                         f"({SOULEN_CIRSE_2019}; {_GUIU_2012}). Patient {position.describe()}; the ladder suggests "
                         f"{expected}."),
        )

    req_rung = _RUNG[requested_kind]
    top = -1 if position.step == "none" else _RUNG[position.step]
    skipped = [LADDER[k] for k in range(req_rung)
               if not (k < top or (k == top and position.refractory))]
    # With a biliary-enteric anastomosis the ladder's step is TARE: a TAE/TACE request does not follow it (issue 11:
    # "follows the ladder: yes" beside "the ladder suggests TARE" was a contradiction).
    below_bea = biliary_enteric_anastomosis and requested_kind in ("TAE", "TACE") and expected == "TARE"
    # a request below the ladder's step (a step back, or a repeat of a rung the patient is refractory to) does not
    # "follow the ladder" either (issue 11: the text must agree with "the ladder suggests ..."); it is accepted as a
    # less intensive choice, not a deviation
    expected_rung = len(LADDER) if expected == "SYSTEMIC" else _RUNG[expected]
    below = not skipped and not below_bea and req_rung < expected_rung
    follows = not skipped and not below_bea and not below

    details: list[Justification] = []
    if skipped:
        if requested_kind == "TARE" and bea_only:
            details.append(Justification(
                code="BILIARY_ENTERIC_ANASTOMOSIS", source=MEZHIR_2011,
                text="a biliary-enteric anastomosis makes the abscess risk after TAE/TACE 30-50%: TARE first"))
        elif requested_kind == "TARE" and bile_duct_instrumentation:
            details.append(Justification(
                code="BILE_DUCT_INSTRUMENTATION", source=MEZHIR_2011,
                text="bile-duct instrumentation (stent or sphincterotomy) raises the abscess risk after TAE/TACE: "
                     "TARE first"))
        if requested_kind == "TARE" and portal_vein_thrombosis:
            details.append(Justification(
                code="PORTAL_VEIN_THROMBOSIS", source=_PVT_SOURCE,
                text="main portal vein thrombosis: TAE/TACE would occlude the liver's only inflow; TARE (minimally "
                     "embolic) instead"))
        if requested_kind in ("TACE", "TARE"):
            if grade in ("G2", "G3"):
                details.append(Justification(
                    code="ENETS_2022_GRADE", source=ENETS_2022,
                    text=f"grade {grade}: ENETS 2022 recommends TACE or TARE"))
            if not intestinal and primary_site != "unknown":
                details.append(Justification(
                    code="ENETS_2022_NON_INTESTINAL", source=ENETS_2022,
                    text=f"non-intestinal primary ({primary_site}): ENETS 2022 recommends TACE or TARE"))

    parts = [f"Patient {position.describe()}; the ladder suggests {expected}."]
    if below_bea and not skipped:
        parts.append(f"{requested_kind} does not follow the ladder here: with "
                     + ("main portal vein thrombosis" if portal_vein_thrombosis and not (bea_only or
                                                                                          bile_duct_instrumentation)
                        else "a biliary risk") + " its step is TARE.")
    elif below:
        what = "steps back down" if top > req_rung else "repeats a step below"
        parts.append(f"{requested_kind} {what} the ladder's step {expected} (after {position.step}): a less "
                     "intensive choice, accepted; it does not follow the ladder.")
    elif follows:
        parts.append(f"{requested_kind} follows the TAE -> TACE -> TARE ladder.")
    else:
        why = []
        for step in skipped:
            given = any(r.kind == step or (step == "TACE" and r.kind == "DEB_TACE") for r in records
                        if before is None or r.date <= before)
            why.append(f"{step} ({'given, not refractory' if given else 'not given'})")
        parts.append(f"{requested_kind} skips {', '.join(why)}.")
        if details:
            parts.append("Justified: " + "; ".join(str(d) for d in details) + ".")
        else:
            parts.append("No recognised justification for the skip.")
            if g1_intestinal_syndrome:
                parts.append(f"ENETS 2022 recommends TAE for G1 intestinal NET with carcinoid syndrome "
                             f"({ENETS_2022}).")
    if biliary_enteric_anastomosis and requested_kind in ("TAE", "TACE"):
        if bea_only or bile_duct_instrumentation:
            what = ("a biliary-enteric anastomosis" if bea_only
                    else "bile-duct instrumentation (stent or sphincterotomy)")
            parts.append(f"With {what} the ladder suggests TARE first ({MEZHIR_2011}).")
        if portal_vein_thrombosis:
            parts.append(f"With main portal vein thrombosis the ladder suggests TARE first ({_PVT_SOURCE}).")
    parts.append(f"Next: {next_text}.")

    return SequenceAssessment(
        requested=requested_kind, on_ladder=True, position=position, follows_ladder=follows, skipped=skipped,
        justifications=[str(d) for d in details], justification_details=details, expected_step=expected,
        suggested_next=next_text, suggested_next_code=next_code, explanation=" ".join(parts),
        biliary_step=below_bea and not skipped,
    )
