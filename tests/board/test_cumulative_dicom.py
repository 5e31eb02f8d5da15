"""End to end (issue 11, the liver over the years from voxel maps): a phantom DICOM case (right-lobe glass TARE) is
planned and its RT Dose exported with ``embplan export-dicom``; a second case on the same CT and frame of reference
(a new MAA SPECT of the left lobe) names that RT Dose as its prior TARE and plans a left-lobe TARE. The cumulative
numbers are checked against an independent reading: the RT Dose read by SimpleITK, the mass-weighted mean over the
second plan's own non-tumour liver mask and density, plus the second plan's own voxel mean."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

import embplan
from embplan import cli
from embplan.case import load_case
from embplan.imaging.image_set import territory_mask
from embplan.imaging.phantom import make_phantom
from embplan.imaging.phantom_dicom import write_phantom_dicom
from embplan.imaging.prior_dose import read_prior_dose_map
from embplan.io.hdf5 import load_plan, save_plan

runner = CliRunner()
SEED, VOXEL_MM = 7, 4.42


def run(*args):
    return runner.invoke(cli.app, [str(a) for a in args])


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    root = tmp_path_factory.mktemp("cumulative")
    a = root / "set"
    r = run("phantom-dicom", "--out", a, "--seed", SEED, "--voxel-mm", VOXEL_MM, "--json")
    assert r.exit_code == 0, r.output
    first = embplan.plan(embplan.load_case(a / "tare_dicom.json"))
    save_plan(first, a / "plan.h5")
    r = run("export-dicom", a / "plan.h5", "-o", a / "dose.dcm", "--json")
    assert r.exit_code == 0, r.output
    # the second session: same CT and frame of reference, a new MAA SPECT injected in the left lobe
    raw = json.loads((a / "tare_dicom.json").read_text())
    raw2 = copy.deepcopy(raw)
    raw2["procedure"]["territory"] = {"scope": "lobar", "lobe": "left"}
    raw2["procedure"]["date"] = "2027-02-20"
    phantom = make_phantom("net_liver", SEED, VOXEL_MM)
    perfused = territory_mask(load_case(raw2), phantom.masks, phantom.grid.shape)
    b = root / "left"
    write_phantom_dicom(phantom, b, perfused_mask=np.asarray(perfused), patient_id=raw["patient"]["id"])
    nm = pydicom.dcmread(b / "spect" / "nm.dcm")
    ct0 = pydicom.dcmread(sorted((a / "ct").iterdir())[0], stop_before_pixels=True)
    assert nm.FrameOfReferenceUID != ct0.FrameOfReferenceUID  # written apart: another frame
    nm.FrameOfReferenceUID = ct0.FrameOfReferenceUID  # registered to the first session's CT
    (a / "spect_left").mkdir()
    nm.save_as(a / "spect_left" / "nm.dcm")
    raw2["dosimetry"]["images"]["dicom"]["spect"] = "spect_left/nm.dcm"
    raw2["patient"]["prior_treatments"].append(
        {"kind": "TARE", "date": raw["procedure"]["date"], "territory": {"scope": "lobar", "lobe": "right"},
         "device": "glass", "response": "partial", "dose_file": "dose.dcm"})
    (a / "left.json").write_text(json.dumps(raw2))
    second = embplan.plan(embplan.load_case(a / "left.json"))
    return {"dir": a, "first": first, "second": second, "raw2": raw2, "other_set": b}


def _sitk_dose(path: Path) -> np.ndarray:
    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img).astype(np.float64) * float(pydicom.dcmread(path).DoseGridScaling)


def test_cumulative_numbers_against_an_independent_reading(staged):
    first, second = staged["first"], staged["second"]
    cum = second.board.liver.cumulative_voxel
    assert cum is not None and len(cum.files) == 1
    assert cum.files[0].placement.startswith("same grid")
    v = second.voxel
    rt = _sitk_dose(staged["dir"] / "dose.dcm")
    method = first.dosimetry.method
    assert rt.shape == v.grid.shape
    # the exported map is the first plan's map (32-bit quantisation: < 1.2e-10 of the maximum)
    first_map = first.voxel.dose_maps()[method]
    assert np.allclose(rt, first_map, rtol=0, atol=2e-9 * first_map.max())
    w = v.arrays["mask_normal_liver"].astype(np.float64) * v.arrays["dose_density_g_cm3"].astype(np.float64)
    prior_mean = float((rt * w).sum() / w.sum())
    whole = cum.structure("non-tumour liver")
    assert whole.prior_gy == pytest.approx(prior_mean, rel=1e-6)
    assert whole.this_plan_gy == pytest.approx(second.dosimetry.voxel.normal_liver_gy, rel=1e-9)
    assert whole.cumulative_gy == pytest.approx(prior_mean + second.dosimetry.voxel.normal_liver_gy, rel=1e-6)
    # the stored maps: plain sum
    assert np.allclose(v.arrays["cumulative_dose_gy"], rt + v.dose_maps()[method], atol=1e-6)
    # the lobes: the earlier session dosed the right lobe, this one the left
    right, left = cum.structure("right lobe"), cum.structure("left lobe")
    assert right.prior_gy > 10 * left.prior_gy and left.this_plan_gy > 10 * right.this_plan_gy
    # the cumulative DVH record sits with the plan's DVHs, its mean the cumulative mean
    rec = second.dosimetry.dvh[cum.dvh_key]
    assert rec.mean_gy == pytest.approx(whole.cumulative_gy, rel=1e-6)
    # the flag fires exactly when the cumulative mean is above the limit in force
    codes = {f.code for f in second.flags}
    assert ("CUMULATIVE_LIVER_DOSE_HIGH" in codes) == (whole.cumulative_gy > cum.normal_liver_limit_gy)
    assert cum.normal_liver_limit_gy == second.dosimetry.limits.applicable_normal_liver_limit_gy
    # the territory records carry the same numbers, source "voxel maps of plan files"
    td = {t.territory: t for t in second.board.liver.territory_doses}
    assert td["non-tumour liver (voxel maps)"].cumulative_normal_liver_gy == whole.cumulative_gy
    assert td["left lobe (voxel maps)"].source.startswith("voxel maps of plan files: dose.dcm")


def test_plan_file_as_dose_file_gives_the_same_prior(staged):
    """The first plan's .h5 read by the imaging-level reader is the first plan's map, bit for bit."""
    m = read_prior_dose_map(staged["dir"] / "plan.h5")
    first = staged["first"]
    assert m.kind == "plan" and np.array_equal(m.dose_gy, first.voxel.dose_maps()[first.dosimetry.method])
    rt = read_prior_dose_map(staged["dir"] / "dose.dcm")
    assert m.frame_of_reference_uid == rt.frame_of_reference_uid and m.grid == rt.grid


def test_round_trip_keeps_the_cumulative_data(staged, tmp_path):
    second = staged["second"]
    path = save_plan(second, tmp_path / "second.h5")
    back = load_plan(path)
    assert back == second and back.voxel == second.voxel
    assert back.board.liver.cumulative_voxel == second.board.liver.cumulative_voxel
    r = run("board", path)
    assert r.exit_code == 0, r.output
    assert "voxel maps" in r.output


def test_other_frame_of_reference_is_refused(staged):
    """The second SPECT as written (its own frame of reference) cannot carry the first session's RT Dose."""
    raw = copy.deepcopy(staged["raw2"])
    d = staged["dir"]
    raw["dosimetry"]["images"]["dicom"].update(ct=str(staged["other_set"] / "ct"),
                                              spect=str(staged["other_set"] / "spect" / "nm.dcm"),
                                              rtstruct=str(staged["other_set"] / "rtstruct.dcm"))
    path = d / "mismatch.json"
    path.write_text(json.dumps(raw))
    r = run("plan", path, "-o", d / "mismatch.h5", "--json", "--allow-outside-paths")
    assert r.exit_code == 1, r.output
    assert "prior_treatments.2.dose_file" in r.output and "frame of reference" in r.output
    assert not (d / "mismatch.h5").exists()
