"""Thresholds: the documented defaults, units and sources, overrides and their validation."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from embplan.errors import CaseError
from embplan.thresholds import Thresholds

# The numbers the issue and EVIDENCE.md give (independent of the module under test).
DOCUMENTED = {
    "lung_dose_session_limit_gy": 30.0,
    "lung_dose_cumulative_limit_gy": 50.0,
    "resin_normal_liver_limit_gy": 40.0,
    "resin_normal_liver_limit_pretreated_bilobar_gy": 30.0,
    "glass_normal_liver_limit_gy": 75.0,
    "glass_normal_liver_limit_high_bilirubin_gy": 50.0,
    "glass_perfused_normal_liver_limit_low_reserve_gy": 120.0,
    "resin_tumor_dose_target_gy": 100.0,
    "glass_tumor_dose_target_gy": 205.0,
    "lsf_resin_reduce_low_fraction": 0.10,
    "lsf_resin_reduce_high_fraction": 0.15,
    "lsf_resin_contraindication_fraction": 0.20,
    "resin_activity_reduction_low_fraction": 0.20,
    "resin_activity_reduction_high_fraction": 0.40,
    "lsf_glass_caution_fraction": 0.10,
    "bilirubin_high_mg_dl": 2.0,
    "bilirubin_glass_caution_mg_dl": 1.1,
    "tumor_burden_warning_percent": 50.0,
    "tumor_burden_contraindication_percent": 70.0,
    "ecog_warning_min": 3,
    "platelets_min_10e9_per_l": 50.0,
    "inr_max": 1.5,
    "wbc_min_10e9_per_l": 2.0,
    "egfr_min_ml_min": 35.0,
    "doxorubicin_lifetime_limit_mg_m2": 450.0,
    "flr_min_percent": 30.0,
    "transplant_age_limit_years": 55.0,
    "transplant_max_burden_percent": 50.0,
    "transplant_min_stable_months": 6.0,
    "hepatic_reserve_min_fraction": 0.30,
    "protocol_doxorubicin_mg": 50.0,
    "protocol_lipiodol_min_ml": 10.0,
    "protocol_lipiodol_max_ml": 20.0,
    "protocol_particle_min_um": 50.0,
    "protocol_particle_max_um": 500.0,
    "protocol_stasis_min_heartbeats": 2,
    "protocol_stasis_max_heartbeats": 5,
}

# unit suffix of a name -> the unit recorded for it
SUFFIX_UNITS = {"_gy": "Gy", "_fraction": "fraction", "_percent": "percent", "_mg_dl": "mg/dL", "_mg_m2": "mg/m2",
                "_ml_min": "mL/min", "_10e9_per_l": "10^9/L", "_years": "years", "_months": "months", "_mg": "mg",
                "_ml": "mL", "_um": "um", "_heartbeats": "heartbeats"}


def test_defaults_are_the_documented_numbers():
    th = Thresholds()
    assert {k: getattr(th, k) for k in DOCUMENTED} == DOCUMENTED


def test_every_field_has_unit_and_source():
    rows = Thresholds().describe()
    assert {r["name"] for r in rows} == set(Thresholds.model_fields)
    for r in rows:
        assert r["unit"], r["name"]
        assert len(r["source"]) > 20, r["name"]
        for suffix, unit in SUFFIX_UNITS.items():
            if r["name"].endswith(suffix):
                assert r["unit"] == unit, r["name"]
                break
    by_name = {r["name"]: r for r in rows}
    assert "EANM" in by_name["lung_dose_session_limit_gy"]["source"]
    assert "Mezhir" not in by_name["lung_dose_session_limit_gy"]["source"]
    # unverified numbers are marked as in EVIDENCE.md
    for name in ("doxorubicin_lifetime_limit_mg_m2", "transplant_age_limit_years", "flr_min_percent"):
        assert "[U" in by_name[name]["source"], name
    # the tumour targets say that no NET-validated threshold exists
    for name in ("resin_tumor_dose_target_gy", "glass_tumor_dose_target_gy"):
        assert "no tumour-dose threshold is validated for NET" in by_name[name]["source"]


def test_describe_is_json_and_marks_overrides():
    th = Thresholds.with_overrides({"bilirubin_high_mg_dl": 3.0, "transplant_age_limit_years": 60})
    rows = {r["name"]: r for r in json.loads(json.dumps(th.describe()))}
    assert rows["bilirubin_high_mg_dl"] == {**rows["bilirubin_high_mg_dl"], "value": 3.0, "overridden": True}
    assert rows["transplant_age_limit_years"]["value"] == 60
    assert rows["inr_max"]["overridden"] is False
    assert sum(r["overridden"] for r in rows.values()) == 2
    assert th.overridden() == {"bilirubin_high_mg_dl": 3.0, "transplant_age_limit_years": 60.0}
    assert Thresholds.with_overrides({}) == Thresholds()
    assert Thresholds.with_overrides(None).overridden() == {}


def test_overrides_stack_on_a_base():
    site = Thresholds.with_overrides({"transplant_age_limit_years": 60})
    th = Thresholds.with_overrides({"inr_max": 1.8}, base=site)
    assert th.transplant_age_limit_years == 60 and th.inr_max == 1.8
    assert th.overridden() == {"transplant_age_limit_years": 60.0, "inr_max": 1.8}
    # the case wins over the base
    assert Thresholds.with_overrides({"transplant_age_limit_years": 58}, base=site).transplant_age_limit_years == 58


def test_unknown_key_names_it():
    with pytest.raises(CaseError, match=r"thresholds\.lung_dose_limit_gy: unknown threshold") as exc:
        Thresholds.with_overrides({"lung_dose_limit_gy": 25})
    assert "lung_dose_session_limit_gy" in str(exc.value)  # a close match is suggested


@pytest.mark.parametrize(
    "key,value",
    [
        ("bilirubin_high_mg_dl", -1.0),
        ("bilirubin_high_mg_dl", 0.0),
        ("bilirubin_high_mg_dl", math.nan),
        ("lung_dose_session_limit_gy", math.inf),
        ("lsf_glass_caution_fraction", 1.0),
        ("tumor_burden_warning_percent", 101.0),
        ("inr_max", "1.5"),
        ("inr_max", True),
        ("inr_max", None),
        ("ecog_warning_min", 2.5),
    ],
)
def test_bad_value_names_the_key(key, value):
    with pytest.raises(CaseError, match=rf"thresholds\.{key}"):
        Thresholds.with_overrides({key: value})


def test_integer_fields_accept_integral_floats():
    assert Thresholds.with_overrides({"ecog_warning_min": 2.0}).ecog_warning_min == 2
    assert isinstance(Thresholds.with_overrides({"ecog_warning_min": 2.0}).ecog_warning_min, int)


@pytest.mark.parametrize(
    "overrides,names",
    [
        ({"lsf_resin_reduce_low_fraction": 0.15}, ("lsf_resin_reduce_low_fraction", "lsf_resin_reduce_high_fraction")),
        ({"lsf_resin_contraindication_fraction": 0.12},
         ("lsf_resin_reduce_high_fraction", "lsf_resin_contraindication_fraction")),
        ({"lung_dose_session_limit_gy": 60}, ("lung_dose_session_limit_gy", "lung_dose_cumulative_limit_gy")),
        ({"glass_normal_liver_limit_high_bilirubin_gy": 80},
         ("glass_normal_liver_limit_high_bilirubin_gy", "glass_normal_liver_limit_gy")),
        ({"resin_normal_liver_limit_gy": 25},
         ("resin_normal_liver_limit_pretreated_bilobar_gy", "resin_normal_liver_limit_gy")),
        ({"bilirubin_glass_caution_mg_dl": 2.5}, ("bilirubin_glass_caution_mg_dl", "bilirubin_high_mg_dl")),
        ({"tumor_burden_warning_percent": 80}, ("tumor_burden_warning_percent", "tumor_burden_contraindication_percent")),
        ({"protocol_lipiodol_min_ml": 25}, ("protocol_lipiodol_min_ml", "protocol_lipiodol_max_ml")),
        ({"protocol_stasis_max_heartbeats": 1}, ("protocol_stasis_min_heartbeats", "protocol_stasis_max_heartbeats")),
    ],
)
def test_cross_checks_name_both_fields(overrides, names):
    with pytest.raises(CaseError) as exc:
        Thresholds.with_overrides(overrides)
    for n in names:
        assert f"thresholds.{n}" in str(exc.value)


def test_equal_band_edges_allowed_where_not_strict():
    # a burden band of zero width (warning = contraindication) is coherent; equal LSF bands are not
    assert Thresholds.with_overrides({"tumor_burden_warning_percent": 70}).tumor_burden_warning_percent == 70
    with pytest.raises(CaseError):
        Thresholds.with_overrides({"lsf_resin_reduce_high_fraction": 0.10})


def test_frozen_and_closed():
    th = Thresholds()
    with pytest.raises(ValidationError):
        th.inr_max = 2.0  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Thresholds(foo=1)  # type: ignore[call-arg]


_FLOAT_FIELDS = [n for n, f in Thresholds.model_fields.items() if f.annotation is float]


@given(name=st.sampled_from(_FLOAT_FIELDS), value=st.floats(allow_nan=True, allow_infinity=True, width=64))
def test_any_single_override_is_accepted_or_a_case_error(name, value):
    try:
        th = Thresholds.with_overrides({name: value})
    except CaseError as exc:
        assert f"thresholds.{name}" in str(exc)
    else:
        assert getattr(th, name) == value and math.isfinite(value)
