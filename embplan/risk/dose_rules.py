"""The dose rules: flags that need a dosimetry result (run inside ``plan()`` after the dose is known).

Severity choices (documented decisions):

- LUNG_DOSE_LIMIT -> contraindication when the session lung dose is above 30 Gy or the cumulative lung dose
  (earlier sessions included) above 50 Gy (EANM 2022: limits, not targets; radiation pneumonitis is often fatal).
  No "close to the limit" caution: the planner prescribes up to the limit, so such a caution would fire on every
  activity-maximising plan and carry no information. A dose above a tighter limit written in the prescription
  (``prescription.lung_dose_limit_gy``) but within the guideline -> warning (the team's own limit was exceeded).
- NON_TUMOR_LIVER_DOSE_HIGH -> warning, not contraindication: the normal-liver limits are population thresholds
  for a toxicity probability (REILD), defined on a mean dose that compartment and voxel models estimate with wide
  disagreement (Morán 2020; Mikell 2016), and a glass Y-90 PET study found no correlation between non-tumoural
  liver dose and toxicity (Dewaraja, JNM 2020). Exceeding one calls for a justification or a changed plan.
- TUMOR_DOSE_LOW -> caution: the targets (resin 100 Gy, glass 205 Gy) come from HCC, ICC and colorectal series;
  no tumour-dose threshold is validated for NET. Below them the response is less likely, which is worth acting on
  (a smaller territory, segmental treatment, or a documented acceptance), but it is not a safety risk.

Comparisons are strict as the sources are worded ("lung dose > 30 Gy" blocks; 30.0 Gy does not; a tumour dose of
exactly 100 Gy meets the 100 Gy target), with a relative tolerance of :data:`REL_TOL` (1e-9, i.e. 3e-8 Gy at
30 Gy) so that a dose prescribed exactly at a limit does not fire on floating-point rounding.

LUNG_SHUNT_HIGH and HEPATIC_RESERVE_LOW are case-level rules; ``assess_dose`` adds them only when the case alone
could not decide them (no lung shunt fraction, no volumes in the case) and the dosimetry result knows the value
(e.g. from images), so that ``assess(case) + assess_dose(case, facts)`` never holds the same code twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import CaseError, DosimetryError
from ..thresholds import EANM_2022, VAN_ROEKEL, Thresholds
from . import evidence as ev
from .case_facts import case_hepatic_reserve_fraction, effective_thresholds
from .flags import Flag, Severity, sort_flags
from .limits import DoseLimits, dose_limits, lung_shunt_reduction
from .rules import hepatic_reserve_flag

if TYPE_CHECKING:  # pragma: no cover
    from ..case import Case

__all__ = ["DoseFacts", "assess_dose", "DOSE_RULES", "REL_TOL", "rule_lung_dose_limit",
           "rule_non_tumor_liver_dose_high", "rule_tumor_dose_low"]

#: Relative tolerance of the dose comparisons (floating-point rounding of a dose prescribed at a limit).
REL_TOL = 1e-9


def _above(value: float, limit: float) -> bool:
    return value > limit * (1.0 + REL_TOL)


def _below(value: float, limit: float) -> bool:
    return value < limit * (1.0 - REL_TOL)


class DoseFacts(BaseModel):
    """What the dosimetry computed for one TARE session (mean absorbed doses, Gy)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    device: Literal["resin", "glass"]
    tumor_dose_gy: float | None = Field(default=None, ge=0, description="mean dose to the (perfused) tumour")
    normal_liver_dose_gy: float = Field(ge=0, description="mean dose to the whole non-tumour liver")
    perfused_normal_liver_dose_gy: float | None = Field(
        default=None, ge=0, description="mean dose to the perfused non-tumour liver"
    )
    lung_dose_gy: float = Field(ge=0, description="mean lung dose of this session")
    prior_lung_dose_gy: float | None = Field(
        default=None, ge=0, description="sum of the lung doses of earlier TARE sessions (None: from the case records)"
    )
    hepatic_reserve_fraction: float | None = Field(
        default=None, ge=0, le=1, description="untreated fraction of the liver (from images when the case has no volumes)"
    )
    lung_shunt_fraction: float | None = Field(
        default=None, ge=0, lt=1, description="lung shunt fraction used (from images when the case has none)"
    )
    source: Literal["compartment", "voxel"]
    # --- issue 13: the definition of the doses above in words (the planner passes the compartment model at the
    # delivered activity) and, for the tumour, the voxel map's value shown beside it
    definition: str | None = Field(default=None, description="what the doses above mean (model, activity)")
    voxel_tumor_dose_gy: float | None = Field(default=None, ge=0, description="voxel-map tumour mean, shown beside")
    voxel_dose_method: str | None = None


def _ctx_common(facts: DoseFacts) -> dict[str, object]:
    ctx: dict[str, object] = {"dose_source": facts.source, "device": facts.device}
    if facts.definition is not None:
        ctx["dose_definition"] = facts.definition
    return ctx


def _checked(facts: DoseFacts) -> str:
    """The definition a rule checks, for its message."""
    return f" [checked: {facts.definition}]" if facts.definition else f" [checked: {facts.source} dose]"


def rule_lung_dose_limit(case: Case, facts: DoseFacts, limits: DoseLimits, th: Thresholds) -> list[Flag]:
    """Session lung dose > 30 Gy or cumulative (with earlier sessions) > 50 Gy -> contraindication; above a
    tighter prescription limit only -> warning."""
    session = facts.lung_dose_gy
    prior = facts.prior_lung_dose_gy if facts.prior_lung_dose_gy is not None else limits.prior_lung_dose_gy
    cumulative = session + prior
    ctx = {
        **_ctx_common(facts), "lung_dose_gy": session, "prior_lung_dose_gy": prior, "cumulative_lung_dose_gy":
        cumulative, "lung_dose_session_limit_gy": limits.lung_session_limit_gy,
        "lung_dose_cumulative_limit_gy": limits.lung_cumulative_limit_gy,
        "lung_prescription_limit_gy": limits.lung_prescription_limit_gy,
    }
    findings = []
    if _above(session, limits.lung_session_limit_gy):
        findings.append(f"session lung dose {session:.1f} Gy > {limits.lung_session_limit_gy:g} Gy")
    if _above(cumulative, limits.lung_cumulative_limit_gy):
        findings.append(
            f"cumulative lung dose {cumulative:.1f} Gy ({prior:.1f} Gy earlier + {session:.1f} Gy now) > "
            f"{limits.lung_cumulative_limit_gy:g} Gy"
        )
    evidence = f"{EANM_2022}; {VAN_ROEKEL}"
    if findings:
        return [Flag(
            code="LUNG_DOSE_LIMIT", severity=Severity.CONTRAINDICATION,
            message="Lung dose limit exceeded: " + "; ".join(findings) + ": risk of radiation pneumonitis. Reduce "
            "the activity, reduce the shunt, or do not treat." + _checked(facts),
            evidence=evidence, context=ctx,
        )]
    rx = limits.lung_prescription_limit_gy
    if rx is not None and _above(session, rx):
        return [Flag(
            code="LUNG_DOSE_LIMIT", severity=Severity.WARNING,
            message=f"Session lung dose {session:.1f} Gy exceeds the prescription's own lung limit {rx:g} Gy "
            f"(within the guideline {limits.lung_session_limit_gy:g} Gy)." + _checked(facts),
            evidence=evidence, context=ctx,
        )]
    return []


def rule_non_tumor_liver_dose_high(case: Case, facts: DoseFacts, limits: DoseLimits, th: Thresholds) -> list[Flag]:
    """Whole non-tumour liver mean dose above the applicable limit (the tighter of guideline and prescription), or
    perfused non-tumour liver above 120 Gy with glass and a hepatic reserve < 30 % -> warning."""
    findings = []
    nl = facts.normal_liver_dose_gy
    applicable = limits.applicable_normal_liver_limit_gy
    ctx = {
        **_ctx_common(facts), "normal_liver_dose_gy": nl, "normal_liver_limit_gy": applicable,
        "guideline_normal_liver_limit_gy": limits.guideline_normal_liver_limit_gy,
        "prescription_normal_liver_limit_gy": limits.normal_liver_limit_gy
        if limits.normal_liver_limit_from_prescription else None,
        "normal_liver_limit_reason": limits.normal_liver_limit_reason,
    }
    if _above(nl, applicable):
        if _above(nl, limits.guideline_normal_liver_limit_gy):
            what = f"the guideline limit {limits.guideline_normal_liver_limit_gy:g} Gy"
            if limits.normal_liver_limit_from_prescription and (
                limits.normal_liver_limit_gy > limits.guideline_normal_liver_limit_gy
            ):
                what += f" (the prescription allows {limits.normal_liver_limit_gy:g} Gy, looser than the guideline)"
        else:
            what = f"the prescription's own limit {limits.normal_liver_limit_gy:g} Gy"
        findings.append(f"whole non-tumour liver {nl:.1f} Gy > {what} ({limits.normal_liver_limit_reason})")
    pl = limits.perfused_normal_liver_limit_gy
    pnl = facts.perfused_normal_liver_dose_gy
    if pl is not None:
        ctx.update(perfused_normal_liver_dose_gy=pnl, perfused_normal_liver_limit_gy=pl,
                   hepatic_reserve_fraction=limits.hepatic_reserve_fraction)
        if pnl is not None and _above(pnl, pl):
            findings.append(f"perfused non-tumour liver {pnl:.1f} Gy > {pl:g} Gy ({limits.perfused_normal_liver_limit_reason})")
    if not findings:
        return []
    return [Flag(
        code="NON_TUMOR_LIVER_DOSE_HIGH", severity=Severity.WARNING,
        message="Non-tumour liver dose above its limit: " + "; ".join(findings) + ". Risk of radioembolization-"
        "induced liver disease and, in long-surviving NET patients, chronic hepatotoxicity: reduce the activity or "
        "the territory, or document why the dose is accepted." + _checked(facts),
        evidence=f"{limits.normal_liver_limit_source}; {EANM_2022}; {ev.ROBERSON_REILD}; {ev.CURRIE_2019}",
        context=ctx,
    )]


def rule_tumor_dose_low(case: Case, facts: DoseFacts, limits: DoseLimits, th: Thresholds) -> list[Flag]:
    """Tumour mean dose below the device target (resin 100 Gy, glass 205 Gy) -> caution; the message says that
    no NET-validated threshold exists."""
    td = facts.tumor_dose_gy
    if td is None or not _below(td, limits.tumor_target_gy):
        return []
    beside = ""
    if facts.voxel_tumor_dose_gy is not None:
        beside = (f" The voxel map ({facts.voxel_dose_method or 'voxel'}) gives {facts.voxel_tumor_dose_gy:.1f} Gy "
                  "(cross-fire and partial volume; not the definition of the target).")
    return [Flag(
        code="TUMOR_DOSE_LOW", severity=Severity.CAUTION,
        message=f"Tumour mean dose {td:.1f} Gy < {limits.tumor_target_gy:g} Gy, the {facts.device} target from HCC, "
        "ICC and colorectal series: response is less likely. No tumour-dose threshold is validated for NET; "
        "consider a smaller (segmental) territory or accept the dose with a documented reason." + beside
        + _checked(facts),
        evidence=f"{limits.tumor_target_source}; {ev.NET_NO_DOSE_THRESHOLD}",
        context={**_ctx_common(facts), "tumor_dose_gy": td, "tumor_target_gy": limits.tumor_target_gy,
                 "net_validated_threshold": False, "voxel_tumor_dose_gy": facts.voxel_tumor_dose_gy},
    )]


#: The dose rules, in the order they run.
DOSE_RULES = (rule_lung_dose_limit, rule_non_tumor_liver_dose_high, rule_tumor_dose_low)


def assess_dose(case: Case, facts: DoseFacts, thresholds: Thresholds | None = None) -> list[Flag]:
    """Dose flags for a TARE ``case`` given its dosimetry result, most severe first.

    ``thresholds``: a base set (defaults when None); the case's overrides apply on top. Adds LUNG_SHUNT_HIGH and
    HEPATIC_RESERVE_LOW from ``facts`` only when the case alone could not decide them (see module docstring).
    Raises CaseError for a procedure other than TARE, DosimetryError when ``facts.device`` differs from the
    case's device.
    """
    proc = case.procedure
    if proc.kind != "TARE":
        raise CaseError(f"procedure.kind: dose rules apply to TARE only, got {proc.kind}")
    if facts.device != proc.device:
        raise DosimetryError(f"facts.device: {facts.device!r} differs from procedure.device {proc.device!r}")
    th = effective_thresholds(case, thresholds)
    limits = dose_limits(case, th, hepatic_reserve_fraction=facts.hepatic_reserve_fraction)
    flags: list[Flag] = []
    for rule in DOSE_RULES:
        flags.extend(rule(case, facts, limits, th))
    case_lsf = case.dosimetry.lung_shunt_fraction if case.dosimetry is not None else None
    if case_lsf is None and facts.lung_shunt_fraction is not None:
        _, flag = lung_shunt_reduction(facts.lung_shunt_fraction, facts.device, th,
                                       method=proc.prescription.method)
        if flag is not None:
            flags.append(flag)
    if case_hepatic_reserve_fraction(case) is None and facts.hepatic_reserve_fraction is not None:
        if facts.hepatic_reserve_fraction < th.hepatic_reserve_min_fraction:
            flags.append(hepatic_reserve_flag(case, facts.hepatic_reserve_fraction, th))
    return sort_flags(flags)
