"""Resampling with full affines: exact cases, a scipy oracle, mask kinds and activity conservation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from embplan.errors import ImagingError
from embplan.grid import Grid
from embplan.imaging.resample import array_to_sitk, resample_to_grid, sitk_to_grid
from embplan.imaging.volume import Volume


def rot(axis: str, deg: float) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]), "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def grid_points(grid) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), axis=-1).reshape(-1, 3)
    return grid.index_to_patient_mm(idx).reshape(*grid.shape, 3)


SRC = Grid(shape=(12, 14, 16), spacing_mm=(2.5, 1.5, 1.0), origin_mm=(-7.0, 3.0, 10.0))


@pytest.fixture
def data():
    return np.random.default_rng(7).uniform(0, 100, SRC.shape)


def test_sitk_round_trip_of_the_grid():
    g = Grid(shape=(3, 4, 5), spacing_mm=(2.5, 1.5, 0.5), origin_mm=(1, 2, 3), direction=tuple(rot("x", 20).reshape(-1)))
    img = array_to_sitk(np.zeros(g.shape), g)
    back = sitk_to_grid(img)
    np.testing.assert_allclose(back.affine, g.affine, atol=1e-12)
    # ITK's own index -> point agrees with Grid.affine
    assert img.TransformIndexToPhysicalPoint((4, 3, 2)) == pytest.approx(tuple(g.index_to_patient_mm([2, 3, 4])))


@pytest.mark.parametrize("kind", ["linear", "nearest"])
def test_identity(data, kind):
    np.testing.assert_allclose(resample_to_grid(data, SRC, SRC, kind), data, atol=1e-12)


def test_whole_voxel_shift(data):
    a = SRC.affine
    dst = Grid(shape=SRC.shape, spacing_mm=SRC.spacing_mm, origin_mm=tuple(a[:3, 3] + 2 * a[:3, 0] + 3 * a[:3, 2]))
    out = resample_to_grid(data, SRC, dst, "linear")
    np.testing.assert_allclose(out[:-2, :, :-3], data[2:, :, 3:], atol=1e-9)
    assert np.all(out[-2:] == 0.0)  # outside the source: default value


def test_same_voxels_other_axis_order(data):
    """A grid that walks the same voxels with k reversed and j reversed returns the flipped array exactly."""
    a = SRC.affine
    nz, ny, _ = SRC.shape
    origin = a[:3, 3] + (nz - 1) * a[:3, 0] + (ny - 1) * a[:3, 1]
    dst = Grid(shape=SRC.shape, spacing_mm=SRC.spacing_mm, origin_mm=tuple(origin), direction=(1, 0, 0, 0, -1, 0, 0, 0, -1))
    for kind in ("linear", "nearest"):
        np.testing.assert_allclose(resample_to_grid(data, SRC, dst, kind), data[::-1, ::-1, :], atol=1e-9)


def test_linear_against_scipy_oracle_on_an_oblique_grid(data):
    rot_m = rot("x", 17.0) @ rot("z", 31.0)
    centre = SRC.index_to_patient_mm(np.array(SRC.shape) / 2 - 0.5)
    dst = Grid(shape=(9, 10, 11), spacing_mm=(1.7, 1.3, 1.1), direction=tuple(rot_m.reshape(-1)),
               origin_mm=tuple(centre - rot_m @ np.array([5.5, 6.5, 7.6])))
    out = resample_to_grid(data, SRC, dst, "linear")
    src_idx = SRC.patient_mm_to_index(grid_points(dst).reshape(-1, 3))
    oracle = ndimage.map_coordinates(data, src_idx.T, order=1, mode="constant", cval=np.nan).reshape(dst.shape)
    inside = np.all((src_idx >= 0) & (src_idx <= np.array(SRC.shape) - 1), axis=1).reshape(dst.shape)
    assert inside.sum() > 500
    np.testing.assert_allclose(out[inside], oracle[inside], rtol=1e-9, atol=1e-9)


def test_nearest_keeps_mask_dtype_and_labels():
    mask = np.zeros(SRC.shape, bool)
    mask[3:7, 4:9, 5:12] = True
    dst = Grid(shape=(6, 7, 8), spacing_mm=(5.0, 3.0, 2.0), origin_mm=SRC.origin_mm)
    out = resample_to_grid(mask, SRC, dst, "nearest")
    assert out.dtype == bool
    src_idx = np.rint(SRC.patient_mm_to_index(grid_points(dst).reshape(-1, 3))).astype(int)
    ok = np.all((src_idx >= 0) & (src_idx < np.array(SRC.shape)), axis=1)
    expected = np.zeros(dst.size, bool)
    expected[ok] = mask[tuple(src_idx[ok].T)]
    np.testing.assert_array_equal(out.reshape(-1), expected)
    labels = (np.arange(SRC.size) % 5).reshape(SRC.shape).astype(np.int16)
    out_l = resample_to_grid(labels, SRC, dst, "nearest")
    assert out_l.dtype == np.int16 and set(np.unique(out_l)) <= set(range(5))


@pytest.mark.parametrize(
    "dst",
    [
        Grid(shape=(8, 8, 8), spacing_mm=(5.3, 3.1, 2.3), origin_mm=(-8.0, 2.0, 8.0)),  # coarser, covers the source
        Grid(shape=(40, 30, 25), spacing_mm=(1.0, 1.0, 1.0), origin_mm=(-8.0, 2.0, 8.0)),  # finer
        Grid(shape=(14, 16, 16), spacing_mm=(3.0, 3.0, 3.0), origin_mm=(-12.0, -6.0, 5.0),
             direction=tuple(rot("z", 25.0).reshape(-1))),  # rotated
    ],
)
def test_activity_total_conserved(data, dst):
    # the destination covers the source whole: the totals agree
    src_pts = grid_points(SRC).reshape(-1, 3)
    idx = dst.patient_mm_to_index(src_pts)
    assert np.all((idx >= -0.5) & (idx < np.array(dst.shape) - 0.5))
    out = resample_to_grid(data, SRC, dst, "activity")
    assert out.sum() == pytest.approx(data.sum(), rel=1e-12)
    assert out.min() >= 0.0


def test_activity_partial_field_of_view(data):
    dst = Grid(shape=(5, 20, 20), spacing_mm=(2.0, 2.0, 2.0), origin_mm=(-7.0, 3.0, 16.0))
    out = resample_to_grid(data, SRC, dst, "activity")
    # the source part inside: voxel centres within the destination voxel boxes, counted here by brute force
    inside = 0.0
    for (k, j, i), v in np.ndenumerate(data):
        d = dst.patient_mm_to_index(SRC.index_to_patient_mm([k, j, i]))
        if np.all(d >= -0.5) and np.all(d < np.array(dst.shape) - 0.5):
            inside += v
    assert 0 < inside < data.sum()
    assert out.sum() == pytest.approx(inside, rel=1e-12)


def test_activity_hot_voxel_survives_coarse_grid():
    src = Grid(shape=(20, 20, 20), spacing_mm=(1.0, 1.0, 1.0))
    a = np.zeros(src.shape)
    a[10, 11, 9] = 5.0  # a point source no coarse voxel centre lies next to
    dst = Grid(shape=(5, 5, 5), spacing_mm=(4.5, 4.5, 4.5), origin_mm=(-0.5, -0.5, -0.5))
    out = resample_to_grid(a, src, dst, "activity")
    assert out.sum() == pytest.approx(5.0)
    centroid = (grid_points(dst).reshape(-1, 3) * out.reshape(-1, 1)).sum(axis=0) / out.sum()
    np.testing.assert_allclose(centroid, src.index_to_patient_mm([10, 11, 9]), atol=4.5)  # within one coarse voxel


def test_volume_in_volume_out_and_kind_checks(data):
    vol = Volume(array=data, grid=SRC, units="counts", modality="NM", frame_of_reference_uid="1.2")
    dst = Grid(shape=(6, 8, 8), spacing_mm=(5.0, 3.0, 2.0), origin_mm=SRC.origin_mm)
    out = resample_to_grid(vol, None, dst, "activity")
    assert isinstance(out, Volume) and out.grid == dst and out.frame_of_reference_uid == "1.2"
    with pytest.raises(ImagingError, match="intensive quantity"):
        resample_to_grid(Volume(array=data, grid=SRC, units="Bq/mL"), None, dst, "activity")
    with pytest.raises(ImagingError, match="kind"):
        resample_to_grid(data, SRC, dst, "cubic")
    with pytest.raises(ImagingError, match="needs its source Grid"):
        resample_to_grid(data, None, dst)
    with pytest.raises(ImagingError, match="does not match src_grid"):
        resample_to_grid(data[:-1], SRC, dst)
    with pytest.raises(ImagingError, match="non-finite"):
        resample_to_grid(np.full(SRC.shape, np.nan), SRC, dst, "activity")
