"""The phantom written as DICOM (embplan.imaging.phantom_dicom): the files parse with our readers and with SimpleITK,
the CT numbers and counts come back, the RTSTRUCT ROIs rasterise back onto the phantom masks, feet first and a
binned SPECT, holes and islands, deterministic UIDs, and the writer's errors."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from embplan.errors import ImagingError
from embplan.grid import Grid
from embplan.imaging.dicom import read_ct_series, read_nm, read_rtstruct
from embplan.imaging.phantom import make_phantom
from embplan.imaging.phantom_dicom import (
    _integer_counts,
    mask_contours,
    roi_name,
    structure_roles,
    write_phantom_dicom,
)
from embplan.imaging.rtstruct import rasterize_structure

TOTAL = 2.0e6


@pytest.fixture(scope="module")
def phantom():
    return make_phantom("net_liver", 7, 4.42)


@pytest.fixture(scope="module")
def written(phantom, tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom_dicom") / "set"
    return write_phantom_dicom(phantom, out, total_counts=TOTAL)


def grid_points(grid: Grid) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), axis=-1)
    return grid.index_to_patient_mm(idx.reshape(-1, 3)).reshape(*grid.shape, 3)


def on_phantom(phantom, vol_grid: Grid, values: np.ndarray) -> np.ndarray:
    """The values of an array on ``vol_grid`` at the phantom's voxels, matched by patient position."""
    idx = vol_grid.patient_mm_to_index(grid_points(phantom.grid).reshape(-1, 3))
    r = np.rint(idx)
    assert np.abs(idx - r).max() < 1e-6
    return values[tuple(r.astype(int).T)].reshape(phantom.grid.shape)


# ------------------------------------------------------------------------------------------------ read back
def test_layout_and_one_frame_of_reference(written):
    assert written["ct"].is_dir() and written["spect"].name == "nm.dcm" and written["rtstruct"].name == "rtstruct.dcm"
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in
               (*sorted(written["ct"].iterdir()), written["spect"], written["rtstruct"])]
    assert {h.StudyInstanceUID for h in headers} == {headers[0].StudyInstanceUID}
    assert {h.PatientID for h in headers} == {"phantom"}
    rs = headers[-1]
    assert {h.FrameOfReferenceUID for h in headers[:-1]} == {rs.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID}
    assert len({h.SeriesInstanceUID for h in headers}) == 3


def test_ct_reads_back_exactly(phantom, written):
    ct = read_ct_series(written["ct"])
    assert ct.grid == phantom.grid
    np.testing.assert_array_equal(ct.array, phantom.ct_hu)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(written["ct"])))
    img = reader.Execute()
    np.testing.assert_allclose(img.GetOrigin(), phantom.grid.origin_mm, atol=1e-4)
    np.testing.assert_allclose(img.GetSpacing(), phantom.grid.spacing_mm[::-1], rtol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), phantom.ct_hu)


def test_nm_counts_and_geometry(phantom, written):
    nm = read_nm(written["spect"])
    assert nm.grid == phantom.grid and nm.units == "counts"
    assert nm.meta["radiopharmaceutical"].name == "Tc99m MAA"
    counts = nm.array
    assert counts.sum() == TOTAL  # error diffusion keeps the total exactly
    expected = phantom.maa_activity() * (TOTAL / phantom.maa_activity().sum())
    assert np.abs(counts - expected).max() <= 1.0  # each voxel: floor or ceiling of its value
    lungs, liver = phantom.masks["lungs"], phantom.masks["liver"]
    lsf = counts[lungs].sum() / (counts[lungs].sum() + counts[liver].sum())
    assert lsf == pytest.approx(0.08, rel=1e-3)  # 4.3 counts per lung voxel: plain rounding would give 0.0813
    img = sitk.ReadImage(str(written["spect"]))
    np.testing.assert_allclose(img.GetOrigin(), nm.grid.origin_mm, atol=1e-4)
    np.testing.assert_allclose(img.GetSpacing(), nm.grid.spacing_mm[::-1], rtol=1e-6)
    np.testing.assert_allclose(img.GetDirection(), nm.grid.direction, atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), counts)


def test_rtstruct_rois_rasterise_back_onto_the_phantom_masks(phantom, written):
    ct = read_ct_series(written["ct"])
    rois = read_rtstruct(written["rtstruct"], frame_of_reference_uid=ct.frame_of_reference_uid)
    expected = ["liver", "liver_right", "liver_left", *(f"segment_{n}" for n in range(1, 9)), *phantom.tumor_names,
                "lungs"]
    assert list(rois) == [roi_name(m) for m in expected]
    v_ml = phantom.grid.voxel_volume_ml
    for name in expected:
        ref = np.asarray(phantom.masks[name])
        frac = rasterize_structure(rois[roi_name(name)], phantom.grid)
        mask = frac >= 0.5
        # the polygons follow the voxel edges (corners cut by 1/4 voxel): the half-voxel rule gives the mask back
        assert np.count_nonzero(mask ^ ref) == 0, name
        if name in ("liver", "lungs"):
            assert mask.sum() * v_ml == pytest.approx(ref.sum() * v_ml, rel=0.01)
            # even the fractional volume is within 1 % (only the corner cuts are lost)
            assert float(frac.sum()) == pytest.approx(float(ref.sum()), rel=0.01)
    # every contour lies on a CT slice plane
    z_planes = set(np.round(phantom.grid.index_to_patient_mm(
        np.column_stack([np.arange(phantom.grid.shape[0]), np.zeros((phantom.grid.shape[0], 2))]))[:, 2], 3))
    for contours in rois.values():
        for c in contours:
            assert np.ptp(c[:, 2]) < 1e-3 and round(float(c[0, 2]), 3) in z_planes


def test_contours_reference_their_ct_slice(written):
    by_uid = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in written["ct"].iterdir()}
    rs = pydicom.dcmread(written["rtstruct"])
    for roi in rs.ROIContourSequence[:3]:
        for c in roi.ContourSequence[:5]:
            ct = pydicom.dcmread(by_uid[c.ContourImageSequence[0].ReferencedSOPInstanceUID], stop_before_pixels=True)
            assert float(c.ContourData[2]) == pytest.approx(float(ct.ImagePositionPatient[2]), abs=1e-3)


def test_structure_roles_name_the_written_rois(phantom, written):
    rois = set(read_rtstruct(written["rtstruct"]))
    roles = structure_roles(phantom)
    named = {n for key in ("liver", "tumors", "lungs", "right_lobe", "left_lobe") for n in roles[key]}
    named |= {n for names in roles["segments"].values() for n in names}
    assert named == rois
    assert roles["tumors"] == [f"Tumor_{k}" for k in range(1, len(phantom.tumor_names) + 1)]


def test_uids_are_reproducible(phantom, written, tmp_path):
    again = write_phantom_dicom(phantom, tmp_path / "again", total_counts=TOTAL)
    a = pydicom.dcmread(written["spect"], stop_before_pixels=True)
    b = pydicom.dcmread(again["spect"], stop_before_pixels=True)
    assert (a.SOPInstanceUID, a.FrameOfReferenceUID, a.StudyInstanceUID) == (
        b.SOPInstanceUID, b.FrameOfReferenceUID, b.StudyInstanceUID)
    other = write_phantom_dicom(phantom, tmp_path / "other", total_counts=TOTAL, patient_id="someone-else")
    assert pydicom.dcmread(other["spect"], stop_before_pixels=True).FrameOfReferenceUID != a.FrameOfReferenceUID


# ------------------------------------------------------------------------------------------------ variants
def test_feet_first(phantom, tmp_path):
    paths = write_phantom_dicom(phantom, tmp_path, perfused_mask=np.asarray(phantom.masks["liver_right"]),
                                patient_position="FFS")
    ct = read_ct_series(paths["ct"])
    assert ct.grid.direction == (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    assert ct.meta["patient_position"] == "FFS"
    np.testing.assert_array_equal(on_phantom(phantom, ct.grid, ct.array), phantom.ct_hu)
    nm = read_nm(paths["spect"])
    assert nm.grid == ct.grid
    counts = on_phantom(phantom, nm.grid, nm.array)
    right = phantom.maa_activity(np.asarray(phantom.masks["liver_right"]))
    assert np.abs(counts - right * (TOTAL / right.sum())).max() <= 1.0
    rois = read_rtstruct(paths["rtstruct"], frame_of_reference_uid=ct.frame_of_reference_uid)
    liver = rasterize_structure(rois["Liver"], ct.grid, output="mask")
    np.testing.assert_array_equal(on_phantom(phantom, ct.grid, liver), phantom.masks["liver"])


def test_binned_spect_keeps_the_counts(phantom, tmp_path):
    paths = write_phantom_dicom(phantom, tmp_path, spect_binning=2, total_counts=TOTAL)
    nm = read_nm(paths["spect"])
    assert nm.grid.spacing_mm == pytest.approx((8.84, 8.84, 8.84))
    assert nm.grid.shape == tuple(-(-n // 2) for n in phantom.grid.shape)
    # the first coarse voxel is the centre of the first 2 x 2 x 2 block of fine voxels
    np.testing.assert_allclose(nm.grid.origin_mm, np.asarray(phantom.grid.origin_mm) + 2.21, atol=1e-6)
    assert nm.array.sum() == TOTAL
    fine = phantom.maa_activity() * (TOTAL / phantom.maa_activity().sum())
    block = fine[:2, :2, :2].sum()
    assert abs(nm.array[0, 0, 0] - block) <= 1.0
    k, j, i = (int(v) // 2 for v in np.argwhere(fine == fine.max())[0])
    assert abs(nm.array[k, j, i] - fine[2 * k:2 * k + 2, 2 * j:2 * j + 2, 2 * i:2 * i + 2].sum()) <= 1.0


def test_holes_and_islands_survive_the_contours():
    """A ring with an island in its hole, over three slices: contoured and rasterised back voxel for voxel."""
    grid = Grid(shape=(3, 20, 20), spacing_mm=(2.0, 1.5, 1.5), origin_mm=(-10.0, 5.0, 30.0))
    j, i = np.mgrid[:20, :20]
    r = np.hypot(j - 9.5, i - 9.5)
    plane = ((r <= 8) & (r >= 4)) | (r <= 1.5)
    mask = np.broadcast_to(plane, grid.shape).copy()
    mask[0, :, :10] = False  # an irregular first slice
    contours = mask_contours(mask, grid)
    assert {k for k, _ in contours} == {0, 1, 2}
    assert sum(1 for k, _ in contours if k == 1) == 3  # outer ring, hole, island
    back = rasterize_structure([c for _, c in contours], grid, output="mask")
    np.testing.assert_array_equal(back, mask)


def test_error_diffusion_keeps_run_totals():
    values = np.full((4, 5, 6), 4.6)
    values[1:3] = 0.7
    counts = _integer_counts(values)
    assert np.all(np.isin(counts, np.floor(values).tolist() + np.ceil(values).tolist()))
    flat_c, flat_v = counts.ravel(), values.ravel()
    for a, b in ((0, 30), (30, 90), (17, 101), (0, 120)):
        assert abs(flat_c[a:b].sum() - flat_v[a:b].sum()) <= 1.0
    assert counts.sum() == pytest.approx(values.sum(), abs=0.5)
    assert np.rint(values).sum() - values.sum() > 20  # what plain rounding would have done


# ------------------------------------------------------------------------------------------------ errors
def test_errors(phantom, written, tmp_path):
    with pytest.raises(ImagingError, match="already holds files"):
        write_phantom_dicom(phantom, written["ct"].parent)
    with pytest.raises(ImagingError, match="activity: shape"):
        write_phantom_dicom(phantom, tmp_path / "a", activity=np.ones((2, 2, 2)))
    with pytest.raises(ImagingError, match="activity: negative"):
        write_phantom_dicom(phantom, tmp_path / "b", activity=-np.ones(phantom.grid.shape))
    with pytest.raises(ImagingError, match="16-bit"):
        write_phantom_dicom(phantom, tmp_path / "c", total_counts=1e9)
    with pytest.raises(ImagingError, match="patient_position"):
        write_phantom_dicom(phantom, tmp_path / "d", patient_position="HFP")  # type: ignore[arg-type]
    with pytest.raises(ImagingError, match="spect_binning"):
        write_phantom_dicom(phantom, tmp_path / "e", spect_binning=0)
    with pytest.raises(ImagingError, match="does not exist"):
        write_phantom_dicom(phantom, tmp_path / "no" / "such")
    with pytest.raises(ImagingError, match="perfused_mask"):
        write_phantom_dicom(phantom, tmp_path / "f", perfused_mask=np.zeros(phantom.grid.shape, dtype=bool))
    with pytest.raises(ImagingError, match="phantom"):
        write_phantom_dicom("net_liver", tmp_path / "g")  # type: ignore[arg-type]
