"""Which series of a folder is the volume the user means: a CT folder often holds a scout (localizer), a dose report
or a second reconstruction beside the axial series; a SPECT folder the raw projections beside the reconstruction.

:func:`choose_series` keeps the candidates that can be the planning volume and picks one when exactly one is left;
otherwise its :class:`~embplan.errors.ImagingError` lists every series (UID, description, slice count, Image Type,
orientation and why it was set aside) and says which case field selects one
(``dosimetry.images.dicom.ct_series_instance_uid``, ``spect_series_instance_uid`` or ``pet_series_instance_uid``).

A series is set aside when (in this order):

- its Image Type (0008,0008) says LOCALIZER (PS3.3 C.8.2.1.1.1: value 3 of a CT scout; any value is checked), or
  for NM it is not a reconstruction (value 3 is not RECON TOMO: projections, statics, whole-body scans), or for PET
  its Corrected Image (0028,0051) lacks ATTN (the non-attenuation-corrected reconstruction vendors export beside the
  corrected one);
- it has fewer than :data:`MIN_SERIES_SLICES` slices (a scout has one to three);
- its slices are not axial: the slice normal is more than :data:`MAX_AXIAL_TILT_DEG` from the patient's z axis
  (coronal or sagittal reformats; a gantry tilt up to that angle still counts as axial).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImagingError

__all__ = ["SeriesCandidate", "describe_candidates", "choose_series", "series_field", "MIN_SERIES_SLICES",
           "MAX_AXIAL_TILT_DEG"]

log = logging.getLogger(__name__)

#: Fewest slices of a series that can be a planning volume (a CT scout is 1-3 images; a liver CT has dozens).
MIN_SERIES_SLICES: int = 5
#: Largest angle, degrees, between the slice normal and the patient z axis of an "axial" series; beyond it the
#: series is a coronal/sagittal/oblique reformat. 45 degrees is the midpoint between axial and coronal/sagittal.
MAX_AXIAL_TILT_DEG: float = 45.0

_FIELDS = {"CT": "ct_series_instance_uid", "NM": "spect_series_instance_uid", "PT": "pet_series_instance_uid"}


def series_field(modality: str) -> str:
    """The case field that selects a series of ``modality`` (under ``dosimetry.images.dicom``)."""
    return f"dosimetry.images.dicom.{_FIELDS.get(modality, 'series_instance_uid')}"


@dataclass(frozen=True)
class SeriesCandidate:
    """One series found in a folder, as the message lists it."""

    series_instance_uid: str
    description: str
    n_slices: int
    image_type: str
    orientation: str
    excluded: str | None = None  # why it cannot be the planning volume; None when it can

    def line(self) -> str:
        why = f"; set aside: {self.excluded}" if self.excluded else ""
        return (f"{self.series_instance_uid} ({self.description or 'no description'!r}, {self.n_slices} slice"
                f"{'s' if self.n_slices != 1 else ''}, ImageType {self.image_type or '-'}, {self.orientation}{why})")


def _get(ds: Any, keyword: str) -> Any:
    try:
        return ds.get(keyword)
    except Exception:
        return None


def _image_type(ds: Any) -> list[str]:
    v = _get(ds, "ImageType")
    if v is None:
        return []
    vals = list(v) if not isinstance(v, str) else v.split("\\")
    return [str(x).strip().upper() for x in vals]


def _corrections(ds: Any) -> tuple[str, ...] | None:
    v = _get(ds, "CorrectedImage")
    if v is None:
        return None
    vals = list(v) if not isinstance(v, str) else v.split("\\")
    return tuple(str(x).strip().upper() for x in vals)


def _orientation_label(ds: Any) -> tuple[str, float | None]:
    iop = _get(ds, "ImageOrientationPatient")
    holder = ds
    if iop is None:  # multi-frame NM: in the Detector Information Sequence; enhanced: shared functional groups
        for seq, inner in (("DetectorInformationSequence", None),
                           ("SharedFunctionalGroupsSequence", "PlaneOrientationSequence")):
            items = _get(ds, seq)
            if items:
                holder = items[0]
                if inner is not None:
                    inner_items = _get(holder, inner)
                    holder = inner_items[0] if inner_items else None
                iop = _get(holder, "ImageOrientationPatient") if holder is not None else None
                if iop is not None:
                    break
    if iop is None:
        return "orientation unknown", None
    try:
        v = np.array([float(x) for x in iop], dtype=float)
        n = np.cross(v[:3], v[3:6])
        n /= np.linalg.norm(n)
    except Exception:
        return "orientation unreadable", None
    tilt = math.degrees(math.acos(min(1.0, abs(float(n[2])))))
    if tilt <= MAX_AXIAL_TILT_DEG:
        label = "axial" if tilt < 0.5 else f"axial, tilted {tilt:.1f} deg"
    else:
        axis = int(np.argmax(np.abs(n)))
        label = {0: "sagittal", 1: "coronal", 2: "axial"}[axis] if abs(n[axis]) > 0.999 else f"oblique {tilt:.0f} deg"
    return label, tilt


def _n_slices(files: Sequence[tuple[Path, Any]]) -> int:
    if len(files) == 1:
        n = _get(files[0][1], "NumberOfFrames")
        try:
            return max(1, int(n)) if n is not None else 1
        except (TypeError, ValueError):
            return 1
    return len(files)


def describe_candidates(groups: Mapping[str, Sequence[tuple[Path, Any]]], modality: str) -> list[SeriesCandidate]:
    """One :class:`SeriesCandidate` per series (UID -> its (path, header) pairs), with the reason it is set aside."""
    out: list[SeriesCandidate] = []
    for uid, files in groups.items():
        ds = files[0][1]
        it = _image_type(ds)
        orient, tilt = _orientation_label(ds)
        n = _n_slices(files)
        why: str | None = None
        if any("LOCALIZER" in v for v in it):
            why = "a localizer (scout)"
        elif modality == "NM" and (len(it) < 3 or it[2] != "RECON TOMO"):
            why = "not a reconstructed tomography (ImageType value 3 is not RECON TOMO)"
        elif modality == "PT" and _corrections(ds) is not None and "ATTN" not in (_corrections(ds) or ()):
            why = "not attenuation corrected (CorrectedImage without ATTN: a NAC reconstruction)"
        elif n < MIN_SERIES_SLICES:
            why = f"fewer than {MIN_SERIES_SLICES} slices"
        elif tilt is not None and tilt > MAX_AXIAL_TILT_DEG:
            why = f"not axial ({orient})"
        desc = str(_get(ds, "SeriesDescription") or "").strip()
        out.append(SeriesCandidate(uid, desc, n, "\\".join(it), orient, why))
    out.sort(key=lambda c: (c.excluded is not None, -c.n_slices, c.series_instance_uid))
    return out


def choose_series(
    groups: Mapping[str, Sequence[tuple[Path, Any]]],
    modality: str,
    source: str,
    series_instance_uid: str | None = None,
) -> tuple[str, str | None]:
    """The UID of the series to read among ``groups`` (Series Instance UID -> [(path, header)]) and a note (None when
    there was nothing to choose). With ``series_instance_uid`` that series must be there. Otherwise a single series
    is taken as it is; among several, the one candidate left after setting aside localizers, short series and
    non-axial reformats (see the module docstring) is chosen, with a note; none or several left is an
    ImagingError listing them all and naming the case field to set."""
    field = series_field(modality)
    if series_instance_uid is not None:
        if series_instance_uid in groups:
            return series_instance_uid, None
        listing = "; ".join(c.line() for c in describe_candidates(groups, modality))
        raise ImagingError(f"{source}: no {modality} series {series_instance_uid} ({field}); the folder holds: {listing}")
    if len(groups) == 1:
        return next(iter(groups)), None
    cands = describe_candidates(groups, modality)
    usable = [c for c in cands if c.excluded is None]
    listing = "; ".join(c.line() for c in cands)
    if len(usable) == 1:
        chosen = usable[0]
        note = (f"{source}: {len(cands)} {modality} series; chose {chosen.series_instance_uid} "
                f"({chosen.description or 'no description'!r}, {chosen.n_slices} slices), the only one that is not "
                f"a localizer, a short series or a reformat (set {field} to choose another); all: {listing}")
        log.info("%s", note)
        return chosen.series_instance_uid, note
    what = "none is" if not usable else f"{len(usable)} are"
    raise ImagingError(
        f"{source}: {len(cands)} {modality} series and {what} an axial volume of at least {MIN_SERIES_SLICES} slices "
        f"that is not a localizer; set {field} to one of: {listing}"
    )


def choose_nm_file(folder: Path, series_instance_uid: str | None = None) -> tuple[Path, str | None]:
    """The reconstructed SPECT file of a folder (one multi-frame NM file per series: projections, reconstructions,
    a CT-based attenuation map exported as NM): the one RECON TOMO volume, the series ``series_instance_uid``, or an
    ImagingError listing the NM series found. Returns the file and a note (None when there was nothing to choose)."""
    from .dicom import read_header

    groups: dict[str, list[tuple[Path, Any]]] = {}
    for f in sorted(folder.iterdir()):
        if not f.is_file() or f.name.startswith("."):
            continue
        try:
            ds = read_header(f)
        except ImagingError:
            continue
        if str(ds.get("Modality", "")) != "NM":
            continue
        groups.setdefault(str(ds.get("SeriesInstanceUID", "") or f.name), []).append((f, ds))
    if not groups:
        raise ImagingError(f"{series_field('NM').rsplit('.', 1)[0]}.spect: {folder} holds no NM file")
    uid, note = choose_series(groups, "NM", str(folder), series_instance_uid)
    files = groups[uid]
    if len(files) != 1:
        raise ImagingError(f"{folder}: NM series {uid} is {len(files)} files; a reconstructed SPECT is one multi-frame "
                           "file: name it in dosimetry.images.dicom.spect")
    return files[0][0], note
