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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import __version__
from .case import Case
from .dosimetry import metrics as _metrics
from .dosimetry import prescription as rx
from .dosimetry.dose import dose_map
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
    Plan,
    PrescriptionRecord,
    ProcedureSummary,
    Provenance,
    SequenceSummary,
    StructureDose,
    VoxelData,
)
from .progress import timed
from .protocols import standards_from_thresholds
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
from .risk.flags import sort_flags
from .thresholds import EANM_2022, VAN_ROEKEL, Thresholds

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
        rules_run=rules_run,
    )


# ================================================================================================== TARE
def _tare(
    case: Case, th: Thresholds, opts: PlannerOptions
) -> tuple[DosimetryResult, VoxelData | None, list[Flag], dict[str, Any] | None]:
    d = case.dosimetry
    if d is None:  # the case model forbids it; defend the invariant anyway
        raise CaseError("dosimetry: required for TARE")
    img = build_image_set(case)
    notes: list[str] = []
    if img is not None:
        comp = _compartments_from_images(img)
        if d.lung_mass_kg is not None:
            notes.append(
                f"Lung mass {comp.lung_mass_kg:.3f} kg measured on the images replaces the case's lung_mass_kg "
                f"{d.lung_mass_kg:g} kg."
            )
        notes.append(f"Compartments measured on {img.description}.")
        notes.extend(img.notes)
    else:
        comp = _compartments_from_case(case, opts)

    limits = dose_limits(case, th, hepatic_reserve_fraction=comp.hepatic_reserve_fraction)
    record, activity_gbq = _prescribe(case, comp, limits, opts)
    compartment = _compartment_doses(comp, activity_gbq, opts)
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
    dose_flags.extend(_no_safe_activity_flag(record, limits, dose_flags))
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
    case: Case, comp: CompartmentInputs, limits: DoseLimits, opts: PlannerOptions
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
        a_nl = rx.mird_activity_gbq(nl_limit, comp.perfused_mass_kg, lsf, k)  # single compartment: perfused mean
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


@timed("voxel dosimetry", logging.INFO)
def _voxel_workflow(
    case: Case, img: ImageSet, activity_gbq: float, opts: PlannerOptions
) -> tuple[VoxelData, CompartmentDoses, list[StructureDose], dict[str, DVHRecord], dict[str, Any], list[str]]:
    grid: Grid = img.grid
    maa = img.activity
    method = case.dosimetry.dose_method  # type: ignore[union-attr]
    notes: list[str] = []
    if activity_gbq > 0:
        # patient-relative calibration (EANM dosimetry SOP, Chiesa 2021): liver + lungs hold the activity; counts
        # elsewhere (scatter, free pertechnetate, misregistration) are not dosed
        calibrated = calibrate_patient_relative(
            maa, img.masks["liver"], img.masks["lungs"], activity_gbq * 1000.0, grid=grid, zero_outside=True
        )
        activity_mbq = calibrated.activity_mbq
        outside = calibrated.fraction_outside_liver_lung
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
