"""Surgical and ablative options: curative resection, repeat resection, cytoreductive debulking, thermal ablation,
and ablation combined with resection; each judged criterion by criterion (unknown is never met)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..risk.eligibility import (
    DAYS_PER_MONTH as _DPM,
)
from ..risk.eligibility import (
    ENETS_2016,
    FLR_SOURCE,
    NCCN_NET,
    CriterionResult,
    extrahepatic_resectability,
    latest_progression,
    resection_criteria,
    stability,
    verdict,
    well_differentiated,
)
from ..thresholds import Thresholds
from .facts import biliary_risk, criterion
from .model import BoardOption, OptionStatus

if TYPE_CHECKING:  # pragma: no cover
    from ..case import Case

__all__ = ["option_from", "resection", "repeat_resection", "debulking", "ablation", "ablation_with_resection",
           "MAXWELL_2016", "GRAFF_BAKER_2014", "CROCETTI_2010", "TANER_2013", "MOHAN_2015"]

MAXWELL_2016 = ("Maxwell JE et al., Surgery 2016;159:320-35 (cytoreduction >= 70% of liver metastases: better PFS/OS "
                "than the classic 90%)")
GRAFF_BAKER_2014 = "Graff-Baker AN et al., Surgery 2014;156:1369-77 (>= 70% debulking threshold)"
CROCETTI_2010 = ("Crocetti L, de Baere T, Lencioni R, CIRSE quality improvement guidelines for RFA of liver tumours, "
                 "Cardiovasc Intervent Radiol 2010;33:11-7 (ablative margin 0.5-1.0 cm)")
TANER_2013 = ("Taner T et al., HPB 2013;15:190-5 (resection + intra-operative ablation of NET liver metastases, "
              "n=94: median 3 lesions of 1.4 cm ablated, local recurrence 3.8%, OS 80% / 59% at 5 / 10 years)")
MOHAN_2015 = ("Mohan H et al., J Vasc Interv Radiol 2015;26:935-42 (RFA of NET liver metastases, systematic review, "
              "n=301: symptom improvement 92%, recurrence 63-87%)")

_STATUS = {"eligible": OptionStatus.POSSIBLE, "not_eligible": OptionStatus.NOT_ELIGIBLE,
           "needs_data": OptionStatus.NEEDS_DATA}


def option_from(key: str, title: str, crits: list[CriterionResult], *, citations: list[str], reason_ok: str,
                procedure: str | None = None, territory: str | None = None, extra_reason: str = "") -> BoardOption:
    """An option whose status follows its criteria (any unmet -> not eligible; any unknown -> needs data; all met ->
    possible), with a one-line reason naming the criteria that decide."""
    v = verdict(crits)
    if v == "not_eligible":
        reason = "not eligible: " + "; ".join(f"{c.label} unmet ({c.value or 'n/a'})" for c in crits
                                              if c.status == "unmet")
    elif v == "needs_data":
        reason = "needs data: " + "; ".join(f"{c.label} unknown" + (f" ({c.note})" if c.note else "")
                                            for c in crits if c.status == "unknown")
    else:
        reason = reason_ok
    if extra_reason:
        reason = f"{reason}. {extra_reason}"
    return BoardOption(key=key, title=title, status=_STATUS[v], criteria=[criterion(c) for c in crits],
                       reason=reason, citations=list(dict.fromkeys(citations)), procedure=procedure,
                       territory=territory)


def resection(case: Case, th: Thresholds) -> BoardOption:
    crits = resection_criteria(case, th)
    return option_from("resection", "Curative (R0) resection of the liver metastases", crits,
                       citations=[NCCN_NET, ENETS_2016, FLR_SOURCE],
                       reason_ok="every criterion met: surgery is the option that can cure")


def _liver_resections(case: Case) -> list:
    return [r for r in case.patient.prior_treatments if r.kind == "resection" and r.territory is not None]


def repeat_resection(case: Case, th: Thresholds) -> BoardOption:
    """Repeat resection for liver-only recurrence after an earlier liver resection."""
    prior = _liver_resections(case)
    d = case.patient.disease
    crits = [
        CriterionResult("earlier_liver_resection", "Earlier liver resection (a resection record with a liver "
                        "territory)", "met" if prior else "unmet",
                        ", ".join(f"{r.territory.describe()} {r.date.isoformat()}" for r in prior) or "none recorded",
                        "one or more", "the seed (repeat resection for liver-only recurrence)"),
        CriterionResult("liver_only_recurrence", "Liver-only recurrence", "unmet" if d.extrahepatic_disease else "met",
                        "extrahepatic disease" if d.extrahepatic_disease else "liver only", "no extrahepatic disease",
                        f"{NCCN_NET}; {ENETS_2016}"),
    ]
    crits += [c for c in resection_criteria(case, th) if c.key != "extrahepatic_disease"]
    return option_from("repeat_resection", "Repeat resection for liver-only recurrence", crits,
                       citations=[NCCN_NET, ENETS_2016, "the seed (10-year OS 60.3% repeat surgery vs 52.0% "
                                  "intra-arterial vs 45.9% SSA) [U: primary source not retrieved]"],
                       reason_ok="every criterion met: repeat resection of the liver-only recurrence")


def _rapid_progression(case: Case, th: Thresholds) -> CriterionResult:
    months = th.board_rapid_progression_months
    prog = latest_progression(case)
    label = f"No rapid progression (none within {months:g} months)"
    thr = f"no progression within {months:g} months (board_rapid_progression_months)"
    if prog is not None and (case.procedure.date - prog.date).days / _DPM <= months:
        return CriterionResult("no_rapid_progression", label, "unmet",
                               f"progression after {prog.kind} on {prog.date.isoformat()}", thr, MAXWELL_2016)
    stab = stability(case, months, threshold_name="board_rapid_progression_months")
    if stab.status == "met":
        return CriterionResult("no_rapid_progression", label, "met", stab.value, thr, MAXWELL_2016)
    recs = [r for r in case.patient.prior_treatments if r.response not in (None, "unknown")]
    if recs and prog is None:
        return CriterionResult("no_rapid_progression", label, "met", "no progression recorded in the history", thr,
                               MAXWELL_2016)
    if prog is not None:
        return CriterionResult("no_rapid_progression", label, "met",
                               f"last progression after {prog.kind} on {prog.date.isoformat()} (> {months:g} months)",
                               thr, MAXWELL_2016)
    return CriterionResult("no_rapid_progression", label, "unknown", None, thr, MAXWELL_2016,
                           "no response recorded (disease.stable_disease_months; responses in the history)")


def debulking(case: Case, th: Thresholds) -> BoardOption:
    d = case.patient.disease
    functional = d.functional_syndrome != "none"
    crits = [
        CriterionResult("functioning_tumour", "Functioning tumour (hormonal syndrome to control)",
                        "met" if functional else "unmet", d.functional_syndrome + " syndrome" if functional else "none",
                        "a functional syndrome (especially small-bowel NET with carcinoid syndrome)",
                        f"{NCCN_NET}; {MAXWELL_2016}"),
    ]
    share = d.resectable_disease_percent
    maxwell, nccn = th.board_debulking_maxwell_min_percent, th.board_debulking_nccn_min_percent
    thr = (f">= {maxwell:g}% (board_debulking_maxwell_min_percent, Maxwell 2016 / Graff-Baker 2014); >= {nccn:g}% "
           "(board_debulking_nccn_min_percent, NCCN)")
    if share is None:
        crits.append(CriterionResult("removable_share", f"Removable share of the disease >= {maxwell:g}%", "unknown",
                                     None, thr, f"{MAXWELL_2016}; {GRAFF_BAKER_2014}; {NCCN_NET}",
                                     "surgeon's estimate not given (disease.resectable_disease_percent)"))
    else:
        which = (f"meets NCCN (>= {nccn:g}%) and Maxwell" if share >= nccn else
                 f"meets Maxwell/Graff-Baker (>= {maxwell:g}%), not NCCN (>= {nccn:g}%)" if share >= maxwell else "")
        crits.append(CriterionResult("removable_share", f"Removable share of the disease >= {maxwell:g}%",
                                     "met" if share >= maxwell else "unmet", f"{share:g}%", thr,
                                     f"{MAXWELL_2016}; {GRAFF_BAKER_2014}; {NCCN_NET}", which))
    crits.append(_rapid_progression(case, th))
    crits.append(well_differentiated(case, th))
    crits.append(next(c for c in resection_criteria(case, th) if c.key == "performance_status"))
    return option_from("debulking", "Cytoreductive debulking (surgery, with ablation)", crits,
                       citations=[MAXWELL_2016, GRAFF_BAKER_2014, NCCN_NET],
                       reason_ok="functioning tumour with enough removable disease: debulking for symptom control")


def _lesion_criteria(case: Case, th: Thresholds, lesions_used: list | None = None,
                     label_prefix: str = "") -> list[CriterionResult]:
    d = case.patient.disease
    lesions = list((d.lesions or []) if lesions_used is None else lesions_used)
    max_n, max_mm = th.board_ablation_max_lesions, th.board_ablation_max_diameter_mm
    src_n = "thresholds.board_ablation_max_lesions [U]; " + TANER_2013
    src_d = CROCETTI_2010 + " [U: NET-specific size limit not retrieved]"
    if d.lesions is None:
        return [
            CriterionResult("lesions_given", "Lesions listed (segments, diameters)", "unknown", None,
                            "disease.lesions", src_n, "ablation needs each lesion's size and position"),
        ]
    out = [
        CriterionResult("lesion_count", f"{label_prefix}At most {max_n} lesions to ablate",
                        "met" if 0 < len(lesions) <= max_n else "unmet", f"{len(lesions)} lesion(s)",
                        f"1-{max_n} (board_ablation_max_lesions)", src_n),
    ]
    big = [lesion for lesion in lesions if lesion.longest_diameter_mm > max_mm]
    out.append(CriterionResult("lesion_size", f"{label_prefix}Each lesion <= {max_mm:g} mm",
                               "unmet" if big or not lesions else "met",
                               ", ".join(f"{lesion.id} {lesion.longest_diameter_mm:g} mm" for lesion in lesions) or "none",
                               f"<= {max_mm:g} mm (board_ablation_max_diameter_mm)", src_d))
    return out


def _ablation_notes(case: Case, lesions: list) -> str:
    notes = []
    risky = [lesion for lesion in lesions if lesion.location in ("near_hilum", "near_large_vessel", "dome",
                                                                 "subcapsular")]
    for lesion in risky:
        what = {"near_hilum": "near the hilum: bile-duct injury (consider cryoablation or resection)",
                "near_large_vessel": "near a large vessel: heat sink (microwave or cryoablation)",
                "dome": "at the dome: diaphragm and access (artificial ascites / angled approach)",
                "subcapsular": "subcapsular: pain and seeding risk"}[lesion.location]
        notes.append(f"{lesion.id} {what}")
    bil = biliary_risk(case)
    if bil:
        notes.append(f"higher liver-abscess risk without an intact sphincter of Oddi ({', '.join(bil)}): aggressive "
                     "antibiotic and bowel prophylaxis (Odisio 2016)")
    if case.patient.disease.functional_syndrome != "none":
        notes.append("functional syndrome: carcinoid/hormonal crisis risk, somatostatin-analogue cover (Kwon 2019)")
    return "; ".join(notes)


def ablation(case: Case, th: Thresholds) -> BoardOption:
    lesions = case.patient.disease.lesions or []
    crits = _lesion_criteria(case, th)
    crits.append(well_differentiated(case, th))
    crits.append(extrahepatic_resectability(case))
    crits.append(next(c for c in resection_criteria(case, th) if c.key == "performance_status"))
    notes = _ablation_notes(case, lesions)
    return option_from("ablation", "Thermal ablation (microwave, radiofrequency or cryoablation)", crits,
                       citations=[CROCETTI_2010, TANER_2013, MOHAN_2015],
                       reason_ok=f"few small lesions: ablation with a {th.board_ablation_margin_mm:g} mm margin "
                                 "(board_ablation_margin_mm)",
                       extra_reason=("Risks: " + notes) if notes else "")


def ablation_with_resection(case: Case, th: Thresholds) -> BoardOption:
    """Resect the segments of the lesions too large to ablate, ablate the rest: the remnant is the volume of the
    segments without a large lesion (computed when segment volumes are given)."""
    d = case.patient.disease
    lesions = d.lesions or []
    max_mm = th.board_ablation_max_diameter_mm
    big = [lesion for lesion in lesions if lesion.longest_diameter_mm > max_mm]
    small = [lesion for lesion in lesions if lesion.longest_diameter_mm <= max_mm]
    crits: list[CriterionResult] = []
    if d.lesions is None:
        crits.append(CriterionResult("lesions_given", "Lesions listed (segments, diameters)", "unknown", None,
                                     "disease.lesions", TANER_2013, "the split between resection and ablation needs "
                                     "the lesions"))
    else:
        crits.append(CriterionResult("split", "Lesions to resect and small lesions to ablate", "met" if big and small
                                     else "unmet", f"{len(big)} > {max_mm:g} mm to resect, {len(small)} to ablate",
                                     "both", TANER_2013))
        if small:
            crits.extend(_lesion_criteria(case, th, small, "ablated: "))
        vols = case.patient.liver.segment_volumes_ml
        if vols and big:
            resected = {s for lesion in big for s in lesion.segments}
            pct = 100.0 * sum(v for s, v in vols.items() if s not in resected) / sum(vols.values())
            crits.append(CriterionResult("future_liver_remnant", f"Future liver remnant >= {th.flr_min_percent:g}%",
                                         "met" if pct >= th.flr_min_percent else "unmet", f"{pct:.1f}%",
                                         f">= {th.flr_min_percent:g}% (flr_min_percent)", FLR_SOURCE,
                                         f"computed: segments {', '.join(map(str, sorted(resected)))} resected"))
        elif big:
            crits.append(CriterionResult("future_liver_remnant", f"Future liver remnant >= {th.flr_min_percent:g}%",
                                         "unknown", None, f">= {th.flr_min_percent:g}% (flr_min_percent)", FLR_SOURCE,
                                         "segment volumes not given (liver.segment_volumes_ml)"))
    crits.append(next(c for c in resection_criteria(case, th) if c.key == "performance_status"))
    crits.append(extrahepatic_resectability(case))
    crits.append(well_differentiated(case, th))
    notes = _ablation_notes(case, small)
    return option_from("ablation_with_resection", "Resection combined with ablation", crits,
                       citations=[TANER_2013, CROCETTI_2010, FLR_SOURCE],
                       reason_ok="resect the large lesions, ablate the small ones: complete treatment",
                       extra_reason=("Risks: " + notes) if notes else "")
