"""The dose rules on plain numbers: LUNG_DOSE_LIMIT, NON_TUMOR_LIVER_DOSE_HIGH, TUMOR_DOSE_LOW (and the shunt /
reserve flags assess_dose adds when only the dosimetry knows them)."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from embplan.errors import CaseError, DosimetryError
from embplan.risk import DoseFacts, Severity, assess_dose
from embplan.thresholds import Thresholds

NO_RX_LIMIT = {"procedure.prescription.normal_liver_dose_limit_gy": None}


def facts(device="resin", **kw) -> DoseFacts:
    base = {"tumor_dose_gy": 150.0, "normal_liver_dose_gy": 20.0, "lung_dose_gy": 5.0, "source": "compartment"}
    return DoseFacts(device=device, **{**base, **kw})


def codes(flags):
    return {f.code: f.severity for f in flags}


def one(flags, code):
    hits = [f for f in flags if f.code == code]
    assert len(hits) <= 1
    return hits[0] if hits else None


def test_dose_facts_validation():
    with pytest.raises(ValidationError):
        facts(lung_dose_gy=-1.0)
    with pytest.raises(ValidationError):
        facts(normal_liver_dose_gy=math.nan)
    with pytest.raises(ValidationError):
        facts(hepatic_reserve_fraction=1.5)
    with pytest.raises(ValidationError):
        facts(source="mc")
    with pytest.raises(ValidationError):
        facts(unknown=1)
    with pytest.raises(ValidationError):
        facts().lung_dose_gy = 3.0  # type: ignore[misc]


def test_nothing_fires_within_limits(make_case):
    assert assess_dose(make_case("resin"), facts()) == []


# ---------------------------------------------------------------------------------------------------------------
# LUNG_DOSE_LIMIT
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "lung,severity",
    [(29.99, None), (30.0, None), (30.0 * (1 + 1e-12), None), (30.001, Severity.CONTRAINDICATION),
     (45.0, Severity.CONTRAINDICATION)],
)
def test_lung_session_limit(make_case, lung, severity):
    f = one(assess_dose(make_case("resin"), facts(lung_dose_gy=lung)), "LUNG_DOSE_LIMIT")
    assert (f.severity if f else None) is severity
    if f:
        assert "session lung dose" in f.message and "EANM" in f.evidence
        assert f.context["lung_dose_session_limit_gy"] == 30.0


@pytest.mark.parametrize("prior,lung,severity", [(25.0, 25.0, None), (25.0, 25.01, Severity.CONTRAINDICATION),
                                                 (45.0, 4.9, None), (45.0, 5.5, Severity.CONTRAINDICATION)])
def test_lung_cumulative_limit(make_case, prior, lung, severity):
    f = one(assess_dose(make_case("resin"), facts(lung_dose_gy=lung, prior_lung_dose_gy=prior)), "LUNG_DOSE_LIMIT")
    assert (f.severity if f else None) is severity
    if f:
        assert "cumulative lung dose" in f.message and "session lung dose" not in f.message
        assert f.context["cumulative_lung_dose_gy"] == pytest.approx(prior + lung)


def test_prior_lung_dose_from_the_case_records(make_case, case_dict):
    tare = {"kind": "TARE", "date": "2020-05-05", "territory": {"scope": "lobar", "lobe": "left"}, "device": "resin",
            "lung_dose_gy": 40.0}
    history = [*case_dict("resin")["patient"]["prior_treatments"], tare]
    case = make_case("resin", {"patient.prior_treatments": history})
    assert one(assess_dose(case, facts(lung_dose_gy=10.0)), "LUNG_DOSE_LIMIT") is None
    f = one(assess_dose(case, facts(lung_dose_gy=10.5)), "LUNG_DOSE_LIMIT")
    assert f.severity is Severity.CONTRAINDICATION and f.context["prior_lung_dose_gy"] == 40.0
    # an explicit value in the facts wins
    assert one(assess_dose(case, facts(lung_dose_gy=10.5, prior_lung_dose_gy=0.0)), "LUNG_DOSE_LIMIT") is None


def test_prescription_lung_limit_exceeded_is_warning(make_case):
    case = make_case("resin", {"procedure.prescription.lung_dose_limit_gy": 20.0})
    assert one(assess_dose(case, facts(lung_dose_gy=20.0)), "LUNG_DOSE_LIMIT") is None
    f = one(assess_dose(case, facts(lung_dose_gy=25.0)), "LUNG_DOSE_LIMIT")
    assert f.severity is Severity.WARNING and "prescription" in f.message
    assert one(assess_dose(case, facts(lung_dose_gy=31.0)), "LUNG_DOSE_LIMIT").severity is Severity.CONTRAINDICATION


def test_lung_limit_override(make_case):
    case = make_case("resin", {"thresholds": {"lung_dose_session_limit_gy": 25.0}})
    assert one(assess_dose(case, facts(lung_dose_gy=26.0)), "LUNG_DOSE_LIMIT").severity is Severity.CONTRAINDICATION
    assert one(assess_dose(make_case("resin"), facts(lung_dose_gy=26.0)), "LUNG_DOSE_LIMIT") is None


# ---------------------------------------------------------------------------------------------------------------
# NON_TUMOR_LIVER_DOSE_HIGH
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "base,edits,limit",
    [
        ("resin", {}, 40.0),
        ("glass", {}, 75.0),
        ("glass", {"patient.labs.bilirubin_mg_dl": 1.5}, 50.0),
    ],
)
def test_normal_liver_limit_boundary(make_case, base, edits, limit):
    device = "glass" if base == "glass" else "resin"
    case = make_case(base, {**NO_RX_LIMIT, **edits})
    assert one(assess_dose(case, facts(device, normal_liver_dose_gy=limit)), "NON_TUMOR_LIVER_DOSE_HIGH") is None
    f = one(assess_dose(case, facts(device, normal_liver_dose_gy=limit + 0.01)), "NON_TUMOR_LIVER_DOSE_HIGH")
    assert f.severity is Severity.WARNING
    assert f.context["normal_liver_limit_gy"] == limit and "EANM" in f.evidence


def test_resin_whole_liver_after_chemotherapy_30_gy(make_case, case_dict):
    history = [*case_dict("resin")["patient"]["prior_treatments"], {"kind": "chemotherapy", "date": "2019-01-01"}]
    case = make_case("resin", {**NO_RX_LIMIT, "patient.prior_treatments": history,
                               "procedure.territory": {"scope": "whole_liver"}, "dosimetry.perfused_volume_ml": 1650.0,
                               "dosimetry.perfused_tumor_volume_ml": 480.0})
    assert one(assess_dose(case, facts(normal_liver_dose_gy=30.0)), "NON_TUMOR_LIVER_DOSE_HIGH") is None
    f = one(assess_dose(case, facts(normal_liver_dose_gy=30.5)), "NON_TUMOR_LIVER_DOSE_HIGH")
    assert f.severity is Severity.WARNING and "chemotherapy" in f.message


def test_tighter_prescription_limit(make_case):
    case = make_case("resin", {"procedure.prescription.normal_liver_dose_limit_gy": 35.0})
    assert one(assess_dose(case, facts(normal_liver_dose_gy=35.0)), "NON_TUMOR_LIVER_DOSE_HIGH") is None
    f = one(assess_dose(case, facts(normal_liver_dose_gy=36.0)), "NON_TUMOR_LIVER_DOSE_HIGH")
    assert f.severity is Severity.WARNING and "prescription's own limit 35 Gy" in f.message


def test_looser_prescription_limit_allowed_but_flagged(make_case):
    case = make_case("resin", {"procedure.prescription.normal_liver_dose_limit_gy": 55.0})
    f = one(assess_dose(case, facts(normal_liver_dose_gy=45.0)), "NON_TUMOR_LIVER_DOSE_HIGH")
    assert f.severity is Severity.WARNING
    assert "guideline limit 40 Gy" in f.message and "looser" in f.message
    assert f.context["prescription_normal_liver_limit_gy"] == 55.0
    assert f.context["guideline_normal_liver_limit_gy"] == 40.0


@pytest.mark.parametrize("perfused_ml,dose,severity", [(701.0, 120.0, None), (701.0, 120.5, Severity.WARNING),
                                                       (700.0, 300.0, None)])
def test_glass_perfused_limit_with_low_reserve(make_case, perfused_ml, dose, severity):
    case = make_case("glass", {**NO_RX_LIMIT, "dosimetry.liver_volume_ml": 1000.0,
                               "dosimetry.perfused_volume_ml": perfused_ml})
    f = one(assess_dose(case, facts("glass", perfused_normal_liver_dose_gy=dose)), "NON_TUMOR_LIVER_DOSE_HIGH")
    assert (f.severity if f else None) is severity
    if f:
        assert "perfused non-tumour liver" in f.message and f.context["perfused_normal_liver_limit_gy"] == 120.0


# ---------------------------------------------------------------------------------------------------------------
# TUMOR_DOSE_LOW
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "base,device,dose,severity",
    [("resin", "resin", 100.0, None), ("resin", "resin", 99.9, Severity.CAUTION),
     ("glass", "glass", 205.0, None), ("glass", "glass", 204.9, Severity.CAUTION),
     ("glass", "glass", 150.0, Severity.CAUTION), ("resin", "resin", None, None)],
)
def test_tumor_dose_low(make_case, base, device, dose, severity):
    f = one(assess_dose(make_case(base), facts(device, tumor_dose_gy=dose)), "TUMOR_DOSE_LOW")
    assert (f.severity if f else None) is severity
    if f:
        assert "No tumour-dose threshold is validated for NET" in f.message
        assert f.context["net_validated_threshold"] is False


def test_tumor_target_override(make_case):
    case = make_case("resin", {"thresholds": {"resin_tumor_dose_target_gy": 120.0}})
    assert one(assess_dose(case, facts(tumor_dose_gy=110.0)), "TUMOR_DOSE_LOW").context["tumor_target_gy"] == 120.0
    assert one(assess_dose(make_case("resin"), facts(tumor_dose_gy=110.0)), "TUMOR_DOSE_LOW") is None


# ---------------------------------------------------------------------------------------------------------------
# shunt and reserve known only from the dosimetry; errors; order
# ---------------------------------------------------------------------------------------------------------------
def test_shunt_and_reserve_from_images(make_case):
    case = make_case("glass_images")
    flags = assess_dose(case, facts("glass", lung_shunt_fraction=0.12, hepatic_reserve_fraction=0.2,
                                    perfused_normal_liver_dose_gy=130.0, source="voxel"))
    got = codes(flags)
    assert got["LUNG_SHUNT_HIGH"] is Severity.CAUTION
    assert got["HEPATIC_RESERVE_LOW"] is Severity.CAUTION
    assert got["NON_TUMOR_LIVER_DOSE_HIGH"] is Severity.WARNING  # 130 > 120 Gy perfused (reserve 20 %)
    quiet = assess_dose(case, facts("glass", lung_shunt_fraction=0.10, hepatic_reserve_fraction=0.3))
    assert "LUNG_SHUNT_HIGH" not in codes(quiet) and "HEPATIC_RESERVE_LOW" not in codes(quiet)


def test_case_level_shunt_and_reserve_not_repeated(make_case):
    # the case gives both: assess() flags them; assess_dose must not add a second flag
    case = make_case("resin", {"dosimetry.lung_shunt_fraction": 0.25, "dosimetry.liver_volume_ml": 1200.0})
    flags = assess_dose(case, facts(lung_shunt_fraction=0.25, hepatic_reserve_fraction=0.05))
    assert "LUNG_SHUNT_HIGH" not in codes(flags) and "HEPATIC_RESERVE_LOW" not in codes(flags)


def test_errors(make_case):
    with pytest.raises(CaseError, match="procedure.kind"):
        assess_dose(make_case("tace"), facts())
    with pytest.raises(DosimetryError, match="facts.device"):
        assess_dose(make_case("resin"), facts("glass"))


def test_sorted_and_one_flag_per_code(make_case):
    case = make_case("resin", NO_RX_LIMIT)
    flags = assess_dose(case, facts(lung_dose_gy=35.0, prior_lung_dose_gy=30.0, normal_liver_dose_gy=60.0,
                                    tumor_dose_gy=50.0))
    assert [f.code for f in flags] == ["LUNG_DOSE_LIMIT", "NON_TUMOR_LIVER_DOSE_HIGH", "TUMOR_DOSE_LOW"]
    assert [f.severity for f in flags] == [Severity.CONTRAINDICATION, Severity.WARNING, Severity.CAUTION]
    lung = flags[0]
    assert "session" in lung.message and "cumulative" in lung.message  # both findings in one flag


def test_site_thresholds_as_base(make_case):
    site = Thresholds.with_overrides({"resin_normal_liver_limit_gy": 35.0})
    case = make_case("resin", NO_RX_LIMIT)
    assert one(assess_dose(case, facts(normal_liver_dose_gy=38.0), site), "NON_TUMOR_LIVER_DOSE_HIGH") is not None
    assert one(assess_dose(case, facts(normal_liver_dose_gy=38.0)), "NON_TUMOR_LIVER_DOSE_HIGH") is None
