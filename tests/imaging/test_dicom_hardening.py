"""Issue 12, DICOM part: no silent wrong dose from a DICOM set. Each reproducer of the issue is built here from the
phantom DICOM set (``embplan phantom-dicom``, 8 mm voxels to stay fast) or from tests/imaging/dicom_factory.py, and
must give an ImagingError naming the attribute/structure (or plan to the unmutated doses, with a note).

Independent references: the unmutated plan of the same set (a mutation that must not change anything), closed-form
polygon areas (contour fill rules), the declared sizes themselves (voxel budget)."""

from __future__ import annotations

import json
import shutil
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import RLELossless
from typer.testing import CliRunner

import embplan
from embplan import cli
from embplan.errors import EmbplanError, ImagingError
from embplan.grid import Grid
from embplan.imaging import dicom as dcm
from embplan.imaging.rtstruct import contour_overlaps, rasterize_structure

try:
    from . import dicom_factory as fac
except ImportError:  # pragma: no cover
    import dicom_factory as fac

VOXEL_MM = 8.0


# ------------------------------------------------------------------------------------------------ fixtures / helpers
@pytest.fixture(scope="module")
def base_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hardening") / "set"
    r = CliRunner().invoke(cli.app, ["phantom-dicom", "--out", str(out), "--voxel-mm", str(VOXEL_MM)])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def base_plan(base_set):
    return embplan.plan(embplan.load_case(base_set / "tare_dicom.json"))


def copy_set(base: Path, tmp_path: Path, name: str = "m") -> Path:
    d = tmp_path / name
    shutil.copytree(base, d)
    return d


def edit_ct(folder: Path, fn) -> None:
    for f in sorted((folder / "ct").iterdir()):
        ds = pydicom.dcmread(f)
        fn(ds)
        ds.save_as(f)


def edit_file(path: Path, fn) -> None:
    ds = pydicom.dcmread(path)
    fn(ds)
    ds.save_as(path)


def plan_of(folder: Path, **dicom_fields):
    raw = json.loads((folder / "tare_dicom.json").read_text())
    raw["dosimetry"]["images"]["dicom"].update(dicom_fields)
    (folder / "case.json").write_text(json.dumps(raw))
    return embplan.plan(embplan.load_case(folder / "case.json"))


def same_doses(a, b) -> None:
    da, db = a.dosimetry, b.dosimetry
    for key in ("activity_gbq", "tumor_dose_gy", "normal_liver_dose_gy", "lung_dose_gy", "perfused_dose_gy"):
        assert getattr(da, key) == pytest.approx(getattr(db, key), rel=1e-9, abs=1e-12), key


# ------------------------------------------------------------------------------------------------ required attributes
@pytest.mark.parametrize("keyword,tag", [("RescaleIntercept", "(0028,1052)"), ("RescaleSlope", "(0028,1053)")])
def test_ct_without_rescale_is_an_error_not_a_default(base_set, tmp_path, keyword, tag):
    """Issue 12: a CT without Rescale Intercept was read with intercept 0 (every HU +1024; activity 3.23 -> 5.01
    GBq). CT Image module (PS3.3 C.8.2.1): Type 1."""
    d = copy_set(base_set, tmp_path)
    first = sorted((d / "ct").iterdir())[3]
    edit_file(first, lambda ds: delattr(ds, keyword))
    with pytest.raises(ImagingError, match=rf"{first.name}: missing or empty {keyword} \({tag[1:-1]}\)"):
        dcm.read_ct_series(d / "ct")
    with pytest.raises(ImagingError, match=keyword):
        plan_of(d)


@pytest.mark.parametrize("keyword", ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"])
def test_ct_and_nm_geometry_attributes_are_required(base_set, tmp_path, keyword):
    d = copy_set(base_set, tmp_path)
    edit_file(sorted((d / "ct").iterdir())[0], lambda ds: delattr(ds, keyword))
    with pytest.raises(ImagingError, match=f"missing or empty {keyword}"):
        dcm.read_ct_series(d / "ct")

    def drop(ds):
        for holder in (ds, *getattr(ds, "DetectorInformationSequence", [])):
            if keyword in holder:
                delattr(holder, keyword)

    edit_file(d / "spect" / "nm.dcm", drop)
    with pytest.raises(ImagingError, match=f"missing or empty {keyword}"):
        dcm.read_nm(d / "spect" / "nm.dcm")


def test_impossible_rescale_slope(base_set, tmp_path):
    d = copy_set(base_set, tmp_path)
    edit_file(sorted((d / "ct").iterdir())[0], lambda ds: setattr(ds, "RescaleSlope", -1))
    with pytest.raises(ImagingError, match=r"RescaleSlope \(0028,1053\) must be positive, got -1"):
        dcm.read_ct_series(d / "ct")


def test_nm_without_rescale_reads_the_stored_counts(tmp_path):
    """The NM IOD has no Modality LUT: without Rescale Slope/Intercept the stored values are the counts."""
    study = fac.Study()
    geom = fac.geometry("HFS", (3, 4, 5), (4.0, 4.0, 4.0), (0, 0, 0))
    counts = np.arange(60).reshape(geom.shape) % 17
    truth = fac.write_nm(tmp_path / "nm.dcm", geom, counts, study)
    ds = pydicom.dcmread(tmp_path / "nm.dcm")
    assert "RescaleIntercept" not in ds and "RescaleSlope" not in ds
    vol = dcm.read_nm(tmp_path / "nm.dcm")
    assert vol.array.sum() == pytest.approx(truth.values.sum())


@pytest.fixture()
def pet(tmp_path):
    study = fac.Study()
    geom = fac.geometry("HFS", (3, 4, 4), (3.0, 3.0, 3.0), (0, 0, 0))
    return fac.write_pet_series(tmp_path / "pt", geom, np.random.default_rng(3).uniform(0, 1e5, geom.shape), study)


@pytest.mark.parametrize("edit,match", [
    (lambda ds: delattr(ds, "RescaleIntercept"), r"missing or empty RescaleIntercept \(0028,1052\)"),
    (lambda ds: delattr(ds, "RescaleSlope"), r"missing or empty RescaleSlope \(0028,1053\)"),
    (lambda ds: setattr(ds, "RescaleIntercept", 5), r"RescaleIntercept \(0028,1052\) is 5; the PET Image module requires 0"),
    (lambda ds: delattr(ds, "CorrectedImage"), r"missing or empty CorrectedImage \(0028,0051\)"),
    (lambda ds: setattr(ds, "CorrectedImage", ["DECY", "SCAT"]), r"CorrectedImage \(0028,0051\) is DECY/SCAT without ATTN"),
    (lambda ds: setattr(ds, "CorrectedImage", ["ATTN"]), r"DecayCorrection \(0054,1102\) is START but CorrectedImage"),
    (lambda ds: delattr(ds, "Units"), r"Units \(0054,1001\) is None"),
])
def test_pet_units_and_corrections_are_required(pet, edit, match):
    for p in pet.paths:  # every slice: the series must agree with itself
        edit_file(p, edit)
    with pytest.raises(ImagingError, match=match):
        dcm.read_pet_series(pet.paths)


def test_pet_slices_must_agree_on_their_corrections(pet):
    edit_file(pet.paths[1], lambda ds: setattr(ds, "CorrectedImage", ["DECY", "ATTN"]))
    with pytest.raises(ImagingError, match=r"CorrectedImage \(0028,0051\) differs"):
        dcm.read_pet_series(pet.paths)


# ------------------------------------------------------------------------------------------------ voxel budget
def test_declared_huge_rle_nm_is_refused_before_decoding(tmp_path):
    """Issue 12: an 8 MB RLE NM declaring 256 x 1024 x 1024 peaked at 7.4 GB, then MemoryError. Here a small RLE NM
    declares that size: ImagingError naming it, and the read allocates next to nothing."""
    study = fac.Study()
    geom = fac.geometry("HFS", (4, 16, 16), (4.0, 4.0, 4.0), (0, 0, 0))
    fac.write_nm(tmp_path / "nm.dcm", geom, np.ones(geom.shape), study)
    ds = pydicom.dcmread(tmp_path / "nm.dcm")
    ds.compress(RLELossless)
    ds.NumberOfFrames, ds.NumberOfSlices, ds.Rows, ds.Columns = 256, 256, 1024, 1024
    ds.save_as(tmp_path / "bomb.dcm")
    tracemalloc.start()
    try:
        with pytest.raises(ImagingError, match=r"declared image size 256 x 1024 x 1024 = 268,435,456 voxels exceeds "
                                               r"the voxel budget of 150,000,000"):
            dcm.read_nm(tmp_path / "bomb.dcm")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6


def test_voxel_budget_is_configurable(tmp_path, monkeypatch):
    study = fac.Study()
    geom = fac.geometry("HFS", (4, 8, 8), (4.0, 4.0, 4.0), (0, 0, 0))
    fac.write_nm(tmp_path / "nm.dcm", geom, np.ones(geom.shape), study)
    ct = fac.write_ct_series(tmp_path / "ct", geom, np.zeros(geom.shape), study)
    assert dcm.read_nm(tmp_path / "nm.dcm", max_voxels=256).grid.shape == (4, 8, 8)
    with pytest.raises(ImagingError, match=r"4 x 8 x 8 = 256 voxels exceeds the voxel budget of 255"):
        dcm.read_nm(tmp_path / "nm.dcm", max_voxels=255)
    with pytest.raises(ImagingError, match=r"CT series of 4 files.*4 x 8 x 8 = 256 voxels exceeds the voxel budget of 100"):
        dcm.read_ct_series(ct.paths, max_voxels=100)
    monkeypatch.setenv(dcm.MAX_VOXELS_ENV, "100")
    assert dcm.voxel_budget() == 100
    with pytest.raises(ImagingError, match="voxel budget of 100"):
        dcm.read_nm(tmp_path / "nm.dcm")
    monkeypatch.setenv(dcm.MAX_VOXELS_ENV, "lots")
    with pytest.raises(ImagingError, match=f"{dcm.MAX_VOXELS_ENV}='lots': not an integer"):
        dcm.read_nm(tmp_path / "nm.dcm")
    monkeypatch.delenv(dcm.MAX_VOXELS_ENV)
    assert dcm.voxel_budget() == dcm.DEFAULT_MAX_VOXELS
    with pytest.raises(ImagingError, match="max_voxels: must be a positive integer"):
        dcm.voxel_budget(0)


# ------------------------------------------------------------------------------------------------ geometry and anatomy
@pytest.mark.parametrize("shift", [(0, 0, 20), (0, 0, -20), (20, 0, 0), (0, -20, 0), (0, 0, 12)])
def test_ct_shifted_against_spect_and_structures_is_caught(base_set, base_plan, tmp_path, shift):
    """Issue 12: a CT shifted 20 mm changed the lung dose 14.6 -> 8.5 Gy without a flag."""
    d = copy_set(base_set, tmp_path)
    edit_ct(d, lambda ds: setattr(ds, "ImagePositionPatient",
                                  [float(a) + b for a, b in zip(ds.ImagePositionPatient, shift, strict=True)]))
    with pytest.raises(ImagingError, match=r"structures\.lungs: (the lung ROIs do not line up with the CT's lungs|"
                                           r"only \d+\.\d% of the lungs ROIs lie inside the CT)") as e:
        plan_of(d)
    msg = str(e.value)
    if "line up" not in msg:  # moved down 20 mm, the CT no longer covers the lung apices: caught first
        assert shift == (0, 0, -20)
        return
    # the message gives the shift that moves the ROIs onto the CT's lungs: the one applied, within a voxel
    got = [float(v) for v in msg.split("when moved by (")[1].split(")")[0].split(",")]
    assert np.allclose(got, shift, atol=VOXEL_MM)


def test_alignment_tolerance_is_an_overridable_threshold(base_set, tmp_path):
    d = copy_set(base_set, tmp_path)
    edit_ct(d, lambda ds: setattr(ds, "ImagePositionPatient",
                                  [float(a) + b for a, b in zip(ds.ImagePositionPatient, (0, 0, 20), strict=True)]))
    raw = json.loads((d / "tare_dicom.json").read_text())
    raw["thresholds"] = {"lung_alignment_tolerance_mm": 50.0}
    (d / "tare_dicom.json").write_text(json.dumps(raw))
    plan = embplan.plan(embplan.load_case(d / "tare_dicom.json"))
    assert plan.voxel.attributes["images"]["checks"]["lung_alignment"]["best_shift_mm"] > 10


@pytest.mark.parametrize("edit,match", [
    # the whole CT placed 5 m away: "100 % outside the CT: taken as air" used to plan 0.004 GBq
    (lambda ds: setattr(ds, "ImagePositionPatient", [float(ds.ImagePositionPatient[0]), float(ds.ImagePositionPatient[1]),
                                                       float(ds.ImagePositionPatient[2]) + 5000.0]),
     r"structures\.liver: only 0\.0% of the liver ROIs lie inside the CT's field of view"),
    # orientation flipped (rows run along -x): the CT now lies beside the SPECT
    (lambda ds: setattr(ds, "ImageOrientationPatient", [-1, 0, 0, 0, 1, 0]),
     r"structures\.liver: only .*% of the liver ROIs lie inside the CT's field of view"),
])
def test_ct_outside_the_spect_does_not_plan(base_set, tmp_path, edit, match):
    d = copy_set(base_set, tmp_path)
    edit_ct(d, edit)
    with pytest.raises(ImagingError, match=match):
        plan_of(d)


def test_wrong_rescale_intercept_is_implausible_anatomy(base_set, tmp_path):
    """Intercept 0 where the data need -1024 (present but wrong): every CT number +1024."""
    d = copy_set(base_set, tmp_path)
    edit_ct(d, lambda ds: setattr(ds, "RescaleIntercept", 0))
    with pytest.raises(ImagingError, match=r"structures\.liver: mean CT number of the liver 10\d\d HU is outside the "
                                           r"plausible range \[-40, 300\] HU"):
        plan_of(d)


def test_structures_in_the_wrong_role(base_set, tmp_path):
    d = copy_set(base_set, tmp_path)
    raw = json.loads((d / "tare_dicom.json").read_text())
    s = raw["dosimetry"]["images"]["dicom"]["structures"]
    s["liver"], s["lungs"] = s["lungs"], s["liver"]  # liver and lungs swapped
    (d / "tare_dicom.json").write_text(json.dumps(raw))
    with pytest.raises(ImagingError, match=r"structures\.liver: mean CT number of the liver -\d+ HU is outside the "
                                           r"plausible range \[-40, 300\] HU"):
        embplan.plan(embplan.load_case(d / "tare_dicom.json"))


def test_structures_outside_the_ct_grid_are_caught_on_the_ct_grid(base_set, tmp_path):
    """On the CT grid the rasteriser would silently cut what lies outside: the contour points tell."""
    d = copy_set(base_set, tmp_path)
    files = sorted((d / "ct").iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    for f in files[: len(files) // 2]:  # drop the lower half of the CT (the liver)
        f.unlink()
    with pytest.raises(ImagingError, match=r"structures\.liver: only .* of the liver contour points lie inside the CT"):
        plan_of(d, grid="ct")


# ------------------------------------------------------------------------------------------------ identity
def test_another_patients_ct_is_refused(base_set, tmp_path):
    d = copy_set(base_set, tmp_path)
    edit_ct(d, lambda ds: setattr(ds, "PatientID", "OTHER-123"))
    with pytest.raises(ImagingError, match=r"patient\.id: the images are not of patient 'phantom': CT .* has PatientID "
                                           r"\(0010,0020\) 'OTHER-123'"):
        plan_of(d)


@pytest.mark.parametrize("which", ["spect", "rtstruct"])
def test_other_images_of_another_patient(base_set, tmp_path, which):
    d = copy_set(base_set, tmp_path)
    path = d / "spect" / "nm.dcm" if which == "spect" else d / "rtstruct.dcm"
    edit_file(path, lambda ds: setattr(ds, "PatientID", "OTHER-123"))
    label = "NM SPECT" if which == "spect" else "RTSTRUCT"
    with pytest.raises(ImagingError, match=rf"{label} .* has PatientID \(0010,0020\) 'OTHER-123'"):
        plan_of(d)


def test_explicit_dicom_patient_id(base_set, base_plan, tmp_path):
    """A pseudonymised case id: the case names the images' Patient ID explicitly and plans the same doses."""
    d = copy_set(base_set, tmp_path)
    for f in [*sorted((d / "ct").iterdir()), d / "spect" / "nm.dcm", d / "rtstruct.dcm"]:
        edit_file(f, lambda ds: setattr(ds, "PatientID", "HOSP-0042"))
    with pytest.raises(ImagingError, match="dicom_patient_id"):
        plan_of(d)
    same_doses(plan_of(d, dicom_patient_id="HOSP-0042"), base_plan)
    with pytest.raises(ImagingError, match=r"dosimetry\.images\.dicom\.dicom_patient_id: the images are not of "
                                           r"patient 'HOSP-9'"):
        plan_of(d, dicom_patient_id="HOSP-9")


def test_rtstruct_roi_without_frame_of_reference(base_set, tmp_path):
    d = copy_set(base_set, tmp_path)

    def edit(ds):
        for item in ds.StructureSetROISequence:
            del item.ReferencedFrameOfReferenceUID
        ref = ds.ReferencedFrameOfReferenceSequence[0]
        extra = pydicom.Dataset()
        extra.FrameOfReferenceUID = "1.2.3.4"
        ds.ReferencedFrameOfReferenceSequence.append(extra)
        assert ref.FrameOfReferenceUID

    edit_file(d / "rtstruct.dcm", edit)
    with pytest.raises(ImagingError, match=r"missing ReferencedFrameOfReferenceUID \(3006,0024\)"):
        plan_of(d)


def test_phantom_dicom_writes_the_case_patient_id(base_set):
    raw = json.loads((base_set / "tare_dicom.json").read_text())
    pid = raw["patient"]["id"]
    assert dcm.read_patient_id(base_set / "rtstruct.dcm") == pid
    assert dcm.read_patient_id(base_set / "spect" / "nm.dcm") == pid
    assert all(dcm.read_patient_id(f) == pid for f in (base_set / "ct").iterdir())


# ------------------------------------------------------------------------------------------------ RTSTRUCT contours
def _roi(ds, name):
    number = next(i.ROINumber for i in ds.StructureSetROISequence if i.ROIName == name)
    return next(i for i in ds.ROIContourSequence if i.ReferencedROINumber == number)


def _extra_contour(geom: str, pts) -> pydicom.Dataset:
    c = pydicom.Dataset()
    c.ContourGeometricType = geom
    c.NumberOfContourPoints = len(pts)
    c.ContourData = [float(v) for p in pts for v in p]
    return c


def test_skipped_contours_give_a_note_and_the_same_doses(base_set, base_plan, tmp_path):
    d = copy_set(base_set, tmp_path)

    def edit(ds):
        roi = _roi(ds, "Liver")
        z = float(roi.ContourSequence[0].ContourData[2])
        roi.ContourSequence.append(_extra_contour("POINT", [(0, 0, z)]))
        roi.ContourSequence.append(_extra_contour("OPEN_PLANAR", [(0, 0, z), (5, 0, z), (5, 5, z)]))
        roi.ContourSequence.append(_extra_contour("CLOSED_PLANAR", [(0, 0, z), (5, 0, z)]))

    edit_file(d / "rtstruct.dcm", edit)
    contours, notes = dcm.read_rtstruct_with_notes(d / "rtstruct.dcm")
    assert notes == {"Liver": [f"1 OPEN_PLANAR contour(s), 1 POINT contour(s), 1 closed contour(s) with fewer than 3 "
                               f"points of {len(_roi(pydicom.dcmread(d / 'rtstruct.dcm'), 'Liver').ContourSequence)} "
                               "skipped (only closed planar contours with 3 or more points enclose a volume)"]}
    plan = plan_of(d)
    same_doses(plan, base_plan)
    assert any(n.startswith("RTSTRUCT ROI 'Liver': 1 OPEN_PLANAR contour(s), 1 POINT contour(s)")
               for n in plan.dosimetry.notes)


def test_required_structure_that_vanishes_is_an_error(base_set, tmp_path):
    d = copy_set(base_set, tmp_path)

    def edit(ds):
        for c in _roi(ds, "Lungs").ContourSequence:
            c.ContourGeometricType = "OPEN_PLANAR"

    edit_file(d / "rtstruct.dcm", edit)
    with pytest.raises(ImagingError, match=r"rtstruct: .* a structure the case needs has no usable contour \(ROI "
                                           r"'Lungs': \d+ OPEN_PLANAR contour\(s\) of \d+ skipped .*; no contour left\)"):
        plan_of(d)


def _square(x0, y0, side, z=0.0):
    return np.array([(x0, y0, z), (x0 + side, y0, z), (x0 + side, y0 + side, z), (x0, y0 + side, z)], float)


GRID = Grid(shape=(1, 100, 100), spacing_mm=(2.0, 0.5, 0.5), origin_mm=(-10.0, -10.0, 0.0))


def test_nested_contours_are_holes_crossing_contours_are_joined():
    voxel_mm2 = 0.25
    # nested: 20 x 20 with a 10 x 10 hole = 300 mm2; an island 4 x 4 inside the hole is solid again = 316 mm2
    nested = [_square(0, 0, 20), _square(5, 5, 10), _square(8, 8, 4)]
    ov = contour_overlaps(nested)
    assert (ov.holes, ov.islands_in_holes, ov.crossings) == (1, 1, ())
    area = rasterize_structure(nested, GRID).sum() * voxel_mm2
    assert area == pytest.approx(316.0, rel=1e-3)
    # crossing: two 10 x 10 squares overlapping on 5 x 5 -> union 175 mm2 (even-odd XOR would give 150)
    crossing = [_square(0, 0, 10), _square(5, 5, 10)]
    ov = contour_overlaps(crossing)
    assert ov.crossings == (0.0,) and ov.holes == 0
    assert rasterize_structure(crossing, GRID).sum() * voxel_mm2 == pytest.approx(175.0, rel=1e-3)
    # a plus sign: no vertex of either bar lies inside the other, the outlines still cross
    plus = [np.array([(0, 8, 0), (20, 8, 0), (20, 12, 0), (0, 12, 0)], float),
            np.array([(8, 0, 0), (12, 0, 0), (12, 20, 0), (8, 20, 0)], float)]
    assert contour_overlaps(plus).crossings == (0.0,)
    assert rasterize_structure(plus, GRID).sum() * voxel_mm2 == pytest.approx(80 + 80 - 16, rel=1e-3)
    # disjoint islands: nothing to report, areas add
    islands = [_square(0, 0, 5), _square(10, 10, 5)]
    assert contour_overlaps(islands) == type(ov)()
    assert rasterize_structure(islands, GRID).sum() * voxel_mm2 == pytest.approx(50.0, rel=1e-3)


def test_crossing_contours_give_a_note(base_set, tmp_path):
    d = copy_set(base_set, tmp_path)

    def edit(ds):
        roi = _roi(ds, "Tumor_1")
        first = np.asarray(roi.ContourSequence[0].ContourData, float).reshape(-1, 3)
        roi.ContourSequence.append(_extra_contour("CLOSED_PLANAR", first + np.array([3.0, 3.0, 0.0])))

    edit_file(d / "rtstruct.dcm", edit)
    plan = plan_of(d)
    assert any(n.startswith("RTSTRUCT ROI 'Tumor_1': crossing contours on 1 plane(s)") and "joined (union)" in n
               for n in plan.dosimetry.notes)


def test_only_embplan_errors_escape_the_planner_for_broken_sets(base_set, tmp_path):
    """Truncated pixel data of the SPECT and of a CT slice: a clear error, never a raw exception."""
    d = copy_set(base_set, tmp_path)
    nm = d / "spect" / "nm.dcm"
    nm.write_bytes(nm.read_bytes()[:-1000])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(EmbplanError):
            plan_of(d)


# ------------------------------------------------------------------------------------------------ SPECT against the CT
def _blur_spect(folder: Path, sigma_voxels: float) -> None:
    from scipy.ndimage import gaussian_filter

    def edit(ds):
        a = ds.pixel_array.astype(float)
        b = gaussian_filter(a, sigma_voxels)
        b *= a.sum() / b.sum()
        ds.PixelData = np.clip(np.rint(b), 0, 65535).astype("<u2").tobytes()

    edit_file(folder / "spect" / "nm.dcm", edit)


@pytest.mark.parametrize("shift", [(0, 0, 24), (-24, 0, 0), (0, 24, 0)])
def test_spect_shifted_against_ct_and_structures_is_caught(base_set, tmp_path, shift):
    """Found by the set fuzz: a SPECT shifted 21 mm planned silently (tumour dose 339 -> 215 Gy). Blurred like a
    real SPECT (sigma 1 voxel = 8 mm) so the check is not helped by a sharp phantom."""
    d = copy_set(base_set, tmp_path)
    _blur_spect(d, 1.0)

    def move(ds):
        det = ds.DetectorInformationSequence[0]
        det.ImagePositionPatient = [float(a) + b for a, b in zip(det.ImagePositionPatient, shift, strict=True)]

    edit_file(d / "spect" / "nm.dcm", move)
    with pytest.raises(ImagingError, match=r"dicom\.spect: the SPECT does not line up with the liver and lung ROIs"):
        plan_of(d)


def test_blurred_aligned_spect_still_plans(base_set, tmp_path):
    """The guard against false alarms: a SPECT blurred (sigma 8 mm) but in place gains < 2 % from any shift."""
    d = copy_set(base_set, tmp_path)
    _blur_spect(d, 1.0)
    plan = plan_of(d)
    align = plan.voxel.attributes["images"]["checks"]["activity_alignment"]
    assert align["best_fraction"] - align["counts_in_liver_and_lungs_fraction"] < 0.02


def test_one_ct_slice_with_the_wrong_intercept(base_set, tmp_path):
    """Found by the set fuzz (seed 2026, case 164): one slice with Rescale Intercept 0 instead of -1024 planned
    silently (lung dose 14.3 -> 11.8 Gy)."""
    d = copy_set(base_set, tmp_path)
    f = sorted((d / "ct").iterdir())[25]
    edit_file(f, lambda ds: setattr(ds, "RescaleIntercept", 0))
    with pytest.raises(ImagingError, match=rf"every CT number shifts by [+-]10\d\d HU or more from slice .*{f.name}.*"
                                           r"Rescale Slope/Intercept differ: 1/(-1024 and 1/0|0 and 1/-1024)"):
        dcm.read_ct_series(d / "ct")


def test_one_slice_of_another_patient_in_the_ct_series(base_set, tmp_path):
    d = copy_set(base_set, tmp_path)
    f = sorted((d / "ct").iterdir())[10]
    edit_file(f, lambda ds: setattr(ds, "PatientID", "OTHER-123"))
    with pytest.raises(ImagingError, match=rf"{f.name} has PatientID \(0010,0020\) 'OTHER-123', .* has 'phantom'"):
        dcm.read_ct_series(d / "ct")


def test_spect_without_attenuation_correction_is_noted(base_set, base_plan, tmp_path):
    assert not any("does not list ATTN" in n for n in base_plan.dosimetry.notes)
    d = copy_set(base_set, tmp_path)
    edit_file(d / "spect" / "nm.dcm", lambda ds: delattr(ds, "CorrectedImage"))
    plan = plan_of(d)
    same_doses(plan, base_plan)
    assert any(n.startswith("SPECT: Corrected Image (0028,0051) absent does not list ATTN") for n in plan.dosimetry.notes)
