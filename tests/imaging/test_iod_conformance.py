"""What embplan writes conforms to the DICOM IODs (issue 17): dicom3tools' ``dciodvfy`` (Debian package dicom3tools;
.ci/run installs it) finds 0 errors in the phantom CT, NM and RTSTRUCT, in the RT Dose in both layouts, and in the
test factory's vendor-like files (which the reader tests rely on being realistic).

Without dciodvfy the tests skip with the reason, except under CI (``CI`` set), where they fail: CI must check.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from embplan import cli
from embplan.imaging.dicom import read_ct_series, read_rt_dose
from embplan.imaging.phantom import make_phantom
from embplan.imaging.phantom_dicom import write_phantom_dicom
from embplan.imaging.rtdose import write_rt_dose
from embplan.io.hdf5 import save_plan
from tests.plan_factory import build_plan

try:  # tests/imaging as a package or as a plain folder on sys.path
    from . import dicom_factory as fac
except ImportError:  # pragma: no cover
    import dicom_factory as fac

DCIODVFY = shutil.which("dciodvfy")


def _need_dciodvfy() -> str:
    if DCIODVFY is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail("dciodvfy (Debian package dicom3tools) is missing in CI: .ci/run installs it")
        pytest.skip("dciodvfy not installed (apt-get install dicom3tools)")
    return DCIODVFY


def iod_errors(path: Path) -> list[str]:
    """The Error lines dciodvfy prints for ``path`` (warnings are not errors: e.g. Radionuclide Half Life in an NM
    image is a standard extension that the SPECT reader uses)."""
    out = subprocess.run([_need_dciodvfy(), str(path)], capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    return [ln for ln in text.splitlines() if ln.startswith("Error")]


@pytest.fixture(scope="module")
def phantom_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom_dicom")
    paths = write_phantom_dicom(make_phantom("net_liver", 7, 8.0), out)
    return paths


def test_phantom_ct_nm_rtstruct_conform(phantom_set):
    ct_files = sorted(Path(phantom_set["ct"]).iterdir())
    for f in (ct_files[0], ct_files[len(ct_files) // 2], ct_files[-1], phantom_set["spect"], phantom_set["rtstruct"]):
        assert iod_errors(f) == [], f


@pytest.mark.parametrize("conservative", [False, True])
def test_rt_dose_conforms_in_both_layouts(phantom_set, tmp_path, conservative):
    ct = read_ct_series(phantom_set["ct"])
    dose = np.random.default_rng(17).uniform(0, 150, ct.grid.shape)
    path = write_rt_dose(dose, ct.grid, tmp_path / "dose.dcm", reference_ct=ct, dose_comment="test",
                         conservative=conservative)
    assert iod_errors(path) == []
    ds = pydicom.dcmread(path)
    if conservative:
        assert ds.DoseSummationType == "PLAN" and "PlanOverviewSequence" not in ds
        uid = ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID
        assert uid in ds.ImageComments and ds.SpecificCharacterSet == "ISO_IR 100"
    else:
        assert ds.DoseSummationType == "PLAN_OVERVIEW" and "ReferencedRTPlanSequence" not in ds
        assert len(ds.PlanOverviewSequence[0].ReferencedImageSequence) == ct.grid.shape[0]
    back = read_rt_dose(path)  # the same dose whichever layout
    assert back.grid == ct.grid
    np.testing.assert_allclose(back.array, dose, atol=1e-8 * dose.max())


def test_factory_files_conform(tmp_path):
    """The test factory's CT, NM (vendor layout: energy window, detector, rotation, coded orientation), PET and
    Enhanced CT files are valid instances, so the reader tests run on realistic files."""
    study = fac.Study()
    rng = np.random.default_rng(3)
    geom = fac.geometry("HFS", (4, 6, 6), (2.5, 1.0, 1.0), (0, 0, 0))
    ct = fac.write_ct_series(tmp_path / "ct", geom, rng.integers(-100, 100, geom.shape), study)
    nm = fac.write_nm(tmp_path / "nm.dcm", geom, rng.integers(0, 50, geom.shape), study)
    pet = fac.write_pet_series(tmp_path / "pet", geom, rng.uniform(0, 1e4, geom.shape), study)
    enh = fac.write_enhanced_ct(tmp_path / "enh.dcm", geom, rng.integers(-100, 100, geom.shape), study)
    for f in (ct.paths[0], nm.paths[0], pet.paths[0], enh.paths[0]):
        assert iod_errors(f) == [], f


def test_export_dicom_conservative_cli(tmp_path):
    plan = build_plan(shape=(8, 7, 6))
    path = tmp_path / "plan.h5"
    save_plan(plan, path)
    r = CliRunner().invoke(cli.app, ["export-dicom", str(path), "-o", str(tmp_path / "dose.dcm"), "--conservative",
                                     "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    ds = pydicom.dcmread(tmp_path / "dose.dcm")
    assert info["dose_summation_type"] == "PLAN" == ds.DoseSummationType
    assert info["referenced_rt_plan_uid"] == ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID
    assert "PlanOverviewSequence" not in ds


def test_seg_export_conforms(phantom_set, tmp_path):
    """The structures as DICOM SEG (embplan.imaging.seg.write_seg, issue 15) on the phantom CT's frame of reference."""
    pytest.importorskip("embplan.imaging.seg", reason="the SEG export (issue 15) is not in this build")
    from embplan.imaging.seg import write_seg

    ct = read_ct_series(phantom_set["ct"])
    phantom = make_phantom("net_liver", 7, 8.0)
    masks = {k: phantom.masks[k] for k in ("liver", "lungs") if k in phantom.masks}
    assert masks
    path = write_seg(masks, ct.grid, tmp_path / "seg.dcm", reference_ct=ct)
    errors = iod_errors(path)
    assert errors == [], errors
