"""The synthetic NET liver phantom written as a DICOM set: CT series, Tc-99m MAA SPECT (NM) and RT Structure Set.

:func:`write_phantom_dicom` writes, in one Study Instance UID and one Frame of Reference UID:

- ``ct/CT_0001.dcm ...``: a CT Image series, one file per slice, the phantom's CT numbers as int16 with Rescale
  Slope 1 and Rescale Intercept -1024 (HU = stored value - 1024; the phantom's HU are integers, so the CT reads
  back exactly).
- ``spect/nm.dcm``: one multi-frame NM Image (Image Type ``ORIGINAL\\PRIMARY\\RECON TOMO\\EMISSION``), the MAA
  activity map as counts. Geometry per the NM IOD (PS3.3 C.8.4.10, NM Detector module): Image Position and
  Orientation (Patient) in the Detector Information Sequence, frames ``Spacing Between Slices`` apart along the
  slice normal, Slice Vector 1..n. The SPECT grid is the phantom grid, or the phantom grid binned
  ``spect_binning`` times along every axis (counts summed: totals are kept exactly).
- ``rtstruct.dcm``: an RT Structure Set whose ROIs are the phantom's masks: ``Liver``, ``Liver_Right``,
  ``Liver_Left``, ``Segment_1`` .. ``Segment_8``, ``Tumor_1`` .. ``Tumor_n`` (one ROI per tumour, largest first)
  and ``Lungs`` (see :data:`ROI_NAMES`). Each ROI is drawn on every CT slice it touches: the slice of the mask is
  supersampled ``contour_supersample`` times (nearest neighbour), padded with background, and contoured at level
  0.5 by matplotlib's contour generator (contourpy); the polygons therefore follow the voxel edges up to corner
  cuts of ``1 / (2 s)`` voxel, holes and islands come out as separate closed contours (even-odd fill, as
  :func:`embplan.imaging.rtstruct.rasterize_structure` reads them), and collinear points are dropped. Re-rasterised
  on the phantom grid with the half-voxel rule, the ROIs give back the phantom masks (see the tests for numbers).

Counts: the activity (default :meth:`Phantom.maa_activity`, on the whole liver or ``perfused_mask``) is scaled to
``total_counts`` and rounded by error diffusion along the array (each voxel gets the floor or the ceiling of its
value, the running sum is rounded): every contiguous run of voxels keeps its total within one count, so uniform
regions of a few counts per voxel (the lungs) keep their share -- plain rounding would bias a lung shunt of 4.6
counts per voxel by 9 %. NM pixels are 16-bit (PS3.3 C.8.4.7: Bits Allocated 8 or 16); a total that would overflow
them is refused.

``patient_position="FFS"`` writes the same patient feet first supine: row direction -x (Image Orientation
``-1\\0\\0\\0\\1\\0``), slices along -z; contours are in patient coordinates either way. UIDs are derived from the
phantom's parameters and the writer's arguments (2.25 UIDs of name-based UUIDs, PS3.5 B.2): the same call writes
the same UIDs. Errors are :class:`~embplan.errors.ImagingError`.

Synthetic data for tests and examples, not patient data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from .. import __version__
from ..errors import ImagingError
from ..grid import Grid
from .phantom import Phantom

__all__ = [
    "write_phantom_dicom",
    "phantom_contours",
    "mask_contours",
    "roi_name",
    "structure_roles",
    "ROI_NAMES",
    "TC99M_HALF_LIFE_S",
    "MAA_ADMINISTERED_MBQ_DEFAULT",
    "DEFAULT_TOTAL_COUNTS",
]

log = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
NM_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.20"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
STUDY_COMPONENT_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"  # the SOP class RT Referenced Study items name (retired)

#: Tc-99m half-life, 6.0067 h = 21624.12 s (NNDC/ENSDF; ICRP Publication 107 gives 6.015 h): the Radionuclide Half
#: Life (0018,1075) written in the NM header.
TC99M_HALF_LIFE_S: float = 21624.12
#: Tc-99m MAA activity written as Radionuclide Total Dose (0018,1074): 150 MBq, within the 100-200 MBq of the EANM
#: radioembolization procedure guideline (Weber et al., EJNMMI 2022, doi:10.1007/s00259-021-05600-z). The header
#: value is informative only: the planner scales the counts by the prescribed Y-90 activity.
MAA_ADMINISTERED_MBQ_DEFAULT: float = 150.0
#: Total counts of the synthetic SPECT (a typical reconstructed MAA SPECT holds a few million counts).
DEFAULT_TOTAL_COUNTS: float = 2.0e6
#: Tc-99m photopeak window 140.5 keV +/- 10 % (the usual clinical window; synthetic header value).
#: Radionuclide code of Tc-99m (CID 18 / 4020, SNOMED CT 44588005; the SRT code C-163A8 is deprecated).
TC99M_CODE: tuple[str, str, str] = ("44588005", "SCT", "^99m^Technetium")
TC99M_WINDOW_KEV: tuple[float, float] = (126.45, 154.55)
#: CT stored value = HU - RESCALE_INTERCEPT (int16, Rescale Slope 1).
CT_RESCALE_INTERCEPT: float = -1024.0
_UINT16_MAX = 65535
#: Namespace of the name-based UUIDs behind the written UIDs (uuid5 of a fixed URL).
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "embplan.imaging.phantom_dicom")

#: Phantom mask -> ROI name in the RT Structure Set (tumours: ``tumor_<n>`` -> ``Tumor_<n>``, see :func:`roi_name`).
ROI_NAMES: Mapping[str, str] = {
    "liver": "Liver",
    "liver_right": "Liver_Right",
    "liver_left": "Liver_Left",
    **{f"segment_{n}": f"Segment_{n}" for n in range(1, 9)},
    "lungs": "Lungs",
}
_ORGAN_MASKS = ("liver", "liver_right", "liver_left", *(f"segment_{n}" for n in range(1, 9)))


def roi_name(mask_name: str) -> str:
    """The ROI name written for a phantom mask (``liver`` -> ``Liver``, ``tumor_3`` -> ``Tumor_3``)."""
    if mask_name in ROI_NAMES:
        return ROI_NAMES[mask_name]
    return "_".join(p[:1].upper() + p[1:] for p in mask_name.split("_"))


def structure_roles(phantom: Phantom) -> dict[str, Any]:
    """The ``dosimetry.images.dicom.structures`` mapping of a case for the ROIs :func:`write_phantom_dicom` writes
    (JSON data: segment keys are strings)."""
    return {
        "liver": [roi_name("liver")],
        "tumors": [roi_name(t) for t in phantom.tumor_names],
        "lungs": [roi_name("lungs")],
        "right_lobe": [roi_name("liver_right")],
        "left_lobe": [roi_name("liver_left")],
        "segments": {str(n): [roi_name(f"segment_{n}")] for n in range(1, 9)},
    }


# ----------------------------------------------------------------------------------------------------- contours
def _drop_collinear(poly: np.ndarray) -> np.ndarray:
    """Vertices of a closed polygon (no repeated last point) without those on a straight run."""
    if len(poly) < 4:
        return poly
    prev = poly - np.roll(poly, 1, axis=0)
    nxt = np.roll(poly, -1, axis=0) - poly
    cross = prev[:, 0] * nxt[:, 1] - prev[:, 1] * nxt[:, 0]
    keep = np.abs(cross) > 1e-9
    return poly[keep] if np.count_nonzero(keep) >= 3 else poly


def mask_contours(mask: np.ndarray, grid: Grid, *, supersample: int = 2) -> list[tuple[int, np.ndarray]]:
    """Closed planar contours of a boolean (z, y, x) mask on ``grid``, one set per slice k: a list of
    ``(k, points)`` with ``points`` an (N, 3) array of patient coordinates (mm) in the plane of slice k.

    The slice is supersampled ``supersample`` times (nearest neighbour) and contoured at level 0.5 (contourpy):
    the polygons run along the voxel edges with corners cut by ``1 / (2 supersample)`` voxel.
    """
    import contourpy

    m = np.asarray(mask)
    if m.dtype != np.bool_ or m.shape != grid.shape:
        raise ImagingError(f"mask: expected a boolean array of the grid shape {grid.shape}, got {m.dtype} {m.shape}")
    if not (isinstance(supersample, int) and 1 <= supersample <= 8):
        raise ImagingError(f"contour_supersample: must be an integer in 1..8, got {supersample!r}")
    s = supersample
    out: list[tuple[int, np.ndarray]] = []
    for k in np.flatnonzero(m.any(axis=(1, 2))):
        sl = m[k]
        rows, cols = np.nonzero(sl)
        j0, i0 = int(rows.min()), int(cols.min())
        sub = sl[j0:int(rows.max()) + 1, i0:int(cols.max()) + 1]
        up = np.pad(np.repeat(np.repeat(sub, s, axis=0), s, axis=1).astype(np.float64), 1)
        gen = contourpy.contour_generator(z=up, line_type=contourpy.LineType.Separate)
        for line in gen.lines(0.5):
            xy = np.asarray(line, dtype=np.float64)
            if len(xy) > 1 and np.allclose(xy[0], xy[-1]):
                xy = xy[:-1]
            if len(xy) < 3:
                continue
            # padded, supersampled pixel u -> voxel coordinate (u - 1 + 0.5) / s - 0.5 (+ crop offset)
            row = (xy[:, 1] - 0.5) / s - 0.5 + j0
            col = (xy[:, 0] - 0.5) / s - 0.5 + i0
            poly = _drop_collinear(np.column_stack([row, col]))
            idx = np.column_stack([np.full(len(poly), float(k)), poly])
            out.append((int(k), grid.index_to_patient_mm(idx)))
    return out


def phantom_contours(phantom: Phantom, *, supersample: int = 2) -> dict[str, list[tuple[int, np.ndarray]]]:
    """ROI name -> contours (:func:`mask_contours`) of the phantom structures the planner needs: liver, lobes,
    Couinaud segments, each tumour, lungs (in that order)."""
    names = [*_ORGAN_MASKS, *phantom.tumor_names, "lungs"]
    return {roi_name(n): mask_contours(np.asarray(phantom.masks[n]), phantom.grid, supersample=supersample)
            for n in names}


# ----------------------------------------------------------------------------------------------------- writing
def _image_grid(grid: Grid, position: str) -> tuple[Grid, tuple[slice, slice, slice]]:
    """The grid the images are written on for a patient position, and the slicing that maps a phantom array
    onto it. HFS: the phantom grid. FFS: rows along -x, slices along -z (same voxels, reversed)."""
    if position == "HFS":
        return grid, (slice(None), slice(None), slice(None))
    nz, _, nx = grid.shape
    far = grid.index_to_patient_mm(np.array([nz - 1, 0, nx - 1], dtype=float))
    d = np.asarray(grid.direction, dtype=float).reshape(3, 3)
    flipped = np.column_stack([-d[:, 0], d[:, 1], -d[:, 2]])  # i -> -x, j -> y, k -> -z
    g = Grid(shape=grid.shape, spacing_mm=grid.spacing_mm, origin_mm=tuple(float(v) for v in far),
             direction=tuple(float(v) for v in flipped.reshape(-1)))
    return g, (slice(None, None, -1), slice(None), slice(None, None, -1))


def _binned_grid(grid: Grid, b: int) -> Grid:
    if b == 1:
        return grid
    shape = tuple(int(math.ceil(n / b)) for n in grid.shape)
    centre = grid.index_to_patient_mm(np.array([(b - 1) / 2.0] * 3))
    return Grid(shape=shape, spacing_mm=tuple(b * s for s in grid.spacing_mm),
                origin_mm=tuple(float(v) for v in centre), direction=grid.direction)


def _bin_sum(arr: np.ndarray, b: int) -> np.ndarray:
    if b == 1:
        return arr
    pad = [(0, (-n) % b) for n in arr.shape]
    a = np.pad(arr, pad)
    nz, ny, nx = (n // b for n in a.shape)
    return a.reshape(nz, b, ny, b, nx, b).sum(axis=(1, 3, 5))


def _integer_counts(values: np.ndarray) -> np.ndarray:
    """Error-diffusion rounding along the C-ordered array: counts[i] = round(S_i) - round(S_{i-1})."""
    flat = values.reshape(-1).astype(np.float64)
    rounded = np.rint(np.cumsum(flat))
    counts = np.diff(np.concatenate([[0.0], rounded]))
    return np.clip(counts, 0.0, None).reshape(values.shape)


def _ds(v: float) -> str:
    text = f"{float(v):.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _iop(grid: Grid) -> list[str]:
    """Image Orientation (Patient): the row direction (index i) then the column direction (index j)."""
    d = np.asarray(grid.direction, dtype=float).reshape(3, 3)
    return [_ds(v) for v in (*d[:, 0], *d[:, 1])]


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = UID(sop_class)
    fm.MediaStorageSOPInstanceUID = UID(sop_uid)
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return fm


class _Writer:
    def __init__(self, key: str, patient_id: str, patient_name: str, when: datetime, position: str) -> None:
        self.key = key
        self.patient_id = patient_id
        self.patient_name = patient_name
        self.when = when
        self.position = position
        self.study_uid = self.uid("study")
        self.for_uid = self.uid("frame-of-reference")

    def uid(self, *parts: object) -> str:
        """A UID under the 2.25 root (PS3.5 B.2) from a name-based (SHA-1) UUID of the writer's key and ``parts``."""
        return f"2.25.{uuid.uuid5(_UID_NAMESPACE, '|'.join([self.key, *(str(p) for p in parts)])).int}"

    def base(self, sop_class: str, modality: str, series_uid: str, series_number: int, sop_uid: str,
             description: str) -> Dataset:
        ds = Dataset()
        ds.file_meta = _file_meta(sop_class, sop_uid)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        ds.InstanceCreationDate = self.when.strftime("%Y%m%d")
        ds.InstanceCreationTime = self.when.strftime("%H%M%S")
        ds.Modality = modality
        ds.PatientName = self.patient_name
        ds.PatientID = self.patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = "synthetic phantom (embplan), no patient data"
        ds.StudyInstanceUID = self.study_uid
        ds.StudyDate = self.when.strftime("%Y%m%d")
        ds.StudyTime = self.when.strftime("%H%M%S")
        ds.StudyID = "1"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "embplan synthetic NET liver phantom"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.SeriesDate = ds.StudyDate
        ds.SeriesTime = ds.StudyTime
        ds.Manufacturer = "embplan"
        ds.ManufacturerModelName = "embplan phantom_dicom"
        ds.SoftwareVersions = __version__
        return ds

    def frame_of_reference(self, ds: Dataset) -> None:
        ds.FrameOfReferenceUID = self.for_uid
        ds.PositionReferenceIndicator = ""


def _pixels_16bit(ds: Dataset, pixels: np.ndarray, *, signed: bool) -> None:
    """The image pixel module for 16-bit monochrome pixels (one frame (rows, columns) or frames (n, rows, columns))."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[-2]), int(pixels.shape[-1])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()


def _save(ds: Dataset, path: Path) -> None:
    try:
        ds.save_as(path, enforce_file_format=True)
    except OSError as exc:
        raise ImagingError(f"{path}: cannot write ({exc})") from exc


def _write_ct(w: _Writer, folder: Path, grid: Grid, hu: np.ndarray) -> tuple[str, list[str]]:
    raw = np.rint(np.asarray(hu, dtype=np.float64) - CT_RESCALE_INTERCEPT)
    if raw.min() < -32768 or raw.max() > 32767:
        raise ImagingError("phantom.ct_hu: CT numbers outside the int16 range of the CT writer")
    raw = raw.astype("<i2")
    series_uid = w.uid("ct-series")
    iop = _iop(grid)
    uids = []
    for k in range(grid.shape[0]):
        sop_uid = w.uid("ct", k)
        ds = w.base(CT_IMAGE_STORAGE, "CT", series_uid, 1, sop_uid, "Phantom CT")
        w.frame_of_reference(ds)
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.AcquisitionDate = ds.StudyDate
        ds.AcquisitionTime = ds.StudyTime
        ds.PatientPosition = w.position
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(v) for v in grid.index_to_patient_mm(np.array([k, 0, 0], dtype=float))]
        ds.ImageOrientationPatient = iop
        ds.PixelSpacing = [_ds(grid.spacing_mm[1]), _ds(grid.spacing_mm[2])]
        ds.SliceThickness = _ds(grid.spacing_mm[0])
        ds.KVP = ""
        ds.AcquisitionNumber = 1  # CT Image module, type 2 (issue 17: vendors write it; dciodvfy requires it)
        ds.BodyPartExamined = "ABDOMEN"  # with it, General Series Laterality (2C, paired organs) stays absent
        ds.RescaleIntercept = _ds(CT_RESCALE_INTERCEPT)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        _pixels_16bit(ds, raw[k], signed=True)
        _save(ds, folder / f"CT_{k + 1:04d}.dcm")
        uids.append(sop_uid)
    return series_uid, uids


def _write_nm(w: _Writer, path: Path, grid: Grid, counts: np.ndarray, administered_mbq: float) -> str:
    series_uid = w.uid("nm-series")
    sop_uid = w.uid("nm")
    ds = w.base(NM_IMAGE_STORAGE, "NM", series_uid, 2, sop_uid, "Tc-99m MAA SPECT (synthetic)")
    w.frame_of_reference(ds)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
    ds.CorrectedImage = ["ATTN", "SCAT"]  # the synthetic counts are attenuation- and scatter-free (issue 12 note)
    ds.AcquisitionDate = ds.StudyDate
    ds.AcquisitionTime = ds.StudyTime
    ds.PatientPosition = w.position
    ds.InstanceNumber = 1
    nz = int(grid.shape[0])
    ds.NumberOfFrames = nz
    ds.FrameIncrementPointer = [0x00540080]  # Slice Vector: RECON TOMO (PS3.3 C.8.4.8)
    ds.NumberOfSlices = nz
    ds.SliceVector = list(range(1, nz + 1))
    ds.NumberOfEnergyWindows = 1
    win = Dataset()
    rng = Dataset()
    rng.EnergyWindowLowerLimit = _ds(TC99M_WINDOW_KEV[0])
    rng.EnergyWindowUpperLimit = _ds(TC99M_WINDOW_KEV[1])
    win.EnergyWindowRangeSequence = Sequence([rng])
    win.EnergyWindowName = "Tc99m"
    ds.EnergyWindowInformationSequence = Sequence([win])
    ds.NumberOfDetectors = 1
    iop = _iop(grid)
    det = Dataset()
    det.ImagePositionPatient = [_ds(v) for v in grid.origin_mm]
    det.ImageOrientationPatient = iop
    det.CollimatorGridName = "LEHR"  # low-energy high-resolution: the Tc-99m collimator
    det.CollimatorType = "PARA"
    det.ZoomFactor = ["1", "1"]
    ds.DetectorInformationSequence = Sequence([det])
    ds.PixelSpacing = [_ds(grid.spacing_mm[1]), _ds(grid.spacing_mm[2])]
    ds.SliceThickness = _ds(grid.spacing_mm[0])
    ds.SpacingBetweenSlices = _ds(grid.spacing_mm[0])  # frames along the slice normal (k = row x column)
    _nm_vendor_modules(ds, w.position, float(np.sum(counts)))
    rp = Dataset()
    rp.Radiopharmaceutical = "Tc99m MAA"
    rp.RadionuclideTotalDose = _ds(administered_mbq * 1.0e6)
    rp.RadionuclideHalfLife = _ds(TC99M_HALF_LIFE_S)
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = TC99M_CODE
    rp.RadionuclideCodeSequence = Sequence([code])
    ds.RadiopharmaceuticalInformationSequence = Sequence([rp])
    _pixels_16bit(ds, counts.astype("<u2"), signed=False)
    _save(ds, path)
    return series_uid


#: Patient orientation codes of the NM/PET Patient Orientation module (PS3.3 C.8.4.6; CID 19, 20, 21; SNOMED CT).
_RECUMBENT = ("102538003", "SCT", "recumbent")
_ORIENTATION_MODIFIER = {"S": ("40199007", "SCT", "supine"), "P": ("1240000", "SCT", "prone")}
_GANTRY_RELATIONSHIP = {"H": ("102540008", "SCT", "headfirst"), "F": ("102541007", "SCT", "feet-first")}


def _code(value: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value
    return item


def _nm_vendor_modules(ds: Dataset, position: str, total_counts: float) -> None:
    """What reconstructed SPECT from the vendors carries beyond the pixels (NM Image IOD, PS3.3 A.5): NM Image
    (Counts Accumulated), NM Multi-frame (Number of Rotations), NM TOMO Acquisition (Rotation Information Sequence
    with the acquisition of a dual-head Tc-99m MAA SPECT: 2 x 64 views of 20 s over 360 degrees [U], synthetic), NM/PET
    Patient Orientation (coded recumbent, supine/prone, head/feet first). Actual Frame Duration belongs to the
    rotation there, not to the top level (PS3.3 C.8.4.9: type 1C only for static, dynamic, gated, whole body)."""
    ds.CountsAccumulated = int(round(total_counts))
    ds.NumberOfRotations = 1
    rot = Dataset()
    rot.StartAngle = "0"
    rot.AngularStep = "2.8125"
    rot.RotationDirection = "CW"
    rot.ScanArc = "180"
    rot.ActualFrameDuration = 20000  # ms per view
    rot.NumberOfFramesInRotation = 64
    ds.RotationInformationSequence = Sequence([rot])
    orient = _code(_RECUMBENT)
    orient.PatientOrientationModifierCodeSequence = Sequence([_code(_ORIENTATION_MODIFIER.get(position[2:3], _ORIENTATION_MODIFIER["S"]))])
    ds.PatientOrientationCodeSequence = Sequence([orient])
    ds.PatientGantryRelationshipCodeSequence = Sequence([_code(_GANTRY_RELATIONSHIP.get(position[:1], _GANTRY_RELATIONSHIP["H"]))])
    ds.BodyPartExamined = "ABDOMEN"
    if "PatientPosition" in ds:  # the coded orientation replaces it (PS3.3 C.8.4.6: shall not be present)
        del ds.PatientPosition


def _write_rtstruct(w: _Writer, path: Path, ct_grid: Grid, ct_series_uid: str, ct_uids: list[str],
                    contours: Mapping[str, list[tuple[int, np.ndarray]]], tumor_rois: set[str]) -> None:
    ds = w.base(RT_STRUCTURE_SET_STORAGE, "RTSTRUCT", w.uid("rtstruct-series"), 3, w.uid("rtstruct"),
                "Phantom structures")
    ds.InstanceNumber = 1
    ds.OperatorsName = ""  # RT Series, type 2
    w.frame_of_reference(ds)  # Frame of Reference module of the RT Structure Set IOD (PS3.3 A.19)
    ds.StructureSetLabel = "PHANTOM"
    ds.StructureSetName = "embplan phantom"
    ds.StructureSetDate = ds.StudyDate
    ds.StructureSetTime = ds.StudyTime
    series = Dataset()
    series.SeriesInstanceUID = ct_series_uid
    images = []
    for uid in ct_uids:
        item = Dataset()
        item.ReferencedSOPClassUID = CT_IMAGE_STORAGE
        item.ReferencedSOPInstanceUID = uid
        images.append(item)
    series.ContourImageSequence = Sequence(images)
    study = Dataset()
    study.ReferencedSOPClassUID = STUDY_COMPONENT_MANAGEMENT
    study.ReferencedSOPInstanceUID = w.study_uid
    study.RTReferencedSeriesSequence = Sequence([series])
    ref_for = Dataset()
    ref_for.FrameOfReferenceUID = w.for_uid
    ref_for.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([ref_for])
    rois, roi_contours, observations = [], [], []
    palette = [(220, 180, 60), (200, 120, 40), (240, 200, 90), (80, 160, 240), (255, 0, 0), (120, 200, 120)]
    for number, (name, items) in enumerate(contours.items(), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = w.for_uid
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        rois.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber = number
        rc.ROIDisplayColor = list(palette[number % len(palette)])
        seq = []
        for n_c, (_k, pts) in enumerate(items, start=1):
            c = Dataset()
            # the CT slice the contour lies on
            kk = int(np.rint(ct_grid.patient_mm_to_index(pts[:1])[0, 0]))
            img = Dataset()
            img.ReferencedSOPClassUID = CT_IMAGE_STORAGE
            img.ReferencedSOPInstanceUID = ct_uids[kk]
            c.ContourImageSequence = Sequence([img])
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(pts)
            c.ContourNumber = n_c
            c.ContourData = [_ds(v) for v in np.asarray(pts, dtype=float).reshape(-1)]
            seq.append(c)
        rc.ContourSequence = Sequence(seq)
        roi_contours.append(rc)
        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = "GTV" if name in tumor_rois else "ORGAN"
        obs.ROIInterpreter = ""
        observations.append(obs)
    ds.StructureSetROISequence = Sequence(rois)
    ds.ROIContourSequence = Sequence(roi_contours)
    ds.RTROIObservationsSequence = Sequence(observations)
    _save(ds, path)


def _check_activity(activity: Any, grid: Grid) -> np.ndarray:
    try:
        a = np.asarray(activity, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ImagingError(f"activity: not a numeric array ({exc})") from exc
    if a.shape != grid.shape:
        raise ImagingError(f"activity: shape {a.shape} does not match the phantom grid {grid.shape}")
    if not np.all(np.isfinite(a)):
        raise ImagingError("activity: non-finite values")
    if a.size and a.min() < 0:
        raise ImagingError(f"activity: negative values (minimum {a.min():.6g})")
    if not a.sum() > 0:
        raise ImagingError("activity: no activity anywhere")
    return a


def write_phantom_dicom(
    phantom: Phantom,
    out_dir: str | os.PathLike[str],
    *,
    activity: np.ndarray | None = None,
    perfused_mask: np.ndarray | None = None,
    patient_id: str = "phantom",
    patient_name: str = "Phantom^NET^Liver",
    total_counts: float = DEFAULT_TOTAL_COUNTS,
    spect_binning: int = 1,
    patient_position: Literal["HFS", "FFS"] = "HFS",
    contour_supersample: int = 2,
    study_datetime: datetime = datetime(2026, 12, 1, 9, 0, 0),
    maa_administered_mbq: float = MAA_ADMINISTERED_MBQ_DEFAULT,
) -> dict[str, Path]:
    """Write ``phantom`` as a DICOM CT + NM SPECT + RTSTRUCT set under ``out_dir`` (see the module docstring).

    ``activity``: the SPECT's activity distribution on the phantom grid (relative units); default
    ``phantom.maa_activity(perfused_mask)`` (the whole liver without a mask). ``total_counts``: counts in the SPECT.
    ``spect_binning``: SPECT voxels are this many phantom voxels along each axis (1-4). Returns
    ``{"ct": folder, "spect": nm file, "rtstruct": file}``. ``out_dir`` is created when missing (its parent must
    exist); a ``ct`` folder already holding files is refused (a stale series would mix with the new one).
    """
    if not isinstance(phantom, Phantom):
        raise ImagingError(f"phantom: expected a Phantom, got {type(phantom).__name__}")
    if patient_position not in ("HFS", "FFS"):
        raise ImagingError(f"patient_position: must be 'HFS' or 'FFS', got {patient_position!r}")
    if not (isinstance(spect_binning, int) and not isinstance(spect_binning, bool) and 1 <= spect_binning <= 4):
        raise ImagingError(f"spect_binning: must be an integer in 1..4, got {spect_binning!r}")
    if not (isinstance(total_counts, int | float) and math.isfinite(total_counts) and total_counts >= 1000):
        raise ImagingError(f"total_counts: must be a finite number >= 1000, got {total_counts!r}")
    if not (isinstance(maa_administered_mbq, int | float) and math.isfinite(maa_administered_mbq)
            and maa_administered_mbq > 0):
        raise ImagingError(f"maa_administered_mbq: must be a finite number > 0, got {maa_administered_mbq!r}")
    if not isinstance(patient_id, str) or not patient_id.strip() or len(patient_id) > 64:
        raise ImagingError(f"patient_id: must be a non-empty string of at most 64 characters, got {patient_id!r}")
    grid = phantom.grid
    if activity is None:
        activity = phantom.maa_activity(perfused_mask)  # ImagingError naming perfused_mask when it is wrong
    elif perfused_mask is not None:
        raise ImagingError("perfused_mask: give activity or perfused_mask, not both")
    act = _check_activity(activity, grid)

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ImagingError(f"{out}: out_dir exists and is not a folder")
    if not out.parent.is_dir():
        raise ImagingError(f"{out}: the parent folder {out.parent} does not exist")
    ct_dir = out / "ct"
    if ct_dir.is_dir() and any(ct_dir.iterdir()):
        raise ImagingError(f"{ct_dir}: already holds files; write the phantom DICOM set into an empty folder")
    try:
        (out / "spect").mkdir(parents=True, exist_ok=True)
        ct_dir.mkdir(exist_ok=True)
    except OSError as exc:
        raise ImagingError(f"{out}: cannot create the output folders ({exc})") from exc

    img_grid, flip = _image_grid(grid, patient_position)
    nm_grid = _binned_grid(img_grid, spect_binning)
    counts_f = _bin_sum(act[flip], spect_binning)
    counts_f = counts_f * (float(total_counts) / float(counts_f.sum()))
    counts = _integer_counts(counts_f[flip])[flip]  # rounded in the phantom's voxel order, whatever the position
    if counts.max() > _UINT16_MAX:
        raise ImagingError(
            f"total_counts: {total_counts:g} counts put {counts.max():.0f} in the hottest voxel, above the 16-bit NM "
            f"pixel range ({_UINT16_MAX}); lower total_counts"
        )

    params = json.dumps(dict(phantom.parameters), sort_keys=True, default=str)
    key = hashlib.sha256(
        "|".join([params, patient_id, patient_position, str(spect_binning), repr(float(total_counts)),
                  hashlib.sha256(act.tobytes()).hexdigest()]).encode()
    ).hexdigest()
    w = _Writer(key, patient_id, patient_name, study_datetime, patient_position)
    ct_series, ct_uids = _write_ct(w, ct_dir, img_grid, np.asarray(phantom.ct_hu)[flip])
    nm_path = out / "spect" / "nm.dcm"
    _write_nm(w, nm_path, nm_grid, counts, float(maa_administered_mbq))
    contours = phantom_contours(phantom, supersample=contour_supersample)
    rs_path = out / "rtstruct.dcm"
    _write_rtstruct(w, rs_path, img_grid, ct_series, ct_uids, contours,
                    {roi_name(t) for t in phantom.tumor_names})
    log.info("phantom DICOM set written to %s (%s, CT %s, SPECT %s, %d ROIs)", out, patient_position,
             img_grid.shape, nm_grid.shape, len(contours))
    return {"ct": ct_dir, "spect": nm_path, "rtstruct": rs_path}
