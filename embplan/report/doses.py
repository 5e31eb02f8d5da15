"""The doses a report prints, each beside the limit or target in force: one function, read by every section.

:func:`key_doses` reads the plan's fields (it recomputes nothing): the dose set the plan's rules checked (the voxel
map's means when images were given, else the compartment model's), the limits in :class:`~embplan.risk.DoseLimits`
and the prescription's target. Page one, the detail table and the DVH's marks all take their numbers from it, so the
headline and the table can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    from ..plan_model import CompartmentDoses, Plan

__all__ = ["KeyDose", "key_doses", "chosen_doses", "delivered_meaning", "dose_definition", "dose_marks"]

Status = Literal["pass", "fail", "na"]


@dataclass(frozen=True)
class KeyDose:
    """One key dose: what it is, its value, and the bound it is judged against.

    ``bound_kind`` is ``"limit"`` (pass when the dose is at or under it), ``"target"`` (pass when at or over it),
    ``"prescribed"`` (the model's prescription input: shown, not judged) or ``None`` (no bound applies: status
    ``"na"``).
    """

    key: str
    label: str
    value_gy: float | None
    definition: str
    bound_gy: float | None
    bound_kind: Literal["limit", "target", "prescribed"] | None
    bound_label: str
    bound_source: str
    status: Status

    @property
    def status_text(self) -> str:
        if self.bound_kind == "prescribed":
            return "prescription"
        if self.status == "na":
            return "not applicable"
        if self.bound_kind == "target":
            return "meets target" if self.status == "pass" else "below target"
        return "within limit" if self.status == "pass" else "over limit"


def delivered_meaning(plan: Plan) -> bool:
    """True for plans whose doses follow issue 13's meaning (``dosimetry.dose_activity == "delivered"``): the rules
    check the compartment model at the delivered activity, with or without images. Older plans (and plans from
    before that field existed) checked the voxel map's means when images were given."""
    d = plan.dosimetry
    return d is not None and getattr(d, "dose_activity", "prescribed") == "delivered"


def chosen_doses(plan: Plan) -> CompartmentDoses | None:
    """The dose set the plan's rules checked: the compartment model's for plans with the delivered-activity
    meaning; for older plans the voxel map's when the plan has one, else the compartment model's."""
    d = plan.dosimetry
    if d is None:
        return None
    if delivered_meaning(plan):
        return d.compartment
    if d.source == "voxel" and d.voxel is not None:
        return d.voxel
    return d.compartment


def dose_definition(plan: Plan) -> str:
    """How the key doses were computed, in one line."""
    d = plan.dosimetry
    if d is None:
        return ""
    chosen = chosen_doses(plan)
    assert chosen is not None
    if chosen.source == "voxel":
        from .fmt import method_label

        how = f"voxel dose map ({method_label(d.method)}), mass-weighted mean over the structure"
    else:
        how = f"{chosen.source} compartment model, mean over the compartment"
    if delivered_meaning(plan):
        return f"Mean absorbed dose; {how}; for the delivered activity {d.activity_gbq:.2f} GBq."
    return f"Mean absorbed dose; {how}; for the prescribed activity {d.prescription.activity_gbq:.2f} GBq."


def _judge(value: float | None, bound: float | None, kind: str | None) -> Status:
    if value is None or bound is None or kind not in ("limit", "target"):
        return "na"
    if kind == "limit":
        return "pass" if value <= bound else "fail"
    return "pass" if value >= bound else "fail"


def key_doses(plan: Plan) -> list[KeyDose]:
    """The key doses of a TARE plan in reading order (empty for a plan without dosimetry)."""
    d = plan.dosimetry
    chosen = chosen_doses(plan)
    if d is None or chosen is None:
        return []
    lim = d.limits
    definition = dose_definition(plan)
    out: list[KeyDose] = []

    def add(key: str, label: str, value: float | None, bound: float | None, kind: Any, bound_label: str,
            source: str) -> None:
        out.append(KeyDose(key, label, value, definition, bound, kind if bound is not None else None,
                           bound_label if bound is not None else "no limit in force", source if bound is not None
                           else "", _judge(value, bound, kind)))

    device = lim.device
    caveat = " (not validated in NET)" if "not validated in NET" in lim.tumor_target_source else ""
    add("tumor", "Tumour (perfused)", chosen.tumor_gy, lim.tumor_target_gy, "target",
        f"{device} tumour target{caveat}", lim.tumor_target_source)
    nl_limit = lim.applicable_normal_liver_limit_gy
    add("normal_liver", "Non-tumour liver (whole)", chosen.normal_liver_gy, nl_limit, "limit",
        f"limit ({lim.normal_liver_limit_reason})", lim.normal_liver_limit_source)
    add("perfused_normal_liver", "Perfused non-tumour liver", chosen.perfused_normal_liver_gy,
        lim.perfused_normal_liver_limit_gy, "limit",
        f"limit ({lim.perfused_normal_liver_limit_reason or 'perfused territory'})", lim.normal_liver_limit_source)
    target = d.prescription.inputs.get("perfused_dose_target_gy")
    target = float(target) if isinstance(target, (int, float)) and not isinstance(target, bool) else None
    add("perfused", "Perfused liver", chosen.perfused_gy, target, "prescribed",
        f"prescribed ({d.prescription.method.upper()} model)", "the case's prescription")
    lung_limit = lim.lung_max_gy
    which = "session limit" if lung_limit == lim.lung_session_limit_gy else (
        "prescription limit" if lung_limit == lim.lung_prescription_limit_gy else "remaining cumulative allowance")
    add("lung", "Lungs (this session)", chosen.lung_gy, lung_limit, "limit", which,
        "EANM 2022 (Weber et al.); thresholds lung_dose_session_limit_gy / lung_dose_cumulative_limit_gy")
    if lim.prior_lung_dose_gy > 0 or lim.prior_lung_dose_unknown_count > 0:
        cumulative = chosen.lung_gy + lim.prior_lung_dose_gy
        label = "Lungs (cumulative, all sessions)"
        if lim.prior_lung_dose_unknown_count:
            label += f" ({lim.prior_lung_dose_unknown_count} prior session(s) of unknown dose)"
        add("lung_cumulative", label, cumulative, lim.lung_cumulative_limit_gy, "limit", "cumulative limit",
            "EANM 2022 (Weber et al.); threshold lung_dose_cumulative_limit_gy")
    return out


def dose_marks(plan: Plan) -> list[tuple[float, str]]:
    """Every limit and target in force as (Gy, label), for the DVH and the viewer's isodoses, lowest first."""
    marks: dict[float, list[str]] = {}
    for k in key_doses(plan):
        if k.bound_gy is None or k.bound_gy <= 0:
            continue
        short = {
            "tumor": "tumour target",
            "normal_liver": "non-tumour liver limit",
            "perfused_normal_liver": "perfused non-tumour liver limit",
            "perfused": "perfused prescription",
            "lung": "lung limit",
            "lung_cumulative": "cumulative lung limit",
        }[k.key]
        marks.setdefault(round(float(k.bound_gy), 6), []).append(short)
    return [(v, " / ".join(names)) for v, names in sorted(marks.items())]
