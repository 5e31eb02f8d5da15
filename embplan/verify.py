"""Post-treatment verification: the dose delivered by a Y-90 radioembolization, beside the plan.

:func:`verify` takes a plan with voxel data (:class:`~embplan.plan_model.Plan`, or a plan file) and a
post-treatment description (:class:`PostTreatment`, ``post.json``) and returns a :class:`Verification`:

1. **Delivered activity** (:func:`delivered_activity`): the vial activity decayed from its reference time to the
   administration, less the residual in vial and lines (a measured fraction, or a measured activity decayed to the
   administration): the activity that entered the patient.
2. **Images**: a quantitative Y-90 PET series (Bq/mL; Units BQML and the decay-correction attributes checked by
   :func:`check_pet_attributes`, which names every missing attribute) or a bremsstrahlung SPECT (counts), and the
   post-treatment CT in the same frame of reference (a PET/CT or SPECT/CT), optionally with the liver (and lungs)
   contoured on it.
3. **Registration** of the post CT (moving) to the planning CT (fixed): identity when the frames of reference are
   the same, the transform of a file when one is given, else :func:`embplan.imaging.registration.register_rigid`;
   its quality figures are recorded and an implausible result is an error. The plan's structures then map onto the
   post images: in practice the post images are resampled onto the plan's grid (the same thing, and it keeps one
   set of masks).
4. **Calibration**: PET absolutely (Bq/mL x voxel volume, decay-corrected from the image's reference time to the
   administration: :func:`embplan.imaging.volume.calibrate_absolute_pet`) by default, or patient-relatively;
   bremsstrahlung SPECT always patient-relatively: liver + lungs hold the delivered activity (EANM dosimetry SOP,
   Chiesa et al., EJNMMI Physics 8:77, 2021, doi:10.1186/s40658-021-00394-3). Counts outside liver and lungs are
   scaled by the same factor and kept (they are the extrahepatic deposition this step looks for). The activity
   moves onto the plan grid by the total-conserving resampling.
5. **Delivered dose**: local deposition (LDM) by default -- the EANM dosimetry SOP's recommended method for Y-90
   PET and SPECT, whose resolution already blurs the activity about as much as the beta range does (Chiesa 2021;
   Pasciak et al., Front Oncol 2014) -- or a kernel method (``vsv``, ``vsv_density``) through
   :func:`embplan.dosimetry.dose.dose_map`; permanent trapping, physical decay only.
6. **Comparison** with the plan's dose map of the same method (computed from the plan's cumulated activity when the
   plan does not store it), per structure of the plan: mass-weighted mean dose, D95/D70/D50/D2, absolute and
   relative differences, both DVHs; the difference map; the lung shunt as planned (MAA) and as delivered; the
   activity outside liver and lungs located (connected deposits: activity, fraction, centroid in both frames, the
   nearest structure) and flagged (EXTRAHEPATIC_DEPOSITION); the plan's dose rules re-run on the delivered doses
   (tumour under target, non-tumour liver or lung over limit, as delivered); optionally a 3D gamma index
   (:func:`gamma_index`, 3 %/3 mm global by default).
7. **Cumulative**: :func:`prior_treatment` turns a verified delivery into the TARE record that the next plan's
   cumulative lung and liver figures count.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator
from scipy import ndimage

from . import __version__
from .dosimetry import metrics as _metrics
from .dosimetry.dose import dose_map
from .errors import CaseError, EmbplanError, ImagingError
from .grid import Grid
from .imaging.registration import (
    RegistrationResult,
    RegistrationSettings,
    RigidTransform,
    evaluate_transform,
    read_transform,
    register_rigid,
    resample_moving,
    settings_from,
)
from .nuclides import K_GY_KG_PER_GBQ_DEFAULT, decay_factor, y90_mean_life_s
from .plan_model import Plan, jsonable
from .protocols.base import IsoDateTime, Issue, StrictModel, case_error, raise_issues, validation_problems
from .protocols.history import PriorTreatment
from .risk import DoseFacts, Flag, Severity, assess_dose
from .risk.flags import sort_flags
from .thresholds import EANM_2022

__all__ = [
    "PostTreatment",
    "PostDelivery",
    "PostStructures",
    "GammaSettings",
    "VerifyOptions",
    "DeliveredActivity",
    "StructureComparison",
    "Deposit",
    "GammaResult",
    "VerificationResult",
    "Verification",
    "load_post",
    "delivered_activity",
    "check_pet_attributes",
    "compare_structures",
    "locate_outside_activity",
    "gamma_index",
    "verify",
    "prior_treatment",
    "CHIESA_2021",
]

log = logging.getLogger(__name__)

CHIESA_2021 = (
    "Chiesa C, Sjogreen-Gleisner K, Walrand S, et al. EANM dosimetry committee series on standard operational "
    "procedures: a unified methodology for 99mTc-MAA pre- and 90Y peri-therapy dosimetry in liver radioembolization "
    "with 90Y microspheres. EJNMMI Physics 2021;8:77"
)
POST_SCHEMA_VERSION = 1
#: D-values compared per structure (percent of the structure's volume).
D_VALUES: tuple[float, ...] = (95.0, 70.0, 50.0, 2.0)


# ============================================================================================== post.json
class PostDelivery(StrictModel):
    """The delivery record: the vial activity at its reference time (calibration or assay), and the residual left
    in vial and lines after the administration, as a fraction of the vial or as a measured activity."""

    vial_activity_gbq: float = Field(gt=0, le=30)
    vial_reference_datetime: IsoDateTime
    residual_fraction: float | None = Field(default=None, ge=0, lt=1)
    residual_activity_gbq: float | None = Field(default=None, ge=0, le=30)
    residual_datetime: IsoDateTime | None = None

    @model_validator(mode="after")
    def _one_residual(self) -> PostDelivery:
        issues = []
        if self.residual_fraction is None and self.residual_activity_gbq is None:
            issues.append(Issue("residual_fraction", "required (or residual_activity_gbq with residual_datetime): "
                                "the activity that did not enter the patient changes every delivered dose"))
        if self.residual_fraction is not None and self.residual_activity_gbq is not None:
            issues.append(Issue("residual_activity_gbq", "give residual_fraction or residual_activity_gbq, not both",
                                self.residual_activity_gbq))
        if self.residual_activity_gbq is not None and self.residual_datetime is None:
            issues.append(Issue("residual_datetime", "required with residual_activity_gbq (when it was measured)"))
        if issues:
            raise_issues(issues)
        return self


class PostStructures(StrictModel):
    """Structures contoured on the post-treatment CT (optional): they give the registration's liver surface
    distance. The dose comparison uses the plan's structures mapped through the registration."""

    rtstruct: str | None = Field(default=None, min_length=1, max_length=4096)
    seg: str | None = Field(default=None, min_length=1, max_length=4096)
    liver: list[str] = Field(min_length=1, max_length=64)
    lungs: list[str] | None = Field(default=None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _one_source(self) -> PostStructures:
        if (self.rtstruct is None) == (self.seg is None):
            raise_issues([Issue("rtstruct", "give exactly one of rtstruct or seg")])
        return self


class GammaSettings(StrictModel):
    """3D gamma index between the planned (reference) and delivered (evaluated) dose maps (Low et al., Med Phys
    25:656, 1998): ``dose_percent`` of the reference maximum (global) or of the local reference dose (``local``),
    ``distance_mm``; voxels below ``cutoff_percent`` of the reference maximum are not evaluated; the search stops
    at ``max_gamma`` x ``distance_mm`` (gamma above ``max_gamma`` is reported as ``max_gamma``) on a lattice of
    ``distance_mm / steps_per_distance`` (Low & Dempsey 2003 ask for a resolution of at most a third of the
    distance criterion), the evaluated map interpolated trilinearly."""

    dose_percent: float = Field(default=3.0, gt=0, le=100)
    distance_mm: float = Field(default=3.0, gt=0, le=50)
    cutoff_percent: float = Field(default=10.0, ge=0, lt=100)
    max_gamma: float = Field(default=2.0, ge=1, le=5)
    steps_per_distance: int = Field(default=3, ge=1, le=10)
    local: bool = False


class PostTreatment(StrictModel):
    """``post.json``: the post-treatment images and times (paths relative to the file's folder)."""

    schema_version: Literal[1]
    description: str | None = Field(default=None, max_length=2000)
    administration_datetime: IsoDateTime
    pet: str | None = Field(default=None, min_length=1, max_length=4096)
    spect: str | None = Field(default=None, min_length=1, max_length=4096)
    ct: str = Field(min_length=1, max_length=4096)
    transform: str | None = Field(default=None, min_length=1, max_length=4096)
    structures: PostStructures | None = None
    delivery: PostDelivery
    dose_method: Literal["ldm", "vsv", "vsv_density"] = "ldm"
    pet_calibration: Literal["absolute", "patient_relative"] = "absolute"
    gamma: GammaSettings | None = None
    registration: dict[str, Any] | None = None

    _base_dir: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _one_emission(self) -> PostTreatment:
        issues = []
        if (self.pet is None) == (self.spect is None):
            issues.append(Issue("pet", "give exactly one of pet (Y-90 PET series folder) or spect (bremsstrahlung "
                                "SPECT file)"))
        d = self.delivery
        aware = {t.tzinfo is not None for t in (self.administration_datetime, d.vial_reference_datetime,
                                                 d.residual_datetime) if t is not None}
        if len(aware) > 1:
            issues.append(Issue("administration_datetime", "give every time with a UTC offset or none of them",
                                self.administration_datetime.isoformat()))
        elif d.residual_datetime is not None and d.residual_datetime < self.administration_datetime:
            issues.append(Issue("delivery.residual_datetime", "the residual is measured after the administration",
                                d.residual_datetime.isoformat()))
        if self.registration is not None:
            try:
                RegistrationSettings(**self.registration)
            except (ValidationError, ValueError, TypeError) as exc:
                errs = getattr(exc, "errors", None)
                e = errs()[0] if callable(errs) else {"loc": (), "msg": str(exc)}
                loc = ".".join(str(p) for p in e.get("loc", ()))
                issues.append(Issue(f"registration.{loc}".rstrip("."), str(e.get("msg"))))
        if issues:
            raise_issues(issues)
        return self

    @property
    def base_dir(self) -> Path:
        return Path(self._base_dir) if self._base_dir is not None else Path.cwd()

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.base_dir / p

    @property
    def emission(self) -> Literal["pet", "spect"]:
        return "pet" if self.pet is not None else "spect"


def load_post(path_or_dict: str | os.PathLike[str] | dict[str, Any] | PostTreatment) -> PostTreatment:
    """Load and validate ``post.json`` (strict JSON: NaN and duplicate keys are errors); CaseError naming every
    field at fault. Relative paths are relative to the file's folder (the current folder for a mapping)."""
    if isinstance(path_or_dict, PostTreatment):
        return path_or_dict
    from .case import _read_json  # the case loader's strict JSON reader

    base: str | None = None
    if isinstance(path_or_dict, dict):
        data, where = dict(path_or_dict), "post-treatment description"
    elif isinstance(path_or_dict, str | os.PathLike):
        p = Path(path_or_dict)
        where = f"post-treatment file {p}"
        data = _read_json(p, where)
        base = os.path.dirname(os.path.abspath(p))
    else:
        raise CaseError(f"load_post: expected a path or a mapping, got {type(path_or_dict).__name__}")
    try:
        post = PostTreatment.model_validate(data)
    except ValidationError as exc:
        raise case_error(where, validation_problems(exc, data, PostTreatment)) from None
    post._base_dir = base
    missing = []
    for name in ("pet", "spect", "ct", "transform"):
        value = getattr(post, name)
        if value is not None and not post.resolve(value).exists():
            missing.append(f"{name}: {post.resolve(value)} not found")
    if post.structures is not None:
        src = post.structures.rtstruct or post.structures.seg
        if src is not None and not post.resolve(src).exists():
            missing.append(f"structures.{'rtstruct' if post.structures.rtstruct else 'seg'}: {post.resolve(src)} not found")
    if missing:
        raise CaseError(f"invalid {where}: " + "; ".join(missing))
    return post


# ============================================================================================== options
class VerifyOptions(BaseModel):
    """Parameters of :func:`verify` that are not clinical thresholds (the dose limits and targets come from the
    plan's :class:`~embplan.thresholds.Thresholds`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    k_gy_kg_per_gbq: float = Field(default=K_GY_KG_PER_GBQ_DEFAULT, gt=0, description="LDM constant (Gy kg/GBq)")
    dvh_bin_width_gy: float = Field(default=0.5, gt=0)
    outside_margin_mm: float = Field(
        default=10.0, ge=0, le=100,
        description="activity within this distance of liver or lungs is counted as theirs (PET resolution of 5-10 mm "
                    "FWHM and residual misregistration spill counts over the boundary) [U]",
    )
    deposit_threshold_fraction: float = Field(
        default=0.2, gt=0, le=10,
        description="a voxel outside liver and lungs belongs to a deposit when its concentration exceeds this "
                    "fraction of the mean liver concentration [U]",
    )
    deposit_min_fraction: float = Field(
        default=0.005, gt=0, lt=1,
        description="a deposit holding at least this fraction of the delivered activity is flagged: extrahepatic "
                    "deposition risks gastrointestinal ulceration and pancreatitis (EANM 2022); the fraction is an "
                    "engineering detection level, not a clinical limit [U]",
    )
    max_deposits: int = Field(default=10, ge=1, le=100)
    body_min_density_g_cm3: float = Field(
        default=0.5, ge=0, le=3,
        description="deposits are searched where the density is at least this (the body without air; lungs are "
                    "excluded anyway): activity in air is reconstruction noise",
    )
    min_coverage_fraction: float = Field(
        default=0.99, ge=0, le=1,
        description="a structure less covered than this by the emission image's field of view is noted (its delivered "
                    "dose is an underestimate)",
    )
    deposit_noise_sigmas: float = Field(
        default=5.0, ge=0, le=100,
        description="a deposit must also stand this many robust standard deviations above the background outside "
                    "liver and lungs (noisy Y-90 PET) [U]",
    )
    deposit_smoothing_mm: float = Field(
        default=8.0, ge=0, le=50,
        description="FWHM of the Gaussian smoothing of the concentration before the deposit threshold (about a Y-90 "
                    "PET resolution) [U]",
    )
    pet_recovery_warning_fraction: float = Field(
        default=0.2, gt=0, lt=1,
        description="a PET total differing from the delivered activity by more than this fraction is reported "
                    "(Y-90 PET quantification is within about 10-20 % in phantoms, Willowson 2015 [U])",
    )


# ============================================================================================== records
class DeliveredActivity(BaseModel):
    """The activity that entered the patient at administration, from the delivery record."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    vial_activity_gbq: float
    vial_reference_datetime: str
    administration_datetime: str
    hours_vial_to_administration: float
    vial_activity_at_administration_gbq: float
    residual_activity_at_administration_gbq: float
    residual_fraction: float
    delivered_activity_gbq: float
    planned_activity_gbq: float
    delivered_minus_planned_percent: float | None
    explanation: str


class StructureComparison(BaseModel):
    """Planned vs delivered dose of one structure of the plan (mass-weighted means; D-values from the DVHs)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    structure: str
    volume_ml: float
    mass_kg: float
    planned_mean_gy: float
    delivered_mean_gy: float
    difference_gy: float
    difference_percent: float | None
    planned_d_gy: dict[str, float]
    delivered_d_gy: dict[str, float]
    difference_d_gy: dict[str, float]
    planned_activity_mbq: float
    delivered_activity_mbq: float
    dose_source: str
    coverage_fraction: float = Field(default=1.0, ge=0, le=1,
                                     description="fraction of the structure inside the emission image's field of view")


class DVHPair(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    structure: str
    planned_dose_gy: list[float]
    planned_volume_fraction: list[float]
    delivered_dose_gy: list[float]
    delivered_volume_fraction: list[float]


class Deposit(BaseModel):
    """A connected region of activity outside the liver and lungs (beyond the margin)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    activity_mbq: float
    fraction_of_delivered: float
    volume_ml: float
    max_concentration_mbq_ml: float
    centroid_plan_mm: list[float]
    centroid_post_mm: list[float]
    nearest_structure: str
    distance_to_nearest_mm: float
    flagged: bool


class GammaResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    settings: GammaSettings
    reference_max_gy: float
    evaluated_voxels: int
    pass_rate: float | None
    mean_gamma: float | None
    gamma_p95: float | None


class VerificationResult(BaseModel):
    """Everything a verification found, except the voxel arrays (see :class:`Verification`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    format_version: int = 1
    patient_id: str
    plan_created_utc: str
    plan_sha256: str | None = None
    plan_activity_gbq: float
    device: str
    post: dict[str, Any]
    delivered: DeliveredActivity
    emission: Literal["pet", "spect"]
    calibration: dict[str, Any]
    registration: dict[str, Any]
    dose_method: str
    planned_dose_source: str
    structures: list[StructureComparison]
    dvh: list[DVHPair]
    lung_shunt_planned_fraction: float
    lung_shunt_delivered_fraction: float
    activity_on_grid_mbq: float
    activity_liver_mbq: float
    activity_lungs_mbq: float
    activity_outside_fraction: float
    deposits: list[Deposit]
    delivered_doses: dict[str, float | None]
    planned_doses: dict[str, float | None]
    flags: list[Flag]
    gamma: GammaResult | None = None
    prior_treatment: dict[str, Any]
    notes: list[str] = Field(default_factory=list)
    provenance: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Verification:
    """A verification: the result and the voxel arrays on the plan's grid (``delivered_activity_mbq``,
    ``delivered_dose_gy``, ``planned_dose_gy``, ``difference_gy`` (delivered - planned), ``gamma`` when computed,
    ``post_ct_hu`` (the post CT on the plan grid, registered), ``plan_ct_hu``, ``density_g_cm3``,
    ``mask_<structure>``)."""

    result: VerificationResult
    grid: Grid
    arrays: dict[str, np.ndarray]
    units: dict[str, str]
    transform: RigidTransform = field(default_factory=RigidTransform)

    def prior_treatment(self) -> PriorTreatment:
        return PriorTreatment.model_validate(self.result.prior_treatment)


# ============================================================================================== delivery
def _naive(d: _dt.datetime) -> _dt.datetime:
    """The wall-clock time (DICOM dates and times carry no offset: they are compared as wall-clock times)."""
    return d.replace(tzinfo=None)


def _hours(later: _dt.datetime, earlier: _dt.datetime, field: str) -> float:
    if (later.tzinfo is None) != (earlier.tzinfo is None):
        raise CaseError(f"{field}: give every time of post.json with a UTC offset or none of them")
    return (later - earlier).total_seconds() / 3600.0


def delivered_activity(post: PostTreatment, planned_activity_gbq: float) -> DeliveredActivity:
    """The activity delivered at administration: vial decayed to the administration (Y-90 half-life, ICRP-107),
    less the residual (fraction of the vial, or measured activity decayed back to the administration)."""
    d = post.delivery
    admin, ref = post.administration_datetime, d.vial_reference_datetime
    hours = _hours(admin, ref, "delivery.vial_reference_datetime")
    vial_at_admin = d.vial_activity_gbq * decay_factor(hours)
    text = [f"Vial {d.vial_activity_gbq:.3f} GBq at {ref.isoformat()}, {hours:+.1f} h to the administration: "
            f"{vial_at_admin:.3f} GBq."]
    if d.residual_fraction is not None:
        residual = vial_at_admin * d.residual_fraction
        text.append(f"Residual {d.residual_fraction:.1%} of the vial in vial and lines: {residual:.3f} GBq.")
    else:
        assert d.residual_activity_gbq is not None and d.residual_datetime is not None
        rh = _hours(d.residual_datetime, admin, "delivery.residual_datetime")
        residual = d.residual_activity_gbq / decay_factor(rh)
        text.append(f"Residual {d.residual_activity_gbq:.3f} GBq measured {rh:.1f} h after the administration: "
                    f"{residual:.3f} GBq at administration.")
    delivered = vial_at_admin - residual
    if not delivered > 0:
        raise CaseError(f"delivery: the residual ({residual:.3f} GBq) is not less than the vial activity at "
                        f"administration ({vial_at_admin:.3f} GBq)")
    text.append(f"Delivered {delivered:.3f} GBq (planned {planned_activity_gbq:.3f} GBq).")
    diff = 100.0 * (delivered / planned_activity_gbq - 1.0) if planned_activity_gbq > 0 else None
    return DeliveredActivity(
        vial_activity_gbq=d.vial_activity_gbq, vial_reference_datetime=ref.isoformat(),
        administration_datetime=admin.isoformat(), hours_vial_to_administration=hours,
        vial_activity_at_administration_gbq=vial_at_admin, residual_activity_at_administration_gbq=residual,
        residual_fraction=residual / vial_at_admin, delivered_activity_gbq=delivered,
        planned_activity_gbq=planned_activity_gbq, delivered_minus_planned_percent=diff, explanation=" ".join(text),
    )


# ============================================================================================== images
def check_pet_attributes(volume: Any, *, administration_given: bool = True) -> None:
    """ImagingError naming every attribute a quantitative Y-90 PET needs for its numbers and lacks: Units
    (0054,1001) BQML; Decay Correction (0054,1102) START/ADMIN/NONE; the reference time of the values (START and
    NONE: Series Date (0008,0021) and Series Time (0008,0031), or Decay Correction DateTime (0018,9701));
    Actual Frame Duration (0018,1242) for NONE (the frame-mean correction); Radiopharmaceutical Start DateTime
    (0018,1078) when post.json gives no administration time (ADMIN); Frame of Reference UID (0020,0052)."""
    meta = getattr(volume, "meta", {}) or {}
    src = (meta.get("source_files") or ["PET series"])[0]
    missing: list[str] = []
    if getattr(volume, "units", None) != "Bq/mL" or meta.get("dicom_units") not in (None, "BQML"):
        missing.append("Units (0054,1001) BQML")
    timing = meta.get("pet_timing")
    if timing is None:
        missing.append("DecayCorrection (0054,1102)")
    else:
        if timing.decay_correction in ("START", "NONE") and timing.acquisition_datetime is None and \
                timing.decay_correction_datetime is None:
            missing.append("SeriesDate (0008,0021) and SeriesTime (0008,0031) (or DecayCorrectionDateTime "
                           "(0018,9701)): the time the values refer to")
        if timing.decay_correction == "NONE" and not timing.frame_duration_s:
            missing.append("ActualFrameDuration (0018,1242) (DecayCorrection NONE: values are frame means)")
        if timing.decay_correction == "ADMIN" and timing.administration_datetime is None and not administration_given:
            missing.append("RadiopharmaceuticalStartDateTime (0018,1078)")
    if not getattr(volume, "frame_of_reference_uid", None):
        missing.append("FrameOfReferenceUID (0020,0052)")
    if missing:
        raise ImagingError(f"{src}: the Y-90 PET lacks what its numbers need: {'; '.join(missing)}")


@dataclass
class _PostImages:
    ct: Any
    emission: Any
    liver: np.ndarray | None
    lungs: np.ndarray | None
    notes: list[str]


def _read_post_images(post: PostTreatment) -> _PostImages:
    from .imaging import dicom as dcm
    from .imaging.image_set import _single_nm_file
    from .imaging.rtstruct import rasterize_structure

    notes: list[str] = []
    ct = dcm.read_ct_series(post.resolve(post.ct))
    if post.pet is not None:
        emission = dcm.read_pet_series(post.resolve(post.pet), clip_negative=True)
        if emission.meta.get("negative_voxels"):
            notes.append(f"PET: {emission.meta['negative_voxels']} voxels of negative concentration set to 0.")
        check_pet_attributes(emission)
        what = "pet"
    else:
        assert post.spect is not None  # PostTreatment validates exactly one of pet and spect
        path = post.resolve(post.spect)
        emission = dcm.read_nm(_single_nm_file(path) if path.is_dir() else path)
        what = "spect"
    try:
        dcm.require_same_frame_of_reference(ct=ct.frame_of_reference_uid, **{what: emission.frame_of_reference_uid})
    except ImagingError as exc:
        raise ImagingError(f"post-treatment {what} and ct: {exc} (the emission image and its CT must come from one "
                           "PET/CT or SPECT/CT)") from None
    ids = {name: str(v.meta.get("patient_id") or "").strip() for name, v in (("ct", ct), (what, emission))}
    if all(ids.values()) and len(set(ids.values())) > 1:
        raise ImagingError(f"post-treatment images of different patients: PatientID (0010,0020) {ids['ct']!r} (ct) "
                           f"and {ids[what]!r} ({what})")
    liver = lungs = None
    s = post.structures
    if s is not None:
        names = list(s.liver) + list(s.lungs or [])
        if s.rtstruct is not None:
            contours = dcm.read_rtstruct(post.resolve(s.rtstruct), frame_of_reference_uid=ct.frame_of_reference_uid)
            available = sorted(contours)
            found = {n: rasterize_structure(contours[n], ct.grid, output="mask") for n in names if n in contours}
        else:
            assert s.seg is not None  # the structures validate exactly one of rtstruct and seg
            seg = dcm.read_seg(post.resolve(s.seg), ct.grid, frame_of_reference_uid=ct.frame_of_reference_uid)
            available = sorted(seg)
            found = {n: np.asarray(seg[n], bool) for n in names if n in seg}
        absent = [n for n in names if n not in found]
        if absent:
            raise ImagingError(f"structures: no ROI {', '.join(repr(a) for a in absent)} in the post-treatment "
                               f"structures (they have {', '.join(repr(a) for a in available) or 'none'})")
        liver = np.zeros(ct.grid.shape, bool)
        for n in s.liver:
            liver |= found[n]
        if s.lungs:
            lungs = np.zeros(ct.grid.shape, bool)
            for n in s.lungs:
                lungs |= found[n]
    return _PostImages(ct=ct, emission=emission, liver=liver, lungs=lungs, notes=notes)


def _register(plan: Plan, post: PostTreatment, images: _PostImages, settings: RegistrationSettings) -> RegistrationResult:
    voxel = plan.voxel
    assert voxel is not None
    fixed = voxel.arrays.get("ct_hu")
    if fixed is None:
        raise ImagingError("plan: no CT numbers (ct_hu) stored; cannot register the post-treatment CT to it")
    fixed_liver = voxel.arrays.get("mask_liver")
    kw: dict[str, Any] = dict(settings=settings, same_modality=True, fixed_liver=fixed_liver if images.liver is not None else None,
              moving_liver=images.liver)
    ct = images.ct
    if post.transform is not None:
        t = read_transform(post.resolve(post.transform))
        return evaluate_transform(fixed, voxel.grid, ct.array, ct.grid, t, source="file", **kw)
    plan_for = (voxel.attributes.get("images") or {}).get("frame_of_reference_uid")
    if plan_for is not None and plan_for == ct.frame_of_reference_uid:
        return evaluate_transform(fixed, voxel.grid, ct.array, ct.grid, RigidTransform(), source="identity", **kw)
    return register_rigid(fixed, voxel.grid, ct.array, ct.grid, **kw)


# ============================================================================================== comparison
def _mass_weighted_mean(dose: np.ndarray, mask: np.ndarray, rho: np.ndarray) -> float:
    w = rho[mask].astype(np.float64)
    return float((dose[mask].astype(np.float64) * w).sum() / w.sum())


def compare_structures(
    planned_gy: np.ndarray,
    delivered_gy: np.ndarray,
    masks: dict[str, np.ndarray],
    density_g_cm3: np.ndarray,
    grid: Grid,
    *,
    planned_activity_mbq: np.ndarray | None = None,
    delivered_activity_mbq: np.ndarray | None = None,
    dvh_bin_width_gy: float = 0.5,
    dose_source: str = "",
    lung_maps: tuple[np.ndarray, np.ndarray] | None = None,
    field_of_view: np.ndarray | None = None,
) -> tuple[list[StructureComparison], list[DVHPair]]:
    """Planned vs delivered per structure: mass-weighted mean dose (density ``density_g_cm3``), D95/D70/D50/D2
    (cumulative DVHs with ``dvh_bin_width_gy`` bins: accurate to a bin), absolute and relative difference
    (relative to the planned mean; None when it is 0), activities. ``lung_maps`` (planned, delivered) replaces the
    maps for structures named ``lungs`` (the planner's convention for the plain kernel: lung dose by LDM).
    ``field_of_view``: where the post-treatment image has data; each row records the covered fraction."""
    rho = np.asarray(density_g_cm3, dtype=np.float64)
    v_ml = grid.voxel_volume_ml
    rows: list[StructureComparison] = []
    dvhs: list[DVHPair] = []
    for name, mask in masks.items():
        m = np.asarray(mask, dtype=bool)
        if not m.any():
            continue
        pmap, dmap = (lung_maps if (lung_maps is not None and name == "lungs") else (planned_gy, delivered_gy))
        pm, dm = _mass_weighted_mean(pmap, m, rho), _mass_weighted_mean(dmap, m, rho)
        hp = _metrics.dvh(pmap, m, voxel_volume_ml=v_ml, bin_width_gy=dvh_bin_width_gy, name=name)
        hd = _metrics.dvh(dmap, m, voxel_volume_ml=v_ml, bin_width_gy=dvh_bin_width_gy, name=name)
        pd = {f"D{x:g}": float(hp.d_gy(x)) for x in D_VALUES}
        dd = {f"D{x:g}": float(hd.d_gy(x)) for x in D_VALUES}
        rows.append(StructureComparison(
            structure=name, volume_ml=float(m.sum()) * v_ml, mass_kg=float(rho[m].sum()) * v_ml / 1000.0,
            planned_mean_gy=pm, delivered_mean_gy=dm, difference_gy=dm - pm,
            difference_percent=100.0 * (dm - pm) / pm if pm > 0 else None,
            planned_d_gy=pd, delivered_d_gy=dd, difference_d_gy={k: dd[k] - pd[k] for k in pd},
            planned_activity_mbq=float(planned_activity_mbq[m].sum()) if planned_activity_mbq is not None else 0.0,
            delivered_activity_mbq=float(delivered_activity_mbq[m].sum()) if delivered_activity_mbq is not None else 0.0,
            dose_source="ldm (lungs)" if (lung_maps is not None and name == "lungs") else dose_source,
            coverage_fraction=float(np.asarray(field_of_view, bool)[m].mean()) if field_of_view is not None else 1.0,
        ))
        dvhs.append(DVHPair(
            structure=name, planned_dose_gy=[float(x) for x in hp.dose_bins_gy],
            planned_volume_fraction=[float(x) for x in hp.volume_fraction],
            delivered_dose_gy=[float(x) for x in hd.dose_bins_gy],
            delivered_volume_fraction=[float(x) for x in hd.volume_fraction],
        ))
    return rows, dvhs


def locate_outside_activity(
    activity_mbq: np.ndarray,
    grid: Grid,
    masks: dict[str, np.ndarray],
    *,
    delivered_mbq: float,
    margin_mm: float = 10.0,
    threshold_fraction: float = 0.2,
    min_fraction: float = 0.005,
    max_deposits: int = 10,
    to_post_frame: RigidTransform | None = None,
    body: np.ndarray | None = None,
    smoothing_mm: float = 0.0,
    noise_sigmas: float = 0.0,
) -> tuple[float, list[Deposit], np.ndarray]:
    """Activity outside the liver and lungs: the fraction of the grid's activity farther than ``margin_mm`` from
    both, and its connected deposits (26-connected voxels above ``threshold_fraction`` of the mean liver
    concentration), largest first, each with its activity, fraction of ``delivered_mbq``, volume, peak
    concentration, activity-weighted centroid (plan frame, and post frame through ``to_post_frame``), and the
    nearest structure of ``masks`` with the distance from the centroid to it; ``flagged`` when the fraction is at
    least ``min_fraction``. ``body``: deposits are searched only inside it (activity in air is noise, not
    deposition); ``smoothing_mm``: the concentration is smoothed by a Gaussian of this FWHM before the threshold
    (noise would otherwise connect into deposits; the activities are summed unsmoothed); ``noise_sigmas``: the
    threshold is also at least the median of the (smoothed) concentration outside plus this many robust standard
    deviations (1.4826 x MAD). Returns (outside fraction, deposits, label map of the deposits)."""
    a = np.asarray(activity_mbq, dtype=np.float64)
    liver, lungs = np.asarray(masks["liver"], bool), np.asarray(masks["lungs"], bool)
    spacing = tuple(float(s) for s in grid.spacing_mm)
    dist_organs = ndimage.distance_transform_edt(~(liver | lungs), sampling=spacing)
    outside = dist_organs > margin_mm
    total = float(a.sum())
    out_fraction = float(a[outside].sum() / total) if total > 0 else 0.0
    v_ml = grid.voxel_volume_ml
    liver_conc = float(a[liver].sum()) / (float(liver.sum()) * v_ml) if liver.any() else 0.0
    if body is not None:
        outside = outside & np.asarray(body, bool)
    conc = a / v_ml
    if smoothing_mm > 0:
        sigma = [smoothing_mm / (2.0 * math.sqrt(2.0 * math.log(2.0))) / sp for sp in spacing]
        conc = ndimage.gaussian_filter(conc, sigma, mode="constant")
    level = threshold_fraction * liver_conc
    bg = conc[outside]
    if noise_sigmas > 0 and bg.size > 100:  # above the background's noise too (robust: median + k x 1.4826 MAD)
        med = float(np.median(bg))
        level = max(level, med + noise_sigmas * 1.4826 * float(np.median(np.abs(bg - med))))
    hot = outside & (conc > level) if level > 0 else outside & (a > 0)
    labels, n = ndimage.label(hot, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return out_fraction, [], np.zeros(grid.shape, np.int32)
    sums = ndimage.sum(a, labels, index=np.arange(1, n + 1))
    order = np.argsort(sums)[::-1][:max_deposits]
    distances = {name: ndimage.distance_transform_edt(~np.asarray(m, bool), sampling=spacing)
                 for name, m in masks.items() if np.asarray(m, bool).any()}
    deposits: list[Deposit] = []
    out_labels = np.zeros(grid.shape, np.int32)
    for rank, i in enumerate(order, start=1):
        lab = int(i) + 1
        comp = labels == lab
        act = float(sums[i])
        idx = np.argwhere(comp).astype(float)
        w = a[comp]
        c_idx = (idx * w[:, None]).sum(axis=0) / w.sum() if w.sum() > 0 else idx.mean(axis=0)
        centroid = grid.index_to_patient_mm(c_idx)
        near_idx = tuple(int(v) for v in np.clip(np.rint(c_idx), 0, np.array(grid.shape) - 1))
        nearest = min(distances, key=lambda k: distances[k][near_idx])
        frac = act / delivered_mbq if delivered_mbq > 0 else 0.0
        post_c = to_post_frame.apply(centroid) if to_post_frame is not None else centroid
        deposits.append(Deposit(
            activity_mbq=act, fraction_of_delivered=frac, volume_ml=float(comp.sum()) * v_ml,
            max_concentration_mbq_ml=float(w.max() / v_ml), centroid_plan_mm=[float(v) for v in centroid],
            centroid_post_mm=[float(v) for v in post_c], nearest_structure=nearest,
            distance_to_nearest_mm=float(distances[nearest][near_idx]), flagged=frac >= min_fraction,
        ))
        out_labels[comp] = rank
    return out_fraction, deposits, out_labels


# ============================================================================================== gamma
def _shift_linear(a: np.ndarray, shift: float, axis: int) -> np.ndarray:
    """``out[i] = a(i + shift)`` along ``axis`` by linear interpolation; NaN where it falls outside."""
    n = int(math.floor(shift))
    f = shift - n
    out = np.full(a.shape, np.nan)
    length = a.shape[axis]

    def take(offset: int) -> tuple[np.ndarray, slice]:
        lo, hi = max(0, -offset), min(length, length - offset)
        dst = slice(lo, hi) if hi > lo else slice(0, 0)
        src = slice(lo + offset, hi + offset) if hi > lo else slice(0, 0)
        idx = [slice(None)] * a.ndim
        idx[axis] = src
        return a[tuple(idx)], dst

    v0, d0 = take(n)
    sl = [slice(None)] * a.ndim
    sl[axis] = d0
    if f == 0.0:
        out[tuple(sl)] = v0
        return out
    v1, d1 = take(n + 1)
    # the common destination range of both taps
    lo, hi = max(d0.start, d1.start), min(d0.stop, d1.stop)
    if hi <= lo:
        return out
    i0 = [slice(None)] * a.ndim
    i1 = [slice(None)] * a.ndim
    i0[axis] = slice(lo - d0.start, hi - d0.start)
    i1[axis] = slice(lo - d1.start, hi - d1.start)
    sl[axis] = slice(lo, hi)
    out[tuple(sl)] = (1.0 - f) * v0[tuple(i0)] + f * v1[tuple(i1)]
    return out


def gamma_index(
    reference_gy: np.ndarray,
    evaluated_gy: np.ndarray,
    grid: Grid,
    settings: GammaSettings | None = None,
    *,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, GammaResult]:
    """3D gamma index of ``evaluated_gy`` against ``reference_gy`` on one grid (see :class:`GammaSettings`):
    ``gamma(r) = min over r' of sqrt(|r' - r|^2 / dta^2 + (De(r') - Dr(r))^2 / dD^2)``, ``r'`` on a lattice of step
    ``dta / steps_per_distance`` within ``max_gamma * dta`` of ``r`` (axis-aligned grids), ``De`` interpolated
    trilinearly. Returns the gamma map (NaN where not evaluated) and the summary (pass rate: gamma <= 1)."""
    s = settings or GammaSettings()
    ref = np.asarray(reference_gy, dtype=np.float64)
    ev = np.asarray(evaluated_gy, dtype=np.float64)
    grid.check_array(ref, "reference_gy")
    grid.check_array(ev, "evaluated_gy")
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(ev))):
        raise EmbplanError("gamma_index: dose maps must be finite")
    ref_max = float(ref.max()) if ref.size else 0.0
    gamma = np.full(grid.shape, np.nan)
    sel = ref >= s.cutoff_percent / 100.0 * ref_max if ref_max > 0 else np.zeros(grid.shape, bool)
    if mask is not None:
        sel &= np.asarray(mask, bool)
    if not sel.any():
        return gamma, GammaResult(settings=s, reference_max_gy=ref_max, evaluated_voxels=0, pass_rate=None,
                                  mean_gamma=None, gamma_p95=None)
    dta = s.distance_mm
    radius = s.max_gamma * dta
    step = dta / s.steps_per_distance
    spacing = np.asarray(grid.spacing_mm, dtype=float)
    pad = np.ceil(radius / spacing).astype(int) + 1
    nz = np.argwhere(sel)
    lo = np.maximum(nz.min(axis=0) - pad, 0)
    hi = np.minimum(nz.max(axis=0) + pad + 1, np.array(grid.shape))
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    r, e, m = ref[box], ev[box], sel[box]
    dd = (s.dose_percent / 100.0) * (r if s.local else ref_max)
    dd = np.where(dd > 0, dd, np.inf) if s.local else dd
    best = np.full(r.shape, s.max_gamma**2)
    n_steps = int(math.floor(radius / step + 1e-9))
    offsets = np.arange(-n_steps, n_steps + 1) * step
    for oz in offsets:
        ez = _shift_linear(e, oz / spacing[0], 0) if oz else e
        for oy in offsets:
            if oz * oz + oy * oy > radius * radius + 1e-9:
                continue
            ezy = _shift_linear(ez, oy / spacing[1], 1) if oy else ez
            for ox in offsets:
                d2 = oz * oz + oy * oy + ox * ox
                if d2 > radius * radius + 1e-9:
                    continue
                ezyx = _shift_linear(ezy, ox / spacing[2], 2) if ox else ezy
                g2 = d2 / (dta * dta) + ((ezyx - r) / dd) ** 2
                np.fmin(best, np.where(np.isnan(g2), np.inf, g2), out=best)
    g = np.sqrt(best)
    inner = np.full(r.shape, np.nan)
    inner[m] = g[m]
    gamma[box] = inner
    vals = g[m]
    return gamma, GammaResult(
        settings=s, reference_max_gy=ref_max, evaluated_voxels=int(vals.size),
        pass_rate=float(np.mean(vals <= 1.0)), mean_gamma=float(vals.mean()), gamma_p95=float(np.percentile(vals, 95)),
    )


# ============================================================================================== flags
def _delivered_flags(plan: Plan, facts: DoseFacts, deposits: list[Deposit], opts: VerifyOptions) -> list[Flag]:
    flags: list[Flag] = []
    for f in assess_dose(plan.case, facts, plan.thresholds):
        flags.append(f.model_copy(update={
            "message": f"As delivered (post-treatment imaging): {f.message}",
            "context": {**f.context, "basis": "delivered"},
        }))
    for i, dep in enumerate(deposits):
        if not dep.flagged:
            continue
        x, y, z = dep.centroid_plan_mm
        flags.append(Flag(
            code="EXTRAHEPATIC_DEPOSITION", severity=Severity.WARNING,
            message=(f"Activity outside the liver and lungs: {dep.activity_mbq:.0f} MBq ({dep.fraction_of_delivered:.1%} "
                     f"of the delivered activity, {dep.volume_ml:.0f} mL) centred at ({x:.0f}, {y:.0f}, {z:.0f}) mm "
                     f"(planning frame), {dep.distance_to_nearest_mm:.0f} mm from the {dep.nearest_structure}. Check "
                     "for gastrointestinal (stomach, duodenum), pancreatic or gallbladder deposition: risk of "
                     "radiation ulcer, gastritis or pancreatitis; consider follow-up (e.g. endoscopy) and gastric "
                     "protection as locally practised."),
            evidence=f"{EANM_2022}; {CHIESA_2021}",
            context={"deposit": i + 1, "activity_mbq": dep.activity_mbq, "fraction_of_delivered":
                     dep.fraction_of_delivered, "centroid_plan_mm": dep.centroid_plan_mm,
                     "nearest_structure": dep.nearest_structure, "distance_mm": dep.distance_to_nearest_mm,
                     "min_fraction": opts.deposit_min_fraction, "margin_mm": opts.outside_margin_mm,
                     "basis": "delivered"},
        ))
    return sort_flags(flags)


# ============================================================================================== verify
def verify(
    plan: Plan,
    post: PostTreatment | str | os.PathLike[str] | dict[str, Any],
    *,
    options: VerifyOptions | None = None,
    plan_sha256: str | None = None,
) -> Verification:
    """Verify a delivered Y-90 radioembolization against its plan (see the module docstring). ``plan`` is a
    :class:`~embplan.plan_model.Plan` (:func:`embplan.io.verification.verify_files` starts from the files);
    ``plan_sha256`` the plan file's content checksum, recorded when given."""
    opts = options or VerifyOptions()
    if not isinstance(plan, Plan):
        raise CaseError(f"plan: expected an embplan Plan, got {type(plan).__name__} (verify_files reads a plan file)")
    p, plan_sha = plan, plan_sha256
    post_m = load_post(post)
    if p.dosimetry is None or p.case.procedure.kind != "TARE":
        raise CaseError("plan: verification needs a TARE plan")
    voxel = p.voxel
    if voxel is None:
        raise CaseError("plan: verification needs a plan computed on images (voxel data): the delivered dose is "
                        "compared voxel by voxel")
    grid = voxel.grid
    arrays = voxel.arrays
    for name in ("density_g_cm3", "tia_mbq_s", "mask_liver", "mask_lungs"):
        if name not in arrays:
            raise CaseError(f"plan: the voxel data has no {name!r}")
    notes: list[str] = []
    delivered = delivered_activity(post_m, p.dosimetry.activity_gbq)
    images = _read_post_images(post_m)
    notes.extend(images.notes)
    plan_pid = str((voxel.attributes.get("images") or {}).get("patient_id") or "").strip()
    post_pid = str(images.ct.meta.get("patient_id") or "").strip()
    if plan_pid and post_pid and plan_pid != post_pid:
        raise ImagingError(f"post-treatment images of another patient: PatientID (0010,0020) {post_pid!r}, the plan's "
                           f"images {plan_pid!r}")
    settings = settings_from(post_m.registration, "registration")
    reg = _register(p, post_m, images, settings)
    t = reg.transform
    q = reg.quality
    notes.append(
        f"Registration ({reg.source}): rotation {q.rotation_deg:.2f} deg, translation {q.translation_mm:.1f} mm; Mattes "
        f"MI {q.mattes_mi_before:.3f} -> {q.mattes_mi_after:.3f}"
        + (f"; CT correlation {q.correlation_before:.2f} -> {q.correlation_after:.2f}"
           if q.correlation_before is not None and q.correlation_after is not None else "")
        + (f"; liver mean surface distance {q.liver_msd_before_mm:.1f} -> {q.liver_msd_after_mm:.1f} mm"
           if q.liver_msd_before_mm is not None and q.liver_msd_after_mm is not None else "") + "."
    )

    masks = {k[len("mask_"):]: np.asarray(v, bool) for k, v in arrays.items() if k.startswith("mask_")}
    liver, lungs = masks["liver"], masks["lungs"]
    # the density the plan's dose maps and mass-weighted means used (issue 13: nominal inside the liver), else the CT's
    density = np.asarray(arrays.get("dose_density_g_cm3", arrays["density_g_cm3"]), dtype=np.float64)
    delivered_mbq = delivered.delivered_activity_gbq * 1000.0
    em = images.emission
    admin = _naive(post_m.administration_datetime)

    # ---- calibration and the activity on the plan grid
    calibration: dict[str, Any]
    if post_m.emission == "pet" and post_m.pet_calibration == "absolute":
        from .imaging.volume import calibrate_absolute_pet

        timing = em.meta.get("pet_timing")
        header_admin = getattr(timing, "administration_datetime", None)
        if header_admin is not None and abs((_naive(header_admin) - admin).total_seconds()) > 60:
            notes.append(f"PET header administration time {header_admin} differs from post.json's {admin}: "
                         "post.json's (the delivery record) is used.")
        acq = getattr(timing, "acquisition_datetime", None)
        if acq is not None and (_naive(acq) - admin).total_seconds() < -60:
            raise ImagingError(
                f"pet: the PET was acquired ({_naive(acq).isoformat()}, SeriesDate/SeriesTime (0008,0021/0031)) before "
                f"the administration ({admin.isoformat()}, administration_datetime): not a post-treatment image, or a "
                "wrong time"
            )
        amap = calibrate_absolute_pet(em, decay_reference="administration", administration_datetime=admin,
                                      clip_negative=True)
        act_native = np.asarray(amap.activity_mbq, dtype=np.float64)
        act = np.asarray(resample_moving(act_native, em.grid, grid, t, "activity"), dtype=np.float64)
        total_fov = float(act_native.sum())
        calibration = {
            "method": "absolute_pet", "decay_correction": timing.decay_correction if timing else None,
            "decay_reference": "administration", "decay_factor": amap.decay_factor,
            "calibration_factor_mbq_per_bq_ml": amap.calibration_factor, "pet_total_mbq": total_fov,
            "pet_total_on_plan_grid_mbq": float(act.sum()),
            "pet_recovery_fraction": float(act.sum()) / delivered_mbq,
            "notes": list(amap.notes),
        }
        rec = float(act.sum()) / delivered_mbq
        if abs(rec - 1.0) > opts.pet_recovery_warning_fraction:
            notes.append(f"The PET holds {rec:.0%} of the delivered activity on the planning grid (more than "
                         f"{opts.pet_recovery_warning_fraction:.0%} off): check the PET calibration, the timing and the "
                         "field of view; pet_calibration 'patient_relative' scales to the delivered activity.")
    else:
        from .imaging.volume import calibrate_patient_relative

        native = np.asarray(em.array, dtype=np.float64)
        if post_m.emission == "pet":  # Bq/mL -> per-voxel quantity before the total-conserving resampling
            native = native * em.grid.voxel_volume_ml
        counts = np.asarray(resample_moving(native, em.grid, grid, t, "activity"), dtype=np.float64)
        amap = calibrate_patient_relative(counts, liver, lungs, delivered_mbq, grid=grid, zero_outside=False)
        act = np.asarray(amap.activity_mbq, dtype=np.float64)
        calibration = {
            "method": "patient_relative", "reference": CHIESA_2021,
            "what": "liver + lungs hold the delivered activity; outside them the same factor",
            "fraction_outside_liver_lung": amap.fraction_outside_liver_lung,
            "calibration_factor_mbq_per_unit": amap.calibration_factor, "total_on_plan_grid_mbq": float(act.sum()),
        }
    act = np.clip(act, 0.0, None)
    fov = np.asarray(resample_moving(np.ones(em.grid.shape, np.float32), em.grid, grid, t, "linear")) >= 0.5

    # ---- doses
    method = post_m.dose_method
    mean_life = y90_mean_life_s()
    tia = act * mean_life
    k = opts.k_gy_kg_per_gbq
    dm = dose_map(tia, grid, method, density, k_gy_kg_per_gbq=k)
    delivered_gy = np.asarray(dm.dose_gy, dtype=np.float64)
    planned_key = f"dose_{method}_gy"
    if planned_key in arrays:
        planned_gy = np.asarray(arrays[planned_key], dtype=np.float64)
        planned_source = f"plan file ({method})"
    else:
        planned_gy = np.asarray(dose_map(np.asarray(arrays["tia_mbq_s"], dtype=np.float64), grid, method, density,
                                         k_gy_kg_per_gbq=k).dose_gy, dtype=np.float64)
        planned_source = f"recomputed from the plan's cumulated activity ({method})"
    lung_maps = None
    if method == "vsv":
        p_ldm = arrays.get("dose_ldm_gy")
        p_ldm = np.asarray(p_ldm, np.float64) if p_ldm is not None else np.asarray(dose_map(
            np.asarray(arrays["tia_mbq_s"], np.float64), grid, "ldm", density, k_gy_kg_per_gbq=k).dose_gy)
        d_ldm = np.asarray(dose_map(tia, grid, "ldm", density, k_gy_kg_per_gbq=k).dose_gy, np.float64)
        lung_maps = (p_ldm, d_ldm)
        notes.append("vsv: the lung doses (planned and delivered) come from local deposition, as in the plan.")
    planned_gy = np.nan_to_num(planned_gy, nan=0.0)
    delivered_gy = np.nan_to_num(delivered_gy, nan=0.0)
    planned_act = np.asarray(arrays.get("activity_mbq", np.asarray(arrays["tia_mbq_s"]) / mean_life), np.float64)
    rows, dvhs = compare_structures(
        planned_gy, delivered_gy, masks, density, grid, planned_activity_mbq=planned_act, delivered_activity_mbq=act,
        dvh_bin_width_gy=opts.dvh_bin_width_gy, dose_source=method, lung_maps=lung_maps, field_of_view=fov,
    )
    by = {r.structure: r for r in rows}
    for r in rows:
        if r.coverage_fraction < opts.min_coverage_fraction:
            notes.append(
                f"The {post_m.emission.upper()} covers only {r.coverage_fraction:.0%} of {r.structure}: its delivered "
                "dose (and, for liver or lungs, the delivered lung shunt) is an underestimate."
            )

    # ---- lung shunt, activity outside
    a_liver, a_lungs = float(act[liver].sum()), float(act[lungs].sum())
    lsf_delivered = a_lungs / (a_liver + a_lungs) if a_liver + a_lungs > 0 else 0.0
    out_fraction, deposits, deposit_labels = locate_outside_activity(
        act, grid, masks, delivered_mbq=delivered_mbq, margin_mm=opts.outside_margin_mm,
        threshold_fraction=opts.deposit_threshold_fraction, min_fraction=opts.deposit_min_fraction,
        max_deposits=opts.max_deposits, to_post_frame=t, body=density >= opts.body_min_density_g_cm3,
        smoothing_mm=opts.deposit_smoothing_mm, noise_sigmas=opts.deposit_noise_sigmas,
    )

    def mean_of(name: str, which: str) -> float | None:
        r = by.get(name)
        return None if r is None else (r.delivered_mean_gy if which == "delivered" else r.planned_mean_gy)

    liver_ml = float(liver.sum()) * grid.voxel_volume_ml
    perfused_ml = float(masks.get("perfused", liver).sum()) * grid.voxel_volume_ml
    reserve = max(0.0, 1.0 - perfused_ml / liver_ml) if liver_ml > 0 else None
    summary = {}
    for which in ("planned", "delivered"):
        summary[which] = {
            "tumor_dose_gy": mean_of("perfused_tumors", which),
            "normal_liver_dose_gy": mean_of("normal_liver", which),
            "perfused_normal_liver_dose_gy": mean_of("perfused_normal_liver", which),
            "perfused_dose_gy": mean_of("perfused", which),
            "lung_dose_gy": mean_of("lungs", which),
        }
    dl = summary["delivered"]
    facts = DoseFacts(
        device=p.case.procedure.device,  # TARE (checked above)
        tumor_dose_gy=dl["tumor_dose_gy"], normal_liver_dose_gy=dl["normal_liver_dose_gy"] or 0.0,
        perfused_normal_liver_dose_gy=dl["perfused_normal_liver_dose_gy"], lung_dose_gy=dl["lung_dose_gy"] or 0.0,
        hepatic_reserve_fraction=reserve, lung_shunt_fraction=min(lsf_delivered, 0.999999), source="voxel",
    )
    flags = _delivered_flags(p, facts, deposits, opts)
    try:  # per lesion, for the record (the dose rule judges the perfused tumours together, as the plan does)
        from .risk import dose_limits

        target = dose_limits(p.case, p.thresholds, hepatic_reserve_fraction=reserve).tumor_target_gy
        under = [f"{r.structure} {r.delivered_mean_gy:.0f} Gy (planned {r.planned_mean_gy:.0f} Gy)" for r in rows
                 if r.structure.startswith("tumor_") and r.planned_mean_gy > 0 and r.delivered_mean_gy < target]
        if under:
            notes.append(f"As delivered, tumours below the {target:g} Gy target: " + "; ".join(under) + ".")
    except EmbplanError as exc:  # the limits need nothing the plan lacks; never hide the verification for a note
        log.warning("per-lesion target check skipped: %s", exc)

    # ---- gamma
    gamma_arr = None
    gamma_res = None
    if post_m.gamma is not None:
        gamma_arr, gamma_res = gamma_index(planned_gy, delivered_gy, grid, post_m.gamma)

    # ---- the prior-treatment record for the next plan
    proc = p.case.procedure
    prior = PriorTreatment(
        kind="TARE", date=admin.date(), territory=proc.territory, device=proc.device,  # TARE (checked above)
        activity_gbq=round(delivered.delivered_activity_gbq, 6),
        lung_dose_gy=round(dl["lung_dose_gy"] or 0.0, 4),
        normal_liver_dose_gy=round(dl["normal_liver_dose_gy"] or 0.0, 4),
        note=(f"Verified delivery (embplan verify {__version__}): {post_m.emission.upper()} {method}, delivered "
              f"{delivered.delivered_activity_gbq:.3f} GBq; lung dose = mean lung dose, normal_liver_dose_gy = mean "
              "dose to the whole non-tumour liver, as delivered."),
    )

    # ---- the post CT on the plan grid (for display and checks)
    post_ct = np.asarray(resample_moving(np.asarray(images.ct.array, np.float64), images.ct.grid, grid, t, "linear",
                                         default_value=-1000.0), dtype=np.float32)

    result = VerificationResult(
        patient_id=p.case.patient.id,
        plan_created_utc=p.provenance.created_utc,
        plan_sha256=plan_sha,
        plan_activity_gbq=p.dosimetry.activity_gbq,
        device=str(proc.device),  # TARE (checked above)
        post=jsonable(post_m.model_dump(mode="json") | {"base_dir": str(post_m.base_dir)}),
        delivered=delivered,
        emission=post_m.emission,
        calibration=jsonable(calibration),
        registration=jsonable(reg.as_dict()),
        dose_method=method,
        planned_dose_source=planned_source,
        structures=rows,
        dvh=dvhs,
        lung_shunt_planned_fraction=float(p.dosimetry.lung_shunt_fraction),
        lung_shunt_delivered_fraction=lsf_delivered,
        activity_on_grid_mbq=float(act.sum()),
        activity_liver_mbq=a_liver,
        activity_lungs_mbq=a_lungs,
        activity_outside_fraction=out_fraction,
        deposits=deposits,
        delivered_doses=dl,
        planned_doses=summary["planned"],
        flags=flags,
        gamma=gamma_res,
        prior_treatment=prior.model_dump(mode="json", exclude_none=True),
        notes=notes,
        provenance={"embplan_version": __version__, "created_utc": _dt.datetime.now(_dt.UTC).isoformat(
            timespec="seconds").replace("+00:00", "Z"), "dose_method": method, "k_gy_kg_per_gbq": k,
            "dose_reference": CHIESA_2021, "options": opts.model_dump(mode="json"),
            "kernel": jsonable(dm.provenance())},
    )
    out_arrays: dict[str, np.ndarray] = {
        "delivered_activity_mbq": act,
        "delivered_dose_gy": delivered_gy,
        "planned_dose_gy": planned_gy,
        "difference_gy": delivered_gy - planned_gy,
        "post_ct_hu": post_ct,
        "plan_ct_hu": np.asarray(arrays["ct_hu"], dtype=np.float32) if "ct_hu" in arrays else post_ct * 0.0 - 1000.0,
        "density_g_cm3": density.astype(np.float32),
        "deposit_labels": deposit_labels,
    }
    units = {"delivered_activity_mbq": "MBq", "delivered_dose_gy": "Gy", "planned_dose_gy": "Gy",
             "difference_gy": "Gy", "post_ct_hu": "HU", "plan_ct_hu": "HU", "density_g_cm3": "g/cm3", "deposit_labels": "1"}
    if gamma_arr is not None:
        out_arrays["gamma"] = gamma_arr
        units["gamma"] = "1"
    for name, m in masks.items():
        out_arrays[f"mask_{name}"] = m
        units[f"mask_{name}"] = "1"
    return Verification(result=result, grid=grid, arrays=out_arrays, units=units, transform=t)


def prior_treatment(verification: Verification | VerificationResult) -> PriorTreatment:
    """The TARE record of a verified delivery (delivered activity, mean lung dose and whole non-tumour liver mean
    dose as delivered) for ``patient.prior_treatments`` of the next case: its lung dose counts toward the
    cumulative lung limit, its normal-liver dose toward the cumulative liver figures."""
    res = verification.result if isinstance(verification, Verification) else verification
    return PriorTreatment.model_validate(res.prior_treatment)
