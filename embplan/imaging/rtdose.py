"""Export of an absorbed-dose map as DICOM RT Dose (pydicom), written atomically.

The file is a grid-based RT Dose (RT Dose IOD, PS3.3 A.18): patient, study and frame of reference are copied from
the reference CT (so that a viewer overlays the dose on it), the grid from the dose map, DoseUnits GY,
DoseType PHYSICAL, 32-bit unsigned pixels with Dose Grid Scaling (the largest dose maps to 2^32 - 1; the
quantisation error is below 1.2e-10 of the maximum).

Dose Summation Type: Y-90 radioembolisation has no RT Plan. PS3.3 C.8.8.3 (RT Dose Module) requires the
Referenced RT Plan Sequence (300C,0002) when Dose Summation Type is PLAN, MULTI_PLAN, FRACTION, BEAM, BRACHY,
FRACTION_SESSION, BEAM_SESSION, BRACHY_SESSION or CONTROL_POINT, and a Referenced Treatment Record Sequence when it
is RECORD. The one remaining defined term, PLAN_OVERVIEW ("dose calculated with respect to plan overview
parameters"), needs no RT Plan instance: the plan is described in the RT Dose itself by the Plan Overview
Sequence (300C,0116) -- plan label, treatment site, number of fractions (one administration) and the reference
CT images. That is what is written by default. (``dose_summation_type="PLAN"`` is available for a caller that has a
real RT Plan and passes its SOP Instance UID.)

Conservative mode (``conservative=True``; ``embplan export-dicom --conservative``; issue 17): PLAN_OVERVIEW and the
Plan Overview Sequence entered the standard in 2019 (CP-1813 [U]) and older treatment planning and archive systems
reject or ignore an RT Dose that uses them. The conservative file uses what every RT Dose reader knows: Dose
Summation Type PLAN with a Referenced RT Plan Sequence -- to ``referenced_rt_plan_uid`` when the caller has a real
RT Plan, else to a UID embplan makes for this export (recorded in the Dose Comment; **no RT Plan object is written**:
a receiving system that resolves the reference will not find it) -- no Plan Overview Sequence, and the Latin-1
character set (ISO_IR 100) when every text fits it. The dose grid, the scaling and the geometry are the same.

Frames run along the slice normal (row direction x column direction) with Grid Frame Offset Vector
``0, dz, 2 dz, ...``: a grid whose k axis runs against the normal is written in reverse frame order from its last
slice, so that every reader sees increasing offsets; readers then return the same voxels with k reversed.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from .. import __version__
from ..errors import ImagingError
from ..grid import Grid
from .volume import Volume

__all__ = ["write_rt_dose", "rt_dose_reference", "RT_DOSE_STORAGE", "DEFAULT_DOSE_SUMMATION_TYPE", "MAX_EXPORT_DOSE_GY"]

log = logging.getLogger(__name__)

RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: See the module docstring: the Dose Summation Type that validates without an RT Plan.
DEFAULT_DOSE_SUMMATION_TYPE = "PLAN_OVERVIEW"
#: Doses above this are refused on export (issue 5: plausible range 0 to 5000 Gy).
MAX_EXPORT_DOSE_GY = 5000.0
_UINT32_MAX = 4294967295

_PATIENT_STUDY_KEYS = {
    # meta key -> DICOM keyword (all type 2 in the Patient and General Study modules, except StudyInstanceUID)
    "patient_name": "PatientName",
    "patient_id": "PatientID",
    "patient_birth_date": "PatientBirthDate",
    "patient_sex": "PatientSex",
    "study_instance_uid": "StudyInstanceUID",
    "study_date": "StudyDate",
    "study_time": "StudyTime",
    "study_id": "StudyID",
    "accession_number": "AccessionNumber",
    "referring_physician_name": "ReferringPhysicianName",
}


def _ds(value: float) -> str:
    return format_number_as_ds(float(value))


def _reference_info(reference_ct: Any) -> dict[str, Any]:
    """Patient, study, frame of reference and CT image references from a Dataset, Volume, file, folder or mapping."""
    info: dict[str, Any] = {}
    if reference_ct is None:
        return info
    if isinstance(reference_ct, str | os.PathLike):
        from .dicom import read_header

        p = Path(reference_ct)
        if p.is_dir():
            headers = []
            for f in sorted(p.iterdir()):
                if f.is_file() and not f.name.startswith("."):
                    try:
                        headers.append(read_header(f))
                    except ImagingError:
                        continue
            cts = [h for h in headers if str(h.get("Modality", "")) == "CT"]
            if not cts:
                raise ImagingError(f"reference_ct: no CT image in {p}")
            series = {str(h.get("SeriesInstanceUID", "")) for h in cts}
            if len(series) > 1:
                raise ImagingError(f"reference_ct: {p} holds {len(series)} CT series; pass one series or a Volume")
            reference_ct = cts[0]
            info["sop_instance_uids"] = tuple(str(h.SOPInstanceUID) for h in cts if "SOPInstanceUID" in h)
        else:
            reference_ct = read_header(p)
    if isinstance(reference_ct, Dataset):
        for key, kw in _PATIENT_STUDY_KEYS.items():
            v = reference_ct.get(kw)
            info[key] = "" if v is None else str(v)
        info["frame_of_reference_uid"] = str(reference_ct.get("FrameOfReferenceUID", "") or "")
        info["position_reference_indicator"] = str(reference_ct.get("PositionReferenceIndicator", "") or "")
        info["sop_class_uid"] = str(reference_ct.get("SOPClassUID", "") or "")
        if "sop_instance_uids" not in info and reference_ct.get("SOPInstanceUID"):
            info["sop_instance_uids"] = (str(reference_ct.SOPInstanceUID),)
    elif isinstance(reference_ct, Volume):
        for key in _PATIENT_STUDY_KEYS:
            v = reference_ct.meta.get(key)
            info[key] = "" if v is None else str(v)
        info["frame_of_reference_uid"] = reference_ct.frame_of_reference_uid or ""
        info["sop_class_uid"] = str(reference_ct.meta.get("sop_class_uid") or "")
        info["sop_instance_uids"] = tuple(u for u in reference_ct.meta.get("sop_instance_uids", ()) if u)
        info["position_reference_indicator"] = str(reference_ct.meta.get("position_reference_indicator") or "")
    elif isinstance(reference_ct, Mapping):
        for key in (*_PATIENT_STUDY_KEYS, "frame_of_reference_uid", "position_reference_indicator", "sop_class_uid"):
            if reference_ct.get(key) is not None:
                info[key] = str(reference_ct[key])
        info["sop_instance_uids"] = tuple(str(u) for u in reference_ct.get("sop_instance_uids", ()) if u)
    else:
        raise ImagingError(
            f"reference_ct: expected a pydicom Dataset, a Volume, a CT file or folder, or a mapping; got "
            f"{type(reference_ct).__name__}"
        )
    if not info.get("frame_of_reference_uid"):
        raise ImagingError("reference_ct: no Frame of Reference UID (0020,0052); the dose cannot be placed on the CT")
    return info


def rt_dose_reference(reference_ct: Dataset | Volume | str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """What :func:`write_rt_dose` takes from a reference CT, as a plain JSON-serialisable dict (strings and a list
    of SOP Instance UIDs): patient and study identifiers, ``frame_of_reference_uid``,
    ``position_reference_indicator``, ``sop_class_uid``, ``sop_instance_uids``. Store it with a plan and pass it
    back as ``reference_ct`` to export the dose later without the CT files."""
    info = _reference_info(reference_ct)
    if not info:
        raise ImagingError("reference_ct: none given")
    info["sop_instance_uids"] = list(info.get("sop_instance_uids", ()))
    return {k: ("" if v is None else v) for k, v in info.items()}


def _check_dose(dose_gy: Any, grid: Grid, max_dose_gy: float) -> np.ndarray:
    if not isinstance(grid, Grid):
        raise ImagingError(f"grid: expected a Grid, got {type(grid).__name__}")
    try:
        dose = np.asarray(dose_gy, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ImagingError(f"dose_gy: not a numeric array ({exc})") from exc
    if dose.shape != grid.shape:
        raise ImagingError(f"dose_gy: shape {dose.shape} does not match the grid shape {grid.shape}")
    if not np.all(np.isfinite(dose)):
        raise ImagingError(f"dose_gy: {int(np.count_nonzero(~np.isfinite(dose)))} non-finite values")
    if dose.size and dose.min() < 0:
        raise ImagingError(f"dose_gy: negative dose (minimum {dose.min():.6g} Gy)")
    if dose.size and dose.max() > max_dose_gy:
        raise ImagingError(f"dose_gy: implausible dose {dose.max():.6g} Gy > {max_dose_gy:g} Gy")
    return dose


def _quantise(dose: np.ndarray) -> tuple[np.ndarray, str]:
    peak = float(dose.max(initial=0.0))
    if peak <= 0.0:
        return np.zeros(dose.shape, dtype=np.uint32), "1"
    # a hair under 2^32 - 1 so that rounding DoseGridScaling to a 16-character decimal string cannot overflow
    scaling = _ds(peak / (_UINT32_MAX * (1.0 - 1.0e-8)))
    value = float(scaling)
    pixels = np.rint(dose / value)
    if pixels.max() > _UINT32_MAX:  # pragma: no cover - guarded by the margin above
        raise ImagingError("dose_gy: Dose Grid Scaling rounding overflow")
    return pixels.astype(np.uint32), scaling


def _latin1_or_utf8(ds: Dataset) -> str:
    """ISO_IR 100 (Latin-1) when every text value of ``ds`` encodes in it, else ISO_IR 192 (UTF-8)."""
    for elem in ds.iterall():
        if elem.VR in ("PN", "LO", "SH", "ST", "LT", "UT") and elem.value is not None:
            try:
                str(elem.value).encode("latin-1")
            except UnicodeEncodeError:
                return "ISO_IR 192"
    return "ISO_IR 100"


def write_rt_dose(
    dose_gy: np.ndarray,
    grid: Grid,
    path: str | os.PathLike | BinaryIO,
    *,
    reference_ct: Dataset | Volume | str | os.PathLike | Mapping[str, Any] | None = None,
    dose_summation_type: str = DEFAULT_DOSE_SUMMATION_TYPE,
    referenced_rt_plan_uid: str | None = None,
    dose_comment: str | None = None,
    series_description: str = "embplan Y-90 absorbed dose",
    series_number: int = 900,
    rt_plan_label: str = "Y-90 TARE",
    treatment_site: str = "Liver",
    tissue_heterogeneity_correction: str | None = None,
    max_dose_gy: float = MAX_EXPORT_DOSE_GY,
    content_datetime: datetime | None = None,
    conservative: bool = False,
) -> Path:
    """Write ``dose_gy`` (z, y, x, Gy) on ``grid`` as a DICOM RT Dose file at ``path``; returns the path.

    ``reference_ct`` (a CT slice Dataset, a CT :class:`Volume` from :func:`read_ct_series`, a CT file or series
    folder, or a mapping with the Volume.meta keys plus ``frame_of_reference_uid``) gives the patient, study and
    frame of reference; without it a new study and frame of reference are made and the patient is left empty
    (logged). The grid must be in the reference CT's frame of reference (the caller's responsibility: the dose is
    computed on CT-derived geometry). The file is written to a temporary file in the same folder and moved into
    place with ``os.replace``: an existing file is replaced whole or not at all; it gets the mode a plain ``open()``
    would give it. ``path`` may also be a binary file object (e.g. from :func:`embplan.io.atomic_file`): the
    dataset is written to it and committing it is the caller's.

    ``tissue_heterogeneity_correction``: optional Tissue Heterogeneity Correction (3004,0014) value, e.g. IMAGE
    for a density-corrected dose, WATER for a water kernel.

    ``conservative``: the layout older receiving systems accept (module docstring): Dose Summation Type PLAN with a
    Referenced RT Plan Sequence (``referenced_rt_plan_uid`` or a new UID, named in the Dose Comment), no Plan
    Overview Sequence, ISO_IR 100 when the texts allow it. ``dose_summation_type`` must then be left at its default.
    """
    dose = _check_dose(dose_gy, grid, max_dose_gy)
    if conservative:
        if dose_summation_type != DEFAULT_DOSE_SUMMATION_TYPE:
            raise ImagingError("conservative=True writes Dose Summation Type PLAN: leave dose_summation_type unset")
        dose_summation_type = "PLAN"
        if not referenced_rt_plan_uid:
            referenced_rt_plan_uid = generate_uid()
            note = f"RT Plan {referenced_rt_plan_uid} referenced, not written (embplan conservative mode)"
            dose_comment = f"{dose_comment}; {note}" if dose_comment else note
    if dose_summation_type not in ("PLAN_OVERVIEW", "PLAN"):
        raise ImagingError(f"dose_summation_type: must be PLAN_OVERVIEW (no RT Plan) or PLAN, got {dose_summation_type!r}")
    if dose_summation_type == "PLAN" and not referenced_rt_plan_uid:
        raise ImagingError("dose_summation_type='PLAN' needs referenced_rt_plan_uid (PS3.3 C.8.8.3); use PLAN_OVERVIEW")
    if tissue_heterogeneity_correction not in (None, "IMAGE", "ROI_OVERRIDE", "WATER"):
        raise ImagingError(f"tissue_heterogeneity_correction: IMAGE, ROI_OVERRIDE or WATER, got {tissue_heterogeneity_correction!r}")
    info = _reference_info(reference_ct)
    if not info:
        log.warning("write_rt_dose: no reference CT; writing a new study and frame of reference without patient data")
    fileobj = path if hasattr(path, "write") else None
    if fileobj is None:
        if not isinstance(path, str | os.PathLike):
            raise ImagingError(f"path: a file name or a writable binary file object, got {type(path).__name__}")
        out = Path(path)
        if not out.parent.is_dir():
            raise ImagingError(f"{out}: folder {out.parent} does not exist")
    else:
        out = Path(str(getattr(fileobj, "name", "<file object>")))

    # geometry: frames along the slice normal n = i x j
    d = np.asarray(grid.direction, dtype=float).reshape(3, 3)
    row_dir, col_dir, k_dir = d[:, 0], d[:, 1], d[:, 2]
    normal = np.cross(row_dir, col_dir)
    nz, ny, nx = grid.shape
    dz, dy, dx = grid.spacing_mm
    origin = np.asarray(grid.origin_mm, dtype=float)
    if float(np.dot(k_dir, normal)) < 0:
        dose = dose[::-1]
        origin = origin + (nz - 1) * dz * k_dir
    pixels, scaling = _quantise(dose)

    now = content_datetime or datetime.now()
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(RT_DOSE_STORAGE)
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = RT_DOSE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    # Patient (type 2) and General Study
    ds.PatientName = info.get("patient_name", "")
    ds.PatientID = info.get("patient_id", "")
    ds.PatientBirthDate = info.get("patient_birth_date", "")
    ds.PatientSex = info.get("patient_sex", "")
    ds.StudyInstanceUID = info.get("study_instance_uid") or generate_uid()
    ds.StudyDate = info.get("study_date", "")
    ds.StudyTime = info.get("study_time", "")
    ds.ReferringPhysicianName = info.get("referring_physician_name", "")
    ds.StudyID = info.get("study_id", "")
    ds.AccessionNumber = info.get("accession_number", "")
    # RT Series
    ds.Modality = "RTDOSE"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = int(series_number)
    ds.SeriesDescription = series_description
    ds.OperatorsName = ""
    # Frame of Reference
    ds.FrameOfReferenceUID = info.get("frame_of_reference_uid") or generate_uid()
    ds.PositionReferenceIndicator = info.get("position_reference_indicator", "")
    # General Equipment
    ds.Manufacturer = "embplan"
    ds.ManufacturerModelName = "embplan"
    ds.SoftwareVersions = __version__
    # General Image
    ds.InstanceNumber = 1
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    # Image Plane
    ds.ImagePositionPatient = [_ds(v) for v in origin]
    ds.ImageOrientationPatient = [_ds(v) for v in (*row_dir, *col_dir)]
    ds.PixelSpacing = [_ds(dy), _ds(dx)]
    ds.SliceThickness = _ds(dz)
    # Image Pixel + Multi-frame
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = int(ny)
    ds.Columns = int(nx)
    ds.BitsAllocated = 32
    ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = int(nz)
    ds.FrameIncrementPointer = pydicom.tag.Tag(0x3004, 0x000C)
    # RT Dose
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = dose_summation_type
    ds.GridFrameOffsetVector = [_ds(k * dz) for k in range(nz)]
    ds.DoseGridScaling = scaling
    if dose_comment:
        # Dose Comment is LO (64 characters); the conservative note with its UID goes whole into Image Comments
        ds.DoseComment = dose_comment[:64]
        if len(dose_comment) > 64:
            ds.ImageComments = dose_comment[:10240]
    if conservative:
        ds.SpecificCharacterSet = _latin1_or_utf8(ds)
    if tissue_heterogeneity_correction:
        ds.TissueHeterogeneityCorrection = tissue_heterogeneity_correction
    if dose_summation_type == "PLAN":
        ref = Dataset()
        ref.ReferencedSOPClassUID = RT_PLAN_STORAGE
        ref.ReferencedSOPInstanceUID = referenced_rt_plan_uid
        ds.ReferencedRTPlanSequence = Sequence([ref])
    else:
        overview = Dataset()
        overview.PlanOverviewIndex = 1
        overview.RTPlanLabel = rt_plan_label[:16]
        overview.TreatmentSite = treatment_site[:64]
        overview.TreatmentSiteCodeSequence = Sequence([])
        overview.PrescriptionOverviewSequence = Sequence([])
        overview.NumberOfFractionsIncluded = 1
        uids = info.get("sop_instance_uids", ())
        if uids:
            refs = []
            for uid in uids:
                r = Dataset()
                r.ReferencedSOPClassUID = info.get("sop_class_uid") or CT_IMAGE_STORAGE
                r.ReferencedSOPInstanceUID = uid
                refs.append(r)
            overview.ReferencedImageSequence = Sequence(refs)
        ds.PlanOverviewSequence = Sequence([overview])
    ds.PixelData = pixels.astype("<u4", copy=False).tobytes()

    if fileobj is not None:
        ds.save_as(fileobj, enforce_file_format=True)
        return out
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600: the mode a plain open() would give
        with os.fdopen(fd, "wb") as fh:
            ds.save_as(fh, enforce_file_format=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise ImagingError(f"{out}: cannot write the RT Dose ({exc})") from exc
        raise
    log.info("RT Dose written to %s (%s, max %.4g Gy, scaling %s)", out, grid.shape, float(dose.max(initial=0)), scaling)
    return out

