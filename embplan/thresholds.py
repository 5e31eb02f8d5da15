"""Every clinical number the risk rules and the dose limits use, with its default, unit and source.

Thresholds are data: a case (``"thresholds": {...}``) or a site configuration may override any field through
:meth:`Thresholds.with_overrides`, and the plan records the values used (:meth:`Thresholds.describe`).

Sources are cited in each field's ``description``; ``[U]`` marks a number not verified at its primary source (as in
EVIDENCE.md): treat those as site-adjustable defaults.

Comparison conventions (each rule documents its own; they follow the wording of the source):
- "> X" fires strictly above X (bilirubin > 2.0 mg/dL, lung dose > 30 Gy, burden > 50 %, LSF > 20 %);
- "< X" fires strictly below X (platelets < 50, eGFR < 35, hepatic reserve < 30 %, tumour dose < target);
- "X or more" fires at X (ECOG >= 3; future liver remnant >= 30 % qualifies for resection).

This module sits below ``embplan.case`` (a case validates its overrides at load time) and imports only
``embplan.errors``.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import CaseError

__all__ = ["Thresholds", "EANM_2022", "VAN_ROEKEL", "MEZHIR_2011", "RETNET"]

# Citations shared by several fields (and reused by the risk rules' evidence strings).
EANM_2022 = (
    "Weber M, Lam M, Chiesa C, et al. EANM procedure guideline for the treatment of liver cancer and liver "
    "metastases with intra-arterial radioactive compounds. Eur J Nucl Med Mol Imaging 2022"
)
VAN_ROEKEL = "van Roekel C, PhD thesis (Utrecht), Table 1 (patient selection for radioembolization)"
MEZHIR_2011 = "Mezhir JJ et al., J Vasc Interv Radiol 2011 (pyogenic liver abscess after hepatic artery embolization)"
RETNET = "RETNET trial standard arms (Soulen, CIRSE 2019)"


def _field(default: float, unit: str, source: str, **constraints: Any) -> Any:
    """A threshold field: default, unit (stored in the JSON schema extras) and source citation."""
    return Field(default, description=source, json_schema_extra={"unit": unit}, **constraints)


class Thresholds(BaseModel):
    """Every clinical threshold embplan uses: default, unit (in the name) and source (the field description).

    Build the effective set with ``Thresholds.with_overrides({...})``; it validates each value and the
    cross-field sanity checks (e.g. a caution band lies below its contraindication band).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, validate_default=True)

    # ---- lung (LUNG_DOSE_LIMIT) ------------------------------------------------------------------
    lung_dose_session_limit_gy: float = _field(
        30.0, "Gy", f"Lung absorbed dose per session must not exceed 30 Gy ({EANM_2022}; {VAN_ROEKEL}).", gt=0, le=200
    )
    lung_dose_cumulative_limit_gy: float = _field(
        50.0, "Gy", f"Cumulative lung absorbed dose over all sessions must not exceed 50 Gy ({EANM_2022}).",
        gt=0, le=500,
    )

    # ---- lung shunt fraction (LUNG_SHUNT_HIGH) ---------------------------------------------------------
    lsf_resin_reduce_low_fraction: float = _field(
        0.10, "fraction",
        "Resin: lung shunt 10-15 % (inclusive) -> reduce the activity by 20 % (van Roekel thesis p.41, after the "
        "SIR-Spheres IFU [U: IFU not retrieved verbatim]).", gt=0, lt=1,
    )
    lsf_resin_reduce_high_fraction: float = _field(
        0.15, "fraction", "Resin: lung shunt above 15 % and up to 20 % -> reduce the activity by 40 % (van Roekel "
        "thesis p.41 [U: IFU not retrieved verbatim]).", gt=0, lt=1,
    )
    lsf_resin_contraindication_fraction: float = _field(
        0.20, "fraction", "Resin: lung shunt above 20 % -> do not treat (van Roekel thesis p.41; Taranis warns at "
        "> 20 %).", gt=0, lt=1,
    )
    resin_activity_reduction_low_fraction: float = _field(
        0.20, "fraction", "Resin activity reduction for a lung shunt in the low band (van Roekel thesis p.41 [U]).",
        ge=0, lt=1,
    )
    resin_activity_reduction_high_fraction: float = _field(
        0.40, "fraction", "Resin activity reduction for a lung shunt in the high band (van Roekel thesis p.41 [U]).",
        ge=0, lt=1,
    )
    lsf_glass_caution_fraction: float = _field(
        0.10, "fraction", "Glass: lung shunt above 10 % -> caution; the lung dose, not the shunt, decides "
        f"(EVIDENCE.md rule 2; Taranis warns at > 10 %; {EANM_2022}).", gt=0, lt=1,
    )

    # ---- non-tumour liver (NON_TUMOR_LIVER_DOSE_HIGH) ---------------------------------------------------
    resin_normal_liver_limit_gy: float = _field(
        40.0, "Gy", f"Resin: mean dose to the whole non-tumour liver < 40 Gy ({EANM_2022}, Table 3).", gt=0, le=500
    )
    resin_normal_liver_limit_pretreated_bilobar_gy: float = _field(
        30.0, "Gy", "Resin: < 30 Gy for bilobar (here: whole-liver scope) treatment of a liver pretreated with "
        f"chemotherapy ({EANM_2022}, Table 3).", gt=0, le=500,
    )
    glass_normal_liver_limit_gy: float = _field(
        75.0, "Gy", f"Glass: mean dose to the whole non-tumour liver < 75 Gy ({EANM_2022}, Table 2, after Chiesa).",
        gt=0, le=500,
    )
    glass_normal_liver_limit_high_bilirubin_gy: float = _field(
        50.0, "Gy", "Glass: whole non-tumour liver < 50 Gy when bilirubin > 1.1 mg/dL "
        f"({EANM_2022}, Table 2, after Chiesa).", gt=0, le=500,
    )
    glass_perfused_normal_liver_limit_low_reserve_gy: float = _field(
        120.0, "Gy", "Glass: perfused non-tumour liver < 120 Gy when the hepatic reserve (untreated liver) is "
        f"< 30 % ({EANM_2022}; DOSISPHERE-01 eligibility).", gt=0, le=1000,
    )

    # ---- tumour (TUMOR_DOSE_LOW) ---------------------------------------------------------------------
    resin_tumor_dose_target_gy: float = _field(
        100.0, "Gy", "Resin: tumour mean dose >= 100 Gy (range 100-120 Gy; 100 Gy is the flag threshold, the "
        f"SARAH post-hoc best cut-off) ({EANM_2022}, Table 3, from HCC/ICC/colorectal series: no tumour-dose "
        "threshold is validated for NET).", gt=0, le=2000,
    )
    glass_tumor_dose_target_gy: float = _field(
        205.0, "Gy", f"Glass: tumour mean dose >= 205 Gy ({EANM_2022}, Table 2; DOSISPHERE-01, HCC: no "
        "tumour-dose threshold is validated for NET).", gt=0, le=2000,
    )

    # ---- labs and patient status -------------------------------------------------------------------
    bilirubin_high_mg_dl: float = _field(
        2.0, "mg/dL", "Bilirubin > 2.0 mg/dL (34.2 umol/L) without a reversible cause: contraindication to TARE, "
        f"warning for TAE/TACE ({VAN_ROEKEL}; ACR-type list [U: secondary source]).", gt=0, le=50,
    )
    bilirubin_glass_caution_mg_dl: float = _field(
        1.1, "mg/dL", "Glass TARE: bilirubin > 1.1 mg/dL lowers the whole non-tumour liver limit from 75 to 50 Gy "
        f"({EANM_2022}, Table 2).", gt=0, le=50,
    )
    tumor_burden_warning_percent: float = _field(
        50.0, "percent", "Liver tumour burden > 50 % -> warning (chronic hepatotoxicity risk factor, Currie JVIR "
        "2019; transplant exclusion; Taranis warning).", ge=0, le=100,
    )
    tumor_burden_contraindication_percent: float = _field(
        70.0, "percent", "Liver tumour burden > 70 % -> contraindication to TARE, warning otherwise "
        "(ACR-type list [U: secondary source]).", ge=0, le=100,
    )
    ecog_warning_min: int = _field(
        3, "ECOG grade", f"ECOG >= 3 -> warning (TARE is indicated at ECOG <= 2; {VAN_ROEKEL}; Kennedy, J "
        "Gastrointest Oncol 2014).", ge=0, le=5,
    )
    platelets_min_10e9_per_l: float = _field(
        50.0, "10^9/L", f"Platelets < 50 x10^9/L -> caution ({VAN_ROEKEL} [U: column read from flattened text]).",
        ge=0, le=2000,
    )
    inr_max: float = _field(
        1.5, "ratio", f"INR > 1.5 -> caution ({VAN_ROEKEL} [U: column read from flattened text]).", gt=0, le=15
    )
    wbc_min_10e9_per_l: float = _field(
        2.0, "10^9/L", f"WBC < 2.0 x10^9/L -> caution ({VAN_ROEKEL} [U: column read from flattened text]).",
        ge=0, le=500,
    )
    egfr_min_ml_min: float = _field(
        35.0, "mL/min", "eGFR < 35 mL/min -> caution: iodinated contrast for angiography "
        f"({VAN_ROEKEL} [U: column read from flattened text]).", ge=0, le=250,
    )
    doxorubicin_lifetime_limit_mg_m2: float = _field(
        450.0, "mg/m2", "Lifetime doxorubicin (including the planned dose) > 450 mg/m2 of body surface -> warning: "
        "cardiomyopathy risk rises steeply above 400-550 mg/m2 (doxorubicin prescribing information; Swain, "
        "Cancer 2003) [U: not in EVIDENCE.md].", gt=0, le=2000,
    )

    # ---- one session's doxorubicin (issue 12; the absurd bound, an error, is embplan.plausibility) -----
    doxorubicin_session_limit_mg: float = _field(
        150.0, "mg", "Doxorubicin of one TACE / DEB-TACE session > 150 mg -> warning: the highest per-session dose "
        "in practice (DC Bead: at most 150 mg per procedure, Lammer et al., PRECISION V, Cardiovasc Intervent "
        "Radiol 2010;33:41; systemic single dose at most 75 mg/m2, doxorubicin prescribing information) "
        "[U: not in EVIDENCE.md].", gt=0, le=300,
    )

    # ---- surgery, transplant, hepatic reserve ------------------------------------------------------
    flr_min_percent: float = _field(
        30.0, "percent", "Resection candidate: future liver remnant >= 30 % (the brief's value; 20/30/40 % tiers "
        "not retrieved [U]).", ge=0, le=100,
    )
    transplant_age_limit_years: float = _field(
        55.0, "years", "Transplant (Milan-NET): age < 55 years (medicalalgorithms.com; some sources say 60 [U]).",
        ge=0, le=120,
    )
    transplant_max_burden_percent: float = _field(
        50.0, "percent", "Transplant (Milan-NET): liver involvement < 50 % (Mazzaferro, J Hepatol 2007 via "
        "EVIDENCE.md rule 16 [U]).", ge=0, le=100,
    )
    transplant_min_stable_months: float = _field(
        6.0, "months", "Transplant (Milan-NET): stable disease >= 6 months before transplant (EVIDENCE.md "
        "rule 16 [U]).", ge=0, le=600,
    )
    hepatic_reserve_min_fraction: float = _field(
        0.30, "fraction", "TARE leaving < 30 % of the liver untreated (hepatic reserve) -> caution; glass "
        f"perfused non-tumour liver then < 120 Gy ({EANM_2022}; DOSISPHERE-01 eligibility reserve >= 30 %).",
        gt=0, lt=1,
    )

    # ---- tumour board (issue 11: embplan.board) -------------------------------------------------------
    # Each option's criteria read these; the plan records them with the rest. Comparison: "<= X" / ">= X" inclusive
    # where the source says "up to"/"at least", "< X" strict where it says "less than".
    board_resection_ecog_max: int = _field(
        2, "ECOG grade", "Resection and other surgery: performance status ECOG 0-2 (NCCN Neuroendocrine and Adrenal "
        "Tumors guideline, surgical candidacy [U: version not retrieved verbatim]).", ge=0, le=4,
    )
    board_well_differentiated_ki67_max_percent: float = _field(
        20.0, "percent", "Well-differentiated G1/G2 NET: Ki-67 <= 20 % (WHO 2019 classification of digestive NEN: G1 "
        "< 3 %, G2 3-20 %, G3 > 20 %). Above it: NET G3 / NEC, systemic therapy first.", ge=0, le=100,
    )
    board_debulking_nccn_min_percent: float = _field(
        90.0, "percent", "Cytoreductive debulking: >= 90 % of the disease removable (NCCN; classic threshold, "
        "PMC7423566 via EVIDENCE.md rule 17).", ge=0, le=100,
    )
    board_debulking_maxwell_min_percent: float = _field(
        70.0, "percent", "Cytoreductive debulking: >= 70 % removable is associated with better PFS/OS (Maxwell JE et "
        "al., Surgery 2016; Graff-Baker AN et al., Surgery 2014).", ge=0, le=100,
    )
    board_rapid_progression_months: float = _field(
        6.0, "months", "Rapid progression (debulking excluded; transplant stability unmet): progression recorded "
        "within this many months before the review (Milan-NET stability window of 6 months, Mazzaferro J Hepatol "
        "2007; applied to debulking [U]).", gt=0, le=120,
    )
    board_enets_age_max_years: float = _field(
        60.0, "years", "Transplant (ENETS 2016 liver-metastases guidance, Pavel M et al., Neuroendocrinology 2016): "
        "age <= 60 years [U: secondary source].", ge=0, le=120,
    )
    board_enets_ki67_max_percent: float = _field(
        10.0, "percent", "Transplant (ENETS 2016; Milan-NET 2016 update): Ki-67 < 10 % [U: secondary source].",
        ge=0, le=100,
    )
    board_unos_age_max_years: float = _field(
        60.0, "years", "Transplant MELD exception (OPTN/UNOS guidance on MELD/PELD exception review, NET, June 2015): "
        "candidates over 60 are not eligible [U: criteria not retrieved verbatim].", ge=0, le=120,
    )
    board_unos_ki67_max_percent: float = _field(
        10.0, "percent", "Transplant MELD exception (OPTN/UNOS 2015 NET guidance): low grade, Ki-67 <= 10 % "
        "[U: not retrieved verbatim].", ge=0, le=100,
    )
    board_unos_max_burden_percent: float = _field(
        50.0, "percent", "Transplant MELD exception (OPTN/UNOS 2015 NET guidance): liver involvement < 50 % "
        "[U: not retrieved verbatim].", ge=0, le=100,
    )
    board_unos_max_burden_refractory_symptoms_percent: float = _field(
        75.0, "percent", "Transplant: liver involvement < 75 % accepted when hormonal symptoms are refractory (the "
        "issue's seed; source not retrieved [U]).", ge=0, le=100,
    )
    board_transplant_primary_resected_min_months: float = _field(
        6.0, "months", "Transplant: primary resected at least 6 months before, without recurrence (OPTN/UNOS 2015 "
        "NET guidance; Milan-NET asks the primary removed in a separate operation) [U].", ge=0, le=600,
    )
    board_transplant_bilirubin_max_mg_dl: float = _field(
        2.0, "mg/dL", "Transplant for NET presumes preserved liver function; here bilirubin <= 2.0 mg/dL, the "
        "embolization limit of this model [U: no NET transplant source gives a number].", gt=0, le=50,
    )
    board_ablation_max_diameter_mm: float = _field(
        30.0, "mm", "Thermal ablation: lesions up to 3 cm (CIRSE quality-improvement guideline for RFA, Crocetti L et "
        "al., Cardiovasc Intervent Radiol 2010: best results <= 3 cm [U: NET-specific limit not retrieved]).",
        gt=0, le=200,
    )
    board_ablation_max_lesions: int = _field(
        5, "lesions", "Thermal ablation: at most 5 lesions (NET series ablated a median of 3 lesions of 1.4 cm, Taner "
        "T et al., HPB 2013; a limit of 5 is common practice [U]).", ge=1, le=50,
    )
    board_ablation_margin_mm: float = _field(
        5.0, "mm", "Thermal ablation: an ablative margin of 5-10 mm around the tumour (Crocetti L et al., CIRSE RFA "
        "guideline, Cardiovasc Intervent Radiol 2010).", ge=0, le=50,
    )
    board_staged_lobar_interval_days: int = _field(
        30, "days", "Staged (sequential) lobar treatment: the second lobe at least 30 days after the first, once "
        "liver function has recovered (for TARE: Kennedy A et al., REBOC consensus, Int J Radiat Oncol Biol Phys 2007: "
        "30-45 days [U: not retrieved verbatim]; the same interval is used after TAE/TACE [U]).", ge=0, le=730,
    )
    board_bilobar_tare_window_days: int = _field(
        365, "days", "Both lobes treated by TARE within this many days count as whole-liver exposure (Su 2017 grouped "
        "sequential bilobar with single-session whole-liver treatment; Currie 2019) [U: the window is this model's "
        "choice].", ge=0, le=3650,
    )
    board_followup_imaging_year1_months: int = _field(
        3, "months", "Follow-up imaging every 3 months in the first year after liver-directed therapy (the seed's "
        "working approach; RETNET protocol [U]).", ge=1, le=24,
    )
    board_followup_imaging_year2_months: int = _field(
        6, "months", "Follow-up imaging every 6 months in the second year (the seed's working approach [U]).",
        ge=1, le=24,
    )
    board_followup_labs_days: int = _field(
        30, "days", "Liver function tests (bilirubin, albumin, INR, transaminases) about 4 weeks after the procedure, "
        "then with each imaging visit (REILD appears 4-8 weeks after TARE; EANM 2022) [U].", ge=1, le=365,
    )

    # ---- tumour board (issue 11): the liver over the years from voxel maps (BED sum of the sessions) ----------
    liver_alpha_beta_gy: float = _field(
        2.5, "Gy", "Normal liver alpha/beta for the BED of a Y-90 permanent implant, used for the cumulative BED of "
        "earlier and current TARE sessions (Strigari L et al., J Nucl Med 51:1377, 2010, as collected in EVIDENCE.md "
        "2.2; the same value as embplan.dosimetry.metrics.LIVER_RADIOBIOLOGY) [U].", gt=0, le=100,
    )
    liver_repair_half_time_h: float = _field(
        2.5, "h", "Normal liver sublethal-damage repair half-time for the same BED (Strigari 2010, EVIDENCE.md 2.2; "
        "as LIVER_RADIOBIOLOGY) [U].", gt=0, le=100,
    )

    # ---- standard protocol (PROTOCOL_DEVIATION; the RETNET arms) ---------------------------------------
    protocol_doxorubicin_mg: float = _field(
        50.0, "mg", f"Standard TACE: doxorubicin 50 mg ({RETNET}).", gt=0, le=500
    )
    protocol_lipiodol_min_ml: float = _field(
        10.0, "mL", f"Standard TACE: 10-20 mL iodized oil ({RETNET}).", gt=0, le=100
    )
    protocol_lipiodol_max_ml: float = _field(
        20.0, "mL", f"Standard TACE: 10-20 mL iodized oil ({RETNET}).", gt=0, le=100
    )
    protocol_particle_min_um: float = _field(
        50.0, "um", f"Standard TAE/TACE particles 50-500 um microspheres ({RETNET}).", gt=0, le=5000
    )
    protocol_particle_max_um: float = _field(
        500.0, "um", f"Standard TAE/TACE particles 50-500 um microspheres ({RETNET}).", gt=0, le=5000
    )
    protocol_stasis_min_heartbeats: int = _field(
        2, "heartbeats", f"Standard endpoint: stasis within 2-5 heartbeats ({RETNET}).", ge=1, le=100
    )
    protocol_stasis_max_heartbeats: int = _field(
        5, "heartbeats", f"Standard endpoint: stasis within 2-5 heartbeats ({RETNET}).", ge=1, le=100
    )

    # ---- DICOM image checks (issue 12: a CT that does not match the structures never plans) -------------------
    # Mean CT number inside a structure, on the dosimetry grid (voxels inside the CT). Wide on purpose: they catch a
    # wrong rescale (+1024 HU), structures swapped between roles, a CT of another region; the alignment check
    # below catches shifts of a few centimetres.
    ct_liver_mean_hu_min: float = _field(
        -40.0, "HU", "Mean CT number of the liver ROIs, lower bound. Unenhanced liver 58.8 +/- 10.8 HU, <= 40 HU "
        "moderate-to-severe steatosis (Boyce CJ et al., AJR 2010;194:623-8); severe steatosis about -3 HU at a "
        "40 % MRI fat fraction (Starekova J et al., Radiology 2021;301:250-62, fig. 2); -40 HU leaves room for "
        "more fat [U].", ge=-1000, le=1000,
    )
    ct_liver_mean_hu_max: float = _field(
        300.0, "HU", "Mean CT number of the liver ROIs (tumours included), upper bound. Portal-venous contrast "
        "raises the liver by about 50-60 HU to 100-130 HU [U]; lipiodol retained after TACE is several hundred to "
        "over 1000 HU in the tumours the liver ROIs include [U]; 300 HU is a margin above both [U].",
        ge=-1000, le=3000,
    )
    ct_lung_mean_hu_min: float = _field(
        -980.0, "HU", "Mean CT number of the lung ROIs, lower bound: air is -1000 HU; normal lungs -770 to -875 HU "
        "(mean -817; Clin Radiol 1991;43:238-42), emphysema down to about -950 HU [U].", ge=-1100, le=0,
    )
    ct_lung_mean_hu_max: float = _field(
        -300.0, "HU", "Mean CT number of the lung ROIs, upper bound. Normal lungs -770 to -875 HU (Clin Radiol "
        "1991;43:238-42); fibrosis, oedema or atelectasis raise the mean by a few hundred HU; a mean above -300 HU "
        "is mostly soft tissue, not lung [U].", ge=-1100, le=1000,
    )
    ct_body_mean_hu_min: float = _field(
        -150.0, "HU", "Mean CT number of the body (dosimetry-grid voxels inside the CT above "
        "ct_body_threshold_hu), lower bound: fat is about -100 HU, muscle and organs +40 to +60 HU (Lamba R et al., "
        "AJR 2014;203:1013-20 [U]); even a very obese abdomen averages above -100 HU [U].", ge=-1000, le=1000,
    )
    ct_body_mean_hu_max: float = _field(
        250.0, "HU", "Mean CT number of the body, upper bound: soft tissue with contrast (100-300 HU) and 5-10 % "
        "bone averages below about +150 HU [U]; a missing Rescale Intercept puts it near +1000 HU.",
        ge=-1000, le=3000,
    )
    ct_body_threshold_hu: float = _field(
        -500.0, "HU", "CT number above which a voxel counts as body (tissue) rather than air or lung, the usual "
        "air/tissue threshold of body segmentation (-500 HU) [U].", ge=-1000, le=0,
    )
    structure_inside_ct_min_fraction: float = _field(
        0.95, "fraction", "Least fraction of the liver and lung ROIs that must lie inside the CT's field of view "
        "(and of the liver inside the dosimetry grid): structures drawn on a CT lie inside it; 5 % leaves room for "
        "the half-voxel sampling at the edge (embplan's choice).", gt=0, le=1,
    )
    lung_alignment_tolerance_mm: float = _field(
        4.0, "mm", "Lung ROIs vs the CT's aerated lung (CT number < lung_aerated_hu): a misalignment larger than "
        "this is an error (the CT shifted against the structures and the SPECT). The search moves in whole voxels "
        "of at least 4 mm, so any misalignment of a voxel or more is caught; on the phantom a 5 mm shift already "
        "changes the lung dose 14.6 -> 12.3 Gy, a 20 mm shift 14.6 -> 8.5 Gy (issue 12) (embplan's choice).",
        gt=0, le=100,
    )
    lung_alignment_min_gain_fraction: float = _field(
        0.03, "fraction", "A shift of the lung ROIs counts as a better alignment only when it raises the aerated "
        "fraction of the ROIs by at least this much (guards against noise; embplan's choice).", gt=0, le=1,
    )
    activity_alignment_tolerance_mm: float = _field(
        5.0, "mm", "SPECT/PET counts vs the liver and lung ROIs: moving the ROIs by more than this must not put "
        "more of the counts inside them (by activity_alignment_min_gain_fraction). Allows a misregistration of one "
        "SPECT voxel (4-5 mm; free-breathing SPECT against a breath-hold CT), refuses two or more: on the phantom a "
        "SPECT shifted 21 mm changed the tumour dose 339 -> 215 Gy (embplan's choice) [U].", gt=0, le=100,
    )
    activity_alignment_min_gain_fraction: float = _field(
        0.02, "fraction", "Share of all counts a shift of the liver and lung ROIs must add to count as a better "
        "alignment (guards against blur, noise and extrahepatic uptake such as free pertechnetate). Measured on the "
        "phantom SPECT blurred with a Gaussian of sigma 5.3 / 11 mm: aligned 0.8 / 1.1 %, shifted 20 mm 2.8-14 % "
        "(embplan's choice; not validated on patient SPECT) [U].",
        gt=0, le=1,
    )
    lung_aerated_hu: float = _field(
        -400.0, "HU", "CT number below which a voxel is aerated lung for the alignment check; lung segmentation "
        "thresholds lie between -500 and -300 HU (Hu S, Hoffman EA, Reinhardt JM, IEEE TMI 2001;20:490-8) [U].",
        ge=-1000, le=0,
    )

    # ---- issue 13 (what a dose number means): delivery tolerance, lung shunt agreement, small lesions --------
    delivered_activity_tolerance_fraction: float = _field(
        0.10, "fraction", "Delivered activity may differ from the prescribed by this fraction before "
        "DELIVERED_ACTIVITY_DEVIATION fires: vial label accuracy +-10 % (Selwyn R et al., Med Phys 35:1278, 2008); "
        "the US NRC counts 20 % as a medical event (10 CFR 35.1000 guidance) [U]. A site choice.", ge=0, lt=1,
    )
    lung_shunt_discrepancy_fraction: float = _field(
        0.02, "fraction", "Case and image lung shunt fractions further apart than this (absolute) fire "
        "LUNG_SHUNT_DISCREPANCY; planar imaging overestimates the shunt (Allred JD et al., EJNMMI Res 8:50, 2018) "
        "[U: 2 points is a site choice].", ge=0, lt=1,
    )
    partial_volume_warning_ml: float = _field(
        10.0, "mL", "Tumours below this volume carry a partial-volume warning in the lesion table: objects under "
        "2-3 x the image FWHM lose mean activity (Soret M et al., J Nucl Med 48:932, 2007); Taranis warns under 2 "
        "mL [U: 10 mL is a site choice].", ge=0, le=10000,
    )

    @model_validator(mode="after")
    def _check_consistency(self) -> Thresholds:
        """Cross-field sanity: bands ordered, tighter limits not above the limits they tighten."""
        pairs: list[tuple[str, str, bool]] = [
            # (lower, upper, strict)
            ("lsf_resin_reduce_low_fraction", "lsf_resin_reduce_high_fraction", True),
            ("lsf_resin_reduce_high_fraction", "lsf_resin_contraindication_fraction", True),
            ("resin_activity_reduction_low_fraction", "resin_activity_reduction_high_fraction", False),
            ("lung_dose_session_limit_gy", "lung_dose_cumulative_limit_gy", False),
            ("resin_normal_liver_limit_pretreated_bilobar_gy", "resin_normal_liver_limit_gy", False),
            ("glass_normal_liver_limit_high_bilirubin_gy", "glass_normal_liver_limit_gy", False),
            ("bilirubin_glass_caution_mg_dl", "bilirubin_high_mg_dl", False),
            ("tumor_burden_warning_percent", "tumor_burden_contraindication_percent", False),
            ("protocol_lipiodol_min_ml", "protocol_lipiodol_max_ml", False),
            ("protocol_particle_min_um", "protocol_particle_max_um", False),
            ("protocol_stasis_min_heartbeats", "protocol_stasis_max_heartbeats", False),
            ("board_debulking_maxwell_min_percent", "board_debulking_nccn_min_percent", False),
            ("board_unos_max_burden_percent", "board_unos_max_burden_refractory_symptoms_percent", False),
            ("board_followup_imaging_year1_months", "board_followup_imaging_year2_months", False),
            # DICOM image checks (issue 12)
            ("ct_liver_mean_hu_min", "ct_liver_mean_hu_max", True),
            ("ct_lung_mean_hu_min", "ct_lung_mean_hu_max", True),
            ("ct_body_mean_hu_min", "ct_body_mean_hu_max", True),
        ]
        problems = []
        for lower, upper, strict in pairs:
            lo, hi = getattr(self, lower), getattr(self, upper)
            if (lo >= hi) if strict else (lo > hi):
                rel = "<" if strict else "<="
                problems.append(f"thresholds.{lower}: must be {rel} thresholds.{upper} ({hi}), got {lo}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # ---- construction and record ----------------------------------------------------------------------
    @classmethod
    def with_overrides(cls, overrides: dict[str, Any] | None = None, base: Thresholds | None = None) -> Thresholds:
        """Defaults (or ``base``) with ``overrides`` applied; every problem -> :class:`CaseError` naming
        ``thresholds.<key>``.

        Values must be real numbers (``bool`` and strings are rejected even where pydantic would coerce them);
        integer fields (ECOG, heartbeats) accept a float with no fractional part, as JSON may give ``3.0``.
        """
        overrides = dict(overrides or {})
        problems: list[str] = []
        for key, value in overrides.items():
            if key not in cls.model_fields:
                close = difflib.get_close_matches(key, list(cls.model_fields), n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else " (see Thresholds.describe() for the names)"
                problems.append(f"thresholds.{key}: unknown threshold{hint}")
            elif isinstance(value, bool) or not isinstance(value, int | float):
                problems.append(f"thresholds.{key}: must be a number, got {value!r}")
        if problems:
            raise CaseError("invalid thresholds: " + "; ".join(problems))
        given = set(base.model_fields_set) if base is not None else set()
        values = {k: getattr(base, k) for k in given} if base is not None else {}
        values.update(overrides)
        try:
            return cls(**values)
        except ValidationError as exc:
            raise CaseError("invalid thresholds: " + "; ".join(_format_error(e) for e in exc.errors())) from None

    def describe(self) -> list[dict[str, Any]]:
        """One record per threshold, for the plan: name, value, unit, source, overridden."""
        rows = []
        for name, info in type(self).model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            rows.append(
                {
                    "name": name,
                    "value": getattr(self, name),
                    "unit": str(extra.get("unit", "")),
                    "source": info.description or "",
                    "overridden": name in self.model_fields_set,
                }
            )
        return rows

    def overridden(self) -> dict[str, float]:
        """The thresholds that differ from their origin (given explicitly), name -> value."""
        return {name: getattr(self, name) for name in type(self).model_fields if name in self.model_fields_set}


def _format_error(err: Any) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()))
    msg = str(err.get("msg", "invalid"))
    if not loc:  # model validator: the message already names the fields
        return msg.removeprefix("Value error, ")
    return f"thresholds.{loc}: {msg.removeprefix('Value error, ')}, got {err.get('input')!r}"
