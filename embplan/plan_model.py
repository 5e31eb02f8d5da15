"""The Plan and its parts: immutable results of :func:`embplan.planner.plan`.

Kept apart from the orchestration in ``planner.py`` so that io and report can be read against a small, stable
data model. Everything JSON-like is a frozen pydantic model; the voxel arrays travel in :class:`VoxelData`
(a frozen dataclass compared bitwise), always with their :class:`~embplan.grid.Grid`.
"""

from __future__ import annotations

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
]

_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


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


class CompartmentDoses(BaseModel):
    """Mean absorbed doses per compartment (Gy) from a compartment model or from the voxel map."""

    model_config = _FROZEN
    source: Literal["partition", "mird", "voxel"]
    tumor_gy: float | None
    normal_liver_gy: float
    perfused_gy: float
    perfused_normal_liver_gy: float | None = None
    lung_gy: float


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


class StructureDose(BaseModel):
    model_config = _FROZEN
    structure: str
    volume_ml: float
    mass_kg: float
    mean_gy: float
    bed_gy: float | None = None


class DosimetryResult(BaseModel):
    """TARE dosimetry: the contract's fields (mean absorbed dose per compartment, Gy) and how they were reached.

    ``tumor_dose_gy`` etc. come from the voxel map when images were given (``source == "voxel"``), else from the
    compartment model; both sets sit side by side in ``compartment`` and ``voxel``.
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
