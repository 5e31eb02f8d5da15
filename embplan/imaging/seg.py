"""DICOM Segmentation (SEG) writer: a plan's masks as one binary SEG in the CT's frame of reference (highdicom).

Every mask of the plan becomes one segment, embplan's own included (perfused territory, non-tumour liver, the
perfused parts), which a viewer such as 3D Slicer cannot otherwise load from the plan file. The frames follow the
plan's grid: one frame per slice k, Image Position (Patient) of voxel (k, 0, 0), Image Orientation (Patient) the
grid's i (column) and j (row) directions, Pixel Spacing (dy, dx) -- the same geometry as the RT Dose export
(:mod:`embplan.imaging.rtdose`), so SEG, RT Dose and CT overlay in any DICOM viewer.

The patient, study and frame of reference come from a reference CT (a folder, a file, or the mapping a DICOM plan
stores as ``rt_dose_reference``); its SOP instances are the SEG's source images. Without a CT (a phantom plan) a new
study and frame of reference are made and the source image is a reference to a CT that does not exist (logged):
such a SEG overlays the plan's other exports, not a scanner's images.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from .. import __version__
from ..errors import ImagingError
from ..grid import Grid
from .rtdose import _reference_info

log = logging.getLogger(__name__)

__all__ = ["write_seg", "SEGMENT_CODES"]

_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

#: Segment property codes (SNOMED CT via highdicom's SCT codes) by structure name; anything else is a generic
#: "Tissue / Organ" segment with the structure's name as its label.
SEGMENT_CODES: dict[str, tuple[str, str]] = {
    "liver": ("Organ", "Liver"),
    "normal_liver": ("Organ", "Liver"),
    "perfused": ("Organ", "Liver"),
    "perfused_normal_liver": ("Organ", "Liver"),
    "lungs": ("Organ", "Lung"),
    "lung": ("Organ", "Lung"),
    "tumors": ("Morphologically Altered Structure", "Neoplasm"),
    "perfused_tumors": ("Morphologically Altered Structure", "Neoplasm"),
}


def _codes(name: str) -> tuple[Any, Any]:
    from pydicom.sr.codedict import codes

    category, kind = SEGMENT_CODES.get(name, ("", ""))
    if not category and name.startswith(("tumor", "tumour")):
        category, kind = "Morphologically Altered Structure", "Neoplasm"
    if category == "Organ":
        return codes.SCT.Organ, getattr(codes.SCT, kind)
    if category:
        return codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm
    return codes.SCT.Tissue, codes.SCT.Tissue


def _source_image(info: Mapping[str, Any], grid: Grid) -> Dataset:
    """A CT image header standing for the reference CT: patient, study, frame of reference, one SOP instance."""
    ds = Dataset()
    for kw, key in (("PatientName", "patient_name"), ("PatientID", "patient_id"),
                    ("PatientBirthDate", "patient_birth_date"), ("PatientSex", "patient_sex"),
                    ("StudyDate", "study_date"), ("StudyTime", "study_time"), ("StudyID", "study_id"),
                    ("AccessionNumber", "accession_number"), ("ReferringPhysicianName", "referring_physician_name")):
        setattr(ds, kw, str(info.get(key, "") or ""))
    ds.StudyInstanceUID = info.get("study_instance_uid") or generate_uid()
    ds.SeriesInstanceUID = info.get("series_instance_uid") or generate_uid()
    ds.FrameOfReferenceUID = info["frame_of_reference_uid"]
    ds.SOPClassUID = info.get("sop_class_uid") or _CT_IMAGE_STORAGE
    uids = list(info.get("sop_instance_uids") or ())
    ds.SOPInstanceUID = uids[0] if uids else generate_uid()
    ds.Modality = "CT"
    nz, ny, nx = grid.shape
    ds.Rows, ds.Columns = int(ny), int(nx)
    dz, dy, dx = grid.spacing_mm
    d = np.asarray(grid.direction, dtype=float).reshape(3, 3)
    ds.PixelSpacing = [float(dy), float(dx)]
    ds.ImageOrientationPatient = [float(v) for v in (*d[:, 0], *d[:, 1])]
    ds.ImagePositionPatient = [float(v) for v in grid.origin_mm]
    ds.SliceThickness = float(dz)
    return ds


def write_seg(
    masks: Mapping[str, np.ndarray],
    grid: Grid,
    path: str | os.PathLike,
    *,
    reference_ct: Any = None,
    labels: Mapping[str, str] | None = None,
    series_description: str = "embplan structures",
    series_number: int = 901,
) -> Path:
    """Write ``masks`` (name -> bool (z, y, x) array on ``grid``) as a binary DICOM SEG at ``path``; return it.

    ``reference_ct`` is what :func:`embplan.imaging.rtdose.write_rt_dose` takes (CT folder or file, Dataset,
    Volume, or the stored reference mapping); None makes a new study and frame of reference. Written atomically.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if not masks:
        raise ImagingError("masks: no structure to export")
    out = Path(path)
    if not out.parent.is_dir():
        raise ImagingError(f"{out}: folder {out.parent} does not exist")
    names = list(masks)
    stack = np.zeros((*grid.shape, len(names)), dtype=bool)
    for n, name in enumerate(names):
        m = np.asarray(masks[name])
        if m.shape != grid.shape:
            raise ImagingError(f"mask {name!r}: shape {m.shape} does not match the grid {grid.shape}")
        stack[..., n] = m.astype(bool)
    info = _reference_info(reference_ct) if reference_ct is not None else {}
    if not info:
        log.warning("write_seg: no reference CT; a new study and frame of reference, no real source image")
        info = {"frame_of_reference_uid": generate_uid()}
    source = _source_image(info, grid)
    descriptions = []
    for n, name in enumerate(names, start=1):
        category, kind = _codes(name)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=(labels or {}).get(name, name)[:64],
            segmented_property_category=category,
            segmented_property_type=kind,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name="embplan", version=__version__, family=codes.cid7162.MorphologicalOperations),
            tracking_uid=generate_uid(),
            tracking_id=name[:64],
        ))
    d = np.asarray(grid.direction, dtype=float).reshape(3, 3)
    positions = [
        hd.PlanePositionSequence(coordinate_system="PATIENT",
                                 image_position=[float(v) for v in grid.index_to_patient_mm(np.array([k, 0.0, 0.0]))])
        for k in range(grid.shape[0])
    ]
    try:
        seg = _segmentation(hd, source, stack, descriptions, positions, grid, d, series_number, series_description)
    except (ValueError, TypeError, AttributeError) as exc:  # highdicom's checks: never a traceback at the CLI
        raise ImagingError(f"{out}: cannot build the DICOM SEG ({exc})") from exc
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            seg.save_as(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise ImagingError(f"{out}: cannot write the DICOM SEG ({exc})") from exc
        raise
    log.info("SEG written to %s (%d segments, grid %s)", out, len(names), grid.shape)
    return out


def _segmentation(hd: Any, source: Dataset, stack: np.ndarray, descriptions: list[Any], positions: list[Any],
                  grid: Grid, d: np.ndarray, series_number: int, series_description: str) -> Any:
    dz, dy, dx = grid.spacing_mm
    return hd.seg.Segmentation(
        source_images=[source],
        pixel_array=stack.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=int(series_number),
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="embplan",
        manufacturer_model_name="embplan",
        software_versions=__version__,
        device_serial_number="0",
        series_description=series_description,
        pixel_measures=hd.PixelMeasuresSequence(pixel_spacing=[float(dy), float(dx)], slice_thickness=float(dz),
                                                spacing_between_slices=float(dz)),
        plane_orientation=hd.PlaneOrientationSequence(coordinate_system="PATIENT",
                                                      image_orientation=[float(v) for v in (*d[:, 0], *d[:, 1])]),
        plane_positions=positions,
        omit_empty_frames=False,
    )
