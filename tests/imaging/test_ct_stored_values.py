"""read_ct_series(..., stored_values=True) (issue 16: the image set resamples the CT's stored values, half the
memory of float32 HU): the HU it stands for are exactly read_ct_series's HU, every check fails the same way, and
a series that does not share one rescale falls back to the HU volume."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from embplan.errors import ImagingError
from embplan.imaging.dicom import CT_STORED_UNITS, ct_hu_volume, read_ct_series

try:
    from . import dicom_factory as fac
except ImportError:
    import dicom_factory as fac


@pytest.fixture
def rng():
    return np.random.default_rng(1607)


@pytest.fixture
def study():
    return fac.Study()


def _hu(rng, shape):
    hu = rng.integers(-1000, 1500, shape).astype(float)
    hu[:, :3, :] = -1000.0  # air at the edge, as in a CT
    return hu


@pytest.mark.parametrize(("slope", "intercept"), [(1.0, -1024.0), (0.5, -1000.25), (2.0, 0.0)])
def test_stored_values_give_the_same_hu(tmp_path, rng, study, slope, intercept):
    geom = fac.geometry("HFS", (7, 24, 20), (2.5, 0.8, 0.9), (10, -20, 300))
    fac.write_ct_series(tmp_path / "ct", geom, _hu(rng, geom.shape), study, slope=slope, intercept=intercept,
                        file_order="shuffled", rng=rng)
    hu = read_ct_series(tmp_path / "ct")
    stored = read_ct_series(tmp_path / "ct", stored_values=True)
    assert stored.units == CT_STORED_UNITS and stored.array.dtype.kind == "i"
    assert (stored.meta["rescale_slope"], stored.meta["rescale_intercept"]) == (slope, intercept)
    again = ct_hu_volume(stored)
    assert again.units == "HU" and again.array.dtype == np.float32 and again.grid == hu.grid
    np.testing.assert_array_equal(again.array, hu.array)
    assert again.meta == hu.meta
    assert ct_hu_volume(hu) is hu


def test_mixed_rescales_fall_back_to_hu(tmp_path, rng, study):
    """Slices with different (consistent) rescales: the HU volume comes back, equal to the plain read."""
    geom = fac.geometry("HFS", (6, 16, 16), (2.5, 0.8, 0.8), (0, 0, 0))
    truth = fac.write_ct_series(tmp_path / "ct", geom, _hu(rng, geom.shape), study)
    p = truth.paths[2]
    ds = pydicom.dcmread(p)
    raw = ds.pixel_array.astype(np.int32) - 24  # the same HU with intercept -1000
    ds.PixelData = raw.astype("<i2").tobytes()
    ds.RescaleIntercept = -1000.0
    ds.save_as(p)
    out = read_ct_series(tmp_path / "ct", stored_values=True)
    assert out.units == "HU"
    np.testing.assert_array_equal(out.array, read_ct_series(tmp_path / "ct").array)


@pytest.mark.parametrize("fault", ["offset_slice", "out_of_range"])
def test_checks_fail_alike(tmp_path, rng, study, fault):
    """A slice whose intercept is 1024 HU off (issue 12's offset check) and CT numbers beyond the plausible range
    fail with the same message whether stored values or HU are asked for."""
    geom = fac.geometry("HFS", (6, 16, 16), (2.5, 0.8, 0.8), (0, 0, 0))
    truth = fac.write_ct_series(tmp_path / "ct", geom, _hu(rng, geom.shape), study)
    if fault == "offset_slice":
        ds = pydicom.dcmread(truth.paths[3])
        ds.RescaleIntercept = 0.0
        ds.save_as(truth.paths[3])
        kw = {}
    else:
        kw = {"hu_range": (-1000.0, 1000.0)}
    with pytest.raises(ImagingError) as plain:
        read_ct_series(tmp_path / "ct", **kw)
    with pytest.raises(ImagingError) as stored:
        read_ct_series(tmp_path / "ct", stored_values=True, **kw)
    assert str(stored.value) == str(plain.value)
    assert ("shifts by" if fault == "offset_slice" else "implausible Hounsfield units") in str(plain.value)
