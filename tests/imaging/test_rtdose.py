"""RT Dose export: round trips (our reader, SimpleITK), patient/frame of reference from the CT, IOD attributes,
atomic writing, and rejection of implausible doses."""

from __future__ import annotations

import json
import os
from importlib import resources

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from embplan.errors import ImagingError
from embplan.grid import Grid
from embplan.imaging.dicom import read_ct_series, read_header, read_rt_dose
from embplan.imaging.rtdose import rt_dose_reference, write_rt_dose

try:
    from . import dicom_factory as fac
except ImportError:  # pragma: no cover
    import dicom_factory as fac


def rot(axis: str, deg: float) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]), "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def grid_points(grid) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), axis=-1).reshape(-1, 3)
    return grid.index_to_patient_mm(idx).reshape(*grid.shape, 3)


GRIDS = {
    "axial anisotropic": Grid(shape=(7, 9, 11), spacing_mm=(3.0, 2.5, 2.0), origin_mm=(-101.25, 33.5, -620.0)),
    "prone": Grid(shape=(5, 8, 6), spacing_mm=(4.42, 4.42, 4.42), origin_mm=(50.0, 40.0, -20.0),
                  direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1)),
    "feet first, k against the normal": Grid(shape=(6, 7, 8), spacing_mm=(2.5, 1.5, 1.5), origin_mm=(10.0, -5.0, 300.0),
                                             direction=(1, 0, 0, 0, 1, 0, 0, 0, -1)),
    "oblique": Grid(shape=(4, 6, 5), spacing_mm=(2.0, 3.0, 1.0), origin_mm=(1.0, 2.0, 3.0),
                    direction=tuple((rot("x", 23.0) @ rot("z", -41.0)).reshape(-1))),
}


def dose_on(grid: Grid, seed: int = 3) -> np.ndarray:
    d = np.random.default_rng(seed).gamma(2.0, 40.0, grid.shape)
    d[0, 0, 0] = 0.0
    return d


def compare_in_patient_space(read_grid: Grid, read_dose: np.ndarray, grid: Grid, dose: np.ndarray) -> float:
    """Largest |read - written| / max(written) over the voxels, matched by patient position."""
    idx = grid.patient_mm_to_index(grid_points(read_grid).reshape(-1, 3))
    r = np.rint(idx)
    assert np.abs(idx - r).max() < 1e-5
    expected = dose[tuple(r.astype(int).T)].reshape(read_grid.shape)
    big = expected > 0.01 * expected.max()
    assert np.all(np.abs(read_dose[big] - expected[big]) <= 1e-5 * expected[big])
    return float(np.abs(read_dose - expected).max() / dose.max())


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ct")
    study = fac.Study(patient_id="TARE-042", patient_name="Doe^Jane")
    geom = fac.geometry("HFS", (4, 6, 6), (2.5, 1.0, 1.0), (0, 0, 0))
    fac.write_ct_series(folder / "ct", geom, np.zeros(geom.shape), study)
    return folder / "ct", study


@pytest.mark.parametrize("name", list(GRIDS))
def test_round_trip_through_our_reader(tmp_path, ct, name):
    grid = GRIDS[name]
    dose = dose_on(grid)
    path = write_rt_dose(dose, grid, tmp_path / "dose.dcm", reference_ct=ct[0])
    vol = read_rt_dose(path)
    assert vol.units == "Gy" and vol.modality == "RTDOSE"
    assert vol.grid.spacing_mm == pytest.approx(grid.spacing_mm, rel=1e-9)
    err = compare_in_patient_space(vol.grid, vol.array, grid, dose)
    assert err <= 1e-5
    if np.dot(np.cross(*np.asarray(grid.direction).reshape(3, 3).T[:2]), np.asarray(grid.direction).reshape(3, 3)[:, 2]) > 0:
        np.testing.assert_allclose(vol.grid.affine, grid.affine, atol=1e-9)  # same voxel order
        np.testing.assert_allclose(vol.array, dose, rtol=1e-9, atol=1e-9 * dose.max())


@pytest.mark.parametrize("name", list(GRIDS))
def test_round_trip_through_simpleitk(tmp_path, ct, name):
    grid = GRIDS[name]
    dose = dose_on(grid, seed=11)
    path = write_rt_dose(dose, grid, tmp_path / "dose.dcm", reference_ct=ct[0])
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    img = reader.Execute()
    scaling = float(reader.GetMetaData("3004|000e"))  # ITK 5.4 reads RT Dose raw, without Dose Grid Scaling
    arr = sitk.GetArrayFromImage(img).astype(np.float64) * scaling
    nx, ny, nz = img.GetSize()
    sitk_grid = Grid(shape=(nz, ny, nx), spacing_mm=img.GetSpacing()[::-1], origin_mm=img.GetOrigin(),
                     direction=img.GetDirection())
    assert compare_in_patient_space(sitk_grid, arr, grid, dose) <= 1e-5


def test_quantisation_error_is_tiny(tmp_path):
    grid = GRIDS["axial anisotropic"]
    dose = dose_on(grid)
    vol = read_rt_dose(write_rt_dose(dose, grid, tmp_path / "d.dcm"))
    rel = float(np.abs(vol.array - dose).max() / dose.max())
    assert rel < 1e-9  # 32-bit pixels: half a step of max / (2^32 - 1)


def test_patient_study_and_frame_from_the_ct(tmp_path, ct):
    folder, study = ct
    header = read_header(sorted(folder.iterdir())[0])
    ct_vol = read_ct_series(folder)
    grid = GRIDS["axial anisotropic"]
    for ref in (folder, header, ct_vol):
        ds = pydicom.dcmread(write_rt_dose(dose_on(grid), grid, tmp_path / "d.dcm", reference_ct=ref))
        assert ds.PatientID == "TARE-042" and str(ds.PatientName) == "Doe^Jane"
        assert ds.StudyInstanceUID == study.study_uid
        assert ds.FrameOfReferenceUID == study.for_uid
        assert ds.SeriesInstanceUID != ct_vol.series_instance_uid
        assert ds.DoseUnits == "GY" and ds.DoseType == "PHYSICAL" and ds.DoseSummationType == "PLAN_OVERVIEW"
        assert ds.BitsAllocated == 32 and ds.PixelRepresentation == 0
        assert "ReferencedRTPlanSequence" not in ds
        refs = {r.ReferencedSOPInstanceUID for r in ds.PlanOverviewSequence[0].ReferencedImageSequence}
        assert refs <= set(ct_vol.meta["sop_instance_uids"]) and refs
    assert set(refs) == set(ct_vol.meta["sop_instance_uids"])


def test_reference_stored_as_json_and_used_later(tmp_path, ct):
    folder, study = ct
    ref = json.loads(json.dumps(rt_dose_reference(read_ct_series(folder))))
    assert ref["frame_of_reference_uid"] == study.for_uid and ref["patient_id"] == "TARE-042"
    grid = GRIDS["prone"]
    ds = pydicom.dcmread(write_rt_dose(dose_on(grid), grid, tmp_path / "d.dcm", reference_ct=ref))
    assert ds.FrameOfReferenceUID == study.for_uid and ds.StudyInstanceUID == study.study_uid
    assert len(ds.PlanOverviewSequence[0].ReferencedImageSequence) == len(ref["sop_instance_uids"]) == 4


def test_without_reference_ct_a_new_frame_is_made(tmp_path):
    grid = GRIDS["prone"]
    ds = pydicom.dcmread(write_rt_dose(dose_on(grid), grid, tmp_path / "d.dcm"))
    assert ds.FrameOfReferenceUID and ds.PatientID == ""


def test_a_path_that_is_neither_a_name_nor_a_file_object_is_an_imaging_error(tmp_path):
    # found by mypy (issue 17): Path(42) raised a bare TypeError (a traceback), not an EmbplanError naming the input
    grid = GRIDS["prone"]
    with pytest.raises(ImagingError, match="path: a file name or a writable binary file object, got int"):
        write_rt_dose(dose_on(grid), grid, 42)
    assert not list(tmp_path.iterdir())


def _standard_tables():
    try:
        base = resources.files("highdicom") / "_standard"
        modules = json.loads((base / "module_attribute_map.json").read_text())
        iods = json.loads((base / "iod_module_map.json").read_text())
    except (FileNotFoundError, ModuleNotFoundError, OSError):  # pragma: no cover - highdicom layout changed
        pytest.skip("highdicom does not ship the DICOM standard tables in this version")
    return modules, iods


def test_required_attributes_of_the_rt_dose_iod(tmp_path, ct):
    """Every type 1 attribute of the modules an RT Dose grid needs is present and non-empty, every type 2 present
    (tables from the DICOM standard as shipped with highdicom)."""
    modules, iods = _standard_tables()
    grid = GRIDS["oblique"]
    ds = pydicom.dcmread(write_rt_dose(dose_on(grid), grid, tmp_path / "d.dcm", reference_ct=ct[0]))
    used = [m["key"] for m in iods["rt-dose"] if m["usage"] == "M"]
    used += ["general-image", "image-plane", "image-pixel", "multi-frame"]  # conditional: grid-based, multi-frame
    assert "rt-dose" in used and "sop-common" in used
    checked = 0
    for key in used:
        for attr in modules[key]:
            if attr["path"]:
                continue
            kw, typ = attr["keyword"], attr["type"]
            if typ == "1":
                assert kw in ds and ds[kw].value not in (None, "", []), f"{key}: type 1 {kw} missing or empty"
                checked += 1
            elif typ == "2":
                assert kw in ds, f"{key}: type 2 {kw} missing"
                checked += 1
    assert checked > 30
    item = ds.PlanOverviewSequence[0]
    for attr in modules["rt-dose"]:
        if attr["path"] == ["PlanOverviewSequence"] and attr["type"] in ("1", "2"):
            assert attr["keyword"] in item, f"PlanOverviewSequence item lacks type {attr['type']} {attr['keyword']}"


def test_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    grid = GRIDS["prone"]
    path = write_rt_dose(dose_on(grid), grid, tmp_path / "dose.dcm")
    before = path.read_bytes()
    bad = dose_on(grid)
    bad[1, 1, 1] = np.nan
    with pytest.raises(ImagingError, match="non-finite"):
        write_rt_dose(bad, grid, path)
    assert path.read_bytes() == before

    def broken(self, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", broken)
    with pytest.raises(ImagingError, match="disk full"):
        write_rt_dose(dose_on(grid, 5), grid, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["dose.dcm"]  # no temporary file left behind


def test_rejects_implausible_dose_and_bad_arguments(tmp_path):
    grid = GRIDS["prone"]
    d = dose_on(grid)
    with pytest.raises(ImagingError, match="negative dose"):
        write_rt_dose(-d, grid, tmp_path / "a.dcm")
    with pytest.raises(ImagingError, match="implausible dose 6000 Gy > 5000 Gy"):
        write_rt_dose(np.full(grid.shape, 6000.0), grid, tmp_path / "a.dcm")
    with pytest.raises(ImagingError, match="does not match the grid"):
        write_rt_dose(d[:-1], grid, tmp_path / "a.dcm")
    with pytest.raises(ImagingError, match="referenced_rt_plan_uid"):
        write_rt_dose(d, grid, tmp_path / "a.dcm", dose_summation_type="PLAN")
    with pytest.raises(ImagingError, match="dose_summation_type"):
        write_rt_dose(d, grid, tmp_path / "a.dcm", dose_summation_type="BEAM")
    with pytest.raises(ImagingError, match="Frame of Reference"):
        write_rt_dose(d, grid, tmp_path / "a.dcm", reference_ct={"patient_id": "x"})
    with pytest.raises(ImagingError, match="does not exist"):
        write_rt_dose(d, grid, tmp_path / "missing" / "a.dcm")
    assert not (tmp_path / "a.dcm").exists()


def test_reader_rejects_out_of_range_dose(tmp_path):
    grid = GRIDS["prone"]
    path = write_rt_dose(dose_on(grid), grid, tmp_path / "d.dcm")
    ds = pydicom.dcmread(path)
    ds.DoseGridScaling = "1e-3"  # max pixel 2^32 - 1 -> 4.3 MGy
    ds.save_as(tmp_path / "big.dcm")
    with pytest.raises(ImagingError, match="implausible dose"):
        read_rt_dose(tmp_path / "big.dcm")
    ds.DoseGridScaling = "-1e-8"
    ds.save_as(tmp_path / "neg.dcm")
    with pytest.raises(ImagingError, match="DoseGridScaling"):
        read_rt_dose(tmp_path / "neg.dcm")


def test_zero_dose_and_plan_reference(tmp_path):
    grid = GRIDS["axial anisotropic"]
    vol = read_rt_dose(write_rt_dose(np.zeros(grid.shape), grid, tmp_path / "z.dcm"))
    assert vol.array.max() == 0.0
    ds = pydicom.dcmread(write_rt_dose(dose_on(grid), grid, tmp_path / "p.dcm", dose_summation_type="PLAN",
                                       referenced_rt_plan_uid="1.2.3.4"))
    assert ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == "1.2.3.4" and "PlanOverviewSequence" not in ds
