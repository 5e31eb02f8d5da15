"""The images of a TARE case on one dosimetry grid: :class:`ImageSet`, built from the synthetic phantom or from
DICOM inputs (CT + SPECT/PET + RTSTRUCT/SEG), for the planner's voxel workflow.

Reading and geometry live in :mod:`embplan.imaging.dicom`, :mod:`~embplan.imaging.rtstruct` and
:mod:`~embplan.imaging.resample`; this module assembles what a case names into one set of arrays. CT numbers become
densities with :func:`embplan.dosimetry.dose.hu_to_density_g_cm3` (the one HU calibration of the package).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..case import Case
from ..errors import CaseError, ImagingError
from ..grid import Grid
from ..progress import timed
from .phantom import Phantom, make_phantom

__all__ = ["ImageSet", "build_image_set", "dicom_input_paths", "territory_mask", "HU_OUTSIDE_CT", "OUTSIDE_COUNTS_WARNING_FRACTION"]

log = logging.getLogger(__name__)

#: Fraction of counts outside liver and lungs above which the plan warns (a guardrail of the Taranis Slicer module,
#: 4burakfe/SlicerRadioembolizationDosimetry; EVIDENCE.md section 5).
OUTSIDE_COUNTS_WARNING_FRACTION: float = 0.20


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Everything the voxel workflow needs, on one grid ((z, y, x)): density (and CT numbers), the structure masks
    (``liver``, ``tumors``, ``lungs``, the individual tumours, lobes/segments when known), the perfused territory,
    and the pre-treatment activity distribution (relative counts: only its shape matters, the prescription sets
    its scale)."""

    grid: Grid
    density_g_cm3: np.ndarray
    masks: Mapping[str, np.ndarray]
    perfused: np.ndarray
    activity: np.ndarray
    tumor_names: tuple[str, ...]
    description: str
    ct_hu: np.ndarray | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    #: issue 13: fraction of each voxel inside a tumour (float32, 0..1), by structure key, where the contours give
    #: it (RTSTRUCT); the planner's DVHs and lesion table weigh voxels by it (masks keep the half-voxel rule)
    fractions: Mapping[str, np.ndarray] = field(default_factory=dict)


@timed("images", logging.INFO)
def build_image_set(case: Case) -> ImageSet | None:
    """The image set a TARE case points at (a phantom or DICOM inputs), or None when it has no images."""
    d = case.dosimetry
    images = d.images if d is not None else None
    if images is None:
        return None
    if getattr(images, "phantom", None) is not None:
        return _images_from_phantom(case)
    dicom = getattr(images, "dicom", None)
    if dicom is not None:
        return _images_from_dicom(case, dicom)
    return None


def dicom_input_paths(case: Case) -> dict[str, Path]:
    """The DICOM inputs a case names (``dosimetry.images.dicom``: ct, spect or pet, rtstruct or seg), resolved
    against the case file's folder, without reading them; {} for a case without DICOM images.

    Raises :class:`~embplan.errors.ImagingError` naming every field whose file or folder does not exist."""
    d = case.dosimetry
    images = d.images if d is not None else None
    spec = getattr(images, "dicom", None) if images is not None else None
    if spec is None:
        return {}
    paths: dict[str, Path] = {}
    missing: list[str] = []
    for name in ("ct", "spect", "pet", "rtstruct", "seg", "transform"):
        given = getattr(spec, name, None)
        if given is None:
            continue
        path = case.resolve_path(given)
        if not path.exists():
            missing.append(f"dosimetry.images.dicom.{name}: {path} not found")
        paths[name] = path
    if missing:
        raise ImagingError("; ".join(missing))
    return paths


def _images_from_phantom(case: Case) -> ImageSet:
    d = case.dosimetry
    assert d is not None and d.images is not None and d.images.phantom is not None
    spec = d.images.phantom
    phantom: Phantom = make_phantom(spec.name, spec.seed, spec.voxel_mm)
    perfused = territory_mask(case, phantom.masks, phantom.grid.shape)
    maa_kw: dict[str, Any] = {}
    tn_in = spec.tumor_to_normal_ratio if spec.tumor_to_normal_ratio is not None else d.tumor_to_normal_ratio
    lsf_in = spec.lung_shunt_fraction if spec.lung_shunt_fraction is not None else d.lung_shunt_fraction
    if tn_in is not None:
        maa_kw["tumor_to_normal_ratio"] = tn_in
    if lsf_in is not None:
        maa_kw["lung_shunt_fraction"] = lsf_in
    return ImageSet(
        grid=phantom.grid,
        density_g_cm3=phantom.density_g_cm3,
        masks=phantom.masks,
        perfused=perfused,
        activity=phantom.maa_activity(perfused, **maa_kw),
        tumor_names=phantom.tumor_names,
        description=(
            f"the '{spec.name}' phantom (seed {spec.seed}, {spec.voxel_mm:g} mm voxels) and its synthetic Tc-99m "
            "MAA map"
        ),
        ct_hu=phantom.ct_hu,
        attributes={"source": "phantom", "phantom": dict(phantom.parameters), "maa": maa_kw},
    )


#: CT number given to dosimetry-grid voxels outside the CT's field of view (air).
HU_OUTSIDE_CT = -1000.0


def _sanitise_roi(name: str) -> str:
    """A ROI name as a structure key: lower case, runs of anything but letters and digits -> "_"."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "roi"


def _tumor_keys(rois: list[str]) -> list[str]:
    """``tumor_<sanitised ROI>`` per tumour ROI (a name already starting with tumor_ is kept), made unique."""
    keys: list[str] = []
    for roi in rois:
        base = _sanitise_roi(roi)
        key = base if base.startswith("tumor_") else f"tumor_{base}"
        unique, n = key, 2
        while unique in keys:
            unique, n = f"{key}_{n}", n + 1
        keys.append(unique)
    return keys


def _single_nm_file(folder: Path) -> Path:
    """The reconstructed SPECT file of a folder (kept for embplan.verify): the one RECON TOMO series,
    :func:`embplan.imaging.series.choose_nm_file` (projections and other NM series beside it are set aside)."""
    from .series import choose_nm_file

    return choose_nm_file(folder)[0]


def _reader_notes(vol: Any) -> list[str]:
    """The notes a reader left in ``Volume.meta`` (issue 17: series selection, resampled irregular geometry)."""
    return [str(vol.meta[k]) for k in ("series_selection", "geometry_note") if vol.meta.get(k)]


def _spect_file(path: Path, series_instance_uid: str | None, notes: list[str]) -> Path:
    """The SPECT file the case names: the file itself (its series must be ``series_instance_uid`` when given), or
    the reconstruction chosen in a folder (:func:`embplan.imaging.series.choose_nm_file`)."""
    from .dicom import read_header
    from .series import choose_nm_file

    if path.is_dir():
        f, note = choose_nm_file(path, series_instance_uid)
        if note:
            notes.append(note)
        return f
    if series_instance_uid is not None:
        uid = str(read_header(path).get("SeriesInstanceUID", ""))
        if uid != series_instance_uid:
            raise ImagingError(f"dosimetry.images.dicom.spect_series_instance_uid: {path} is series {uid}, not "
                               f"{series_instance_uid}")
    return path


def _describe_spacing(grid: Grid) -> str:
    dz, dy, dx = grid.spacing_mm
    if max(grid.spacing_mm) - min(grid.spacing_mm) < 1e-3:
        return f"{dx:.3g} mm"
    return f"{dx:.3g} x {dy:.3g} x {dz:.3g} mm"


def _images_from_dicom(case: Case, spec: Any) -> ImageSet:
    """The image set of a DICOM case (``dosimetry.images.dicom``, :class:`embplan.case.DicomImages`).

    Reads the CT series, the SPECT (Tc-99m MAA counts) or the PET (Y-90, Bq/mL, absolutely calibrated to MBq per
    voxel) and the structures (RTSTRUCT contours rasterised by our code, or SEG masks), checks that they share one
    frame of reference, and puts everything on the dosimetry grid -- the activity image's grid (``grid:
    "activity"``) or the CT's (``"ct"``): CT numbers by linear interpolation (voxels outside the CT: air, -1000 HU)
    converted to density by :func:`embplan.dosimetry.dose.hu_to_density_g_cm3`; the activity by the
    total-conserving resampling of :mod:`embplan.imaging.resample`; each ROI as a mask in which a voxel counts when
    at least half of it lies inside the contours (for SEG: nearest neighbour for BINARY, fraction >= 0.5 for
    FRACTIONAL). The liver is the union of the liver ROIs and the tumour ROIs; the lungs lose any voxel of the liver.
    Only the shape of the activity matters (the prescription sets the scale).
    """
    from ..dosimetry.dose import hu_to_density_g_cm3
    from . import dicom as dcm
    from .resample import resample_to_grid
    from .rtdose import rt_dose_reference
    from .rtstruct import rasterize_structure
    from .volume import calibrate_absolute_pet

    roles = spec.structures
    field_base = "dosimetry.images.dicom"
    paths = dicom_input_paths(case)
    notes: list[str] = []

    # ---- images
    # on the activity image's grid the CT is only resampled: its stored values (half the memory of float32 HU)
    # are resampled and rescaled after; on the CT's own grid, or to register, the HU volume (dcm.ct_hu_volume)
    ct = dcm.read_ct_series(paths["ct"], series_instance_uid=getattr(spec, "ct_series_instance_uid", None),
                            stored_values=spec.grid == "activity")
    notes.extend(_reader_notes(ct))  # issue 17: the series chosen, a resampled irregular stack
    act_attrs: dict[str, Any]
    if "spect" in paths:
        nm_path = _spect_file(paths["spect"], getattr(spec, "spect_series_instance_uid", None), notes)
        act_vol = dcm.read_nm(nm_path)
        act_array = np.asarray(act_vol.array, dtype=np.float64)
        rp = act_vol.meta.get("radiopharmaceutical")
        act_kind, act_label = "counts", "NM SPECT"
        corrected = act_vol.meta.get("corrected_image") or ()
        if "ATTN" not in corrected:  # Type 3 in NM, so a note (issue 12), not an error
            notes.append(f"SPECT: Corrected Image (0028,0051) {'/'.join(corrected) or 'absent'} does not list ATTN: "
                         "without attenuation correction the lungs' share of the counts, hence the lung shunt, is "
                         "overestimated [U].")
        act_attrs = {"modality": "NM", "file": str(nm_path), "units": "counts",
                     "radiopharmaceutical": getattr(rp, "name", None), "total_counts": float(act_array.sum())}
    else:
        act_vol = dcm.read_pet_series(paths["pet"], clip_negative=True,
                                      series_instance_uid=getattr(spec, "pet_series_instance_uid", None))
        notes.extend(_reader_notes(act_vol))
        if act_vol.meta.get("negative_voxels"):
            notes.append(f"PET: {act_vol.meta['negative_voxels']} voxels of negative concentration set to 0.")
        act_kind, act_label = "MBq", "PET"
        act_attrs = {"modality": "PT", "units": "Bq/mL", "use": "distribution only: the Y-90 PET is post-treatment-"
                     "like; the planner rescales it to the prescribed activity"}
        try:
            amap = calibrate_absolute_pet(act_vol, decay_reference="acquisition")
            act_array = np.asarray(amap.activity_mbq, dtype=np.float64)
            act_attrs.update(calibration="absolute_pet", decay_reference=amap.decay_reference,
                             decay_factor=amap.decay_factor, total_activity_mbq=amap.total_activity_mbq)
        except ImagingError as exc:  # the timing is unknown: a uniform factor, irrelevant to the distribution
            act_array = np.asarray(act_vol.array, dtype=np.float64) * act_vol.grid.voxel_volume_ml * 1.0e-6
            act_attrs.update(calibration=f"Bq/mL x voxel volume, not decay-corrected ({exc})")
            notes.append(f"PET timing incomplete ({exc}): concentration x voxel volume used as the distribution.")
    # frames of reference (issue 14): an activity image in another frame than the CT is registered to it (or
    # aligned by dosimetry.images.dicom.transform); act_grid is its grid in the CT's frame
    from .registration import align_activity_to_ct

    if paths.get("transform") is not None or ct.frame_of_reference_uid != act_vol.frame_of_reference_uid:
        ct = dcm.ct_hu_volume(ct)  # the registration reads the CT's numbers
    act_grid, for_uid, registration, reg_notes = align_activity_to_ct(
        ct, act_vol, activity_name=spec.activity_source, transform_path=paths.get("transform"),
        allow_registration=spec.register_activity_to_ct, field=field_base)
    notes.extend(reg_notes)

    # ---- identity (issue 12): one patient across the images and the case
    from .checks import check_identity

    expected_pid = spec.dicom_patient_id if getattr(spec, "dicom_patient_id", None) is not None else case.patient.id
    pid_field = (f"{field_base}.dicom_patient_id" if getattr(spec, "dicom_patient_id", None) is not None
                 else "patient.id")
    struct_path = paths[spec.structure_source]
    check_identity(expected_pid, pid_field, {
        "CT": (ct.meta.get("patient_id"), str(paths["ct"])),
        act_label: (act_vol.meta.get("patient_id"), str(act_vol.meta.get("source_files", ("",))[0])),
        spec.structure_source.upper(): (dcm.read_patient_id(struct_path), str(struct_path)),
    })

    # ---- the dosimetry grid
    grid = act_grid if spec.grid == "activity" else ct.grid
    inside_ct = np.ones(grid.shape, dtype=bool)
    if ct.grid == grid:
        ct = dcm.ct_hu_volume(ct)
        ct_hu = np.asarray(ct.array, dtype=np.float32)
    else:
        # one resampling: the points outside the CT get NaN (the CT's values are finite), which marks them; inside,
        # linear interpolation does not depend on the default (what resampling an array of ones showed before).
        # Stored values are rescaled after the interpolation (linear: the same HU up to rounding)
        hu_nan = np.asarray(resample_to_grid(ct.array, ct.grid, grid, "linear", default_value=float("nan")))
        if ct.units == dcm.CT_STORED_UNITS:
            hu_nan = hu_nan * float(ct.meta["rescale_slope"]) + float(ct.meta["rescale_intercept"])
        inside_ct = ~np.isnan(hu_nan)
        ct_hu = np.where(inside_ct, hu_nan, HU_OUTSIDE_CT).astype(np.float32)
        del hu_nan
        outside = float(np.mean(~inside_ct))
        if outside > 0:
            notes.append(f"{outside:.1%} of the dosimetry grid lies outside the CT: taken as air ({HU_OUTSIDE_CT:g} HU).")
    density = hu_to_density_g_cm3(ct_hu, dtype=np.float32)
    if act_grid == grid:
        activity = act_array
    else:
        activity = np.asarray(resample_to_grid(act_array, act_grid, grid, "activity"), dtype=np.float64)
    n_neg = int(np.count_nonzero(activity < 0))
    if n_neg:
        activity = np.clip(activity, 0.0, None)
        notes.append(f"{n_neg} voxels of negative activity set to 0.")

    # ---- structures
    needed = roles.roi_names()
    rois: dict[str, np.ndarray] = {}
    roi_fractions: dict[str, np.ndarray] = {}
    if "rtstruct" in paths:
        contours, roi_notes = dcm.read_rtstruct_with_notes(paths["rtstruct"], frame_of_reference_uid=for_uid)
        available = sorted(contours)
        missing_notes = {n: roi_notes[n] for n in needed if n not in contours and n in roi_notes}
        if missing_notes:
            desc = "; ".join(f"ROI {n!r}: {', '.join(ns)}" for n, ns in missing_notes.items())
            raise ImagingError(f"{field_base}.rtstruct: {paths['rtstruct']}: a structure the case needs has no usable "
                               f"contour ({desc})")
        notes.extend(_contour_notes(needed, contours, roi_notes))
        contour_points = {
            role: np.vstack(pts) for role, names in (("liver", [*roles.liver, *roles.tumors]), ("lungs", roles.lungs))
            if (pts := [c for n in names for c in contours.get(n, [])])
        }
        tumor_rois = set(roles.tumors)
        for name in needed:
            if name in contours:
                if name in tumor_rois:  # the fraction for the DVH (issue 13); the mask by the same half-voxel rule
                    frac = rasterize_structure(contours[name], grid, output="fraction")
                    roi_fractions[name] = frac
                    rois[name] = np.asarray(frac >= 0.5)
                else:
                    rois[name] = rasterize_structure(contours[name], grid, output="mask", mask_threshold=0.5)
    else:
        contour_points = None
        seg_masks = dcm.read_seg(paths["seg"], grid, frame_of_reference_uid=for_uid)
        available = sorted(seg_masks)
        rois = {name: np.asarray(seg_masks[name], dtype=bool) for name in needed if name in seg_masks}
    src_field = f"{field_base}.{spec.structure_source}"
    missing = [n for n in needed if n not in rois]
    if missing:
        raise ImagingError(
            f"{src_field}: {paths[spec.structure_source]} has no ROI {', '.join(repr(m) for m in missing)} (named in "
            f"{field_base}.structures); it has {', '.join(repr(a) for a in available) or 'none'}"
        )

    def union(names: list[str], within: np.ndarray | None = None) -> np.ndarray:
        """A new mask: the union of the named ROIs (cut to ``within`` when given)."""
        if not names:
            return np.zeros(grid.shape, dtype=bool)
        out = np.logical_and(rois[names[0]], within) if within is not None else rois[names[0]].copy()
        for n in names[1:]:
            np.logical_or(out, np.logical_and(rois[n], within) if within is not None else rois[n], out=out)
        return out

    tumor_keys = _tumor_keys(list(roles.tumors))
    tumors = union(list(roles.tumors))
    liver = union(list(roles.liver))
    added = int(np.count_nonzero(tumors & ~liver))
    if added:
        notes.append(f"{added} tumour voxels outside the liver ROIs were added to the liver.")
    liver |= tumors
    if not liver.any():
        raise ImagingError(f"{field_base}.structures.liver: the liver ROIs cover no voxel of the dosimetry grid")
    lung_rois = union(list(roles.lungs))  # as drawn: the checks compare them with the CT
    overlap = int(np.count_nonzero(lung_rois & liver))
    lungs = lung_rois
    if overlap:
        lungs = lung_rois & ~liver
        notes.append(f"{overlap} voxels in both the lung and the liver ROIs counted as liver.")
    if not lungs.any():
        raise ImagingError(f"{field_base}.structures.lungs: the lung ROIs cover no voxel of the dosimetry grid")
    masks: dict[str, np.ndarray] = {"liver": liver, "tumors": tumors, "lungs": lungs}
    image_checks = _check_set(case, ct, grid, ct_hu, inside_ct, liver, lung_rois, contour_points, field_base, notes)
    from .checks import check_activity_alignment

    image_checks["activity_alignment"] = check_activity_alignment(
        case.effective_thresholds(), activity=activity, liver=liver, lungs=lungs, grid=grid,
        field=f"{field_base}.{spec.activity_source}", label="SPECT" if spec.activity_source == "spect" else "PET")
    for key, roi in zip(tumor_keys, roles.tumors, strict=True):
        masks[key] = rois[roi]
        if not rois[roi].any():
            notes.append(f"Tumour ROI {roi!r} covers no voxel of the dosimetry grid (under half a voxel): no DVH.")
    if roles.right_lobe is not None:
        masks["liver_right"] = union(list(roles.right_lobe), within=liver)
    if roles.left_lobe is not None:
        masks["liver_left"] = union(list(roles.left_lobe), within=liver)
    for number, names in (roles.segments or {}).items():
        masks[f"segment_{number}"] = union(list(names), within=liver)
    perfused = union(list(roles.perfused)) if roles.perfused is not None else territory_mask(case, masks, grid.shape)
    if not (perfused & liver).any():
        raise ImagingError(f"{field_base}.structures: the perfused territory does not overlap the liver")

    liver_counts = float(activity[liver].sum())
    if not liver_counts > 0:
        raise ImagingError(f"{field_base}.{spec.activity_source}: no counts in the liver")
    grid_label = "SPECT" if spec.activity_source == "spect" else "PET"
    grid_name = grid_label if spec.grid == "activity" else "CT"
    src_label = "RTSTRUCT" if spec.structure_source == "rtstruct" else "SEG"
    description = (f"DICOM CT + {act_label} + {src_label} ({len(needed)} structures) on the {_describe_spacing(grid)} "
                   f"{grid_name} grid")
    for n in notes:
        log.info("%s", n)
    attributes: dict[str, Any] = {
        "source": "dicom",
        "files": {k: str(v) for k, v in paths.items()},
        "grid": spec.grid,
        "frame_of_reference_uid": for_uid,
        "study_instance_uid": ct.meta.get("study_instance_uid"),
        "patient_id": ct.meta.get("patient_id"),
        "series_instance_uids": {"ct": ct.series_instance_uid, spec.activity_source: act_vol.series_instance_uid},
        "activity": act_attrs | {"kind": act_kind},
        "structures": roles.model_dump(mode="json", exclude_none=True),
        "structure_keys": {"tumors": dict(zip(roles.tumors, tumor_keys, strict=True))},
        "mask_rule": "a voxel is in a structure when at least half of it lies inside the contours "
                     "(SEG: nearest neighbour, or fraction >= 0.5)",
        "hu_to_density": "embplan.dosimetry.dose.hu_to_density_g_cm3 (default calibration)",
        "rt_dose_reference": rt_dose_reference(ct),
        "notes": notes,
        "checks": image_checks,
    }
    if registration is not None:
        attributes["registration"] = registration
    return ImageSet(
        grid=grid,
        density_g_cm3=density,
        masks=masks,
        perfused=np.asarray(perfused, dtype=bool),
        activity=activity,
        tumor_names=tuple(tumor_keys),
        description=description,
        ct_hu=ct_hu,
        attributes=attributes,
        notes=tuple(notes),
        fractions={key: roi_fractions[roi] for key, roi in zip(tumor_keys, roles.tumors, strict=True)
                   if roi in roi_fractions},
    )



def _contour_notes(needed: list[str], contours: Mapping[str, list[np.ndarray]],
                   roi_notes: Mapping[str, list[str]]) -> list[str]:
    """One note per structure the case uses whose contours were skipped, nested (holes) or crossing (joined)."""
    from .rtstruct import contour_overlaps

    out = []
    for name in needed:
        parts = list(roi_notes.get(name, ()))
        if name in contours:
            ov = contour_overlaps(contours[name])
            if ov.holes:
                parts.append(f"{ov.holes} contour(s) inside another on the same plane taken as holes"
                             + (f" ({ov.islands_in_holes} island(s) inside holes kept)" if ov.islands_in_holes else ""))
            if ov.crossings:
                where = ", ".join(f"{c:.1f}" for c in ov.crossings[:5]) + (" ..." if len(ov.crossings) > 5 else "")
                parts.append(f"crossing contours on {len(ov.crossings)} plane(s) (at {where} mm) joined (union)")
        if parts:
            out.append(f"RTSTRUCT ROI {name!r}: " + "; ".join(parts) + ".")
    return out


def _check_set(case: Case, ct: Any, grid: Grid, ct_hu: np.ndarray, inside_ct: np.ndarray, liver: np.ndarray,
               lung_rois: np.ndarray, contour_points: dict[str, np.ndarray] | None, field_base: str,
               notes: list[str]) -> dict[str, Any]:
    """Coverage, anatomy and alignment checks of :mod:`embplan.imaging.checks` (issue 12); their measurements
    for the plan's record. ImagingError when one fails."""
    from .checks import check_anatomy, check_coverage, check_lung_alignment

    th = case.effective_thresholds()
    notes.extend(check_coverage(th, masks_inside_ct={"liver": (liver, inside_ct), "lungs": (lung_rois, inside_ct)},
                                contour_points=contour_points, ct_grid=ct.grid, dose_grid=grid, field=field_base))
    means = check_anatomy(th, ct_hu=ct_hu, inside_ct=inside_ct, liver=liver, lungs=lung_rois, field=field_base)
    align = check_lung_alignment(th, ct_hu=ct_hu, inside_ct=inside_ct, lungs=lung_rois, grid=grid, field=field_base)
    return {"mean_hu": means, "lung_alignment": align}


def territory_mask(case: Case, masks: Mapping[str, np.ndarray], shape: tuple[int, int, int]) -> np.ndarray:
    """The perfused territory from the liver, lobe and Couinaud segment masks."""
    t = case.procedure.territory
    if t.scope == "whole_liver":
        return np.asarray(masks["liver"])
    if t.scope == "lobar":
        key = f"liver_{t.lobe}"
        if key not in masks:
            raise CaseError(f"procedure.territory.lobe: the images have no mask for the {t.lobe} lobe")
        return np.asarray(masks[key])
    out = np.zeros(shape, dtype=bool)
    for s in t.segments or ():
        key = f"segment_{s}"
        if key not in masks:
            raise CaseError(f"procedure.territory.segments: the images have no mask for Couinaud segment {s}")
        out |= masks[key]
    return out
