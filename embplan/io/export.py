"""Exports other tools open: the plan's dose and masks as NRRD or NIfTI (SimpleITK), its structures as DICOM SEG,
its dose as DICOM RT Dose.

Orientation. A plan's arrays are (z, y, x) = (k, j, i) and ``/grid/affine`` maps (k, j, i, 1) to DICOM patient
coordinates (LPS, mm). ITK, NRRD and NIfTI index the other way round, (i, j, k) with i fastest, which is exactly
how SimpleITK reads a C-ordered (z, y, x) numpy array; the image gets origin = the patient position of voxel
(0, 0, 0), spacing (dx, dy, dz) and direction = the grid's direction cosines (the columns are the patient
directions of i, j, k). So in every exported file, voxel (i, j, k) is the plan's array element [k, j, i] and sits at
the same patient position as in the plan:

- NRRD: ``space: left-posterior-superior``; ``space directions`` = direction x spacing; ``space origin`` = origin
  (ITK writes LPS as the plan is; nothing is flipped);
- NIfTI: the sform/qform are in RAS, as the NIfTI standard requires: ITK negates the first two patient axes on
  writing (x_RAS = -x_LPS, y_RAS = -y_LPS) and back on reading, so a NIfTI reader (nibabel, FSL, Slicer) puts the
  voxel at the same physical place.

Dose maps are written as float64 Gy (the plan's values, unrounded), CT as stored (HU), density g/cm3, masks as
uint8 0/1. File names: ``dose_<method>_gy``, ``ct_hu``, ``density_g_cm3``, ``mask_<structure>`` + ``.nrrd`` or
``.nii.gz``. All files of one export are written into a temporary folder beside the target and moved in only when
all are written: a failed export leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import EmbplanError

if TYPE_CHECKING:  # pragma: no cover
    from ..grid import Grid
    from ..plan_model import Plan

log = logging.getLogger(__name__)

__all__ = ["EXPORT_FORMATS", "export_plan", "export_volumes", "sitk_image", "plan_reference", "dose_map",
           "RtDoseExport", "rt_dose_export", "RT_DOSE_HETEROGENEITY"]

EXPORT_FORMATS = ("rtdose", "seg", "nrrd", "nifti")
_EXTENSIONS = {"nrrd": ".nrrd", "nifti": ".nii.gz"}
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class ExportError(EmbplanError, ValueError):
    """An export that cannot be made (no voxel data, no such dose map, a bad output path)."""


def sitk_image(array: np.ndarray, grid: Grid) -> Any:
    """A SimpleITK image of a (z, y, x) ``array`` on ``grid``: index (i, j, k) = array[k, j, i], LPS geometry."""
    import SimpleITK as sitk

    grid.check_array(array, "array")
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.uint8)
    img = sitk.GetImageFromArray(np.ascontiguousarray(a))
    dz, dy, dx = grid.spacing_mm
    img.SetSpacing((float(dx), float(dy), float(dz)))
    img.SetOrigin(tuple(float(v) for v in grid.origin_mm))
    img.SetDirection(tuple(float(v) for v in grid.direction))
    return img


def dose_map(plan: Plan, method: str | None = None) -> tuple[str, np.ndarray]:
    """The dose map to export: ``method`` or the plan's own dose method (else the first stored)."""
    if plan.voxel is None or not plan.voxel.dose_maps():
        raise ExportError("the plan has no dose map (no images were given): nothing to export")
    maps = plan.voxel.dose_maps()
    if method is None:
        method = plan.dosimetry.method if plan.dosimetry is not None and plan.dosimetry.method in maps else None
        method = method or sorted(maps)[0]
    if method not in maps:
        raise ExportError(f"--method: the plan has no {method!r} dose map; it has {', '.join(sorted(maps))}")
    return method, np.asarray(maps[method])


def plan_reference(plan: Plan, reference_ct: Any = None) -> tuple[Any, str]:
    """The CT the exports are placed on: ``reference_ct`` when given, else the reference a DICOM plan stored
    (patient, study, frame of reference of its CT), else None (a new frame of reference). Returns (reference,
    "reference-ct" | "stored" | "new")."""
    if reference_ct is not None:
        return reference_ct, "reference-ct"
    images = plan.voxel.attributes.get("images") if plan.voxel is not None else None
    stored = images.get("rt_dose_reference") if isinstance(images, dict) else None
    if isinstance(stored, dict) and stored.get("frame_of_reference_uid"):
        return stored, "stored"
    return None, "new"


#: Tissue Heterogeneity Correction (3004,0014) of each dose method's map in an RT Dose: the plain kernel assumes
#: water-like tissue, the density-corrected kernel uses the image; local deposition states none.
RT_DOSE_HETEROGENEITY = {"vsv_density": "IMAGE", "vsv": "WATER"}


@dataclass(frozen=True)
class RtDoseExport:
    """What an RT Dose export of a plan writes: the map, its grid, the CT it is placed on and its description."""

    method: str
    dose_gy: np.ndarray
    grid: Any
    reference: Any
    reference_source: str
    comment: str
    heterogeneity: str | None


def rt_dose_export(plan: Plan, method: str | None = None, reference_ct: Any = None) -> RtDoseExport:
    """The one recipe of an RT Dose export (``embplan export --format rtdose`` and ``embplan export-dicom``): the
    dose map (:func:`dose_map`), the reference CT (:func:`plan_reference`; without one a new frame of reference
    with the case's patient id), the dose comment (embplan version, method, activity)."""
    from .. import __version__

    m, dose = dose_map(plan, method)
    assert plan.voxel is not None  # dose_map refuses a plan without voxel data
    reference, source = plan_reference(plan, reference_ct)
    if reference is None:  # no CT: a new frame of reference, and the patient id of the case
        from pydicom.uid import generate_uid

        reference = {"patient_id": plan.case.patient.id, "frame_of_reference_uid": generate_uid()}
    activity = plan.dosimetry.activity_gbq if plan.dosimetry is not None else None
    comment = f"embplan {__version__}; {m}" + (f"; {activity:.3f} GBq" if activity is not None else "")
    return RtDoseExport(m, dose, plan.voxel.grid, reference, source, comment, RT_DOSE_HETEROGENEITY.get(m))


def export_volumes(plan: Plan, folder: str | os.PathLike, fmt: Literal["nrrd", "nifti"], *,
                   method: str | None = None, all_doses: bool = True) -> list[Path]:
    """Write the plan's dose map(s), CT, density and masks into ``folder`` as NRRD or NIfTI; return the paths.

    ``folder`` is created when missing (its parent must exist); files already there with the same names are
    replaced, others are left alone."""
    import SimpleITK as sitk

    if fmt not in _EXTENSIONS:
        raise ExportError(f"--format: {fmt!r} is not a volume format (nrrd, nifti)")
    if plan.voxel is None:
        raise ExportError("the plan has no voxel data (no images were given): nothing to export")
    target = Path(folder)
    if target.exists() and not target.is_dir():
        raise ExportError(f"{target}: -o must be a folder for --format {fmt}")
    if not target.parent.is_dir():
        raise ExportError(f"{target}: folder {target.parent} does not exist")
    v = plan.voxel
    chosen, _ = dose_map(plan, method) if v.dose_maps() else (None, None)
    items: list[tuple[str, np.ndarray]] = []
    for m, arr in sorted(v.dose_maps().items()):
        if all_doses or m == chosen:
            items.append((f"dose_{m}_gy", np.asarray(arr, dtype=np.float64)))
    for name in ("ct_hu", "density_g_cm3"):
        if name in v.arrays:
            items.append((name, np.asarray(v.arrays[name])))
    for name, mask in sorted(v.masks().items()):
        items.append((f"mask_{name}", np.asarray(mask, dtype=bool)))
    ext = _EXTENSIONS[fmt]
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    written: list[Path] = []
    try:
        for name, arr in items:
            safe = _SAFE.sub("_", name)
            sitk.WriteImage(sitk_image(arr, v.grid), str(staging / f"{safe}{ext}"), True if fmt == "nifti" else False)
        target.mkdir(exist_ok=True)
        for f in sorted(staging.iterdir()):
            os.replace(f, target / f.name)
            written.append(target / f.name)
    except (OSError, RuntimeError) as exc:
        raise ExportError(f"{target}: cannot write the {fmt} files ({exc})") from exc
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
    log.info("exported %d %s files to %s", len(written), fmt, target)
    return written


def export_plan(plan: Plan, output: str | os.PathLike, fmt: str, *, method: str | None = None,
                reference_ct: Any = None) -> dict[str, Any]:
    """One export of ``plan`` in ``fmt`` (one of :data:`EXPORT_FORMATS`) to ``output`` (a file for rtdose and
    seg, a folder for nrrd and nifti). Returns what was written, for the CLI to print."""
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"--format: {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")
    if plan.voxel is None:
        raise ExportError("the plan has no voxel data (no images were given): nothing to export")
    if fmt in ("nrrd", "nifti"):
        paths = export_volumes(plan, output, "nrrd" if fmt == "nrrd" else "nifti", method=method)
        return {"format": fmt, "written": [str(p) for p in paths], "orientation": "LPS (NRRD) / RAS (NIfTI) via ITK"}
    out = Path(output)
    if out.is_dir():
        raise ExportError(f"{out}: -o must be a file for --format {fmt}")
    if not out.parent.is_dir():
        raise ExportError(f"{out}: folder {out.parent} does not exist")
    reference, source = plan_reference(plan, reference_ct)
    if reference is None:  # no CT: a new frame of reference, and the patient id of the case
        from pydicom.uid import generate_uid

        reference = {"patient_id": plan.case.patient.id, "frame_of_reference_uid": generate_uid()}
    if fmt == "rtdose":
        from ..imaging.rtdose import write_rt_dose

        e = rt_dose_export(plan, method, reference_ct)
        write_rt_dose(e.dose_gy, e.grid, out, reference_ct=e.reference, dose_comment=e.comment,
                      tissue_heterogeneity_correction=e.heterogeneity)
        return {"format": fmt, "written": [str(out)], "method": e.method, "max_gy": float(e.dose_gy.max()),
                "reference": e.reference_source}
    from ..imaging.seg import write_seg

    masks = plan.voxel.masks()
    if not masks:
        raise ExportError("the plan has no structure masks: nothing to export as SEG")
    write_seg(masks, plan.voxel.grid, out, reference_ct=reference,
              labels={n: n.replace("_", " ") for n in masks})
    return {"format": fmt, "written": [str(out)], "segments": list(masks), "reference": source}
