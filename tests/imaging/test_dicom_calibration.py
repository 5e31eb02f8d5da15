"""Activity calibration: patient-relative (EANM 2021) and absolute PET, against closed forms."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pytest

from embplan.errors import ImagingError
from embplan.grid import Grid
from embplan.imaging.dicom import (
    read_ct_series,
    read_nm,
    read_pet_series,
    read_rtstruct,
    require_same_frame_of_reference,
)
from embplan.imaging.resample import resample_to_grid
from embplan.imaging.rtstruct import rasterize_structure
from embplan.imaging.volume import (
    PetTiming,
    Volume,
    calibrate_absolute_pet,
    calibrate_patient_relative,
    grid_from_affine,
)

try:
    from . import dicom_factory as fac
except ImportError:  # pragma: no cover
    import dicom_factory as fac

Y90_T_H = 64.10  # ICRP-107, the value embplan.nuclides uses
ADMIN = datetime(2024, 3, 1, 11, 30, 0)
ACQ = ADMIN + timedelta(hours=21.5)


@pytest.fixture
def phantom():
    grid = Grid(shape=(6, 8, 10), spacing_mm=(4.0, 4.0, 4.0))
    liver = np.zeros(grid.shape, bool)
    lung = np.zeros(grid.shape, bool)
    liver[1:4, 2:6, 1:5] = True  # 48 voxels
    lung[1:4, 2:6, 6:9] = True  # 36 voxels
    counts = np.full(grid.shape, 2.0)  # background outside
    counts[liver] = 100.0
    counts[lung] = 10.0
    return grid, counts, liver, lung


def test_patient_relative_closed_form(phantom):
    grid, counts, liver, lung = phantom
    a = 1500.0
    res = calibrate_patient_relative(counts, liver, lung, a, grid=grid)
    per_count = a / (48 * 100.0 + 36 * 10.0)
    assert res.activity_mbq[liver] == pytest.approx(100.0 * per_count)
    assert res.activity_mbq[lung] == pytest.approx(10.0 * per_count)
    assert res.activity_mbq[liver | lung].sum() == pytest.approx(a, rel=1e-12)
    n_out = grid.size - 84
    assert res.fraction_outside_liver_lung == pytest.approx(n_out * 2.0 / (n_out * 2.0 + 4800 + 360))
    assert res.decay_reference == "administration" and res.decay_factor == 1.0
    assert res.method == "patient_relative" and res.calibration_factor == pytest.approx(per_count)
    zero = calibrate_patient_relative(counts, liver, lung, a, grid=grid, zero_outside=True)
    assert zero.total_activity_mbq == pytest.approx(a) and zero.activity_mbq[~(liver | lung)].max() == 0.0


def test_patient_relative_decayed_to_acquisition(phantom):
    grid, counts, liver, lung = phantom
    res = calibrate_patient_relative(counts, liver, lung, 2000.0, grid=grid, decay_reference="acquisition",
                                     administration_datetime=ADMIN, acquisition_datetime=ACQ)
    expected = 2000.0 * 0.5 ** (21.5 / Y90_T_H)
    assert res.activity_mbq[liver | lung].sum() == pytest.approx(expected, rel=1e-12)
    assert res.reference_datetime == ACQ and res.decay_factor == pytest.approx(0.5 ** (21.5 / Y90_T_H))
    with pytest.raises(ImagingError, match="precedes the administration"):  # an MAA scan is before the therapy
        calibrate_patient_relative(counts, liver, lung, 2000.0, grid=grid, decay_reference="acquisition",
                                   administration_datetime=ACQ, acquisition_datetime=ADMIN)
    with pytest.raises(ImagingError, match="needs administration_datetime"):
        calibrate_patient_relative(counts, liver, lung, 2000.0, grid=grid, decay_reference="acquisition")


def test_patient_relative_fractional_overlapping_masks(phantom):
    grid, counts, liver, lung = phantom
    liver_f = liver.astype(float) * 0.5
    lung_f = lung.astype(float)
    lung_f[liver] = 0.25  # overlap: the union takes the larger fraction
    res = calibrate_patient_relative(counts, liver_f, lung_f, 100.0, grid=grid)
    weight = np.maximum(liver_f, lung_f)
    assert float((res.activity_mbq * weight).sum()) == pytest.approx(100.0)


def test_patient_relative_rejects_bad_input(phantom):
    grid, counts, liver, lung = phantom
    with pytest.raises(ImagingError, match="negative counts"):
        calibrate_patient_relative(np.where(liver, -1.0, counts), liver, lung, 1.0, grid=grid)
    with pytest.raises(ImagingError, match="non-finite"):
        calibrate_patient_relative(np.where(liver, np.nan, counts), liver, lung, 1.0, grid=grid)
    with pytest.raises(ImagingError, match="no counts inside liver and lung"):
        calibrate_patient_relative(np.where(liver | lung, 0.0, counts), liver, lung, 1.0, grid=grid)
    with pytest.raises(ImagingError, match="liver_mask: shape"):
        calibrate_patient_relative(counts, liver[:-1], lung, 1.0, grid=grid)
    with pytest.raises(ImagingError, match="administered_activity_mbq"):
        calibrate_patient_relative(counts, liver, lung, 0.0, grid=grid)
    with pytest.raises(ImagingError, match="needs its grid"):
        calibrate_patient_relative(counts, liver, lung, 1.0)
    with pytest.raises(ImagingError, match=r"fraction in \[0, 1\]"):
        calibrate_patient_relative(counts, liver * 2.0, lung, 1.0, grid=grid)


def test_patient_relative_on_an_nm_volume(tmp_path):
    study = fac.Study()
    geom = fac.geometry("HFS", (4, 6, 6), (4.8, 4.8, 4.8), (0, 0, 0))
    counts = np.full(geom.shape, 5)
    counts[1:3, 1:4, 1:4] = 400
    fac.write_nm(tmp_path / "spect.dcm", geom, counts, study, acquisition=ACQ)
    vol = read_nm(tmp_path / "spect.dcm")
    liver = vol.array >= 400
    lung = np.zeros_like(liver)
    lung[3, 0, :] = True
    res = calibrate_patient_relative(vol, liver, lung, 1200.0, decay_reference="acquisition", administration_datetime=ADMIN)
    assert res.grid == vol.grid and res.acquisition_datetime == ACQ
    assert float(res.activity_mbq[liver | lung].sum()) == pytest.approx(1200.0 * 0.5 ** (21.5 / Y90_T_H))


# ----------------------------------------------------------------------------------------------------- PET
def _pet(tmp_path, decay_correction="START", conc=1.0e6, **kw):
    study = fac.Study()
    geom = fac.geometry("HFS", (3, 4, 5), (2.0, 2.0, 2.0), (0, 0, 0))
    fac.write_pet_series(tmp_path / "pt", geom, np.full(geom.shape, conc), study, decay_correction=decay_correction,
                         series_time=ACQ, administration=ADMIN, **kw)
    return read_pet_series(tmp_path / "pt")


def test_absolute_pet_start_to_administration(tmp_path):
    vol = _pet(tmp_path)
    voxel_mbq = 1.0e6 * 0.008 * 1e-6  # 1 MBq/mL x 0.008 mL
    at_acq = calibrate_absolute_pet(vol, decay_reference="acquisition")
    np.testing.assert_allclose(at_acq.activity_mbq, voxel_mbq, rtol=1e-6)
    at_admin = calibrate_absolute_pet(vol, decay_reference="administration")
    np.testing.assert_allclose(at_admin.activity_mbq, voxel_mbq * 2.0 ** (21.5 / Y90_T_H), rtol=1e-6)
    assert at_admin.reference_datetime == ADMIN and at_acq.reference_datetime == ACQ
    assert at_admin.half_life_h == pytest.approx(230760.0 / 3600.0)
    assert at_admin.administered_activity_mbq == pytest.approx(3000.0)
    assert at_admin.total_activity_mbq == pytest.approx(60 * voxel_mbq * 2.0 ** (21.5 / Y90_T_H), rel=1e-6)


def test_absolute_pet_admin_corrected_values(tmp_path):
    vol = _pet(tmp_path, decay_correction="ADMIN")
    at_admin = calibrate_absolute_pet(vol, decay_reference="administration")
    np.testing.assert_allclose(at_admin.activity_mbq, 0.008, rtol=1e-6)
    at_acq = calibrate_absolute_pet(vol, decay_reference="acquisition")
    np.testing.assert_allclose(at_acq.activity_mbq, 0.008 * 0.5 ** (21.5 / Y90_T_H), rtol=1e-6)


def test_absolute_pet_uncorrected_frame_mean():
    grid = Grid(shape=(1, 1, 1), spacing_mm=(10.0, 10.0, 10.0))  # 1 mL
    timing = PetTiming(decay_correction="NONE", acquisition_datetime=ACQ, frame_duration_s=3600.0,
                       administration_datetime=ADMIN)
    res = calibrate_absolute_pet(np.full(grid.shape, 1.0e6), grid, decay_reference="acquisition", timing=timing,
                                 half_life_h=1.0)
    # mean over one half-life of A0 2^-t is A0 (1 - 1/2) / ln 2; so A0 = mean ln 2 / (1/2)
    assert float(res.activity_mbq[0, 0, 0]) == pytest.approx(1.0 * math.log(2.0) / 0.5, rel=1e-12)


def test_absolute_pet_needs_the_administration_time(tmp_path):
    vol = _pet(tmp_path, with_datetime=False)
    with pytest.raises(ImagingError, match="administration datetime is unknown"):
        calibrate_absolute_pet(vol, decay_reference="administration")
    res = calibrate_absolute_pet(vol, decay_reference="administration", administration_datetime=ADMIN)
    np.testing.assert_allclose(res.activity_mbq, 0.008 * 2.0 ** (21.5 / Y90_T_H), rtol=1e-6)


def test_absolute_pet_rejects(tmp_path):
    grid = Grid(shape=(1, 1, 2), spacing_mm=(1.0, 1.0, 1.0))
    timing = PetTiming(decay_correction="START", acquisition_datetime=ACQ)
    with pytest.raises(ImagingError, match="negative activity"):
        calibrate_absolute_pet(np.array([[[1.0, -1.0]]]), grid, timing=timing, decay_reference="acquisition")
    ok = calibrate_absolute_pet(np.array([[[1.0, -1.0]]]), grid, timing=timing, decay_reference="acquisition",
                                clip_negative=True)
    assert ok.activity_mbq.min() == 0.0 and "1 negative voxels set to 0" in ok.notes
    assert any("Y-90, ICRP-107" in n for n in ok.notes)
    with pytest.raises(ImagingError, match="timing"):
        calibrate_absolute_pet(np.ones(grid.shape), grid, decay_reference="acquisition")
    with pytest.raises(ImagingError, match="units are 'HU'"):
        calibrate_absolute_pet(Volume(np.ones(grid.shape), grid, "HU"), decay_reference="acquisition", timing=timing)


def test_grid_from_affine_round_trip():
    g = Grid(shape=(3, 4, 5), spacing_mm=(2.5, 1.5, 0.5), origin_mm=(1, 2, 3), direction=(0, -1, 0, 1, 0, 0, 0, 0, -1))
    back = grid_from_affine(g.affine, g.shape)
    np.testing.assert_allclose(back.affine, g.affine, atol=1e-12)
    sheared = g.affine.copy()
    sheared[0, 0] += 1.0
    with pytest.raises(ImagingError, match="not orthogonal"):
        grid_from_affine(sheared, g.shape)


def test_ct_spect_rtstruct_in_one_frame_of_reference(tmp_path):
    """CT + Tc-99m MAA SPECT + RTSTRUCT of one study: structures onto the SPECT grid, patient-relative calibration,
    activity moved onto the CT grid with its total kept."""
    study = fac.Study()
    ct_geom = fac.geometry("HFS", (32, 64, 64), (2.5, 1.25, 1.25), (-40.0, -40.0, -40.0))
    fac.write_ct_series(tmp_path / "ct", ct_geom, np.zeros(ct_geom.shape), study)
    liver_c, lung_c = np.array([-12.0, 5.0, 0.0]), np.array([18.0, -10.0, 10.0])
    fac.write_rtstruct(tmp_path / "rs.dcm", {"Liver": fac.sphere_contours(ct_geom, liver_c, 16.0),
                                             "Lung": fac.sphere_contours(ct_geom, lung_c, 10.0)}, study)
    nm_geom = fac.geometry("HFS", (16, 16, 16), (4.8, 4.8, 4.8), (-36.0, -36.0, -36.0))
    pts = nm_geom.points()
    counts = np.where(np.linalg.norm(pts - liver_c, axis=-1) < 16.0, 300.0, 0.0)
    counts += np.where(np.linalg.norm(pts - lung_c, axis=-1) < 10.0, 30.0, 0.0) + 1.0
    fac.write_nm(tmp_path / "spect.dcm", nm_geom, counts, study)

    ct = read_ct_series(tmp_path / "ct")
    spect = read_nm(tmp_path / "spect.dcm")
    require_same_frame_of_reference(ct=ct.frame_of_reference_uid, spect=spect.frame_of_reference_uid)
    rs = read_rtstruct(tmp_path / "rs.dcm", frame_of_reference_uid=ct.frame_of_reference_uid)
    liver = rasterize_structure(rs["Liver"], spect.grid)
    lung = rasterize_structure(rs["Lung"], spect.grid)
    assert float(liver.sum()) * spect.grid.voxel_volume_ml == pytest.approx(4 / 3 * math.pi * 16.0**3 / 1000, rel=0.03)
    res = calibrate_patient_relative(spect, liver, lung, 1000.0)
    assert float((res.activity_mbq * np.maximum(liver, lung)).sum()) == pytest.approx(1000.0)
    on_ct = resample_to_grid(res.to_volume(), None, ct.grid, "activity")
    assert on_ct.grid == ct.grid
    assert float(on_ct.array.sum()) == pytest.approx(res.total_activity_mbq, rel=1e-9)  # the CT covers the SPECT
