"""Every board criterion at its boundary (met on one side, unmet on the other; unknown where the case is silent)."""

from __future__ import annotations

import math

import pytest

import embplan
from embplan.board.liver import albi_grade, albi_score
from embplan.thresholds import Thresholds

from .conftest import make, rec


def crit(review, option: str, key: str):
    return next(c for c in review.option(option).criteria if c.key == key)


def status(edits, option, key, **kw):
    return crit(embplan.review(make(edits, **kw)), option, key).status.value


# ---- resection -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flr,expected", [(30.0, "met"), (29.9, "unmet"), (None, "unknown"), (45.0, "met")])
def test_flr_as_entered(flr, expected):
    c = crit(embplan.review(make({"patient.liver.future_liver_remnant_percent": flr})), "resection",
             "future_liver_remnant")
    assert c.status.value == expected
    if flr is not None:
        assert "as entered" in c.note


def test_flr_computed_from_segment_volumes_and_lesions():
    # right-lobe lesions (segments 6, 7); remnant = segments 1-5 and 8: 100+150+150+200+250+300 = 1150 of 1600 mL
    vols = {"1": 100.0, "2": 150.0, "3": 150.0, "4": 200.0, "5": 250.0, "6": 225.0, "7": 225.0, "8": 300.0}
    edits = {"patient.liver.segment_volumes_ml": vols, "patient.liver.future_liver_remnant_percent": 10.0,
             "patient.disease.lesions": [{"id": "L1", "segments": [6], "longest_diameter_mm": 40},
                                         {"id": "L2", "segments": [7, 3], "longest_diameter_mm": 20}],
             "patient.disease.liver_distribution": "bilobar"}
    c = crit(embplan.review(make(edits)), "resection", "future_liver_remnant")
    # lesion segments 3, 6, 7 resected: remnant 100+150+200+250+300 = 1000 of 1600 = 62.5 %
    assert c.status.value == "met" and c.value == "62.5%"
    assert "computed from segment volumes" in c.note and "entered value 10% not used" in c.note


@pytest.mark.parametrize("ecog,expected", [(2, "met"), (3, "unmet"), (0, "met")])
def test_resection_ecog(ecog, expected):
    assert status({"patient.ecog": ecog}, "resection", "performance_status") == expected


@pytest.mark.parametrize("ki67,grade,expected", [(20.0, "G2", "met"), (20.1, "G2", "unmet"), (2.0, "G1", "met"),
                                                 (5.0, "G3", "unmet")])
def test_grade_reads_ki67(ki67, grade, expected):
    assert status({"patient.disease.ki67_percent": ki67, "patient.disease.grade": grade}, "resection",
                  "grade") == expected


@pytest.mark.parametrize("edits,expected", [
    ({}, "met"),
    ({"patient.disease.extrahepatic_disease": True}, "unknown"),
    ({"patient.disease.extrahepatic_disease": True, "patient.disease.extrahepatic_resectable": True}, "met"),
    ({"patient.disease.extrahepatic_disease": True, "patient.disease.extrahepatic_resectable": False}, "unmet"),
    ({"patient.disease.extrahepatic_disease": True, "patient.disease.extrahepatic_sites": ["bone"]}, "unmet"),
])
def test_extrahepatic_resectability(edits, expected):
    assert status(edits, "resection", "extrahepatic_disease") == expected


# ---- transplant --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("age,milan,enets,unos", [(54, "met", "met", "met"), (55, "unmet", "met", "met"),
                                                  (60, "unmet", "met", "met"), (61, "unmet", "unmet", "unmet")])
def test_transplant_age_per_rule_set(age, milan, enets, unos):
    r = embplan.review(make({"patient.age_years": age}))
    assert crit(r, "transplant_milan", "age").status.value == milan
    assert crit(r, "transplant_enets", "age").status.value == enets
    assert crit(r, "transplant_unos", "age").status.value == unos


@pytest.mark.parametrize("ki67,enets,unos", [(9.9, "met", "met"), (10.0, "unmet", "met"), (10.1, "unmet", "unmet")])
def test_transplant_ki67(ki67, enets, unos):
    r = embplan.review(make({"patient.disease.ki67_percent": ki67}))
    assert crit(r, "transplant_enets", "grade").status.value == enets
    assert crit(r, "transplant_unos", "grade").status.value == unos


@pytest.mark.parametrize("burden,expected", [(49.9, "met"), (50.0, "unmet")])
def test_milan_involvement(burden, expected):
    assert status({"patient.disease.liver_tumor_burden_percent": burden}, "transplant_milan",
                  "liver_involvement") == expected


@pytest.mark.parametrize("burden,symptoms,expected", [(49.9, None, "met"), (60.0, True, "met"), (60.0, False, "unmet"),
                                                      (60.0, None, "unknown"), (75.0, True, "unmet")])
def test_unos_involvement_with_refractory_symptoms(burden, symptoms, expected):
    edits = {"patient.disease.liver_tumor_burden_percent": burden}
    if symptoms is not None:
        edits["patient.disease.refractory_hormonal_symptoms"] = symptoms
    assert status(edits, "transplant_unos", "liver_involvement") == expected


def test_unos_primary_resection_date_unknown():
    assert status({}, "transplant_unos", "primary_resected") == "unknown"
    assert status({"patient.disease.primary_resected": False}, "transplant_unos", "primary_resected") == "unmet"


def test_unos_primary_resected_boundary_exact():
    assert status({"patient.disease.primary_resection_date": "2025-11-30"}, "transplant_unos",
                  "primary_resected") == "met"  # 183 days
    assert status({"patient.disease.primary_resection_date": "2025-12-01"}, "transplant_unos",
                  "primary_resected") == "unmet"  # 182 days


def test_unos_resectable_patient_is_not_a_candidate():
    r = embplan.review(make({"patient.liver.r0_resection_feasible": True}))
    assert crit(r, "transplant_unos", "unresectable_bilobar").status.value == "unmet"
    assert r.option("transplant_unos").status.value == "not_eligible"


@pytest.mark.parametrize("edits,expected", [
    ({}, "unknown"),  # no record is not stability
    ({"patient.disease.stable_disease_months": 6.0}, "met"),
    ({"patient.disease.stable_disease_months": 5.9}, "unmet"),
    ({"patient.prior_treatments": [rec("TAE", "2026-01-15", "right", "progression")]}, "unmet"),  # 4.5 months
    ({"patient.prior_treatments": [rec("TAE", "2025-06-01", "right", "progression")]}, "unknown"),  # 12 months
    ({"patient.prior_treatments": [rec("TAE", "2026-01-15", "right", "progression")],
      "patient.disease.stable_disease_months": 12.0}, "unmet"),  # the history contradicts the stated stability
])
def test_stability_from_history(edits, expected):
    assert status(edits, "transplant_milan", "stable_disease") == expected


def test_carcinoid_heart_disease_excludes_transplant():
    r = embplan.review(make({"patient.disease.carcinoid_heart_disease": True}))
    for key in ("transplant_milan", "transplant_enets", "transplant_unos"):
        assert crit(r, key, "no_carcinoid_heart_disease").status.value == "unmet"


@pytest.mark.parametrize("bili,expected", [(2.0, "met"), (2.01, "unmet")])
def test_unos_bilirubin(bili, expected):
    assert status({"patient.labs.bilirubin_mg_dl": bili}, "transplant_unos", "bilirubin") == expected


# ---- ablation, debulking -------------------------------------------------------------------------------------------
def lesions(n, mm=20.0, seg=6):
    return [{"id": f"L{i}", "segments": [seg if i % 2 else 3], "longest_diameter_mm": mm} for i in range(1, n + 1)]


@pytest.mark.parametrize("n,expected", [(5, "met"), (6, "unmet"), (2, "met")])
def test_ablation_lesion_count(n, expected):
    assert status({"patient.disease.lesions": lesions(n)}, "ablation", "lesion_count") == expected


@pytest.mark.parametrize("mm,expected", [(30.0, "met"), (30.1, "unmet")])
def test_ablation_lesion_size(mm, expected):
    assert status({"patient.disease.lesions": lesions(2, mm)}, "ablation", "lesion_size") == expected


def test_ablation_without_lesions_needs_data():
    r = embplan.review(make())
    assert crit(r, "ablation", "lesions_given").status.value == "unknown"
    assert r.option("ablation").status.value == "needs_data"


@pytest.mark.parametrize("share,expected", [(70.0, "met"), (69.9, "unmet"), (90.0, "met"), (None, "unknown")])
def test_debulking_share_thresholds(share, expected):
    edits = {"patient.disease.functional_syndrome": "carcinoid"}
    if share is not None:
        edits["patient.disease.resectable_disease_percent"] = share
    r = embplan.review(make(edits))
    c = crit(r, "debulking", "removable_share")
    assert c.status.value == expected
    if share == 90.0:
        assert "NCCN" in c.note
    if share == 70.0:
        assert "not NCCN" in c.note


def test_debulking_thresholds_are_parameters():
    edits = {"patient.disease.functional_syndrome": "carcinoid", "patient.disease.resectable_disease_percent": 75.0,
             "thresholds": {"board_debulking_maxwell_min_percent": 80.0}}
    assert status(edits, "debulking", "removable_share") == "unmet"


# ---- ALBI (Johnson 2015) -------------------------------------------------------------------------------------------
def test_albi_hand_calculation():
    # bilirubin 1.0 mg/dL = 17.1 umol/L; albumin 4.0 g/dL = 40 g/L: 0.66 log10(17.1) - 0.085 x 40
    expected = 0.66 * math.log10(17.1) - 3.4
    assert albi_score(1.0, 4.0) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(-2.5862, abs=1e-4)
    assert albi_grade(expected) == 2  # just above the -2.60 cut-off
    assert albi_grade(albi_score(0.5, 4.0)) == 1  # 0.66 log10(8.55) - 3.4 = -2.785
    assert albi_grade(-1.39) == 2 and albi_grade(-1.389) == 3 and albi_grade(-2.60) == 1
    assert albi_score(0.0, 4.0) is None


def test_liver_reserve_in_review_uses_albi_and_ascites():
    r = embplan.review(make({"patient.labs.bilirubin_mg_dl": 1.0, "patient.labs.albumin_g_dl": 4.0,
                             "patient.liver.ascites": False}))
    assert r.liver.albi_grade == 2 and r.liver.compensated is True
    r = embplan.review(make({"patient.liver.ascites": True}))
    assert r.liver.compensated is False
    r = embplan.review(make())
    assert r.liver.compensated is None  # ascites not recorded: undecided, not assumed


def test_board_thresholds_have_sources():
    for name, info in Thresholds.model_fields.items():
        if name.startswith("board_"):
            assert info.description and len(info.description) > 30, name


# ---- intra-arterial, per lobe ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("lsf,expected", [(0.20, "met"), (0.21, "unmet")])
def test_requested_resin_tare_lung_shunt(lsf, expected):
    edits = {"dosimetry.lung_shunt_fraction": lsf,
             "patient.prior_treatments": [rec("TACE", "2025-01-01", "right", "progression")]}
    assert status(edits, "intra_arterial_right_lobe", "lung_shunt", procedure="TARE") == expected


@pytest.mark.parametrize("bili,expected", [(2.0, "met"), (2.01, "unmet")])
def test_intra_arterial_bilirubin(bili, expected):
    assert status({"patient.labs.bilirubin_mg_dl": bili}, "intra_arterial_right_lobe", "bilirubin") == expected


@pytest.mark.parametrize("burden,expected", [(70.0, "met"), (70.1, "unmet")])
def test_tare_burden(burden, expected):
    edits = {"patient.disease.liver_tumor_burden_percent": burden,
             "patient.prior_treatments": [rec("TACE", "2025-01-01", "right", "progression")]}
    assert status(edits, "intra_arterial_right_lobe", "tumour_burden", procedure="TARE") == expected


def test_tace_lifetime_doxorubicin_uses_the_requested_dose():
    # BSA (Du Bois 1916: 0.007184 W^0.425 H^0.725, 70 kg, 168 cm) = 1.795 m2; 700 + 100 mg = 800 mg = 446 mg/m2
    bsa = 0.007184 * 70.0 ** 0.425 * 168.0 ** 0.725
    edits = {"patient.prior_treatments": [rec("TAE", "2024-01-01", "right", "progression"),
                                          rec("TACE", "2025-01-01", "right", "partial", doxorubicin_mg=700.0)],
             "procedure.drug.dose_mg": 100.0}
    c = crit(embplan.review(make(edits, procedure="TACE")), "intra_arterial_right_lobe", "doxorubicin")
    assert c.status.value == "met" and c.value.startswith(f"{800 / bsa:.0f} mg/m2")
    assert 800 / bsa <= 450 < 820 / bsa
    edits["procedure.drug.dose_mg"] = 120.0  # 820 mg = 455 mg/m2
    c = crit(embplan.review(make(edits, procedure="TACE")), "intra_arterial_right_lobe", "doxorubicin")
    assert c.status.value == "unmet"
