"""Enhanced (multi-frame) images: Enhanced CT, Legacy Converted Enhanced CT, Enhanced PET (PS3.3 A.38, A.70, A.56).

One file holds every slice; what a classic series keeps per file sits in the functional groups (PS3.3 C.7.6.16,
Multi-frame Functional Groups module), each frame's item of the Per-frame Functional Groups Sequence (5200,9230)
overriding the Shared Functional Groups Sequence (5200,9229):

- Plane Position Sequence (0020,9113): Image Position (Patient) of the frame (PS3.3 C.7.6.16.2.3);
- Plane Orientation Sequence (0020,9116): Image Orientation (Patient) (C.7.6.16.2.4);
- Pixel Measures Sequence (0028,9110): Pixel Spacing, Slice Thickness (C.7.6.16.2.1);
- Pixel Value Transformation Sequence (0028,9145): Rescale Slope, Intercept and Type (C.7.6.16.2.9; for CT,
  C.8.15.3.10: Rescale Type HU for ORIGINAL frames);
- Frame Content Sequence (0020,9111): Stack ID, In-Stack Position Number, Temporal Position Index (C.7.6.16.2.2).

Frames of one stack and one temporal position make the volume; several stacks or temporal positions (a dynamic or
perfusion acquisition) are refused with the list, unless ``stack_id`` / ``temporal_position`` select one. Frames are
sorted along the slice normal and handed to the same geometry rules as a classic series (uniform spacing, or
resampling within the tolerances of :mod:`embplan.imaging.irregular`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from ..errors import ImagingError
from .dicom import (
    _boundary,
    _check_finite,
    _common_meta,
    _floats,
    _int,
    _pixel_frames,
    _read,
    _str,
    _uniform_spacing,
    grid_from_image_plane,
)
from .irregular import MAX_GANTRY_TILT_DEG, MAX_SLICE_GAP_FACTOR, regular_stack_plan
from .volume import Volume

__all__ = ["read_enhanced_image", "frame_headers"]


def _fg(ds: Dataset, frame: Dataset | None, seq: str, src: Any, required: bool = True) -> Dataset | None:
    """The first item of functional group ``seq`` for one frame: per-frame first, then shared."""
    for holder in (frame, (ds.get("SharedFunctionalGroupsSequence") or [None])[0]):
        if holder is not None and seq in holder:
            items = holder[seq].value
            if items:
                return items[0]
    if required:
        raise ImagingError(f"{src}: missing {seq} in the Per-frame and the Shared Functional Groups Sequence")
    return None


def _group(ds: Dataset, frame: Dataset, seq: str, src: Any) -> Dataset:
    item = _fg(ds, frame, seq, src, required=True)
    assert item is not None  # required=True raised otherwise
    return item


def _numbers(holder: Dataset, keyword: str, src: Any, n: int) -> list[float]:
    v = _floats(holder, keyword, src, n)
    assert v is not None  # required
    return [float(x) for x in v]


def frame_headers(ds: Dataset, src: Any) -> list[Dataset]:
    """One small header per frame with what a classic slice would carry: ImagePositionPatient,
    ImageOrientationPatient, PixelSpacing, SliceThickness, Rows, Columns, RescaleSlope/Intercept/Type, StackID,
    InStackPositionNumber, TemporalPositionIndex, FrameOfReferenceUID, and ``frame_index`` (0-based, a plain Python
    attribute)."""
    frames = _int(ds, "NumberOfFrames", src)
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    if len(per_frame) != frames:
        raise ImagingError(
            f"{src}: PerFrameFunctionalGroupsSequence (5200,9230) has {len(per_frame)} items for {frames} frames"
        )
    rows, cols = _int(ds, "Rows", src), _int(ds, "Columns", src)
    out: list[Dataset] = []
    for i, fr in enumerate(per_frame):
        where = f"{src} frame {i + 1}"
        h = Dataset()
        h.ImagePositionPatient = _numbers(_group(ds, fr, "PlanePositionSequence", where), "ImagePositionPatient",
                                          where, 3)
        h.ImageOrientationPatient = _numbers(_group(ds, fr, "PlaneOrientationSequence", where),
                                             "ImageOrientationPatient", where, 6)
        pm = _group(ds, fr, "PixelMeasuresSequence", where)
        h.PixelSpacing = _numbers(pm, "PixelSpacing", where, 2)
        thick = pm.get("SliceThickness")
        if thick not in (None, ""):
            h.SliceThickness = thick
        h.Rows, h.Columns = rows, cols
        pvt = _fg(ds, fr, "PixelValueTransformationSequence", where, required=False)
        holder = pvt if pvt is not None else ds  # Legacy Converted may keep them at the top level
        h.RescaleSlope = holder.get("RescaleSlope", 1.0)
        h.RescaleIntercept = holder.get("RescaleIntercept", 0.0)
        rtype = _str(holder, "RescaleType")
        if rtype:
            h.RescaleType = rtype
        fc = _fg(ds, fr, "FrameContentSequence", where, required=False)
        if fc is not None:
            for kw in ("StackID", "InStackPositionNumber", "TemporalPositionIndex"):
                if kw in fc and fc[kw].value not in (None, ""):
                    setattr(h, kw, fc[kw].value)
        for_uid = _str(ds, "FrameOfReferenceUID")
        if for_uid:
            h.FrameOfReferenceUID = for_uid
        h.frame_index = i  # not a DICOM keyword: a plain attribute
        out.append(h)
    return out


@_boundary
def read_enhanced_image(
    path: str | os.PathLike,
    *,
    modality: str = "CT",
    hu_range: tuple[float, float] | None = None,
    stack_id: str | None = None,
    temporal_position: int | None = None,
    accept_rescale_types: tuple[str, ...] = ("HU",),
    max_slice_gap_factor: float = MAX_SLICE_GAP_FACTOR,
    max_gantry_tilt_deg: float = MAX_GANTRY_TILT_DEG,
) -> Volume:
    """An Enhanced CT (``modality="CT"``, units HU) as a :class:`Volume` like :func:`read_ct_series` gives.

    The Rescale Type of every frame must be in ``accept_rescale_types`` (default: HU; a DERIVED perfusion map with
    Rescale Type US is no CT density, and is refused unless the caller accepts ``"US"``). ``hu_range`` bounds the
    values as in :func:`read_ct_series`."""
    p = Path(path)
    ds = _read(p)
    if _str(ds, "Modality") != modality:
        raise ImagingError(f"{p}: Modality (0008,0060) is {_str(ds, 'Modality')!r}, expected {modality!r}")
    headers = frame_headers(ds, p)
    # one stack, one temporal position
    keys = sorted({(str(getattr(h, "StackID", "")), int(getattr(h, "TemporalPositionIndex", 0) or 0))
                   for h in headers})
    if stack_id is not None or temporal_position is not None:
        headers = [h for h in headers
                   if (stack_id is None or str(getattr(h, "StackID", "")) == stack_id)
                   and (temporal_position is None or int(getattr(h, "TemporalPositionIndex", 0) or 0) == temporal_position)]
        if not headers:
            raise ImagingError(f"{p}: no frame of stack {stack_id!r} / temporal position {temporal_position!r}; "
                               f"the file holds (stack, temporal position) {keys}")
    elif len(keys) > 1:
        raise ImagingError(
            f"{p}: {len(keys)} stacks or temporal positions (Stack ID, Temporal Position Index) {keys} in one file "
            "(a dynamic or multi-stack acquisition): pass stack_id / temporal_position to choose one"
        )
    for h in headers:
        rtype = str(getattr(h, "RescaleType", "HU" if modality == "CT" else "")).upper()
        if modality == "CT" and rtype not in accept_rescale_types:
            raise ImagingError(
                f"{p} frame {h.frame_index + 1}: Rescale Type (0028,1054) is {rtype!r} (ImageType "
                f"{_str(ds, 'ImageType')}): the values are not Hounsfield units, so not a CT density"
            )
    what = f"Enhanced {modality} {p}"
    items = [(Path(f"{p.name} frame {h.frame_index + 1}"), h) for h in headers]
    plan = regular_stack_plan(items, what, max_slice_gap_factor=max_slice_gap_factor,
                              max_gantry_tilt_deg=max_gantry_tilt_deg)
    iop = np.array([float(v) for v in headers[0].ImageOrientationPatient])
    for h in headers:
        if not np.allclose([float(v) for v in h.ImageOrientationPatient], iop, atol=1e-4):
            raise ImagingError(f"{what}: frame {h.frame_index + 1} has another ImageOrientationPatient")
        if not np.allclose([float(v) for v in h.PixelSpacing], [float(v) for v in headers[0].PixelSpacing], rtol=1e-4):
            raise ImagingError(f"{what}: frame {h.frame_index + 1} has another PixelSpacing")
    n = np.cross(iop[:3], iop[3:])
    if plan is None:
        pos = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
        s = pos @ n
        order = np.argsort(s, kind="stable")
        headers = [headers[i] for i in order]
        pos, s = pos[order], s[order]
        shift = (pos - pos[0]) - np.outer(s - s[0], n)
        if np.any(np.linalg.norm(shift, axis=1) > 0.05):
            raise ImagingError(f"{what}: frames shifted across the slice plane")  # unreachable: plan handles it
        if len(headers) > 1:
            dz = _uniform_spacing(s, [f"frame {h.frame_index + 1}" for h in headers], what)
            spacing_source = "PlanePositionSequence"
        else:
            thick = getattr(headers[0], "SliceThickness", None)
            if thick in (None, "") or float(thick) <= 0:
                raise ImagingError(f"{what}: a single frame without a positive SliceThickness has no thickness")
            dz = float(thick)
            spacing_source = "SliceThickness (single frame)"
        grid = grid_from_image_plane(iop, pos[0], [float(v) for v in headers[0].PixelSpacing], dz,
                                     (len(headers), int(ds.Rows), int(ds.Columns)))
    else:
        headers = [h for _, h in plan.items]
        grid = plan.grid
        spacing_source = "PlanePositionSequence (resampled onto a regular grid)"
    px = _pixel_frames(ds, p)
    stack = np.empty((len(headers), *px.shape[1:]), dtype=np.float64)
    for k, h in enumerate(headers):
        slope, intercept = float(h.RescaleSlope), float(h.RescaleIntercept)
        if slope == 0:
            raise ImagingError(f"{what}: frame {h.frame_index + 1}: Rescale Slope is 0")
        stack[k] = px[h.frame_index] * slope + intercept
    meta = _common_meta([(p, ds)])
    if plan is not None:
        stack, filled = plan.resample(stack, fill_value=-1000.0 if modality == "CT" else 0.0)
        meta["geometry_note"] = plan.note + (f"; {filled:.1%} of the voxels outside the field of view filled"
                                             if filled else "")
    arr = stack.astype(np.float32) if modality == "CT" else stack
    _check_finite(arr, what)
    if hu_range is not None and arr.size:
        lo, hi = float(arr.min()), float(arr.max())
        if lo < hu_range[0] or hi > hu_range[1]:
            raise ImagingError(f"{what}: implausible Hounsfield units [{lo:g}, {hi:g}] outside {hu_range}")
    meta.update(slice_spacing_source=spacing_source, enhanced=True, frame_count=int(px.shape[0]),
                frames_used=tuple(int(h.frame_index) for h in headers))
    return Volume(array=arr, grid=grid, units="HU" if modality == "CT" else "", modality=modality,
                  frame_of_reference_uid=_str(ds, "FrameOfReferenceUID"),
                  series_instance_uid=_str(ds, "SeriesInstanceUID"), meta=meta)
