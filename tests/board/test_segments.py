"""The course per segment and the caudate lobe (issue 11), on cases written as an interventional radiologist would."""

from __future__ import annotations

import embplan
from embplan.board.facts import board_territories
from embplan.board.model import OptionStatus
from embplan.board.segments import segment_groups

from .conftest import case_dict

TAE_67 = {"kind": "TAE", "date": "2025-06-01", "territory": {"scope": "segmental", "segments": [6, 7]},
          "response": "progression"}


def _course(review):
    return {c.territory: c for c in review.course}


def test_segmental_history_shows_segment_entries():
    """Segmental TAE of 6-7 progressed; lesions in 7 and 3; TACE of the right lobe requested. The course lists the
    lobes, then segments 6, 7 (with the TAE and this plan) and segment 3 (its lesion, the left lobe's next step)."""
    r = embplan.review(case_dict({
        "patient.disease.lesions": [{"id": "R1", "segments": [7], "longest_diameter_mm": 45.0},
                                    {"id": "L1", "segments": [3], "longest_diameter_mm": 38.0}],
        "patient.prior_treatments": [TAE_67]}, procedure="TACE"))
    c = _course(r)
    assert [x.territory for x in r.course] == ["right lobe", "left lobe", "segments 6, 7 (right lobe)",
                                               "segment 3 (left lobe)"]
    s67 = c["segments 6, 7 (right lobe)"]
    assert s67.history == ["2025-06-01: TAE (segments 6, 7): progression", "2026-06-01: TACE (right lobe): this plan"]
    assert s67.last_response == "progression after TAE on 2025-06-01"
    assert s67.disease_present is True and "R1 (45 mm)" in s67.reason
    assert s67.next_step == f"with the right lobe: {c['right lobe'].next_step}"
    assert c["right lobe"].next_step.startswith("TACE now")
    s3 = c["segment 3 (left lobe)"]
    assert s3.history == [] and "L1 (38 mm)" in s3.reason and s3.disease_present is True
    assert s3.next_step == f"with the left lobe: {c['left lobe'].next_step}"


def test_per_territory_response_makes_a_segment_group():
    """A whole-liver TACE that controlled segments 2-3 while segment 4 progressed: the per-territory responses make
    segment entries with their own last response."""
    tace = {"kind": "TACE", "date": "2025-03-01", "territory": {"scope": "whole_liver"}, "doxorubicin_mg": 50,
            "responses": [{"territory": {"scope": "segmental", "segments": [2, 3]}, "response": "partial"},
                          {"territory": {"scope": "segmental", "segments": [4]}, "response": "progression"}]}
    case = embplan.load_case(case_dict({"patient.prior_treatments": [tace]}))
    assert segment_groups(case) == [frozenset({2, 3}), frozenset({4})]
    c = _course(embplan.review(case))
    assert c["segments 2, 3 (left lobe)"].last_response == "partial response after TACE on 2025-03-01"
    assert c["segment 4 (left lobe)"].last_response == "progression after TACE on 2025-03-01"
    assert c["segment 4 (left lobe)"].disease_present is None  # no lesion list: not known per segment


def test_no_segment_entries_for_lobar_cases_without_lesions():
    r = embplan.review(case_dict())
    assert [x.territory for x in r.course] == ["right lobe", "left lobe"]


def test_disease_only_in_the_caudate_lobe():
    """A 28 mm metastasis in segment 1 only (near the IVC: not for ablation), TAE through the caudate branch
    requested: the caudate lobe is its own territory with its own option; neither lobe holds disease."""
    data = case_dict({"patient.disease.lesions": [{"id": "C1", "segments": [1], "longest_diameter_mm": 28.0,
                                                   "location": "near_large_vessel"}]})
    data["procedure"]["territory"] = {"scope": "segmental", "segments": [1]}
    case = embplan.load_case(data)
    assert board_territories(case) == ("right", "left", "caudate")
    r = embplan.review(case)
    c = _course(r)
    assert c["right lobe"].disease_present is False and c["left lobe"].disease_present is False
    cau = c["caudate lobe (segment 1)"]
    assert cau.disease_present is True and cau.next_step.startswith("TAE now")
    assert "caudate branch" in cau.reason and "both 53 %" in cau.reason
    assert cau.history == ["2026-06-01: TAE (segment 1): this plan"]
    opt = r.option("intra_arterial_caudate_lobe")
    assert opt.status == OptionStatus.RECOMMENDED and opt.procedure == "TAE"
    assert any("Furuta" in cit for cit in opt.citations)
    assert any(s.option_key == "intra_arterial_caudate_lobe" for s in r.recommendation.steps)
    assert not any(x.territory.startswith("segment 1") for x in r.course)  # no duplicate segment entry


def test_caudate_disease_beside_a_lobar_treatment_is_staged():
    """Right-lobe disease progressing after segmental TAE, and a caudate metastasis: right-lobe TACE now; the caudate
    lobe is not covered by a lobar injection for sure: its own TAE is staged after the interval."""
    r = embplan.review(case_dict({
        "patient.disease.lesions": [{"id": "R1", "segments": [7], "longest_diameter_mm": 45.0},
                                    {"id": "C1", "segments": [1], "longest_diameter_mm": 35.0}],
        "patient.prior_treatments": [TAE_67]}, procedure="TACE"))
    c = _course(r)
    cau = c["caudate lobe (segment 1)"]
    assert cau.disease_present is True and cau.next_step == "TAE"
    assert "a lobar injection treats it only where its branch arises from that lobar artery" in cau.reason
    assert [(s.territory, s.procedure) for s in r.staged_plan] == [("right lobe", "TACE"),
                                                                    ("caudate lobe (segment 1)", "TAE")]
    assert r.staged_plan[1].interval_days == 30


def test_no_caudate_territory_without_caudate_facts():
    case = embplan.load_case(case_dict({"patient.disease.lesions": [
        {"id": "R1", "segments": [7], "longest_diameter_mm": 20.0},
        {"id": "L1", "segments": [3], "longest_diameter_mm": 20.0}]}))
    assert board_territories(case) == ("right", "left")
