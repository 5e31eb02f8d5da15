"""Every case-level rule: fires where it should, stays silent where it should not, at its boundaries, at each
severity. Cases are the shared example files with targeted edits (see conftest.py)."""

from __future__ import annotations

import pytest

from embplan.risk import Flag, Severity
from embplan.risk import rules as R
from embplan.thresholds import Thresholds

TH = Thresholds()
WHOLE_LIVER = {"procedure.territory": {"scope": "whole_liver"}, "dosimetry.perfused_volume_ml": 1650.0,
               "dosimetry.perfused_tumor_volume_ml": 480.0}


def only(flags: list[Flag], code: str) -> Flag | None:
    """The one flag with ``code`` (rules give at most one), or None."""
    hits = [f for f in flags if f.code == code]
    assert len(hits) <= 1, hits
    return hits[0] if hits else None


def check(rule, case, code: str, severity: Severity | None, th: Thresholds = TH) -> Flag | None:
    """Run ``rule``; assert it gives ``code`` at ``severity`` (None: silent). Returns the flag."""
    flags = rule(case, th)
    assert all(f.code == code for f in flags), flags
    flag = only(flags, code)
    if severity is None:
        assert flag is None, flag
    else:
        assert flag is not None, f"{code} did not fire"
        assert flag.severity is severity, (flag.severity, flag.message)
        assert flag.evidence.strip()
    return flag


@pytest.fixture(scope="module")
def procs(example_dicts):
    """The procedure dicts of the examples, by kind."""
    return {
        "TAE": example_dicts["tae_first_line.json"]["procedure"],
        "TACE": example_dicts["tace_after_whipple.json"]["procedure"],
        "DEB_TACE": example_dicts["deb_tace.json"]["procedure"],
    }


# ---------------------------------------------------------------------------------------------------------------
# BILIARY_ENTERIC_ANASTOMOSIS / INCOMPETENT_SPHINCTER
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["TAE", "TACE", "DEB_TACE"])
def test_anastomosis_with_tae_tace_is_warning(make_case, procs, kind):
    case = make_case("whipple", {"procedure": procs[kind]})
    f = check(R.rule_biliary_enteric_anastomosis, case, "BILIARY_ENTERIC_ANASTOMOSIS", Severity.WARNING)
    assert "33%" in f.message and "21%" in f.message
    assert "TARE" in f.message and "prophylaxis" in f.message
    assert "Mezhir" in f.evidence and "2011" in f.evidence
    assert f.context["procedure_kind"] == kind


def test_anastomosis_with_tare_is_caution(make_case):
    case = make_case("resin", {"patient.biliary.biliary_enteric_anastomosis": True,
                               "patient.biliary.sphincter_of_oddi_intact": False})
    f = check(R.rule_biliary_enteric_anastomosis, case, "BILIARY_ENTERIC_ANASTOMOSIS", Severity.CAUTION)
    assert "Agahi" in f.evidence and "prophylaxis" in f.message
    # the anastomosis is its own rule: the sphincter rule stays silent
    check(R.rule_incompetent_sphincter, case, "INCOMPETENT_SPHINCTER", None)


def test_no_anastomosis_silent(make_case):
    check(R.rule_biliary_enteric_anastomosis, make_case("tace"), "BILIARY_ENTERIC_ANASTOMOSIS", None)
    check(R.rule_biliary_enteric_anastomosis, make_case("resin"), "BILIARY_ENTERIC_ANASTOMOSIS", None)


@pytest.mark.parametrize(
    "base,biliary",
    [
        ("tace", {"sphincter_of_oddi_intact": False, "biliary_stent": False}),
        ("tace", {"sphincter_of_oddi_intact": True, "biliary_stent": True}),
        ("resin", {"sphincter_of_oddi_intact": False, "biliary_stent": True}),
        ("tae", {"sphincter_of_oddi_intact": True, "biliary_stent": True}),
    ],
)
def test_incompetent_sphincter_is_caution(make_case, base, biliary):
    edits = {f"patient.biliary.{k}": v for k, v in biliary.items()}
    f = check(R.rule_incompetent_sphincter, make_case(base, edits), "INCOMPETENT_SPHINCTER", Severity.CAUTION)
    assert "10%" in f.message and "Mezhir" in f.evidence
    assert f.context["biliary_stent"] is biliary["biliary_stent"]


def test_competent_sphincter_or_anastomosis_silent(make_case):
    check(R.rule_incompetent_sphincter, make_case("tace"), "INCOMPETENT_SPHINCTER", None)
    # Whipple: sphincter not intact, but the anastomosis rule covers it (no double flag)
    check(R.rule_incompetent_sphincter, make_case("whipple"), "INCOMPETENT_SPHINCTER", None)


# ---------------------------------------------------------------------------------------------------------------
# DEB_TACE_IN_NET / WHOLE_LIVER_TARE
# ---------------------------------------------------------------------------------------------------------------
def test_deb_tace_contraindicated(make_case):
    f = check(R.rule_deb_tace_in_net, make_case("deb"), "DEB_TACE_IN_NET", Severity.CONTRAINDICATION)
    assert "54%" in f.message and "4/10" in f.message
    assert "Bhagat" in f.evidence and "Guiu" in f.evidence and "RETNET" in f.evidence


@pytest.mark.parametrize("base", ["tace", "tae", "resin"])
def test_deb_rule_silent_for_other_procedures(make_case, base):
    check(R.rule_deb_tace_in_net, make_case(base), "DEB_TACE_IN_NET", None)


@pytest.mark.parametrize("base", ["resin", "glass"])
def test_whole_liver_tare_warning(make_case, base):
    f = check(R.rule_whole_liver_tare, make_case(base, WHOLE_LIVER), "WHOLE_LIVER_TARE", Severity.WARNING)
    assert "56%" in f.message and "staged lobar or segmental" in f.message
    assert "Su" in f.evidence and "Tomozawa" in f.evidence and "Currie" in f.evidence


def test_lobar_or_segmental_tare_silent(make_case):
    check(R.rule_whole_liver_tare, make_case("resin"), "WHOLE_LIVER_TARE", None)
    seg = make_case("resin", {"procedure.territory": {"scope": "segmental", "segments": [5, 6]}})
    check(R.rule_whole_liver_tare, seg, "WHOLE_LIVER_TARE", None)


def test_whole_liver_tae_is_not_whole_liver_tare(make_case):
    case = make_case("tae", {"procedure.territory": {"scope": "whole_liver"}})
    check(R.rule_whole_liver_tare, case, "WHOLE_LIVER_TARE", None)


# ---------------------------------------------------------------------------------------------------------------
# CARCINOID_CRISIS_RISK
# ---------------------------------------------------------------------------------------------------------------
def test_carcinoid_heart_disease_is_warning(make_case):
    f = check(R.rule_carcinoid_crisis_risk, make_case("tae"), "CARCINOID_CRISIS_RISK", Severity.WARNING)
    assert "echocardiography" in f.message and "somatostatin" in f.message


@pytest.mark.parametrize("syndrome", ["carcinoid", "insulinoma", "vipoma"])
def test_functional_syndrome_is_caution(make_case, syndrome):
    case = make_case("tae", {"patient.disease.carcinoid_heart_disease": False,
                             "patient.disease.functional_syndrome": syndrome})
    f = check(R.rule_carcinoid_crisis_risk, case, "CARCINOID_CRISIS_RISK", Severity.CAUTION)
    assert "6%" in f.message and "anaesthesia" in f.message and "Kwon" in f.evidence
    assert "echocardiography" not in f.message


def test_non_functional_silent(make_case):
    check(R.rule_carcinoid_crisis_risk, make_case("tace"), "CARCINOID_CRISIS_RISK", None)


# ---------------------------------------------------------------------------------------------------------------
# BILIRUBIN_HIGH
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "base,bili,severity",
    [
        ("resin", 2.0, None),
        ("resin", 2.01, Severity.CONTRAINDICATION),
        ("resin", 1.5, None),  # the 1.1 mg/dL rule is for glass only
        ("glass", 1.1, None),
        ("glass", 1.11, Severity.CAUTION),
        ("glass", 2.0, Severity.CAUTION),
        ("glass", 2.01, Severity.CONTRAINDICATION),
        ("tace", 2.0, None),
        ("tace", 2.01, Severity.WARNING),
        ("tae", 5.0, Severity.WARNING),
        ("deb", 2.5, Severity.WARNING),
    ],
)
def test_bilirubin_boundaries(make_case, base, bili, severity):
    case = make_case(base, {"patient.labs.bilirubin_mg_dl": bili})
    f = check(R.rule_bilirubin_high, case, "BILIRUBIN_HIGH", severity)
    if f is not None:
        assert f.context["bilirubin_mg_dl"] == bili
        assert str(bili) in f.message


def test_glass_bilirubin_caution_names_the_lower_limit(make_case):
    f = R.rule_bilirubin_high(make_case("glass", {"patient.labs.bilirubin_mg_dl": 1.5}), TH)[0]
    assert "75" in f.message and "50 Gy" in f.message and "EANM" in f.evidence
    assert f.context["normal_liver_limit_gy"] == 50.0


# ---------------------------------------------------------------------------------------------------------------
# TUMOR_BURDEN_HIGH
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "base,burden,severity",
    [
        ("resin", 50.0, None),
        ("resin", 50.1, Severity.WARNING),
        ("resin", 70.0, Severity.WARNING),
        ("resin", 70.1, Severity.CONTRAINDICATION),
        ("glass", 95.0, Severity.CONTRAINDICATION),
        ("tace", 50.0, None),
        ("tace", 60.0, Severity.WARNING),
        ("tace", 70.1, Severity.WARNING),
        ("tae", 90.0, Severity.WARNING),
    ],
)
def test_tumor_burden_boundaries(make_case, base, burden, severity):
    case = make_case(base, {"patient.disease.liver_tumor_burden_percent": burden})
    f = check(R.rule_tumor_burden_high, case, "TUMOR_BURDEN_HIGH", severity)
    if f is not None:
        assert f.context["liver_tumor_burden_percent"] == burden


# ---------------------------------------------------------------------------------------------------------------
# PORTAL_VEIN_THROMBOSIS
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "base,severity",
    [("tace", Severity.CONTRAINDICATION), ("tae", Severity.CONTRAINDICATION), ("deb", Severity.CONTRAINDICATION),
     ("resin", Severity.CAUTION), ("glass", Severity.CAUTION)],
)
def test_portal_vein_thrombosis(make_case, base, severity):
    case = make_case(base, {"patient.disease.main_portal_vein_thrombosis": True})
    check(R.rule_portal_vein_thrombosis, case, "PORTAL_VEIN_THROMBOSIS", severity)
    check(R.rule_portal_vein_thrombosis, make_case(base), "PORTAL_VEIN_THROMBOSIS", None)


# ---------------------------------------------------------------------------------------------------------------
# PERFORMANCE_STATUS / LAB_LIMITS
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ecog,severity", [(0, None), (2, None), (3, Severity.WARNING), (4, Severity.WARNING)])
def test_performance_status(make_case, ecog, severity):
    f = check(R.rule_performance_status, make_case("resin", {"patient.ecog": ecog}), "PERFORMANCE_STATUS", severity)
    if f:
        assert f.context["ecog"] == ecog


@pytest.mark.parametrize(
    "lab,ok,bad,name_in_message",
    [
        ("platelets_10e9_per_l", 50.0, 49.9, "platelets 49.9"),
        ("inr", 1.5, 1.51, "INR 1.51"),
        ("wbc_10e9_per_l", 2.0, 1.99, "WBC 1.99"),
        ("egfr_ml_min", 35.0, 34.9, "eGFR 34.9"),
    ],
)
def test_lab_limits_boundaries(make_case, lab, ok, bad, name_in_message):
    check(R.rule_lab_limits, make_case("tace", {f"patient.labs.{lab}": ok}), "LAB_LIMITS", None)
    f = check(R.rule_lab_limits, make_case("tace", {f"patient.labs.{lab}": bad}), "LAB_LIMITS", Severity.CAUTION)
    assert name_in_message in f.message
    assert f.context[lab] == bad and f.context["out_of_range"] == [lab]


def test_lab_limits_names_every_value(make_case):
    case = make_case("resin", {"patient.labs.platelets_10e9_per_l": 30.0, "patient.labs.inr": 2.0,
                               "patient.labs.wbc_10e9_per_l": 1.0, "patient.labs.egfr_ml_min": 20.0})
    f = check(R.rule_lab_limits, case, "LAB_LIMITS", Severity.CAUTION)
    for text in ("platelets 30.0", "INR 2.0", "WBC 1.0", "eGFR 20.0", "contrast"):
        assert text in f.message
    assert sorted(f.context["out_of_range"]) == ["egfr_ml_min", "inr", "platelets_10e9_per_l", "wbc_10e9_per_l"]


def test_normal_labs_silent(make_case):
    for base in ("tace", "tae", "resin", "deb"):
        check(R.rule_lab_limits, make_case(base), "LAB_LIMITS", None)


# ---------------------------------------------------------------------------------------------------------------
# DOXORUBICIN_CUMULATIVE
# ---------------------------------------------------------------------------------------------------------------
def _du_bois(weight_kg: float, height_cm: float) -> float:
    return 0.007184 * weight_kg**0.425 * height_cm**0.725  # Du Bois & Du Bois 1916


def _prior_tace(dose_mg):
    rec = {"kind": "TACE", "date": "2023-01-10", "territory": {"scope": "lobar", "lobe": "left"},
           "response": "progression"}
    if dose_mg is not None:
        rec["doxorubicin_mg"] = dose_mg
    return rec


@pytest.mark.parametrize("mg_m2,severity", [(449.0, None), (451.0, Severity.WARNING)])
def test_doxorubicin_cumulative_boundary(make_case, case_dict, mg_m2, severity):
    base = case_dict("tace")
    bsa = _du_bois(base["patient"]["weight_kg"], base["patient"]["height_cm"])
    prior_mg = mg_m2 * bsa - 50.0  # 50 mg planned
    history = [*base["patient"]["prior_treatments"], _prior_tace(prior_mg)]
    f = check(R.rule_doxorubicin_cumulative, make_case("tace", {"patient.prior_treatments": history}),
              "DOXORUBICIN_CUMULATIVE", severity)
    if f is not None:
        assert f.context["doxorubicin_mg_m2"] == pytest.approx(mg_m2, rel=1e-9)
        assert f.context["planned_doxorubicin_mg"] == 50.0
        assert f.context["body_surface_area_m2"] == pytest.approx(bsa, abs=1e-4)
        assert "lower bound" not in f.message


def test_doxorubicin_unknown_records_named(make_case, case_dict):
    base = case_dict("tace")
    history = [*base["patient"]["prior_treatments"], _prior_tace(900.0), _prior_tace(None)]
    f = check(R.rule_doxorubicin_cumulative, make_case("tace", {"patient.prior_treatments": history}),
              "DOXORUBICIN_CUMULATIVE", Severity.WARNING)
    assert "lower bound" in f.message and f.context["records_without_dose"] == 1


def test_doxorubicin_silent_when_the_procedure_gives_none(make_case, case_dict, procs):
    base = case_dict("tace")
    history = [*base["patient"]["prior_treatments"], _prior_tace(1000.0)]
    # already over the limit, but TAE adds no doxorubicin; nor does a TACE with another drug
    check(R.rule_doxorubicin_cumulative, make_case("tace", {"patient.prior_treatments": history,
                                                            "procedure": procs["TAE"]}),
          "DOXORUBICIN_CUMULATIVE", None)
    check(R.rule_doxorubicin_cumulative, make_case("tace", {"patient.prior_treatments": history,
                                                            "procedure.drug.name": "cisplatin"}),
          "DOXORUBICIN_CUMULATIVE", None)
    # DEB-TACE with doxorubicin counts
    check(R.rule_doxorubicin_cumulative, make_case("deb", {"patient.prior_treatments": history}),
          "DOXORUBICIN_CUMULATIVE", Severity.WARNING)


# ---------------------------------------------------------------------------------------------------------------
# LUNG_SHUNT_HIGH (case-level: the shunt given in the case)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "base,lsf,severity,reduction",
    [
        ("resin", 0.0999, None, None),
        ("resin", 0.10, Severity.CAUTION, 0.20),
        ("resin", 0.15, Severity.CAUTION, 0.20),
        ("resin", 0.1501, Severity.CAUTION, 0.40),
        ("resin", 0.20, Severity.CAUTION, 0.40),
        ("resin", 0.2001, Severity.CONTRAINDICATION, 1.0),
        ("glass", 0.10, None, None),
        ("glass", 0.1001, Severity.CAUTION, 0.0),
        ("glass", 0.35, Severity.CAUTION, 0.0),
    ],
)
def test_lung_shunt_bands(make_case, base, lsf, severity, reduction):
    f = check(R.rule_lung_shunt_high, make_case(base, {"dosimetry.lung_shunt_fraction": lsf}), "LUNG_SHUNT_HIGH",
              severity)
    if f is not None:
        assert f.context["lung_shunt_fraction"] == lsf
        assert f.context["activity_reduction_fraction"] == reduction
        if base == "glass":
            assert "lung dose decides" in f.message


def test_lung_shunt_silent_without_a_shunt_or_for_tace(make_case):
    check(R.rule_lung_shunt_high, make_case("glass_images"), "LUNG_SHUNT_HIGH", None)
    check(R.rule_lung_shunt_high, make_case("tace"), "LUNG_SHUNT_HIGH", None)


# ---------------------------------------------------------------------------------------------------------------
# PRIOR_RADIOEMBOLIZATION
# ---------------------------------------------------------------------------------------------------------------
def _prior_tare(lung_gy=None, liver_gy=None):
    rec = {"kind": "TARE", "date": "2020-05-05", "territory": {"scope": "lobar", "lobe": "left"},
           "device": "resin", "response": "partial"}
    if lung_gy is not None:
        rec["lung_dose_gy"] = lung_gy
    if liver_gy is not None:
        rec["normal_liver_dose_gy"] = liver_gy
    return rec


def test_prior_radioembolization_counts_doses(make_case, case_dict):
    history = [*case_dict("resin")["patient"]["prior_treatments"], _prior_tare(12.5, 35.0), _prior_tare(8.0)]
    f = check(R.rule_prior_radioembolization, make_case("resin", {"patient.prior_treatments": history}),
              "PRIOR_RADIOEMBOLIZATION", Severity.CAUTION)
    assert f.context["prior_tare_count"] == 2
    assert f.context["prior_lung_dose_gy"] == pytest.approx(20.5)
    assert f.context["lung_remaining_gy"] == pytest.approx(29.5)
    assert f.context["prior_normal_liver_doses_gy"] == [35.0]
    assert f.context["prior_lung_dose_unknown_count"] == 0
    assert "20.5 Gy" in f.message and "29.5 Gy" in f.message


def test_prior_radioembolization_unknown_lung_dose_named(make_case):
    f = check(R.rule_prior_radioembolization, make_case("tace", {"patient.prior_treatments": [_prior_tare()]}),
              "PRIOR_RADIOEMBOLIZATION", Severity.CAUTION)
    assert f.context["prior_lung_dose_unknown_count"] == 1 and "no recorded lung dose" in f.message


def test_no_prior_radioembolization_silent(make_case):
    check(R.rule_prior_radioembolization, make_case("resin"), "PRIOR_RADIOEMBOLIZATION", None)


# ---------------------------------------------------------------------------------------------------------------
# HEPATIC_RESERVE_LOW
# ---------------------------------------------------------------------------------------------------------------
def _volumes(perfused_ml: float) -> dict:
    return {"dosimetry.liver_volume_ml": 1000.0, "dosimetry.perfused_volume_ml": perfused_ml}


@pytest.mark.parametrize(
    "base,perfused_ml,severity",
    [("resin", 700.0, None), ("resin", 701.0, Severity.CAUTION), ("glass", 950.0, Severity.CAUTION),
     ("resin", 400.0, None)],
)
def test_hepatic_reserve_boundary(make_case, base, perfused_ml, severity):
    f = check(R.rule_hepatic_reserve_low, make_case(base, _volumes(perfused_ml)), "HEPATIC_RESERVE_LOW", severity)
    if f is not None:
        assert f.context["hepatic_reserve_fraction"] == pytest.approx(1 - perfused_ml / 1000.0)
        assert ("120 Gy" in f.message) is (base == "glass")


def test_whole_liver_leaves_no_reserve(make_case):
    f = check(R.rule_hepatic_reserve_low, make_case("resin", WHOLE_LIVER), "HEPATIC_RESERVE_LOW", Severity.CAUTION)
    assert f.context["hepatic_reserve_fraction"] == 0.0


def test_hepatic_reserve_silent_without_volumes_or_for_tace(make_case):
    check(R.rule_hepatic_reserve_low, make_case("glass_images"), "HEPATIC_RESERVE_LOW", None)
    check(R.rule_hepatic_reserve_low, make_case("tace"), "HEPATIC_RESERVE_LOW", None)


# ---------------------------------------------------------------------------------------------------------------
# SEQUENCE_DEVIATION
# ---------------------------------------------------------------------------------------------------------------
def test_sequence_following_the_ladder_silent(make_case):
    for base in ("tae", "tace", "resin"):  # TAE first; TACE after a TAE progression; TARE after TACE progression
        check(R.rule_sequence_deviation, make_case(base), "SEQUENCE_DEVIATION", None)


def test_sequence_skip_without_justification_is_info(make_case, case_dict):
    # G1 small-intestine NET with carcinoid syndrome: ENETS 2022 recommends TAE; TACE first skips it
    tace = case_dict("tace")["procedure"]
    case = make_case("tae", {"procedure": tace})
    f = check(R.rule_sequence_deviation, case, "SEQUENCE_DEVIATION", Severity.INFO)
    assert f.context["skipped"] == ["TAE"] and f.context["requested_kind"] == "TACE"
    assert "ENETS" in f.evidence


def test_sequence_skip_with_justification_silent(make_case):
    # pancreatic G2 primary (ENETS: TACE or TARE) with no prior embolization
    check(R.rule_sequence_deviation, make_case("tace", {"patient.prior_treatments": []}), "SEQUENCE_DEVIATION", None)
    # biliary-enteric anastomosis: TARE first
    case = make_case("resin", {"patient.prior_treatments": [], "patient.disease.grade": "G1",
                               "patient.biliary.biliary_enteric_anastomosis": True})
    check(R.rule_sequence_deviation, case, "SEQUENCE_DEVIATION", None)


def test_sequence_deb_tace_off_ladder_is_info(make_case):
    check(R.rule_sequence_deviation, make_case("deb"), "SEQUENCE_DEVIATION", Severity.INFO)


# ---------------------------------------------------------------------------------------------------------------
# PROTOCOL_DEVIATION
# ---------------------------------------------------------------------------------------------------------------
def test_standard_protocols_silent(make_case):
    for base in ("tace", "tae", "resin"):
        check(R.rule_protocol_deviation, make_case(base), "PROTOCOL_DEVIATION", None)


@pytest.mark.parametrize(
    "edits,parameter",
    [
        ({"procedure.drug.dose_mg": 75.0}, "procedure.drug.dose_mg"),
        ({"procedure.drug.dose_mg": 49.0}, "procedure.drug.dose_mg"),
        ({"procedure.lipiodol_ml": 9.9}, "procedure.lipiodol_ml"),
        ({"procedure.lipiodol_ml": 20.1}, "procedure.lipiodol_ml"),
        ({"procedure.embolic.size_min_um": 40.0}, "procedure.embolic"),
        ({"procedure.embolic.size_max_um": 700.0}, "procedure.embolic"),
        ({"procedure.endpoint.stasis_heartbeats": 1}, "procedure.endpoint.stasis_heartbeats"),
        ({"procedure.endpoint.stasis_heartbeats": 6}, "procedure.endpoint.stasis_heartbeats"),
    ],
)
def test_protocol_deviation_names_the_parameter(make_case, edits, parameter):
    f = check(R.rule_protocol_deviation, make_case("tace", edits), "PROTOCOL_DEVIATION", Severity.CAUTION)
    assert any(p.startswith(parameter) for p in f.context["parameters"]), f.context
    assert parameter in f.message


@pytest.mark.parametrize(
    "edits",
    [{"procedure.lipiodol_ml": 10.0}, {"procedure.lipiodol_ml": 20.0}, {"procedure.endpoint.stasis_heartbeats": 2},
     {"procedure.endpoint.stasis_heartbeats": 5}, {"procedure.embolic.size_min_um": 50.0,
                                                   "procedure.embolic.size_max_um": 500.0}],
)
def test_protocol_edges_are_standard(make_case, edits):
    check(R.rule_protocol_deviation, make_case("tace", edits), "PROTOCOL_DEVIATION", None)


def test_protocol_standard_follows_thresholds(make_case):
    case = make_case("tace", {"procedure.drug.dose_mg": 75.0})
    check(R.rule_protocol_deviation, case, "PROTOCOL_DEVIATION", Severity.CAUTION)
    check(R.rule_protocol_deviation, case, "PROTOCOL_DEVIATION", None,
          th=Thresholds.with_overrides({"protocol_doxorubicin_mg": 75.0}))


# ---------------------------------------------------------------------------------------------------------------
# RESECTION_CANDIDATE / TRANSPLANT_CANDIDATE
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "r0,flr,diff,severity",
    [
        (True, 30.0, "well", Severity.INFO),
        (True, 45.0, "well", Severity.INFO),
        (True, 29.9, "well", None),
        (True, None, "well", None),
        (True, 40.0, "poor", None),
        (False, 40.0, "well", None),
    ],
)
def test_resection_candidate(make_case, r0, flr, diff, severity):
    case = make_case("tace", {"patient.liver.r0_resection_feasible": r0,
                              "patient.liver.future_liver_remnant_percent": flr,
                              "patient.disease.differentiation": diff})
    f = check(R.rule_resection_candidate, case, "RESECTION_CANDIDATE", severity)
    if f:
        assert "curative" in f.message and "tumour board" in f.message


#: A Milan-NET patient: the tae example with documented stability and no carcinoid heart disease (issue 11: unknown
#: stability and carcinoid heart disease no longer qualify).
MILAN = {"patient.disease.stable_disease_months": 12.0, "patient.disease.carcinoid_heart_disease": False}


def milan(edits=None):
    return {**MILAN, **(edits or {})}


def test_transplant_candidate_fires_for_milan_patient(make_case):
    f = check(R.rule_transplant_candidate, make_case("tae", milan()), "TRANSPLANT_CANDIDATE", Severity.INFO)
    assert "stable 12 months" in f.message
    assert "long-term liver injury" not in f.message
    assert "Milan" in f.evidence


def test_transplant_candidate_silent_without_documented_stability(make_case):
    """Issue 11: 'meets the Milan criteria' beside 'stability not documented' was a contradiction."""
    check(R.rule_transplant_candidate, make_case("tae", {"patient.disease.carcinoid_heart_disease": False}),
          "TRANSPLANT_CANDIDATE", None)


def test_transplant_candidate_silent_with_carcinoid_heart_disease(make_case):
    check(R.rule_transplant_candidate, make_case("tae", {"patient.disease.stable_disease_months": 12.0}),
          "TRANSPLANT_CANDIDATE", None)


def test_transplant_candidate_with_tare_notes_liver_injury(make_case):
    f = check(R.rule_transplant_candidate, make_case("resin", milan()), "TRANSPLANT_CANDIDATE", Severity.INFO)
    assert "long-term liver injury" in f.message and "Su" in f.evidence


@pytest.mark.parametrize(
    "edits,severity",
    [
        ({"patient.age_years": 54}, Severity.INFO),
        ({"patient.age_years": 55}, None),
        ({"patient.disease.grade": "G2"}, Severity.INFO),
        ({"patient.disease.grade": "G3"}, None),
        ({"patient.disease.primary_resected": False}, None),
        ({"patient.disease.extrahepatic_disease": True}, None),
        ({"patient.disease.liver_tumor_burden_percent": 49.9}, Severity.INFO),
        ({"patient.disease.liver_tumor_burden_percent": 50.0}, None),
        ({"patient.disease.stable_disease_months": 6.0}, Severity.INFO),
        ({"patient.disease.stable_disease_months": 5.9}, None),
        ({"patient.disease.primary_site": "lung"}, None),
        ({"patient.disease.primary_site": "unknown"}, None),
        ({"patient.disease.primary_site": "unknown", "patient.disease.primary_portal_drainage": True},
         Severity.INFO),
        ({"patient.disease.primary_site": "pancreas", "patient.disease.primary_portal_drainage": False}, None),
        ({"patient.disease.primary_site": "pancreas"}, Severity.INFO),
    ],
)
def test_transplant_criteria_boundaries(make_case, edits, severity):
    check(R.rule_transplant_candidate, make_case("tae", milan(edits)), "TRANSPLANT_CANDIDATE", severity)


def test_transplant_age_limit_is_a_parameter(make_case):
    case = make_case("tae", milan({"patient.age_years": 58}))
    check(R.rule_transplant_candidate, case, "TRANSPLANT_CANDIDATE", None)
    f = check(R.rule_transplant_candidate, case, "TRANSPLANT_CANDIDATE", Severity.INFO,
              th=Thresholds.with_overrides({"transplant_age_limit_years": 60}))
    assert f.context["transplant_age_limit_years"] == 60
