"""Intra-arterial therapy per lobe: TAE -> TACE -> TARE on each lobe's own history.

Per lobe: the ladder step of the lobe's records (:func:`embplan.protocols.sequencing.expected_step`); a biliary-enteric
anastomosis or bile-duct instrumentation (stent, sphincterotomy) makes TARE the first step (Mezhir 2011); DEB-TACE
never (RETNET arm closed; Guiu 2012); whole-liver TARE avoided in favour of staged lobar treatment (Su 2017);
poorly differentiated NEC or Ki-67 > 20 %: systemic therapy first, TARE only for selected compensated patients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..protocols.history import PriorTreatment, cumulative_doxorubicin_mg
from ..protocols.sequencing import (
    ENETS_2022,
    INTESTINAL_SITES,
    SOULEN_CIRSE_2019,
    LadderPosition,
    expected_step,
    territory_records,
)
from ..risk import evidence as ev
from ..risk.case_facts import body_surface_area_m2, prior_tare
from ..risk.eligibility import WHO_2019, CriterionResult
from ..thresholds import MEZHIR_2011, RETNET, VAN_ROEKEL, Thresholds
from .facts import (
    CAUDATE,
    CAUDATE_NOTE,
    CAUDATE_SOURCE,
    TERRITORY_SEGMENTS,
    BoardDoseFacts,
    biliary_risk,
    lobe_has_disease,
    lobe_name,
    untreated_tumors,
)
from .liver import compensated
from .model import BoardOption
from .surgery import option_from

if TYPE_CHECKING:  # pragma: no cover
    from ..case import Case

__all__ = ["LobeState", "lobe_state", "intra_arterial_options", "is_nec"]


def is_nec(case: Case, th: Thresholds) -> bool:
    """Poorly differentiated NEC, grade G3 or Ki-67 above the well-differentiated limit."""
    d = case.patient.disease
    return (d.differentiation == "poor" or d.grade == "G3"
            or d.ki67_percent > th.board_well_differentiated_ki67_max_percent)


@dataclass(frozen=True)
class LobeState:
    """One lobe: disease, own history, ladder position, whether the requested procedure treats it now, the next
    step (TAE, TACE, TARE, SYSTEMIC or none) and why, and the plan's untreated tumours that lie in it."""

    lobe: str
    disease: bool | None
    records: tuple[PriorTreatment, ...]
    position: LadderPosition
    treated_now: bool
    step: str
    reason: str
    untreated: tuple[str, ...]
    #: does the lobe need treatment now? True: untreated disease, progression after its latest embolization, or the
    #: requested procedure treats it; False: responding (complete, partial, stable) after its latest embolization:
    #: surveillance until progression; None: the latest response is not recorded.
    needs_treatment: bool | None = True
    need_reason: str = ""


def _need(records: list[PriorTreatment], treated_now: bool, untreated: tuple[str, ...]) -> tuple[bool | None, str]:
    if treated_now:
        return True, "treated by the requested procedure (the request states the need)"
    if untreated:
        return True, f"untreated by this plan: {', '.join(untreated)}"
    if not records:
        return True, "untreated disease (no embolization of this lobe)"
    last = records[-1]
    resp = last.response
    when = f"after {last.kind.replace('_', '-')} on {last.date.isoformat()}"
    if resp == "progression":
        return True, f"progression {when}"
    if resp in ("complete", "partial", "stable"):
        return False, f"{resp} response {when}: surveillance, retreat on progression"
    return None, f"response {when} not recorded"


def lobe_state(case: Case, th: Thresholds, lobe: str, dose: BoardDoseFacts | None) -> LobeState:
    segs = TERRITORY_SEGMENTS[lobe]
    bil = biliary_risk(case)
    records = territory_records(case.patient.prior_treatments, segs)
    step: str
    pvt = case.patient.disease.main_portal_vein_thrombosis
    step, position = expected_step(records, biliary_risk=bool(bil) or pvt, before=case.procedure.date)
    disease = lobe_has_disease(case, lobe, dose)
    proc = case.procedure
    treated_now = bool(proc.territory.couinaud_segments & segs)
    untreated, _ = untreated_tumors(dose)
    names = tuple(t.name for t in untreated if t.lobe == lobe)
    if names:
        disease = True
    if (not treated_now and untreated and not names and proc.territory.scope == "lobar" and lobe != CAUDATE
            and lobe != proc.territory.lobe):
        names = tuple(t.name for t in untreated if t.lobe is None)  # outside a lobar territory: the other lobe
        disease = True if names else disease
    where = position.describe()
    if disease is False:
        return LobeState(lobe, disease, tuple(records), position, treated_now, "none", "no disease in this lobe",
                         names, False, "no disease in this lobe")
    if is_nec(case, th):
        comp, why = compensated(case, th)
        if comp:
            return LobeState(lobe, disease, tuple(records), position, treated_now, "SYSTEMIC",
                             f"NEC / G3 / Ki-67 > {th.board_well_differentiated_ki67_max_percent:g}%: systemic therapy "
                             f"first; TARE only as a selected option ({why})", names)
        return LobeState(lobe, disease, tuple(records), position, treated_now, "SYSTEMIC",
                         f"NEC / G3 / Ki-67 > {th.board_well_differentiated_ki67_max_percent:g}%: systemic therapy "
                         f"first; TARE not offered ({why})", names)
    why = f"{where}; the lobe's ladder step is {step}"
    if lobe == CAUDATE:
        why = f"{where}; the ladder step of segment 1 is {step}, via its own caudate branch(es): {CAUDATE_NOTE}"
    if bil and step == "TARE" and position.step in ("none", "TAE"):
        why += f" ({', '.join(bil)}: TARE first, Mezhir 2011)"
    elif pvt and step == "TARE" and position.step in ("none", "TAE"):
        why += " (main portal vein thrombosis: TAE/TACE contraindicated, TARE first; World J Hepatol 2015)"
    if step == "SYSTEMIC":
        why = f"{where}: refractory to TARE, beyond the ladder"
    if step == "TAE" and not treated_now:
        d = case.patient.disease
        if d.grade in ("G2", "G3") or (d.primary_site not in INTESTINAL_SITES and d.primary_site != "unknown"):
            why += ("; TAE first keeps TACE and TARE in reserve (ENETS 2022 also accepts TACE or TARE first for G2 or "
                    "non-intestinal primaries)")
    if treated_now and proc.kind != step:
        seq = case.sequence()  # the requested territory's own records, as the plan's ladder summary reads them
        if seq.on_ladder and not seq.is_deviation and not seq.below_expected:
            # a skip the ladder accepts (ENETS 2022 grade / primary site; biliary risk): the request is the step
            why = (f"{where}; requested {proc.kind} skips {', '.join(seq.skipped)}, justified: "
                   + "; ".join(j.text for j in seq.justification_details)) if seq.skipped else (
                f"{where}; requested {proc.kind} follows the ladder")
            step = proc.kind
        else:
            kind = proc.kind.replace("_", "-")
            why += (f"; the requested {kind} is not used: " + ("DEB-TACE has no role in NET" if not seq.on_ladder
                    else "with a biliary risk the step is TARE" if seq.below_biliary_step
                    else f"it is below the lobe's step {step} (a less intensive choice the board may still "
                         "accept)" if seq.below_expected
                    else f"it skips {', '.join(seq.skipped)} without a recognised justification"))
    if case.patient.disease.main_portal_vein_thrombosis and step in ("TAE", "TACE", "DEB_TACE"):
        # occluding the artery of a liver without portal flow risks infarction: TARE (minimally embolic) instead
        why += (f"; main portal vein thrombosis: {step.replace('_', '-')} contraindicated, TARE (minimally embolic) "
                "instead (World J Hepatol 2015; van Roekel)")
        step = "TARE"
    need, need_why = _need(records, treated_now, names)
    return LobeState(lobe, disease, tuple(records), position, treated_now, step, why, names, need, need_why)


def _request_criteria(case: Case, th: Thresholds, st: LobeState, procedure: str,
                      dose: BoardDoseFacts | None) -> list[CriterionResult]:
    """What the requested procedure's own numbers say about this lobe's step when it is the same procedure: the lung
    shunt (resin above the contraindication band: do not treat) and the plan's dose-side contraindications."""
    proc = case.procedure
    if not st.treated_now or proc.kind != procedure or procedure != "TARE":
        return []
    out = []
    lsf = case.dosimetry.lung_shunt_fraction if case.dosimetry is not None else None
    if lsf is not None and proc.device == "resin":  # type: ignore[union-attr]
        limit = th.lsf_resin_contraindication_fraction
        out.append(CriterionResult("lung_shunt", f"Lung shunt <= {limit:.0%} (resin)", "met" if lsf <= limit else "unmet",
                                   f"{lsf:.1%}", f"<= {limit:g} (lsf_resin_contraindication_fraction)", VAN_ROEKEL))
    if dose is not None:
        out.append(CriterionResult("planned_dose_within_limits", "The plan's activity fits the dose limits",
                                   "unmet" if dose.contraindications else "met",
                                   "; ".join(dose.contraindications) or "within limits",
                                   "no dose-side contraindication", ev.EANM_2022))
    return out


def _liver_criteria(case: Case, th: Thresholds, procedure: str) -> list[CriterionResult]:
    p = case.patient
    out = []
    bili = p.labs.bilirubin_mg_dl
    out.append(CriterionResult("bilirubin", f"Bilirubin <= {th.bilirubin_high_mg_dl:g} mg/dL",
                               "met" if bili <= th.bilirubin_high_mg_dl else "unmet", f"{bili:g} mg/dL",
                               f"<= {th.bilirubin_high_mg_dl:g} mg/dL (bilirubin_high_mg_dl)", VAN_ROEKEL))
    ecog_max = th.ecog_warning_min - 1
    out.append(CriterionResult("performance_status", f"ECOG 0-{ecog_max}", "met" if p.ecog <= ecog_max else "unmet",
                               f"ECOG {p.ecog}", f"<= {ecog_max} (ecog_warning_min - 1)",
                               f"{VAN_ROEKEL}; {ev.KENNEDY_2014}"))
    if procedure == "TARE":
        b = p.disease.liver_tumor_burden_percent
        out.append(CriterionResult("tumour_burden", f"Liver tumour burden <= {th.tumor_burden_contraindication_percent:g}%",
                                   "met" if b <= th.tumor_burden_contraindication_percent else "unmet", f"{b:g}%",
                                   f"<= {th.tumor_burden_contraindication_percent:g}% "
                                   "(tumor_burden_contraindication_percent)", ev.CURRIE_2019))
        prior = prior_tare(case)
        left = th.lung_dose_cumulative_limit_gy - prior.lung_dose_gy
        out.append(CriterionResult("lung_budget", "Cumulative lung dose budget left", "met" if left > 0 else "unmet",
                                   f"{prior.lung_dose_gy:g} Gy used ({prior.lung_dose_unknown_count} session(s) "
                                   "unrecorded)", f"< {th.lung_dose_cumulative_limit_gy:g} Gy "
                                   "(lung_dose_cumulative_limit_gy)", ev.EANM_2022))
        if p.liver.cirrhosis or is_nec(case, th):
            comp, why = compensated(case, th)
            out.append(CriterionResult("compensated", "Compensated liver (no ascites, ALBI 1-2)",
                                       "unknown" if comp is None else ("met" if comp else "unmet"), why,
                                       "compensated", "the seed (poorly differentiated NET and cirrhosis: TARE only "
                                       "if compensated); Johnson 2015 (ALBI)"))
    else:
        pvt = p.disease.main_portal_vein_thrombosis
        out.append(CriterionResult("portal_flow", "No main portal vein thrombosis", "unmet" if pvt else "met",
                                   "thrombosis" if pvt else "patent", "patent portal vein", ev.WJH_2015))
    if procedure == "TACE":
        prior_mg, unknown = cumulative_doxorubicin_mg(p.prior_treatments)
        bsa = body_surface_area_m2(p.weight_kg, p.height_cm)
        drug = getattr(case.procedure, "drug", None)  # the requested session's dose when TACE is requested
        session = float(drug.dose_mg) if case.procedure.kind == "TACE" and drug is not None and \
            drug.name == "doxorubicin" else th.protocol_doxorubicin_mg
        total = (prior_mg + session) / bsa
        out.append(CriterionResult("doxorubicin", f"Lifetime doxorubicin <= {th.doxorubicin_lifetime_limit_mg_m2:g} "
                                   "mg/m2 with this session", "met" if total <= th.doxorubicin_lifetime_limit_mg_m2
                                   else "unmet", f"{total:.0f} mg/m2" + (f" ({unknown} record(s) without a dose)"
                                                                         if unknown else ""),
                                   f"<= {th.doxorubicin_lifetime_limit_mg_m2:g} mg/m2 "
                                   "(doxorubicin_lifetime_limit_mg_m2)", ev.DOXORUBICIN_LABEL))
    return out


def _option(case: Case, th: Thresholds, st: LobeState, dose: BoardDoseFacts | None = None) -> BoardOption:
    key = f"intra_arterial_{st.lobe}_lobe"
    title = f"Intra-arterial therapy, {lobe_name(st.lobe)}"
    cites = [SOULEN_CIRSE_2019, ENETS_2022, MEZHIR_2011, RETNET] + ([CAUDATE_SOURCE] if st.lobe == CAUDATE else [])
    disease = CriterionResult("disease_in_lobe", "Disease in this lobe",
                              "met" if st.disease else ("unknown" if st.disease is None else "unmet"),
                              ("yes" + (f" ({', '.join(st.untreated)} untreated by this plan)" if st.untreated else ""))
                              if st.disease else "no", "tumour present", "the case (lesions / liver distribution)")
    requested = case.procedure.kind if st.treated_now else None
    req_note = ""
    if requested == "DEB_TACE":
        req_note = ("Requested DEB-TACE: never in NET (RETNET DEB arm closed for biliary injury; Guiu 2012); use "
                    "the lobe's step instead.")
    elif requested is not None and requested != st.step:
        req_note = f"Requested {requested} here; the lobe's own history gives {st.step}."
    elif requested is not None:
        req_note = f"Requested {requested} here: it matches the lobe's step."
    if case.procedure.kind == "TARE" and case.procedure.territory.is_whole_liver:
        req_note += " Whole-liver TARE in one session: avoid; treat the lobes in stages (Su 2017)."
    if st.step == "none":
        return option_from(key, title, [disease], citations=cites, reason_ok="", territory=lobe_name(st.lobe),
                           extra_reason=req_note)
    if st.step == "SYSTEMIC" and is_nec(case, th):
        # NEC / G3 / Ki-67 > 20 %: systemic therapy first; TARE only for a selected patient with a compensated liver
        d = case.patient.disease
        comp, why = compensated(case, th)
        crits = [disease,
                 CriterionResult("nec_selected", "NEC / G3: TARE only as a selected option after systemic therapy",
                                 "met", f"{d.differentiation}, {d.grade}, Ki-67 {d.ki67_percent:g}%",
                                 "selected patients", f"{WHO_2019}; the seed (poorly differentiated NET: systemic "
                                 "first, TARE only if compensated)", st.reason),
                 CriterionResult("compensated", "Compensated liver (no ascites, ALBI 1-2)",
                                 "unknown" if comp is None else ("met" if comp else "unmet"), why, "compensated",
                                 "the seed (poorly differentiated NET: TARE only if compensated); Johnson 2015 (ALBI)"),
                 *[c for c in _liver_criteria(case, th, "TARE") if c.key != "compensated"],
                 *_request_criteria(case, th, st, "TARE", dose)]
        return option_from(key, title, crits, citations=cites, procedure="TARE", territory=lobe_name(st.lobe),
                           reason_ok=f"selected TARE of the {lobe_name(st.lobe)} after systemic therapy ({why})",
                           extra_reason=req_note)
    if st.step == "SYSTEMIC":
        ladder = CriterionResult("ladder", "A ladder step left in this lobe", "unmet", st.position.describe(),
                                 "TAE -> TACE -> TARE on this lobe's history", SOULEN_CIRSE_2019, st.reason)
        return option_from(key, title, [disease, ladder], citations=cites, reason_ok="",
                           territory=lobe_name(st.lobe), extra_reason=req_note)
    ladder = CriterionResult("ladder", f"{st.step} is this lobe's ladder step", "met", st.position.describe(),
                             "TAE -> TACE -> TARE on this lobe's history (TARE first with a biliary risk)",
                             f"{SOULEN_CIRSE_2019}; {MEZHIR_2011}", st.reason)
    need = CriterionResult("treatment_needed", "Treatment needed now (untreated, progressing, or requested)",
                           "unknown" if st.needs_treatment is None else ("met" if st.needs_treatment else "unmet"),
                           st.need_reason, "untreated disease or progression (RECIST 1.1)",
                           "the seed's working approach (retreat on progression); Soulen, CIRSE 2019",
                           "" if st.needs_treatment is not None else "record the lobe's response (prior_treatments[]."
                           "response or .responses)")
    crits = [disease, need, ladder, *_liver_criteria(case, th, st.step),
             *_request_criteria(case, th, st, st.step, dose)]
    ok = f"{st.step} of the {lobe_name(st.lobe)}: {st.reason}"
    return option_from(key, title, crits, citations=cites, reason_ok=ok, procedure=st.step,
                       territory=lobe_name(st.lobe), extra_reason=req_note)


def intra_arterial_options(case: Case, th: Thresholds, states: list[LobeState],
                           dose: BoardDoseFacts | None = None) -> list[BoardOption]:
    return [_option(case, th, st, dose) for st in states]
