"""The Plan and its parts: immutable results of :func:`embplan.planner.plan`.

Kept apart from the orchestration in ``planner.py`` so that io and report can be read against a small, stable
data model. Everything JSON-like is a frozen pydantic model; the voxel arrays travel in :class:`VoxelData`
(a frozen dataclass compared bitwise), always with their :class:`~embplan.grid.Grid`.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .board.model import BoardReview
from .case import Case
from .grid import Grid
from .risk import DoseLimits, Flag, Severity
from .thresholds import Thresholds

__all__ = [
    "Plan",
    "ProcedureSummary",
    "SequenceSummary",
    "PrescriptionRecord",
    "CompartmentDoses",
    "DeliveryRecord",
    "StructureDose",
    "DVHRecord",
    "DosimetryResult",
    "Provenance",
    "VoxelData",
    "LesionDose",
    "LungShuntRecord",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def jsonable(obj: Any) -> Any:
    """Plain JSON types for the records a plan (or a verification) stores: mappings -> dicts with string keys,
    tuples -> lists, numpy arrays and scalars -> Python values, non-finite floats -> None, dates -> ISO text,
    anything else -> its text."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, _dt.datetime | _dt.date):
        return obj.isoformat()
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    return str(obj)


class ProcedureSummary(BaseModel):
    """What will be done: the procedure, its territory and its parameters against the standard protocol."""

    model_config = _FROZEN
    kind: Literal["TAE", "TACE", "DEB_TACE", "TARE"]
    territory: str
    device: Literal["resin", "glass"] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    standard_protocol: str
    deviations: list[str] = Field(default_factory=list)


class SequenceSummary(BaseModel):
    """Where the patient stands on the TAE -> TACE -> TARE ladder and the next step it suggests."""

    model_config = _FROZEN
    follows_ladder: bool
    skipped: list[str] = Field(default_factory=list)
    justifications: list[str] = Field(default_factory=list)
    suggested_next: str
    explanation: str


class PrescriptionRecord(BaseModel):
    """The activity prescription: the model, every input it used, and why the activity is what it is."""

    model_config = _FROZEN
    method: Literal["partition", "mird", "bsa", "fixed"]
    activity_gbq: float = Field(ge=0)
    activity_for_target_gbq: float | None = None
    max_safe_activity_gbq: float | None = None
    binding_constraint: str | None = None
    conflict: bool = False
    lung_shunt_reduction_fraction: float = 0.0
    k_gy_kg_per_gbq: float
    inputs: dict[str, Any] = Field(default_factory=dict)
    explanation: str = ""


class DeliveryRecord(BaseModel):
    """From the prescribed activity (delivered into the patient at administration) to what to order or draw:
    the residual in vial and lines, decay from calibration, and for glass the standard vial and day."""

    model_config = _FROZEN
    delivered_activity_gbq: float = Field(ge=0)
    residual_fraction: float = Field(ge=0, lt=1)
    vial_activity_at_administration_gbq: float = Field(ge=0)
    calibration_datetime: str | None = None
    administration_datetime: str | None = None
    hours_after_calibration: float | None = None
    activity_at_calibration_gbq: float | None = None
    glass_vial_gbq: float | None = None
    glass_vial_hours_after_calibration: float | None = None
    glass_vial_delivered_gbq: float | None = None
    glass_vial_deviation_fraction: float | None = None
    explanation: str = ""
    # --- issue 13 (one meaning per dose number): what the doses assume and the tolerance that flags a deviation
    prescribed_activity_gbq: float | None = None
    tolerance_fraction: float | None = None
    tolerance_source: str | None = None
    within_tolerance: bool | None = None
    deviation_fraction: float | None = None
    vial_rule: str | None = None


class CompartmentDoses(BaseModel):
    """Mean absorbed doses per compartment (Gy) from a compartment model or from the voxel map."""

    model_config = _FROZEN
    source: Literal["partition", "mird", "voxel"]
    tumor_gy: float | None
    normal_liver_gy: float
    perfused_gy: float
    perfused_normal_liver_gy: float | None = None
    lung_gy: float
    # --- issue 13: the activity these doses assume and their definition in words
    activity_gbq: float | None = None
    definition: str = ""


class DVHRecord(BaseModel):
    """Cumulative DVH of one structure with its summary metrics."""

    model_config = _FROZEN
    structure: str
    volume_ml: float
    dose_gy: list[float]
    volume_fraction: list[float]
    mean_gy: float
    min_gy: float
    max_gy: float
    d_gy: dict[str, float] = Field(default_factory=dict)  # "D70" -> Gy
    v_percent: dict[str, float] = Field(default_factory=dict)  # "V100Gy" -> percent
    # --- issue 13: how the histogram weighs voxels ("mass": density x fraction of voxel inside x voxel volume;
    # "volume": the older volume weighting) and which dose map it reads
    weighting: Literal["mass", "volume"] = "volume"
    definition: str = ""


class StructureDose(BaseModel):
    model_config = _FROZEN
    structure: str
    volume_ml: float
    mass_kg: float
    mean_gy: float
    bed_gy: float | None = None


class LesionDose(BaseModel):
    """One tumour's dose with what limits it (issue 13): its size on the dose grid, its mean dose on the voxel map
    and by the compartment definition, and a partial-volume warning below the size threshold."""

    model_config = _FROZEN
    name: str
    volume_ml: float = Field(ge=0, description="contoured volume (sum of voxel fractions x voxel volume), mL")
    voxel_count: int = Field(ge=0, description="voxels with any part inside the lesion")
    mass_kg: float = Field(ge=0, description="nominal density x volume, kg")
    equivalent_diameter_mm: float = Field(ge=0)
    perfused_fraction: float = Field(ge=0, le=1, description="fraction of the lesion's volume in the perfused territory")
    mean_gy: float = Field(ge=0, description="mass-weighted mean of the voxel map (method in dose_method)")
    local_deposition_gy: float = Field(ge=0, description="mean dose by local deposition: K A_lesion / M_lesion")
    dose_method: str
    partial_volume_warning: bool
    recovery_coefficient: float | None = None
    recovery_corrected_gy: float | None = None
    note: str = ""


class LungShuntRecord(BaseModel):
    """Which lung shunt fraction the dose and the flags use, where it came from, and the other value (issue 13)."""

    model_config = _FROZEN
    used_fraction: float | None
    source: Literal["case", "images", "none"]
    case_fraction: float | None = None
    images_fraction: float | None = None
    discrepancy_threshold_fraction: float
    differs: bool = False


class DosimetryResult(BaseModel):
    """TARE dosimetry: the contract's fields (mean absorbed dose per compartment, Gy) and how they were reached.

    ``tumor_dose_gy``, ``normal_liver_dose_gy``, ``lung_dose_gy`` and ``perfused_dose_gy`` are the compartment
    model's mean doses (partition or MIRD, local deposition, masses = nominal density x contoured volume) at the
    delivered activity ``activity_gbq``, with or without images: the definition of the prescription and of the
    thresholds, which the dose rules check. With images, the voxel map's mass-weighted means sit beside them in
    ``voxel`` (method in ``method``); ``definitions`` states each number's meaning. Plans written before issue 13
    (``dose_activity == "prescribed"``, no ``definitions``) took the voxel values when images were given.
    """

    model_config = _FROZEN
    activity_gbq: float
    tumor_dose_gy: float | None
    normal_liver_dose_gy: float
    lung_dose_gy: float
    perfused_dose_gy: float
    source: Literal["compartment", "voxel"]
    method: str  # "partition"/"mird"/"bsa" for compartment; dose method ("vsv_density", ...) for voxel
    prescription: PrescriptionRecord
    delivery: DeliveryRecord | None = None
    limits: DoseLimits
    compartment: CompartmentDoses
    voxel: CompartmentDoses | None = None
    structures: list[StructureDose] = Field(default_factory=list)
    dvh: dict[str, DVHRecord] = Field(default_factory=dict)
    lung_shunt_fraction: float
    tumor_to_normal_ratio: float | None = None
    volumes_ml: dict[str, float] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    # --- issue 13 (one meaning per dose number). The contract fields above (tumor_dose_gy, normal_liver_dose_gy,
    # lung_dose_gy, perfused_dose_gy) carry ``definitions[name]``: the compartment model at the *delivered*
    # activity (``activity_gbq``); the voxel map's values sit beside them in ``voxel``.
    prescribed_activity_gbq: float | None = None
    dose_activity: Literal["delivered", "prescribed"] = "prescribed"
    definitions: dict[str, str] = Field(default_factory=dict)
    compartment_at_prescribed: CompartmentDoses | None = None
    lesions: list[LesionDose] = Field(default_factory=list)
    lung_shunt: LungShuntRecord | None = None
    dose_method_reason: str | None = None
    conventions: dict[str, Any] = Field(default_factory=dict)


class Provenance(BaseModel):
    model_config = _FROZEN
    embplan_version: str
    python_version: str
    dependency_versions: dict[str, str]
    created_utc: str
    kernel: dict[str, Any] | None = None
    rules_run: list[str] = Field(default_factory=list)


@dataclass(frozen=True, eq=False)
class VoxelData:
    """The voxel arrays of a plan, all on ``grid`` ((z, y, x) order).

    ``arrays`` maps a name to an array; ``units`` maps the same name to its unit string. Conventional names:
    ``ct_hu`` (HU), ``density_g_cm3``, ``activity_mbq`` (administered activity per voxel, MBq),
    ``tia_mbq_s`` (cumulated activity, MBq s), ``dose_<method>_gy`` (Gy), ``mask_<structure>`` (bool).
    Equality is bitwise (dtype, shape and values).
    """

    grid: Grid
    arrays: dict[str, np.ndarray]
    units: dict[str, str]
    attributes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, arr in self.arrays.items():
            if tuple(arr.shape) != self.grid.shape:
                raise ValueError(f"VoxelData.{name}: shape {arr.shape} does not match grid {self.grid.shape}")
            if name not in self.units:
                raise ValueError(f"VoxelData.{name}: no unit given")
            arr.flags.writeable = False

    def masks(self) -> dict[str, np.ndarray]:
        return {k[len("mask_"):]: v for k, v in self.arrays.items() if k.startswith("mask_")}

    def dose_maps(self) -> dict[str, np.ndarray]:
        return {k[len("dose_"):-len("_gy")]: v for k, v in self.arrays.items() if k.startswith("dose_")}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VoxelData):
            return NotImplemented
        if self.grid != other.grid or self.units != other.units or self.attributes != other.attributes:
            return False
        if self.arrays.keys() != other.arrays.keys():
            return False
        return all(
            a.dtype == other.arrays[k].dtype and np.array_equal(a, other.arrays[k]) for k, a in self.arrays.items()
        )

    # equality compares the arrays' contents, so not hashable (typeshed declares object.__hash__ a method: the
    # documented idiom needs this ignore)
    __hash__ = None  # type: ignore[assignment]


class Plan(BaseModel):
    """An immutable, reproducible plan: the case as given, what to do, the dose, the flags, and provenance."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, arbitrary_types_allowed=True)

    format_version: int = 1
    case: Case
    case_source: dict[str, Any]
    procedure: ProcedureSummary
    sequence: SequenceSummary
    flags: list[Flag]
    thresholds: Thresholds
    dosimetry: DosimetryResult | None = None
    board: BoardReview | None = None
    provenance: Provenance
    voxel: VoxelData | None = Field(default=None, exclude=True)

    @property
    def highest_severity(self) -> Severity | None:
        return max((f.severity for f in self.flags), default=None)

    def flags_at_least(self, severity: Severity) -> list[Flag]:
        return [f for f in self.flags if f.severity >= severity]
