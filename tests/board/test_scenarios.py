"""End-to-end tumour-board scenarios, written as an interventional radiologist presents them (the failures listed in
issue 11 first). Each asserts what the board answers and that the flags agree with it."""

from __future__ import annotations

import datetime as dt

import pytest

import embplan
from embplan import assess

from .conftest import case_dict, make, rec


def codes(case):
    return {f.code: f for f in assess(case)}


def first_step(review):
    return review.recommendation.steps[0]


def status(review, key):
    return review.option(key).status.value


def crit(review, option, key):
    return next(c for c in review.option(option).criteria if c.key == key)


# 1 -----------------------------------------------------------------------------------------------------------------
def test_progressing_on_tace_is_not_sent_to_transplant():
    """48-year-old, G2 ileal NET, right lobe progressed 3 months after TACE: TARE of the right lobe; not a transplant
    candidate (progression within 6 months)."""
    case = make({"patient.age_years": 48, "patient.prior_treatments": [
        rec("TAE", "2024-05-01", "right", "partial"), rec("TACE", "2026-03-01", "right", "progression",
                                                          doxorubicin_mg=50)]}, procedure="TARE")
    r = embplan.review(case)
    assert crit(r, "transplant_milan", "stable_disease").status.value == "unmet"
    assert all(status(r, k) == "not_eligible" for k in ("transplant_milan", "transplant_enets", "transplant_unos"))
    assert "TRANSPLANT_CANDIDATE" not in codes(case)
    assert first_step(r).option_key == "intra_arterial_right_lobe" and "TARE" in first_step(r).action


# 2 -----------------------------------------------------------------------------------------------------------------
def test_carcinoid_heart_disease_is_not_sent_to_transplant():
    case = make({"patient.age_years": 45, "patient.disease.grade": "G1", "patient.disease.ki67_percent": 2.0,
                 "patient.disease.functional_syndrome": "carcinoid", "patient.disease.carcinoid_heart_disease": True,
                 "patient.disease.stable_disease_months": 12.0})
    r = embplan.review(case)
    assert {status(r, k) for k in ("transplant_milan", "transplant_enets", "transplant_unos")} == {"not_eligible"}
    flags = codes(case)
    assert "TRANSPLANT_CANDIDATE" not in flags and flags["CARCINOID_CRISIS_RISK"].severity == "warning"
    # and without the heart disease the same patient is a Milan candidate: flag and board agree
    case2 = make({"patient.age_years": 45, "patient.disease.grade": "G1", "patient.disease.ki67_percent": 2.0,
                  "patient.disease.functional_syndrome": "carcinoid", "patient.disease.stable_disease_months": 12.0})
    r2 = embplan.review(case2)
    assert status(r2, "transplant_milan") == "recommended" and "TRANSPLANT_CANDIDATE" in codes(case2)


# 3 -----------------------------------------------------------------------------------------------------------------
def test_bone_metastases_rule_out_curative_resection():
    case = make({"patient.liver.r0_resection_feasible": True, "patient.liver.future_liver_remnant_percent": 45.0,
                 "patient.disease.extrahepatic_disease": True, "patient.disease.extrahepatic_sites": ["bone"]})
    r = embplan.review(case)
    assert status(r, "resection") == "not_eligible"
    assert crit(r, "resection", "extrahepatic_disease").status.value == "unmet"
    assert "RESECTION_CANDIDATE" not in codes(case)
    assert crit(r, "systemic", "extrahepatic_progression").status.value == "unknown"


# 4 -----------------------------------------------------------------------------------------------------------------
def test_ecog_3_rules_out_resection():
    case = make({"patient.liver.r0_resection_feasible": True, "patient.liver.future_liver_remnant_percent": 45.0,
                 "patient.ecog": 3})
    r = embplan.review(case)
    assert status(r, "resection") == "not_eligible" and "RESECTION_CANDIDATE" not in codes(case)
    assert status(r, "intra_arterial_right_lobe") == "not_eligible"  # ECOG 3 also outside liver-directed therapy


# 5 -----------------------------------------------------------------------------------------------------------------
def test_tace_after_whipple_goes_to_tare_and_says_so_consistently():
    case = make({"patient.biliary.biliary_enteric_anastomosis": True, "patient.biliary.sphincter_of_oddi_intact": False,
                 "patient.prior_treatments": [rec("resection", "2021-02-03", note="Whipple"),
                                              rec("TAE", "2024-09-10", "right", "progression")]}, procedure="TACE")
    seq = case.sequence()
    assert seq.expected_step == "TARE" and not seq.follows_ladder
    r = embplan.review(case)
    assert r.option("intra_arterial_right_lobe").procedure == "TARE"
    assert r.staged_plan[0].procedure == "TARE" and "instead of the requested TACE" in r.staged_plan[0].note
    flags = codes(case)
    assert flags["BILIARY_ENTERIC_ANASTOMOSIS"].severity == "warning" and "SEQUENCE_DEVIATION" in flags
    assert any(c.outcome.startswith("liver abscess") for c in r.consent)


# 6 -----------------------------------------------------------------------------------------------------------------
def test_left_lobe_tare_two_months_after_right_lobe_tare_is_whole_liver_exposure():
    case = make({"patient.prior_treatments": [
        rec("TARE", "2026-04-01", "right", "partial", device="resin", activity_gbq=1.2, lung_dose_gy=8.0,
            normal_liver_dose_gy=35.0)]}, procedure="TARE", lobe="left")
    flags = codes(case)
    assert flags["WHOLE_LIVER_TARE"].severity == "warning"
    assert flags["WHOLE_LIVER_TARE"].context["earlier_normal_liver_doses_gy"] == [35.0]
    r = embplan.review(case)
    doses = {t.territory: t for t in r.liver.territory_doses}
    assert doses["right lobe"].cumulative_normal_liver_gy == 35.0 and doses["lungs"].cumulative_lung_gy == 8.0
    assert any("whole-liver exposure" in n for n in r.liver.notes)
    # the right lobe, responding two months after its TARE, is followed up, not retreated
    right = {c.territory: c for c in r.course}["right lobe"]
    assert right.next_step.startswith("surveillance") and "partial response" in right.reason
    assert crit(r, "intra_arterial_right_lobe", "treatment_needed").status.value == "unmet"
    assert all(s.territory != "right lobe" for s in r.staged_plan)
    plan = embplan.plan(case)
    doses = {t.territory: t for t in plan.board.liver.territory_doses}
    assert doses["left lobe"].cumulative_normal_liver_gy == pytest.approx(plan.dosimetry.normal_liver_dose_gy)
    assert doses["lungs"].cumulative_lung_gy == pytest.approx(8.0 + plan.dosimetry.lung_dose_gy)


# 7 -----------------------------------------------------------------------------------------------------------------
def test_cirrhosis_with_ascites_is_not_offered_tare():
    case = make({"patient.liver.cirrhosis": True, "patient.liver.ascites": True,
                 "patient.prior_treatments": [rec("TACE", "2025-01-01", "right", "progression")]}, procedure="TARE")
    r = embplan.review(case)
    assert r.liver.compensated is False
    assert crit(r, "intra_arterial_right_lobe", "compensated").status.value == "unmet"
    assert status(r, "intra_arterial_right_lobe") == "not_eligible"


def test_compensated_cirrhosis_needs_ascites_recorded():
    case = make({"patient.liver.cirrhosis": True, "patient.prior_treatments": [
        rec("TACE", "2025-01-01", "right", "progression")]}, procedure="TARE")
    r = embplan.review(case)
    assert crit(r, "intra_arterial_right_lobe", "compensated").status.value == "unknown"
    assert status(r, "intra_arterial_right_lobe") == "needs_data"
    assert any("Compensated liver" in w for w in r.recommendation.would_change)


# 8 -----------------------------------------------------------------------------------------------------------------
def test_low_albumin_gives_albi_grade_3():
    r = embplan.review(make({"patient.labs.albumin_g_dl": 2.5, "patient.labs.bilirubin_mg_dl": 1.5}))
    assert r.liver.albi_grade == 3 and r.liver.compensated is False
    assert r.liver.albi_score == pytest.approx(-1.195, abs=1e-3)


# 9, 10 -------------------------------------------------------------------------------------------------------------
def test_prior_prrt_and_ebrt_reduce_the_reserve():
    case = make({"patient.prior_treatments": [rec("PRRT", "2024-01-01"), rec("EBRT", "2023-01-01", "right")]},
                procedure="TARE")
    r = embplan.review(case)
    assert r.liver.prior_prrt and r.liver.prior_ebrt
    assert any("PRRT" in n and "no evidence for or against" in n for n in r.liver.notes)
    assert any("external-beam" in n for n in r.liver.notes)
    f = codes(case)["PRIOR_LIVER_RADIATION"]
    assert f.severity == "caution" and "no evidence for or against" in f.message and "2023-01-01" in f.message
    assert "PRIOR_LIVER_RADIATION" not in codes(make({"patient.prior_treatments": [rec("PRRT", "2024-01-01")]}))


# 11 ----------------------------------------------------------------------------------------------------------------
def test_resectable_patient_gets_surgery_first():
    case = make({"patient.liver.r0_resection_feasible": True, "patient.liver.future_liver_remnant_percent": 40.0,
                 "patient.ecog": 0, "patient.disease.grade": "G1", "patient.disease.ki67_percent": 2.0})
    r = embplan.review(case)
    assert first_step(r).option_key == "resection" and status(r, "resection") == "recommended"
    assert "RESECTION_CANDIDATE" in codes(case)
    assert status(r, "transplant_unos") == "not_eligible"  # resectable: not a UNOS candidate
    assert not any(s.option_key.startswith("intra_arterial") for s in r.recommendation.steps)


# 12 ----------------------------------------------------------------------------------------------------------------
def test_milan_enets_unos_candidate():
    case = make({"patient.age_years": 45, "patient.disease.grade": "G1", "patient.disease.ki67_percent": 2.0,
                 "patient.disease.stable_disease_months": 12.0, "patient.disease.primary_resection_date": "2024-01-01",
                 "patient.disease.liver_tumor_burden_percent": 30.0})
    r = embplan.review(case)
    assert {status(r, k) for k in ("transplant_milan", "transplant_enets", "transplant_unos")} == {"recommended"}
    assert "TRANSPLANT_CANDIDATE" in codes(case)
    assert any(c.option_key.startswith("transplant") and "97.2%" in c.value for c in r.consent)


# 13 ----------------------------------------------------------------------------------------------------------------
def test_g3_nec_gets_systemic_therapy_first():
    case = make({"patient.disease.grade": "G3", "patient.disease.ki67_percent": 40.0,
                 "patient.disease.differentiation": "poor"})
    r = embplan.review(case)
    assert first_step(r).option_key == "systemic" and status(r, "systemic") == "recommended"
    # TARE only for a selected patient with a compensated liver: ascites not recorded -> needs data
    assert r.option("intra_arterial_right_lobe").procedure == "TARE"
    assert crit(r, "intra_arterial_right_lobe", "compensated").status.value == "unknown"
    assert status(r, "intra_arterial_right_lobe") == "needs_data"
    assert all(status(r, k) == "not_eligible" for k in ("resection", "transplant_milan"))
    r = embplan.review(make({"patient.disease.grade": "G3", "patient.disease.ki67_percent": 40.0,
                             "patient.disease.differentiation": "poor", "patient.liver.ascites": False}))
    assert [s.option_key for s in r.recommendation.steps][:2] == ["systemic", "intra_arterial_right_lobe"]
    assert r.recommendation.steps[1].action.startswith("Selected TARE")
    assert {c.territory: c.next_step for c in r.course}["left lobe"] == "systemic therapy"


# 14 ----------------------------------------------------------------------------------------------------------------
def test_extrahepatic_progression_indicates_systemic_therapy():
    case = make({"patient.disease.extrahepatic_disease": True, "patient.disease.extrahepatic_sites": ["lung"],
                 "patient.disease.extrahepatic_progression": True})
    r = embplan.review(case)
    assert status(r, "systemic") == "recommended"
    assert crit(r, "systemic", "extrahepatic_progression").status.value == "met"


# 15 ----------------------------------------------------------------------------------------------------------------
def test_both_lobes_refractory_to_tare_exhaust_the_ladder():
    case = make({"patient.prior_treatments": [rec("TARE", "2024-01-01", "right", "progression"),
                                              rec("TARE", "2024-03-01", "left", "progression")]}, procedure="TARE")
    r = embplan.review(case)
    assert crit(r, "systemic", "liver_directed_exhausted").status.value == "met"
    assert status(r, "systemic") == "recommended"
    assert [c.next_step for c in r.course] == ["systemic therapy (this lobe)", "systemic therapy"]


# 16 ----------------------------------------------------------------------------------------------------------------
def test_each_lobe_follows_its_own_ladder():
    """Left lobe progressed after TACE, right lobe responding: the left lobe is ready for TARE, the right is not."""
    case = make({"patient.prior_treatments": [rec("TACE", "2025-01-01", "right", "partial"),
                                              rec("TACE", "2025-02-01", "left", "progression")]},
                procedure="TARE", lobe="left")
    r = embplan.review(case)
    assert r.option("intra_arterial_left_lobe").procedure == "TARE"
    assert r.option("intra_arterial_right_lobe").procedure == "TACE"
    assert case.sequence().follows_ladder  # the left lobe's own history


# 17 ----------------------------------------------------------------------------------------------------------------
def test_per_lobe_response_of_one_whole_liver_tace():
    case = make({"patient.prior_treatments": [rec("TACE", "2025-01-01", "whole", None, responses=[
        {"territory": {"scope": "lobar", "lobe": "right"}, "response": "partial"},
        {"territory": {"scope": "lobar", "lobe": "left"}, "response": "progression"}])]}, procedure="TARE",
        lobe="left")
    r = embplan.review(case)
    assert r.option("intra_arterial_left_lobe").procedure == "TARE"
    assert r.option("intra_arterial_right_lobe").procedure == "TACE"
    course = {c.territory: c for c in r.course}
    assert course["left lobe"].last_response.startswith("progression")


# 18 ----------------------------------------------------------------------------------------------------------------
def test_biliary_stent_makes_tare_first():
    case = make({"patient.biliary.biliary_stent": True})
    r = embplan.review(case)
    assert r.option("intra_arterial_right_lobe").procedure == "TARE"
    assert case.sequence().expected_step == "TARE" and "SEQUENCE_DEVIATION" in codes(case)


# 19 ----------------------------------------------------------------------------------------------------------------
def test_deb_tace_request_is_never_recommended(shared_examples):
    case = embplan.load_case(shared_examples / "deb_tace.json")
    r = embplan.review(case)
    assert codes(case)["DEB_TACE_IN_NET"].severity == "contraindication"
    assert all("DEB" not in (o.procedure or "") for o in r.options)
    assert r.staged_plan[0].procedure == "TACE" and "instead of the requested DEB-TACE" in r.staged_plan[0].note


# 20, 21 ------------------------------------------------------------------------------------------------------------
def test_few_small_lesions_are_ablated():
    les = [{"id": "L1", "segments": [6], "longest_diameter_mm": 15, "location": "near_large_vessel"},
           {"id": "L2", "segments": [3], "longest_diameter_mm": 22}]
    r = embplan.review(make({"patient.disease.lesions": les, "patient.biliary.sphincter_of_oddi_intact": False}))
    assert status(r, "ablation") == "recommended"
    reason = r.option("ablation").reason
    assert "heat sink" in reason and "abscess" in reason
    assert any(c.option_key == "ablation" and "53%" in c.value for c in r.consent)


# 22 ----------------------------------------------------------------------------------------------------------------
def test_resection_combined_with_ablation():
    vols = {"1": 100.0, "2": 150.0, "3": 150.0, "4": 200.0, "5": 250.0, "6": 225.0, "7": 225.0, "8": 300.0}
    les = [{"id": "big", "segments": [7], "longest_diameter_mm": 60}, {"id": "small", "segments": [3],
                                                                       "longest_diameter_mm": 15}]
    r = embplan.review(make({"patient.disease.lesions": les, "patient.liver.segment_volumes_ml": vols}))
    c = crit(r, "ablation_with_resection", "future_liver_remnant")
    assert c.status.value == "met" and c.value == "85.9%"  # (1600 - 225) / 1600
    assert status(r, "ablation_with_resection") == "recommended"
    assert status(r, "ablation") == "not_eligible"  # 60 mm is too large to ablate


# 23, 24 ------------------------------------------------------------------------------------------------------------
def test_debulking_for_functioning_tumour_but_not_in_rapid_progression():
    base = {"patient.disease.functional_syndrome": "carcinoid", "patient.disease.resectable_disease_percent": 80.0,
            "patient.disease.stable_disease_months": 12.0}
    r = embplan.review(make(base))
    assert status(r, "debulking") == "recommended"
    fast = dict(base, **{"patient.disease.stable_disease_months": None,
                         "patient.prior_treatments": [rec("TAE", "2026-04-01", "right", "progression")]})
    r = embplan.review(make(fast))
    assert crit(r, "debulking", "no_rapid_progression").status.value == "unmet"
    assert status(r, "debulking") == "not_eligible"


# 25 ----------------------------------------------------------------------------------------------------------------
def test_whole_liver_tare_becomes_a_staged_lobar_plan():
    data = case_dict({"patient.prior_treatments": [rec("TACE", "2025-01-01", "whole", "progression")]},
                     procedure="TARE")
    data["procedure"]["territory"] = {"scope": "whole_liver"}
    case = embplan.load_case(data)
    r = embplan.review(case)
    assert codes(case)["WHOLE_LIVER_TARE"].severity == "warning"
    assert [(s.territory, s.procedure) for s in r.staged_plan] == [("right lobe", "TARE"), ("left lobe", "TARE")]
    assert r.staged_plan[1].earliest_date == dt.date(2026, 7, 1)  # 30 days (board_staged_lobar_interval_days)


# 26 ----------------------------------------------------------------------------------------------------------------
def test_unilobar_disease_has_no_staged_plan():
    r = embplan.review(make({"patient.disease.liver_distribution": "unilobar_right"}))
    assert r.staged_plan == []
    assert {c.territory: c.next_step for c in r.course}["left lobe"] == "none"


# 27 ----------------------------------------------------------------------------------------------------------------
def test_follow_up_dates_from_the_procedure_date():
    r = embplan.review(make({"procedure.date": "2026-01-31"}))
    dates = [f.date for f in r.follow_up if f.what.startswith("Imaging")]
    assert dates == [dt.date(2026, 4, 30), dt.date(2026, 7, 31), dt.date(2026, 10, 31), dt.date(2027, 1, 31),
                     dt.date(2027, 7, 31), dt.date(2028, 1, 31)]
    labs = [f.date for f in r.follow_up if f.what.startswith("Labs")]
    assert labs == [dt.date(2026, 3, 2)]
    assert any(f.date is None and "Retreatment triggers" in f.what for f in r.follow_up)


# 28 ----------------------------------------------------------------------------------------------------------------
def test_repeat_resection_for_liver_only_recurrence():
    case = make({"patient.prior_treatments": [rec("resection", "2022-01-01", "left", note="left hepatectomy")],
                 "patient.liver.r0_resection_feasible": True, "patient.liver.future_liver_remnant_percent": 50.0})
    r = embplan.review(case)
    assert status(r, "repeat_resection") == "recommended"
    assert any("60.3%" in c.value for c in r.consent)


# 29 ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method,phrase", [("partition", "not applied"), ("mird", "not applied"),
                                           ("bsa", "(applied)")])
def test_lung_shunt_reduction_text_follows_the_method(method, phrase):
    data = case_dict({"dosimetry.lung_shunt_fraction": 0.12}, procedure="TARE")
    data["procedure"]["prescription"] = {"method": method, **({"tumor_dose_target_gy": 120.0} if method ==
                                                              "partition" else {"perfused_dose_target_gy": 100.0}
                                                              if method == "mird" else {})}
    f = codes(embplan.load_case(data))["LUNG_SHUNT_HIGH"]
    assert phrase in f.message
    if method != "bsa":
        assert "reduce the activity by" not in f.message


# 30 ----------------------------------------------------------------------------------------------------------------
def test_planned_tare_with_prior_prrt_carries_the_board_and_consent():
    case = make({"patient.prior_treatments": [rec("PRRT", "2025-01-01"),
                                              rec("TACE", "2025-06-01", "right", "progression")]}, procedure="TARE")
    plan = embplan.plan(case)
    # the plan's board is the case's review plus this plan's dose: the options are the same
    assert [(o.key, o.status) for o in plan.board.options] == [(o.key, o.status) for o in embplan.review(case).options]
    assert plan.board.liver.prior_prrt
    assert any(c.outcome.startswith("chronic liver injury") for c in plan.board.consent)


# 31 ----------------------------------------------------------------------------------------------------------------
def test_lobe_without_a_recorded_response_is_imaged_first():
    case = make({"patient.prior_treatments": [rec("TAE", "2025-09-01", "left")]})
    r = embplan.review(case)
    left = {c.territory: c for c in r.course}["left lobe"]
    assert left.next_step.startswith("image first")
    assert status(r, "intra_arterial_left_lobe") == "needs_data"
    assert any("Treatment needed now" in w for w in r.recommendation.would_change)


# 32 ----------------------------------------------------------------------------------------------------------------
def test_resin_tare_with_a_prohibitive_lung_shunt_is_not_staged_or_adopted():
    """Right lobe progressed after TACE, resin TARE requested with a 25% lung shunt (do not treat): the board does not
    plan the TARE nor stage anything after it; the left lobe gets its own step, the right lobe systemic therapy."""
    case = make({"dosimetry.lung_shunt_fraction": 0.25,
                 "patient.prior_treatments": [rec("TACE", "2025-06-01", "right", "progression")]}, procedure="TARE")
    assert codes(case)["LUNG_SHUNT_HIGH"].severity == "contraindication"
    r = embplan.review(case)
    assert status(r, "intra_arterial_right_lobe") == "not_eligible" and r.staged_plan == []
    course = {c.territory: c for c in r.course}
    assert course["right lobe"].next_step == "TARE not advised now" and "25.0%" in course["right lobe"].reason
    keys = [s.option_key for s in r.recommendation.steps]
    assert keys == ["intra_arterial_left_lobe", "systemic"] and "right lobe" in r.recommendation.steps[1].action


# 33 ----------------------------------------------------------------------------------------------------------------
def test_main_portal_vein_thrombosis_turns_tae_into_tare():
    case = make({"patient.disease.main_portal_vein_thrombosis": True})
    assert codes(case)["PORTAL_VEIN_THROMBOSIS"].severity == "contraindication"
    seq = case.sequence()
    assert seq.expected_step == "TARE" and not seq.follows_ladder and "portal vein thrombosis" in seq.explanation
    r = embplan.review(case)
    assert r.option("intra_arterial_right_lobe").procedure == "TARE"
    assert {c.territory: c.next_step for c in r.course}["right lobe"] == "TARE instead of the requested TAE"
    tare = make({"patient.disease.main_portal_vein_thrombosis": True}, procedure="TARE")
    assert tare.sequence().justification_details[0].code == "PORTAL_VEIN_THROMBOSIS"
    assert status(embplan.review(tare), "intra_arterial_right_lobe") == "recommended"
