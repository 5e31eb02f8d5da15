"""DICOM readers: geometry against the writer's truth and SimpleITK, series errors, NM, PET, bundled files."""

from __future__ import annotations

import shutil
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from embplan.errors import ImagingError
from embplan.imaging.dicom import (
    grid_from_image_plane,
    read_ct_series,
    read_header,
    read_nm,
    read_pet_series,
    read_rt_dose,
    read_rtstruct,
    read_seg,
    read_seg_volumes,
    require_same_frame_of_reference,
)

try:  # tests/imaging as a package or as a plain folder on sys.path
    from . import dicom_factory as fac
except ImportError:  # pragma: no cover
    import dicom_factory as fac


def grid_points(grid) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), axis=-1).reshape(-1, 3)
    return grid.index_to_patient_mm(idx).reshape(*grid.shape, 3)


def bundled(name: str) -> str:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:  # pragma: no cover - bundled with pydicom
        pytest.skip(f"pydicom test file {name} not bundled")
    return str(path)


@pytest.fixture
def rng():
    return np.random.default_rng(20240301)


@pytest.fixture
def study():
    return fac.Study()


# ----------------------------------------------------------------------------------------------------- CT
CT_CASES = [
    ("HFS", False, (6, 10, 12), (2.5, 0.8, 0.9)),
    ("FFS", False, (6, 10, 12), (2.5, 0.8, 0.9)),  # feet first: normal -z, slices listed with descending z
    ("HFP", False, (5, 9, 11), (3.0, 0.7, 0.7)),  # prone: IOP -1,0,0,0,-1,0
    ("HFDL", False, (5, 9, 11), (2.0, 1.1, 0.6)),  # decubitus
    ("HFS", True, (7, 8, 9), (5.0, 0.5, 1.5)),  # instance order against the normal, anisotropic
]


@pytest.mark.parametrize("position,reverse,shape,spacing", CT_CASES)
def test_ct_series_matches_truth_and_simpleitk(tmp_path, rng, study, position, reverse, shape, spacing):
    geom = fac.geometry(position, shape, spacing, (-20.5, 30.25, -100.0), reverse_slices=reverse)
    hu = rng.integers(-1000, 2000, geom.shape)
    truth = fac.write_ct_series(tmp_path / "ct", geom, hu, study, file_order="shuffled", rng=rng)
    vol = read_ct_series(tmp_path / "ct")
    assert vol.units == "HU" and vol.modality == "CT"
    assert vol.frame_of_reference_uid == study.for_uid
    assert vol.grid.spacing_mm == pytest.approx(spacing)
    # every voxel holds the value the writer stored at that patient position
    np.testing.assert_array_equal(vol.array, truth.values_at(grid_points(vol.grid)))
    # SimpleITK (GDCM) reads the same geometry and voxels
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "ct")))
    img = reader.Execute()
    np.testing.assert_allclose(img.GetOrigin(), vol.grid.origin_mm, atol=1e-6)
    np.testing.assert_allclose(img.GetSpacing(), vol.grid.spacing_mm[::-1], rtol=1e-9)
    np.testing.assert_allclose(img.GetDirection(), vol.grid.direction, atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), vol.array)
    assert vol.meta["patient_id"] == study.patient_id
    assert vol.meta["slice_spacing_source"] == "ImagePositionPatient"
    assert set(vol.meta["sop_instance_uids"]) == set(truth.sop_instance_uids)


def test_ct_geometry_ignores_slice_thickness(tmp_path, rng, study):
    geom = fac.geometry("HFS", (4, 6, 6), (3.0, 1.0, 1.0), (0, 0, 0))
    truth = fac.write_ct_series(tmp_path / "ct", geom, rng.integers(-100, 100, geom.shape), study)
    for p in truth.paths:  # a misleading SliceThickness must not matter
        ds = pydicom.dcmread(p)
        ds.SliceThickness = 1.25
        ds.save_as(p)
    assert read_ct_series(tmp_path / "ct").grid.spacing_mm[0] == pytest.approx(3.0)


def test_ct_rescale_and_file_list(tmp_path, rng, study):
    geom = fac.geometry("HFS", (3, 5, 5), (2.0, 1.0, 1.0), (0, 0, 0))
    truth = fac.write_ct_series(tmp_path / "ct", geom, rng.integers(-1000, 1000, geom.shape), study, slope=2.0, intercept=-1000.0)
    vol = read_ct_series([str(p) for p in reversed(truth.paths)])
    np.testing.assert_array_equal(vol.array, truth.values_at(grid_points(vol.grid)))


def test_other_files_in_a_folder_are_skipped(tmp_path, rng, study):
    """A clinical export: CT slices, the structure set and a text file in one folder."""
    geom = fac.geometry("HFS", (3, 5, 5), (2.0, 1.0, 1.0), (0, 0, 0))
    fac.write_ct_series(tmp_path / "ct", geom, rng.integers(-100, 100, geom.shape), study)
    (tmp_path / "ct" / "README.txt").write_text("not an image")
    fac.write_rtstruct(tmp_path / "ct" / "RS.dcm", {"A": fac.sphere_contours(geom, (2, 2, 2), 1.5, 12)}, study)
    assert read_ct_series(tmp_path / "ct").grid.shape == (3, 5, 5)


def _ct(tmp_path, rng, study, n=6, **kw):
    geom = fac.geometry("HFS", (n, 6, 7), (2.5, 1.0, 1.0), (10, 20, 30))
    return fac.write_ct_series(tmp_path / "ct", geom, rng.integers(-500, 500, geom.shape), study, **kw)


def test_missing_slices_beyond_tolerance_are_named(tmp_path, rng, study):
    """Issue 17: one missing slice is interpolated (tests/imaging/test_dicom_realworld.py); two are refused."""
    truth = _ct(tmp_path, rng, study)
    truth.paths[3].unlink()
    truth.paths[2].unlink()
    with pytest.raises(ImagingError, match=r"gap of 7\.500 mm between slices ct_0001\.dcm .*ct_0004\.dcm .*3\.00 x the "
                                           r"nominal spacing 2\.500 mm, beyond max_slice_gap_factor=2"):
        read_ct_series(tmp_path / "ct")


def test_non_uniform_spacing_is_named(tmp_path, rng, study):
    truth = _ct(tmp_path, rng, study)
    ds = pydicom.dcmread(truth.paths[4])
    ds.ImagePositionPatient = [10.0, 20.0, 30.0 + 4 * 2.5 + 0.6]
    ds.save_as(truth.paths[4])
    with pytest.raises(ImagingError, match=r"gap of 3\.100 mm between slices ct_0003\.dcm .*ct_0004\.dcm"):
        read_ct_series(tmp_path / "ct", max_slice_gap_factor=1.2)
    vol = read_ct_series(tmp_path / "ct")  # within the default tolerance: resampled, with a note
    assert "non-uniform slice spacing" in vol.meta["geometry_note"] and vol.grid.shape[0] == 6


def test_spacing_within_tolerance_is_accepted(tmp_path, rng, study):
    truth = _ct(tmp_path, rng, study)
    ds = pydicom.dcmread(truth.paths[2])
    ds.ImagePositionPatient = [10.0, 20.0, 30.0 + 2 * 2.5 + 0.005]  # 5 um: DS rounding, not a gap
    ds.save_as(truth.paths[2])
    assert read_ct_series(tmp_path / "ct").grid.spacing_mm[0] == pytest.approx(2.5, abs=1e-3)


def test_duplicate_slice_position(tmp_path, rng, study):
    truth = _ct(tmp_path, rng, study)
    ds = pydicom.dcmread(truth.paths[2])
    ds.ImagePositionPatient = [10.0, 20.0, 30.0 + 2.5]
    ds.save_as(truth.paths[2])
    with pytest.raises(ImagingError, match="duplicate slice position"):
        read_ct_series(tmp_path / "ct")


def test_sheared_series_is_rejected(tmp_path, rng, study):
    """Offsets across the plane that are not the straight line of a gantry tilt are refused (a tilt is resampled:
    tests/imaging/test_dicom_realworld.py)."""
    truth = _ct(tmp_path, rng, study)
    for k, p in enumerate(truth.paths):
        ds = pydicom.dcmread(p)
        ds.ImagePositionPatient = [10.0, 20.0 + 0.3 * k * k, 30.0 + 2.5 * k]
        ds.save_as(p)
    with pytest.raises(ImagingError, match="off the line of a gantry tilt"):
        read_ct_series(tmp_path / "ct")
    for k, p in enumerate(truth.paths):
        ds = pydicom.dcmread(p)
        ds.ImagePositionPatient = [10.0, 20.0 + 0.3 * k, 30.0 + 2.5 * k]
        ds.save_as(p)
    with pytest.raises(ImagingError, match=r"gantry tilt 6\.84 deg .* exceeds max_gantry_tilt_deg=5"):
        read_ct_series(tmp_path / "ct", max_gantry_tilt_deg=5.0)


def test_mixed_series_is_named_and_selectable(tmp_path, rng, study):
    a = _ct(tmp_path, rng, study)
    geom = fac.geometry("HFS", (3, 6, 7), (2.5, 1.0, 1.0), (10, 20, 300))
    b = fac.write_ct_series(tmp_path / "other", geom, rng.integers(-5, 5, geom.shape), study)
    for p in b.paths:
        shutil.move(p, tmp_path / "ct" / ("b_" + p.name))
    # issue 17: the 3-slice series is set aside (too short), the 6-slice one chosen with a note
    vol = read_ct_series(tmp_path / "ct")
    assert vol.series_instance_uid == a.series_uid
    assert b.series_uid in vol.meta["series_selection"] and "fewer than 5 slices" in vol.meta["series_selection"]
    assert read_ct_series(tmp_path / "ct", series_instance_uid=a.series_uid).grid.shape == (6, 6, 7)
    assert read_ct_series(tmp_path / "ct", series_instance_uid=b.series_uid).grid.shape == (3, 6, 7)


def test_mismatched_frame_of_reference_is_named(tmp_path, rng, study):
    truth = _ct(tmp_path, rng, study)
    ds = pydicom.dcmread(truth.paths[1])
    ds.FrameOfReferenceUID = "1.2.3.4.5"
    ds.save_as(truth.paths[1])
    with pytest.raises(ImagingError, match=rf"mismatched frames of reference.*1\.2\.3\.4\.5.*{study.for_uid}"):
        read_ct_series(tmp_path / "ct")


def test_require_same_frame_of_reference():
    assert require_same_frame_of_reference(ct="1.2", spect="1.2") == "1.2"
    with pytest.raises(ImagingError, match=r"ct=1\.2, spect=1\.3"):
        require_same_frame_of_reference(ct="1.2", spect="1.3")
    with pytest.raises(ImagingError, match="unknown for spect"):
        require_same_frame_of_reference(ct="1.2", spect=None)


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
def test_wrong_modality_and_implausible_hu(tmp_path, rng, study):
    truth = _ct(tmp_path, rng, study)
    with pytest.raises(ImagingError, match=r"no DICOM PT image files \(found 6 CT\)"):
        read_pet_series(tmp_path / "ct")
    with pytest.raises(ImagingError, match="Modality .* 'CT', expected 'PT'"):
        read_pet_series(truth.paths)
    ds = pydicom.dcmread(truth.paths[0])
    ds.RescaleSlope = 1.0e6
    ds.save_as(truth.paths[0])
    with pytest.raises(ImagingError, match="implausible Hounsfield units"):
        read_ct_series(tmp_path / "ct")
    ds.RescaleSlope = "nan"
    ds.save_as(truth.paths[0])
    with pytest.raises(ImagingError, match=r"RescaleSlope \(0028,1053\) is not finite"):
        read_ct_series(tmp_path / "ct")


def test_pixel_data_shape_mismatch(tmp_path, rng, study):
    truth = _ct(tmp_path, rng, study)
    for p in truth.paths:
        ds = pydicom.dcmread(p)
        ds.Rows = 8
        ds.save_as(p)
    with pytest.raises(ImagingError, match=r"shape mismatch: Pixel Data holds 84 bytes.* = 8 x 7 x 1 x 2 = 112"):
        read_ct_series(tmp_path / "ct")


def test_grid_from_image_plane_rejects_bad_orientation():
    with pytest.raises(ImagingError, match="not orthogonal"):
        grid_from_image_plane([1, 0, 0, 0.5, 0.866, 0], [0, 0, 0], [1, 1], 1.0, (2, 2, 2))
    with pytest.raises(ImagingError, match="not unit"):
        grid_from_image_plane([2, 0, 0, 0, 1, 0], [0, 0, 0], [1, 1], 1.0, (2, 2, 2))
    with pytest.raises(ImagingError):
        grid_from_image_plane([1, 0, 0, 0, 1, 0], [0, 0, 0], [0, 1], 1.0, (2, 2, 2))


# ----------------------------------------------------------------------------------------------------- NM
@pytest.mark.parametrize("position,reverse", [("HFS", False), ("FFS", False), ("HFP", False), ("HFS", True)])
def test_nm_matches_truth_and_simpleitk(tmp_path, rng, study, position, reverse):
    geom = fac.geometry(position, (5, 8, 9), (4.42, 4.42, 4.42), (-150.0, -160.0, -60.0), reverse_slices=reverse)
    truth = fac.write_nm(tmp_path / "nm.dcm", geom, rng.integers(0, 800, geom.shape), study)
    vol = read_nm(tmp_path / "nm.dcm")
    assert vol.units == "counts" and vol.modality == "NM"
    np.testing.assert_array_equal(vol.array, truth.values_at(grid_points(vol.grid)))
    img = sitk.ReadImage(str(tmp_path / "nm.dcm"))
    np.testing.assert_allclose(img.GetOrigin(), vol.grid.origin_mm, atol=1e-6)
    np.testing.assert_allclose(img.GetSpacing(), vol.grid.spacing_mm[::-1], rtol=1e-9)
    np.testing.assert_allclose(img.GetDirection(), vol.grid.direction, atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), vol.array)
    rp = vol.meta["radiopharmaceutical"]
    assert rp.name == "Tc99m MAA" and rp.total_dose_bq == pytest.approx(150e6)


def test_nm_spacing_between_slices_is_required(tmp_path, rng, study):
    geom = fac.geometry("HFS", (4, 5, 5), (4.0, 4.0, 4.0), (0, 0, 0))
    fac.write_nm(tmp_path / "nm.dcm", geom, rng.integers(0, 9, geom.shape), study, spacing_between_slices=False)
    with pytest.raises(ImagingError, match=r"missing SpacingBetweenSlices \(0018,0088\)"):
        read_nm(tmp_path / "nm.dcm")
    vol = read_nm(tmp_path / "nm.dcm", allow_slice_thickness_fallback=True)
    assert vol.meta["slice_spacing_source"] == "SliceThickness (fallback)"
    assert vol.grid.spacing_mm == pytest.approx((4.0, 4.0, 4.0))


def test_nm_not_a_reconstruction(tmp_path, rng, study):
    geom = fac.geometry("HFS", (4, 5, 5), (4.0, 4.0, 4.0), (0, 0, 0))
    fac.write_nm(tmp_path / "nm.dcm", geom, rng.integers(0, 9, geom.shape), study, image_type="TOMO")
    with pytest.raises(ImagingError, match="only reconstructed tomography"):
        read_nm(tmp_path / "nm.dcm")


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
def test_nm_frames_mismatch_and_negative_counts(tmp_path, rng, study):
    geom = fac.geometry("HFS", (4, 5, 5), (4.0, 4.0, 4.0), (0, 0, 0))
    fac.write_nm(tmp_path / "nm.dcm", geom, rng.integers(0, 9, geom.shape), study)
    ds = pydicom.dcmread(tmp_path / "nm.dcm")
    ds.NumberOfFrames = 5
    ds.save_as(tmp_path / "a.dcm")
    with pytest.raises(ImagingError, match=r"shape mismatch.*5 x 2 = 250"):
        read_nm(tmp_path / "a.dcm")
    ds = pydicom.dcmread(tmp_path / "nm.dcm")
    ds.RescaleSlope = -1.0
    ds.save_as(tmp_path / "b.dcm")
    with pytest.raises(ImagingError, match=r"RescaleSlope \(0028,1053\) must be positive"):
        read_nm(tmp_path / "b.dcm")
    ds.RescaleSlope = 1.0
    ds.RescaleIntercept = -100.0
    ds.save_as(tmp_path / "b.dcm")
    with pytest.raises(ImagingError, match="negative counts"):
        read_nm(tmp_path / "b.dcm")
    ds.RescaleSlope = "inf"
    ds.save_as(tmp_path / "c.dcm")
    with pytest.raises(ImagingError, match="not finite"):
        read_nm(tmp_path / "c.dcm")


# ----------------------------------------------------------------------------------------------------- PET
def test_pet_series_bq_ml_and_timing(tmp_path, rng, study):
    geom = fac.geometry("HFS", (5, 8, 8), (2.0, 2.0, 2.0), (-8, -8, 0))
    conc = rng.uniform(0, 2.0e6, geom.shape)
    admin = datetime(2024, 3, 1, 11, 30, 0)
    series = datetime(2024, 3, 2, 9, 15, 0)
    truth = fac.write_pet_series(tmp_path / "pt", geom, conc, study, series_time=series, administration=admin)
    vol = read_pet_series(tmp_path / "pt")
    assert vol.units == "Bq/mL" and vol.modality == "PT"
    np.testing.assert_allclose(vol.array, truth.values_at(grid_points(vol.grid)), rtol=1e-12)
    np.testing.assert_allclose(vol.array, conc, rtol=1e-4, atol=2.0e6 / 32000)  # per-slice int16 quantisation
    t = vol.meta["pet_timing"]
    assert t.decay_correction == "START"
    assert t.acquisition_datetime == series
    assert t.administration_datetime == admin
    assert t.half_life_s == pytest.approx(230760.0)
    assert t.frame_duration_s == pytest.approx(900.0)
    assert vol.meta["radiopharmaceutical"].total_dose_bq == pytest.approx(3.0e9)


def test_pet_units_must_be_bqml(tmp_path, rng, study):
    geom = fac.geometry("HFS", (3, 4, 4), (2.0, 2.0, 2.0), (0, 0, 0))
    fac.write_pet_series(tmp_path / "pt", geom, rng.uniform(0, 10, geom.shape), study, units="CNTS")
    with pytest.raises(ImagingError, match=r"Units \(0054,1001\) is 'CNTS'"):
        read_pet_series(tmp_path / "pt")


def test_pet_negative_activity(tmp_path, rng, study):
    geom = fac.geometry("HFS", (3, 4, 4), (2.0, 2.0, 2.0), (0, 0, 0))
    conc = rng.uniform(0, 1000, geom.shape)
    conc[1, 2, 2] = -50.0
    fac.write_pet_series(tmp_path / "pt", geom, conc, study)
    with pytest.raises(ImagingError, match="1 voxels with negative activity"):
        read_pet_series(tmp_path / "pt")
    vol = read_pet_series(tmp_path / "pt", clip_negative=True)
    assert vol.array.min() == 0.0 and vol.meta["negative_voxels"] == 1


def test_pet_without_administration_datetime_keeps_the_bare_time(tmp_path, rng, study):
    geom = fac.geometry("HFS", (3, 4, 4), (2.0, 2.0, 2.0), (0, 0, 0))
    fac.write_pet_series(tmp_path / "pt", geom, rng.uniform(0, 10, geom.shape), study, with_datetime=False)
    vol = read_pet_series(tmp_path / "pt")
    assert vol.meta["pet_timing"].administration_datetime is None
    assert vol.meta["radiopharmaceutical"].start_time_only == "113000"


# ----------------------------------------------------------------------------------------------------- RTSTRUCT
def test_rtstruct_reads_closed_planar_contours(tmp_path, study):
    geom = fac.geometry("HFS", (20, 40, 40), (2.5, 1.0, 1.0), (-20, -20, -25))
    sphere = fac.sphere_contours(geom, (0, 0, 0), 15.0, n_points=64)
    fac.write_rtstruct(tmp_path / "rs.dcm", {"Tumour": sphere}, study)
    rs = read_rtstruct(tmp_path / "rs.dcm", frame_of_reference_uid=study.for_uid)
    assert list(rs) == ["Tumour"]  # the POINT ROI is left out
    assert len(rs["Tumour"]) == len(sphere)
    np.testing.assert_allclose(rs["Tumour"][0], sphere[0], atol=1e-6)
    with pytest.raises(ImagingError, match=rf"frame of reference {study.for_uid}, the image in 9\.9\.9"):
        read_rtstruct(tmp_path / "rs.dcm", frame_of_reference_uid="9.9.9")


def test_rtstruct_point_count_mismatch(tmp_path, study):
    geom = fac.geometry("HFS", (4, 10, 10), (2.5, 1.0, 1.0), (0, 0, 0))
    fac.write_rtstruct(tmp_path / "rs.dcm", {"A": fac.sphere_contours(geom, (5, 5, 4), 3.0, 16)}, study)
    ds = pydicom.dcmread(tmp_path / "rs.dcm")
    ds.ROIContourSequence[0].ContourSequence[0].NumberOfContourPoints = 15
    ds.save_as(tmp_path / "rs.dcm")
    with pytest.raises(ImagingError, match=r"NumberOfContourPoints \(3006,0046\) 15 but ContourData holds 16"):
        read_rtstruct(tmp_path / "rs.dcm")


# ----------------------------------------------------------------------------------------------------- bundled files
def test_bundled_ct_small():
    path = bundled("CT_small.dcm")
    vol = read_ct_series([path])
    ds = pydicom.dcmread(path)
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(vol.array[0], expected)
    assert vol.grid.origin_mm == pytest.approx([float(v) for v in ds.ImagePositionPatient])
    assert vol.grid.spacing_mm == pytest.approx((float(ds.SliceThickness), *map(float, ds.PixelSpacing)))
    assert vol.meta["slice_spacing_source"] == "SliceThickness (single slice)"


def test_bundled_rtdose():
    path = bundled("rtdose.dcm")
    vol = read_rt_dose(path)
    ds = pydicom.dcmread(path)
    assert vol.units == "relative" and vol.grid.shape == (15, 10, 10)
    np.testing.assert_allclose(vol.array, ds.pixel_array * float(ds.DoseGridScaling))
    assert vol.grid.spacing_mm == pytest.approx((5.0, 10.0, 10.0))
    img = sitk.ReadImage(path)
    np.testing.assert_allclose(img.GetOrigin(), vol.grid.origin_mm)
    np.testing.assert_allclose(img.GetSpacing(), vol.grid.spacing_mm[::-1])


def test_bundled_rtstruct_without_preamble():
    rs = read_rtstruct(bundled("rtstruct.dcm"))
    assert list(rs) == ["patient"]  # the two isocentre ROIs are POINT contours
    assert [c.shape for c in rs["patient"]] == [(5, 3), (6, 3), (6, 3)]
    assert [float(c[:, 2].mean()) for c in rs["patient"]] == [-200.0, -190.0, -180.0]


def test_bundled_seg():
    path = bundled("liver_1frame.dcm")
    segs = read_seg_volumes(path)
    assert list(segs) == ["Liver"]
    liver = segs["Liver"]
    bits = int(np.unpackbits(np.frombuffer(pydicom.dcmread(path).PixelData, dtype=np.uint8)).sum())
    assert int(liver.array.sum()) == bits  # every set bit of the single frame, no more
    assert liver.grid.origin_mm == pytest.approx((-235.2, -226.8, -128.69))
    masks = read_seg(path, liver.grid, frame_of_reference_uid=liver.frame_of_reference_uid)
    assert masks["Liver"].dtype == bool and int(masks["Liver"].sum()) == bits
    with pytest.raises(ImagingError, match="frame of reference"):
        read_seg(path, liver.grid, frame_of_reference_uid="1.2.3")


@pytest.mark.parametrize("position", ["HFS", "FFS"])
def test_seg_from_highdicom_onto_ct_and_nm_grids(tmp_path, study, position):
    geom = fac.geometry(position, (8, 12, 14), (2.5, 1.5, 1.25), (10.0, -5.0, 40.0))
    ct_truth = fac.write_ct_series(tmp_path / "ct", geom, np.zeros(geom.shape), study)
    mask = np.zeros(geom.shape, np.uint8)
    mask[2:6, 3:9, 4:11] = 1
    mask[3, 5, 6] = 0  # a hole
    fac.write_seg(tmp_path / "seg.dcm", ct_truth, mask)
    truth = fac.Truth(geom=geom, values=mask.astype(float), paths=[], series_uid="", for_uid=study.for_uid)
    ct = read_ct_series(tmp_path / "ct")
    on_ct = read_seg(tmp_path / "seg.dcm", ct.grid, frame_of_reference_uid=ct.frame_of_reference_uid)["Liver"]
    np.testing.assert_array_equal(on_ct, truth.values_at(grid_points(ct.grid)).astype(bool))
    # onto a coarser grid: nearest neighbour of each destination centre in the writer's own index space
    nm_geom = fac.geometry(position, (4, 6, 6), (5.0, 3.0, 2.5), (10.0, -5.0, 40.0))
    fac.write_nm(tmp_path / "nm.dcm", nm_geom, np.ones(nm_geom.shape), study)
    nm = read_nm(tmp_path / "nm.dcm")
    on_nm = read_seg(tmp_path / "seg.dcm", nm.grid)["Liver"]
    idx = np.rint(truth.index_of(grid_points(nm.grid))).astype(int)
    ok = np.all((idx >= 0) & (idx < np.array(geom.shape)), axis=-1)
    expected = np.zeros(nm.grid.shape, bool)
    expected[ok] = mask[tuple(idx[ok].T)].astype(bool)
    np.testing.assert_array_equal(on_nm, expected)


@pytest.mark.parametrize(
    "reader,name",
    [
        (read_nm, "CT_small.dcm"),
        (read_rt_dose, "CT_small.dcm"),
        (read_rtstruct, "rtdose.dcm"),
        (read_seg_volumes, "rtstruct.dcm"),
        (read_ct_series, "rtdose.dcm"),
        (read_ct_series, "rtstruct.dcm"),
        (read_ct_series, "liver_1frame.dcm"),
        (read_pet_series, "CT_small.dcm"),
    ],
)
def test_bundled_files_not_volumes_of_that_kind(reader, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ImagingError):
            reader(bundled(name))


def test_read_header_and_missing_file(tmp_path):
    assert read_header(bundled("CT_small.dcm")).Modality == "CT"
    with pytest.raises(ImagingError, match="no such file"):
        read_ct_series(tmp_path / "nothing")
    (tmp_path / "x.dcm").write_bytes(b"\0" * 300)
    with pytest.raises(ImagingError, match="not a DICOM file"):
        read_rt_dose(tmp_path / "x.dcm")
    Path(tmp_path / "empty").mkdir()
    with pytest.raises(ImagingError, match="no DICOM CT image files"):
        read_ct_series(tmp_path / "empty")
