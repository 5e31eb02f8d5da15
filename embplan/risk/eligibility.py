"""Eligibility criteria the risk flags and the tumour board share (issue 11): curative resection and liver
transplant under Milan-NET, ENETS and UNOS, criterion by criterion.

One implementation, two readers: the RESECTION_CANDIDATE and TRANSPLANT_CANDIDATE flags fire exactly when every
criterion of their set is ``met``, and :mod:`embplan.board` turns the same lists into the board's options, so a flag
and the board cannot disagree. **Unknown is never met**: a criterion the case cannot decide is ``unknown``.

Each :class:`CriterionResult` carries the case value read (text, with units), the requirement (with the threshold's
name in :class:`~embplan.thresholds.Thresholds`) and the citation. This module sits at the risk level: it reads the
case and the thresholds, never the board or the planner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Literal

from ..thresholds import Thresholds
from .case_facts import portal_drainage

if TYPE_CHECKING:  # pragma: no cover
    from ..case import Case
    from ..protocols.history import PriorTreatment

__all__ = [
    "CriterionResult",
    "Status",
    "DAYS_PER_MONTH",
    "stability",
    "latest_progression",
    "future_liver_remnant",
    "well_differentiated",
    "extrahepatic_resectability",
    "resection_criteria",
    "milan_criteria",
    "enets_criteria",
    "unos_criteria",
    "all_met",
    "verdict",
    "NCCN_NET",
    "WHO_2019",
    "MAZZAFERRO_2007_2016",
    "ENETS_2016",
    "OPTN_2015",
    "CHD_TRANSPLANT",
    "FLR_SOURCE",
    "staged_bilobar_tare",
]

Status = Literal["met", "unmet", "unknown"]

#: Months to days: the mean Gregorian month (365.2425 / 12).
DAYS_PER_MONTH = 30.436875

NCCN_NET = "NCCN Guidelines, Neuroendocrine and Adrenal Tumors (surgical candidacy) [U: version not retrieved verbatim]"
WHO_2019 = "WHO Classification of Digestive System Tumours, 5th ed. 2019 (NET G1 Ki-67 < 3%, G2 3-20%, G3 > 20%)"
MAZZAFERRO_2007_2016 = (
    "Milan-NET criteria: Mazzaferro V et al., J Hepatol 2007;47:460-6 (age <= 55, G1/G2, primary resected and "
    "portally drained, <= 50% involvement, stable >= 6 months); Mazzaferro V et al., Am J Transplant 2016;16:2892-902 "
    "(intention-to-treat, age <= 60, Ki-67 < 10%) [U: secondary sources]"
)
ENETS_2016 = (
    "ENETS consensus guidelines, liver and distant metastases: Pavel M et al., Neuroendocrinology 2016;103:172-85 "
    "(transplant for selected G1/G2, Ki-67 < 10%, liver-only, primary resected, stable disease) [U: secondary]"
)
OPTN_2015 = (
    "OPTN/UNOS Liver and Intestinal Organ Transplantation Committee, Guidance on MELD/PELD exception review: "
    "neuroendocrine tumours (June 2015; age <= 60, primary resected >= 6 months without recurrence, bilobar "
    "liver-only disease not amenable to resection, low grade) [U: criteria not retrieved verbatim]"
)
CHD_TRANSPLANT = (
    "Carcinoid heart disease raises the perioperative risk of major surgery and transplant: valve assessment first "
    "(ENETS 2016; UK NET protocol) [U: secondary]"
)
FLR_SOURCE = "Future liver remnant >= 30% (thresholds.flr_min_percent; the brief's value [U])"


@dataclass(frozen=True)
class CriterionResult:
    """One criterion: ``key``, what a board reads (``label``), ``met``/``unmet``/``unknown``, the case value read,
    the requirement, the citation and a note."""

    key: str
    label: str
    status: Status
    value: str | None
    threshold: str | None
    source: str
    note: str = ""


def all_met(criteria: list[CriterionResult]) -> bool:
    return bool(criteria) and all(c.status == "met" for c in criteria)


def verdict(criteria: list[CriterionResult]) -> Literal["eligible", "not_eligible", "needs_data"]:
    """Any unmet -> not_eligible; else any unknown -> needs_data; else eligible (every criterion met)."""
    if any(c.status == "unmet" for c in criteria):
        return "not_eligible"
    if any(c.status == "unknown" for c in criteria):
        return "needs_data"
    return "eligible"


def _months_between(earlier: date, later: date) -> float:
    return (later - earlier).days / DAYS_PER_MONTH


def _responses(rec: PriorTreatment) -> list[str]:
    out = [rec.response] if rec.response is not None else []
    out.extend(tr.response for tr in (rec.responses or ()))
    return [r for r in out if r != "unknown"]


def latest_progression(case: Case) -> PriorTreatment | None:
    """The latest prior treatment after which progression was recorded (any territory), or None."""
    recs = [r for r in sorted(case.patient.prior_treatments, key=lambda r: r.date) if "progression" in _responses(r)]
    return recs[-1] if recs else None


def stability(case: Case, months: float, *, threshold_name: str) -> CriterionResult:
    """Stable disease for at least ``months`` before the procedure date, from the case and its response history.

    - progression recorded after a treatment dated within ``months`` of the procedure -> unmet;
    - ``disease.stable_disease_months`` given: met when >= ``months`` (unmet when a progression is recorded within
      the stated stable period: the two disagree and the progression wins);
    - otherwise unknown (no record of stability is not stability; a progression older than the window with nothing
      documented since is unknown too).
    """
    ref = case.procedure.date
    stated = case.patient.disease.stable_disease_months
    threshold = f">= {months:g} months ({threshold_name})"
    label = f"Stable disease >= {months:g} months"
    prog = latest_progression(case)
    with_response = [r for r in sorted(case.patient.prior_treatments, key=lambda r: r.date) if _responses(r)]
    latest = with_response[-1] if with_response else None
    src = MAZZAFERRO_2007_2016
    if prog is not None and _months_between(prog.date, ref) <= months:
        return CriterionResult("stable_disease", label, "unmet",
                               f"progression after {prog.kind} on {prog.date.isoformat()} "
                               f"({_months_between(prog.date, ref):.1f} months before {ref.isoformat()})",
                               threshold, src, "progression within the window: not stable")
    if stated is not None:
        if prog is not None and _months_between(prog.date, ref) < stated:
            return CriterionResult("stable_disease", label, "unmet",
                                   f"stated stable {stated:g} months, but progression recorded after {prog.kind} on "
                                   f"{prog.date.isoformat()}", threshold, src,
                                   "the history contradicts the stated stability: resolve before listing")
        return CriterionResult("stable_disease", label, "met" if stated >= months else "unmet",
                               f"stable {stated:g} months (stated)", threshold, src)
    if latest is not None and "progression" in _responses(latest):
        return CriterionResult("stable_disease", label, "unknown",
                               f"latest recorded response: progression after {latest.kind} on "
                               f"{latest.date.isoformat()} ({_months_between(latest.date, ref):.0f} months before)",
                               threshold, src, "stability since that progression not documented "
                               "(disease.stable_disease_months)")
    return CriterionResult("stable_disease", label, "unknown", None, threshold, src,
                           "stability not documented (disease.stable_disease_months; responses in the history)")


def future_liver_remnant(case: Case) -> tuple[float | None, str]:
    """The future liver remnant (percent) and how it was obtained.

    Computed when the case gives Couinaud segment volumes and lesions: the lesion-free segments' volume over the
    total of the given segment volumes; else the entered ``liver.future_liver_remnant_percent``; else None.
    """
    liver = case.patient.liver
    lesions = case.patient.disease.lesions
    vols = liver.segment_volumes_ml
    if vols and lesions:
        involved = {s for lesion in lesions for s in lesion.segments}
        total = sum(vols.values())
        remnant = sum(v for s, v in vols.items() if s not in involved)
        pct = 100.0 * remnant / total
        how = (f"computed from segment volumes ({total:.0f} mL over {len(vols)} segments) and lesion segments "
               f"({', '.join(map(str, sorted(involved)))} resected)")
        if liver.future_liver_remnant_percent is not None:
            how += f"; entered value {liver.future_liver_remnant_percent:g}% not used"
        return pct, how
    if liver.future_liver_remnant_percent is not None:
        return float(liver.future_liver_remnant_percent), "as entered (liver.future_liver_remnant_percent)"
    return None, "not given (liver.future_liver_remnant_percent, or segment volumes with lesions)"


def well_differentiated(case: Case, th: Thresholds, ki67_max: float | None = None, *,
                        ki67_name: str = "board_well_differentiated_ki67_max_percent", strict: bool = False,
                        source: str = WHO_2019) -> CriterionResult:
    """Well differentiated G1/G2 with the Ki-67 read (a Ki-67 above the limit is unmet whatever the grade says)."""
    d = case.patient.disease
    limit = th.board_well_differentiated_ki67_max_percent if ki67_max is None else ki67_max
    op = "<" if strict else "<="
    ki_ok = d.ki67_percent < limit if strict else d.ki67_percent <= limit
    value = f"{'well' if d.differentiation == 'well' else 'poorly'} differentiated {d.grade}, Ki-67 {d.ki67_percent:g}%"
    ok = d.differentiation == "well" and d.grade in ("G1", "G2") and ki_ok
    note = ""
    if d.grade in ("G1", "G2") and d.ki67_percent > th.board_well_differentiated_ki67_max_percent:
        note = f"Ki-67 {d.ki67_percent:g}% is G3 range whatever the stated grade {d.grade}"
    return CriterionResult("grade", f"Well differentiated G1/G2, Ki-67 {op} {limit:g}%", "met" if ok else "unmet",
                           value, f"G1/G2 and Ki-67 {op} {limit:g}% ({ki67_name})", source, note)


def extrahepatic_resectability(case: Case) -> CriterionResult:
    """No unresectable extrahepatic disease: none, or all of it resectable (``disease.extrahepatic_resectable``)."""
    d = case.patient.disease
    label = "No unresectable extrahepatic disease"
    src = f"{NCCN_NET}; {ENETS_2016}"
    if not d.extrahepatic_disease:
        return CriterionResult("extrahepatic_disease", label, "met", "none", "none, or resectable", src)
    sites = ", ".join(d.extrahepatic_sites) if d.extrahepatic_sites else "sites not listed"
    if d.extrahepatic_resectable is True:
        return CriterionResult("extrahepatic_disease", label, "met", f"extrahepatic disease ({sites}), resectable",
                               "none, or resectable", src)
    if d.extrahepatic_resectable is False:
        return CriterionResult("extrahepatic_disease", label, "unmet", f"extrahepatic disease ({sites}), not "
                               "resectable", "none, or resectable", src)
    if d.extrahepatic_sites and ("bone" in d.extrahepatic_sites or "peritoneum" in d.extrahepatic_sites):
        return CriterionResult("extrahepatic_disease", label, "unmet", f"extrahepatic disease ({sites})",
                               "none, or resectable", src, "bone or diffuse peritoneal metastases are not removable "
                               "for cure")
    return CriterionResult("extrahepatic_disease", label, "unknown", f"extrahepatic disease ({sites})",
                           "none, or resectable", src, "resectability not assessed (disease.extrahepatic_resectable)")


def _ecog(case: Case, th: Thresholds) -> CriterionResult:
    ecog = case.patient.ecog
    limit = th.board_resection_ecog_max
    return CriterionResult("performance_status", f"Performance status ECOG 0-{limit}",
                           "met" if ecog <= limit else "unmet", f"ECOG {ecog}",
                           f"<= {limit} (board_resection_ecog_max)", NCCN_NET)


def resection_criteria(case: Case, th: Thresholds) -> list[CriterionResult]:
    """Curative (R0) resection of the liver metastases: R0 feasible, future liver remnant >= flr_min_percent, ECOG
    0-2, no unresectable extrahepatic disease, well differentiated G1/G2 with Ki-67 read."""
    liver = case.patient.liver
    flr, how = future_liver_remnant(case)
    out = [
        CriterionResult("r0_feasible", "R0 resection feasible (surgeon's assessment)",
                        "met" if liver.r0_resection_feasible else "unmet",
                        "yes" if liver.r0_resection_feasible else "no", "yes", f"{NCCN_NET}; {ENETS_2016}"),
    ]
    if flr is None:
        out.append(CriterionResult("future_liver_remnant", f"Future liver remnant >= {th.flr_min_percent:g}%",
                                   "unknown", None, f">= {th.flr_min_percent:g}% (flr_min_percent)", FLR_SOURCE, how))
    else:
        out.append(CriterionResult("future_liver_remnant", f"Future liver remnant >= {th.flr_min_percent:g}%",
                                   "met" if flr >= th.flr_min_percent else "unmet", f"{flr:.1f}%",
                                   f">= {th.flr_min_percent:g}% (flr_min_percent)", FLR_SOURCE, how))
    out.append(_ecog(case, th))
    out.append(extrahepatic_resectability(case))
    out.append(well_differentiated(case, th))
    return out


def _no_extrahepatic(case: Case, source: str) -> CriterionResult:
    d = case.patient.disease
    sites = f" ({', '.join(d.extrahepatic_sites)})" if d.extrahepatic_sites else ""
    return CriterionResult("no_extrahepatic_disease", "No extrahepatic disease",
                           "unmet" if d.extrahepatic_disease else "met",
                           f"extrahepatic disease{sites}" if d.extrahepatic_disease else "none", "none", source)


def _portal(case: Case, source: str) -> CriterionResult:
    drained, how = portal_drainage(case)
    status: Status = "unknown" if drained is None else ("met" if drained else "unmet")
    return CriterionResult("portal_drainage", "Primary drained by the portal system", status,
                           f"{case.patient.disease.primary_site} ({how})", "portal drainage", source)


def _primary_resected(case: Case, source: str) -> CriterionResult:
    d = case.patient.disease
    return CriterionResult("primary_resected", "Primary tumour resected", "met" if d.primary_resected else "unmet",
                           "yes" if d.primary_resected else "no", "yes (before, in a separate operation)", source)


def _no_chd(case: Case) -> CriterionResult:
    chd = case.patient.disease.carcinoid_heart_disease
    return CriterionResult("no_carcinoid_heart_disease", "No (uncorrected) carcinoid heart disease",
                           "unmet" if chd else "met", "carcinoid heart disease" if chd else "none", "none",
                           CHD_TRANSPLANT, "cardiology and valve assessment first" if chd else "")


def _burden(case: Case, limit: float, name: str, source: str) -> CriterionResult:
    b = case.patient.disease.liver_tumor_burden_percent
    return CriterionResult("liver_involvement", f"Liver involvement < {limit:g}%", "met" if b < limit else "unmet",
                           f"{b:g}%", f"< {limit:g}% ({name})", source)


def milan_criteria(case: Case, th: Thresholds) -> list[CriterionResult]:
    """Milan-NET (Mazzaferro 2007): age, G1/G2, primary resected, portal drainage, involvement < 50%, stable >= 6
    months, no extrahepatic disease; and no carcinoid heart disease."""
    p = case.patient
    src = MAZZAFERRO_2007_2016
    return [
        CriterionResult("age", f"Age < {th.transplant_age_limit_years:g} years",
                        "met" if p.age_years < th.transplant_age_limit_years else "unmet", f"{p.age_years} years",
                        f"< {th.transplant_age_limit_years:g} (transplant_age_limit_years)", src,
                        "Mazzaferro 2016 used <= 60"),
        well_differentiated(case, th, source=src),
        _primary_resected(case, src),
        _portal(case, src),
        _burden(case, th.transplant_max_burden_percent, "transplant_max_burden_percent", src),
        stability(case, th.transplant_min_stable_months, threshold_name="transplant_min_stable_months"),
        _no_extrahepatic(case, src),
        _no_chd(case),
    ]


def enets_criteria(case: Case, th: Thresholds) -> list[CriterionResult]:
    """ENETS 2016: age <= 60, G1/G2 with Ki-67 < 10%, primary resected, liver-only, involvement < 50%, stable >= 6
    months, no carcinoid heart disease."""
    p = case.patient
    src = ENETS_2016
    stab = stability(case, th.transplant_min_stable_months, threshold_name="transplant_min_stable_months")
    stab = CriterionResult(stab.key, stab.label, stab.status, stab.value, stab.threshold, src, stab.note)
    return [
        CriterionResult("age", f"Age <= {th.board_enets_age_max_years:g} years",
                        "met" if p.age_years <= th.board_enets_age_max_years else "unmet", f"{p.age_years} years",
                        f"<= {th.board_enets_age_max_years:g} (board_enets_age_max_years)", src),
        well_differentiated(case, th, th.board_enets_ki67_max_percent, ki67_name="board_enets_ki67_max_percent",
                            strict=True, source=src),
        _primary_resected(case, src),
        _portal(case, src),
        _burden(case, th.transplant_max_burden_percent, "transplant_max_burden_percent", src),
        stab,
        _no_extrahepatic(case, src),
        _no_chd(case),
    ]


def unos_criteria(case: Case, th: Thresholds) -> list[CriterionResult]:
    """OPTN/UNOS 2015 NET MELD-exception guidance: age <= 60, Ki-67 <= 10%, primary resected >= 6 months before,
    liver-only, bilobar and not amenable to resection (a resectable patient is not a candidate), involvement < 50%
    (< 75% with refractory hormonal symptoms), stable >= 6 months, bilirubin low, no carcinoid heart disease."""
    p = case.patient
    d = p.disease
    src = OPTN_2015
    ref = case.procedure.date
    out = [
        CriterionResult("age", f"Age <= {th.board_unos_age_max_years:g} years",
                        "met" if p.age_years <= th.board_unos_age_max_years else "unmet", f"{p.age_years} years",
                        f"<= {th.board_unos_age_max_years:g} (board_unos_age_max_years)", src),
        well_differentiated(case, th, th.board_unos_ki67_max_percent, ki67_name="board_unos_ki67_max_percent",
                            source=src),
    ]
    months = th.board_transplant_primary_resected_min_months
    label = f"Primary resected >= {months:g} months before"
    thr = f">= {months:g} months (board_transplant_primary_resected_min_months)"
    if not d.primary_resected:
        out.append(CriterionResult("primary_resected", label, "unmet", "primary not resected", thr, src))
    elif d.primary_resection_date is None:
        out.append(CriterionResult("primary_resected", label, "unknown", "resected, date not given", thr, src,
                                   "disease.primary_resection_date"))
    else:
        m = _months_between(d.primary_resection_date, ref)
        out.append(CriterionResult("primary_resected", label, "met" if m >= months else "unmet",
                                   f"resected {d.primary_resection_date.isoformat()} ({m:.1f} months before)", thr,
                                   src))
    out.append(_portal(case, src))
    out.append(_no_extrahepatic(case, src))
    bilobar = d.liver_distribution == "bilobar"
    resectable = p.liver.r0_resection_feasible
    out.append(CriterionResult(
        "unresectable_bilobar", "Bilobar disease not amenable to resection",
        "met" if bilobar and not resectable else "unmet",
        f"{d.liver_distribution.replace('_', ' ')}, R0 resection {'feasible' if resectable else 'not feasible'}",
        "bilobar and unresectable", src, "resectable: resection, not transplant" if resectable else ""))
    sym = d.refractory_hormonal_symptoms
    limit = th.board_unos_max_burden_refractory_symptoms_percent if sym else th.board_unos_max_burden_percent
    b = d.liver_tumor_burden_percent
    note = "refractory hormonal symptoms: the wider limit applies" if sym else (
        "refractory hormonal symptoms not stated (disease.refractory_hormonal_symptoms)" if sym is None else "")
    status: Status = "met" if b < limit else "unmet"
    if status == "unmet" and sym is None and b < th.board_unos_max_burden_refractory_symptoms_percent:
        status = "unknown"  # the wider limit could apply: the case does not say
    out.append(CriterionResult(
        "liver_involvement", f"Liver involvement < {th.board_unos_max_burden_percent:g}% (< "
        f"{th.board_unos_max_burden_refractory_symptoms_percent:g}% with refractory hormonal symptoms)", status,
        f"{b:g}%", f"< {limit:g}% (board_unos_max_burden_percent / "
        "board_unos_max_burden_refractory_symptoms_percent)", src, note))
    stab = stability(case, th.transplant_min_stable_months, threshold_name="transplant_min_stable_months")
    out.append(CriterionResult(stab.key, stab.label, stab.status, stab.value, stab.threshold, src, stab.note))
    bili = p.labs.bilirubin_mg_dl
    out.append(CriterionResult("bilirubin", f"Bilirubin <= {th.board_transplant_bilirubin_max_mg_dl:g} mg/dL",
                               "met" if bili <= th.board_transplant_bilirubin_max_mg_dl else "unmet",
                               f"{bili:g} mg/dL", f"<= {th.board_transplant_bilirubin_max_mg_dl:g} mg/dL "
                               "(board_transplant_bilirubin_max_mg_dl)", src))
    out.append(_no_chd(case))
    return out


def staged_bilobar_tare(case: Case, th: Thresholds) -> list[PriorTreatment]:
    """Prior TARE sessions that, with the requested lobar or segmental TARE, expose both lobes within
    ``board_bilobar_tare_window_days``: the earlier TARE records (of the other lobe) inside the window. Empty when the
    request is not TARE, is whole-liver (WHOLE_LIVER_TARE covers it), or no such record exists."""
    from ..protocols.territory import LOBE_SEGMENTS

    proc = case.procedure
    if proc.kind != "TARE" or proc.territory.is_whole_liver:
        return []
    now = proc.territory.couinaud_segments
    now_lobes = {lobe for lobe, segs in LOBE_SEGMENTS.items() if now & segs}
    out = []
    for r in case.patient.prior_treatments:
        if r.kind != "TARE" or r.territory is None:
            continue
        if (proc.date - r.date).days > th.board_bilobar_tare_window_days:
            continue
        lobes = {lobe for lobe, segs in LOBE_SEGMENTS.items() if r.territory.couinaud_segments & segs}
        if (lobes | now_lobes) == set(LOBE_SEGMENTS) and (lobes ^ now_lobes):
            out.append(r)
    return sorted(out, key=lambda r: r.date)
