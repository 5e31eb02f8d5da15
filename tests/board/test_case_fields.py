"""The optional tumour-board fields of the case: schema-1 files load unchanged; bad values fail with field paths."""

from __future__ import annotations

import pytest

import embplan

from .conftest import case_dict, rec


def problems(edits, **kw):
    with pytest.raises(embplan.CaseError) as info:
        embplan.load_case(case_dict(edits, **kw))
    return str(info.value)


def test_shared_examples_still_load(shared_examples):
    for path in sorted(shared_examples.glob("*.json")):
        case = embplan.load_case(path)
        assert case.patient.disease.lesions is None and case.patient.liver.ascites is None


def test_full_board_fields_load():
    case = embplan.load_case(case_dict({
        "patient.disease.lesions": [{"id": "L1", "segments": [7], "longest_diameter_mm": 25, "volume_ml": 8.2,
                                     "location": "dome"},
                                    {"id": "L2", "segments": [2, 3], "longest_diameter_mm": 12,
                                     "location": "near_hilum"}],
        "patient.disease.extrahepatic_disease": True, "patient.disease.extrahepatic_sites": ["bone", "lymph_nodes"],
        "patient.disease.extrahepatic_resectable": False, "patient.disease.extrahepatic_progression": True,
        "patient.disease.refractory_hormonal_symptoms": True, "patient.disease.primary_resection_date": "2020-05-01",
        "patient.disease.resectable_disease_percent": 75.0,
        "patient.liver.ascites": False, "patient.liver.segment_volumes_ml": {"2": 150.0, "3": 150.0, "7": 220.0},
        "patient.prior_treatments": [rec("TACE", "2025-01-01", "whole", "stable", responses=[
            {"territory": {"scope": "lobar", "lobe": "left"}, "response": "progression"}])],
    }))
    d = case.patient.disease
    assert d.lesions[0].segments == [7] and d.extrahepatic_sites == ["bone", "lymph_nodes"]
    assert case.patient.liver.segment_volumes_ml == {2: 150.0, 3: 150.0, 7: 220.0}
    assert case.patient.prior_treatments[0].response_for(frozenset({2, 3, 4})) == "progression"
    assert case.patient.prior_treatments[0].response_for(frozenset({5, 6, 7, 8})) == "stable"


@pytest.mark.parametrize("edits,path,reason", [
    ({"patient.disease.lesions": [{"id": "L1", "segments": [9], "longest_diameter_mm": 10}]},
     "patient.disease.lesions.0.segments.0", "<= 8"),
    ({"patient.disease.lesions": [{"id": "L1", "segments": [6], "longest_diameter_mm": 0}]},
     "patient.disease.lesions.0.longest_diameter_mm", "> 0"),
    ({"patient.disease.lesions": [{"id": "L1", "segments": [6, 6], "longest_diameter_mm": 10}]},
     "patient.disease.lesions.0.segments", "at most once"),
    ({"patient.disease.lesions": [{"id": "L1", "segments": [6], "longest_diameter_mm": 10, "location": "hilum"}]},
     "patient.disease.lesions.0.location", "subcapsular"),
    ({"patient.disease.lesions": [{"id": "L1", "segments": [6], "longest_diameter_mm": 10},
                                  {"id": "L1", "segments": [3], "longest_diameter_mm": 10}]},
     "patient.disease.lesions.1.id", "twice"),
    ({"patient.disease.extrahepatic_sites": ["bone"]}, "patient.disease.extrahepatic_sites",
     "extrahepatic_disease is false"),
    ({"patient.disease.extrahepatic_resectable": True}, "patient.disease.extrahepatic_resectable",
     "only with extrahepatic_disease"),
    ({"patient.disease.primary_resection_date": "2027-01-01"}, "patient.disease.primary_resection_date",
     "after the procedure date"),
    ({"patient.disease.primary_resected": False, "patient.disease.primary_resection_date": "2020-01-01"},
     "patient.disease.primary_resection_date", "primary_resected is false"),
    ({"patient.disease.liver_distribution": "unilobar_right",
      "patient.disease.lesions": [{"id": "L1", "segments": [3], "longest_diameter_mm": 10}]},
     "patient.disease.lesions.0.segments", "left lobe"),
    ({"patient.disease.lesions": [{"id": "L1", "segments": [6], "longest_diameter_mm": 10}]},
     "patient.disease.lesions", "every lesion lies in the right lobe"),
    ({"patient.liver.segment_volumes_ml": {"6": 200.0},
      "patient.disease.lesions": [{"id": "L1", "segments": [6], "longest_diameter_mm": 10},
                                  {"id": "L2", "segments": [3], "longest_diameter_mm": 10}]},
     "patient.liver.segment_volumes_ml", "segment(s) 3"),
    ({"patient.liver.ascites": "no"}, "patient.liver.ascites", "true or false"),
    ({"patient.prior_treatments": [rec("TACE", "2025-01-01", "right", responses=[
        {"territory": {"scope": "lobar", "lobe": "left"}, "response": "partial"}])]},
     "patient.prior_treatments.0.responses.0.territory", "outside the treated territory"),
    ({"patient.disease.resectable_disease_percent": 101}, "patient.disease.resectable_disease_percent", "<= 100"),
])
def test_bad_board_fields_name_the_field(edits, path, reason):
    msg = problems(edits)
    assert path in msg and reason in msg, msg


def test_board_threshold_overrides_are_validated():
    msg = problems({"thresholds": {"board_debulking_maxwell_min_percent": 95.0}})
    assert "board_debulking_maxwell_min_percent" in msg
    case = embplan.load_case(case_dict({"thresholds": {"board_ablation_max_lesions": 3}}))
    assert case.effective_thresholds().board_ablation_max_lesions == 3
