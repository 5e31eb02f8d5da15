"""The delivered dose from a Y-90 PET against closed forms: LDM of a known activity concentration, decay correction
START / ADMIN / NONE, and PETs that lack what their numbers need."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pydicom
import pytest

from embplan.errors import CaseError, ImagingError
from embplan.nuclides import Y90_HALF_LIFE_H
from embplan.verify import load_post, verify
from tests.verify.conftest import ADMIN, write_post_set

K = 49.67  # Gy kg / GBq: D = K A / m (the LDM constant, EANM 2022 / Chiesa 2021)
C0 = 4.0e5  # Bq/mL written in the PET


def _liver_pet(plan, value: float) -> np.ndarray:
    return np.where(plan.voxel.arrays["mask_liver"], value, 0.0)


def _closed_form_mean(plan, structure: str, c_admin_mbq_ml: float) -> float:
    """Mass-weighted mean LDM dose of a uniform concentration: D = K C / rho per voxel, so mean = K C N / sum(rho)."""
    m = plan.voxel.arrays[f"mask_{structure}"]
    arrays = plan.voxel.arrays  # the density of the plan's dose maps (nominal inside the liver, issue 13)
    rho = arrays.get("dose_density_g_cm3", arrays["density_g_cm3"])[m].astype(np.float64)
    return K * c_admin_mbq_ml * m.sum() / rho.sum()


@pytest.mark.parametrize("hours", [0.0, 20.0, 90.0])
def test_ldm_of_a_known_concentration_start(small_plan_file, tmp_path, hours):
    _, plan = small_plan_file
    post = write_post_set(tmp_path / "s", plan, _liver_pet(plan, C0), acquisition=ADMIN + timedelta(hours=hours))
    v = verify(plan, post)
    c_admin = C0 * 1e-6 * 2.0 ** (hours / Y90_HALF_LIFE_H)  # START: values at the acquisition start
    by = {r.structure: r for r in v.result.structures}
    for s in ("liver", "normal_liver", "tumors"):
        assert by[s].delivered_mean_gy == pytest.approx(_closed_form_mean(plan, s, c_admin), rel=1e-6)
    # the activity: concentration x liver volume, at administration
    liver_ml = plan.voxel.arrays["mask_liver"].sum() * plan.voxel.grid.voxel_volume_ml
    assert v.result.activity_liver_mbq == pytest.approx(c_admin * liver_ml, rel=1e-6)
    assert v.result.activity_lungs_mbq == 0.0 and v.result.lung_shunt_delivered_fraction == 0.0
    assert v.result.calibration["decay_factor"] == pytest.approx(2.0 ** (hours / Y90_HALF_LIFE_H), rel=1e-9)
    assert v.result.calibration["calibration_factor_mbq_per_bq_ml"] == pytest.approx(
        plan.voxel.grid.voxel_volume_ml * 1e-6, rel=1e-12)


def test_pet_acquired_before_the_administration(small_plan_file, tmp_path):
    _, plan = small_plan_file
    post = write_post_set(tmp_path / "early", plan, _liver_pet(plan, C0), acquisition=ADMIN - timedelta(hours=2))
    with pytest.raises(ImagingError, match="acquired .* before the administration"):
        verify(plan, post)


def test_decay_correction_admin_and_none(small_plan_file, tmp_path):
    _, plan = small_plan_file
    acq = ADMIN + timedelta(hours=30.0)
    # ADMIN: the values already refer to the administration
    post = write_post_set(tmp_path / "a", plan, _liver_pet(plan, C0), acquisition=acq)
    for f in (tmp_path / "a" / "pet").iterdir():
        ds = pydicom.dcmread(f)
        ds.DecayCorrection = "ADMIN"
        ds.save_as(f)
    v = verify(plan, post)
    liver = {r.structure: r for r in v.result.structures}["liver"]
    assert liver.delivered_mean_gy == pytest.approx(_closed_form_mean(plan, "liver", C0 * 1e-6), rel=1e-6)
    # NONE: frame mean over T starting at the acquisition: A(start) = mean lambda T / (1 - exp(-lambda T))
    frame_s = 3600.0
    post = write_post_set(tmp_path / "n", plan, _liver_pet(plan, C0), acquisition=acq, frame_duration_s=frame_s)
    for f in (tmp_path / "n" / "pet").iterdir():
        ds = pydicom.dcmread(f)
        ds.DecayCorrection = "NONE"
        ds.save_as(f)
    v = verify(plan, post)
    lam_t = math.log(2.0) * frame_s / (Y90_HALF_LIFE_H * 3600.0)
    c_admin = C0 * 1e-6 * lam_t / (1.0 - math.exp(-lam_t)) * 2.0 ** (30.0 / Y90_HALF_LIFE_H)
    liver = {r.structure: r for r in v.result.structures}["liver"]
    assert liver.delivered_mean_gy == pytest.approx(_closed_form_mean(plan, "liver", c_admin), rel=1e-6)


def _strip(folder, *keywords, **values):
    for f in (folder / "pet").iterdir():
        ds = pydicom.dcmread(f)
        for kw in keywords:
            if kw in ds:
                delattr(ds, kw)
        for kw, value in values.items():
            setattr(ds, kw, value)
        ds.save_as(f)


def test_pet_without_timing_names_the_attributes(small_plan_file, tmp_path):
    _, plan = small_plan_file
    post = write_post_set(tmp_path / "t", plan, _liver_pet(plan, C0), acquisition=ADMIN + timedelta(hours=5))
    _strip(tmp_path / "t", "SeriesDate", "SeriesTime", "AcquisitionDate", "AcquisitionTime")
    with pytest.raises(ImagingError, match=r"SeriesDate \(0008,0021\) and SeriesTime \(0008,0031\)"):
        verify(plan, post)


def test_pet_none_without_frame_duration(small_plan_file, tmp_path):
    _, plan = small_plan_file
    post = write_post_set(tmp_path / "f", plan, _liver_pet(plan, C0), acquisition=ADMIN + timedelta(hours=5))
    _strip(tmp_path / "f", "ActualFrameDuration", DecayCorrection="NONE")
    with pytest.raises(ImagingError, match=r"ActualFrameDuration \(0018,1242\)"):
        verify(plan, post)


@pytest.mark.parametrize("units", ["CNTS", "GML"])
def test_pet_not_in_bq_ml(small_plan_file, tmp_path, units):
    _, plan = small_plan_file
    post = write_post_set(tmp_path / units, plan, _liver_pet(plan, C0), acquisition=ADMIN + timedelta(hours=5))
    _strip(tmp_path / units, Units=units)
    with pytest.raises(ImagingError, match=r"Units \(0054,1001\)"):
        verify(plan, post)


def test_pet_without_decay_correction(small_plan_file, tmp_path):
    _, plan = small_plan_file
    post = write_post_set(tmp_path / "d", plan, _liver_pet(plan, C0), acquisition=ADMIN + timedelta(hours=5))
    _strip(tmp_path / "d", "DecayCorrection")
    with pytest.raises(ImagingError, match=r"DecayCorrection \(0054,1102\)"):
        verify(plan, post)


def test_patient_relative_calibration_scales_to_the_delivered_activity(small_plan_file, tmp_path):
    _, plan = small_plan_file
    arrays = plan.voxel.arrays
    pet = np.where(arrays["mask_liver"], C0, 0.0) + np.where(arrays["mask_lungs"], C0 / 10.0, 0.0)
    delivery = {"vial_activity_gbq": 2.0, "vial_reference_datetime": (ADMIN - timedelta(hours=48)).isoformat(),
                "residual_fraction": 0.1}
    post = write_post_set(tmp_path / "r", plan, pet, acquisition=ADMIN + timedelta(hours=3), delivery=delivery,
                          extra={"pet_calibration": "patient_relative"})
    v = verify(plan, post)
    delivered = 2.0 * 2.0 ** (-48.0 / Y90_HALF_LIFE_H) * 0.9  # GBq
    assert v.result.delivered.delivered_activity_gbq == pytest.approx(delivered, rel=1e-12)
    assert v.result.activity_liver_mbq + v.result.activity_lungs_mbq == pytest.approx(delivered * 1000.0, rel=1e-9)
    # lung shunt = lung activity / (liver + lung) = (C/10 V_lung) / (C V_liver + C/10 V_lung)
    vl, vg = arrays["mask_liver"].sum(), arrays["mask_lungs"].sum()
    # (C/10 is stored in 16 bits with the slice maximum C as full scale: rounded by up to 1 part in 13107)
    assert v.result.lung_shunt_delivered_fraction == pytest.approx((vg / 10) / (vl + vg / 10), rel=1e-4)
    assert v.result.calibration["method"] == "patient_relative"


def test_delivery_record_closed_forms(tmp_path, monkeypatch):
    from embplan.verify import delivered_activity

    monkeypatch.chdir(tmp_path)  # a mapping's relative paths are relative to the current folder
    (tmp_path / "ct").mkdir()
    (tmp_path / "pet").mkdir()
    base = {"schema_version": 1, "administration_datetime": "2026-12-20T10:00:00", "pet": "pet", "ct": "ct"}
    post = load_post(base | {"delivery": {"vial_activity_gbq": 5.0, "vial_reference_datetime": "2026-12-17T10:00:00",
                                          "residual_activity_gbq": 0.2, "residual_datetime": "2026-12-20T16:00:00"}})
    d = delivered_activity(post, 4.0)
    vial = 5.0 * 2.0 ** (-72.0 / Y90_HALF_LIFE_H)
    residual = 0.2 * 2.0 ** (6.0 / Y90_HALF_LIFE_H)
    assert d.delivered_activity_gbq == pytest.approx(vial - residual, rel=1e-12)
    assert d.delivered_minus_planned_percent == pytest.approx(100 * ((vial - residual) / 4.0 - 1), rel=1e-9)


def test_post_json_errors_name_the_fields(tmp_path):
    bad = {"schema_version": 1, "administration_datetime": "2026-12-20T10:00:00", "ct": "ct",
           "delivery": {"vial_activity_gbq": -1, "vial_reference_datetime": "2026-12-20T10:00:00"}, "colour": 1}
    with pytest.raises(CaseError) as exc:
        load_post(bad)
    text = str(exc.value)
    for needle in ("delivery.vial_activity_gbq: must be > 0", "colour: unknown field"):
        assert needle in text, text
    no_image = dict(bad, delivery={"vial_activity_gbq": 3, "vial_reference_datetime": "2026-12-20T10:00:00"})
    no_image.pop("colour")
    with pytest.raises(CaseError) as exc:
        load_post(no_image)
    assert "delivery.residual_fraction: required" in str(exc.value)
    no_image["delivery"]["residual_fraction"] = 0.0
    with pytest.raises(CaseError, match="pet: give exactly one of pet"):
        load_post(no_image)
    (tmp_path / "post.json").write_text('{"schema_version": 1, "schema_version": 1}')
    with pytest.raises(CaseError, match="duplicate key"):
        load_post(tmp_path / "post.json")
    ok = {"schema_version": 1, "administration_datetime": "2026-12-20T10:00:00", "ct": "ct", "pet": "pet",
          "delivery": {"vial_activity_gbq": 3, "vial_reference_datetime": "2026-12-20T10:00:00",
                       "residual_fraction": 0.05}, "registration": {"histogram_bins": 2}}
    with pytest.raises(CaseError, match="registration.histogram_bins"):
        load_post(ok)
    ok.pop("registration")
    mixed = dict(ok, administration_datetime="2026-12-20T10:00:00+01:00")
    with pytest.raises(CaseError, match="administration_datetime: give every time with a UTC offset or none"):
        load_post(mixed)
    (tmp_path / "p.json").write_text(__import__("json").dumps(ok))
    with pytest.raises(CaseError, match="ct: .* not found"):
        load_post(tmp_path / "p.json")


def test_truncated_field_of_view_is_reported(small_plan_file, tmp_path):
    _, plan = small_plan_file
    post = write_post_set(tmp_path / "fov", plan, _liver_pet(plan, C0), acquisition=ADMIN + timedelta(hours=5))
    nz = plan.voxel.grid.shape[0]
    for k in range(nz - 12, nz):  # the PET stops 12 slices (96 mm) below the top of the planning grid
        (tmp_path / "fov" / "pet" / f"PT_{k + 1:04d}.dcm").unlink()
    v = verify(plan, post)
    rows = {r.structure: r for r in v.result.structures}
    lungs = plan.voxel.arrays["mask_lungs"]
    expected = lungs[: nz - 12].sum() / lungs.sum()
    assert rows["lungs"].coverage_fraction == pytest.approx(expected, abs=0.02)
    assert rows["lungs"].coverage_fraction < 0.99
    assert any("covers only" in n and "lungs" in n for n in v.result.notes)


def test_images_of_another_patient_refused(small_plan_file, tmp_path):
    _, plan = small_plan_file
    post = write_post_set(tmp_path / "pid", plan, _liver_pet(plan, C0), acquisition=ADMIN + timedelta(hours=5))
    _strip(tmp_path / "pid", PatientID="someone-else")
    with pytest.raises(ImagingError, match=r"different patients: PatientID \(0010,0020\)"):
        verify(plan, post)
