"""Linear resampling of float32, integer and boolean arrays equals resampling their float64 copy, bit for bit
(ITK interpolates in double whatever the pixel type; embplan no longer copies the volume to float64 first)."""

from __future__ import annotations

import numpy as np
import pytest

from embplan.grid import Grid
from embplan.imaging.resample import resample_to_grid


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8, np.bool_])
def test_linear_resampling_is_dtype_exact(dtype):
    rng = np.random.default_rng(16)
    src = Grid(shape=(20, 24, 28), spacing_mm=(2.5, 0.8, 0.8), origin_mm=(-11.0, -9.0, -25.0))
    c, s = np.cos(0.3), np.sin(0.3)
    dst = Grid(shape=(9, 8, 10), spacing_mm=(4.42, 4.42, 4.42), origin_mm=(-14.0, -12.0, -20.0),
               direction=(c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    if dtype == np.bool_:
        a = rng.random(src.shape) > 0.5
    elif np.issubdtype(dtype, np.integer):
        a = rng.integers(0, 200, src.shape).astype(dtype)
    else:
        a = (rng.standard_normal(src.shape) * 300).astype(dtype)
    got = resample_to_grid(a, src, dst, "linear", default_value=-1000.0)
    ref = resample_to_grid(a.astype(np.float64), src, dst, "linear", default_value=-1000.0)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, ref)
    assert np.any(got == -1000.0) and np.any(got != -1000.0)  # both outside and inside points were sampled


def test_dome_excluded_lung_equals_the_whole_grid_transform():
    """The lung beyond the dome, computed in the liver's widened box, equals the whole-grid distance transform."""
    from scipy import ndimage

    from embplan.dosimetry.conventions import dome_excluded_lung

    rng = np.random.default_rng(13)
    for _ in range(60):
        shape = tuple(int(n) for n in rng.integers(8, 36, 3))
        liver = np.zeros(shape, bool)
        a = [int(rng.integers(0, n)) for n in shape]
        b = [min(n, x + int(rng.integers(1, 8))) for x, n in zip(a, shape, strict=True)]
        liver[a[0]:b[0], a[1]:b[1], a[2]:b[2]] = True
        liver &= rng.random(shape) > 0.3
        if rng.random() < 0.5:
            lungs = rng.random(shape) > 0.5
        else:  # a separate block, as a lung above the dome: the crop is smaller than the grid
            lungs = np.zeros(shape, bool)
            c = [int(rng.integers(0, n)) for n in shape]
            d = [min(n, x + int(rng.integers(1, 12))) for x, n in zip(c, shape, strict=True)]
            lungs[c[0]:d[0], c[1]:d[1], c[2]:d[2]] = True
        sp = tuple(float(v) for v in rng.uniform(0.7, 5.0, 3))
        margin = float(rng.uniform(0.5, 30.0))
        ref = lungs & (ndimage.distance_transform_edt(~liver, sampling=sp) > margin) if liver.any() else lungs
        np.testing.assert_array_equal(dome_excluded_lung(lungs, liver, sp, margin), ref)
