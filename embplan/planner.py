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
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import __version__
from .board.cumulative import CUMULATIVE_DVH_KEY, PlacedPriors, cumulative_voxel_dose, place_prior_dose_maps
from .board.model import BoardReview, CumulativeVoxelDose
from .board.review import build_review
from .case import Case
from .dosimetry import conventions as conv
from .dosimetry import metrics as _metrics
from .dosimetry import prescription as rx
from .dosimetry.dose import Method, dose_map
from .errors import CaseError
from .grid import Grid
from .imaging.image_set import OUTSIDE_COUNTS_WARNING_FRACTION, ImageSet, build_image_set
from .imaging.volume import calibrate_patient_relative
from .nuclides import K_GY_KG_PER_GBQ_DEFAULT, y90_mean_life_s
from .plan_model import (
    CompartmentDoses,
    DeliveryRecord,
    DosimetryResult,
    DVHRecord,
    LesionDose,
    LungShuntRecord,
    Plan,
    PrescriptionRecord,
    ProcedureSummary,
    Provenance,
    SequenceSummary,
    StructureDose,
    VoxelData,
    jsonable,
)
from .progress import timed
from .protocols import TAREProcedure, standards_from_thresholds
from .risk import (
    DOSE_RULES,
    DoseFacts,
    DoseLimits,
    Flag,
    Severity,
    assess,
    assess_dose,
    dose_limits,
    rule_names,
)
from .risk.coverage import BoardDoseFacts, TumorDoseFact, untreated_disease_flag
from .risk.flags import sort_flags
from .risk.limits import lung_shunt_reduction
from .thresholds import EANM_2022, VAN_ROEKEL, Thresholds

__all__ = ["plan", "Plan", "PlannerOptions", "CompartmentInputs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannerOptions:
    """Parameters of the planner that are not clinical thresholds (those live in :class:`Thresholds`).

    - ``k_gy_kg_per_gbq``: the local-deposition constant (clinical convention 49.67 Gy kg/GBq; see
      :mod:`embplan.nuclides` for the alternatives).
    - ``densities``: tissue densities for masses from volumes (:class:`embplan.dosimetry.prescription.TissueDensities`,
      liver and tumour 1.03 g/mL, the glass package insert's convention; ICRU 46 gives 1.06): compartment masses are
      these densities x the contoured volume, with or without images, and the dose engine uses them inside the
      liver (:mod:`embplan.dosimetry.conventions`).
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
    #: None: the thresholds' delivered_activity_tolerance_fraction (issue 13; overridable per case)
    glass_vial_tolerance_fraction: float | None = None
    glass_vial_search_days: tuple[int, ...] = tuple(range(0, 12))
    # --- issue 13: what the dose numbers mean (each a parameter with its source in embplan.dosimetry.conventions)
    #: candidate treatment times every this many hours within the search days (vendor decay tables are hourly)
    glass_vial_search_step_h: float = rx.GLASS_VIAL_SEARCH_STEP_H
    #: voxels of the dose engine never lighter than this (air in the lung mask), g/cm3
    density_floor_g_cm3: float = conv.DENSITY_FLOOR_G_CM3
    #: liver median CT number above which the plan notes a contrast-enhanced CT, HU
    contrast_liver_hu: float = conv.CONTRAST_LIVER_HU
    #: recovery coefficients of the activity image, per modality ("NM", "PT", "phantom"); none by default
    recovery_coefficients: tuple[conv.RecoveryCoefficients, ...] = ()
    #: lung within this distance of the liver is left out of the lung DVH on emission images, mm (0: keep it)
    lung_dome_margin_mm: float = conv.LUNG_DOME_MARGIN_MM


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
@timed("plan", logging.INFO)
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
    rules_run = rule_names() + [r.__name__ for r in DOSE_RULES] if case.procedure.kind == "TARE" else rule_names()
    dosimetry: DosimetryResult | None = None
    voxel: VoxelData | None = None
    kernel_params: dict[str, Any] | None = None
    if case.procedure.kind == "TARE":
        dosimetry, voxel, dose_flags, kernel_params = _tare(case, th, opts)
        if dosimetry.lung_shunt is not None and dosimetry.lung_shunt.source == "images":
            # one lung shunt for dose and flags (issue 13): the case's value was judged by assess(); the images' wins
            flags = [f for f in flags if f.code != "LUNG_SHUNT_HIGH"]
        flags.extend(dose_flags)
    board_dose = _board_dose_facts(case, dosimetry, voxel, flags)
    board = build_review(case, th, board_dose, cumulative=_cumulative_record(voxel))
    flags = _with_untreated_disease(flags, case, board_dose)
    return Plan(
        case=case,
        case_source=case.source,
        procedure=_procedure_summary(case, th),
        sequence=_sequence_summary(case, board),
        flags=sort_flags(flags),
        thresholds=th,
        dosimetry=dosimetry,
        provenance=_provenance(kernel_params, rules_run, opts),
        voxel=voxel,
        board=board,
    )


# ================================================================================================== protocols
def _procedure_summary(case: Case, th: Thresholds) -> ProcedureSummary:
    proc = case.procedure
    params = proc.model_dump(mode="json", exclude={"kind", "date", "territory"})
    standard_text = standards_from_thresholds(th)[proc.kind].describe()  # the numbers in force, overrides included
    return ProcedureSummary(
        kind=proc.kind,
        territory=proc.territory.describe(),
        device=getattr(proc, "device", None),
        parameters=params,
        standard_protocol=standard_text,
        deviations=[d.message for d in case.deviations(th)],
    )


def _sequence_summary(case: Case, board: BoardReview | None = None) -> SequenceSummary:
    s = case.sequence()
    suggested = s.suggested_next
    staged = [st for st in (board.staged_plan if board is not None else []) if st.order > 1]
    if staged:  # the next step of the patient is the board's staged step, not this territory's next rung
        st = staged[0]
        when = f" from {st.earliest_date.isoformat()}" if st.earliest_date else ""
        suggested = (f"{st.procedure} of the {st.territory} (staged{when}; tumour board); for "
                     f"{case.procedure.territory.describe()} on progression: {s.suggested_next}")
    return SequenceSummary(
        follows_ladder=s.follows_ladder,
        skipped=list(s.skipped),
        justifications=list(s.justifications),
        suggested_next=suggested,
        explanation=s.explanation,
    )


# ================================================================================================== tumour board
def _board_dose_facts(case: Case, dosimetry: DosimetryResult | None, voxel: VoxelData | None,
                      flags: list[Flag]) -> BoardDoseFacts | None:
    """The dose facts the tumour board reads (issue 11): per tumour, the plan's own lesion record (volume, mean dose of
    the voxel map, fraction inside the perfused territory: the same numbers as ``dosimetry.lesions``); its lobe from
    the phantom's record when known."""
    if dosimetry is None:
        return None
    lobes: dict[str, str] = {}
    if voxel is not None:
        phantom = (voxel.attributes.get("images") or {}).get("phantom") or {}
        for t in phantom.get("tumors", ()) if isinstance(phantom, Mapping) else ():
            if isinstance(t, Mapping) and "name" in t and "lobe" in t:
                lobes[str(t["name"])] = str(t["lobe"])
    tumors = [TumorDoseFact(name=les.name, volume_ml=les.volume_ml, mean_dose_gy=les.mean_gy,
                            perfused_fraction=les.perfused_fraction, lobe=lobes.get(les.name))
              for les in dosimetry.lesions]
    return BoardDoseFacts(territory=case.procedure.territory.describe(), tumors=tuple(tumors),
                          normal_liver_dose_gy=dosimetry.normal_liver_dose_gy, lung_dose_gy=dosimetry.lung_dose_gy,
                          source=dosimetry.source,
                          contraindications=tuple(f"{f.code}: {f.message}" for f in flags
                                                  if f.severity == Severity.CONTRAINDICATION
                                                  and f.code in _DOSE_CONTRAINDICATIONS))


#: Dose-side contraindications the board's TARE option of the treated lobe reads (the case-side ones, e.g. bilirubin
#: or burden, are criteria of their own).
_DOSE_CONTRAINDICATIONS = frozenset({"LUNG_DOSE_LIMIT", "NON_TUMOR_LIVER_DOSE_HIGH", "LUNG_SHUNT_HIGH"})


def _with_untreated_disease(flags: list[Flag], case: Case, dose: BoardDoseFacts | None) -> list[Flag]:
    """UNTREATED_DISEASE from the dose map's tumours (and the case's lesions) replaces the case-only one."""
    if dose is None:
        return flags
    out = [f for f in flags if f.code != "UNTREATED_DISEASE"]
    flag = untreated_disease_flag(case, dose)
    return out + ([flag] if flag is not None else [])


def _cumulative_dose(case: Case, th: Thresholds, img: ImageSet, voxel: VoxelData, method: str,
                     rho: np.ndarray, limits: DoseLimits, opts: PlannerOptions,
                     dvhs: dict[str, DVHRecord], placed: PlacedPriors | None) -> tuple[VoxelData, list[Flag]]:
    """The voxel sum of the earlier TARE dose maps and this plan's (:mod:`embplan.board.cumulative`): the cumulative
    maps join the voxel data (``cumulative_dose_gy``, ``cumulative_bed_gy``, ``prior_dose_gy``), the record its
    attributes (``cumulative_dose``, read back by the board), the cumulative non-tumour liver DVH ``dvhs``."""
    maps = voxel.dose_maps()
    res = cumulative_voxel_dose(
        case, th, grid=img.grid, masks=img.masks, dose_gy=maps[method],
        lung_dose_gy=maps["ldm"] if method == "vsv" else maps[method], density_g_cm3=rho,
        frame_of_reference_uid=img.attributes.get("frame_of_reference_uid"), dose_method=method,
        normal_liver_limit_gy=limits.applicable_normal_liver_limit_gy,
        normal_liver_limit_source=limits.normal_liver_limit_source, dvh_bin_width_gy=opts.dvh_bin_width_gy,
        placed=placed)
    if res is None:
        return voxel, []
    dvhs[CUMULATIVE_DVH_KEY] = _dvh_record(
        CUMULATIVE_DVH_KEY, res.arrays["cumulative_dose_gy"], res.normal_liver.astype(np.float64),
        rho.astype(np.float64), img.grid.voxel_volume_ml, opts,
        "mass-weighted cumulative DVH of the non-tumour liver over the plain voxelwise sum of the earlier TARE dose "
        f"maps and this plan's {method} map (board.liver.cumulative_voxel)")
    out = VoxelData(grid=voxel.grid, arrays={**voxel.arrays, **res.arrays}, units={**voxel.units, **res.units},
                    attributes={**voxel.attributes, "cumulative_dose": res.record.model_dump(mode="json")})
    return out, res.flags


def _cumulative_record(voxel: VoxelData | None) -> CumulativeVoxelDose | None:
    rec = voxel.attributes.get("cumulative_dose") if voxel is not None else None
    return CumulativeVoxelDose.model_validate(rec) if isinstance(rec, Mapping) else None


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
        rules_run=rules_run,
    )


# ================================================================================================== TARE
def _tare_procedure(case: Case) -> TAREProcedure:
    """The case's TARE procedure: :func:`plan` takes the TARE path only for ``procedure.kind == "TARE"``."""
    proc = case.procedure
    assert isinstance(proc, TAREProcedure), proc.kind
    return proc


def _tare(
    case: Case, th: Thresholds, opts: PlannerOptions
) -> tuple[DosimetryResult, VoxelData | None, list[Flag], dict[str, Any] | None]:
    d = case.dosimetry
    if d is None:  # the case model forbids it; defend the invariant anyway
        raise CaseError("dosimetry: required for TARE")
    img = build_image_set(case)
    # issue 11 (tumour board): earlier TARE dose maps read and placed before any dose is computed
    placed = (place_prior_dose_maps(case, img.grid, img.masks, img.attributes.get("frame_of_reference_uid"))
              if img is not None else None)
    notes: list[str] = []
    dose_rho: np.ndarray | None = None
    if img is not None:
        dose_rho, rho_notes = _dose_density(img, opts)
        # masses: nominal density x volume in the liver; the CT's own density elsewhere (the lung), *not* floored:
        # the floor is a device of the dose engine, and a lighter lung gives the higher (safer) compartment dose
        mass_rho = np.where(np.asarray(img.masks["liver"], dtype=bool), dose_rho,
                            np.asarray(img.density_g_cm3, dtype=np.float32))
        comp = _compartments_from_images(img, opts, mass_rho)
        if d.lung_mass_kg is not None:
            notes.append(
                f"Lung mass {comp.lung_mass_kg:.3f} kg measured on the images replaces the case's lung_mass_kg "
                f"{d.lung_mass_kg:g} kg."
            )
        notes.append(f"Compartments measured on {img.description}.")
        notes.extend(img.notes)
        notes.extend(rho_notes)
    else:
        comp = _compartments_from_case(case, opts)
    lung_shunt, lsf_flags = _lung_shunt_record(case, comp, img is not None, th, opts)
    if lung_shunt.differs:
        notes.append(
            f"Lung shunt: the images give {lung_shunt.images_fraction:.1%}, the case {lung_shunt.case_fraction:.1%} "
            f"(differ by more than {lung_shunt.discrepancy_threshold_fraction:.0%}); dose and flags use the images'."
        )

    limits = dose_limits(case, th, hepatic_reserve_fraction=comp.hepatic_reserve_fraction)
    record, prescribed_gbq = _prescribe(case, comp, limits, opts)
    if record.conflict:
        notes.append(
            "The prescription target cannot be met within the limits: the activity is the largest safe one "
            f"({record.binding_constraint} binds)."
        )
    # a vial is chosen never below a target and never above a limit: "over" when the target sets the activity,
    # "under" when a limit does, or when "over" would cross the largest safe activity
    prefer = "under" if record.conflict or record.binding_constraint not in ("target", "fixed") else "over"
    delivery = _delivery(case, prescribed_gbq, opts, th, prefer=prefer)
    max_safe = record.max_safe_activity_gbq
    if prefer == "over" and max_safe is not None and delivery.delivered_activity_gbq > max_safe * (1 + 1e-12):
        delivery = _delivery(case, prescribed_gbq, opts, th, prefer="under")
    activity_gbq = delivery.delivered_activity_gbq
    compartment = _compartment_doses(comp, activity_gbq, opts)
    at_prescribed = None
    if not math.isclose(activity_gbq, prescribed_gbq, rel_tol=1e-12, abs_tol=0.0):
        at_prescribed = _compartment_doses(comp, prescribed_gbq, opts)

    voxel_data: VoxelData | None = None
    voxel_doses: CompartmentDoses | None = None
    structures: list[StructureDose] = []
    dvhs: dict[str, DVHRecord] = {}
    lesions: list[LesionDose] = []
    kernel_params: dict[str, Any] | None = None
    method: str | None = None
    method_reason: str | None = None
    if img is not None:
        assert dose_rho is not None
        method, method_reason = _dose_method(case, img)
        (voxel_data, voxel_doses, structures, dvhs, lesions, kernel_params,
         vnotes) = _voxel_workflow(case, img, activity_gbq, opts, method, dose_rho, th)
        notes.extend(vnotes)
        # issue 11 (tumour board): earlier TARE dose maps of the case summed with this plan's
        voxel_data, cumulative_flags = _cumulative_dose(case, th, img, voxel_data, method, dose_rho, limits, opts,
                                                        dvhs, placed)
    elif case.procedure.kind == "TARE" and any(r.dose_file for r in case.patient.prior_treatments):
        raise CaseError("patient.prior_treatments: a dose_file (earlier dose map) is summed on this plan's DICOM "
                        "images; this TARE has no images: give dosimetry.images.dicom or remove dose_file")

    lsf = comp.lung_shunt_fraction if comp.lung_shunt_fraction is not None else 0.0
    definition = _definition(compartment, delivery)
    facts = DoseFacts(
        device=_tare_procedure(case).device,
        tumor_dose_gy=compartment.tumor_gy,
        normal_liver_dose_gy=compartment.normal_liver_gy,
        perfused_normal_liver_dose_gy=compartment.perfused_normal_liver_gy,
        lung_dose_gy=compartment.lung_gy,
        hepatic_reserve_fraction=comp.hepatic_reserve_fraction,
        lung_shunt_fraction=comp.lung_shunt_fraction,
        source="compartment",
        definition=definition,
        voxel_tumor_dose_gy=voxel_doses.tumor_gy if voxel_doses is not None else None,
        voxel_dose_method=method,
    )
    dose_flags = assess_dose(case, facts, th)
    if lung_shunt.source == "images":
        dose_flags = [f for f in dose_flags if f.code != "LUNG_SHUNT_HIGH"] + lsf_flags
    dose_flags.extend(_no_safe_activity_flag(record, limits, dose_flags))
    dose_flags.extend(_delivery_flags(delivery))
    if img is not None:
        dose_flags.extend(cumulative_flags)
    if comp.source == "case" and comp.lung_shunt_fraction is None:
        notes.append("No lung shunt fraction given: the lung dose assumes none.")

    result = DosimetryResult(
        activity_gbq=activity_gbq,
        tumor_dose_gy=compartment.tumor_gy,
        normal_liver_dose_gy=_perfused_normal(compartment),
        lung_dose_gy=compartment.lung_gy,
        perfused_dose_gy=compartment.perfused_gy,
        source="compartment",
        method=method if method is not None else record.method,
        prescription=record,
        delivery=delivery,
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
        prescribed_activity_gbq=prescribed_gbq,
        dose_activity="delivered",
        definitions=_definitions(compartment, voxel_doses, delivery, method),
        compartment_at_prescribed=at_prescribed,
        lesions=lesions,
        lung_shunt=lung_shunt,
        dose_method_reason=method_reason,
        conventions=_conventions(opts, th, img is not None),
    )
    return result, voxel_data, dose_flags, kernel_params


def _no_safe_activity_flag(record: PrescriptionRecord, limits: DoseLimits, flags: list[Flag]) -> list[Flag]:
    """A contraindication when no activity at all fits within the limits (e.g. an earlier TARE used up the whole
    cumulative lung budget): the plan then carries 0 GBq, and says why instead of reporting a silent zero."""
    if not (record.conflict and record.activity_gbq <= 0.0):
        return []
    lung = (record.binding_constraint or "").startswith("lung")
    code = "LUNG_DOSE_LIMIT" if lung else "NON_TUMOR_LIVER_DOSE_HIGH"
    if any(f.code == code for f in flags):
        return []
    what = (
        f"the lung has {limits.lung_remaining_gy:g} Gy left of its {limits.lung_cumulative_limit_gy:g} Gy cumulative "
        f"limit ({limits.prior_lung_dose_gy:g} Gy from earlier sessions)"
        if lung else f"the non-tumour liver limit is {limits.normal_liver_limit_gy:g} Gy"
    )
    return [Flag(
        code=code,
        severity=Severity.CONTRAINDICATION,
        message=f"No activity fits within the limits ({record.binding_constraint} binds: {what}): do not treat "
        "with this territory and device.",
        evidence=f"{EANM_2022}; {VAN_ROEKEL}",
        context={"binding_constraint": record.binding_constraint, "max_safe_activity_gbq": 0.0,
                 "activity_for_target_gbq": record.activity_for_target_gbq,
                 "lung_remaining_gy": limits.lung_remaining_gy,
                 "prior_lung_dose_gy": limits.prior_lung_dose_gy},
    )]


def _perfused_normal(c: CompartmentDoses) -> float:
    return c.perfused_normal_liver_gy if c.perfused_normal_liver_gy is not None else c.normal_liver_gy


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
        ptumor = _need(0.0 if d.tumor_volume_ml is None else None, "dosimetry.perfused_tumor_volume_ml")
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


def _dose_density(img: ImageSet, opts: PlannerOptions) -> tuple[np.ndarray, list[str]]:
    """The density map of the dose engine and of every mass (issue 13, :mod:`embplan.dosimetry.conventions`): the
    liver and its tumours at the nominal densities (a mass is nominal density x contoured volume), the CT density
    elsewhere (lung, bone, air: transport needs it), floored at ``opts.density_floor_g_cm3``; a note when the liver's
    CT numbers look contrast-enhanced."""
    dens = opts.densities
    liver, tumors = img.masks["liver"], img.masks["tumors"]
    rho = conv.dose_density_g_cm3(img.density_g_cm3, liver, nominal_g_cm3=dens.normal_liver_g_cm3,
                                  floor_g_cm3=opts.density_floor_g_cm3)
    rho[tumors & liver] = np.float32(dens.tumor_g_cm3)
    notes: list[str] = []
    if img.ct_hu is not None and np.any(liver & ~tumors):
        med = float(np.median(np.asarray(img.ct_hu)[liver & ~tumors]))
        ct_rho = np.asarray(img.density_g_cm3)[liver].astype(np.float64)
        if med > opts.contrast_liver_hu:
            notes.append(
                f"The liver's median CT number is {med:.0f} HU (> {opts.contrast_liver_hu:g} HU): the CT looks "
                f"contrast-enhanced. Its calibration would give the liver {ct_rho.mean():.3f} g/cm3; masses and the "
                f"dose use the nominal {dens.normal_liver_g_cm3:g} g/mL instead ({conv.NOMINAL_TISSUE_DENSITY_SOURCE})."
            )
    n_floor = int(np.count_nonzero(np.asarray(img.density_g_cm3)[img.masks["lungs"]] < opts.density_floor_g_cm3))
    if n_floor:
        notes.append(
            f"{n_floor} lung voxels lighter than {opts.density_floor_g_cm3:g} g/cm3 (air) enter the dose at that density "
            f"({conv.DENSITY_FLOOR_SOURCE})."
        )
    return rho, notes


def _compartments_from_images(img: ImageSet, opts: PlannerOptions, rho32: np.ndarray) -> CompartmentInputs:
    """Volumes from the masks, masses from ``rho32`` (nominal densities in the liver, the CT's in the lung); T/N and
    lung shunt from the activity counts."""
    m, perfused, maa = img.masks, img.perfused, img.activity
    v_ml = img.grid.voxel_volume_ml
    liver, tumors, lungs = m["liver"], m["tumors"], m["lungs"]
    perf = perfused & liver
    ptum = perf & tumors
    pnorm = perf & ~tumors

    def vol(mask: np.ndarray) -> float:
        return float(np.count_nonzero(mask)) * v_ml

    def mass(mask: np.ndarray) -> float:
        # the mask's voxels, then float64 (the same sum as over a float64 copy of the grid, without the copy)
        return float(rho32[mask].astype(np.float64).sum()) * v_ml / 1000.0

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


def _lung_shunt_record(
    case: Case, comp: CompartmentInputs, images: bool, th: Thresholds, opts: PlannerOptions
) -> tuple[LungShuntRecord, list[Flag]]:
    """One lung shunt for the dose and the flags (issue 13): with images, the images' (the lung counts are the
    activity the dose map puts in the lung); without, the case's. The other value is kept beside it and a
    difference beyond ``thresholds.lung_shunt_discrepancy_fraction`` is flagged (LUNG_SHUNT_DISCREPANCY, caution)."""
    given = case.dosimetry.lung_shunt_fraction if case.dosimetry is not None else None
    thr = th.lung_shunt_discrepancy_fraction
    if not images:
        return LungShuntRecord(used_fraction=given, source="case" if given is not None else "none", case_fraction=given,
                               discrepancy_threshold_fraction=thr), []
    measured = comp.lung_shunt_fraction
    differs = given is not None and measured is not None and abs(given - measured) > thr
    record = LungShuntRecord(used_fraction=measured, source="images", case_fraction=given, images_fraction=measured,
                             discrepancy_threshold_fraction=thr, differs=differs)
    flags: list[Flag] = []
    if measured is not None:
        _, f = lung_shunt_reduction(measured, _tare_procedure(case).device, th)
        if f is not None:
            flags.append(f.model_copy(update={
                "message": f.message + " (lung shunt measured on the images, the value the dose uses)",
                "context": {**f.context, "lung_shunt_source": "images", "case_lung_shunt_fraction": given},
            }))
    if differs:
        flags.append(Flag(
            code="LUNG_SHUNT_DISCREPANCY", severity=Severity.CAUTION,
            message=f"The case gives a lung shunt of {given:.1%}; the images measure {measured:.1%}. The dose and the "
            "flags use the images' value (the activity map the dose is computed from); check the planar and the "
            "SPECT/CT estimates (planar imaging overestimates the shunt).",
            evidence="Allred JD et al., EJNMMI Res 8:50 (2018) (SPECT/CT vs planar LSF); EANM dosimetry SOP, Chiesa "
            "et al., EJNMMI Phys 8:77 (2021)",
            context={"lung_shunt_fraction_used": measured, "lung_shunt_source": "images",
                     "case_lung_shunt_fraction": given, "discrepancy_threshold_fraction": thr},
        ))
    return record, flags


def _dose_method(case: Case, img: ImageSet) -> tuple[Method, str]:
    """The voxel dose method and why: the case's ``dose_method`` when given, else the modality's default
    (:func:`embplan.dosimetry.conventions.default_dose_method`)."""
    given = case.dosimetry.dose_method if case.dosimetry is not None else None
    if given is not None:
        return given, f"{given}: named by the case (dosimetry.dose_method)"
    src = img.attributes.get("source")
    modality = "phantom" if src == "phantom" else str(img.attributes.get("activity", {}).get("modality", "NM"))
    if modality not in ("NM", "PT"):
        modality = "NM"
    dz, dy, dx = (float(v) for v in img.grid.spacing_mm)
    method, reason = conv.default_dose_method(modality, (dz, dy, dx))
    return method, f"{method} (default for the modality): {reason}"


def _definition(c: CompartmentDoses, delivery: DeliveryRecord) -> str:
    model = {"partition": "partition model (Ho 1996)", "mird": "MIRD single compartment", "voxel": "voxel map"}[c.source]
    return (f"compartment mean absorbed dose, {model}, local deposition, mass = nominal density x contoured volume, "
            f"at the delivered activity {delivery.delivered_activity_gbq:.3f} GBq")


def _definitions(c: CompartmentDoses, v: CompartmentDoses | None, delivery: DeliveryRecord,
                 method: str | None) -> dict[str, str]:
    """What each reported dose means, by field name (the report prints these beside the numbers)."""
    base = _definition(c, delivery)
    out = {
        "activity_gbq": "activity delivered into the patient at administration (vial at administration less the "
        f"residual): {delivery.delivered_activity_gbq:.3f} GBq; prescribed "
        f"{delivery.prescribed_activity_gbq if delivery.prescribed_activity_gbq is not None else 0.0:.3f} GBq",
        "tumor_dose_gy": f"perfused tumour: {base}" + (" (T/N from the MAA counts)" if c.source == "partition" else ""),
        "normal_liver_dose_gy": f"non-tumour liver of the perfused territory (D_N): {base}",
        "perfused_dose_gy": f"whole perfused territory, tumour included: {base}",
        "lung_dose_gy": "lungs: K A LSF / M_lung at the delivered activity (M_lung from the CT's densities, not "
        "floored, when images are given; else the case's or 1 kg)",
        "compartment.normal_liver_gy": "whole non-tumour liver (perfused and not): D_N x M_N,perfused / M_N,whole",
    }
    if v is not None and method is not None:
        out["voxel"] = (f"mass-weighted mean (deposited energy / mass) of the {method} dose map over each structure, "
                        "at the delivered activity")
        out["dvh"] = (f"cumulative mass-weighted DVH of the {method} dose map (voxel weight = density x fraction of the "
                      "voxel inside x voxel volume); its mean equals the structure's voxel mean")
        out["lesions"] = f"per tumour: voxel mean ({method}) and local-deposition mean, with size and partial-volume warning"
    return out


def _vial_tolerance(opts: PlannerOptions, th: Thresholds) -> float:
    t = opts.glass_vial_tolerance_fraction
    return float(th.delivered_activity_tolerance_fraction if t is None else t)


def _conventions(opts: PlannerOptions, th: Thresholds, images: bool) -> dict[str, Any]:
    dens = opts.densities
    out: dict[str, Any] = {
        "normal_liver_density_g_cm3": dens.normal_liver_g_cm3,
        "tumor_density_g_cm3": dens.tumor_g_cm3,
        "density_source": dens.SOURCES["normal_liver_g_cm3"],
        "k_gy_kg_per_gbq": opts.k_gy_kg_per_gbq,
        "vial_tolerance_fraction": _vial_tolerance(opts, th),
        "vial_tolerance_source": rx.VIAL_TOLERANCE_SOURCE,
        "lung_shunt_discrepancy_fraction": th.lung_shunt_discrepancy_fraction,
    }
    if images:
        out.update({
            "density_floor_g_cm3": opts.density_floor_g_cm3,
            "density_floor_source": conv.DENSITY_FLOOR_SOURCE,
            "contrast_liver_hu": opts.contrast_liver_hu,
            "partial_volume_warning_ml": th.partial_volume_warning_ml,
            "partial_volume_source": conv.PARTIAL_VOLUME_SOURCE,
            "lung_dome_margin_mm": opts.lung_dome_margin_mm,
            "lung_dome_margin_source": conv.LUNG_DOME_MARGIN_SOURCE,
        })
    return out


# -------------------------------------------------------------------------------------------- prescription
def _prescribe(
    case: Case, comp: CompartmentInputs, limits: DoseLimits, opts: PlannerOptions
) -> tuple[PrescriptionRecord, float]:
    proc = _tare_procedure(case)
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
    if proc.device == "glass" and comp.perfused_normal_mass_kg > 0:
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
        assert tn is not None  # have_partition says so
        mx = rx.partition_max_activity(
            nl_limit, lung_limit, lsf, tn, comp.perfused_tumor_mass_kg, comp.perfused_normal_mass_kg,
            comp.lung_mass_kg, **lung_kw,
        )
        max_safe, binding, by = mx.activity_gbq, mx.binding_constraint, dict(mx.activity_by_constraint_gbq)
    else:
        a_lung = rx.lung_max_activity_gbq(lsf, comp.lung_mass_kg, lung_limit_gy=lung_limit, **lung_kw)
        a_nl = rx.mird_activity_gbq(nl_limit, comp.perfused_mass_kg, lsf, k)  # single compartment: perfused mean
        by = {"normal_liver": a_nl, "lung": a_lung}
        binding = min(by, key=lambda n: by[n])
        max_safe = by[binding]

    reduction = 0.0
    explanation: list[str] = []
    target: float | None
    a_target: float | None
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


def _delivery(case: Case, prescribed_gbq: float, opts: PlannerOptions, th: Thresholds, *,
              prefer: str = "over") -> DeliveryRecord:
    """What reaches the patient for a prescription of ``prescribed_gbq`` at administration (issue 13: the doses are
    computed for it). Resin: the prescription is drawn from the vial (``prescribed / (1 - residual)`` in the
    syringe) and delivered as prescribed. Glass: a whole standard vial is delivered; the vial and treatment time
    come from :func:`embplan.dosimetry.prescription.glass_vial_for_delivery` (at the given administration time, or
    hour by hour over the search days), and the delivered activity is that vial's at the treatment time less the
    residual. A deviation beyond the tolerance is flagged (DELIVERED_ACTIVITY_DEVIATION)."""
    proc = _tare_procedure(case)
    r = proc.residual_fraction or 0.0
    in_vial = rx.required_vial_activity_gbq(prescribed_gbq, r)
    cal, adm = proc.calibration_datetime, proc.administration_datetime
    hours = (adm - cal).total_seconds() / 3600.0 if cal is not None and adm is not None else None
    at_cal = in_vial / rx.decay_factor(hours) if hours is not None else None
    tol = _vial_tolerance(opts, th)
    text = [f"Prescribed {prescribed_gbq:.3f} GBq; with {r:.0%} left in the vial and lines, {in_vial:.3f} GBq in the "
            "vial at administration."]
    if at_cal is not None:
        text.append(f"{hours:.1f} h after calibration: {at_cal:.3f} GBq at calibration.")
    delivered = prescribed_gbq
    vial = None
    within: bool | None = None
    rule: str | None = None
    if proc.device == "glass" and prescribed_gbq > 0:
        if hours is not None:
            candidates = [hours]
        else:
            last_h = 24.0 * max(opts.glass_vial_search_days) + 24.0
            first_h = 24.0 * min(opts.glass_vial_search_days)
            candidates = [float(h) for h in np.arange(first_h, last_h, opts.glass_vial_search_step_h)]
        choice = rx.glass_vial_for_delivery(
            prescribed_gbq, hours_after_calibration=candidates, vial_sizes_gbq=opts.glass_vial_sizes_gbq,
            tolerance_fraction=tol, residual_fraction=r, prefer=prefer,
        )
        vial, within, rule = choice.option, choice.within_tolerance, choice.rule
        delivered = vial.delivered_gbq
        text.append(
            f"Glass vial {vial.vial_gbq:g} GBq, treating {vial.hours_after_calibration:.0f} h after calibration, "
            f"delivers {vial.delivered_gbq:.3f} GBq ({vial.deviation_fraction:+.1%}; {rule}). The doses are "
            "computed for the delivered activity."
        )
        if not within:
            text.append(f"No standard vial delivers the prescription within {tol:.0%}"
                        + (" at the given administration time." if hours is not None else " on any hour searched."))
    dev = (delivered - prescribed_gbq) / prescribed_gbq if prescribed_gbq > 0 else 0.0
    return DeliveryRecord(
        delivered_activity_gbq=delivered,
        residual_fraction=r,
        vial_activity_at_administration_gbq=in_vial if vial is None else vial.vial_activity_at_treatment_gbq,
        calibration_datetime=cal.isoformat() if cal is not None else None,
        administration_datetime=adm.isoformat() if adm is not None else None,
        hours_after_calibration=hours,
        activity_at_calibration_gbq=at_cal,
        glass_vial_gbq=vial.vial_gbq if vial else None,
        glass_vial_hours_after_calibration=vial.hours_after_calibration if vial else None,
        glass_vial_delivered_gbq=vial.delivered_gbq if vial else None,
        glass_vial_deviation_fraction=vial.deviation_fraction if vial else None,
        explanation=" ".join(text),
        prescribed_activity_gbq=prescribed_gbq,
        tolerance_fraction=tol,
        tolerance_source=rx.VIAL_TOLERANCE_SOURCE,
        within_tolerance=within if within is not None else True,
        deviation_fraction=dev,
        vial_rule=rule,
    )


def _delivery_flags(delivery: DeliveryRecord) -> list[Flag]:
    """DELIVERED_ACTIVITY_DEVIATION (warning) when the delivered activity departs from the prescription by more
    than the tolerance: the doses shown are the delivered ones, not the prescription's."""
    if delivery.within_tolerance is not False:
        return []
    dev = delivery.deviation_fraction or 0.0
    word = "short of" if dev < 0 else "above"
    return [Flag(
        code="DELIVERED_ACTIVITY_DEVIATION", severity=Severity.WARNING,
        message=f"The delivered activity {delivery.delivered_activity_gbq:.3f} GBq is {abs(dev):.1%} {word} the "
        f"prescription {delivery.prescribed_activity_gbq:.3f} GBq (tolerance {delivery.tolerance_fraction:.0%}): "
        "the doses shown are for the delivered activity. Choose another vial or treatment time, or re-prescribe.",
        evidence=f"{rx.VIAL_TOLERANCE_SOURCE}; TheraSphere US package insert v12 (vial sizes; Y-90 half-life 64.1 h)",
        context={"prescribed_activity_gbq": delivery.prescribed_activity_gbq,
                 "delivered_activity_gbq": delivery.delivered_activity_gbq, "deviation_fraction": dev,
                 "tolerance_fraction": delivery.tolerance_fraction, "glass_vial_gbq": delivery.glass_vial_gbq,
                 "hours_after_calibration": delivery.glass_vial_hours_after_calibration},
    )]


def _compartment_doses(comp: CompartmentInputs, activity_gbq: float, opts: PlannerOptions) -> CompartmentDoses:
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
    model = "partition model (Ho 1996)" if source == "partition" else "MIRD single compartment"
    return CompartmentDoses(
        source=source,
        tumor_gy=tumor,
        normal_liver_gy=whole_nl,
        perfused_gy=perfused,
        perfused_normal_liver_gy=pnl,
        lung_gy=lung,
        activity_gbq=activity_gbq,
        definition=f"{model}, local deposition, masses = nominal density x contoured volume"
        + (" (volumes and counts measured on the images)" if comp.source == "images" else ""),
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


@timed("voxel dosimetry", logging.INFO)
def _voxel_workflow(
    case: Case, img: ImageSet, activity_gbq: float, opts: PlannerOptions, method: Method, rho32: np.ndarray,
    th: Thresholds,
) -> tuple[VoxelData, CompartmentDoses, list[StructureDose], dict[str, DVHRecord], list[LesionDose], dict[str, Any],
           list[str]]:
    """The voxel dose at ``activity_gbq`` (the delivered activity) with ``method`` on the density map ``rho32``
    (nominal densities in the liver, CT elsewhere, floored), and the mass-weighted means, DVHs and lesion table."""
    grid: Grid = img.grid
    maa = img.activity
    notes: list[str] = []
    if activity_gbq > 0:
        # patient-relative calibration (EANM dosimetry SOP, Chiesa 2021): liver + lungs hold the activity; counts
        # elsewhere (scatter, free pertechnetate, misregistration) are not dosed
        calibrated = calibrate_patient_relative(
            maa, img.masks["liver"], img.masks["lungs"], activity_gbq * 1000.0, grid=grid, zero_outside=True
        )
        activity_mbq = calibrated.activity_mbq
        outside = calibrated.fraction_outside_liver_lung
        assert outside is not None  # patient-relative calibration always reports it
        if outside > 0:
            notes.append(
                f"{outside:.1%} of the counts lie outside the liver and lungs: set to 0 (patient-relative "
                "calibration: liver + lungs hold the administered activity)."
            )
        if outside > OUTSIDE_COUNTS_WARNING_FRACTION:
            notes.append(
                f"More than {OUTSIDE_COUNTS_WARNING_FRACTION:.0%} of the counts lie outside the liver and lungs: check "
                "the registration, the segmentation and for extrahepatic (e.g. gastrointestinal) deposition."
            )
    else:
        activity_mbq = np.zeros(grid.shape)
    tia = activity_mbq * y90_mean_life_s()
    k = opts.k_gy_kg_per_gbq
    # the kernel is built for the liver's nominal density, so that the plain kernel conserves energy in the liver
    # (it spread energy at 1.04 g/cm3 and reported it over 1.06: +1.9 % against LDM before issue 13)
    kd = float(opts.densities.normal_liver_g_cm3)
    # the dose engine reads the float32 density map as it is, each value promoted to float64 (exact; issue 16)
    maps = {method: dose_map(tia, grid, method, rho32, k_gy_kg_per_gbq=k, kernel_density_g_cm3=kd)}
    if method != "ldm":
        maps["ldm"] = dose_map(tia, grid, "ldm", rho32, k_gy_kg_per_gbq=k, kernel_density_g_cm3=kd)
    dose = maps[method].dose_gy
    ldm = maps["ldm"].dose_gy
    lung_map = dose
    if method == "vsv":
        lung_map = ldm
        notes.append(
            "The plain soft-tissue kernel (vsv) does not give lung doses (about -60 % against Monte Carlo): the "
            "lung dose and lung DVH come from local deposition."
        )
    structs = _structures(img)
    fractions: Mapping[str, np.ndarray] = getattr(img, "fractions", None) or {}
    # the lung away from the dome (a distance transform, which releases the GIL) is computed on a thread while the
    # structures' means and DVHs are (issue 16)
    lungs = structs.get("lungs")
    dome_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embplan-dome")
    dome_future = (dome_pool.submit(conv.dome_excluded_lung, lungs, img.masks["liver"], grid.spacing_mm,
                                    opts.lung_dome_margin_mm)
                   if lungs is not None and opts.lung_dome_margin_mm > 0 else None)
    dome_pool.shutdown(wait=False)
    # b16 / issue 16: each structure's voxels are found once (flat indices, C order: the voxels and the order of
    # ``w[w > 0]``) and gathered once; its mean, BED, DVH and lesion row use those samples (was a pass over the
    # whole grid per use: 1.2 s of the 1.5 mm phantom's plan)
    rho_flat = rho32.reshape(-1)
    dose_flat, lung_flat = dose.reshape(-1), lung_map.reshape(-1)
    samples: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}

    def voxels_of(name: str, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """(flat indices, fractions or None for whole voxels) of the structure ``name``."""
        if name not in samples:
            frac = fractions.get(name)
            if frac is None:
                assert mask is not None  # a structure without fractions has its mask
                samples[name] = (np.flatnonzero(np.asarray(mask, dtype=bool).reshape(-1)), None)
            else:
                flat = np.asarray(frac).reshape(-1)
                idx = np.flatnonzero(flat > 0)
                samples[name] = (idx, flat[idx].astype(np.float64))
        return samples[name]

    v_ml = grid.voxel_volume_ml
    structures: list[StructureDose] = []
    dvhs: dict[str, DVHRecord] = {}
    means: dict[str, float] = {}
    dvh_def = f"mass-weighted cumulative DVH of the {method} map"
    for name, mask in structs.items():
        src = lung_flat if name == "lungs" else dose_flat
        idx, frac = voxels_of(name, mask)
        d = src[idx].astype(np.float64)
        r = rho_flat[idx].astype(np.float64)
        m = r if frac is None else frac * r
        means[name] = float((d * m).sum() / m.sum())
        radiobio = _metrics.TUMOUR_RADIOBIOLOGY if "tumor" in name else _metrics.LIVER_RADIOBIOLOGY
        structures.append(
            StructureDose(
                structure=name,
                volume_ml=(float(idx.size) if frac is None else float(frac.sum())) * v_ml,
                mass_kg=float(m.sum()) * v_ml / 1000.0,
                mean_gy=means[name],
                bed_gy=float(np.average(radiobio.bed_gy(d), weights=m)) if name != "lungs" else None,
            )
        )
        what = dvh_def + (" (LDM for the lung)" if name == "lungs" and method == "vsv" else "")
        if name == "lungs":
            what += (": its mean is the lung's mean dose (on the safe side); its shape near the liver dome is SPECT "
                     "spill-in, not the lung's dose profile (see lungs_beyond_dome)")
        dvhs[name] = _dvh_record_samples(name, d, frac, r, v_ml, opts, what)
    if dome_future is not None:
        away = dome_future.result()
        if away.any():
            idx = np.flatnonzero(away.reshape(-1))
            dvhs["lungs_beyond_dome"] = _dvh_record_samples(
                "lungs_beyond_dome", lung_flat[idx], None, rho_flat[idx], v_ml, opts,
                f"{dvh_def} over the lung more than {opts.lung_dome_margin_mm:g} mm from the liver "
                f"({conv.LUNG_DOME_MARGIN_SOURCE}): the lung's dose without the SPECT spill-in at the dome",
            )
    voxel_doses = CompartmentDoses(
        source="voxel",
        tumor_gy=means.get("perfused_tumors"),
        normal_liver_gy=means["normal_liver"],
        perfused_gy=means["perfused"],
        perfused_normal_liver_gy=means.get("perfused_normal_liver"),
        lung_gy=means["lungs"],
        activity_gbq=activity_gbq,
        definition=f"mass-weighted mean of the {method} dose map" + (" (lung: LDM)" if method == "vsv" else ""),
    )
    lesions = _lesions(img, structs, fractions, voxels_of, dose_flat, ldm.reshape(-1), rho_flat, method, opts, th,
                       case.dosimetry.recovery_coefficients if case.dosimetry is not None else None)
    arrays: dict[str, np.ndarray] = {
        "density_g_cm3": np.asarray(img.density_g_cm3),
        "dose_density_g_cm3": np.asarray(rho32, dtype=np.float32),
        "activity_mbq": activity_mbq,
        "tia_mbq_s": tia,
    }
    if img.ct_hu is not None:
        arrays["ct_hu"] = np.asarray(img.ct_hu)
    units = {"ct_hu": "HU", "density_g_cm3": "g/cm3", "dose_density_g_cm3": "g/cm3", "activity_mbq": "MBq",
             "tia_mbq_s": "MBq s"}
    if img.ct_hu is None:
        del units["ct_hu"]
    for m_name, dm in maps.items():
        arrays[f"dose_{m_name}_gy"] = np.asarray(dm.dose_gy)
        units[f"dose_{m_name}_gy"] = "Gy"
    for s_name, mask in structs.items():
        arrays[f"mask_{s_name}"] = mask
        units[f"mask_{s_name}"] = "1"
    kernel_params: dict[str, Any] = {m_name: jsonable(dm.provenance()) for m_name, dm in maps.items()}
    voxel = VoxelData(
        grid=grid,
        arrays=arrays,
        units=units,
        attributes={
            "dose_methods": jsonable(kernel_params),
            "images": jsonable(dict(img.attributes)),
            "activity_model": "administered activity distributed as the Tc-99m MAA map; permanent trapping, "
            "physical decay only",
            "dose_density": "CT density floored at the air floor; liver and tumours at their nominal densities",
        },
    )
    return voxel, voxel_doses, structures, dvhs, lesions, kernel_params, notes


def _dvh_record(name: str, src: np.ndarray, w: np.ndarray, rho: np.ndarray, v_ml: float, opts: PlannerOptions,
                definition: str) -> DVHRecord:
    h = _metrics.dvh(src, w, voxel_volume_ml=v_ml, bin_width_gy=opts.dvh_bin_width_gy, name=name,
                     mass_density_g_cm3=rho)
    return _dvh_to_record(name, h, definition)


def _dvh_to_record(name: str, h: _metrics.DVH, definition: str) -> DVHRecord:
    mets = h.metrics()
    return DVHRecord(
        structure=name,
        volume_ml=h.total_volume_ml,
        dose_gy=[float(x) for x in h.dose_bins_gy],
        volume_fraction=[float(x) for x in h.volume_fraction],
        mean_gy=h.mean_gy,
        min_gy=h.min_gy,
        max_gy=h.max_gy,
        d_gy={k[: -len("_gy")]: v for k, v in mets.items() if k.startswith("D")},
        v_percent={k[: -len("_percent")]: v for k, v in mets.items() if k.startswith("V")},
        weighting="mass",
        definition=definition,
    )


def _dvh_record_samples(name: str, d: np.ndarray, frac: np.ndarray | None, rho: np.ndarray, v_ml: float,
                        opts: PlannerOptions, definition: str) -> DVHRecord:
    """:func:`_dvh_record` of a structure's gathered voxels (:func:`embplan.dosimetry.metrics.dvh_from_samples`)."""
    h = _metrics.dvh_from_samples(d, frac, voxel_volume_ml=v_ml, bin_width_gy=opts.dvh_bin_width_gy, name=name,
                                  mass_density_g_cm3=rho)
    return _dvh_to_record(name, h, definition)


def _lesions(img: ImageSet, structs: Mapping[str, np.ndarray], fractions: Mapping[str, np.ndarray],
             voxels_of: Callable[[str, np.ndarray | None], tuple[np.ndarray, np.ndarray | None]], dose_flat: np.ndarray,
             ldm_flat: np.ndarray, rho_flat: np.ndarray, method: str, opts: PlannerOptions,
             th: Thresholds, case_rcs: list[Any] | None = None) -> list[LesionDose]:
    """One row per tumour (issue 13): volume, voxel count, mean doses, partial-volume warning, recovery."""
    v_ml = img.grid.voxel_volume_ml
    perf = np.asarray(img.perfused, dtype=bool) & np.asarray(img.masks["liver"], dtype=bool)
    src = img.attributes.get("source")
    modality = "phantom" if src == "phantom" else str(img.attributes.get("activity", {}).get("modality", "NM"))
    rcs = {r.modality: r for r in opts.recovery_coefficients}
    for given in (case_rcs or ()):  # the case's own coefficients win over the options'
        rcs[given.modality] = conv.RecoveryCoefficients(given.modality, tuple(given.volume_ml),
                                                        tuple(given.coefficient), given.source)
    out: list[LesionDose] = []
    for name in img.tumor_names:
        mask = structs.get(name)
        if mask is None and fractions.get(name) is None:  # an empty tumour mask is not among the structures
            continue
        idx, frac = voxels_of(name, mask)
        if idx.size == 0:
            continue
        wv = np.ones(idx.size) if frac is None else frac
        vol = float(wv.sum()) * v_ml
        m = wv * rho_flat[idx].astype(np.float64)
        mean_gy = float((dose_flat[idx].astype(np.float64) * m).sum() / m.sum())
        ldm_gy = float((ldm_flat[idx].astype(np.float64) * m).sum() / m.sum())
        small = vol < th.partial_volume_warning_ml
        rc = rcs.get(modality)
        coeff = rc.at(vol) if rc is not None else None
        notes = []
        if small:
            notes.append(f"under {th.partial_volume_warning_ml:g} mL: partial volume lowers the imaged activity "
                         "and the kernel moves energy out; the mean dose reads low")
        if rc is not None and coeff is not None:
            notes.append(f"recovery coefficient {coeff:.3f} ({rc.source or modality})")
        out.append(LesionDose(
            name=name,
            volume_ml=vol,
            voxel_count=int(idx.size),
            mass_kg=float(m.sum()) * v_ml / 1000.0,
            equivalent_diameter_mm=conv.equivalent_sphere_diameter_mm(vol),
            perfused_fraction=float(min(1.0, (wv * perf.reshape(-1)[idx]).sum() / wv.sum())),
            mean_gy=max(mean_gy, 0.0),
            local_deposition_gy=max(ldm_gy, 0.0),
            dose_method=method,
            partial_volume_warning=small,
            recovery_coefficient=coeff,
            recovery_corrected_gy=max(mean_gy, 0.0) / coeff if coeff is not None else None,
            note="; ".join(notes),
        ))
    return out
