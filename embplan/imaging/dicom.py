"""DICOM readers: CT, NM (SPECT), PET series, RT Dose, RTSTRUCT contours and DICOM SEG masks.

Every reader returns arrays in (z, y, x) order with their :class:`~embplan.grid.Grid` (a
:class:`~embplan.imaging.volume.Volume`), and raises :class:`~embplan.errors.ImagingError` -- naming the file,
the tag, the slice gap or the UIDs -- for anything unreadable, inconsistent or implausible. No other exception
escapes a public function here (pydicom, highdicom and SimpleITK errors are wrapped).

Geometry (PS3.3 C.7.6.2, Image Plane module): Image Orientation (Patient) gives the row direction (direction of
increasing column index i) and the column direction (increasing row index j); the slice normal is their cross
product. Slices are sorted by the projection of Image Position (Patient) on the normal (ascending), so the grid's
k axis is the normal; the slice spacing comes from the positions, never from Slice Thickness, and must be uniform
(within ``max(0.01 mm, 1 %)``): a gap that is a multiple of the spacing is reported as missing slices, any other as
non-uniform spacing. Pixel Spacing is (row spacing = dy along j, column spacing = dx along i).

Multi-frame NM (NM Image IOD, PS3.3 A.5; NM Detector and NM Reconstruction modules): position and orientation
come from the Detector Information Sequence (or the top level), frames are Spacing Between Slices (0018,0088)
apart along the normal.

Volume.meta keys written by the image readers: ``patient_name``, ``patient_id``, ``patient_birth_date``,
``patient_sex``, ``patient_position``, ``study_instance_uid``, ``study_date``, ``study_time``, ``study_id``,
``accession_number``, ``referring_physician_name``, ``sop_class_uid``, ``sop_instance_uids``, ``source_files``,
``series_description``, ``acquisition_datetime``, ``slice_spacing_source``; NM and PET add ``radiopharmaceutical``
(:class:`~embplan.imaging.volume.Radiopharmaceutical`); PET adds ``pet_timing``
(:class:`~embplan.imaging.volume.PetTiming`), ``dicom_units`` and ``decay_factors``; RT Dose adds
``dose_type`` and ``dose_summation_type``; NM and PET add ``corrected_image`` (Corrected Image (0028,0051) values).

Required attributes (issue 12): what changes the numbers is never defaulted -- Rescale Slope/Intercept of CT and
PET, the image-plane geometry, PET Units and corrections; see each reader. Every reader checks the declared image
size against a voxel budget (:func:`voxel_budget`) before decoding.

Issue 17 (real-world DICOM) adds: ``series_selection`` (which series of a folder was read and what was set aside,
:mod:`embplan.imaging.series`), ``geometry_note`` (a missing slice, non-uniform spacing or a gantry tilt resampled,
:mod:`embplan.imaging.irregular`), ``enhanced`` / ``frame_count`` / ``frames_used`` (Enhanced CT,
:mod:`embplan.imaging.enhanced`); NM ``energy_windows_kev``, ``detectors``, ``rotations``;
RT Dose ``single_plane``. Compressed pixel data without a decoder fail in :mod:`embplan.imaging.codecs`.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import logging
import math
import os
from collections.abc import Callable, Iterable
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar, overload

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from ..errors import EmbplanError, ImagingError
from ..grid import Grid
from ..progress import timed
from .codecs import require_decoder, require_little_endian
from .irregular import MAX_GANTRY_TILT_DEG, MAX_SLICE_GAP_FACTOR, RegularStackPlan, regular_stack_plan
from .series import choose_series
from .volume import PetTiming, Radiopharmaceutical, Volume, grid_from_affine

__all__ = [
    "read_ct_series",
    "ct_hu_volume",
    "CT_STORED_UNITS",
    "read_pet_series",
    "read_nm",
    "read_rt_dose",
    "read_rtstruct",
    "read_rtstruct_with_notes",
    "read_seg",
    "read_seg_volumes",
    "read_header",
    "read_patient_id",
    "grid_from_image_plane",
    "require_same_frame_of_reference",
    "PLAUSIBLE_HU_RANGE",
    "MAX_PLAUSIBLE_BQ_ML",
    "MAX_PLAUSIBLE_DOSE_GY",
    "SLICE_SPACING_TOLERANCE_MM",
    "SLICE_SPACING_TOLERANCE_FRACTION",
    "DEFAULT_MAX_VOXELS",
    "MAX_VOXELS_ENV",
    "voxel_budget",
]

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

#: Hounsfield units outside this range cannot come from a 16-bit CT with a sane rescale (PS3.3 C.8.2.1: CT pixel
#: data are at most 16 bits); a value outside means a corrupted Rescale Slope/Intercept.
PLAUSIBLE_HU_RANGE: tuple[float, float] = (-32768.0, 65535.0)
#: Largest plausible PET activity concentration, Bq/mL: 1e10 Bq/mL is 10 GBq in one mL, above any administered
#: Y-90 activity (a few GBq) concentrated into a single millilitre.
MAX_PLAUSIBLE_BQ_ML: float = 1.0e10
#: Largest plausible absorbed dose in a voxel, Gy (issue 5: reject doses < 0 or > 5000 Gy; Y-90 voxel doses reach
#: several hundred to about a thousand Gy in small hot tumours).
MAX_PLAUSIBLE_DOSE_GY: float = 5000.0
#: Slice positions must be uniform within max(SLICE_SPACING_TOLERANCE_MM, SLICE_SPACING_TOLERANCE_FRACTION x spacing).
SLICE_SPACING_TOLERANCE_MM: float = 0.01
SLICE_SPACING_TOLERANCE_FRACTION: float = 0.01
#: Patient coordinates beyond 10 m from the origin are corrupt, not anatomy.
MAX_PLAUSIBLE_COORDINATE_MM: float = 1.0e4
#: Image position offsets across the slice plane (gantry tilt, shear) tolerated, mm.
IN_PLANE_SHIFT_TOLERANCE_MM: float = 0.05
#: Largest shift of a whole CT slice against its neighbour (HU): a slice whose 5th, 25th, 50th, 75th and 95th
#: percentiles all move the same way by more than this is offset, not anatomy (anatomy moves some percentiles --
#: the body appearing in a slice moves the median but not the air's 5th percentile -- never all of them by
#: hundreds of HU) [U]; a slice with the wrong Rescale Intercept (0 instead of -1024) moves all of them by 1024 HU
#: (issue 12, found by tests/imaging/test_dicom_set_fuzz.py: lung dose 14.3 -> 11.8 Gy from one such slice).
MAX_SLICE_OFFSET_HU: float = 400.0
#: Direction cosines must be unit and orthogonal to this tolerance.
ORIENTATION_TOLERANCE: float = 1.0e-3

# ---- voxel budget (issue 12, "Memory and time bombs")
#: Largest image (voxels = Rows x Columns x frames or slices) a reader decodes. A reader converts the stored pixels
#: to float32 (CT) or float64 (NM, PET, RT Dose), so 150 million voxels is 0.6-1.2 GB besides the decoder's own
#: buffer: a 512 x 512 x 572-slice CT still reads, while a file that merely *declares* 256 x 1024 x 1024 (an 8 MB
#: RLE NM that would need 7.4 GB) is refused before anything is decoded. Override it per call (``max_voxels=``) or
#: for a process with the environment variable :data:`MAX_VOXELS_ENV`.
DEFAULT_MAX_VOXELS: int = 150_000_000
#: Environment variable that overrides :data:`DEFAULT_MAX_VOXELS` (a positive integer).
MAX_VOXELS_ENV: str = "EMBPLAN_DICOM_MAX_VOXELS"

_RT_STRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
_RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"
_SEG = "1.2.840.10008.5.1.4.1.1.66.4"
_DICOMDIR = "1.2.840.10008.1.3.10"
#: Enhanced (multi-frame, functional-group) CT SOP classes read by embplan.imaging.enhanced: Enhanced CT, Legacy
#: Converted Enhanced CT. (Enhanced PET is refused as a multi-frame PT: its units and timing are not read yet.)
ENHANCED_IMAGE_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"})


# ----------------------------------------------------------------------------------------------------- plumbing
def _describe(obj: Any) -> str:
    if isinstance(obj, str | os.PathLike):
        return str(obj)
    if isinstance(obj, list | tuple):
        return f"{len(obj)} files" + (f", first {obj[0]}" if obj else "")
    return type(obj).__name__


def _boundary(func: Callable[P, R]) -> Callable[P, R]:
    """Public readers let only ImagingError out: anything else raised while parsing becomes one, with the source."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ImagingError:
            raise
        except EmbplanError as exc:
            src = _describe(args[0]) if args else ""
            raise ImagingError(f"{func.__name__}({src}): {exc}") from exc
        except Exception as exc:  # pydicom/highdicom/SimpleITK/numpy errors on malformed data
            src = _describe(args[0]) if args else ""
            raise ImagingError(
                f"{func.__name__}({src}): unreadable or inconsistent DICOM data ({type(exc).__name__}: {exc})"
            ) from exc

    return wrapper


def _gc_paused(func: Callable[P, R]) -> Callable[P, R]:
    """Run ``func`` with Python's cyclic garbage collector paused (restored after, also on error).

    A series reader creates tens of thousands of small pydicom objects that stay alive (one dataset per slice):
    they make the collector run full collections over every object of the process (170,000 in a planning
    process: 0.1-0.17 s per 300-slice CT, a quarter of the read). Nothing read here holds reference cycles that
    must be freed before the reader returns; the collector resumes afterwards. A collector that was off stays off."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return func(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()

    return wrapper


def _has_dicm_prefix(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _read(path: Path, *, stop_before_pixels: bool = False, allow_no_preamble: bool = True,
          defer_size: int | None = None) -> Dataset:
    """dcmread with the failure named; files without the DICM preamble are read with force=True only when asked
    for explicitly (a single file), and must then hold a SOP Class UID or Modality. ``defer_size``: values longer
    than this many bytes (the pixel data of a slice) are read only when used (pydicom's deferred read, or
    :func:`_pixel_frames` straight into the array)."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, defer_size=defer_size)
    except InvalidDicomError as exc:
        if not allow_no_preamble:
            raise ImagingError(f"{path}: not a DICOM file ({exc})") from exc
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True, defer_size=defer_size)
        except Exception as exc2:
            raise ImagingError(f"{path}: not a DICOM file ({type(exc2).__name__}: {exc2})") from exc2
        if "SOPClassUID" not in ds and "Modality" not in ds:
            raise ImagingError(f"{path}: not a DICOM file (no DICM prefix, no SOP Class UID or Modality)") from exc
        return ds
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise ImagingError(f"{path}: cannot open ({exc})") from exc
    except Exception as exc:
        raise ImagingError(f"{path}: unreadable DICOM file ({type(exc).__name__}: {exc})") from exc


def _tag(ds: Dataset, keyword: str) -> str:
    t = pydicom.datadict.tag_for_keyword(keyword)
    return f"{keyword} ({t >> 16:04X},{t & 0xFFFF:04X})" if t is not None else keyword


def _value(ds: Dataset, keyword: str, src: Any, required: bool = True) -> Any:
    try:
        present = keyword in ds
        v = ds[keyword].value if present else None
    except Exception as exc:
        raise ImagingError(f"{src}: {_tag(ds, keyword)} cannot be decoded ({type(exc).__name__}: {exc})") from exc
    if v is None or (isinstance(v, str | bytes) and not v.strip()) or (isinstance(v, list) and not v):
        if required:
            raise ImagingError(f"{src}: missing or empty {_tag(ds, keyword)}")
        return None
    return v


@overload
def _float(ds: Dataset, keyword: str, src: Any, required: Literal[True] = ..., default: float | None = ...) -> float: ...
@overload
def _float(ds: Dataset, keyword: str, src: Any, required: bool, default: float) -> float: ...
@overload
def _float(ds: Dataset, keyword: str, src: Any, required: bool = ..., default: None = ...) -> float | None: ...
def _float(ds: Dataset, keyword: str, src: Any, required: bool = True, default: float | None = None) -> float | None:
    v = _value(ds, keyword, src, required)
    if v is None:
        return default
    if isinstance(v, pydicom.multival.MultiValue | list | tuple):
        if len(v) != 1:
            raise ImagingError(f"{src}: {_tag(ds, keyword)} must hold one number, got {len(v)}")
        v = v[0]
    try:
        f = float(v)
    except (TypeError, ValueError) as exc:
        raise ImagingError(f"{src}: {_tag(ds, keyword)} is not a number ({v!r})") from exc
    if not math.isfinite(f):
        raise ImagingError(f"{src}: {_tag(ds, keyword)} is not finite ({v!r})")
    return f


@overload
def _floats(ds: Dataset, keyword: str, src: Any, n: int, required: Literal[True] = ...) -> np.ndarray: ...
@overload
def _floats(ds: Dataset, keyword: str, src: Any, n: int, required: bool = ...) -> np.ndarray | None: ...
def _floats(ds: Dataset, keyword: str, src: Any, n: int, required: bool = True) -> np.ndarray | None:
    v = _value(ds, keyword, src, required)
    if v is None:
        return None
    try:
        arr = np.array([float(x) for x in (v if isinstance(v, pydicom.multival.MultiValue | list | tuple) else [v])])
    except (TypeError, ValueError) as exc:
        raise ImagingError(f"{src}: {_tag(ds, keyword)} holds a non-number ({v!r})") from exc
    if n and arr.size != n:
        raise ImagingError(f"{src}: {_tag(ds, keyword)} must hold {n} numbers, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ImagingError(f"{src}: {_tag(ds, keyword)} holds non-finite values")
    return arr


#: The characters of a Decimal String value (PS3.5 6.2, VR DS: "0"-"9", "+", "-", "E", "e", ".", and space
#: padding) and the value separator; anything else (NaN, Infinity, "_", hex) is not a DS.
_DS_CHARS = b"0123456789+-Ee. \\"
_CONTOUR_DATA_TAG = 0x30060050


def _ds_values(raw: bytes) -> np.ndarray:
    """The numbers of a raw Decimal String value (the element's bytes as stored: ``1.5\\-2e1\\ +3``), as float64.

    Each value is parsed by Python's ``float`` (what pydicom's DS does), after the bytes are checked to hold only
    the characters of PS3.5 VR DS (trailing NUL padding is tolerated). One C-level pass over the bytes instead of
    one DS object per value: a liver contour set has hundreds of thousands of values. Raises ValueError for a
    value that is not a decimal string (empty, two signs, ``nan``, ``1_0``, ...)."""
    raw = raw.rstrip(b"\x00 ")
    if not raw:
        return np.empty(0, dtype=np.float64)
    if raw.translate(None, _DS_CHARS):
        bad = sorted(set(raw.translate(None, _DS_CHARS)))
        raise ValueError(f"characters not allowed in a decimal string: {bytes(bad)!r}")
    return np.array(list(map(float, raw.split(b"\\"))), dtype=np.float64)


def _contour_data(ds: Dataset, src: Any) -> np.ndarray:
    """ContourData (3006,0050) of one contour item as float64, read from the element's raw bytes when pydicom
    has not converted it yet (the values equal pydicom's own; tests compare them), else through pydicom."""
    try:
        elem = ds.get_item(_CONTOUR_DATA_TAG)
    except Exception as exc:
        raise ImagingError(f"{src}: {_tag(ds, 'ContourData')} cannot be decoded ({type(exc).__name__}: {exc})") from exc
    raw = getattr(elem, "value", None) if elem is not None else None
    if elem is None or not isinstance(raw, bytes) or getattr(elem, "VR", "DS") not in ("DS", None):
        return _floats(ds, "ContourData", src, 0)
    try:
        arr = _ds_values(raw)
    except ValueError as exc:
        raise ImagingError(f"{src}: {_tag(ds, 'ContourData')} holds a non-number ({exc})") from exc
    if arr.size == 0:
        raise ImagingError(f"{src}: missing or empty {_tag(ds, 'ContourData')}")
    if not np.all(np.isfinite(arr)):
        raise ImagingError(f"{src}: {_tag(ds, 'ContourData')} holds non-finite values")
    return arr


@overload
def _int(ds: Dataset, keyword: str, src: Any, required: Literal[True] = ..., default: int | None = ...) -> int: ...
@overload
def _int(ds: Dataset, keyword: str, src: Any, required: bool, default: int) -> int: ...
@overload
def _int(ds: Dataset, keyword: str, src: Any, required: bool = ..., default: None = ...) -> int | None: ...
def _int(ds: Dataset, keyword: str, src: Any, required: bool = True, default: int | None = None) -> int | None:
    f = _float(ds, keyword, src, required)
    if f is None:
        return default
    if f != int(f):
        raise ImagingError(f"{src}: {_tag(ds, keyword)} must be an integer, got {f}")
    return int(f)


@overload
def _str(ds: Dataset, keyword: str, src: Any = ..., *, default: str) -> str: ...
@overload
def _str(ds: Dataset, keyword: str, src: Any, default: str) -> str: ...
@overload
def _str(ds: Dataset, keyword: str, src: Any = ..., default: None = ...) -> str | None: ...
def _str(ds: Dataset, keyword: str, src: Any = None, default: str | None = None) -> str | None:
    try:
        v = ds.get(keyword)
    except Exception:
        return default
    if v is None:
        return default
    if isinstance(v, pydicom.multival.MultiValue | list | tuple):
        v = "\\".join(str(x) for x in v)
    s = str(v).strip()
    return s if s else default


@overload
def _first_item(ds: Dataset, keyword: str, src: Any, required: Literal[True] = ...) -> Dataset: ...
@overload
def _first_item(ds: Dataset, keyword: str, src: Any, required: bool = ...) -> Dataset | None: ...
def _first_item(ds: Dataset, keyword: str, src: Any, required: bool = True) -> Dataset | None:
    v = _value(ds, keyword, src, required)
    if v is None:
        return None
    try:
        return v[0]
    except Exception as exc:
        raise ImagingError(f"{src}: {_tag(ds, keyword)} is not a sequence with an item") from exc


# ----------------------------------------------------------------------------------------------------- dates
def _parse_da(s: str | None) -> date | None:
    if not s:
        return None
    s = s.strip()
    try:
        return datetime.strptime(s[:8], "%Y%m%d").date()
    except ValueError:
        return None


def _parse_tm(s: str | None) -> time | None:
    if not s:
        return None
    s = s.strip().replace(":", "")
    main, _, frac = s.partition(".")
    try:
        hh = int(main[0:2])
        mm = int(main[2:4]) if len(main) >= 4 else 0
        ss = int(main[4:6]) if len(main) >= 6 else 0
        us = int((frac + "000000")[:6]) if frac else 0
        return time(hh, mm, min(ss, 59), us)
    except (ValueError, IndexError):
        return None


def _parse_dt(s: str | None) -> datetime | None:
    """DICOM DT (YYYYMMDDHHMMSS.FFFFFF&ZZXX); a UTC offset is dropped (local time, like the DA/TM pairs)."""
    if not s:
        return None
    s = s.strip()
    for sign in ("+", "-"):
        pos = s.find(sign, 4)
        if pos > 0:
            s = s[:pos]
    d = _parse_da(s[:8])
    if d is None:
        return None
    t = _parse_tm(s[8:]) if len(s) > 8 else time(0, 0)
    return datetime.combine(d, t) if t is not None else None


def _datetime(ds: Dataset, date_kw: str, time_kw: str) -> datetime | None:
    d = _parse_da(_str(ds, date_kw))
    t = _parse_tm(_str(ds, time_kw))
    return datetime.combine(d, t) if d is not None and t is not None else None


# ----------------------------------------------------------------------------------------------------- geometry
def _orientation(iop: np.ndarray, src: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, c = np.asarray(iop[:3], dtype=float), np.asarray(iop[3:6], dtype=float)
    nr, nc = float(np.linalg.norm(r)), float(np.linalg.norm(c))
    if abs(nr - 1.0) > ORIENTATION_TOLERANCE or abs(nc - 1.0) > ORIENTATION_TOLERANCE:
        raise ImagingError(f"{src}: ImageOrientationPatient (0020,0037) direction cosines are not unit vectors ({iop})")
    r, c = r / nr, c / nc
    if abs(float(np.dot(r, c))) > ORIENTATION_TOLERANCE:
        raise ImagingError(f"{src}: ImageOrientationPatient (0020,0037) row and column directions are not orthogonal")
    c = c - np.dot(c, r) * r
    c /= np.linalg.norm(c)
    return r, c, np.cross(r, c)


def grid_from_image_plane(
    image_orientation: Iterable[float],
    first_position: Iterable[float],
    pixel_spacing: Iterable[float],
    slice_spacing_mm: float,
    shape: tuple[int, int, int],
    *,
    slice_direction: Iterable[float] | None = None,
) -> Grid:
    """A :class:`Grid` from DICOM image-plane attributes.

    ``image_orientation``: the six IOP cosines (row direction = +i, column direction = +j); ``first_position``:
    IPP of the first slice (voxel (0, 0, 0) centre); ``pixel_spacing``: DICOM Pixel Spacing (row spacing dy,
    column spacing dx); ``slice_spacing_mm`` > 0; ``shape`` (slices, rows, columns); ``slice_direction``: unit
    vector of +k (defaults to row x column, the slice normal; pass its negative for slices running against it).
    """
    iop = np.asarray(list(image_orientation), dtype=float)
    if iop.size != 6 or not np.all(np.isfinite(iop)):
        raise ImagingError("image_orientation: needs six finite direction cosines")
    r, c, n = _orientation(iop, "image_orientation")
    k = n if slice_direction is None else np.asarray(list(slice_direction), dtype=float)
    if k.shape != (3,) or abs(abs(float(np.dot(k, n))) - 1.0) > ORIENTATION_TOLERANCE:
        raise ImagingError("slice_direction: must be the slice normal or its negative")
    k = n * np.sign(np.dot(k, n))
    ps = np.asarray(list(pixel_spacing), dtype=float)
    ipp = np.asarray(list(first_position), dtype=float)
    if ps.size != 2 or ipp.size != 3 or not (np.all(np.isfinite(ps)) and np.all(np.isfinite(ipp))):
        raise ImagingError("pixel_spacing / first_position: need 2 and 3 finite numbers")
    d = np.column_stack([r, c, k])
    try:
        return Grid(shape=tuple(int(s) for s in shape), spacing_mm=(float(slice_spacing_mm), float(ps[0]), float(ps[1])),
                    origin_mm=tuple(float(v) for v in ipp), direction=tuple(float(v) for v in d.reshape(-1)))
    except EmbplanError as exc:
        raise ImagingError(f"image plane geometry: {exc}") from exc


def _uniform_spacing(s: np.ndarray, labels: list[str], what: str) -> float:
    """Median spacing of sorted positions ``s``; ImagingError naming the first bad gap."""
    gaps = np.diff(s)
    if np.any(gaps <= SLICE_SPACING_TOLERANCE_MM):
        i = int(np.argmax(gaps <= SLICE_SPACING_TOLERANCE_MM))
        raise ImagingError(f"{what}: duplicate slice position {s[i]:.3f} mm ({labels[i]} and {labels[i + 1]})")
    med = float(np.median(gaps))
    tol = max(SLICE_SPACING_TOLERANCE_MM, SLICE_SPACING_TOLERANCE_FRACTION * med)
    for i, g in enumerate(gaps):
        if abs(g - med) <= tol:
            continue
        ratio = g / med
        m = round(ratio)
        if m >= 2 and abs(g - m * med) <= tol * m:
            raise ImagingError(
                f"{what}: missing slice(s): gap of {g:.3f} mm between slice positions {s[i]:.3f} and {s[i + 1]:.3f} mm "
                f"({labels[i]}, {labels[i + 1]}) is {m} x the spacing {med:.3f} mm"
            )
        raise ImagingError(
            f"{what}: non-uniform slice spacing: gap of {g:.3f} mm between slice positions {s[i]:.3f} and "
            f"{s[i + 1]:.3f} mm ({labels[i]}, {labels[i + 1]}), expected {med:.3f} mm (tolerance {tol:.3f} mm)"
        )
    return float((s[-1] - s[0]) / (len(s) - 1))


# ----------------------------------------------------------------------------------------------------- pixels
def voxel_budget(max_voxels: int | None = None) -> int:
    """The voxel budget in force: ``max_voxels`` when given, else the environment variable :data:`MAX_VOXELS_ENV`,
    else :data:`DEFAULT_MAX_VOXELS`. ImagingError for a value that is not a positive integer."""
    if max_voxels is None:
        env = os.environ.get(MAX_VOXELS_ENV)
        if env is None or not env.strip():
            return DEFAULT_MAX_VOXELS
        try:
            max_voxels = int(env.strip())
        except ValueError as exc:
            raise ImagingError(f"{MAX_VOXELS_ENV}={env!r}: not an integer number of voxels") from exc
        what = MAX_VOXELS_ENV
    else:
        what = "max_voxels"
    if isinstance(max_voxels, bool) or not isinstance(max_voxels, int) or max_voxels < 1:
        raise ImagingError(f"{what}: must be a positive integer number of voxels, got {max_voxels!r}")
    return max_voxels


def _check_budget(src: Any, shape: tuple[int, ...], max_voxels: int | None) -> None:
    """ImagingError naming the declared size when it exceeds the voxel budget -- called before any decoding."""
    budget = voxel_budget(max_voxels)
    n = math.prod(int(v) for v in shape)
    if n > budget:
        dims = " x ".join(str(int(v)) for v in shape)
        raise ImagingError(
            f"{src}: declared image size {dims} = {n:,} voxels exceeds the voxel budget of {budget:,} "
            f"(max_voxels= or {MAX_VOXELS_ENV} raise it); refused before decoding"
        )


@timed("pixel decoding", level=None)
def _pixel_frames(ds: Dataset, src: Any, max_voxels: int | None = None,
                  buffer: bytearray | memoryview | None = None) -> np.ndarray:
    """Stored pixel values as (frames, rows, columns); the size is checked against Rows x Columns x Frames and
    the voxel budget before decoding. ``buffer``: scratch memory the caller reuses from slice to slice (the array
    returned may then be a view of it, valid until the next call): deferred uncompressed pixel data are read into
    it, so a series does not fault in fresh memory for every slice."""
    rows = _int(ds, "Rows", src)
    cols = _int(ds, "Columns", src)
    frames = _int(ds, "NumberOfFrames", src, required=False, default=1)
    if rows < 1 or cols < 1 or frames < 1:
        raise ImagingError(f"{src}: implausible image size Rows={rows} Columns={cols} NumberOfFrames={frames}")
    _check_budget(src, (frames, rows, cols), max_voxels)
    _check_pixel_data_length(ds, src, rows, cols, frames, allowed_bits=(8, 16, 32))
    require_decoder(ds, src)  # a compressed syntax without its plugin: name the syntax and the extra
    arr = _deferred_native_pixels(ds, src, rows, cols, frames, buffer)
    if arr is not None:
        return arr
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as exc:
        raise ImagingError(f"{src}: cannot decode the pixel data ({type(exc).__name__}: {exc})") from exc
    if arr.size != rows * cols * frames:
        raise ImagingError(f"{src}: shape mismatch: decoded {arr.shape}, expected {frames} x {rows} x {cols}")
    return arr.reshape(frames, rows, cols)


#: Uncompressed little-endian transfer syntaxes (Implicit and Explicit VR Little Endian, PS3.5 A.1, A.2): their
#: Pixel Data are the stored values as they lie in the file.
_NATIVE_LITTLE_ENDIAN = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})
_PIXEL_DATA_TAG = 0x7FE00010
#: Series readers defer values longer than this (bytes): a slice's Pixel Data is then read once, straight into its
#: array, instead of into the dataset first (a 512 x 512 CT slice is 512 KiB; 0.7 -> 0.3 ms per file).
SERIES_DEFER_SIZE: int = 16384


def _deferred_pixel_element(ds: Dataset) -> Any:
    """The raw Pixel Data element of ``ds`` when pydicom deferred its value (not read yet), else None."""
    try:
        elem = ds.get_item(_PIXEL_DATA_TAG, keep_deferred=True)
    except Exception:
        return None
    if elem is None or not getattr(elem, "is_raw", False) or elem.value is not None:
        return None
    if getattr(elem, "is_undefined_length", False) or getattr(elem, "length", None) in (None, 0xFFFFFFFF):
        return None
    return elem


def _deferred_native_pixels(ds: Dataset, src: Any, rows: int, cols: int, frames: int,
                            buffer: bytearray | memoryview | None = None) -> np.ndarray | None:
    """The stored values of a grayscale uncompressed little-endian image whose Pixel Data pydicom deferred, read
    from the file at the element's offset: the array ``ds.pixel_array`` gives (dtype from Bits Allocated and Pixel
    Representation; bits above Bits Stored cleared, or filled with the sign, as pydicom does), without reading the
    bytes into the dataset first. None (the caller decodes with pydicom, and reports what it finds) for anything
    else: another syntax, a value already read, an attribute pydicom would refuse, a file changed since."""
    elem = _deferred_pixel_element(ds)
    filename = getattr(ds, "filename", None)
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if elem is None or not isinstance(filename, str) or ts is None or str(ts) not in _NATIVE_LITTLE_ENDIAN:
        return None
    try:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds or "SamplesPerPixel" not in ds:
            return None
        spp = _int(ds, "SamplesPerPixel", src)
        bits = _int(ds, "BitsAllocated", src)
        stored = _int(ds, "BitsStored", src)
        signed = _int(ds, "PixelRepresentation", src)
        photometric = _str(ds, "PhotometricInterpretation")
    except ImagingError:
        return None
    if (spp != 1 or bits not in (8, 16, 32) or not 1 <= stored <= bits or signed not in (0, 1)
            or photometric not in ("MONOCHROME1", "MONOCHROME2") or rows > 65535 or cols > 65535):
        return None
    expected = rows * cols * frames * bits // 8
    if not (elem.length == expected or (elem.length == expected + 1 and expected % 2)):
        return None
    try:
        if getattr(ds, "timestamp", None) != os.stat(filename).st_mtime:
            return None
        buf: bytearray | memoryview = buffer if buffer is not None else bytearray(expected)
        if len(buf) < expected:
            if isinstance(buf, bytearray):
                try:
                    buf.extend(bytes(expected - len(buf)))
                except BufferError:  # an array of the caller's still views it
                    buf = bytearray(expected)
            else:  # a view of the caller's array (a slice of another size): read into memory of our own
                buf = bytearray(expected)
        with open(filename, "rb") as fh:
            fh.seek(int(elem.value_tell))
            got = fh.readinto(memoryview(buf)[:expected])
    except OSError:
        return None
    if got != expected:
        return None
    arr = np.frombuffer(buf, dtype=np.dtype(f"<{'i' if signed else 'u'}{bits // 8}"), count=expected * 8 // bits)
    if stored < bits:  # pydicom's correction of unused bits: shift them out and back (sign-extends signed values)
        shift = bits - stored
        np.left_shift(arr, shift, out=arr)
        np.right_shift(arr, shift, out=arr)
    return arr.reshape(frames, rows, cols)


def _pixel_data_length(ds: Dataset, src: Any) -> int:
    """Length in bytes of Pixel Data (7FE0,0010), without reading a deferred value."""
    elem = _deferred_pixel_element(ds)
    if elem is not None:
        return int(elem.length)
    return len(_value(ds, "PixelData", src))


def _check_pixel_data_length(
    ds: Dataset, src: Any, rows: int, cols: int, frames: int, allowed_bits: tuple[int, ...]
) -> None:
    """Grayscale, and (uncompressed) Pixel Data exactly Rows x Columns x NumberOfFrames x BitsAllocated bits long
    -- checked before any decoder allocates an array of the declared size."""
    spp = _int(ds, "SamplesPerPixel", src, required=False, default=1)
    if spp != 1:
        raise ImagingError(f"{src}: SamplesPerPixel (0028,0002) is {spp}; only grayscale (1) images are volumes")
    bits = _int(ds, "BitsAllocated", src)
    if "PixelData" not in ds:
        raise ImagingError(f"{src}: no Pixel Data (7FE0,0010)")
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is None:
        raise ImagingError(f"{src}: no Transfer Syntax UID (0002,0010): cannot decode the pixel data")
    if ts.is_compressed:
        return
    if bits not in allowed_bits:
        raise ImagingError(f"{src}: BitsAllocated (0028,0100) is {bits}; expected one of {allowed_bits}")
    expected = (rows * cols * frames * bits + 7) // 8
    got = _pixel_data_length(ds, src)
    if got not in (expected, expected + 1):
        raise ImagingError(
            f"{src}: shape mismatch: Pixel Data holds {got} bytes, Rows x Columns x NumberOfFrames x "
            f"BitsAllocated/8 = {rows} x {cols} x {frames} x {bits / 8:g} = {expected}"
        )


def _rescale(ds: Dataset, src: Any, *, required: bool) -> tuple[float, float]:
    """Rescale Slope and Intercept (PS3.3 C.7.6.16.2.9/C.11.1: output = slope x stored + intercept).

    ``required``: CT (CT Image module, C.8.2.1) and PET (PET Image module, C.8.9.4) make both Type 1: a missing
    intercept read as 0 would put every CT number 1024 HU too high (denser tissue everywhere, issue 12: +55 %
    activity), so absence is an error. The NM IOD has no Modality LUT (its stored values are the counts), so an NM
    file without them is read as stored (slope 1, intercept 0). The slope must be positive: CT numbers and activity
    grow with the stored value."""
    slope = _float(ds, "RescaleSlope", src, required=required, default=1.0)
    intercept = _float(ds, "RescaleIntercept", src, required=required, default=0.0)
    if not slope > 0.0:
        raise ImagingError(f"{src}: RescaleSlope (0028,1053) must be positive, got {slope:g}")
    return slope, intercept


def _corrected_image(ds: Dataset) -> tuple[str, ...]:
    v = _str(ds, "CorrectedImage", default="") or ""
    return tuple(sorted({t.strip().upper() for t in v.split("\\") if t.strip()}))


def _pet_corrections(ds: Dataset, src: Any, decay_correction: str) -> tuple[str, ...]:
    """Corrected Image (0028,0051) of a PET image (Type 2 in the PET Series module, C.8.9.1): quantitative Bq/mL
    needs ATTN (attenuation correction); Decay Correction START or ADMIN needs DECY. ImagingError naming the tag."""
    values = _corrected_image(ds)
    if not values:
        raise ImagingError(
            f"{src}: missing or empty CorrectedImage (0028,0051); a quantitative PET must state its corrections (ATTN)"
        )
    if "ATTN" not in values:
        raise ImagingError(
            f"{src}: CorrectedImage (0028,0051) is {'/'.join(values)} without ATTN: a PET without attenuation "
            "correction does not give the activity distribution"
        )
    if decay_correction != "NONE" and "DECY" not in values:
        raise ImagingError(
            f"{src}: DecayCorrection (0054,1102) is {decay_correction} but CorrectedImage (0028,0051) "
            f"({'/'.join(values)}) lacks DECY"
        )
    return values


def _check_finite(arr: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(arr)):
        raise ImagingError(f"{what}: {int(np.count_nonzero(~np.isfinite(arr)))} non-finite voxel values")


# ----------------------------------------------------------------------------------------------------- series
def _list_files(source: Any) -> tuple[list[Path], bool]:
    if isinstance(source, str | os.PathLike):
        p = Path(source)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
            return files, True
        if p.is_file():
            return [p], False
        raise ImagingError(f"{p}: no such file or folder")
    try:
        files = [Path(f) for f in source]
    except TypeError as exc:
        raise ImagingError(f"source: expected a folder, a file or a list of files, got {type(source).__name__}") from exc
    for f in files:
        if not f.is_file():
            raise ImagingError(f"{f}: no such file")
    return files, False


def _load_series(
    source: Any, modality: str, series_instance_uid: str | None, max_voxels: int | None = None,
    notes: list[str] | None = None,
) -> list[tuple[Path, Dataset]]:
    """The files of one series of ``modality``. In a folder, files without the DICM prefix and files of other
    modalities (an RTSTRUCT or RT Dose exported beside the CT) are skipped; an explicit file list must hold only
    ``modality``. Each file is read once."""
    files, from_folder = _list_files(source)
    headers: list[tuple[Path, Dataset]] = []
    other: dict[str, int] = {}
    for f in files:
        if from_folder and not _has_dicm_prefix(f):
            log.debug("%s: no DICM prefix, skipped", f)
            continue
        # one read per file; Pixel Data deferred (read into the array by _pixel_frames, SERIES_DEFER_SIZE)
        ds = _read(f, allow_no_preamble=not from_folder, defer_size=SERIES_DEFER_SIZE)
        if _str(ds, "SOPClassUID") == _DICOMDIR or "DirectoryRecordSequence" in ds:
            continue
        mod = _str(ds, "Modality")
        if mod != modality:
            if from_folder:
                other[str(mod)] = other.get(str(mod), 0) + 1
                continue
            raise ImagingError(f"{f}: Modality (0008,0060) is {mod!r}, expected {modality!r}")
        headers.append((f, ds))
    if not headers:
        found = f" (found {', '.join(f'{n} {m}' for m, n in sorted(other.items()))})" if other else ""
        raise ImagingError(f"{_describe(source)}: no DICOM {modality} image files{found}")
    groups: dict[str, list[tuple[Path, Dataset]]] = {}
    for f, ds in headers:
        uid = _str(ds, "SeriesInstanceUID")
        if uid is None:
            raise ImagingError(f"{f}: missing SeriesInstanceUID (0020,000E)")
        groups.setdefault(uid, []).append((f, ds))
    # several series (a scout, a second reconstruction): embplan.imaging.series picks the obvious one or explains
    uid, note = choose_series(groups, modality, _describe(source), series_instance_uid)
    chosen = groups[uid]
    if note is not None and notes is not None:
        notes.append(note)
    f0, h0 = chosen[0]
    _check_budget(f"{_describe(source)} ({modality} series of {len(chosen)} files)",
                  (len(chosen), _int(h0, "Rows", f0), _int(h0, "Columns", f0)), max_voxels)
    items = []
    for f, ds in chosen:  # read once above
        if modality == "CT" and _str(ds, "SOPClassUID") in ENHANCED_IMAGE_SOP_CLASSES and len(chosen) == 1:
            items.append((f, ds))  # one Enhanced (multi-frame) image: embplan.imaging.enhanced reads it
            continue
        if (_int(ds, "NumberOfFrames", f, required=False, default=1) or 1) != 1:
            raise ImagingError(f"{f}: multi-frame (enhanced) {modality} images are not supported; expected one slice per file")
        items.append((f, ds))
    return items


def _series_geometry(items: list[tuple[Path, Dataset]], what: str) -> tuple[list[tuple[Path, Dataset]], Grid, str]:
    f0, ds0 = items[0]
    iop0 = _floats(ds0, "ImageOrientationPatient", f0, 6)
    ps0 = _floats(ds0, "PixelSpacing", f0, 2)
    if np.any(ps0 <= 0):
        raise ImagingError(f"{f0}: PixelSpacing (0028,0030) must be positive, got {tuple(ps0)}")
    rows0, cols0 = _int(ds0, "Rows", f0), _int(ds0, "Columns", f0)
    for0 = _str(ds0, "FrameOfReferenceUID")
    r, c, n = _orientation(iop0, f0)
    pid0 = _str(ds0, "PatientID", default="")
    positions = []
    for f, ds in items:
        if _str(ds, "FrameOfReferenceUID") != for0:
            raise ImagingError(
                f"{what}: mismatched frames of reference: {f} has FrameOfReferenceUID "
                f"{_str(ds, 'FrameOfReferenceUID')}, {f0} has {for0}"
            )
        if _str(ds, "PatientID", default="") != pid0:
            raise ImagingError(
                f"{what}: {f} has PatientID (0010,0020) {_str(ds, 'PatientID', default='')!r}, {f0} has "
                f"{pid0!r}: one series holds one patient"
            )
        iop = _floats(ds, "ImageOrientationPatient", f, 6)
        # np.allclose(iop, iop0, atol=1e-4) (rtol 1e-5), without its per-call overhead
        if not np.all(np.abs(iop - iop0) <= 1e-4 + 1e-5 * np.abs(iop0)):
            raise ImagingError(f"{what}: {f} has another ImageOrientationPatient (0020,0037) than {f0}")
        ps = _floats(ds, "PixelSpacing", f, 2)
        if not np.all(np.abs(ps - ps0) <= 1e-8 + 1e-4 * np.abs(ps0)):  # np.allclose(ps, ps0, rtol=1e-4)
            raise ImagingError(f"{what}: {f} has another PixelSpacing (0028,0030) than {f0}")
        if (_int(ds, "Rows", f), _int(ds, "Columns", f)) != (rows0, cols0):
            raise ImagingError(f"{what}: {f} has another Rows x Columns than {f0}")
        positions.append(_floats(ds, "ImagePositionPatient", f, 3))
    pos = np.array(positions)
    s = pos @ n
    order = np.argsort(s, kind="stable")
    items = [items[i] for i in order]
    pos, s = pos[order], s[order]
    labels = [p.name for p, _ in items]
    shift = (pos - pos[0]) - np.outer(s - s[0], n)
    bad = np.linalg.norm(shift, axis=1) > IN_PLANE_SHIFT_TOLERANCE_MM
    if np.any(bad):
        i = int(np.argmax(bad))
        raise ImagingError(
            f"{what}: slice {labels[i]} is shifted {float(np.linalg.norm(shift[i])):.3f} mm across the slice plane "
            "(gantry tilt or sheared series); not supported"
        )
    if len(items) > 1:
        dz = _uniform_spacing(s, labels, what)
        source = "ImagePositionPatient"
    else:
        dz = (_float(ds0, "SliceThickness", f0, required=False, default=0.0)
              or _float(ds0, "SpacingBetweenSlices", f0, required=False, default=0.0))
        if not dz or dz <= 0:
            raise ImagingError(f"{f0}: a single slice without a positive SliceThickness has no thickness")
        source = "SliceThickness (single slice)"
    grid = grid_from_image_plane(iop0, pos[0], ps0, dz, (len(items), rows0, cols0))
    return items, grid, source


def _common_meta(items: list[tuple[Path, Dataset]]) -> dict[str, Any]:
    ds = items[0][1]
    acq = _datetime(ds, "AcquisitionDate", "AcquisitionTime") or _datetime(ds, "SeriesDate", "SeriesTime")
    adt = _parse_dt(_str(ds, "AcquisitionDateTime"))
    return {
        "patient_name": _str(ds, "PatientName", default=""),
        "patient_id": _str(ds, "PatientID", default=""),
        "patient_birth_date": _str(ds, "PatientBirthDate", default=""),
        "patient_sex": _str(ds, "PatientSex", default=""),
        "patient_position": _str(ds, "PatientPosition"),
        "study_instance_uid": _str(ds, "StudyInstanceUID"),
        "study_date": _str(ds, "StudyDate", default=""),
        "study_time": _str(ds, "StudyTime", default=""),
        "study_id": _str(ds, "StudyID", default=""),
        "accession_number": _str(ds, "AccessionNumber", default=""),
        "referring_physician_name": _str(ds, "ReferringPhysicianName", default=""),
        "series_description": _str(ds, "SeriesDescription", default=""),
        "sop_class_uid": _str(ds, "SOPClassUID"),
        "sop_instance_uids": tuple(_str(d, "SOPInstanceUID", default="") for _, d in items),
        "source_files": tuple(str(f) for f, _ in items),
        "acquisition_datetime": adt or acq,
    }


def _radiopharmaceutical(ds: Dataset, src: Any) -> Radiopharmaceutical | None:
    item = _first_item(ds, "RadiopharmaceuticalInformationSequence", src, required=False)
    if item is None:
        return None
    nuclide = None
    code = _first_item(item, "RadionuclideCodeSequence", src, required=False)
    if code is not None:
        nuclide = _str(code, "CodeMeaning")
    total = _float(item, "RadionuclideTotalDose", src, required=False)
    half = _float(item, "RadionuclideHalfLife", src, required=False)
    if total is not None and total < 0:
        raise ImagingError(f"{src}: RadionuclideTotalDose (0018,1074) is negative ({total})")
    if half is not None and half <= 0:
        raise ImagingError(f"{src}: RadionuclideHalfLife (0018,1075) must be positive ({half})")
    return Radiopharmaceutical(
        name=_str(item, "Radiopharmaceutical"),
        radionuclide=nuclide,
        total_dose_bq=total,
        half_life_s=half,
        start_datetime=_parse_dt(_str(item, "RadiopharmaceuticalStartDateTime")),
        start_time_only=_str(item, "RadiopharmaceuticalStartTime"),
    )


# ------------------------------------------------------------------------------- issue 17: irregular stacks, PET
def _stack_geometry(
    items: list[tuple[Path, Dataset]], what: str, max_slice_gap_factor: float, max_gantry_tilt_deg: float
) -> tuple[list[tuple[Path, Dataset]], Grid, str, RegularStackPlan | None]:
    """The regular grid of a single-frame series: as :func:`_series_geometry` when the slices are a regular stack;
    else the resampling plan of :mod:`embplan.imaging.irregular` (or its ImagingError beyond the tolerances)."""
    plan = regular_stack_plan(items, what, max_slice_gap_factor=max_slice_gap_factor,
                              max_gantry_tilt_deg=max_gantry_tilt_deg)
    if plan is None:
        return (*_series_geometry(items, what), None)
    _series_geometry_checks(plan.items, what)
    return plan.items, plan.grid, "ImagePositionPatient (resampled onto a regular grid)", plan


def _series_geometry_checks(items: list[tuple[Path, Dataset]], what: str) -> None:
    """The per-slice agreement checks of :func:`_series_geometry` (frame of reference) for a resampled stack."""
    f0, ds0 = items[0]
    for0 = _str(ds0, "FrameOfReferenceUID")
    for f, ds in items:
        if _str(ds, "FrameOfReferenceUID") != for0:
            raise ImagingError(
                f"{what}: mismatched frames of reference: {f} has FrameOfReferenceUID "
                f"{_str(ds, 'FrameOfReferenceUID')}, {f0} has {for0}"
            )


def _add_notes(meta: dict[str, Any], notes: list[str], plan: RegularStackPlan | None) -> None:
    for n in notes:
        if plan is not None and n.startswith(plan.note):
            meta["geometry_note"] = n
        else:
            meta["series_selection"] = n


def _nm_acquisition(ds: Dataset, src: Any) -> dict[str, Any]:
    """What a vendor's reconstructed SPECT says about its acquisition (NM Image IOD, PS3.3 C.8.4.10-12): the energy
    windows (keV, from Energy Window Information Sequence (0054,0012)), the detectors and collimators (Detector
    Information Sequence (0054,0022)) and the rotations (Rotation Information Sequence (0054,0052)). The frame
    duration of a tomographic acquisition is the rotation's Actual Frame Duration (ms per view)."""
    windows = []
    for w in _value(ds, "EnergyWindowInformationSequence", src, required=False) or []:
        for r in _value(w, "EnergyWindowRangeSequence", src, required=False) or []:
            lo = _float(r, "EnergyWindowLowerLimit", src, required=False)
            hi = _float(r, "EnergyWindowUpperLimit", src, required=False)
            if lo is not None and hi is not None:
                if not 0 < lo < hi:
                    raise ImagingError(f"{src}: energy window [{lo}, {hi}] keV is not an interval of positive energies")
                windows.append((lo, hi))
    detectors = [{"collimator_type": _str(d, "CollimatorType"), "collimator": _str(d, "CollimatorGridName")}
                 for d in _value(ds, "DetectorInformationSequence", src, required=False) or []]
    rotations = []
    for r in _value(ds, "RotationInformationSequence", src, required=False) or []:
        rotations.append({
            "start_angle_deg": _float(r, "StartAngle", src, required=False),
            "angular_step_deg": _float(r, "AngularStep", src, required=False),
            "direction": _str(r, "RotationDirection"),
            "scan_arc_deg": _float(r, "ScanArc", src, required=False),
            "views": _int(r, "NumberOfFramesInRotation", src, required=False),
            "view_duration_s": (_float(r, "ActualFrameDuration", src, required=False) or 0.0) / 1000.0 or None,
        })
    out: dict[str, Any] = {"energy_windows_kev": tuple(windows), "detectors": tuple(detectors),
                           "rotations": tuple(rotations)}
    if "ActualFrameDuration" not in ds and rotations and rotations[0]["view_duration_s"]:
        out["frame_duration_s"] = rotations[0]["view_duration_s"]
    return out


def _single_frame_dose_thickness(ds: Dataset, src: Any, given: float | None) -> tuple[float, str]:
    """(thickness mm, where it came from) of a single-frame RT Dose plane (see :func:`read_rt_dose`)."""
    if given is not None:
        if not (math.isfinite(given) and given > 0):
            raise ImagingError(f"single_frame_thickness_mm: must be a finite number > 0, got {given!r}")
        return float(given), "single_frame_thickness_mm (single plane)"
    dz = _float(ds, "SliceThickness", src, required=False)
    if dz is not None and dz > 0:
        return dz, "SliceThickness (single plane)"
    offsets = _floats(ds, "GridFrameOffsetVector", src, 0, required=False)
    if offsets is not None and offsets.size > 1:
        gaps = np.diff(offsets)
        if np.all(gaps > 0) and np.ptp(gaps) <= max(SLICE_SPACING_TOLERANCE_MM, SLICE_SPACING_TOLERANCE_FRACTION * gaps[0]):
            return float(np.mean(gaps)), "GridFrameOffsetVector spacing (single plane)"
    ps = _floats(ds, "PixelSpacing", src, 2)
    assert ps is not None  # required=True
    return float(min(ps)), "nominal: the smaller PixelSpacing (single plane without SliceThickness)"


# ----------------------------------------------------------------------------------------------------- readers
@_boundary
def read_header(path: str | os.PathLike) -> Dataset:
    """The DICOM header of one file (no pixel data), e.g. a CT slice to pass as ``reference_ct``."""
    return _read(Path(path), stop_before_pixels=True)


@timed("CT series", logging.INFO)
@_boundary
def read_patient_id(path: str | os.PathLike) -> str:
    """Patient ID (0010,0020) of one DICOM file ("" when absent or empty: it is Type 2), read without the rest."""
    p = Path(path)
    try:
        ds = pydicom.dcmread(p, specific_tags=["PatientID", "Modality", "SOPClassUID"])
    except Exception as exc:
        raise ImagingError(f"{p}: unreadable DICOM file ({type(exc).__name__}: {exc})") from exc
    return _str(ds, "PatientID", default="") or ""


#: Units of a CT Volume holding stored pixel values (``read_ct_series(..., stored_values=True)``).
CT_STORED_UNITS = "stored values (HU = rescale_slope x value + rescale_intercept)"


def _exact_in_float32(slope: float, intercept: float, dtype: np.dtype) -> bool:
    """Whether stored values of ``dtype`` rescaled by (1, ``intercept``) are integers below 2**24: float32 holds
    them exactly, so adding in float32 gives the same numbers as in float64."""
    return (slope == 1.0 and dtype.kind in "iu" and dtype.itemsize <= 2 and intercept == round(intercept)
            and abs(intercept) < 2**23)


def _stored_to_hu(stored: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """float32 HU of stored values, by the arithmetic of :func:`read_ct_series` (the same numbers)."""
    if _exact_in_float32(slope, intercept, stored.dtype):
        return np.add(stored, np.float32(intercept), dtype=np.float32)
    return (stored * slope + intercept).astype(np.float32)


def _check_ct_values(source: Any, items: list[tuple[Path, Dataset]], rescales: list[tuple[float, float]], lo: float,
                     hi: float, sub_hu: np.ndarray, hu_range: tuple[float, float]) -> None:
    """The value checks of a CT series: HU range [lo, hi] (finite), and no slice offset against its neighbour
    (percentiles of ``sub_hu``, every 4th row and column of each slice, in HU)."""
    if lo < hu_range[0] or hi > hu_range[1]:
        raise ImagingError(f"CT series {_describe(source)}: implausible Hounsfield units [{lo:g}, {hi:g}] outside {hu_range}")
    sub = sub_hu.reshape(sub_hu.shape[0], -1)
    q = np.percentile(sub, [5, 25, 50, 75, 95], axis=1)  # (5, slices)
    dq = np.diff(q, axis=1)
    offset = np.where(np.all(dq > 0, axis=0), dq.min(axis=0), np.where(np.all(dq < 0, axis=0), dq.max(axis=0), 0.0))
    if offset.size and float(np.abs(offset).max()) > MAX_SLICE_OFFSET_HU:
        k = int(np.argmax(np.abs(offset)))
        (s0, i0), (s1, i1) = rescales[k], rescales[k + 1]
        why = (f"Rescale Slope/Intercept differ: {s0:g}/{i0:g} and {s1:g}/{i1:g}" if (s0, i0) != (s1, i1)
               else "corrupted pixel data or rescale")
        raise ImagingError(
            f"CT series {_describe(source)}: every CT number shifts by {offset[k]:+.0f} HU or more from slice "
            f"{items[k][0].name} to the adjacent {items[k + 1][0].name} (all percentiles 5-95 moved the same way by "
            f"more than {MAX_SLICE_OFFSET_HU:g} HU, which anatomy does not do): {why}"
        )


def _ct_stored(items: list[tuple[Path, Dataset]], grid: Grid, source: Any, hu_range: tuple[float, float],
               max_voxels: int | None) -> tuple[np.ndarray, float, float] | None:
    """(stored values, slope, intercept) of a regular CT stack whose slices share one rescale and hold integers,
    after the checks of :func:`read_ct_series` on the HU they give; None (the caller builds the HU volume, and
    its checks report) when the slices differ in rescale or type, or a rescaled bound is not finite."""
    rescales = [_rescale(ds, f, required=True) for f, ds in items]
    if len(set(rescales)) != 1:
        return None
    slope, intercept = rescales[0]
    stack: np.ndarray | None = None
    lows, highs = np.empty(len(items)), np.empty(len(items))
    for k, (f, ds) in enumerate(items):
        if stack is None:
            px = _pixel_frames(ds, f, max_voxels)
            if px.dtype.kind not in "iu":
                return None
            stack = np.empty((len(items), *grid.shape[1:]), dtype=px.dtype)
            stack[0] = px[0]
        else:
            px = _pixel_frames(ds, f, max_voxels, memoryview(stack[k]).cast("B"))  # read into its slice
            if px.dtype != stack.dtype:
                return None
            if not np.shares_memory(px, stack[k]):
                stack[k] = px[0]
        lows[k], highs[k] = stack[k].min(), stack[k].max()
    assert stack is not None  # items is never empty
    # HU of the bounds: the rescale is monotone (slope > 0) and float32 rounding is too, so these are the
    # smallest and largest HU of the volume that read_ct_series would build
    lo = float(_stored_to_hu(np.array([lows.min()]).astype(stack.dtype), slope, intercept)[0])
    hi = float(_stored_to_hu(np.array([highs.max()]).astype(stack.dtype), slope, intercept)[0])
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    _check_ct_values(source, items, rescales, lo, hi, _stored_to_hu(stack[:, ::4, ::4], slope, intercept), hu_range)
    return stack, slope, intercept


def ct_hu_volume(ct: Volume) -> Volume:
    """The CT in Hounsfield units: ``ct`` itself, or the HU of stored values (``read_ct_series(...,
    stored_values=True)``), the same numbers :func:`read_ct_series` gives."""
    if ct.units != CT_STORED_UNITS:
        return ct
    hu = _stored_to_hu(ct.array, float(ct.meta["rescale_slope"]), float(ct.meta["rescale_intercept"]))
    meta = {k: v for k, v in ct.meta.items() if k not in ("rescale_slope", "rescale_intercept")}
    return dataclasses.replace(ct, array=hu, units="HU", meta=meta)


@_boundary
@_gc_paused
def read_ct_series(
    source: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    series_instance_uid: str | None = None,
    hu_range: tuple[float, float] = PLAUSIBLE_HU_RANGE,
    max_slice_gap_factor: float = MAX_SLICE_GAP_FACTOR,
    max_gantry_tilt_deg: float = MAX_GANTRY_TILT_DEG,
    max_voxels: int | None = None,
    stored_values: bool = False,
) -> Volume:
    """A CT series (folder, or list of files) as a Volume in Hounsfield units (Rescale Slope/Intercept applied,
    float32). In a folder, non-DICOM files and other modalities (RTSTRUCT, RT Dose) are skipped; several CT series
    are an error unless ``series_instance_uid`` selects one. A single slice takes its thickness from Slice
    Thickness (there is nothing else); a series never does.

    Several series in a folder: :func:`embplan.imaging.series.choose_series` takes the one axial volume that is
    not a localizer (noted in ``meta["series_selection"]``) or lists them. An Enhanced CT (one multi-frame file) is
    read by :func:`embplan.imaging.enhanced.read_enhanced_image`. A missing slice, non-uniform spacing or a gantry
    tilt within ``max_slice_gap_factor`` / ``max_gantry_tilt_deg`` is resampled onto a regular grid
    (:mod:`embplan.imaging.irregular`; ``meta["geometry_note"]``; voxels outside the acquired field of view -1000
    HU), beyond them refused. Rescale Slope and Intercept are required (Type 1); ``max_voxels``: the voxel budget
    (:func:`voxel_budget`), checked before any pixel is decoded.

    ``stored_values``: when the series is a regular stack of integer pixels sharing one Rescale Slope and
    Intercept, return the stored values instead (units :data:`CT_STORED_UNITS`, ``meta["rescale_slope"]`` and
    ``meta["rescale_intercept"]``; every check above is made on the HU they give): half the memory of the HU
    volume, for a caller that resamples the CT onto another grid and rescales the result
    (:func:`ct_hu_volume` gives the HU volume of either). Otherwise (or when False) the HU volume."""
    notes: list[str] = []
    items = _load_series(source, "CT", series_instance_uid, max_voxels, notes=notes)
    what = f"CT series {_describe(source)}"
    if len(items) == 1 and _str(items[0][1], "SOPClassUID") in ENHANCED_IMAGE_SOP_CLASSES:
        from .enhanced import read_enhanced_image

        vol = read_enhanced_image(items[0][0], modality="CT", hu_range=hu_range,
                                  max_slice_gap_factor=max_slice_gap_factor, max_gantry_tilt_deg=max_gantry_tilt_deg)
        if notes:
            vol = dataclasses.replace(vol, meta={**vol.meta, "series_selection": notes[0]})
        return vol
    items, grid, spacing_source, stack_plan = _stack_geometry(items, what, max_slice_gap_factor, max_gantry_tilt_deg)
    if stored_values and stack_plan is None:
        stored = _ct_stored(items, grid, source, hu_range, max_voxels)
        if stored is not None:
            stack, slope, intercept = stored
            meta = _common_meta(items)
            meta.update(slice_spacing_source=spacing_source, rescale_slope=slope, rescale_intercept=intercept)
            _add_notes(meta, notes, stack_plan)
            ds0 = items[0][1]
            return Volume(array=stack, grid=grid, units=CT_STORED_UNITS, modality="CT",
                          frame_of_reference_uid=_str(ds0, "FrameOfReferenceUID"),
                          series_instance_uid=_str(ds0, "SeriesInstanceUID"), meta=meta)
    hu = np.empty((len(items), *grid.shape[1:]), dtype=np.float32)
    rescales = []
    scratch = bytearray()
    lows, highs = np.empty(len(items)), np.empty(len(items))
    for k, (f, ds) in enumerate(items):
        px = _pixel_frames(ds, f, max_voxels, scratch)
        slope, intercept = _rescale(ds, f, required=True)
        rescales.append((slope, intercept))
        if _exact_in_float32(slope, intercept, px.dtype):
            np.add(px[0], np.float32(intercept), out=hu[k])  # integers below 2**24: float32 is exact, as float64
            lows[k], highs[k] = float(px.min()) + intercept, float(px.max()) + intercept  # exact, on the 2-byte values
        else:
            hu[k] = px[0] * slope + intercept
            lows[k], highs[k] = hu[k].min(), hu[k].max()  # while the slice is in cache; NaN propagates
    lo, hi = float(lows.min()), float(highs.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        _check_finite(hu, "CT series")
    _check_ct_values(source, items, rescales, lo, hi, hu[:, ::4, ::4], hu_range)
    if stack_plan is not None:  # issue 17: resampled after the checks on the slices as acquired
        hu_reg, filled = stack_plan.resample(hu, fill_value=-1000.0)
        hu = hu_reg.astype(np.float32)
        notes.append(stack_plan.note + (f"; {filled:.1%} of the voxels outside the acquired field of view set to "
                                        "-1000 HU" if filled else ""))
    meta = _common_meta(items)
    meta["slice_spacing_source"] = spacing_source
    _add_notes(meta, notes, stack_plan)
    ds0 = items[0][1]
    return Volume(array=hu, grid=grid, units="HU", modality="CT", frame_of_reference_uid=_str(ds0, "FrameOfReferenceUID"),
                  series_instance_uid=_str(ds0, "SeriesInstanceUID"), meta=meta)


@timed("PET series", logging.INFO)
@_boundary
@_gc_paused
def read_pet_series(
    source: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    series_instance_uid: str | None = None,
    clip_negative: bool = False,
    max_bq_ml: float = MAX_PLAUSIBLE_BQ_ML,
    max_slice_gap_factor: float = MAX_SLICE_GAP_FACTOR,
    max_gantry_tilt_deg: float = MAX_GANTRY_TILT_DEG,
    require_quantitative_corrections: bool = True,
    max_voxels: int | None = None,
) -> Volume:
    """A PET series in Bq/mL (Units (0054,1001) must be BQML; per-slice Rescale Slope applied).

    ``meta["pet_timing"]`` records Decay Correction (0054,1102), the decay-correction reference time, the
    acquisition start (Series Date/Time, the PET reference time of PS3.3 C.8.9.1), the frame duration and the
    radiopharmaceutical administration time and half-life; ``meta["radiopharmaceutical"]`` the injected activity.
    Negative voxels are rejected unless ``clip_negative`` (then set to 0, counted in ``meta["negative_voxels"]``).
    Required (they change the numbers): Rescale Slope and Intercept (Type 1; the intercept must be 0, C.8.9.4.1.1),
    Units BQML, Decay Correction, and Corrected Image (0028,0051) listing ATTN (an image without attenuation
    correction misplaces activity between liver and lungs) and DECY when Decay Correction is not NONE.
    ``max_voxels``: the voxel budget (:func:`voxel_budget`).
    """
    notes: list[str] = []
    items = _load_series(source, "PT", series_instance_uid, max_voxels, notes=notes)
    what = f"PET series {_describe(source)}"
    items, grid, spacing_source, stack_plan = _stack_geometry(items, what, max_slice_gap_factor, max_gantry_tilt_deg)
    f0, ds0 = items[0]
    units = _str(ds0, "Units")
    if units != "BQML":
        raise ImagingError(f"{f0}: Units (0054,1001) is {units!r}; quantitative Y-90 PET must be BQML (Bq/mL)")
    dc = _str(ds0, "DecayCorrection")
    if dc not in ("START", "ADMIN", "NONE"):
        raise ImagingError(f"{f0}: DecayCorrection (0054,1102) is {dc!r}; expected START, ADMIN or NONE")
    corrected = _pet_corrections(ds0, f0, dc) if require_quantitative_corrections else _corrected_image(ds0)
    conc = np.empty((len(items), *grid.shape[1:]), dtype=np.float64)
    decay_factors = []
    scratch = bytearray()
    for k, (f, ds) in enumerate(items):
        if _str(ds, "Units") != units or _str(ds, "DecayCorrection") != dc:
            raise ImagingError(f"{f}: Units or DecayCorrection differ from {f0} within one series")
        if (_pet_corrections(ds, f, dc) if require_quantitative_corrections else _corrected_image(ds)) != corrected:
            raise ImagingError(f"{f}: CorrectedImage (0028,0051) differs from {f0} within one series")
        px = _pixel_frames(ds, f, max_voxels, scratch)
        slope, intercept = _rescale(ds, f, required=True)
        if intercept != 0.0:
            raise ImagingError(f"{f}: RescaleIntercept (0028,1052) is {intercept:g}; the PET Image module requires 0")
        conc[k] = px[0] * slope + intercept
        decay_factors.append(_float(ds, "DecayFactor", f, required=False))
    if stack_plan is not None:
        conc, filled = stack_plan.resample(conc, fill_value=0.0)
        notes.append(stack_plan.note + (f"; {filled:.1%} of the voxels outside the acquired field of view set to 0"
                                        if filled else ""))
    _check_finite(conc, "PET series")
    n_neg = int(np.count_nonzero(conc < 0))
    if n_neg and not clip_negative:
        raise ImagingError(
            f"PET series {_describe(source)}: {n_neg} voxels with negative activity concentration "
            f"(minimum {conc.min():.6g} Bq/mL)"
        )
    conc = np.clip(conc, 0.0, None) if n_neg else conc
    if conc.max(initial=0.0) > max_bq_ml:
        raise ImagingError(f"PET series {_describe(source)}: implausible activity concentration {conc.max():.6g} Bq/mL > {max_bq_ml:g}")
    rp = _radiopharmaceutical(ds0, f0)
    acq = _datetime(ds0, "SeriesDate", "SeriesTime") or _datetime(ds0, "AcquisitionDate", "AcquisitionTime")
    frame_ms = _float(ds0, "ActualFrameDuration", f0, required=False)
    timing = PetTiming(
        decay_correction="START" if dc == "START" else "ADMIN" if dc == "ADMIN" else "NONE",  # dc checked above
        acquisition_datetime=acq,
        decay_correction_datetime=_parse_dt(_str(ds0, "DecayCorrectionDateTime")),
        frame_duration_s=frame_ms / 1000.0 if frame_ms else None,
        administration_datetime=rp.start_datetime if rp else None,
        half_life_s=rp.half_life_s if rp else None,
    )
    meta = _common_meta(items)
    meta.update(
        slice_spacing_source=spacing_source, radiopharmaceutical=rp, pet_timing=timing, dicom_units=units,
        decay_factors=tuple(decay_factors), negative_voxels=n_neg, acquisition_datetime=acq,
        corrected_image=corrected,
    )
    _add_notes(meta, notes, stack_plan)
    return Volume(array=conc, grid=grid, units="Bq/mL", modality="PT", frame_of_reference_uid=_str(ds0, "FrameOfReferenceUID"),
                  series_instance_uid=_str(ds0, "SeriesInstanceUID"), meta=meta)


@timed("SPECT (NM)", logging.INFO)
@_boundary
def read_nm(
    path: str | os.PathLike, *, allow_slice_thickness_fallback: bool = False, max_voxels: int | None = None
) -> Volume:
    """A reconstructed multi-frame NM (SPECT) volume in counts (Tc-99m MAA or Y-90 bremsstrahlung).

    Image Type value 3 must be RECON TOMO. Geometry: Image Position/Orientation (Patient) from the Detector
    Information Sequence (or the top level); frames are Spacing Between Slices (0018,0088) apart along the slice
    normal (a negative value, written by some older systems, runs against it). Without Spacing Between Slices the
    read fails unless ``allow_slice_thickness_fallback`` (then Slice Thickness is used and ``meta`` says so).
    Counts must be finite and non-negative. Rescale Slope/Intercept are applied when present (the NM IOD has no
    Modality LUT: without them the stored values are the counts). ``meta["corrected_image"]`` lists Corrected Image
    (0028,0051) (Type 3 in NM: ATTN, SCAT, ...). ``max_voxels``: the voxel budget (:func:`voxel_budget`), checked
    before the pixel data are decoded.
    """
    p = Path(path)
    if p.is_dir():
        raise ImagingError(f"{p}: read_nm expects one multi-frame NM file, got a folder")
    ds = _read(p)
    if _str(ds, "Modality") != "NM":
        raise ImagingError(f"{p}: Modality (0008,0060) is {_str(ds, 'Modality')!r}, expected 'NM'")
    image_type_str = _str(ds, "ImageType", default="") or ""
    image_type = [t.strip().upper() for t in image_type_str.split("\\")]
    if len(image_type) < 3 or image_type[2] != "RECON TOMO":
        raise ImagingError(
            f"{p}: ImageType (0008,0008) is {image_type_str!r}; only reconstructed tomography "
            "(value 3 RECON TOMO) is a volume"
        )
    px = _pixel_frames(ds, p, max_voxels)
    frames = px.shape[0]
    n_slices = _int(ds, "NumberOfSlices", p, required=False)
    if n_slices is not None and n_slices != frames:
        raise ImagingError(f"{p}: NumberOfSlices (0054,0081) {n_slices} differs from NumberOfFrames {frames}")
    det = _first_item(ds, "DetectorInformationSequence", p, required=False)
    holder = det if det is not None and "ImagePositionPatient" in det else ds
    ipp = _floats(holder, "ImagePositionPatient", p, 3)
    iop = _floats(holder, "ImageOrientationPatient", p, 6)
    ps = _floats(ds, "PixelSpacing", p, 2)
    if np.any(ps <= 0):
        raise ImagingError(f"{p}: PixelSpacing (0028,0030) must be positive, got {tuple(ps)}")
    spacing = _float(ds, "SpacingBetweenSlices", p, required=False)
    source = "SpacingBetweenSlices"
    if spacing is None:
        if not allow_slice_thickness_fallback:
            raise ImagingError(
                f"{p}: missing SpacingBetweenSlices (0018,0088); the NM IOD's frame spacing "
                "(pass allow_slice_thickness_fallback=True to use SliceThickness)"
            )
        spacing = _float(ds, "SliceThickness", p)
        source = "SliceThickness (fallback)"
    if spacing == 0:
        raise ImagingError(f"{p}: SpacingBetweenSlices (0018,0088) is 0")
    _, _, n = _orientation(iop, p)
    direction = n if spacing > 0 else -n
    grid = grid_from_image_plane(iop, ipp, ps, abs(spacing), px.shape, slice_direction=direction)
    slope, intercept = _rescale(ds, p, required=False)
    counts = px.astype(np.float64) * slope + intercept
    _check_finite(counts, str(p))
    if counts.min(initial=0.0) < 0:
        raise ImagingError(f"{p}: negative counts (minimum {counts.min():.6g}); emission counts cannot be negative")
    meta = _common_meta([(p, ds)])
    meta.update(slice_spacing_source=source, radiopharmaceutical=_radiopharmaceutical(ds, p),
                corrected_image=_corrected_image(ds),
                frame_duration_s=(_float(ds, "ActualFrameDuration", p, required=False) or 0.0) / 1000.0 or None)
    meta.update(_nm_acquisition(ds, p))
    return Volume(array=counts, grid=grid, units="counts", modality="NM", frame_of_reference_uid=_str(ds, "FrameOfReferenceUID"),
                  series_instance_uid=_str(ds, "SeriesInstanceUID"), meta=meta)


@_boundary
def read_rt_dose(
    path: str | os.PathLike, *, max_dose_gy: float = MAX_PLAUSIBLE_DOSE_GY, max_voxels: int | None = None,
    single_frame_thickness_mm: float | None = None,
) -> Volume:
    """An RT Dose grid (units ``"Gy"`` for Dose Units GY, ``"relative"`` for RELATIVE), scaled by Dose Grid
    Scaling. Frames are placed by Grid Frame Offset Vector (relative offsets, first 0; or, for axial images,
    absolute z positions), which must be uniform. Doses must be finite, >= 0 and (Gy) <= ``max_dose_gy``.

    A single-frame RT Dose (one dose plane; no Number of Frames) is a one-slice volume (``meta["single_plane"]``)
    whose thickness is ``single_frame_thickness_mm`` when given, else its Slice Thickness, else the spacing of a
    Grid Frame Offset Vector that lists more planes than the file holds, else -- no thickness anywhere -- the
    smaller pixel spacing, said in ``meta["slice_spacing_source"]``: the dose values and their in-plane positions
    are exact; only a volume computed from the plane depends on that thickness."""
    p = Path(path)
    ds = _read(p)
    if _str(ds, "Modality") != "RTDOSE" and _str(ds, "SOPClassUID") != _RT_DOSE:
        raise ImagingError(f"{p}: not an RT Dose (Modality {_str(ds, 'Modality')!r})")
    if "PixelData" not in ds:
        raise ImagingError(f"{p}: RT Dose without Pixel Data (points, isodoses or DVH only): not a volume")
    units = _str(ds, "DoseUnits")
    if units not in ("GY", "RELATIVE"):
        raise ImagingError(f"{p}: DoseUnits (3004,0002) is {units!r}; expected GY or RELATIVE")
    scaling = _float(ds, "DoseGridScaling", p)
    if scaling <= 0:
        raise ImagingError(f"{p}: DoseGridScaling (3004,000E) must be positive, got {scaling}")
    px = _pixel_frames(ds, p, max_voxels)
    frames = px.shape[0]
    ipp = _floats(ds, "ImagePositionPatient", p, 3)
    iop = _floats(ds, "ImageOrientationPatient", p, 6)
    ps = _floats(ds, "PixelSpacing", p, 2)
    if np.any(ps <= 0):
        raise ImagingError(f"{p}: PixelSpacing (0028,0030) must be positive, got {tuple(ps)}")
    r, c, n = _orientation(iop, p)
    if frames > 1:
        offsets = _floats(ds, "GridFrameOffsetVector", p, frames)
        if offsets[0] != 0.0:
            axial = np.allclose(iop, [1, 0, 0, 0, 1, 0], atol=1e-6)
            if axial and abs(offsets[0] - ipp[2]) < 1e-3:
                offsets = offsets - offsets[0]  # PS3.3 C.8.8.3.2 type b: absolute z of each frame
            else:
                raise ImagingError(
                    f"{p}: GridFrameOffsetVector (3004,000C) starts at {offsets[0]} instead of 0 and is not the "
                    "absolute z of an axial dose"
                )
        sign = 1.0 if offsets[-1] > offsets[0] else -1.0
        s = offsets * sign
        labels = [f"frame {i + 1}" for i in range(frames)]
        if np.any(np.diff(s) <= 0):
            raise ImagingError(f"{p}: GridFrameOffsetVector (3004,000C) is not monotonic")
        dz = _uniform_spacing(s, labels, f"RT Dose {p}")
        direction = n * sign
    else:
        dz, single_note = _single_frame_dose_thickness(ds, p, single_frame_thickness_mm)
        direction = n
    grid = grid_from_image_plane(iop, ipp, ps, dz, px.shape, slice_direction=direction)
    dose = px.astype(np.float64) * scaling
    _check_finite(dose, str(p))
    if dose.min(initial=0.0) < 0:
        raise ImagingError(f"{p}: negative dose (minimum {dose.min():.6g})")
    if units == "GY" and dose.max(initial=0.0) > max_dose_gy:
        raise ImagingError(f"{p}: implausible dose {dose.max():.6g} Gy > {max_dose_gy:g} Gy")
    meta = _common_meta([(p, ds)])
    meta.update(dose_type=_str(ds, "DoseType"), dose_summation_type=_str(ds, "DoseSummationType"),
                slice_spacing_source="GridFrameOffsetVector" if frames > 1 else single_note)
    if frames == 1:
        meta["single_plane"] = True
    return Volume(array=dose, grid=grid, units="Gy" if units == "GY" else "relative", modality="RTDOSE",
                  frame_of_reference_uid=_str(ds, "FrameOfReferenceUID"),
                  series_instance_uid=_str(ds, "SeriesInstanceUID"), meta=meta)


@timed("RTSTRUCT", logging.INFO)
@_boundary
def read_rtstruct(path: str | os.PathLike, *, frame_of_reference_uid: str | None = None) -> dict[str, list[np.ndarray]]:
    """The closed planar contours of an RT Structure Set: ROI name -> list of (N, 3) arrays in patient mm.

    Only CLOSED_PLANAR contours with three or more points and a non-zero area are returned (the others are skipped;
    :func:`read_rtstruct_with_notes` says which, per ROI); ROIs without one are left out. Duplicate ROI names get
    `` [ROI n]`` appended. With ``frame_of_reference_uid`` every ROI must be defined in that frame of reference
    (ImagingError naming both UIDs otherwise, or naming the missing Referenced Frame of Reference UID).
    """
    contours, notes = _read_rtstruct(Path(path), frame_of_reference_uid)
    for name, ns in notes.items():
        for n in ns:
            log.warning("%s: ROI %r: %s", path, name, n)
    return contours


@_boundary
def read_rtstruct_with_notes(
    path: str | os.PathLike, *, frame_of_reference_uid: str | None = None
) -> tuple[dict[str, list[np.ndarray]], dict[str, list[str]]]:
    """As :func:`read_rtstruct`, plus ROI name -> notes on what was skipped (issue 12: nothing is dropped
    silently): POINT and OPEN_PLANAR/OPEN_NONPLANAR contours, contours with fewer than three points or no area,
    ROIs without any contour. A ROI whose every contour was skipped is absent from the contours but has notes."""
    return _read_rtstruct(Path(path), frame_of_reference_uid)


def _contour_area_mm2(pts: np.ndarray) -> float:
    """Area of a closed polygon in 3D: half the length of sum_i p_i x p_(i+1) (the vector area), by dot products
    (np.cross and np.roll cost more than the sums on a contour of a hundred points)."""
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    nxt = np.concatenate((pts[1:], pts[:1]))  # each vertex's successor (np.roll(pts, -1, axis=0), cheaper)
    xn, yn, zn = nxt[:, 0], nxt[:, 1], nxt[:, 2]
    cx = float(np.dot(y, zn) - np.dot(z, yn))
    cy = float(np.dot(z, xn) - np.dot(x, zn))
    cz = float(np.dot(x, yn) - np.dot(y, xn))
    return 0.5 * math.sqrt(cx * cx + cy * cy + cz * cz)


@_gc_paused
def _read_rtstruct(
    p: Path, frame_of_reference_uid: str | None
) -> tuple[dict[str, list[np.ndarray]], dict[str, list[str]]]:
    ds = _read(p)
    if _str(ds, "Modality") != "RTSTRUCT" and _str(ds, "SOPClassUID") != _RT_STRUCT:
        raise ImagingError(f"{p}: not an RT Structure Set (Modality {_str(ds, 'Modality')!r})")
    rois = _value(ds, "StructureSetROISequence", p)
    refs = [_str(i, "FrameOfReferenceUID") for i in (_value(ds, "ReferencedFrameOfReferenceSequence", p, required=False) or [])]
    default_for = refs[0] if len(refs) == 1 else None
    names: dict[int, tuple[str, str | None]] = {}
    for item in rois:
        number = _int(item, "ROINumber", p)
        names[number] = (_str(item, "ROIName", default=f"ROI {number}"),
                         _str(item, "ReferencedFrameOfReferenceUID") or default_for)
    out: dict[str, list[np.ndarray]] = {}
    notes: dict[str, list[str]] = {}
    contoured: set[int] = set()
    for item in _value(ds, "ROIContourSequence", p, required=False) or []:
        number = _int(item, "ReferencedROINumber", p)
        if number not in names:
            raise ImagingError(f"{p}: ROIContourSequence references ROI {number}, absent from StructureSetROISequence")
        contoured.add(number)
        name, roi_for = names[number]
        contours = []
        skipped: dict[str, int] = {}
        items = _value(item, "ContourSequence", p, required=False) or []
        for n_c, c in enumerate(items):
            geom = _str(c, "ContourGeometricType")
            if geom is None:  # Type 1: a contour that does not say what it is is corrupt, not skippable
                raise ImagingError(f"{p}: ROI {name!r} contour {n_c}: missing or empty ContourGeometricType (3006,0042)")
            if geom != "CLOSED_PLANAR":
                key = f"{geom} contour(s)"
                skipped[key] = skipped.get(key, 0) + 1
                continue
            data = _contour_data(c, p)
            if data.size % 3:
                raise ImagingError(f"{p}: ROI {name!r} contour {n_c}: ContourData (3006,0050) length {data.size} is not a multiple of 3")
            npts = _int(c, "NumberOfContourPoints", p, required=False)
            if npts is not None and npts * 3 != data.size:
                raise ImagingError(
                    f"{p}: ROI {name!r} contour {n_c}: NumberOfContourPoints (3006,0046) {npts} but ContourData holds "
                    f"{data.size // 3} points"
                )
            if data.size and np.abs(data).max() > MAX_PLAUSIBLE_COORDINATE_MM:
                raise ImagingError(
                    f"{p}: ROI {name!r} contour {n_c}: implausible coordinates (|value| > {MAX_PLAUSIBLE_COORDINATE_MM:g} mm)"
                )
            pts = data.reshape(-1, 3)
            if len(pts) < 3:
                skipped["closed contour(s) with fewer than 3 points"] = skipped.get(
                    "closed contour(s) with fewer than 3 points", 0) + 1
                continue
            if _contour_area_mm2(pts) <= 1e-6:
                skipped["closed contour(s) without area (collinear points)"] = skipped.get(
                    "closed contour(s) without area (collinear points)", 0) + 1
                continue
            contours.append(pts)
        key = name if name not in out and name not in notes else f"{name} [ROI {number}]"
        if key != name:
            log.warning("%s: duplicate ROI name %r renamed %r", p, name, key)
        if skipped:
            desc = ", ".join(f"{n} {what}" for what, n in sorted(skipped.items()))
            notes.setdefault(key, []).append(
                f"{desc} of {len(items)} skipped (only closed planar contours with 3 or more points enclose a volume)"
                + ("; no contour left" if not contours else "")
            )
        elif not contours:
            notes.setdefault(key, []).append("no contour in its ContourSequence (3006,0040)")
        if not contours:
            continue
        if frame_of_reference_uid is not None and roi_for is None:
            raise ImagingError(
                f"{p}: ROI {name!r}: missing ReferencedFrameOfReferenceUID (3006,0024); cannot check that it lies in "
                f"the image's frame of reference {frame_of_reference_uid}"
            )
        if frame_of_reference_uid is not None and roi_for != frame_of_reference_uid:
            raise ImagingError(
                f"{p}: ROI {name!r} is defined in frame of reference {roi_for}, the image in {frame_of_reference_uid}"
            )
        out[key] = contours
    for number, (name, _) in names.items():
        if number not in contoured and name not in out:
            notes.setdefault(name, []).append("no contours (no ROIContourSequence item)")
    return out, notes


@_boundary
def read_seg_volumes(path: str | os.PathLike, *, max_voxels: int | None = None) -> dict[str, Volume]:
    """The segments of a DICOM SEG (highdicom) on their own geometry: label -> Volume (units ``"1"``: 0/1 for
    BINARY, fraction in [0, 1] for FRACTIONAL). ``max_voxels``: the voxel budget (:func:`voxel_budget`)."""
    import highdicom as hd

    p = Path(path)
    ds = _read(p)
    if _str(ds, "Modality") != "SEG" and _str(ds, "SOPClassUID") != _SEG:
        raise ImagingError(f"{p}: not a DICOM Segmentation (Modality {_str(ds, 'Modality')!r})")
    rows, cols = _int(ds, "Rows", p), _int(ds, "Columns", p)
    frames = _int(ds, "NumberOfFrames", p, required=False, default=1)
    if rows < 1 or cols < 1 or frames < 1:
        raise ImagingError(f"{p}: implausible image size Rows={rows} Columns={cols} NumberOfFrames={frames}")
    _check_budget(p, (frames, rows, cols), max_voxels)
    _check_pixel_data_length(ds, p, rows, cols, frames, allowed_bits=(1, 8))
    require_little_endian(ds, p, "highdicom")
    seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
    seg_type = _str(seg, "SegmentationType")
    out: dict[str, Volume] = {}
    for item in _value(seg, "SegmentSequence", p):
        number = _int(item, "SegmentNumber", p)
        label = _str(item, "SegmentLabel", default=f"segment {number}")
        vol = seg.get_volume(segment_numbers=[number], combine_segments=False, rescale_fractional=True)
        arr = np.asarray(vol.array)
        if arr.ndim == 4:
            arr = arr[..., 0]
        if arr.ndim != 3:
            raise ImagingError(f"{p}: segment {number} is not a 3D volume (shape {arr.shape})")
        grid = grid_from_affine(vol.affine, arr.shape, what=f"{p} segment {number}")
        arr = arr.astype(np.float32)
        _check_finite(arr, f"{p} segment {number}")
        if arr.min(initial=0) < 0 or arr.max(initial=0) > 1:
            raise ImagingError(f"{p}: segment {number} values outside [0, 1]")
        key = label if label not in out else f"{label} [segment {number}]"
        out[key] = Volume(array=arr, grid=grid, units="1", modality="SEG",
                          frame_of_reference_uid=_str(seg, "FrameOfReferenceUID"),
                          series_instance_uid=_str(seg, "SeriesInstanceUID"),
                          meta={"segment_number": number, "segmentation_type": seg_type, "source_files": (str(p),)})
    return out


@timed("SEG", logging.INFO)
@_boundary
def read_seg(
    path: str | os.PathLike, grid: Grid, *, frame_of_reference_uid: str | None = None, threshold: float = 0.5
) -> dict[str, np.ndarray]:
    """The segments of a DICOM SEG as boolean masks on ``grid``: BINARY segments by nearest-neighbour resampling,
    FRACTIONAL ones by linear resampling of the fraction thresholded at ``threshold``. With
    ``frame_of_reference_uid`` the SEG must be in that frame of reference."""
    from .resample import resample_to_grid

    if not isinstance(grid, Grid):
        raise ImagingError(f"grid: expected a Grid, got {type(grid).__name__}")
    out: dict[str, np.ndarray] = {}
    for name, vol in read_seg_volumes(path).items():
        if frame_of_reference_uid is not None and vol.frame_of_reference_uid != frame_of_reference_uid:
            raise ImagingError(
                f"{path}: segment {name!r} is in frame of reference {vol.frame_of_reference_uid}, "
                f"the target grid in {frame_of_reference_uid}"
            )
        if vol.meta.get("segmentation_type") == "FRACTIONAL":
            out[name] = resample_to_grid(vol.array, vol.grid, grid, "linear") >= threshold
        else:
            out[name] = resample_to_grid(vol.array >= 0.5, vol.grid, grid, "nearest")
    return out


def require_same_frame_of_reference(**uids: str | None) -> str:
    """Check that every named Frame of Reference UID is the same; returns it. ImagingError names the UIDs that
    differ, e.g. ``require_same_frame_of_reference(ct=ct.frame_of_reference_uid, spect=nm.frame_of_reference_uid)``."""
    if not uids:
        raise ImagingError("require_same_frame_of_reference: nothing to compare")
    missing = [k for k, v in uids.items() if not v]
    if missing:
        raise ImagingError(f"frame of reference unknown for {', '.join(missing)}")
    values = {v for v in uids.values() if v}  # every one (none is missing)
    if len(values) > 1:
        desc = ", ".join(f"{k}={v}" for k, v in uids.items())
        raise ImagingError(f"mismatched frames of reference ({desc}): the images need a registration first")
    return next(iter(values))
