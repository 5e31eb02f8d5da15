"""The planner accepts a CT and a SPECT in different frames of reference: aligned by a given transform file, or
registered (multi-modal mutual information), with the registration recorded in the plan."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

import embplan
from embplan import cli
from embplan.errors import ImagingError
from embplan.imaging.registration import RigidTransform, write_transform

SHIFT_MM = np.array([10.0, -6.0, 12.0])  # the SPECT's new frame: CT point p is at p + SHIFT in it


@pytest.fixture(scope="module")
def dicom_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    r = CliRunner().invoke(cli.app, ["phantom-dicom", "--out", str(root / "same"), "--voxel-mm", "8"])
    assert r.exit_code == 0, r.stderr
    other = root / "other"
    shutil.copytree(root / "same", other)
    nm = other / "spect" / "nm.dcm"
    ds = pydicom.dcmread(nm)
    det = ds.DetectorInformationSequence[0]
    det.ImagePositionPatient = [f"{float(v) + d:.4f}" for v, d in zip(det.ImagePositionPatient, SHIFT_MM, strict=True)]
    ds.FrameOfReferenceUID = "2.25.98765432109876543210"
    ds.save_as(nm)
    case = json.loads((other / "tare_dicom.json").read_text())
    (other / "unregistered.json").write_text(json.dumps(case))
    registered = json.loads(json.dumps(case))
    registered["dosimetry"]["images"]["dicom"]["register_activity_to_ct"] = True
    (other / "registered.json").write_text(json.dumps(registered))
    write_transform(RigidTransform(translation_mm=tuple(-SHIFT_MM)), other / "spect_to_ct.tfm")
    case["dosimetry"]["images"]["dicom"]["transform"] = "spect_to_ct.tfm"
    (other / "with_transform.json").write_text(json.dumps(case))
    baseline = embplan.plan(embplan.load_case(root / "same" / "tare_dicom.json"))
    return root, baseline


def test_given_transform_gives_the_same_plan(dicom_sets):
    root, base = dicom_sets
    p = embplan.plan(embplan.load_case(root / "other" / "with_transform.json"))
    assert p.dosimetry.activity_gbq == pytest.approx(base.dosimetry.activity_gbq, rel=1e-9)
    assert p.dosimetry.tumor_dose_gy == pytest.approx(base.dosimetry.tumor_dose_gy, rel=1e-6)
    reg = p.voxel.attributes["images"]["registration"]
    assert reg["source"] == "file" and reg["transform"]["translation_mm"] == pytest.approx(list(-SHIFT_MM))
    assert any("different frames of reference" in n for n in p.dosimetry.notes)


def test_other_frame_without_an_explicit_choice_is_refused(dicom_sets):
    """Issue 12: the frames must agree unless the case says otherwise explicitly; the error names both ways."""
    root, _ = dicom_sets
    with pytest.raises(embplan.EmbplanError,
                       match=r"dosimetry\.images\.dicom: the CT .* different frames of reference.*register_activity_to_ct"):
        embplan.plan(embplan.load_case(root / "other" / "unregistered.json"))


def test_registered_when_asked_without_transform(dicom_sets):
    root, base = dicom_sets
    p = embplan.plan(embplan.load_case(root / "other" / "registered.json"))
    reg = p.voxel.attributes["images"]["registration"]
    assert reg["source"] == "registered"
    np.testing.assert_allclose(reg["transform"]["translation_mm"], -SHIFT_MM, atol=1.0)  # 1/8 of a voxel
    assert reg["quality"]["rotation_deg"] < 0.5
    assert -reg["quality"]["mattes_mi_after"] > 0.3
    # the plan agrees with the same-frame plan within the resampling of the SPECT onto the aligned grid
    assert p.dosimetry.activity_gbq == pytest.approx(base.dosimetry.activity_gbq, rel=0.03)
    assert p.dosimetry.tumor_dose_gy == pytest.approx(base.dosimetry.tumor_dose_gy, rel=0.05)
    assert p.dosimetry.lung_dose_gy == pytest.approx(base.dosimetry.lung_dose_gy, rel=0.05)


def test_implausible_transform_refused(dicom_sets, tmp_path):
    root, _ = dicom_sets
    other = root / "other"
    case = json.loads((other / "with_transform.json").read_text())
    write_transform(RigidTransform.from_euler((0.0, 0.0, 90.0), (0.0, 0.0, 0.0)), other / "wild.tfm")
    case["dosimetry"]["images"]["dicom"]["transform"] = "wild.tfm"
    (other / "wild.json").write_text(json.dumps(case))
    with pytest.raises(ImagingError, match="rotation 90.0 deg"):
        embplan.plan(embplan.load_case(other / "wild.json"))
    case["dosimetry"]["images"]["dicom"]["transform"] = "nowhere.tfm"
    (other / "missing.json").write_text(json.dumps(case))
    with pytest.raises(ImagingError, match=r"dosimetry.images.dicom.transform: .*nowhere.tfm not found"):
        embplan.plan(embplan.load_case(other / "missing.json"))


def test_verify_in_the_planning_frame_needs_no_registration(dicom_sets, tmp_path):
    """A post-treatment PET/CT in the planning CT's frame of reference: identity, with its quality figures."""
    from datetime import timedelta

    from embplan.verify import verify
    from tests.verify.conftest import ADMIN, write_post_set

    _, base = dicom_sets
    for_uid = base.voxel.attributes["images"]["frame_of_reference_uid"]
    pet = np.where(base.voxel.arrays["mask_liver"], 1.0e5, 0.0)
    post = write_post_set(tmp_path / "same_frame", base, pet, acquisition=ADMIN + timedelta(hours=4),
                          frame_of_reference_uid=for_uid)
    v = verify(base, post)
    assert v.result.registration["source"] == "identity"
    assert v.result.registration["quality"]["correlation_after"] > 0.99


def test_verify_refuses_another_patients_images(dicom_sets, tmp_path):
    from datetime import timedelta

    from embplan.verify import verify
    from tests.verify.conftest import ADMIN, write_post_set

    _, base = dicom_sets
    pet = np.where(base.voxel.arrays["mask_liver"], 1.0e5, 0.0)
    post = write_post_set(tmp_path / "other_patient", base, pet, acquisition=ADMIN + timedelta(hours=4))
    for sub in ("ct", "pet"):
        for f in (tmp_path / "other_patient" / sub).iterdir():
            ds = pydicom.dcmread(f)
            ds.PatientID = "another-patient"
            ds.save_as(f)
    with pytest.raises(ImagingError, match="another patient: PatientID .*'another-patient'"):
        verify(base, post)
