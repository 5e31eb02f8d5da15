"""Issue 17, real-world DICOM: JPEG Lossless CT, Enhanced CT, single-frame RT Dose, several series in a folder,
missing slices / non-uniform spacing / gantry tilt, vendor SPECT and PET.

Real files come from pydicom's test files and pydicom-data (the ``test`` extra installs both; read offline);
generated ones from tests/imaging/dicom_factory.py (pydicom only) and tests/imaging/jpeg_lossless.py (its output is
checked against pylibjpeg-libjpeg, an independent decoder)."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import textwrap
from datetime import datetime

import numpy as np
import pydicom
import pytest

from embplan.errors import ImagingError
from embplan.imaging.dicom import read_ct_series, read_nm, read_pet_series, read_rt_dose
from embplan.imaging.enhanced import read_enhanced_image

try:  # tests/imaging as a package or as a plain folder on sys.path
    from . import dicom_factory as fac
    from .jpeg_lossless import JPEG_LOSSLESS_SV1, compress_dataset, encode_frame
except ImportError:  # pragma: no cover
    import dicom_factory as fac
    from jpeg_lossless import JPEG_LOSSLESS_SV1, compress_dataset, encode_frame


def grid_points(grid) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), axis=-1).reshape(-1, 3)
    return grid.index_to_patient_mm(idx).reshape(*grid.shape, 3)


def real_file(name: str) -> str:
    """A file from pydicom's own test files or from pydicom-data (both installed by the test extra)."""
    from pydicom.data import get_testdata_file

    pytest.importorskip("data_store", reason="pydicom-data is not installed (pip install -e '.[test]')")
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name}: not in the installed pydicom test data")
    return str(path)


@pytest.fixture
def rng():
    return np.random.default_rng(17)


@pytest.fixture
def study():
    return fac.Study()


# ------------------------------------------------------------------------------------------------ JPEG Lossless
def test_jpeg_lossless_encoder_matches_an_independent_decoder(rng):
    libjpeg = pytest.importorskip("libjpeg", reason="pylibjpeg-libjpeg (the dicom-codecs extra) is not installed")
    for a in (rng.integers(0, 65536, (37, 53)), rng.integers(0, 4096, (16, 16)), np.array([[0, 32768, 65535, 1]])):
        assert np.array_equal(libjpeg.decode(encode_frame(a.astype(np.uint16))).astype(np.int64), a)


def test_jpeg_lossless_ct_series_reads_like_the_native_one(tmp_path, rng, study):
    """A CT as PACS archives store it (transfer syntax 1.2.840.10008.1.2.4.70) reads to the same HU, voxel for voxel,
    as the uncompressed series it was made from, and to the values the writer stored."""
    geom = fac.geometry("HFS", (6, 12, 10), (2.5, 0.8, 0.8), (-40, -50, 100))
    truth = fac.write_ct_series(tmp_path / "native", geom, rng.integers(-1000, 1500, geom.shape), study)
    (tmp_path / "jpeg").mkdir()
    for p in truth.paths:
        ds = pydicom.dcmread(p)
        compress_dataset(ds)
        ds.save_as(tmp_path / "jpeg" / p.name, enforce_file_format=True)
    assert pydicom.dcmread(tmp_path / "jpeg" / truth.paths[0].name).file_meta.TransferSyntaxUID == JPEG_LOSSLESS_SV1
    native = read_ct_series(tmp_path / "native")
    jpeg = read_ct_series(tmp_path / "jpeg")
    assert jpeg.grid == native.grid
    np.testing.assert_array_equal(jpeg.array, native.array)
    np.testing.assert_array_equal(jpeg.array, truth.values_at(grid_points(jpeg.grid)))


def test_missing_jpeg_decoder_names_the_syntax_and_the_extra(tmp_path, rng, study):
    """Without pylibjpeg / libjpeg / gdcm (blocked in a fresh interpreter) the error names the transfer syntax, its
    UID and the extra to install, and nothing else escapes."""
    geom = fac.geometry("HFS", (3, 8, 8), (2.0, 1.0, 1.0), (0, 0, 0))
    truth = fac.write_ct_series(tmp_path / "ct", geom, rng.integers(-100, 100, geom.shape), study)
    for p in truth.paths:
        ds = pydicom.dcmread(p)
        compress_dataset(ds)
        ds.save_as(p, enforce_file_format=True)
    code = textwrap.dedent(f"""
        import sys
        for m in ("libjpeg", "openjpeg", "pylibjpeg", "gdcm"):
            sys.modules[m] = None
        from embplan.errors import ImagingError
        from embplan.imaging.dicom import read_ct_series
        try:
            read_ct_series({str(tmp_path / "ct")!r})
        except ImagingError as exc:
            print("IMAGING_ERROR", exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "IMAGING_ERROR" in out.stdout, out.stderr
    assert "JPEG Lossless, Non-Hierarchical, First-Order Prediction" in out.stdout
    assert "(1.2.840.10008.1.2.4.70)" in out.stdout
    assert 'pip install "embplan[dicom-codecs]"' in out.stdout


def test_real_jpeg_lossless_file_decodes(tmp_path):
    """pydicom-data's JPEG-LL.dcm (a JPEG Lossless SV1 NM whole-body image): the pixels decode with the extra; as a
    whole-body image it is no SPECT volume, and read_nm says so."""
    path = real_file("JPEG-LL.dcm")
    with pytest.raises(ImagingError, match="only reconstructed tomography"):
        read_nm(path)
    from embplan.imaging.dicom import _pixel_frames

    ds = pydicom.dcmread(path)
    px = _pixel_frames(ds, path)
    assert px.shape == (1, ds.Rows, ds.Columns) and px.max() > 0


# ------------------------------------------------------------------------------------------------ Enhanced CT
def test_enhanced_ct_reads_like_the_classic_series(tmp_path, rng, study):
    """One Enhanced CT file, frames stored out of order: the same grid and HU as the classic series of the same
    slices, and the writer's values at every voxel centre."""
    geom = fac.geometry("FFS", (7, 32, 28), (3.0, 0.9, 0.7), (20, -30, 400))
    hu = rng.integers(-1000, 1200, geom.shape)
    classic = fac.write_ct_series(tmp_path / "classic", geom, hu, study)
    order = [3, 0, 6, 1, 5, 2, 4]
    truth = fac.write_enhanced_ct(tmp_path / "enh" / "ct.dcm", geom, hu, study, frame_order=order)
    vol = read_ct_series(tmp_path / "enh")
    ref = read_ct_series(tmp_path / "classic")
    assert vol.grid.shape == ref.grid.shape
    np.testing.assert_allclose(vol.grid.affine, ref.grid.affine, atol=1e-9)
    np.testing.assert_array_equal(vol.array, ref.array)
    np.testing.assert_array_equal(vol.array, truth.values_at(grid_points(vol.grid)))
    assert vol.meta["enhanced"] and vol.units == "HU" and classic.for_uid == vol.frame_of_reference_uid


def test_enhanced_ct_with_two_stacks_is_refused_with_the_list(tmp_path, rng, study):
    geom = fac.geometry("HFS", (4, 5, 5), (2.0, 1.0, 1.0), (0, 0, 0))
    truth = fac.write_enhanced_ct(tmp_path / "enh" / "ct.dcm", geom, rng.integers(-10, 10, geom.shape), study)
    ds = pydicom.dcmread(truth.paths[0])
    for fr in ds.PerFrameFunctionalGroupsSequence[2:]:
        fr.FrameContentSequence[0].StackID = "2"
    ds.save_as(truth.paths[0])
    with pytest.raises(ImagingError, match=r"2 stacks or temporal positions .*\('1', 0\), \('2', 0\)"):
        read_ct_series(tmp_path / "enh")
    assert read_enhanced_image(truth.paths[0], stack_id="2").grid.shape == (2, 5, 5)


def test_real_enhanced_ct_perfusion_map():
    """pydicom-data's eCT_Supplemental.dcm: an Enhanced CT whose two frames are a DERIVED perfusion map (Rescale Type
    US): refused as a CT density with the reason; read when US is accepted, its geometry is the one in the per-frame
    Plane Position items and its values pixel x slope + intercept."""
    path = real_file("eCT_Supplemental.dcm")
    with pytest.raises(ImagingError, match=r"Rescale Type \(0028,1054\) is 'US' .*PERFUSION.*not Hounsfield units"):
        read_ct_series(path)
    vol = read_enhanced_image(path, accept_rescale_types=("US",))
    ds = pydicom.dcmread(path)
    ipps = [np.array([float(v) for v in fr.PlanePositionSequence[0].ImagePositionPatient])
            for fr in ds.PerFrameFunctionalGroupsSequence]
    corners = [vol.grid.index_to_patient_mm(np.array([k, 0, 0], dtype=float)) for k in range(vol.grid.shape[0])]
    assert sorted(tuple(np.round(c, 4)) for c in corners) == sorted(tuple(np.round(p, 4)) for p in ipps)
    assert vol.grid.spacing_mm == pytest.approx((10.0, 0.388672, 0.388672))
    px = ds.pixel_array.astype(float) - 1024.0
    frame_of_slice = [int(np.argmin([np.linalg.norm(c - p) for p in ipps])) for c in corners]
    for k, f in enumerate(frame_of_slice):
        np.testing.assert_array_equal(vol.array[k], px[f])


# ------------------------------------------------------------------------------------------------ RT Dose
def test_real_single_frame_rt_dose():
    """pydicom's rtdose_1frame.dcm (no Number of Frames, no Slice Thickness): one plane at its Image Position,
    values pixel x Dose Grid Scaling, the thickness taken from the spacing of its Grid Frame Offset Vector; the
    same plane as the first frame of the 15-frame rtdose.dcm."""
    one = read_rt_dose(real_file("rtdose_1frame.dcm"))
    many = read_rt_dose(real_file("rtdose.dcm"))
    ds = pydicom.dcmread(real_file("rtdose_1frame.dcm"))
    assert one.grid.shape == (1, 10, 10) and one.meta["single_plane"] is True
    assert one.grid.origin_mm == pytest.approx(tuple(float(v) for v in ds.ImagePositionPatient))
    assert one.grid.spacing_mm[0] == pytest.approx(5.0) and "GridFrameOffsetVector" in one.meta["slice_spacing_source"]
    np.testing.assert_allclose(one.array[0], ds.pixel_array * float(ds.DoseGridScaling))
    np.testing.assert_allclose(one.array[0], many.array[0])
    thick = read_rt_dose(real_file("rtdose_1frame.dcm"), single_frame_thickness_mm=2.0)
    assert thick.grid.spacing_mm[0] == 2.0


# ------------------------------------------------------------------------------------------------ several series
def _localizer(folder, study, n=1):
    geom = fac.Geometry(shape=(n, 20, 16), spacing=(1.0, 2.0, 2.0), origin=(-16, 0, 200), row_dir=(1, 0, 0),
                        col_dir=(0, 0, -1))
    truth = fac.write_ct_series(folder / "scout", geom, np.zeros(geom.shape), study, series_description="Topogram 0.6")
    for p in truth.paths:
        ds = pydicom.dcmread(p)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.save_as(folder / ("scout_" + p.name))
    shutil.rmtree(folder / "scout")
    return truth


def test_scout_beside_the_axial_series_is_set_aside(tmp_path, rng, study):
    geom = fac.geometry("HFS", (8, 6, 6), (2.5, 1.0, 1.0), (0, 0, 0))
    axial = fac.write_ct_series(tmp_path / "ct", geom, rng.integers(-100, 100, geom.shape), study)
    scout = _localizer(tmp_path / "ct", study, n=2)
    vol = read_ct_series(tmp_path / "ct")
    assert vol.series_instance_uid == axial.series_uid
    note = vol.meta["series_selection"]
    assert scout.series_uid in note and "a localizer (scout)" in note and "Topogram 0.6" in note
    assert "dosimetry.images.dicom.ct_series_instance_uid" in note


def test_two_reconstructions_are_listed_and_selectable(tmp_path, rng, study):
    geom = fac.geometry("HFS", (8, 6, 6), (2.5, 1.0, 1.0), (0, 0, 0))
    soft = fac.write_ct_series(tmp_path / "a", geom, rng.integers(-100, 100, geom.shape), study,
                               series_description="Abdomen 2.5 B30f")
    geom2 = fac.geometry("HFS", (20, 6, 6), (1.0, 1.0, 1.0), (0, 0, 0))
    sharp = fac.write_ct_series(tmp_path / "b", geom2, rng.integers(-100, 100, geom2.shape), study,
                                series_description="Abdomen 1.0 B70f")
    (tmp_path / "ct").mkdir()
    for sub in ("a", "b"):
        for p in sorted((tmp_path / sub).iterdir()):
            shutil.move(p, tmp_path / "ct" / f"{sub}_{p.name}")
    _localizer(tmp_path / "ct", study)
    with pytest.raises(ImagingError) as err:
        read_ct_series(tmp_path / "ct")
    msg = str(err.value)
    assert "3 CT series and 2 are an axial volume" in msg and "dosimetry.images.dicom.ct_series_instance_uid" in msg
    for uid, desc, n in ((soft.series_uid, "Abdomen 2.5 B30f", 8), (sharp.series_uid, "Abdomen 1.0 B70f", 20)):
        assert f"{uid} ('{desc}', {n} slices" in msg
    assert "set aside: a localizer (scout)" in msg
    assert read_ct_series(tmp_path / "ct", series_instance_uid=sharp.series_uid).grid.shape == (20, 6, 6)


def test_case_field_selects_the_series(tmp_path):
    from embplan.case import DicomImages

    base = {"ct": "ct", "spect": "s.dcm", "rtstruct": "r.dcm",
            "structures": {"liver": ["Liver"], "tumors": [], "lungs": ["Lungs"]}}
    assert DicomImages(**base, ct_series_instance_uid="1.2.840.1").ct_series_instance_uid == "1.2.840.1"
    with pytest.raises(Exception, match="pattern"):
        DicomImages(**base, ct_series_instance_uid="1.02.x")
    with pytest.raises(Exception, match="pet_series_instance_uid: given without pet"):
        DicomImages(**base, pet_series_instance_uid="1.2")


# ------------------------------------------------------------------------------------------------ irregular stacks
def _linear_ct(folder, study, positions, iop=((1, 0, 0), (0, 1, 0)), shape=(12, 10)):
    """CT slices at ``positions`` (IPP per slice) holding HU = 3x + 2y + 4z + 7 (patient mm) at every pixel
    centre, stored to 0.01 HU (Rescale Slope 0.01): linear, so linear/bilinear resampling reproduces it."""
    r, c = np.asarray(iop[0], float), np.asarray(iop[1], float)
    paths = []
    geom = fac.Geometry(shape=(len(positions), *shape), spacing=(1.0, 2.0, 2.0), origin=tuple(positions[0]),
                        row_dir=tuple(r), col_dir=tuple(c))
    folder.mkdir(parents=True, exist_ok=True)
    truth = fac.write_ct_series(folder, geom, np.zeros(geom.shape), study)
    jj, ii = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    for p, pos in zip(truth.paths, positions, strict=True):
        pts = np.asarray(pos, float) + jj[..., None] * 2.0 * c + ii[..., None] * 2.0 * r
        hu = pts @ np.array([3.0, 2.0, 4.0]) + 7.0
        ds = pydicom.dcmread(p)
        ds.ImagePositionPatient = [float(v) for v in pos]
        ds.RescaleSlope, ds.RescaleIntercept = "0.01", "0"
        ds.PixelData = np.rint(hu * 100).astype("<i2").tobytes()
        ds.save_as(p)
        paths.append(p)
    return paths


def _assert_linear(vol):
    pts = grid_points(vol.grid)
    expected = pts @ np.array([3.0, 2.0, 4.0]) + 7.0
    inside = vol.array != -1000.0
    assert inside.mean() > 0.5
    np.testing.assert_allclose(vol.array[inside], expected[inside], atol=0.006)


@pytest.mark.parametrize("dj, di", [(0.3, -1.7), (-2.25, 0.0), (5.0, 3.0), (0.0, 0.6), (-0.4, -0.4), (0.0, 0.0)])
def test_in_plane_shift_equals_scipy_bilinear(dj, di):
    """The resampler's in-plane translation equals scipy's order-1 map_coordinates (NaN outside) -- an independent
    implementation -- to rounding, including which pixels fall outside."""
    from scipy.ndimage import map_coordinates

    from embplan.imaging.irregular import _shift_bilinear

    img = np.random.default_rng(5).normal(size=(40, 30))
    jj, ii = np.meshgrid(np.arange(40.0), np.arange(30.0), indexing="ij")
    ref = map_coordinates(img, [jj + dj, ii + di], order=1, mode="constant", cval=np.nan, prefilter=False)
    got = _shift_bilinear(img, dj, di)
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(ref))
    np.testing.assert_allclose(got[np.isfinite(ref)], ref[np.isfinite(ref)], atol=1e-12)


def test_missing_slice_is_interpolated_with_a_note(tmp_path, study):
    positions = [(0.0, 0.0, 2.5 * k) for k in range(8)]
    paths = _linear_ct(tmp_path / "ct", study, positions)
    paths[4].unlink()
    vol = read_ct_series(tmp_path / "ct")
    assert vol.grid.shape[0] == 8 and vol.grid.spacing_mm[0] == pytest.approx(2.5)
    assert "non-uniform slice spacing" in vol.meta["geometry_note"] and "ct_0003.dcm-ct_0005.dcm 5.000 mm" in \
        vol.meta["geometry_note"]
    assert not np.any(vol.array == -1000.0)
    _assert_linear(vol)


def test_non_uniform_spacing_is_resampled(tmp_path, study):
    zs = [0.0, 2.5, 5.0, 7.7, 10.0, 12.4, 15.0]
    _linear_ct(tmp_path / "ct", study, [(0.0, 0.0, z) for z in zs])
    vol = read_ct_series(tmp_path / "ct")
    assert vol.grid.shape[0] == 7 and vol.grid.spacing_mm[0] == pytest.approx(2.5)
    _assert_linear(vol)
    with pytest.raises(ImagingError, match=r"gap of .* between slices ct_0002\.dcm \(5\.000 mm\) and ct_0003\.dcm \(7\.700 mm\)"):
        read_ct_series(tmp_path / "ct", max_slice_gap_factor=1.05)


def test_gantry_tilt_is_resampled_and_limited(tmp_path, study):
    """A tilted gantry (Siemens/GE style): Image Orientation tilted by t about x, Image Positions moving along z
    with the table. The slices are resampled onto the tilted orthogonal grid; the linear HU field survives
    exactly inside the acquired field of view."""
    t = math.radians(15.0)
    iop = ((1.0, 0.0, 0.0), (0.0, math.cos(t), math.sin(t)))
    _linear_ct(tmp_path / "ct", study, [(0.0, 0.0, 3.0 * k) for k in range(9)], iop=iop)
    vol = read_ct_series(tmp_path / "ct")
    assert "gantry tilt 15.00 deg" in vol.meta["geometry_note"]
    d = np.asarray(vol.grid.direction).reshape(3, 3)
    assert np.allclose(d[:, 1], iop[1]) and vol.grid.spacing_mm[0] == pytest.approx(3.0 * math.cos(t))
    _assert_linear(vol)
    assert np.any(vol.array == -1000.0)  # the sheared corners outside the acquired slices
    with pytest.raises(ImagingError, match=r"gantry tilt 15\.00 deg .* exceeds max_gantry_tilt_deg=10"):
        read_ct_series(tmp_path / "ct", max_gantry_tilt_deg=10.0)


# ------------------------------------------------------------------------------------------------ vendor NM / PET
def test_vendor_spect_layout_is_read(tmp_path, rng, study):
    geom = fac.geometry("HFS", (6, 8, 8), (4.4, 4.4, 4.4), (-20, -20, 0))
    truth = fac.write_nm(tmp_path / "nm.dcm", geom, rng.integers(0, 200, geom.shape), study)
    ds = pydicom.dcmread(truth.paths[0])
    assert "ActualFrameDuration" not in ds and ds.RotationInformationSequence[0].ActualFrameDuration == 25000
    vol = read_nm(truth.paths[0])
    assert vol.meta["energy_windows_kev"] == ((126.45, 154.55),)
    assert vol.meta["detectors"] == ({"collimator_type": "PARA", "collimator": "LEHR"},)
    assert vol.meta["rotations"][0]["views"] == 60 and vol.meta["frame_duration_s"] == 25.0
    np.testing.assert_array_equal(vol.array, truth.values_at(grid_points(vol.grid)))


def test_pet_corrected_image_is_checked(tmp_path, rng, study):
    geom = fac.geometry("HFS", (4, 6, 6), (4.0, 4.0, 4.0), (0, 0, 0))
    conc = rng.uniform(0, 5e4, geom.shape)
    fac.write_pet_series(tmp_path / "ok", geom, conc, study)
    assert {"ATTN", "DECY"} <= set(read_pet_series(tmp_path / "ok").meta["corrected_image"])
    fac.write_pet_series(tmp_path / "nac", geom, conc, study, corrected_image=("DECY", "SCAT"))
    with pytest.raises(ImagingError, match=r"CorrectedImage \(0028,0051\) is DECY/SCAT without ATTN"):
        read_pet_series(tmp_path / "nac")
    nac = read_pet_series(tmp_path / "nac", require_quantitative_corrections=False)
    assert nac.grid.shape == (4, 6, 6)
    from embplan.imaging.volume import calibrate_absolute_pet

    with pytest.raises(ImagingError, match="without ATTN: not attenuation corrected"):
        calibrate_absolute_pet(nac)
    fac.write_pet_series(tmp_path / "nodecy", geom, conc, study, corrected_image=("ATTN",))
    with pytest.raises(ImagingError, match="lacks DECY"):
        read_pet_series(tmp_path / "nodecy")
    fac.write_pet_series(tmp_path / "none", geom, conc, study, corrected_image=("ATTN",), decay_correction="NONE")
    assert read_pet_series(tmp_path / "none").meta["pet_timing"].decay_correction == "NONE"


def test_pet_nac_series_beside_the_ac_series_is_set_aside(tmp_path, rng, study):
    """Vendors export the non-attenuation-corrected reconstruction beside the corrected one: the AC series is read."""
    geom = fac.geometry("HFS", (6, 6, 6), (4.0, 4.0, 4.0), (0, 0, 0))
    ac = fac.write_pet_series(tmp_path / "pet", geom, rng.uniform(0, 5e4, geom.shape), study)
    nac = fac.write_pet_series(tmp_path / "nac", geom, rng.uniform(0, 5e4, geom.shape), study,
                               corrected_image=("DECY", "RAN"))
    for p in nac.paths:
        shutil.move(p, tmp_path / "pet" / ("nac_" + p.name))
    vol = read_pet_series(tmp_path / "pet")
    assert vol.series_instance_uid == ac.series_uid
    assert "not attenuation corrected" in vol.meta["series_selection"] and nac.series_uid in vol.meta["series_selection"]


def test_spect_folder_with_projections_picks_the_reconstruction(tmp_path, rng, study):
    from embplan.imaging.series import choose_nm_file

    geom = fac.geometry("HFS", (6, 8, 8), (4.4, 4.4, 4.4), (0, 0, 0))
    recon = fac.write_nm(tmp_path / "spect" / "recon.dcm", geom, rng.integers(0, 50, geom.shape), study)
    fac.write_nm(tmp_path / "spect" / "proj.dcm", geom, rng.integers(0, 50, geom.shape), study, image_type="TOMO",
                 acquisition=datetime(2024, 3, 1, 9, 0))
    f, note = choose_nm_file(tmp_path / "spect")
    assert f == recon.paths[0] and "not a reconstructed tomography" in note



# ------------------------------------------------------------------------------------------------ inventory
def test_real_file_inventory_loads_or_refuses_clearly():
    """Every CT, NM, PET, RT Dose and SEG file shipped by pydicom and pydicom-data loads or is refused with an
    ImagingError naming the file (never another exception); the ones that are volumes load, JPEG 2000 and RLE
    included."""
    import warnings
    from pathlib import Path

    from embplan.imaging.dicom import read_seg_volumes

    pytest.importorskip("data_store", reason="pydicom-data is not installed (pip install -e '.[test]')")
    import data_store
    import pydicom.data

    dirs = [Path(pydicom.data.__file__).parent / "test_files", Path(data_store.__file__).parent / "data"]
    readers = {"CT": lambda f: read_ct_series([f]), "NM": read_nm, "PT": lambda f: read_pet_series([f]),
               "RTDOSE": read_rt_dose, "SEG": read_seg_volumes}
    loaded, refused = set(), {}
    for f in (f for d in dirs for f in sorted(d.glob("*.dcm"))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                mod = str(pydicom.dcmread(f, stop_before_pixels=True, force=True).get("Modality", ""))
            except Exception:
                continue
            if mod not in readers:
                continue
            try:
                readers[mod](f)
                loaded.add(f.name)
            except ImagingError as exc:
                assert f.name in str(exc), exc
                refused[f.name] = str(exc)
    assert {"CT_small.dcm", "693_J2KR.dcm", "693_J2KI.dcm", "rtdose_1frame.dcm", "rtdose_rle.dcm",
            "liver_1frame.dcm"} <= loaded
    assert "only reconstructed tomography" in refused["JPEG-LL.dcm"]
    assert "dcmconv +te" in refused["liver_expb_1frame.dcm"]  # big-endian SEG: how to convert it
    assert len(loaded) + len(refused) >= 20
