"""Systemic therapy, PRRT and somatostatin analogues: indicated when extrahepatic disease progresses, for G3 / NEC,
or when the liver-directed options are exhausted; SSA for hormonal symptoms. Any one indication suffices (the
criteria here are indications, not requirements): an unknown indication is listed, never counted as met.

TARE combined with PRRT: the seed's words, "no evidence for or against"; earlier PRRT is a REILD risk factor before
radioembolization (Braat 2019)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..risk.eligibility import ENETS_2016, NCCN_NET, WHO_2019, CriterionResult
from ..thresholds import Thresholds
from .facts import criterion
from .intra_arterial import LobeState, is_nec
from .model import BoardOption, OptionStatus

if TYPE_CHECKING:  # pragma: no cover
    from ..case import Case

__all__ = ["systemic_option", "NETTER_1", "CLARINET", "PRRT_TARE"]

NETTER_1 = ("Strosberg J et al., NEJM 2017;376:125-35 (NETTER-1: 177Lu-DOTATATE in progressive midgut NET, 20-month "
            "PFS 65.2% vs 10.8%)")
CLARINET = "Caplin ME et al., NEJM 2014;371:224-33 (CLARINET: lanreotide in GEP-NET, PFS benefit)"
PRRT_TARE = ("TARE combined with PRRT: no evidence for or against (the seed); radioembolization after PRRT: fatal "
             "REILD 2% (Braat 2019)")


def systemic_option(case: Case, th: Thresholds, states: list[LobeState]) -> BoardOption:
    d = case.patient.disease
    src = f"{NCCN_NET}; {ENETS_2016}"
    indications: list[CriterionResult] = []
    if not d.extrahepatic_disease:
        indications.append(CriterionResult("extrahepatic_progression", "Extrahepatic disease progressing", "unmet",
                                           "no extrahepatic disease", "progressing extrahepatic disease", src))
    elif d.extrahepatic_progression is None:
        indications.append(CriterionResult("extrahepatic_progression", "Extrahepatic disease progressing", "unknown",
                                           "extrahepatic disease, progression not assessed",
                                           "progressing extrahepatic disease", src,
                                           "disease.extrahepatic_progression"))
    else:
        indications.append(CriterionResult("extrahepatic_progression", "Extrahepatic disease progressing",
                                           "met" if d.extrahepatic_progression else "unmet",
                                           "progressing" if d.extrahepatic_progression else "stable",
                                           "progressing extrahepatic disease", src))
    nec = is_nec(case, th)
    indications.append(CriterionResult("g3_nec", "G3 NET / NEC (Ki-67 > "
                                       f"{th.board_well_differentiated_ki67_max_percent:g}%)", "met" if nec else "unmet",
                                       f"{'well' if d.differentiation == 'well' else 'poorly'} differentiated "
                                       f"{d.grade}, Ki-67 {d.ki67_percent:g}%",
                                       "G3 or poorly differentiated", WHO_2019))
    diseased = [s for s in states if s.disease]
    exhausted = bool(diseased) and all(s.step == "SYSTEMIC" for s in diseased)
    indications.append(CriterionResult(
        "liver_directed_exhausted", "Liver-directed options exhausted (every diseased lobe beyond TARE)",
        "met" if exhausted else "unmet",
        "; ".join(f"{s.lobe} lobe: {s.step}" for s in diseased) or "no liver disease", "no ladder step left",
        "Soulen, CIRSE 2019 (beyond the ladder: PRRT or systemic therapy)"))
    functional = d.functional_syndrome != "none"
    indications.append(CriterionResult("hormonal_symptoms", "Hormonal syndrome (SSA for symptom control)",
                                       "met" if functional else "unmet", d.functional_syndrome, "functional syndrome",
                                       CLARINET))
    main = [c for c in indications if c.key != "hormonal_symptoms" and c.status == "met"]
    unknown = [c for c in indications if c.status == "unknown"]
    if main:
        status = OptionStatus.RECOMMENDED
        reason = "indicated: " + "; ".join(c.label for c in main)
    else:
        status = OptionStatus.POSSIBLE
        later = ("PRRT / other systemic therapy not indicated now (no extrahepatic progression, G1/G2, liver-directed "
                 "options left)" + (f"; unknown: {', '.join(c.label for c in unknown)}" if unknown else ""))
        reason = (f"SSA indicated for the hormonal syndrome (symptom control, procedure cover); {later}"
                  if functional else later)
    reason += f". {PRRT_TARE}."
    return BoardOption(key="systemic", title="Systemic therapy: SSA, PRRT (177Lu-DOTATATE), targeted or chemotherapy",
                       status=status, criteria=[criterion(c) for c in indications], reason=reason,
                       citations=[NETTER_1, CLARINET, ENETS_2016, PRRT_TARE])
