"""Slice series that are not a regular grid: a missing slice, non-uniform slice spacing, a gantry tilt.

A CT or PET series is a stack of planes. The readers of :mod:`embplan.imaging.dicom` need them equally spaced along
the slice normal and stacked straight (each Image Position (Patient) on the normal through the first). When a real
series is not, :func:`regular_stack_plan` decides:

- within tolerance -- every gap between neighbouring slices at most ``max_slice_gap_factor`` times the nominal
  spacing (the median gap; the default 2.0 tolerates one missing slice), and the in-plane offsets of the slices a
  straight line in the slice position (a gantry tilt, PS3.3 C.7.6.2.1.1 "Image Position and Image Orientation":
  a tilted gantry gives an oblique Image Orientation whose slices are offset along the column direction) whose
  angle is at most ``max_gantry_tilt_deg`` -- the series is resampled (:meth:`RegularStackPlan.resample`) onto a
  regular, orthogonal grid with the slices' own orientation: along the normal by linear interpolation between the
  two neighbouring slices, in-plane by bilinear interpolation of each at its own offset. The volume's
  ``meta["geometry_note"]`` says what was done (and the plan's notes show it);
- beyond it -- an :class:`~embplan.errors.ImagingError` naming the slices (file names) and their positions.

Interpolating across one missing slice of a CT at the usual 1-5 mm spacing changes the density only where it changes
within a slice spacing; a wider gap would invent anatomy, which is why it is refused. The tilt limit of 30 degrees is
the largest gantry tilt of current CT scanners ([U]: "+/-30 degrees" in vendor data sheets, not verified here);
dcm2niix and ITK resample tilted series the same way (onto the slice orientation grid).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EmbplanError, ImagingError
from ..grid import Grid

__all__ = ["RegularStackPlan", "regular_stack_plan", "MAX_SLICE_GAP_FACTOR", "MAX_GANTRY_TILT_DEG"]

#: Largest gap between neighbouring slices, as a multiple of the nominal (median) spacing, that is interpolated
#: (2.0: one missing slice). Larger gaps are refused.
MAX_SLICE_GAP_FACTOR: float = 2.0
#: Largest gantry tilt, degrees, that is resampled ([U] +/-30 degrees, the tilt range of current CT gantries).
MAX_GANTRY_TILT_DEG: float = 30.0
#: Positions that agree to this (mm) are on a regular grid (the tolerance of embplan.imaging.dicom).
_UNIFORM_TOL_MM = 0.01
_UNIFORM_TOL_FRACTION = 0.01
#: In-plane offsets below this (mm) are no tilt; residuals of the tilt line above it are no tilt either.
_SHIFT_TOL_MM = 0.05


@dataclass(frozen=True)
class RegularStackPlan:
    """How to put a sorted, irregular stack of slices on ``grid``: slice positions ``s_mm`` along the normal
    (relative to the first), in-plane offsets ``shift_mm`` (n, 2: along the row direction, along the column
    direction) of each slice relative to the first, and the ``note`` that says what and why."""

    items: list[tuple[Path, Any]]
    grid: Grid
    s_mm: np.ndarray
    shift_mm: np.ndarray
    pixel_spacing_mm: tuple[float, float]  # (row spacing dy, column spacing dx)
    note: str

    def resample(self, stack: np.ndarray, fill_value: float) -> tuple[np.ndarray, float]:
        """``stack`` (n source slices, rows, cols, in ``items`` order) on ``grid``; voxels outside the acquired
        field of view get ``fill_value``. Returns the array (float64) and the fraction of voxels filled."""
        src = np.asarray(stack, dtype=np.float64)
        nz, ny, nx = self.grid.shape
        dz = self.grid.spacing_mm[0]
        dy, dx = self.pixel_spacing_mm
        out = np.empty((nz, ny, nx), dtype=np.float64)
        outside = 0
        cache: dict[int, np.ndarray] = {}

        def sample(idx: int) -> np.ndarray:
            if idx not in cache:
                if len(cache) > 2:
                    cache.pop(min(cache))
                sx, sy = self.shift_mm[idx]
                cache[idx] = _shift_bilinear(src[idx], -sy / dy, -sx / dx)
            return cache[idx]

        s = self.s_mm
        for k in range(nz):
            st = k * dz
            i = int(np.clip(np.searchsorted(s, st, side="right") - 1, 0, len(s) - 2))
            w = float(np.clip((st - s[i]) / (s[i + 1] - s[i]), 0.0, 1.0))
            if w <= 0.0:
                v = sample(i)
            elif w >= 1.0:
                v = sample(i + 1)
            else:
                v = (1.0 - w) * sample(i) + w * sample(i + 1)
            bad = ~np.isfinite(v)
            outside += int(np.count_nonzero(bad))
            out[k] = np.where(bad, fill_value, v)
        return out, outside / out.size


def _shift_bilinear(img: np.ndarray, dj: float, di: float) -> np.ndarray:
    """``out[j, i] = img(j + dj, i + di)`` by bilinear interpolation (a pure in-plane translation, exact for a
    field linear in j and i); samples outside the image are NaN. Plain array slicing, no per-pixel coordinates."""
    ny, nx = img.shape
    if abs(dj) < 1e-9 and abs(di) < 1e-9:
        return img
    j0, i0 = int(np.floor(dj)), int(np.floor(di))
    fj, fi = dj - j0, di - i0

    def window(a: int, b: int) -> np.ndarray:
        # img shifted by (a, b) whole pixels, NaN where it leaves the image
        out = np.full((ny, nx), np.nan)
        js, je = max(0, -a), min(ny, ny - a)
        is_, ie = max(0, -b), min(nx, nx - b)
        if js < je and is_ < ie:
            out[js:je, is_:ie] = img[js + a:je + a, is_ + b:ie + b]
        return out

    res = (1 - fj) * (1 - fi) * window(j0, i0)
    if fi > 1e-12:
        res = res + (1 - fj) * fi * window(j0, i0 + 1)
    if fj > 1e-12:
        res = res + fj * (1 - fi) * window(j0 + 1, i0)
        if fi > 1e-12:
            res = res + fj * fi * window(j0 + 1, i0 + 1)
    return res


def regular_stack_plan(
    items: Sequence[tuple[Path, Any]],
    what: str,
    *,
    max_slice_gap_factor: float = MAX_SLICE_GAP_FACTOR,
    max_gantry_tilt_deg: float = MAX_GANTRY_TILT_DEG,
) -> RegularStackPlan | None:
    """None when the single-slice-per-file series ``items`` ((path, header) pairs) is a regular stack, or when its
    headers are inconsistent in ways the strict reader reports itself (orientation, pixel spacing, size, duplicate
    positions); else the plan to resample it, or an ImagingError when it is beyond the tolerances."""
    if not (math.isfinite(max_slice_gap_factor) and max_slice_gap_factor >= 1.0):
        raise ImagingError(f"max_slice_gap_factor: must be >= 1, got {max_slice_gap_factor!r}")
    if not (math.isfinite(max_gantry_tilt_deg) and 0.0 <= max_gantry_tilt_deg < 90.0):
        raise ImagingError(f"max_gantry_tilt_deg: must be in [0, 90), got {max_gantry_tilt_deg!r}")
    if len(items) < 3:
        return None
    try:
        iop = [np.array([float(v) for v in ds.ImageOrientationPatient], dtype=float) for _, ds in items]
        ps = [np.array([float(v) for v in ds.PixelSpacing], dtype=float) for _, ds in items]
        pos = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in items], dtype=float)
        sizes = {(int(ds.Rows), int(ds.Columns)) for _, ds in items}
    except Exception:
        return None  # the strict reader names the missing or malformed attribute
    if (len(sizes) != 1 or pos.shape != (len(items), 3) or any(v.size != 6 for v in iop)
            or any(not np.allclose(v, iop[0], atol=1e-4) for v in iop)
            or any(p.size != 2 or not np.allclose(p, ps[0], rtol=1e-4) for p in ps) or np.any(ps[0] <= 0)):
        return None
    r, c = iop[0][:3], iop[0][3:]
    if abs(np.linalg.norm(r) - 1) > 1e-3 or abs(np.linalg.norm(c) - 1) > 1e-3 or abs(np.dot(r, c)) > 1e-3:
        return None
    r = r / np.linalg.norm(r)
    c = c - np.dot(c, r) * r
    c = c / np.linalg.norm(c)
    n = np.cross(r, c)
    s_abs = pos @ n
    order = np.argsort(s_abs, kind="stable")
    items = [items[i] for i in order]
    pos, s_abs = pos[order], s_abs[order]
    labels = [Path(p).name for p, _ in items]
    s = s_abs - s_abs[0]
    gaps = np.diff(s)
    if np.any(gaps <= _UNIFORM_TOL_MM):
        return None  # duplicate positions: the strict reader names them
    rel = pos - pos[0]
    shift = np.column_stack([rel @ r, rel @ c])  # in-plane offsets (row direction, column direction), mm
    nominal = float(np.median(gaps))
    tol = max(_UNIFORM_TOL_MM, _UNIFORM_TOL_FRACTION * nominal)
    uniform = bool(np.all(np.abs(gaps - nominal) <= tol))
    straight = bool(np.all(np.linalg.norm(shift, axis=1) <= _SHIFT_TOL_MM))
    if uniform and straight:
        return None

    notes: list[str] = []
    tilt_deg = 0.0
    if not straight:
        # a gantry tilt: offsets linear in the slice position
        a = np.column_stack([np.ones_like(s), s])
        coef, *_ = np.linalg.lstsq(a, shift, rcond=None)
        resid = np.linalg.norm(shift - a @ coef, axis=1)
        if resid.max() > _SHIFT_TOL_MM:
            i = int(np.argmax(resid))
            raise ImagingError(
                f"{what}: slice {labels[i]} (position {s_abs[i]:.3f} mm along the normal) is offset "
                f"{float(np.linalg.norm(shift[i])):.3f} mm across the slice plane off the line of a gantry tilt "
                f"(residual {resid[i]:.3f} mm > {_SHIFT_TOL_MM} mm): a sheared or mixed series, not resampled"
            )
        slope = float(np.linalg.norm(coef[1]))
        tilt_deg = math.degrees(math.atan(slope))
        if tilt_deg > max_gantry_tilt_deg:
            raise ImagingError(
                f"{what}: gantry tilt {tilt_deg:.2f} deg (slices {labels[0]} at {s_abs[0]:.3f} mm to {labels[-1]} at "
                f"{s_abs[-1]:.3f} mm offset {float(np.linalg.norm(shift[-1])):.3f} mm across the plane) exceeds "
                f"max_gantry_tilt_deg={max_gantry_tilt_deg:g}"
            )
        notes.append(f"gantry tilt {tilt_deg:.2f} deg: slices offset up to {float(np.abs(shift).max()):.2f} mm in-plane")
    if not uniform:
        worst = int(np.argmax(gaps))
        if gaps[worst] > max_slice_gap_factor * nominal + tol:
            raise ImagingError(
                f"{what}: gap of {gaps[worst]:.3f} mm between slices {labels[worst]} ({s_abs[worst]:.3f} mm) and "
                f"{labels[worst + 1]} ({s_abs[worst + 1]:.3f} mm) is {gaps[worst] / nominal:.2f} x the nominal spacing "
                f"{nominal:.3f} mm, beyond max_slice_gap_factor={max_slice_gap_factor:g} (missing slices; not "
                "interpolated)"
            )
        odd = [i for i, g in enumerate(gaps) if abs(g - nominal) > tol]
        shown = ", ".join(f"{labels[i]}-{labels[i + 1]} {gaps[i]:.3f} mm" for i in odd[:5])
        more = f" and {len(odd) - 5} more" if len(odd) > 5 else ""
        notes.append(f"non-uniform slice spacing (nominal {nominal:.3f} mm; gaps {shown}{more})")
    n_target = int(round(float(s[-1]) / nominal)) + 1
    dz = float(s[-1]) / (n_target - 1)
    rows, cols = next(iter(sizes))
    d = np.column_stack([r, c, n])
    try:
        grid = Grid(shape=(n_target, rows, cols), spacing_mm=(dz, float(ps[0][0]), float(ps[0][1])),
                    origin_mm=tuple(float(v) for v in pos[0]), direction=tuple(float(v) for v in d.reshape(-1)))
    except EmbplanError as exc:
        raise ImagingError(f"{what}: regular grid for resampling: {exc}") from exc
    note = (f"{what}: {'; '.join(notes)}; resampled {len(items)} slices onto a regular grid of {n_target} slices "
            f"{dz:.3f} mm apart (linear between slices, bilinear in-plane)")
    return RegularStackPlan(items=list(items), grid=grid, s_mm=s, shift_mm=shift,
                            pixel_spacing_mm=(float(ps[0][0]), float(ps[0][1])), note=note)
