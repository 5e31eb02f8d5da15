"""The tumour board's review as data: options judged criterion by criterion, a recommendation, the course across
sessions and lobes, the liver's reserve over the years, consent numbers and the follow-up schedule.

These models are results (frozen). They are what ``embplan.review(case)`` returns, what ``Plan.board`` holds, what
the plan file stores in ``/plan_json`` and what the report's first page and ``embplan board`` print. The logic that
fills them lives beside this module in ``embplan.board``; this module only states their shape.

Conventions:
- a criterion is ``met``, ``unmet`` or ``unknown``; **unknown is never counted as met**: an option with an unknown
  criterion that would decide eligibility is ``needs_data``, not ``possible``;
- every criterion carries the case value it read (as text, with units), the threshold it compared against (as text,
  with the threshold's name in :class:`embplan.thresholds.Thresholds` where there is one) and its citation;
- every number a patient or a board reads (consent outcomes, intervals, schedule) carries its source.
"""

from __future__ import annotations

import datetime as _dt
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CriterionStatus",
    "OptionStatus",
    "Criterion",
    "BoardOption",
    "RecommendationStep",
    "Recommendation",
    "TerritoryCourse",
    "StagedStep",
    "TerritoryDose",
    "PriorDoseFile",
    "CumulativeStructure",
    "CumulativeVoxelDose",
    "LiverReserve",
    "ConsentItem",
    "FollowUpItem",
    "BoardReview",
]


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class CriterionStatus(StrEnum):
    MET = "met"
    UNMET = "unmet"
    UNKNOWN = "unknown"


class OptionStatus(StrEnum):
    RECOMMENDED = "recommended"
    POSSIBLE = "possible"
    NOT_ELIGIBLE = "not_eligible"
    NEEDS_DATA = "needs_data"


class Criterion(_Result):
    """One criterion of one option: what was required, what the case says, the verdict, the source."""

    key: str = Field(description="stable identifier, e.g. 'future_liver_remnant'")
    label: str = Field(description="what a board reads, e.g. 'Future liver remnant >= 30%'")
    status: CriterionStatus
    value: str | None = Field(default=None, description="the case value read, with its unit; None when absent")
    threshold: str | None = Field(default=None, description="the requirement, e.g. '>= 30 % (resection_flr_min_percent)'")
    source: str = Field(description="citation")
    note: str = ""


class BoardOption(_Result):
    """One option the board weighs (resection, debulking, transplant under one rule set, ablation, intra-arterial
    therapy of one territory, systemic therapy), with its verdict and every criterion behind it."""

    key: str = Field(description="stable identifier, e.g. 'resection', 'transplant_milan', 'intra_arterial_right_lobe'")
    title: str
    status: OptionStatus
    criteria: list[Criterion] = Field(default_factory=list)
    reason: str = Field(default="", description="one line: why this status")
    citations: list[str] = Field(default_factory=list)
    procedure: str | None = Field(default=None, description="for intra-arterial options: TAE, TACE or TARE")
    territory: str | None = Field(default=None, description="for intra-arterial options: the lobe or segments")


class RecommendationStep(_Result):
    order: int = Field(ge=1)
    option_key: str
    action: str = Field(description="what to do, in one line")
    reason: str
    citations: list[str] = Field(default_factory=list)


class Recommendation(_Result):
    summary: str = Field(description="the answer in one or two sentences")
    steps: list[RecommendationStep] = Field(default_factory=list)
    would_change: list[str] = Field(default_factory=list, description="data that would change the recommendation")


class TerritoryCourse(_Result):
    """One lobe (or segment group): what was done there, with what response, and the next step."""

    territory: str = Field(description="'right lobe', 'left lobe', 'segments 2, 3', 'whole liver'")
    disease_present: bool | None = None
    history: list[str] = Field(default_factory=list, description="one line per prior treatment of this territory")
    last_response: str | None = None
    next_step: str | None = Field(default=None, description="TAE, TACE, TARE, none, or another option")
    reason: str = ""


class StagedStep(_Result):
    order: int = Field(ge=1)
    territory: str
    procedure: str
    earliest_date: _dt.date | None = None
    interval_days: int | None = Field(default=None, ge=0)
    source: str = ""
    note: str = ""


class TerritoryDose(_Result):
    """Cumulative absorbed dose to one territory from prior (and the planned) radioembolization."""

    territory: str
    prior_sessions: int = Field(ge=0)
    cumulative_normal_liver_gy: float | None = Field(default=None, ge=0)
    cumulative_lung_gy: float | None = Field(default=None, ge=0)
    source: str = Field(default="", description="compartment values from the history, or voxel maps of plan files")
    # ---- voxel maps of plan files (issue 11): mass-weighted means of the summed maps over the territory ----
    prior_normal_liver_gy: float | None = Field(default=None, ge=0, description="earlier sessions' voxel maps")
    this_plan_normal_liver_gy: float | None = Field(default=None, ge=0, description="this plan's voxel map")
    cumulative_normal_liver_bed_gy: float | None = Field(default=None, ge=0,
                                                         description="sum of the sessions' BED (liver alpha/beta)")
    volume_ml: float | None = Field(default=None, ge=0, description="the territory's non-tumour liver (or lung) volume")


class PriorDoseFile(_Result):
    """One earlier TARE session's dose map read for the voxel sum."""

    record: int = Field(ge=0, description="index in patient.prior_treatments")
    date: _dt.date
    territory: str | None = None
    path: str
    description: str
    placement: str = Field(description="how it was put on the current grid (same grid, or resampled)")


class CumulativeStructure(_Result):
    """Mass-weighted mean doses over one structure of the current images: earlier sessions, this plan, the plain
    sum, and the BED sum."""

    structure: str
    volume_ml: float = Field(ge=0)
    prior_gy: float = Field(ge=0)
    this_plan_gy: float = Field(ge=0)
    cumulative_gy: float = Field(ge=0)
    cumulative_bed_gy: float | None = Field(default=None, ge=0)


class CumulativeVoxelDose(_Result):
    """The liver over the years from voxel maps: every earlier TARE dose map of the case summed with this plan's on
    the current grid (plain physical sum, and the sum of the sessions' BED), with the means per structure and lobe,
    the cumulative DVH of the non-tumour liver (``dosimetry.dvh[dvh_key]``) and the limit it is compared with."""

    files: list[PriorDoseFile]
    frame_of_reference_uid: str
    dose_method: str = Field(description="this plan's dose map that is summed")
    definition: str
    bed_alpha_beta_gy: float = Field(gt=0)
    bed_repair_half_time_h: float = Field(gt=0)
    bed_source: str
    structures: list[CumulativeStructure] = Field(default_factory=list)
    dvh_key: str | None = Field(default=None, description="key of the cumulative non-tumour liver DVH in dosimetry.dvh")
    d_gy: dict[str, float] = Field(default_factory=dict, description="Dx of the cumulative non-tumour liver DVH")
    v_percent: dict[str, float] = Field(default_factory=dict, description="Vx of the cumulative non-tumour liver DVH")
    normal_liver_limit_gy: float | None = Field(default=None, gt=0)
    normal_liver_limit_source: str = ""
    exceeds_limit: bool = False
    notes: list[str] = Field(default_factory=list)

    def structure(self, name: str) -> CumulativeStructure:
        for s in self.structures:
            if s.structure == name:
                return s
        raise KeyError(name)


class LiverReserve(_Result):
    albi_score: float | None = None
    albi_grade: int | None = Field(default=None, ge=1, le=3)
    albi_source: str = ""
    cirrhosis: bool | None = None
    ascites: bool | None = None
    compensated: bool | None = Field(default=None, description="None when the data cannot decide")
    territory_doses: list[TerritoryDose] = Field(default_factory=list)
    prior_prrt: bool = False
    prior_ebrt: bool = False
    notes: list[str] = Field(default_factory=list)
    #: issue 11: earlier TARE dose maps summed with this plan's (only in a plan with DICOM images; None otherwise)
    cumulative_voxel: CumulativeVoxelDose | None = None


class ConsentItem(_Result):
    option_key: str
    outcome: str = Field(description="e.g. 'objective response rate'")
    value: str = Field(description="e.g. '55-60 %'")
    source: str
    caveat: str = Field(default="", description="e.g. 'from HCC series' or 'small series (n=54)'")


class FollowUpItem(_Result):
    date: _dt.date | None = None
    what: str
    source: str = ""


class BoardReview(_Result):
    """The whole review of one case."""

    case_id: str
    reference_date: _dt.date | None = Field(default=None, description="the procedure date, or the review date")
    options: list[BoardOption] = Field(default_factory=list)
    recommendation: Recommendation
    course: list[TerritoryCourse] = Field(default_factory=list)
    staged_plan: list[StagedStep] = Field(default_factory=list)
    liver: LiverReserve = Field(default_factory=LiverReserve)
    consent: list[ConsentItem] = Field(default_factory=list)
    follow_up: list[FollowUpItem] = Field(default_factory=list)
    data_gaps: list[str] = Field(default_factory=list, description="missing data that left criteria unknown")

    def option(self, key: str) -> BoardOption:
        for opt in self.options:
            if opt.key == key:
                return opt
        raise KeyError(key)
