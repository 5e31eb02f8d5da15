"""dose_limits (what the planner prescribes against) and lung_shunt_reduction."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from embplan.errors import CaseError
from embplan.risk import DoseLimits, Severity, dose_limits, lung_shunt_reduction
from embplan.thresholds import Thresholds

WHOLE_LIVER = {"procedure.territory": {"scope": "whole_liver"}, "dosimetry.perfused_volume_ml": 1650.0,
               "dosimetry.perfused_tumor_volume_ml": 480.0}
CHEMO = {"kind": "chemotherapy", "date": "2019-03-01", "note": "CAPTEM"}


def _history(case_dict, base, *extra):
    return [*case_dict(base)["patient"]["prior_treatments"], *extra]


def test_resin_defaults(make_case):
    lim = dose_limits(make_case("resin", {"procedure.prescription.normal_liver_dose_limit_gy": None}))
    assert lim.device == "resin"
    assert lim.normal_liver_limit_gy == lim.guideline_normal_liver_limit_gy == 40.0
    assert not lim.normal_liver_limit_from_prescription
    assert "EANM" in lim.normal_liver_limit_source
    assert lim.perfused_normal_liver_limit_gy is None
    assert (lim.lung_session_limit_gy, lim.lung_cumulative_limit_gy) == (30.0, 50.0)
    assert lim.prior_lung_dose_gy == 0.0 and lim.lung_remaining_gy == 50.0 and lim.lung_max_gy == 30.0
    assert lim.tumor_target_gy == 100.0 and "not validated in NET" in lim.tumor_target_source
    assert lim.hepatic_reserve_fraction == pytest.approx(1 - 1100 / 1650)


@pytest.mark.parametrize(
    "whole_liver,chemo,limit",
    [(True, True, 30.0), (True, False, 40.0), (False, True, 40.0), (False, False, 40.0)],
)
def test_resin_pretreated_bilobar_rule(make_case, case_dict, whole_liver, chemo, limit):
    edits = dict(WHOLE_LIVER) if whole_liver else {}
    edits["procedure.prescription.normal_liver_dose_limit_gy"] = None
    if chemo:
        edits["patient.prior_treatments"] = _history(case_dict, "resin", CHEMO)
    lim = dose_limits(make_case("resin", edits))
    assert lim.guideline_normal_liver_limit_gy == limit
    assert ("pretreated with chemotherapy" in lim.normal_liver_limit_reason) is (limit == 30.0)


def test_tace_history_is_not_chemotherapy_pretreatment(make_case):
    # the resin example has two earlier TACE records: not "pretreated with chemotherapy" in the guideline's sense
    lim = dose_limits(make_case("resin", {**WHOLE_LIVER, "procedure.prescription.normal_liver_dose_limit_gy": None}))
    assert lim.guideline_normal_liver_limit_gy == 40.0


@pytest.mark.parametrize("bili,limit", [(0.7, 75.0), (1.1, 75.0), (1.11, 50.0), (1.9, 50.0)])
def test_glass_bilirubin_lowers_the_limit(make_case, bili, limit):
    case = make_case("glass", {"patient.labs.bilirubin_mg_dl": bili,
                               "procedure.prescription.normal_liver_dose_limit_gy": None})
    lim = dose_limits(case)
    assert lim.guideline_normal_liver_limit_gy == limit == lim.normal_liver_limit_gy
    assert lim.tumor_target_gy == 205.0


@pytest.mark.parametrize("perfused_ml,limit", [(700.0, None), (701.0, 120.0), (1000.0, 120.0)])
def test_glass_low_reserve_adds_perfused_limit(make_case, perfused_ml, limit):
    case = make_case("glass", {"dosimetry.liver_volume_ml": 1000.0, "dosimetry.perfused_volume_ml": perfused_ml})
    lim = dose_limits(case)
    assert lim.perfused_normal_liver_limit_gy == limit
    assert (lim.perfused_normal_liver_limit_reason is not None) is (limit is not None)


def test_resin_low_reserve_has_no_perfused_limit(make_case):
    lim = dose_limits(make_case("resin", {"dosimetry.liver_volume_ml": 1000.0, "dosimetry.perfused_volume_ml": 900.0}))
    assert lim.perfused_normal_liver_limit_gy is None


def test_reserve_from_images_when_the_case_has_no_volumes(make_case):
    case = make_case("glass_images")
    assert dose_limits(case).hepatic_reserve_fraction is None
    lim = dose_limits(case, hepatic_reserve_fraction=0.25)
    assert lim.hepatic_reserve_fraction == 0.25 and lim.perfused_normal_liver_limit_gy == 120.0
    assert dose_limits(case, hepatic_reserve_fraction=0.30).perfused_normal_liver_limit_gy is None
    # the case's own volumes win over the image value
    case2 = make_case("glass")
    assert dose_limits(case2, hepatic_reserve_fraction=0.1).hepatic_reserve_fraction == pytest.approx(1 - 1100 / 1650)


@pytest.mark.parametrize("rx,relation", [(35.0, "tighter"), (40.0, "equal"), (55.0, "LOOSER")])
def test_prescription_limit_is_used_and_reported(make_case, rx, relation):
    lim = dose_limits(make_case("resin", {"procedure.prescription.normal_liver_dose_limit_gy": rx}))
    assert lim.normal_liver_limit_gy == rx and lim.normal_liver_limit_from_prescription
    assert lim.guideline_normal_liver_limit_gy == 40.0
    assert lim.applicable_normal_liver_limit_gy == min(rx, 40.0)
    assert relation in lim.normal_liver_limit_reason


def test_prior_lung_dose_reduces_the_remaining(make_case, case_dict):
    tare = {"kind": "TARE", "date": "2020-05-05", "territory": {"scope": "lobar", "lobe": "left"}, "device": "resin"}
    case = make_case("resin", {"patient.prior_treatments": _history(
        case_dict, "resin", {**tare, "lung_dose_gy": 20.0}, {**tare, "date": "2021-05-05", "lung_dose_gy": 15.0},
        {**tare, "date": "2022-05-05"})})
    lim = dose_limits(case)
    assert lim.prior_lung_dose_gy == 35.0 and lim.prior_lung_dose_unknown_count == 1
    assert lim.lung_remaining_gy == 15.0 and lim.lung_max_gy == 15.0
    over = make_case("resin", {"patient.prior_treatments": _history(case_dict, "resin", {**tare, "lung_dose_gy": 60.0})})
    assert dose_limits(over).lung_remaining_gy == 0.0 and dose_limits(over).lung_max_gy == 0.0


def test_prescription_lung_limit(make_case):
    lim = dose_limits(make_case("resin", {"procedure.prescription.lung_dose_limit_gy": 20.0}))
    assert lim.lung_prescription_limit_gy == 20.0 and lim.lung_max_gy == 20.0
    assert lim.lung_session_limit_gy == 30.0


def test_thresholds_override_and_case_overrides(make_case):
    case = make_case("resin", {"procedure.prescription.normal_liver_dose_limit_gy": None,
                               "thresholds": {"resin_normal_liver_limit_gy": 45.0}})
    assert dose_limits(case).normal_liver_limit_gy == 45.0
    site = Thresholds.with_overrides({"resin_tumor_dose_target_gy": 120.0})
    lim = dose_limits(case, site)
    assert lim.tumor_target_gy == 120.0 and lim.normal_liver_limit_gy == 45.0


def test_dose_limits_tare_only_and_frozen(make_case):
    with pytest.raises(CaseError, match="procedure.kind"):
        dose_limits(make_case("tace"))
    lim = dose_limits(make_case("resin"))
    with pytest.raises(ValidationError):
        lim.normal_liver_limit_gy = 100.0  # type: ignore[misc]
    assert DoseLimits.model_validate(lim.model_dump()) == lim


# ---------------------------------------------------------------------------------------------------------------
# lung_shunt_reduction on plain numbers
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "device,lsf,reduction,severity",
    [
        ("resin", 0.0, 0.0, None),
        ("resin", 0.0999, 0.0, None),
        ("resin", 0.10, 0.20, Severity.CAUTION),
        ("resin", 0.15, 0.20, Severity.CAUTION),
        ("resin", 0.1501, 0.40, Severity.CAUTION),
        ("resin", 0.20, 0.40, Severity.CAUTION),
        ("resin", 0.2001, 1.0, Severity.CONTRAINDICATION),
        ("glass", 0.10, 0.0, None),
        ("glass", 0.1001, 0.0, Severity.CAUTION),
        ("glass", 0.5, 0.0, Severity.CAUTION),
    ],
)
def test_lung_shunt_reduction_numbers(device, lsf, reduction, severity):
    got, flag = lung_shunt_reduction(lsf, device)
    assert got == reduction
    if severity is None:
        assert flag is None
    else:
        assert flag.code == "LUNG_SHUNT_HIGH" and flag.severity is severity
        assert "van Roekel" in flag.evidence


def test_lung_shunt_reduction_thresholds_and_errors():
    th = Thresholds.with_overrides({"resin_activity_reduction_low_fraction": 0.25})
    assert lung_shunt_reduction(0.12, "resin", th)[0] == 0.25
    with pytest.raises(CaseError, match="device"):
        lung_shunt_reduction(0.12, None)
    with pytest.raises(CaseError, match="lung_shunt_fraction"):
        lung_shunt_reduction(1.2, "resin")
    with pytest.raises(CaseError, match="lung_shunt_fraction"):
        lung_shunt_reduction(-0.1, "glass")


def test_lung_shunt_reduction_refuses_a_bool():
    # found by mypy (issue 17): a bool is an int to Python; it was sent down the case branch and failed with
    # AttributeError ('bool' object has no attribute 'procedure') instead of a CaseError naming the field
    for value in (True, False):
        with pytest.raises(CaseError, match=r"lung_shunt_fraction: must be a number in \[0, 1\) or a case, got"):
            lung_shunt_reduction(value, "resin")


def test_lung_shunt_reduction_from_a_case(make_case):
    assert lung_shunt_reduction(make_case("resin"))[0] == 0.0
    red, flag = lung_shunt_reduction(make_case("resin", {"dosimetry.lung_shunt_fraction": 0.17}))
    assert red == 0.40 and flag.severity is Severity.CAUTION
    # the case's threshold overrides apply
    case = make_case("resin", {"dosimetry.lung_shunt_fraction": 0.17,
                               "thresholds": {"lsf_resin_reduce_high_fraction": 0.18}})
    assert lung_shunt_reduction(case)[0] == 0.20
    assert lung_shunt_reduction(make_case("glass_images")) == (0.0, None)
    assert lung_shunt_reduction(make_case("tace")) == (0.0, None)
