"""Flag and Severity: the contract's codes, the total order, validation of the context."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from embplan.risk import ALL_CODES, Flag, Severity, max_severity, sort_flags

# DESIGN.md "Contract": the flag codes (none may be renamed).
CONTRACT_CODES = {
    "LUNG_DOSE_LIMIT", "LUNG_SHUNT_HIGH", "NON_TUMOR_LIVER_DOSE_HIGH", "TUMOR_DOSE_LOW", "WHOLE_LIVER_TARE",
    "BILIARY_ENTERIC_ANASTOMOSIS", "INCOMPETENT_SPHINCTER", "DEB_TACE_IN_NET", "CARCINOID_CRISIS_RISK",
    "BILIRUBIN_HIGH", "TUMOR_BURDEN_HIGH", "PORTAL_VEIN_THROMBOSIS", "PERFORMANCE_STATUS", "LAB_LIMITS",
    "DOXORUBICIN_CUMULATIVE", "SEQUENCE_DEVIATION", "RESECTION_CANDIDATE", "TRANSPLANT_CANDIDATE",
    "PRIOR_RADIOEMBOLIZATION", "PROTOCOL_DEVIATION", "HEPATIC_RESERVE_LOW",
}


def _flag(code: str = "LAB_LIMITS", severity: str = "caution", **kw) -> Flag:
    return Flag(code=code, severity=severity, message=kw.pop("message", "m"), evidence=kw.pop("evidence", "e"), **kw)


def test_all_contract_codes_known():
    assert CONTRACT_CODES <= set(ALL_CODES)
    assert len(ALL_CODES) == len(set(ALL_CODES))


def test_severity_total_order():
    order = [Severity.INFO, Severity.CAUTION, Severity.WARNING, Severity.CONTRAINDICATION]
    for i, a in enumerate(order):
        for j, b in enumerate(order):
            assert (a < b) == (i < j)
            assert (a <= b) == (i <= j)
            assert (a > b) == (i > j)
            assert (a >= b) == (i >= j)
    assert [s.rank for s in order] == [0, 1, 2, 3]
    # str values compare by rank, not alphabetically ("caution" < "contraindication" < "info" alphabetically)
    assert Severity.INFO < "caution"
    assert Severity.CONTRAINDICATION > "warning"
    assert sorted(reversed(order)) == order
    assert max(order) is Severity.CONTRAINDICATION
    assert Severity("warning") is Severity.WARNING
    assert Severity.WARNING == "warning"


def test_severity_rejects_foreign_comparison():
    with pytest.raises(TypeError):
        _ = Severity.INFO < 3
    with pytest.raises(TypeError):
        _ = Severity.INFO < "severe"


def test_flag_validates_code_and_text():
    with pytest.raises(ValidationError, match="unknown flag code"):
        _flag(code="NOT_A_CODE")
    with pytest.raises(ValidationError):
        _flag(severity="severe")
    with pytest.raises(ValidationError):
        _flag(message="  ")
    with pytest.raises(ValidationError):
        _flag(evidence="")
    with pytest.raises(ValidationError):
        Flag(code="LAB_LIMITS", severity="info", message="m", evidence="e", extra=1)


@pytest.mark.parametrize("bad", [math.nan, math.inf, object(), {1: "x"}, {"a": [math.nan]}])
def test_flag_context_must_be_json(bad):
    with pytest.raises(ValidationError):
        _flag(context={"x": bad} if not isinstance(bad, dict) else bad)


def test_flag_context_plain_json_and_frozen():
    f = _flag(context={"a": 1.5, "b": (1, 2), "c": {"d": None, "e": Severity.INFO}, "g": True})
    assert json.loads(json.dumps(f.context)) == {"a": 1.5, "b": [1, 2], "c": {"d": None, "e": "info"}, "g": True}
    with pytest.raises(ValidationError):
        f.code = "LUNG_DOSE_LIMIT"  # type: ignore[misc]
    assert f.severity is Severity.CAUTION


def test_flag_round_trips_through_json():
    f = _flag(code="BILIRUBIN_HIGH", severity="warning", context={"bilirubin_mg_dl": 2.5})
    assert Flag.model_validate_json(f.model_dump_json()) == f


def test_sort_flags_severity_descending_then_code():
    flags = [
        _flag("LAB_LIMITS", "caution"), _flag("DEB_TACE_IN_NET", "contraindication"),
        _flag("CARCINOID_CRISIS_RISK", "caution"), _flag("RESECTION_CANDIDATE", "info"),
        _flag("WHOLE_LIVER_TARE", "warning"), _flag("BILIRUBIN_HIGH", "contraindication"),
    ]
    got = [(f.severity.value, f.code) for f in sort_flags(flags)]
    assert got == [
        ("contraindication", "BILIRUBIN_HIGH"), ("contraindication", "DEB_TACE_IN_NET"),
        ("warning", "WHOLE_LIVER_TARE"), ("caution", "CARCINOID_CRISIS_RISK"), ("caution", "LAB_LIMITS"),
        ("info", "RESECTION_CANDIDATE"),
    ]
    assert max_severity(flags) is Severity.CONTRAINDICATION
    assert max_severity([]) is None
