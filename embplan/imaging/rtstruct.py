"""Rasterisation of planar contours (RTSTRUCT ROIs) onto any grid, by our own code.

Contours are closed polygons in patient coordinates (mm, LPS), each lying in a plane; all contours of a
structure lie in parallel planes (the planes of the images they were drawn on). The structure they describe is
the usual "stack of slabs": the fill of the contours on a plane extends half a contour spacing to either side of
the plane. The fill of a plane (issue 12): a contour inside another is a hole, an island inside a hole is solid
again, disjoint contours are separate islands -- the even-odd rule, which DICOM readers use for holes (platipy
PR #271 and dcmrtstruct2nii PR #37 combine the contours of a slice by XOR; dicompyler-core's DVH calculation XORs
the contour masks of a plane [U]) -- and contours whose outlines *cross* (a structure drawn in two overlapping
pieces) are joined: their union, not the even-odd XOR that would cut the overlap out (plastimatch also ORs
overlapping contours unless told to XOR them, ``--xor-contours`` [U]). Formally a contour nested in an odd number
of others is a hole, the others are solid, and a point is inside when more solid than hole contours enclose it;
without crossings this is exactly the even-odd rule. :func:`contour_overlaps` reports holes and crossings (the
image-set builder turns them into notes).

Rasterisation onto a :class:`~embplan.grid.Grid`:

1. When the grid's slices are parallel to the contour planes (any in-plane rotation, flips, head-first or
   feet-first, supine, prone or decubitus orientation), every contour point is mapped into the grid's index
   space by the inverse affine; each plane is filled in (row, column) index space by an exact even-odd scanline
   test at ``supersample`` x ``supersample`` points per voxel. Along the slice axis every point takes the nearest
   contour plane within half a contour spacing (none -> empty), integrated exactly: a grid slice receives each
   plane's fill weighted by the part of its thickness that lies in the plane's slab (a thin slice takes the
   nearest plane; a thick one averages the planes it spans). A single-plane structure is given the thickness of
   the grid slice.
2. When the grid is oblique to the contour planes, the structure is first rasterised (as in 1) onto an auxiliary
   grid aligned with the contour planes and finer than the target, and the fraction is then resampled linearly
   onto the target grid.

Volumes so obtained depend on the target grid only through the sampling of the boundary (at most about the
voxel size); see the tests for measured numbers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import EmbplanError, ImagingError
from ..grid import Grid
from ..progress import timed

__all__ = ["rasterize_structure", "contour_planes", "contour_overlaps", "ContourOverlaps"]

log = logging.getLogger(__name__)

#: Slices are treated as parallel to the contour planes when the cosine of the angle between the slice axis and
#: the contour normal exceeds this (about 0.1 degree); otherwise the oblique path (2) is taken.
ALIGNED_COSINE = math.cos(math.radians(0.1))
#: Two contour planes closer than this (mm) are one plane (DICOM decimal strings round positions).
PLANE_MERGE_TOLERANCE_MM = 0.05
#: Upper bound on the auxiliary grid of the oblique path (voxels); coarser spacing beyond it.
MAX_AUX_VOXELS = 20_000_000
#: Contour coordinates beyond 10 m from the origin are corrupt, not anatomy.
MAX_COORDINATE_MM = 1.0e4


def _as_contours(contours: Sequence[np.ndarray]) -> list[np.ndarray]:
    out = []
    for n, c in enumerate(contours):
        p = np.asarray(c, dtype=float)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ImagingError(f"contour {n}: expected an (N, 3) array of patient coordinates, got shape {p.shape}")
        if not np.all(np.isfinite(p)):
            raise ImagingError(f"contour {n}: non-finite coordinates")
        if p.size and np.abs(p).max() > MAX_COORDINATE_MM:
            raise ImagingError(f"contour {n}: implausible coordinates (|value| > {MAX_COORDINATE_MM:g} mm)")
        if len(p) < 3:
            log.debug("contour %d has %d points: skipped (no area)", n, len(p))
            continue
        out.append(p)
    return out


def _next_vertex(p: np.ndarray) -> np.ndarray:
    """``np.roll(p, -1, axis=0)`` (each vertex's successor, the last's the first), without np.roll's general-case
    overhead (about 5 us a call, on thousands of contours per plan: issue 16)."""
    return np.concatenate((p[1:], p[:1]))


def _newell_normal(p: np.ndarray) -> np.ndarray:
    q = _next_vertex(p)
    return np.array([
        np.sum((p[:, 1] - q[:, 1]) * (p[:, 2] + q[:, 2])),
        np.sum((p[:, 2] - q[:, 2]) * (p[:, 0] + q[:, 0])),
        np.sum((p[:, 0] - q[:, 0]) * (p[:, 1] + q[:, 1])),
    ])  # twice the vector area


def contour_planes(
    contours: Sequence[np.ndarray],
    *,
    planarity_tolerance_mm: float = 0.5,
    reference_axis: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, list[int], float | None]:
    """The common unit normal of the contours, the sorted distinct plane offsets along it, the plane index of each
    contour, and the median spacing between planes (None for a single plane).

    Raises ImagingError for a non-planar contour or contours in non-parallel planes. ``reference_axis`` only
    chooses the sign of the normal (positive projection on it).
    """
    cs = _as_contours(contours)
    if not cs:
        raise ImagingError("contours: no contour with three or more points")
    areas = [_newell_normal(p) for p in cs]
    norms = [float(np.linalg.norm(a)) for a in areas]
    best = int(np.argmax(norms))
    if norms[best] <= 1e-9:
        raise ImagingError("contours: every contour is degenerate (zero area)")
    n = areas[best] / norms[best]
    if reference_axis is not None and float(np.dot(n, reference_axis)) < 0:
        n = -n
    offsets = []
    for idx, (p, a, an) in enumerate(zip(cs, areas, norms, strict=True)):
        if an > 1e-6 * norms[best] and abs(abs(float(np.dot(a / an, n))) - 1.0) > 1e-3:
            raise ImagingError(f"contour {idx}: not parallel to the other contours of the structure")
        d = p @ n
        if float(d.max() - d.min()) > planarity_tolerance_mm:
            raise ImagingError(
                f"contour {idx}: not planar (spread {float(d.max() - d.min()):.3f} mm along the normal "
                f"> {planarity_tolerance_mm} mm)"
            )
        offsets.append(float(d.mean()))
    order = np.argsort(offsets)
    planes: list[float] = []
    members: list[list[float]] = []
    plane_of = [0] * len(cs)
    for idx in order:
        o = offsets[idx]
        if planes and abs(o - members[-1][-1]) <= PLANE_MERGE_TOLERANCE_MM:
            members[-1].append(o)
        else:
            members.append([o])
            planes.append(o)
        plane_of[idx] = len(members) - 1
    plane_pos = np.array([float(np.mean(m)) for m in members])
    spacing = float(np.median(np.diff(plane_pos))) if len(plane_pos) > 1 else None
    return n, plane_pos, plane_of, spacing


def _points_in_polygon(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test of (M, 2) points against one (N, 2) polygon (same 2D coordinates)."""
    x, y = pts[:, 0][:, None], pts[:, 1][:, None]
    a, b = poly, _next_vertex(poly)
    x0, y0, x1, y1 = a[:, 0][None, :], a[:, 1][None, :], b[:, 0][None, :], b[:, 1][None, :]
    straddle = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return (np.count_nonzero(straddle & (x < xc), axis=1) % 2) == 1


def _outlines_cross(p: np.ndarray, q: np.ndarray) -> bool:
    """Whether an edge of polygon p properly intersects an edge of polygon q (2D)."""
    a, b = p, _next_vertex(p)
    c, d = q, _next_vertex(q)

    def orient(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        return np.sign((v[..., 0] - u[..., 0]) * (w[..., 1] - u[..., 1]) - (v[..., 1] - u[..., 1]) * (w[..., 0] - u[..., 0]))

    A, B = a[:, None, :], b[:, None, :]
    C, D = c[None, :, :], d[None, :, :]
    o1, o2 = orient(A, B, C), orient(A, B, D)
    o3, o4 = orient(C, D, A), orient(C, D, B)
    return bool(np.any((o1 * o2 < 0) & (o3 * o4 < 0)))


def _relations(polys: list[np.ndarray]) -> tuple[list[int], list[tuple[int, int]]]:
    """Nesting depth of each polygon (how many others enclose it) and the pairs whose outlines cross."""
    n = len(polys)
    depth = [0] * n
    crossing: list[tuple[int, int]] = []
    boxes = [(p.min(axis=0), p.max(axis=0)) for p in polys]
    for a in range(n):
        for b in range(a + 1, n):
            (alo, ahi), (blo, bhi) = boxes[a], boxes[b]
            if np.any(ahi < blo) or np.any(bhi < alo):
                continue
            if _outlines_cross(polys[a], polys[b]):
                crossing.append((a, b))
            elif _points_in_polygon(polys[a][:1], polys[b])[0]:
                depth[a] += 1
            elif _points_in_polygon(polys[b][:1], polys[a])[0]:
                depth[b] += 1
    return depth, crossing


@dataclass(frozen=True)
class ContourOverlaps:
    """How the contours of one structure sit on their planes: ``holes``, contours enclosed by an odd number of
    others (cut out); ``islands_in_holes``, enclosed by an even number >= 2 (solid again); ``crossings``, the
    offsets (mm along the contour normal) of the planes where two outlines cross (their union is taken)."""

    holes: int = 0
    islands_in_holes: int = 0
    crossings: tuple[float, ...] = ()


def contour_overlaps(contours: Sequence[np.ndarray], *, planarity_tolerance_mm: float = 0.5) -> ContourOverlaps:
    """The holes and crossing outlines among the closed planar contours of one structure (patient mm), per plane
    (see the module docstring for the fill rule they imply). ImagingError as :func:`contour_planes`."""
    cs = _as_contours(contours)
    if len(cs) < 2:
        return ContourOverlaps()
    normal, planes, plane_of, _ = contour_planes(cs, planarity_tolerance_mm=planarity_tolerance_mm)
    u = np.cross(normal, [1.0, 0.0, 0.0])
    if np.linalg.norm(u) < 0.5:
        u = np.cross(normal, [0.0, 1.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(normal, u)
    by_plane: dict[int, list[np.ndarray]] = {}
    for c, p in zip(cs, plane_of, strict=True):
        by_plane.setdefault(p, []).append(np.column_stack([c @ u, c @ v]))
    holes = islands = 0
    crossings: list[float] = []
    for p, polys in sorted(by_plane.items()):
        if len(polys) < 2:
            continue
        depth, crossing = _relations(polys)
        holes += sum(1 for d in depth if d % 2)
        islands += sum(1 for d in depth if d and d % 2 == 0)
        if crossing:
            crossings.append(float(planes[p]))
    return ContourOverlaps(holes=holes, islands_in_holes=islands, crossings=tuple(crossings))


def _fill_even_odd(polys: list[np.ndarray], ny: int, nx: int, s: int) -> tuple[int, int, np.ndarray] | None:
    """Fill of polygons given in (row j, column i) fractional index coordinates: the even-odd rule, or, when
    outlines cross, the nesting rule of the module docstring (union of crossing solid contours).

    Returns (j0, i0, fraction) with ``fraction`` covering rows j0.. and columns i0.. (the polygons' bounding box
    clipped to the grid), or None when the polygons miss the grid.
    """
    allp = np.vstack(polys)
    j0 = max(0, int(math.floor(allp[:, 0].min() + 0.5)))
    j1 = min(ny - 1, int(math.ceil(allp[:, 0].max() - 0.5)))
    i0 = max(0, int(math.floor(allp[:, 1].min() + 0.5)))
    i1 = min(nx - 1, int(math.ceil(allp[:, 1].max() - 0.5)))
    if j1 < j0 or i1 < i0:
        return None
    if len(polys) > 1:
        depth, crossing = _relations(polys)
        if crossing:
            solid = np.zeros(((j1 - j0 + 1) * s, (i1 - i0 + 1) * s), dtype=np.int32)
            hole = np.zeros_like(solid)
            for poly, d in zip(polys, depth, strict=True):
                inside = _samples_inside([poly], j0, j1, i0, i1, s)
                (hole if d % 2 else solid)[inside] += 1
            return j0, i0, _voxel_mean(solid > hole, s)
    return j0, i0, _voxel_mean(_samples_inside(polys, j0, j1, i0, i1, s), s)


def _samples_inside(polys: list[np.ndarray], j0: int, j1: int, i0: int, i1: int, s: int) -> np.ndarray:
    """Even-odd inside test at s x s sample points per voxel of rows j0..j1, columns i0..i1 (boolean array)."""
    nrow, ncol = (j1 - j0 + 1) * s, (i1 - i0 + 1) * s
    sub = (np.arange(s) + 0.5) / s - 0.5
    ys = (np.arange(j0, j1 + 1)[:, None] + sub[None, :]).reshape(-1)
    xs = (np.arange(i0, i1 + 1)[:, None] + sub[None, :]).reshape(-1)
    a = np.vstack(polys)
    b = np.vstack([_next_vertex(p) for p in polys])
    y0, x0, y1, x1 = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
    keep = y0 != y1
    y0, x0, y1, x1 = y0[keep], x0[keep], y1[keep], x1[keep]
    ylo, yhi = np.minimum(y0, y1), np.maximum(y0, y1)
    lo = np.searchsorted(ys, ylo, side="left")  # first row with y >= ylo
    hi = np.searchsorted(ys, yhi, side="left")  # rows with y < yhi (half-open: a vertex is counted once)
    counts = np.maximum(hi - lo, 0)
    total = int(counts.sum())
    if total:
        edge = np.repeat(np.arange(len(counts)), counts)
        start = np.cumsum(counts) - counts
        row = lo[edge] + (np.arange(total) - start[edge])
        yy = ys[row]
        xc = x0[edge] + (yy - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
        col = np.searchsorted(xs, xc, side="right")  # samples right of the crossing see it on their left
        # crossings per sample, modulo 256 (only the parity matters; uint8 keeps the passes below small), stored
        # column by column: the running sum along a row then adds whole contiguous columns (vectorised), 2.5x
        # faster than a cumulative sum along each row
        crossings = np.bincount(col * nrow + row, minlength=(ncol + 1) * nrow).astype(np.uint8)
        crossings = crossings.reshape(ncol + 1, nrow)
    else:
        return np.zeros((nrow, ncol), dtype=bool)
    # even-odd parity; the (rows, columns) view of the column-major result
    return (np.cumsum(crossings[:ncol], axis=0, dtype=np.uint8) & np.uint8(1)).astype(bool).T


def _voxel_mean(inside: np.ndarray, s: int) -> np.ndarray:
    """The mean of each voxel's s x s boolean samples, float32: s strided adds of whole rows of the array as it
    lies in memory (the transpose of a column-major array), then s along the other axis (exact small integers;
    the same float32 values as ``.astype(np.float32).reshape(...).mean(axis=(1, 3))``, faster)."""
    flip = inside.flags.f_contiguous and not inside.flags.c_contiguous
    a = inside.T if flip else inside
    lines = a[0::s].astype(np.uint16)
    for q in range(1, s):
        lines += a[q::s]
    hits = lines[:, 0::s]
    for q in range(1, s):
        hits += lines[:, q::s]
    out = hits.astype(np.float32) / np.float32(s * s)
    return np.ascontiguousarray(out.T) if flip else out


def _slabs(planes: np.ndarray, spacing: float | None, single_plane_half_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Interval [lower, upper) along the normal represented by each contour plane: half a contour spacing to each
    side (half the target slice thickness for a single plane), cut at the midpoint to a closer neighbour."""
    half = 0.5 * spacing if spacing is not None else single_plane_half_mm
    lower = planes - half
    upper = planes + half
    if len(planes) > 1:
        mid = 0.5 * (planes[1:] + planes[:-1])
        upper[:-1] = np.minimum(upper[:-1], mid)
        lower[1:] = np.maximum(lower[1:], mid)
    return lower, upper


def _rasterize_aligned_box(
    cs: list[np.ndarray], grid: Grid, normal: np.ndarray, planes: np.ndarray, plane_of: list[int],
    spacing: float | None, s: int,
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """The fraction inside, in the structure's bounding box of the grid: (the box's index slices, the fractions),
    or None when the structure misses the grid.

    Slices parallel to the contour planes: the fraction of voxel (k, j, i) is the sum over contour planes of
    (length of slice k's extent inside the plane's slab / slice thickness) x (in-plane fill of that plane)."""
    nz, ny, nx = grid.shape
    a = grid.affine
    step = float(np.dot(a[:3, 0], normal))  # signed slice step along the normal; |step| = dz
    base = float(np.dot(a[:3, 3], normal))
    thick = abs(step)
    lower, upper = _slabs(planes, spacing, 0.5 * thick)
    by_plane: dict[int, list[np.ndarray]] = {}
    for c, p in zip(cs, plane_of, strict=True):
        by_plane.setdefault(p, []).append(c)
    fills: dict[int, tuple[int, int, np.ndarray] | None] = {}
    # Grid.patient_mm_to_index's arithmetic, with its inverse matrix built once per structure (not per contour)
    to_index = np.linalg.inv(a[:3, :3]).T
    # which planes weigh on which slices, and the in-plane fill of each plane (computed once)
    weights: list[tuple[int, int, float]] = []
    for k in range(nz):
        centre = base + k * step
        lo, hi = centre - 0.5 * thick, centre + 0.5 * thick
        first = max(0, int(np.searchsorted(upper, lo, side="right")))
        for p in range(first, len(planes)):
            if lower[p] >= hi:
                break
            w = (min(hi, upper[p]) - max(lo, lower[p])) / thick
            if w <= 1e-12:
                continue
            if p not in fills:
                polys = [((np.asarray(c, dtype=float) - a[:3, 3]) @ to_index)[:, 1:] for c in by_plane[p]]
                fills[p] = _fill_even_odd(polys, ny, nx, s)
            if fills[p] is not None:
                weights.append((k, p, w))
    if not weights:
        return None
    # accumulate in the bounding box of the structure only (a liver covers a fraction of a CT grid): the sums are
    # the same, in the same order, as over the whole grid
    boxes = [(f[0], f[1], f[0] + f[2].shape[0], f[1] + f[2].shape[1]) for f in fills.values() if f is not None]
    bj0, bi0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    bj1, bi1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    bk0, bk1 = weights[0][0], weights[-1][0] + 1
    box = np.zeros((bk1 - bk0, bj1 - bj0, bi1 - bi0), dtype=np.float32)
    for k, p, w in weights:
        fill = fills[p]
        assert fill is not None  # weights only name planes whose fill is not empty (built above)
        j0, i0, frac = fill
        box[k - bk0, j0 - bj0:j0 - bj0 + frac.shape[0], i0 - bi0:i0 - bi0 + frac.shape[1]] += np.float32(w) * frac
    np.clip(box, 0.0, 1.0, out=box)
    return (slice(bk0, bk1), slice(bj0, bj1), slice(bi0, bi1)), box


def _rasterize_aligned(
    cs: list[np.ndarray], grid: Grid, normal: np.ndarray, planes: np.ndarray, plane_of: list[int],
    spacing: float | None, s: int,
) -> np.ndarray:
    """:func:`_rasterize_aligned_box` on the whole grid."""
    out = np.zeros(grid.shape, dtype=np.float32)
    found = _rasterize_aligned_box(cs, grid, normal, planes, plane_of, spacing, s)
    if found is not None:
        out[found[0]] = found[1]
    return out


def _aux_grid(cs: list[np.ndarray], grid: Grid, normal: np.ndarray, spacing: float | None) -> Grid | None:
    d = np.asarray(grid.direction, dtype=float).reshape(3, 3)
    axes = [d[:, c] for c in range(3)]
    u = min(axes, key=lambda v: abs(float(np.dot(v, normal))))
    u = u - np.dot(u, normal) * normal
    u /= np.linalg.norm(u)
    v = np.cross(normal, u)
    basis = np.column_stack([u, v, normal])  # columns: i, j, k directions of the auxiliary grid
    fine = min(grid.spacing_mm)
    dk = min(fine, spacing) if spacing is not None else fine
    pts = np.vstack(cs) @ basis  # coordinates along u, v, normal
    lo = pts.min(axis=0) - np.array([fine, fine, dk])
    hi = pts.max(axis=0) + np.array([fine, fine, dk])
    if spacing is not None:
        lo[2] -= 0.5 * spacing
        hi[2] += 0.5 * spacing
    # no need to rasterise beyond the target grid (its voxel boxes, plus a voxel for the interpolation)
    corners = np.array([[k, j, i] for k in (-1, grid.shape[0]) for j in (-1, grid.shape[1]) for i in (-1, grid.shape[2])])
    box = grid.index_to_patient_mm(corners) @ basis
    lo = np.maximum(lo, box.min(axis=0))
    hi = np.minimum(hi, box.max(axis=0))
    if np.any(hi <= lo):
        return None
    sp = np.array([fine, fine, dk], dtype=float)
    n = np.ceil((hi - lo) / sp).astype(int) + 1
    while int(np.prod(n)) > MAX_AUX_VOXELS:
        sp *= 1.25
        n = np.ceil((hi - lo) / sp).astype(int) + 1
    origin = basis @ lo
    try:
        return Grid(shape=(int(n[2]), int(n[1]), int(n[0])), spacing_mm=(float(sp[2]), float(sp[1]), float(sp[0])),
                    origin_mm=tuple(float(x) for x in origin), direction=tuple(float(x) for x in basis.reshape(-1)))
    except EmbplanError as exc:
        raise ImagingError(f"rasterize_structure: cannot build the auxiliary grid: {exc}") from exc


@timed("rasterise structures")
def rasterize_structure(
    contours: Sequence[np.ndarray],
    grid: Grid,
    *,
    supersample: int = 3,
    output: Literal["fraction", "mask"] = "fraction",
    mask_threshold: float = 0.5,
    planarity_tolerance_mm: float = 0.5,
) -> np.ndarray:
    """Rasterise closed planar contours (patient mm) onto ``grid``.

    Returns the fraction of each voxel inside the structure (float32 in [0, 1], ``output="fraction"``) or a
    boolean mask of voxels whose fraction is at least ``mask_threshold`` (``output="mask"``). ``supersample``
    in-plane sample points per voxel edge (the slice axis is integrated exactly). An empty contour list gives an
    empty mask.
    """
    if not isinstance(grid, Grid):
        raise ImagingError(f"grid: expected a Grid, got {type(grid).__name__}")
    if not (isinstance(supersample, int) and 1 <= supersample <= 16):
        raise ImagingError(f"supersample: must be an integer in 1..16, got {supersample!r}")
    if output not in ("fraction", "mask"):
        raise ImagingError(f"output: must be 'fraction' or 'mask', got {output!r}")
    if not (0.0 < mask_threshold <= 1.0):
        raise ImagingError(f"mask_threshold: must be in (0, 1], got {mask_threshold!r}")
    cs = _as_contours(contours)
    if not cs:
        frac = np.zeros(grid.shape, dtype=np.float32)
    else:
        kaxis = grid.affine[:3, 0] / grid.spacing_mm[0]
        normal, planes, plane_of, spacing = contour_planes(
            cs, planarity_tolerance_mm=planarity_tolerance_mm, reference_axis=kaxis
        )
        if abs(float(np.dot(kaxis, normal))) >= ALIGNED_COSINE:
            found = _rasterize_aligned_box(cs, grid, normal, planes, plane_of, spacing, supersample)
            # outside the box the fraction is 0: only the box is compared (a full-grid pass per structure saved)
            out = np.zeros(grid.shape, dtype=bool if output == "mask" else np.float32)
            if output == "mask" and mask_threshold - 1e-6 <= 0.0:
                out[...] = True  # every fraction, 0 included, passes so low a threshold
            elif found is not None:
                out[found[0]] = found[1] >= mask_threshold - 1e-6 if output == "mask" else found[1]
            return out
        else:
            from .resample import resample_to_grid  # local: resample imports volume, not rtstruct

            aux = _aux_grid(cs, grid, normal, spacing)
            if aux is None:
                frac = np.zeros(grid.shape, dtype=np.float32)
            else:
                log.debug("oblique grid: rasterising on auxiliary grid %s then resampling", aux.shape)
                aux_frac = _rasterize_aligned(cs, aux, normal, planes, plane_of, spacing, supersample)
                frac = np.clip(resample_to_grid(aux_frac, aux, grid, "linear"), 0.0, 1.0).astype(np.float32)
    if output == "mask":
        return frac >= mask_threshold - 1e-6
    return frac
