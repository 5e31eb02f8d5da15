"""The case: patient + requested procedure + dosimetry inputs (schema version 1), and :func:`load_case`.

A case is what a user writes (see ../shared/examples): every model is strict (``extra="forbid"``, no NaN or
infinity, numbers must be JSON numbers, booleans JSON booleans), every number carries its physical range, every
categorical field is an enumeration, dates are ISO ``YYYY-MM-DD``. A bad case fails in :func:`load_case` with a
:class:`~embplan.errors.CaseError` naming each field at fault (``patient.labs.bilirubin_mg_dl: must be >= 0, got
-1``), before anything is computed.

The ranges here are *physical* (what a human body, a lab analyser or a vial can produce), not clinical limits: the
clinical limits live in :class:`embplan.thresholds.Thresholds` and are flagged by the risk rules.

Cross-field checks (each names the field at fault): perfused volume <= liver volume; perfused tumour <= tumour <=
liver; perfused tumour <= perfused volume; the territory's lobe (lobar) or Couinaud segments (segmental); TARE needs
dosimetry, and without images the compartment inputs its prescription method needs (partition: lung shunt, lung
mass, liver, tumour, perfused and perfused-tumour volumes and T/N; mird: lung shunt, perfused and liver volumes;
bsa: lung shunt, liver and tumour volumes); with DICOM images, the ROIs of the procedure's territory (lobe or
segments) unless the perfused territory is given as ROIs; prior treatments not after the procedure date; threshold
overrides (``thresholds.<name>``) valid for :class:`~embplan.thresholds.Thresholds`.

Images (``dosimetry.images``) come from exactly one source: the synthetic ``phantom`` or a ``dicom`` set
(:class:`DicomImages`: CT, SPECT or PET, RTSTRUCT or SEG, and the ROI roles; see docs/dicom.md). Relative DICOM paths
are relative to the case file's folder (:meth:`Case.resolve_path`).
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .anthropometry import body_surface_area_m2
from .errors import CaseError, EmbplanError
from .plausibility import DEFAULT_BOUNDS, PlausibilityBounds, bound_problem, control_character_problem
from .protocols import DEBTACEProcedure, Procedure, TACEProcedure, procedure_deviations
from .protocols.base import (
    MISSING,
    Int,
    IsoDate,
    Issue,
    ProtocolDeviation,
    StrictModel,
    case_error,
    did_you_mean,
    make_problem,
    raise_issues,
    readable_reason,
    validation_problems,
)
from .protocols.history import (
    EMBOLIZATION_KINDS,
    PriorTreatment,
    cumulative_doxorubicin_mg,
)
from .protocols.sequencing import SequenceAssessment, evaluate_sequence, territory_records
from .protocols.tare import TAREProcedure

if TYPE_CHECKING:  # pragma: no cover
    from .thresholds import Thresholds

__all__ = [
    "Case",
    "Patient",
    "Labs",
    "Disease",
    "Lesion",
    "LiverStatus",
    "Biliary",
    "DosimetryInputs",
    "ImageInputs",
    "PhantomSpec",
    "DicomImages",
    "StructureRoles",
    "load_case",
    "CASE_FILE_MAX_BYTES",
    "CASE_NUMBER_MAX_DIGITS",
    "CASE_MAX_NESTING",
    "du_bois_bsa_m2",
    "SCHEMA_VERSION",
    "SUPPORTED_SCHEMA_VERSIONS",
]

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS: tuple[int, ...] = (1,)

def du_bois_bsa_m2(weight_kg: float, height_cm: float) -> float:
    """Body surface area (m2) by Du Bois & Du Bois (Arch Intern Med 1916); see :mod:`embplan.anthropometry`."""
    try:
        return body_surface_area_m2(weight_kg, height_cm, "dubois")
    except EmbplanError as exc:
        raise CaseError(f"du_bois_bsa_m2: {exc}") from None


# ----------------------------------------------------------------------------------------------------------------
# patient


class Labs(StrictModel):
    """Laboratory values (physical ranges of what an analyser reports)."""

    bilirubin_mg_dl: float = Field(ge=0, le=50)
    albumin_g_dl: float = Field(ge=0, le=10)
    inr: float = Field(ge=0.5, le=15)
    platelets_10e9_per_l: float = Field(ge=0, le=2000)
    wbc_10e9_per_l: float = Field(ge=0, le=500)
    egfr_ml_min: float = Field(ge=0, le=250)


PrimarySite = Literal["small_intestine", "pancreas", "lung", "stomach", "colon", "rectum", "appendix", "unknown",
                      "other"]
FunctionalSyndrome = Literal["none", "carcinoid", "insulinoma", "gastrinoma", "glucagonoma", "vipoma", "other"]


def _segment_key(value: Any) -> Any:
    """JSON object keys are strings: "1".."8" name Couinaud segments 1..8."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return value


# ---- tumour board fields (issue 11): lesions, extrahepatic sites, symptoms, primary resection date ----------------
LesionLocation = Literal["subcapsular", "near_hilum", "near_large_vessel", "dome", "other"]
ExtrahepaticSite = Literal["bone", "lung", "lymph_nodes", "peritoneum", "primary_site", "other"]


class Lesion(StrictModel):
    """One liver lesion for the tumour board: where it is (Couinaud segments), how large, where it lies (the
    location decides ablation risk: subcapsular, near the hilum or a large vessel, dome)."""

    id: str = Field(min_length=1, max_length=64, pattern=r"\S")
    segments: list[Annotated[Int, Field(ge=1, le=8)]] = Field(min_length=1, max_length=8)
    longest_diameter_mm: float = Field(gt=0, le=400)
    volume_ml: float | None = Field(default=None, gt=0, le=10000)
    location: LesionLocation | None = None

    @field_validator("segments")
    @classmethod
    def _segments_unique(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("each segment at most once")
        return value


class Disease(StrictModel):
    """The NET: primary, grade (WHO), Ki-67, syndrome, liver involvement."""

    primary_site: PrimarySite
    grade: Literal["G1", "G2", "G3"]
    ki67_percent: float = Field(ge=0, le=100)
    differentiation: Literal["well", "poor"]
    functional_syndrome: FunctionalSyndrome
    carcinoid_heart_disease: bool
    primary_resected: bool
    primary_portal_drainage: bool | None = None  # primary drained by the portal system (Milan-NET); None: unknown
    liver_tumor_burden_percent: float = Field(ge=0, le=100)
    liver_distribution: Literal["unilobar_right", "unilobar_left", "bilobar"]
    extrahepatic_disease: bool
    main_portal_vein_thrombosis: bool
    stable_disease_months: float | None = Field(default=None, ge=0, le=1200)
    # ---- tumour board (issue 11); all optional: schema-1 files load unchanged ----
    lesions: list[Lesion] | None = Field(default=None, max_length=200)
    extrahepatic_sites: list[ExtrahepaticSite] | None = Field(default=None, max_length=6)
    extrahepatic_resectable: bool | None = None  # all extrahepatic disease resectable (None: not assessed)
    extrahepatic_progression: bool | None = None  # extrahepatic disease progressing (None: not assessed)
    refractory_hormonal_symptoms: bool | None = None  # hormonal symptoms refractory to SSA
    primary_resection_date: IsoDate | None = None
    resectable_disease_percent: float | None = Field(default=None, ge=0, le=100)  # share removable by surgery

    @model_validator(mode="after")
    def _board_fields_consistent(self) -> Disease:
        issues: list[Issue] = []
        if self.extrahepatic_sites and not self.extrahepatic_disease:
            issues.append(Issue("extrahepatic_sites", "extrahepatic_disease is false: no extrahepatic site may be "
                                "listed", self.extrahepatic_sites))
        if self.extrahepatic_sites is not None and len(set(self.extrahepatic_sites)) != len(self.extrahepatic_sites):
            issues.append(Issue("extrahepatic_sites", "each site at most once", self.extrahepatic_sites))
        for name in ("extrahepatic_resectable", "extrahepatic_progression"):
            if getattr(self, name) is not None and not self.extrahepatic_disease:
                issues.append(Issue(name, "only with extrahepatic_disease true", getattr(self, name)))
        if self.primary_resection_date is not None and not self.primary_resected:
            issues.append(Issue("primary_resection_date", "primary_resected is false",
                                self.primary_resection_date.isoformat()))
        if self.lesions:
            seen: set[str] = set()
            for i, lesion in enumerate(self.lesions):
                if lesion.id in seen:
                    issues.append(Issue(f"lesions.{i}.id", "lesion id listed twice", lesion.id))
                seen.add(lesion.id)
        if issues:
            raise_issues(issues)
        return self


class LiverStatus(StrictModel):
    cirrhosis: bool
    r0_resection_feasible: bool
    future_liver_remnant_percent: float | None = Field(default=None, ge=0, le=100)
    # ---- tumour board (issue 11); optional ----
    ascites: bool | None = None
    segment_volumes_ml: dict[Annotated[int, BeforeValidator(_segment_key), Field(ge=1, le=8)],
                             Annotated[float, Field(gt=0, le=5000)]] | None = None


class Biliary(StrictModel):
    biliary_enteric_anastomosis: bool
    sphincter_of_oddi_intact: bool
    biliary_stent: bool


class Patient(StrictModel):
    """The patient: demographics, performance status, labs, disease, liver, biliary tree, prior treatments."""

    id: str = Field(min_length=1, max_length=128, pattern=r"\S")
    age_years: Int = Field(ge=0, le=120)
    sex: Literal["female", "male", "other", "unknown"]
    # physical bounds wide enough for unit slips to reach the plausibility check and its hint (plausibility.py)
    weight_kg: float = Field(gt=0, le=1e6)
    height_cm: float = Field(gt=0, le=1e5)
    ecog: Int = Field(ge=0, le=4)
    labs: Labs
    disease: Disease
    liver: LiverStatus
    biliary: Biliary
    prior_treatments: list[PriorTreatment] = Field(default_factory=list, max_length=500)

    @property
    def body_surface_area_m2(self) -> float:
        """Body surface area by Du Bois (1916), m2."""
        return du_bois_bsa_m2(self.weight_kg, self.height_cm)

    def prior_of_kind(self, *kinds: str) -> list[PriorTreatment]:
        """The prior treatments of the given kinds, in date order."""
        return sorted((r for r in self.prior_treatments if r.kind in kinds), key=lambda r: r.date)

    def prior_tare(self) -> list[PriorTreatment]:
        """Prior radioembolizations, in date order."""
        return self.prior_of_kind("TARE")

    def cumulative_doxorubicin_mg(self) -> float:
        """Doxorubicin given by prior TACE and DEB-TACE (mg); records without a dose count 0 (see
        :attr:`doxorubicin_unrecorded`)."""
        return cumulative_doxorubicin_mg(self.prior_treatments)[0]

    @property
    def doxorubicin_unrecorded(self) -> int:
        """Number of prior TACE/DEB-TACE records without ``doxorubicin_mg`` (the cumulative dose is then a lower
        bound)."""
        return cumulative_doxorubicin_mg(self.prior_treatments)[1]


# ----------------------------------------------------------------------------------------------------------------
# dosimetry inputs


class PhantomSpec(StrictModel):
    """A synthetic NET liver phantom (embplan.imaging.phantom) as the image source, with optional synthetic MAA
    parameters (``None``: the phantom's defaults)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    seed: Int = Field(default=7, ge=0, le=2**31 - 1)
    voxel_mm: float = Field(default=4.42, ge=1, le=10)
    tumor_to_normal_ratio: float | None = Field(default=None, gt=0, le=100)
    lung_shunt_fraction: float | None = Field(default=None, ge=0, lt=1)


#: A DICOM ROI Name (3006,0026) or SEG Segment Label (0062,0005): Long String, at most 64 characters.
RoiName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"\S")]
#: A file or folder path in a case: relative paths are relative to the case file's folder (see Case.resolve_path).
ImagePath = Annotated[str, Field(min_length=1, max_length=4096, pattern=r"\S")]
#: A DICOM UID (PS3.5 9.1: digits and dots, components without leading zeros, at most 64 characters).
DicomUID = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")]


def _segment_number(value: Any) -> Any:
    """JSON object keys are strings: "1".."8" name Couinaud segments 1..8."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return value


SegmentNumber = Annotated[int, BeforeValidator(_segment_number), Field(ge=1, le=8)]


class StructureRoles(StrictModel):
    """Which ROIs (RTSTRUCT ROI names or SEG segment labels) play which role in the dosimetry.

    - ``liver``: ROIs whose union is the liver (tumours included: the planner adds the tumour ROIs to the liver, so
      an outline that leaves the lesions out gives the same liver);
    - ``tumors``: one ROI per tumour (may be empty); each gets its own mean dose and DVH;
    - ``lungs``: ROIs whose union is the lungs;
    - ``perfused``: ROIs whose union is the perfused territory (from the MAA or the cone-beam CT); without it the
      territory of the procedure is built from ``right_lobe`` / ``left_lobe`` (lobar) or ``segments``
      (segmental: Couinaud segment number -> ROIs), or is the whole liver.
    """

    liver: list[RoiName] = Field(min_length=1, max_length=64)
    tumors: list[RoiName] = Field(default_factory=list, max_length=500)
    lungs: list[RoiName] = Field(min_length=1, max_length=64)
    perfused: list[RoiName] | None = Field(default=None, min_length=1, max_length=64)
    right_lobe: list[RoiName] | None = Field(default=None, min_length=1, max_length=64)
    left_lobe: list[RoiName] | None = Field(default=None, min_length=1, max_length=64)
    segments: dict[SegmentNumber, Annotated[list[RoiName], Field(min_length=1, max_length=64)]] | None = None

    @model_validator(mode="after")
    def _roles_consistent(self) -> StructureRoles:
        issues: list[Issue] = []
        lists: dict[str, list[str]] = {
            "liver": self.liver, "tumors": self.tumors, "lungs": self.lungs, "perfused": self.perfused or [],
            "right_lobe": self.right_lobe or [], "left_lobe": self.left_lobe or [],
        }
        for n, names in (self.segments or {}).items():
            lists[f"segments.{n}"] = names
        for role, names in lists.items():
            seen: set[str] = set()
            for i, name in enumerate(names):
                if name in seen:
                    issues.append(Issue(f"{role}.{i}", "ROI listed twice", name))
                seen.add(name)
        # a ROI cannot be lung and liver tissue at once, nor a tumour and the whole liver
        exclusive = [("lungs", "liver"), ("lungs", "tumors"), ("lungs", "perfused"), ("tumors", "liver")]
        for role, other in exclusive:
            taken = set(lists[other])
            for i, name in enumerate(lists[role]):
                if name in taken:
                    issues.append(Issue(f"{role}.{i}", f"ROI also mapped to {other}: one ROI cannot play both roles",
                                        name))
        if issues:
            raise_issues(issues)
        return self

    def roi_names(self) -> list[str]:
        """Every ROI named, each once, in role order (liver, tumours, lungs, perfused, lobes, segments)."""
        out: list[str] = []
        for names in (self.liver, self.tumors, self.lungs, self.perfused or [], self.right_lobe or [],
                      self.left_lobe or [], *(self.segments or {}).values()):
            out.extend(n for n in names if n not in out)
        return out


class DicomImages(StrictModel):
    """A DICOM image set: a CT series, the pre-treatment activity distribution (a Tc-99m MAA SPECT, i.e. one
    multi-frame NM file or a folder holding one; or a Y-90 PET series folder, Bq/mL) and the structures (an RT
    Structure Set or a DICOM SEG file), all in one frame of reference, with the ROI roles.

    Paths are relative to the folder of the case file (or, for a case given as a mapping, to the current folder);
    they are not opened when the case is loaded, only when it is planned. ``grid`` is the dosimetry grid: the
    activity image's (default) or the CT's.
    """

    ct: ImagePath
    spect: ImagePath | None = None
    pet: ImagePath | None = None
    rtstruct: ImagePath | None = None
    seg: ImagePath | None = None
    structures: StructureRoles
    grid: Literal["activity", "ct"] = "activity"
    # --- issue 17: which series of a folder that holds several (a scout, a second reconstruction); optional: when
    # absent, embplan.imaging.series picks the one axial, non-localizer volume or lists the candidates.
    ct_series_instance_uid: DicomUID | None = None
    spect_series_instance_uid: DicomUID | None = None
    pet_series_instance_uid: DicomUID | None = None
    # ---- patient identity of the images (issue 12): every image must carry this Patient ID (0010,0020); default
    # patient.id. Give it when the case id differs on purpose from the id in the DICOM files (a pseudonym).
    dicom_patient_id: str | None = Field(default=None, max_length=64)
    # frames of reference (issue 14): an ITK transform file (fixed = the SPECT/PET frame, moving = the CT frame)
    # aligning an activity image in another frame of reference than the CT; or ``register_activity_to_ct: true``
    # to register such a pair rigidly. Without either, images in different frames are refused (issue 12: the
    # frames must agree unless the case says otherwise explicitly).
    transform: ImagePath | None = None
    register_activity_to_ct: bool = False

    @model_validator(mode="after")
    def _one_of_each(self) -> DicomImages:
        issues: list[Issue] = []
        if self.spect_series_instance_uid is not None and self.spect is None:
            issues.append(Issue("spect_series_instance_uid", "given without spect", self.spect_series_instance_uid))
        if self.pet_series_instance_uid is not None and self.pet is None:
            issues.append(Issue("pet_series_instance_uid", "given without pet", self.pet_series_instance_uid))
        if self.spect is None and self.pet is None:
            issues.append(Issue("spect", "required (or pet): the pre-treatment activity distribution"))
        elif self.spect is not None and self.pet is not None:
            issues.append(Issue("pet", "give spect or pet, not both", self.pet))
        if self.rtstruct is None and self.seg is None:
            issues.append(Issue("rtstruct", "required (or seg): the structures"))
        elif self.rtstruct is not None and self.seg is not None:
            issues.append(Issue("seg", "give rtstruct or seg, not both", self.seg))
        if issues:
            raise_issues(issues)
        return self

    @property
    def activity_source(self) -> Literal["spect", "pet"]:
        return "spect" if self.spect is not None else "pet"

    @property
    def structure_source(self) -> Literal["rtstruct", "seg"]:
        return "rtstruct" if self.rtstruct is not None else "seg"


class ImageInputs(StrictModel):
    """Where the images come from: exactly one of ``phantom`` (the synthetic phantom) or ``dicom`` (a DICOM CT,
    SPECT or PET, and RTSTRUCT or SEG set)."""

    phantom: PhantomSpec | None = None
    dicom: DicomImages | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ImageInputs:
        if self.phantom is None and self.dicom is None:
            raise_issues([Issue("phantom", "required (or dicom): images need exactly one source")])
        if self.phantom is not None and self.dicom is not None:
            raise_issues([Issue("dicom", "give phantom or dicom, not both")])
        return self


_VOLUME = Field(default=None, gt=0, le=10000)


# --- issue 13 (dose meaning): the site's recovery coefficients of its activity images, per modality
class RecoveryCoefficientInput(StrictModel):
    """Recovery coefficients measured by the site for one modality (e.g. NEMA IEC spheres): imaged / true mean
    activity concentration against object volume; the plan's lesion table divides the voxel mean by them."""

    modality: Literal["NM", "PT", "phantom"]
    volume_ml: list[float] = Field(min_length=1, max_length=50)
    coefficient: list[float] = Field(min_length=1, max_length=50)
    source: str = Field(default="", max_length=500)

    @model_validator(mode="after")
    def _pairs(self) -> RecoveryCoefficientInput:
        if len(self.volume_ml) != len(self.coefficient):
            raise ValueError("volume_ml and coefficient must have the same length")
        if any(not (0 < v <= 10000) for v in self.volume_ml) or any(b <= a for a, b in
                                                                     zip(self.volume_ml, self.volume_ml[1:], strict=False)):
            raise ValueError("volume_ml must be > 0, <= 10000 and strictly increasing")
        if any(not (0 < c <= 1.5) for c in self.coefficient):
            raise ValueError("coefficient must be within (0, 1.5]")
        return self


class DosimetryInputs(StrictModel):
    """TARE dosimetry inputs: compartment values (from MAA SPECT/CT and CT volumetry) and/or images."""

    lung_shunt_fraction: float | None = Field(default=None, ge=0, lt=1)
    lung_mass_kg: float | None = Field(default=None, gt=0, le=1e4)  # plausible range: plausibility.py
    liver_volume_ml: float | None = _VOLUME
    tumor_volume_ml: float | None = Field(default=None, ge=0, le=10000)
    perfused_volume_ml: float | None = _VOLUME
    perfused_tumor_volume_ml: float | None = Field(default=None, ge=0, le=10000)
    tumor_to_normal_ratio: float | None = Field(default=None, gt=0, le=100)
    images: ImageInputs | None = None
    # issue 13: None lets the planner choose per modality (LDM on SPECT/PET, EANM dosimetry SOP); the plan says which
    dose_method: Literal["ldm", "vsv", "vsv_density"] | None = None
    recovery_coefficients: list[RecoveryCoefficientInput] | None = Field(default=None, max_length=3)

    @model_validator(mode="after")
    def _volumes_nested(self) -> DosimetryInputs:
        # (smaller, larger): each compartment lies inside the other
        pairs = [
            ("perfused_volume_ml", "liver_volume_ml"),
            ("tumor_volume_ml", "liver_volume_ml"),
            ("perfused_tumor_volume_ml", "tumor_volume_ml"),
            ("perfused_tumor_volume_ml", "perfused_volume_ml"),
        ]
        issues = []
        for small, large in pairs:
            a, b = getattr(self, small), getattr(self, large)
            if a is not None and b is not None and a > b:
                issues.append(Issue(small, f"must be <= {large} ({b:g})", a))
        if issues:
            raise_issues(issues)
        return self


# What each prescription method needs when no images are given (the compartment model's inputs).
METHOD_NEEDS: dict[str, tuple[str, ...]] = {
    "partition": ("lung_shunt_fraction", "lung_mass_kg", "liver_volume_ml", "tumor_volume_ml", "perfused_volume_ml",
                  "perfused_tumor_volume_ml", "tumor_to_normal_ratio"),
    "mird": ("lung_shunt_fraction", "perfused_volume_ml", "liver_volume_ml"),
    "bsa": ("lung_shunt_fraction", "liver_volume_ml", "tumor_volume_ml"),
}


# ----------------------------------------------------------------------------------------------------------------
# the case


def _schema_version_problem(value: Any) -> str | None:
    """Why ``value`` is not a supported schema version (``True`` and ``1.0`` are not 1), or None."""
    supported = ", ".join(str(v) for v in SUPPORTED_SCHEMA_VERSIONS)
    if value is MISSING:
        return f"required (supported: {supported})"
    if type(value) is not int or value not in SUPPORTED_SCHEMA_VERSIONS:
        return f"unsupported schema version (supported: {supported})"
    return None


def _schema_version(value: Any) -> Any:
    problem = _schema_version_problem(value)
    if problem:
        raise ValueError(problem)
    return value


class Case(StrictModel):
    """A case (schema version 1): the patient, the requested procedure, the dosimetry inputs, and threshold
    overrides. Build it with :func:`load_case` (clear errors) or ``Case.model_validate``.

    The input as given is kept (:attr:`source_json`, :attr:`source`) for the plan record; it takes no part in
    equality or serialisation.
    """

    schema_version: Annotated[Literal[1], BeforeValidator(_schema_version)]
    patient: Patient
    procedure: Procedure
    dosimetry: DosimetryInputs | None = None
    thresholds: dict[str, float] = Field(default_factory=dict)

    _source_json: str | None = PrivateAttr(default=None)
    _base_dir: str | None = PrivateAttr(default=None)  # the case file's folder (load_case from a path)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_source(cls, data: Any, handler: Any, info: ValidationInfo) -> Case:
        # new input (a mapping, not a Case instance nor a stored plan's case): no control characters, and today's
        # plausibility bounds; a stored plan's case loads as it was planned
        if isinstance(data, Mapping) and not _stored(info):
            issues = _text_issues(data)
            if not issues:
                issues = _plausibility_issues(data, (info.context or {}).get("plausibility", DEFAULT_BOUNDS))
            if issues:
                raise_issues(issues)
        case = handler(data)
        if isinstance(data, Mapping) and case._source_json is None:
            case._source_json = _canonical_json(data)
        return case

    @field_validator("thresholds")
    @classmethod
    def _thresholds_valid(cls, overrides: dict[str, float]) -> dict[str, float]:
        if overrides:
            issues = _threshold_issues(overrides)
            if issues:
                raise_issues(issues)
        return overrides

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> Case:
        issues: list[Issue] = []
        proc = self.procedure
        issues.extend(_board_issues(self))
        for i, rec in enumerate(self.patient.prior_treatments):
            if rec.date > proc.date:
                issues.append(Issue(f"patient.prior_treatments.{i}.date",
                                    f"a prior treatment must not be after the procedure date "
                                    f"({proc.date.isoformat()})", rec.date.isoformat()))
        if isinstance(proc, TAREProcedure):
            dos = self.dosimetry
            if dos is None:
                issues.append(Issue("dosimetry", "required for TARE (compartment inputs or images)"))
            elif dos.images is None:
                method = proc.prescription.method
                for name in METHOD_NEEDS[method]:
                    if getattr(dos, name) is None:
                        issues.append(Issue(f"dosimetry.{name}",
                                            f"required for the {method} method without images"))
                issues.extend(_compartment_issues(method, dos))
            elif dos.images.dicom is not None:
                issues.extend(_territory_role_issues(proc, dos.images.dicom.structures))
        if issues:
            raise_issues(issues)
        return self

    # ---- where relative paths in the case point ----------------------------------------------------------------
    @property
    def base_dir(self) -> Path:
        """The folder relative paths of the case (DICOM inputs) are resolved against: the case file's folder when
        the case was loaded from a file, else the current folder (at the time of the call)."""
        return Path(self._base_dir) if self._base_dir is not None else Path.cwd()

    def resolve_path(self, path: str | os.PathLike[str]) -> Path:
        """``path`` made absolute: kept when absolute, else taken relative to :attr:`base_dir`."""
        p = Path(path)
        return p if p.is_absolute() else self.base_dir / p

    def __eq__(self, other: object) -> bool:  # the source as given takes no part in equality
        if not isinstance(other, Case):
            return NotImplemented
        return self.__dict__ == other.__dict__

    # ---- the input as given ----------------------------------------------------------------------------------
    @property
    def source_json(self) -> str:
        """The case as given, as canonical JSON (sorted keys, compact); for a case built from a model object,
        its own JSON dump."""
        if self._source_json is not None:
            return self._source_json
        return _canonical_json(self.model_dump(mode="json", exclude_unset=True))

    @property
    def source(self) -> dict[str, Any]:
        """The case as given (a fresh dict)."""
        return json.loads(self.source_json)

    # ---- helpers for the planner and the risk rules ------------------------------------------------------------
    @property
    def is_embolization(self) -> bool:
        return self.procedure.kind in EMBOLIZATION_KINDS

    @property
    def is_tare(self) -> bool:
        return self.procedure.kind == "TARE"

    def effective_thresholds(self) -> Thresholds:
        """The thresholds in force: defaults with this case's overrides."""
        from .thresholds import Thresholds

        return Thresholds.with_overrides(self.thresholds)

    def cumulative_doxorubicin_mg(self, include_requested: bool = True) -> float:
        """Doxorubicin of the prior TACE/DEB-TACE records, plus (by default) the requested session's."""
        total = self.patient.cumulative_doxorubicin_mg()
        proc = self.procedure
        if include_requested and isinstance(proc, TACEProcedure | DEBTACEProcedure):  # the chemoembolization kinds
            total += proc.doxorubicin_mg
        return total

    def deviations(self, thresholds: Thresholds | None = None) -> list[ProtocolDeviation]:
        """Departures of the requested procedure from its standard protocol (with the protocol values of
        ``thresholds``, default :meth:`effective_thresholds`)."""
        return procedure_deviations(
            self.procedure, thresholds if thresholds is not None else self.effective_thresholds())

    def sequence(self, **options: Any) -> SequenceAssessment:
        """The ladder's view of the requested procedure (:func:`embplan.protocols.sequencing.evaluate_sequence`);
        ``options`` pass through (``refractory_responses``, ``intestinal_sites``)."""
        d = self.patient.disease
        b = self.patient.biliary
        return evaluate_sequence(
            self.procedure.kind,
            territory_records(self.patient.prior_treatments, self.procedure.territory.couinaud_segments),
            biliary_enteric_anastomosis=b.biliary_enteric_anastomosis,
            bile_duct_instrumentation=b.biliary_stent or not b.sphincter_of_oddi_intact,
            portal_vein_thrombosis=d.main_portal_vein_thrombosis,
            grade=d.grade, primary_site=d.primary_site, functional_syndrome=d.functional_syndrome,
            before=self.procedure.date, **options,
        )


def _stored(info: ValidationInfo) -> bool:
    """True when the case is validated as part of a stored plan (``context={"stored_plan": True}``, see
    :func:`embplan.io.hdf5.document_to_plan`): the plausibility and text checks of new input are not applied
    again, so a plan file stays loadable when the bounds change."""
    return bool((info.context or {}).get("stored_plan"))


#: Nesting deeper than this is not a case (a case is about 6 levels deep): refused before it can exhaust the stack.
CASE_MAX_NESTING = 64
#: At most this many text problems are reported (a file full of control characters would otherwise flood).
_TEXT_ISSUES_MAX = 20


def _text_issues(data: Mapping[str, Any]) -> list[Issue]:
    """Every string (value or key) of the raw case that holds a control, bidi or separator character, and any
    nesting deeper than :data:`CASE_MAX_NESTING`; iterative, so no input can exhaust the stack."""
    issues: list[Issue] = []
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(data, ())]
    while stack and len(issues) < _TEXT_ISSUES_MAX:
        node, loc = stack.pop()
        if len(loc) > CASE_MAX_NESTING:
            issues.append(Issue(".".join(map(str, loc[:CASE_MAX_NESTING])),
                                f"nested deeper than {CASE_MAX_NESTING} levels: not a case"))
            continue
        if isinstance(node, str):
            problem = control_character_problem(node)
            if problem:
                issues.append(Issue(".".join(map(str, loc)), problem))
        elif isinstance(node, Mapping):
            for key, value in node.items():
                if isinstance(key, str):
                    problem = control_character_problem(key)
                    if problem:
                        issues.append(Issue(".".join(map(str, loc)), f"a key {problem}"))
                        continue
                stack.append((value, (*loc, key)))
        elif isinstance(node, list | tuple):
            stack.extend((v, (*loc, i)) for i, v in enumerate(node))
    return sorted(issues, key=lambda i: i.path)


def _plausibility_issues(data: Mapping[str, Any], bounds: PlausibilityBounds) -> list[Issue]:
    """Values inside their physical range but absurd for an adult patient (see :mod:`embplan.plausibility`),
    read from the raw input before validation, so that a unit slip is reported with its hint even when it also
    breaks a cross-field check (a liver of 1.65 "mL" is smaller than its tumours)."""
    issues: list[Issue] = []

    def at(path: str) -> Any:
        node: Any = data
        for key in path.split("."):
            if not isinstance(node, Mapping) or key not in node:
                return None
            node = node[key]
        return node

    def check(path: str, bound: Any, zero_allowed: bool = False) -> None:
        value = at(path)
        if type(value) not in (int, float) or not math.isfinite(value) or value <= 0:
            return  # wrong types, NaN, zero and negatives: the model's own errors ("must be > 0")
        problem = bound_problem(float(value), bound, zero_allowed=zero_allowed)
        if problem:
            issues.append(Issue(path, problem, value))

    check("patient.weight_kg", bounds.weight_kg)
    check("patient.height_cm", bounds.height_cm)
    check("dosimetry.liver_volume_ml", bounds.liver_volume_ml)
    check("dosimetry.perfused_volume_ml", bounds.perfused_volume_ml)
    check("dosimetry.tumor_volume_ml", bounds.tumor_volume_ml, zero_allowed=True)
    check("dosimetry.perfused_tumor_volume_ml", bounds.perfused_tumor_volume_ml, zero_allowed=True)
    check("dosimetry.lung_mass_kg", bounds.lung_mass_kg)
    check("dosimetry.tumor_to_normal_ratio", bounds.tumor_to_normal_ratio)
    if at("procedure.drug.name") == "doxorubicin":
        check("procedure.drug.dose_mg", bounds.doxorubicin_session_mg)
    # prior records are not bounded per session: a history record may sum up a course of several sessions
    return issues


def _compartment_issues(method: str, dos: DosimetryInputs) -> list[Issue]:
    """The compartment inputs the planner divides by, checked here so that the error names the case field (and
    ``embplan validate`` finds it): the partition model divides by the perfused tumour mass and by the perfused
    non-tumour mass; BSA by the liver volume (checked > 0 by the model)."""
    if method != "partition":
        return []
    issues: list[Issue] = []
    ptumor, perfused = dos.perfused_tumor_volume_ml, dos.perfused_volume_ml
    if ptumor is not None and ptumor == 0:
        issues.append(Issue("dosimetry.perfused_tumor_volume_ml",
                            "must be > 0 for the partition method (the tumour compartment's mass divides the "
                            "tumour dose; without tumour in the territory, use the mird method)", ptumor))
    if ptumor is not None and perfused is not None and ptumor >= perfused:
        issues.append(Issue("dosimetry.perfused_tumor_volume_ml",
                            f"must be < perfused_volume_ml ({perfused:g}) for the partition method (the perfused "
                            "non-tumour liver's mass divides its dose)", ptumor))
    return issues


_DISTRIBUTION_LOBE = {"unilobar_right": "right", "unilobar_left": "left"}


def _board_issues(case: Case) -> list[Issue]:
    """Cross-checks of the tumour-board fields (issue 11): dates not after the procedure, lesions inside the stated
    liver distribution, segment volumes for every lesion segment when both are given."""
    from .protocols.territory import LOBE_SEGMENTS

    issues: list[Issue] = []
    d = case.patient.disease
    when = case.procedure.date
    if d.primary_resection_date is not None and d.primary_resection_date > when:
        issues.append(Issue("patient.disease.primary_resection_date",
                            f"must not be after the procedure date ({when.isoformat()})",
                            d.primary_resection_date.isoformat()))
    lobe = _DISTRIBUTION_LOBE.get(d.liver_distribution)
    if lobe is not None and d.lesions:
        other = "left" if lobe == "right" else "right"
        for i, lesion in enumerate(d.lesions):
            outside = sorted(set(lesion.segments) & LOBE_SEGMENTS[other])
            if outside:
                issues.append(Issue(f"patient.disease.lesions.{i}.segments",
                                    f"liver_distribution is {d.liver_distribution}, but the lesion lies in segment(s) "
                                    f"{', '.join(map(str, outside))} of the {other} lobe", lesion.segments))
    if d.liver_distribution == "bilobar" and d.lesions:
        lobes = {lb for lesion in d.lesions for lb, segs in LOBE_SEGMENTS.items() if set(lesion.segments) & segs}
        caudate = any(1 in lesion.segments for lesion in d.lesions)  # segment 1 is in neither lobe
        if lobes and len(lobes) == 1 and not caudate:
            issues.append(Issue("patient.disease.lesions",
                                f"liver_distribution is bilobar, but every lesion lies in the {lobes.pop()} lobe"))
    # an earlier session's dose map is summed on this plan's DICOM images (same frame of reference)
    dicom = getattr(getattr(case.dosimetry, "images", None), "dicom", None)
    for i, r in enumerate(case.patient.prior_treatments):
        if r.dose_file is not None and case.procedure.kind == "TARE" and dicom is None:
            issues.append(Issue(f"patient.prior_treatments.{i}.dose_file", "an earlier dose map is summed with this "
                                "TARE's dose on its DICOM images (same frame of reference): this case has none "
                                "(give dosimetry.images.dicom, or keep the record's normal_liver_dose_gy only)",
                                r.dose_file))
    vols = case.patient.liver.segment_volumes_ml
    if vols is not None and d.lesions:
        missing = sorted({s for lesion in d.lesions for s in lesion.segments} - set(vols))
        if missing:
            issues.append(Issue("patient.liver.segment_volumes_ml",
                                f"no volume for segment(s) {', '.join(map(str, missing))} that hold lesions"))
    return issues


def _territory_role_issues(proc: TAREProcedure, roles: StructureRoles) -> list[Issue]:
    """A DICOM case must say where the procedure's territory is: ``structures.perfused``, or the lobe / segment
    ROIs the territory needs."""
    if roles.perfused is not None:
        return []
    t = proc.territory
    base = "dosimetry.images.dicom.structures"
    unless = "unless structures.perfused names the perfused territory"
    if t.scope == "lobar" and getattr(roles, f"{t.lobe}_lobe") is None:
        return [Issue(f"{base}.{t.lobe}_lobe", f"required for the lobar ({t.lobe}) territory of the procedure {unless}")]
    if t.scope == "segmental":
        if roles.segments is None:
            return [Issue(f"{base}.segments", f"required for the segmental territory of the procedure {unless}")]
        missing = [s for s in (t.segments or ()) if s not in roles.segments]
        if missing:
            return [Issue(f"{base}.segments", f"no ROI for Couinaud segment(s) {', '.join(map(str, missing))} of "
                                              f"procedure.territory.segments ({unless})")]
    return []


def _threshold_issues(overrides: dict[str, float]) -> list[Issue]:
    """Every problem of the threshold overrides, as issues with paths relative to ``thresholds``."""
    from .thresholds import Thresholds

    fields = Thresholds.model_fields
    issues = []
    for key, value in overrides.items():
        if key not in fields:
            issues.append(Issue(key, "unknown threshold" + did_you_mean(key, fields), value))
    if issues:
        return issues
    try:
        Thresholds(**overrides)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            if err["loc"]:
                path = ".".join(str(p) for p in err["loc"])
                issues.append(Issue(path, readable_reason(err), err.get("input", MISSING)))
            else:  # the model's consistency check names the fields itself: "thresholds.x: must be <= ..."
                for part in readable_reason(err).split("; "):
                    name, sep, reason = part.partition(": ")
                    if sep and name.startswith("thresholds."):
                        issues.append(Issue(name.removeprefix("thresholds."), reason))
                    else:
                        issues.append(Issue("", part))
    return issues


# ----------------------------------------------------------------------------------------------------------------
# load_case


#: Largest case file read (bytes). A case is a few kB; 500 prior treatments and 500 tumour ROIs stay below 1 MB.
CASE_FILE_MAX_BYTES = 8 * 1024 * 1024
#: Longest integer literal accepted (digits): a case's integers are at most 10 digits; Python refuses to convert
#: more than 4300 digits (a ValueError outside embplan's control) and a long one costs quadratic time.
CASE_NUMBER_MAX_DIGITS = 100


def load_case(path_or_dict: str | os.PathLike[str] | Mapping[str, Any] | Case, *,
              max_bytes: int = CASE_FILE_MAX_BYTES, plausibility: PlausibilityBounds | None = None) -> Case:
    """Load and validate a case from a JSON file (path) or a mapping; a :class:`Case` passes through.

    Any problem raises one :class:`~embplan.errors.CaseError` whose message has one line per problem,
    ``<dotted.path>: <reason>, got <value>``; the structured list is its ``errors`` attribute (dicts with
    ``loc``, ``path``, ``msg`` and, when a value was given, ``input``). NaN/Infinity literals and duplicate keys
    in a JSON file are errors; an unknown ``schema_version`` is reported alone (a newer schema would raise
    nothing but noise).

    Relative paths in the case (``dosimetry.images.dicom``) are relative to the case file's folder, or to the current
    folder for a mapping (:meth:`Case.resolve_path`); the files they name are not opened here, only when the case is
    planned (a missing file is then an :class:`~embplan.errors.ImagingError` naming it).

    A file must be a regular file (not a FIFO, a device or a folder) of at most ``max_bytes``
    (:data:`CASE_FILE_MAX_BYTES`); numbers longer than :data:`CASE_NUMBER_MAX_DIGITS` digits, nesting deeper than
    :data:`CASE_MAX_NESTING` and control or bidirectional characters in any text are errors naming the field.
    Values that are physically possible but absurd for an adult (unit slips: a liver of 1.65 mL) are errors with a
    hint; the bounds are ``plausibility`` (default :data:`embplan.plausibility.DEFAULT_BOUNDS`).
    """
    if isinstance(path_or_dict, Case):
        return path_or_dict
    base_dir: str | None = None
    if isinstance(path_or_dict, Mapping):
        data: Any = dict(path_or_dict)
        where = "case"
    elif isinstance(path_or_dict, str | os.PathLike):
        path = Path(path_or_dict)
        where = f"case file {path}"
        data = _read_json(path, where, max_bytes)
        base_dir = os.path.dirname(os.path.abspath(path))
    else:
        raise CaseError(f"load_case: expected a path to a JSON case file or a mapping, got "
                        f"{type(path_or_dict).__name__}")

    version = data.get("schema_version", MISSING)
    problem = _schema_version_problem(version)
    if problem:  # reported alone: a case of another version would raise nothing but noise
        raise case_error(where, [make_problem(("schema_version",), problem, version)])
    try:
        context = {"plausibility": plausibility} if plausibility is not None else None
        case = Case.model_validate(data, context=context)
    except ValidationError as exc:
        raise case_error(where, validation_problems(exc, data, Case)) from None
    except RecursionError:  # a mapping nested beyond the interpreter's stack (a file is checked before)
        raise CaseError(f"{where}: nested too deeply to be a case") from None
    case._base_dir = base_dir  # from a file: relative paths in the case are relative to its folder
    return case


class _NonFinite:
    """Stands in for a NaN/Infinity literal (or a number that overflows to infinity) found in a JSON file."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class _JsonObject(dict):
    """A JSON object that remembers its duplicate keys."""

    duplicates: list[str]


def _pairs_hook(pairs: list[tuple[str, Any]]) -> _JsonObject:
    obj = _JsonObject()
    obj.duplicates = []
    for key, value in pairs:
        if key in obj:
            obj.duplicates.append(key)
        obj[key] = value
    return obj


def _parse_float(text: str) -> Any:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)




class _TooLong:
    """Stands in for an integer literal longer than :data:`CASE_NUMBER_MAX_DIGITS` digits."""

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _parse_int(text: str) -> Any:
    return int(text) if len(text) <= CASE_NUMBER_MAX_DIGITS else _TooLong(len(text))


def _read_bytes(path: Path, where: str, max_bytes: int) -> bytes:
    """The file's bytes: a regular file only (a FIFO would block, /dev/zero never end), at most ``max_bytes``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CaseError(f"{where}: not found") from None
    except OSError as exc:
        raise CaseError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise CaseError(f"{where}: cannot be read (it is a folder, not a case file)")
    if not stat.S_ISREG(st.st_mode):
        raise CaseError(f"{where}: not a regular file (a pipe, device or socket): refused")
    if st.st_size > max_bytes:
        raise CaseError(f"{where}: {st.st_size} bytes, larger than a case file can be ({max_bytes} bytes, "
                        "load_case(max_bytes=...))")
    try:  # O_NONBLOCK: should the path have become a FIFO since the stat, opening it does not block
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise CaseError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CaseError(f"{where}: not a regular file (a pipe, device or socket): refused")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise CaseError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(raw) > max_bytes:
        raise CaseError(f"{where}: larger than a case file can be ({max_bytes} bytes, load_case(max_bytes=...))")
    return raw


def _read_json(path: Path, where: str, max_bytes: int = CASE_FILE_MAX_BYTES) -> dict[str, Any]:
    raw = _read_bytes(path, where, max_bytes)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CaseError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        parsed = json.loads(text, parse_constant=_NonFinite, parse_float=_parse_float, parse_int=_parse_int,
                            object_pairs_hook=_pairs_hook)
    except json.JSONDecodeError as exc:
        raise CaseError(f"{where}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise CaseError(f"{where}: not valid JSON: nested too deeply") from None
    except ValueError as exc:  # anything else the parser refuses (e.g. a limit of the int conversion)
        raise CaseError(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise CaseError(f"{where}: must hold a JSON object (the case), got {_json_type(parsed)}")
    problems: list[dict[str, Any]] = []
    data = _plain(parsed, (), problems)
    if problems:
        raise case_error(where, problems)
    return data


def _plain(node: Any, loc: tuple[str | int, ...], problems: list[dict[str, Any]]) -> Any:
    """Plain dicts and lists again; NaN/Infinity, too-long numbers, duplicate keys and nesting deeper than
    :data:`CASE_MAX_NESTING` reported with their path."""
    if isinstance(node, _NonFinite):
        problems.append(make_problem(loc, "NaN and Infinity are not numbers a case may hold", node.text, shown=node.text))
        return None
    if isinstance(node, _TooLong):
        problems.append(make_problem(loc, f"a number of {node.digits} digits (at most {CASE_NUMBER_MAX_DIGITS})"))
        return None
    if isinstance(node, dict | list) and len(loc) >= CASE_MAX_NESTING:
        problems.append(make_problem(loc, f"nested deeper than {CASE_MAX_NESTING} levels: not a case"))
        return None
    if isinstance(node, dict):
        for key in getattr(node, "duplicates", ()):
            problems.append(make_problem((*loc, key), "duplicate key (a later value would silently replace an earlier "
                                     "one)"))
        return {k: _plain(v, (*loc, k), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v, (*loc, i), problems) for i, v in enumerate(node)]
    return node


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _canonical_json(data: Any) -> str:
    def default(obj: Any) -> Any:
        if isinstance(obj, date | datetime):
            return obj.isoformat()
        if isinstance(obj, Mapping):
            return dict(obj)
        if isinstance(obj, tuple | set | frozenset):
            return list(obj)
        if isinstance(obj, BaseModel):
            return obj.model_dump(mode="json")
        raise TypeError(f"not JSON serialisable: {type(obj).__name__}")

    try:
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                          default=default)
    except (TypeError, ValueError):  # keys of mixed types, or a value JSON cannot hold: keep the given order
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
