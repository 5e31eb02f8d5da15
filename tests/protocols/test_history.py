"""Prior-treatment records: kind-dependent fields, dates, cumulative doxorubicin."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from embplan.protocols import PriorTreatment, cumulative_doxorubicin_mg
from embplan.protocols.base import validation_problems
from embplan.protocols.history import chronological, of_kind


def _rec(**kw: Any) -> PriorTreatment:
    return PriorTreatment.model_validate(kw)


def _lines(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as info:
        PriorTreatment.model_validate(data)
    return [p["line"] for p in validation_problems(info.value, data, PriorTreatment)]


def test_records_load_with_their_kind_fields() -> None:
    tace = _rec(kind="TACE", date="2018-01-09", territory={"scope": "lobar", "lobe": "right"}, doxorubicin_mg=50,
                response="partial")
    assert tace.doxorubicin_mg == 50 and tace.is_embolization and tace.date.year == 2018
    tare = _rec(kind="TARE", date="2020-02-02", device="glass", activity_gbq=2.1, lung_dose_gy=8.0,
                normal_liver_dose_gy=35.0)
    assert tare.device == "glass" and tare.is_embolization
    ssa = _rec(kind="SSA", date="2016-11-01")
    assert not ssa.is_embolization and ssa.territory is None and ssa.response is None


@pytest.mark.parametrize(("data", "expected"), [
    ({"kind": "TAE", "date": "2020-01-01", "doxorubicin_mg": 50}, "doxorubicin_mg: only on TACE or DEB_TACE"),
    ({"kind": "TACE", "date": "2020-01-01", "device": "resin"}, "device: only on TARE records, not TACE"),
    ({"kind": "TAE", "date": "2020-01-01", "lung_dose_gy": 5}, "lung_dose_gy: only on TARE records"),
    ({"kind": "PRRT", "date": "2020-01-01", "territory": {"scope": "whole_liver"}}, "territory: PRRT is systemic"),
    ({"kind": "TACE", "date": "2020-01-01", "doxorubicin_mg": -1}, "doxorubicin_mg: must be >= 0, got -1"),
    ({"kind": "TACE", "date": "2020-01-01", "doxorubicin_mg": 1001}, "doxorubicin_mg: must be <= 1000"),
    ({"kind": "TARE", "date": "2020-01-01", "activity_gbq": 31}, "activity_gbq: must be <= 30"),
    ({"kind": "TARE", "date": "2020-01-01", "device": "Glass"}, "device: must be one of"),
    ({"kind": "TAE", "date": "2020-01-01", "response": "PD"}, "response: must be one of"),
    ({"kind": "TAE", "date": "01.01.2020"}, "date: must be an ISO date YYYY-MM-DD"),
    ({"kind": "TAE", "date": "2020-02-30"}, "date: not a valid calendar date"),
    ({"kind": "TAE", "date": "2020-01-01T10:00:00"}, "date: must be an ISO date YYYY-MM-DD"),
    ({"kind": "TAE", "date": "1820-01-01"}, "date: must lie between 1900-01-01 and 2199-12-31"),
    ({"kind": "TAE", "date": 20200101}, "date: must be an ISO date string"),
    ({"kind": "TAE"}, "date: required"),
    ({"kind": "radiotherapy", "date": "2020-01-01"}, "kind: must be one of"),
    ({"kind": "TAE", "date": "2020-01-01", "notes": "x"}, "notes: unknown field (did you mean 'note'?)"),
])
def test_invalid_record_names_the_field(data: dict[str, Any], expected: str) -> None:
    lines = _lines(data)
    assert any(expected in line for line in lines), lines


def test_cumulative_doxorubicin_counts_chemoembolization_only() -> None:
    records = [
        _rec(kind="TACE", date="2018-01-09", doxorubicin_mg=50),
        _rec(kind="DEB_TACE", date="2018-06-19", doxorubicin_mg=75),
        _rec(kind="TACE", date="2019-01-01"),  # dose not recorded
        _rec(kind="chemotherapy", date="2019-05-01", note="doxorubicin 60 mg/m2 x 6"),  # not counted
        _rec(kind="TAE", date="2017-01-01"),
    ]
    total, unknown = cumulative_doxorubicin_mg(records)
    assert total == pytest.approx(125.0) and unknown == 1
    assert cumulative_doxorubicin_mg([]) == (0.0, 0)


def test_chronological_and_of_kind() -> None:
    a = _rec(kind="TAE", date="2019-01-01", note="a")
    b = _rec(kind="TACE", date="2017-01-01")
    c = _rec(kind="TAE", date="2019-01-01", note="c")  # same day as a: given order kept
    assert chronological([a, b, c]) == [b, a, c]
    assert of_kind([a, b, c], "TAE") == [a, c]
    assert of_kind([a, b, c], "TACE", "DEB_TACE") == [b]
