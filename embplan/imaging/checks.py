"""Consistency checks of a DICOM image set before it becomes a plan (issue 12, "Silent wrong doses from DICOM").

Each check is cheap and certain, and fails with an :class:`~embplan.errors.ImagingError` that names the structure,
the files or the attribute and the measured value:

- **identity** (:func:`check_identity`): Patient ID (0010,0020) of the CT, the SPECT/PET and the RTSTRUCT/SEG must
  be one, and the case's (``patient.id``, or ``dosimetry.images.dicom.dicom_patient_id`` when the case names the
  images' id explicitly); the frames of reference are compared by the readers and the image-set builder.
- **coverage** (:func:`check_coverage`): the liver and lung ROIs lie inside the CT's field of view, the liver
  inside the dosimetry grid (``structure_inside_ct_min_fraction``): a CT placed beside the SPECT, whose voxels
  would be read as air, never plans.
- **anatomy** (:func:`check_anatomy`): the mean CT number inside the liver, the lungs and the body lies in the
  range of that tissue (``ct_*_mean_hu_*`` in :class:`~embplan.thresholds.Thresholds`, with their sources): a
  wrong rescale, swapped structure roles or the CT of another region fail here.
- **activity alignment** (:func:`check_activity_alignment`): the SPECT/PET counts sit in the liver and lung ROIs;
  moving the ROIs by more than ``activity_alignment_tolerance_mm`` must not capture more of them.
- **alignment** (:func:`check_lung_alignment`): the lung ROIs are where the CT's aerated lung is. The aerated
  fraction of the lung ROIs, moved by every shift up to ``max_shift_mm``, is largest at (or within
  ``lung_alignment_tolerance_mm`` of) no shift; otherwise the CT is shifted against the structures (and the
  SPECT, which shares their frame of reference). Lungs are the one organ whose edge is certain on any CT
  (air against tissue), in every direction (diaphragm, chest wall, mediastinum).

The thresholds come from the case's effective :class:`~embplan.thresholds.Thresholds` (overridable per case).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np

from ..errors import ImagingError
from ..grid import Grid
from ..thresholds import Thresholds

__all__ = [
    "check_identity",
    "check_coverage",
    "check_anatomy",
    "check_lung_alignment",
    "check_activity_alignment",
    "fraction_of_points_inside",
    "ALIGNMENT_MAX_SHIFT_MM",
    "ALIGNMENT_WORK_VOXEL_MM",
]

log = logging.getLogger(__name__)

#: The alignment search tries every shift up to this far (mm, per axis); a misalignment beyond it shows as
#: implausible lung CT numbers instead.
ALIGNMENT_MAX_SHIFT_MM: float = 40.0
#: The alignment search runs on voxels of at least this size (finer grids are block-averaged first): cost, not
#: accuracy (the tolerance is 8 mm).
ALIGNMENT_WORK_VOXEL_MM: float = 4.0


# ----------------------------------------------------------------------------------------------------- identity
def check_identity(expected_patient_id: str, expected_field: str, ids: Mapping[str, tuple[str | None, str]]) -> None:
    """Every ``ids`` entry ``role -> (PatientID, file)`` must equal ``expected_patient_id`` (the case's, named by
    ``expected_field``). ImagingError listing each image whose Patient ID (0010,0020) differs."""
    bad = [(role, pid, f) for role, (pid, f) in ids.items() if (pid or "") != expected_patient_id]
    if bad:
        desc = "; ".join(f"{role} {f} has PatientID (0010,0020) {pid or ''!r}" for role, pid, f in bad)
        raise ImagingError(
            f"{expected_field}: the images are not of patient {expected_patient_id!r}: {desc}. Set "
            "dosimetry.images.dicom.dicom_patient_id to the images' Patient ID if the case id differs on purpose"
        )


# ----------------------------------------------------------------------------------------------------- coverage
def _pct(frac: float) -> str:
    """A fraction as a percentage rounded down (94.96 % prints 94.9 %, never the 95 % it failed to reach)."""
    return f"{math.floor(frac * 1000.0) / 10.0:.1f}%"


def fraction_of_points_inside(points_mm: np.ndarray, grid: Grid, *, margin_voxels: float = 0.5) -> float:
    """Fraction of patient points (N, 3; x, y, z mm) inside ``grid``'s voxel boxes (index in
    [-margin, n - 1 + margin] on every axis). 1.0 for no points."""
    pts = np.asarray(points_mm, dtype=float).reshape(-1, 3)
    if not len(pts):
        return 1.0
    idx = grid.patient_mm_to_index(pts)
    n = np.asarray(grid.shape, dtype=float)
    inside = np.all((idx >= -margin_voxels) & (idx <= n - 1 + margin_voxels), axis=1)
    return float(np.mean(inside))


def _within(mask: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """``mask & inside``, without the pass and the new array when every voxel is inside (a CT on the dosimetry
    grid itself)."""
    inside = np.asarray(inside, dtype=bool)
    return np.asarray(mask, dtype=bool) if inside.all() else np.asarray(mask, dtype=bool) & inside


def check_coverage(
    th: Thresholds,
    *,
    masks_inside_ct: Mapping[str, tuple[np.ndarray, np.ndarray]],
    contour_points: Mapping[str, np.ndarray] | None,
    ct_grid: Grid,
    dose_grid: Grid,
    field: str,
) -> list[str]:
    """Liver and lungs inside the CT (and the liver inside the dosimetry grid).

    ``masks_inside_ct``: structure -> (mask on the dosimetry grid, boolean map of the dosimetry voxels inside the
    CT); ``contour_points``: structure -> contour vertices (RTSTRUCT), which also reveal the parts of a structure
    outside the dosimetry grid (rasterisation cuts them off). Returns notes; raises ImagingError naming the
    structure and the fraction."""
    need = th.structure_inside_ct_min_fraction
    notes: list[str] = []
    for name, (mask, inside) in masks_inside_ct.items():
        n = int(np.count_nonzero(mask))
        if n == 0:
            continue
        frac = float(np.count_nonzero(_within(mask, inside))) / n
        if frac < need:
            raise ImagingError(
                f"{field}.structures.{name}: only {_pct(frac)} of the {name} ROIs lie inside the CT's field of view "
                f"(at least {need:.0%} required, thresholds.structure_inside_ct_min_fraction): the CT does not "
                "cover the structures (wrong Image Position/Orientation, or another CT)"
            )
    for name, pts in (contour_points or {}).items():
        frac_ct = fraction_of_points_inside(pts, ct_grid)
        if frac_ct < need:
            raise ImagingError(
                f"{field}.structures.{name}: only {_pct(frac_ct)} of the {name} contour points lie inside the CT's "
                f"field of view (at least {need:.0%} required, thresholds.structure_inside_ct_min_fraction)"
            )
        frac_grid = fraction_of_points_inside(pts, dose_grid)
        if name == "liver" and frac_grid < need:
            raise ImagingError(
                f"{field}.structures.liver: only {_pct(frac_grid)} of the liver contour points lie inside the "
                f"dosimetry grid (at least {need:.0%} required): the activity image does not cover the liver"
            )
        if frac_grid < 1.0:
            notes.append(f"{1 - frac_grid:.1%} of the {name} contour points lie outside the dosimetry grid: "
                         f"the {name} mask holds the part inside.")
    return notes


# ----------------------------------------------------------------------------------------------------- anatomy
def _mean_hu(ct_hu: np.ndarray, mask: np.ndarray) -> float | None:
    sel = np.asarray(ct_hu)[mask]
    return float(np.mean(sel, dtype=np.float64)) if sel.size else None


def check_anatomy(
    th: Thresholds, *, ct_hu: np.ndarray, inside_ct: np.ndarray, liver: np.ndarray, lungs: np.ndarray, field: str
) -> dict[str, float]:
    """Mean CT number of the liver, the lungs and the body (voxels inside the CT above ``ct_body_threshold_hu``)
    against their plausible ranges; returns the means (HU); ImagingError naming the structure and the value."""
    out: dict[str, float] = {}
    checks = (
        ("liver", _within(liver, inside_ct), th.ct_liver_mean_hu_min, th.ct_liver_mean_hu_max, "ct_liver_mean_hu"),
        ("lungs", _within(lungs, inside_ct), th.ct_lung_mean_hu_min, th.ct_lung_mean_hu_max, "ct_lung_mean_hu"),
        ("body", _within(np.asarray(ct_hu) > th.ct_body_threshold_hu, inside_ct), th.ct_body_mean_hu_min,
         th.ct_body_mean_hu_max, "ct_body_mean_hu"),
    )
    for name, mask, lo, hi, key in checks:
        m = _mean_hu(ct_hu, mask)
        if m is None:
            if name == "body":
                raise ImagingError(
                    f"{field}.ct: no voxel of the dosimetry grid inside the CT is above {th.ct_body_threshold_hu:g} "
                    "HU: the CT holds no body where the activity image is"
                )
            continue
        out[name] = m
        if not lo <= m <= hi:
            where = f"{field}.structures.{name}" if name != "body" else f"{field}.ct"
            raise ImagingError(
                f"{where}: mean CT number of the {name} {m:.0f} HU is outside the plausible range [{lo:g}, {hi:g}] "
                f"HU (thresholds.{key}_min/_max): wrong Rescale Slope/Intercept, structures given the wrong role, "
                "or a CT that does not show these structures"
            )
    return out


# ----------------------------------------------------------------------------------------------------- alignment
def _nonzero_bounds(a: np.ndarray) -> tuple[list[int], list[int]] | None:
    """(first, last) index of the non-zero voxels of ``a`` per axis, or None when ``a`` is all zero."""
    lo: list[int] = []
    hi: list[int] = []
    for ax in range(a.ndim):
        other = tuple(i for i in range(a.ndim) if i != ax)
        idx = np.flatnonzero(np.any(a, axis=other))
        if not idx.size:
            return None
        lo.append(int(idx[0]))
        hi.append(int(idx[-1]))
    return lo, hi


def _block_reduce(a: np.ndarray, f: tuple[int, int, int]) -> np.ndarray:
    """Mean of each f0 x f1 x f2 block (float64) of an array whose shape is a multiple of ``f``, summed one axis at
    a time from strided views (numpy reduces a short inner axis slowly). Boolean input is counted in integers, so
    its block means are exact fractions."""
    prod = math.prod(f)
    b = a.view(np.uint8) if a.dtype == bool else a
    acc = (np.uint8 if prod < 256 else np.int64) if a.dtype == bool else np.float64
    for ax, k in enumerate(f):
        if k == 1:
            continue
        parts = [b[tuple(slice(o, None, k) if i == ax else slice(None) for i in range(3))] for o in range(k)]
        s = np.add(parts[0], parts[1], dtype=acc)
        for part in parts[2:]:
            s += part
        b = s
    out = np.asarray(b, dtype=np.float64)
    return out / float(prod) if prod > 1 else out


def _best_shift(
    weights: np.ndarray, mask: np.ndarray, grid: Grid, max_shift_mm: float, *, per: str = "mask"
) -> tuple[float, float, tuple[float, float, float]]:
    """Overlap sum(weights where mask moved by s), divided by sum(mask) (``per="mask"``) or by sum(weights)
    (``per="weights"``), for every shift s up to ``max_shift_mm`` (per axis, whole voxels of at least
    :data:`ALIGNMENT_WORK_VOXEL_MM`): (overlap in place, best overlap, best shift in patient mm (x, y, z)).
    ``mask`` must have a voxel (in the part of the grid that whole work voxels cover).

    Work voxels are blocks of f0 x f1 x f2 grid voxels from index 0 (a remainder at the far edge is left out); only
    the blocks within the shift range of the mask's bounding box are reduced. The overlaps of every shift come from
    one circular cross-correlation (FFT) of that box, zero-padded by at least the shift range on every axis so that
    no shift within the range wraps onto the mask: each equals the direct sum over the box (and the box holds every
    voxel the moved mask can reach)."""
    from scipy import fft as sfft

    sp = np.asarray(grid.spacing_mm, dtype=float)
    fz, fy, fx = (max(1, int(ALIGNMENT_WORK_VOXEL_MM // s)) for s in sp)
    f = (fz, fy, fx)
    nb = [s // k for s, k in zip(mask.shape, f, strict=True)]  # whole work voxels per axis
    full = tuple(slice(0, n * k) for n, k in zip(nb, f, strict=True))
    wsp = sp * np.asarray(f)
    r = [int(math.ceil(max_shift_mm / s)) for s in wsp]
    bounds = _nonzero_bounds(np.asarray(mask)[full])
    if bounds is None:
        raise ValueError("_best_shift: the mask has no voxel")
    lo = [max(0, b // k - rr) for b, k, rr in zip(bounds[0], f, r, strict=True)]
    hi = [min(n, b // k + 1 + rr) for b, k, n, rr in zip(bounds[1], f, nb, r, strict=True)]
    box = tuple(slice(a_ * k, b_ * k) for a_, b_, k in zip(lo, hi, f, strict=True))
    mc = _block_reduce(np.asarray(mask)[box], f)
    ac = _block_reduce(np.asarray(weights)[box], f)
    if per == "mask":
        total = float(mc.sum())
    else:
        w = np.asarray(weights)[full]
        w_sum = float(np.sum(w, dtype=np.float64) if w.dtype != bool else np.count_nonzero(w))
        total = w_sum / float(math.prod(f))  # the sum of the block means over the whole grid
    # overlap(s) = sum_x M(x - s) A(x) for |s| <= r: a circular correlation of size >= box + r does not wrap
    shape = [sfft.next_fast_len(max(c + rr, 2 * rr + 1), real=True) for c, rr in zip(mc.shape, r, strict=True)]
    spec = sfft.rfftn(ac, s=shape, workers=-1)
    spec *= np.conj(sfft.rfftn(mc, s=shape, workers=-1))
    corr = sfft.irfftn(spec, s=shape, workers=-1)
    idx = [np.arange(-rr, rr + 1) % n for rr, n in zip(r, shape, strict=True)]
    win = corr[np.ix_(*idx)] / total
    at0 = float(win[r[0], r[1], r[2]])
    best = tuple(int(i) for i in np.unravel_index(int(np.argmax(win)), win.shape))
    if float(win[best]) <= at0 + 1e-12:
        best = (r[0], r[1], r[2])
    shift_vox = (np.asarray(best, dtype=float) - np.asarray(r, dtype=float)) * np.asarray(f)  # grid voxels (k, j, i)
    d = np.asarray(grid.direction, dtype=float).reshape(3, 3)  # columns: unit vectors of i, j, k
    shift_mm = d @ (shift_vox[::-1] * sp[::-1])
    return at0, float(win[best]), (float(shift_mm[0]), float(shift_mm[1]), float(shift_mm[2]))


def lung_alignment_profile(
    th: Thresholds, *, ct_hu: np.ndarray, inside_ct: np.ndarray, lungs: np.ndarray, grid: Grid,
    max_shift_mm: float = ALIGNMENT_MAX_SHIFT_MM,
) -> tuple[float, float, tuple[float, float, float]] | None:
    """(aerated fraction of the lung ROIs in place, best aerated fraction over all shifts, that shift in patient mm
    (x, y, z)); None when there are no lung voxels inside the CT."""
    lungs = _within(lungs, inside_ct)
    if not lungs.any():
        return None
    # all air inside the CT, the air outside the body included: a thin chest wall sampled on a coarse grid (one
    # 8 mm voxel of fat averaged with outside air) joins the lungs to the outside air, so they cannot be told apart
    # by connectivity; a misplaced ROI gains from outside air only once moved past the chest wall.
    air = _within(np.asarray(ct_hu) < th.lung_aerated_hu, inside_ct)
    return _best_shift(air, lungs, grid, max_shift_mm)


def check_activity_alignment(
    th: Thresholds, *, activity: np.ndarray, liver: np.ndarray, lungs: np.ndarray, grid: Grid, field: str,
    label: str, max_shift_mm: float = ALIGNMENT_MAX_SHIFT_MM,
) -> dict[str, float] | None:
    """The activity image against the structures (drawn on the CT): the share of all counts inside the liver and
    lung ROIs must not grow by ``activity_alignment_min_gain_fraction`` when the ROIs are moved by more than
    ``activity_alignment_tolerance_mm``. Tc-99m MAA (and a Y-90 image) lies in the perfused liver and the lungs, so a
    SPECT shifted against the CT moves counts out of them (issue 12, found by tests/imaging/test_dicom_set_fuzz.py:
    a SPECT shifted 21 mm changed the tumour dose 339 -> 215 Gy). Returns the measurement (recorded with the plan)."""
    act = np.asarray(activity, dtype=np.float64)
    if act.size and float(act.min()) < 0.0:  # the image set has clipped them already: no copy then
        act = np.clip(act, 0.0, None)
    total = float(act.sum())
    roi = np.asarray(liver, dtype=bool) | np.asarray(lungs, dtype=bool)
    if not total > 0 or not roi.any():
        return None
    at0, best, shift = _best_shift(act, roi, grid, max_shift_mm, per="weights")  # share of all counts in the ROIs
    length = float(np.linalg.norm(shift))
    if length > th.activity_alignment_tolerance_mm and best - at0 >= th.activity_alignment_min_gain_fraction:
        raise ImagingError(
            f"{field}: the {label} does not line up with the liver and lung ROIs: they hold {at0:.0%} of its counts "
            f"where they are, {best:.0%} when moved by ({shift[0]:+.1f}, {shift[1]:+.1f}, {shift[2]:+.1f}) mm "
            f"(x, y, z; {length:.1f} mm > thresholds.activity_alignment_tolerance_mm "
            f"{th.activity_alignment_tolerance_mm:g} mm): the {label} is shifted against the CT and the structures "
            "(register them first)"
        )
    return {"counts_in_liver_and_lungs_fraction": at0, "best_fraction": best, "best_shift_mm": length}


def check_lung_alignment(
    th: Thresholds, *, ct_hu: np.ndarray, inside_ct: np.ndarray, lungs: np.ndarray, grid: Grid, field: str,
) -> dict[str, float] | None:
    """ImagingError when the lung ROIs match the CT's aerated lung better after a shift longer than
    ``lung_alignment_tolerance_mm`` (by at least ``lung_alignment_min_gain_fraction``). Returns the measured
    fractions and shift (recorded with the plan)."""
    prof = lung_alignment_profile(th, ct_hu=ct_hu, inside_ct=inside_ct, lungs=lungs, grid=grid)
    if prof is None:
        return None
    at0, best, shift = prof
    length = float(np.linalg.norm(shift))
    if length > th.lung_alignment_tolerance_mm and best - at0 >= th.lung_alignment_min_gain_fraction:
        raise ImagingError(
            f"{field}.structures.lungs: the lung ROIs do not line up with the CT's lungs: {at0:.0%} of them are "
            f"aerated (< {th.lung_aerated_hu:g} HU) where they are, {best:.0%} when moved by "
            f"({shift[0]:+.1f}, {shift[1]:+.1f}, {shift[2]:+.1f}) mm (x, y, z; {length:.1f} mm > "
            f"thresholds.lung_alignment_tolerance_mm {th.lung_alignment_tolerance_mm:g} mm): the CT is shifted "
            "against the structures and the activity image (Image Position (Patient) (0020,0032)?)"
        )
    return {"aerated_fraction": at0, "best_aerated_fraction": best, "best_shift_mm": length}
