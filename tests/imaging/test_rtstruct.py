"""Contour rasterisation: closed-form volumes, orientation, holes, slab extents, grid independence."""

from __future__ import annotations

import math

import numpy as np
import pytest

from embplan.errors import ImagingError
from embplan.grid import Grid
from embplan.imaging.dicom import read_ct_series, read_rtstruct
from embplan.imaging.rtstruct import contour_planes, rasterize_structure

try:
    from . import dicom_factory as fac
except ImportError:  # pragma: no cover
    import dicom_factory as fac

R_MM = 20.0
CENTRE = np.array([4.3, -7.9, 12.6])
SPHERE_ML = 4.0 / 3.0 * math.pi * R_MM**3 / 1000.0


def rot(axis: str, deg: float) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]), "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def centroid(frac: np.ndarray, grid: Grid) -> np.ndarray:
    idx = np.argwhere(frac > 0)
    w = frac[frac > 0].astype(float)
    return (grid.index_to_patient_mm(idx) * w[:, None]).sum(axis=0) / w.sum()


def ct_geometry(position: str) -> fac.Geometry:
    row, col = fac.ORIENTATIONS[position]
    n = np.cross(row, col)
    origin = CENTRE - 30.0 * np.asarray(row) - 30.0 * np.asarray(col) - 11 * 2.5 * n + np.array([0.0, 0.0, 0.37]) * n
    return fac.geometry(position, (22, 60, 60), (2.5, 1.0, 1.0), origin)


@pytest.mark.parametrize("position", ["HFS", "FFS", "HFP", "HFDL"])
def test_sphere_from_rtstruct_on_its_ct(tmp_path, position):
    """The whole chain: CT + RTSTRUCT in one frame of reference, read back, sphere rasterised on the CT grid."""
    study = fac.Study()
    geom = ct_geometry(position)
    fac.write_ct_series(tmp_path / "ct", geom, np.zeros(geom.shape), study)
    fac.write_rtstruct(tmp_path / "rs.dcm", {"Tumour": fac.sphere_contours(geom, CENTRE, R_MM)}, study)
    ct = read_ct_series(tmp_path / "ct")
    rs = read_rtstruct(tmp_path / "rs.dcm", frame_of_reference_uid=ct.frame_of_reference_uid)
    frac = rasterize_structure(rs["Tumour"], ct.grid)
    vol_ml = float(frac.sum()) * ct.grid.voxel_volume_ml
    assert vol_ml == pytest.approx(SPHERE_ML, rel=0.01)
    # orientation: the mask sits where the sphere is, in patient coordinates
    np.testing.assert_allclose(centroid(frac, ct.grid), CENTRE, atol=0.5)
    mask = rasterize_structure(rs["Tumour"], ct.grid, output="mask")
    assert mask.dtype == bool
    assert float(mask.sum()) * ct.grid.voxel_volume_ml == pytest.approx(SPHERE_ML, rel=0.03)


def _sphere():
    return fac.sphere_contours(ct_geometry("HFS"), CENTRE, R_MM)


TARGETS = {
    "ct 1x1x2.5": Grid(shape=(24, 50, 50), spacing_mm=(2.5, 1.0, 1.0), origin_mm=tuple(CENTRE - [25, 25, 30])),
    "iso 2 shifted": Grid(shape=(25, 25, 25), spacing_mm=(2.0, 2.0, 2.0), origin_mm=tuple(CENTRE - [23.3, 24.1, 24.7])),
    "anisotropic 5x4x3": Grid(shape=(12, 14, 18), spacing_mm=(5.0, 4.0, 3.0), origin_mm=tuple(CENTRE - [26, 27, 29])),
    "rotated 30 deg in plane": Grid(shape=(24, 40, 40), spacing_mm=(2.5, 1.5, 1.5), direction=tuple(rot("z", 30).reshape(-1)),
                                    origin_mm=tuple(CENTRE - rot("z", 30) @ np.array([30.0, 30.0, 30.0]))),
    "feet-first prone grid": Grid(shape=(24, 50, 50), spacing_mm=(2.5, 1.0, 1.0), direction=(-1, 0, 0, 0, -1, 0, 0, 0, -1),
                                  origin_mm=tuple(CENTRE + [25, 25, 30])),
    "oblique 20 deg": Grid(shape=(25, 25, 25), spacing_mm=(2.0, 2.0, 2.0), direction=tuple(rot("x", 20).reshape(-1)),
                           origin_mm=tuple(CENTRE - rot("x", 20) @ np.array([24.0, 24.0, 24.0]))),
}


def test_sphere_volume_independent_of_the_target_grid():
    contours = _sphere()
    vols = {}
    for name, grid in TARGETS.items():
        frac = rasterize_structure(contours, grid)
        assert 0.0 <= frac.min() and frac.max() <= 1.0
        vols[name] = float(frac.sum()) * grid.voxel_volume_ml
        assert vols[name] == pytest.approx(SPHERE_ML, rel=0.01), name
        mask = rasterize_structure(contours, grid, output="mask")
        assert float(mask.sum()) * grid.voxel_volume_ml == pytest.approx(SPHERE_ML, rel=0.03), name
        np.testing.assert_allclose(centroid(frac, grid), CENTRE, atol=0.6, err_msg=name)
    spread = (max(vols.values()) - min(vols.values())) / SPHERE_ML
    assert spread < 0.005, vols


def test_ring_with_a_hole():
    geom = ct_geometry("HFS")
    contours = fac.ring_contours(geom, CENTRE, 15.0, 6.0, range(5, 15))  # 10 planes, 2.5 mm apart
    grid = Grid(shape=(30, 40, 40), spacing_mm=(1.25, 1.0, 1.0), origin_mm=tuple(CENTRE - [19.5, 19.5, 20.0]))
    frac = rasterize_structure(contours, grid)
    expected_ml = math.pi * (15.0**2 - 6.0**2) * 10 * 2.5 / 1000.0
    assert float(frac.sum()) * grid.voxel_volume_ml == pytest.approx(expected_ml, rel=0.01)
    centre_idx = np.rint(grid.patient_mm_to_index(geom.slice_position(10) * [0, 0, 1] + CENTRE * [1, 1, 0])).astype(int)
    assert frac[tuple(centre_idx)] == 0.0  # the hole is empty
    ring_idx = np.rint(grid.patient_mm_to_index(geom.slice_position(10) * [0, 0, 1] + CENTRE * [1, 1, 0] + [10.5, 0, 0]))
    assert frac[tuple(ring_idx.astype(int))] == 1.0


def test_two_islands_on_the_same_planes():
    geom = ct_geometry("HFS")
    a = fac.ring_contours(geom, CENTRE + [-6.37, 0.21, 0], 8.0, 0.0, range(8, 12))[0::2]  # outer circles only
    b = fac.ring_contours(geom, CENTRE + [12.55, -3.13, 0], 6.0, 0.0, range(8, 12))[0::2]
    grid = TARGETS["ct 1x1x2.5"]
    frac = rasterize_structure(a + b, grid)
    expected = math.pi * (64.0 + 36.0) * 4 * 2.5 / 1000.0
    assert float(frac.sum()) * grid.voxel_volume_ml == pytest.approx(expected, rel=0.02)


def overlap(z: np.ndarray, half: float, lo: float, hi: float) -> np.ndarray:
    return np.clip(np.minimum(z + half, hi) - np.maximum(z - half, lo), 0.0, None) / (2 * half)


def test_slab_extent_with_unaligned_target_slices():
    """Each point along the slice axis takes the nearest contour plane within half a contour spacing, and nothing
    beyond: a target slice gets the part of its thickness inside the slab [first - 1.25, last + 1.25]."""
    planes = 100.0 + 2.5 * np.arange(6)  # contour planes z = 100 ... 112.5
    square = np.array([[-5, -5], [5, -5], [5, 5], [-5, 5]], float)
    contours = [np.column_stack([square, np.full(4, z)]) for z in planes]
    grid = Grid(shape=(30, 14, 14), spacing_mm=(1.0, 1.0, 1.0), origin_mm=(-6.5, -6.5, 92.3))
    area = rasterize_structure(contours, grid, supersample=1).sum(axis=(1, 2))
    z = grid.origin_mm[2] + np.arange(grid.shape[0])
    np.testing.assert_allclose(area, 100.0 * overlap(z, 0.5, 98.75, 113.75), atol=1e-4)
    assert np.count_nonzero(area == 100.0) == 14 and np.count_nonzero(area) == 16
    thick = Grid(shape=(1, 14, 14), spacing_mm=(5.0, 1.0, 1.0), origin_mm=(-6.5, -6.5, 113.75))
    assert rasterize_structure(contours, thick).sum() == pytest.approx(100.0 * 0.5)  # half inside the slab
    # the same planes seen by a feet-first grid (k along -z) give the same areas, slice for slice reversed
    ff = Grid(shape=(30, 14, 14), spacing_mm=(1.0, 1.0, 1.0), origin_mm=(6.5, -6.5, 92.3 + 29),
              direction=(-1, 0, 0, 0, 1, 0, 0, 0, -1))
    np.testing.assert_allclose(rasterize_structure(contours, ff, supersample=1).sum(axis=(1, 2))[::-1], area, atol=1e-4)


def test_gap_between_contour_planes_stays_empty():
    square = np.array([[-5, -5], [5, -5], [5, 5], [-5, 5]], float)
    zs = [0.0, 2.5, 5.0, 20.0, 22.5]  # two lesions in one ROI, 15 mm apart
    contours = [np.column_stack([square, np.full(4, z)]) for z in zs]
    grid = Grid(shape=(30, 12, 12), spacing_mm=(1.0, 1.0, 1.0), origin_mm=(-5.5, -5.5, -3.0))
    area = rasterize_structure(contours, grid, supersample=1).sum(axis=(1, 2))
    z = -3.0 + np.arange(30)
    expected = 100.0 * (overlap(z, 0.5, -1.25, 6.25) + overlap(z, 0.5, 18.75, 23.75))
    np.testing.assert_allclose(area, expected, atol=1e-4)
    assert np.all(area[(z > 7.0) & (z < 18.0)] == 0.0)


def test_bundled_rtstruct_patient_outline():
    from pydicom.data import get_testdata_file

    rs = read_rtstruct(get_testdata_file("rtstruct.dcm", download=False))
    contours = rs["patient"]

    def shoelace(p):  # an independent area for each (axial) contour
        x, y = p[:, 0], p[:, 1]
        return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))

    _, planes, _, spacing = contour_planes(contours)
    assert spacing == pytest.approx(10.0) and len(planes) == 3
    expected_ml = sum(shoelace(c) for c in contours) * spacing / 1000.0  # 3 x 400 x 300 mm2 x 10 mm
    grid = Grid(shape=(11, 90, 110), spacing_mm=(4.0, 4.0, 4.0), origin_mm=(-218.0, -178.0, -213.0))
    frac = rasterize_structure(contours, grid)
    assert float(frac.sum()) * grid.voxel_volume_ml == pytest.approx(expected_ml, rel=0.01)


def test_empty_outside_and_errors():
    grid = TARGETS["iso 2 shifted"]
    assert rasterize_structure([], grid).sum() == 0.0
    far = [c + [500.0, 0, 0] for c in _sphere()]
    assert rasterize_structure(far, grid).sum() == 0.0
    bent = _sphere()[5].copy()
    bent[0, 2] += 3.0
    with pytest.raises(ImagingError, match="not planar"):
        rasterize_structure([bent], grid)
    tilted = _sphere()[5] @ rot("x", 30).T
    with pytest.raises(ImagingError, match="not parallel"):
        rasterize_structure([_sphere()[6], tilted], grid)
    with pytest.raises(ImagingError, match="supersample"):
        rasterize_structure(_sphere(), grid, supersample=0)
    with pytest.raises(ImagingError, match="output"):
        rasterize_structure(_sphere(), grid, output="labels")
    with pytest.raises(ImagingError, match=r"\(N, 3\)"):
        rasterize_structure([np.zeros((4, 2))], grid)
