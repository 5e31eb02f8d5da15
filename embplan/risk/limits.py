"""Dose limits and targets for a TARE case (what the planner prescribes against), and the lung-shunt reduction.

Decisions (documented here, tested in tests/risk/test_limits.py):

- Resin, "bilobar treatment of a liver pretreated with chemotherapy" (EANM 2022, Table 3: < 30 Gy instead of
  < 40 Gy): "bilobar treatment" is read as a single session whose territory has whole-liver scope (a lobar or
  segmental session treats one lobe whatever the disease distribution); "pretreated with chemotherapy" as any
  prior treatment record of kind ``chemotherapy`` (systemic). Intra-arterial chemotherapy (TACE) is not counted:
  the guideline's row comes from colorectal patients after systemic lines.
- Glass: bilirubin > 1.1 mg/dL lowers the whole non-tumour liver limit from 75 to 50 Gy; a hepatic reserve
  (untreated liver) below 30 % adds a perfused non-tumour liver limit of 120 Gy (EANM 2022).
- A prescription's own ``normal_liver_dose_limit_gy`` / ``lung_dose_limit_gy`` is what the planner prescribes
  against, whether tighter or looser than the guideline: the treating team decides. A looser one is allowed but
  not silent: the guideline limit stays in :class:`DoseLimits` and ``assess_dose`` flags any planned dose above
  it (NON_TUMOR_LIVER_DOSE_HIGH warning; LUNG_DOSE_LIMIT contraindication).
- Lung: 30 Gy per session and 50 Gy cumulative including earlier TARE sessions (their recorded lung doses; a record
  without one counts 0 and is reported in ``prior_lung_dose_unknown_count``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import CaseError
from ..thresholds import EANM_2022, Thresholds
from .case_facts import case_hepatic_reserve_fraction, effective_thresholds, prior_tare
from .flags import Flag, Severity

if TYPE_CHECKING:  # pragma: no cover
    from ..case import Case

__all__ = ["DoseLimits", "dose_limits", "lung_shunt_reduction"]

_LSF_EVIDENCE = (
    "van Roekel thesis p.41 (resin: lung shunt 10-15% -> -20%, 15-20% -> -40%, > 20% -> no treatment; after the "
    f"SIR-Spheres IFU [U]); {EANM_2022} (glass: the lung dose, 30 Gy per session, decides)"
)


class DoseLimits(BaseModel):
    """The limits and targets in force for one TARE case (Gy, mean absorbed dose per compartment)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    device: Literal["resin", "glass"]
    normal_liver_limit_gy: float = Field(gt=0, description="limit the planner prescribes against")
    guideline_normal_liver_limit_gy: float = Field(gt=0, description="the guideline limit for this case")
    normal_liver_limit_from_prescription: bool
    normal_liver_limit_reason: str
    normal_liver_limit_source: str
    perfused_normal_liver_limit_gy: float | None = Field(default=None, gt=0)
    perfused_normal_liver_limit_reason: str | None = None
    lung_session_limit_gy: float = Field(gt=0, description="guideline limit per session")
    lung_prescription_limit_gy: float | None = Field(default=None, gt=0)
    lung_cumulative_limit_gy: float = Field(gt=0)
    prior_lung_dose_gy: float = Field(ge=0)
    prior_lung_dose_unknown_count: int = Field(ge=0)
    lung_remaining_gy: float = Field(ge=0, description="cumulative limit minus prior lung dose (>= 0)")
    tumor_target_gy: float = Field(gt=0)
    tumor_target_source: str
    hepatic_reserve_fraction: float | None = Field(default=None, ge=0, le=1)

    @property
    def lung_max_gy(self) -> float:
        """The most lung dose this session may give: min(session limit, remaining cumulative, prescription)."""
        limits = [self.lung_session_limit_gy, self.lung_remaining_gy]
        if self.lung_prescription_limit_gy is not None:
            limits.append(self.lung_prescription_limit_gy)
        return min(limits)

    @property
    def applicable_normal_liver_limit_gy(self) -> float:
        """The tighter of the guideline and the prescription limit (what a planned dose is flagged against)."""
        return min(self.normal_liver_limit_gy, self.guideline_normal_liver_limit_gy)


def dose_limits(
    case: Case, thresholds: Thresholds | None = None, *, hepatic_reserve_fraction: float | None = None
) -> DoseLimits:
    """Limits and targets for a TARE ``case``.

    ``thresholds``: the base set (defaults when None); the case's overrides apply on top.
    ``hepatic_reserve_fraction``: untreated liver fraction known from images, used when the case alone does not
    decide it (no volumes). Raises CaseError when the procedure is not TARE.
    """
    proc = case.procedure
    if proc.kind != "TARE":
        raise CaseError(f"procedure.kind: dose limits apply to TARE only, got {proc.kind}")
    th = effective_thresholds(case, thresholds)
    device = proc.device
    bilirubin = case.patient.labs.bilirubin_mg_dl

    if device == "resin":
        pretreated = any(t.kind == "chemotherapy" for t in case.patient.prior_treatments)
        bilobar = proc.territory.scope == "whole_liver"
        if pretreated and bilobar:
            guideline = th.resin_normal_liver_limit_pretreated_bilobar_gy
            reason = "resin, whole-liver (bilobar) session in a liver pretreated with chemotherapy"
        else:
            guideline = th.resin_normal_liver_limit_gy
            reason = "resin, whole non-tumour liver"
        source = f"{EANM_2022}, Table 3"
        target, target_src = th.resin_tumor_dose_target_gy, f"{EANM_2022}, Table 3 (resin; not validated in NET)"
    else:
        if bilirubin > th.bilirubin_glass_caution_mg_dl:
            guideline = th.glass_normal_liver_limit_high_bilirubin_gy
            reason = f"glass, bilirubin {bilirubin:g} > {th.bilirubin_glass_caution_mg_dl:g} mg/dL"
        else:
            guideline = th.glass_normal_liver_limit_gy
            reason = "glass, whole non-tumour liver"
        source = f"{EANM_2022}, Table 2"
        target, target_src = th.glass_tumor_dose_target_gy, f"{EANM_2022}, Table 2 (glass; not validated in NET)"

    rx = proc.prescription
    rx_limit = getattr(rx, "normal_liver_dose_limit_gy", None)
    if rx_limit is not None:
        relation = "tighter than" if rx_limit < guideline else ("equal to" if rx_limit == guideline else
                                                                "LOOSER than")
        reason = f"prescription limit {rx_limit:g} Gy ({relation} the guideline {guideline:g} Gy: {reason})"

    reserve = case_hepatic_reserve_fraction(case)
    if reserve is None:
        reserve = hepatic_reserve_fraction
    perfused_limit = perfused_reason = None
    if device == "glass" and reserve is not None and reserve < th.hepatic_reserve_min_fraction:
        perfused_limit = th.glass_perfused_normal_liver_limit_low_reserve_gy
        perfused_reason = (
            f"glass, hepatic reserve {reserve:.3f} < {th.hepatic_reserve_min_fraction}: perfused non-tumour liver "
            f"< {perfused_limit} Gy ({EANM_2022})"
        )

    prior = prior_tare(case)
    return DoseLimits(
        device=device,
        normal_liver_limit_gy=rx_limit if rx_limit is not None else guideline,
        guideline_normal_liver_limit_gy=guideline,
        normal_liver_limit_from_prescription=rx_limit is not None,
        normal_liver_limit_reason=reason,
        normal_liver_limit_source=source,
        perfused_normal_liver_limit_gy=perfused_limit,
        perfused_normal_liver_limit_reason=perfused_reason,
        lung_session_limit_gy=th.lung_dose_session_limit_gy,
        lung_prescription_limit_gy=getattr(rx, "lung_dose_limit_gy", None),
        lung_cumulative_limit_gy=th.lung_dose_cumulative_limit_gy,
        prior_lung_dose_gy=prior.lung_dose_gy,
        prior_lung_dose_unknown_count=prior.lung_dose_unknown_count,
        lung_remaining_gy=max(0.0, th.lung_dose_cumulative_limit_gy - prior.lung_dose_gy),
        tumor_target_gy=target,
        tumor_target_source=target_src,
        hepatic_reserve_fraction=reserve,
    )


def lung_shunt_reduction(
    case_or_lsf: Case | float, device: Literal["resin", "glass"] | None = None, thresholds: Thresholds | None = None,
    method: str | None = None,
) -> tuple[float, Flag | None]:
    """Activity reduction for a lung shunt fraction, and the LUNG_SHUNT_HIGH flag (None when it does not fire).

    ``case_or_lsf``: a TARE case (lung shunt from ``case.dosimetry``, device from the procedure, the case's
    threshold overrides applied) or a lung shunt fraction in [0, 1) (then ``device`` is required).

    Resin (van Roekel thesis p.41): LSF < 10 % -> no reduction; 10 % <= LSF <= 15 % -> caution, reduce 20 %;
    15 % < LSF <= 20 % -> caution, reduce 40 %; LSF > 20 % -> contraindication, returned reduction 1.0 (do not
    treat). Glass: LSF > 10 % -> caution with no reduction (0.0): the lung dose limit decides.
    Returns (0.0, None) when a case has no lung shunt fraction (the planner may know it from images).
    ``method`` (the prescription method; taken from the case when a case is given) words the message: the
    reduction is the BSA method's, applied by a BSA plan and not by a partition or MIRD one.
    """
    if isinstance(case_or_lsf, int | float) and not isinstance(case_or_lsf, bool):
        lsf = float(case_or_lsf)
        th = thresholds if thresholds is not None else Thresholds()
        if device not in ("resin", "glass"):
            raise CaseError(f"device: must be 'resin' or 'glass', got {device!r}")
        if not 0.0 <= lsf < 1.0:
            raise CaseError(f"dosimetry.lung_shunt_fraction: must be in [0, 1), got {lsf}")
    else:
        case = case_or_lsf
        if case.procedure.kind != "TARE":
            return 0.0, None
        th = effective_thresholds(case, thresholds)
        device = device or case.procedure.device
        if case.dosimetry is None or case.dosimetry.lung_shunt_fraction is None:
            return 0.0, None
        lsf = float(case.dosimetry.lung_shunt_fraction)

    ctx = {"lung_shunt_fraction": lsf, "device": device}
    # issue 11: the 20/40 % reduction is a rule of the BSA method; a partition or MIRD prescription limits the lung
    # dose instead, and a BSA plan has already applied the reduction (the message says so, not "reduce").
    if not (isinstance(case_or_lsf, int | float) and not isinstance(case_or_lsf, bool)):
        method = case_or_lsf.procedure.prescription.method  # type: ignore[union-attr]
        ctx["prescription_method"] = method

    def _band(reduction: float) -> str:
        if method == "bsa":
            return (f"the BSA activity of this plan is reduced by {reduction:.0%} (applied); check the lung dose "
                    f"(<= {th.lung_dose_session_limit_gy:g} Gy).")
        if method is None:
            return (f"with the BSA method reduce the activity by {reduction:.0%}; with the partition or MIRD method "
                    f"the lung dose limit (<= {th.lung_dose_session_limit_gy:g} Gy) decides.")
        return (f"the {method} prescription keeps the lung dose within its limit (<= "
                f"{th.lung_dose_session_limit_gy:g} Gy per session); the {reduction:.0%} reduction is a rule of the "
                "BSA method and is not applied.")

    if device == "resin":
        ctx.update(
            lsf_resin_reduce_low_fraction=th.lsf_resin_reduce_low_fraction,
            lsf_resin_reduce_high_fraction=th.lsf_resin_reduce_high_fraction,
            lsf_resin_contraindication_fraction=th.lsf_resin_contraindication_fraction,
        )
        if lsf > th.lsf_resin_contraindication_fraction:
            reduction, sev = 1.0, Severity.CONTRAINDICATION
            msg = (
                f"Lung shunt {lsf:.1%} > {th.lsf_resin_contraindication_fraction:.0%} with resin microspheres: do not "
                "treat (consider shunt reduction by embolization of the shunting vessel, or another therapy)."
            )
        elif lsf > th.lsf_resin_reduce_high_fraction:
            reduction, sev = th.resin_activity_reduction_high_fraction, Severity.CAUTION
            msg = (
                f"Lung shunt {lsf:.1%} in the {th.lsf_resin_reduce_high_fraction:.0%}-"
                f"{th.lsf_resin_contraindication_fraction:.0%} band with resin: " + _band(reduction)
            )
        elif lsf >= th.lsf_resin_reduce_low_fraction:
            reduction, sev = th.resin_activity_reduction_low_fraction, Severity.CAUTION
            msg = (
                f"Lung shunt {lsf:.1%} in the {th.lsf_resin_reduce_low_fraction:.0%}-"
                f"{th.lsf_resin_reduce_high_fraction:.0%} band with resin: " + _band(reduction)
            )
        else:
            return 0.0, None
        ctx["activity_reduction_fraction"] = reduction
    else:
        ctx["lsf_glass_caution_fraction"] = th.lsf_glass_caution_fraction
        if lsf <= th.lsf_glass_caution_fraction:
            return 0.0, None
        reduction, sev = 0.0, Severity.CAUTION
        msg = (
            f"Lung shunt {lsf:.1%} > {th.lsf_glass_caution_fraction:.0%} with glass microspheres: no fixed reduction; "
            f"the lung dose decides (<= {th.lung_dose_session_limit_gy:g} Gy per session, "
            f"<= {th.lung_dose_cumulative_limit_gy:g} Gy cumulative). Planar MAA overestimates the shunt: prefer "
            "SPECT/CT."
        )
        ctx["activity_reduction_fraction"] = reduction
    flag = Flag(code="LUNG_SHUNT_HIGH", severity=sev, message=msg, evidence=_LSF_EVIDENCE, context=ctx)
    return reduction, flag
