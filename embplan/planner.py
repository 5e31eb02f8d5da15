"""``plan(case) -> Plan``: the only place that orchestrates.

1. protocols: the requested procedure with its parameters against the standard protocol; the TAE -> TACE -> TARE
   ladder and the next step it suggests;
2. dosimetry (TARE only): compartment values (from the case, or measured on the images), the prescription
   (partition, MIRD single compartment or BSA) within the limits of :func:`embplan.risk.dose_limits`, the
   compartment doses and, with images, the voxel workflow (activity map -> cumulated activity -> dose map -> DVH
   and mean dose per structure);
3. risk: every case-level rule (:func:`embplan.risk.assess`) and the dose rules on the result
   (:func:`embplan.risk.assess_dose`, on the voxel doses when images were given, else on the compartment doses).

Conventions of the dose numbers (all mean absorbed doses, Gy, mass-weighted: deposited energy / mass):

- ``normal_liver_dose_gy`` is the dose to the non-tumour liver *of the perfused territory* (the partition model's
  D_N, Ho 1996); the whole non-tumour liver (treated and untreated) is in ``compartment.normal_liver_gy`` /
  ``voxel.normal_liver_gy`` and is what the whole-liver limits (glass 75 Gy) are checked against.
- ``tumor_dose_gy`` is the dose to the perfused tumour; ``perfused_dose_gy`` to the whole perfused territory
  (tumour included), the quantity of the MIRD single-compartment model; ``lung_dose_gy`` to the lungs.
- The cumulated activity assumes permanent trapping of the microspheres: physical decay only, full decay
  (tau = T1/2 / ln 2).
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import platform
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .case import Case
from .dosimetry import metrics as _metrics
from .dosimetry import prescription as rx
from .dosimetry.dose import dose_map
from .errors import CaseError, ImagingError
from .grid import Grid
from .imaging.phantom import Phantom, make_phantom
from .nuclides import K_GY_KG_PER_GBQ_DEFAULT, y90_mean_life_s
from .plan_model import (
    CompartmentDoses,
    DeliveryRecord,
    DosimetryResult,
    DVHRecord,
    Plan,
    PrescriptionRecord,
    ProcedureSummary,
    Provenance,
    SequenceSummary,
    StructureDose,
    VoxelData,
)
from .protocols import STANDARDS
from .risk import DoseFacts, DoseLimits, Flag, assess, assess_dose, dose_limits
from .risk.flags import sort_flags
from .thresholds import Thresholds

__all__ = ["plan", "Plan", "PlannerOptions", "CompartmentInputs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannerOptions:
    """Parameters of the planner that are not clinical thresholds (those live in :class:`Thresholds`).

    - ``k_gy_kg_per_gbq``: the local-deposition constant (clinical convention 49.67 Gy kg/GBq; see
      :mod:`embplan.nuclides` for the alternatives).
    - ``densities``: tissue densities for masses from volumes (:class:`embplan.dosimetry.prescription.TissueDensities`,
      liver and tumour 1.06 g/cm3, ICRU 46).
    - ``dvh_bin_width_gy``: DVH bin width.
    - ``default_lung_mass_kg``: the lung-mass convention when neither the case nor a CT gives one (1 kg, EANM /
      glass package insert convention).
    """

    k_gy_kg_per_gbq: float = K_GY_KG_PER_GBQ_DEFAULT
    densities: rx.TissueDensities = rx.TissueDensities()
    dvh_bin_width_gy: float = 0.5
    default_lung_mass_kg: float = rx.LUNG_MASS_CONVENTION_KG
    #: glass vials: the standard sizes at calibration (TheraSphere package insert) and the tolerance on the
    #: delivered activity when choosing one; the days after calibration that are searched.
    glass_vial_sizes_gbq: tuple[float, ...] = rx.GLASS_VIAL_SIZES_GBQ
    glass_vial_tolerance_fraction: float = rx.VIAL_TOLERANCE_FRACTION
    glass_vial_search_days: tuple[int, ...] = tuple(range(0, 12))


@dataclass(frozen=True)
class CompartmentInputs:
    """The compartment numbers a prescription model needs (volumes in mL, masses in kg)."""

    liver_ml: float
    tumor_ml: float
    perfused_ml: float
    perfused_tumor_ml: float
    lung_shunt_fraction: float | None
    tn_ratio: float | None
    lung_mass_kg: float
    perfused_tumor_mass_kg: float
    perfused_normal_mass_kg: float
    normal_liver_mass_kg: float  # whole non-tumour liver
    source: str  # "case" or "images"

    @property
    def perfused_normal_ml(self) -> float:
        return self.perfused_ml - self.perfused_tumor_ml

    @property
    def perfused_mass_kg(self) -> float:
        return self.perfused_tumor_mass_kg + self.perfused_normal_mass_kg

    @property
    def hepatic_reserve_fraction(self) -> float:
        """Untreated fraction of the liver volume."""
        return max(0.0, 1.0 - self.perfused_ml / self.liver_ml)

    def as_dict(self) -> dict[str, Any]:
        return {
            "liver_volume_ml": self.liver_ml,
            "tumor_volume_ml": self.tumor_ml,
            "perfused_volume_ml": self.perfused_ml,
            "perfused_tumor_volume_ml": self.perfused_tumor_ml,
            "lung_shunt_fraction": self.lung_shunt_fraction,
            "tumor_to_normal_ratio": self.tn_ratio,
            "lung_mass_kg": self.lung_mass_kg,
            "perfused_tumor_mass_kg": self.perfused_tumor_mass_kg,
            "perfused_normal_liver_mass_kg": self.perfused_normal_mass_kg,
            "normal_liver_mass_kg": self.normal_liver_mass_kg,
            "hepatic_reserve_fraction": self.hepatic_reserve_fraction,
            "source": self.source,
        }


# ================================================================================================== entry point
def plan(case: Case | Mapping[str, Any], *, options: PlannerOptions | None = None) -> Plan:
    """Plan ``case`` (a :class:`Case`, or a dict that :func:`embplan.load_case` accepts) end to end.

    A prescription that cannot be met (a lung shunt that forbids treatment, a cumulative lung dose over its limit)
    gives a plan with a contraindication flag and the numbers, never an exception. Bad input raises CaseError.
    """
    if not isinstance(case, Case):
        from .case import load_case

        case = load_case(case)
    opts = options or PlannerOptions()
    th = case.effective_thresholds()
    flags = list(assess(case))
    rules_run = [f.__name__ for f in _rule_functions()]
    dosimetry: DosimetryResult | None = None
    voxel: VoxelData | None = None
    kernel_params: dict[str, Any] | None = None
    if case.procedure.kind == "TARE":
        dosimetry, voxel, dose_flags, kernel_params = _tare(case, th, opts)
        flags.extend(dose_flags)
    return Plan(
        case=case,
        case_source=case.source,
        procedure=_procedure_summary(case, th),
        sequence=_sequence_summary(case),
        flags=sort_flags(flags),
        thresholds=th,
        dosimetry=dosimetry,
        provenance=_provenance(kernel_params, rules_run, opts),
        voxel=voxel,
    )


def _rule_functions() -> list[Callable[..., Any]]:
    from .risk import rules as _rules

    return list(_rules.CASE_RULES)


# ================================================================================================== protocols
def _procedure_summary(case: Case, th: Thresholds) -> ProcedureSummary:
    proc = case.procedure
    params = proc.model_dump(mode="json", exclude={"kind", "date", "territory"})
    standard = STANDARDS[proc.kind]
    describe = getattr(standard, "describe", None)
    standard_text = describe() if callable(describe) else str(standard)
    return ProcedureSummary(
        kind=proc.kind,
        territory=proc.territory.describe(),
        device=getattr(proc, "device", None),
        parameters=params,
        standard_protocol=standard_text,
        deviations=[d.message for d in case.deviations(th)],
    )


def _sequence_summary(case: Case) -> SequenceSummary:
    s = case.sequence()
    return SequenceSummary(
        follows_ladder=s.follows_ladder,
        skipped=list(s.skipped),
        justifications=list(s.justifications),
        suggested_next=s.suggested_next,
        explanation=s.explanation,
    )


def _provenance(kernel: dict[str, Any] | None, rules_run: list[str], opts: PlannerOptions) -> Provenance:
    import h5py
    import numba
    import pydantic
    import scipy

    return Provenance(
        embplan_version=__version__,
        python_version=platform.python_version(),
        dependency_versions={
            "numpy": np.__version__,
            "numba": numba.__version__,
            "scipy": scipy.__version__,
            "pydantic": pydantic.VERSION,
            "h5py": h5py.__version__,
        },
        created_utc=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        kernel=kernel,
        rules_run=rules_run + ["rule_lung_dose_limit", "rule_non_tumor_liver_dose_high", "rule_tumor_dose_low"],
    )


# ================================================================================================== TARE
def _tare(
    case: Case, th: Thresholds, opts: PlannerOptions
) -> tuple[DosimetryResult, VoxelData | None, list[Flag], dict[str, Any] | None]:
    d = case.dosimetry
    if d is None:  # the case model forbids it; defend the invariant anyway
        raise CaseError("dosimetry: required for TARE")
    img = _image_set(case)
    notes: list[str] = []
    if img is not None:
        comp = _compartments_from_images(img)
        if d.lung_mass_kg is not None:
            notes.append(
                f"Lung mass {comp.lung_mass_kg:.3f} kg measured on the images replaces the case's lung_mass_kg "
                f"{d.lung_mass_kg:g} kg."
            )
        notes.append(f"Compartments measured on {img.description}.")
    else:
        comp = _compartments_from_case(case, opts)

    limits = dose_limits(case, th, hepatic_reserve_fraction=comp.hepatic_reserve_fraction)
    record, activity_gbq = _prescribe(case, th, comp, limits, opts)
    compartment = _compartment_doses(case, comp, activity_gbq, opts)
    if record.conflict:
        notes.append(
            "The prescription target cannot be met within the limits: the activity is the largest safe one "
            f"({record.binding_constraint} binds)."
        )

    voxel_data: VoxelData | None = None
    voxel_doses: CompartmentDoses | None = None
    structures: list[StructureDose] = []
    dvhs: dict[str, DVHRecord] = {}
    kernel_params: dict[str, Any] | None = None
    if img is not None:
        voxel_data, voxel_doses, structures, dvhs, kernel_params, vnotes = _voxel_workflow(case, img, activity_gbq, opts)
        notes.extend(vnotes)

    chosen = voxel_doses if voxel_doses is not None else compartment
    lsf = comp.lung_shunt_fraction if comp.lung_shunt_fraction is not None else 0.0
    facts = DoseFacts(
        device=case.procedure.device,
        tumor_dose_gy=chosen.tumor_gy,
        normal_liver_dose_gy=chosen.normal_liver_gy,
        perfused_normal_liver_dose_gy=chosen.perfused_normal_liver_gy,
        lung_dose_gy=chosen.lung_gy,
        hepatic_reserve_fraction=comp.hepatic_reserve_fraction,
        lung_shunt_fraction=comp.lung_shunt_fraction,
        source="voxel" if voxel_doses is not None else "compartment",
    )
    dose_flags = assess_dose(case, facts, th)
    if comp.source == "case" and comp.lung_shunt_fraction is None:
        notes.append("No lung shunt fraction given: the lung dose assumes none.")

    result = DosimetryResult(
        activity_gbq=activity_gbq,
        tumor_dose_gy=chosen.tumor_gy,
        normal_liver_dose_gy=_perfused_normal(chosen),
        lung_dose_gy=chosen.lung_gy,
        perfused_dose_gy=chosen.perfused_gy,
        source="voxel" if voxel_doses is not None else "compartment",
        method=case.dosimetry.dose_method if voxel_doses is not None else record.method,
        prescription=record,
        delivery=_delivery(case, activity_gbq, opts),
        limits=limits,
        compartment=compartment,
        voxel=voxel_doses,
        structures=structures,
        dvh=dvhs,
        lung_shunt_fraction=lsf,
        tumor_to_normal_ratio=comp.tn_ratio,
        volumes_ml={
            "liver": comp.liver_ml,
            "tumor": comp.tumor_ml,
            "perfused": comp.perfused_ml,
            "perfused_tumor": comp.perfused_tumor_ml,
            "perfused_normal_liver": comp.perfused_normal_ml,
        },
        notes=notes,
    )
    return result, voxel_data, dose_flags, kernel_params


def _perfused_normal(c: CompartmentDoses) -> float:
    return c.perfused_normal_liver_gy if c.perfused_normal_liver_gy is not None else c.normal_liver_gy


# -------------------------------------------------------------------------------------------- images
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


def _image_set(case: Case) -> ImageSet | None:
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


def _images_from_phantom(case: Case) -> ImageSet:
    d = case.dosimetry
    assert d is not None and d.images is not None and d.images.phantom is not None
    spec = d.images.phantom
    phantom: Phantom = make_phantom(spec.name, spec.seed, spec.voxel_mm)
    perfused = _territory_mask(case, phantom.masks, phantom.grid.shape)
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
    """The one NM file of a SPECT folder."""
    from .imaging.dicom import read_header

    found = []
    for f in sorted(folder.iterdir()):
        if f.is_file() and not f.name.startswith("."):
            try:
                if str(read_header(f).get("Modality", "")) == "NM":
                    found.append(f)
            except ImagingError:
                continue
    if len(found) != 1:
        raise ImagingError(
            f"dosimetry.images.dicom.spect: {folder} holds {len(found)} NM files; name the SPECT reconstruction file"
        )
    return found[0]


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
    from .dosimetry.dose import hu_to_density_g_cm3
    from .imaging import dicom as dcm
    from .imaging.resample import resample_to_grid
    from .imaging.rtdose import rt_dose_reference
    from .imaging.rtstruct import rasterize_structure
    from .imaging.volume import calibrate_absolute_pet

    roles = spec.structures
    field_base = "dosimetry.images.dicom"
    paths: dict[str, Path] = {}
    for name in ("ct", "spect", "pet", "rtstruct", "seg"):
        given = getattr(spec, name)
        if given is None:
            continue
        path = case.resolve_path(given)
        if not path.exists():
            raise ImagingError(f"{field_base}.{name}: {path} not found")
        paths[name] = path
    notes: list[str] = []

    # ---- images
    ct = dcm.read_ct_series(paths["ct"])
    act_attrs: dict[str, Any]
    if "spect" in paths:
        nm_path = _single_nm_file(paths["spect"]) if paths["spect"].is_dir() else paths["spect"]
        act_vol = dcm.read_nm(nm_path)
        act_array = np.asarray(act_vol.array, dtype=np.float64)
        rp = act_vol.meta.get("radiopharmaceutical")
        act_kind, act_label = "counts", "NM SPECT"
        act_attrs = {"modality": "NM", "file": str(nm_path), "units": "counts",
                     "radiopharmaceutical": getattr(rp, "name", None), "total_counts": float(act_array.sum())}
    else:
        act_vol = dcm.read_pet_series(paths["pet"], clip_negative=True)
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
    for_uid = dcm.require_same_frame_of_reference(ct=ct.frame_of_reference_uid,
                                                  **{spec.activity_source: act_vol.frame_of_reference_uid})

    # ---- the dosimetry grid
    grid = act_vol.grid if spec.grid == "activity" else ct.grid
    if ct.grid == grid:
        ct_hu = np.asarray(ct.array, dtype=np.float32)
    else:
        ct_hu = np.asarray(resample_to_grid(ct.array, ct.grid, grid, "linear", default_value=HU_OUTSIDE_CT),
                           dtype=np.float32)
        inside = np.asarray(resample_to_grid(np.ones(ct.grid.shape, np.float32), ct.grid, grid, "linear"))
        outside = float(np.mean(inside < 0.5))
        if outside > 0:
            notes.append(f"{outside:.1%} of the dosimetry grid lies outside the CT: taken as air ({HU_OUTSIDE_CT:g} HU).")
    density = hu_to_density_g_cm3(ct_hu).astype(np.float32)
    if act_vol.grid == grid:
        activity = act_array
    else:
        activity = np.asarray(resample_to_grid(act_array, act_vol.grid, grid, "activity"), dtype=np.float64)
    n_neg = int(np.count_nonzero(activity < 0))
    if n_neg:
        activity = np.clip(activity, 0.0, None)
        notes.append(f"{n_neg} voxels of negative activity set to 0.")

    # ---- structures
    needed = roles.roi_names()
    rois: dict[str, np.ndarray] = {}
    if "rtstruct" in paths:
        contours = dcm.read_rtstruct(paths["rtstruct"], frame_of_reference_uid=for_uid)
        available = sorted(contours)
        for name in needed:
            if name in contours:
                rois[name] = rasterize_structure(contours[name], grid, output="mask", mask_threshold=0.5)
    else:
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

    def union(names: list[str]) -> np.ndarray:
        out = np.zeros(grid.shape, dtype=bool)
        for n in names:
            out |= rois[n]
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
    lungs = union(list(roles.lungs))
    overlap = int(np.count_nonzero(lungs & liver))
    if overlap:
        lungs &= ~liver
        notes.append(f"{overlap} voxels in both the lung and the liver ROIs counted as liver.")
    if not lungs.any():
        raise ImagingError(f"{field_base}.structures.lungs: the lung ROIs cover no voxel of the dosimetry grid")
    masks: dict[str, np.ndarray] = {"liver": liver, "tumors": tumors, "lungs": lungs}
    for key, roi in zip(tumor_keys, roles.tumors, strict=True):
        masks[key] = rois[roi]
        if not rois[roi].any():
            notes.append(f"Tumour ROI {roi!r} covers no voxel of the dosimetry grid (under half a voxel): no DVH.")
    if roles.right_lobe is not None:
        masks["liver_right"] = union(list(roles.right_lobe)) & liver
    if roles.left_lobe is not None:
        masks["liver_left"] = union(list(roles.left_lobe)) & liver
    for number, names in (roles.segments or {}).items():
        masks[f"segment_{number}"] = union(list(names)) & liver
    perfused = union(list(roles.perfused)) if roles.perfused is not None else _territory_mask(case, masks, grid.shape)
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
    }
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
    )


# -------------------------------------------------------------------------------------------- compartments
def _compartments_from_case(case: Case, opts: PlannerOptions) -> CompartmentInputs:
    d = case.dosimetry
    assert d is not None
    dens = opts.densities
    liver = _need(d.liver_volume_ml, "dosimetry.liver_volume_ml")
    tumor = d.tumor_volume_ml if d.tumor_volume_ml is not None else 0.0
    scope = case.procedure.territory.scope
    perfused = d.perfused_volume_ml if d.perfused_volume_ml is not None else (liver if scope == "whole_liver" else None)
    perfused = _need(perfused, "dosimetry.perfused_volume_ml")
    if d.perfused_tumor_volume_ml is not None:
        ptumor = d.perfused_tumor_volume_ml
    elif scope == "whole_liver":
        ptumor = tumor
    else:
        ptumor = 0.0 if d.tumor_volume_ml is None else None
        ptumor = _need(ptumor, "dosimetry.perfused_tumor_volume_ml")
    lung_mass = d.lung_mass_kg if d.lung_mass_kg is not None else opts.default_lung_mass_kg
    return CompartmentInputs(
        liver_ml=liver,
        tumor_ml=tumor,
        perfused_ml=perfused,
        perfused_tumor_ml=ptumor,
        lung_shunt_fraction=d.lung_shunt_fraction,
        tn_ratio=d.tumor_to_normal_ratio,
        lung_mass_kg=lung_mass,
        perfused_tumor_mass_kg=rx.mass_kg(ptumor, dens.tumor_g_cm3),
        perfused_normal_mass_kg=rx.mass_kg(perfused - ptumor, dens.normal_liver_g_cm3),
        normal_liver_mass_kg=rx.mass_kg(liver - tumor, dens.normal_liver_g_cm3),
        source="case",
    )


def _need(value: float | None, path: str) -> float:
    if value is None:
        raise CaseError(f"{path}: required by this prescription method when no images are given")
    return float(value)


def _territory_mask(case: Case, masks: Mapping[str, np.ndarray], shape: tuple[int, int, int]) -> np.ndarray:
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


def _compartments_from_images(img: ImageSet) -> CompartmentInputs:
    """Volumes and masses from the masks and the density map; T/N and lung shunt from the activity counts."""
    m, perfused, maa = img.masks, img.perfused, img.activity
    v_ml = img.grid.voxel_volume_ml
    rho = img.density_g_cm3.astype(np.float64)
    liver, tumors, lungs = m["liver"], m["tumors"], m["lungs"]
    perf = perfused & liver
    ptum = perf & tumors
    pnorm = perf & ~tumors

    def vol(mask: np.ndarray) -> float:
        return float(np.count_nonzero(mask)) * v_ml

    def mass(mask: np.ndarray) -> float:
        return float(rho[mask].sum()) * v_ml / 1000.0

    liver_counts = float(maa[liver].sum())
    lsf = rx.lung_shunt_fraction_from_counts(float(maa[lungs].sum()), liver_counts)
    tn = None
    if ptum.any():
        tn = rx.tn_ratio_from_counts(float(maa[ptum].sum()), mass(ptum), float(maa[pnorm].sum()), mass(pnorm))
    return CompartmentInputs(
        liver_ml=vol(liver),
        tumor_ml=vol(tumors),
        perfused_ml=vol(perf),
        perfused_tumor_ml=vol(ptum),
        lung_shunt_fraction=lsf,
        tn_ratio=tn,
        lung_mass_kg=mass(lungs),
        perfused_tumor_mass_kg=mass(ptum),
        perfused_normal_mass_kg=mass(pnorm),
        normal_liver_mass_kg=mass(liver & ~tumors),
        source="images",
    )


# -------------------------------------------------------------------------------------------- prescription
def _prescribe(
    case: Case, th: Thresholds, comp: CompartmentInputs, limits: DoseLimits, opts: PlannerOptions
) -> tuple[PrescriptionRecord, float]:
    proc = case.procedure
    p = proc.prescription
    k = opts.k_gy_kg_per_gbq
    lsf = comp.lung_shunt_fraction if comp.lung_shunt_fraction is not None else 0.0
    lung_limit = limits.lung_session_limit_gy
    if limits.lung_prescription_limit_gy is not None:
        lung_limit = min(lung_limit, limits.lung_prescription_limit_gy)
    # The partition model's non-tumour compartment is the perfused one (D_N, Ho 1996). Resin: the limit is applied
    # to D_N (the partition calculators' practice; conservative, since the whole non-tumour liver mean is lower).
    # Glass: EANM 2022 states the limit for the *whole* non-tumour liver; D_N may reach limit x M_N,whole / M_N,perf.
    nl_limit = limits.normal_liver_limit_gy
    if case.procedure.device == "glass" and comp.perfused_normal_mass_kg > 0:
        nl_limit *= comp.normal_liver_mass_kg / comp.perfused_normal_mass_kg
    if limits.perfused_normal_liver_limit_gy is not None:
        nl_limit = min(nl_limit, limits.perfused_normal_liver_limit_gy)
    inputs = comp.as_dict() | {
        "normal_liver_limit_gy": limits.normal_liver_limit_gy,
        "perfused_normal_liver_limit_applied_gy": nl_limit,
        "lung_limit_gy": lung_limit,
        "lung_cumulative_limit_gy": limits.lung_cumulative_limit_gy,
        "prior_lung_dose_gy": limits.prior_lung_dose_gy,
        "densities_g_cm3": {
            "normal_liver": opts.densities.normal_liver_g_cm3,
            "tumor": opts.densities.tumor_g_cm3,
        },
    }
    lung_kw = {
        "prior_lung_dose_gy": limits.prior_lung_dose_gy,
        "cumulative_lung_limit_gy": limits.lung_cumulative_limit_gy,
        "k_gy_kg_per_gbq": k,
    }
    method = p.method
    fixed = getattr(p, "activity_gbq", None)
    tn = comp.tn_ratio
    have_partition = tn is not None and comp.perfused_normal_mass_kg > 0

    # the largest safe activity: non-tumour liver (partition, when T/N is known) and lung
    max_safe: float | None = None
    binding: str | None = None
    by: dict[str, float] = {}
    if have_partition:
        mx = rx.partition_max_activity(
            nl_limit, lung_limit, lsf, tn, comp.perfused_tumor_mass_kg, comp.perfused_normal_mass_kg,
            comp.lung_mass_kg, **lung_kw,
        )
        max_safe, binding, by = mx.activity_gbq, mx.binding_constraint, dict(mx.activity_by_constraint_gbq)
    else:
        a_lung = rx.lung_max_activity_gbq(lsf, comp.lung_mass_kg, lung_limit_gy=lung_limit, **lung_kw)
        a_nl = nl_limit * comp.perfused_mass_kg / (k * (1.0 - lsf))  # single compartment: perfused mean dose
        by = {"normal_liver": a_nl, "lung": a_lung}
        binding = min(by, key=lambda n: by[n])
        max_safe = by[binding]

    reduction = 0.0
    explanation: list[str] = []
    if method == "partition":
        target = p.tumor_dose_target_gy if p.tumor_dose_target_gy is not None else limits.tumor_target_gy
        inputs["tumor_dose_target_gy"] = target
        if tn is None:
            raise CaseError("dosimetry.tumor_to_normal_ratio: required by the partition model")
        a_target = rx.partition_activity_for_tumor_dose_gbq(
            target, lsf, tn, comp.perfused_tumor_mass_kg, comp.perfused_normal_mass_kg, k_gy_kg_per_gbq=k
        ) if comp.perfused_tumor_mass_kg > 0 else max_safe
        explanation.append(
            f"Partition model (Ho 1996): T/N {tn:.3g}, LSF {lsf:.3f}; activity for a tumour dose of {target:g} Gy "
            f"is {a_target:.3f} GBq."
        )
    elif method == "mird":
        target = p.perfused_dose_target_gy
        inputs["perfused_dose_target_gy"] = target
        a_target = (
            rx.mird_activity_gbq(target, comp.perfused_mass_kg, lsf, k) if target is not None else None
        )
        if a_target is not None:
            explanation.append(
                f"MIRD single compartment: A = D M / (K (1 - LSF)) = {target:g} Gy x {comp.perfused_mass_kg:.4f} kg / "
                f"({k:g} x (1 - {lsf:.4f})) = {a_target:.3f} GBq."
            )
    else:  # bsa
        liver_ml = comp.liver_ml
        bsa = rx.bsa_prescription(
            case.patient.weight_kg, case.patient.height_cm, comp.tumor_ml, liver_ml, lsf,
            lobe_fraction=comp.perfused_ml / comp.liver_ml, liver_ml_includes_tumor=True,
        )
        inputs.update(bsa_m2=bsa.bsa_m2, tumor_involvement_fraction=bsa.tumor_involvement_fraction,
                      lobe_fraction=bsa.lobe_fraction, unreduced_activity_gbq=bsa.activity_gbq)
        if bsa.treatable:
            reduction = float(bsa.reduction_fraction or 0.0)
            a_target = bsa.reduced_activity_gbq
        else:
            a_target = bsa.activity_gbq
            explanation.append("Lung shunt above the resin limit: BSA activity shown unreduced; do not treat.")
        explanation.append(
            f"BSA method (resin): BSA {bsa.bsa_m2:.3f} m2 (Du Bois), A = (BSA - 0.2) + V_T/V_L = "
            f"{bsa.activity_gbq:.3f} GBq x lobe fraction; lung-shunt reduction {reduction:.0%}."
        )

    if fixed is not None:
        activity = float(fixed)
        chosen_by = "fixed"
        conflict = max_safe is not None and activity > max_safe * (1 + 1e-9)
        explanation.append(f"Activity fixed by the prescription at {activity:g} GBq.")
    elif a_target is None:
        activity, chosen_by, conflict = float(max_safe), binding, False
        explanation.append("No target given: the largest activity within the limits.")
    elif a_target > max_safe * (1 + 1e-12):
        activity, chosen_by, conflict = float(max_safe), binding, True
        explanation.append(
            f"The target needs {a_target:.3f} GBq but the limits allow at most {max_safe:.3f} GBq ({binding} binds): "
            "the plan gives the largest safe activity and does not reach the target."
        )
    else:
        activity, chosen_by, conflict = float(a_target), "target", False
    if activity < 0 or not math.isfinite(activity):
        activity = 0.0
    return (
        PrescriptionRecord(
            method="fixed" if fixed is not None else method,
            activity_gbq=activity,
            activity_for_target_gbq=a_target,
            max_safe_activity_gbq=max_safe if max_safe is not None and math.isfinite(max_safe) else None,
            binding_constraint=chosen_by,
            conflict=conflict,
            lung_shunt_reduction_fraction=reduction,
            k_gy_kg_per_gbq=k,
            inputs=inputs | {"activity_by_constraint_gbq": {n: v for n, v in by.items() if math.isfinite(v)}},
            explanation=" ".join(explanation),
        ),
        activity,
    )


def _delivery(case: Case, activity_gbq: float, opts: PlannerOptions) -> DeliveryRecord:
    """What to draw or order for ``activity_gbq`` delivered at administration: the vial activity at administration
    given the residual in vial and lines, the activity at calibration (when both times are given), and for glass
    the smallest standard vial and the treatment time (a whole number of days after calibration, or the given
    administration time) that deliver the prescription within the tolerance."""
    proc = case.procedure
    r = proc.residual_fraction or 0.0
    in_vial = rx.required_vial_activity_gbq(activity_gbq, r)
    cal, adm = proc.calibration_datetime, proc.administration_datetime
    hours = (adm - cal).total_seconds() / 3600.0 if cal is not None and adm is not None else None
    at_cal = in_vial / rx.decay_factor(hours) if hours is not None else None
    text = [f"Deliver {activity_gbq:.3f} GBq; with {r:.0%} left in the vial and lines, {in_vial:.3f} GBq in the vial "
            "at administration."]
    if at_cal is not None:
        text.append(f"{hours:.1f} h after calibration: {at_cal:.3f} GBq at calibration.")
    vial = None
    if proc.device == "glass" and activity_gbq > 0:
        candidates = [hours] if hours is not None else [24.0 * d for d in opts.glass_vial_search_days]
        vial = rx.glass_vial_choice(
            activity_gbq, hours_after_calibration=candidates, vial_sizes_gbq=opts.glass_vial_sizes_gbq,
            tolerance_fraction=opts.glass_vial_tolerance_fraction, residual_fraction=r,
        )
        if vial is None:
            text.append(
                f"No standard glass vial ({', '.join(f'{v:g}' for v in opts.glass_vial_sizes_gbq)} GBq at calibration) "
                f"delivers {activity_gbq:.3f} GBq within {opts.glass_vial_tolerance_fraction:.0%}"
                + (" at the given administration time." if hours is not None else " on any day searched.")
            )
        else:
            text.append(
                f"Glass vial {vial.vial_gbq:g} GBq, treating {vial.hours_after_calibration:.0f} h after calibration, "
                f"delivers {vial.delivered_gbq:.3f} GBq ({vial.deviation_fraction:+.1%})."
            )
    return DeliveryRecord(
        delivered_activity_gbq=activity_gbq,
        residual_fraction=r,
        vial_activity_at_administration_gbq=in_vial,
        calibration_datetime=cal.isoformat() if cal is not None else None,
        administration_datetime=adm.isoformat() if adm is not None else None,
        hours_after_calibration=hours,
        activity_at_calibration_gbq=at_cal,
        glass_vial_gbq=vial.vial_gbq if vial else None,
        glass_vial_hours_after_calibration=vial.hours_after_calibration if vial else None,
        glass_vial_delivered_gbq=vial.delivered_gbq if vial else None,
        glass_vial_deviation_fraction=vial.deviation_fraction if vial else None,
        explanation=" ".join(text),
    )


def _compartment_doses(case: Case, comp: CompartmentInputs, activity_gbq: float, opts: PlannerOptions) -> CompartmentDoses:
    k = opts.k_gy_kg_per_gbq
    lsf = comp.lung_shunt_fraction if comp.lung_shunt_fraction is not None else 0.0
    lung = rx.lung_dose_gy(activity_gbq, lsf, comp.lung_mass_kg, k_gy_kg_per_gbq=k)
    perfused = rx.mird_dose_gy(activity_gbq, comp.perfused_mass_kg, lsf, k_gy_kg_per_gbq=k)
    if comp.tn_ratio is not None and comp.perfused_normal_mass_kg > 0:
        pd = rx.partition_doses(
            activity_gbq, lsf, comp.tn_ratio, comp.perfused_tumor_mass_kg, comp.perfused_normal_mass_kg,
            comp.lung_mass_kg, k,
        )
        tumor: float | None = pd.tumor_gy if comp.perfused_tumor_mass_kg > 0 else None
        pnl = pd.normal_liver_gy
        source = "partition"
    else:
        tumor, pnl, source = None, perfused, "mird"
    whole_nl = pnl * comp.perfused_normal_mass_kg / comp.normal_liver_mass_kg if comp.normal_liver_mass_kg > 0 else 0.0
    return CompartmentDoses(
        source=source,
        tumor_gy=tumor,
        normal_liver_gy=whole_nl,
        perfused_gy=perfused,
        perfused_normal_liver_gy=pnl,
        lung_gy=lung,
    )


# -------------------------------------------------------------------------------------------- voxel workflow
#: Structures whose mean dose and DVH the plan reports (name -> how to build it from the phantom's masks).
def _structures(img: ImageSet) -> dict[str, np.ndarray]:
    m, perfused = img.masks, img.perfused
    liver, tumors = m["liver"], m["tumors"]
    perf = perfused & liver
    out = {
        "liver": liver,
        "normal_liver": liver & ~tumors,
        "perfused": perf,
        "perfused_normal_liver": perf & ~tumors,
        "tumors": tumors,
        "perfused_tumors": perf & tumors,
        "lungs": m["lungs"],
    }
    for name in img.tumor_names:
        out[name] = m[name]
    return {k: np.asarray(v, dtype=bool) for k, v in out.items() if np.any(v)}


def _voxel_workflow(
    case: Case, img: ImageSet, activity_gbq: float, opts: PlannerOptions
) -> tuple[VoxelData, CompartmentDoses, list[StructureDose], dict[str, DVHRecord], dict[str, Any], list[str]]:
    grid: Grid = img.grid
    maa = img.activity
    method = case.dosimetry.dose_method  # type: ignore[union-attr]
    notes: list[str] = []
    total = float(maa.sum())
    activity_mbq = maa * (activity_gbq * 1000.0 / total) if total > 0 else np.zeros_like(maa)
    tia = activity_mbq * y90_mean_life_s()
    density = img.density_g_cm3
    maps = {method: dose_map(tia, grid, method, density, k_gy_kg_per_gbq=opts.k_gy_kg_per_gbq)}
    if method != "ldm":
        maps["ldm"] = dose_map(tia, grid, "ldm", density, k_gy_kg_per_gbq=opts.k_gy_kg_per_gbq)
    dose = maps[method].dose_gy
    lung_map = dose
    if method == "vsv":
        lung_map = maps["ldm"].dose_gy
        notes.append(
            "The plain soft-tissue kernel (vsv) does not give lung doses (about -60 % against Monte Carlo): the "
            "lung dose and lung DVH come from local deposition."
        )
    rho = density.astype(np.float64)
    structs = _structures(img)

    def mean(mask: np.ndarray, src: np.ndarray) -> float:
        w = rho[mask]
        return float((src[mask].astype(np.float64) * w).sum() / w.sum())

    means = {name: mean(mask, lung_map if name == "lungs" else dose) for name, mask in structs.items()}
    v_ml = grid.voxel_volume_ml
    structures = []
    dvhs: dict[str, DVHRecord] = {}
    for name, mask in structs.items():
        src = lung_map if name == "lungs" else dose
        radiobio = _metrics.TUMOUR_RADIOBIOLOGY if "tumor" in name else _metrics.LIVER_RADIOBIOLOGY
        structures.append(
            StructureDose(
                structure=name,
                volume_ml=float(np.count_nonzero(mask)) * v_ml,
                mass_kg=float(rho[mask].sum()) * v_ml / 1000.0,
                mean_gy=means[name],
                bed_gy=float(np.average(radiobio.bed_gy(src[mask].astype(np.float64)), weights=rho[mask]))
                if name != "lungs" else None,
            )
        )
        h = _metrics.dvh(src, mask, voxel_volume_ml=v_ml, bin_width_gy=opts.dvh_bin_width_gy, name=name)
        mets = h.metrics()
        dvhs[name] = DVHRecord(
            structure=name,
            volume_ml=h.total_volume_ml,
            dose_gy=[float(x) for x in h.dose_bins_gy],
            volume_fraction=[float(x) for x in h.volume_fraction],
            mean_gy=h.mean_gy,
            min_gy=h.min_gy,
            max_gy=h.max_gy,
            d_gy={k[: -len("_gy")]: v for k, v in mets.items() if k.startswith("D")},
            v_percent={k[: -len("_percent")]: v for k, v in mets.items() if k.startswith("V")},
        )
    voxel_doses = CompartmentDoses(
        source="voxel",
        tumor_gy=means.get("perfused_tumors"),
        normal_liver_gy=means["normal_liver"],
        perfused_gy=means["perfused"],
        perfused_normal_liver_gy=means.get("perfused_normal_liver"),
        lung_gy=means["lungs"],
    )
    arrays: dict[str, np.ndarray] = {
        "density_g_cm3": np.asarray(img.density_g_cm3),
        "activity_mbq": activity_mbq,
        "tia_mbq_s": tia,
    }
    if img.ct_hu is not None:
        arrays["ct_hu"] = np.asarray(img.ct_hu)
    units = {"ct_hu": "HU", "density_g_cm3": "g/cm3", "activity_mbq": "MBq", "tia_mbq_s": "MBq s"}
    if img.ct_hu is None:
        del units["ct_hu"]
    for m_name, dm in maps.items():
        arrays[f"dose_{m_name}_gy"] = np.asarray(dm.dose_gy)
        units[f"dose_{m_name}_gy"] = "Gy"
    for s_name, mask in structs.items():
        arrays[f"mask_{s_name}"] = mask
        units[f"mask_{s_name}"] = "1"
    kernel_params = {m_name: _jsonable(dm.provenance()) for m_name, dm in maps.items()}
    voxel = VoxelData(
        grid=grid,
        arrays=arrays,
        units=units,
        attributes={
            "dose_methods": _jsonable(kernel_params),
            "images": _jsonable(dict(img.attributes)),
            "activity_model": "administered activity distributed as the Tc-99m MAA map; permanent trapping, "
            "physical decay only",
        },
    )
    return voxel, voxel_doses, structures, dvhs, kernel_params, notes


def _jsonable(obj: Any) -> Any:
    """Plain JSON types (tuples -> lists, numpy scalars -> Python numbers, mappings -> dicts)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    return str(obj)
