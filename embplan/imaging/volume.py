"""Image volumes that carry their grid, and the activity calibration of emission images.

A :class:`Volume` is an array in (z, y, x) order together with the :class:`~embplan.grid.Grid` that places it in
patient space (DICOM LPS, mm), its units and where it came from. Every reader in :mod:`embplan.imaging.dicom`
returns one; :func:`embplan.imaging.resample.resample_to_grid` keeps the pair together.

Calibration turns an emission image into activity per voxel (MBq) at an explicit decay reference time:

- :func:`calibrate_patient_relative` -- counts (Tc-99m MAA SPECT or Y-90 bremsstrahlung SPECT) scaled so that
  liver plus lung hold the administered activity. This is the baseline calibration of the EANM dosimetry SOP
  (Chiesa et al., EJNMMI Physics 8:77, 2021, doi:10.1186/s40658-021-00394-3).
- :func:`calibrate_absolute_pet` -- Y-90 PET in Bq/mL, decay-corrected to the administration or to the
  acquisition time as the caller asks, from the DICOM decay-correction fields recorded by the reader.

Both return an :class:`ActivityMap` whose fields state the decay reference, the times and the factors used, so
the plan can record them (Taranis lists the decay-correction reference, DICOM START vs ADMIN, among the
error-prone steps of Y-90 dosimetry).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np

from ..errors import EmbplanError, ImagingError
from ..grid import Grid
from ..nuclides import Y90_HALF_LIFE_H, decay_factor
from ..progress import timed

__all__ = [
    "Volume",
    "Radiopharmaceutical",
    "PetTiming",
    "ActivityMap",
    "DecayReference",
    "grid_from_affine",
    "calibrate_patient_relative",
    "calibrate_absolute_pet",
]

log = logging.getLogger(__name__)

DecayReference = Literal["administration", "acquisition"]
_DECAY_REFERENCES = ("administration", "acquisition")


@dataclass(frozen=True, eq=False)
class Volume:
    """An image array in (z, y, x) order with the grid that places it in patient space.

    ``units`` names what a voxel holds: ``"HU"`` (CT), ``"counts"`` (NM), ``"Bq/mL"`` (PET), ``"Gy"`` or
    ``"relative"`` (RT Dose), ``"1"`` (mask fraction), ``"MBq"`` (activity per voxel). ``meta`` holds what the
    reader found (patient and study identifiers, acquisition datetime, radiopharmaceutical, decay correction,
    source files); readers document their keys.
    """

    array: np.ndarray
    grid: Grid
    units: str
    modality: str = ""
    frame_of_reference_uid: str | None = None
    series_instance_uid: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.grid, Grid):
            raise ImagingError(f"Volume.grid: expected a Grid, got {type(self.grid).__name__}")
        arr = np.asarray(self.array)
        if arr.shape != self.grid.shape:
            raise ImagingError(f"Volume.array: shape {arr.shape} does not match the grid shape {self.grid.shape}")
        object.__setattr__(self, "array", arr)
        object.__setattr__(self, "meta", dict(self.meta))

    def with_array(self, array: np.ndarray, *, grid: Grid | None = None, units: str | None = None) -> Volume:
        """A copy with another array (and optionally another grid or units); identifiers and meta are kept."""
        return Volume(
            array=array,
            grid=self.grid if grid is None else grid,
            units=self.units if units is None else units,
            modality=self.modality,
            frame_of_reference_uid=self.frame_of_reference_uid,
            series_instance_uid=self.series_instance_uid,
            meta=self.meta,
        )


@dataclass(frozen=True)
class Radiopharmaceutical:
    """The Radiopharmaceutical Information Sequence (0054,0016), first item, as read.

    ``total_dose_bq`` is Radionuclide Total Dose (0018,1074), the activity at ``start_datetime``
    (Radiopharmaceutical Start DateTime (0018,1078), i.e. administration). ``start_time_only`` keeps a bare
    Radiopharmaceutical Start Time (0018,1072) when the datetime is missing: without a date it is ambiguous for a
    scan on a later day, so it is never used to compute decay.
    """

    name: str | None = None
    radionuclide: str | None = None
    total_dose_bq: float | None = None
    half_life_s: float | None = None
    start_datetime: datetime | None = None
    start_time_only: str | None = None


@dataclass(frozen=True)
class PetTiming:
    """What PET pixel values refer to in time (PS3.3 C.8.9.1, PET Series and PET Image modules).

    ``decay_correction`` is Decay Correction (0054,1102): ``"START"`` (values decay-corrected to the acquisition
    start, taken from Decay Correction DateTime (0018,9701) or else Series Date/Time, which PS3.3 C.8.9.1 makes the
    reference of all temporally related PET attributes), ``"ADMIN"`` (corrected to the radiopharmaceutical
    administration) or ``"NONE"`` (not corrected: the mean over the frame, starting at ``acquisition_datetime``).
    """

    decay_correction: Literal["START", "ADMIN", "NONE"]
    acquisition_datetime: datetime | None
    decay_correction_datetime: datetime | None = None
    frame_duration_s: float | None = None
    administration_datetime: datetime | None = None
    half_life_s: float | None = None


@dataclass(frozen=True, eq=False)
class ActivityMap:
    """Activity per voxel (MBq) at ``reference_datetime`` (the ``decay_reference`` event), with how it was made.

    - ``method``: ``"patient_relative"`` or ``"absolute_pet"``.
    - ``decay_reference``: ``"administration"`` or ``"acquisition"`` -- the moment the activities refer to.
    - ``decay_factor``: the factor applied to go from the time the image values refer to, to the reference time.
    - ``calibration_factor``: MBq per count (patient-relative) or MBq per (Bq/mL) in one voxel (absolute).
    - ``fraction_outside_liver_lung``: share of counts outside liver and lung (patient-relative only).
    """

    activity_mbq: np.ndarray
    grid: Grid
    method: Literal["patient_relative", "absolute_pet"]
    decay_reference: DecayReference
    reference_datetime: datetime | None
    administration_datetime: datetime | None
    acquisition_datetime: datetime | None
    half_life_h: float
    decay_factor: float
    calibration_factor: float
    total_activity_mbq: float
    administered_activity_mbq: float | None = None
    fraction_outside_liver_lung: float | None = None
    notes: tuple[str, ...] = ()

    def to_volume(self) -> Volume:
        return Volume(array=self.activity_mbq, grid=self.grid, units="MBq", modality="ACTIVITY",
                      meta={"method": self.method, "decay_reference": self.decay_reference,
                            "reference_datetime": self.reference_datetime})


# ----------------------------------------------------------------------------------------------------- geometry
def grid_from_affine(affine: np.ndarray, shape: tuple[int, int, int], *, what: str = "affine") -> Grid:
    """Build a :class:`Grid` from a 4x4 (k, j, i, 1) -> patient (x, y, z, 1) affine (the Grid.affine convention,
    also highdicom's Volume convention). Raises ImagingError when the axes are not orthogonal."""
    a = np.asarray(affine, dtype=float)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise ImagingError(f"{what}: expected a finite 4x4 affine")
    cols = a[:3, :3]
    spacing = np.linalg.norm(cols, axis=0)  # (dz, dy, dx)
    if np.any(spacing <= 0):
        raise ImagingError(f"{what}: zero voxel spacing {tuple(spacing)}")
    unit = cols / spacing
    d = np.column_stack([unit[:, 2], unit[:, 1], unit[:, 0]])  # columns: i, j, k directions
    if not np.allclose(d.T @ d, np.eye(3), atol=1e-4):
        raise ImagingError(f"{what}: the index axes are not orthogonal (sheared grid)")
    try:
        return Grid(shape=tuple(int(n) for n in shape), spacing_mm=tuple(float(s) for s in spacing),
                    origin_mm=tuple(float(v) for v in a[:3, 3]), direction=tuple(float(v) for v in d.reshape(-1)))
    except EmbplanError as exc:
        raise ImagingError(f"{what}: {exc}") from exc


# ----------------------------------------------------------------------------------------------------- calibration
def _as_array_and_grid(data: Volume | np.ndarray, grid: Grid | None, name: str) -> tuple[np.ndarray, Grid]:
    if isinstance(data, Volume):
        if grid is not None and grid != data.grid:
            raise ImagingError(f"{name}: the grid given differs from the volume's own grid")
        return np.asarray(data.array, dtype=float), data.grid
    if grid is None:
        raise ImagingError(f"{name}: a plain array needs its grid (pass grid=...)")
    arr = np.asarray(data, dtype=float)
    if arr.shape != grid.shape:
        raise ImagingError(f"{name}: shape {arr.shape} does not match the grid shape {grid.shape}")
    return arr, grid


def _mask_weights(mask: np.ndarray, grid: Grid, name: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != grid.shape:
        raise ImagingError(f"{name}: shape {m.shape} does not match the image grid shape {grid.shape}")
    w = m.astype(float)
    if not np.all(np.isfinite(w)) or w.min(initial=0.0) < 0.0 or w.max(initial=0.0) > 1.0:
        raise ImagingError(f"{name}: a mask must be boolean or a fraction in [0, 1]")
    return w


def _hours_between(later: datetime, earlier: datetime, what: str) -> float:
    if (later.tzinfo is None) != (earlier.tzinfo is None):
        raise ImagingError(f"{what}: cannot compare a timezone-aware and a naive datetime")
    return (later - earlier).total_seconds() / 3600.0


@timed("calibration", logging.INFO)
def calibrate_patient_relative(
    counts: Volume | np.ndarray,
    liver_mask: np.ndarray,
    lung_mask: np.ndarray,
    administered_activity_mbq: float,
    *,
    grid: Grid | None = None,
    decay_reference: DecayReference = "administration",
    administration_datetime: datetime | None = None,
    acquisition_datetime: datetime | None = None,
    half_life_h: float = Y90_HALF_LIFE_H,
    zero_outside: bool = False,
) -> ActivityMap:
    """Patient-relative calibration (EANM dosimetry SOP, Chiesa et al. 2021, doi:10.1186/s40658-021-00394-3).

    Counts are scaled by one factor so that liver plus lung (the union of the two masks; fractional masks weight
    their voxels) hold ``administered_activity_mbq``. Counts elsewhere are scaled by the same factor (and
    reported as ``fraction_outside_liver_lung``; Taranis warns above 20 %), or set to zero with
    ``zero_outside=True``.

    The administered activity is the activity at administration, so ``decay_reference="administration"``
    (default) gives activities at administration time -- what the cumulated activity of permanently implanted
    microspheres (full decay in situ) needs. ``decay_reference="acquisition"`` decays them to the acquisition time
    (Y-90 half-life ``half_life_h``, ICRP-107, from :mod:`embplan.nuclides`) and needs both datetimes (the
    acquisition time defaults to the volume's ``acquisition_datetime``); an acquisition before administration
    (a Tc-99m MAA scan) has no Y-90 activity to decay and is rejected.
    """
    arr, grid = _as_array_and_grid(counts, grid, "counts")
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):  # a NaN propagates to min and max; an infinity reaches one
        raise ImagingError("counts: non-finite values (NaN or infinity)")
    if lo < 0:
        raise ImagingError(f"counts: negative counts (minimum {lo:.6g}); emission counts cannot be negative")
    a_mbq = float(administered_activity_mbq)
    if not (math.isfinite(a_mbq) and a_mbq > 0):
        raise ImagingError(f"administered_activity_mbq: must be a finite number > 0, got {administered_activity_mbq!r}")
    if decay_reference not in _DECAY_REFERENCES:
        raise ImagingError(f"decay_reference: must be one of {_DECAY_REFERENCES}, got {decay_reference!r}")
    if not (math.isfinite(half_life_h) and half_life_h > 0):
        raise ImagingError(f"half_life_h: must be a finite number > 0, got {half_life_h!r}")
    lm, gm = np.asarray(liver_mask), np.asarray(lung_mask)
    if lm.dtype == bool and gm.dtype == bool and lm.shape == gm.shape == grid.shape:
        # boolean masks (the planner's): the voxels of liver or lung count whole; no float copies of the grid
        inside_b = lm | gm
        inside = float(np.sum(arr, where=inside_b))
        total = float(np.sum(arr))
        if not inside > 0:
            raise ImagingError("counts: no counts inside liver and lung; cannot calibrate patient-relative")
        factor = a_mbq / inside  # MBq per count
        if zero_outside:
            activity = np.multiply(arr, factor, out=np.zeros(arr.shape), where=inside_b)
        else:
            activity = arr * factor
    else:
        liver = _mask_weights(liver_mask, grid, "liver_mask")
        lung = _mask_weights(lung_mask, grid, "lung_mask")
        weight = np.maximum(liver, lung)
        inside = float(np.sum(arr * weight))
        total = float(np.sum(arr))
        if not inside > 0:
            raise ImagingError("counts: no counts inside liver and lung; cannot calibrate patient-relative")
        factor = a_mbq / inside  # MBq per count
        activity = arr * factor
        if zero_outside:
            activity = activity * weight
    fraction_outside = max(0.0, 1.0 - inside / total)

    if acquisition_datetime is None and isinstance(counts, Volume):
        acquisition_datetime = counts.meta.get("acquisition_datetime")
    notes: list[str] = []
    dfac = 1.0
    reference = administration_datetime
    if decay_reference == "acquisition":
        if administration_datetime is None or acquisition_datetime is None:
            raise ImagingError("decay_reference='acquisition' needs administration_datetime and acquisition_datetime")
        hours = _hours_between(acquisition_datetime, administration_datetime, "acquisition_datetime")
        if hours < 0:
            raise ImagingError(
                f"decay_reference='acquisition': the acquisition ({acquisition_datetime}) precedes the administration "
                f"({administration_datetime}); a pre-treatment scan has no therapy activity to decay, use 'administration'"
            )
        dfac = decay_factor(hours, half_life_h)
        activity = activity * dfac
        reference = acquisition_datetime
        notes.append(f"decayed {hours:.3f} h from administration to acquisition (factor {dfac:.6f})")
    return ActivityMap(
        activity_mbq=activity,
        grid=grid,
        method="patient_relative",
        decay_reference=decay_reference,
        reference_datetime=reference,
        administration_datetime=administration_datetime,
        acquisition_datetime=acquisition_datetime,
        half_life_h=float(half_life_h),
        decay_factor=dfac,
        calibration_factor=factor * dfac,
        total_activity_mbq=float(np.sum(activity)),
        administered_activity_mbq=a_mbq,
        fraction_outside_liver_lung=fraction_outside,
        notes=tuple(notes),
    )


def calibrate_absolute_pet(
    volume_bq_ml: Volume | np.ndarray,
    grid: Grid | None = None,
    *,
    decay_reference: DecayReference = "administration",
    timing: PetTiming | None = None,
    administration_datetime: datetime | None = None,
    half_life_h: float | None = None,
    clip_negative: bool = False,
) -> ActivityMap:
    """Absolute calibration of a quantitative PET volume (Bq/mL) into MBq per voxel at the decay reference.

    The time the pixel values refer to comes from ``timing`` (the reader's ``meta["pet_timing"]`` for a Volume):
    ``START`` -> the decay-correction datetime (acquisition start); ``ADMIN`` -> administration; ``NONE`` -> the
    values are the frame mean, so the activity at the frame start is ``mean * lambda T / (1 - exp(-lambda T))``
    (frame duration T from Actual Frame Duration), taken at the acquisition start.
    The activities are then decayed (``A * 2^(-dt / T1/2)``) to ``decay_reference``: ``"administration"``
    (what the cumulated activity of implanted microspheres needs) or ``"acquisition"``.

    ``administration_datetime`` overrides the DICOM Radiopharmaceutical Start DateTime. ``half_life_h`` overrides
    the DICOM Radionuclide Half Life; without either the Y-90 half-life (ICRP-107) is used. Negative voxels are
    rejected unless ``clip_negative=True`` (they are then set to 0 and counted in ``notes``).
    """
    arr, grid = _as_array_and_grid(volume_bq_ml, grid, "volume_bq_ml")
    if isinstance(volume_bq_ml, Volume):
        if volume_bq_ml.units != "Bq/mL":
            raise ImagingError(f"volume_bq_ml: units are {volume_bq_ml.units!r}, absolute calibration needs 'Bq/mL'")
        if timing is None:
            timing = volume_bq_ml.meta.get("pet_timing")
        # issue 17: an image read with require_quantitative_corrections=False may lack them; absolute use needs them
        corrected = volume_bq_ml.meta.get("corrected_image")
        if corrected is not None and "ATTN" not in corrected:
            raise ImagingError(
                f"volume_bq_ml: CorrectedImage (0028,0051) is {'/'.join(corrected) or 'empty'}, without ATTN: not "
                "attenuation corrected, so not an absolute activity concentration"
            )
    if timing is None:
        raise ImagingError("timing: the PET decay-correction record is needed (PetTiming or a Volume from read_pet_series)")
    if decay_reference not in _DECAY_REFERENCES:
        raise ImagingError(f"decay_reference: must be one of {_DECAY_REFERENCES}, got {decay_reference!r}")
    if not np.all(np.isfinite(arr)):
        raise ImagingError("volume_bq_ml: non-finite values (NaN or infinity)")
    notes: list[str] = []
    n_negative = int(np.count_nonzero(arr < 0))
    if n_negative:
        if not clip_negative:
            raise ImagingError(
                f"volume_bq_ml: {n_negative} voxels with negative activity concentration (minimum {arr.min():.6g} Bq/mL)"
            )
        arr = np.clip(arr, 0.0, None)
        notes.append(f"{n_negative} negative voxels set to 0")

    if half_life_h is None:
        if timing.half_life_s is not None and math.isfinite(timing.half_life_s) and timing.half_life_s > 0:
            half_life_h = timing.half_life_s / 3600.0
            notes.append(f"half-life {half_life_h:.4g} h from DICOM Radionuclide Half Life")
        else:
            half_life_h = Y90_HALF_LIFE_H
            notes.append(f"half-life {half_life_h} h (Y-90, ICRP-107): none in the DICOM header")
    if not (math.isfinite(half_life_h) and half_life_h > 0):
        raise ImagingError(f"half_life_h: must be a finite number > 0, got {half_life_h!r}")
    admin = administration_datetime or timing.administration_datetime
    acq = timing.acquisition_datetime

    method = timing.decay_correction
    if method == "START":
        image_time = timing.decay_correction_datetime or acq
        if image_time is None:
            raise ImagingError("timing: DecayCorrection START without a decay-correction or acquisition datetime")
        frame_factor = 1.0
    elif method == "ADMIN":
        image_time = admin
        if image_time is None:
            raise ImagingError("timing: DecayCorrection ADMIN without an administration datetime")
        frame_factor = 1.0
    elif method == "NONE":
        image_time = acq
        if image_time is None:
            raise ImagingError("timing: DecayCorrection NONE without an acquisition datetime")
        t_s = timing.frame_duration_s
        if t_s and t_s > 0:
            lam_t = math.log(2.0) * t_s / (half_life_h * 3600.0)
            frame_factor = lam_t / -math.expm1(-lam_t)
            notes.append(f"frame-mean to frame-start correction {frame_factor:.8f} over {t_s:g} s")
        else:
            frame_factor = 1.0
            notes.append("DecayCorrection NONE without a frame duration: values taken at the acquisition start")
    else:
        raise ImagingError(f"timing.decay_correction: must be START, ADMIN or NONE, got {method!r}")

    reference = admin if decay_reference == "administration" else acq
    if reference is None:
        raise ImagingError(
            f"decay_reference={decay_reference!r}: the {decay_reference} datetime is unknown "
            "(pass administration_datetime=..., or use a header with Radiopharmaceutical Start DateTime)"
        )
    hours = _hours_between(reference, image_time, "decay reference")
    dfac = frame_factor * decay_factor(hours, half_life_h)
    calib = grid.voxel_volume_ml * 1.0e-6  # Bq/mL * mL -> Bq -> MBq
    activity = arr * (calib * dfac)
    admin_mbq = None
    rp = volume_bq_ml.meta.get("radiopharmaceutical") if isinstance(volume_bq_ml, Volume) else None
    if isinstance(rp, Radiopharmaceutical) and rp.total_dose_bq is not None and rp.total_dose_bq > 0:
        admin_mbq = rp.total_dose_bq * 1.0e-6
    notes.append(f"values refer to {image_time} ({method}); decayed {hours:.4f} h to the {decay_reference}")
    return ActivityMap(
        activity_mbq=activity,
        grid=grid,
        method="absolute_pet",
        decay_reference=decay_reference,
        reference_datetime=reference,
        administration_datetime=admin,
        acquisition_datetime=acq,
        half_life_h=float(half_life_h),
        decay_factor=dfac,
        calibration_factor=calib,
        total_activity_mbq=float(np.sum(activity)),
        administered_activity_mbq=admin_mbq,
        notes=tuple(notes),
    )
