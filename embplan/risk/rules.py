"""The case-level risk rules: one function per flag code, ``rule_<code_lower>(case, th) -> list[Flag]``.

Each rule returns at most one flag (its most severe finding, the message naming every finding), reads its numbers
from :class:`embplan.thresholds.Thresholds`, and records in ``Flag.context`` the values that triggered it and the
thresholds used. :data:`CASE_RULES` lists them in order; :func:`assess` runs them all (the dose rules live in
:mod:`embplan.risk.dose_rules` and run inside ``plan()``).

Comparison conventions follow each rule's source wording: "> X" is strict (bilirubin > 2.0 fires at 2.01, not at
2.0), "< X" is strict, "X or more" is inclusive (ECOG >= 3, future liver remnant >= 30 %).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..protocols import standards_from_thresholds
from ..protocols.history import cumulative_doxorubicin_mg
from ..protocols.sequencing import SOULEN_CIRSE_2019
from ..thresholds import EANM_2022, MEZHIR_2011, RETNET, VAN_ROEKEL, Thresholds
from . import evidence as ev
from .case_facts import (
    EMBOLIZATION_KINDS,
    TRANSARTERIAL_CHEMO_OR_BLAND_KINDS,
    body_surface_area_m2,
    case_hepatic_reserve_fraction,
    effective_thresholds,
    portal_drainage,
    prior_tare,
)
from .coverage import untreated_disease_flag
from .eligibility import (
    ENETS_2016,
    FLR_SOURCE,
    MAZZAFERRO_2007_2016,
    NCCN_NET,
    all_met,
    milan_criteria,
    resection_criteria,
    staged_bilobar_tare,
)
from .flags import Flag, Severity, sort_flags
from .limits import lung_shunt_reduction

if TYPE_CHECKING:  # pragma: no cover
    from ..case import Case

__all__ = ["Rule", "CASE_RULES", "assess", "rule_names"] + [
    "rule_biliary_enteric_anastomosis", "rule_incompetent_sphincter", "rule_deb_tace_in_net",
    "rule_whole_liver_tare", "rule_carcinoid_crisis_risk", "rule_bilirubin_high", "rule_tumor_burden_high",
    "rule_portal_vein_thrombosis", "rule_performance_status", "rule_lab_limits", "rule_doxorubicin_cumulative",
    "rule_doxorubicin_session_high",
    "rule_lung_shunt_high", "rule_sequence_deviation", "rule_resection_candidate", "rule_transplant_candidate",
    "rule_prior_radioembolization", "rule_protocol_deviation", "rule_hepatic_reserve_low",
    "rule_untreated_disease", "rule_prior_liver_radiation",
]

Rule = Callable[["Case", Thresholds], list[Flag]]

_KIND_TEXT = {"TAE": "TAE", "TACE": "TACE", "DEB_TACE": "DEB-TACE", "TARE": "TARE"}


def _flag(code: str, severity: Severity, message: str, evidence: str, **context: Any) -> list[Flag]:
    return [Flag(code=code, severity=severity, message=message, evidence=evidence, context=context)]


# ---------------------------------------------------------------------------------------------------------------
# biliary
# ---------------------------------------------------------------------------------------------------------------
def rule_biliary_enteric_anastomosis(case: Case, th: Thresholds) -> list[Flag]:
    """Biliary-enteric anastomosis (Whipple, hepaticojejunostomy): bowel flora reach the bile ducts.

    + TAE/TACE/DEB-TACE -> warning (abscess 33 %, 21 % of those died; Mezhir 2011);
    + TARE -> caution (abscess about 7 %; Agahi 2022). Both: aggressive antibiotic and bowel prophylaxis.
    """
    kind = case.procedure.kind
    if not case.patient.biliary.biliary_enteric_anastomosis or kind not in EMBOLIZATION_KINDS:
        return []
    prophylaxis = (
        "give aggressive antibiotic and bowel prophylaxis (e.g. levofloxacin + metronidazole with a neomycin + "
        "erythromycin bowel preparation)"
    )
    if kind in TRANSARTERIAL_CHEMO_OR_BLAND_KINDS:
        return _flag(
            "BILIARY_ENTERIC_ANASTOMOSIS", Severity.WARNING,
            f"Biliary-enteric anastomosis with {_KIND_TEXT[kind]}: pyogenic liver abscess in 33% (11/34) of "
            "patients, and 21% of those died (Mezhir 2011). Prefer TARE (abscess about 7%) over TAE/TACE; if "
            f"{_KIND_TEXT[kind]} proceeds, {prophylaxis}.",
            f"{MEZHIR_2011}; {ev.AGAHI_2022}; {ev.ODISIO_2016}",
            procedure_kind=kind, biliary_enteric_anastomosis=True, abscess_rate_percent=33.0,
        )
    return _flag(
        "BILIARY_ENTERIC_ANASTOMOSIS", Severity.CAUTION,
        "Biliary-enteric anastomosis with TARE: liver abscess in about 7% (1/15) after TARE with a prior biliary "
        f"intervention (Agahi 2022), against 33% after TAE/TACE (Mezhir 2011): TARE is the preferred "
        f"embolization here; {prophylaxis}.",
        f"{ev.AGAHI_2022}; {MEZHIR_2011}; {ev.ODISIO_2016}",
        procedure_kind=kind, biliary_enteric_anastomosis=True, abscess_rate_percent=6.6,
    )


def rule_incompetent_sphincter(case: Case, th: Thresholds) -> list[Flag]:
    """Sphincter of Oddi not intact (sphincterotomy) or a biliary stent, without an anastomosis (that case is
    BILIARY_ENTERIC_ANASTOMOSIS), + any embolization -> caution (abscess 2/21, about 10 %; Mezhir 2011)."""
    b = case.patient.biliary
    kind = case.procedure.kind
    if b.biliary_enteric_anastomosis or kind not in EMBOLIZATION_KINDS:
        return []
    if b.sphincter_of_oddi_intact and not b.biliary_stent:
        return []
    why = " and ".join(
        w for w, on in (("sphincter of Oddi not intact", not b.sphincter_of_oddi_intact),
                        ("biliary stent", b.biliary_stent)) if on
    )
    return _flag(
        "INCOMPETENT_SPHINCTER", Severity.CAUTION,
        f"Incompetent sphincter of Oddi ({why}) with {_KIND_TEXT[kind]}: liver abscess in about 10% (2/21) of "
        "patients after embolization (Mezhir 2011; 6.6% after TARE, Agahi 2022): give antibiotic prophylaxis and "
        "watch for abscess.",
        f"{MEZHIR_2011}; {ev.AGAHI_2022}",
        procedure_kind=kind, sphincter_of_oddi_intact=b.sphincter_of_oddi_intact, biliary_stent=b.biliary_stent,
        abscess_rate_percent=10.0,
    )


# ---------------------------------------------------------------------------------------------------------------
# procedure choice
# ---------------------------------------------------------------------------------------------------------------
def rule_deb_tace_in_net(case: Case, th: Thresholds) -> list[Flag]:
    """Any DEB-TACE -> contraindication: no role in NET (RETNET DEB arm closed; bilomas 54 %; OR about 9.8)."""
    if case.procedure.kind != "DEB_TACE":
        return []
    return _flag(
        "DEB_TACE_IN_NET", Severity.CONTRAINDICATION,
        "DEB-TACE has no role in NET liver metastases: the RETNET DEB-TACE arm was closed for biliary injury "
        "(grade 3 adverse events in 4/10 patients); bilomas in 54% of patients (Bhagat 2013); drug-eluting beads "
        "raised the odds of biloma or infarct about 9.8-fold (Guiu 2012). Use TAE, lipiodol TACE or TARE.",
        f"{RETNET}; {ev.BHAGAT_2013}; {ev.GUIU_2012}",
        procedure_kind="DEB_TACE",
    )


def rule_whole_liver_tare(case: Case, th: Thresholds) -> list[Flag]:
    """TARE with whole-liver scope -> warning: long-term cirrhosis-like morphology and portal hypertension.

    Staged bilobar TARE (issue 11): a lobar or segmental TARE that, with an earlier TARE of the other lobe within
    ``board_bilobar_tare_window_days``, exposes the whole liver -> the same warning, naming the earlier session and
    its recorded liver dose (the board's liver section sums the doses per territory)."""
    proc = case.procedure
    if proc.kind != "TARE":
        return []
    if proc.territory.scope != "whole_liver":
        staged = staged_bilobar_tare(case, th)
        if not staged:
            return []
        earlier = "; ".join(
            f"{r.territory.describe() if r.territory else '?'} TARE on {r.date.isoformat()} "
            f"({(proc.date - r.date).days} days before"
            + (f", non-tumour liver {r.normal_liver_dose_gy:g} Gy" if r.normal_liver_dose_gy is not None else
               ", dose map given (summed in the plan)" if r.dose_file is not None else
               ", liver dose not recorded") + ")" for r in staged)
        return _flag(
            "WHOLE_LIVER_TARE", Severity.WARNING,
            f"Staged bilobar TARE: this {proc.territory.describe()} TARE follows {earlier}, within "
            f"{th.board_bilobar_tare_window_days} days: the whole liver is exposed, as after whole-liver TARE "
            "(cirrhosis-like morphology 56% after whole-liver vs 27% after one lobe, Su 2017; chronic hepatotoxicity "
            "13%, Currie 2019). Weigh the interval, the cumulative liver dose and a non-radiation option for this lobe.",
            f"{ev.SU_2017}; {ev.CURRIE_2019}; {ev.ROBERSON_REILD}",
            procedure_kind="TARE", scope=proc.territory.scope, staged_bilobar=True, device=proc.device,
            earlier_tare_dates=[r.date.isoformat() for r in staged],
            earlier_normal_liver_doses_gy=[r.normal_liver_dose_gy for r in staged],
            bilobar_tare_window_days=th.board_bilobar_tare_window_days,
        )
    return _flag(
        "WHOLE_LIVER_TARE", Severity.WARNING,
        "Whole-liver TARE in a single session: cirrhosis-like morphology in 56% of NET patients after whole-liver "
        "vs 27% after one lobe (Su 2017), 29% after resin (Tomozawa 2018); chronic hepatotoxicity in 13% with 5% "
        "deaths (Currie 2019). Patients with NET live long: prefer staged lobar or segmental treatment.",
        f"{ev.SU_2017}; {ev.TOMOZAWA_2018}; {ev.CURRIE_2019}; {ev.ROBERSON_REILD}",
        procedure_kind="TARE", scope="whole_liver", device=proc.device,
    )


def rule_carcinoid_crisis_risk(case: Case, th: Thresholds) -> list[Flag]:
    """Functional syndrome + any embolization -> caution (crisis about 6 %); carcinoid heart disease -> warning
    (echocardiography and cardiology review first)."""
    d = case.patient.disease
    kind = case.procedure.kind
    if kind not in EMBOLIZATION_KINDS:
        return []
    functional = d.functional_syndrome != "none"
    heart = bool(d.carcinoid_heart_disease)
    if not functional and not heart:
        return []
    parts = []
    if functional:
        parts.append(
            f"Functional NET ({d.functional_syndrome} syndrome) with {_KIND_TEXT[kind]}: hormonal crisis in about "
            "6% of liver-directed procedures, haemodynamic instability in 26% (Kwon 2019): plan somatostatin-"
            "analogue cover and an anaesthesia team ready to treat a crisis."
        )
    if heart:
        parts.append(
            "Carcinoid heart disease: obtain echocardiography and a cardiology review before embolization (right-"
            "heart failure raises the procedural and anaesthetic risk; tumour lysis releases vasoactive amines)."
        )
    return _flag(
        "CARCINOID_CRISIS_RISK", Severity.WARNING if heart else Severity.CAUTION, " ".join(parts),
        f"{ev.KWON_2019}; {ev.UK_NET_CHD}",
        procedure_kind=kind, functional_syndrome=d.functional_syndrome, carcinoid_heart_disease=heart,
    )


# ---------------------------------------------------------------------------------------------------------------
# liver function and patient status
# ---------------------------------------------------------------------------------------------------------------
def rule_bilirubin_high(case: Case, th: Thresholds) -> list[Flag]:
    """Bilirubin > 2.0 mg/dL -> contraindication for TARE, warning for TAE/TACE/DEB-TACE; glass TARE with
    bilirubin > 1.1 mg/dL (and <= 2.0) -> caution: the whole non-tumour liver limit drops from 75 to 50 Gy."""
    bili = case.patient.labs.bilirubin_mg_dl
    proc = case.procedure
    kind = proc.kind
    ctx: dict[str, Any] = {"bilirubin_mg_dl": bili, "bilirubin_high_mg_dl": th.bilirubin_high_mg_dl,
                           "procedure_kind": kind}
    if bili > th.bilirubin_high_mg_dl:
        if kind == "TARE":
            return _flag(
                "BILIRUBIN_HIGH", Severity.CONTRAINDICATION,
                f"Bilirubin {bili} mg/dL > {th.bilirubin_high_mg_dl} mg/dL: TARE is contraindicated unless a "
                "reversible cause (biliary obstruction) is found and treated (risk of radioembolization-induced "
                "liver disease).",
                f"{VAN_ROEKEL}; {EANM_2022}; {ev.ROBERSON_REILD}", **ctx,
            )
        return _flag(
            "BILIRUBIN_HIGH", Severity.WARNING,
            f"Bilirubin {bili} mg/dL > {th.bilirubin_high_mg_dl} mg/dL with {_KIND_TEXT[kind]}: high risk of liver "
            "decompensation after embolization; exclude a reversible cause (biliary obstruction) and limit the "
            "treated territory (segmental or lobar).",
            f"{VAN_ROEKEL}; {ev.WJH_2015}", **ctx,
        )
    if kind == "TARE" and proc.device == "glass" and bili > th.bilirubin_glass_caution_mg_dl:
        return _flag(
            "BILIRUBIN_HIGH", Severity.CAUTION,
            f"Bilirubin {bili} mg/dL > {th.bilirubin_glass_caution_mg_dl} mg/dL with glass TARE: the whole "
            f"non-tumour liver dose limit drops from {th.glass_normal_liver_limit_gy:g} to "
            f"{th.glass_normal_liver_limit_high_bilirubin_gy:g} Gy (EANM 2022).",
            f"{EANM_2022}, Table 2",
            bilirubin_glass_caution_mg_dl=th.bilirubin_glass_caution_mg_dl,
            normal_liver_limit_gy=th.glass_normal_liver_limit_high_bilirubin_gy,
            device="glass", **ctx,
        )
    return []


def rule_tumor_burden_high(case: Case, th: Thresholds) -> list[Flag]:
    """Liver tumour burden > 50 % -> warning; > 70 % -> contraindication for TARE, warning otherwise."""
    burden = case.patient.disease.liver_tumor_burden_percent
    kind = case.procedure.kind
    ctx = {"liver_tumor_burden_percent": burden, "procedure_kind": kind,
           "tumor_burden_warning_percent": th.tumor_burden_warning_percent,
           "tumor_burden_contraindication_percent": th.tumor_burden_contraindication_percent}
    evidence = f"{ev.CURRIE_2019}; ACR-type list [U: secondary source]; {VAN_ROEKEL}"
    if burden > th.tumor_burden_contraindication_percent:
        if kind == "TARE":
            return _flag(
                "TUMOR_BURDEN_HIGH", Severity.CONTRAINDICATION,
                f"Liver tumour burden {burden}% > {th.tumor_burden_contraindication_percent:g}%: TARE is "
                "contraindicated (too little functioning liver to absorb the radiation; liver failure risk).",
                evidence, **ctx,
            )
        return _flag(
            "TUMOR_BURDEN_HIGH", Severity.WARNING,
            f"Liver tumour burden {burden}% > {th.tumor_burden_contraindication_percent:g}% with {_KIND_TEXT[kind]}: "
            "high risk of liver failure after embolization; treat in small, staged territories.",
            evidence, **ctx,
        )
    if burden > th.tumor_burden_warning_percent:
        return _flag(
            "TUMOR_BURDEN_HIGH", Severity.WARNING,
            f"Liver tumour burden {burden}% > {th.tumor_burden_warning_percent:g}%: risk factor for chronic "
            "hepatotoxicity after radioembolization (Currie 2019) and for liver failure after embolization; "
            "stage the treatment.",
            evidence, **ctx,
        )
    return []


def rule_portal_vein_thrombosis(case: Case, th: Thresholds) -> list[Flag]:
    """Main portal vein thrombosis + TAE/TACE/DEB-TACE -> contraindication (the liver then lives on its arterial
    supply); + TARE -> caution (relative contraindication outside HCC; microspheres are barely embolic)."""
    if not case.patient.disease.main_portal_vein_thrombosis:
        return []
    kind = case.procedure.kind
    if kind in TRANSARTERIAL_CHEMO_OR_BLAND_KINDS:
        return _flag(
            "PORTAL_VEIN_THROMBOSIS", Severity.CONTRAINDICATION,
            f"Main portal vein thrombosis with {_KIND_TEXT[kind]}: occluding the hepatic artery of a liver without "
            "portal flow risks liver infarction and failure. Consider TARE (minimally embolic) instead.",
            f"{ev.WJH_2015}; {VAN_ROEKEL}", procedure_kind=kind, main_portal_vein_thrombosis=True,
        )
    if kind == "TARE":
        return _flag(
            "PORTAL_VEIN_THROMBOSIS", Severity.CAUTION,
            "Main portal vein thrombosis with TARE: a relative contraindication outside HCC; Y-90 microspheres are "
            "minimally embolic, but check liver function and keep the treated territory small.",
            VAN_ROEKEL, procedure_kind=kind, main_portal_vein_thrombosis=True,
        )
    return []


def rule_performance_status(case: Case, th: Thresholds) -> list[Flag]:
    """ECOG >= 3 -> warning (TARE is indicated at ECOG <= 2)."""
    ecog = case.patient.ecog
    if ecog < th.ecog_warning_min:
        return []
    return _flag(
        "PERFORMANCE_STATUS", Severity.WARNING,
        f"ECOG performance status {ecog} (>= {th.ecog_warning_min}): liver-directed therapy is indicated at ECOG "
        "<= 2; weigh the expected benefit against the procedural risk.",
        f"{VAN_ROEKEL}; {ev.KENNEDY_2014}", ecog=ecog, ecog_warning_min=th.ecog_warning_min,
    )


def rule_lab_limits(case: Case, th: Thresholds) -> list[Flag]:
    """Platelets < 50 x10^9/L, INR > 1.5, WBC < 2.0 x10^9/L, eGFR < 35 mL/min (iodinated contrast) -> caution,
    naming each value."""
    labs = case.patient.labs
    findings: list[str] = []
    ctx: dict[str, Any] = {}
    checks = (
        ("platelets_10e9_per_l", labs.platelets_10e9_per_l, "<", th.platelets_min_10e9_per_l,
         "platelets_min_10e9_per_l", "platelets {v} x10^9/L < {t} (bleeding at the puncture site)"),
        ("inr", labs.inr, ">", th.inr_max, "inr_max", "INR {v} > {t} (bleeding)"),
        ("wbc_10e9_per_l", labs.wbc_10e9_per_l, "<", th.wbc_min_10e9_per_l, "wbc_min_10e9_per_l",
         "WBC {v} x10^9/L < {t} (infection)"),
        ("egfr_ml_min", labs.egfr_ml_min, "<", th.egfr_min_ml_min, "egfr_min_ml_min",
         "eGFR {v} mL/min < {t} (iodinated contrast: hydrate, minimise contrast)"),
    )
    for name, value, op, limit, th_name, text in checks:
        hit = value < limit if op == "<" else value > limit
        if hit:
            findings.append(text.format(v=value, t=limit))
            ctx[name] = value
            ctx[th_name] = limit
    if not findings:
        return []
    return _flag(
        "LAB_LIMITS", Severity.CAUTION, "Laboratory values outside the limits for embolization: "
        + "; ".join(findings) + ".",
        f"{VAN_ROEKEL} [U: column read from flattened text]", out_of_range=sorted(ctx.keys() & {
            "platelets_10e9_per_l", "inr", "wbc_10e9_per_l", "egfr_ml_min"}), **ctx,
    )


def rule_doxorubicin_cumulative(case: Case, th: Thresholds) -> list[Flag]:
    """Lifetime doxorubicin (earlier TACE/DEB-TACE records plus the planned dose) > 450 mg/m2 -> warning, when the
    requested procedure gives doxorubicin (TAE, TARE or another drug add none: silent).

    Body surface area: Du Bois (the case's ``patient.body_surface_area_m2`` when it provides one). Records without
    a recorded dose count 0 and are named in the message (the sum is then a lower bound).
    """
    prior_mg, unknown = cumulative_doxorubicin_mg(case.patient.prior_treatments)
    proc = case.procedure
    planned_mg = 0.0
    drug = getattr(proc, "drug", None)
    if drug is not None and drug.name == "doxorubicin":
        planned_mg = float(drug.dose_mg)
    if planned_mg <= 0:  # this procedure adds no doxorubicin: its risk does not change
        return []
    total_mg = prior_mg + planned_mg
    p = case.patient
    bsa = getattr(p, "body_surface_area_m2", None)
    if not isinstance(bsa, int | float):
        bsa = body_surface_area_m2(p.weight_kg, p.height_cm)
    per_m2 = total_mg / bsa
    if per_m2 <= th.doxorubicin_lifetime_limit_mg_m2:
        return []
    lower = f" ({unknown} earlier chemoembolization record(s) without a dose: this is a lower bound)" if unknown else ""
    return _flag(
        "DOXORUBICIN_CUMULATIVE", Severity.WARNING,
        f"Lifetime doxorubicin {total_mg:.0f} mg ({prior_mg:.0f} mg before + {planned_mg:.0f} mg planned) = "
        f"{per_m2:.0f} mg/m2 of body surface ({bsa:.2f} m2) > {th.doxorubicin_lifetime_limit_mg_m2:g} mg/m2{lower}: "
        "cardiomyopathy risk; consider TAE or TARE, or check the ejection fraction.",
        ev.DOXORUBICIN_LABEL,
        prior_doxorubicin_mg=prior_mg, planned_doxorubicin_mg=planned_mg, total_doxorubicin_mg=total_mg,
        body_surface_area_m2=round(bsa, 4), doxorubicin_mg_m2=per_m2, records_without_dose=unknown,
        doxorubicin_lifetime_limit_mg_m2=th.doxorubicin_lifetime_limit_mg_m2,
    )


def rule_doxorubicin_session_high(case: Case, th: Thresholds) -> list[Flag]:
    """One session's doxorubicin above ``doxorubicin_session_limit_mg`` (150 mg) -> warning (issue 12: a tenfold
    slip such as 500 for 50 is refused by :mod:`embplan.plausibility` above 300 mg; between the two it is flagged,
    beyond the caution of PROTOCOL_DEVIATION)."""
    drug = getattr(case.procedure, "drug", None)
    if drug is None or drug.name != "doxorubicin" or drug.dose_mg <= th.doxorubicin_session_limit_mg:
        return []
    return _flag(
        "DOXORUBICIN_SESSION_HIGH", Severity.WARNING,
        f"Doxorubicin {drug.dose_mg:g} mg in one session > {th.doxorubicin_session_limit_mg:g} mg, the highest "
        f"per-session dose in practice (standard {th.protocol_doxorubicin_mg:g} mg): check the dose (a slip of "
        "units or digits?) and the cardiotoxicity budget.",
        ev.DOXORUBICIN_LABEL + "; Lammer et al., PRECISION V, Cardiovasc Intervent Radiol 2010 (at most 150 mg per "
        "procedure) [U: not in EVIDENCE.md]",
        doxorubicin_mg=float(drug.dose_mg), doxorubicin_session_limit_mg=th.doxorubicin_session_limit_mg,
    )


# ---------------------------------------------------------------------------------------------------------------
# radioembolization specifics
# ---------------------------------------------------------------------------------------------------------------
def rule_lung_shunt_high(case: Case, th: Thresholds) -> list[Flag]:
    """Lung shunt from the case's dosimetry inputs (TARE): see :func:`embplan.risk.limits.lung_shunt_reduction`.
    Silent when the case gives no lung shunt fraction (the planner checks the image-derived one)."""
    if case.procedure.kind != "TARE":
        return []
    _, flag = lung_shunt_reduction(case, thresholds=th)
    return [flag] if flag is not None else []


def rule_prior_radioembolization(case: Case, th: Thresholds) -> list[Flag]:
    """Any earlier TARE -> caution; its lung and liver doses count toward the cumulative limits."""
    prior = prior_tare(case)
    if prior.count == 0:
        return []
    remaining = max(0.0, th.lung_dose_cumulative_limit_gy - prior.lung_dose_gy)
    unknown = (
        f" {prior.lung_dose_unknown_count} earlier session(s) have no recorded lung dose: retrieve them (counted "
        "as 0 Gy here)." if prior.lung_dose_unknown_count else ""
    )
    liver = (
        f" Recorded non-tumour liver doses: {', '.join(f'{d:g}' for d in prior.normal_liver_doses_gy)} Gy."
        if prior.normal_liver_doses_gy else ""
    )
    return _flag(
        "PRIOR_RADIOEMBOLIZATION", Severity.CAUTION,
        f"{prior.count} earlier radioembolization session(s): earlier radioembolization is a risk factor for "
        f"radioembolization-induced liver disease. Lung dose so far {prior.lung_dose_gy:g} Gy of the "
        f"{th.lung_dose_cumulative_limit_gy:g} Gy cumulative limit ({remaining:g} Gy left).{unknown}{liver} Account "
        "for the earlier liver dose in the territory to be treated.",
        f"{EANM_2022}; {ev.ROBERSON_REILD}",
        prior_tare_count=prior.count, prior_lung_dose_gy=prior.lung_dose_gy,
        prior_lung_dose_unknown_count=prior.lung_dose_unknown_count,
        prior_normal_liver_doses_gy=list(prior.normal_liver_doses_gy),
        lung_dose_cumulative_limit_gy=th.lung_dose_cumulative_limit_gy, lung_remaining_gy=remaining,
    )


def rule_hepatic_reserve_low(case: Case, th: Thresholds) -> list[Flag]:
    """TARE whose perfused volume leaves < 30 % of the liver untreated -> caution.

    Reserve = 1 - perfused_volume_ml / liver_volume_ml (whole-liver scope: 0). Silent when the case gives no
    volumes (the planner checks the image-derived reserve; see ``assess_dose``).
    """
    reserve = case_hepatic_reserve_fraction(case)
    if reserve is None or reserve >= th.hepatic_reserve_min_fraction:
        return []
    return [hepatic_reserve_flag(case, reserve, th)]


def hepatic_reserve_flag(case: Case, reserve: float, th: Thresholds) -> Flag:
    """The HEPATIC_RESERVE_LOW flag for an untreated-liver fraction below the threshold (shared with the dose side)."""
    glass = case.procedure.kind == "TARE" and case.procedure.device == "glass"
    extra = (
        f" With glass microspheres the perfused non-tumour liver must stay below "
        f"{th.glass_perfused_normal_liver_limit_low_reserve_gy:g} Gy." if glass else ""
    )
    return Flag(
        code="HEPATIC_RESERVE_LOW", severity=Severity.CAUTION,
        message=(
            f"The treated territory leaves {reserve:.0%} of the liver untreated (< "
            f"{th.hepatic_reserve_min_fraction:.0%}): too little reserve for ablative (lobectomy-level) doses; "
            f"prefer a smaller territory or staged treatment.{extra}"
        ),
        evidence=f"{EANM_2022}; DOSISPHERE-01 eligibility (hepatic reserve >= 30%)",
        context={"hepatic_reserve_fraction": reserve, "hepatic_reserve_min_fraction": th.hepatic_reserve_min_fraction,
                 "scope": case.procedure.territory.scope},
    )


# ---------------------------------------------------------------------------------------------------------------
# plan and protocol
# ---------------------------------------------------------------------------------------------------------------
def rule_sequence_deviation(case: Case, th: Thresholds) -> list[Flag]:
    """The request skips a step of the TAE -> TACE -> TARE ladder without a justification (or is off the ladder:
    DEB-TACE) -> info. The ladder and its accepted justifications live in :mod:`embplan.protocols.sequencing`."""
    result = case.sequence()  # the requested territory's own records (issue 11), biliary risks included
    if not result.is_deviation:
        return []
    kind = case.procedure.kind
    if not result.on_ladder:
        head = ""
    elif result.below_biliary_step:
        why = ("main portal vein thrombosis (see PORTAL_VEIN_THROMBOSIS)"
               if case.patient.disease.main_portal_vein_thrombosis else
               "a biliary-enteric anastomosis or bile-duct instrumentation (see BILIARY_ENTERIC_ANASTOMOSIS / "
               "INCOMPETENT_SPHINCTER)")
        head = f"{_KIND_TEXT[kind]} with {why}: the ladder's step is TARE; document the reason. "
    else:
        head = (f"{_KIND_TEXT[kind]} skips {', '.join(result.skipped)} of the TAE -> TACE -> TARE ladder without a "
                "recognised justification: document the reason. ")
    return _flag(
        "SEQUENCE_DEVIATION", Severity.INFO,
        f"{head}{result.explanation}",
        f"{SOULEN_CIRSE_2019}; {ev.ENETS_2022}",
        requested_kind=kind, position=result.position.step, position_refractory=result.position.refractory,
        skipped=list(result.skipped), expected_step=result.expected_step,
        suggested_next=result.suggested_next_code,
    )


def rule_protocol_deviation(case: Case, th: Thresholds) -> list[Flag]:
    """Departures from the standard protocol (the RETNET arms): doxorubicin other than 50 mg, iodized oil outside
    10-20 mL, particles outside 50-500 um, stasis outside 2-5 heartbeats (and the other checks of
    ``procedure.deviations``) -> caution, naming each parameter. The standard's numbers come from ``th``."""
    proc = case.procedure
    standard = standards_from_thresholds(th)[proc.kind]
    devs = list(proc.deviations(standard))
    if not devs:
        return []
    return _flag(
        "PROTOCOL_DEVIATION", Severity.CAUTION,
        "Departure from the standard protocol: " + "; ".join(f"{d.path}: {d.message}" for d in devs) + ".",
        "; ".join(dict.fromkeys(d.source for d in devs)),
        deviations=[{"parameter": d.path, "value": d.value, "standard": d.standard} for d in devs],
        parameters=[d.path for d in devs],
    )


# ---------------------------------------------------------------------------------------------------------------
# candidates for curative treatment
# ---------------------------------------------------------------------------------------------------------------
def rule_resection_candidate(case: Case, th: Thresholds) -> list[Flag]:
    """Every curative-resection criterion met (:func:`embplan.risk.eligibility.resection_criteria`: R0 feasible,
    future liver remnant >= 30 %, ECOG 0-2, no unresectable extrahepatic disease, well differentiated G1/G2 with
    the Ki-67 read) -> info. An unknown criterion (e.g. no remnant given) does not qualify: the flag says what is
    known, and the tumour board's resection option (the same criteria) says what is missing."""
    crits = resection_criteria(case, th)
    if not all_met(crits):
        return []
    by = {c.key: c for c in crits}
    return _flag(
        "RESECTION_CANDIDATE", Severity.INFO,
        f"Every curative-resection criterion is met (R0 feasible, future liver remnant "
        f"{by['future_liver_remnant'].value} >= {th.flr_min_percent:g}%, {by['performance_status'].value}, "
        f"{by['extrahepatic_disease'].value} extrahepatic disease, {by['grade'].value}): surgery is the option that "
        "can cure; discuss at the tumour board before liver-directed therapy.",
        f"{NCCN_NET}; {ENETS_2016}; {FLR_SOURCE}",
        r0_resection_feasible=True, future_liver_remnant=by["future_liver_remnant"].value,
        future_liver_remnant_how=by["future_liver_remnant"].note, flr_min_percent=th.flr_min_percent,
        differentiation=case.patient.disease.differentiation, ecog=case.patient.ecog,
        criteria={c.key: c.status for c in crits},
    )


def rule_transplant_candidate(case: Case, th: Thresholds) -> list[Flag]:
    """Every Milan-NET criterion met (:func:`embplan.risk.eligibility.milan_criteria`: age, G1/G2 with Ki-67,
    primary resected and portally drained, involvement < 50 %, stable >= 6 months from the history, no extrahepatic
    disease, no carcinoid heart disease) -> info. Unknown stability does not qualify. With TARE the message notes the
    long-term liver injury. The tumour board's Milan option is built from the same criteria."""
    p = case.patient
    d = p.disease
    crits = milan_criteria(case, th)
    if not all_met(crits):
        return []
    by = {c.key: c for c in crits}
    drainage, how = portal_drainage(case)
    tare = (
        " TARE may cause long-term liver injury (cirrhosis-like morphology, portal hypertension: Su 2017, Currie "
        "2019) that can compromise a later transplant: weigh this before radioembolization."
        if case.procedure.kind == "TARE" else ""
    )
    return _flag(
        "TRANSPLANT_CANDIDATE", Severity.INFO,
        f"Meets every Milan-NET criterion (age {p.age_years} < {th.transplant_age_limit_years:g}, {by['grade'].value}, "
        f"primary resected and portally drained ({how}), liver involvement {d.liver_tumor_burden_percent}% < "
        f"{th.transplant_max_burden_percent:g}%, no extrahepatic disease, {by['stable_disease'].value}, no carcinoid "
        f"heart disease): refer for a transplant evaluation (see the board's ENETS and UNOS criteria).{tare}",
        MAZZAFERRO_2007_2016 + (f"; {ev.SU_2017}; {ev.CURRIE_2019}" if tare else ""),
        age_years=p.age_years, transplant_age_limit_years=th.transplant_age_limit_years, grade=d.grade,
        portal_drainage=how, liver_tumor_burden_percent=d.liver_tumor_burden_percent,
        transplant_max_burden_percent=th.transplant_max_burden_percent,
        stable_disease_months=d.stable_disease_months, stability=by["stable_disease"].value,
        transplant_min_stable_months=th.transplant_min_stable_months, procedure_kind=case.procedure.kind,
    )


def rule_untreated_disease(case: Case, th: Thresholds) -> list[Flag]:
    """Case lesions wholly outside the requested procedure's territory -> caution, naming them (the planner adds
    the tumours its dose map finds outside the perfused territory: :func:`embplan.risk.coverage.untreated_disease_flag`)."""
    flag = untreated_disease_flag(case, None)
    return [flag] if flag is not None else []


def rule_prior_liver_radiation(case: Case, th: Thresholds) -> list[Flag]:
    """Earlier PRRT (systemic: the whole liver) or external-beam radiotherapy of the liver (an EBRT record with a
    liver territory) + TARE -> caution: both reduce the liver's reserve and are REILD risk factors; TARE combined with
    PRRT has no evidence for or against it (the seed); fatal REILD 2 % after PRRT (Braat 2019)."""
    if case.procedure.kind != "TARE":
        return []
    prior = case.patient.prior_treatments
    prrt = sorted((r for r in prior if r.kind == "PRRT"), key=lambda r: r.date)
    ebrt = sorted((r for r in prior if r.kind == "EBRT" and r.territory is not None), key=lambda r: r.date)
    if not prrt and not ebrt:
        return []
    parts = []
    if prrt:
        parts.append(f"PRRT on {', '.join(r.date.isoformat() for r in prrt)}")
    if ebrt:
        parts.append("liver EBRT on " + ", ".join(f"{r.date.isoformat()} ({r.territory.describe()})"  # type: ignore[union-attr]
                                                 for r in ebrt))
    return _flag(
        "PRIOR_LIVER_RADIATION", Severity.CAUTION,
        f"Earlier liver radiation ({'; '.join(parts)}) before TARE: reduced liver reserve and a risk factor for "
        "radioembolization-induced liver disease (fatal REILD 2% after PRRT, Braat 2019). TARE combined with PRRT: no "
        "evidence for or against. Keep the treated territory lobar or smaller and the non-tumour liver dose low.",
        f"{_BRAAT_2019}; {ev.ROBERSON_REILD}",
        prior_prrt_dates=[r.date.isoformat() for r in prrt], prior_liver_ebrt_dates=[r.date.isoformat() for r in ebrt],
    )


_BRAAT_2019 = ("Braat AJAT et al., Eur J Nucl Med Mol Imaging 2019 (radioembolization after PRRT, n=44: fatal REILD "
               "2%; grade 3-4 laboratory toxicity <= 10%)")


#: Every case-level rule, in the order they run (the plan records their names).
CASE_RULES: tuple[Rule, ...] = (
    rule_deb_tace_in_net,
    rule_biliary_enteric_anastomosis,
    rule_incompetent_sphincter,
    rule_whole_liver_tare,
    rule_carcinoid_crisis_risk,
    rule_bilirubin_high,
    rule_tumor_burden_high,
    rule_portal_vein_thrombosis,
    rule_performance_status,
    rule_lab_limits,
    rule_doxorubicin_cumulative,
    rule_doxorubicin_session_high,
    rule_lung_shunt_high,
    rule_prior_radioembolization,
    rule_hepatic_reserve_low,
    rule_sequence_deviation,
    rule_protocol_deviation,
    rule_resection_candidate,
    rule_transplant_candidate,
    rule_untreated_disease,
    rule_prior_liver_radiation,
)


def rule_names() -> list[str]:
    """Names of the case-level rules :func:`assess` runs (for the plan's record)."""
    return [r.__name__ for r in CASE_RULES]


def assess(case: Case, thresholds: Thresholds | None = None) -> list[Flag]:
    """Every case-level risk flag for ``case``, most severe first (then by code).

    ``thresholds``: a base set (e.g. a site configuration; defaults when None); the case's own ``thresholds``
    overrides apply on top. The dose rules (LUNG_DOSE_LIMIT, NON_TUMOR_LIVER_DOSE_HIGH, TUMOR_DOSE_LOW) need a
    dosimetry result: see :func:`embplan.risk.assess_dose`.
    """
    th = effective_thresholds(case, thresholds)
    flags: list[Flag] = []
    for rule in CASE_RULES:
        flags.extend(rule(case, th))
    return sort_flags(flags)
