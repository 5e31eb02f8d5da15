"""Resampling between grids with the full affines (direction, spacing, origin), by SimpleITK.

:func:`resample_to_grid` maps an array (or a :class:`~embplan.imaging.volume.Volume`) from its grid onto another:

- ``kind="linear"``: trilinear interpolation of an intensive quantity (HU, density, Bq/mL, dose, mask fraction).
- ``kind="nearest"``: nearest neighbour, dtype kept (bool masks stay bool, labels stay integers).
- ``kind="activity"``: an extensive quantity per voxel (counts, MBq). It is turned into a concentration (divided
  by the source voxel volume), low-pass filtered with a box of about the destination voxel size along each
  source axis when the destination is more than twice as coarse (otherwise linear interpolation between voxel
  centres would skip hot voxels), interpolated linearly, multiplied by the destination voxel volume, and finally
  rescaled by one factor so that the total in the destination equals the part of the source whose voxel centres
  lie inside the destination field of view (voxel boxes, half a voxel beyond the outer centres). The total is
  therefore conserved exactly; the shape is that of the linearly interpolated concentration.

Points of the destination outside the source field of view get ``default_value`` (0).
Grid conventions: :class:`embplan.grid.Grid` stores ``direction`` row-major with the patient-space unit vectors of
the index axes i, j, k as its columns -- exactly ITK's ``GetDirection()``; spacing and size are reversed to ITK's
(x, y, z) order here and nowhere else.
"""

from __future__ import annotations

import logging
from typing import Literal, overload

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import EmbplanError, ImagingError
from ..grid import Grid
from ..progress import timed
from .volume import Volume

__all__ = ["ResampleKind", "EXTENSIVE_UNITS", "array_to_sitk", "sitk_to_grid", "resample_to_grid"]

log = logging.getLogger(__name__)

ResampleKind = Literal["linear", "nearest", "activity"]
#: Units of extensive (per-voxel) quantities, the only ones ``kind="activity"`` accepts from a Volume.
EXTENSIVE_UNITS = frozenset({"counts", "Bq", "kBq", "MBq", "GBq", "MBq s", "MBq*s", "Bq s"})
#: The destination must be this many times coarser than the source along a source axis before the
#: anti-alias box filter is applied: linear interpolation between voxel centres sees every source voxel
#: as long as the destination spacing is at most twice the source spacing.
ANTIALIAS_RATIO = 2.0


def array_to_sitk(array: np.ndarray, grid: Grid) -> sitk.Image:
    """A SimpleITK image holding ``array`` (z, y, x) placed by ``grid``."""
    arr = np.asarray(array)
    grid.check_array(arr)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    dz, dy, dx = grid.spacing_mm
    img.SetSpacing((float(dx), float(dy), float(dz)))
    img.SetOrigin(tuple(float(v) for v in grid.origin_mm))
    img.SetDirection(tuple(float(v) for v in grid.direction))
    return img


def sitk_to_grid(image: sitk.Image) -> Grid:
    """The :class:`Grid` of a 3D SimpleITK image."""
    if image.GetDimension() != 3:
        raise ImagingError(f"sitk_to_grid: expected a 3D image, got {image.GetDimension()}D")
    nx, ny, nz = image.GetSize()
    sx, sy, sz = image.GetSpacing()
    try:
        return Grid(shape=(nz, ny, nx), spacing_mm=(sz, sy, sx), origin_mm=tuple(image.GetOrigin()),
                    direction=tuple(image.GetDirection()))
    except EmbplanError as exc:
        raise ImagingError(f"sitk_to_grid: {exc}") from exc


def _resampler(dst: Grid, interpolator: int, default_value: float, pixel_type: int) -> sitk.ResampleImageFilter:
    f = sitk.ResampleImageFilter()
    nz, ny, nx = dst.shape
    dz, dy, dx = dst.spacing_mm
    f.SetSize([int(nx), int(ny), int(nz)])
    f.SetOutputSpacing((float(dx), float(dy), float(dz)))
    f.SetOutputOrigin(tuple(float(v) for v in dst.origin_mm))
    f.SetOutputDirection(tuple(float(v) for v in dst.direction))
    f.SetTransform(sitk.Transform(3, sitk.sitkIdentity))
    f.SetInterpolator(interpolator)
    f.SetDefaultPixelValue(float(default_value))
    f.SetOutputPixelType(pixel_type)
    return f


#: Pixel types SimpleITK interpolates as they are: ITK's linear interpolator computes in double for each of them
#: (NumericTraits<T>::RealType), so converting them to float64 first (a copy of the whole volume: 630 MB for a
#: 512 x 512 x 300 CT) gives the same numbers; tests check that it does.
_AS_IS = (np.float32, np.float64, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32)


def _linear(arr: np.ndarray, src: Grid, dst: Grid, default_value: float) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype == np.bool_:
        a = a.view(np.uint8)
    elif a.dtype.type not in _AS_IS:
        a = a.astype(np.float64)
    img = array_to_sitk(a, src)
    out = _resampler(dst, sitk.sitkLinear, default_value, sitk.sitkFloat64).Execute(img)
    return sitk.GetArrayFromImage(out)


def _nearest(arr: np.ndarray, src: Grid, dst: Grid, default_value: float) -> np.ndarray:
    a = np.asarray(arr)
    is_bool = a.dtype == np.bool_
    work = a.astype(np.uint8) if is_bool else a
    img = array_to_sitk(work, src)
    out = _resampler(dst, sitk.sitkNearestNeighbor, default_value, img.GetPixelID()).Execute(img)
    res = sitk.GetArrayFromImage(out)
    return res.astype(bool) if is_bool else res


def _box_sizes(src: Grid, dst: Grid) -> tuple[int, int, int]:
    """Odd box sizes (z, y, x, in source voxels) about one destination voxel wide along each source axis."""
    ds = np.asarray(src.direction, dtype=float).reshape(3, 3)  # columns: i, j, k
    dd = np.asarray(dst.direction, dtype=float).reshape(3, 3)
    src_sp = np.array(src.spacing_mm[::-1])  # (dx, dy, dz) for axes i, j, k
    dst_sp = np.array(dst.spacing_mm[::-1])
    extent = np.abs(ds.T @ dd) @ dst_sp  # extent of a destination voxel along each source axis (i, j, k)
    ratio = extent / src_sp
    sizes = [int(2 * np.floor(r / 2.0) + 1) if r > ANTIALIAS_RATIO else 1 for r in ratio]
    return sizes[2], sizes[1], sizes[0]


def _source_inside_mask(src: Grid, dst: Grid) -> np.ndarray:
    """Boolean (z, y, x) array on ``src``: voxel centre inside the destination field of view."""
    nz, ny, nx = src.shape
    to_dst = np.linalg.inv(dst.affine) @ src.affine  # (k, j, i, 1)_src -> (k, j, i, 1)_dst
    jj, ii = np.meshgrid(np.arange(ny, dtype=float), np.arange(nx, dtype=float), indexing="ij")
    base = to_dst[:3, 1:2].T * jj.reshape(-1, 1) + to_dst[:3, 2:3].T * ii.reshape(-1, 1) + to_dst[:3, 3]
    limits = np.array(dst.shape, dtype=float) - 0.5
    inside = np.empty(src.shape, dtype=bool)
    for k in range(nz):
        idx = base + k * to_dst[:3, 0]
        inside[k] = np.all((idx >= -0.5) & (idx < limits), axis=1).reshape(ny, nx)
    return inside


def _activity(arr: np.ndarray, src: Grid, dst: Grid) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ImagingError("resample_to_grid: the activity array holds non-finite values")
    total_in = float(a[_source_inside_mask(src, dst)].sum())
    conc = a / src.voxel_volume_mm3
    sizes = _box_sizes(src, dst)
    if any(s > 1 for s in sizes):
        conc = ndimage.uniform_filter(conc, size=sizes, mode="reflect")
    out = _linear(conc, src, dst, 0.0) * dst.voxel_volume_mm3
    total_out = float(out.sum())
    if total_in == 0.0:
        return np.zeros(dst.shape)
    if total_out == 0.0:
        raise ImagingError(
            "resample_to_grid: activity inside the destination field of view was lost by interpolation "
            f"(source part {total_in:.6g}, resampled 0)"
        )
    scale = total_in / total_out
    log.debug("activity resampling: box %s, total in FOV %.6g, rescale %.6f", sizes, total_in, scale)
    return out * scale


@overload
def resample_to_grid(data: Volume, src_grid: Grid | None, dst_grid: Grid, kind: ResampleKind = ..., *,
                     default_value: float = ...) -> Volume: ...
@overload
def resample_to_grid(data: np.ndarray, src_grid: Grid | None, dst_grid: Grid, kind: ResampleKind = ..., *,
                     default_value: float = ...) -> np.ndarray: ...
@timed("resampling")
def resample_to_grid(
    data: Volume | np.ndarray,
    src_grid: Grid | None,
    dst_grid: Grid,
    kind: ResampleKind = "linear",
    *,
    default_value: float = 0.0,
) -> Volume | np.ndarray:
    """Resample ``data`` from ``src_grid`` onto ``dst_grid`` (see the module docstring for ``kind``).

    ``data`` may be a :class:`Volume` (then ``src_grid`` may be None or must equal the volume's grid, and a
    Volume on ``dst_grid`` comes back) or an array (then ``src_grid`` is required and an array comes back).
    """
    if not isinstance(dst_grid, Grid):
        raise ImagingError(f"dst_grid: expected a Grid, got {type(dst_grid).__name__}")
    if kind not in ("linear", "nearest", "activity"):
        raise ImagingError(f"kind: must be 'linear', 'nearest' or 'activity', got {kind!r}")
    volume = data if isinstance(data, Volume) else None
    if volume is not None:
        if src_grid is not None and src_grid != volume.grid:
            raise ImagingError("src_grid: differs from the volume's own grid")
        src_grid = volume.grid
        arr = volume.array
        if kind == "activity" and volume.units not in EXTENSIVE_UNITS:
            raise ImagingError(
                f"kind='activity' conserves totals of per-voxel quantities; the volume holds {volume.units!r} "
                "(an intensive quantity: use kind='linear')"
            )
    else:
        if not isinstance(src_grid, Grid):
            raise ImagingError("src_grid: a plain array needs its source Grid")
        arr = np.asarray(data)
    if np.shape(arr) != src_grid.shape:
        raise ImagingError(f"resample_to_grid: array shape {np.shape(arr)} does not match src_grid {src_grid.shape}")
    try:
        if kind == "nearest":
            out = _nearest(arr, src_grid, dst_grid, default_value)
        elif kind == "linear":
            if np.asarray(arr).dtype.kind not in "biuf":
                raise ImagingError(f"resample_to_grid: cannot interpolate dtype {np.asarray(arr).dtype}")
            out = _linear(arr, src_grid, dst_grid, default_value)
        else:
            out = _activity(arr, src_grid, dst_grid)
    except ImagingError:
        raise
    except RuntimeError as exc:  # SimpleITK reports its errors as RuntimeError
        raise ImagingError(f"resample_to_grid: SimpleITK failed: {exc}") from exc
    if volume is not None:
        return volume.with_array(out, grid=dst_grid)
    return out
