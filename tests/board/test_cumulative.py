"""The liver over the years from voxel maps (issue 11): earlier TARE dose maps summed with this plan's.

Small synthetic grids checked against hand calculations: two uniform maps and known masks (plain sum, BED sum by
Dale's closed form written out here, mass-weighted means per lobe, the flag at the limit); a frame-of-reference
mismatch refused; a grid shifted by half a voxel resampled (a linear dose ramp is reproduced exactly by trilinear
interpolation; outside the earlier field of view 0 Gy and the note); the plan-file reader (verified, tampering
refused); the case fields."""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

import h5py
import numpy as np
import pytest

import embplan
from embplan.board.cumulative import cumulative_voxel_dose, dose_files
from embplan.dosimetry.cumulative import structure_sums, sum_sessions
from embplan.dosimetry.metrics import LIVER_RADIOBIOLOGY, RadiobiologyParams
from embplan.errors import CaseError, ImagingError
from embplan.grid import Grid
from embplan.imaging.prior_dose import prior_dose_on_grid, read_prior_dose_map
from embplan.imaging.rtdose import write_rt_dose
from embplan.thresholds import Thresholds

from .conftest import case_dict

FOR_A = "1.2.826.0.1.3680043.8.498.111"
FOR_B = "1.2.826.0.1.3680043.8.498.222"
Y90_HALF_LIFE_H = 64.10  # ICRP-107


def _bed_hand(d: float, ab: float, trep: float) -> float:
    """Dale 1985, permanent implant: BED = D (1 + D lambda / ((mu + lambda) alpha/beta))."""
    lam, mu = math.log(2) / Y90_HALF_LIFE_H, math.log(2) / trep
    return d * (1 + d * lam / ((mu + lam) * ab))


def _dicom_case(tmp_path: Path, dose_file: str = "prior.dcm", **prior: object) -> embplan.case.Case:
    raw = json.loads(resources.files("embplan").joinpath("data/tare_dicom_template.json").read_text())
    raw["patient"]["prior_treatments"] = [
        {"kind": "TARE", "date": "2026-10-01", "territory": {"scope": "lobar", "lobe": "right"}, "device": "glass",
         "response": "partial", "dose_file": dose_file, **prior}]
    path = tmp_path / "case.json"
    path.write_text(json.dumps(raw))
    return embplan.load_case(path)


# small grid: 4 x 4 x 6 voxels of 2 mm; x < 3: right lobe, x >= 3: left lobe; one tumour voxel column
GRID = Grid(shape=(4, 4, 6), spacing_mm=(2.0, 2.0, 2.0), origin_mm=(-5.0, -3.0, 10.0))


def _masks() -> dict[str, np.ndarray]:
    liver = np.ones(GRID.shape, bool)
    liver[:, 0, :] = False  # row y = 0: lungs
    lungs = ~liver
    tumors = np.zeros(GRID.shape, bool)
    tumors[:, 2, 1] = True  # 4 tumour voxels in the right lobe
    right = np.zeros(GRID.shape, bool)
    right[:, :, :3] = True
    return {"liver": liver, "tumors": tumors, "lungs": lungs, "liver_right": right & liver,
            "liver_left": ~right & liver}


def test_sum_sessions_and_bed_against_hand_calculation():
    rb = RadiobiologyParams(name="t", alpha_beta_gy=2.5, repair_half_time_h=2.5, source="test", uncertain=True)
    a = np.full((2, 2, 2), 30.0)
    b = np.zeros((2, 2, 2))
    b[0] = 10.0
    s = sum_sessions([a, b], rb)
    assert np.allclose(s.dose_gy[0], 40.0) and np.allclose(s.dose_gy[1], 30.0)
    assert np.allclose(s.bed_gy[0], _bed_hand(30, 2.5, 2.5) + _bed_hand(10, 2.5, 2.5))
    assert np.allclose(s.bed_gy[1], _bed_hand(30, 2.5, 2.5))
    # the BED of separate sessions is not the BED of their sum (that would overstate the quadratic term)
    assert s.bed_gy[0, 0, 0] < _bed_hand(40, 2.5, 2.5)
    # 40 Gy at liver alpha/beta 2.5 Gy, T_rep 2.5 h: 64.0 Gy (metrics.bed_gy docstring)
    assert _bed_hand(40, 2.5, 2.5) == pytest.approx(64.0, abs=0.05)
    # mass weighting: the denser voxel counts double
    rho = np.ones((2, 2, 2))
    rho[0, 0, 0] = 2.0
    rows = structure_sums(a, b, s.bed_gy, {"all": np.ones((2, 2, 2), bool)}, rho, 0.001)
    assert rows[0].this_session_gy == pytest.approx(10.0 * (2 + 3) / 9)
    assert rows[0].cumulative_gy == pytest.approx(30.0 + 50.0 / 9)


def test_liver_radiobiology_threshold_defaults_match_the_metrics_set():
    th = Thresholds()
    assert th.liver_alpha_beta_gy == LIVER_RADIOBIOLOGY.alpha_beta_gy
    assert th.liver_repair_half_time_h == LIVER_RADIOBIOLOGY.repair_half_time_h


def _run(case, th, prior_grid=GRID, current_for=FOR_A, limit=75.0, now=None):
    masks = _masks()
    if now is None:
        now = np.zeros(GRID.shape)
        now[:, :, 3:] = 60.0  # this plan: the left lobe at 60 Gy
    return cumulative_voxel_dose(
        case, th, grid=GRID, masks=masks, dose_gy=now, lung_dose_gy=now, density_g_cm3=np.ones(GRID.shape),
        frame_of_reference_uid=current_for, dose_method="vsv_density", normal_liver_limit_gy=limit,
        normal_liver_limit_source="test limit", dvh_bin_width_gy=0.5)


def test_two_uniform_maps_hand_calculation(tmp_path):
    prior = np.zeros(GRID.shape)
    prior[:, :, :3] = 45.0  # earlier session: the right lobe at 45 Gy
    write_rt_dose(prior, GRID, tmp_path / "prior.dcm", reference_ct={"frame_of_reference_uid": FOR_A,
                                                                      "patient_id": "p"})
    case = _dicom_case(tmp_path)
    assert dose_files(case) == [0]
    th = case.effective_thresholds()
    res = _run(case, th)
    rec = res.record
    # non-tumour liver: y = 1..3 (12 voxels per slice of 24 minus row 0 = 18), 4 slices, minus 4 tumour voxels
    n_right = 4 * 3 * 3 - 4  # 32 voxels at 45 Gy earlier, 0 now
    n_left = 4 * 3 * 3  # 36 voxels at 0 earlier, 60 now
    whole = rec.structure("non-tumour liver")
    assert whole.volume_ml == pytest.approx((n_right + n_left) * 0.008)
    assert whole.prior_gy == pytest.approx(45.0 * n_right / (n_right + n_left), rel=1e-6)
    assert whole.this_plan_gy == pytest.approx(60.0 * n_left / (n_right + n_left), rel=1e-6)
    assert whole.cumulative_gy == pytest.approx((45.0 * n_right + 60.0 * n_left) / (n_right + n_left), rel=1e-6)
    bed = (_bed_hand(45, 2.5, 2.5) * n_right + _bed_hand(60, 2.5, 2.5) * n_left) / (n_right + n_left)
    assert whole.cumulative_bed_gy == pytest.approx(bed, rel=1e-6)
    right, left = rec.structure("right lobe"), rec.structure("left lobe")
    assert (right.prior_gy, right.this_plan_gy) == (pytest.approx(45.0, rel=1e-6), pytest.approx(0.0, abs=1e-9))
    assert (left.prior_gy, left.this_plan_gy) == (pytest.approx(0.0, abs=1e-9), pytest.approx(60.0))
    lungs = rec.structure("lungs")  # row y = 0: 12 voxels of 24 at 45 Gy earlier, 12 at 60 Gy now
    assert lungs.prior_gy == pytest.approx(45.0 * 12 / 24, rel=1e-6)
    assert lungs.cumulative_bed_gy is None  # the liver's alpha/beta is not the lung's
    # the maps: plain sum; the DVH: 32/68 of the non-tumour liver at 45 Gy, 36/68 at 60 Gy
    assert np.allclose(res.arrays["cumulative_dose_gy"], prior + np.where(np.arange(6) >= 3, 60.0, 0.0), atol=1e-6)
    assert rec.v_percent["V40Gy"] == pytest.approx(100.0)
    assert rec.d_gy["D50"] == pytest.approx(60.0, abs=0.5)
    assert rec.v_percent["V70Gy"] == pytest.approx(0.0)
    assert not rec.exceeds_limit and res.flags == []
    # the flag at the limit: whole non-tumour liver 52.9 Gy > 50 Gy fires, <= does not
    assert whole.cumulative_gy == pytest.approx(3600.0 / 68, abs=1e-3)
    fired = _run(case, th, limit=50.0)
    assert fired.record.exceeds_limit and [f.code for f in fired.flags] == ["CUMULATIVE_LIVER_DOSE_HIGH"]
    assert fired.flags[0].severity == "warning" and "Lam" in fired.flags[0].evidence
    assert _run(case, th, limit=whole.cumulative_gy + 1e-6).flags == []


def test_bed_uses_the_thresholds_in_force(tmp_path):
    write_rt_dose(np.full(GRID.shape, 20.0), GRID, tmp_path / "prior.dcm",
                  reference_ct={"frame_of_reference_uid": FOR_A})
    case = _dicom_case(tmp_path)
    th = Thresholds(liver_alpha_beta_gy=8.0, liver_repair_half_time_h=1.5)
    rec = _run(case, th, now=np.full(GRID.shape, 10.0)).record
    assert rec.structure("non-tumour liver").cumulative_bed_gy == pytest.approx(
        _bed_hand(20, 8.0, 1.5) + _bed_hand(10, 8.0, 1.5), rel=1e-6)
    assert rec.bed_alpha_beta_gy == 8.0


def test_frame_of_reference_mismatch_is_refused(tmp_path):
    write_rt_dose(np.full(GRID.shape, 20.0), GRID, tmp_path / "prior.dcm",
                  reference_ct={"frame_of_reference_uid": FOR_B})
    case = _dicom_case(tmp_path)
    with pytest.raises(ImagingError, match=r"patient\.prior_treatments\.0\.dose_file: .*frame of reference"):
        _run(case, case.effective_thresholds())
    with pytest.raises(ImagingError, match=r"prior_treatments\.0\.dose_file: the current images have no frame"):
        _run(case, case.effective_thresholds(), current_for=None)


def test_missing_dose_file_names_the_field(tmp_path):
    case = _dicom_case(tmp_path, dose_file="nowhere.dcm")
    with pytest.raises(ImagingError, match=r"patient\.prior_treatments\.0\.dose_file: .*nowhere\.dcm.*not found"):
        _run(case, case.effective_thresholds())


def test_shifted_grid_is_resampled(tmp_path):
    # the earlier map on a grid shifted by half a voxel (1 mm) in x and one voxel wider: a linear ramp in x is
    # reproduced exactly by trilinear interpolation at the current voxel centres
    shifted = Grid(shape=(4, 4, 7), spacing_mm=(2.0, 2.0, 2.0), origin_mm=(-6.0, -3.0, 10.0))
    x_mm = -6.0 + 2.0 * np.arange(7)
    ramp = np.broadcast_to(5.0 * (x_mm + 10.0), shifted.shape).copy()  # 20 .. 80 Gy
    write_rt_dose(ramp, shifted, tmp_path / "prior.dcm", reference_ct={"frame_of_reference_uid": FOR_A})
    prior = read_prior_dose_map(tmp_path / "prior.dcm")
    on_grid, note = prior_dose_on_grid(prior, GRID, FOR_A, np.ones(GRID.shape, bool))
    x_cur = -5.0 + 2.0 * np.arange(6)
    assert np.allclose(on_grid, np.broadcast_to(5.0 * (x_cur + 10.0), GRID.shape), rtol=1e-6)
    assert "resampled" in note and "outside" not in note
    # a grid that covers only part of the current one: 0 Gy outside, and the note says how much liver lies there
    part = Grid(shape=(4, 4, 3), spacing_mm=(2.0, 2.0, 2.0), origin_mm=(-5.0, -3.0, 10.0))
    write_rt_dose(np.full(part.shape, 30.0), part, tmp_path / "part.dcm", reference_ct={"frame_of_reference_uid": FOR_A})
    on_grid, note = prior_dose_on_grid(read_prior_dose_map(tmp_path / "part.dcm"), GRID, FOR_A,
                                       np.ones(GRID.shape, bool))
    assert np.allclose(on_grid[:, :, :3], 30.0) and np.allclose(on_grid[:, :, 4:], 0.0)
    assert "of the current liver lies outside the earlier map" in note


def test_relative_rt_dose_is_refused(tmp_path):
    import pydicom

    write_rt_dose(np.full(GRID.shape, 20.0), GRID, tmp_path / "prior.dcm", reference_ct={"frame_of_reference_uid": FOR_A})
    ds = pydicom.dcmread(tmp_path / "prior.dcm")
    ds.DoseType = "EFFECTIVE"
    ds.save_as(tmp_path / "effective.dcm")
    with pytest.raises(ImagingError, match="only a PHYSICAL dose can be summed"):
        read_prior_dose_map(tmp_path / "effective.dcm")


def test_case_fields(tmp_path):
    # dose_file only on TARE records
    with pytest.raises(CaseError, match=r"prior_treatments\.0\.dose_file: only on TARE records"):
        embplan.load_case(case_dict({"patient.prior_treatments": [
            {"kind": "TAE", "date": "2025-01-01", "territory": {"scope": "lobar", "lobe": "right"},
             "dose_file": "x.dcm"}]}))
    # a TARE without DICOM images cannot sum a dose map
    with pytest.raises(CaseError, match=r"prior_treatments\.0\.dose_file: an earlier dose map is summed"):
        embplan.load_case(case_dict({"patient.prior_treatments": [
            {"kind": "TARE", "date": "2025-01-01", "territory": {"scope": "lobar", "lobe": "left"},
             "dose_file": "x.dcm"}]}, procedure="TARE"))
    # another procedure now: the file is not read, the liver section says so
    review = embplan.review(case_dict({"patient.prior_treatments": [
        {"kind": "TARE", "date": "2025-01-01", "territory": {"scope": "lobar", "lobe": "left"},
         "dose_file": "x.dcm", "normal_liver_dose_gy": 30.0}]}))
    assert review.liver.cumulative_voxel is None
    assert any("summed voxel by voxel only when" in n for n in review.liver.notes)


def test_plan_file_reader_verifies(tmp_path):
    """A plan file written by save_plan is read (its own method's map, grid, frame of reference); an altered one is
    refused by the content checksum."""
    from embplan.io.hdf5 import save_plan
    from embplan.plan_model import VoxelData
    from tests.plan_factory import build_plan  # a small plan with voxel data

    base = build_plan()
    v = base.voxel
    voxel = VoxelData(grid=v.grid, arrays=dict(v.arrays), units=dict(v.units),
                      attributes={**v.attributes, "images": {"frame_of_reference_uid": FOR_A}})
    plan = base.model_copy(update={"voxel": voxel})
    path = save_plan(plan, tmp_path / "p.h5")
    m = read_prior_dose_map(path)
    method = plan.dosimetry.method
    assert m.kind == "plan" and m.frame_of_reference_uid == FOR_A and m.grid == plan.voxel.grid
    assert np.array_equal(m.dose_gy, plan.voxel.dose_maps()[method])
    bad = tmp_path / "bad.h5"
    bad.write_bytes(path.read_bytes())
    with h5py.File(bad, "r+") as h5:
        dpath = json.loads(h5["meta_json"][()])["voxel"]["paths"][f"dose_{method}_gy"]
        arr = h5[dpath][()]
        arr.flat[0] += 1.0
        del h5[dpath]
        h5.create_dataset(dpath, data=arr).attrs["units"] = "Gy"
    with pytest.raises(ImagingError, match="checksum mismatch"):
        read_prior_dose_map(bad)  # the user block's raw SHA-256 (format 1.2) catches it first
    # re-sealed (the raw checksum made to match): the content checksum still refuses the altered dose
    from embplan.io.hdf5 import seal_file

    seal_file(bad)
    with pytest.raises(ImagingError, match="checksum mismatch"):
        read_prior_dose_map(bad)


def test_plan_user_block_constants_agree_with_the_archive():
    """imaging.prior_dose restates the archive's user-block layout (it may not import embplan.io): keep them equal."""
    from embplan.imaging import prior_dose
    from embplan.io import hdf5

    assert prior_dose.PLAN_USERBLOCK_BYTES == hdf5.USERBLOCK_BYTES
    assert prior_dose.PLAN_USERBLOCK_MAGIC == hdf5.USERBLOCK_MAGIC
    assert prior_dose.PLAN_FORMAT_NAME == hdf5.FORMAT_NAME


def test_much_coarser_current_grid_averages_instead_of_point_sampling(tmp_path):
    """Earlier map on 1 mm voxels along x with a 3-voxel period (0, 0, 90 Gy); the current grid has 3 mm voxels
    centred on the middle of each period: the box average gives 30 Gy everywhere (point sampling would give 0 Gy)."""
    fine = Grid(shape=(4, 4, 30), spacing_mm=(3.0, 3.0, 1.0), origin_mm=(0.0, 0.0, 0.0))
    coarse = Grid(shape=(4, 4, 10), spacing_mm=(3.0, 3.0, 3.0), origin_mm=(1.0, 0.0, 0.0))
    dose = np.broadcast_to(np.where(np.arange(30) % 3 == 2, 90.0, 0.0), fine.shape).copy()
    write_rt_dose(dose, fine, tmp_path / "fine.dcm", reference_ct={"frame_of_reference_uid": FOR_A})
    on_grid, note = prior_dose_on_grid(read_prior_dose_map(tmp_path / "fine.dcm"), coarse, FOR_A)
    assert np.allclose(on_grid, 30.0, rtol=1e-6)
    assert "box average" in note


def test_dose_file_paths_for_validate(tmp_path):
    from embplan.board.cumulative import dose_file_paths

    case = _dicom_case(tmp_path, dose_file="earlier/dose.dcm")
    with pytest.raises(ImagingError, match=r"patient\.prior_treatments\.0\.dose_file: .*earlier/dose\.dcm not found"):
        dose_file_paths(case)
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "dose.dcm").write_bytes(b"x")
    assert dose_file_paths(case) == {"patient.prior_treatments.0.dose_file": tmp_path / "earlier" / "dose.dcm"}
