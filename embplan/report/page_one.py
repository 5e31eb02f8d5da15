"""Page one: the answer a tumour board reads in a minute.

Patient and procedure; the board's recommendation, course and staged plan (when the plan carries a
:class:`~embplan.board.model.BoardReview`); prescribed and delivered activity; every key dose beside its limit or
target with pass / fail / not applicable (from :func:`embplan.report.doses.key_doses`, the one source of printed
doses); the flags by severity with one line of evidence; sign-off fields and the research-software line. Sized to
one laptop screen and one printed A4 page (print CSS; tested in a browser).
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from .doses import key_doses
from .fmt import esc, gbq, gy, ml, percent, sig3, structure_label

if TYPE_CHECKING:  # pragma: no cover
    from ..board.model import BoardReview
    from ..plan_model import Plan

__all__ = ["page_one", "flag_title", "severity_badge", "untreated_lesions", "SHORT_DISCLAIMER"]

SHORT_DISCLAIMER = (
    "Research software, not a medical device: every number must be checked by the treating team before use."
)

#: Fraction of a lesion's volume inside the perfused territory below which page one names it as outside the
#: treated territory (geometry only: the mask overlap, no dose).
OUTSIDE_TERRITORY_FRACTION = 0.5

_PROCEDURE_NAMES = {
    "TAE": "Bland embolization (TAE)",
    "TACE": "Chemoembolization (TACE)",
    "DEB_TACE": "Drug-eluting bead TACE (DEB-TACE)",
    "TARE": "Y-90 radioembolization (TARE)",
}


def severity_badge(severity: str | None) -> str:
    if severity is None:
        return '<span class="badge sev-none">no flags</span>'
    s = html.escape(severity)
    return f'<span class="badge sev-{s}">{s}</span>'


def flag_title(code: str) -> str:
    """``NON_TUMOR_LIVER_DOSE_HIGH`` -> ``Non-tumour liver dose high``."""
    text = code.replace("_", " ").lower().replace("tumor", "tumour")
    for word in ("deb tace", "tace", "tae", "tare"):
        text = text.replace(word, word.upper().replace(" ", "-"))
    return text[:1].upper() + text[1:]


def _territory(t: Any) -> str:
    if t is None:
        return ""
    if isinstance(t, str):
        return t
    scope = getattr(t, "scope", None)
    lobe = getattr(t, "lobe", None)
    segments = getattr(t, "segments", None)
    parts = [p for p in (lobe and f"{lobe} lobe", scope if scope not in (None, "lobar") else None,
                         segments and ("segments " + ", ".join(str(s) for s in segments))) if p]
    return ", ".join(parts) or str(scope or "")


def _facts(plan: Plan) -> str:
    case = plan.case
    p = case.patient
    items: list[tuple[str, str]] = [("Patient", esc(p.id))]
    age = getattr(p, "age_years", None)
    sex = getattr(p, "sex", None)
    if age is not None or sex is not None:
        items.append(("Age / sex", f"{esc(age)} / {esc(sex)}"))
    w, h = getattr(p, "weight_kg", None), getattr(p, "height_cm", None)
    if w is not None:
        bsa = getattr(p, "body_surface_area_m2", None)
        items.append(("Weight / height", f"{sig3(w)} kg / {sig3(h)} cm" + (f", BSA {bsa:.2f} m²" if isinstance(
            bsa, float) else "")))
    if getattr(p, "ecog", None) is not None:
        items.append(("ECOG", esc(p.ecog)))
    dis = getattr(p, "disease", None)
    if dis is not None:
        bits = [getattr(dis, "primary_site", None), getattr(dis, "grade", None)]
        ki = getattr(dis, "ki67_percent", None)
        text = ", ".join(esc(b) for b in bits if b is not None)
        if ki is not None:
            text += f", Ki-67 {sig3(ki)} %"
        items.append(("NET", text))
        burden = getattr(dis, "liver_tumor_burden_percent", None)
        dist = getattr(dis, "liver_distribution", None)
        if burden is not None or dist is not None:
            items.append(("Liver disease", f"{sig3(burden)} % burden, {esc(dist)}"))
    proc = plan.procedure
    date = getattr(case.procedure, "date", None)
    items.append(("Procedure", f"{esc(_PROCEDURE_NAMES.get(proc.kind, proc.kind))}"))
    items.append(("Territory", esc(_territory(getattr(case.procedure, "territory", None)) or proc.territory)
                  + (f", {esc(proc.device)} microspheres" if proc.device else "")))
    items.append(("Date", esc(date)))
    priors = getattr(p, "prior_treatments", None) or []
    if priors:
        hist = "; ".join(
            f"{esc(getattr(t, 'kind', '?'))} {esc(str(getattr(t, 'date', ''))[:7])}"
            + (f" ({esc(getattr(t, 'response', None))})" if getattr(t, "response", None) else "") for t in priors)
        items.append(("Before", hist))
    else:
        items.append(("Before", "no liver-directed treatment"))
    return '<div class="facts">' + "".join(f"<div title=\"{html.escape(k)}\"><b>{html.escape(k)}</b> {v}</div>"
                                            for k, v in items) + "</div>"


def _board(plan: Plan) -> str:
    b: BoardReview | None = plan.board
    seq = plan.sequence
    if b is None:
        return (
            "<h2>Board recommendation</h2>"
            '<p class="answer no-board">No tumour-board review is recorded with this plan.</p>'
            f'<p class="note">Treatment ladder: {"follows" if seq.follows_ladder else "departs from"} TAE → TACE → '
            f"TARE; next step after this: {esc(seq.suggested_next)}.</p>"
        )
    rec = b.recommendation
    out = ["<h2>Board recommendation</h2>", f'<p class="answer board-summary">{esc(rec.summary)}</p>']
    if rec.steps:
        out.append('<ol class="board-steps">' + "".join(
            f"<li><b>{esc(s.action)}</b> <span class='note' title=\"{html.escape(s.reason)}\">"
            f"{esc(_clip(s.reason, 90))}</span></li>"
            for s in sorted(rec.steps, key=lambda s: s.order)) + "</ol>")
    if b.course:
        rows = []
        for c in b.course:
            disease = "–" if c.disease_present is None else ("yes" if c.disease_present else "no")
            history = "; ".join(c.history) if c.history else "untreated"
            rows.append(f"<tr><td>{esc(c.territory)}</td><td>{disease}</td><td title=\"{html.escape(history)}\">"
                        f"{esc(_clip(history, 100))}"
                        + (f" ({esc(c.last_response)})" if c.last_response else "")
                        + f"</td><td>{esc(c.next_step)}</td></tr>")
        out.append('<table class="board-course"><thead><tr><th>Territory</th><th>Disease</th><th>So far</th>'
                   f"<th>Next</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
        untreated = [c.territory for c in b.course if c.disease_present and not c.history
                     and (c.next_step is None or c.next_step.lower() in ("none", ""))]
        if untreated:
            out.append(f'<p class="untreated"><b>Disease left untreated:</b> {esc(", ".join(untreated))}.</p>')
    if b.staged_plan:
        steps = "".join(
            f"<li>{esc(s.procedure)} {esc(s.territory)}"
            + (f", from {esc(s.earliest_date)}" if s.earliest_date else "")
            + (f" ({s.interval_days} days after the previous step)" if s.interval_days and s.order > 1 else "")
            + "</li>" for s in sorted(b.staged_plan, key=lambda s: s.order))
        out.append(f'<div class="staged"><b>Staged plan</b><ol>{steps}</ol></div>')
    gaps = list(b.data_gaps) + [w for w in rec.would_change if w not in b.data_gaps]
    if len(gaps) == 1:
        out.append(f'<p class="gaps">Would change with: {esc(_clip(gaps[0], 160))}</p>')
    elif gaps:
        out.append(f'<p class="gaps">{len(gaps)} missing data or findings would change the recommendation (listed '
                   "under <a href='#board'>Tumour board</a>).</p>")
    return "".join(out)


def _clip(text: str, limit: int) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters, with an ellipsis (the full text stays in the
    detail and in the element's title)."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;: ")
    return cut + " …"


_OPTION_GROUPS = (("possible", "possible"), ("needs_data", "need data"), ("not_eligible", "not eligible"))


def _options(plan: Plan) -> str:
    """The board's other options in one line: how many are possible (named), need data, are not eligible (the
    recommended ones are the steps above; every option with its criteria is in the detail)."""
    b = plan.board
    if b is None or not b.options:
        return ""
    parts = []
    for status, label in _OPTION_GROUPS:
        titles = [o.title for o in b.options if getattr(o.status, "value", o.status) == status]
        if not titles:
            continue
        named = ("" if status != "possible" else " (" + "; ".join(
            f'<span title="{html.escape(t)}">{esc(_clip(t, 40))}</span>' for t in titles) + ")")
        hover = html.escape("; ".join(titles))
        parts.append(f'<span class="option-group" data-status="{status}" title="{hover}">{len(titles)} {label}'
                     f"{named}</span>")
    if not parts:
        return ""
    return ('<p class="other-options"><b>Other options:</b> ' + "; ".join(parts)
            + " (each with its criteria under <a href='#board'>Tumour board</a>).</p>")


def untreated_lesions(plan: Plan) -> list[tuple[str, float, float]]:
    """Lesions mostly outside the perfused territory: (name, volume mL, fraction inside), from the plan's masks."""
    lesions = getattr(plan.dosimetry, "lesions", None) if plan.dosimetry is not None else None
    if lesions:  # issue 13's lesion table carries each lesion's perfused fraction
        return [(str(x.name), float(x.volume_ml), float(x.perfused_fraction)) for x in lesions
                if x.perfused_fraction < OUTSIDE_TERRITORY_FRACTION]
    v = plan.voxel
    if v is None:
        return []
    masks = v.masks()
    perfused = masks.get("perfused")
    if perfused is None:
        return []
    out = []
    for name in sorted(masks):
        if not name.startswith(("tumor_", "tumour_")):
            continue
        m = np.asarray(masks[name], dtype=bool)
        n = int(m.sum())
        if n == 0:
            continue
        inside = float(np.logical_and(m, perfused).sum()) / n
        if inside < OUTSIDE_TERRITORY_FRACTION:
            out.append((name, n * v.grid.voxel_volume_ml, inside))
    return out


def _activity(plan: Plan) -> str:
    d = plan.dosimetry
    if d is None:
        return (_protocol(plan) + f"<p class='activity no-dose'>{esc(plan.procedure.kind)}: no radioactive "
                "device, so no activity and no radiation dose; every dose limit is not applicable.</p>")
    rx = d.prescription
    parts = [
        "<h2>Activity</h2><div class='activity'>",
        f"Prescribed <span class='big prescribed-activity'>{gbq(rx.activity_gbq)} GBq</span> "
        f"<span class='note'>({esc(rx.method.upper())} model"
        + (f"; set by the {esc(rx.binding_constraint)}" if rx.binding_constraint else "") + ")</span>",
    ]
    dl = d.delivery
    if dl is not None:
        parts.append(f"<br>Delivered into the patient <b class='delivered-activity'>{gbq(dl.delivered_activity_gbq)} "
                     f"GBq</b>; in the vial at administration {gbq(dl.vial_activity_at_administration_gbq)} GBq "
                     f"({percent(dl.residual_fraction, 0)} residual)")
        if dl.activity_at_calibration_gbq is not None:
            parts.append(f"; order {gbq(dl.activity_at_calibration_gbq)} GBq at calibration")
        # issue 13's delivery tolerance, when the plan records it
        if getattr(dl, "within_tolerance", None) is False:
            dev, tol = getattr(dl, "deviation_fraction", None), getattr(dl, "tolerance_fraction", None)
            parts.append(f"<br><span class='conflict'>Delivered activity deviates {percent(dev)} from the "
                         f"prescription (tolerance {percent(tol, 0)}).</span>")
        if dl.glass_vial_gbq is not None and dl.glass_vial_delivered_gbq is not None:
            dev = dl.glass_vial_deviation_fraction
            parts.append(f"<br>Nearest glass vial {sig3(dl.glass_vial_gbq)} GBq delivers "
                         f"{gbq(dl.glass_vial_delivered_gbq)} GBq" + (f" ({'+' if dev and dev > 0 else ''}"
                                                                     f"{percent(dev)})" if dev is not None else ""))
    parts.append(f"<br><span class='note'>Lung shunt {percent(d.lung_shunt_fraction)}"
                 + (f", tumour-to-normal ratio {sig3(d.tumor_to_normal_ratio)}" if d.tumor_to_normal_ratio else "")
                 + "</span>")
    if rx.conflict:
        parts.append("<br><span class='conflict'>The target cannot be reached within the limits: the activity is "
                     "capped.</span>")
    parts.append("</div>")
    return "".join(parts)


def _protocol(plan: Plan) -> str:
    """The procedure's parameters against its standard protocol (the answer for TAE / TACE)."""
    from .fmt import field_label, value_text

    proc = plan.procedure
    params = " · ".join(f"<b>{esc(field_label(k))}:</b> {value_text(v)}" for k, v in proc.parameters.items()
                       if v is not None and v != [] and v != {})
    out = "<h2>Procedure</h2>"
    if params:
        out += f"<p class='parameters'>{params}</p>"
    if proc.deviations:
        out += ("<p class='deviations'><b class='conflict'>Deviations from the standard protocol:</b> "
                + esc("; ".join(proc.deviations)) + "</p>")
    else:
        out += "<p class='note'>No deviation from the standard protocol.</p>"
    return out


def _doses(plan: Plan) -> str:
    kd = key_doses(plan)
    if not kd:
        return ""
    rows = []
    for k in kd:
        bound = "–" if k.bound_gy is None else f"{gy(k.bound_gy)} Gy"
        kind = {"limit": "≤", "target": "≥", "prescribed": "="}.get(k.bound_kind or "", "")
        rows.append(
            f'<tr class="key-dose" data-key="{k.key}" data-status="{k.status}"><td>{esc(k.label)}'
            f'<div class="note bound-label" title="{html.escape(k.bound_label)}">{esc(_clip(k.bound_label, 60))}'
            "</div></td>"
            f'<td class="num dose-value">{gy(k.value_gy)}</td>'
            f'<td class="num bound">{kind} {bound}</td>'
            f'<td><span class="status status-{k.status}">{esc(k.status_text)}</span></td></tr>'
        )
    out = ('<h2>Key doses</h2><table class="key-doses"><thead><tr><th>Structure (bound in force)</th>'
           '<th class="num">Dose (Gy)</th><th class="num">Limit / target</th><th>Result</th></tr></thead><tbody>'
           + "".join(rows) + "</tbody></table>"
           f'<p class="note dose-definition">{esc(kd[0].definition)}</p>')
    outside = untreated_lesions(plan)
    if outside:
        names = ", ".join(f"{structure_label(n)} ({ml(v)} mL)" for n, v, _ in outside)
        out += f'<p class="untreated-lesions"><b>Tumours outside the treated territory:</b> {esc(names)}.</p>'
    return out


def _flags(plan: Plan) -> str:
    flags = sorted(plan.flags, key=lambda f: (-f.severity.rank, f.code))
    if not flags:
        return "<h2>Flags</h2><p class='no-flags'>No rule raised a flag.</p>"
    lines = "".join(
        f'<div class="flag-line" data-severity="{html.escape(f.severity.value)}">'
        f"<div>{severity_badge(f.severity.value)}</div><div><b>{html.escape(flag_title(f.code))}.</b> "
        f"<span class='flag-message' title=\"{html.escape(f.message)}\">{html.escape(_clip(f.message, 120))}</span>"
        f"<span class='evidence' title=\"{html.escape(f.evidence)}\">"
        f"Evidence: {html.escape(f.evidence)}</span></div></div>"
        for f in flags
    )
    counts: dict[str, int] = {}
    for f in flags:
        counts[f.severity.value] = counts.get(f.severity.value, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    return f"<h2>Flags ({html.escape(summary)})</h2>{lines}"


def _when(stamp: str) -> str:
    """``2026-12-06T22:50:52+00:00`` -> ``2026-12-06 22:50 UTC`` (other text unchanged)."""
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})(:\d{2}(\.\d+)?)?(Z|\+00:00)?", str(stamp))
    return f"{m.group(1)} {m.group(2)} UTC" if m else str(stamp)


def page_one(plan: Plan, *, generated_utc: str, title: str | None = None) -> str:
    """Page one as an HTML ``<section id="page-one">``."""
    hs = plan.highest_severity
    kind = plan.procedure.kind
    heading = title or f"{_PROCEDURE_NAMES.get(kind, kind)} plan"
    header = (
        f"<header><div><h1>{esc(heading)} — patient {esc(plan.case.patient.id)}</h1>"
        f'<div class="summary-line">highest severity: {severity_badge(hs.value if hs else None)}</div></div>'
        f'<div class="meta">plan created {esc(_when(plan.provenance.created_utc))}<br>report '
        f"{esc(_when(generated_utc))}, "
        f"embplan {esc(plan.provenance.embplan_version)}</div></header>"
    )
    # blocks in reading order, flowed into two balanced columns (CSS multi-column; one column in print)
    # the board block may break between its parts (steps, course, staged plan); the others stay whole
    blocks = [("block board-block", _board(plan) + _options(plan)), ("block keep", _activity(plan)),
              ("block keep", _doses(plan))]
    flow = "".join(f'<div class="{cls}">{b}</div>' for cls, b in blocks if b) + _flags(plan)
    signoff = (
        '<div class="signoff"><div>Prepared by</div><div>Date</div><div>Checked by (physicist)</div><div>Date</div>'
        "</div>"
    )
    return (
        f'<section id="page-one" aria-label="Page one: the answer">{header}{_facts(plan)}'
        f'<div class="flow">{flow}</div>{signoff}'
        f'<p class="disclaimer-line">{html.escape(SHORT_DISCLAIMER)}</p></section>'
    )
