"""The dose map of an earlier TARE session, read from its file and placed on the current plan's grid (tumour board,
issue 11: the liver over the years from voxel maps).

An earlier session's dose comes from one of two files (``patient.prior_treatments[].dose_file``):

- a DICOM RT Dose (grid-based, Dose Units GY, Dose Type PHYSICAL), e.g. the one ``embplan export-dicom`` writes, read
  by :func:`embplan.imaging.dicom.read_rt_dose`;
- an embplan plan file (``plan.h5``, format ``embplan.plan`` 1.x, docs/plan-format.md). Only what the sum needs is
  read, with h5py, by :func:`read_plan_dose_map`: the root attributes (format name and major version), ``/plan_json``
  (the plan's dose method and activity), ``/meta_json`` (the voxel grid, the dataset paths, the frame of reference of
  its images) and the dose dataset of the plan's own method. What is read is verified: every array dataset carries a
  Fletcher-32 checksum (checked by HDF5 on read), the file's ``content_sha256`` is recomputed by the recipe of
  docs/plan-format.md (a plan altered or damaged since it was written is refused), the dataset's ``units`` must be
  ``Gy``, its shape the grid's, its values finite and >= 0. (This reader sits in ``imaging`` and never imports
  :mod:`embplan.io`: the planner must not depend on the archive layer.)

Placing the map (:func:`prior_dose_on_grid`): the earlier map and the current images must share a frame of
reference (equal Frame of Reference UID; without one, or with another, the map is refused: a registration would be
needed, and a dose map summed in the wrong place is a plausible wrong plan). On the same frame, a map on another
grid is resampled onto the current grid by trilinear interpolation (absorbed dose is intensive:
:func:`embplan.imaging.resample.resample_to_grid`, ``kind="linear"``), after a box average about one current voxel
wide when the current grid is more than twice as coarse (as the resampler's anti-aliasing of activity); points of the current grid outside the earlier
map's field of view get 0 Gy, and the fraction of the current liver that lies there is reported (Y-90 deposits its
energy within about 11 mm of the microspheres, so outside an earlier map that covered the activity the earlier dose is
negligible, but the sum is then a lower bound there).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EmbplanError, ImagingError
from ..grid import Grid

__all__ = ["PriorDoseMap", "read_prior_dose_map", "read_plan_dose_map", "read_rt_dose_map", "prior_dose_on_grid",
           "PLAN_FORMAT_NAME", "PLAN_FORMAT_MAJOR"]

log = logging.getLogger(__name__)

#: The plan archive's root attribute ``format`` and the major version this reader understands (docs/plan-format.md).
PLAN_FORMAT_NAME = "embplan.plan"
PLAN_FORMAT_MAJOR = 1
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Plan files of format 1.2 on start with a 512-byte user block (HDF5's signature follows at byte 512) holding
#: ``embplan.plan user block\n`` and ``sha256=<hex>`` of every byte after the block (docs/plan-format.md); the
#: same values as ``embplan.io.hdf5.USERBLOCK_BYTES`` / ``USERBLOCK_MAGIC``, restated here because imaging must not
#: import the archive layer (a test checks that the two agree).
PLAN_USERBLOCK_BYTES = 512
PLAN_USERBLOCK_MAGIC = b"embplan.plan user block\n"


@dataclass(frozen=True, eq=False)
class PriorDoseMap:
    """An earlier session's absorbed-dose map (Gy, physical dose) on its own grid, with where it came from."""

    dose_gy: np.ndarray
    grid: Grid
    frame_of_reference_uid: str | None
    path: Path
    kind: str  # "rtdose" or "plan"
    description: str
    meta: dict[str, Any] = field(default_factory=dict)


def read_prior_dose_map(path: str | os.PathLike[str]) -> PriorDoseMap:
    """Read an earlier session's dose map from an RT Dose file or an embplan plan file (told apart by the HDF5
    signature). ImagingError names the file and the reason."""
    p = Path(path)
    if not p.exists():
        raise ImagingError(f"{p}: not found")
    if p.is_dir():
        raise ImagingError(f"{p}: is a folder; give the RT Dose file or the plan file (.h5)")
    try:
        with p.open("rb") as fh:
            head = fh.read(PLAN_USERBLOCK_BYTES + len(_HDF5_SIGNATURE))
    except OSError as exc:
        raise ImagingError(f"{p}: cannot be read ({exc.strerror or exc})") from exc
    if head.startswith(_HDF5_SIGNATURE) or head.startswith(PLAN_USERBLOCK_MAGIC):
        return read_plan_dose_map(p)
    return read_rt_dose_map(p)


def _check_user_block(p: Path) -> None:
    """Verify a 1.2+ plan file's user-block SHA-256 (every byte after the block) before HDF5 parses the file; a file
    without the embplan user block (format 1.0/1.1) passes here and is verified by its ``content_sha256``."""
    with p.open("rb") as fh:
        head = fh.read(PLAN_USERBLOCK_BYTES)
        if not head.startswith(PLAN_USERBLOCK_MAGIC):
            return
        line = head[len(PLAN_USERBLOCK_MAGIC):].split(b"\n", 1)[0]
        stored = line.removeprefix(b"sha256=").decode("ascii", "replace")
        h = hashlib.sha256()
        while piece := fh.read(1024 * 1024):
            h.update(piece)
    if not line.startswith(b"sha256=") or h.hexdigest() != stored:
        raise ImagingError(f"{p}: checksum mismatch: the plan file's user-block SHA-256 does not match its content (altered or damaged since it "
                           "was written)")


def read_rt_dose_map(path: str | os.PathLike[str]) -> PriorDoseMap:
    """A grid-based RT Dose in Gy of physical dose (Dose Units GY; Dose Type PHYSICAL). RELATIVE doses, EFFECTIVE
    (biologically weighted) and ERROR doses are refused: they cannot be summed with an absorbed dose."""
    from .dicom import read_rt_dose

    p = Path(path)
    vol = read_rt_dose(p)
    if vol.units != "Gy":
        raise ImagingError(f"{p}: RT Dose in {vol.units!r} units (DoseUnits RELATIVE): only an absorbed dose in Gy "
                           "can be summed")
    dose_type = vol.meta.get("dose_type")
    if dose_type not in ("PHYSICAL", None):
        raise ImagingError(f"{p}: DoseType (3004,0004) is {dose_type!r}: only a PHYSICAL dose can be summed")
    if dose_type is None:
        raise ImagingError(f"{p}: DoseType (3004,0004) missing: a physical dose cannot be told from an effective one")
    summation = vol.meta.get("dose_summation_type")
    return PriorDoseMap(
        dose_gy=np.asarray(vol.array, dtype=np.float64), grid=vol.grid,
        frame_of_reference_uid=vol.frame_of_reference_uid, path=p, kind="rtdose",
        description=f"RT Dose {p.name} (PHYSICAL, summation {summation or 'not given'}, max "
                    f"{float(np.max(vol.array, initial=0.0)):.1f} Gy)",
        meta={"dose_summation_type": summation, "series_instance_uid": vol.series_instance_uid},
    )


def _attr_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _json_dataset(h5: Any, name: str, p: Path) -> tuple[bytes, Any]:
    if name not in h5:
        raise ImagingError(f"{p}: plan file without /{name}")
    raw = h5[name][()]
    if isinstance(raw, np.ndarray) and raw.shape == ():
        raw = raw.item()
    data = raw if isinstance(raw, bytes) else str(raw).encode("utf-8")
    try:
        return data, json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImagingError(f"{p}: /{name} is not valid UTF-8 JSON ({exc})") from exc


def _content_sha256(plan_json: bytes, meta_json: bytes, arrays: dict[str, np.ndarray]) -> str:
    """The plan archive's content hash, by the recipe of docs/plan-format.md: each part as (8-byte little-endian
    length, bytes): the plan JSON, the metadata JSON, then per array in sorted name order its name, ``dtype.str``,
    its shape as comma-joined decimals and its C-order bytes."""
    h = hashlib.sha256()

    def put(b: bytes) -> None:
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)

    put(plan_json)
    put(meta_json)
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        put(name.encode("utf-8"))
        put(a.dtype.str.encode("ascii"))
        put(",".join(str(n) for n in a.shape).encode("ascii"))
        put(a.reshape(-1).view(np.uint8).tobytes() if a.size else b"")
    return h.hexdigest()


def read_plan_dose_map(path: str | os.PathLike[str]) -> PriorDoseMap:
    """The dose map of an embplan plan file (its own dose method's map, at its delivered activity): see the module
    docstring for what is read and verified."""
    import h5py

    p = Path(path)
    try:
        _check_user_block(p)
    except OSError as exc:
        raise ImagingError(f"{p}: cannot be read ({exc.strerror or exc})") from exc
    try:
        h5 = h5py.File(p, "r")
    except OSError as exc:
        raise ImagingError(f"{p}: cannot open as HDF5 (truncated or damaged file?): {exc}") from exc
    try:
        with h5:
            return _read_plan_open(h5, p)
    except EmbplanError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise ImagingError(f"{p}: damaged plan file: {type(exc).__name__}: {exc}") from exc


def _read_plan_open(h5: Any, p: Path) -> PriorDoseMap:
    fmt = _attr_text(h5.attrs.get("format"))
    if fmt != PLAN_FORMAT_NAME:
        raise ImagingError(f"{p}: not an embplan plan file (format {fmt!r}, expected {PLAN_FORMAT_NAME!r})")
    version = _attr_text(h5.attrs.get("format_version")) or ""
    major = version.split(".", 1)[0]
    if not major.isdigit() or int(major) != PLAN_FORMAT_MAJOR:
        raise ImagingError(f"{p}: plan format version {version!r}; this reader reads {PLAN_FORMAT_MAJOR}.x")
    plan_bytes, plan = _json_dataset(h5, "plan_json", p)
    meta_bytes, meta = _json_dataset(h5, "meta_json", p)
    voxel = meta.get("voxel") if isinstance(meta, dict) else None
    if not isinstance(voxel, dict) or not isinstance(voxel.get("paths"), dict):
        raise ImagingError(f"{p}: the plan has no voxel data (planned without images): no dose map to sum")
    dosimetry = plan.get("dosimetry") if isinstance(plan, dict) else None
    method = dosimetry.get("method") if isinstance(dosimetry, dict) else None
    name = f"dose_{method}_gy"
    paths: dict[str, str] = voxel["paths"]
    if name not in paths:
        have = sorted(k for k in paths if k.startswith("dose_"))
        raise ImagingError(f"{p}: no dose map of the plan's method {method!r} (has {', '.join(have) or 'none'})")
    try:
        grid = Grid(**voxel["grid"])
    except (EmbplanError, TypeError, KeyError) as exc:
        raise ImagingError(f"{p}: /meta_json voxel grid is not a grid: {exc}") from exc
    arrays: dict[str, np.ndarray] = {}
    for key, dpath in paths.items():
        if dpath not in h5:
            raise ImagingError(f"{p}: missing dataset {dpath} (array {key!r})")
        try:
            arrays[key] = np.asarray(h5[dpath][()])  # Fletcher-32 checked by HDF5 here
        except OSError as exc:
            raise ImagingError(f"{p}: dataset {dpath} is corrupted (checksum or decompression failure): {exc}") from exc
    stored = _attr_text(h5.attrs.get("content_sha256"))
    if stored is None:
        raise ImagingError(f"{p}: root attribute 'content_sha256' missing: the plan file cannot be verified")
    if _content_sha256(plan_bytes, meta_bytes, arrays) != stored:
        raise ImagingError(f"{p}: content checksum mismatch: the plan file was altered or damaged")
    units = _attr_text(h5[paths[name]].attrs.get("units"))
    if units != "Gy":
        raise ImagingError(f"{p}: dataset {paths[name]} has units {units!r}, expected 'Gy'")
    dose = np.asarray(arrays[name], dtype=np.float64)
    if dose.shape != grid.shape:
        raise ImagingError(f"{p}: dose shape {dose.shape} does not match the grid {grid.shape}")
    if not np.all(np.isfinite(dose)):
        raise ImagingError(f"{p}: the dose map holds non-finite values")
    if dose.size and dose.min() < 0:
        raise ImagingError(f"{p}: negative dose (minimum {dose.min():.6g} Gy)")
    images = (voxel.get("attributes") or {}).get("images") or {}
    for_uid = images.get("frame_of_reference_uid") if isinstance(images, dict) else None
    activity = dosimetry.get("activity_gbq") if isinstance(dosimetry, dict) else None
    case = plan.get("case") if isinstance(plan, dict) else None
    date = ((case or {}).get("procedure") or {}).get("date") if isinstance(case, dict) else None
    return PriorDoseMap(
        dose_gy=dose, grid=grid, frame_of_reference_uid=str(for_uid) if for_uid else None, path=p, kind="plan",
        description=f"plan file {p.name} ({method} map" + (f", {activity:.3f} GBq" if isinstance(activity, float)
                                                           else "") + (f", procedure {date}" if date else "") + ")",
        meta={"method": method, "activity_gbq": activity, "procedure_date": date},
    )


def prior_dose_on_grid(prior: PriorDoseMap, grid: Grid, frame_of_reference_uid: str | None,
                       liver: np.ndarray | None = None, *, field_name: str = "dose_file") -> tuple[np.ndarray, str]:
    """``prior``'s dose on ``grid`` (Gy), and a note saying how it got there.

    Refused (ImagingError naming ``field_name``) when either frame of reference is unknown or they differ. Same grid:
    the map as it is; another grid on the same frame: trilinear resampling, 0 Gy outside the earlier field of view
    (the note gives the fraction of ``liver`` there)."""
    from scipy import ndimage

    from .resample import _box_sizes, resample_to_grid

    if not frame_of_reference_uid:
        raise ImagingError(f"{field_name}: the current images have no frame of reference (phantom or no DICOM): "
                           f"the earlier dose map {prior.path} cannot be placed on them")
    if not prior.frame_of_reference_uid:
        raise ImagingError(f"{field_name}: {prior.description} has no frame of reference (planned on a phantom?): it "
                           "cannot be placed on the current images")
    if prior.frame_of_reference_uid != frame_of_reference_uid:
        raise ImagingError(
            f"{field_name}: {prior.description} is in frame of reference {prior.frame_of_reference_uid}, the current "
            f"images in {frame_of_reference_uid}: the maps cannot be summed without a registration (not done here)")
    if prior.grid == grid:
        return np.asarray(prior.dose_gy, dtype=np.float64), "same grid and frame of reference: summed voxel by voxel"
    src = np.asarray(prior.dose_gy, dtype=np.float64)
    sizes = _box_sizes(prior.grid, grid)
    note = "same frame of reference, other grid: resampled onto the current grid (trilinear)"
    if any(n > 1 for n in sizes):  # a much coarser current grid: average over its voxel first (no point sampling)
        src = ndimage.uniform_filter(src, size=sizes, mode="nearest")
        note += f" after a {sizes[2]}x{sizes[1]}x{sizes[0]}-voxel box average (the current grid is > 2x coarser)"
    out = np.asarray(resample_to_grid(src, prior.grid, grid, "linear", default_value=0.0), dtype=np.float64)
    out = np.clip(out, 0.0, None)
    if liver is not None and np.any(liver):
        cover = np.asarray(resample_to_grid(np.ones(prior.grid.shape, np.float32), prior.grid, grid, "linear"))
        outside = float(np.mean(cover[np.asarray(liver, dtype=bool)] < 0.5))
        if outside > 0:
            note += (f"; {outside:.1%} of the current liver lies outside the earlier map (0 Gy taken there: the sum "
                     "is a lower bound there)")
    return out, note
