"""Self-consistency: a post-treatment image that holds exactly the planned activity gives back the planned dose
(every structure, every method, gamma pass rate 1); a bremsstrahlung SPECT is calibrated patient-relatively."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pydicom
import pytest

from embplan.errors import ImagingError
from embplan.imaging.phantom_dicom import _write_nm, _Writer
from embplan.verify import verify
from tests.verify.conftest import ADMIN, write_post_set

K = 49.67


def _planned_pet(plan) -> np.ndarray:
    """Bq/mL at administration (Decay Correction ADMIN) of the planned activity map."""
    return np.asarray(plan.voxel.arrays["activity_mbq"]) * 1.0e6 / plan.voxel.grid.voxel_volume_ml


def _as_admin(folder):
    for f in (folder / "pet").iterdir():
        ds = pydicom.dcmread(f)
        ds.DecayCorrection = "ADMIN"
        ds.save_as(f)


@pytest.mark.parametrize("method", ["ldm", "vsv", "vsv_density"])
def test_planned_activity_gives_the_planned_dose(small_plan_file, tmp_path, method):
    _, plan = small_plan_file
    a = plan.dosimetry.activity_gbq
    delivery = {"vial_activity_gbq": a, "vial_reference_datetime": ADMIN.isoformat(), "residual_fraction": 0.0}
    post = write_post_set(tmp_path / method, plan, _planned_pet(plan), acquisition=ADMIN + timedelta(hours=24),
                          delivery=delivery, extra={"dose_method": method, "gamma": {}})
    _as_admin(tmp_path / method)
    v = verify(plan, post)
    r = v.result
    assert r.delivered.delivered_minus_planned_percent == pytest.approx(0.0, abs=1e-9)
    for row in r.structures:
        # 16-bit PET pixels: each slice is rounded to 1/65535 of its maximum
        assert row.delivered_mean_gy == pytest.approx(row.planned_mean_gy, rel=2e-3, abs=1e-3), row.structure
    assert r.lung_shunt_delivered_fraction == pytest.approx(r.lung_shunt_planned_fraction, rel=2e-3)
    assert r.deposits == [] and r.activity_outside_fraction == 0.0
    assert r.gamma is not None and r.gamma.pass_rate == 1.0 and r.gamma.evaluated_voxels > 100
    assert not any(f.code == "EXTRAHEPATIC_DEPOSITION" for f in r.flags)
    assert r.registration["source"] == "file"
    if method != "ldm":
        assert "recomputed" in r.planned_dose_source  # the small plan stores only its LDM map
    if method == "vsv":  # the plain kernel gives no lung dose: lungs by local deposition, as in the planner
        assert {s.structure: s for s in r.structures}["lungs"].dose_source == "ldm (lungs)"


def test_bremsstrahlung_spect_patient_relative(small_plan_file, tmp_path):
    _, plan = small_plan_file
    arrays = plan.voxel.arrays
    grid = plan.voxel.grid
    liver, lungs = arrays["mask_liver"], arrays["mask_lungs"]
    counts = np.where(liver, 400.0, 0.0) + np.where(lungs, 40.0, 0.0)
    folder = tmp_path / "spect_case"
    post_path = write_post_set(folder, plan, np.zeros(grid.shape) + 1.0, acquisition=ADMIN + timedelta(hours=2))
    w = _Writer("bremss", plan.case.patient.id, "Test^Post", ADMIN + timedelta(hours=2), "HFS")
    (folder / "spect").mkdir()
    _write_nm(w, folder / "spect" / "bremss.dcm", grid, counts, 3000.0)
    # the SPECT and the CT of one SPECT/CT: same frame of reference
    ct_for = pydicom.dcmread(next((folder / "ct").iterdir())).FrameOfReferenceUID
    ds = pydicom.dcmread(folder / "spect" / "bremss.dcm")
    ds.FrameOfReferenceUID = ct_for
    ds.save_as(folder / "spect" / "bremss.dcm")
    post = json.loads(post_path.read_text())
    post.pop("pet")
    post["spect"] = "spect"
    post["delivery"] = {"vial_activity_gbq": 2.5, "vial_reference_datetime": ADMIN.isoformat(),
                        "residual_fraction": 0.04}
    post_path.write_text(json.dumps(post))
    v = verify(plan, post_path)
    r = v.result
    delivered_mbq = 2500.0 * 0.96
    assert r.calibration["method"] == "patient_relative"
    assert r.activity_liver_mbq + r.activity_lungs_mbq == pytest.approx(delivered_mbq, rel=1e-9)
    nl, ng = liver.sum(), lungs.sum()
    per_liver_voxel = delivered_mbq * 400.0 / (400.0 * nl + 40.0 * ng)  # MBq at administration
    c_admin = per_liver_voxel / grid.voxel_volume_ml
    rho = arrays.get("dose_density_g_cm3", arrays["density_g_cm3"])[liver].astype(np.float64)  # the plan's dose density
    liver_row = {s.structure: s for s in r.structures}["liver"]
    assert liver_row.delivered_mean_gy == pytest.approx(K * c_admin * nl / rho.sum(), rel=1e-9)
    assert r.lung_shunt_delivered_fraction == pytest.approx(40.0 * ng / (400.0 * nl + 40.0 * ng), rel=1e-9)


def test_post_structures_from_a_seg(small_plan_file, tmp_path):
    """Structures on the post CT given as a DICOM SEG: the liver's surface distance and Dice are recorded."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    _, plan = small_plan_file
    folder = tmp_path / "seg_case"
    post_path = write_post_set(folder, plan, _planned_pet(plan), acquisition=ADMIN + timedelta(hours=24))
    sources = [pydicom.dcmread(p) for p in sorted((folder / "ct").iterdir())]
    desc = hd.seg.SegmentDescription(
        segment_number=1, segment_label="Liver post", segmented_property_category=codes.SCT.Organ,
        segmented_property_type=codes.SCT.Liver, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=np.asarray(plan.voxel.arrays["mask_liver"], dtype=np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[desc],
        series_instance_uid=generate_uid(), series_number=9, sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer="test", manufacturer_model_name="test", software_versions="1", device_serial_number="1")
    seg.save_as(folder / "liver_seg.dcm")
    post = json.loads(post_path.read_text())
    post["structures"] = {"seg": "liver_seg.dcm", "liver": ["Liver post"]}
    post_path.write_text(json.dumps(post))
    q = verify(plan, post_path).result.registration["quality"]
    assert q["liver_dice_after"] == pytest.approx(1.0, abs=1e-9)
    assert q["liver_msd_after_mm"] == pytest.approx(0.0, abs=1e-9)
    post["structures"]["liver"] = ["Spleen"]
    post_path.write_text(json.dumps(post))
    with pytest.raises(ImagingError, match="no ROI 'Spleen'.*'Liver post'"):
        verify(plan, post_path)
