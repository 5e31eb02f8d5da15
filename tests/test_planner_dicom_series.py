"""Issue 17 end to end: a CT folder with a scout and a second reconstruction beside the planning series, and the
case field that selects a series."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

import embplan
from embplan import cli
from embplan.errors import ImagingError

runner = CliRunner()


@pytest.fixture(scope="module")
def dicom_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("series") / "set"
    r = runner.invoke(cli.app, ["phantom-dicom", "--out", str(out), "--voxel-mm", "8", "--json"])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def reference_plan(dicom_set):
    return embplan.plan(embplan.load_case(dicom_set / "tare_dicom.json"))


def _copy_set(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _add_series(ct: Path, *, description: str, image_type: list[str], keep: int | None = None) -> str:
    """A copy of the CT series in the same folder as another series (new Series and SOP Instance UIDs)."""
    uid = generate_uid()
    files = sorted(ct.glob("CT_*.dcm"))
    for f in files[:keep] if keep else files:
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesDescription = description
        ds.ImageType = image_type
        ds.save_as(ct / f"X{uid[-6:]}_{f.name}", enforce_file_format=True)
    return uid


def test_scout_is_set_aside_and_noted(dicom_set, reference_plan, tmp_path):
    d = _copy_set(dicom_set, tmp_path / "set")
    _add_series(d / "ct", description="Topogram", image_type=["ORIGINAL", "PRIMARY", "LOCALIZER"], keep=1)
    plan = embplan.plan(embplan.load_case(d / "tare_dicom.json"))
    assert plan.dosimetry.activity_gbq == pytest.approx(reference_plan.dosimetry.activity_gbq, rel=1e-12)
    notes = plan.voxel.attributes["images"]["notes"]
    assert any("a localizer (scout)" in n and "Topogram" in n for n in notes), notes


def test_second_reconstruction_needs_the_case_field(dicom_set, reference_plan, tmp_path):
    d = _copy_set(dicom_set, tmp_path / "set")
    original = pydicom.dcmread(sorted((d / "ct").glob("CT_*.dcm"))[0]).SeriesInstanceUID
    other = _add_series(d / "ct", description="Abdomen sharp kernel", image_type=["ORIGINAL", "PRIMARY", "AXIAL"])
    with pytest.raises(ImagingError) as err:
        embplan.plan(embplan.load_case(d / "tare_dicom.json"))
    msg = str(err.value)
    assert "dosimetry.images.dicom.ct_series_instance_uid" in msg and original in msg and other in msg
    assert "Abdomen sharp kernel" in msg
    raw = json.loads((d / "tare_dicom.json").read_text())
    raw["dosimetry"]["images"]["dicom"]["ct_series_instance_uid"] = original
    (d / "chosen.json").write_text(json.dumps(raw))
    plan = embplan.plan(embplan.load_case(d / "chosen.json"))
    assert plan.dosimetry.activity_gbq == pytest.approx(reference_plan.dosimetry.activity_gbq, rel=1e-12)
    assert plan.voxel.attributes["images"]["series_instance_uids"]["ct"] == original
    # the CLI says the same in one line, exit 1
    r = runner.invoke(cli.app, ["plan", str(d / "tare_dicom.json"), "-o", str(d / "p.h5")])
    assert r.exit_code == 1 and "ct_series_instance_uid" in r.stderr and not (d / "p.h5").exists()
